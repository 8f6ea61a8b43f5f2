"""Argument checks of linear_relu and mlp, the same as the C++ kernels make (csrc/common/
linear_checks.h), for the fake kernels and the pure-PyTorch fallback: every backend rejects the
same inputs with a RuntimeError naming the op (F.linear raises RuntimeError for these too)."""

import torch


def _require(condition, message) -> None:
    # Not torch._check: under torch.compile its message closure may not reference tensors.
    if not condition:
        raise RuntimeError(message())


def check_layer(op, input, weight, bias, in_features, layer=None):
    where = "" if layer is None else f" for layer {layer}"
    _require(weight.dim() == 2, lambda: f"{op}: expected a 2-D weight [out_features, in_features]{where}, got shape {tuple(weight.shape)}")
    _require(
        weight.shape[1] == in_features,
        lambda: f"{op}: weight shape {tuple(weight.shape)}{where} expects {weight.shape[1]} input features, but the input has {in_features}",
    )
    _require(weight.dtype == input.dtype, lambda: f"{op}: expected input and weight to have the same dtype, got {input.dtype} and {weight.dtype}")
    _require(weight.device == input.device, lambda: f"{op}: expected input and weight on the same device, got {input.device} and {weight.device}")
    if bias is not None:
        _require(bias.dim() == 1 and bias.shape[0] == weight.shape[0], lambda: f"{op}: expected a 1-D bias of size {weight.shape[0]}, got shape {tuple(bias.shape)}")
        _require(bias.dtype == input.dtype, lambda: f"{op}: expected bias dtype {input.dtype}, got {bias.dtype}")
        _require(bias.device == input.device, lambda: f"{op}: expected bias on {input.device}, got {bias.device}")


def check_input(op, input):
    _require(input.dim() >= 1, lambda: f"{op}: expected an input of shape [..., in_features], got a 0-D tensor")
    _require(
        input.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16),
        lambda: f"{op}: expected float32, float64, float16 or bfloat16 tensors, got input dtype {input.dtype}",
    )


def check_linear(op, input, weight, bias):
    check_input(op, input)
    check_layer(op, input, weight, bias, input.shape[-1])


def check_mlp(op, input, weights, biases):
    check_input(op, input)
    _require(len(weights) >= 1, lambda: f"{op}: expected at least one layer, got an empty weight list")
    _require(
        len(biases) == len(weights),
        lambda: f"{op}: expected one bias entry (a tensor or None) per weight, got {len(biases)} biases for {len(weights)} weights",
    )
    features = input.shape[-1]
    for i, (weight, bias) in enumerate(zip(weights, biases)):
        check_layer(op, input, weight, bias, features, layer=i)
        features = weight.shape[0]
