"""Which implementation runs: "ext" (torch.ops.initkit, compiled) or "torch" (pure PyTorch), and
`handles(tensor)`, the one rule for whether a given tensor goes to the extension.

The default is "ext" when the extension loaded; INITKIT_BACKEND=torch (read at import) forces
the fallback. `use_backend()` switches temporarily (the tests run every behaviour under both).
"""

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor
from torch._subclasses.functional_tensor import FunctionalTensor

from . import load

_BACKENDS = ("ext", "torch")
# The dtypes every initkit kernel takes; other dtypes go to torch, which raises its own errors.
EXT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_forced: str | None = None
# Read once, at import: backend() is on the hot path of the fused layers (initkit.nn), where
# os.environ.get alone costs about a microsecond per call.
_requested = os.environ.get("INITKIT_BACKEND", "ext")
_is_vmap_batched = torch._C._functorch.is_batchedtensor
# The subclasses torch.export and torch.compile trace with: the ops' fake kernels handle them.
_TRACING_TENSORS = (FakeTensor, FunctionalTensor)
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)  # the common case, decided without further checks
_PYTHON_KEY = torch._C.DispatchKey.Python


def _is_user_subclass(tensor: Tensor) -> bool:
    """A __torch_function__ or __torch_dispatch__ subclass (DTensor, ...) other than torch's tracers."""
    if isinstance(tensor, _TRACING_TENSORS):
        return False
    return torch.overrides.has_torch_function_unary(tensor) or torch._C._dispatch_keys(tensor).has(_PYTHON_KEY)


def _check_name(name: str) -> None:
    if name not in _BACKENDS:
        raise ValueError(f"unknown initkit backend {name!r}; expected one of {_BACKENDS}")


def backend() -> str:
    """The active backend: "ext" or "torch"."""
    if _forced is not None:
        return _forced
    _check_name(_requested)
    return "ext" if _requested == "ext" and load.ext_available() else "torch"


def handles(tensor: Tensor) -> bool:
    """Whether `tensor` goes to the extension: the "ext" backend is active, the tensor is a plain
    strided tensor of a dtype the kernels take, on CPU, meta, or CUDA when the extension has CUDA
    kernels. Everything else keeps torch's own handling: tensor subclasses (DTensor, ...), sparse
    tensors and vmap-batched tensors."""
    # Tensor.is_cpu & co. rather than device.type, and backend() inlined for the default "ext": the
    # fused layers call this on every forward, where each Python call costs about a microsecond
    # (caches cold from the GEMMs).
    if _forced is not None:
        ext = _forced == "ext"
    elif _requested == "ext":
        ext = load.ext_available()
    else:
        ext = backend() == "ext"  # (raises for an unknown INITKIT_BACKEND, as backend() does)
    if not ext or tensor.dtype not in EXT_DTYPES or tensor.layout != torch.strided:
        return False
    if type(tensor) not in _PLAIN_TYPES and _is_user_subclass(tensor):
        return False
    # (dynamo cannot trace the functorch query; a compiled graph holds no vmap-batched tensors)
    if not torch.compiler.is_compiling() and _is_vmap_batched(tensor):
        return False
    return tensor.is_cpu or tensor.is_meta or (tensor.is_cuda and load.ext_has_cuda())


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the enclosed code on backend `name` ("ext" needs the compiled extension)."""
    global _forced
    _check_name(name)
    if name == "ext" and not load.ext_available():
        raise RuntimeError(f"initkit extension unavailable: {load.ext_error()}")
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous
