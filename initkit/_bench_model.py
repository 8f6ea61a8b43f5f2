"""Model-init benchmark: a GPT-2-shaped model built from a Hugging Face-style config (no
transformers needed), initkit.initialize vs torch.nn.init per parameter with the same
distributions, and materialize's peak memory. Used by benchmarks/bench_model_init.py and by
`python -m initkit bench` (model_init_rows).
"""

import json
import statistics
import subprocess
import tempfile
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import _model, _torch_ref


@dataclass
class GPT2Config:
    """The fields of transformers.GPT2Config this model uses (GPT-2 small by default)."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    initializer_range: float = 0.02


class GPT2Attention(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x):
        batch, length, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(batch, length, width))


class GPT2MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = GPT2Attention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = GPT2MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2LMHeadModel(nn.Module):
    """GPT-2 with a language-model head tied to the token embedding, built the Hugging Face way:
    __init__(config), then post_init() runs _init_weights on every module (free on meta)."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList(GPT2Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def post_init(self):
        self.apply(self._init_weights)
        self.lm_head.weight = self.wte.weight

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()
        if isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def forward(self, input_ids):
        positions = torch.arange(input_ids.size(1), device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def gpt2_on_meta(config: GPT2Config | None = None) -> GPT2LMHeadModel:
    with torch.device("meta"):
        return GPT2LMHeadModel(config or GPT2Config())


def torch_reinit(model: nn.Module, plan: _model.InitPlan) -> None:
    """The baseline: the plan's distributions with torch.nn.init, one call per parameter."""
    params = dict(model.named_parameters())
    fills = {
        "uniform": _torch_ref.uniform_,
        "normal": _torch_ref.normal_,
        "trunc_normal": _torch_ref.trunc_normal_,
        "constant": _torch_ref.constant_,
    }
    with torch.no_grad():
        for row in plan:
            fills[row.kind](params[row.name], *row.params)


def median_time(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


_RSS_SCRIPT = """
import json, sys
import initkit
from initkit._bench_model import GPT2Config, gpt2_on_meta

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


def model_init_rows(repeats: int = 5) -> list[dict]:
    """Rows for `python -m initkit bench`: GPT-2 small, initkit vs torch.nn.init, side by side.
    Each row: benchmark, initkit, torch, unit, ratio (torch / initkit for times)."""
    config = GPT2Config()
    model = gpt2_on_meta(config)
    plan = _model.materialize(model, "cpu")
    initkit_s = median_time(lambda: _model.initialize(model), repeats)
    torch_s = median_time(lambda: torch_reinit(model, plan), repeats)
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
            "benchmark": "materialize GPT-2 small: peak RSS increase / parameter bytes",
            "initkit": rss["peak_increase"] / 1e6,
            "torch": rss["param_bytes"] / 1e6,
            "unit": "MB",
            "ratio": rss["peak_increase"] / rss["param_bytes"],
        },
    ]


def format_rows(rows: list[dict]) -> str:
    """The model rows as text, one line each."""
    lines = []
    for r in rows:
        if r["unit"] == "s":
            lines.append(
                f"{r['benchmark']}: initkit {r['initkit'] * 1e3:.1f} ms, torch.nn.init {r['torch'] * 1e3:.1f} ms, "
                f"{r['ratio']:.1f}x faster"
            )
        else:
            lines.append(f"{r['benchmark']}: {r['initkit']:.1f} / {r['torch']:.1f} {r['unit']} = {r['ratio']:.3f}")
    return "\n".join(lines)
