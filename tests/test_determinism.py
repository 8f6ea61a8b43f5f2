"""Reproducibility of the Philox engine: values depend only on (seed, stream, logical index)."""

import pytest
import torch
from helpers import run_python

import initkit

FILLS = {
    "uniform": lambda t, **kw: initkit.uniform_(t, -1.0, 3.0, **kw),
    "normal": lambda t, **kw: initkit.normal_(t, 0.5, 2.0, **kw),
    "trunc_normal": lambda t, **kw: initkit.trunc_normal_(t, 0.0, 1.0, -1.5, 2.5, **kw),  # by rejection, 7% redrawn
    "trunc_normal_icdf": lambda t, **kw: initkit.trunc_normal_(t, 0.0, 1.0, -1.0, 1.5, **kw),  # inverse CDF
    "trunc_normal_wide": lambda t, **kw: initkit.trunc_normal_(t, 0.0, 1.0, -2.6, 2.6, **kw),  # by rejection
    "trunc_normal_narrow": lambda t, **kw: initkit.trunc_normal_(t, 0.0, 1e8, -2.0, 2.0, **kw),  # uniform proposal
    "trunc_normal_tail": lambda t, **kw: initkit.trunc_normal_(t, 0.0, 1.0, 13.2, 14.2, **kw),  # exponential proposal
}
OPS = {
    "uniform": lambda t, seed, *a: torch.ops.initkit.uniform_fill(t, -1.0, 3.0, seed, *a),
    "normal": lambda t, seed, *a: torch.ops.initkit.normal_fill(t, 0.5, 2.0, seed, *a),
    "trunc_normal": lambda t, seed, *a: torch.ops.initkit.trunc_normal_fill(t, 0.0, 1.0, -1.5, 2.5, seed, *a),
    "trunc_normal_icdf": lambda t, seed, *a: torch.ops.initkit.trunc_normal_fill(t, 0.0, 1.0, -1.0, 1.5, seed, *a),
    "trunc_normal_wide": lambda t, seed, *a: torch.ops.initkit.trunc_normal_fill(t, 0.0, 1.0, -2.6, 2.6, seed, *a),
    "trunc_normal_narrow": lambda t, seed, *a: torch.ops.initkit.trunc_normal_fill(t, 0.0, 1e8, -2.0, 2.0, seed, *a),
    "trunc_normal_tail": lambda t, seed, *a: torch.ops.initkit.trunc_normal_fill(t, 0.0, 1.0, 13.2, 14.2, seed, *a),
}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def test_manual_seed_reproduces_and_consecutive_calls_differ(backend):
    torch.manual_seed(3)
    a = initkit.kaiming_normal_(torch.empty(64, 64))
    b = initkit.kaiming_normal_(torch.empty(64, 64))
    torch.manual_seed(3)
    a2 = initkit.kaiming_normal_(torch.empty(64, 64))
    assert torch.equal(a, a2)
    assert not torch.equal(a, b)


def test_generator_seeded_like_global_seed_gives_same_values(backend):
    torch.manual_seed(11)
    a = initkit.xavier_uniform_(torch.empty(32, 16))
    b = initkit.xavier_uniform_(torch.empty(32, 16), generator=torch.Generator().manual_seed(11))
    assert torch.equal(a, b)


def test_generator_does_not_touch_global_rng(backend):
    state = torch.get_rng_state()
    initkit.normal_(torch.empty(10), generator=torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fill", list(FILLS))
def test_thread_count_does_not_change_values(ext, fill, dtype):
    # 1.1M elements: many parallel tasks of 16Ki elements, taken in a different order by 1, 2 and 3
    # threads; a transposed view walks its strides from every task's first element.
    results = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        whole = FILLS[fill](torch.empty(1100, 1001, dtype=dtype), generator=torch.Generator().manual_seed(5))
        view = FILLS[fill](torch.empty(1001, 1100, dtype=dtype).T, generator=torch.Generator().manual_seed(5))
        results.append((whole, view))
    for whole, view in results:
        assert torch.equal(whole, results[0][0]) and torch.equal(view, results[0][0])


def test_thread_count_does_not_change_multi_fill_values(ext):
    # tensors of odd sizes, so tasks start and end inside tensors and inside blocks
    shapes = [(700, 33), (5,), (64, 64, 3), (1,), (40000,), (129, 257)]
    fills = [("normal", (0.0, 1.0)), ("uniform", (-1.0, 1.0)), ("trunc_normal", (0.0, 1.0, -2.0, 2.0))] * 2
    results = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        tensors = [torch.empty(shape) for shape in shapes]
        results.append(initkit.multi_fill_(tensors, fills, torch.Generator().manual_seed(9)))
    for tensors in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(tensors, results[0]))


@pytest.mark.parametrize("fill", list(FILLS))
def test_shards_filled_with_offsets_equal_the_whole(ext, fill):
    # Sharded init: each part, filled with its logical offset, gets exactly the whole's values.
    seed = torch.tensor(42)
    whole = torch.empty(1000, 77)
    OPS[fill](whole, seed)
    for start, stop in [(0, 333), (333, 334), (334, 1000)]:
        shard = torch.empty(stop - start, 77)
        OPS[fill](shard, seed, 0, start * 77)
        assert torch.equal(shard, whole[start:stop])


@pytest.mark.parametrize("fill", list(FILLS))
def test_streams_are_independent(ext, fill):
    seed = torch.tensor(42)
    a, b = torch.empty(1000), torch.empty(1000)
    OPS[fill](a, seed, 0)
    OPS[fill](b, seed, 1)
    assert not torch.equal(a, b)
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.1  # 3 sd of r for independent n=1000


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fill", list(FILLS))
def test_views_get_logical_order_values_and_nothing_outside_is_touched(ext, fill, dtype):
    seed = torch.tensor(9)
    base = torch.full((70, 90), float("nan"), dtype=dtype)
    view = base[5:65:2, 1::3].t()  # strided, offset and transposed: shape (30, 30)
    OPS[fill](view, seed)
    expected = torch.empty(view.shape, dtype=dtype)
    OPS[fill](expected, seed)
    assert torch.equal(view, expected)
    touched = torch.zeros(70, 90, dtype=torch.bool)
    touched[5:65:2, 1::3] = True
    assert base[~touched].isnan().all()
    assert not base[touched].isnan().any()


