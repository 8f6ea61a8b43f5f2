"""initkit.functional.linear_relu and initkit.nn.FusedLinearReLU against F.relu(F.linear(...))."""

import math

import pytest
import torch
import torch.nn.functional as F

import initkit
from initkit.functional import linear_relu


def reference(x, w, b):
    return F.relu(F.linear(x, w, b))


def make(shape, in_features, out_features, dtype=torch.float64, bias=True):
    torch.manual_seed(0)
    x = torch.randn(*shape, in_features, dtype=dtype)
    w = torch.randn(out_features, in_features, dtype=dtype) / math.sqrt(max(in_features, 1))
    b = torch.randn(out_features, dtype=dtype) if bias else None
    return x, w, b


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (2, 3), (2, 1, 5), ()])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("features", [(3, 4), (64, 33), (200, 300)])  # direct loop and BLAS paths
def test_matches_torch(backend, shape, bias, dtype, features):
    x, w, b = make(shape, *features, dtype=dtype, bias=bias)
    out = linear_relu(x, w, b)
    assert out.shape == (*shape, features[1]) and out.dtype == dtype
    # float64: rounding only; float32: a different summation order than MKL's, error ~ sqrt(K) ulp.
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, reference(x, w, b), **tol)


def test_large_batch_blocks(backend):
    x, w, b = make((3000,), 64, 96, dtype=torch.float32)  # several row blocks of the CPU kernel
    torch.testing.assert_close(linear_relu(x, w, b), reference(x, w, b), rtol=1e-5, atol=1e-5)


def test_non_contiguous_input(backend):
    x, w, b = make((6,), 40, 30)
    xt = x.t().contiguous().t()  # same values, column-major
    assert not xt.is_contiguous()
    torch.testing.assert_close(linear_relu(xt, w, b), reference(x, w, b))
    x3 = torch.randn(4, 40, 5, dtype=torch.float64).transpose(1, 2)
    torch.testing.assert_close(linear_relu(x3, w, b), reference(x3, w, b))
    w_t = torch.randn(40, 30, dtype=torch.float64).t()
    torch.testing.assert_close(linear_relu(x, w_t, b), reference(x, w_t, b))


def test_nan_propagates(backend):
    x, w, b = make((3,), 4, 5)
    x[1, 0] = float("nan")
    out = linear_relu(x, w, b)
    assert out[1].isnan().all() and not out[0].isnan().any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("features", [(3, 4), (256, 128)])
def test_low_precision_error_at_most_twice_torch(backend, dtype, features):
    x, w, b = make((33,), *features, dtype=torch.float32)
    truth = reference(x, w, b)
    ours = linear_relu(x.to(dtype), w.to(dtype), b.to(dtype)).float()
    torch_same_dtype = reference(x.to(dtype), w.to(dtype), b.to(dtype)).float()
    err_ours = (ours - truth).abs().max().item()
    err_torch = (torch_same_dtype - truth).abs().max().item()
    # flash-attention's rule: at most 2x PyTorch's own error at that precision (+ a rounding floor).
    assert err_ours <= 2 * err_torch + 1e-3, (err_ours, err_torch)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows", [1, 64, 200])  # one row block of the bias sums, exactly one, several
def test_low_precision_backward_error_at_most_twice_torch(backend, dtype, rows):
    x, w, b = make((rows,), 48, 40, dtype=torch.float32)
    grad = torch.randn(rows, 40)

    def grads(fn, dt):
        args = [t.to(dt).requires_grad_() for t in (x, w, b)]
        out = fn(*args)
        return [g.double() for g in torch.autograd.grad(out, args, grad.to(dt))], out

    truth, _ = grads(reference, torch.float64)
    ours, out = grads(linear_relu, dtype)
    theirs, _ = grads(reference, dtype)
    assert out.dtype == dtype
    for name, o, t, r in zip(("input", "weight", "bias"), ours, theirs, truth):
        err_ours, err_torch = (o - r).abs().max().item(), (t - r).abs().max().item()
        assert err_ours <= 2 * err_torch + 1e-2, (name, err_ours, err_torch)


