// Autograd for initkit::mlp and the device-generic kernel of its backward op:
//   _mlp_backward(grad_out, input, weights, biases, hidden, input_grad)
//     -> (grad_input?, grad_weights (one per layer), grad_biases (one per bias that is present))
// The forward pass with grad runs initkit::_mlp_forward, which also returns the hidden
// activations h_1 .. h_{L-1} (after ReLU); backward takes each ReLU mask from them (h > 0).
// Weight gradients are always computed (an MLP's weights are what it trains).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "../common/dense_ops.h"
#include "../common/linear_checks.h"
#include "../cpu/dense_backward.h"
#include "../cpu/dense_layer.h"
#include "forward_ad.h"
#include "no_double_backward.h"

namespace initkit {
namespace {

using OptionalTensor = std::optional<at::Tensor>;
using OptionalTensorList = c10::List<OptionalTensor>;
using BackwardResult = std::tuple<OptionalTensor, std::vector<at::Tensor>, std::vector<at::Tensor>>;

bool present(const OptionalTensor& t) { return t.has_value() && t->defined(); }

BackwardResult mlp_backward_math(const at::Tensor& grad_out, const at::Tensor& input, at::TensorList weights,
                                 const OptionalTensorList& biases, at::TensorList hidden, bool input_grad) {
  check_mlp_backward_args("initkit::_mlp_backward", grad_out, input, weights, biases, hidden);
  const size_t layers = weights.size();
  const int64_t rows = leading_rows(input);
  std::vector<at::Tensor> grad_weights(layers), grad_biases;
  at::Tensor grad = grad_out.reshape({rows, weights[layers - 1].size(0)});  // gradient of layer i's pre-activation
  // Layer i's bias gradient: the last layer's (no ReLU) summed here, the others during the mask pass.
  OptionalTensor bias_pending = present(biases.get(layers - 1)) ? OptionalTensor(grad.sum(0)) : std::nullopt;
  OptionalTensor grad_input;
  for (size_t i = layers; i-- > 0;) {
    const at::Tensor layer_input = i == 0 ? input.reshape({rows, input.size(-1)}) : hidden[i - 1];
    grad_weights[i] = cpu::mm_nt(grad.t(), layer_input.t());
    if (bias_pending.has_value()) grad_biases.push_back(*bias_pending);
    bias_pending.reset();
    if (i > 0) {
      // The mask of layer i - 1 and its bias gradient in one pass (cpu/dense_backward.h).
      std::tie(grad, bias_pending) =
          cpu::relu_grad_and_bias(cpu::mm_nt(grad, weights[i].t()), hidden[i - 1], present(biases.get(i - 1)));
    } else if (input_grad) {
      grad_input = cpu::mm_nt(grad, weights[0].t()).view(input.sizes());
    }
  }
  std::reverse(grad_biases.begin(), grad_biases.end());
  return {grad_input, grad_weights, grad_biases};
}

// Arguments: input, the weights, the biases that are present (so autograd sees them as
// variables), and the full optional bias list for the op call.
class MLPFunction : public torch::autograd::Function<MLPFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, at::TensorList weights,
                            at::TensorList present_biases, const OptionalTensorList& biases) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, hidden] = ops::_mlp_forward(input, weights, biases);
    // Saved: input, L weights, L biases (undefined where absent), L-1 hidden activations.
    std::vector<at::Tensor> saved{input};
    saved.insert(saved.end(), weights.begin(), weights.end());
    for (size_t i = 0; i < biases.size(); ++i) saved.push_back(biases.get(i).value_or(at::Tensor()));
    saved.insert(saved.end(), hidden.begin(), hidden.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["layers"] = static_cast<int64_t>(weights.size());
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto layers = static_cast<size_t>(ctx->saved_data["layers"].toInt());
    const at::TensorList weights(saved.data() + 1, layers);
    OptionalTensorList biases;
    for (size_t i = 0; i < layers; ++i) {
      const at::Tensor& b = saved[1 + layers + i];
      biases.push_back(b.defined() ? OptionalTensor(b) : std::nullopt);
    }
    const at::TensorList hidden(saved.data() + 1 + 2 * layers, layers - 1);
    auto [grad_input, grad_weights, grad_biases] =
        ops::_mlp_backward(grad_outputs[0], saved[0], weights, biases, hidden, ctx->needs_input_grad(0));
    torch::autograd::variable_list grads{grad_input.value_or(at::Tensor())};
    grads.insert(grads.end(), grad_weights.begin(), grad_weights.end());
    grads.insert(grads.end(), grad_biases.begin(), grad_biases.end());
    grads.emplace_back();  // the optional bias list: not a variable
    return grads;
  }
};

