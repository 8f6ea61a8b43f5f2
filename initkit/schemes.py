"""Init schemes as data: what each scheme fills a tensor with, without filling it.

The one place for the schemes' formulas (torch.nn.init's fan rule, gains, Xavier, Kaiming and
JAX's variance scaling): initkit.init's scheme functions fill what these describe, and the
model-level plans report them. `fill_spec(scheme, tensor, **args)` turns a scheme name and its
torch.nn.init arguments into a `FillSpec`: the primitive fill (uniform / normal / trunc_normal)
or a constant / orthogonal fill, plus the fan, gain, std and bound for reports. Only the tensor's
shape is read, so meta tensors work.
"""

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ._ext.torch_fallback import calculate_gain

# std of a standard normal truncated to [-2, 2]: JAX/TF's truncated-normal correction.
TRUNCATED_NORMAL_STD = 0.87962566103423978
VARIANCE_SCALING_MODES = ("fan_in", "fan_out", "fan_avg")
VARIANCE_SCALING_DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")

# The random primitives multi_fill_ takes; "constant" and "orthogonal" are filled separately.
RANDOM_KINDS = ("uniform", "normal", "trunc_normal")


class FillSpec(NamedTuple):  # (a NamedTuple: 4x cheaper to build than a frozen dataclass, ~1 us)
    kind: str  # "uniform" | "normal" | "trunc_normal" | "constant" | "orthogonal"
    params: tuple[float, ...]  # multi_fill_ params for random kinds; (value,) or (gain,) otherwise
    fan_in: int | None = None
    fan_out: int | None = None
    gain: float | None = None
    std: float | None = None  # std of the values the fill produces
    bound: float | None = None  # |value| limit of uniform / truncated fills


def fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """torch.nn.init's fan rule: fan_in = size(1) * receptive field, fan_out = size(0) * receptive field."""
    shape = tensor.shape  # read once: every size() call is a C call (this runs on every scheme fill)
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
    receptive_field_size = 1
    for s in shape[2:]:
        receptive_field_size *= s
    return shape[1] * receptive_field_size, shape[0] * receptive_field_size


def _check_fan_mode(mode: str) -> str:
    mode = mode.lower()
    valid_modes = ["fan_in", "fan_out"]
    if mode not in valid_modes:
        raise ValueError(f"Mode {mode} not supported, please use one of {valid_modes}")
    return mode


def correct_fan(tensor: Tensor, mode: str) -> int:
    mode = _check_fan_mode(mode)
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _zero_mean(std: float, normal: bool, fan_in: int, fan_out: int, gain: float) -> FillSpec:
    """N(0, std^2), or the uniform law with that std: U(-sqrt(3) std, sqrt(3) std)."""
    if normal:
        return FillSpec("normal", (0.0, std), fan_in, fan_out, gain, std)
    bound = math.sqrt(3.0) * std
    return FillSpec("uniform", (-bound, bound), fan_in, fan_out, gain, std, bound)


def _xavier(tensor: Tensor, gain: float, normal: bool) -> FillSpec:
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return _zero_mean(std, normal, fan_in, fan_out, gain)


def _kaiming(tensor: Tensor, a: float, mode: str, nonlinearity: str, normal: bool) -> FillSpec:
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    fan = fan_in if _check_fan_mode(mode) == "fan_in" else fan_out
    gain = calculate_gain(nonlinearity, a)
    return _zero_mean(gain / math.sqrt(fan), normal, fan_in, fan_out, gain)


def xavier_uniform(tensor: Tensor, gain: float = 1.0) -> FillSpec:
    return _xavier(tensor, gain, normal=False)


def xavier_normal(tensor: Tensor, gain: float = 1.0) -> FillSpec:
    return _xavier(tensor, gain, normal=True)


