"""initkit.functional.mlp and initkit.nn.MLP against an nn.Sequential of Linear and ReLU."""

import pytest
import torch
import torch.nn.functional as F

import initkit
from initkit.functional import mlp


def reference(x, weights, biases):
    for i, (w, b) in enumerate(zip(weights, biases)):
        x = F.linear(x, w, b)
        if i + 1 < len(weights):
            x = F.relu(x)
    return x


def make(sizes, dtype=torch.float64, bias_pattern=None):
    torch.manual_seed(0)
    weights = [torch.randn(n_out, n_in, dtype=dtype) / n_in**0.5 for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    pattern = bias_pattern or [True] * len(weights)
    biases = [torch.randn(w.shape[0], dtype=dtype) if keep else None for w, keep in zip(weights, pattern)]
    return weights, biases


@pytest.mark.parametrize("sizes", [[4, 5, 3, 2], [3, 7], [64, 128, 96, 10]])
@pytest.mark.parametrize("shape", [(0,), (1,), (2,), (3, 5)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_sequential(backend, sizes, shape, dtype):
    weights, biases = make(sizes, dtype)
    x = torch.randn(*shape, sizes[0], dtype=dtype)
    out = mlp(x, weights, biases)
    assert out.shape == (*shape, sizes[-1])
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, reference(x, weights, biases), **tol)


def test_gradcheck_with_missing_biases(backend):
    weights, biases = make([4, 5, 3, 2], bias_pattern=[True, False, True])
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    params = [w.requires_grad_() for w in weights] + [b.requires_grad_() for b in biases if b is not None]

    def fn(x, w0, w1, w2, b0, b2):
        return mlp(x, [w0, w1, w2], [b0, None, b2])

    assert torch.autograd.gradcheck(fn, (x, *params))


def test_grads_match_sequential(backend):
    weights, biases = make([6, 8, 8, 3], dtype=torch.float32)
    params = [t.requires_grad_() for t in weights + biases]
    x = torch.randn(5, 6)
    mlp(x, weights, biases).square().sum().backward()
    ref = [t.detach().clone().requires_grad_() for t in params]
    reference(x, ref[:3], ref[3:]).square().sum().backward()
    for ours, theirs in zip(params, ref):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-5)


def test_forward_mode_ad_matches_sequential(backend):
    weights, biases = make([6, 8, 8, 3], bias_pattern=[True, False, True])
    x = torch.randn(5, 6, dtype=torch.float64)
    for tangent_on in ("input", "weight", "bias"):
        with torch.autograd.forward_ad.dual_level():
            make_dual = torch.autograd.forward_ad.make_dual
            xs, ws, bs = x, list(weights), list(biases)
            if tangent_on == "input":
                xs = make_dual(x, torch.randn_like(x))
            elif tangent_on == "weight":
                ws[1] = make_dual(ws[1], torch.randn_like(ws[1]))
            else:
                bs[2] = make_dual(bs[2], torch.randn_like(bs[2]))
            ours = torch.autograd.forward_ad.unpack_dual(mlp(xs, ws, bs)).tangent
            theirs = torch.autograd.forward_ad.unpack_dual(reference(xs, ws, bs)).tangent
        assert ours is not None, tangent_on
        torch.testing.assert_close(ours, theirs)


def test_double_backward_raises(ext):
    weights, biases = make([3, 4, 2])
    weights[0].requires_grad_()
    (g,) = torch.autograd.grad(mlp(torch.randn(2, 3, dtype=torch.float64), weights, biases).sum(), weights[0],
                               create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


@pytest.mark.parametrize(
    "args, match",
    [
        (lambda: (torch.randn(2, 4), [], []), "at least one layer"),
        (lambda: (torch.randn(2, 4), [torch.randn(5, 4)], []), "one bias entry"),
        (lambda: (torch.randn(2, 4), [torch.randn(5, 4), torch.randn(2, 6)], [None, None]), r"weights\[1\]"),
        (lambda: (torch.randn(2, 4), [torch.randn(5, 4, dtype=torch.float64)], [None]), "dtype"),
        (lambda: (torch.randn(2, 4), [torch.randn(5, 4)], [torch.randn(3)]), "bias"),
        (lambda: (torch.randn(2, 4), [torch.randn(20)], [None]), "2-D weight"),
    ],
)
def test_bad_input_raises(backend, args, match):
    with pytest.raises(RuntimeError, match=match):
        mlp(*args())


def test_module(backend):
    torch.manual_seed(0)
    model = initkit.nn.MLP([4, 5, 3, 2])
    assert sum(p.numel() for p in model.parameters()) == 51  # the classic teaching network
    assert list(model.state_dict()) == [f"layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    x = torch.randn(2, 4)
    weights = [layer.weight for layer in model.layers]
    biases = [layer.bias for layer in model.layers]
    torch.testing.assert_close(model(x), reference(x, weights, biases))
    assert all(layer.bias.eq(0).all() for layer in model.layers)  # kaiming_uniform: zero biases
    bound = (6 / 4) ** 0.5  # He uniform for ReLU: sqrt(6 / fan_in)
    assert 0 < model.layers[0].weight.abs().max() <= bound


@pytest.mark.parametrize("scheme", ["torch", "kaiming_normal", "xavier_uniform", "xavier_normal", "lecun_normal"])
def test_module_inits(backend, scheme):
    model = initkit.nn.MLP([8, 16, 4], init=scheme, bias=scheme == "torch", dtype=torch.float64)
    assert model.layers[0].weight.dtype == torch.float64 and model.layers[0].weight.std() > 0
    assert (model.layers[0].bias is not None) == (scheme == "torch")
    assert model(torch.randn(3, 8, dtype=torch.float64)).shape == (3, 4)


def test_module_rejects_bad_config():
    with pytest.raises(ValueError, match="at least"):
        initkit.nn.MLP([4])
    with pytest.raises(ValueError, match="unknown MLP init"):
        initkit.nn.MLP([4, 2], init="zeros")


def test_autocast_cpu_runs_in_bfloat16(backend):
    weights, biases = make([8, 16, 4], dtype=torch.float32)
    x = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mlp(x, weights, biases)
        expected = reference(x, weights, biases)
    assert out.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=2e-2)  # bf16 has 8 significant bits
