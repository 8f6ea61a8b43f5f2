"""Init policies and plans: which scheme each parameter gets, and why, without writing anything.

A policy is "auto" (activation-aware), a named scheme for every weight, "torch_default" (each
module's reset_parameters()), or a dict of overrides. `init_plan` turns it into an InitPlan: one
PlanRow per parameter holding the FillSpec (schemes.py) it will be filled with. initialize()
(apply.py) and materialize() (materialize.py) run plans.
"""

import fnmatch
from dataclasses import dataclass, field

from torch import nn

from .. import init, schemes
from ..schemes import FillSpec
from .activations import EMBEDDINGS, NORM_LAYERS, RELU_LIKE, WEIGHT_LAYERS, Follower, followers
from .table import format_columns, number

NAMED_POLICIES = (
    "auto",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "lecun_normal",
    "orthogonal",
    "torch_default",
)


def _from_spec(name: str, missing=None) -> property:
    return property(lambda row: missing if row.spec is None else getattr(row.spec, name))


@dataclass
class PlanRow:
    """How one parameter is initialized, and why: `spec` is what it is filled with (None when a
    module's reset_parameters() or nothing fills it); kind, params, fan_in, ... read from it."""

    name: str
    shape: tuple[int, ...]
    scheme: str
    reason: str
    args: dict = field(default_factory=dict)  # scheme arguments, as torch.nn.init takes them
    spec: FillSpec | None = None
    stream: int | None = None  # Philox stream of the random fill (index into the one multi_fill_)

    kind = _from_spec("kind")  # "uniform" | "normal" | "trunc_normal" | "constant" | "orthogonal" | None
    params = _from_spec("params", ())
    fan_in = _from_spec("fan_in")
    fan_out = _from_spec("fan_out")
    gain = _from_spec("gain")
    std = _from_spec("std")
    bound = _from_spec("bound")

    def __str__(self) -> str:
        return _format_table([self])


class InitPlan(list):
    """The PlanRows of a model, in named_parameters() order; str() is a table."""

    def __str__(self) -> str:
        return _format_table(self)

    def row(self, name: str) -> PlanRow:
        for row in self:
            if row.name == name:
                return row
        raise KeyError(name)


def _format_table(rows: list[PlanRow]) -> str:
    header = ("parameter", "shape", "scheme", "fan_in", "fan_out", "gain", "std", "bound", "why")
    lines = [
        (
            r.name,
            "x".join(map(str, r.shape)) or "scalar",
            r.scheme,
            "--" if r.fan_in is None else str(r.fan_in),
            "--" if r.fan_out is None else str(r.fan_out),
            number(r.gain),
            number(r.std),
            number(r.bound),
            r.reason,
        )
        for r in rows
    ]
    return format_columns(header, lines)


# ---- the policy ----------------------------------------------------------------------------


def check_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")


def _auto_weight_scheme(follower: Follower) -> tuple[str, dict, str]:
    activation, detail = follower.activation, follower.detail
    if activation in RELU_LIKE:
        if activation == "leaky_relu":
            return "kaiming_normal", {"a": follower.slope, "nonlinearity": "leaky_relu"}, detail
        note = "" if activation == "relu" else f"; {activation}: ReLU gain"
        return "kaiming_normal", {"nonlinearity": "relu"}, detail + note
    if activation == "selu":
        return "lecun_normal", {}, detail
    if activation in ("tanh", "sigmoid"):
        return "xavier_uniform", {"gain": init.calculate_gain(activation)}, detail
    return "xavier_uniform", {"gain": 1.0}, detail


def _parse_scheme(value, where: str) -> tuple[str, dict]:
    if isinstance(value, str):
        scheme, args = value, {}
    elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], dict):
        scheme, args = value
    else:
        raise TypeError(f"policy entry {where}: expected a scheme name or (name, {{args}}), got {value!r}")
    if scheme not in schemes.SCHEMES and scheme != "keep":
        known = sorted([*schemes.SCHEMES, "keep"])
        raise ValueError(f"policy entry {where}: unknown scheme {scheme!r}; expected one of {known}")
    return scheme, dict(args)


def _check_policy(policy) -> None:
    if isinstance(policy, str):
        if policy not in NAMED_POLICIES:
            raise ValueError(f"unknown init policy {policy!r}; expected one of {list(NAMED_POLICIES)} or a dict")
        return
    if not isinstance(policy, dict):
        raise TypeError(f"policy must be a name or a dict, got {type(policy).__name__}")
    for key, value in policy.items():
        if not (isinstance(key, str) or (isinstance(key, type) and issubclass(key, nn.Module))):
            raise TypeError(f"policy keys must be nn.Module types or parameter-name globs, got {key!r}")
        _parse_scheme(value, repr(key))


def _is_bias(param_name: str) -> bool:
    # "bias", "in_proj_bias" (nn.MultiheadAttention); not "bias_proj" or "unbiased_weight"
    return param_name == "bias" or param_name.endswith("_bias")


