"""initkit.initialize of a GPT-2-small-sized model (124M parameters, 148 tensors) vs the same
distributions with torch.nn.init, one call per parameter; and materialize's peak memory.

Smoke run: pytest benchmarks/bench_model_init.py --benchmark-disable (each body once).
Timing:    pytest benchmarks/bench_model_init.py --benchmark-only --benchmark-group-by=group
"""

import pytest
import torch

import initkit
from initkit.bench.gpt2 import GPT2Config, gpt2_on_meta
from initkit.bench.models import materialize_peak_rss, reinit_recorded, torch_reinit, traced_plan

IMPLS = ("initkit", "torch")


@pytest.fixture(scope="module")
def gpt2():
    """Built once per module: on meta, then materialized (no default init, no second copy)."""
    model = gpt2_on_meta()
    plan = initkit.materialize(model)
    return model, plan


@pytest.mark.parametrize("impl", IMPLS)
def test_initialize_gpt2_small(benchmark, gpt2, impl):
    model, plan = gpt2
    params = sum(p.numel() for p in model.parameters())
    benchmark.group = f"model-init-gpt2-small-cpu-float32-threads{torch.get_num_threads()}"
    benchmark.extra_info.update(params=params, tensors=len(plan), torch=torch.__version__, backend=initkit.backend())
    if impl == "initkit":
        benchmark.pedantic(initkit.initialize, args=(model,), rounds=3, warmup_rounds=1)
    else:
        benchmark.pedantic(torch_reinit, args=(model, plan), rounds=3, warmup_rounds=1)
    # checked outside the timed region: the layer norms are back to 1 and the weights look drawn
    assert torch.equal(model.ln_f.weight, torch.ones_like(model.ln_f.weight))
    assert float(model.wte.weight.detach().std()) == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize("trace", ["cached", "traced"])
def test_init_plan_gpt2_small(benchmark, gpt2, trace):
    """init_plan on an unchanged model (its torch.fx trace reused) vs on a first call (traced)."""
    model, plan = gpt2
    benchmark.group = "init-plan-gpt2-small"
    benchmark.extra_info.update(tensors=len(plan), torch=torch.__version__)
    fn = initkit.init_plan if trace == "cached" else traced_plan
    assert benchmark.pedantic(fn, args=(model,), rounds=5, warmup_rounds=1) == plan


def test_materialize_peak_rss_gpt2_small():
    measured = materialize_peak_rss(GPT2Config())
    ratio = measured["peak_increase"] / measured["param_bytes"]
    assert ratio <= 1.1, measured


@pytest.mark.parametrize("backend", ["ext", "torch"])
@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_reinit_with_the_models_own_scheme(benchmark, name, backend):
    """initialize(policy="recorded") of a real HF model: initkit's fused fill ("ext") vs the same
    recipes through torch.nn.init, one call per parameter ("torch")."""
    from initkit.bench import own_init

    try:
        fn = own_init.constructor(name)
    except ImportError as error:
        pytest.skip(f"needs transformers ({error})")
    model = initkit.materialize(initkit.deferred_init(fn))
    benchmark.group = f"reinit-own-scheme-{name}-threads{torch.get_num_threads()}"
    benchmark.pedantic(reinit_recorded, args=(model, backend), rounds=3, warmup_rounds=1)
    assert all(torch.isfinite(p).all() for p in model.parameters())
