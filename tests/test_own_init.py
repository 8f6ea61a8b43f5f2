"""deferred_init / materialize / patch() on small hand-written models: what is recorded and replayed."""

import math
import sys
import threading
import types

import pytest
import torch
import torch.nn.init as torch_init
from scipy import stats
from torch import nn

import initkit
from helpers import default_device
from initkit._ext import torch_fallback
from initkit.model import patch as patch_module


class Toy(nn.Module):
    """Construct-then-re-init like Hugging Face models: every kind of write the recorder handles."""

    def __init__(self, vocab=300, dim=64):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=1)
        self.lin = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight  # tied
        self.norm = nn.LayerNorm(dim)
        self.rot = nn.Parameter(torch.empty(dim, dim))
        self.table = nn.Parameter(torch.arange(6, dtype=torch.float32))  # values given at creation
        self.register_buffer("positions", torch.arange(10))
        with torch.no_grad():
            self.emb.weight.data.normal_(mean=0.0, std=0.02)  # replaces Embedding's N(0, 1)
            self.emb.weight[self.emb.padding_idx].zero_()
            torch_init.xavier_uniform_(self.lin.weight)
            self.lin.bias.fill_(0.5)
            self.out.weight.normal_(0, 1.0)
            self.out.weight.mul_(0.1)  # folded: N(0, 0.01)
            self.out.bias.data.zero_()
            torch_init.orthogonal_(self.rot)  # not fusable: replayed by torch
            self.table[2:4] = -1.0  # partial write after the creation values


def _deferred(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = initkit.deferred_init(Toy, **kwargs)
    initkit.materialize(model)
    return model


def _ks_p(a, b):
    return stats.ks_2samp(a.detach().flatten().double().numpy(), b.detach().flatten().double().numpy()).pvalue


def test_records_the_constructors_writes(backend):
    model = _deferred()
    torch.manual_seed(1)
    plain = Toy()
    # ties and buffers as in plain construction
    assert model.head.weight is model.emb.weight
    assert torch.equal(model.positions, plain.positions) and not model.positions.is_meta
    assert all(not p.is_meta for p in model.parameters())
    # exact writes
    assert torch.equal(model.emb.weight[1], torch.zeros(64))
    assert torch.equal(model.lin.bias, torch.full((256,), 0.5))
    assert torch.equal(model.out.bias, torch.zeros(64))
    assert torch.equal(model.norm.weight, torch.ones(64)) and torch.equal(model.norm.bias, torch.zeros(64))
    assert torch.equal(model.table, torch.tensor([0.0, 1, -1, -1, 4, 5]))
    torch.testing.assert_close(model.rot @ model.rot.T, torch.eye(64), atol=1e-4, rtol=0)
    # random writes: the law of plain construction
    for name in ("emb.weight", "lin.weight", "out.weight"):
        a, b = dict(model.named_parameters())[name], dict(plain.named_parameters())[name]
        assert _ks_p(a, b) > 1e-6, name
    rows = torch.cat([model.emb.weight[:1], model.emb.weight[2:]])
    assert abs(rows.std().item() - 0.02) < 0.02 * 0.05
    bound = math.sqrt(6 / (64 + 256))
    assert model.lin.weight.abs().max() <= bound and model.lin.weight.abs().max() > 0.99 * bound
    assert abs(model.out.weight.std().item() - 0.1) < 0.1 * 0.05


def test_recipes_one_write_per_parameter():
    model = initkit.deferred_init(Toy)
    recipes = {r.name: r.record for r in model._initkit_deferred.recipes}
    assert recipes["emb.weight"].base == patch_module.Fill("normal", (0.0, 0.02))
    assert len(recipes["emb.weight"].ops) == 1  # the padding row, after the full write
    assert recipes["out.weight"].base == patch_module.Fill("normal", (0.0, 0.1)) and not recipes["out.weight"].ops
    assert "head.weight" not in recipes  # tied: one recipe


def test_same_seed_same_weights_any_thread_count(ext):
    torch.set_num_threads(1)
    one = _deferred(seed=3)
    torch.set_num_threads(2)
    two = _deferred(seed=3)
    other = _deferred(seed=4)
    for (name, a), b, c in zip(one.named_parameters(), two.parameters(), other.parameters()):
        if name == "rot":  # torch's orthogonal_ (QR) rounds differently with the thread count
            torch.testing.assert_close(a, b)
            continue
        assert torch.equal(a, b), name
        if name not in ("norm.weight", "norm.bias", "lin.bias", "out.bias", "table"):
            assert not torch.equal(a, c), name


class _AB(nn.Module):
    def __init__(self, swap):
        super().__init__()
        if swap:
            self.b = nn.Linear(8, 8)
            self.a = nn.Linear(8, 8)
        else:
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 8)


