"""Model-level initialization: pick a scheme per parameter, then fill them all in one pass.

`init_plan` decides (no tensor is written), `initialize` fills an existing model, `materialize`
allocates a model built on the meta device and fills it without PyTorch's default init ever
running. Every random fill of a plan goes through one `initkit.init.multi_fill_` call: on the
extension that is one parallel region over all tensors, and tensor number `row.stream` gets
exactly what `torch.ops.initkit.<kind>_fill(t, *row.params, seed, stream=row.stream)` gives.
"""

import fnmatch
import sys
import warnings
from dataclasses import dataclass, field

import torch
import torch.fx
from torch import Tensor, nn

from . import _schemes, init

# Initializing more parameters than this shows a progress bar when stderr is a terminal.
PROGRESS_MIN_PARAMS = 1_000_000_000
# With a progress bar the fill runs in pieces of about this many elements (same numbers).
_PROGRESS_CHUNK_ELEMENTS = 64 * 1024 * 1024

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
_RELU_LIKE = ("relu", "leaky_relu", "gelu", "silu")


@dataclass
class PlanRow:
    """How one parameter is initialized, and why."""

    name: str
    shape: tuple[int, ...]
    scheme: str
    reason: str
    args: dict = field(default_factory=dict)  # scheme arguments, as torch.nn.init takes them
    kind: str | None = None  # "uniform" | "normal" | "trunc_normal" | "constant" | "orthogonal" | None
    params: tuple[float, ...] = ()
    fan_in: int | None = None
    fan_out: int | None = None
    gain: float | None = None
    std: float | None = None
    bound: float | None = None
    stream: int | None = None  # Philox stream of the random fill (index into the one multi_fill_)

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


def _number(value: float | None) -> str:
    return "--" if value is None else f"{value:.4g}"


def _format_table(rows: list[PlanRow]) -> str:
    header = ("parameter", "shape", "scheme", "fan_in", "fan_out", "gain", "std", "bound", "why")
    lines = [
        (
            r.name,
            "x".join(map(str, r.shape)) or "scalar",
            r.scheme,
            "--" if r.fan_in is None else str(r.fan_in),
            "--" if r.fan_out is None else str(r.fan_out),
            _number(r.gain),
            _number(r.std),
            _number(r.bound),
            r.reason,
        )
        for r in rows
    ]
    return format_columns(header, lines)


