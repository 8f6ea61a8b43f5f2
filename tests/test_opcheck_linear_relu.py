"""torch.library.opcheck for the fused dense ops: schema, autograd registration, fake tensor and
AOT dispatch (static and dynamic shapes). A few representative samples, not the full product."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

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


def _strided_inputs():
    """Inputs whose layouts the kernels see in practice: contiguous, transposed, 3-D with a transposed
    batch, zero rows; with weights contiguous or transposed."""
    x = torch.randn(5, 4, dtype=torch.float64)
    return [x, x.t().contiguous().t(), torch.randn(3, 5, 4, dtype=torch.float64).transpose(0, 1), x[:0]]


@pytest.mark.parametrize("input", _strided_inputs(), ids=["contiguous", "transposed", "batch_transposed", "no_rows"])
@pytest.mark.parametrize("weight_layout", ["contiguous", "transposed"])
def test_fake_outputs_have_the_real_kernels_shapes_and_strides(ext, input, weight_layout):
    """Under torch.compile and torch.export, later ops are planned from the fake kernels' outputs: a
    stride that differs from the real kernel's reads the real output wrongly."""
    weights = [torch.randn(3, 4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)]
    if weight_layout == "transposed":
        weights = [w.t().contiguous().t() for w in weights]
    biases = [torch.randn(3, dtype=torch.float64), None]
    out = torch.ops.initkit.linear_relu(input, weights[0], biases[0])
    mlp_out, hidden = torch.ops.initkit._mlp_forward(input, weights, biases)
    grad, mlp_grad = torch.randn_like(out), torch.randn_like(mlp_out)
    calls = [
        (torch.ops.initkit.linear_relu.default, (input, weights[0], biases[0])),
        (torch.ops.initkit._linear_relu_backward.default, (grad, out, input, weights[0], [True, True, True])),
        (torch.ops.initkit.mlp.default, (input, weights, biases)),
        (torch.ops.initkit._mlp_forward.default, (input, weights, biases)),
        (torch.ops.initkit._mlp_backward.default, (mlp_grad, input, weights, biases, hidden, True)),
    ]
    for op, args in calls:
        real = torch.utils._pytree.tree_leaves(op(*args))
        with FakeTensorMode() as mode:
            fake = torch.utils._pytree.tree_leaves(op(*torch.utils._pytree.tree_map_only(torch.Tensor, mode.from_tensor, args)))
        assert [(t.shape, t.stride(), t.dtype) for t in fake] == [(t.shape, t.stride(), t.dtype) for t in real], op
