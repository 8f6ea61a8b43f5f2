"""Which activation follows each weight layer: read from a torch.fx trace where the model traces,
else from module registration order. The "auto" policy picks Kaiming, Xavier or LeCun from it.

The trace costs tens of milliseconds (about 25 ms of GPT-2 small's initialize()), so its result is
kept per model and reused while the model's structure key (structure_key) is unchanged.
"""

import weakref
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from .snapshot import restoring

WEIGHT_LAYERS = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
NORM_LAYERS = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)
# Modules between a layer and its activation that do not change which init fits.
_TRANSPARENT_MODULES = (nn.Dropout, nn.modules.dropout._DropoutNd, nn.Identity, nn.Flatten, nn.Unflatten, *NORM_LAYERS)
_TRANSPARENT_CALLS = {
    "dropout", "flatten", "reshape", "view", "permute", "transpose", "contiguous",
    "squeeze", "unsqueeze", "to", "float", "type_as", "layer_norm", "batch_norm", "group_norm",
}  # fmt: skip

# Activation modules → the name used in plans (and calculate_gain where it knows it).
_ACTIVATION_MODULES = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.PReLU: "leaky_relu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Mish: "silu",
    nn.ELU: "relu",
    nn.Hardswish: "silu",
    nn.SELU: "selu",
    nn.Tanh: "tanh",
    nn.Hardtanh: "tanh",
    nn.Sigmoid: "sigmoid",
}
_ACTIVATION_CALLS = {
    "relu": "relu", "relu_": "relu", "relu6": "relu", "leaky_relu": "leaky_relu", "leaky_relu_": "leaky_relu",
    "gelu": "gelu", "silu": "silu", "mish": "silu", "elu": "relu", "selu": "selu",
    "tanh": "tanh", "tanh_": "tanh", "sigmoid": "sigmoid", "sigmoid_": "sigmoid",
}  # fmt: skip
RELU_LIKE = ("relu", "leaky_relu", "gelu", "silu")


@dataclass(frozen=True)
class Follower:
    activation: str | None  # "relu", "tanh", ... ; None when no activation follows
    slope: float = 0.0  # LeakyReLU / PReLU negative slope
    detail: str = ""  # "followed by ReLU (fx)", "output layer (module order)", ...


