"""initkit.initialize / init_plan: policy decisions, torch.nn.init formulas, one multi-tensor pass."""

import gc
import io
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

import initkit
from initkit.model import activations
from initkit.model import apply as model_apply


def _mlp_with_every_activation():
    return nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(),
        nn.Linear(16, 16), nn.Tanh(),
        nn.Linear(16, 16), nn.LeakyReLU(0.2),
        nn.Linear(16, 16), nn.GELU(),
        nn.Linear(16, 16), nn.SiLU(),
        nn.Linear(16, 16), nn.SELU(),
        nn.Linear(16, 16), nn.Sigmoid(),
        nn.Linear(16, 4),
    )  # fmt: skip


def test_auto_policy_on_sequential(backend):
    plan = initkit.initialize(_mlp_with_every_activation(), generator=torch.Generator().manual_seed(0))
    weights = [row for row in plan if row.name.endswith("weight")]
    expected = [
        ("kaiming_normal", {"nonlinearity": "relu"}, "ReLU"),
        ("xavier_uniform", {"gain": 5.0 / 3}, "Tanh"),
        ("kaiming_normal", {"a": 0.2, "nonlinearity": "leaky_relu"}, "LeakyReLU"),
        ("kaiming_normal", {"nonlinearity": "relu"}, "GELU"),
        ("kaiming_normal", {"nonlinearity": "relu"}, "SiLU"),
        ("lecun_normal", {}, "SELU"),
        ("xavier_uniform", {"gain": 1.0}, "Sigmoid"),
        ("xavier_uniform", {"gain": 1.0}, "output layer"),
    ]
    assert [(r.scheme, r.args) for r in weights] == [(s, a) for s, a, _ in expected]
    for row, (_, _, why) in zip(weights, expected):
        assert why in row.reason and "(fx)" in row.reason
    assert all(row.scheme == "zeros" for row in plan if row.name.endswith("bias"))


class _FunctionalNet(nn.Module):
    """Activations as function calls: only the fx trace can see them."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 16)
        self.norm = nn.LayerNorm(16)
        self.c = nn.Linear(16, 4)

    def forward(self, x):
        x = F.leaky_relu(self.a(x), negative_slope=0.1)
        x = torch.tanh(self.norm(self.b(x)))
        return self.c(x)


def test_auto_policy_reads_functional_activations_with_fx(backend):
    plan = initkit.init_plan(_FunctionalNet())
    assert plan.row("a.weight").args == {"a": 0.1, "nonlinearity": "leaky_relu"}
    assert plan.row("b.weight").scheme == "xavier_uniform"  # through the LayerNorm to tanh
    assert plan.row("b.weight").gain == pytest.approx(5.0 / 3)
    assert "output layer" in plan.row("c.weight").reason
    assert (plan.row("norm.weight").scheme, plan.row("norm.bias").scheme) == ("ones", "zeros")


class _UntraceableNet(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it; module order still tells."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.1)
        self.b = nn.Linear(16, 16)
        self.squash = nn.Tanh()
        self.c = nn.Linear(16, 4)

    def forward(self, x):
        if x.sum() > 0:
            x = -x
        return self.c(self.squash(self.b(self.drop(self.act(self.a(x))))))


def test_auto_policy_falls_back_to_module_order(backend):
    plan = initkit.init_plan(_UntraceableNet())
    assert plan.row("a.weight").scheme == "kaiming_normal"
    assert "module order" in plan.row("a.weight").reason
    assert plan.row("b.weight").gain == pytest.approx(5.0 / 3)
    assert "output layer" in plan.row("c.weight").reason


def test_embedding_and_norm_rows(backend):
    model = nn.Sequential(nn.Embedding(20, 8, padding_idx=3), nn.BatchNorm1d(8), nn.Linear(8, 2))
    model[1].weight.data.fill_(5)
    plan = initkit.initialize(model)
    assert (plan.row("0.weight").scheme, plan.row("0.weight").params) == ("normal", (0.0, 1.0))
    assert torch.count_nonzero(model[0].weight[3]) == 0
    assert torch.count_nonzero(model[0].weight[2]) == 8
    assert torch.equal(model[1].weight, torch.ones(8)) and torch.equal(model[1].bias, torch.zeros(8))


def _independent_std_and_bound(policy, w):
    """torch.nn.init's documented formulas, written out (fan_in = size(1) * receptive field)."""
    receptive = math.prod(w.shape[2:])
    fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
    if policy == "xavier_uniform":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return bound / math.sqrt(3), bound
    if policy == "xavier_normal":
        return math.sqrt(2.0 / (fan_in + fan_out)), None
    if policy == "kaiming_uniform":  # a=0, leaky_relu → gain sqrt(2)
        bound = math.sqrt(6.0 / fan_in)
        return bound / math.sqrt(3), bound
    if policy == "kaiming_normal":
        return math.sqrt(2.0 / fan_in), None
    if policy == "lecun_normal":  # truncated at 2 s with s = sqrt(1/fan_in) / 0.8796...
        return math.sqrt(1.0 / fan_in), 2 * math.sqrt(1.0 / fan_in) / 0.87962566103423978
    raise AssertionError(policy)


