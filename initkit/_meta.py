"""Fake (meta) kernels for torch.compile and torch.export.

Imported by initkit._load only after initkit._C registered the ops; its module name is the one
named by m.set_python_module() in csrc/initkit.cpp. The fills mutate in place and return
nothing, so their fakes only have to accept the arguments.
"""

import torch


@torch.library.register_fake("initkit::uniform_fill")
def _uniform_fill_fake(self, low, high, seed, stream=0, offset=0):
    return None


@torch.library.register_fake("initkit::normal_fill")
def _normal_fill_fake(self, mean, std, seed, stream=0, offset=0):
    return None


@torch.library.register_fake("initkit::trunc_normal_fill")
def _trunc_normal_fill_fake(self, mean, std, a, b, seed, stream=0, offset=0):
    return None


@torch.library.register_fake("initkit::multi_fill")
def _multi_fill_fake(tensors, kinds, params, seed, streams):
    return None


# ---- fused dense layers: output shapes, and the checks the kernels make (a fake tensor must
# reject what the real kernel rejects, e.g. a meta input with a cpu weight) ----------------------


def _check_layer(op, input, weight, bias, in_features, layer=None):
    where = "" if layer is None else f" for layer {layer}"
    torch._check(weight.dim() == 2, lambda: f"{op}: expected a 2-D weight [out_features, in_features]{where}, got shape {tuple(weight.shape)}")
    torch._check(
        weight.shape[1] == in_features,
        lambda: f"{op}: weight shape {tuple(weight.shape)}{where} expects {weight.shape[1]} input features, but the input has {in_features}",
    )
    torch._check(weight.dtype == input.dtype, lambda: f"{op}: expected input and weight to have the same dtype, got {input.dtype} and {weight.dtype}")
    torch._check(weight.device == input.device, lambda: f"{op}: expected input and weight on the same device, got {input.device} and {weight.device}")
    if bias is not None:
        torch._check(bias.dim() == 1 and bias.shape[0] == weight.shape[0], lambda: f"{op}: expected a 1-D bias of size {weight.shape[0]}, got shape {tuple(bias.shape)}")
        torch._check(bias.dtype == input.dtype, lambda: f"{op}: expected bias dtype {input.dtype}, got {bias.dtype}")
        torch._check(bias.device == input.device, lambda: f"{op}: expected bias on {input.device}, got {bias.device}")


def _check_input(op, input):
    torch._check(input.dim() >= 1, lambda: f"{op}: expected an input of shape [..., in_features], got a 0-D tensor")
    torch._check(
        input.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16),
        lambda: f"{op}: expected float32, float64, float16 or bfloat16 tensors, got input dtype {input.dtype}",
    )


@torch.library.register_fake("initkit::linear_relu")
def _linear_relu_fake(input, weight, bias=None):
    _check_input("initkit::linear_relu", input)
    _check_layer("initkit::linear_relu", input, weight, bias, input.shape[-1])
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


@torch.library.register_fake("initkit::_linear_relu_backward")
def _linear_relu_backward_fake(grad_out, out, input, weight, output_mask):
    grad_input = torch.empty_like(input, memory_format=torch.contiguous_format) if output_mask[0] else None
    grad_weight = torch.empty_like(weight, memory_format=torch.contiguous_format) if output_mask[1] else None
    grad_bias = weight.new_empty((weight.shape[0],)) if output_mask[2] else None
    return grad_input, grad_weight, grad_bias


def _mlp_output(op, input, weights, biases, keep_hidden):
    _check_input(op, input)
    torch._check(len(weights) >= 1, lambda: f"{op}: expected at least one layer, got an empty weight list")
    torch._check(
        len(biases) == len(weights),
        lambda: f"{op}: expected one bias entry (a tensor or None) per weight, got {len(biases)} biases for {len(weights)} weights",
    )
    rows = _leading_numel(input)
    features = input.shape[-1]
    hidden = []
    for i, (weight, bias) in enumerate(zip(weights, biases)):
        _check_layer(op, input, weight, bias, features, layer=i)
        features = weight.shape[0]
        if keep_hidden and i + 1 < len(weights):
            hidden.append(input.new_empty((rows, features)))
    return input.new_empty((*input.shape[:-1], features)), hidden


def _leading_numel(input):
    rows = 1
    for size in input.shape[:-1]:
        rows *= size
    return rows


@torch.library.register_fake("initkit::mlp")
def _mlp_fake(input, weights, biases):
    return _mlp_output("initkit::mlp", input, weights, biases, keep_hidden=False)[0]


@torch.library.register_fake("initkit::_mlp_forward")
def _mlp_forward_fake(input, weights, biases):
    return _mlp_output("initkit::_mlp_forward", input, weights, biases, keep_hidden=True)


@torch.library.register_fake("initkit::_mlp_backward")
def _mlp_backward_fake(grad_out, input, weights, biases, hidden, input_grad):
    grad_input = torch.empty_like(input, memory_format=torch.contiguous_format) if input_grad else None
    grad_weights = [torch.empty_like(w, memory_format=torch.contiguous_format) for w in weights]
    grad_biases = [b.new_empty(b.shape) for b in biases if b is not None]
    return grad_input, grad_weights, grad_biases
