"""Fake (meta) kernels for torch.compile and torch.export.

Imported by load.py only after initkit._C registered the ops; its module name is the one named
by m.set_python_module() in csrc/initkit.cpp. The fills mutate in place and return
nothing: their fakes only make the checks that decide which kernel runs (seed, devices).
"""

import torch


def _check_fill_call(op, targets, seed):
    """What the real kernels reject before writing: a meta seed or mixed devices would otherwise
    route a call with CPU targets here and leave them unfilled."""
    if not (isinstance(seed, torch.Tensor) and seed.numel() == 1 and seed.dtype == torch.int64 and seed.device.type == "cpu"):
        got = "None" if seed is None else f"{type(seed).__name__}" if not isinstance(seed, torch.Tensor) else (
            f"{seed.numel()} elements of {seed.dtype} on {seed.device}"
        )
        raise RuntimeError(f"{op}: seed must be a one-element int64 CPU tensor, got {got}")
    devices = {t.device for t in targets}
    if len(devices) > 1:
        raise RuntimeError(f"{op}: all tensors must be on one device, got {sorted(map(str, devices))}")


@torch.library.register_fake("initkit::uniform_fill")
def _uniform_fill_fake(self, low, high, seed, stream=0, offset=0):
    _check_fill_call("initkit::uniform_fill", [self], seed)


@torch.library.register_fake("initkit::normal_fill")
def _normal_fill_fake(self, mean, std, seed, stream=0, offset=0):
    _check_fill_call("initkit::normal_fill", [self], seed)
    # as torch's meta normal_ (and the real kernel): a meta tensor or a trace gets the same error
    if not std >= 0.0:
        raise RuntimeError(f"initkit::normal_fill: expects std >= 0.0, but found std {std}")


@torch.library.register_fake("initkit::trunc_normal_fill")
def _trunc_normal_fill_fake(self, mean, std, a, b, seed, stream=0, offset=0):
    _check_fill_call("initkit::trunc_normal_fill", [self], seed)


@torch.library.register_fake("initkit::_philox_fill")
def _philox_fill_fake(self, seed, stream=0):
    _check_fill_call("initkit::_philox_fill", [self], seed)


@torch.library.register_fake("initkit::_fill_block")
def _fill_block_fake(self, kind, params, seed, stream, global_sizes, origin):
    _check_fill_call("initkit::_fill_block", [self], seed)


@torch.library.register_fake("initkit::multi_fill")
def _multi_fill_fake(tensors, kinds, params, seed, streams):
    _check_fill_call("initkit::multi_fill", tensors, seed)


# ---- fused dense layers: output shapes, after the checks the kernels make (a fake tensor must
# reject what the real kernel rejects, e.g. a meta input with a cpu weight) ----------------------

from .checks import check_linear, check_linear_backward, check_mlp, check_mlp_backward, leading_rows  # noqa: E402


@torch.library.register_fake("initkit::linear_relu")
def _linear_relu_fake(input, weight, bias=None):
    check_linear("initkit::linear_relu", input, weight, bias)
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


@torch.library.register_fake("initkit::_linear_relu_backward")
def _linear_relu_backward_fake(grad_out, out, input, weight, output_mask):
    check_linear_backward("initkit::_linear_relu_backward", grad_out, out, input, weight)
    grad_input = torch.empty_like(input, memory_format=torch.contiguous_format) if output_mask[0] else None
    grad_weight = torch.empty_like(weight, memory_format=torch.contiguous_format) if output_mask[1] else None
    grad_bias = weight.new_empty((weight.shape[0],)) if output_mask[2] else None
    return grad_input, grad_weight, grad_bias


def _mlp_output(op, input, weights, biases, keep_hidden):
    check_mlp(op, input, weights, biases)
    rows = leading_rows(input)
    hidden = [input.new_empty((rows, w.shape[0])) for w in weights[:-1]] if keep_hidden else []
    return input.new_empty((*input.shape[:-1], weights[-1].shape[0])), hidden


@torch.library.register_fake("initkit::mlp")
def _mlp_fake(input, weights, biases):
    return _mlp_output("initkit::mlp", input, weights, biases, keep_hidden=False)[0]


@torch.library.register_fake("initkit::_mlp_forward")
def _mlp_forward_fake(input, weights, biases):
    return _mlp_output("initkit::_mlp_forward", input, weights, biases, keep_hidden=True)


@torch.library.register_fake("initkit::_mlp_backward")
def _mlp_backward_fake(grad_out, input, weights, biases, hidden, input_grad):
    check_mlp_backward("initkit::_mlp_backward", grad_out, input, weights, biases, hidden)
    grad_input = torch.empty_like(input, memory_format=torch.contiguous_format) if input_grad else None
    grad_weights = [torch.empty_like(w, memory_format=torch.contiguous_format) for w in weights]
    grad_biases = [b.new_empty(b.shape) for b in biases if b is not None]
    return grad_input, grad_weights, grad_biases
