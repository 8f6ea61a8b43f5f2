"""Ratio table of the fused dense layers for `python -m initkit bench`: FusedLinearReLU vs
nn.Linear + nn.ReLU (eager) vs a bare addmm of the same shape (the GEMM floor), and MLP vs an
eager nn.Sequential, timed side by side (timing.py).
"""

from collections.abc import Callable

import torch
from torch import nn

from ..nn import MLP, FusedLinearReLU
from .timing import median_seconds

LINEAR_SHAPES = [(batch, width) for batch in (1, 32, 256, 4096) for width in (64, 256, 1024, 4096)]
QUICK_LINEAR_SHAPES = [(1, 64), (32, 256), (256, 1024)]
MLP_CASES = [([4, 5, 3, 2], 2), ([256, 256, 256, 10], 64)]


def _forward_backward(module: Callable, x: torch.Tensor, params: list[torch.Tensor]) -> Callable[[], object]:
    def run():
        out = module(x)
        return torch.autograd.grad(out, [x, *params], torch.ones_like(out))

    return run


def linear_relu_fns(batch: int, width: int, pass_: str) -> dict[str, Callable[[], object]]:
    """The callables compared for one shape: initkit, eager and the bare addmm floor."""
    torch.manual_seed(0)
    fused = FusedLinearReLU(width, width)
    eager = nn.Sequential(nn.Linear(width, width), nn.ReLU())
    eager[0].load_state_dict(fused.state_dict())
    x = torch.randn(batch, width, requires_grad=pass_ == "forward_backward")
    weight, bias = eager[0].weight, eager[0].bias

    def addmm(x):
        return torch.addmm(bias, x, weight.t())

    if pass_ == "forward":
        return {"initkit": lambda: fused(x), "eager": lambda: eager(x), "addmm": lambda: addmm(x)}
    return {
        "initkit": _forward_backward(fused, x, [fused.weight, fused.bias]),
        "eager": _forward_backward(eager, x, [weight, bias]),
        "addmm": _forward_backward(addmm, x, [weight, bias]),
    }


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
        return {"initkit": lambda: fused(x), "eager": lambda: eager(x)}
    return {
        "initkit": _forward_backward(fused, x, list(fused.parameters())),
        "eager": _forward_backward(eager, x, list(eager.parameters())),
    }


def rows(quick: bool = False, budget_s: float = 0.5) -> list[dict]:
    """One row per case: median microseconds per call and the ratios
    speedup = eager / initkit (> 1: initkit is faster) and vs_addmm = initkit / addmm."""
    table = []
    shapes = QUICK_LINEAR_SHAPES if quick else LINEAR_SHAPES
    for pass_ in ("forward", "forward_backward"):
        for batch, width in shapes:
            t = median_seconds(linear_relu_fns(batch, width, pass_), budget_s)
            table.append({
                "op": "linear_relu", "pass": pass_, "shape": f"batch={batch} width={width}",
                "initkit_us": t["initkit"] * 1e6, "eager_us": t["eager"] * 1e6, "addmm_us": t["addmm"] * 1e6,
                "speedup": t["eager"] / t["initkit"], "vs_addmm": t["initkit"] / t["addmm"],
            })
        for sizes, batch in MLP_CASES:
            t = median_seconds(mlp_fns(sizes, batch, pass_), budget_s)
            table.append({
                "op": "mlp", "pass": pass_, "shape": f"sizes={sizes} batch={batch}",
                "initkit_us": t["initkit"] * 1e6, "eager_us": t["eager"] * 1e6, "addmm_us": None,
                "speedup": t["eager"] / t["initkit"], "vs_addmm": None,
            })
    return table


def format_rows(table: list[dict]) -> str:
    lines = [f"{'op':<12}{'pass':<18}{'shape':<34}{'initkit us':>12}{'eager us':>12}{'addmm us':>12}{'speedup':>9}{'vs addmm':>10}"]
    for r in table:
        addmm = f"{r['addmm_us']:>12.1f}" if r["addmm_us"] is not None else f"{'-':>12}"
        vs = f"{r['vs_addmm']:>9.2f}x" if r["vs_addmm"] is not None else f"{'-':>10}"
        lines.append(f"{r['op']:<12}{r['pass']:<18}{r['shape']:<34}{r['initkit_us']:>12.1f}{r['eager_us']:>12.1f}{addmm}{r['speedup']:>8.2f}x{vs}")
    return "\n".join(lines)
