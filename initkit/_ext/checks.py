"""Argument checks of the dense ops, the same checks in the same order with the same messages as
the C++ kernels make (csrc/common/linear_checks.h; tests/test_dense_bad_input.py compares them),
for the fake kernels and the pure-PyTorch fallback: every backend rejects the same inputs with a
RuntimeError naming the op (F.linear raises RuntimeError for these too). Arguments that are not
tensors at all raise TypeError, as F.linear does."""

import torch

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_Tensor = torch.Tensor  # (a module global: found faster than torch.Tensor on the per-call path)


def _require(condition, message) -> None:
    # Not torch._check: under torch.compile its message closure may not reference tensors.
    if not condition:
        raise RuntimeError(message())


def require_tensor(op, name, value, optional=False) -> None:
    """TypeError unless value is a Tensor (or None when optional), worded like F.linear's."""
    if not (isinstance(value, _Tensor) or (optional and value is None)):
        raise TypeError(f"{op}(): argument '{name}' must be Tensor, not {type(value).__name__}")


def require_tensor_list(op, name, values, optional_items=False) -> None:
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{op}(): argument '{name}' must be a list of tensors, not {type(values).__name__}")
    # On every call of the fused layers: the item names are only formatted for the error (formatting
    # them each time cost 1.5 us per list of three).
    for value in values:
        if not isinstance(value, _Tensor) and not (optional_items and value is None):
            i = next(i for i, v in enumerate(values) if v is value)
            require_tensor(op, f"{name}[{i}]", value, optional_items)


# One call per op call: the fused layers' Python path runs with caches cold from the GEMMs, where
# each Python call costs about a microsecond.
def require_linear_tensors(op, input, weight, bias) -> None:
    """require_tensor for each argument of linear_relu."""
    if not (isinstance(input, _Tensor) and isinstance(weight, _Tensor) and (bias is None or isinstance(bias, _Tensor))):
        require_tensor(op, "input", input)
        require_tensor(op, "weight", weight)
        require_tensor(op, "bias", bias, optional=True)


def require_mlp_tensors(op, input, weights, biases) -> None:
    """require_tensor / require_tensor_list for each argument of mlp, in that order."""
    if not isinstance(input, _Tensor):
        require_tensor(op, "input", input)
    if not (isinstance(weights, (list, tuple)) and isinstance(biases, (list, tuple))):
        require_tensor_list(op, "weights", weights)
        require_tensor_list(op, "biases", biases, optional_items=True)
    for weight in weights:
        if not isinstance(weight, _Tensor):
            require_tensor_list(op, "weights", weights)
    for bias in biases:
        if bias is not None and not isinstance(bias, _Tensor):
            require_tensor_list(op, "biases", biases, optional_items=True)


def check_input(op, input):
    _require(input.dim() >= 1, lambda: f"{op}: expected an input of shape [..., in_features], got a 0-D tensor")
    _require(
        input.dtype in _FLOAT_DTYPES,
        lambda: f"{op}: expected float32, float64, float16 or bfloat16 tensors, got input dtype {input.dtype}",
    )


def _check_like_input(op, what, t, input):
    _require(t.dtype == input.dtype, lambda: f"{op}: expected {what} of the input's dtype {input.dtype}, got {t.dtype}")
    _require(t.device == input.device, lambda: f"{op}: expected {what} on the input's device {input.device}, got {t.device}")


def _check_layer(op, weight_name, bias_name, input, in_features, weight, bias):
    _require(
        weight.dim() == 2,
        lambda: f"{op}: expected {weight_name} to be a 2-D weight [out_features, in_features], got shape {list(weight.shape)}",
    )
    _require(
        weight.shape[1] == in_features,
        lambda: f"{op}: {weight_name} of shape {list(weight.shape)} expects {weight.shape[1]} input features, but its input has {in_features}",
    )
    _check_like_input(op, weight_name, weight, input)
    if bias is not None:
        _require(
            bias.dim() == 1 and bias.shape[0] == weight.shape[0],
            lambda: f"{op}: expected {bias_name} to be a 1-D bias of size {weight.shape[0]}, got shape {list(bias.shape)}",
        )
        _check_like_input(op, bias_name, bias, input)


def _check_shaped(op, what, t, expected, input):
    _require(list(t.shape) == list(expected), lambda: f"{op}: expected {what} of shape {list(expected)}, got {list(t.shape)}")
    _check_like_input(op, what, t, input)


def output_shape(input, features):
    return [*input.shape[:-1], features]


def leading_rows(input):
    rows = 1
    for size in input.shape[:-1]:
        rows *= size
    return rows


def check_linear(op, input, weight, bias):
    check_input(op, input)
    _check_layer(op, "weight", "bias", input, input.shape[-1], weight, bias)


def check_linear_backward(op, grad_out, out, input, weight):
    check_linear(op, input, weight, None)
    shape = output_shape(input, weight.shape[0])
    _check_shaped(op, "out", out, shape, input)
    _check_shaped(op, "grad_out", grad_out, shape, input)


def check_mlp(op, input, weights, biases):
    check_input(op, input)
    _require(len(weights) >= 1, lambda: f"{op}: expected at least one layer, got an empty weight list")
    _require(
        len(biases) == len(weights),
        lambda: f"{op}: expected one bias entry (a tensor or None) per weight, got {len(biases)} biases for {len(weights)} weights",
    )
    features = input.shape[-1]
    for i, (weight, bias) in enumerate(zip(weights, biases)):
        _check_layer(op, f"weights[{i}]", f"biases[{i}]", input, features, weight, bias)
        features = weight.shape[0]


def check_mlp_backward(op, grad_out, input, weights, biases, hidden):
    check_mlp(op, input, weights, biases)
    _require(
        len(hidden) + 1 == len(weights),
        lambda: f"{op}: expected {len(weights) - 1} hidden activations (one per layer but the last), got {len(hidden)}",
    )
    rows = leading_rows(input)
    for i, h in enumerate(hidden):
        _check_shaped(op, f"hidden[{i}]", h, [rows, weights[i].shape[0]], input)
    _check_shaped(op, "grad_out", grad_out, output_shape(input, weights[-1].shape[0]), input)
