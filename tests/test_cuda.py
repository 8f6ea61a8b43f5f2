"""CUDA kernels: the CPU's values for the same seed, through every layout, and their errors.

Float32, float16 and bfloat16 fills must be bit-identical to the CPU (same samplers, no FP
contraction on either side), and so must float64 uniform (plain arithmetic) and, since contract
version 5, the float64 normal and the truncated normals drawn from it by rejection (initkit's own
log and sin/cos on IEEE operations: fma, sqrt, division). The other float64 truncated normals call
libm on the CPU and CUDA's math library on the device (the inverse CDF's log, exp and erfc, the
proposals' log): those differ by up to about 4 ulp, and near z = 0 that error is absolute, not
relative. So they are compared in ulps of max(|x|, std).
"""


import pytest
import torch

import initkit
from helpers import missing_extension

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# (op name, parameters after the tensor)
FILLS = [
    ("uniform_fill", (-0.5, 2.0)),
    ("normal_fill", (0.25, 1.5)),
    ("trunc_normal_fill", (0.0, 1.0, -2.0, 2.0)),  # by rejection: 4.6% redrawn (the CPU batches them)
    ("trunc_normal_fill", (0.0, 1.0, -1.0, 1.5)),  # inverse CDF
    ("trunc_normal_fill", (0.5, 0.02, 0.51, 0.6)),  # one-sided: the whole interval above the mean
    ("trunc_normal_fill", (0.0, 1.0, -2.6, 2.6)),  # wide: by rejection, ~1% of elements redrawn
]
DOUBLE_ULPS = 8  # float64 truncated normals other than by rejection (libm vs CUDA's math library)


@pytest.fixture(autouse=True)
def cuda_ext():
    if not initkit.ext_has_cuda():
        missing_extension(f"initkit was built without CUDA kernels ({initkit.ext_error()})")
    with initkit.use_backend("ext"):
        yield


def seed(value=1234):
    return torch.tensor(value, dtype=torch.int64)


def fill(name, tensor, params, key, stream=0, offset=0):
    getattr(torch.ops.initkit, name)(tensor, *params, key, stream, offset)
    return tensor


def assert_matches_cpu(name, cuda_values, cpu_values, params):
    got = cuda_values.cpu()
    mean, std = params[:2]
    by_rejection = name == "trunc_normal_fill" and params[2] <= mean - 2 * std and params[3] >= mean + 2 * std
    if got.dtype != torch.float64 or name in ("uniform_fill", "normal_fill") or by_rejection:
        assert torch.equal(got, cpu_values)
        return
    scale = cpu_values.abs().clamp(min=params[1])
    ulps = (got - cpu_values).abs() / (scale * torch.finfo(torch.float64).eps)
    assert ulps.max().item() <= DOUBLE_ULPS, f"max difference {ulps.max().item():.2f} ulps"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,params", FILLS)
def test_cuda_equals_cpu(name, params, dtype):
    shape = (1000, 257)  # not a multiple of the 2/4/8 values per item: exercises the tail
    cpu = fill(name, torch.empty(shape, dtype=dtype), params, seed())
    cuda = fill(name, torch.empty(shape, dtype=dtype, device="cuda"), params, seed())
    assert_matches_cpu(name, cuda, cpu, params)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,params", FILLS[:3])
@pytest.mark.parametrize("offset", [1, 3, 6, 7, 2**33 + 5])
def test_offset_is_a_slice_of_the_whole(name, params, dtype, offset):
    n = 1001
    part = fill(name, torch.empty(n, dtype=dtype, device="cuda"), params, seed(), 2, offset)
    assert_matches_cpu(name, part, fill(name, torch.empty(n, dtype=dtype), params, seed(), 2, offset), params)
    if offset < 100:
        whole = fill(name, torch.empty(offset + n, dtype=dtype, device="cuda"), params, seed(), 2)
        assert torch.equal(part, whole[offset:])