def test_low_precision_backward_nan_output_passes_gradient(backend):
    # threshold_backward's rule: the gradient is kept where !(out <= 0), so where out is NaN.
    x, w, b = make((70,), 8, 6, dtype=torch.float32)
    x[3, 0] = float("nan")
    args = [t.bfloat16().requires_grad_() for t in (x, w, b)]
    grad_x, grad_w, grad_b = torch.autograd.grad(linear_relu(*args), args, torch.ones(70, 6, dtype=torch.bfloat16))
    ref = [t.bfloat16().requires_grad_() for t in (x, w, b)]
    ref_x, ref_w, ref_b = torch.autograd.grad(reference(*ref), ref, torch.ones(70, 6, dtype=torch.bfloat16))
    assert grad_b.isnan().sum() == ref_b.isnan().sum() == 0  # the NaN row's grad is 1 per column
    torch.testing.assert_close(grad_b, ref_b, rtol=1e-2, atol=1e-2)
    assert torch.equal(grad_x.isnan(), ref_x.isnan()) and torch.equal(grad_w.isnan(), ref_w.isnan())


@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(backend, bias):
    x, w, b = make((2, 3), 5, 4, bias=bias)
    # Keep pre-activations away from 0, where ReLU's derivative jumps.
    pre = F.linear(x, w, b)
    x = torch.where(pre.abs().min(-1, keepdim=True).values < 0.05, x + 0.3, x)
    args = [x.requires_grad_(), w.requires_grad_()] + ([b.requires_grad_()] if bias else [])
    fn = (lambda x, w, b: linear_relu(x, w, b)) if bias else (lambda x, w: linear_relu(x, w))
    assert torch.autograd.gradcheck(fn, args)


def test_grads_match_torch_and_skip_unneeded(backend):
    x, w, b = make((8,), 6, 5)
    w.requires_grad_()
    b.requires_grad_()
    linear_relu(x, w, b).square().sum().backward()
    w_ref, b_ref = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    reference(x, w_ref, b_ref).square().sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad)
    torch.testing.assert_close(b.grad, b_ref.grad)
    assert x.grad is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rows", [1, 63, 64, 300])  # around the fused bias sum's 64-row blocks
def test_backward_nan_inf_and_broadcast_grad_match_torch(backend, dtype, rows):
    """The ReLU mask and the bias gradient (one fused pass on CPU) as threshold_backward and sum:
    a NaN output passes its gradient, inf/NaN gradients propagate, and an expanded (stride-0)
    gradient from .sum() works."""
    x, w, b = make((rows,), 40, 70, dtype=dtype)
    x[0, 0] = float("nan")  # row 0: NaN outputs
    b[1] = -float("inf")  # column 1: always masked
    b[2] = float("inf")  # column 2: inf outputs
    g = torch.randn(rows, 70, dtype=dtype)
    g[-1, 3] = float("inf")
    g[-1, 4] = float("nan")
    for grad in (g, None):  # None: out.sum().backward(), an expanded gradient
        ours = [t.clone().requires_grad_() for t in (x, w, b)]
        theirs = [t.clone().requires_grad_() for t in (x, w, b)]
        out_ours, out_theirs = linear_relu(*ours), reference(*theirs)
        if grad is None:
            out_ours.sum().backward()
            out_theirs.sum().backward()
        else:
            out_ours.backward(grad)
            out_theirs.backward(grad)
        for a, r in zip(ours, theirs):
            torch.testing.assert_close(a.grad, r.grad, equal_nan=True, rtol=1e-4, atol=1e-4)


