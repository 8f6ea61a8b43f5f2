"""initkit.fuse(model): a copy of `model` in which each nn.Linear whose output provably goes only
to a ReLU runs as one FusedLinearReLU. The copy is of the model's own class and runs the model's
own code: same Parameters' values, outputs, gradients, state_dict keys, buffers, attributes,
methods and hooks, in train and in eval mode. Pairs it cannot prove are left unfused, and
`fuse(model, report=True)` says which were fused and why the others were not.

What counts as proof. fuse reads the model's code (the methods of its modules' classes, with
inspect.getsource; nn.Module's own methods and __init__, which ran before fuse, excepted) and the
hooks registered on its modules; it runs nothing.
- An nn.Sequential (exactly that class) that is only ever called as a whole: the model itself, a
  Sequential inside such a Sequential, or one whose parent's code only calls it (`self.seq(x)`, or
  `for layer in self.seq: x = layer(x)` with `layer` used nowhere else). A Linear at index i
  followed by nn.ReLU at i + 1 becomes FusedLinearReLU at i and nn.Identity at i + 1.
- Any other module: every use of the Linear `self.fc` in its class's code must be `relu(self.fc(x))`
  or `h = self.fc(x)` directly followed by `h = relu(h)` or by `return relu(h)` (where no finally
  block or closure reads h), relu being an out-of-place F.relu, torch.relu, `.relu()` or nn.ReLU
  child; reading its weight, bias, in_features or out_features is allowed too. Such code gives the
  Linear's output to the ReLU and to nothing else whatever branch, loop, grad mode, autocast
  region or argument leads to it, so the proof holds on every execution; a trace (torch.fx) could
  only show one execution. The FusedLinearReLU takes the Linear's slot and the model's ReLU call
  stays, now applied to relu(linear(x)): relu is idempotent and its gradient mask (y > 0) is the
  same, so outputs and gradients are unchanged. That kept ReLU costs one elementwise pass forward
  and one backward: measured 0.1-2.3% of a Linear-ReLU-Linear-ReLU-Linear model's time (batch
  32/256, width 256/1024, forward and forward+backward, one CPU thread); end to end 1.00-1.03x
  the time of the former approach (a torch.fx GraphModule without it) where the loaded machine
  allowed a clean measurement (README). An in-place ReLU cannot stay (it would overwrite the
  output that FusedLinearReLU keeps for backward): such pairs are left.
- The model's code must reach a module only in ways fuse follows. Below a module whose code uses
  `self` other than as `self.name` (getattr(self, ...), passing self on), lists its submodules
  (self.children(), self.modules(), self._modules, ...) or uses a child other than by calling it
  (self.seq[0], self.block.fc, f(self.block)), nothing is fused; nor below a module with such a
  hook, one registered at two paths, or one held by a plain attribute (a list, a bound method, a
  closure). Code outside the model that calls `fused.fc(x)` itself gets relu(linear(x)).
Neither the Linear nor the ReLU module may have hooks (module hooks or global ones), and the Linear
must hold nothing but its weight and bias.
"""

import ast
import copy
import functools
import inspect
import textwrap
import types
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module_globals

from ..nn import FusedLinearReLU
from .table import format_columns

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)
# Attributes a FusedLinearReLU has with the Linear's values: code may read them.
_LINEAR_READS = ("weight", "bias", "in_features", "out_features")
# What of `self` hands out submodules by other means than their names.
_LISTS_SUBMODULES = (
    "_modules",
    "__dict__",
    "__getattr__",
    "__getattribute__",
    "children",
    "named_children",
    "modules",
    "named_modules",
    "get_submodule",
    "apply",
)
_MODULE_INTERNALS = frozenset(vars(nn.Module()))
_INPLACE = object()  # a ReLU that writes its input


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

    def _skip_below(self, module: nn.Module, path: str, reason: str) -> None:
        for name, m in module.named_modules(prefix=path):
            if type(m) is nn.Linear:
                self._skip(name, reason)


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
        return "the ReLU has hooks, which would see its input already through a ReLU"
    return None


