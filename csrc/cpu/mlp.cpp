// CPU kernels of initkit::mlp and initkit::_mlp_forward: a whole MLP in one op call,
//   h0 = input, h_{i+1} = relu(h_i @ weights[i].T + biases[i]), no ReLU after the last layer.
// For small MLPs the per-layer cost of the dispatcher, autograd and Python dominates the
// arithmetic; here each layer is one dense_layer call (a direct loop for tiny layers).
// _mlp_forward also returns the hidden activations h_1 .. h_{L-1} as [rows, width] tensors, which
// the autograd kernel saves for _mlp_backward.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "../common/linear_checks.h"
#include "dense_layer.h"

namespace initkit {
namespace {

at::Tensor mlp_layers(const char* op, const at::Tensor& input, at::TensorList weights,
                      const c10::List<std::optional<at::Tensor>>& biases, std::vector<at::Tensor>* hidden) {
  check_mlp_args(op, input, weights, biases);
  const int64_t rows = leading_rows(input);
  at::Tensor x = input.dim() == 2 ? input : input.reshape({rows, input.size(-1)});
  const size_t layers = weights.size();
  for (size_t i = 0; i < layers; ++i) {
    const bool last = i + 1 == layers;
    at::Tensor out = cpu::dense_layer(x, weights[i], biases.get(i), /*relu=*/!last);
    if (hidden != nullptr && !last) hidden->push_back(out);
    x = std::move(out);
  }
  if (input.dim() == 2) return x;
  return x.view(output_shape(input, x.size(1)));
}

at::Tensor mlp_cpu(const at::Tensor& input, at::TensorList weights, const c10::List<std::optional<at::Tensor>>& biases) {
  return mlp_layers("initkit::mlp", input, weights, biases, nullptr);
}

std::tuple<at::Tensor, std::vector<at::Tensor>> mlp_forward_cpu(const at::Tensor& input, at::TensorList weights,
                                                                 const c10::List<std::optional<at::Tensor>>& biases) {
  std::vector<at::Tensor> hidden;
  hidden.reserve(weights.size());
  at::Tensor out = mlp_layers("initkit::_mlp_forward", input, weights, biases, &hidden);
  return {std::move(out), std::move(hidden)};
}

}  // namespace
}  // namespace initkit

TORCH_LIBRARY_IMPL(initkit, CPU, m) {
  m.impl("mlp", &initkit::mlp_cpu);
  m.impl("_mlp_forward", &initkit::mlp_forward_cpu);
}
