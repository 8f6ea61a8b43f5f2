"""A model's own init, four ways, at real sizes: plain construction (torch's samplers),
`initkit.patch()` construction, `deferred_init` + `materialize`, and the floor (meta-device
construction + allocation + one `zero_` touch per parameter); plus the peak RSS of deferred
construction + materialize over the parameter bytes, in a fresh process.

Used by benchmarks/bench_model_own_init.py and `initkit bench` (`own_init_rows`). The libraries
(transformers, timm, torchvision) are optional: models whose library does not import are left out.
"""

import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile

import torch

import initkit
from initkit.model.materialize import allocate

from .timing import median_seconds


def _transformers(name: str, config_name: str, **config):
    import transformers

    return lambda: getattr(transformers, name)(getattr(transformers, config_name)(**config))


def _timm(name: str):
    import timm

    return lambda: timm.create_model(name, pretrained=False)


def _resnet50():
    import torchvision

    return lambda: torchvision.models.resnet50(weights=None)


# name -> (description, factory returning a zero-argument constructor)
MODELS = {
    "gpt2": ("HF GPT-2 small", lambda: _transformers("GPT2LMHeadModel", "GPT2Config")),
    "bert": ("HF BERT-base (MLM)", lambda: _transformers("BertForMaskedLM", "BertConfig")),
    "hf_vit": ("HF ViT-B/16", lambda: _transformers("ViTForImageClassification", "ViTConfig")),
    "siglip_vision": ("HF SigLIP vision B/16", lambda: _transformers("SiglipVisionModel", "SiglipVisionConfig")),
    "llama_1b": (
        "HF Llama, 1B shape",
        lambda: _transformers(
            "LlamaForCausalLM", "LlamaConfig", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
            num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
        ),
    ),  # fmt: skip
    "resnet50": ("torchvision ResNet-50", _resnet50),
    "timm_vit_b": ("timm ViT-B/16", lambda: _timm("vit_base_patch16_224")),
    "timm_convnext_t": ("timm ConvNeXt-T", lambda: _timm("convnext_tiny")),
}
DEFAULT_MODELS = ("gpt2", "bert", "hf_vit", "siglip_vision", "resnet50", "timm_vit_b", "timm_convnext_t", "llama_1b")
WAYS = ("plain", "patch", "deferred", "floor")


def constructor(name: str):
    """The zero-argument constructor of benchmark model `name` (ImportError if its library is missing)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return MODELS[name][1]()


@contextlib.contextmanager
def _linspace_on_cpu():
    # As transformers' meta_device_safe_creation_ops: constructors call .item() on linspace results
    # (drop-path schedules), which the meta device cannot answer.
    original = torch.linspace

    def linspace(*args, **kwargs):
        kwargs.setdefault("device", "cpu")
        return original(*args, **kwargs)

    torch.linspace = linspace
    try:
        yield
    finally:
        torch.linspace = original


def floor_meta(fn):
    with torch.device("meta"), _linspace_on_cpu():
        return fn()


def floor(fn):
    """Meta construction + allocation + one zero_ per parameter: what any init costs at least."""
    model = floor_meta(fn)
    allocate(model, torch.device("cpu"))  # like to_empty, but keeps ties
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
    return model


def build(way: str, fn):
    if way == "plain":
        return fn()
    if way == "patch":
        with initkit.patch():
            return fn()
    if way == "deferred":
        return initkit.materialize(initkit.deferred_init(fn))
    return floor(fn)


def time_ways(fn, repeats: int = 3) -> dict[str, float]:
    """Median wall seconds of each way, the ways interleaved in every round (timing.py)."""
    return median_seconds({way: (lambda way=way: build(way, fn)) for way in WAYS}, 0.0, repeats, repeats)


_RSS_SCRIPT = """
import json, sys
from initkit.bench.own_init import constructor, peak_rss_in_this_process
print(json.dumps(peak_rss_in_this_process(constructor(sys.argv[1]))))
"""


def _status(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def peak_rss_in_this_process(fn) -> dict:
    """deferred_init + materialize of fn(); RSS peak increase over the RSS before (an upper bound).
    A meta-device construction first imports what the constructor imports lazily (transformers
    loads a model's module on first use), so imported code is not counted as init memory."""
    floor_meta(fn)
    gc.collect()
    before = _status("VmRSS:")
    model = initkit.materialize(initkit.deferred_init(fn))
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"peak_increase": _status("VmHWM:") - before, "param_bytes": param_bytes}


def peak_rss(name: str) -> dict:
    """peak_rss_in_this_process for model `name`, in a fresh process (from an empty directory, so
    the installed initkit is imported, not a source tree in the working directory)."""
    with tempfile.TemporaryDirectory() as cwd:
        result = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, name], capture_output=True, text=True, check=True, cwd=cwd
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(name: str, repeats: int = 3, rss: bool = True) -> dict:
    """One model's row: times of the four ways, speed-ups over plain, and the RSS ratio."""
    fn = constructor(name)
    model = initkit.deferred_init(fn)
    params = sum(p.numel() for p in model.parameters())
    del model
    times = time_ways(fn, repeats)
    row = {"model": name, "description": MODELS[name][0], "params": params, **{f"{w}_s": t for w, t in times.items()}}
    for way in ("patch", "deferred", "floor"):
        row[f"{way}_x"] = times["plain"] / times[way]
    row["deferred_vs_patch"] = times["patch"] / times["deferred"]
    row["threads"] = torch.get_num_threads()
    if rss:
        measured = peak_rss(name)
        row["rss_ratio"] = measured["peak_increase"] / measured["param_bytes"]
    return row


def own_init_rows(models=DEFAULT_MODELS, repeats: int = 3, rss: bool = True) -> list[dict]:
    """Rows for `initkit bench`: every model in `models` whose library imports, measured in turn."""
    rows = []
    for name in models:
        try:
            constructor(name)
        except ImportError:
            continue
        rows.append(measure(name, repeats, rss))
    return rows


def format_rows(rows: list[dict]) -> str:
    """A Markdown table of own_init_rows: speed-ups over plain construction (wall time)."""
    lines = [
        "| model | params | threads | plain s | patch() | deferred+materialize | floor | deferred / patch() "
        "| peak RSS / params |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rss = f"{r['rss_ratio']:.3f}" if "rss_ratio" in r else "--"
        ratios = {k: f"{r[k + '_x']:.1f}x" for k in ("patch", "deferred", "floor")}
        lines.append(
            f"| {r['description']} | {r['params'] / 1e6:.0f}M | {r['threads']} | {r['plain_s']:.2f} "
            f"| {ratios['patch']} | {ratios['deferred']} | {ratios['floor']} "
            f"| {r['deferred_vs_patch']:.2f} | {rss} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # python -m initkit.bench.own_init [model,model,...] [threads]
    chosen = sys.argv[1].split(",") if len(sys.argv) > 1 and sys.argv[1] else DEFAULT_MODELS
    if len(sys.argv) > 2:
        torch.set_num_threads(int(sys.argv[2]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, backend {initkit.backend()}", file=sys.stderr)
    rows = []
    for model_name in chosen:
        new_rows = own_init_rows([model_name])
        rows += new_rows
        print(json.dumps(new_rows[0]) if new_rows else f"{model_name}: library missing", file=sys.stderr, flush=True)
    print(format_rows(rows))
