"""Model tools that must change exactly what they say, or nothing (issue 9, items 8, 9, 11, 12)."""

import math

import pytest
import torch
from torch import nn

import initkit


class RMSNorm(nn.Module):
    """A norm initkit does not know: its 1-D scale must keep the module's own init."""

    def __init__(self, width: int, **factory):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width, **factory))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.scale


class Odd(nn.Module):
    def __init__(self, **factory):
        super().__init__()
        self.proj = nn.Linear(4, 4, **factory)
        self.norm = RMSNorm(4, **factory)
        self.temperature = nn.Parameter(torch.full((), 0.07, **factory))
        self.bias_proj = nn.Parameter(torch.randn(4, 4, **factory))
        self.unbiased_weight = nn.Parameter(torch.full((4,), 3.0, **factory))

    def forward(self, x):
        return self.norm(self.proj(x) @ self.bias_proj) / self.temperature * self.unbiased_weight


def _snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_auto_keeps_unknown_small_parameters_and_names_that_merely_contain_bias(backend):
    model = Odd()
    before = _snapshot(model)
    plan = initkit.initialize(model)
    after = _snapshot(model)
    for name in ("norm.scale", "temperature", "unbiased_weight"):
        assert plan.row(name).scheme == "keep" and "own init" in plan.row(name).reason
        assert torch.equal(after[name], before[name]), name
    assert plan.row("proj.bias").scheme == "zeros" and torch.count_nonzero(after["proj.bias"]) == 0
    assert plan.row("bias_proj").scheme != "zeros" and after["bias_proj"].std() > 0
    out = model(torch.randn(3, 4))
    assert torch.isfinite(out).all()


def test_multihead_attention_in_proj_bias_is_a_bias():
    plan = initkit.init_plan(nn.MultiheadAttention(8, 2))
    assert plan.row("in_proj_bias").scheme == "zeros"


def test_materialize_gives_kept_parameters_their_module_init(backend):
    with torch.device("meta"):
        norm = RMSNorm(6)
    norm.reset_parameters = lambda: nn.init.ones_(norm.scale)
    plan = initkit.materialize(norm)
    assert plan.row("scale").scheme == "torch_default"
    assert torch.equal(norm.scale.detach(), torch.ones(6))


def test_materialize_refuses_a_kept_meta_parameter_it_cannot_fill_before_allocating(backend):
    with torch.device("meta"):
        model = Odd()
    with pytest.raises(ValueError, match="'temperature'.*no reset_parameters"):
        initkit.materialize(model)
    assert all(p.is_meta for p in model.parameters())  # nothing allocated, nothing half-filled
    initkit.materialize(model, policy={"norm.scale": "ones", "temperature": ("constant", {"val": 0.07}),
                                       "unbiased_weight": "ones"})  # fmt: skip
    assert torch.equal(model.norm.scale.detach(), torch.ones(4))


def test_policy_errors_are_raised_before_any_write(backend):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    before = _snapshot(model)
    for policy in ({"*.bias": "orthogonal"}, {"*.weight": ("uniform", {"a": 1.0, "b": -1.0})},
                   {"2.*": ("normal", {"std": -1.0})}):  # fmt: skip
        with pytest.raises(ValueError):
            initkit.initialize(model, policy)
        after = _snapshot(model)
        assert all(torch.equal(after[k], before[k]) for k in before), policy


def test_failing_reset_parameters_leaves_the_model_as_it_was(backend):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))

    def broken():
        raise RuntimeError("user code failed")

    model[1].reset_parameters = broken
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="user code failed"):
        initkit.initialize(model, "torch_default")
    after = _snapshot(model)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_materialize_failure_leaves_the_model_on_meta(backend):
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))

    def broken():
        raise RuntimeError("user code failed")

    model[1].reset_parameters = broken
    with pytest.raises(RuntimeError, match="user code failed"):
        initkit.materialize(model, policy="torch_default")
    assert all(p.is_meta for p in model.parameters())


def test_torch_default_honours_the_generator(backend):
    def run(seed, global_seed):
        model = nn.Sequential(nn.Linear(8, 8), nn.Conv2d(2, 3, 3))
        torch.manual_seed(global_seed)  # the global RNG must not matter, and is left alone
        rng = torch.get_rng_state()
        initkit.initialize(model, "torch_default", generator=torch.Generator().manual_seed(seed))
        assert torch.equal(rng, torch.get_rng_state())
        return _snapshot(model)

    first, second, other = run(5, 1), run(5, 2), run(6, 1)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["0.weight"], other["0.weight"])