def _fuse_pairs(seq: nn.Sequential, prefix: str, report: FuseReport, reached: dict) -> None:
    """Fuse adjacent Linear, ReLU children of `seq`, which is only ever called as a whole."""
    names = list(seq._modules)
    for i, name in enumerate(names[:-1]):
        linear, relu = seq._modules[name], seq._modules[names[i + 1]]
        if type(linear) is not nn.Linear or type(relu) is not nn.ReLU:
            continue
        problem = reached.get(id(linear)) or _pair_problem(linear, relu)
        if problem:
            report._skip(_join(prefix, name), problem)
            continue
        seq._modules[name] = FusedLinearReLU.from_linear(linear)
        seq._modules[names[i + 1]] = nn.Identity()
        report.fused.append((_join(prefix, name), _join(prefix, names[i + 1])))


def _held_modules(value) -> list[nn.Module]:
    """The modules a plain attribute's value holds: itself, or in containers, bound methods,
    partials, closures and plain objects' attributes."""
    found, seen, todo = [], set(), [value]
    while todo:
        value = todo.pop()
        if id(value) in seen or isinstance(value, (torch.Tensor, str, bytes, type, types.ModuleType)):
            continue
        seen.add(id(value))
        if isinstance(value, nn.Module):
            found.append(value)
        elif isinstance(value, dict):
            todo += [*value.keys(), *value.values()]
        elif isinstance(value, (list, tuple, set, frozenset)):
            todo += value
        elif isinstance(value, types.MethodType):
            todo += [value.__self__, value.__func__]
        elif isinstance(value, functools.partial):
            todo += [value.func, *value.args, *value.keywords.values()]
        elif isinstance(value, types.FunctionType):
            for cell in value.__closure__ or ():
                try:
                    todo.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    pass
        else:
            todo += getattr(value, "__dict__", {}).values()
    return found


def _reached_outside_the_code(model: nn.Module) -> dict[int, str]:
    """id -> why, for the modules that code fuse does not read may reach."""
    paths: dict[int, list[str]] = {}
    for path, m in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(m), []).append(path)
    reasons = {}
    for module_id, names in paths.items():
        if len(names) > 1:
            reasons[module_id] = f"the module {names[0]!r} is also registered as {names[1]!r}"
    for path, m in model.named_modules():
        for attr, value in vars(m).items():
            if attr in _MODULE_INTERNALS:
                continue
            for held in _held_modules(value):
                where = _join(path, attr)
                reasons.setdefault(id(held), f"the plain attribute {where!r} holds a module that contains it")
    return reasons


@dataclass
class _Use:
    kind: str  # "relu": the call's output goes only to `relu`; "call"; "read" (weight, ...); "other"
    where: str
    relu: object = None  # a ReLU function's name, _INPLACE, or ("child", name) for an nn.ReLU child


def _code_of(module: nn.Module, path: str, methods: bool):
    """(where, function, whether its first parameter is the module) for each method of the
    module's classes (if `methods`) and each of its hooks."""
    for klass in type(module).__mro__ if methods else ():
        if klass in (nn.Module, object):
            continue
        for name, attr in vars(klass).items():
            if name == "__init__":  # it ran before fuse; what it kept is checked as attributes
                continue
            functions = (attr.fget, attr.fset, attr.fdel) if isinstance(attr, property) else (attr,)
            for function in functions:
                unbound = isinstance(function, (staticmethod, classmethod))  # not given the module
                function = getattr(function, "__func__", function)
                if isinstance(function, types.FunctionType):
                    yield f"{klass.__qualname__}.{name}", function, not unbound
    for attr in _HOOK_DICTS:
        for hook in getattr(module, attr).values():
            yield f"a hook on {path or 'the model'}", hook, True


