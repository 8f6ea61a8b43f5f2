"""Malformed arguments to every dense op, raw torch.ops calls included: each raises a
RuntimeError that names the op (never a crash), the fake kernel rejects the same inputs, and the
C++ checks (csrc/common/linear_checks.h) and the Python ones (initkit/_ext/checks.py) give
the same message."""

import textwrap

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import initkit
from initkit._ext import checks
from initkit.functional import linear_relu, mlp
from helpers import run_python


def r(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device)


S = torch.tensor(1.0)  # 0-D

# (op name, args) pairs; each must be rejected.
LINEAR_RELU = [
    (S, r(4, 3), None),
    (r(2, 3), S, None),
    (r(2, 3), r(3), None),
    (r(2, 3), r(4, 5), None),
    (r(2, 3), r(4, 3), S),
    (r(2, 3), r(4, 3), r(5)),
    (r(2, 3), r(4, 3), r(4, 1)),
    (r(2, 3), r(4, 3, dtype=torch.float64), None),
    (r(2, 3), r(4, 3), r(4, dtype=torch.float64)),
    (r(2, 3), r(4, 3, device="meta"), None),
    (r(2, 3), r(4, 3), r(4, device="meta")),
    (torch.ones(2, 3, dtype=torch.int64), torch.ones(4, 3, dtype=torch.int64), None),
]
LINEAR_RELU_BACKWARD = [
    (S, S, S, r(4, 3), [False] * 3),  # issue 9's segfault
    (S, S, S, r(4, 3), [True] * 3),
    (r(2, 4), r(2, 4), S, r(4, 3), [True] * 3),
    (r(2, 4), r(2, 4), r(2, 3), S, [True] * 3),
    (r(2, 4), r(2, 4), r(2, 3), r(4), [True] * 3),
    (r(2, 4), r(2, 4), r(2, 3), r(4, 5), [True] * 3),
    (r(2, 4), S, r(2, 3), r(4, 3), [True] * 3),
    (S, r(2, 4), r(2, 3), r(4, 3), [True] * 3),
    (r(2, 5), r(2, 4), r(2, 3), r(4, 3), [True] * 3),
    (r(2, 4), r(3, 4), r(2, 3), r(4, 3), [True] * 3),
    (r(8), r(8), r(2, 3), r(4, 3), [True] * 3),
    (r(2, 4), r(2, 4, dtype=torch.float64), r(2, 3), r(4, 3), [True] * 3),
    (r(2, 4, dtype=torch.float64), r(2, 4), r(2, 3), r(4, 3), [True] * 3),
    (r(2, 4), r(2, 4), r(2, 3), r(4, 3, dtype=torch.float64), [True] * 3),
    (r(2, 4, device="meta"), r(2, 4), r(2, 3), r(4, 3), [True] * 3),
    (torch.ones(2, 4, dtype=torch.int64),) * 3 + (torch.ones(4, 3, dtype=torch.int64), [True] * 3),
]
MLP = [
    (S, [r(2, 3)], [None]),
    (r(2, 3), [], []),
    (r(2, 3), [r(4, 3)], []),
    (r(2, 3), [r(4, 3)], [None, None]),
    (r(2, 3), [S], [None]),
    (r(2, 3), [r(4, 3), r(2, 5)], [None, None]),
    (r(2, 3), [r(4, 3), S], [None, None]),
    (r(2, 3), [r(4, 3)], [S]),
    (r(2, 3), [r(4, 3)], [r(3)]),
    (r(2, 3), [r(4, 3), r(2, 4, dtype=torch.float64)], [None, None]),
    (r(2, 3), [r(4, 3)], [r(4, device="meta")]),
    (torch.ones(2, 3, dtype=torch.int64), [torch.ones(4, 3, dtype=torch.int64)], [None]),
]
MLP_BACKWARD = [
    (r(2), S, [r(2, 3)], [None], [], False),  # issue 9's segfault
    (r(2), S, [r(2, 3)], [None], [], True),
    (r(2, 2), r(2, 3), [], [], [], True),
    (r(2, 2), r(2, 3), [r(2, 3)], [], [], True),
    (r(2, 2), r(2, 3), [r(2, 3)], [None], [r(2, 2)], True),
    (r(2, 2), r(2, 3), [r(4, 3), r(2, 4)], [None, None], [], True),
    (r(2, 2), r(2, 3), [r(4, 3), r(2, 4)], [None, None], [S], True),
    (r(2, 2), r(2, 3), [r(4, 3), r(2, 4)], [None, None], [r(3, 4)], True),
    (r(2, 2), r(2, 3), [r(4, 3), r(2, 4)], [None, None], [r(2, 4, dtype=torch.float64)], True),
    (r(2, 2), r(2, 3), [r(4, 3), r(2, 4)], [None, None], [r(2, 4, device="meta")], True),
    (S, r(2, 3), [r(4, 3), r(2, 4)], [None, None], [r(2, 4)], True),
    (r(2, 3), r(2, 3), [r(4, 3), r(2, 4)], [None, None], [r(2, 4)], True),
    (r(2, 2, dtype=torch.float64), r(2, 3), [r(4, 3), r(2, 4)], [None, None], [r(2, 4)], True),
    (r(2, 2), r(2, 3), [r(4, 3), S], [None, None], [r(2, 4)], True),
    (r(2, 2), r(2, 3), [r(4, 3), r(2, 4)], [S, None], [r(2, 4)], True),
]