@pytest.mark.parametrize("policy", ["auto", "xavier_uniform", "torch_default"])
def test_embedding_bag_padding_row_is_zero(backend, policy):
    model = nn.Sequential(nn.EmbeddingBag(10, 4, padding_idx=3, mode="sum"))
    plan = initkit.initialize(model, policy)
    assert torch.count_nonzero(model[0].weight[3]) == 0
    assert model[0].weight[[0, 1, 2, 4]].std() > 0
    assert policy == "torch_default" or "padding_idx" in plan.row("0.weight").reason


def test_materialize_keeps_existing_parameter_objects_and_attributes(backend):
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    weight = model.weight
    initkit.materialize(model)
    assert model.weight is weight and optimizer.param_groups[0]["params"][0] is weight
    with torch.device("meta"):
        meta = nn.Linear(4, 3)
    meta.weight.no_decay = True
    initkit.materialize(meta)
    assert meta.weight.no_decay is True and not meta.weight.is_meta


def _state(model):
    """Every parameter's and buffer's value, by name."""
    return {name: t.detach().clone() for name, t in [*model.named_parameters(), *model.named_buffers()]}


def _assert_same_state(model, before):
    after = _state(model)
    assert after.keys() == before.keys()
    for name in before:
        assert torch.equal(after[name], before[name]), name


def _embedding_padding_set_after_construction():
    model = nn.Sequential(nn.Linear(8, 8), nn.Embedding(5, 8))
    model[1].padding_idx = 9  # torch checks it only in the constructor
    return model


@pytest.mark.parametrize(
    "make, policy, error, message",
    [
        (lambda: nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)).half(), {"1.weight": ("constant", {"val": 1e6})},
         RuntimeError, "'1.weight' of dtype torch.float16.*overflow"),
        (lambda: nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)).to(torch.bfloat16), {"1.weight": "orthogonal"},
         NotImplementedError, "'1.weight' of dtype torch.bfloat16.*geqrf"),  # torch has no bfloat16 QR on the CPU
        (_embedding_padding_set_after_construction, "auto", IndexError, "1.padding_idx 9 is out of bounds for 5"),
    ],
)  # fmt: skip
def test_writes_after_the_random_fills_are_checked_before_any_write(backend, make, policy, error, message):
    model = make()
    before = _state(model)
    with pytest.raises(error, match=message):
        initkit.initialize(model, policy)
    _assert_same_state(model, before)


@pytest.mark.parametrize("a,b", [(1e39, 1e40), (-math.inf, -math.inf)])
def test_trunc_normal_bounds_holding_no_finite_value_are_refused_before_any_write(backend, a, b):
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    before = _state(model)
    with pytest.raises(ValueError, match="holding a finite torch.float32 value"):
        initkit.initialize(model, {"0.weight": "normal", "1.weight": ("trunc_normal", {"a": a, "b": b})})
    _assert_same_state(model, before)

def test_constant_overflow_is_checked_before_any_write_under_a_meta_default_device(backend):
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)).half()
    before = _state(model)
    with torch.device("meta"), pytest.raises(RuntimeError, match="overflow"):
        initkit.initialize(model, {"1.weight": ("constant", {"val": 1e6})})
    _assert_same_state(model, before)


def test_failing_reset_parameters_restores_the_buffers_it_reset(backend):
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 4))

        def reset_parameters(self):
            raise RuntimeError("user code failed")

    model = nn.Sequential(nn.BatchNorm1d(4), Broken())
    model[0](torch.randn(8, 4) * 3 + 2)  # running statistics and num_batches_tracked away from their reset values
    before = _state(model)
    with pytest.raises(RuntimeError, match="user code failed"):
        initkit.initialize(model, "torch_default")  # BatchNorm1d.reset_parameters() ran first
    _assert_same_state(model, before)


def test_initialize_refuses_a_model_on_meta(backend):
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(RuntimeError, match=r"\['0.weight', '0.bias'\] are on the meta device.*initkit.materialize"):
        initkit.initialize(model)
    assert all(p.is_meta for p in model.parameters())


def test_recorded_reinit_that_fails_in_a_replay_leaves_the_model_as_it_was(backend):
    class WithOrthogonal(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.w = nn.Parameter(torch.empty(8, 8))
            nn.init.orthogonal_(self.w)  # replayed with torch after the fused fills

    model = initkit.materialize(initkit.deferred_init(WithOrthogonal)).to(torch.bfloat16)
    before = _state(model)
    with pytest.raises(NotImplementedError, match="geqrf"):  # torch has no bfloat16 QR on the CPU
        initkit.initialize(model, policy="recorded")
    _assert_same_state(model, before)


def test_recorded_reinit_checks_constants_before_any_write(backend):
    class BigConstant(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.c = nn.Parameter(torch.empty(4))
            nn.init.constant_(self.c, 1e6)

    model = initkit.materialize(initkit.deferred_init(BigConstant)).half()
    before = _state(model)
    with pytest.raises(RuntimeError, match="overflow"):
        initkit.initialize(model, policy="recorded")
    _assert_same_state(model, before)
