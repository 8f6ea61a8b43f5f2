"""pytest-benchmark: initkit's fused dense layers against PyTorch.

linear_relu: FusedLinearReLU vs nn.Linear + nn.ReLU (eager) vs the same under torch.compile vs a
bare addmm of the same shape (the GEMM floor), forward and forward+backward, for batch
{1, 32, 256, 4096} x width {64, 256, 1024, 4096}. mlp: initkit.nn.MLP vs an eager nn.Sequential.
Each benchmark.group holds one shape and pass, so a table compares like with like:

    pytest benchmarks/bench_linear_relu.py --benchmark-only --benchmark-group-by=group

Under --benchmark-disable (the smoke run) each body runs once; the shapes with more than
LARGE_MACS multiply-adds and all torch.compile cases but one are skipped there, to keep it fast.
For a ratio table without pytest: `python -c "from initkit.bench import dense as b; print(b.format_rows(b.rows()))"`.
"""

import pytest
import torch
from torch import nn

import initkit
from initkit.bench import dense as _bench_linear

LARGE_MACS = 2**26  # batch * width * width above this: timed only with benchmarks enabled
SMOKE_COMPILE_SHAPE = (32, 64)
PASSES = ["forward", "forward_backward"]

pytestmark = pytest.mark.skipif(not initkit.ext_available(), reason=f"extension unavailable: {initkit.ext_error()}")

_compiled: dict = {}  # (batch, width, pass) -> compiled callable: compile once per shape


def _skip_in_smoke_run(benchmark, batch, width, impl):
    if not benchmark.disabled:
        return
    if batch * width * width > LARGE_MACS:
        pytest.skip("large shape: timed only with benchmarks enabled")
    if impl == "compile" and (batch, width) != SMOKE_COMPILE_SHAPE:
        pytest.skip("torch.compile is smoke-tested on one shape only")


def _compiled_fn(batch, width, pass_):
    key = (batch, width, pass_)
    if key not in _compiled:
        torch.manual_seed(0)
        eager = torch.compile(nn.Sequential(nn.Linear(width, width), nn.ReLU()))
        x = torch.randn(batch, width, requires_grad=pass_ == "forward_backward")
        params = list(eager.parameters())
        if pass_ == "forward":
            _compiled[key] = lambda: eager(x)
        else:
            _compiled[key] = _bench_linear._forward_backward(eager, x, params)
    return _compiled[key]


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("width", [64, 256, 1024, 4096])
@pytest.mark.parametrize("batch", [1, 32, 256, 4096])
@pytest.mark.parametrize("impl", ["initkit", "eager", "compile", "addmm"])
def test_linear_relu(benchmark, impl, batch, width, pass_):
    _skip_in_smoke_run(benchmark, batch, width, impl)
    benchmark.group = f"linear_relu-{pass_}-cpu-float32-batch{batch}-width{width}"
    benchmark.extra_info.update(torch=torch.__version__, threads=torch.get_num_threads())
    if impl == "compile":
        fn = _compiled_fn(batch, width, pass_)
        fn()  # compile (and warm up) outside the timed region
    else:
        fn = _bench_linear.linear_relu_fns(batch, width, pass_)[impl]
    benchmark(fn)


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("sizes, batch", _bench_linear.MLP_CASES, ids=["4-5-3-2_batch2", "256-256-256-10_batch64"])
@pytest.mark.parametrize("impl", ["initkit", "eager"])
def test_mlp(benchmark, impl, sizes, batch, pass_):
    benchmark.group = f"mlp-{pass_}-cpu-float32-{'-'.join(map(str, sizes))}-batch{batch}"
    fn = _bench_linear.mlp_fns(sizes, batch, pass_)[impl]
    benchmark(fn)


def test_results_agree():
    """The compared callables compute the same thing (checked once, outside any timing)."""
    fns = _bench_linear.linear_relu_fns(32, 64, "forward")
    torch.testing.assert_close(fns["initkit"](), fns["eager"](), rtol=1e-5, atol=1e-5)
    fns = _bench_linear.mlp_fns([4, 5, 3, 2], 2, "forward")
    torch.testing.assert_close(fns["initkit"](), fns["eager"](), rtol=1e-5, atol=1e-5)
    assert isinstance(initkit.nn.MLP([4, 5, 3, 2]), nn.Module)