def _parse(function) -> tuple[ast.AST, str]:
    """The function's syntax tree and the name of its first parameter."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    parameters = list(inspect.signature(function).parameters)
    return tree, parameters[0] if parameters else ""


class _Reader:
    """How one function uses a module's children (`uses`), or why it may reach any of them (`escape`)."""

    def __init__(self, module: nn.Module, function, where: str, tree: ast.AST, self_name: str):
        self.module, self.where, self.self_name = module, where, self_name
        self.globals = getattr(function, "__globals__", {})
        self.tree = tree
        self.parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        self.local_names = set()  # names the code binds itself: they may shadow F, torch or relu
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                self.local_names.add(node.id)
            elif isinstance(node, ast.arg):
                self.local_names.add(node.arg)
            elif isinstance(node, ast.alias):
                self.local_names.add((node.asname or node.name).split(".")[0])
            elif isinstance(getattr(node, "name", None), str):  # def, class, except ... as, match ... as
                self.local_names.add(node.name)
        self.escape = None
        self.uses: dict[str, list[_Use]] = {}
        self.relu_after = self._relus_after_assignments(tree)
        for node in ast.walk(tree):
            if self.escape:
                break
            if self._is_self(node):
                self._read_self(node)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super":
                attribute = self.parents.get(node)
                if isinstance(attribute, ast.Attribute) and attribute.attr in _LISTS_SUBMODULES:
                    self.escape = f"{where} lists submodules (super().{attribute.attr})"

    def _is_self(self, node) -> bool:
        return isinstance(node, ast.Name) and node.id == self.self_name

    def _read_self(self, node: ast.Name) -> None:
        parent = self.parents.get(node)
        if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and node in parent.args:
            if parent.func.id in ("super", "isinstance", "type"):  # these hand out no submodule
                return
        if not (isinstance(parent, ast.Attribute) and parent.value is node):
            self.escape = f"{self.where} uses {self.self_name} other than as {self.self_name}.<name>"
        elif parent.attr in _LISTS_SUBMODULES:
            self.escape = f"{self.where} lists submodules ({self.self_name}.{parent.attr})"
        elif isinstance(self.module._modules.get(parent.attr), nn.Module):
            self.uses.setdefault(parent.attr, []).append(self._use_of_child(parent))

    def _use_of_child(self, attribute: ast.Attribute) -> _Use:
        parent = self.parents.get(attribute)
        if isinstance(parent, ast.Call) and parent.func is attribute:
            relu = None
            if len(parent.args) == 1 and not parent.keywords and not isinstance(parent.args[0], ast.Starred):
                relu = self._relu_of(parent) or self.relu_after.get(parent)
            return _Use("relu" if relu else "call", self.where, relu)
        if isinstance(parent, ast.For) and parent.iter is attribute and self._applies_in_turn(parent):
            return _Use("call", self.where)
        if isinstance(parent, ast.Attribute) and parent.attr in _LINEAR_READS and isinstance(parent.ctx, ast.Load):
            return _Use("read", self.where)
        return _Use("other", self.where)

    def _applies_in_turn(self, loop: ast.For) -> bool:
        """`for layer in self.seq: x = layer(x)`, with `layer` used nowhere else (after the loop it
        would hold the last child): the same as x = self.seq(x)."""
        if loop.orelse or len(loop.body) != 1 or not isinstance(loop.target, ast.Name):
            return False
        step, layer = loop.body[0], loop.target.id
        if not (isinstance(step, ast.Assign) and len(step.targets) == 1 and isinstance(step.targets[0], ast.Name)):
            return False
        call, x = step.value, step.targets[0].id
        in_loop = set(ast.walk(loop))
        return (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == layer != x
            and len(call.args) == 1
            and isinstance(call.args[0], ast.Name)
            and call.args[0].id == x
            and not call.keywords
            and not any(isinstance(n, ast.Name) and n.id == layer and n not in in_loop for n in ast.walk(self.tree))
        )

    def _read_after_return(self, name: str, statement: ast.Return) -> bool:
        """Whether the local `name` may still be read after `statement` returns: by a finally block
        or by a nested function or lambda (a closure)."""
        enclosing, node = set(), statement
        while node in self.parents:
            node = self.parents[node]
            enclosing.add(node)
            if isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))) and node.finalbody:
                return True
        closures = (
            n
            for n in ast.walk(self.tree)
            if isinstance(n, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef)) and n not in enclosing
        )
        return any(isinstance(m, ast.Name) and m.id == name for c in closures for m in ast.walk(c))

    def _relu_of(self, argument):
        """The ReLU that the expression `argument` is directly given to, and to nothing else; else None."""
        call = self.parents.get(argument)
        if isinstance(call, ast.Attribute) and call.value is argument:  # argument.relu()
            method, call = call, self.parents.get(call)
            if not isinstance(call, ast.Call) or call.func is not method or call.args or call.keywords:
                return None
            return {"relu": ".relu()", "relu_": _INPLACE}.get(method.attr)
        if not isinstance(call, ast.Call) or not call.args or call.args[0] is not argument:
            return None
        function, keywords = self._resolve(call.func), {k.arg: k.value for k in call.keywords}
        if len(call.args) > 1 or set(keywords) - ({"inplace"} if function is F.relu else set()):
            return None
        if function in (F.relu_, torch.relu_):
            return _INPLACE
        if function in (F.relu, torch.relu):
            if "inplace" in keywords:
                inplace = keywords["inplace"]
                return _INPLACE if isinstance(inplace, ast.Constant) and inplace.value is True else None
            return f"{function.__module__}.{function.__name__}"
        if isinstance(function, nn.ReLU):
            return _INPLACE if function.inplace else ("child", call.func.attr)
        return None

    def _resolve(self, expression):
        """The object a dotted name in the code names: a ReLU function through the function's
        globals and Python modules, or a child of self; None where it cannot be known."""
        names = []
        while isinstance(expression, ast.Attribute):
            names.append(expression.attr)
            expression = expression.value
        if not isinstance(expression, ast.Name):
            return None
        if expression.id == self.self_name:
            return self.module._modules.get(names[0]) if len(names) == 1 else None
        if expression.id in self.local_names or expression.id not in self.globals:
            return None
        value = self.globals[expression.id]
        for name in reversed(names):
            if not isinstance(value, types.ModuleType):  # attributes of other objects may be computed
                return None
            value = getattr(value, name, None)
        return value

    def _relus_after_assignments(self, tree) -> dict:
        """Call node -> ReLU for `h = self.fc(x)` directly followed by `h = relu(h)` or `return relu(h)`."""
        found = {}
        for node in ast.walk(tree):
            for body in (getattr(node, f, None) for f in ("body", "orelse", "finalbody")):
                if not isinstance(body, list):
                    continue
                for first, then in zip(body, body[1:]):
                    if not (isinstance(first, ast.Assign) and len(first.targets) == 1):
                        continue
                    target = first.targets[0]
                    if not isinstance(target, ast.Name) or not isinstance(first.value, ast.Call):
                        continue
                    if isinstance(then, ast.Assign) and [type(t) for t in then.targets] == [ast.Name]:
                        if then.targets[0].id != target.id:
                            continue
                    elif not isinstance(then, ast.Return):
                        continue
                    call = then.value  # relu(h) or h.relu(): h is its first argument or the method's object
                    if not isinstance(call, ast.Call):
                        continue
                    argument = call.args[0] if call.args else getattr(call.func, "value", None)
                    if isinstance(then, ast.Return) and self._read_after_return(target.id, then):
                        continue  # there the old value of h would be read: the Linear's output
                    if isinstance(argument, ast.Name) and argument.id == target.id:
                        relu = self._relu_of(argument)
                        if relu:
                            found[first.value] = relu
        return found