def strided_views():
    base = lambda *shape: torch.full(shape, float("nan"), device="cuda")  # noqa: E731
    return {
        "transposed": lambda: base(130, 64).t(),
        "column slice": lambda: base(97, 33)[:, 3:30],
        "step": lambda: base(4003)[1::3],
        "unaligned storage offset": lambda: base(4001)[1:],  # contiguous, no 16-byte stores
        "3d permute": lambda: base(5, 6, 7).permute(2, 0, 1),
        "13 non-mergeable dims": lambda: base(*(2,) * 13).permute(*reversed(range(13))),
    }


@pytest.mark.parametrize("view", list(strided_views()))
@pytest.mark.parametrize("name,params", FILLS[:3])
def test_views_are_written_through_their_strides(view, name, params):
    t = strided_views()[view]()
    base = t._base if t._base is not None else t
    fill(name, t, params, seed(), 5, 11)
    assert_matches_cpu(name, t, fill(name, torch.empty(t.shape), params, seed(), 5, 11), params)
    # Nothing outside the view was written.
    outside = torch.ones_like(base, dtype=torch.bool)
    outside.as_strided(t.shape, t.stride(), t.storage_offset() - base.storage_offset()).fill_(False)
    assert base[outside].isnan().all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_other_view_dtypes(dtype):
    t = torch.zeros(300, 70, dtype=dtype, device="cuda").t()[5:]
    fill("normal_fill", t, (0.0, 1.0), seed())
    assert torch.equal(t.cpu(), fill("normal_fill", torch.empty(t.shape, dtype=dtype), (0.0, 1.0), seed()))


def multi_fill_case(device):
    tensors = [
        torch.empty(768, 2304, device=device),
        torch.empty(2304, dtype=torch.float16, device=device),
        torch.empty(3, 5, 7, dtype=torch.float64, device=device),
        torch.empty(1000, 65, device=device).t(),  # non-contiguous member
        torch.empty(0, 4, device=device),
        torch.empty(1, dtype=torch.bfloat16, device=device),
        torch.empty(4001, device=device)[1:],  # contiguous but unaligned
    ] + [torch.empty(n, device=device) for n in range(1, 40)]  # many one-tile tensors
    kinds = [i % 3 for i in range(len(tensors))]
    params = {0: (-1.0, 1.0, 0.0, 0.0), 1: (0.0, 0.02, 0.0, 0.0), 2: (0.0, 1.0, -2.0, 2.0)}
    flat = [p for k in kinds for p in params[k]]
    streams = [100 + i for i in range(len(tensors))]
    return tensors, kinds, flat, streams


def test_multi_fill_equals_per_tensor_fills_and_the_cpu():
    names = ["uniform_fill", "normal_fill", "trunc_normal_fill"]
    tensors, kinds, flat, streams = multi_fill_case("cuda")
    torch.ops.initkit.multi_fill(tensors, kinds, flat, seed(99), streams)
    cpu_tensors, *_ = multi_fill_case("cpu")
    torch.ops.initkit.multi_fill(cpu_tensors, kinds, flat, seed(99), streams)
    for i, (t, kind, stream) in enumerate(zip(tensors, kinds, streams)):
        params = flat[4 * i : 4 * i + (4 if kind == 2 else 2)]
        single = fill(names[kind], torch.empty(t.shape, dtype=t.dtype, device="cuda"), params, seed(99), stream)
        assert torch.equal(t, single), i
        assert_matches_cpu(names[kind], t, cpu_tensors[i], params)


def test_python_api_gives_the_cpu_values_for_the_same_manual_seed():
    for fn in (initkit.uniform_, initkit.normal_, initkit.trunc_normal_, initkit.xavier_uniform_, initkit.kaiming_normal_):
        torch.manual_seed(5)
        cuda = fn(torch.empty(64, 300, device="cuda"))
        torch.manual_seed(5)
        assert torch.equal(cuda.cpu(), fn(torch.empty(64, 300))), fn.__name__
    torch.manual_seed(6)
    cuda = initkit.multi_fill_([torch.empty(10, 10, device="cuda"), torch.empty(7, device="cuda")], [("normal", (0.0, 1.0)), ("uniform", (0.0, 1.0))])
    torch.manual_seed(6)
    cpu = initkit.multi_fill_([torch.empty(10, 10), torch.empty(7)], [("normal", (0.0, 1.0)), ("uniform", (0.0, 1.0))])
    assert all(torch.equal(a.cpu(), b) for a, b in zip(cuda, cpu))


