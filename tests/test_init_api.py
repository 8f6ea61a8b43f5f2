"""The torch.nn.init surface: signatures, parity of every bound/std with torch's formulas,
return values, autograd, warnings and exceptions."""

import fractions
import inspect
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.init as nn_init
from torch._subclasses.fake_tensor import FakeTensorMode

import initkit
from helpers import run_python, skip_torch_2_11_sampler

TORCH_NAMES = [n for n in nn_init.__all__]
INF, NAN = math.inf, math.nan


def test_whole_torch_surface_is_present_with_same_signatures():
    for name in TORCH_NAMES:
        ours, theirs = getattr(initkit, name), getattr(nn_init, name)
        if name.endswith("_") or name == "calculate_gain":
            assert inspect.signature(ours).parameters.keys() == inspect.signature(theirs).parameters.keys(), name
            for p, q in zip(inspect.signature(ours).parameters.values(), inspect.signature(theirs).parameters.values()):
                assert p.default == q.default, (name, p.name)
    assert initkit.init.kaiming_uniform_ is initkit.kaiming_uniform_


def _seeded(seed=7):
    return torch.Generator().manual_seed(seed)


# (name, kwargs, kind, expected params from torch's own fan/gain helpers)
def _torch_fan(t, mode):
    return nn_init._calculate_correct_fan(t, mode)


PARITY = []
for shape in [(30, 20), (16, 8, 3), (16, 8, 3, 5), (4, 6, 3, 3, 2)]:
    for mode in ["fan_in", "fan_out"]:
        for nonlinearity, a in [("relu", 0), ("leaky_relu", 0.2), ("leaky_relu", 0), ("tanh", 0), ("selu", 0), ("linear", 0), ("sigmoid", 0), ("conv2d", 0)]:
            PARITY.append(("kaiming_uniform_", shape, dict(a=a, mode=mode, nonlinearity=nonlinearity)))
            PARITY.append(("kaiming_normal_", shape, dict(a=a, mode=mode, nonlinearity=nonlinearity)))
    for gain in [1.0, 0.5, nn_init.calculate_gain("tanh")]:
        PARITY.append(("xavier_uniform_", shape, dict(gain=gain)))
        PARITY.append(("xavier_normal_", shape, dict(gain=gain)))


def _expected_fill(name, t, kw):
    """(kind, params) from torch.nn.init's documented formulas, using torch's helpers."""
    if name.startswith("kaiming"):
        std = nn_init.calculate_gain(kw["nonlinearity"], kw["a"]) / math.sqrt(_torch_fan(t, kw["mode"]))
    else:
        fan_in, fan_out = nn_init._calculate_fan_in_and_fan_out(t)
        std = kw["gain"] * math.sqrt(2.0 / (fan_in + fan_out))
    if name.endswith("uniform_"):
        return "uniform", (-math.sqrt(3.0) * std, math.sqrt(3.0) * std)
    return "normal", (0.0, std)


