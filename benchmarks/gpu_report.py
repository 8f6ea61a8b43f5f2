"""One table of initkit's CUDA fills and dense ops against torch (run by benchmarks/gpu_check.sh).

Rows: each fill on a 1 GiB float32 tensor (GB/s written, % of zero_'s bandwidth, speedup over
torch's own fill); CPU == CUDA identity per kind and dtype; the GPT-2-small parameter list
filled by one multi_fill_ against a per-tensor torch.nn.init loop; linear_relu forward and
forward+backward (cuBLASLt's bias+ReLU and DRELU_BGRAD epilogues) against eager
F.relu(F.linear). Times are medians of synchronized blocks of back-to-back calls after warmup.
Targets: fills >= 90% of zero_ and >= 1.0x torch's uniform_/normal_, trunc_normal_ >= 5x torch's,
the multi fill >= 5x the loop, linear_relu >= 1.0x eager.

`python benchmarks/gpu_report.py --cpu` runs every row on small CPU tensors: the CPU-only test
suite does, so the report cannot fail on first contact with a GPU for a reason a CPU could show.
"""

import sys

import torch
import torch.nn.functional as F

import initkit
from initkit.bench.timing import median_seconds

GIB = 1 << 30


class Target:
    """Where the rows run: the GPU at full size, or (for the CPU test) the CPU at 1/4096 of it."""

    def __init__(self, device: str):
        self.device = device
        self.scale = 1 if device == "cuda" else 4096
        self.sync = torch.cuda.synchronize if device == "cuda" else None
        self.budget_s = 0.3 if device == "cuda" else 0.01

    def time_ms(self, fn) -> float:
        """Median milliseconds per call of back-to-back calls (initkit.bench.timing, synchronized)."""
        return median_seconds({"fn": fn}, budget_s=self.budget_s, min_rounds=3, sync=self.sync)["fn"] * 1e3


