"""torch.compile, torch.library.opcheck and the fake kernels of the fill ops."""

import pytest
import torch

import initkit


def fill_all(w1, w2, w3):
    initkit.kaiming_uniform_(w1, nonlinearity="relu")
    initkit.xavier_normal_(w2)
    initkit.trunc_normal_(w3, std=0.02)
    return w1.sum() + w2.sum() + w3.sum()


def test_compile_fullgraph_has_no_graph_breaks(ext):
    torch._dynamo.reset()
    compiled = torch.compile(fill_all, fullgraph=True, backend="eager")
    ws = [torch.zeros(16, 8), torch.zeros(8, 8), torch.zeros(32)]
    compiled(*ws)
    assert all(w.abs().sum() > 0 for w in ws)
    assert ws[0].abs().max() <= (6 / 8) ** 0.5  # kaiming relu bound for fan_in 8


def test_compile_inductor_fills_like_eager_given_the_seed(ext):
    torch._dynamo.reset()

    def fill(t, seed):
        torch.ops.initkit.normal_fill(t, 0.0, 1.0, seed)
        return t * 2

    seed = torch.tensor(123)
    eager = fill(torch.empty(1000), seed)
    compiled = torch.compile(fill, fullgraph=True)(torch.empty(1000), seed)
    assert torch.equal(eager, compiled)


def test_compile_inductor_with_fallback_random_fills_like_eager(ext):
    """README: under inductor the key comes from inductor's generator unless fallback_random is set;
    with it set, a compiled init gives eager's values."""
    torch._dynamo.reset()
    compiled = torch.compile(fill_all, fullgraph=True)
    values = []
    # (config.patch, not monkeypatch: undoing monkeypatch deletes the config entry)
    with torch._inductor.config.patch(fallback_random=True):
        for fill in (fill_all, compiled):
            torch.manual_seed(4)
            ws = [torch.zeros(16, 8), torch.zeros(8, 8), torch.zeros(32)]
            fill(*ws)
            values.append(ws)
    assert all(torch.equal(e, c) for e, c in zip(*values))


def _samples():
    seed = torch.tensor(5)
    return [
        (torch.ops.initkit.uniform_fill.default, (torch.empty(5, 7), -1.0, 1.0, seed)),
        (torch.ops.initkit.normal_fill.default, (torch.empty(33, dtype=torch.float64), 0.0, 2.0, seed, 3, 1)),
        (torch.ops.initkit.trunc_normal_fill.default, (torch.empty(4, 9).t(), 0.0, 1.0, -2.0, 2.0, seed)),
        (torch.ops.initkit._philox_fill.default, (torch.empty(6, 5), seed, 2)),
        (torch.ops.initkit._fill_block.default, (torch.empty(3, 4), 1, [0.0, 1.0, 0.0, 0.0], seed, 1, [8, 9], [2, 5])),
        (torch.ops.initkit.multi_fill.default, ([torch.empty(3, 4), torch.empty(10, dtype=torch.bfloat16)], [0, 2], [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, -1.0, 1.0], seed, [0, 1])),
        # strided, zero-size and 16-bit targets, with stream and offset
        (torch.ops.initkit.uniform_fill.default, (torch.empty(8, 3, dtype=torch.float16)[::2], -1.0, 1.0, seed, 2, 9)),
        (torch.ops.initkit.normal_fill.default, (torch.empty(0, 5), 0.0, 1.0, seed, 1, 3)),
        (torch.ops.initkit.trunc_normal_fill.default, (torch.empty(2, 3, 4, dtype=torch.bfloat16).transpose(0, 2), 0.5, 2.0, 0.0, 3.0, seed, 4, 5)),
        (torch.ops.initkit.multi_fill.default, ([torch.empty(4, 5).t(), torch.empty(0, dtype=torch.float64), torch.empty(7, dtype=torch.float16)], [1, 0, 2], [0.0, 2.0, 0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, 1.0, -0.5, 0.5], seed, [3, 0, 5])),
        (torch.ops.initkit.multi_fill.default, ([], [], [], seed, [])),
        (torch.ops.initkit._fill_block.default, (torch.empty(4, 3).t(), 2, [0.0, 1.0, -1.0, 1.0], seed, 0, [8, 9], [1, 2])),
    ]


@pytest.mark.parametrize("op,args", _samples(), ids=lambda x: getattr(x, "__name__", ""))
def test_opcheck(ext, op, args):
    torch.library.opcheck(op, args)
