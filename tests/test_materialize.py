"""initkit.materialize: meta-built models get storage and one init pass, never PyTorch's default init."""

import json
import textwrap

import pytest
import torch
from torch import nn

import initkit
from helpers import run_python
from initkit.bench.gpt2 import GPT2Config, GPT2LMHeadModel, gpt2_on_meta

TINY = GPT2Config(vocab_size=97, n_positions=16, n_embd=32, n_layer=2, n_head=4)


def test_materialize_hf_style_gpt2(backend):
    model = gpt2_on_meta(TINY)
    plan = initkit.materialize(model, "cpu", generator=torch.Generator().manual_seed(0))
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in model.parameters())
    assert model.lm_head.weight is model.wte.weight  # the tie survives
    assert len(plan) == len(list(model.parameters()))
    assert torch.equal(model.h[0].ln_1.weight, torch.ones(32))
    assert plan.row("h.0.mlp.c_fc.weight").scheme == "kaiming_normal"  # GELU follows
    logits = model(torch.randint(0, 97, (2, 5)))
    assert logits.shape == (2, 5, 97) and torch.isfinite(logits).all()


def test_materialize_equals_initialize_of_the_same_model(backend):
    """Same policy and generator seed: allocating on meta changes nothing about the values."""
    on_meta = gpt2_on_meta(TINY)
    initkit.materialize(on_meta, generator=torch.Generator().manual_seed(4))
    on_cpu = GPT2LMHeadModel(TINY)
    initkit.initialize(on_cpu, generator=torch.Generator().manual_seed(4))
    for (name, got), want in zip(on_meta.named_parameters(), on_cpu.parameters()):
        assert torch.equal(got, want), name


def test_materialize_never_runs_default_init(backend, monkeypatch):
    model = gpt2_on_meta(TINY)
    calls = []
    for cls in (nn.Linear, nn.Embedding, nn.LayerNorm):
        monkeypatch.setattr(cls, "reset_parameters", lambda self: calls.append(type(self).__name__))
    monkeypatch.setattr(GPT2LMHeadModel, "_init_weights", lambda self, module: calls.append("_init_weights"))
    monkeypatch.setattr(nn.init, "kaiming_uniform_", lambda *a, **k: calls.append("kaiming_uniform_"))
    initkit.materialize(model)
    assert calls == []


class _WithBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(4)
        self.linear = nn.Linear(4, 4)
        self.register_buffer("table", torch.arange(4.0, device="cpu"))  # real values even under meta
        self.register_buffer("scratch", torch.empty(3), persistent=False)

    def forward(self, x):
        return self.linear(self.bn(x)) + self.table


def test_materialize_buffers(backend):
    with torch.device("meta"):
        model = _WithBuffers()
    assert model.table.device.type == "cpu" and model.scratch.device.type == "meta"
    with pytest.warns(UserWarning, match=r"\['scratch'\].*zeroed"):
        initkit.materialize(model)
    assert torch.equal(model.bn.running_mean, torch.zeros(4)) and torch.equal(model.bn.running_var, torch.ones(4))
    assert int(model.bn.num_batches_tracked) == 0
    assert torch.equal(model.table, torch.arange(4.0))
    assert torch.equal(model.scratch, torch.zeros(3))


def test_materialize_bad_input():
    with torch.device("meta"):
        model = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="not 'meta'"):
        initkit.materialize(model, "meta")
    with pytest.raises(TypeError, match="expected an nn.Module"):
        initkit.materialize("model")
    with pytest.raises(ValueError, match="unknown init policy"):
        initkit.materialize(model, policy="he")
    assert model.weight.device.type == "meta"  # a bad policy leaves the model untouched
    with pytest.raises(ValueError, match="lazy"):
        initkit.materialize(nn.LazyLinear(3))


_PEAK_RSS = textwrap.dedent(
    """
    import json, torch, initkit
    from torch import nn

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    with torch.device("meta"):
        model = nn.Sequential(*[nn.Linear(4096, 4096) for _ in range(4)])  # 268 MB of float32
    before = status("VmRSS:")
    initkit.materialize(model)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"increase": status("VmHWM:") - before, "param_bytes": param_bytes}))
    """
)


def test_materialize_peak_memory_is_about_the_model_size():
    """Peak RSS above the pre-materialize RSS (an upper bound of the increase) within 1.1x the parameters."""
    result = run_python(_PEAK_RSS)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    ratio = measured["increase"] / measured["param_bytes"]
    assert 0.9 < ratio <= 1.1, measured  # below 0.9 would mean the fill did not touch the storage