CASES = (
    [("linear_relu", a, checks.check_linear) for a in LINEAR_RELU]
    + [("_linear_relu_backward", a, lambda op, g, o, x, w, m: checks.check_linear_backward(op, g, o, x, w)) for a in LINEAR_RELU_BACKWARD]
    + [("mlp", a, checks.check_mlp) for a in MLP]
    + [("_mlp_forward", a, checks.check_mlp) for a in MLP]
    + [("_mlp_backward", a, lambda op, g, x, w, b, h, i: checks.check_mlp_backward(op, g, x, w, b, h)) for a in MLP_BACKWARD]
)
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


def _cpp_message(name, args):
    with pytest.raises(RuntimeError, match=f"initkit::{name}: ") as info:
        getattr(torch.ops.initkit, name)(*args)
    return str(info.value).split("\nException raised from")[0]


def test_grid_does_not_crash_the_interpreter():
    """The whole grid in a child process: a segfault there fails this test instead of killing the run."""
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, {tests!r})
        import torch, initkit
        import test_dense_bad_input as t
        for name, args, _ in t.CASES:
            try:
                getattr(torch.ops.initkit, name)(*args)
            except RuntimeError as e:
                assert str(e).startswith(f"initkit::{{name}}: "), (name, str(e))
            else:
                raise SystemExit(f"{{name}} accepted bad input")
        print("ok", len(t.CASES))
        """
    ).format(tests=__import__("os").path.dirname(__file__))
    proc = run_python(code)  # from an empty directory: the installed initkit, not the source tree
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert proc.stdout.strip() == f"ok {len(CASES)}"


@pytest.mark.parametrize("name, args, check", CASES, ids=IDS)
def test_cpp_and_python_checks_agree(ext, name, args, check):
    message = _cpp_message(name, args)
    with pytest.raises(RuntimeError) as info:
        check(f"initkit::{name}", *args)
    assert str(info.value) == message


def _fake(mode, value):
    if isinstance(value, torch.Tensor):
        return mode.from_tensor(value)
    if isinstance(value, list):
        return [_fake(mode, v) for v in value]
    return value


@pytest.mark.parametrize("name, args, check", CASES, ids=IDS)
def test_fake_kernel_rejects_the_same(ext, name, args, check):
    message = _cpp_message(name, args)
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fake_args = [_fake(mode, a) for a in args]
        with pytest.raises(RuntimeError) as info:
            getattr(torch.ops.initkit, name)(*fake_args)
    assert str(info.value).split("\nException raised from")[0] == message


@pytest.mark.parametrize(
    "call",
    [
        lambda: linear_relu(None, r(4, 3)),
        lambda: linear_relu(r(2, 3), None),
        lambda: linear_relu(r(2, 3), r(4, 3), 5),
        lambda: linear_relu([1.0, 2.0], r(4, 3)),
        lambda: mlp(None, [r(4, 3)], [None]),
        lambda: mlp(r(2, 3), r(4, 3), [None]),
        lambda: mlp(r(2, 3), [None], [None]),
        lambda: mlp(r(2, 3), [r(4, 3)], [1.0]),
    ],
)
def test_not_a_tensor_is_a_type_error(backend, call):
    with pytest.raises(TypeError, match="must be"):
        call()


def test_type_error_matches_f_linear():
    with pytest.raises(TypeError, match="argument 'input'"):
        torch.nn.functional.linear(None, r(4, 3))
    with pytest.raises(TypeError, match="argument 'input'"):
        linear_relu(None, r(4, 3))


def test_valid_calls_still_run(ext):
    x, w, b = r(2, 3), r(4, 3), r(4)
    out = torch.ops.initkit.linear_relu(x, w, b)
    gi, gw, gb = torch.ops.initkit._linear_relu_backward(torch.ones_like(out), out, x, w, [True, True, True])
    assert gi.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
    out, hidden = torch.ops.initkit._mlp_forward(x, [w, r(2, 4)], [b, None])
    gi, gws, gbs = torch.ops.initkit._mlp_backward(torch.ones_like(out), x, [w, r(2, 4)], [b, None], hidden, True)
    assert gi.shape == x.shape and [g.shape for g in gws] == [w.shape, (2, 4)] and [g.shape for g in gbs] == [b.shape]
    assert initkit.ext_available()
