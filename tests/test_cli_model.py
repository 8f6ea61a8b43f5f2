"""The demo / summary / diagnose subcommands (initkit/cli.py)."""

import importlib.util
import subprocess
import sys

import pytest

from initkit import cli

FACTORY_MODULE = """
from torch import nn

def build():
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))

not_a_model = 3
"""


def _run(argv):
    return cli.main(argv)


@pytest.fixture
def factory_dir(tmp_path, monkeypatch):
    (tmp_path / "cli_models.py").write_text(FACTORY_MODULE)
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
