"""materialize(): allocate a model built on the meta device and initialize it in one pass."""

import warnings

import torch
from torch import Tensor, nn

from .apply import apply_plan
from .policy import InitPlan, check_module, init_plan

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
    check_module(model)
    device = torch.device(device)
    if device.type == "meta":
        raise ValueError("materialize: the target device must hold real storage, not 'meta'")
    plan = init_plan(model, policy)  # decide first: policy errors leave the model untouched
    meta_buffers = _allocate(model, device)
    _fill_buffers(model, meta_buffers)
    apply_plan(model, plan, generator, "initkit: materializing")
    return plan