@pytest.mark.parametrize("fill", ["normal", "trunc_normal", "trunc_normal_wide"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_is_the_float32_fill_rounded(ext, fill, dtype):
    seed = torch.tensor(21)
    low, full = torch.empty(5000, dtype=dtype), torch.empty(5000)
    OPS[fill](low, seed)
    OPS[fill](full, seed)
    assert torch.equal(low, full.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_uniform_stays_half_open(ext, dtype):
    t = torch.empty(200_000, dtype=dtype)
    torch.ops.initkit.uniform_fill(t, 0.0, 1.0, torch.tensor(1))
    assert t.max() < 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bound, redrawn", [(2.6, 932), (2.0, 4550), (1.3, 19360)])  # expected redraws in 1e5
def test_wide_trunc_normal_keeps_the_normal_fill_where_it_is_in_bounds(ext, dtype, bound, redrawn):
    # Rejection sampling redraws only the out-of-bounds positions of the normal fill (at +-1.3,
    # acceptance 0.81, about 4% of them need a third block or more).
    seed = torch.tensor(17)
    trunc, normal = torch.empty(100_000, dtype=dtype), torch.empty(100_000, dtype=dtype)
    torch.ops.initkit.trunc_normal_fill(trunc, 0.0, 1.0, -bound, bound, seed)
    torch.ops.initkit.normal_fill(normal, 0.0, 1.0, seed)
    inside = normal.abs() <= bound
    assert torch.equal(trunc[inside], normal[inside])
    assert abs((~inside).sum().item() - redrawn) < 6 * redrawn**0.5
    assert (trunc[~inside].abs() <= bound).all()


def test_logical_indices_are_limited_to_2_pow_56(ext):
    with pytest.raises(ValueError, match="below 2\\^56"):
        torch.ops.initkit.normal_fill(torch.empty(10), 0.0, 1.0, torch.tensor(1), 0, 2**56 - 5)
    torch.ops.initkit.normal_fill(torch.empty(10), 0.0, 1.0, torch.tensor(1), 0, 2**56 - 10)


def test_multi_fill_equals_per_tensor_fills_with_streams(ext):
    shapes = [(300, 200), (7,), (3, 5, 2), (65, 1000), (0, 4)]
    dtypes = [torch.float32, torch.float64, torch.bfloat16, torch.float32, torch.float32]
    fills = [("uniform", (-1.0, 1.0)), ("normal", (0.0, 0.1)), ("trunc_normal", (0.0, 1.0, -2.0, 2.0)), ("trunc_normal", (1.0, 2.0, -9.0, 9.0)), ("uniform", (0.0, 1.0))]
    tensors = [torch.empty(s, dtype=d) for s, d in zip(shapes, dtypes)]
    tensors[3] = torch.empty(1000, 65).t()  # a non-contiguous member
    initkit.multi_fill_(tensors, fills, generator=torch.Generator().manual_seed(8))
    seed = initkit.init.new_seed(torch.Generator().manual_seed(8))
    for stream, (t, (kind, params)) in enumerate(zip(tensors, fills)):
        expected = torch.empty(t.shape, dtype=t.dtype)
        getattr(torch.ops.initkit, f"{kind}_fill")(expected, *params, seed, stream)
        assert torch.equal(t, expected), stream


def test_multi_fill_distributions_on_both_backends(backend):
    tensors = [torch.empty(200_000), torch.empty(100, 1000)]
    initkit.multi_fill_(tensors, [("uniform", (2.0, 4.0)), ("normal", (0.0, 3.0))])
    assert tensors[0].min() >= 2.0 and tensors[0].max() < 4.0
    assert tensors[0].mean().item() == pytest.approx(3.0, abs=0.01)
    assert tensors[1].std().item() == pytest.approx(3.0, rel=0.01)


def test_multi_fill_rejects_bad_specs(backend):
    with pytest.raises(ValueError, match="2 tensors but 1 fills"):
        initkit.multi_fill_([torch.empty(2), torch.empty(2)], [("uniform", (0.0, 1.0))])
    with pytest.raises(ValueError, match="unknown fill kind 'cauchy'"):
        initkit.multi_fill_([torch.empty(2)], [("cauchy", (0.0, 1.0))])
    with pytest.raises(ValueError, match="trunc_normal takes 4 parameters"):
        initkit.multi_fill_([torch.empty(2)], [("trunc_normal", (0.0, 1.0))])


@pytest.mark.slow
def test_64_bit_indexing(ext):
    # 2^31 + 100 bfloat16 elements (4 GiB): the tail must hold the values of logical indices >= 2^31.
    n = 2**31 + 100
    big = torch.empty(n, dtype=torch.bfloat16)
    seed = torch.tensor(77)
    torch.ops.initkit.uniform_fill(big, 0.0, 1.0, seed)
    tail = torch.empty(100, dtype=torch.bfloat16)
    torch.ops.initkit.uniform_fill(tail, 0.0, 1.0, seed, 0, 2**31)
    assert torch.equal(big[2**31 :], tail)
    head = torch.empty(100, dtype=torch.bfloat16)
    torch.ops.initkit.uniform_fill(head, 0.0, 1.0, seed)
    assert torch.equal(big[:100], head)
    assert not torch.equal(head, tail)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "low, high",
    [(0.999, 1.0), (-1.0, 1.0), (1.0, 1.0004), (0.5, 0.5000001), (-3.0, -1.0), (0.0, 65504.0), (0.0, 1e-5), (-3e-7, 3e-7)],
)
def test_reduced_precision_uniform_is_the_float32_fill_rounded_then_kept_half_open(ext, dtype, low, high):
    # The kernels clamp with one float compare (the smallest float rounding to >= high); the rule it
    # must equal: round the float32 fill, and store `low` where that reached `high`. The last three
    # ranges reach float16's largest values and its subnormals (its F16C conversion on AVX2 CPUs must
    # round as c10::Half does).
    seed = torch.tensor(33)
    for shape, view in (((50_000,), lambda t: t), ((300, 170), lambda t: t.t())):
        low_p, full = view(torch.empty(shape, dtype=dtype)), view(torch.empty(shape))
        torch.ops.initkit.uniform_fill(low_p, low, high, seed)
        torch.ops.initkit.uniform_fill(full, low, high, seed)
        rounded = full.to(dtype)
        expected = torch.where(rounded.float() < high, rounded, torch.tensor(low, dtype=dtype))
        assert torch.equal(low_p, expected)


def test_avx512_avx2_and_portable_kernels_give_the_same_bits(ext, tmp_path):
    # Fills run hand-written AVX-512 or AVX2 kernels where the CPU has them and portable loops
    # elsewhere; INITKIT_CPU_KERNELS caps the level, so every level this CPU has must agree.
    code = """
import os, torch, initkit
torch.set_num_threads(2)
seed = torch.tensor(0x0123_4567_89AB_CDEF)
out = []
for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
    for op, params in [("uniform_fill", (-0.5, 2.0)), ("normal_fill", (0.25, 3.0)),
                       ("trunc_normal_fill", (0.0, 1.0, -2.0, 2.0)), ("trunc_normal_fill", (0.0, 1.0, -1.3, 1.1)),
                       ("normal_fill", (0.0, 3e4)),  # float16: beyond 65504 to +-inf (F16C and c10::Half)
                       ("uniform_fill", (0.0, 1e-6)),  # float16's subnormals
                       # (AVX2's uniform: the compare kept where rounding reaches `high`, and the scale's
                       # 2^-24 not folded into it where that would be inexact)
                       ("uniform_fill", (0.999, 1.0)), ("uniform_fill", (0.0, 1e-31)), ("uniform_fill", (0.0, 1e-38))]:
        for offset in (0, 2**33 + 5, 2**34 - 4099):  # (the last: the groups' high word changes inside)
            t = torch.empty(70001, dtype=dtype)
            getattr(torch.ops.initkit, op)(t, *params, seed, 7, offset)
            out.append(t)
raw = torch.empty(70001)
torch.ops.initkit._philox_fill(raw, seed, 3)
torch.save(out + [raw], os.environ["OUT"])
"""
    results = []
    for env in ({}, {"INITKIT_CPU_KERNELS": "avx2"}, {"INITKIT_CPU_KERNELS": "portable"}):
        path = tmp_path / f"fills{len(results)}.pt"
        r = run_python(code, {**env, "OUT": str(path)})
        assert r.returncode == 0, r.stderr
        results.append(torch.load(path))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
            assert torch.equal(a.view(bits), b.view(bits))
