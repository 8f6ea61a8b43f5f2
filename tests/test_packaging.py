"""Extension loading, version checks, fallback and backend switching."""

import pytest
import torch

import initkit
from helpers import run_python


def test_extension_loaded_and_records_its_torch(ext):
    assert initkit.ext_error() is None
    assert initkit.backend() == "ext"
    built_for = initkit.build_info()["torch_version"]
    assert built_for.split("+")[0].split(".")[:2] == torch.__version__.split("+")[0].split(".")[:2]


def test_backend_env_forces_torch():
    out = run_python("import initkit; print(initkit.backend())", {"INITKIT_BACKEND": "torch"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "torch"


def test_unknown_backend_name_is_an_error():
    with pytest.raises(ValueError, match="unknown initkit backend 'gpu'"):
        with initkit.use_backend("gpu"):
            pass
    out = run_python("import initkit; initkit.backend()", {"INITKIT_BACKEND": "gpu"})
    assert out.returncode != 0 and "unknown initkit backend 'gpu'" in out.stderr


MISMATCH = "import torch; torch.__version__ = '2.99.0+cpu'\nimport warnings; warnings.simplefilter('always')\n"


def test_version_mismatch_warns_once_and_falls_back_to_torch(ext):
    code = MISMATCH + (
        "import initkit\n"
        "print(initkit.backend())\n"
        "print(initkit.kaiming_uniform_(torch.empty(4, 4)).shape)\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["torch", "torch.Size([4,", "4])"]
    assert out.stderr.count("RuntimeWarning") == 1
    assert "built for torch 2." in out.stderr and "but torch 2.99.0+cpu is running" in out.stderr
    assert "pip install --force-reinstall --no-deps ." in out.stderr


@pytest.mark.parametrize("env", [{"INITKIT_REQUIRE_EXT": "1"}, {"INITKIT_BACKEND": "ext"}])
def test_required_extension_turns_mismatch_into_an_error(ext, env):
    out = run_python(MISMATCH + "import initkit", env)
    assert out.returncode != 0
    assert "ImportError" in out.stderr and "2.99.0+cpu" in out.stderr


def test_use_backend_switches_and_restores(ext):
    with initkit.use_backend("torch"):
        assert initkit.backend() == "torch"
        with initkit.use_backend("ext"):
            assert initkit.backend() == "ext"
        assert initkit.backend() == "torch"
    assert initkit.backend() == "ext"


def test_build_config_is_the_one_list_of_sources_and_flags():
    # setup.py and CMakeLists.txt both read csrc/build_config.txt; neither repeats what it says.
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    config = (root / "csrc" / "build_config.txt").read_text().splitlines()
    entries = [line.split(":", 1) for line in config if line and not line.startswith("#")]
    keys = {key for key, _ in entries}
    setup_py, cmake = (root / "setup.py").read_text(), (root / "CMakeLists.txt").read_text()
    for key in keys:
        assert f'build_config("{key}")' in setup_py, key
    for key in keys:
        assert f"initkit_config({key} " in cmake, key
    for _, value in entries:
        value = value.strip()
        assert value not in setup_py and value not in cmake, f"{value} is written outside build_config.txt"
