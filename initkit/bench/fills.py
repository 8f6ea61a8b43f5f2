"""The fill speed comparison shared by `initkit bench` and benchmarks/bench_init.py.

Each scheme runs four ways on the same tensor: initkit, torch.nn.init, and two floors: `zero_`
(memory bandwidth: no fill can write faster) and `philox` (the Philox4x32-10 words a float32 fill
uses, generated and stored with no sampling: the generator's speed), timed side by side
(timing.py). Speed claims are ratios of medians from one run.
"""

from collections.abc import Callable

import torch
import torch.nn.init as nn_init

from .. import init as ik
from .timing import median_seconds

# scheme name -> (initkit function, torch function, keyword arguments)
SCHEMES: dict[str, tuple[Callable, Callable, dict]] = {
    "uniform_": (ik.uniform_, nn_init.uniform_, {}),
    "normal_": (ik.normal_, nn_init.normal_, {}),
    "trunc_normal_": (ik.trunc_normal_, nn_init.trunc_normal_, {"std": 0.02}),
    "trunc_normal_(std=1)": (ik.trunc_normal_, nn_init.trunc_normal_, {}),  # torch's defaults: bounds at 2 std
    "xavier_uniform_": (ik.xavier_uniform_, nn_init.xavier_uniform_, {}),
    "xavier_normal_": (ik.xavier_normal_, nn_init.xavier_normal_, {}),
    "kaiming_uniform_": (ik.kaiming_uniform_, nn_init.kaiming_uniform_, {"nonlinearity": "relu"}),
    "kaiming_normal_": (ik.kaiming_normal_, nn_init.kaiming_normal_, {"nonlinearity": "relu"}),
}
SHAPES = [(4096, 8192), (256, 256)]
IMPLS = ("initkit", "torch", "zero_", "philox")
_SEED = torch.tensor(0)


def philox_floor(tensor: torch.Tensor) -> Callable[[], object]:
    """The generator floor: raw Philox words into `tensor` (float32), as the fills' first draw."""
    return lambda: torch.ops.initkit._philox_fill(tensor, _SEED)


def fill_callable(scheme: str, impl: str, tensor: torch.Tensor) -> Callable[[], object]:
    ours, theirs, kwargs = SCHEMES[scheme]
    if impl == "initkit":
        return lambda: ours(tensor, **kwargs)
    if impl == "torch":
        return lambda: theirs(tensor, **kwargs)
    if impl == "philox":
        return philox_floor(tensor)
    return tensor.zero_


# The per-call cost, on a tensor so small that the fill itself is nothing: the public function
# (argument checks, key drawing, dispatch) against torch.nn.init's, beside the fill op called with
# a fixed key (`raw op`: what no Python wrapper can go below).
OVERHEAD_SHAPE = (2, 2)
_RAW_OPS = {
    "uniform": lambda t: torch.ops.initkit.uniform_fill(t, -1.0, 1.0, _SEED),
    "normal": lambda t: torch.ops.initkit.normal_fill(t, 0.0, 1.0, _SEED),
    "trunc_normal": lambda t: torch.ops.initkit.trunc_normal_fill(t, 0.0, 0.02, -2.0, 2.0, _SEED),
}


def overhead_rows(budget_s: float = 0.3) -> list[dict]:
    """One row per scheme: initkit, torch.nn.init and the raw op per call on a 2x2 tensor."""
    tensor = torch.empty(OVERHEAD_SHAPE)
    rows = []
    for scheme in SCHEMES:
        kind = "trunc_normal" if scheme.startswith("trunc") else "normal" if "normal" in scheme else "uniform"
        raw = _RAW_OPS[kind]
        impls = {impl: fill_callable(scheme, impl, tensor) for impl in ("initkit", "torch")}
        t = median_seconds({**impls, "raw op": lambda: raw(tensor)}, budget_s)
        rows.append(dict(scheme=scheme, initkit=t["initkit"], torch=t["torch"], raw_op=t["raw op"]))
    return rows


def format_overhead(rows: list[dict]) -> str:
    lines = [f"Per-call cost on a {'x'.join(map(str, OVERHEAD_SHAPE))} tensor (us):"]
    lines.append(f"{'scheme':<22}{'initkit':>9}{'torch':>9}{'raw op':>9}")
    for r in rows:
        lines.append(f"{r['scheme']:<22}{r['initkit'] * 1e6:>9.2f}{r['torch'] * 1e6:>9.2f}{r['raw_op'] * 1e6:>9.2f}")
    return "\n".join(lines)


def run(budget_s: float = 0.9) -> list[dict]:
    """One row per scheme and shape: initkit, torch and zero_ timed side by side on one tensor."""
    rows = []
    for shape in SHAPES:
        tensor = torch.empty(shape)
        for scheme in SCHEMES:
            t = median_seconds({impl: fill_callable(scheme, impl, tensor) for impl in IMPLS}, budget_s)
            rows.append(
                dict(scheme=scheme, shape=shape, initkit=t["initkit"], torch=t["torch"], zero_=t["zero_"],
                     philox=t["philox"], speedup=t["torch"] / t["initkit"], of_zero=t["zero_"] / t["initkit"],
                     of_philox=t["philox"] / t["initkit"])
            )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        f"{'scheme':<22}{'shape':>12}{'initkit':>11}{'torch':>11}{'zero_':>10}{'philox':>10}{'vs torch':>10}"
        f"{'of zero_':>10}{'of philox':>10}",
    ]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        lines.append(
            f"{r['scheme']:<22}{shape:>12}{r['initkit'] * 1e3:>9.3f}ms{r['torch'] * 1e3:>9.3f}ms"
            f"{r['zero_'] * 1e3:>8.3f}ms{r['philox'] * 1e3:>8.3f}ms{r['speedup']:>9.1f}x{r['of_zero']:>10.2f}"
            f"{r['of_philox']:>10.2f}"
        )
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| scheme | shape | initkit vs torch.nn.init | initkit throughput / `zero_` | / raw Philox |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['scheme']}` | {'×'.join(map(str, r['shape']))} | {r['speedup']:.1f}× | {r['of_zero']:.2f} |"
            f" {r['of_philox']:.2f} |"
        )
    return "\n".join(lines)
