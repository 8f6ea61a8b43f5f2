"""Ratio table of the fused dense layers for `python -m initkit bench`: FusedLinearReLU against
every peer at each shape, and MLP vs an eager nn.Sequential:

    eager      nn.Linear + nn.ReLU
    mkldnn     torch.ops.mkldnn._linear_pointwise(x, W, b, "relu") (oneDNN with the ReLU post-op;
               forward only: it has no autograd)
    compile    torch.compile of the eager module (default options)
    freezing   torch.compile with torch._inductor.config.freezing = True (inference only)
    addmm      a bare torch.addmm of the same shape (MKL's GEMM, no ReLU)

and the measured peak: the GFLOP/s of the fastest large GEMM here (MKL or oneDNN), so each row
also says which fraction of the machine's peak initkit reaches. "forward" is inference (under
torch.no_grad(), as eval use runs); "forward_backward" is one training step's forward + backward.
Implementations are timed side by side (timing.py).
"""

from collections.abc import Callable

import torch
from torch import nn

from ..nn import MLP, FusedLinearReLU
from .timing import median_seconds

# (batch, width); 1024x4096 is the second shape of issue 10's peak target, beside 4096x1024.
LINEAR_SHAPES = [(batch, width) for batch in (1, 32, 256, 4096) for width in (64, 256, 1024, 4096)] + [(1024, 4096)]
QUICK_LINEAR_SHAPES = [(1, 64), (1, 256), (32, 1024), (256, 1024), (4096, 1024), (1024, 4096)]
MLP_CASES = [([4, 5, 3, 2], 2), ([256, 256, 256, 10], 64)]
PEAK_SHAPE = (2048, 2048, 2048)  # M, N, K of the GEMM timed for the peak
_compiled: dict = {}  # (batch, width, pass, dtype, freezing) -> compiled module: compile once per shape


def _forward_backward(module: Callable, x: torch.Tensor, params: list[torch.Tensor]) -> Callable[[], object]:
    def run():
        out = module(x)
        return torch.autograd.grad(out, [x, *params], torch.ones_like(out))

    return run


def _inference(fn: Callable[[], object]) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return fn()

    return run


def has_mkldnn_pointwise() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def native_bf16() -> bool:
    """True where the CPU has native bfloat16 dot products (AVX512-BF16 or AMX)."""
    try:
        return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX") and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


def _compiled_module(batch: int, width: int, pass_: str, dtype: torch.dtype, freezing: bool, eager: nn.Module):
    key = (batch, width, pass_, dtype, freezing)
    if key not in _compiled:
        import torch._inductor.config as inductor_config

        module = torch.compile(eager)
        if freezing:
            module.eval()
        with inductor_config.patch(freezing=freezing):
            x = torch.randn(batch, width, dtype=dtype, requires_grad=pass_ == "forward_backward")
            if pass_ == "forward":
                with torch.no_grad():
                    module(x)  # compile here, under the same config
            else:
                module(x).sum().backward()
        _compiled[key] = module
    return _compiled[key]


def linear_relu_fns(batch: int, width: int, pass_: str, dtype: torch.dtype = torch.float32,
                    peers: tuple[str, ...] = ("mkldnn", "addmm")) -> dict[str, Callable[[], object]]:
    """The callables compared for one shape: initkit, eager and the peers asked for (those that
    exist for this pass and this torch: see the module docstring)."""
    torch.manual_seed(0)
    fused = FusedLinearReLU(width, width, dtype=dtype)
    eager = nn.Sequential(nn.Linear(width, width, dtype=dtype), nn.ReLU())
    eager[0].load_state_dict(fused.state_dict())
    x = torch.randn(batch, width, dtype=dtype, requires_grad=pass_ == "forward_backward")
    weight, bias = eager[0].weight, eager[0].bias
    if pass_ == "forward":
        fns = {"initkit": lambda: fused(x), "eager": lambda: eager(x)}
        if "mkldnn" in peers and has_mkldnn_pointwise():
            fns["mkldnn"] = lambda: torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu", [None], "")
        for name, freezing in (("compile", False), ("freezing", True)):
            if name in peers:
                module = _compiled_module(batch, width, pass_, dtype, freezing, eager)
                fns[name] = lambda module=module: module(x)
        if "addmm" in peers:
            fns["addmm"] = lambda: torch.addmm(bias, x, weight.t())
        return {name: _inference(fn) for name, fn in fns.items()}
    fns = {
        "initkit": _forward_backward(fused, x, [fused.weight, fused.bias]),
        "eager": _forward_backward(eager, x, [weight, bias]),
    }
    if "compile" in peers:
        fns["compile"] = _forward_backward(_compiled_module(batch, width, pass_, dtype, False, eager), x, [weight, bias])
    if "addmm" in peers:
        fns["addmm"] = _forward_backward(lambda x: torch.addmm(bias, x, weight.t()), x, [weight, bias])
    return fns