def test_stream_order_follows_names_not_construction_order(ext):
    torch.manual_seed(0)
    first = initkit.materialize(initkit.deferred_init(_AB, False))
    torch.manual_seed(0)
    second = initkit.materialize(initkit.deferred_init(_AB, True))
    for name, param in first.named_parameters():
        assert torch.equal(param, second.get_parameter(name)), name


def test_reinitialize_with_recorded_scheme(backend):
    model = _deferred()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = initkit.initialize(model, policy="recorded")
    assert result is model
    assert not torch.equal(model.lin.weight, before["lin.weight"])
    assert torch.equal(model.emb.weight[1], torch.zeros(64)) and model.head.weight is model.emb.weight
    assert torch.equal(model.table, before["table"]) and torch.equal(model.lin.bias, before["lin.bias"])
    assert _ks_p(model.lin.weight, before["lin.weight"]) > 1e-6


def test_patch_routes_to_initkit_and_restores(ext):
    originals = {name: getattr(torch_init, name) for name in ("normal_", "kaiming_uniform_", "zeros_")}
    linear_module_init = torch.nn.modules.linear.init
    torch.manual_seed(5)
    with initkit.patch():
        assert torch_init.kaiming_uniform_ is not originals["kaiming_uniform_"]
        with initkit.patch():  # nests
            pass
        assert torch_init.kaiming_uniform_ is not originals["kaiming_uniform_"]
        layer = nn.Linear(32, 16)
    assert all(getattr(torch_init, name) is fn for name, fn in originals.items())
    assert linear_module_init is torch_init
    torch.manual_seed(5)
    eager = _installed(lambda: nn.Linear(32, 16))  # every fill written at its call
    torch.manual_seed(5)
    weight, bias = torch.empty(16, 32), torch.empty(16)
    initkit.kaiming_uniform_(weight, a=math.sqrt(5))
    initkit.uniform_(bias, -1 / math.sqrt(32), 1 / math.sqrt(32))
    for model in (layer, eager):  # the block and install() write the same values
        assert torch.equal(model.weight, weight) and torch.equal(model.bias, bias)


def test_patch_install_uninstall():
    initkit.patch.install()
    try:
        assert initkit.patch.is_installed() and torch_init.normal_ is not torch_fallback.normal_
        with initkit.use_backend("torch"):  # initkit's fallback calls torch's captured functions: no recursion
            nn.Linear(4, 4)
    finally:
        initkit.patch.uninstall()
    assert not initkit.patch.is_installed() and torch_init.normal_ is torch_fallback.normal_
    with pytest.raises(RuntimeError, match="without a matching install"):
        initkit.patch.uninstall()


def test_patch_uninstall_from_two_threads_matches_one_install(monkeypatch):
    class MeetingLock:  # both threads reach the lock before either takes it
        def __init__(self):
            self.meet, self.lock = threading.Barrier(2, timeout=5), threading.Lock()

        def __enter__(self):
            self.meet.wait()
            self.lock.acquire()

        def __exit__(self, *exc):
            self.lock.release()

    initkit.patch.install()
    monkeypatch.setattr(patch_module, "_lock", MeetingLock())
    errors = []

    def uninstall():
        try:
            initkit.patch.uninstall()
        except RuntimeError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=uninstall) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == ["initkit.patch.uninstall() without a matching install()"]
    assert not initkit.patch.is_installed() and torch_init.normal_ is torch_fallback.normal_


