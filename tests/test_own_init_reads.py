"""deferred_init on constructors that read or rebind their parameters: copies, `.data = <expression>`,
deep copies, dtype casts, buffers computed from parameters. The oracle is plain construction: exact
values where plain construction makes them deterministic, the same law where it draws them."""

import copy

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import initkit
from helpers import skip_torch_2_11_sampler
from initkit.model.patch import Fill


def _materialized(module_fn, *args, **kwargs):
    return initkit.materialize(initkit.deferred_init(module_fn, *args, **kwargs))


def _recipe(model, name):
    return {r.name: r.record for r in model._initkit_deferred.recipes}[name]


def _ks_p(a, b):
    return stats.ks_2samp(a.detach().flatten().double().numpy(), b.detach().flatten().double().numpy()).pvalue


def _all_meta(model):
    return all(p.is_meta for p in model.parameters())


# ---- .data = <expression of the parameter> ----------------------------------------------------


class _UpcastInit(nn.Module):
    """Hugging Face ViT's _init_weights on a bfloat16 model: init in float32, cast back through .data."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(256, 256, dtype=torch.bfloat16)
        self.l.weight.data = nn.init.trunc_normal_(self.l.weight.data.float(), std=0.002).to(torch.bfloat16)


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(200, 200)
        self.l.weight.data = self.l.weight.data * 100.0


def test_data_set_to_an_expression_of_the_parameter(backend):
    skip_torch_2_11_sampler(backend, "trunc_normal_ at a small std")
    model, plain = _materialized(_UpcastInit), _UpcastInit()
    assert model.l.weight.dtype == torch.bfloat16
    assert _ks_p(model.l.weight.float(), plain.l.weight.float()) > 1e-4
    assert abs(model.l.weight.float().std().item() - 0.002) < 0.002 * 0.05  # not Linear's 0.036
    assert _recipe(model, "l.weight").base.kind == "trunc_normal"  # still one fused fill
    model, plain = _materialized(_Scaled), _Scaled()
    assert _ks_p(model.l.weight, plain.l.weight) > 1e-4
    assert abs(model.l.weight.std().item() - plain.l.weight.std().item()) < 0.05 * plain.l.weight.std().item()


class _DataFromMeta(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)
        self.l.weight.data = torch.randn(4, 4, device="meta")  # no values anywhere


def test_data_set_to_a_meta_tensor_without_values_is_refused():
    model = initkit.deferred_init(_DataFromMeta)
    with pytest.raises(NotImplementedError, match="'l.weight'.*meta device.*"):
        initkit.materialize(model)
    assert _all_meta(model)


# ---- copies read the source as it was then ------------------------------------------------------


class _CopyThenScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(64, 64, bias=False)
        self.k = nn.Linear(64, 64, bias=False)
        self.a = nn.Parameter(torch.empty(4, 4))
        self.b = nn.Parameter(torch.empty(4, 4))
        nn.init.normal_(self.q.weight)
        self.k.weight.data.copy_(self.q.weight.data)
        self.q.weight.data.mul_(0.1)
        with torch.no_grad():
            self.a.fill_(1.0)
            self.b.copy_(self.a)
            self.a.zero_()


def test_copy_reads_the_source_as_it_was_then(backend):
    model = _materialized(_CopyThenScale)
    assert torch.equal(model.k.weight.detach().mul(0.1), model.q.weight.detach())  # k is q before the scaling
    assert abs(model.k.weight.std().item() - 1.0) < 0.05
    assert torch.equal(model.b, torch.ones(4, 4)) and torch.equal(model.a, torch.zeros(4, 4))


class _ComplexReal(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4000, dtype=torch.complex64))
        self.w.data.real.normal_()


def test_write_to_the_real_part_of_a_complex_parameter(backend):
    model = _materialized(_ComplexReal)
    assert torch.equal(model.w.imag, torch.zeros(4000))
    assert _ks_p(model.w.real, _ComplexReal().w.real) > 1e-4


# ---- copy.deepcopy during construction ----------------------------------------------------------


class _Teacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.student = nn.Linear(32, 32)
        self.teacher = copy.deepcopy(self.student)
        nn.init.zeros_(self.student.bias)


def test_deep_copies_equal_their_source_when_copied():
    encoder = _materialized(lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 3))
    first, *rest = encoder.layers
    for layer in rest:  # torch's clones: every layer starts as the same values
        for (name, a), b in zip(first.named_parameters(), layer.parameters()):
            assert torch.equal(a, b), name
    assert abs(first.linear1.weight.std().item() - nn.Linear(16, 32).weight.std().item()) < 0.02
    transformer = _materialized(nn.Transformer, 16, 2, 2, 2, 32, batch_first=True)
    layers = transformer.encoder.layers  # _reset_parameters redraws the matrices, not the biases
    assert not torch.equal(layers[0].linear1.weight, layers[1].linear1.weight)
    assert torch.equal(layers[0].linear1.bias, layers[1].linear1.bias)
    model = _materialized(_Teacher)
    assert torch.equal(model.teacher.weight, model.student.weight)
    assert torch.equal(model.student.bias, torch.zeros(32)) and bool((model.teacher.bias != 0).all())


def test_deep_copies_of_a_real_module():
    layer = nn.TransformerEncoderLayer(16, 2, 32)
    encoder = _materialized(nn.TransformerEncoder, layer, 2, enable_nested_tensor=False)
    for copied in encoder.layers:
        for (name, a), b in zip(layer.named_parameters(), copied.parameters()):
            assert torch.equal(a, b), name


# ---- casts after an init that runs in the original dtype ----------------------------------------


class _Orthogonal(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.w = nn.Parameter(torch.empty(8, 8))
        nn.init.orthogonal_(self.w)


def test_cast_after_construction_replays_in_the_original_dtype(backend):
    model = initkit.deferred_init(lambda: _Orthogonal().to(torch.bfloat16))
    assert _recipe(model, "a.weight").base.kind == "uniform"  # the cast of a fill stays one fused fill
    initkit.materialize(model)
    assert model.w.dtype == torch.bfloat16
    w = model.w.float()
    torch.testing.assert_close(w @ w.T, torch.eye(8), atol=2e-2, rtol=0)  # QR in float32, then rounded
    initkit.initialize(model, policy="recorded")
    torch.testing.assert_close(model.w.float() @ model.w.float().T, torch.eye(8), atol=2e-2, rtol=0)
    embedding = initkit.deferred_init(lambda: nn.Embedding(50, 8, padding_idx=1).half())
    assert isinstance(_recipe(embedding, "weight").base, Fill)
    initkit.materialize(embedding)
    assert torch.equal(embedding.weight[1], torch.zeros(8, dtype=torch.half))


# ---- buffers computed from parameters -----------------------------------------------------------


class _Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(6, 4)
        self.register_buffer("mask", torch.ones_like(self.l.weight))
        self.register_buffer("gram", self.l.weight.detach() @ self.l.weight.detach().T)


def test_buffers_computed_from_parameters(backend):
    model = initkit.deferred_init(_Masked)
    assert model.mask.is_meta  # computed at materialize, from the parameters' values
    initkit.materialize(model)
    assert torch.equal(model.mask, torch.ones(4, 6))
    assert torch.equal(model.gram, model.l.weight.detach() @ model.l.weight.detach().T)
    model = _materialized(lambda: spectral_norm(nn.Linear(32, 16)))
    weight, norm = model.parametrizations.weight.original.detach(), model.parametrizations.weight[0]
    # the last power iteration, as torch ran it on these values
    torch.testing.assert_close(norm._v, F.normalize(torch.mv(weight.T, norm._u), dim=0), atol=1e-6, rtol=0)
    assert model(torch.randn(2, 32)).shape == (2, 16)


class _MetaBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)
        self.register_buffer("table", torch.empty(3, device="meta"))


def test_buffer_without_values_fails_before_any_change():
    model = initkit.deferred_init(_MetaBuffer)
    with pytest.raises(NotImplementedError, match="buffer 'table'.*initkit.patch"):
        initkit.materialize(model)
    assert _all_meta(model) and model.table.is_meta
    model.table = torch.zeros(3)  # fixed: a retry materializes
    initkit.materialize(model)
    assert not _all_meta(model) and torch.equal(model.table, torch.zeros(3))


# ---- lazy modules --------------------------------------------------------------------------------


def test_lazy_module_is_refused_clearly():
    new = nn.Parameter.__dict__["__new__"]
    with pytest.raises(NotImplementedError, match="'weight'.*lazy.*initkit.patch"):
        initkit.deferred_init(nn.LazyLinear, 4)
    assert nn.Parameter.__dict__["__new__"] is new  # recording hooks removed