@pytest.mark.parametrize(
    "policy", ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "lecun_normal"]
)
def test_named_policy_values_follow_torch_formulas(backend, policy):
    model = nn.Sequential(nn.Conv2d(3, 16, (3, 5)), nn.ReLU(), nn.Flatten(), nn.Linear(16, 7))
    plan = initkit.initialize(model, policy)
    for row, weight in ((plan.row("0.weight"), model[0].weight), (plan.row("3.weight"), model[3].weight)):
        std, bound = _independent_std_and_bound(policy, weight)
        assert row.scheme == policy
        assert row.std == pytest.approx(std, rel=1e-12)
        if bound is None:
            assert row.bound is None
        else:
            assert row.bound == pytest.approx(bound, rel=1e-12)
            assert weight.abs().max() <= bound
    assert plan.row("0.bias").scheme == "zeros" and torch.count_nonzero(model[0].bias) == 0


def test_orthogonal_policy(backend):
    model = nn.Sequential(nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 16))
    plan = initkit.initialize(model, "orthogonal")
    assert plan.row("0.weight").kind == "orthogonal"
    w = model[0].weight.detach()
    torch.testing.assert_close(w @ w.T, torch.eye(16), atol=1e-5, rtol=0)  # rows orthonormal (16 < 32)


def test_torch_default_policy_calls_each_reset_parameters(backend):
    def build():
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3))

    model, reference = build(), build()
    torch.manual_seed(2)
    plan = initkit.initialize(model, "torch_default")
    torch.manual_seed(2)
    for module in (reference[0], reference[1], reference[2]):
        module.reset_parameters()
    assert {row.scheme for row in plan} == {"torch_default"}
    for got, want in zip(model.parameters(), reference.parameters()):
        assert torch.equal(got, want)


def test_dict_policy_globs_beat_types_and_unmatched_stay_auto(backend):
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    policy = {
        "4.*": ("constant", {"val": 0.5}),
        nn.Linear: ("normal", {"std": 0.02}),
    }
    plan = initkit.initialize(model, policy)
    assert plan.row("0.weight").params == (0.0, 0.02) and "Linear" in plan.row("0.weight").reason
    assert plan.row("0.bias").scheme == "zeros"  # type entries leave biases to auto
    assert torch.all(model[4].weight == 0.5) and torch.all(model[4].bias == 0.5)
    assert plan.row("2.weight").scheme == "normal"


def test_multi_tensor_pass_equals_per_tensor_streams(ext):
    """Tensor with stream i gets what the single fill op gives on stream i, for the one key drawn."""
    model = _mlp_with_every_activation()
    plan = initkit.initialize(model, generator=torch.Generator().manual_seed(42))
    seed = initkit.init.new_seed(torch.Generator().manual_seed(42))
    params = dict(model.named_parameters())
    random_rows = [row for row in plan if row.stream is not None]
    assert [row.stream for row in random_rows] == list(range(len(random_rows)))
    assert {row.kind for row in random_rows} == {"uniform", "normal", "trunc_normal"}
    for row in random_rows:
        expected = torch.empty_like(params[row.name])
        getattr(torch.ops.initkit, f"{row.kind}_fill")(expected, *row.params, seed, stream=row.stream)
        assert torch.equal(params[row.name], expected), row.name


