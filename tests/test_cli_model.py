"""The demo / summary / diagnose subcommands (initkit/cli.py)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from initkit import cli

FACTORY_MODULE = """
from torch import nn

def build():
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))

not_a_model = 3

def broken():
    raise RuntimeError("boom: the factory failed\\nsecond line")

def exits():
    raise SystemExit(3)

def deep():  # a summary longer than a pipe's buffer
    return nn.Sequential(*[nn.Linear(2, 2) for _ in range(2000)])
"""

SYNTAX_ERROR_MODULE = "def build(:\n    pass\n"
EXIT_AT_IMPORT_MODULE = "import sys\nsys.exit('bye')\n"


def _run(argv):
    return cli.main(argv)


@pytest.fixture
def factory_dir(tmp_path, monkeypatch):
    (tmp_path / "cli_models.py").write_text(FACTORY_MODULE)
    (tmp_path / "cli_bad_syntax.py").write_text(SYNTAX_ERROR_MODULE)
    (tmp_path / "cli_exits.py").write_text(EXIT_AT_IMPORT_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_summary_subcommand(factory_dir, capsys):
    assert _run(["summary", "cli_models:build", "--input-size", "2", "4"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 51" in out and "[2, 2]" in out


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("cli_models", "expected MODULE:FACTORY"),
        ("cli_models:missing", "no attribute 'missing'"),
        ("cli_models:not_a_model", "not an nn.Module"),
        ("no_such_module_xyz:build", "No module named"),
    ],
)
def test_summary_subcommand_bad_target(factory_dir, capsys, target, message):
    assert _run(["summary", target]) == 2
    assert message in capsys.readouterr().err


def test_summary_subcommand_input_that_does_not_fit(factory_dir, capsys):
    assert _run(["summary", "cli_models:build", "--input-size", "2", "7"]) == 2
    assert "forward pass failed" in capsys.readouterr().err


def test_diagnose_subcommand(capsys):
    assert _run(["diagnose", "--depth", "20", "--width", "32", "--activation", "tanh", "--init", "xavier_normal"]) == 0
    out = capsys.readouterr().out
    assert "20-layer MLP" in out and "xavier_normal: healthy" in out


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is not None, reason="matplotlib installed")
def test_diagnose_plot_without_matplotlib(tmp_path, capsys):
    assert _run(["diagnose", "--depth", "3", "--init", "zeros", "--plot", str(tmp_path / "p.png")]) == 2
    assert "pip install matplotlib" in capsys.readouterr().err


def test_demo_subcommand(capsys):
    assert _run(["demo"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 51" in out
    assert "state_dict entry" in out and "requires_grad" in out
    assert "output [2, 2]" in out
    assert "loaded output equals eager: True" in out
    assert "speedup" in out and "outputs equal: True" in out


def test_python_dash_m_initkit_summary(factory_dir):
    result = subprocess.run(
        [sys.executable, "-m", "initkit", "summary", "cli_models:build", "--input-size", "2", "4"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "Total params: 51" in result.stdout


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summary", "cli_models:broken"], "initkit summary: cli_models:broken() raised RuntimeError: boom: the factory failed"),
        (["summary", "cli_bad_syntax:build"], "initkit summary: cannot import cli_bad_syntax: SyntaxError: "),
        (["summary", "cli_exits:build"], "initkit summary: cannot import cli_exits: SystemExit: it exited with status 'bye'"),
        (["summary", "cli_models:exits"], "initkit summary: cli_models:exits() raised SystemExit: it exited with status 3"),
        (["summary", "cli_models:build", "--input-size", "2", "4", "--dtype", "float8_e4m3fn"],
         "NotImplementedError: summary: cannot draw random inputs of torch.float8_e4m3fn"),
        (["summary", "cli_models:build", "--input-size", "99999999999", "4"],
         "initkit summary: RuntimeError: summary: cannot allocate an input of shape [99999999999, 4]"),
        (["summary", "cli_models:build", "--input-size", "2", "7"], "summary: the forward pass failed"),
        (["diagnose", "--batch", "0"], "initkit diagnose: ValueError: diagnose_depth: batch must be an int >= 1, got 0"),
        (["diagnose", "--batch", "-1"], "initkit diagnose: ValueError: diagnose_depth: batch must be an int >= 1, got -1"),
        (["diagnose", "--depth", "3", "--plot", "no/such/dir/p.png"], "FileNotFoundError: cannot write no/such/dir/p.png"),
        (["diagnose", "--depth", "3", "--plot", "."], "IsADirectoryError: cannot write .: it is a directory"),
    ],
)
def test_errors_are_one_line_without_traceback(factory_dir, capsys, argv, message):
    assert _run(argv) == 2
    line = _one_error_line(capsys)
    assert message in line and line.endswith("(--debug shows the traceback)"), line
    assert "second line" not in line


@pytest.mark.parametrize("how", ["flag before", "flag after", "environment"])
def test_debug_shows_the_exception(factory_dir, monkeypatch, how):
    argv = ["summary", "cli_models:broken"]
    if how == "environment":
        monkeypatch.setenv("INITKIT_DEBUG", "1")
    else:
        argv = ["--debug", *argv] if how == "flag before" else [*argv, "--debug"]
    with pytest.raises(Exception, match="raised RuntimeError: boom") as info:
        _run(argv)
    assert isinstance(info.value.__cause__, RuntimeError)  # the factory's own exception is chained


def test_python_dash_m_initkit_error_is_one_line(factory_dir):
    command = [sys.executable, "-m", "initkit", "summary", "cli_models:broken"]
    env = {k: v for k, v in os.environ.items() if k != "INITKIT_DEBUG"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "initkit summary: cli_models:broken() raised RuntimeError: boom: the factory failed (--debug shows the traceback)"
    ], result.stderr
    result = subprocess.run(command, capture_output=True, text=True, env={**env, "INITKIT_DEBUG": "1"}, timeout=300)
    assert result.returncode == 1 and "Traceback" in result.stderr and "boom" in result.stderr


def test_python_dash_m_initkit_into_a_pipe_closed_early_is_quiet(factory_dir):
    # `initkit summary ... | head -n 1`: the reader leaving early is not an error of the command
    command = f"{sys.executable} -m initkit summary cli_models:deep | head -n 1"
    env = {k: v for k, v in os.environ.items() if k != "INITKIT_DEBUG"}
    result = subprocess.run(command, shell=True, capture_output=True, text=True, env=env, timeout=300)
    assert result.stderr == "" and result.stdout.startswith("=====") and result.stdout.count("\n") == 1


@pytest.mark.parametrize("budget", ["-1", "0", "nan", "inf", "soon"])
def test_bench_budget_must_be_a_positive_number_of_seconds(capsys, budget):
    with pytest.raises(SystemExit) as info:  # argparse's usage error, before any timing
        _run(["bench", "--budget", budget])
    assert info.value.code == 2
    assert "argument --budget: expected a" in capsys.readouterr().err
