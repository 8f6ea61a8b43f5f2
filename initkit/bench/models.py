"""Model-init benchmark on GPT-2 small (gpt2.py): initkit.initialize vs torch.nn.init per parameter
with the same distributions, and materialize's peak memory; and re-initialization of real models
with their own recorded scheme (recorded_reinit_rows). Used by benchmarks/bench_model_init.py and by
`initkit bench`.
"""

import json
import subprocess
import sys
import tempfile

import torch
from torch import nn

from .._ext import torch_fallback
from .._ext.backend import use_backend
from ..model import deferred
from ..model import activations
from ..model.apply import initialize
from ..model.materialize import materialize
from ..model.policy import InitPlan, init_plan
from . import own_init
from .gpt2 import GPT2Config, gpt2_on_meta
from .timing import median_seconds


def torch_reinit(model: nn.Module, plan: InitPlan) -> None:
    """The baseline: the plan's distributions with torch.nn.init, one call per parameter."""
    params = dict(model.named_parameters())
    fills = {
        "uniform": torch_fallback.uniform_,
        "normal": torch_fallback.normal_,
        "trunc_normal": torch_fallback.trunc_normal_,
        "constant": torch_fallback.constant_,
    }
    with torch.no_grad():
        for row in plan:
            fills[row.kind](params[row.name], *row.params)


_RSS_SCRIPT = """
import json, sys
import initkit
from initkit.bench.gpt2 import GPT2Config, gpt2_on_meta

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

config = GPT2Config(**json.loads(sys.argv[1]))
model = gpt2_on_meta(config)
before = status("VmRSS:")
initkit.materialize(model, "cpu")
param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"peak_increase": status("VmHWM:") - before, "param_bytes": param_bytes}))
"""


def materialize_peak_rss(config: GPT2Config) -> dict:
    """Materialize a meta GPT-2 in a fresh process; peak RSS increase and parameter bytes.
    The increase is measured from the current RSS before materialize: an upper bound."""
    args = json.dumps(config.__dict__)
    # From an empty directory: `python -c` puts the working directory first on sys.path, and a
    # source checkout there would shadow the installed initkit.
    with tempfile.TemporaryDirectory() as cwd:
        result = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, args], capture_output=True, text=True, check=True, cwd=cwd
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def traced_plan(model: nn.Module) -> InitPlan:
    """init_plan as on a model's first call: the torch.fx trace included (its cache cleared)."""
    activations.clear_cache()
    return init_plan(model)


def model_init_rows(budget_s: float = 2.0) -> list[dict]:
    """Rows for `python -m initkit bench`: GPT-2 small, initkit vs torch.nn.init, side by side, and
    init_plan with its trace cached vs traced. Each row: benchmark, initkit, torch, unit, ratio
    (torch / initkit for times), and for the plan row `labels` naming its two columns."""
    config = GPT2Config()
    model = gpt2_on_meta(config)
    plan = materialize(model, "cpu")
    t = median_seconds({"initkit": lambda: initialize(model), "torch": lambda: torch_reinit(model, plan)}, budget_s)
    initkit_s, torch_s = t["initkit"], t["torch"]
    p = median_seconds({"cached": lambda: init_plan(model), "traced": lambda: traced_plan(model)}, budget_s / 4)
    rss = materialize_peak_rss(config)
    params = sum(p.numel() for p in model.parameters())
    return [
        {
            "benchmark": f"initialize GPT-2 small ({params / 1e6:.0f}M params, {len(plan)} tensors)",
            "initkit": initkit_s,
            "torch": torch_s,
            "unit": "s",
            "ratio": torch_s / initkit_s,
        },
        {
            "benchmark": "init_plan GPT-2 small (the fx trace kept per model)",
            "initkit": p["cached"],
            "torch": p["traced"],
            "unit": "s",
            "ratio": p["traced"] / p["cached"],
            "labels": ("trace cached", "traced"),
        },
        {
            "benchmark": "materialize GPT-2 small: peak RSS increase / parameter bytes",
            "initkit": rss["peak_increase"] / 1e6,
            "torch": rss["param_bytes"] / 1e6,
            "unit": "MB",
            "ratio": rss["peak_increase"] / rss["param_bytes"],
        },
    ]


def reinit_recorded(model: nn.Module, backend: str) -> None:
    """initialize(policy="recorded"): the model's own scheme, a new seed. On the "torch" backend
    every recipe runs as torch.nn.init would run it, one call per parameter: the baseline."""
    with use_backend(backend):
        deferred.initialize(model, policy="recorded")


def recorded_reinit_rows(models=("gpt2", "bert"), budget_s: float = 2.0) -> list[dict]:
    """Re-initializing a real model (own_init.MODELS, built by deferred_init + materialize) with its
    own recorded scheme: initkit's fused fill vs the same recipes with torch.nn.init. Models whose
    library does not import are left out."""
    rows = []
    for name in models:
        try:
            fn = own_init.constructor(name)
        except ImportError:
            continue
        model = deferred.materialize(deferred.deferred_init(fn))
        params = sum(p.numel() for p in model.parameters())
        t = median_seconds({b: (lambda b=b: reinit_recorded(model, b)) for b in ("ext", "torch")}, budget_s)
        rows.append({
            "benchmark": f"re-init {own_init.MODELS[name][0]} ({params / 1e6:.0f}M params) with its own scheme",
            "initkit": t["ext"],
            "torch": t["torch"],
            "unit": "s",
            "ratio": t["torch"] / t["ext"],
        })
        del model
    return rows


def format_rows(rows: list[dict]) -> str:
    """The model rows as text, one line each."""
    lines = []
    for r in rows:
        if r["unit"] == "s":
            ours, theirs = r.get("labels", ("initkit", "torch.nn.init"))
            lines.append(
                f"{r['benchmark']}: {ours} {r['initkit'] * 1e3:.1f} ms, {theirs} {r['torch'] * 1e3:.1f} ms, "
                f"{r['ratio']:.1f}x faster"
            )
        else:
            lines.append(f"{r['benchmark']}: {r['initkit']:.1f} / {r['torch']:.1f} {r['unit']} = {r['ratio']:.3f}")
    return "\n".join(lines)