def test_torch_backend_equals_nn_init_one_tensor_after_another():
    model = _mlp_with_every_activation()
    with initkit.use_backend("torch"):
        plan = initkit.initialize(model, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    fills = {"uniform": nn.init.uniform_, "normal": nn.init.normal_, "trunc_normal": nn.init.trunc_normal_}
    for row, param in zip(plan, model.parameters()):
        if row.stream is not None:
            expected = fills[row.kind](torch.empty_like(param), *row.params, generator=generator)
            assert torch.equal(param, expected), row.name


def test_random_fills_are_one_multi_fill_call(backend, monkeypatch):
    calls = []
    original = initkit.init.multi_fill_
    monkeypatch.setattr(initkit.init, "multi_fill_", lambda t, f, g=None: calls.append(len(t)) or original(t, f, g))
    plan = initkit.initialize(_mlp_with_every_activation())
    assert calls == [sum(row.stream is not None for row in plan)]


def test_same_generator_seed_same_values_and_new_seed_new_values(backend):
    first, second = nn.Linear(64, 64), nn.Linear(64, 64)
    initkit.initialize(first, generator=torch.Generator().manual_seed(5))
    initkit.initialize(second, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first.weight, second.weight)
    initkit.initialize(second, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(first.weight, second.weight)


def test_initialized_weights_follow_their_distribution(backend):
    """KS test of each big weight against the exact law its row names (fixed seed: deterministic)."""
    model = nn.Sequential(
        nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.Tanh(),
        nn.Linear(512, 256), nn.SELU(), nn.Linear(256, 10),
    )  # fmt: skip
    plan = initkit.initialize(model, generator=torch.Generator().manual_seed(11))
    params = dict(model.named_parameters())
    for name in ("0.weight", "2.weight", "4.weight"):
        row, values = plan.row(name), params[name].detach().double().flatten().numpy()
        if row.kind == "normal":
            law = stats.norm(row.params[0], row.params[1]).cdf
        elif row.kind == "uniform":
            law = stats.uniform(row.params[0], row.params[1] - row.params[0]).cdf
        else:
            mean, s, a, b = row.params
            law = stats.truncnorm((a - mean) / s, (b - mean) / s, loc=mean, scale=s).cdf
            assert values.std() == pytest.approx(row.std, rel=0.02)  # 65k samples: std error ~0.3%
        assert stats.kstest(values, law).pvalue > 1e-4, (name, row.kind)


class _FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal_and_same_numbers(backend, monkeypatch):
    def run(stderr, threshold):
        monkeypatch.setattr(model_apply, "PROGRESS_MIN_PARAMS", threshold)
        monkeypatch.setattr(model_apply, "_PROGRESS_CHUNK_ELEMENTS", 1000)  # several pieces
        monkeypatch.setattr("sys.stderr", stderr)
        model = _mlp_with_every_activation()
        initkit.initialize(model, generator=torch.Generator().manual_seed(9))
        return [p.detach().clone() for p in model.parameters()]

    quiet = run(io.StringIO(), 1)
    terminal = _FakeTerminal()
    with_bar = run(terminal, 1)
    assert "100%" in terminal.getvalue()
    assert all(torch.equal(a, b) for a, b in zip(quiet, with_bar))
    below = _FakeTerminal()
    run(below, 10**9)
    assert below.getvalue() == ""


def test_bad_input_raises_clear_errors():
    model = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="unknown init policy 'kaiming'"):
        initkit.initialize(model, "kaiming")
    with pytest.raises(TypeError, match="expected an nn.Module"):
        initkit.initialize(torch.zeros(3))
    with pytest.raises(TypeError, match="policy must be a name or a dict"):
        initkit.initialize(model, 3)
    with pytest.raises(TypeError, match="policy keys"):
        initkit.initialize(model, {3: "zeros"})
    with pytest.raises(ValueError, match="unknown scheme 'gaussian'"):
        initkit.initialize(model, {"*": "gaussian"})
    with pytest.raises(TypeError, match="bad arguments"):
        initkit.initialize(model, {"weight": ("normal", {"sigma": 1.0})})
    with pytest.raises(ValueError, match="cannot apply 'xavier_uniform' to parameter 'bias'"):
        initkit.initialize(model, {"bias": "xavier_uniform"})


def test_prelu_slope_sets_the_gain_and_is_reset(backend):
    model = nn.Sequential(nn.Linear(8, 8), nn.PReLU(init=0.3), nn.Linear(8, 2))
    model[1].weight.data.fill_(7)
    plan = initkit.initialize(model)
    assert plan.row("0.weight").args == {"a": 0.3, "nonlinearity": "leaky_relu"}
    assert plan.row("1.weight").scheme == "constant"
    torch.testing.assert_close(model[1].weight.detach(), torch.full((1,), 0.3))


def test_zero_element_parameters_are_skipped(backend):
    with pytest.warns(UserWarning, match="zero-element"):  # torch's own init, in the constructor
        model = nn.Sequential(nn.Linear(0, 4), nn.ReLU(), nn.Linear(4, 2))
    plan = initkit.initialize(model)
    assert plan.row("0.weight").scheme == "empty" and plan.row("0.weight").stream is None
    assert plan.row("2.weight").scheme == "xavier_uniform"


def test_glob_matches_any_name_of_a_tied_parameter(backend):
    model = nn.Sequential(nn.Embedding(100, 40), nn.Linear(40, 100, bias=False))
    model[1].weight = model[0].weight
    plan = initkit.initialize(model, {"1.weight": ("normal", {"std": 0.02})}, torch.Generator().manual_seed(0))
    assert [row.name for row in plan] == ["0.weight"]  # listed once, under its first name
    assert plan.row("0.weight").params == (0.0, 0.02)
    assert float(model[1].weight.detach().std()) == pytest.approx(0.02, rel=0.05)  # 4000 samples: ~1.1% error


def test_conv_followed_by_batchnorm_then_relu_gets_kaiming(backend):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Dropout(), nn.Linear(8, 2))
    plan = initkit.init_plan(model)
    assert plan.row("0.weight").scheme == "kaiming_normal" and "ReLU" in plan.row("0.weight").reason
    assert plan.row("0.weight").fan_in == 3 * 9
    assert "output layer" in plan.row("5.weight").reason


