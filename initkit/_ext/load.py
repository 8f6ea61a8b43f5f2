"""Loads initkit._C and decides whether the compiled extension can be used.

The extension is only loaded when it was built for the running torch (same major.minor, and
a CUDA build only under a CUDA torch): a libtorch ABI mismatch otherwise surfaces later as an
undefined-symbol crash. Any failure is kept (see `ext_error()`), reported once as a warning
naming both versions and the rebuild command, and initkit then runs on pure PyTorch.
INITKIT_REQUIRE_EXT=1 (or INITKIT_BACKEND=ext) turns the failure into an ImportError.
"""

import os
import warnings

import torch

REBUILD_COMMAND = "pip install --force-reinstall --no-deps ."

_error: str | None = None


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("+")[0].split(".")[:2])


def _find_problem() -> str | None:
    try:
        from .. import _build_info
    except ImportError:
        return "initkit was installed without its C++ extension (no initkit/_build_info.py)"
    running = torch.__version__
    if _major_minor(_build_info.torch_version) != _major_minor(running):
        return f"initkit._C was built for torch {_build_info.torch_version}, but torch {running} is running"
    if _build_info.with_cuda and torch.version.cuda is None:
        return f"initkit._C was built with CUDA {_build_info.cuda_version}, but torch {running} has no CUDA"
    try:
        from .. import _C  # noqa: F401  (loading registers torch.ops.initkit.*)
    except (ImportError, OSError) as exc:
        return f"initkit._C (built for torch {_build_info.torch_version}) failed to load under torch {running}: {exc}"
    return None


def load() -> None:
    global _error
    _error = _find_problem()
    if _error is None:
        from . import fake_kernels  # noqa: F401  (only once the ops exist)
        return
    message = f"{_error}. Rebuild it with `{REBUILD_COMMAND}`; until then initkit runs on pure PyTorch."
    required = os.environ.get("INITKIT_REQUIRE_EXT") == "1" or os.environ.get("INITKIT_BACKEND") == "ext"
    if required:
        raise ImportError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def ext_available() -> bool:
    """Whether initkit._C loaded (see ext_error() when not)."""
    return _error is None


def ext_error() -> str | None:
    """Why the extension is unavailable, or None when it loaded."""
    return _error


def ext_has_cuda() -> bool:
    """Whether the loaded extension has CUDA kernels."""
    if _error is not None:
        return False
    from .. import _build_info

    return bool(_build_info.with_cuda)


def build_info() -> dict | None:
    """What the loaded initkit._C was compiled against (torch_version, cuda_version, with_cuda,
    cuda_arch_list), or None when it did not load."""
    if _error is not None:
        return None
    from .. import _build_info

    return {key: getattr(_build_info, key) for key in ("torch_version", "cuda_version", "with_cuda", "cuda_arch_list")}