def test_double_backward_raises(ext):
    x, w, b = make((3,), 4, 5)
    w.requires_grad_()
    (g,) = torch.autograd.grad(linear_relu(x, w, b).sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


def test_autocast_cpu_runs_in_bfloat16(backend):
    x, w, b = make((4,), 8, 3, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear_relu(x, w, b)
        expected = reference(x, w, b)
    assert out.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=2e-2)  # bf16 has 8 significant bits


def test_autocast_cpu_mixed_dtypes(backend):
    # Inside autocast F.linear takes a bfloat16 input with float32 weights; so do both backends.
    x, w, b = make((4,), 8, 3, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear_relu(x.bfloat16(), w, b)
        expected = reference(x.bfloat16(), w, b)
    assert out.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("features", [(8, 5), (64, 64), (256, 300)])  # direct loop, tiny GEMM, BLAS
def test_forward_mode_ad_matches_torch(backend, features):
    import torch.autograd.forward_ad as fwAD

    x, w, b = make((3,), *features)
    tangents = [torch.randn_like(t) for t in (x, w, b)]
    for which in range(3):  # a tangent on the input, the weight, the bias
        primals = [x, w, b]
        with fwAD.dual_level():
            duals = list(primals)
            duals[which] = fwAD.make_dual(primals[which], tangents[which])
            ours = fwAD.unpack_dual(linear_relu(*duals)).tangent
            theirs = fwAD.unpack_dual(reference(*duals)).tangent
        assert ours is not None
        torch.testing.assert_close(ours, theirs)
    jac = torch.func.jacfwd(lambda v: linear_relu(v, w, b))(x[0])
    torch.testing.assert_close(jac, torch.func.jacfwd(lambda v: reference(v, w, b))(x[0]))


def test_sparse_weight_raises_like_torch(backend):
    x, w, b = make((3,), 4, 5, dtype=torch.float32)
    with pytest.raises(RuntimeError) as ours:
        linear_relu(x, w.to_sparse(), b)
    with pytest.raises(RuntimeError):
        reference(x, w.to_sparse(), b)
    assert not isinstance(ours.value, NotImplementedError)


@pytest.mark.parametrize(
    "make_args, match",
    [
        (lambda: (torch.randn(3, 4), torch.randn(5, 6), None), "input shape|input features|in_features"),
        (lambda: (torch.randn(3, 4), torch.randn(5, 4), torch.randn(4)), "bias"),
        (lambda: (torch.randn(3, 4), torch.randn(5, 4, dtype=torch.float64), None), "dtype"),
        (lambda: (torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, dtype=torch.float64)), "dtype"),
        (lambda: (torch.randn(3, 4), torch.randn(4), None), "2-D weight"),
        (lambda: (torch.randn(3, 4, device="meta"), torch.randn(5, 4), None), "weight on the input.s device"),
        (lambda: (torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, device="meta")), "bias on the input.s device"),
        (lambda: (torch.tensor(1.0), torch.randn(5, 1), None), "0-D"),
        (lambda: (torch.ones(3, 4, dtype=torch.int64), torch.ones(5, 4, dtype=torch.int64), None), "float"),
    ],
)
def test_bad_input_raises(backend, make_args, match):
    with pytest.raises(RuntimeError, match=match):
        linear_relu(*make_args())


def test_meta_tensors_give_shapes(backend):
    out = linear_relu(torch.empty(2, 3, 4, device="meta"), torch.empty(5, 4, device="meta"))
    assert out.shape == (2, 3, 5) and out.device.type == "meta"


def test_module_is_a_drop_in_for_linear(backend):
    torch.manual_seed(1)
    fused = initkit.nn.FusedLinearReLU(6, 4)
    linear = torch.nn.Linear(6, 4)
    assert fused.state_dict().keys() == linear.state_dict().keys()
    linear.load_state_dict(fused.state_dict())
    x = torch.randn(3, 6)
    torch.testing.assert_close(fused(x), torch.relu(linear(x)))
    bound = 1 / math.sqrt(6)  # nn.Linear's init: both weight and bias within +-1/sqrt(fan_in)
    assert fused.weight.abs().max() <= bound and fused.bias.abs().max() <= bound
    assert fused.weight.std() > bound / 3  # actually filled, not left empty/zero
    no_bias = initkit.nn.FusedLinearReLU(6, 4, bias=False, dtype=torch.float64)
    assert no_bias.bias is None and no_bias(x.double()).dtype == torch.float64
    assert "in_features=6, out_features=4, bias=True" in repr(fused)


def test_module_with_pruned_or_parametrized_weight(backend):
    from torch.nn.utils import parametrize, prune

    torch.manual_seed(2)
    x = torch.randn(3, 8)
    pruned = initkit.nn.FusedLinearReLU(8, 4)
    prune.l1_unstructured(pruned, "weight", amount=0.5)
    torch.testing.assert_close(pruned(x), reference(x, pruned.weight, pruned.bias))

    class Doubled(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    param = initkit.nn.FusedLinearReLU(8, 4)
    parametrize.register_parametrization(param, "bias", Doubled())
    torch.testing.assert_close(param(x), reference(x, param.weight, param.bias))
    mlp_module = initkit.nn.MLP([8, 6, 2])
    prune.l1_unstructured(mlp_module.layers[0], "weight", amount=0.5)
    layers = mlp_module.layers
    expected = F.linear(reference(x, layers[0].weight, layers[0].bias), layers[1].weight, layers[1].bias)
    torch.testing.assert_close(mlp_module(x), expected)
