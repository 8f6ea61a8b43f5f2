"""deferred_init and the materialize / re-init of what it recorded.

`deferred_init(module_fn, *args, **kwargs)` runs the constructor with parameters on the meta device
and keeps, per parameter, the init the model itself asked for (recording.py). `materialize(model,
device)` then allocates each parameter once and writes it once: every random recipe in ONE
`initkit.multi_fill_` (one key; Philox stream i for the i-th parameter in sorted-name order, so the
same seed gives the same weights whatever the thread count, device or construction order), then
constants, then the exact torch replays (partial writes such as padding rows, orthogonal_, copies)
in the order the constructor made them. Everything is written into new tensors first and swapped
into the model at the end: when anything fails, the model is left as it was.

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
from .recording import Record, Recorder, Ref, Replay, apply_chain
from .snapshot import restoring

_STATE = "_initkit_deferred"


@dataclass
class Recipe:
    name: str  # first name in named_parameters() order (ties share one recipe)
    param: nn.Parameter  # the parameter the recipe was recorded for
    record: Record


@dataclass
class DeferredState:
    recipes: list[Recipe]  # sorted by name: the random recipes' stream order
    materialized: bool = False


def deferred_init(module_fn, *args, **kwargs) -> nn.Module:
    """Build `module_fn(*args, **kwargs)` with its parameters on the meta device, recording how the
    constructor initializes each one; `initkit.materialize(model, device)` then fills them fused.

    Buffers are created on their real device by the constructor. Tied parameters stay tied.
    Random fills are replayed with initkit's Philox fills (same law, not torch's bit pattern). A
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
    recipes = []
    for name, param in model.named_parameters():
        record = recorder.record_of(param)
        if record is None:
            record = Record(param.shape, problem="it was not created while deferred_init recorded")
        recipes.append(Recipe(name, param, record))
    recorder.finish([r.record for r in recipes])
    recipes.sort(key=lambda r: r.name)
    model.__dict__[_STATE] = DeferredState(recipes)
    return model


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
        problem = recipe.record.why_not_replayable()
        if problem is not None:
            raise NotImplementedError(f"{verb}: cannot replay the init of parameter {recipe.name!r}: {problem}")
        if state.materialized:
            if param.is_meta:
                raise RuntimeError(f"{verb}: parameter {recipe.name!r} was replaced by a meta tensor")
        elif param is not recipe.param and not _sharded_meta(param):
            raise RuntimeError(f"{verb}: parameter {recipe.name!r} was replaced after deferred_init recorded it")
        if param.shape != recipe.record.shape:
            raise RuntimeError(
                f"{verb}: parameter {recipe.name!r} was recorded with shape {tuple(recipe.record.shape)} "
                f"but is now {tuple(param.shape)}"
            )
    return current


def _sharded_meta(param: Tensor) -> bool:
    """A meta DTensor parameter: fully_shard / parallelize_module replaced the recorded one (same name)."""
    return sharded.is_dtensor(param) and param.is_meta


def _refs(value) -> list[Ref]:
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, (tuple, list)):
        return [ref for v in value for ref in _refs(v)]
    if isinstance(value, dict):
        return [ref for v in value.values() for ref in _refs(v)]
    return []


def _scratch_for_replays(state: DeferredState, targets: dict[str, Tensor]) -> dict[str, Tensor]:
    """Unsharded stand-ins for the DTensor targets that exact torch replays write or read (padding rows,
    orthogonal_, copies): the replays run on the whole tensor, as unsharded, and each rank then keeps
    its block. Random fills and constants need none: they fill shards directly."""
    replays = [r.record.base for r in state.recipes if isinstance(r.record.base, Replay)]
    replays += [op for r in state.recipes for op in r.record.ops]
    names = {id(r.record): r.name for r in state.recipes}
    needed = {r.name for r in state.recipes if isinstance(r.record.base, Replay) or r.record.ops}
    needed |= {names[id(ref.record)] for replay in replays for ref in _refs((replay.chain, replay.args, replay.kwargs))}
    return {
        name: torch.empty(targets[name].shape, dtype=targets[name].dtype, device=targets[name].to_local().device)
        for name in sorted(needed)
        if sharded.is_dtensor(targets[name])
    }


