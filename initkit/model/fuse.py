"""initkit.fuse(model): a copy of `model` in which every nn.Linear immediately followed by a
ReLU runs as one FusedLinearReLU (same Parameters' values, same outputs).

Two passes: inside every nn.Sequential, a Linear at index i followed by nn.ReLU at i + 1 becomes
FusedLinearReLU at i and nn.Identity at i + 1 (state_dict keys unchanged); then, if the model
is not itself a Sequential and torch.fx can trace it, Linear modules whose only use is a ReLU
(nn.ReLU, F.relu, torch.relu or .relu()) are replaced in the traced graph, which is returned as
a torch.fx.GraphModule. Models FX cannot trace keep the Sequential fusions only.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import FusedLinearReLU

_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)


def _fuse_sequentials(module: nn.Module) -> None:
    for child in module.modules():
        if not isinstance(child, nn.Sequential):
            continue
        for i in range(len(child) - 1):
            if type(child[i]) is nn.Linear and type(child[i + 1]) is nn.ReLU:
                child[i] = FusedLinearReLU.from_linear(child[i])
                child[i + 1] = nn.Identity()


def _is_relu(node: torch.fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return type(modules[node.target]) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _fuse_graph(model: nn.Module) -> nn.Module:
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001  (any tracing failure: the model stays untraced)
        return model
    modules = dict(traced.named_modules())
    calls = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    fused_any = False
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or type(modules[node.target]) is not nn.Linear or calls[node.target] != 1:
            continue
        users = list(node.users)
        if len(users) != 1 or not _is_relu(users[0], modules) or users[0].args[0] is not node:
            continue
        relu = users[0]
        traced.set_submodule(node.target, FusedLinearReLU.from_linear(modules[node.target]))
        relu.replace_all_uses_with(node)
        traced.graph.erase_node(relu)
        fused_any = True
    if not fused_any:
        return model
    traced.graph.lint()
    traced.recompile()
    return traced


def fuse(model: nn.Module) -> nn.Module:
    """A copy of `model` with each nn.Linear + ReLU pair replaced by FusedLinearReLU."""
    model = copy.deepcopy(model)
    _fuse_sequentials(model)
    if isinstance(model, nn.Sequential):
        return model
    return _fuse_graph(model)
