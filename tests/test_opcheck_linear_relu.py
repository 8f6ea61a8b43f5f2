"""torch.library.opcheck for the fused dense ops: schema, autograd registration, fake tensor and
AOT dispatch (static and dynamic shapes). A few representative samples, not the full product."""

import pytest
import torch

LINEAR_RELU_SAMPLES = [
    ((5, 4), (3, 4), True),
    ((2, 3, 4), (6, 4), False),
    ((0, 4), (3, 4), True),
]


@pytest.mark.parametrize("input_shape, weight_shape, bias", LINEAR_RELU_SAMPLES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_linear_relu(ext, input_shape, weight_shape, bias, requires_grad):
    x = torch.randn(input_shape, dtype=torch.float64, requires_grad=requires_grad)
    w = torch.randn(weight_shape, dtype=torch.float64, requires_grad=requires_grad)
    b = torch.randn(weight_shape[0], dtype=torch.float64, requires_grad=requires_grad) if bias else None
    torch.library.opcheck(torch.ops.initkit.linear_relu.default, (x, w, b))


@pytest.mark.parametrize("output_mask", [[True, True, True], [False, True, False]])
def test_linear_relu_backward(ext, output_mask):
    x, w = torch.randn(5, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    out = torch.relu(x @ w.t())
    grad = torch.randn_like(out)
    torch.library.opcheck(torch.ops.initkit._linear_relu_backward.default, (grad, out, x, w, output_mask))


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("input_shape", [(2, 4), (3, 2, 4)])
def test_mlp(ext, requires_grad, input_shape):
    x = torch.randn(input_shape, dtype=torch.float64, requires_grad=requires_grad)
    weights = [torch.randn(n_out, n_in, dtype=torch.float64, requires_grad=requires_grad) for n_in, n_out in [(4, 5), (5, 3), (3, 2)]]
    biases = [torch.randn(5, dtype=torch.float64, requires_grad=requires_grad), None, torch.randn(2, dtype=torch.float64)]
    torch.library.opcheck(torch.ops.initkit.mlp.default, (x, weights, biases))
    if not requires_grad:  # _mlp_forward is internal to mlp's autograd and refuses to be differentiated
        torch.library.opcheck(torch.ops.initkit._mlp_forward.default, (x, weights, biases))


def test_mlp_backward(ext):
    x = torch.randn(3, 4, dtype=torch.float64)
    weights = [torch.randn(5, 4, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)]
    biases = [torch.randn(5, dtype=torch.float64), None]
    hidden = [torch.relu(x @ weights[0].t() + biases[0])]
    grad = torch.randn(3, 2, dtype=torch.float64)
    for input_grad in (True, False):
        torch.library.opcheck(torch.ops.initkit._mlp_backward.default, (grad, x, weights, biases, hidden, input_grad))
