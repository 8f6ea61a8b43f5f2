"""Real models' own init (transformers, timm, torchvision; configs only, nothing downloaded):
patch() construction and deferred_init + materialize give every parameter the law plain construction
gives, the same constants and fixed rows, the same ties and buffers, and a working forward.

The libraries are optional (tests/requirements-models.txt); their tests skip when one is missing,
except under INITKIT_REQUIRE_MODEL_LIBS=1 (CI's venv that has them), where a missing one fails.
"""

import importlib
import os

import pytest
import torch
from scipy import stats

import initkit

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _lib(name):
    try:
        return importlib.import_module(name)
    except Exception as error:  # ImportError, or torchvision's operator errors under a mismatched torch
        if os.environ.get("INITKIT_REQUIRE_MODEL_LIBS") == "1":
            pytest.fail(f"INITKIT_REQUIRE_MODEL_LIBS=1 but {name} does not import: {error}")
        pytest.skip(f"{name} unavailable: {error}")


def gpt2():
    t = _lib("transformers")
    return t.GPT2LMHeadModel, (t.GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=1000, n_positions=64),)


def bert():
    t = _lib("transformers")
    cfg = t.BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, vocab_size=1000)
    return t.BertForMaskedLM, (cfg,)


def llama():
    t = _lib("transformers")
    cfg = t.LlamaConfig(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=1000, max_position_embeddings=64,
    )  # fmt: skip
    return t.LlamaForCausalLM, (cfg,)


def hf_vit():
    t = _lib("transformers")
    cfg = t.ViTConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                      image_size=32, patch_size=8, num_labels=10)  # fmt: skip
    return t.ViTForImageClassification, (cfg,)


def siglip_vision():
    t = _lib("transformers")
    cfg = t.SiglipVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                               image_size=32, patch_size=8)  # fmt: skip
    return t.SiglipVisionModel, (cfg,)


def timm_vit():
    timm = _lib("timm")
    return (lambda: timm.create_model("vit_base_patch16_224", pretrained=False, depth=2, img_size=64, num_classes=10)), ()


def timm_convnext():
    timm = _lib("timm")
    return (lambda: timm.create_model("convnext_tiny", pretrained=False, depths=(1, 1, 2, 1), num_classes=10)), ()


def resnet50():
    tv = _lib("torchvision")
    return (lambda: tv.models.resnet50(weights=None, num_classes=10)), ()


def _text_input(model):
    return {"input_ids": torch.randint(3, 1000, (2, 16))}


def _image_input(model):
    size = getattr(getattr(model, "config", None), "image_size", None) or 64
    return {"pixel_values": torch.randn(2, 3, size, size)}


def _plain_image(model):
    return (torch.randn(2, 3, 64, 64),)


MODELS = {
    "gpt2": (gpt2, _text_input),
    "bert": (bert, _text_input),
    "llama": (llama, _text_input),
    "hf_vit": (hf_vit, _image_input),
    "siglip_vision": (siglip_vision, _image_input),
    "timm_vit_b": (timm_vit, _plain_image),
    "timm_convnext_t": (timm_convnext, _plain_image),
    "resnet50": (resnet50, _plain_image),
}


def _ties(model):
    groups = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return sorted(sorted(names) for names in groups.values() if len(names) > 1)


def _sample(t, n=20000, seed=0):
    flat = t.detach().flatten().double()
    if flat.numel() > n:
        flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))[:n]]
    return flat.numpy()