def _fill(state: DeferredState, targets: dict[str, Tensor], generator, description: str, keys: bool) -> None:
    """Write every recipe into `targets` (recipe name -> tensor): fused random fills, constants, replays.
    `keys`: fills recorded with a `generator=` use the key drawn from it then (else they join the rest)."""
    scratch = _scratch_for_replays(state, targets)
    sharded_targets = {name: targets[name] for name in scratch}
    targets = {**targets, **scratch}
    by_record = {id(r.record): targets[r.name] for r in state.recipes}
    random = [r for r in state.recipes if isinstance(r.record.base, Fill) and r.record.base.kind in RANDOM_KINDS]
    keyed = [r for r in random if keys and r.record.base.key is not None]
    random = [r for r in random if not (keys and r.record.base.key is not None)]
    replays: list[tuple[Replay, Tensor]] = []
    for recipe in state.recipes:
        base = recipe.record.base
        if isinstance(base, Replay):
            replays.append((base, targets[recipe.name]))
        replays.extend((op, targets[recipe.name]) for op in recipe.record.ops)
    replays.sort(key=lambda item: item[0].seq)

    def resolve(value):
        if isinstance(value, Ref):
            return apply_chain(by_record[id(value.record)], value.chain)
        if isinstance(value, (tuple, list)):
            return type(value)(resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return value

    total = sum(t.numel() for t in targets.values())
    with torch.no_grad(), Progress(total, description) as bar:
        tensors = [targets[r.name] for r in random]
        fill_random(tensors, [(r.record.base.kind, r.record.base.params) for r in random], generator, bar)
        for recipe in keyed:  # alone, stream 0: the values of initkit's fill with that generator
            base = recipe.record.base
            seed = torch.tensor(base.key, dtype=torch.int64)
            init.multi_fill_([targets[recipe.name]], [(base.kind, base.params)], seed=seed)
            bar.update(targets[recipe.name].numel())
        for recipe in state.recipes:
            base = recipe.record.base
            if isinstance(base, Fill) and base.kind == "constant":
                targets[recipe.name].fill_(base.params[0])
                bar.update(targets[recipe.name].numel())
        for replay, root in replays:
            view = apply_chain(root, resolve(replay.chain))
            replay.func(view, *resolve(replay.args), **resolve(replay.kwargs))
        for name, target in sharded_targets.items():
            sharded.copy_block_(target, scratch[name])


def materialize_deferred(model: nn.Module, device="cpu", generator: torch.Generator | None = None) -> nn.Module:
    """Allocate a deferred model's parameters on `device` and write the recorded init, fused."""
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
    _check(model, state, verb)  # validate before allocating
    fresh = {}
    current = dict(model.named_parameters())
    for recipe in state.recipes:
        old = current[recipe.name]
        if old is not recipe.param:  # sharded after recording (_check): the DTensor parameter replaces it
            recipe.param = old
        if sharded.is_dtensor(old):  # storage for this rank's shard only
            new = nn.Parameter(torch.empty_like(old, device=device), requires_grad=old.requires_grad)
        else:
            new = type(old)(torch.empty(old.shape, dtype=old.dtype, device=device), requires_grad=old.requires_grad)
        new.__dict__.update(old.__dict__)
        fresh[recipe.name] = new
    _fill(state, fresh, generator, "initkit: materializing", keys=True)
    # Commit: swap the filled parameters in everywhere (ties by identity), move buffers.
    by_id = {id(r.param): fresh[r.name] for r in state.recipes}
    moved: dict[int, Tensor] = {}
    for module in model.modules():
        for key, param in module._parameters.items():
            if param is not None and id(param) in by_id:
                module._parameters[key] = by_id[id(param)]
        for key, buffer in module._buffers.items():
            if buffer is not None and buffer.device != device:
                if id(buffer) not in moved:
                    moved[id(buffer)] = buffer.to(device)
                module._buffers[key] = moved[id(buffer)]
    for recipe in state.recipes:
        recipe.param = fresh[recipe.name]
    state.materialized = True
    return model


def reinitialize(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialize a deferred, materialized model in place with the scheme it was recorded with."""
    verb = "initialize(policy='recorded')"
    state = _state(model, verb)
    if not state.materialized:
        raise RuntimeError(f"{verb}: the model is still on the meta device; call initkit.materialize(model) first")
    current = _check(model, state, verb)
    targets = {r.name: current[r.name] for r in state.recipes}
    for recipe in state.recipes:  # a constant that overflows a dtype the model was cast to: raise before writing
        if isinstance(recipe.record.base, Fill) and recipe.record.base.kind == "constant":
            check_constant(targets[recipe.name], recipe.record.base.params[0])
    # torch's replays (orthogonal_, copies, partial writes) run after the fused fills and can raise
    # (orthogonal_ of a model cast to bfloat16): keep a copy to restore then (only then: it costs a model's copy)
    replays = any(isinstance(r.record.base, Replay) or r.record.ops for r in state.recipes)
    with restoring(targets.values() if replays else ()):
        _fill(state, targets, generator, "initkit: initializing", keys=False)
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