def test_patch_keeps_a_replacement_made_meanwhile():
    def mine(tensor):
        return tensor

    with initkit.patch():
        torch_init.ones_ = mine  # someone else's patch, made while ours is active
    try:
        assert torch_init.ones_ is mine
    finally:
        torch_init.ones_ = torch_fallback.ones_


def test_patch_routes_a_function_put_back_after_another_librarys_patch(ext):
    # a library's stand-in (transformers' no_init_weights) is in place when patch() first scans the module
    module = types.ModuleType("initkit_test_models")
    module.trunc_normal_ = lambda tensor, *args, **kwargs: tensor
    sys.modules[module.__name__] = module
    try:
        with initkit.patch():
            pass
        module.trunc_normal_ = torch_init.trunc_normal_  # their patch undone
        with initkit.patch():
            got = module.trunc_normal_(torch.empty(1000), generator=torch.Generator().manual_seed(1))
        assert module.trunc_normal_ is torch_init.trunc_normal_
    finally:
        del sys.modules[module.__name__]
    want = initkit.trunc_normal_(torch.empty(1000), generator=torch.Generator().manual_seed(1))
    assert torch.equal(got, want)


# ---- bad input ----------------------------------------------------------------------------


def test_module_fn_not_callable():
    with pytest.raises(TypeError, match="callable"):
        initkit.deferred_init(3)


def test_module_fn_returns_non_module():
    with pytest.raises(TypeError, match="nn.Module"):
        initkit.deferred_init(lambda: torch.zeros(3))
    assert nn.Module.register_parameter is _register_parameter  # recording hooks removed


_register_parameter = nn.Module.register_parameter


def test_materialize_without_recipes():
    with pytest.raises(ValueError, match="no recorded init"):
        initkit.materialize(nn.Linear(2, 2), policy="recorded")
    with pytest.raises(ValueError, match="no recorded init"):
        initkit.initialize(nn.Linear(2, 2), policy="recorded")


def test_materialize_twice_and_to_meta():
    model = initkit.deferred_init(nn.Linear, 4, 4)
    with pytest.raises(ValueError, match="meta"):
        initkit.materialize(model, device="meta")
    initkit.materialize(model)
    with pytest.raises(RuntimeError, match="already materialized"):
        initkit.materialize(model)


def _all_meta(model):
    return all(p.is_meta for p in model.parameters())


def test_replaced_parameter_fails_before_allocating():
    model = initkit.deferred_init(Toy)
    model.out.weight = nn.Parameter(torch.empty(64, 256, device="meta"))
    with pytest.raises(RuntimeError, match="'out.weight' was replaced"):
        initkit.materialize(model)
    assert _all_meta(model)


def test_resized_parameter_fails_before_allocating():
    model = initkit.deferred_init(Toy)
    model.lin.weight.data = torch.empty(3, 3, device="meta")
    with pytest.raises(RuntimeError, match="'lin.weight' was recorded with shape"):
        initkit.materialize(model)
    assert _all_meta(model)


def test_added_parameter_fails():
    model = initkit.deferred_init(Toy)
    model.extra = nn.Parameter(torch.empty(2, device="meta"))
    with pytest.raises(RuntimeError, match="extra"):
        initkit.materialize(model)
    assert _all_meta(model)


class _FromMeta(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.empty(4, 4))
        with torch.no_grad():
            self.b.copy_(torch.randn(4, 4, device="meta"))  # made on meta: no values to replay


def test_write_from_computed_meta_tensor_is_refused():
    with pytest.raises(NotImplementedError, match="initkit.patch"):
        initkit.deferred_init(_FromMeta)
    assert nn.Module.register_parameter is _register_parameter


def test_nested_deferred_init_is_refused():
    with pytest.raises(RuntimeError, match="nested"):
        initkit.deferred_init(lambda: initkit.deferred_init(nn.Linear, 2, 2))
    assert torch_init.normal_ is torch_fallback.normal_


def test_bad_fill_arguments_raise_torchs_error():
    def bad():
        layer = nn.Linear(4, 4)
        torch_init.normal_(layer.weight, std=-1.0)
        return layer

    with pytest.raises(RuntimeError, match="std >= 0.0"):
        initkit.deferred_init(bad)


