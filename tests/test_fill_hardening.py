"""Fills as in-place ops for autograd, torch's uniform_ range check, seeds and devices (issue 9)."""

import pytest
import torch

import initkit
from helpers import default_device

SEED = torch.tensor(7)
RAW_FILLS = {
    "uniform_fill": lambda t, seed=SEED: torch.ops.initkit.uniform_fill(t, 0.0, 1.0, seed),
    "normal_fill": lambda t, seed=SEED: torch.ops.initkit.normal_fill(t, 0.0, 1.0, seed),
    "trunc_normal_fill": lambda t, seed=SEED: torch.ops.initkit.trunc_normal_fill(t, 0.0, 1.0, -2.0, 2.0, seed),
    "multi_fill": lambda t, seed=SEED: torch.ops.initkit.multi_fill([t], [1], [0.0, 1.0, 0.0, 0.0], seed, [0]),
}
PUBLIC_FILLS = {
    "uniform_": initkit.uniform_,
    "normal_": initkit.normal_,
    "trunc_normal_": initkit.trunc_normal_,
    "multi_fill_": lambda t: initkit.init.multi_fill_([t], [("normal", (0.0, 1.0))]),
}


# ---- item 2: autograd sees the write ------------------------------------------------------


@pytest.mark.parametrize("fill", PUBLIC_FILLS.values(), ids=PUBLIC_FILLS)
def test_overwriting_a_saved_tensor_fails_backward_as_torch(backend, fill):
    a = torch.randn(5, requires_grad=True)
    b = a.exp()  # exp saves its result for backward
    fill(b)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        b.sum().backward()


REFUSED_FILLS = {  # each refuses its target w (a [3] tensor), as torch.nn.init does
    "uniform_ low > high": lambda w: initkit.uniform_(w, 1.0, 0.0),
    "normal_ std < 0": lambda w: initkit.normal_(w, 0.0, -1.0),
    "trunc_normal_ a > b": lambda w: initkit.trunc_normal_(w, 0.0, 1.0, 2.0, -2.0),
    "multi_fill_": lambda w: initkit.init.multi_fill_([torch.empty(4), w], [("normal", (0.0, 1.0)), ("uniform", (1.0, 0.0))]),
}


@pytest.mark.parametrize("fill", REFUSED_FILLS.values(), ids=REFUSED_FILLS)
@pytest.mark.parametrize("expanded", [False, True])
def test_a_refused_fill_leaves_a_saved_tensor_usable_for_backward(backend, fill, expanded):
    x = torch.randn(3, requires_grad=True)
    w = torch.randn(1).expand(3) if expanded else torch.randn(3)  # expanded: refused for its shared memory too
    (x * w).sum().backward()  # w is saved for backward
    x.grad = None
    y = (x * w).sum()
    with pytest.raises(RuntimeError):
        fill(w)
    assert w._version == 0
    y.backward()
    assert torch.equal(x.grad, w)


def _dual(n=10):
    return torch.autograd.forward_ad.make_dual(torch.zeros(n), torch.ones(n))


def _tangent(x):
    return torch.autograd.forward_ad.unpack_dual(x).tangent


@pytest.mark.parametrize("fill", PUBLIC_FILLS.values(), ids=PUBLIC_FILLS)
def test_forward_ad_tangent_of_a_filled_tensor_is_zero_as_torch(backend, fill):
    # derivatives.yaml: a random fill's result tangent is zero (normal_: `result: self_t.zero_()`)
    with torch.autograd.forward_ad.dual_level():
        x = _dual()
        fill(x)
        assert torch.equal(_tangent(x), torch.zeros(10))
        base = _dual()
        fill(base[:4])  # a view's tangent is a view of its base's
        assert torch.equal(_tangent(base), torch.tensor([0.0] * 4 + [1.0] * 6))

    def filled(x):
        y = x * 2.0
        fill(y)
        return y

    _, tangent = torch.func.jvp(filled, (torch.ones(10),), (torch.ones(10),))
    assert torch.equal(tangent, torch.zeros(10))


@pytest.mark.parametrize("fill", RAW_FILLS.values(), ids=RAW_FILLS)
def test_raw_fill_bumps_the_version_counter(ext, fill):
    t = torch.empty(10)
    before = t._version
    fill(t)
    assert t._version == before + 1