def format_columns(header: tuple[str, ...], lines: list[tuple[str, ...]]) -> str:
    """Left-aligned text columns under a header and a rule (shared by initkit's reports)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    out.append("-" * len(out[0]))
    out.extend("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
    return "\n".join(out)


# ---- which activation follows each layer -------------------------------------------------


@dataclass(frozen=True)
class _Follower:
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


def _followers_from_fx(model: nn.Module) -> dict[str, _Follower] | None:
    try:
        graph = _LayerTracer().trace(model)
    except Exception:  # any Python the tracer cannot follow (data-dependent control flow, ...)
        return None
    modules = dict(model.named_modules())
    found: dict[str, _Follower] = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), WEIGHT_LAYERS):
            found.setdefault(str(node.target), _follow_node(node, modules))
    return found


def _follow_node(start: torch.fx.Node, modules: dict[str, nn.Module]) -> _Follower:
    """Walk the users of `start` through shape-only ops, dropout and norms to the first real op."""
    pending = list(start.users)
    seen = set()
    while pending:
        node = pending.pop(0)
        if node in seen:
            continue
        seen.add(node)
        if node.op == "output":
            return _Follower(None, detail="output layer (fx)")
        if node.op == "call_module":
            module = modules[node.target]
            activation = _activation_of_module(module)
            if activation:
                return _Follower(activation[0], activation[1], f"followed by {type(module).__name__} (fx)")
            if isinstance(module, _TRANSPARENT_MODULES):
                pending.extend(node.users)
                continue
            return _Follower(None, detail=f"followed by {type(module).__name__} (fx)")
        name = _call_name(node)
        if node.op in ("call_function", "call_method") and name in _ACTIVATION_CALLS:
            activation = _ACTIVATION_CALLS[name]
            slope = 0.0
            if activation == "leaky_relu":
                slope = float(node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1 else 0.01))
            return _Follower(activation, slope, f"followed by {name} (fx)")
        if node.op in ("call_function", "call_method") and name in _TRANSPARENT_CALLS:
            pending.extend(node.users)
            continue
        return _Follower(None, detail=f"followed by {name} (fx)")
    return _Follower(None, detail="output unused (fx)")


def _followers_from_order(model: nn.Module) -> dict[str, _Follower]:
    """The next registered leaf module after each layer (nn.Sequential order, in general)."""
    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    found = {}
    for i, (name, module) in enumerate(leaves):
        if not isinstance(module, WEIGHT_LAYERS):
            continue
        follower = _Follower(None, detail="last module: output layer (module order)")
        for _, nxt in leaves[i + 1 :]:
            activation = _activation_of_module(nxt)
            if activation:
                follower = _Follower(activation[0], activation[1], f"followed by {type(nxt).__name__} (module order)")
                break
            if not isinstance(nxt, _TRANSPARENT_MODULES):
                follower = _Follower(None, detail=f"next module is {type(nxt).__name__} (module order)")
                break
        found[name] = follower
    return found


def _followers(model: nn.Module) -> dict[str, _Follower]:
    by_order = _followers_from_order(model)
    by_fx = _followers_from_fx(model)
    return by_order if by_fx is None else {**by_order, **by_fx}


# ---- the policy ----------------------------------------------------------------------------


def _check_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")


def _auto_weight_scheme(follower: _Follower) -> tuple[str, dict, str]:
    activation, detail = follower.activation, follower.detail
    if activation in _RELU_LIKE:
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
    if scheme not in _schemes.SCHEMES:
        raise ValueError(f"policy entry {where}: unknown scheme {scheme!r}; expected one of {sorted(_schemes.SCHEMES)}")
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
    return "bias" in param_name


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


def _default_choice(local, module, param, followers, module_name, policy) -> tuple[str, dict, str]:
    """The scheme of one parameter under "auto" or a named policy (no dict entry matched)."""
    kind = type(module).__name__
    if isinstance(module, NORM_LAYERS):
        return ("zeros", {}, f"{kind} bias") if _is_bias(local) else ("ones", {}, f"{kind} weight")
    if isinstance(module, nn.PReLU):
        return "constant", {"val": module.init}, "PReLU slope, as torch"
    if _is_bias(local) or param.dim() < 2:
        return "zeros", {}, f"{kind} {'bias' if _is_bias(local) else '1-D parameter'}"
    if isinstance(module, EMBEDDINGS):
        if policy == "auto":
            return "normal", {"mean": 0.0, "std": 1.0}, f"{kind}: normal(0, 1) as torch"
        return policy, {}, f"{kind}: policy {policy!r}"
    if policy != "auto":
        return policy, {}, f"policy {policy!r}"
    if isinstance(module, WEIGHT_LAYERS) and module_name in followers:
        return _auto_weight_scheme(followers[module_name])
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
    _check_module(model)
    _check_policy(policy)
    overrides = policy if isinstance(policy, dict) else {}
    base = policy if isinstance(policy, str) else "auto"
    followers = _followers(model) if base == "auto" else {}
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
        if choice is None and base == "torch_default" and _reset_method(module) is not None:
            first = id(module) not in reset_modules
            reset_modules.add(id(module))
            reason = f"{type(module).__name__}.{_reset_method(module).__name__}()" + ("" if first else " (same call)")
            plan.append(PlanRow(full_name, tuple(param.shape), "torch_default", reason))
            continue
        if choice is None:
            fallback = "auto" if base == "torch_default" else base
            choice = _default_choice(local, module, param, followers, module_name, fallback)
        scheme, args, reason = choice
        try:
            spec = _schemes.fill_spec(scheme, param, **args)
        except ValueError as error:
            shape = list(param.shape)
            raise ValueError(f"cannot apply {scheme!r} to parameter {full_name!r} of shape {shape}: {error}") from None
        if isinstance(module, nn.Embedding) and module.padding_idx is not None and param is module.weight:
            reason += f"; row {module.padding_idx} (padding_idx) zeroed"
        plan.append(
            PlanRow(full_name, tuple(param.shape), scheme, reason, args, spec.kind, spec.params,
                    spec.fan_in, spec.fan_out, spec.gain, spec.std, spec.bound)
        )  # fmt: skip
    stream = 0
    for row in plan:
        if row.kind in _schemes.RANDOM_KINDS:
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


def _reset_method(module: nn.Module):
    return getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)


# ---- filling -------------------------------------------------------------------------------


def _apply_plan(model: nn.Module, plan: InitPlan, generator: torch.Generator | None, description: str) -> None:
    params = dict(model.named_parameters())
    random_rows = [row for row in plan if row.kind in _schemes.RANDOM_KINDS]
    tensors = [params[row.name] for row in random_rows]
    fills = [(row.kind, row.params) for row in random_rows]
    total = sum(t.numel() for t in params.values())
    with torch.no_grad(), _Progress(total, description) as bar:
        _fill_random(tensors, fills, generator, bar)
        for row in plan:
            tensor = params[row.name]
            if row.kind == "constant":
                tensor.fill_(row.params[0])
            elif row.kind == "orthogonal":
                init.orthogonal_(tensor, gain=row.params[0], generator=generator)
            else:
                continue
            bar.update(tensor.numel())
        reset_owners = {row.name.rpartition(".")[0] for row in plan if row.scheme == "torch_default"}
        for name, module in model.named_modules():
            if name in reset_owners:
                _reset_method(module)()  # zeroes an Embedding's padding row itself
                bar.update(sum(p.numel() for p in module.parameters(recurse=False)))
            elif isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].fill_(0)


def _fill_random(tensors: list[Tensor], fills, generator, bar) -> None:
    if not bar.active:
        init.multi_fill_(tensors, fills, generator)
        return
    # Same numbers in pieces, so the bar can move: one key, tensor i keeps stream i.
    on_ext = all(init._runs_on_ext(t) for t in tensors) and len({t.device for t in tensors}) == 1
    seed = init.new_seed(generator) if on_ext else None
    start = 0
    while start < len(tensors):
        stop, elements = start, 0
        while stop < len(tensors) and (stop == start or elements < _PROGRESS_CHUNK_ELEMENTS):
            elements += tensors[stop].numel()
            stop += 1
        # (the torch path fills one tensor after another from `generator`: chunking changes nothing)
        init.multi_fill_(tensors[start:stop], fills[start:stop], generator, seed=seed, first_stream=start)
        bar.update(elements)
        start = stop


class _Progress:
    """A progress bar on stderr for big models (tqdm when installed), a no-op otherwise."""

    def __init__(self, total: int, description: str):
        self.active = total >= PROGRESS_MIN_PARAMS and sys.stderr.isatty()
        self.total, self.done, self.description = total, 0, description
        self._tqdm = None
        if self.active:
            try:
                from tqdm import tqdm
            except ImportError:
                self._draw()
            else:
                self._tqdm = tqdm(total=total, desc=description, unit="param", unit_scale=True, file=sys.stderr)

    def update(self, count: int) -> None:
        if not self.active or count == 0:
            return
        self.done = min(self.total, self.done + count)
        if self._tqdm is not None:
            self._tqdm.update(count)
        else:
            self._draw()

    def _draw(self) -> None:
        fraction = self.done / self.total if self.total else 1.0
        filled = int(30 * fraction)
        sys.stderr.write(f"\r{self.description} [{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:3.0f}%")
        sys.stderr.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if not self.active:
            return
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


def initialize(model: nn.Module, policy="auto", generator: torch.Generator | None = None) -> InitPlan:
    """Initialize every parameter of `model` in one multi-tensor pass; return the plan.

    "auto": a Linear/Conv followed by ReLU, LeakyReLU (its slope), GELU or SiLU gets Kaiming
    normal (fan_in); by Tanh or Sigmoid, by nothing (output layer) or anything else, Xavier uniform
    with calculate_gain's gain; by SELU, LeCun normal. Biases 0, norm layers weight 1 / bias 0,
    Embedding normal(0, 1) (padding row 0). Activations are read from a torch.fx trace, or from
    module registration order when the model does not trace. See init_plan for the other policies.

    Random fills use one initkit.init.multi_fill_ call (one key from `generator`, the parameter with
    row.stream = i on Philox stream i); constants are written with fill_, "orthogonal" uses
    initkit.orthogonal_ per tensor, "torch_default" calls each module's reset_parameters().
    """
    _check_module(model)
    plan = init_plan(model, policy)
    _apply_plan(model, plan, generator, "initkit: initializing")
    return plan


# ---- materialize ------------------------------------------------------------------------------


def _allocate(model: nn.Module, device: torch.device) -> list[str]:
    """Give every parameter fresh (uninitialized) storage on `device`, keeping ties; move buffers.
    Returns the names of buffers that were on meta (they have no values yet)."""
    new_tensors: dict[int, Tensor] = {}
    meta_buffers = []
    for module_name, module in model.named_modules(remove_duplicate=False):
        for name, param in module._parameters.items():
            if param is None:
                continue
            if id(param) not in new_tensors:
                storage = torch.empty(param.shape, dtype=param.dtype, device=device)
                new_tensors[id(param)] = nn.Parameter(storage, requires_grad=param.requires_grad)
            module._parameters[name] = new_tensors[id(param)]
        for name, buffer in module._buffers.items():
            if buffer is None:
                continue
            if id(buffer) not in new_tensors:
                if buffer.device.type == "meta":
                    meta_buffers.append(f"{module_name}.{name}" if module_name else name)
                    new_tensors[id(buffer)] = torch.empty(buffer.shape, dtype=buffer.dtype, device=device)
                else:
                    new_tensors[id(buffer)] = buffer.to(device)
            module._buffers[name] = new_tensors[id(buffer)]
    return meta_buffers


def _fill_buffers(model: nn.Module, meta_buffers: list[str]) -> None:
    """Norm running statistics get their initial values; other buffers that lived on meta are zeroed."""
    pending = set(meta_buffers)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                prefix = f"{module_name}." if module_name else ""
                names = {prefix + n for n in ("running_mean", "running_var", "num_batches_tracked")}
                if names & pending:
                    module.reset_running_stats()
                    pending -= names
        unknown = sorted(pending)
        if unknown:
            buffers = dict(model.named_buffers(remove_duplicate=False))
            for name in unknown:
                buffers[name].zero_()
            warnings.warn(
                f"materialize: buffers {unknown} were created on the meta device and have no values; they were "
                "zeroed. Create such buffers with an explicit device (e.g. device='cpu') or recompute them.",
                stacklevel=3,
            )


def materialize(
    model: nn.Module, device="cpu", policy="auto", generator: torch.Generator | None = None
) -> InitPlan:
    """Allocate a model built under `torch.device("meta")` on `device` and initialize it in one pass.

    Like `model.to_empty(device=...)` followed by `initialize(model, policy)`, but PyTorch's default
    init never runs, peak memory stays about the model's size, and tied parameters stay tied.
    Buffers: ones already holding values are moved; BatchNorm-style running statistics are reset
    (mean 0, var 1, count 0); any other buffer left on meta is zeroed with a warning naming it.
    Returns the InitPlan.
    """
    _check_module(model)
    device = torch.device(device)
    if device.type == "meta":
        raise ValueError("materialize: the target device must hold real storage, not 'meta'")
    plan = init_plan(model, policy)  # decide first: policy errors leave the model untouched
    meta_buffers = _allocate(model, device)
    _fill_buffers(model, meta_buffers)
    _apply_plan(model, plan, generator, "initkit: materializing")
    return plan