class _LayerTracer(torch.fx.Tracer):
    """Keeps weight layers and activation modules as leaves even when subclassed by users."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        leaf_types = (*WEIGHT_LAYERS, *NORM_LAYERS, *EMBEDDINGS, *_ACTIVATION_MODULES)
        return isinstance(m, leaf_types) or super().is_leaf_module(m, qualname)


def _activation_of_module(module: nn.Module) -> tuple[str, float] | None:
    for module_type, name in _ACTIVATION_MODULES.items():
        if isinstance(module, module_type):
            if isinstance(module, nn.LeakyReLU):
                return name, float(module.negative_slope)
            if isinstance(module, nn.PReLU):
                return name, float(module.init)  # the slope it starts from (initialize sets it back)
            return name, 0.0
    return None


def _call_name(node: torch.fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


def _followers_from_fx(model: nn.Module) -> dict[str, Follower] | None:
    if "forward" in model.__dict__:
        # fx traces the class's forward of the model it is given (a submodule's own forward is
        # followed): that graph would describe another forward than the one that runs
        return None
    try:
        # the trace runs forward's Python on the real buffers (fx proxies parameters only): put back
        # what it writes (a call counter's `self.calls += 1`)
        with restoring(model.buffers(), always=True):
            graph = _LayerTracer().trace(model)
    except Exception:  # any Python the tracer cannot follow (data-dependent control flow, ...)
        return None
    modules = dict(model.named_modules())
    found: dict[str, Follower] = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), WEIGHT_LAYERS):
            found.setdefault(str(node.target), _follow_node(node, modules))
    return found


def _follow_node(start: torch.fx.Node, modules: dict[str, nn.Module]) -> Follower:
    """Walk the users of `start` through shape-only ops, dropout and norms to the first real op."""
    pending = list(start.users)
    seen = set()
    while pending:
        node = pending.pop(0)
        if node in seen:
            continue
        seen.add(node)
        if node.op == "output":
            return Follower(None, detail="output layer (fx)")
        if node.op == "call_module":
            module = modules[node.target]
            activation = _activation_of_module(module)
            if activation:
                return Follower(activation[0], activation[1], f"followed by {type(module).__name__} (fx)")
            if isinstance(module, _TRANSPARENT_MODULES):
                pending.extend(node.users)
                continue
            return Follower(None, detail=f"followed by {type(module).__name__} (fx)")
        name = _call_name(node)
        if node.op in ("call_function", "call_method") and name in _ACTIVATION_CALLS:
            activation = _ACTIVATION_CALLS[name]
            slope = 0.0
            if activation == "leaky_relu":
                slope = float(node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1 else 0.01))
            return Follower(activation, slope, f"followed by {name} (fx)")
        if node.op in ("call_function", "call_method") and name in _TRANSPARENT_CALLS:
            pending.extend(node.users)
            continue
        return Follower(None, detail=f"followed by {name} (fx)")
    return Follower(None, detail="output unused (fx)")


def _followers_from_order(model: nn.Module) -> dict[str, Follower]:
    """The next registered leaf module after each layer (nn.Sequential order, in general)."""
    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    found = {}
    for i, (name, module) in enumerate(leaves):
        if not isinstance(module, WEIGHT_LAYERS):
            continue
        follower = Follower(None, detail="last module: output layer (module order)")
        for _, nxt in leaves[i + 1 :]:
            activation = _activation_of_module(nxt)
            if activation:
                follower = Follower(activation[0], activation[1], f"followed by {type(nxt).__name__} (module order)")
                break
            if not isinstance(nxt, _TRANSPARENT_MODULES):
                follower = Follower(None, detail=f"next module is {type(nxt).__name__} (module order)")
                break
        found[name] = follower
    return found


def followers(model: nn.Module) -> dict[str, Follower]:
    """The Follower of every weight layer, by module name (cached per model, see structure_key)."""
    key = structure_key(model)
    try:
        cached = _CACHE.get(model)
    except TypeError:  # a module class that defines __eq__ without __hash__: no caching
        return _followers(model)
    if cached is not None and cached[0] == key:
        return dict(cached[1])
    found = _followers(model)
    _CACHE[model] = (key, found)
    return dict(found)


def _followers(model: nn.Module) -> dict[str, Follower]:
    by_order = _followers_from_order(model)
    by_fx = _followers_from_fx(model)
    return by_order if by_fx is None else {**by_order, **by_fx}


# model -> (structure_key(model), its followers); an entry goes with its model.
_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[str, Follower]]]" = weakref.WeakKeyDictionary()
_SCALARS = (bool, int, float, str, type(None))
# nn.Module's own bookkeeping in __dict__: the registries (children are walked on their own;
# parameters and buffers are re-read by the plan on every call) and the hook dicts (_HOOKS).
_MODULE_INTERNALS = frozenset(
    ("_parameters", "_buffers", "_non_persistent_buffers_set", "_modules", "_state_dict_hooks",
     "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
     "_backward_pre_hooks", "_backward_hooks", "_is_full_backward_hook", "_forward_hooks",
     "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
     "_forward_pre_hooks_with_kwargs")
)  # fmt: skip
_HOOKS = ("_forward_hooks", "_forward_pre_hooks")  # run by the trace for modules it enters


class _Same:
    """Equal to another _Same of the same object while that object lives. Weak, so that the cache
    keeps nothing alive and a replaced object never matches, even at a reused address; objects
    that take no weak reference (lists, dicts) are compared by id."""

    __slots__ = ("_ref", "_id")

    def __init__(self, obj):
        self._id = id(obj)
        try:
            self._ref = weakref.ref(obj)
        except TypeError:
            self._ref = None

    def __eq__(self, other) -> bool:
        if not isinstance(other, _Same):
            return NotImplemented
        if self._ref is None or other._ref is None:
            return self._ref is other._ref and self._id == other._id
        return self._ref() is not None and self._ref() is other._ref()


def _value_key(value) -> object:
    if type(value) in _SCALARS:
        return value
    if type(value) is tuple:
        return tuple(_value_key(v) for v in value)
    return _Same(value)


def structure_key(model: nn.Module) -> tuple:
    """What the followers of `model` depend on, as a value to compare: every module by identity
    and name, its class's and its own forward, its forward hooks, and its other attributes (slopes,
    flags, `training`, ...): scalars by value, objects by identity. Parameters and buffers are not
    part of it: init_plan re-reads them on every call. Not seen: an in-place change inside an
    attribute object (e.g. a config field that forward branches on) with every module kept; call
    clear_cache() after one."""
    parts = []
    for name, module in model.named_modules(remove_duplicate=False):
        attributes = tuple((k, _value_key(v)) for k, v in module.__dict__.items() if k not in _MODULE_INTERNALS)
        hooks = tuple(_Same(hook) for h in _HOOKS for hook in getattr(module, h, {}).values())
        parts.append((name, _Same(module), type(module), _Same(type(module).forward), hooks, attributes))
    return tuple(parts)


def clear_cache() -> None:
    """Forget every cached trace result (see structure_key for the one change the key cannot see)."""
    _CACHE.clear()