@pytest.mark.parametrize("name,shape,kw", PARITY)
def test_scheme_parameters_match_torch_formula(ext, name, shape, kw):
    # The fused scheme must be exactly one fill with torch's bound/std: compare with the raw op
    # called with the same key (drawn from an identically seeded generator).
    t = torch.empty(shape)
    out = getattr(initkit, name)(t, **kw, generator=_seeded())
    assert out is t
    kind, params = _expected_fill(name, t, kw)
    expected = torch.empty(shape)
    seed = initkit.init.new_seed(_seeded())
    getattr(torch.ops.initkit, f"{kind}_fill")(expected, *params, seed)
    torch.testing.assert_close(t, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name,shape,kw", PARITY[::7])
def test_torch_backend_is_bit_exact_with_torch_nn_init(name, shape, kw):
    with initkit.use_backend("torch"):
        ours = getattr(initkit, name)(torch.empty(shape), **kw, generator=_seeded())
    theirs = getattr(nn_init, name)(torch.empty(shape), **kw, generator=_seeded())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize(
    "mode,fan", [("fan_in", lambda fi, fo: fi), ("fan_out", lambda fi, fo: fo), ("fan_avg", lambda fi, fo: (fi + fo) / 2)]
)
@pytest.mark.parametrize("distribution", ["truncated_normal", "normal", "uniform"])
def test_variance_scaling_parameters(ext, mode, fan, distribution):
    t = torch.empty(12, 5, 3, 3)  # fan_in 45, fan_out 108
    initkit.variance_scaling_(t, 2.0, mode, distribution, generator=_seeded())
    variance = 2.0 / fan(45, 108)
    expected = torch.empty_like(t)
    seed = initkit.init.new_seed(_seeded())
    if distribution == "truncated_normal":
        std = math.sqrt(variance) / 0.87962566103423978
        torch.ops.initkit.trunc_normal_fill(expected, 0.0, std, -2 * std, 2 * std, seed)
    elif distribution == "normal":
        torch.ops.initkit.normal_fill(expected, 0.0, math.sqrt(variance), seed)
    else:
        bound = math.sqrt(3 * variance)
        torch.ops.initkit.uniform_fill(expected, -bound, bound, seed)
    torch.testing.assert_close(t, expected, rtol=0, atol=0)


def test_calculate_gain_is_torchs(backend):
    for nl, param in [("relu", None), ("leaky_relu", None), ("leaky_relu", 0.3), ("tanh", None), ("selu", None)]:
        assert initkit.calculate_gain(nl, param) == nn_init.calculate_gain(nl, param)


@pytest.mark.parametrize("fn", ["uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "kaiming_normal_", "lecun_normal_"])
def test_parameters_requiring_grad_are_filled_without_autograd_history(backend, fn):
    p = torch.nn.Parameter(torch.zeros(8, 8))
    out = getattr(initkit, fn)(p)
    assert out is p and p.grad_fn is None and p.requires_grad
    assert p.abs().sum() > 0
    (p * 2).sum().backward()  # still a usable leaf
    assert torch.equal(p.grad, torch.full((8, 8), 2.0))


@pytest.mark.parametrize("grad", [True, False])
def test_grad_mode_is_as_before_after_a_fill_and_after_a_refused_one(backend, grad):
    p = torch.nn.Parameter(torch.zeros(8, 8))
    with torch.set_grad_enabled(grad):
        initkit.normal_(p, std=0.5)
        assert torch.is_grad_enabled() is grad and p.grad_fn is None
        with pytest.raises(RuntimeError):
            initkit.uniform_(p, 1.0, 0.0)  # low > high: refused by the fill
        assert torch.is_grad_enabled() is grad
    assert p.abs().sum() > 0 and p.requires_grad


@pytest.mark.parametrize("fn", ["uniform_", "normal_", "trunc_normal_", "xavier_normal_"])
def test_zero_element_tensors_are_left_alone(backend, fn):
    t = torch.empty(0, 5)
    assert getattr(initkit, fn)(t) is t


@pytest.mark.parametrize("fn", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_warns_on_zero_element_tensors_like_torch(backend, fn):
    t = torch.empty(0, 5)
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
        assert getattr(initkit, fn)(t) is t


def test_trunc_normal_warns_when_mean_is_far_from_bounds(backend):
    with pytest.warns(UserWarning, match="mean is more than 2 std"):
        initkit.trunc_normal_(torch.empty(10), mean=5.0, std=1.0, a=-1.0, b=1.0)


def test_deprecated_aliases_warn(backend):
    with pytest.warns(FutureWarning, match="deprecated"):
        initkit.xavier_uniform(torch.empty(3, 3))


def test_non_random_functions_match_torch(backend):
    for fn, args in [("constant_", (0.3,)), ("ones_", ()), ("zeros_", ()), ("eye_", ())]:
        a, b = torch.empty(4, 6), torch.empty(4, 6)
        torch.testing.assert_close(getattr(initkit, fn)(a, *args), getattr(nn_init, fn)(b, *args))
    a, b = torch.empty(6, 2, 3, 3), torch.empty(6, 2, 3, 3)
    torch.testing.assert_close(initkit.dirac_(a, groups=2), nn_init.dirac_(b, groups=2))
    q = initkit.orthogonal_(torch.empty(5, 8), generator=_seeded())
    torch.testing.assert_close(q @ q.T, torch.eye(5), atol=1e-5, rtol=0)
    s = initkit.sparse_(torch.empty(10, 4), sparsity=0.3, generator=_seeded())
    assert ((s == 0).sum(0) == 3).all()


# Bad input: same exception type as torch.nn.init wherever torch raises.
BAD_INPUTS = [
    ("uniform_", lambda: (torch.zeros(3, 3, dtype=torch.int64),), {}),
    ("uniform_", lambda: (torch.zeros(3, 3, dtype=torch.bool),), {}),
    ("normal_", lambda: (torch.zeros(3, 3, dtype=torch.int32),), {}),
    ("xavier_uniform_", lambda: (torch.zeros(3, 3, dtype=torch.int64),), {}),
    ("xavier_uniform_", lambda: (torch.zeros(5),), {}),
    ("kaiming_normal_", lambda: (torch.zeros(5),), {}),
    ("kaiming_uniform_", lambda: (torch.zeros(3, 3),), {"mode": "fan_x"}),
    ("kaiming_uniform_", lambda: (torch.zeros(3, 3),), {"nonlinearity": "swish"}),
    ("kaiming_uniform_", lambda: (torch.zeros(3, 3),), {"a": True}),
    ("normal_", lambda: (torch.zeros(3, 3),), {"std": -1.0}),
    ("normal_", lambda: (torch.zeros(3, 3),), {"std": float("nan")}),
    ("uniform_", lambda: (torch.zeros(3, 3),), {"a": 2.0, "b": 1.0}),
    ("trunc_normal_", lambda: (torch.zeros(3, 3),), {"a": 2.0, "b": -2.0}),
    ("uniform_", lambda: (torch.zeros(3, 1).expand(3, 4),), {}),
    ("eye_", lambda: (torch.zeros(3, 3, 3),), {}),
    # trunc_normal_ bounds holding no finite value of the dtype (torch: "from is out of bounds")
    ("trunc_normal_", lambda: (torch.zeros(3, 3),), {"a": INF, "b": INF}),
    ("trunc_normal_", lambda: (torch.zeros(3, 3),), {"a": -INF, "b": -INF}),
    ("trunc_normal_", lambda: (torch.zeros(3, 3),), {"a": 1e39, "b": 1e40}),
    ("trunc_normal_", lambda: (torch.zeros(3, 3, dtype=torch.float16),), {"a": 7e4, "b": 7.0001e4}),
    ("trunc_normal_", lambda: (torch.zeros(3, 3, dtype=torch.bfloat16),), {"a": -INF, "b": -1e39}),
    # a non-finite mean or std: torch draws from uniform_(a, b), which refuses bounds outside the dtype
    ("trunc_normal_", lambda: (torch.zeros(3, 3),), {"mean": INF, "a": -INF}),
    ("trunc_normal_", lambda: (torch.zeros(3, 3),), {"mean": NAN, "b": INF}),
    ("trunc_normal_", lambda: (torch.zeros(3, 3),), {"std": INF, "a": -INF, "b": INF}),
    ("trunc_normal_", lambda: (torch.zeros(3, 3, dtype=torch.float16),), {"std": INF, "a": -6e4, "b": 6e4}),
    # argument types torch's fills refuse
    ("uniform_", lambda: (torch.zeros(3, 3),), {"a": fractions.Fraction(1, 3)}),
    ("uniform_", lambda: (torch.zeros(3, 3),), {"a": torch.tensor([0.1])}),
    ("normal_", lambda: (torch.zeros(3, 3),), {"mean": torch.tensor(0.5, requires_grad=True)}),
    ("trunc_normal_", lambda: (torch.zeros(3, 3),), {"mean": torch.tensor(True)}),
    ("trunc_normal_", lambda: (torch.zeros(3, 3),), {"b": np.array([1.0])}),  # (0-dim arrays are taken)
    ("trunc_normal_", lambda: (torch.zeros(3, 3),), {"mean": np.array(0.5)}),  # (torch's normal_ refuses it)
    ("trunc_normal_", lambda: (torch.zeros(3, 3),), {"std": fractions.Fraction(1, 3)}),
    ("xavier_uniform_", lambda: (torch.zeros(3, 3),), {"gain": torch.tensor([2.0])}),
]


def skip_torch_2_11_trunc_normal(name):
    """The parity cases compare with the installed torch.nn.init; torch 2.11's trunc_normal_ (erfinv
    and a clamp, replaced in torch 2.12) refuses none of these bounds and fails in clamp_ on a
    Fraction, so its trunc_normal_ cases say nothing there."""
    if name == "trunc_normal_" and torch.__version__ < (2, 12):
        pytest.skip(f"torch {torch.__version__}'s own trunc_normal_ (erfinv and a clamp; replaced in torch 2.12)")


@pytest.mark.parametrize("name,args,kwargs", BAD_INPUTS)
def test_bad_input_raises_like_torch(backend, name, args, kwargs):
    skip_torch_2_11_trunc_normal(name)
    with pytest.raises(Exception) as theirs:
        getattr(nn_init, name)(*args(), **kwargs)
    with pytest.raises(theirs.type):
        getattr(initkit, name)(*args(), **kwargs)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("uniform_", {"a": np.bool_(False)}),
        ("normal_", {"mean": np.bool_(True)}),
        ("trunc_normal_", {"a": np.bool_(False)}),
        ("normal_", {"std": np.float32(0.5)}),
        ("uniform_", {"b": torch.tensor(3)}),
        ("trunc_normal_", {"b": fractions.Fraction(5, 2)}),  # torch only computes with a and b
        ("trunc_normal_", {"a": np.array(-1.5), "b": np.array(1, dtype=np.int64)}),
        ("trunc_normal_", {"a": np.array(-1.0, dtype=np.float16), "b": np.array(True)}),
    ],
)
def test_numbers_torch_takes_are_taken(backend, name, kwargs):
    skip_torch_2_11_trunc_normal(name)
    getattr(nn_init, name)(torch.empty(3, 3), **kwargs)
    assert getattr(initkit, name)(torch.empty(3, 3), **kwargs).isfinite().all()


# (not trunc_normal_: torch's reads values, which a FakeTensor has not; initkit's fills it)
@pytest.mark.parametrize("fn", ["uniform_", "normal_", "xavier_normal_", "kaiming_uniform_"])
def test_fake_tensor_filled_outside_its_mode_as_torch(backend, fn):
    with FakeTensorMode():
        t = torch.empty(4, 6)
    getattr(nn_init, fn)(t)
    assert getattr(initkit, fn)(t) is t


def test_fake_tensors_multi_filled_outside_their_mode(backend):
    # The one key multi_fill_ draws (or is given) is converted as the single fills convert theirs.
    with FakeTensorMode():
        tensors = [torch.empty(4, 6), torch.empty(3, dtype=torch.float64)]
    fills = [("normal", (0.0, 1.0)), ("uniform", (-2.0, 2.0))]  # (torch's trunc_normal_ reads values)
    assert initkit.multi_fill_(tensors, fills) == tensors
    assert initkit.multi_fill_(tensors, fills, seed=torch.tensor(5), first_stream=2) == tensors


def test_trunc_normal_of_a_meta_tensor_returns_before_the_warning_and_the_write(backend):
    skip_torch_2_11_sampler(backend, "trunc_normal_ of a meta tensor (it warns and writes)")
    t = torch.empty(4, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch returns before its "mean is more than 2 std" warning
        assert initkit.trunc_normal_(t, mean=5.0, std=1.0, a=-1.0, b=1.0) is t
    assert t._version == 0

@pytest.mark.parametrize("std", [-1.0, float("nan")])
def test_trunc_normal_rejects_bad_std(backend, std):
    # torch.nn.init.trunc_normal_ accepts these silently; initkit refuses.
    with pytest.raises(RuntimeError, match="std >= 0.0"):
        initkit.trunc_normal_(torch.zeros(3, 3), std=std)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"mode": "fan_sum"}, "Mode fan_sum not supported"), ({"distribution": "cauchy"}, "Distribution cauchy"), ({"scale": 0.0}, "positive")],
)
def test_variance_scaling_rejects_bad_arguments(backend, kwargs, match):
    with pytest.raises(ValueError, match=match):
        initkit.variance_scaling_(torch.zeros(3, 3), **kwargs)


