"""pytest-benchmark: initkit's fused dense layers against PyTorch and its fast paths.

linear_relu: FusedLinearReLU vs nn.Linear + nn.ReLU (eager), torch.ops.mkldnn._linear_pointwise
with the ReLU post-op (forward), torch.compile (default; and with inductor freezing for the
inference forward), a bare addmm (MKL's GEMM), forward (inference, under no_grad) and
forward+backward, for batch {1, 32, 256, 4096} x width {64, 256, 1024, 4096}, in float32 and (on
CPUs with native bf16) bfloat16; `peak` times the fastest large GEMM (the FLOP limit). mlp:
initkit.nn.MLP vs an eager nn.Sequential. Each benchmark.group holds one shape, pass and dtype,
so a table compares like with like:

    pytest benchmarks/bench_linear_relu.py --benchmark-only --benchmark-group-by=group

Under --benchmark-disable (the smoke run) each body runs once; the shapes with more than
LARGE_MACS multiply-adds and all torch.compile cases but one are skipped there, to keep it fast.
For a ratio table without pytest: `python -m initkit bench` (initkit/dense.py).
"""

import pytest
import torch
from torch import nn

import initkit
from initkit.bench import dense

LARGE_MACS = 2**26  # batch * width * width above this: timed only with benchmarks enabled
SMOKE_COMPILE_SHAPE = (32, 64)
PASSES = ["forward", "forward_backward"]
DTYPES = [torch.float32, torch.bfloat16]
IMPLS = ["initkit", "eager", "mkldnn", "compile", "freezing", "addmm"]

pytestmark = pytest.mark.skipif(not initkit.ext_available(), reason=f"extension unavailable: {initkit.ext_error()}")


def _skip_unless_runs(benchmark, impl, batch, width, pass_, dtype):
    if dtype == torch.bfloat16 and not dense.native_bf16():
        pytest.skip("no native bfloat16 on this CPU")
    if impl == "mkldnn" and (pass_ != "forward" or not dense.has_mkldnn_pointwise()):
        pytest.skip("mkldnn._linear_pointwise: forward only (no autograd), and only where torch has it")
    if impl == "freezing" and pass_ != "forward":
        pytest.skip("inductor freezing applies to inference only")
    if not benchmark.disabled:
        return
    if batch * width * width > LARGE_MACS:
        pytest.skip("large shape: timed only with benchmarks enabled")
    if impl in ("compile", "freezing") and ((batch, width) != SMOKE_COMPILE_SHAPE or dtype != torch.float32):
        pytest.skip("torch.compile is smoke-tested on one shape only")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "bfloat16"])
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("width", [64, 256, 1024, 4096])
@pytest.mark.parametrize("batch", [1, 32, 256, 4096])
@pytest.mark.parametrize("impl", IMPLS)
def test_linear_relu(benchmark, impl, batch, width, pass_, dtype):
    _skip_unless_runs(benchmark, impl, batch, width, pass_, dtype)
    benchmark.group = f"linear_relu-{pass_}-cpu-{str(dtype)[6:]}-batch{batch}-width{width}"
    benchmark.extra_info.update(torch=torch.__version__, threads=torch.get_num_threads())
    fn = dense.linear_relu_fns(batch, width, pass_, dtype, peers=(impl,))[impl]
    fn()  # compile (and warm up) outside the timed region
    benchmark(fn)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "bfloat16"])
@pytest.mark.parametrize("engine", ["mkl", "onednn"])
def test_peak_gemm(benchmark, engine, dtype):
    """The FLOP limit: a large GEMM on each engine (GFLOP/s = 2*M*N*K / time)."""
    if dtype == torch.bfloat16 and not dense.native_bf16():
        pytest.skip("no native bfloat16 on this CPU")
    if engine == "onednn" and not dense.has_mkldnn_pointwise():
        pytest.skip("torch without oneDNN")
    if benchmark.disabled:
        m, n, k = 64, 64, 64
    else:
        m, n, k = dense.PEAK_SHAPE
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    benchmark.group = f"peak-gemm-cpu-{str(dtype)[6:]}-{m}x{n}x{k}"
    benchmark.extra_info.update(flop=2 * m * n * k)
    if engine == "mkl":
        benchmark(lambda: torch.mm(a, b.t()))
    else:
        benchmark(lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [None], ""))


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("sizes, batch", dense.MLP_CASES, ids=["4-5-3-2_batch2", "256-256-256-10_batch64"])
@pytest.mark.parametrize("impl", ["initkit", "eager"])
def test_mlp(benchmark, impl, sizes, batch, pass_):
    benchmark.group = f"mlp-{pass_}-cpu-float32-{'-'.join(map(str, sizes))}-batch{batch}"
    fn = dense.mlp_fns(sizes, batch, pass_)[impl]
    benchmark(fn)


def test_results_agree():
    """The compared callables compute the same thing (checked once, outside any timing)."""
    fns = dense.linear_relu_fns(32, 64, "forward")
    torch.testing.assert_close(fns["initkit"](), fns["eager"](), rtol=1e-5, atol=1e-5)
    fns = dense.linear_relu_fns(64, 256, "forward")
    for peer in ("eager", "mkldnn"):
        if peer in fns:
            torch.testing.assert_close(fns["initkit"](), fns[peer](), rtol=1e-4, atol=1e-4)
    fns = dense.mlp_fns([4, 5, 3, 2], 2, "forward")
    torch.testing.assert_close(fns["initkit"](), fns["eager"](), rtol=1e-5, atol=1e-5)
    assert isinstance(initkit.nn.MLP([4, 5, 3, 2]), nn.Module)
