// Autograd for the internal ops that are not differentiable (_linear_relu_backward,
// _mlp_backward, _mlp_forward). Without grad they just run below autograd; with it (e.g. under
// create_graph=True) their outputs get a grad_fn that raises a clear error if someone
// differentiates through them: double backward is not supported.
#pragma once
#include <torch/autograd.h>

#include <functional>
#include <string>
#include <vector>

namespace initkit {

struct NoDoubleBackward : public torch::autograd::Function<NoDoubleBackward> {
  // `compute` runs below autograd; only its defined outputs are returned (custom Functions
  // cannot carry undefined outputs), `defined` records which ones those were.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::TensorList inputs,
                                                std::string message,
                                                const std::function<torch::autograd::variable_list()>& compute,
                                                std::vector<bool>* defined) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->saved_data["message"] = message;
    torch::autograd::variable_list outputs = compute();
    torch::autograd::variable_list kept;
    for (const auto& t : outputs) {
      defined->push_back(t.defined());
      if (t.defined()) kept.push_back(t);
    }
    return kept;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list) {
    TORCH_CHECK(false, ctx->saved_data["message"].toStringRef());
  }
};

// Message for the backward ops.
inline std::string no_double_backward(const char* op) {
  return std::string(op) +
         " is not differentiable: double backward through initkit's fused linear/ReLU ops is not supported. Use "
         "F.relu(F.linear(...)) (or initkit.use_backend(\"torch\")) for higher-order gradients.";
}

// Runs an internal op's `compute` with autograd handled as described above; `message` is the
// error raised if its outputs are differentiated.
inline torch::autograd::variable_list run_not_differentiable(const std::string& message, at::TensorList inputs,
                                                      const std::function<torch::autograd::variable_list()>& compute) {
  bool needs_graph = false;
  if (at::GradMode::is_enabled()) {
    for (const auto& t : inputs) needs_graph = needs_graph || (t.defined() && t.requires_grad());
  }
  if (!needs_graph) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return compute();
  }
  std::vector<bool> defined;
  torch::autograd::variable_list kept = NoDoubleBackward::apply(inputs, message, compute, &defined);
  torch::autograd::variable_list outputs;
  size_t next = 0;
  for (bool d : defined) outputs.push_back(d ? kept[next++] : at::Tensor());
  return outputs;
}

}  // namespace initkit