def assert_same_init(plain, other, recipes=None):
    """Every parameter of `other` has the law of `plain`'s: exact for constant tensors and constant
    rows (padding rows), two-sample KS plus mean/std otherwise, and the recipe's bounds when bounded."""
    assert _ties(other) == _ties(plain)
    plain_buffers = dict(plain.named_buffers(remove_duplicate=False))
    other_buffers = dict(other.named_buffers(remove_duplicate=False))
    assert plain_buffers.keys() == other_buffers.keys()
    for name, buffer in plain_buffers.items():
        assert torch.equal(buffer, other_buffers[name]), name
    params = dict(other.named_parameters())
    assert params.keys() == dict(plain.named_parameters()).keys()
    for name, p in plain.named_parameters():
        q = params[name].detach()
        p = p.detach()
        assert q.shape == p.shape and q.dtype == p.dtype and not q.is_meta, name
        assert torch.isfinite(q).all(), name
        if p.numel() == 0:
            continue
        if torch.equal(p.min(), p.max()):
            assert torch.equal(q, p), f"{name}: constant {p.flatten()[0].item()} expected"
            continue
        if p.dim() >= 2:  # fixed rows (padding_idx): constant rows of the plain model, kept exactly
            rows = p.flatten(1)
            fixed = (rows.min(1).values == rows.max(1).values).nonzero().flatten()
            if 0 < len(fixed) < len(rows):
                assert torch.equal(q.flatten(1)[fixed], rows[fixed]), f"{name}: fixed rows {fixed.tolist()}"
                keep = torch.ones(len(rows), dtype=torch.bool)
                keep[fixed] = False
                p, q = rows[keep], q.flatten(1)[keep]
        result = stats.ks_2samp(_sample(p), _sample(q, seed=1))
        assert result.pvalue > 1e-6, f"{name}: KS p={result.pvalue:.2e}"
        n = min(p.numel(), q.numel())
        std = p.double().std().item()
        assert abs(q.double().mean().item() - p.double().mean().item()) < 6 * std / n**0.5 + 1e-7, name
        assert abs(q.double().std().item() / std - 1) < 6 * (2 / n) ** 0.5 + 0.02, name
        recipe = (recipes or {}).get(name)
        base = getattr(recipe, "base", None)
        if base is not None and getattr(base, "kind", None) in ("uniform", "trunc_normal"):
            low, high = base.params[-2:]
            for t in (p, q):
                assert low <= t.min().item() and t.max().item() <= high, f"{name}: outside [{low}, {high}]"


@pytest.fixture(params=list(MODELS))
def model_case(request):
    build, make_input = MODELS[request.param]
    fn, args = build()
    return fn, args, make_input


def _forward(model, inputs):
    model.eval()
    with torch.no_grad():
        out = model(*inputs) if isinstance(inputs, tuple) else model(**inputs)
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def test_deferred_init_matches_plain_construction(model_case, backend):
    fn, args, make_input = model_case
    torch.manual_seed(0)
    plain = fn(*args)
    torch.manual_seed(1)
    deferred = initkit.deferred_init(fn, *args)
    assert all(p.is_meta for p in deferred.parameters())
    assert all(not b.is_meta for b in deferred.buffers())
    recipes = {r.name: r.record for r in deferred._initkit_deferred.recipes}
    assert initkit.materialize(deferred) is deferred
    assert_same_init(plain, deferred, recipes)
    inputs = make_input(plain)
    expected, got = _forward(plain, inputs), _forward(deferred, inputs)
    assert got.shape == expected.shape and torch.isfinite(got).all()


def test_patch_construction_matches_plain_construction(model_case, backend):
    fn, args, _ = model_case
    torch.manual_seed(0)
    plain = fn(*args)
    torch.manual_seed(1)
    with initkit.patch():
        patched = fn(*args)
    assert_same_init(plain, patched)


def test_recorded_reinit_keeps_the_law(backend):
    fn, args = gpt2()
    torch.manual_seed(0)
    plain = fn(*args)
    model = initkit.materialize(initkit.deferred_init(fn, *args))
    before = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    initkit.initialize(model, policy="recorded")
    assert not torch.equal(before, model.transformer.h[0].attn.c_attn.weight)
    assert_same_init(plain, model)


def test_the_check_sees_a_different_scheme():
    """initkit's "auto" policy replaces GPT-2's scheme (wte N(0, 1), not N(0, 0.02)): the check must say so."""
    fn, args = gpt2()
    torch.manual_seed(0)
    plain = fn(*args)
    other = fn(*args)
    initkit.initialize(other, policy="auto")
    with pytest.raises(AssertionError, match="transformer"):
        assert_same_init(plain, other)