def _read_code(module: nn.Module, path: str, parsed: dict, methods: bool) -> tuple[str | None, dict[str, list[_Use]]]:
    """How the module's code (its class's methods if `methods`, its hooks) uses its children, or why
    it may reach any of them."""
    uses: dict[str, list[_Use]] = {}
    for where, function, bound in _code_of(module, path, methods):
        if function not in parsed:
            try:
                parsed[function] = _parse(function)
            except (OSError, TypeError, SyntaxError, ValueError):
                parsed[function] = None
        if parsed[function] is None:
            return f"the source of {where} cannot be read", {}
        tree, first_parameter = parsed[function]
        reader = _Reader(module, function, where, tree, first_parameter if bound else "")
        if reader.escape:
            return reader.escape, {}
        for name, found in reader.uses.items():
            uses.setdefault(name, []).extend(found)
    return None, uses


def _fuse_linear(module: nn.Module, name: str, path: str, uses: dict, report: FuseReport) -> None:
    """Fuse the Linear child `name` of a module that is not a Sequential, if its uses allow."""
    linear_path = _join(path, name)
    other = [u for u in uses.get(name, []) if u.kind not in ("relu", "read")]
    relus = [u.relu for u in uses.get(name, []) if u.kind == "relu"]
    if other:
        report._skip(linear_path, f"its output goes to something other than one ReLU in {other[0].where}")
        return
    if not relus:
        return
    if _INPLACE in relus:
        report._skip(
            linear_path,
            "the ReLU after it works in place, which would overwrite the output FusedLinearReLU keeps for backward",
        )
        return
    relu_modules, relu_names = [], []
    for relu in relus:
        if isinstance(relu, tuple):  # an nn.ReLU child: the code must only call it
            child = relu[1]
            if any(u.kind not in ("relu", "call") for u in uses.get(child, [])):
                report._skip(linear_path, f"the ReLU {_join(path, child)!r} is used other than by calling it")
                return
            relu_modules.append(module._modules[child])
            relu = _join(path, child)
        relu_names.append(relu)
    for relu_module in relu_modules or [None]:
        problem = _pair_problem(module._modules[name], relu_module)
        if problem:
            report._skip(linear_path, problem)
            return
    module._modules[name] = FusedLinearReLU.from_linear(module._modules[name])
    report.fused.append((linear_path, ", ".join(dict.fromkeys(relu_names))))


