"""initkit: fast, reproducible weight initialization for PyTorch.

Layers, top to bottom: the drop-in `torch.nn.init` surface (`initkit.X`, also `initkit.init`), the
fused dense layers (`initkit.functional`, `initkit.nn`), the model-level tools (initkit/model/),
and the extension plumbing underneath (initkit/_ext/). `__all__` below is the public surface.
"""

from ._ext import load as _load

_load.load()

from . import functional, init, nn  # noqa: E402
from ._ext.backend import backend, use_backend  # noqa: E402
from ._ext.load import build_info, ext_available, ext_error, ext_has_cuda  # noqa: E402
from .init import *  # noqa: E402,F401,F403
from .init import __all__ as _init_all  # noqa: E402
from .model.diagnose import diagnose, diagnose_depth, lsuv_  # noqa: E402
from .model.fuse import fuse  # noqa: E402
from .model.patch import patch  # noqa: E402
from .model.deferred import deferred_init, initialize, materialize  # noqa: E402
from .model.policy import InitPlan, PlanRow, init_plan  # noqa: E402
from .model.summary import ModelSummary, count_parameters, param_report, summary  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    *_init_all,
    # modules
    "init", "functional", "nn",
    # the extension and the backend switch
    "backend", "use_backend", "ext_available", "ext_error", "ext_has_cuda", "build_info",
    # model-level tools
    "deferred_init", "patch", "initialize", "materialize", "init_plan", "InitPlan", "PlanRow",
    "diagnose", "diagnose_depth", "lsuv_",
    "summary", "ModelSummary", "count_parameters", "param_report",
    "fuse",
]  # fmt: skip
