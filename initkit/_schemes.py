"""Init schemes as data: what each scheme fills a tensor with, without filling it.

`fill_spec(scheme, tensor, **args)` turns a scheme name and its torch.nn.init arguments into a
`FillSpec`: the primitive fill (uniform / normal / trunc_normal, with the exact parameters that
initkit.init's scheme functions compute, so the numbers match torch.nn.init's formulas) or a
constant / orthogonal fill, plus the fan, gain, std and bound for reports. Only the tensor's
shape is read, so meta tensors work.
"""

import math
from dataclasses import dataclass

from torch import Tensor

from . import init

# The random primitives multi_fill_ takes; "constant" and "orthogonal" are filled separately.
RANDOM_KINDS = ("uniform", "normal", "trunc_normal")


@dataclass(frozen=True)
class FillSpec:
    kind: str  # "uniform" | "normal" | "trunc_normal" | "constant" | "orthogonal"
    params: tuple[float, ...]  # multi_fill_ params for random kinds; (value,) or (gain,) otherwise
    fan_in: int | None = None
    fan_out: int | None = None
    gain: float | None = None
    std: float | None = None  # std of the values the fill produces
    bound: float | None = None  # |value| limit of uniform / truncated fills


def _fans(tensor: Tensor) -> tuple[int, int]:
    return init._calculate_fan_in_and_fan_out(tensor)


def _xavier(tensor: Tensor, gain: float, normal: bool) -> FillSpec:
    fan_in, fan_out = _fans(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    if normal:
        return FillSpec("normal", (0.0, std), fan_in, fan_out, gain, std)
    bound = math.sqrt(3.0) * std
    return FillSpec("uniform", (-bound, bound), fan_in, fan_out, gain, std, bound)


def _kaiming(tensor: Tensor, a: float, mode: str, nonlinearity: str, normal: bool) -> FillSpec:
    fan_in, fan_out = _fans(tensor)
    fan = init._calculate_correct_fan(tensor, mode)
    gain = init.calculate_gain(nonlinearity, a)
    std = gain / math.sqrt(fan)
    if normal:
        return FillSpec("normal", (0.0, std), fan_in, fan_out, gain, std)
    bound = math.sqrt(3.0) * std
    return FillSpec("uniform", (-bound, bound), fan_in, fan_out, gain, std, bound)


def xavier_uniform(tensor: Tensor, gain: float = 1.0) -> FillSpec:
    return _xavier(tensor, gain, normal=False)


def xavier_normal(tensor: Tensor, gain: float = 1.0) -> FillSpec:
    return _xavier(tensor, gain, normal=True)


def kaiming_uniform(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> FillSpec:
    return _kaiming(tensor, a, mode, nonlinearity, normal=False)


def kaiming_normal(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> FillSpec:
    return _kaiming(tensor, a, mode, nonlinearity, normal=True)


def lecun_normal(tensor: Tensor) -> FillSpec:
    """Truncated normal with variance 1 / fan_in, as initkit.lecun_normal_ (JAX semantics)."""
    fan_in, fan_out = _fans(tensor)
    std = math.sqrt(1.0 / fan_in)
    s = std / init.TRUNCATED_NORMAL_STD
    return FillSpec("trunc_normal", (0.0, s, -2.0 * s, 2.0 * s), fan_in, fan_out, 1.0, std, 2.0 * s)


def lecun_uniform(tensor: Tensor) -> FillSpec:
    fan_in, fan_out = _fans(tensor)
    bound = math.sqrt(3.0 / fan_in)
    return FillSpec("uniform", (-bound, bound), fan_in, fan_out, 1.0, bound / math.sqrt(3.0), bound)


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
    "uniform": uniform,
    "normal": normal,
    "trunc_normal": trunc_normal,
    "constant": constant,
    "zeros": zeros,
    "ones": ones,
    "orthogonal": orthogonal,
}


def fill_spec(scheme: str, tensor: Tensor, **args) -> FillSpec:
    """What `scheme` with torch.nn.init-style `args` fills `tensor` with. Raises ValueError for an
    unknown scheme or a shape the scheme cannot handle, TypeError for unknown arguments."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {sorted(SCHEMES)}")
    try:
        return SCHEMES[scheme](tensor, **args)
    except TypeError as error:
        raise TypeError(f"bad arguments {args} for init scheme {scheme!r}: {error}") from None