class _MetaMade(nn.Module):
    def __init__(self, write):
        super().__init__()
        self.w = nn.Parameter(torch.empty(8, 8, device="meta"))
        if write:
            torch_init.normal_(self.w, std=0.5)


def test_parameter_made_on_meta():
    model = initkit.materialize(initkit.deferred_init(_MetaMade, True))
    assert not model.w.is_meta and abs(model.w.std().item() - 0.5) < 0.25
    unwritten = initkit.deferred_init(_MetaMade, False)
    with pytest.raises(NotImplementedError, match="'w'.*never written"):
        initkit.materialize(unwritten)
    assert unwritten.w.is_meta


def test_policy_materialize_of_a_deferred_model_drops_the_recipes():
    model = initkit.deferred_init(Toy)
    initkit.materialize(model, policy={"table": "zeros"})  # "auto" elsewhere; it keeps no 1-D table on meta
    assert model.emb.weight.std().item() == pytest.approx(1.0, rel=0.1)  # auto: N(0, 1), not the recorded 0.02
    with pytest.raises(ValueError, match="no recorded init"):
        initkit.initialize(model, policy="recorded")


class _FailsOnReplay(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        with torch.no_grad():  # the meta device does not check p: fails only for real
            self.b.weight.bernoulli_(2.0)


def test_failed_replay_leaves_the_model_untouched():
    model = initkit.deferred_init(_FailsOnReplay)
    with pytest.raises(RuntimeError, match="bernoulli"):
        initkit.materialize(model)
    assert _all_meta(model)


def test_patch_passes_a_positional_generator(ext):
    with initkit.patch():
        got = torch_init.normal_(torch.empty(50), 0.0, 1.0, torch.Generator().manual_seed(7))
    assert torch.equal(got, initkit.normal_(torch.empty(50), generator=torch.Generator().manual_seed(7)))


# ---- tensor methods under patch(); generator= under patch() and deferred_init -----------------


def _installed(fn):
    initkit.patch.install()  # eager: every fill written at its call, with its own key
    try:
        return fn()
    finally:
        initkit.patch.uninstall()


def test_patch_routes_random_tensor_methods(backend):
    def build():
        layer = nn.Linear(40, 30)
        with torch.no_grad():
            layer.weight.data.normal_(0.0, 0.02)
            layer.bias.uniform_(-0.5, to=0.5)
        return layer, torch.empty(7, 9, dtype=torch.bfloat16).normal_(std=3.0)

    torch.manual_seed(11)
    layer, half = _installed(build)
    assert "normal_" not in torch.Tensor.__dict__ and "uniform_" not in torch.Tensor.__dict__  # restored
    torch.manual_seed(11)
    expected = nn.Linear(40, 30)  # outside patch(): torch's samplers for the constructor's own init ...
    torch.manual_seed(11)
    _installed(lambda: nn.Linear(40, 30))  # ... so replay the same key draws: kaiming weight, bias
    weight, bias = torch.empty(30, 40), torch.empty(30)
    initkit.normal_(weight, 0.0, 0.02)
    initkit.uniform_(bias, -0.5, 0.5)
    other = initkit.normal_(torch.empty(7, 9, dtype=torch.bfloat16), 0.0, 3.0)
    assert torch.equal(layer.weight, weight) and torch.equal(layer.bias, bias) and torch.equal(half, other)
    assert not torch.equal(layer.weight, expected.weight)


def test_patch_keeps_torch_methods_where_it_must(ext):
    leaf = nn.Parameter(torch.empty(4, 4))
    with initkit.patch():
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            leaf.normal_()  # grad mode: torch's error, not a silent write
        with pytest.raises(RuntimeError, match="std >= 0.0"):
            torch.empty(3).normal_(0.0, -1.0)
        with pytest.raises(RuntimeError, match="from=2.0 > to=1.0|expects to return a \\[from, to\\) range"):
            torch.empty(3).uniform_(2.0, 1.0)
        with pytest.raises(RuntimeError, match="not implemented for 'Long'"):
            torch.zeros(3, dtype=torch.long).normal_()
        with pytest.raises(TypeError):
            torch.empty(3).normal_(0.0, 1.0, "bad")
        with pytest.raises(TypeError, match="multiple values for argument 'mean'"):
            torch.empty(3).normal_(0.0, mean=5.0)
        with pytest.raises(TypeError, match="multiple values for argument 'to'"):
            torch.empty(3).uniform_(0.0, 1.0, to=2.0)
        with pytest.raises(RuntimeError, match="out of bounds"):
            torch.empty(3).uniform_(0.0, math.inf)  # torch's own check of an infinite width
        # exact torch replays: an integer tensor's random_ and the same calls under the torch backend
        torch.manual_seed(2)
        ints = torch.empty(5, dtype=torch.int32).random_(0, 10)
        with initkit.use_backend("torch"):
            torch.manual_seed(3)
            fallback = torch.empty(6).normal_(1.0, 2.0)
    torch.manual_seed(2)
    assert torch.equal(ints, torch.empty(5, dtype=torch.int32).random_(0, 10))
    torch.manual_seed(3)
    assert torch.equal(fallback, torch.empty(6).normal_(1.0, 2.0))


@pytest.mark.parametrize("context", [lambda: torch.device("cpu"), lambda: default_device("cpu")])
def test_patch_routes_under_a_default_device(ext, context):
    # `with torch.device(...)` and set_default_device are torch-function modes initkit's fills handle
    def g():
        return torch.Generator().manual_seed(3)

    initkit_values = initkit.trunc_normal_(torch.empty(1000), generator=g()), initkit.normal_(torch.empty(1000), generator=g())
    with context(), initkit.patch():
        got = torch_init.trunc_normal_(torch.empty(1000), generator=g()), torch.empty(1000).normal_(generator=g())
    assert all(torch.equal(a, b) for a, b in zip(got, initkit_values))


class _Seeded(nn.Module):
    """A constructor that passes its own generator (reproducible init, as some research code does)."""

    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(torch.empty(64, 32))
        self.b = nn.Parameter(torch.empty(48))
        self.c = nn.Parameter(torch.empty(16, 16))
        torch_init.trunc_normal_(self.a, std=0.02, a=-0.04, b=0.04, generator=g)
        with torch.no_grad():
            self.b.uniform_(-0.1, 0.1, generator=g)
            self.c.normal_(0.0, 0.5)  # no generator: materialize's own key


def test_generator_keys_are_kept_by_patch_and_deferred_init(ext):
    torch.manual_seed(0)
    deferred = initkit.materialize(initkit.deferred_init(_Seeded, 5))
    torch.manual_seed(1)  # another global seed: only `c` changes
    again = initkit.materialize(initkit.deferred_init(_Seeded, 5))
    with initkit.patch():
        patched = _Seeded(5)
    g = torch.Generator().manual_seed(5)
    a = initkit.trunc_normal_(torch.empty(64, 32), std=0.02, a=-0.04, b=0.04, generator=g)
    b = initkit.uniform_(torch.empty(48), -0.1, 0.1, generator=g)
    for model in (deferred, again, patched):
        assert torch.equal(model.a, a) and torch.equal(model.b, b)
    assert not torch.equal(deferred.c, again.c)
    other = initkit.materialize(initkit.deferred_init(_Seeded, 6))
    assert not torch.equal(other.a, a)
    initkit.initialize(deferred, policy="recorded")  # re-init: a new key for every fill, same laws
    assert not torch.equal(deferred.a, a) and deferred.a.abs().max() <= 0.04
    assert _ks_p(deferred.b, b) > 1e-6


def test_generator_keys_are_replayed_under_a_default_device(ext):
    expected = initkit.materialize(initkit.deferred_init(_Seeded, 5))
    model = initkit.deferred_init(_Seeded, 5)
    with torch.device("meta"):
        initkit.materialize(model, "cpu")
    assert torch.equal(model.a, expected.a) and torch.equal(model.b, expected.b)

def test_generator_under_deferred_init_keeps_errors():
    def bad():
        layer = nn.Linear(4, 4)
        torch_init.normal_(layer.weight, generator="seed")
        return layer

    with pytest.raises(TypeError, match="Generator"):
        initkit.deferred_init(bad)


