"""Fused dense layers: `linear_relu(input, weight, bias)` == relu(F.linear(input, weight, bias))
and `mlp(input, weights, biases)` == an MLP with ReLU between layers (none after the last).

On the "ext" backend they call torch.ops.initkit.linear_relu / mlp (one op call, C++ autograd,
works under TorchScript, torch.compile and torch.export); on the "torch" backend, or for a
device the extension was not built for, they run the equivalent PyTorch code below. Both raise
RuntimeError for bad shapes, dtypes or devices, like F.linear.
"""

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ._ext import load
from ._ext.backend import handles
from ._ext.checks import check_linear, check_mlp, require_linear_tensors, require_mlp_tensors

__all__ = ["linear_relu", "mlp"]

_STRIDED = torch.strided


def linear_relu(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """relu(input @ weight.T + bias) in one op: input [..., in], weight [out, in], bias [out] or None.

    Equivalent PyTorch::

        F.relu(F.linear(input, weight, bias))
    """
    if not torch.jit.is_scripting():
        require_linear_tensors("linear_relu", input, weight, bias)
        # (sparse weights take torch's path and its errors; inlined: this runs on every call)
        if not (handles(input) and weight.layout is _STRIDED and (bias is None or bias.layout is _STRIDED)):
            input, (weight, bias) = _autocast_args(input, [weight, bias])
            check_linear("linear_relu", input, weight, bias)
            return F.relu(F.linear(input, weight, bias))
        return torch.ops.initkit.linear_relu(input, weight, bias)
    return _linear_relu_op(input, weight, bias)


def mlp(input: Tensor, weights: List[Tensor], biases: List[Optional[Tensor]]) -> Tensor:
    """A whole MLP in one op: ReLU after every layer but the last; biases[i] may be None.

    Equivalent PyTorch::

        for i, (w, b) in enumerate(zip(weights, biases)):
            input = F.linear(input, w, b)
            if i + 1 < len(weights):
                input = F.relu(input)
    """
    if not torch.jit.is_scripting():
        require_mlp_tensors("mlp", input, weights, biases)
        if not (handles(input) and _strided(weights) and _strided(biases)):
            input, cast = _autocast_args(input, [*weights, *biases])
            weights, biases = cast[: len(weights)], cast[len(weights) :]
            check_mlp("mlp", input, weights, biases)
            return _mlp_by_layers(input, weights, biases, fused=False)
        if torch.jit.is_tracing():
            # The TorchScript tracer cannot record a Tensor?[] argument: trace layer by layer
            # (each linear_relu op checks its own arguments).
            return _mlp_by_layers(input, weights, biases, fused=True)
        return torch.ops.initkit.mlp(input, weights, biases)
    return _mlp_op(input, weights, biases)


def _strided(tensors: List[Optional[Tensor]]) -> bool:
    """Whether none of `tensors` is sparse (those take torch's path and its errors)."""
    return all(t is None or t.layout is _STRIDED for t in tensors)


def _autocast_args(input: Tensor, tensors: List[Optional[Tensor]]):
    """(input, tensors) as the extension's autocast kernels pass them to the op (csrc/autocast/): in
    an autocast region of the input's device, floating tensors other than float64 cast to its dtype."""
    device = input.device.type
    # (the devices with the extension's autocast kernels; torch.amp.is_autocast_available is not
    # traceable by torch 2.11's dynamo)
    if device not in ("cpu", "cuda") or not torch.is_autocast_enabled(device):
        return input, tensors
    dtype = torch.get_autocast_dtype(device)

    def cast(t: Optional[Tensor]) -> Optional[Tensor]:
        eligible = t is not None and t.is_floating_point() and t.dtype != torch.float64 and t.device.type == device
        return t.to(dtype) if eligible else t

    return cast(input), [cast(t) for t in tensors]


def _mlp_by_layers(input: Tensor, weights: List[Tensor], biases: List[Optional[Tensor]], fused: bool) -> Tensor:
    for i, (weight, bias) in enumerate(zip(weights, biases)):
        if i + 1 == len(weights):
            input = F.linear(input, weight, bias)
        elif fused:
            input = _linear_relu_op(input, weight, bias)
        else:
            input = F.relu(F.linear(input, weight, bias))
    return input


# The ops as TorchScript compiles them: the initkit ops when the extension loaded, else torch's own
# layers (without the extension there is no torch.ops.initkit to compile against).
if load.ext_available():

    def _linear_relu_op(input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return torch.ops.initkit.linear_relu(input, weight, bias)

    def _mlp_op(input: Tensor, weights: List[Tensor], biases: List[Optional[Tensor]]) -> Tensor:
        return torch.ops.initkit.mlp(input, weights, biases)

else:

    def _linear_relu_op(input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return F.relu(F.linear(input, weight, bias))

    def _mlp_op(input: Tensor, weights: List[Tensor], biases: List[Optional[Tensor]]) -> Tensor:
        return _mlp_by_layers(input, weights, biases, fused=False)


# torch.fx tracing of a model that calls these keeps each call as a single node.
torch.fx.wrap("linear_relu")
torch.fx.wrap("mlp")
