"""The fill ops' interface, as csrc/initkit.cpp's schemas define it: the single-tensor op of each
fill kind, the kind numbers that multi_fill and _fill_block take, their four parameters per fill,
and the seed argument as an op call with a given target takes it."""

from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor

FILL_OPS = {"uniform": "uniform_fill", "normal": "normal_fill", "trunc_normal": "trunc_normal_fill"}
FILL_KINDS = {"uniform": 0, "normal": 1, "trunc_normal": 2}
_N_PARAMS = {"uniform": 2, "normal": 2, "trunc_normal": 4}  # (low, high), (mean, std), (mean, std, a, b)


def op_params(kind: str, params, caller: str) -> list[float]:
    """The four floats of one fill for multi_fill / _fill_block (unused ones 0), after checking
    the kind and the number of parameters (ValueError naming `caller`)."""
    if kind not in FILL_KINDS:
        raise ValueError(f"{caller}: unknown fill kind {kind!r}; expected one of {list(FILL_KINDS)}")
    expected = _N_PARAMS[kind]
    if len(params) != expected:
        raise ValueError(f"{caller}: {kind} takes {expected} parameters, got {len(params)}")
    return [float(p) for p in params] + [0.0] * (4 - expected)


def op_seed(target: Tensor, seed: Tensor) -> Tensor:
    """`seed` for a fill op call on `target`: a FakeTensor filled outside its FakeTensorMode (the
    key drawn in eager mode is a real tensor) takes fake arguments only."""
    if type(target) is FakeTensor and type(seed) is not FakeTensor:
        return target.fake_mode.from_tensor(seed)
    return seed
