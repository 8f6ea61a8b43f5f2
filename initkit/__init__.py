"""initkit: fast, reproducible weight initialization for PyTorch.

`initkit.X` mirrors `torch.nn.init.X` (also importable as `initkit.init`); see initkit.init.
"""

from . import _load

_load.load()

from . import init  # noqa: E402
from ._backend import backend, use_backend  # noqa: E402
from ._load import ext_available, ext_error  # noqa: E402
from .init import *  # noqa: E402,F401,F403
from .init import __all__ as _init_all  # noqa: E402
from . import functional, nn  # noqa: E402
from ._fuse import fuse  # noqa: E402

__version__ = "0.1.0"
__all__ = [*_init_all, "init", "backend", "use_backend", "ext_available", "ext_error", "functional", "nn", "fuse"]
