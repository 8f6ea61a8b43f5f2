"""Which implementation runs: "ext" (torch.ops.initkit, compiled) or "torch" (pure PyTorch).

The default is "ext" when the extension loaded; INITKIT_BACKEND=torch (read at import) forces
the fallback.
`use_backend()` switches temporarily (the tests run every behaviour under both).
"""

import contextlib
import os
from collections.abc import Iterator

from . import _load

_BACKENDS = ("ext", "torch")
_forced: str | None = None
# Read once, at import: backend() is on the hot path of the fused layers (initkit.nn), where
# os.environ.get alone costs about a microsecond per call.
_requested = os.environ.get("INITKIT_BACKEND", "ext")


def _check_name(name: str) -> None:
    if name not in _BACKENDS:
        raise ValueError(f"unknown initkit backend {name!r}; expected one of {_BACKENDS}")


def backend() -> str:
    """The active backend: "ext" or "torch"."""
    if _forced is not None:
        return _forced
    _check_name(_requested)
    return "ext" if _requested == "ext" and _load.ext_available() else "torch"


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the enclosed code on backend `name` ("ext" needs the compiled extension)."""
    global _forced
    _check_name(name)
    if name == "ext" and not _load.ext_available():
        raise RuntimeError(f"initkit extension unavailable: {_load.ext_error()}")
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous
