"""One table of initkit's CUDA fills against torch (run by benchmarks/gpu_check.sh).

Rows: each fill on a 1 GiB float32 tensor (GB/s written, % of zero_'s bandwidth, speedup over
torch's own fill); CPU == CUDA identity per kind and dtype; the GPT-2-small parameter list
filled by one multi_fill_ against a per-tensor torch.nn.init loop. Times are medians of
synchronized blocks of back-to-back calls after warmup. Targets: fills >= 90% of zero_ and >= 1.0x torch's
uniform_/normal_, trunc_normal_ >= 5x torch's, the multi fill >= 5x the loop.
"""

import sys

import torch

import initkit
from initkit.bench.timing import median_seconds

GIB = 1 << 30


def time_ms(fn) -> float:
    """Median milliseconds per call of back-to-back calls (initkit.bench.timing, CUDA-synchronized)."""
    return median_seconds({"fn": fn}, budget_s=0.3, sync=torch.cuda.synchronize)["fn"] * 1e3


def fill_rows(rows: list[list[str]]) -> None:
    t = torch.empty(GIB // 4, device="cuda")
    zero_ms = time_ms(t.zero_)
    rows.append(["zero_ 1 GiB f32", f"{zero_ms:.3f} ms", f"{GIB / zero_ms / 1e6:.0f} GB/s", "100%", ""])
    cases = [
        ("uniform_", lambda: initkit.uniform_(t, -1.0, 1.0), lambda: t.uniform_(-1.0, 1.0), ">=90%, >=1.0x"),
        ("normal_", lambda: initkit.normal_(t, 0.0, 0.02), lambda: t.normal_(0.0, 0.02), ">=90%, >=1.0x"),
        (
            "trunc_normal_",
            lambda: initkit.trunc_normal_(t, 0.0, 0.02, -0.04, 0.04),
            lambda: torch.nn.init.trunc_normal_(t, 0.0, 0.02, -0.04, 0.04),
            ">=90%, >=5x",
        ),
    ]
    for name, ours, theirs, target in cases:
        ours_ms, torch_ms = time_ms(ours), time_ms(theirs)
        rows.append([
            f"{name} 1 GiB f32",
            f"{ours_ms:.3f} ms (torch {torch_ms:.3f})",
            f"{GIB / ours_ms / 1e6:.0f} GB/s",
            f"{100 * zero_ms / ours_ms:.0f}% of zero_",
            f"{torch_ms / ours_ms:.2f}x torch  [target {target}]",
        ])
    del t


def max_ulps(cuda: torch.Tensor, cpu: torch.Tensor) -> float:
    scale = cpu.abs().double().clamp(min=1.0)  # ulps of max(|x|, std); std is 1 here
    return ((cuda.double() - cpu.double()).abs() / (scale * torch.finfo(cpu.dtype).eps)).max().item()


def identity_rows(rows: list[list[str]]) -> None:
    seed = torch.tensor(20240601)
    fills = [("uniform_fill", (-1.0, 1.0)), ("normal_fill", (0.0, 1.0)), ("trunc_normal_fill", (0.0, 1.0, -2.0, 2.0))]
    for name, params in fills:
        cells = []
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            op = getattr(torch.ops.initkit, name)
            cpu, cuda = torch.empty(1 << 20, dtype=dtype), torch.empty(1 << 20, dtype=dtype, device="cuda")
            op(cpu, *params, seed, 3, 5)
            op(cuda, *params, seed, 3, 5)
            cuda = cuda.cpu()
            label = str(dtype).removeprefix("torch.")
            cells.append(f"{label}: {'identical' if torch.equal(cpu, cuda) else f'max {max_ulps(cuda, cpu):.1f} ulp'}")
        rows.append([f"CPU==CUDA {name}", "; ".join(cells), "", "", ""])


def gpt2_small_params() -> list[torch.Tensor]:
    """GPT-2 small's 148 parameter tensors (124.4M values), as nn.Module would hold them."""
    d, vocab, ctx, layers = 768, 50257, 1024, 12
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    shapes += [(d,), (d,)]
    return [torch.empty(s, device="cuda") for s in shapes]


def multi_fill_rows(rows: list[list[str]]) -> None:
    params = gpt2_small_params()
    fills = [("normal", (0.0, 0.02))] * len(params)
    numel = sum(p.numel() for p in params)

    def torch_loop():
        for p in params:
            torch.nn.init.normal_(p, 0.0, 0.02)

    ours_ms = time_ms(lambda: initkit.multi_fill_(params, fills))
    loop_ms = time_ms(torch_loop)
    rows.append([
        f"GPT-2 small: {len(params)} tensors, {numel / 1e6:.1f}M",
        f"multi_fill_ {ours_ms:.3f} ms (nn.init loop {loop_ms:.3f})",
        f"{4 * numel / ours_ms / 1e6:.0f} GB/s",
        "",
        f"{loop_ms / ours_ms:.2f}x the loop  [target >=5x]",
    ])


def main() -> int:
    if not (torch.cuda.is_available() and initkit.ext_has_cuda()):
        print(f"gpu_report: needs a GPU and initkit's CUDA kernels (ext error: {initkit.ext_error()})")
        return 1
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, initkit built for {initkit.build_info()['cuda_arch_list']}")
    rows = [["case", "time", "throughput", "vs zero_", "vs torch"]]
    fill_rows(rows)
    identity_rows(rows)
    multi_fill_rows(rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