def mlp_fns(sizes: list[int], batch: int, pass_: str) -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    fused = MLP(sizes, init="torch")
    layers = []
    for layer in fused.layers:
        layers += [nn.Linear(layer.in_features, layer.out_features), nn.ReLU()]
    eager = nn.Sequential(*layers[:-1])  # no ReLU after the last layer
    for i, layer in enumerate(fused.layers):
        eager[2 * i].load_state_dict(layer.state_dict())
    x = torch.randn(batch, sizes[0], requires_grad=pass_ == "forward_backward")
    if pass_ == "forward":
        return {"initkit": _inference(lambda: fused(x)), "eager": _inference(lambda: eager(x))}
    return {
        "initkit": _forward_backward(fused, x, list(fused.parameters())),
        "eager": _forward_backward(eager, x, list(eager.parameters())),
    }


def peak_gflops(dtype: torch.dtype = torch.float32, budget_s: float = 1.0) -> dict[str, float]:
    """GFLOP/s of a large GEMM (PEAK_SHAPE) on MKL (torch.mm) and on oneDNN, and their max."""
    m, n, k = PEAK_SHAPE
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    fns = {"mkl": lambda: torch.mm(a, b.t())}
    if has_mkldnn_pointwise():
        fns["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [None], "")
    t = median_seconds(fns, budget_s)
    gflops = {name: 2 * m * n * k / s / 1e9 for name, s in t.items()}
    gflops["peak"] = max(gflops.values())
    return gflops


def _linear_row(pass_, batch, width, dtype, t, peak):
    flops = 2 * batch * width * width * (3 if pass_ == "forward_backward" else 1)
    row = {"op": "linear_relu", "pass": pass_, "dtype": str(dtype).replace("torch.", ""),
           "shape": f"batch={batch} width={width}", "speedup": t["eager"] / t["initkit"],
           "of_peak": flops / t["initkit"] / 1e9 / peak}
    for name, seconds in t.items():
        row[f"{name}_us"] = seconds * 1e6
    for name in ("mkldnn", "compile", "freezing"):
        if name in t:
            row[f"vs_{name}"] = t[name] / t["initkit"]
    return row


def rows(quick: bool = False, budget_s: float = 0.5, compile_peers: bool = True) -> list[dict]:
    """One row per case: median microseconds per call of each implementation, speedup = eager /
    initkit, vs_X = X / initkit (> 1: initkit is faster) and of_peak = initkit's GFLOP/s over
    the measured peak. bfloat16 rows are added on CPUs with native bf16."""
    table = []
    shapes = QUICK_LINEAR_SHAPES if quick else LINEAR_SHAPES
    dtypes = [torch.float32] + ([torch.bfloat16] if native_bf16() else [])
    for dtype in dtypes:
        peak = peak_gflops(dtype)["peak"]
        table.append({"op": "peak", "pass": "gemm", "dtype": str(dtype).replace("torch.", ""),
                      "shape": "x".join(map(str, PEAK_SHAPE)), "gflops": peak})
        for pass_ in ("forward", "forward_backward"):
            for batch, width in shapes:
                # torch.compile costs seconds per shape: its columns cover the quick shapes
                with_compile = compile_peers and dtype == torch.float32 and (batch, width) in QUICK_LINEAR_SHAPES
                peers = ("mkldnn", "addmm") + (("compile", "freezing") if with_compile else ())
                t = median_seconds(linear_relu_fns(batch, width, pass_, dtype, peers), budget_s)
                table.append(_linear_row(pass_, batch, width, dtype, t, peak))
    for pass_ in ("forward", "forward_backward"):
        for sizes, batch in MLP_CASES:
            t = median_seconds(mlp_fns(sizes, batch, pass_), budget_s)
            table.append({"op": "mlp", "pass": pass_, "dtype": "float32", "shape": f"sizes={sizes} batch={batch}",
                          "initkit_us": t["initkit"] * 1e6, "eager_us": t["eager"] * 1e6,
                          "speedup": t["eager"] / t["initkit"]})
    return table


_COLUMNS = [("initkit_us", "initkit us"), ("eager_us", "eager us"), ("mkldnn_us", "mkldnn us"),
            ("compile_us", "compile us"), ("freezing_us", "freezing us"), ("addmm_us", "addmm us")]
_RATIOS = [("speedup", "vs eager"), ("vs_mkldnn", "vs mkldnn"), ("vs_compile", "vs compile"),
           ("vs_freezing", "vs freezing"), ("of_peak", "of peak")]


def format_rows(table: list[dict]) -> str:
    head = f"{'op':<12}{'pass':<18}{'dtype':<10}{'shape':<30}" + "".join(f"{t:>13}" for _, t in _COLUMNS + _RATIOS)
    lines = [head]
    for r in table:
        if r["op"] == "peak":
            lines.append(f"{'peak':<12}{'gemm':<18}{r['dtype']:<10}{r['shape']:<30}{r['gflops']:>10.0f} GFLOP/s")
            continue
        cells = "".join(f"{r[k]:>13.1f}" if k in r else f"{'-':>13}" for k, _ in _COLUMNS)
        cells += "".join(f"{r[k]:>12.2f}x" if k in r else f"{'-':>13}" for k, _ in _RATIOS)
        lines.append(f"{r['op']:<12}{r['pass']:<18}{r['dtype']:<10}{r['shape']:<30}{cells}")
    return "\n".join(lines)