def test_cuda_generator_is_reproducible():
    a = initkit.normal_(torch.empty(1000, device="cuda"), generator=torch.Generator("cuda").manual_seed(3))
    b = initkit.normal_(torch.empty(1000, device="cuda"), generator=torch.Generator("cuda").manual_seed(3))
    c = initkit.normal_(torch.empty(1000, device="cuda"), generator=torch.Generator("cuda").manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_fills_run_on_the_current_stream():
    side = torch.cuda.Stream()
    t = torch.full((1 << 20,), float("nan"), device="cuda")
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(2_000_000_000)  # about a second: the fill queues behind it on `side`
        fill("uniform_fill", t, (0.0, 1.0), seed())
    torch.cuda.current_stream().synchronize()
    assert t.cpu().isnan().all()  # the fill did not run on the default stream
    side.synchronize()
    assert torch.equal(t.cpu(), fill("uniform_fill", torch.empty(1 << 20), (0.0, 1.0), seed()))


@pytest.mark.parametrize("call", ["single", "multi"])
def test_graph_capture_is_refused(call):
    t = torch.empty(1024, device="cuda")
    key = seed()
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="CUDA graph"):
        with torch.cuda.graph(graph):
            if call == "single":
                torch.ops.initkit.uniform_fill(t, 0.0, 1.0, key)
            else:
                torch.ops.initkit.multi_fill([t, t[:10]], [0, 1], [0.0, 1.0, 0.0, 0.0] * 2, key, [0, 1])
    fill("uniform_fill", t, (0.0, 1.0), key)  # the stream still works after the refused capture
    torch.cuda.synchronize()


def test_errors():
    t = torch.empty(10, device="cuda")
    with pytest.raises(RuntimeError, match="one device"):
        torch.ops.initkit.multi_fill([t, torch.empty(3)], [0, 0], [0.0, 1.0, 0.0, 0.0] * 2, seed(), [0, 1])
    with pytest.raises(RuntimeError, match="seed must be a one-element int64 CPU tensor"):
        torch.ops.initkit.uniform_fill(t, 0.0, 1.0, seed().cuda())
    with pytest.raises(RuntimeError, match="float32, float64, float16 or bfloat16"):
        torch.ops.initkit.uniform_fill(torch.empty(3, dtype=torch.int32, device="cuda"), 0.0, 1.0, seed())
    with pytest.raises(RuntimeError, match="unsupported operation|more than one element"):
        torch.ops.initkit.normal_fill(torch.empty(1, device="cuda").expand(5), 0.0, 1.0, seed())
    with pytest.raises(RuntimeError, match="low=2 > high=1"):
        torch.ops.initkit.uniform_fill(t, 2.0, 1.0, seed())
    with pytest.raises(ValueError, match="offset must be >= 0"):
        torch.ops.initkit.uniform_fill(t, 0.0, 1.0, seed(), 0, -1)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device():
    t = fill("normal_fill", torch.empty(5000, device="cuda:1"), (0.0, 1.0), seed())
    assert torch.equal(t.cpu(), fill("normal_fill", torch.empty(5000), (0.0, 1.0), seed()))


def test_64_bit_indexing():
    # 2^31 + 100 bfloat16 elements (4 GiB): the tail must hold the values of logical indices >= 2^31.
    n = 2**31 + 100
    big = fill("uniform_fill", torch.empty(n, dtype=torch.bfloat16, device="cuda"), (0.0, 1.0), seed(77))
    tail = fill("uniform_fill", torch.empty(100, dtype=torch.bfloat16), (0.0, 1.0), seed(77), 0, 2**31)
    assert torch.equal(big[2**31 :].cpu(), tail)


# ---- dense ops: backward on cuBLASLt epilogues (BGRADB, DRELU_BGRAD) against the ATen math ----

DENSE_DTYPES = [(torch.float32, 1e-4), (torch.bfloat16, 3e-2), (torch.float16, 3e-3), (torch.float64, 1e-10)]


