"""The one copy-and-restore of model state that the model tools share: a tool that changes a model
either does what it says or leaves the model as it was (initialize, lsuv_), and a tool that only
looks (diagnose, lsuv_'s forward passes) leaves no trace in buffers or train/eval flags.
"""

from collections.abc import Iterable
from contextlib import contextmanager

import torch
from torch import Tensor, nn


@contextmanager
def restoring(tensors: Iterable[Tensor] = (), modules: Iterable[nn.Module] = (), always: bool = False):
    """Copy the values of `tensors` and the training flags of `modules`; write them back in place
    when the block raises (any exception, KeyboardInterrupt included), or on every exit when
    `always`. In place: the Parameter and buffer objects stay the ones an optimizer holds. Costs
    one copy of `tensors` while the block runs."""
    saved, seen = [], set()
    with torch.no_grad():
        for tensor in tensors:
            if id(tensor) not in seen:  # tied tensors are copied once
                seen.add(id(tensor))
                saved.append((tensor, tensor.detach().clone()))
    flags = [(module, module.training) for module in modules]
    try:
        yield
    except BaseException:
        _restore(saved, flags)
        raise
    if always:
        _restore(saved, flags)


def _restore(saved: list[tuple[Tensor, Tensor]], flags: list[tuple[nn.Module, bool]]) -> None:
    with torch.no_grad():
        for tensor, value in saved:
            tensor.copy_(value)
    for module, training in flags:
        module.training = training