def test_ops_reject_bad_arguments_with_clear_messages(ext):
    seed = torch.tensor(0)
    with pytest.raises(RuntimeError, match="initkit::uniform_fill: expected a float32.*Long"):
        torch.ops.initkit.uniform_fill(torch.zeros(3, dtype=torch.int64), 0.0, 1.0, seed)
    with pytest.raises(RuntimeError, match="seed must be a one-element int64 CPU tensor"):
        torch.ops.initkit.normal_fill(torch.zeros(3), 0.0, 1.0, torch.tensor([1.0]))
    with pytest.raises(RuntimeError, match="holds no finite Float value"):
        torch.ops.initkit.trunc_normal_fill(torch.zeros(3), 0.0, 1.0, float("inf"), float("inf"), seed)
    with pytest.raises(ValueError, match="offset must be >= 0"):
        torch.ops.initkit.uniform_fill(torch.zeros(3), 0.0, 1.0, seed, 0, -1)
    with pytest.raises(ValueError, match="expected 2 kinds"):
        torch.ops.initkit.multi_fill([torch.zeros(3), torch.zeros(2)], [0], [0.0] * 8, seed, [0, 1])
    with pytest.raises(ValueError, match="unknown fill kind 7"):
        torch.ops.initkit.multi_fill([torch.zeros(3)], [7], [0.0] * 4, seed, [0])