@pytest.mark.parametrize("dtype, tol", DENSE_DTYPES)
@pytest.mark.parametrize("rows, ins, outs", [(64, 128, 256), (37, 70, 130), (1, 8, 8), (0, 4, 5)])
def test_linear_relu_backward_matches_math(dtype, tol, rows, ins, outs):
    torch.manual_seed(0)
    x = torch.randn(rows, ins, dtype=torch.float64)
    w = torch.randn(outs, ins, dtype=torch.float64) / ins**0.5
    b = torch.randn(outs, dtype=torch.float64)
    out = torch.relu(x @ w.t() + b)
    grad = torch.randn(rows, outs, dtype=torch.float64)
    pre = grad * (out > 0)
    expected = (pre @ w, pre.t() @ x, pre.sum(0))
    for mask in ([True, True, True], [False, True, True], [False, True, False], [False, False, True]):
        got = torch.ops.initkit._linear_relu_backward(
            *(t.to("cuda", dtype) for t in (grad, out, x, w)), mask)
        for want, g, e in zip(mask, got, expected):
            assert (g is not None) == want
            if want:
                torch.testing.assert_close(g.double().cpu(), e, rtol=tol, atol=tol * max(1, rows) ** 0.5)


@pytest.mark.parametrize("dtype, tol", DENSE_DTYPES)
@pytest.mark.parametrize("sizes, rows", [([128, 256, 192, 10], 64), ([5, 130, 7, 3], 33), ([4, 8, 2], 0)])
@pytest.mark.parametrize("bias_pattern", [(True, True, True), (False, True, False)])
def test_mlp_backward_matches_math(dtype, tol, sizes, rows, bias_pattern):
    torch.manual_seed(0)
    ws = [torch.randn(o, i, dtype=torch.float64) / i**0.5 for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [torch.randn(o, dtype=torch.float64) if p else None for o, p in zip(sizes[1:], bias_pattern)]
    x = torch.randn(rows, sizes[0], dtype=torch.float64)
    grad = torch.randn(rows, sizes[-1], dtype=torch.float64)
    to = lambda t: None if t is None else t.to("cuda", dtype)  # noqa: E731
    args = (to(x), [to(w) for w in ws], [to(b) for b in bs])
    _, hidden = torch.ops.initkit._mlp_forward(*args)
    got = torch.ops.initkit._mlp_backward(to(grad), *args, hidden, True)
    # Reference: the same math in float64 on the CPU, with the device's own ReLU masks.
    masks = [h.cpu() > 0 for h in hidden]
    acts = [x] + [h.double().cpu() for h in hidden]
    g = grad
    grad_ws, grad_bs = [None] * len(ws), [None] * len(ws)
    for i in reversed(range(len(ws))):
        grad_ws[i] = g.t() @ acts[i]
        grad_bs[i] = g.sum(0)
        g = g @ ws[i] if i == 0 else (g @ ws[i]) * masks[i - 1]
    scale = tol * max(1, rows) ** 0.5
    torch.testing.assert_close(got[0].double().cpu(), g, rtol=tol, atol=scale)
    for a, e in zip(got[1], grad_ws):
        torch.testing.assert_close(a.double().cpu(), e, rtol=tol, atol=scale)
    expected_bs = [e for e, b in zip(grad_bs, bs) if b is not None]
    assert len(got[2]) == len(expected_bs)
    for a, e in zip(got[2], expected_bs):
        torch.testing.assert_close(a.double().cpu(), e, rtol=tol, atol=scale)


def test_mlp_module_trains_like_sequential_on_cuda():
    torch.manual_seed(0)
    model = initkit.nn.MLP([64, 128, 128, 10], device="cuda")
    ref = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, 10)).cuda()
    for i, layer in enumerate(model.layers):
        ref[2 * i].load_state_dict(layer.state_dict())
    x = torch.randn(32, 64, device="cuda")
    model(x).square().sum().backward()
    ref(x).square().sum().backward()
    for layer, i in zip(model.layers, range(0, 5, 2)):
        torch.testing.assert_close(layer.weight.grad, ref[i].weight.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(layer.bias.grad, ref[i].bias.grad, rtol=1e-4, atol=1e-4)