class _Switchable(nn.Module):
    """Its forward branches on a plain attribute: only a new trace sees a change to it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 4)
        self.squash = False

    def forward(self, x):
        x = self.a(x)
        return self.b(torch.tanh(x) if self.squash else F.relu(x))


def _count_traces(monkeypatch) -> list:
    calls = []
    trace = activations._followers_from_fx
    monkeypatch.setattr(activations, "_followers_from_fx", lambda model: calls.append(1) or trace(model))
    return calls


def test_plan_of_an_unchanged_model_reuses_its_trace(backend, monkeypatch):
    traces = _count_traces(monkeypatch)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    first = initkit.initialize(model)
    model.train(True)  # an unchanged flag
    assert initkit.init_plan(model) == first and initkit.initialize(model) == first
    assert len(traces) == 1
    other = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))  # same structure, another model
    assert initkit.init_plan(other) == first and len(traces) == 2


class _ReluNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)

    def forward(self, x):
        return F.relu(self.a(x))


def test_an_instance_forward_is_not_read_from_the_class_graph(backend):
    model = _ReluNet()
    model.forward = lambda x: torch.tanh(model.a(x))  # fx would trace _ReluNet.forward (relu)
    row = initkit.init_plan(model).row("a.weight")
    assert row.scheme == "xavier_uniform" and "module order" in row.reason and "relu" not in row.reason
    outer = nn.Sequential(_ReluNet())
    outer[0].forward = lambda x: torch.tanh(outer[0].a(x))  # a submodule's own forward: fx follows it
    row = initkit.init_plan(outer).row("0.a.weight")
    assert row.gain == pytest.approx(5.0 / 3) and "tanh (fx)" in row.reason


def test_plan_follows_every_change_of_the_model(backend, monkeypatch):
    traces = _count_traces(monkeypatch)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    assert initkit.init_plan(model).row("0.weight").args == {"nonlinearity": "relu"}
    model[1] = nn.Tanh()  # a replaced module
    assert initkit.init_plan(model).row("0.weight").gain == pytest.approx(5.0 / 3)
    model[1] = nn.LeakyReLU(0.2)
    assert initkit.init_plan(model).row("0.weight").args == {"a": 0.2, "nonlinearity": "leaky_relu"}
    model[1].negative_slope = 0.3  # an attribute changed in place
    assert initkit.init_plan(model).row("0.weight").args == {"a": 0.3, "nonlinearity": "leaky_relu"}
    model[0], model[2] = nn.Linear(8, 32), nn.Linear(32, 4)  # changed shapes
    plan = initkit.initialize(model)
    assert plan.row("0.weight").shape == (32, 8) and plan.row("2.weight").fan_in == 32
    assert model[0].weight.abs().sum() > 0
    model.append(nn.Sigmoid())  # a new module: the last Linear is no longer the output layer
    assert "Sigmoid" in initkit.init_plan(model).row("2.weight").reason
    assert len(traces) == 6


def test_plan_follows_an_attribute_the_forward_branches_on(backend):
    model = _Switchable()
    assert initkit.init_plan(model).row("a.weight").scheme == "kaiming_normal"
    model.squash = True
    assert initkit.init_plan(model).row("a.weight").scheme == "xavier_uniform"
    model.squash = False
    assert initkit.init_plan(model).row("a.weight").scheme == "kaiming_normal"
    key = activations.structure_key(model)
    assert activations.structure_key(model) == key
    model.a.register_forward_hook(lambda module, args, out: torch.tanh(out))  # hooks can change a trace
    assert activations.structure_key(model) != key


def test_trace_cache_keeps_no_model_alive(backend):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    initkit.init_plan(model)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