@pytest.mark.parametrize("fill", RAW_FILLS.values(), ids=RAW_FILLS)
def test_raw_fill_of_a_leaf_that_requires_grad_raises_torchs_error(ext, fill):
    w = torch.zeros(10, requires_grad=True)
    with pytest.raises(RuntimeError, match="^a leaf Variable that requires grad is being used in an in-place operation"):
        fill(w)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
        fill(w[2:])
    assert torch.count_nonzero(w) == 0  # refused before writing
    with torch.no_grad():
        fill(w)  # what initkit.init does for parameters
    assert torch.count_nonzero(w) > 0 and w.requires_grad and w.grad_fn is None


@pytest.mark.parametrize("fill", RAW_FILLS.values(), ids=RAW_FILLS)
def test_raw_fill_of_a_non_leaf_in_grad_mode_raises(ext, fill):
    b = torch.randn(10, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="requires grad and has autograd history"):
        fill(b)


@pytest.mark.parametrize("fill", PUBLIC_FILLS.values(), ids=PUBLIC_FILLS)
def test_inference_tensor_outside_inference_mode_raises_torchs_error(backend, fill):
    with torch.inference_mode():
        t = torch.zeros(10)
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
        fill(t)
    if backend == "ext":
        assert torch.count_nonzero(t) == 0  # refused before writing (torch writes, then raises)
    with torch.inference_mode():
        fill(t)  # allowed inside
    assert torch.count_nonzero(t) > 0


# ---- item 3: torch's uniform_ range check --------------------------------------------------

BAD_RANGES = [
    (torch.float32, -3e38, 3e38),  # width over float's max
    (torch.float32, 0.0, 1e39),  # `to` out of bounds
    (torch.float16, -1e5, 1e5),
    (torch.float16, 0.0, 7e4),
    (torch.float16, -6e4, 6e4),
    (torch.bfloat16, -3e38, 3e38),
    (torch.float64, -1e308, 1e308),
    (torch.float32, float("-inf"), 0.0),
]


@pytest.mark.parametrize("dtype,low,high", BAD_RANGES)
def test_uniform_range_wider_than_the_dtype_raises_as_torch(backend, dtype, low, high):
    with pytest.raises(RuntimeError):
        torch.empty(8, dtype=dtype).uniform_(low, high)  # the condition is torch's own
    with pytest.raises(RuntimeError, match="out of bounds|high - low|to-from"):
        initkit.uniform_(torch.empty(8, dtype=dtype), low, high)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_uniform_widest_allowed_range_is_finite_and_in_range(backend, dtype):
    top = torch.finfo(dtype).max
    t = initkit.uniform_(torch.empty(4096, dtype=dtype), -top / 2, top / 2)
    assert torch.isfinite(t).all() and t.unique().numel() > 100


# ---- item 5: seeds and devices -------------------------------------------------------------


@pytest.mark.parametrize("seed", [torch.tensor(1, device="meta"), torch.tensor(1.0), torch.tensor([1, 2]), None])
@pytest.mark.parametrize("fill", RAW_FILLS.values(), ids=RAW_FILLS)
def test_bad_seed_raises_and_names_the_seed(ext, fill, seed):
    t = torch.zeros(10)
    with pytest.raises(RuntimeError, match="seed must be a one-element int64 CPU tensor"):
        fill(t, seed)
    assert torch.count_nonzero(t) == 0 and t._version == 0


def test_raw_multi_fill_with_mixed_devices_raises(ext):
    cpu = torch.zeros(10)
    with pytest.raises(RuntimeError, match="all tensors must be on one device"):
        torch.ops.initkit.multi_fill([cpu, torch.empty(3, device="meta")], [0, 0], [0.0, 1.0, 0, 0] * 2, SEED, [0, 1])
    assert torch.count_nonzero(cpu) == 0


@pytest.mark.parametrize("second", [lambda w: w, lambda w: w[2:], lambda w: w.view(-1)[5:40], lambda w: w.t()])
def test_multi_fill_of_tensors_that_share_memory_raises(ext, second):
    # One parallel region would write the shared elements from several threads at once, so their
    # values would depend on the schedule: refused, before any write.
    w = torch.zeros(8, 16)
    with pytest.raises(RuntimeError, match="tensors 0 and 1 share memory"):
        initkit.multi_fill_([w, second(w)], [("normal", (0.0, 1.0)), ("uniform", (0.0, 1.0))], seed=SEED)
    assert not w.any()
    initkit.multi_fill_([w[:4], w[4:]], [("normal", (0.0, 1.0)), ("uniform", (0.0, 1.0))], seed=SEED)  # disjoint
    alone = torch.empty(4, 16)
    torch.ops.initkit.uniform_fill(alone, 0.0, 1.0, SEED, stream=1)
    assert torch.equal(w[4:], alone)