@pytest.mark.parametrize(
    "name,args,expect",
    [
        ("normal_", (INF, 1.0), lambda t: (t == INF).all()),
        ("normal_", (-INF, 0.5), lambda t: (t == -INF).all()),
        ("normal_", (NAN, 1.0), lambda t: t.isnan().all()),
        ("normal_", (0.0, INF), lambda t: t.isinf().all()),  # +-inf (NaN only where z == 0)
        ("xavier_normal_", (INF,), lambda t: t.isinf().all()),  # gain inf: std inf
        ("kaiming_normal_", (0, "fan_in", "leaky_relu"), lambda t: t.isfinite().all()),  # (a finite control)
    ],
)
def test_non_finite_mean_or_std_fills_what_the_formula_gives_as_torch(backend, name, args, expect):
    theirs = getattr(nn_init, name)(torch.empty(64, 32), *args)
    assert expect(theirs)
    assert expect(getattr(initkit, name)(torch.empty(64, 32), *args))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "mean,std,law",
    [
        (INF, 1.0, "b"),  # the law's limit as mean -> inf: all its mass at b (torch: uniform)
        (-INF, 0.5, "a"),
        (INF, 0.0, "b"),
        (0.5, INF, "uniform"),  # the limit as std -> inf: U(a, b), which torch gives too
        (NAN, 1.0, "uniform"),  # no law: torch's U(a, b)
        (INF, INF, "uniform"),  # no limit: torch's U(a, b)
    ],
)
@pytest.mark.filterwarnings("ignore:mean is more than 2 std")
def test_trunc_normal_with_a_non_finite_mean_or_std_fills_the_limit_of_the_law(ext, dtype, mean, std, law):
    a, b = -1.5, 2.0
    t = initkit.trunc_normal_(torch.empty(100_000, dtype=dtype), mean, std, a, b, generator=_seeded())
    if law == "uniform":  # U(-1.5, 2): mean 0.25, std 3.5 / sqrt(12) = 1.0104; tolerances > 5 sigma at n = 1e5
        assert t.min() >= a and t.max() <= b
        assert abs(t.double().mean() - 0.25) < 0.017 and abs(t.double().std() - 1.0104) < 0.01
    else:
        assert (t == (a if law == "a" else b)).all()


def test_trunc_normal_with_zero_std_is_the_clamped_mean(ext):
    # torch.nn.init divides by std here (ZeroDivisionError); the law is a point mass.
    t = initkit.trunc_normal_(torch.empty(100), mean=3.0, std=0.0, a=-1.0, b=1.0)
    assert (t == 1.0).all()


def test_meta_tensors_are_accepted(backend):
    t = torch.empty(4, 4, device="meta")
    assert initkit.kaiming_uniform_(t) is t


def test_works_after_torch_nn_init_is_monkeypatched_with_initkit():
    # A user replacing torch's functions with ours must not send the fallback into recursion.
    code = (
        "import torch, initkit\n"
        "for name in ['uniform_', 'normal_', 'trunc_normal_', 'kaiming_uniform_', 'xavier_normal_']:\n"
        "    setattr(torch.nn.init, name, getattr(initkit, name))\n"
        "with initkit.use_backend('torch'):\n"
        "    m = torch.nn.Linear(64, 64)\n"
        "    torch.nn.init.trunc_normal_(m.weight)\n"
        "    initkit.kaiming_uniform_(m.weight)\n"
        "print('ok')\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