def _fuse_below(module: nn.Module, path: str, report: FuseReport, reached: dict, parsed: dict) -> None:
    """Fuse what can be proven below `module`, which only its own code and hooks reach into."""
    if not any(type(m) is nn.Linear for m in module.modules()):
        return
    sequential = type(module) is nn.Sequential  # called as a whole: its forward calls each child in turn
    escape, uses = _read_code(module, path, parsed, methods=not sequential)
    if sequential and not escape:
        _fuse_pairs(module, path, report, reached)
    for name, child in list(module._modules.items()):
        child_path = _join(path, name)
        if child is None:
            continue
        reason = escape or reached.get(id(child))
        if not reason and type(child) is not nn.Linear:
            other = [u for u in uses.get(name, []) if u.kind not in ("relu", "call")]
            if other:
                reason = f"{other[0].where} uses {child_path!r} other than by calling it"
        if reason:
            report._skip_below(child, child_path, reason)
        elif type(child) is nn.Linear:
            if not sequential:  # a Sequential's pairs are fused above
                _fuse_linear(module, name, path, uses, report)
        else:
            _fuse_below(child, child_path, report, reached, parsed)


def fuse(model: nn.Module, report: bool = False):
    """A copy of `model` with each provably fusable nn.Linear + ReLU pair as one FusedLinearReLU.

    Returns the copy, or (copy, FuseReport) with report=True. See the module docstring for what
    is fused and what is left alone.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse: expected an nn.Module, got {type(model).__name__}")
    try:
        model = copy.deepcopy(model)
    except Exception as error:  # noqa: BLE001  (whatever fails to copy: fuse works on a copy only)
        message = str(error).strip().splitlines()
        raise TypeError(
            f"fuse: cannot copy the model ({type(error).__name__}: {message[0] if message else ''}); "
            "fuse changes a deep copy only, and the model is left as it was"
        ) from error
    result = FuseReport()
    global_hooks = [name for name in _GLOBAL_HOOK_DICTS if getattr(_module_globals, name, None)]
    reached = _reached_outside_the_code(model)
    if global_hooks:
        result._skip_below(model, "", "global module hooks are registered (they would see the fused outputs)")
    elif id(model) in reached:
        result._skip_below(model, "", reached[id(model)])
    else:
        _fuse_below(model, "", result, reached, {})
    fused_names = {linear for linear, _ in result.fused}
    result.skipped = {name: reason for name, reason in result.skipped.items() if name not in fused_names}
    for name, m in model.named_modules():
        if type(m) is nn.Linear:
            result._skip(name, "no ReLU that only it feeds, where fuse can see it")
    return (model, result) if report else model
