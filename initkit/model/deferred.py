"""deferred_init and the materialize / re-init of what it recorded.

`deferred_init(module_fn, *args, **kwargs)` runs the constructor with parameters on the meta device
and keeps, per parameter, the init the model itself asked for (recording.py). `materialize(model,
device)` then allocates each parameter once and writes it once: every random recipe in ONE
`initkit.multi_fill_` (one key; Philox stream i for the i-th parameter in sorted-name order, so the
same seed gives the same weights whatever the thread count, device or construction order), then
constants, then the exact torch replays (partial writes such as padding rows, orthogonal_, copies)
in the order the constructor made them. Values a replay reads that no tensor of the model holds any
more (a parameter before a later full write, a float32 original before a cast, the layer
`copy.deepcopy` cloned) are computed in scratch tensors; buffers computed from parameters are
computed with them. Everything is written into new tensors first and swapped into the model at the
end: when anything fails, the model is left as it was.

Sharded: `fully_shard` / `parallelize_module` after deferred_init replace parameters by DTensors of
the same names; materialize then allocates each rank's shards and gives exactly the unsharded
model's values: fused fills and constants write the shards directly; a parameter with exact
replays (padding rows, orthogonal_, creation values) is built whole in a scratch tensor on every
rank, which keeps its block (such parameters cost their full size during materialize).
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import init, sharded
from .apply import Progress, check_constant, fill_random
from .apply import initialize as initialize_by_policy
from .materialize import materialize as materialize_by_policy
from .patch import RANDOM_KINDS, Fill
from .recording import Created, Record, Recorder, Ref, apply_chain, finish, reachable
from .snapshot import restoring

_STATE = "_initkit_deferred"


@dataclass
class Recipe:
    name: str  # first name in named_parameters() / named_buffers() order (ties share one recipe)
    tensor: Tensor  # the parameter or buffer the recipe was recorded for
    record: Record


@dataclass
class DeferredState:
    recipes: list[Recipe]  # parameters, sorted by name: the random recipes' stream order
    buffers: list[Recipe]  # buffers left on the meta device, sorted by name: materialize computes them
    materialized: bool = False
    device: torch.device | None = None  # where materialize put the model


def deferred_init(module_fn, *args, **kwargs) -> nn.Module:
    """Build `module_fn(*args, **kwargs)` with its parameters on the meta device, recording how the
    constructor initializes each one; `initkit.materialize(model, device)` then fills them fused.

    Buffers are created on their real device by the constructor; buffers computed from parameters
    (`torch.ones_like(self.weight)`) stay on meta and materialize computes them. Tied parameters stay
    tied. Random fills are replayed with initkit's Philox fills (same law, not torch's bit pattern). A
    full-tensor random fill called with `generator=` draws its Philox key from that generator while
    recording (one draw, in call order) and materialize fills that tensor with it, so a seeded
    generator gives the same values as `initkit.normal_(t, ..., generator=g)` / `patch()`
    construction (re-init with policy="recorded" draws new keys for all). See
    initkit.model.recording for what is recorded.
    """
    if not callable(module_fn):
        raise TypeError(f"deferred_init: module_fn must be callable, got {type(module_fn).__name__}")
    with Recorder() as recorder:
        model = module_fn(*args, **kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"deferred_init: module_fn must return an nn.Module, got {type(model).__name__}")
    recipes = [Recipe(name, p, _parameter_record(recorder, name, p)) for name, p in model.named_parameters()]
    buffers = [Recipe(name, b, _buffer_record(recorder, name, b)) for name, b in model.named_buffers() if b.is_meta]
    owners: dict[int, str] = {}
    for recipe in recipes + buffers:
        owner = owners.setdefault(id(recipe.record), recipe.name)
        if owner != recipe.name:  # two tensors, one storage: materialize gives each its own
            recipe.record = Record.like(
                recipe.tensor,
                problem=f"it shares its storage with {owner!r} (set through .data or nn.Parameter(other)), which "
                "deferred_init cannot replay; tie them as modules do (b.weight = a.weight)",
            )
    finish([r.record for r in recipes + buffers])
    recipes.sort(key=lambda r: r.name)
    buffers.sort(key=lambda r: r.name)
    model.__dict__[_STATE] = DeferredState(recipes, buffers)
    return model


def _refuse_lazy(kind: str, name: str, tensor: Tensor) -> None:
    if nn.parameter.is_lazy(tensor):
        raise NotImplementedError(
            f"deferred_init: {kind} {name!r} belongs to a lazy module (its shape is known only after the first "
            "forward), so its init cannot be recorded; run the model once on an example input (or use the "
            "non-lazy module) before recording, or build it under initkit.patch()"
        )


def _parameter_record(recorder: Recorder, name: str, param: nn.Parameter) -> Record:
    _refuse_lazy("parameter", name, param)
    record = recorder.record_of(param)
    if record is not None:
        return record
    if not param.is_meta:  # made with values, not through nn.Parameter (copy.deepcopy of a real module)
        return Record.like(param, base=Created(param.detach(), seq=0))
    return Record.like(
        param,
        problem="it was put on the meta device without nn.Parameter or register_parameter while deferred_init "
        "recorded, so deferred_init does not know its values; build this model under initkit.patch() instead",
    )


def _buffer_record(recorder: Recorder, name: str, buffer: Tensor) -> Record:
    _refuse_lazy("buffer", name, buffer)
    record = recorder.record_of(buffer)
    if record is not None:
        return record
    return Record.like(
        buffer,
        problem="it is on the meta device and is not a tensor deferred_init saw computed during construction, "
        "so it has no values; create it on a real device, or build this model under initkit.patch()",
    )


def is_deferred(model: nn.Module) -> bool:
    """Whether `model` came from deferred_init (materialized or not)."""
    return isinstance(getattr(model, _STATE, None), DeferredState)


def _state(model: nn.Module, verb: str) -> DeferredState:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{verb}: expected an nn.Module, got {type(model).__name__}")
    state = getattr(model, _STATE, None)
    if not isinstance(state, DeferredState):
        raise ValueError(
            f"{verb}: this model has no recorded init (no recipes): build it with initkit.deferred_init(...)"
        )
    return state


def _check_replayable(kind: str, recipe: Recipe, verb: str) -> None:
    for record in reachable([recipe.record]):
        problem = record.why_not_replayable()
        if problem is not None:
            reads = "" if record is recipe.record else "it reads a tensor that has no values: "
            raise NotImplementedError(f"{verb}: cannot replay the init of {kind} {recipe.name!r}: {reads}{problem}")


def _check(model: nn.Module, state: DeferredState, verb: str) -> dict[str, nn.Parameter]:
    """The model's current parameters by recipe name, after checking every recipe still fits."""
    current = dict(model.named_parameters())
    names = {r.name for r in state.recipes}
    extra = sorted(set(current) - names)
    if extra:
        raise RuntimeError(f"{verb}: parameters {extra} were added after deferred_init recorded the model")
    for recipe in state.recipes:
        param = current.get(recipe.name)
        if param is None:
            raise RuntimeError(f"{verb}: parameter {recipe.name!r} was removed after deferred_init recorded it")
        _check_replayable("parameter", recipe, verb)
        if state.materialized:
            if param.is_meta:
                raise RuntimeError(f"{verb}: parameter {recipe.name!r} was replaced by a meta tensor")
        elif param is not recipe.tensor and not _sharded_meta(param):
            raise RuntimeError(f"{verb}: parameter {recipe.name!r} was replaced after deferred_init recorded it")
        if param.shape != recipe.record.shape:
            raise RuntimeError(
                f"{verb}: parameter {recipe.name!r} was recorded with shape {tuple(recipe.record.shape)} "
                f"but is now {tuple(param.shape)}"
            )
    return current