def test_meta_targets_with_a_cpu_seed_are_a_no_op(ext):
    t = torch.empty(10, device="meta")
    for fill in RAW_FILLS.values():
        fill(t)
    torch.ops.initkit.multi_fill([t, t], [0, 2], [0.0, 1.0, 0, 0, 0.0, 1.0, -2.0, 2.0], SEED, [0, 1])


@pytest.mark.parametrize("std", [-1.0, float("nan")])
def test_normal_of_a_meta_tensor_refuses_a_bad_std_as_torch(backend, std):
    # torch's meta normal_ checks std; so must initkit's (torch.nn.init.normal_ goes there under patch())
    with pytest.raises(RuntimeError, match="normal expects std >= 0.0"):
        torch.empty(3, device="meta").normal_(0.0, std)
    for fill in (initkit.normal_, torch.nn.init.normal_):
        with pytest.raises(RuntimeError, match="expects std >= 0.0"), initkit.patch():
            fill(torch.empty(3, device="meta"), 0.0, std)


def test_public_multi_fill_of_a_mixed_list_keeps_the_one_key_contract(ext):
    """A list over devices is filled per device under one key, each tensor keeping its stream:
    the CPU tensors get exactly what a single-device call gives them."""
    fills = [("normal", (0.0, 1.0)), ("uniform", (-1.0, 1.0)), ("trunc_normal", (0.0, 1.0, -2.0, 2.0))]
    mixed = [torch.empty(100), torch.empty(50, device="meta"), torch.empty(30)]
    initkit.init.multi_fill_(mixed, fills, seed=SEED)
    for i in (0, 2):
        alone = torch.empty_like(mixed[i])
        kind, params = fills[i]
        getattr(torch.ops.initkit, f"{kind}_fill")(alone, *params, SEED, stream=i)
        assert torch.equal(mixed[i], alone)


@pytest.mark.parametrize("with_seed", [True, False])
def test_public_multi_fill_with_tensors_the_kernels_do_not_take_keeps_the_one_key_contract(ext, with_seed):
    """A complex tensor (torch fills it) does not take the list off the one key: the others get
    exactly their streams' values of the given key, or of the one key drawn from `generator`."""
    fills = [("normal", (0.0, 1.0)), ("uniform", (-1.0, 1.0)), ("trunc_normal", (0.0, 1.0, -2.0, 2.0))]
    mixed = [torch.zeros(4, dtype=torch.complex64), torch.empty(100), torch.empty(30, dtype=torch.float64)]
    if with_seed:
        key = SEED
        initkit.init.multi_fill_(mixed, fills, seed=SEED, first_stream=5)
    else:
        key = initkit.init.new_seed(torch.Generator().manual_seed(3))
        initkit.init.multi_fill_(mixed, fills, torch.Generator().manual_seed(3), first_stream=5)
    assert mixed[0].abs().min() > 0  # torch's complex normal_
    for i in (1, 2):
        alone = torch.empty_like(mixed[i])
        kind, params = fills[i]
        getattr(torch.ops.initkit, f"{kind}_fill")(alone, *params, key, stream=5 + i)
        assert torch.equal(mixed[i], alone)


DEVICE_CONTEXTS = {  # README: build big models under torch.device("meta"), whose __init__ may call initkit
    "with meta": lambda: torch.device("meta"),
    "default meta": lambda: default_device("meta"),
    "with cuda": lambda: torch.device("cuda"),  # on a CPU-only torch, any tensor made there raises
}
KEYED_FILLS = {
    "uniform_": lambda t: initkit.uniform_(t, -1.0, 1.0),
    "normal_": lambda t: initkit.normal_(t, 0.0, 0.5),
    "trunc_normal_": lambda t: initkit.trunc_normal_(t, 0.0, 1.0, -1.0, 1.5),
    "kaiming_uniform_": initkit.kaiming_uniform_,
    "xavier_normal_": initkit.xavier_normal_,
    "lecun_normal_": initkit.lecun_normal_,
    "multi_fill_": lambda t: initkit.init.multi_fill_([t], [("uniform", (0.0, 2.0))])[0],
}


