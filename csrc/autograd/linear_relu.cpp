// Autograd for initkit::linear_relu (a C++ torch::autograd::Function, so backward works in eager,
// TorchScript from Python and LibTorch, torch.compile and torch.export alike) and the
// device-generic kernel of its backward op:
//   _linear_relu_backward(grad_out, out, input, weight, output_mask) -> (grad_input?, grad_weight?, grad_bias?)
// The ReLU mask is recomputed from the saved output (out > 0): no pre-activation is kept.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "../common/dense_ops.h"
#include "../common/linear_checks.h"
#include "../cpu/dense_backward.h"
#include "../cpu/dense_layer.h"
#include "forward_ad.h"
#include "no_double_backward.h"

namespace initkit {
namespace {

using OptionalTensor = std::optional<at::Tensor>;
using BackwardResult = std::tuple<OptionalTensor, OptionalTensor, OptionalTensor>;

// ATen math, so one kernel serves every device (and fake tensors use the Python fake); on CPU the
// mask and the bias gradient take one fused pass and the GEMMs the per-shape engine choice.
BackwardResult linear_relu_backward_math(const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& input,
                                         const at::Tensor& weight, std::array<bool, 3> output_mask) {
  check_linear_backward_args("initkit::_linear_relu_backward", grad_out, out, input, weight);
  const int64_t outs = weight.size(0), ins = weight.size(1);
  const int64_t rows = leading_rows(input);
  // One pass on CPU: the ReLU mask and the bias gradient's column sums (cpu/dense_backward.h).
  auto [grad_pre, grad_bias] =
      cpu::relu_grad_and_bias(grad_out.reshape({rows, outs}), out.reshape({rows, outs}), output_mask[2]);
  OptionalTensor grad_input, grad_weight;
  if (output_mask[0]) grad_input = cpu::mm_nt(grad_pre, weight.t()).view(input.sizes());
  if (output_mask[1]) grad_weight = cpu::mm_nt(grad_pre.t(), input.reshape({rows, ins}).t());
  return {grad_input, grad_weight, grad_bias};
}

class LinearReLUFunction : public torch::autograd::Function<LinearReLUFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const OptionalTensor& bias) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = ops::linear_relu(input, weight, bias);
    ctx->save_for_backward({input, weight, out});
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      has_bias && ctx->needs_input_grad(2)};
    auto [grad_input, grad_weight, grad_bias] =
        ops::_linear_relu_backward(grad_outputs[0], saved[2], saved[0], saved[1], mask);
    return {grad_input.value_or(at::Tensor()), grad_weight.value_or(at::Tensor()), grad_bias.value_or(at::Tensor())};
  }
};

bool any_requires_grad(const at::Tensor& input, const at::Tensor& weight, const OptionalTensor& bias) {
  return input.requires_grad() || weight.requires_grad() || (bias.has_value() && bias->defined() && bias->requires_grad());
}

at::Tensor linear_relu_autograd(const at::Tensor& input, const at::Tensor& weight, const OptionalTensor& bias) {
  if (has_forward_grad(input) || has_forward_grad(weight) || has_forward_grad(bias)) {
    return at::relu(at::linear(input, weight, bias));  // (forward_ad.h)
  }
  if (!at::GradMode::is_enabled() || !any_requires_grad(input, weight, bias)) {
    // Inference: skip building the autograd node (measurable at tiny shapes); the weight may
    // stay packed between calls (cpu/dense_gemm.h).
    at::AutoDispatchBelowADInplaceOrView guard;
    const cpu::PackWeightsGuard pack(true);
    return ops::linear_relu(input, weight, bias);
  }
  return LinearReLUFunction::apply(input, weight, bias);
}

BackwardResult linear_relu_backward_autograd(const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& input,
                                             const at::Tensor& weight, std::array<bool, 3> output_mask) {
  const auto outputs = run_not_differentiable(no_double_backward("initkit::_linear_relu_backward"), {grad_out, out, input, weight}, [&] {
    auto [gi, gw, gb] = ops::_linear_relu_backward(grad_out, out, input, weight, output_mask);
    return torch::autograd::variable_list{gi.value_or(at::Tensor()), gw.value_or(at::Tensor()),
                                          gb.value_or(at::Tensor())};
  });
  const auto optional = [](const at::Tensor& t) { return t.defined() ? OptionalTensor(t) : std::nullopt; };
  return {optional(outputs[0]), optional(outputs[1]), optional(outputs[2])};
}

}  // namespace
}  // namespace initkit

TORCH_LIBRARY_IMPL(initkit, CompositeExplicitAutograd, m) {
  m.impl("_linear_relu_backward", &initkit::linear_relu_backward_math);
}

TORCH_LIBRARY_IMPL(initkit, Autograd, m) {
  m.impl("linear_relu", &initkit::linear_relu_autograd);
  m.impl("_linear_relu_backward", &initkit::linear_relu_backward_autograd);
}
