"""PEP 517 backend: setuptools, building against the torch already installed in the target env.

`pip install .` runs the build in an isolated environment that has no torch. Listing torch in
`build-system.requires` would make pip fetch some other torch (often a multi-GB CUDA build) and
the extension would then fail to load against the user's torch. Instead, when torch is not
importable here, we append the target environment's site-packages to the *end* of sys.path, so
setup.py compiles against exactly the torch that will import initkit. The cost: the build is not
hermetic (it sees the target environment's packages after its own).
"""

import sys
import sysconfig

from setuptools.build_meta import *  # noqa: F401,F403  (re-export every PEP 517 hook)


def _find_target_torch() -> None:
    try:
        import torch  # noqa: F401

        return
    except ImportError:
        pass
    # pip runs the backend with the target interpreter; its own site-packages hold torch.
    for key in ("purelib", "platlib"):
        path = sysconfig.get_paths()[key]
        if path not in sys.path:
            sys.path.append(path)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit(
            "initkit builds against the installed PyTorch: install torch first "
            "(for example `pip install torch==2.13.0`), then `pip install .`"
        ) from None


# pip imports the backend afresh for every hook (metadata, wheel, editable, sdist): do it once here.
_find_target_torch()