def kaiming_uniform(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> FillSpec:
    return _kaiming(tensor, a, mode, nonlinearity, normal=False)


def kaiming_normal(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> FillSpec:
    return _kaiming(tensor, a, mode, nonlinearity, normal=True)


def variance_scaling(
    tensor: Tensor, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal"
) -> FillSpec:
    """Variance scale / fan, as jax.nn.initializers.variance_scaling: the truncated normal is
    N(0, s^2) cut at +-2s with s = sqrt(scale / fan) / 0.87962566103423978, so the samples'
    variance is exactly scale / fan. The reported std is that of the samples."""
    if not scale > 0:
        raise ValueError(f"scale must be a positive float, got {scale}")
    if mode not in VARIANCE_SCALING_MODES:
        raise ValueError(f"Mode {mode} not supported, please use one of {list(VARIANCE_SCALING_MODES)}")
    if distribution not in VARIANCE_SCALING_DISTRIBUTIONS:
        raise ValueError(
            f"Distribution {distribution} not supported, please use one of {list(VARIANCE_SCALING_DISTRIBUTIONS)}"
        )
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    std = math.sqrt(scale / max(fan, 1))  # fan is 0 only for zero-element tensors, which are not filled
    gain = math.sqrt(scale)
    if distribution == "truncated_normal":
        s = std / TRUNCATED_NORMAL_STD
        return FillSpec("trunc_normal", (0.0, s, -2.0 * s, 2.0 * s), fan_in, fan_out, gain, std, 2.0 * s)
    return _zero_mean(std, distribution == "normal", fan_in, fan_out, gain)


def lecun_normal(tensor: Tensor) -> FillSpec:
    """Truncated normal with variance 1 / fan_in, as jax.nn.initializers.lecun_normal."""
    return variance_scaling(tensor, 1.0, "fan_in", "truncated_normal")


def lecun_uniform(tensor: Tensor) -> FillSpec:
    return variance_scaling(tensor, 1.0, "fan_in", "uniform")


def uniform(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> FillSpec:
    return FillSpec("uniform", (a, b), std=(b - a) / math.sqrt(12.0), bound=max(abs(a), abs(b)))


def normal(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> FillSpec:
    return FillSpec("normal", (mean, std), std=std)


def trunc_normal(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> FillSpec:
    # std reported is the untruncated one (the argument), as in torch.nn.init.trunc_normal_
    return FillSpec("trunc_normal", (mean, std, a, b), std=std, bound=max(abs(a), abs(b)))


def constant(tensor: Tensor, val: float) -> FillSpec:
    return FillSpec("constant", (float(val),), std=0.0, bound=abs(float(val)))


def zeros(tensor: Tensor) -> FillSpec:
    return constant(tensor, 0.0)


def ones(tensor: Tensor) -> FillSpec:
    return constant(tensor, 1.0)


def orthogonal(tensor: Tensor, gain: float = 1.0) -> FillSpec:
    """(Semi-)orthogonal rows or columns scaled by gain: each entry has std gain / sqrt(max(rows, cols))."""
    if tensor.dim() < 2:  # torch.nn.init.orthogonal_'s own condition, checked before any write
        raise ValueError("Only tensors with 2 or more dimensions are supported")
    rows = tensor.size(0)
    cols = tensor.numel() // rows if rows else 0
    std = gain / math.sqrt(max(rows, cols)) if rows and cols else 0.0
    return FillSpec("orthogonal", (float(gain),), gain=gain, std=std)


SCHEMES = {
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "kaiming_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform,
    "variance_scaling": variance_scaling,
    "uniform": uniform,
    "normal": normal,
    "trunc_normal": trunc_normal,
    "constant": constant,
    "zeros": zeros,
    "ones": ones,
    "orthogonal": orthogonal,
}


def check_params(spec: FillSpec, dtype: torch.dtype) -> None:
    """The parameter checks the fills make (csrc/common/fill_checks.h) on a tensor of `dtype`, made
    before anything is written, so that a plan cannot fail halfway through; a plan also refuses a
    non-finite mean or std, which the fills take as torch does. Raises ValueError."""
    p = spec.params
    if spec.kind == "uniform" and not (p[0] <= p[1] and math.isfinite(p[1] - p[0])):
        raise ValueError(f"uniform needs a finite range low <= high, got low={p[0]}, high={p[1]}")
    if spec.kind in ("normal", "trunc_normal") and not (p[1] >= 0 and math.isfinite(p[0]) and math.isfinite(p[1])):
        raise ValueError(f"{spec.kind} needs a finite mean and std >= 0, got mean={p[0]}, std={p[1]}")
    if spec.kind == "trunc_normal" and not p[2] <= p[3]:
        raise ValueError(f"trunc_normal needs bounds a <= b, got a={p[2]}, b={p[3]}")
    top = torch.finfo(dtype).max if dtype.is_floating_point else math.inf
    if spec.kind == "trunc_normal" and not (-top <= p[3] and p[2] <= top):
        raise ValueError(f"trunc_normal needs bounds holding a finite {dtype} value, got a={p[2]}, b={p[3]}")


def fill_spec(scheme: str, tensor: Tensor, **args) -> FillSpec:
    """What `scheme` with torch.nn.init-style `args` fills `tensor` with. Raises ValueError for an
    unknown scheme or a shape the scheme cannot handle, TypeError for unknown arguments."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {sorted(SCHEMES)}")
    try:
        spec = SCHEMES[scheme](tensor, **args)
    except TypeError as error:
        raise TypeError(f"bad arguments {args} for init scheme {scheme!r}: {error}") from None
    check_params(spec, tensor.dtype)
    return spec
