"""Test helpers shared by several test files."""

import contextlib
import os
import subprocess
import sys
import tempfile

import pytest
import torch


def run_python(code: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, from an empty directory so that the installed initkit
    (with its compiled _C) is imported rather than the source tree. `env` entries are added to
    the environment; INITKIT_* variables not in `env` are removed so each run starts clean."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INITKIT_")}
    full_env.update(env or {})
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
        )


def missing_extension(reason: str) -> None:
    """Skip a test that needs (part of) the compiled extension; under INITKIT_REQUIRE_EXT=1 a
    missing extension means a broken build, so fail instead."""
    if os.environ.get("INITKIT_REQUIRE_EXT") == "1":
        pytest.fail(f"INITKIT_REQUIRE_EXT=1 but {reason}")
    pytest.skip(reason)


def skip_torch_2_11_sampler(backend, what):
    """The "torch" backend runs torch.nn.init's own functions as they are (values equal to torch's).
    torch 2.11's own fills miss the law in two places, both fixed in torch 2.12 and absent from the
    ext backend: trunc_normal_ by erfinv and a clamp (deep tails piled on a bound, outliers at small
    std, a bias in 16-bit dtypes), and bfloat16 uniform_ from 8 random bits (256 values in [0, 1), the
    mean 2^-9 of the range low) and bfloat16 normal_ with a variance 1.4% low."""
    if backend == "torch" and torch.__version__ < (2, 12):
        pytest.skip(f"torch {torch.__version__}'s own {what}, which the torch backend runs as is (fixed in torch 2.12)")


@contextlib.contextmanager
def default_device(device):
    """torch.set_default_device(device) for a block."""
    torch.set_default_device(device)
    try:
        yield
    finally:  # None, not "cpu", which would leave a device TorchFunctionMode active for later tests
        torch.set_default_device(None)