def test_patch_covers_transformers_table_and_keeps_its_guard(ext):
    _lib("transformers")
    from transformers import initialization as hf_init

    from initkit._ext import torch_fallback

    table = dict(hf_init.TORCH_INIT_FUNCTIONS)
    done = torch.nn.Parameter(torch.zeros(100))
    done._is_hf_initialized = True
    fresh = torch.empty(100)
    torch.manual_seed(2)
    with initkit.patch():
        assert hf_init.TORCH_INIT_FUNCTIONS["normal_"] is not table["normal_"]
        hf_init.normal_(done, std=1.0)  # skipped by transformers' guard, as unpatched
        hf_init.normal_(fresh, std=1.0)
    assert hf_init.TORCH_INIT_FUNCTIONS == table and table["normal_"] is torch_fallback.normal_
    assert torch.equal(done, torch.zeros(100))
    torch.manual_seed(2)
    assert torch.equal(fresh, initkit.normal_(torch.empty(100), std=1.0))  # initkit's fill, same key


def test_patch_covers_timms_functions_where_bound(ext):
    _lib("timm")
    import timm.layers.weight_init as weight_init
    import timm.models.vision_transformer as vit

    bound_here = vit.__dict__.get("trunc_normal_")
    before = weight_init.trunc_normal_
    with initkit.patch():
        assert weight_init.trunc_normal_ is not before
        if bound_here is before:
            assert vit.trunc_normal_ is weight_init.trunc_normal_
        torch.manual_seed(3)
        got = weight_init.trunc_normal_tf_(torch.empty(1000), mean=1.0, std=2.0, a=-1.0, b=1.0)
    assert weight_init.trunc_normal_ is before and vit.__dict__.get("trunc_normal_") is bound_here
    torch.manual_seed(3)
    assert torch.equal(got, initkit.trunc_normal_(torch.empty(1000), 1.0, 2.0, -1.0, 3.0))


def _outcome(call):
    """("ok", the return value's type) or ("raised", the exception's type)."""
    try:
        return "ok", type(call()).__name__
    except Exception as error:  # noqa: BLE001  (comparing whatever each raises)
        return "raised", type(error).__name__


TIMM_CALLS_TIMM_DECIDES = {  # timm's result or error, unchanged by patch()
    "variance_scaling_ scale 0 (zeros)": ("variance_scaling_", (0.0,)),
    "variance_scaling_ scale 0 truncated (zeros)": ("variance_scaling_", (0.0, "fan_in", "truncated_normal")),
    "variance_scaling_ negative scale": ("variance_scaling_", (-1.0,)),
    "variance_scaling_ unknown mode": ("variance_scaling_", (1.0, "FAN_IN")),
    "variance_scaling_ unknown distribution": ("variance_scaling_", (1.0, "fan_in", "cauchy")),
    "trunc_normal_ with a generator (timm takes none)": ("trunc_normal_", (0.0, 1.0, -2.0, 2.0, None)),
    "trunc_normal_tf_ bounds a > b": ("trunc_normal_tf_", (0.0, 1.0, 2.0, -2.0)),
    "trunc_normal_tf_ std 0 (the mean)": ("trunc_normal_tf_", (0.5, 0.0)),
}


@pytest.mark.parametrize("name, args", TIMM_CALLS_TIMM_DECIDES.values(), ids=TIMM_CALLS_TIMM_DECIDES)
def test_patch_keeps_timms_results_and_errors(backend, name, args):
    _lib("timm")
    import timm.layers.weight_init as weight_init

    plain, patched = torch.full((16, 8), 7.0), torch.full((16, 8), 7.0)
    expected = _outcome(lambda: getattr(weight_init, name)(plain, *args))
    with initkit.patch():
        assert _outcome(lambda: getattr(weight_init, name)(patched, *args)) == expected
    if expected[0] == "ok" and torch.unique(plain).numel() == 1:  # zeros for scale 0, the mean for std 0
        assert torch.equal(patched, plain)


def test_patch_timm_trunc_normal_tf_with_a_negative_std(ext):
    # timm multiplies the N(0, 1) cut to [a, b] by std: a negative one reflects the interval
    _lib("timm")
    import timm.layers.weight_init as weight_init

    torch.manual_seed(4)
    with initkit.patch():
        got = weight_init.trunc_normal_tf_(torch.empty(1000), mean=1.0, std=-0.5, a=-1.0, b=3.0)
    torch.manual_seed(4)
    assert torch.equal(got, initkit.trunc_normal_(torch.empty(1000), 1.0, 0.5, -0.5, 1.5))
