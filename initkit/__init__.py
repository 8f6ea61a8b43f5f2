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
from ._model import InitPlan, PlanRow, init_plan  # noqa: E402
from .model.deferred import deferred_init, initialize, materialize  # noqa: E402
from .model.patch import patch  # noqa: E402
from ._diagnose import diagnose, diagnose_depth, lsuv_  # noqa: E402
from ._summary import ModelSummary, count_parameters, param_report, summary  # noqa: E402
from . import functional, nn  # noqa: E402
from ._fuse import fuse  # noqa: E402

__version__ = "0.1.0"
__all__ = [*_init_all, "init", "backend", "use_backend", "ext_available", "ext_error"]
__all__ += ["initialize", "materialize", "init_plan", "InitPlan", "PlanRow", "deferred_init", "patch"]
__all__ += ["diagnose", "diagnose_depth", "lsuv_"]
__all__ += ["summary", "ModelSummary", "count_parameters", "param_report"]
__all__ += ["functional", "nn", "fuse"]
