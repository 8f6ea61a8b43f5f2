"""Test helpers shared by several test files."""

import os
import subprocess
import sys
import tempfile

import pytest


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
