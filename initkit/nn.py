"""Modules over the fused ops: FusedLinearReLU (a drop-in for nn.Linear followed by nn.ReLU)
and MLP (a whole ReLU MLP in one op call). See initkit.fuse to convert an existing model."""

import math
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from . import init, schemes
from .functional import linear_relu, mlp

__all__ = ["FusedLinearReLU", "MLP"]

# torch.fx tracing of a model with these modules keeps the op calls in the forwards below as single
# nodes; fx.wrap patches the calling module's globals, so it is repeated here.
torch.fx.wrap("linear_relu")
torch.fx.wrap("mlp")


class FusedLinearReLU(nn.Module):
    """relu(nn.Linear(in_features, out_features, bias)(input)) in one op.

    Same parameters (`weight` [out, in], `bias` [out]), state_dict keys and default init as
    nn.Linear: kaiming_uniform_(a=sqrt(5)) for the weight, U(-1/sqrt(in), 1/sqrt(in)) for the bias.
    """

    __constants__ = ["in_features", "out_features"]
    in_features: int
    out_features: int

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        linear_default_init_(self.weight, self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "FusedLinearReLU":
        """A FusedLinearReLU that shares `linear`'s weight and bias Parameters."""
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        fused.in_features, fused.out_features = linear.in_features, linear.out_features
        fused.weight = linear.weight
        fused.bias = linear.bias
        return fused

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return linear_relu(input, self.weight, self.bias)
        # Module.__getattr__ costs more than a tiny layer's arithmetic: read _parameters directly
        # (pruning and parametrizations replace a parameter by an attribute: read those as such).
        params = self._parameters
        weight = params["weight"] if "weight" in params else self.weight
        bias = params["bias"] if "bias" in params else self.bias
        return linear_relu(input, weight, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def linear_default_init_(weight: Tensor, bias: Tensor | None) -> None:
    """nn.Linear's own default init, drawn with initkit's fills: kaiming_uniform_(a=sqrt(5)) for the
    weight, U(-1/sqrt(in_features), 1/sqrt(in_features)) for the bias."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = weight.shape[1]
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


# MLP(init=...) names: "torch" (nn.Linear's defaults) or a scheme of initkit.schemes with the
# arguments that fit the MLP's ReLUs; biases start at zero.
_MLP_WEIGHT_SCHEMES = {
    "kaiming_uniform": {"nonlinearity": "relu"},
    "kaiming_normal": {"nonlinearity": "relu"},
    "xavier_uniform": {},
    "xavier_normal": {},
    "lecun_normal": {},
}
_INITS = ("torch", *_MLP_WEIGHT_SCHEMES)


def _init_layer(layer: nn.Linear, scheme: str) -> None:
    if scheme == "torch":
        linear_default_init_(layer.weight, layer.bias)
        return
    init.fill_scheme_(layer.weight, schemes.fill_spec(scheme, layer.weight, **_MLP_WEIGHT_SCHEMES[scheme]))
    if layer.bias is not None:
        init.zeros_(layer.bias)


class MLP(nn.Module):
    """An MLP with ReLU between layers (none after the last), run as one initkit.mlp op.

    `sizes` = [in, hidden..., out]: MLP([4, 5, 3, 2]) has layers 4->5, 5->3, 3->2 (51 parameters).
    The layers are nn.Linear modules in `self.layers` (state_dict keys layers.{i}.weight/bias).
    `init`: "kaiming_uniform" (default; He init for ReLU, zero biases), "kaiming_normal",
    "xavier_uniform", "xavier_normal", "lecun_normal" (all with zero biases) or "torch"
    (nn.Linear's defaults); all drawn with initkit.init.
    """

    def __init__(
        self, sizes: Sequence[int], bias: bool = True, init: str = "kaiming_uniform", device=None, dtype=None
    ) -> None:
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least [in_features, out_features], got sizes={list(sizes)}")
        if init not in _INITS:
            raise ValueError(f"unknown MLP init {init!r}; expected one of {_INITS}")
        self.sizes = list(sizes)
        # Built on meta and then materialized: nn.Linear's own init would be thrown away.
        device = device if device is not None else torch.get_default_device()
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out, bias=bias, device="meta", dtype=dtype).to_empty(device=device)
            for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )
        for layer in self.layers:
            _init_layer(layer, init)

    def forward(self, input: Tensor) -> Tensor:
        weights: List[Tensor] = []
        biases: List[Optional[Tensor]] = []
        if torch.jit.is_scripting():
            for layer in self.layers:
                weights.append(layer.weight)
                biases.append(layer.bias)
        else:
            # Module.__getattr__ costs more than a tiny MLP's arithmetic: read _parameters directly
            # (pruning and parametrizations replace a parameter by an attribute: read those as such).
            for layer in self._modules["layers"]:
                params = layer._parameters
                weights.append(params["weight"] if "weight" in params else layer.weight)
                biases.append(params["bias"] if "bias" in params else layer.bias)
        return mlp(input, weights, biases)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"
