"""A model's own init at real sizes: plain construction, initkit.patch() construction,
deferred_init + materialize, and the floor (meta construction + allocation + one zero_), one
pytest-benchmark group per model; and the peak RSS of deferred_init + materialize.

Smoke run: pytest benchmarks/bench_model_own_init.py --benchmark-disable (each body once).
Timing:    pytest benchmarks/bench_model_own_init.py --benchmark-only --benchmark-group-by=group
The ratios in one table: python -m initkit.bench.own_init [model,model,...]
Models whose library is missing skip (fail under INITKIT_REQUIRE_MODEL_LIBS=1).
INITKIT_BENCH_MODELS=gpt2,llama_1b,... picks the models (default: all but the Llama-1B shape).
"""

import os

import pytest
import torch

import initkit
from initkit.bench import own_init

# The Llama-1B shape (5 GB of float32 parameters, ~25 s per plain construction here) only on request.
MODELS = os.environ.get("INITKIT_BENCH_MODELS", "").split(",") if os.environ.get("INITKIT_BENCH_MODELS") else [
    name for name in own_init.DEFAULT_MODELS if name != "llama_1b"
]


def _constructor(name):
    try:
        return own_init.constructor(name)
    except ImportError as error:
        if os.environ.get("INITKIT_REQUIRE_MODEL_LIBS") == "1":
            pytest.fail(f"INITKIT_REQUIRE_MODEL_LIBS=1 but {name}'s library is missing: {error}")
        pytest.skip(f"{name}: {error}")


@pytest.mark.parametrize("way", own_init.WAYS)
@pytest.mark.parametrize("name", MODELS)
def test_own_init(benchmark, name, way):
    fn = _constructor(name)
    benchmark.group = f"own-init-{name}-cpu-threads{torch.get_num_threads()}"
    benchmark.extra_info.update(torch=torch.__version__, backend=initkit.backend())
    model = benchmark.pedantic(own_init.build, args=(way, fn), rounds=3, warmup_rounds=1)
    assert all(not p.is_meta for p in model.parameters())


@pytest.mark.parametrize("name", ["gpt2"])
def test_deferred_peak_rss(name):
    _constructor(name)
    measured = own_init.peak_rss(name)
    assert measured["peak_increase"] <= 1.1 * measured["param_bytes"], measured
