"""materialize(): allocate a model built on the meta device and initialize it in one pass."""

import warnings

import torch
from torch import Tensor, nn

from .apply import apply_plan
from .policy import InitPlan, check_module, init_plan, reset_method


def allocate(model: nn.Module, device: torch.device) -> list[str]:
    """Give every meta parameter fresh (uninitialized) storage on `device` in a new Parameter that
    keeps the old one's attributes; keep ties; move real parameters and buffers to `device` in
    place (same Parameter objects, so an optimizer built on them stays valid). Returns the names
    of buffers that were on meta (they have no values yet)."""
    new_tensors: dict[int, Tensor] = {}
    meta_buffers = []
    for module_name, module in model.named_modules(remove_duplicate=False):
        for name, param in module._parameters.items():
            if param is None:
                continue
            if id(param) not in new_tensors:
                if param.is_meta:
                    # (empty_like: a DTensor parameter gets storage for this rank's shard only)
                    storage = torch.empty_like(param, device=device)
                    new_tensors[id(param)] = nn.Parameter(storage, requires_grad=param.requires_grad)
                    new_tensors[id(param)].__dict__.update(param.__dict__)
                else:
                    param.data = param.data.to(device)
                    new_tensors[id(param)] = param
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
    check_module(model)
    device = torch.device(device)
    if device.type == "meta":
        raise ValueError("materialize: the target device must hold real storage, not 'meta'")
    plan = init_plan(model, policy)  # decide first: policy errors leave the model untouched
    _reset_what_meta_cannot_keep(model, plan)
    saved = [(module, dict(module._parameters), dict(module._buffers)) for module in model.modules()]
    try:
        meta_buffers = allocate(model, device)
        _fill_buffers(model, meta_buffers)
        apply_plan(model, plan, generator, "initkit: materializing")
    except BaseException:  # leave the model as it was: on meta, nothing half-filled
        for module, parameters, buffers in saved:
            module._parameters.update(parameters)
            module._buffers.update(buffers)
        raise
    return plan


def _reset_what_meta_cannot_keep(model: nn.Module, plan: InitPlan) -> None:
    """A "keep" row (the module's own init) on the meta device has no values to keep: the owning
    module's reset_parameters() provides them, or materialize refuses before allocating."""
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    for row in plan:
        if row.scheme != "keep" or not params[row.name].is_meta:
            continue
        owner = row.name.rpartition(".")[0]
        if reset_method(modules[owner]) is None:
            raise ValueError(
                f"materialize: parameter {row.name!r} ({row.reason}) is on the meta device and "
                f"{type(modules[owner]).__name__} has no reset_parameters() to give it values; "
                f"name a scheme for it in the policy, e.g. {{{row.name!r}: 'ones'}}"
            )
        row.scheme = "torch_default"
        row.reason += f"; on meta: {type(modules[owner]).__name__}.reset_parameters() gives it values"
