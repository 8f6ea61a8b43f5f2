"""Shared fixtures: every behaviour test runs on both backends ("ext" and "torch")."""

import os

import pytest
import torch

import initkit
from helpers import missing_extension


def _ext_params():
    if initkit.ext_available():
        return pytest.param("ext")
    if os.environ.get("INITKIT_REQUIRE_EXT") == "1":
        pytest.fail(f"INITKIT_REQUIRE_EXT=1 but the extension is unavailable: {initkit.ext_error()}")
    return pytest.param("ext", marks=pytest.mark.skip(reason=f"extension unavailable: {initkit.ext_error()}"))


@pytest.fixture(params=[_ext_params(), "torch"])
def backend(request):
    """Runs the test once on the compiled extension and once on the pure-PyTorch fallback."""
    with initkit.use_backend(request.param):
        yield request.param


@pytest.fixture
def ext():
    """For behaviour that only the compiled extension has (Philox streams, opcheck, ...)."""
    if not initkit.ext_available():
        missing_extension(f"the extension is unavailable: {initkit.ext_error()}")
    with initkit.use_backend("ext"):
        yield


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """Tests may seed or change thread counts; leave global state as found."""
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    yield
    torch.set_rng_state(rng)
    torch.set_num_threads(threads)