@pytest.mark.parametrize("context", DEVICE_CONTEXTS.values(), ids=DEVICE_CONTEXTS)
@pytest.mark.parametrize("fill", KEYED_FILLS.values(), ids=KEYED_FILLS)
def test_fills_under_a_default_device_draw_the_key_on_the_cpu(backend, context, fill):
    torch.manual_seed(0)
    expected = fill(torch.empty(8, 6))
    torch.manual_seed(0)
    with context():
        got = fill(torch.empty(8, 6, device="cpu"))
        assert fill(torch.empty(8, 6, device="meta")).is_meta
    assert torch.equal(got, expected)  # the key came from torch's CPU generator, as without the context

# ---- item 4: trunc_normal_ exact for every interval, side and scale ------------------------

INF = float("inf")
EXACT_GRID = [  # (mean, std, a, b): every algorithm make_sampler picks, and the cases the issue found
    (0.0, 1.0, -2.0, 2.0),  # normal rejection (torch's default, acceptance 0.954)
    (0.0, 1.0, -1.3, 1.3),  # normal rejection near its threshold (acceptance 0.81)
    (0.0, 1.0, -1.0, 1.5),  # inverse CDF, wide
    (0.0, 0.02, -2.0, 2.0),  # normal rejection, bounds at 100 std
    (0.0, 1.0, 3.0, 4.0),  # inverse CDF in the upper tail
    (0.0, 1.0, -8.0, -6.0),  # lower tail: exponential proposal in float
    (0.0, 1.0, 13.2, 14.2),  # float32 gave one value
    (0.0, 1.0, -14.2, -13.2),
    (0.0, 1.0, 13.2, INF),  # one-sided far tail
    (0.0, 1.0, 38.0, 39.0),  # float64 gave one value
    (0.0, 1.0, -INF, -38.0),
    (0.0, 1.0, -1e-7, 1e-7),  # float32 gave four values: uniform proposal
    (0.0, 1e8, -2.0, 2.0),  # huge std: nearly U(-2, 2) (gave all 0.0)
    (0.0, 1.0, 1.0, 1.0003),  # narrow, off the mean
    (0.0, 1.0, 5.0, 5.01),
    (0.0, 1.0, 3.9, 20.0),
    (0.5, 2.0, -1.0, 4.0),
]


def rounded_law_check(t, law):
    """KS distance between the sample and `law` rounded to t's dtype (each representable value v
    holds the law's mass between the midpoints to its neighbours), and the values that hold more
    than their share (more than 6 sigma above their expected count)."""
    from scipy import stats

    values, counts = torch.unique(t, return_counts=True)
    up = torch.nextafter(values, torch.tensor(INF, dtype=t.dtype)).double()
    down = torch.nextafter(values, torch.tensor(-INF, dtype=t.dtype)).double()
    v = values.double()
    cdf_hi = law.cdf(((v + up) / 2).numpy())
    cdf_lo = law.cdf(((v + down) / 2).numpy())
    n = t.numel()
    ecdf = counts.double().cumsum(0).numpy() / n
    previous = torch.cat([torch.zeros(1, dtype=torch.float64), torch.from_numpy(ecdf[:-1])]).numpy()
    distance = max((ecdf - cdf_hi).max(), (cdf_lo - previous).max(), 0.0)
    expected = n * (cdf_hi - cdf_lo)
    over = (counts.numpy() > expected + 6 * expected.clip(0) ** 0.5 + 6).sum()
    return stats.kstwo.sf(distance, n), int(over)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mean,std,a,b", EXACT_GRID)
@pytest.mark.filterwarnings("ignore:mean is more than 2 std")
def test_trunc_normal_is_the_exact_law_rounded_to_the_dtype(ext, dtype, mean, std, a, b):
    from scipy import stats

    torch.manual_seed(1234)
    t = initkit.trunc_normal_(torch.empty(1_000_000, dtype=dtype), mean, std, a, b)
    assert t.min() >= torch.tensor(a).to(dtype) and t.max() <= torch.tensor(b).to(dtype)
    law = stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    pvalue, over = rounded_law_check(t, law)
    assert pvalue > 1e-4
    assert over == 0