def _owners(model: nn.Module) -> list[tuple[str, str, nn.Module, nn.Parameter]]:
    """(full name, local name, owning module, parameter), each parameter once (first owner)."""
    seen, owners = set(), []
    for module_name, module in model.named_modules():
        for local, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            owners.append((f"{module_name}.{local}" if module_name else local, local, module, param))
    return owners


def _default_choice(local, module, param, layer_followers, module_name, policy) -> tuple[str, dict, str]:
    """The scheme of one parameter under "auto" or a named policy (no dict entry matched)."""
    kind = type(module).__name__
    if isinstance(module, NORM_LAYERS):
        return ("zeros", {}, f"{kind} bias") if _is_bias(local) else ("ones", {}, f"{kind} weight")
    if isinstance(module, nn.PReLU):
        return "constant", {"val": module.init}, "PReLU slope, as torch"
    if _is_bias(local):
        return "zeros", {}, f"{kind} bias"
    if param.dim() < 2:  # a custom norm's scale, a temperature, ...: no rule fits all of them
        return "keep", {}, f"{kind}.{local}: {param.dim()}-D parameter of a module initkit does not know: keeps the module's own init"
    if isinstance(module, EMBEDDINGS):
        if policy == "auto":
            return "normal", {"mean": 0.0, "std": 1.0}, f"{kind}: normal(0, 1) as torch"
        return policy, {}, f"{kind}: policy {policy!r}"
    if policy != "auto":
        return policy, {}, f"policy {policy!r}"
    if isinstance(module, WEIGHT_LAYERS) and module_name in layer_followers:
        return _auto_weight_scheme(layer_followers[module_name])
    return "xavier_uniform", {"gain": 1.0}, f"{kind}: no activation known, Xavier"


def init_plan(model: nn.Module, policy="auto") -> InitPlan:
    """Decide how `initialize(model, policy)` would fill each parameter, without writing anything.

    policy: "auto" (activation-aware, see initialize), a scheme name applied to every weight with
    torch.nn.init's default arguments ("xavier_uniform", "kaiming_normal", ..., "torch_default"),
    or a dict {module type or parameter-name glob: scheme or (scheme, {args})} whose entries
    override "auto". A type entry covers the module's own non-bias parameters (a tied parameter
    belongs to its first module); a glob matches full parameter names, any of a tied parameter's
    names (fnmatch, e.g. "head.weight", "*.bias"); globs win over types; first match wins.
    """
    check_module(model)
    _check_policy(policy)
    overrides = policy if isinstance(policy, dict) else {}
    base = policy if isinstance(policy, str) else "auto"
    layer_followers = followers(model) if base == "auto" else {}
    module_names = {id(m): name for name, m in model.named_modules()}
    aliases: dict[int, list[str]] = {}  # every name of each parameter (tied ones have several)
    for name, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(name)

    plan = InitPlan()
    reset_modules = set()
    for full_name, local, module, param in _owners(model):
        if isinstance(param, nn.parameter.UninitializedParameter):
            raise ValueError(f"parameter {full_name!r} is lazy (uninitialized): run a forward pass first")
        module_name = module_names[id(module)]
        choice = _override(overrides, aliases[id(param)], local, module)
        if param.numel() == 0:  # as torch.nn.init: nothing to fill (and no fan to divide by)
            plan.append(PlanRow(full_name, tuple(param.shape), "empty", "zero elements: nothing to fill"))
            continue
        if choice is None and base == "torch_default" and reset_method(module) is not None:
            first = id(module) not in reset_modules
            reset_modules.add(id(module))
            reason = f"{type(module).__name__}.{reset_method(module).__name__}()" + ("" if first else " (same call)")
            plan.append(PlanRow(full_name, tuple(param.shape), "torch_default", reason))
            continue
        if choice is None:
            fallback = "auto" if base == "torch_default" else base
            choice = _default_choice(local, module, param, layer_followers, module_name, fallback)
        scheme, args, reason = choice
        if scheme == "keep":
            plan.append(PlanRow(full_name, tuple(param.shape), scheme, reason))
            continue
        try:
            spec = schemes.fill_spec(scheme, param, **args)
        except ValueError as error:
            shape = list(param.shape)
            raise ValueError(f"cannot apply {scheme!r} to parameter {full_name!r} of shape {shape}: {error}") from None
        if isinstance(module, EMBEDDINGS) and module.padding_idx is not None and param is module.weight:
            reason += f"; row {module.padding_idx} (padding_idx) zeroed"
        plan.append(PlanRow(full_name, tuple(param.shape), scheme, reason, args, spec))
    stream = 0
    for row in plan:
        if row.kind in schemes.RANDOM_KINDS:
            row.stream = stream
            stream += 1
    return plan


def _override(overrides: dict, names: list[str], local: str, module: nn.Module) -> tuple[str, dict, str] | None:
    for key, value in overrides.items():
        if isinstance(key, str) and any(fnmatch.fnmatchcase(name, key) for name in names):
            return (*_parse_scheme(value, repr(key)), f"policy entry {key!r}")
    for key, value in overrides.items():
        if isinstance(key, type) and isinstance(module, key) and not _is_bias(local):
            return (*_parse_scheme(value, key.__name__), f"policy entry {key.__name__}")
    return None


def reset_method(module: nn.Module):
    return getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
