"""Drop-in replacement for torch.nn.init, plus variance scaling and LeCun schemes.

Every function has torch.nn.init's name, signature, defaults, return value, warnings and
exception types. The random fills (uniform, normal, truncated normal and every scheme built on
them) run as one fused, multi-threaded pass of initkit's Philox engine: the bound or std is
computed once here and applied inside the kernel. Same seed, same values, for any thread count.

RNG: each call draws a 64-bit Philox key from torch's CPU generator (or `generator=`), so
torch.manual_seed() makes initkit reproducible and consecutive calls differ. On the "torch"
backend the same functions run torch's own samplers and give exactly torch.nn.init's values.
"""

import warnings

import torch
from torch import Tensor

from . import _backend, _load, _schemes, _torch_ref
from ._schemes import FillSpec

__all__ = [
    "calculate_gain",
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
    "variance_scaling_",
    "lecun_normal_",
    "lecun_uniform_",
    "multi_fill_",
    # Deprecated aliases, as in torch.nn.init
    "uniform",
    "normal",
    "constant",
    "eye",
    "dirac",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "sparse",
]

# Fill kinds, as numbered by the multi_fill op schema (csrc/initkit.cpp).
FILL_KINDS = {"uniform": 0, "normal": 1, "trunc_normal": 2}
_EXT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_MAX_SEED = 2**63 - 1  # keys are drawn uniformly from [0, 2^63 - 1)

calculate_gain = _torch_ref.calculate_gain
constant_ = _torch_ref.constant_
ones_ = _torch_ref.ones_
zeros_ = _torch_ref.zeros_
eye_ = _torch_ref.eye_
dirac_ = _torch_ref.dirac_
orthogonal_ = _torch_ref.orthogonal_
sparse_ = _torch_ref.sparse_


# ---- the three primitive fills ------------------------------------------------------------


def _runs_on_ext(tensor: Tensor) -> bool:
    if _backend.backend() != "ext" or tensor.dtype not in _EXT_DTYPES:
        return False  # the torch path raises torch's own errors for other dtypes
    if torch.overrides.has_torch_function_unary(tensor):
        return False  # tensor subclasses (DTensor, ...) keep torch's own handling
    device = tensor.device.type
    return device in ("cpu", "meta") or (device == "cuda" and _load.ext_has_cuda())


def new_seed(generator: torch.Generator | None = None) -> Tensor:
    """A fresh 63-bit Philox key from `generator` (default: torch's CPU generator), as the
    one-element int64 CPU tensor the fill ops take. Traceable by torch.compile."""
    device = "cpu" if generator is None else generator.device
    seed = torch.randint(0, _MAX_SEED, (), dtype=torch.int64, device=device, generator=generator)
    return seed.cpu()


