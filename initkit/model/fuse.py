"""initkit.fuse(model): a copy of `model` in which each nn.Linear whose output provably goes only
to a ReLU runs as one FusedLinearReLU: same Parameters' values, outputs, gradients, state_dict
keys, buffers and hooks, in train and in eval mode. Pairs it cannot prove are left unfused, and
`fuse(model, report=True)` says which were fused and why the others were not.

What counts as proof:
- Inside an nn.Sequential (exactly that class) that is only ever called as a whole, a Linear at
  index i followed by nn.ReLU at i + 1 becomes FusedLinearReLU at i and nn.Identity at i + 1. The
  model itself, a Sequential inside such a Sequential, and a Sequential that the model's traced
  forward calls as one module and never indexes, iterates or reads into, are called as a whole.
- Otherwise the model's forward is traced with torch.fx (Sequentials kept as single calls), in
  train and in eval mode; when both traces agree (the forward does not branch on self.training),
  a Linear called once whose only user is a ReLU (nn.ReLU, F.relu, torch.relu or .relu()) is
  fused in the graph, and the model is returned as a torch.fx.GraphModule running that graph. It
  keeps every submodule, parameter, buffer, hook and plain attribute of the model (not the other
  methods of its class).
Neither the Linear nor the ReLU may have hooks (module hooks or global ones), and the Linear must
hold nothing but its weight and bias.
In the returned model a fused pair's Linear slot holds the FusedLinearReLU, whose output is
relu(linear(x)), and its ReLU slot an nn.Identity.
"""

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module_globals

from ..nn import FusedLinearReLU
from .table import format_columns

_RELU_FUNCTIONS = (F.relu, F.relu_, torch.relu, torch.relu_)
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


@dataclass
class FuseReport:
    """What fuse() did: `fused` lists (linear, relu) module names fused into one FusedLinearReLU
    ("relu" names the function for a functional ReLU); `skipped` maps each nn.Linear left
    unfused to the reason."""

    fused: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        rows = [(linear, f"fused with {relu}") for linear, relu in self.fused]
        rows += [(linear, f"not fused: {reason}") for linear, reason in self.skipped.items()]
        return format_columns(("Linear", "result"), rows) if rows else "no nn.Linear in the model"

    def _skip(self, name: str, reason: str) -> None:
        self.skipped.setdefault(name, reason)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _hooked(module: nn.Module) -> bool:
    return any(getattr(module, attr, None) for attr in _HOOK_DICTS)


def _plain_linear(module: nn.Module) -> bool:
    """An nn.Linear holding only its weight and bias (no parametrization, buffers, children)."""
    return (
        type(module) is nn.Linear
        and set(module._parameters) == {"weight", "bias"}
        and not module._buffers
        and not module._modules
    )


def _pair_problem(linear: nn.Module, relu: nn.Module | None) -> str | None:
    """Why this Linear (and the ReLU module after it, if any) must not be fused; None if it may."""
    if not _plain_linear(linear):
        return "the nn.Linear holds more than its weight and bias (parametrized or extended)"
    if _hooked(linear):
        return "the nn.Linear has hooks, which would see the ReLU's output"
    if relu is not None and _hooked(relu):
        return "the ReLU has hooks, which would no longer run"
    return None


def _fuse_whole_sequential(seq: nn.Sequential, prefix: str, report: FuseReport) -> None:
    """Fuse adjacent Linear, ReLU children of `seq`, which is only ever called as a whole."""
    for name, child in seq.named_children():
        if type(child) is nn.Sequential:
            _fuse_whole_sequential(child, _join(prefix, name), report)
    names = list(seq._modules)
    for i, name in enumerate(names[:-1]):
        linear, relu = seq._modules[name], seq._modules[names[i + 1]]
        if type(linear) is not nn.Linear or type(relu) is not nn.ReLU:
            continue
        problem = _pair_problem(linear, relu)
        if problem:
            report._skip(_join(prefix, name), problem)
            continue
        seq._modules[name] = FusedLinearReLU.from_linear(linear)
        seq._modules[names[i + 1]] = nn.Identity()
        report.fused.append((_join(prefix, name), _join(prefix, names[i + 1])))


