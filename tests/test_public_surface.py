"""The public surface: `initkit.__all__` is the one list, and every `initkit.X` that the tests,
benchmarks, README, docs and the GPU check script name exists (a missing export, such as
`ext_has_cuda` once, fails here on a CPU-only machine instead of on the first GPU)."""

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

import initkit
from helpers import missing_extension

ROOT = Path(__file__).resolve().parent.parent
# Files whose `initkit.X` references must resolve; the GPU-only ones matter most.
SCANNED = [
    *sorted((ROOT / "tests").glob("*.py")),
    *sorted((ROOT / "benchmarks").glob("*")),
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "README.md",
    *sorted((ROOT / ".ci").glob("*")),
]
# Deliberately not in __all__: the layers' subpackages and modules (reached by their path), and
# what a build writes (the compiled module and its build info).
MODULES = {"_ext", "model", "bench", "cli", "schemes", "sharded"}
BUILD_OUTPUTS = {"_C", "_build_info"}
# initkit.X, but not torch.ops.initkit.X, a path (csrc/initkit.cpp) or an op name (initkit.mlp.default)
REFERENCE = re.compile(r"(?<![\w./])initkit\.([A-Za-z_]\w*)\b(?!\.default)")


def referenced_names() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for path in SCANNED:
        if not path.is_file() or path.name == Path(__file__).name:
            continue
        for name in REFERENCE.findall(path.read_text(errors="replace")):
            names.setdefault(name, set()).add(path.name)
    return names


def test_all_is_the_public_list():
    assert len(initkit.__all__) == len(set(initkit.__all__)), "duplicates in initkit.__all__"
    missing = [name for name in initkit.__all__ if not hasattr(initkit, name)]
    assert not missing, f"initkit.__all__ names what initkit does not define: {missing}"
    exported = {name for name in dir(initkit) if not name.startswith("_")}
    undeclared = exported - set(initkit.__all__) - MODULES
    assert not undeclared, f"public names missing from initkit.__all__: {sorted(undeclared)}"


def test_scan_finds_the_gpu_only_references():
    # The scan itself must see the files a CPU-only run never executes.
    names = referenced_names()
    assert "ext_has_cuda" in names and "gpu_report.py" in names["ext_has_cuda"]


@pytest.mark.parametrize("name", sorted(referenced_names()))
def test_every_referenced_name_exists(name):
    if name in BUILD_OUTPUTS:
        return
    if name in MODULES:
        importlib.import_module(f"initkit.{name}")
        return
    assert name in initkit.__all__, f"initkit.{name} is used (in {sorted(referenced_names()[name])}) but not public"


def test_gpu_report_runs_every_row_on_the_cpu(capsys):
    # benchmarks/gpu_report.py only runs where a GPU is lent: its imports and every row's code must
    # not fail there first, so its --cpu dry run (small CPU tensors) runs here.
    if not initkit.ext_available():
        missing_extension(f"the report calls the extension's ops ({initkit.ext_error()})")
    spec = importlib.util.spec_from_file_location("gpu_report", ROOT / "benchmarks" / "gpu_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions; main() runs only as a script
    assert module.main(["--cpu"]) == 0
    table = capsys.readouterr().out
    for row in ("zero_", "uniform_", "normal_", "trunc_normal_ std 1", "CPU==CUDA trunc_normal_fill", "GPT-2 small",
                "linear_relu fwd+bwd 16x32 bfloat16"):
        assert row in table, f"no {row!r} row in:\n{table}"