def _uniform(tensor: Tensor, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    if not _runs_on_ext(tensor):
        return _torch_ref.uniform_(tensor, low, high, generator=generator)
    with torch.no_grad():
        torch.ops.initkit.uniform_fill(tensor, float(low), float(high), new_seed(generator))
    return tensor


def _normal(tensor: Tensor, mean: float, std: float, generator: torch.Generator | None) -> Tensor:
    if not _runs_on_ext(tensor):
        return _torch_ref.normal_(tensor, mean, std, generator=generator)
    with torch.no_grad():
        torch.ops.initkit.normal_fill(tensor, float(mean), float(std), new_seed(generator))
    return tensor


def _trunc_normal(
    tensor: Tensor, mean: float, std: float, a: float, b: float, generator: torch.Generator | None
) -> Tensor:
    if not std >= 0:  # torch.nn.init.trunc_normal_ silently accepts these and returns garbage
        raise RuntimeError(f"trunc_normal_ expects std >= 0.0, but found std {std}")
    if not _runs_on_ext(tensor):
        return _torch_ref.trunc_normal_(tensor, mean, std, a, b, generator=generator)
    if (mean < a - 2 * std) or (mean > b + 2 * std):
        warnings.warn(
            "mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
            "The distribution of values may be incorrect.",
            stacklevel=3,
        )
    with torch.no_grad():
        torch.ops.initkit.trunc_normal_fill(tensor, float(mean), float(std), float(a), float(b), new_seed(generator))
    return tensor


_PRIMITIVES = {"uniform": _uniform, "normal": _normal, "trunc_normal": _trunc_normal}


# ---- torch.nn.init surface ------------------------------------------------------------------


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Fill `tensor` with U(a, b). Equivalent PyTorch: torch.nn.init.uniform_."""
    return _uniform(tensor, a, b, generator)


def normal_(
    tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Fill `tensor` with N(mean, std^2). Equivalent PyTorch: torch.nn.init.normal_."""
    return _normal(tensor, mean, std, generator)


def trunc_normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fill `tensor` with N(mean, std^2) truncated to [a, b] (absolute bounds, as torch).

    The extension samples the exact truncated law in one pass, for any interval, std and dtype:
    rejection from the normal fill for wide intervals, a uniform or exponential proposal for
    narrow and far-tail ones, the inverse CDF otherwise (chosen per call); no clamping pile-up at
    the bounds and no temporaries.
    Equivalent PyTorch: torch.nn.init.trunc_normal_.
    """
    return _trunc_normal(tensor, mean, std, a, b, generator)


# torch.nn.init's private fan helpers, which model code often calls through the module.
_calculate_fan_in_and_fan_out = _schemes.fan_in_and_fan_out
_calculate_correct_fan = _schemes.correct_fan


def _fill(tensor: Tensor, spec: FillSpec, generator: torch.Generator | None) -> Tensor:
    """Run the primitive fill a scheme's FillSpec describes (bound/std computed once, one pass)."""
    return _PRIMITIVES[spec.kind](tensor, *spec.params, generator)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)). Equivalent PyTorch: torch.nn.init.xavier_uniform_."""
    return _fill(tensor, _schemes.xavier_uniform(tensor, gain), generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)). Equivalent PyTorch: torch.nn.init.xavier_normal_."""
    return _fill(tensor, _schemes.xavier_normal(tensor, gain), generator)


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """U(-bound, bound) with bound = gain * sqrt(3 / fan_mode). Equivalent PyTorch: torch.nn.init.kaiming_uniform_."""
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    return _fill(tensor, _schemes.kaiming_uniform(tensor, a, mode, nonlinearity), generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """N(0, std^2) with std = gain / sqrt(fan_mode). Equivalent PyTorch: torch.nn.init.kaiming_normal_."""
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    return _fill(tensor, _schemes.kaiming_normal(tensor, a, mode, nonlinearity), generator)


# ---- additions: variance scaling (JAX/TF semantics) and LeCun --------------------------------


def variance_scaling_(
    tensor: Tensor,
    scale: float = 1.0,
    mode: str = "fan_in",
    distribution: str = "truncated_normal",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Samples with variance scale / fan, as jax.nn.initializers.variance_scaling.

    fan is fan_in, fan_out or their mean (torch's fan rule). "truncated_normal" draws from
    N(0, s^2) truncated to [-2s, 2s] with s = sqrt(scale / fan) / 0.87962566103423978, so the
    samples' variance is exactly scale / fan; "uniform" uses U(-sqrt(3 scale / fan), +...).
    Equivalent JAX: jax.nn.initializers.variance_scaling(scale, mode, distribution).
    """
    spec = _schemes.variance_scaling(tensor, scale, mode, distribution)  # validates the arguments
    if tensor.numel() == 0:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    return _fill(tensor, spec, generator)


def lecun_normal_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """LeCun normal (SELU networks): truncated normal with variance 1 / fan_in, as jax.nn.initializers.lecun_normal."""
    return variance_scaling_(tensor, 1.0, "fan_in", "truncated_normal", generator)


def lecun_uniform_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """LeCun uniform: U(-sqrt(3 / fan_in), sqrt(3 / fan_in)), as jax.nn.initializers.lecun_uniform."""
    return variance_scaling_(tensor, 1.0, "fan_in", "uniform", generator)


# ---- many tensors at once -------------------------------------------------------------------


def multi_fill_(
    tensors: list[Tensor],
    fills: list[tuple[str, tuple[float, ...]]],
    generator: torch.Generator | None = None,
    *,
    seed: Tensor | None = None,
    first_stream: int = 0,
) -> list[Tensor]:
    """Fill many tensors in one pass: fills[i] = (kind, params) for tensors[i], with kind
    "uniform" (low, high), "normal" (mean, std) or "trunc_normal" (mean, std, a, b).

    On the extension this is one parallel region over all tensors (one op call); tensor i gets
    exactly what `torch.ops.initkit.<kind>_fill(tensors[i], *params, seed, stream=i)` gives for
    the one key drawn from `generator`. The torch backend fills them one by one.

    To fill one logical list in pieces (e.g. to report progress), pass every piece the same key
    (`seed=new_seed(generator)`) and `first_stream=` the index of its first tensor in the list.
    """
    if len(tensors) != len(fills):
        raise ValueError(f"multi_fill_: got {len(tensors)} tensors but {len(fills)} fills")
    kinds, flat = [], []
    for kind, params in fills:
        if kind not in FILL_KINDS:
            raise ValueError(f"multi_fill_: unknown fill kind {kind!r}; expected one of {list(FILL_KINDS)}")
        expected = 4 if kind == "trunc_normal" else 2
        if len(params) != expected:
            raise ValueError(f"multi_fill_: {kind} takes {expected} parameters, got {len(params)}")
        kinds.append(FILL_KINDS[kind])
        flat.extend(float(p) for p in params)
        flat.extend([0.0] * (4 - expected))
    if tensors and all(_runs_on_ext(t) for t in tensors):
        # One key for the whole list; tensors on different devices (a model split over devices,
        # meta parameters beside real ones) go in one op call per device, each keeping its stream,
        # so every tensor gets exactly the values of a single-device call.
        key = new_seed(generator) if seed is None else seed
        by_device: dict[torch.device, list[int]] = {}
        for i, t in enumerate(tensors):
            by_device.setdefault(t.device, []).append(i)
        with torch.no_grad():
            for rows in by_device.values():
                torch.ops.initkit.multi_fill(
                    [tensors[i] for i in rows],
                    [kinds[i] for i in rows],
                    [p for i in rows for p in flat[4 * i : 4 * i + 4]],
                    key,
                    [first_stream + i for i in rows],
                )
        return tensors
    for tensor, (kind, params) in zip(tensors, fills):
        _PRIMITIVES[kind](tensor, *params, generator)
    return tensors


# ---- deprecated aliases ---------------------------------------------------------------------


def _make_deprecate(meth):
    new_name = meth.__name__
    old_name = new_name[:-1]

    def deprecated_init(*args, **kwargs):
        warnings.warn(
            f"`nn.init.{old_name}` is now deprecated in favor of `nn.init.{new_name}`.", FutureWarning, stacklevel=2
        )
        return meth(*args, **kwargs)

    deprecated_init.__name__ = old_name
    deprecated_init.__doc__ = f"Deprecated alias of {new_name}."
    return deprecated_init


uniform = _make_deprecate(uniform_)
normal = _make_deprecate(normal_)
constant = _make_deprecate(constant_)
eye = _make_deprecate(eye_)
dirac = _make_deprecate(dirac_)
xavier_uniform = _make_deprecate(xavier_uniform_)
xavier_normal = _make_deprecate(xavier_normal_)
kaiming_uniform = _make_deprecate(kaiming_uniform_)
kaiming_normal = _make_deprecate(kaiming_normal_)
orthogonal = _make_deprecate(orthogonal_)
sparse = _make_deprecate(sparse_)