def fill_rows(rows: list[list[str]], target: Target) -> None:
    nbytes = GIB // target.scale
    t = torch.empty(nbytes // 4, device=target.device)
    zero_ms = target.time_ms(t.zero_)
    label = (f"{nbytes // GIB} GiB" if nbytes >= GIB else f"{nbytes >> 10} KiB") + " f32"
    rows.append([f"zero_ {label}", f"{zero_ms:.3f} ms", f"{nbytes / zero_ms / 1e6:.0f} GB/s", "100%", ""])
    cases = [
        ("uniform_", lambda: initkit.uniform_(t, -1.0, 1.0), lambda: t.uniform_(-1.0, 1.0), ">=90%, >=1.0x"),
        ("normal_", lambda: initkit.normal_(t, 0.0, 0.02), lambda: t.normal_(0.0, 0.02), ">=90%, >=1.0x"),
        (
            "trunc_normal_",
            lambda: initkit.trunc_normal_(t, 0.0, 0.02, -0.04, 0.04),
            lambda: torch.nn.init.trunc_normal_(t, 0.0, 0.02, -0.04, 0.04),
            ">=90%, >=5x",
        ),
        (
            "trunc_normal_ std 1",  # torch's defaults: (0, 1, -2, 2), by rejection with redraws
            lambda: initkit.trunc_normal_(t),
            lambda: torch.nn.init.trunc_normal_(t),
            ">=90%, >=5x",
        ),
    ]
    for name, ours, theirs, goal in cases:
        ours_ms, torch_ms = target.time_ms(ours), target.time_ms(theirs)
        rows.append([
            f"{name} {label}",
            f"{ours_ms:.3f} ms (torch {torch_ms:.3f})",
            f"{nbytes / ours_ms / 1e6:.0f} GB/s",
            f"{100 * zero_ms / ours_ms:.0f}% of zero_",
            f"{torch_ms / ours_ms:.2f}x torch  [target {goal}]",
        ])
    del t


def max_ulps(cuda: torch.Tensor, cpu: torch.Tensor) -> float:
    scale = cpu.abs().double().clamp(min=1.0)  # ulps of max(|x|, std); std is 1 here
    return ((cuda.double() - cpu.double()).abs() / (scale * torch.finfo(cpu.dtype).eps)).max().item()


def identity_rows(rows: list[list[str]], target: Target) -> None:
    seed = torch.tensor(20240601)
    fills = [("uniform_fill", (-1.0, 1.0)), ("normal_fill", (0.0, 1.0)), ("trunc_normal_fill", (0.0, 1.0, -2.0, 2.0))]
    for name, params in fills:
        cells = []
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            op = getattr(torch.ops.initkit, name)
            cpu, cuda = torch.empty(1 << 20, dtype=dtype), torch.empty(1 << 20, dtype=dtype, device=target.device)
            op(cpu, *params, seed, 3, 5)
            op(cuda, *params, seed, 3, 5)
            cuda = cuda.cpu()
            label = str(dtype).removeprefix("torch.")
            cells.append(f"{label}: {'identical' if torch.equal(cpu, cuda) else f'max {max_ulps(cuda, cpu):.1f} ulp'}")
        rows.append([f"CPU==CUDA {name}", "; ".join(cells), "", "", ""])


def gpt2_small_params(target: Target) -> list[torch.Tensor]:
    """GPT-2 small's 148 parameter tensors (124.4M values), as nn.Module would hold them
    (on the CPU a GPT-2 of width 12 and vocabulary 785, same tensor count)."""
    d, vocab, ctx, layers = 768 // min(target.scale, 64), 50257 // min(target.scale, 64), 1024, 12
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    shapes += [(d,), (d,)]
    return [torch.empty(s, device=target.device) for s in shapes]


def multi_fill_rows(rows: list[list[str]], target: Target) -> None:
    params = gpt2_small_params(target)
    fills = [("normal", (0.0, 0.02))] * len(params)
    numel = sum(p.numel() for p in params)

    def torch_loop():
        for p in params:
            torch.nn.init.normal_(p, 0.0, 0.02)

    ours_ms = target.time_ms(lambda: initkit.multi_fill_(params, fills))
    loop_ms = target.time_ms(torch_loop)
    rows.append([
        f"GPT-2 small: {len(params)} tensors, {numel / 1e6:.1f}M",
        f"multi_fill_ {ours_ms:.3f} ms (nn.init loop {loop_ms:.3f})",
        f"{4 * numel / ours_ms / 1e6:.0f} GB/s",
        "",
        f"{loop_ms / ours_ms:.2f}x the loop  [target >=5x]",
    ])


def dense_rows(rows: list[list[str]], target: Target) -> None:
    """linear_relu (batch x width, square weight) forward and forward+backward against eager."""
    shapes = [(4096, 4096), (256, 1024), (32, 1024)] if target.device == "cuda" else [(16, 32)]
    dtypes = [torch.float32, torch.bfloat16]
    for (batch, width), dtype in ((shape, dtype) for shape in shapes for dtype in dtypes):
        make = dict(device=target.device, dtype=dtype)
        x = torch.randn(batch, width, **make, requires_grad=True)
        w = (torch.randn(width, width, **make) / width**0.5).requires_grad_()
        b = torch.zeros(width, **make, requires_grad=True)
        grad = torch.randn(batch, width, **make)
        ours = lambda: initkit.functional.linear_relu(x, w, b)  # noqa: E731
        eager = lambda: F.relu(F.linear(x, w, b))  # noqa: E731
        for pass_, run in (("fwd", lambda f: f()), ("fwd+bwd", lambda f: f().backward(grad))):
            with torch.set_grad_enabled(pass_ != "fwd"):
                ours_ms, eager_ms = target.time_ms(lambda: run(ours)), target.time_ms(lambda: run(eager))
            flops = 2 * batch * width * width * (1 if pass_ == "fwd" else 3)
            rows.append([
                f"linear_relu {pass_} {batch}x{width} {str(dtype).removeprefix('torch.')}",
                f"{ours_ms:.3f} ms (eager {eager_ms:.3f})",
                f"{flops / ours_ms / 1e9:.1f} TFLOP/s",
                "",
                f"{eager_ms / ours_ms:.2f}x eager  [target >=1.0x]",
            ])


def main(argv: list[str]) -> int:
    if "--cpu" in argv:
        target = Target("cpu")
        print(f"torch {torch.__version__}, CPU dry run at 1/{target.scale} of the sizes")
    elif torch.cuda.is_available() and initkit.ext_has_cuda():
        target = Target("cuda")
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, initkit built for {initkit.build_info()['cuda_arch_list']}")
    else:
        print(f"gpu_report: needs a GPU and initkit's CUDA kernels (ext error: {initkit.ext_error()})")
        return 1
    rows = [["case", "time", "throughput", "vs zero_", "vs torch"]]
    fill_rows(rows, target)
    identity_rows(rows, target)
    multi_fill_rows(rows, target)
    dense_rows(rows, target)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