// The ATen composite of mlp, for forward-mode AD (forward_ad.h).
at::Tensor mlp_composite(const at::Tensor& input, at::TensorList weights, const OptionalTensorList& biases) {
  at::Tensor h = input;
  for (size_t i = 0; i < weights.size(); ++i) {
    h = at::linear(h, weights[i], biases.get(i));
    if (i + 1 < weights.size()) h = at::relu(h);
  }
  return h;
}

at::Tensor mlp_autograd(const at::Tensor& input, at::TensorList weights, const OptionalTensorList& biases) {
  bool forward_grad = has_forward_grad(input);
  for (const auto& w : weights) forward_grad = forward_grad || has_forward_grad(w);
  for (size_t i = 0; i < biases.size(); ++i) forward_grad = forward_grad || has_forward_grad(biases.get(i));
  if (forward_grad) return mlp_composite(input, weights, biases);
  bool requires_grad = false;
  if (at::GradMode::is_enabled()) {
    requires_grad = input.requires_grad();
    for (const auto& w : weights) requires_grad = requires_grad || w.requires_grad();
    for (size_t i = 0; i < biases.size(); ++i) {
      const OptionalTensor b = biases.get(i);
      requires_grad = requires_grad || (b.has_value() && b->defined() && b->requires_grad());
    }
  }
  if (!requires_grad) {
    at::AutoDispatchBelowADInplaceOrView guard;  // inference: no node, no saved activations
    const cpu::PackWeightsGuard pack(true);      // the weights may stay packed (cpu/dense_gemm.h)
    return ops::mlp(input, weights, biases);
  }
  std::vector<at::Tensor> present_biases;
  for (size_t i = 0; i < biases.size(); ++i) {
    const OptionalTensor b = biases.get(i);
    if (b.has_value() && b->defined()) present_biases.push_back(*b);
  }
  return MLPFunction::apply(input, weights, at::TensorList(present_biases), biases);
}

std::tuple<at::Tensor, std::vector<at::Tensor>> mlp_forward_autograd(const at::Tensor& input, at::TensorList weights,
                                                                      const OptionalTensorList& biases) {
  std::vector<at::Tensor> inputs{input};
  inputs.insert(inputs.end(), weights.begin(), weights.end());
  auto outputs = run_not_differentiable(
      "initkit::_mlp_forward is not differentiable: it is the forward half of initkit::mlp's autograd; call "
      "initkit::mlp instead.",
      inputs, [&] {
    auto [out, hidden] = ops::_mlp_forward(input, weights, biases);
    hidden.insert(hidden.begin(), out);
    return hidden;
  });
  at::Tensor out = outputs[0];
  outputs.erase(outputs.begin());
  return {out, outputs};
}

BackwardResult mlp_backward_autograd(const at::Tensor& grad_out, const at::Tensor& input, at::TensorList weights,
                                     const OptionalTensorList& biases, at::TensorList hidden, bool input_grad) {
  std::vector<at::Tensor> inputs{grad_out, input};
  inputs.insert(inputs.end(), weights.begin(), weights.end());
  inputs.insert(inputs.end(), hidden.begin(), hidden.end());
  const size_t layers = weights.size();
  const auto outputs = run_not_differentiable(no_double_backward("initkit::_mlp_backward"), inputs, [&] {
    auto [gi, gw, gb] = ops::_mlp_backward(grad_out, input, weights, biases, hidden, input_grad);
    torch::autograd::variable_list flat{gi.value_or(at::Tensor())};
    flat.insert(flat.end(), gw.begin(), gw.end());
    flat.insert(flat.end(), gb.begin(), gb.end());
    return flat;
  });
  const OptionalTensor grad_input = outputs[0].defined() ? OptionalTensor(outputs[0]) : std::nullopt;
  std::vector<at::Tensor> grad_weights(outputs.begin() + 1, outputs.begin() + 1 + layers);
  std::vector<at::Tensor> grad_biases(outputs.begin() + 1 + layers, outputs.end());
  return {grad_input, grad_weights, grad_biases};
}

}  // namespace
}  // namespace initkit

TORCH_LIBRARY_IMPL(initkit, CompositeExplicitAutograd, m) { m.impl("_mlp_backward", &initkit::mlp_backward_math); }

TORCH_LIBRARY_IMPL(initkit, Autograd, m) {
  m.impl("mlp", &initkit::mlp_autograd);
  m.impl("_mlp_forward", &initkit::mlp_forward_autograd);
  m.impl("_mlp_backward", &initkit::mlp_backward_autograd);
}
