// Typed entry points of the internal dense ops (the public ones are in include/initkit/ops.h),
// for the autograd layer: one dispatcher handle per op, looked up once.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "../include/initkit/ops.h"

namespace initkit {
namespace ops {

using OptionalTensor = std::optional<at::Tensor>;

// (grad_input?, grad_weight?, grad_bias?) of linear_relu from its saved output (ReLU mask out > 0).
inline std::tuple<OptionalTensor, OptionalTensor, OptionalTensor> _linear_relu_backward(
    const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
    std::array<bool, 3> output_mask) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("initkit::_linear_relu_backward", "")
                             .typed<decltype(_linear_relu_backward)>();
  return op.call(grad_out, out, input, weight, output_mask);
}

// mlp's output and its L-1 hidden activations (after ReLU, [rows, width]).
inline std::tuple<at::Tensor, std::vector<at::Tensor>> _mlp_forward(const at::Tensor& input, at::TensorList weights,
                                                                    const c10::List<OptionalTensor>& biases) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("initkit::_mlp_forward", "").typed<decltype(_mlp_forward)>();
  return op.call(input, weights, biases);
}

// (grad_input?, one grad per weight, one grad per bias that is present).
inline std::tuple<OptionalTensor, std::vector<at::Tensor>, std::vector<at::Tensor>> _mlp_backward(
    const at::Tensor& grad_out, const at::Tensor& input, at::TensorList weights, const c10::List<OptionalTensor>& biases,
    at::TensorList hidden, bool input_grad) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("initkit::_mlp_backward", "").typed<decltype(_mlp_backward)>();
  return op.call(grad_out, input, weights, biases, hidden, input_grad);
}

}  // namespace ops
}  // namespace initkit
