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

from ._ext.backend import handles
from ._ext.checks import check_linear, check_mlp, require_linear_tensors, require_mlp_tensors

__all__ = ["linear_relu", "mlp"]


def linear_relu(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """relu(input @ weight.T + bias) in one op: input [..., in], weight [out, in], bias [out] or None.

    Equivalent PyTorch::

        F.relu(F.linear(input, weight, bias))
    """
    if not torch.jit.is_scripting():
        require_linear_tensors("linear_relu", input, weight, bias)
        if not handles(input):
            check_linear("linear_relu", input, weight, bias)
            return F.relu(F.linear(input, weight, bias))
    return torch.ops.initkit.linear_relu(input, weight, bias)


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
        if not handles(input):
            check_mlp("mlp", input, weights, biases)
            return _mlp_by_layers(input, weights, biases, fused=False)
        if torch.jit.is_tracing():
            # The TorchScript tracer cannot record a Tensor?[] argument: trace layer by layer
            # (each linear_relu op checks its own arguments).
            return _mlp_by_layers(input, weights, biases, fused=True)
    return torch.ops.initkit.mlp(input, weights, biases)


def _mlp_by_layers(input: Tensor, weights: List[Tensor], biases: List[Optional[Tensor]], fused: bool) -> Tensor:
    for i, (weight, bias) in enumerate(zip(weights, biases)):
        if i + 1 == len(weights):
            input = F.linear(input, weight, bias)
        elif fused:
            input = torch.ops.initkit.linear_relu(input, weight, bias)
        else:
            input = F.relu(F.linear(input, weight, bias))
    return input


# FX tracing (used by initkit.fuse) keeps these calls as single nodes.
torch.fx.wrap("linear_relu")
torch.fx.wrap("mlp")