def _meta_buffers(model: nn.Module, state: DeferredState, verb: str) -> list[Recipe]:
    """The recipes of the buffers now on the meta device, after checking each can be computed."""
    recorded = {id(r.tensor): r for r in state.buffers}
    found = []
    for name, buffer in model.named_buffers():
        if not buffer.is_meta:
            continue
        recipe = recorded.get(id(buffer))
        if recipe is None:
            raise RuntimeError(
                f"{verb}: buffer {name!r} is on the meta device and was put there after deferred_init recorded "
                "the model, so it has no values"
            )
        _check_replayable("buffer", recipe, verb)
        found.append(recipe)
    return found


def _sharded_meta(param: Tensor) -> bool:
    """A meta DTensor parameter: fully_shard / parallelize_module replaced the recorded one (same name)."""
    return sharded.is_dtensor(param) and param.is_meta


def _local(tensor: Tensor) -> Tensor:
    return tensor.to_local() if sharded.is_dtensor(tensor) else tensor


def _fill(named: list[tuple[Record, Tensor]], generator, description: str, keys: bool) -> None:
    """Write each record into its tensor: `named` (parameters by name, then buffers: the random fills'
    stream order) and scratch tensors for the records they read that no tensor of the model holds
    (values a parameter had before a later full write, tensors computed during construction): fused
    random fills, constants, then the exact torch replays in recording order.
    `keys`: fills recorded with a `generator=` use the key drawn from it then (else they join the rest).
    Sharded: a DTensor target that exact replays write or read is computed whole in a scratch tensor
    (as unsharded) and each rank then keeps its block; random fills and constants fill shards directly."""
    if not named:
        return
    device = _local(named[0][1]).device
    records = reachable([record for record, _ in named])
    targets = {id(record): tensor for record, tensor in named}
    for record in records:
        if id(record) not in targets:
            targets[id(record)] = torch.empty_strided(record.shape, record.stride, dtype=record.dtype, device=device)
    replays = sorted(((replay, record) for record in records for replay in record.replays()), key=lambda x: x[0].seq)
    needed = {id(record) for _, record in replays} | {id(ref.record) for replay, _ in replays for ref in replay.refs()}
    scratch = {}
    for record, tensor in named:
        if id(record) in needed and sharded.is_dtensor(tensor):
            scratch[id(record)] = (tensor, torch.empty(tensor.shape, dtype=tensor.dtype, device=device))
            targets[id(record)] = scratch[id(record)][1]
    order = [(record, targets[id(record)]) for record in records]
    random = [(r, t) for r, t in order if isinstance(r.base, Fill) and r.base.kind in RANDOM_KINDS]
    keyed = [(r, t) for r, t in random if keys and r.base.key is not None]
    random = [(r, t) for r, t in random if not (keys and r.base.key is not None)]

    def resolve(value):
        if isinstance(value, Ref):
            return apply_chain(targets[id(value.record)], resolve(value.chain))
        if isinstance(value, (tuple, list)):
            return type(value)(resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return value

    total = sum(t.numel() for _, t in order)
    with torch.no_grad(), Progress(total, description) as bar:
        fill_random([t for _, t in random], [(r.base.kind, r.base.params) for r, _ in random], generator, bar)
        for record, tensor in keyed:  # alone, stream 0: the values of initkit's fill with that generator
            seed = torch.tensor(record.base.key, dtype=torch.int64, device="cpu")  # not the default device
            init.multi_fill_([tensor], [(record.base.kind, record.base.params)], seed=seed)
            bar.update(tensor.numel())
        for record, tensor in order:
            if isinstance(record.base, Fill) and record.base.kind == "constant":
                tensor.fill_(record.base.params[0])
                bar.update(tensor.numel())
        for replay, record in replays:
            view = apply_chain(targets[id(record)], resolve(replay.chain))
            replay.func(view, *resolve(replay.args), **resolve(replay.kwargs))
        for target, whole in scratch.values():
            sharded.copy_block_(target, whole)


def materialize_deferred(model: nn.Module, device="cpu", generator: torch.Generator | None = None) -> nn.Module:
    """Allocate a deferred model's parameters (and the buffers it computes from them) on `device` and
    write the recorded init, fused. Nothing in the model changes until every tensor is written."""
    verb = "materialize"
    state = _state(model, verb)
    device = torch.device(device)
    if device.type == "meta":
        raise ValueError(f"{verb}: the target device must hold real storage, not 'meta'")
    if state.materialized:
        raise RuntimeError(
            f"{verb}: the model is already materialized; re-initialize it with "
            "initkit.initialize(model, policy='recorded')"
        )
    current = _check(model, state, verb)  # validate before allocating
    buffers = _meta_buffers(model, state, verb)
    fresh = {}
    for recipe in state.recipes:
        old = current[recipe.name]
        if sharded.is_dtensor(old):  # storage for this rank's shard only
            new = nn.Parameter(torch.empty_like(old, device=device), requires_grad=old.requires_grad)
        else:
            storage = torch.empty_strided(old.shape, old.stride(), dtype=old.dtype, device=device)
            new = type(old)(storage, requires_grad=old.requires_grad)
        new.__dict__.update(old.__dict__)
        fresh[id(old)] = new
    for recipe in buffers:
        old = recipe.tensor
        fresh[id(old)] = torch.empty_strided(old.shape, old.stride(), dtype=old.dtype, device=device)
    named = [(r.record, fresh[id(current[r.name])]) for r in state.recipes]
    _fill(named + [(r.record, fresh[id(r.tensor)]) for r in buffers], generator, "initkit: materializing", keys=True)
    for buffer in model.buffers():  # real buffers: moved before anything changes, so a failure changes nothing
        if id(buffer) not in fresh and buffer.device != device:
            fresh[id(buffer)] = buffer.to(device)
    # Commit: swap the new tensors in everywhere (ties by identity).
    for module in model.modules():
        for tensors in (module._parameters, module._buffers):
            for key, tensor in tensors.items():
                if tensor is not None and id(tensor) in fresh:
                    tensors[key] = fresh[id(tensor)]
    for recipe in state.recipes:
        recipe.tensor = fresh[id(current[recipe.name])]
    state.buffers = []  # computed: they are the model's buffers now
    state.materialized = True
    state.device = state.recipes[0].tensor.device if state.recipes else device  # (with its index)
    return model


def reinitialize(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialize a deferred, materialized model in place with the scheme it was recorded with."""
    verb = "initialize(policy='recorded')"
    state = _state(model, verb)
    if not state.materialized:
        raise RuntimeError(f"{verb}: the model is still on the meta device; call initkit.materialize(model) first")
    current = _check(model, state, verb)
    named = [(r.record, current[r.name]) for r in state.recipes]
    for record, tensor in named:  # a constant that overflows a dtype the model was cast to: raise before writing
        if isinstance(record.base, Fill) and record.base.kind == "constant":
            check_constant(tensor, record.base.params[0])
    # torch's replays (orthogonal_, copies, partial writes) run after the fused fills. They ran once on
    # these dtypes and this device at materialize; after a cast or a move they can raise (orthogonal_
    # in bfloat16): then the parameters are copied first and restored on failure (a model's copy).
    moved = any(t.dtype != r.dtype or t.device != state.device for r, t in named)
    replays = any(r.replays() for r in reachable([r for r, _ in named]))
    with restoring([t for _, t in named] if moved and replays else ()):
        _fill(named, generator, "initkit: initializing", keys=False)
    return model


# ---- the public entry points (dispatch between recorded init and policies) ------------------


def materialize(model: nn.Module, device="cpu", policy=None, generator: torch.Generator | None = None):
    """Allocate a meta-device model on `device` and initialize it in one fused pass.

    - A model from `initkit.deferred_init`: its own recorded init is replayed (policy None or
      "recorded"); returns the model.
    - A model built under `torch.device("meta")`: initialized by `policy` (default "auto"); returns
      the InitPlan (see initkit.init_plan).
    """
    if policy == "recorded" or (policy is None and is_deferred(model)):
        return materialize_deferred(model, device, generator)
    plan = materialize_by_policy(model, device, "auto" if policy is None else policy, generator)
    model.__dict__.pop(_STATE, None)  # a policy replaced the recorded init
    return plan


def initialize(model: nn.Module, policy="auto", generator: torch.Generator | None = None):
    """Initialize every parameter of `model` in one fused pass.

    policy="recorded" re-runs the init a `deferred_init` model was recorded with (new seed, same
    scheme) and returns the model; any other policy is initkit's (see initkit.init_plan: "auto"
    replaces the model's own scheme) and returns the InitPlan.
    """
    if policy == "recorded":
        return reinitialize(model, generator)
    return initialize_by_policy(model, policy, generator)


initialize.__doc__ += "\n\n" + (initialize_by_policy.__doc__ or "")