class _Tracer(torch.fx.Tracer):
    """torch.fx's default tracer, but an nn.Sequential is one call: whether the forward calls it as
    a whole or reaches into it (seq[0], iteration) then shows in the graph."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return type(m) is nn.Sequential or super().is_leaf_module(m, module_qualified_name)


def _trace(model: nn.Module, training: bool) -> torch.fx.Graph:
    flags = {m: m.training for m in model.modules()}
    attributes = set(vars(model))
    model.train(training)
    try:
        return _Tracer().trace(model)
    finally:
        for m, mode in flags.items():
            m.training = mode
        if not training:  # drop tensor constants this trace stored on the model: the train trace remakes them
            for name in set(vars(model)) - attributes:
                delattr(model, name)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _is_relu(node: torch.fx.Node, source: torch.fx.Node, modules: dict) -> bool:
    if not node.args or node.args[0] is not source:
        return False
    if node.op == "call_module":
        return type(modules[node.target]) is nn.ReLU and len(node.args) == 1 and not node.kwargs
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _relu_name(node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return node.target
    if node.op == "call_method":
        return f".{node.target}()"
    return f"{node.target.__module__}.{node.target.__name__}"


def _uses(graphs: list[torch.fx.Graph]) -> dict[str, int]:
    """How many nodes of the graphs reference each module or attribute path."""
    counts: dict[str, int] = {}
    for graph in graphs:
        for node in graph.nodes:
            if node.op in ("call_module", "get_attr"):
                counts[node.target] = counts.get(node.target, 0) + 1
    return counts


# Everything of a module's own state that GraphModule would not carry over by itself.
_MODULE_STATE = _HOOK_DICTS + (
    "_parameters",
    "_buffers",
    "_non_persistent_buffers_set",
    "_modules",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


class _FusedGraphModule(torch.fx.GraphModule):
    """A GraphModule that keeps all of the model it was made from: GraphModule itself copies only
    what the graph references (dropping unused parameters, buffers and submodules, and hooks),
    and does so again when unpickled."""

    def __reduce__(self):
        rebuild, args = super().__reduce__()
        return (_unpickle, (rebuild, args, type(self).__name__))


def _graph_module(root: nn.Module, graph: torch.fx.Graph, state: dict, class_name: str) -> _FusedGraphModule:
    """A GraphModule running `graph` over `root`, holding the module state `state` (a vars())."""
    gm = _FusedGraphModule(root, graph, class_name=class_name)
    made_buffers = {n: b for n, b in gm._buffers.items() if n not in state["_buffers"]}  # plain tensor attrs
    for attr in _MODULE_STATE:
        if attr in state:
            gm.__dict__[attr] = state[attr]
    for name, tensor in made_buffers.items():
        if name not in state["_parameters"]:
            gm.register_buffer(name, tensor, persistent=False)
    for name, value in state.items():  # plain attributes (config objects, flags)
        if name not in vars(gm) and not name.startswith("_"):
            gm.__dict__[name] = value
    gm.training = state["training"]
    return gm


def _unpickle(rebuild, args, class_name: str) -> _FusedGraphModule:
    loaded = rebuild(*args)
    return _graph_module(loaded, loaded.graph, args[0], class_name)


def _hooked_traced_through(module: nn.Module, prefix: str = "") -> str | None:
    """The first submodule with hooks that tracing would go through rather than keep as one call."""
    for name, child in module.named_children():
        path = _join(prefix, name)
        if _Tracer().is_leaf_module(child, path):
            continue
        if _hooked(child):
            return path
        found = _hooked_traced_through(child, path)
        if found:
            return found
    return None


def _fuse_traced(model: nn.Module, report: FuseReport) -> nn.Module:
    reason = None
    hooked = _hooked_traced_through(model)
    if hooked:  # tracing would run its hooks on placeholders, and the traced forward would not run them
        reason = f"the submodule {hooked!r} has hooks, so the forward is not traced"
    else:
        try:
            eval_graph = _trace(model, training=False)  # first: it drops the tensor constants it stores
            graph = _trace(model, training=True)
        except Exception as error:  # noqa: BLE001  (any tracing failure: nothing can be proven)
            reason = f"the forward cannot be traced by torch.fx ({_first_line(error)})"
    if reason:
        for name, m in model.named_modules():
            if type(m) is nn.Linear:
                report._skip(name, reason)
        return model
    same_in_both_modes = graph.python_code("self").src == eval_graph.python_code("self").src
    modules = dict(model.named_modules())
    uses = _uses([graph, eval_graph])  # a use in either mode counts

    def used_inside(path: str) -> bool:  # a node reaches into `path` (indexes, iterates, reads it)
        return any(target.startswith(path + ".") for target in uses)

    def ancestor_calls(path: str) -> int:  # calls of modules that contain `path`
        parts = path.split(".")
        return sum(uses.get(".".join(parts[:i]), 0) for i in range(1, len(parts)))

    reached_into = []
    for path, module in modules.items():
        if type(module) is nn.Sequential and path in uses:
            if used_inside(path) or ancestor_calls(path):
                reached_into.append(path)
            else:
                _fuse_whole_sequential(module, path, report)

    fused_any = False
    for node in list(graph.nodes):
        if node.op != "call_module" or type(modules.get(node.target)) is not nn.Linear:
            continue
        path = node.target
        relu = next(iter(node.users)) if len(node.users) == 1 else None
        if relu is None or not _is_relu(relu, node, modules):
            report._skip(path, "its output goes to something other than one ReLU")
        elif not same_in_both_modes:
            report._skip(path, "the forward depends on self.training (train and eval trace differently)")
        elif uses[path] != 2 or ancestor_calls(path):  # once in each of the two identical graphs
            report._skip(path, "it runs more than once in the forward")
        else:
            problem = _pair_problem(modules[path], modules[relu.target] if relu.op == "call_module" else None)
            if problem:
                report._skip(path, problem)
                continue
            model.set_submodule(path, FusedLinearReLU.from_linear(modules[path]))
            report.fused.append((path, _relu_name(relu)))
            relu.replace_all_uses_with(node)
            graph.erase_node(relu)
            fused_any = True
    for path in reached_into:
        for name, child in modules[path].named_modules():
            if type(child) is nn.Linear:
                report._skip(_join(path, name), f"the forward reaches into the Sequential {path!r}, not only calls it")
    if not fused_any:
        return model
    graph.lint()
    return _graph_module(model, graph, vars(model), type(model).__name__)


def fuse(model: nn.Module, report: bool = False):
    """A copy of `model` with each provably fusable nn.Linear + ReLU pair as one FusedLinearReLU.

    Returns the copy, or (copy, FuseReport) with report=True. See the module docstring for what
    is fused and what is left alone.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse: expected an nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model)
    result = FuseReport()
    global_hooks = [name for name in _GLOBAL_HOOK_DICTS if getattr(_module_globals, name, None)]
    if global_hooks:
        for name, m in model.named_modules():
            if type(m) is nn.Linear:
                result._skip(name, "global module hooks are registered (they would see the fused outputs)")
    elif type(model) is nn.Sequential:
        _fuse_whole_sequential(model, "", result)
    else:
        model = _fuse_traced(model, result)
    fused_names = {linear for linear, _ in result.fused}
    result.skipped = {name: reason for name, reason in result.skipped.items() if name not in fused_names}
    for name, m in model.named_modules():
        if type(m) is nn.Linear:
            result._skip(name, "no ReLU that only it feeds, where fuse can see it")
    return (model, result) if report else model
