// CUDA kernels of initkit::linear_relu and initkit::mlp (compiled only in CUDA builds). Each
// layer is ATen's at::_addmm_activation(bias, x, weight.t(), use_gelu=false): one cuBLASLt GEMM
// with the RELU_BIAS epilogue when cuBLASLt accepts the shapes (see isInputCompliesAddmmCudaLt:
// contiguous 2-D output, dims > 1, float/half/bf16/double); otherwise ATen itself falls back to
// GEMM + relu_. Without a bias: mm + relu_ (the epilogue needs the bias pointer).
// Backward uses the device-generic kernels in autograd/.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/linear_checks.h"

namespace initkit {
namespace {

at::Tensor dense_layer_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            bool relu) {
  const bool has_bias = bias.has_value() && bias->defined();
  if (relu && has_bias) return at::_addmm_activation(*bias, x, weight.t(), 1, 1, /*use_gelu=*/false);
  at::Tensor out = has_bias ? at::addmm(*bias, x, weight.t()) : at::mm(x, weight.t());
  return relu ? out.relu_() : out;
}

at::Tensor linear_relu_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_linear_args("initkit::linear_relu", input, weight, bias);
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t rows = leading_rows(input);
  const at::Tensor out = dense_layer_cuda(input.reshape({rows, weight.size(1)}), weight, bias, /*relu=*/true);
  return out.view(output_shape(input, weight.size(0)));
}

at::Tensor mlp_layers_cuda(const char* op, const at::Tensor& input, at::TensorList weights,
                           const c10::List<std::optional<at::Tensor>>& biases, std::vector<at::Tensor>* hidden) {
  check_mlp_args(op, input, weights, biases);
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t rows = leading_rows(input);
  at::Tensor x = input.reshape({rows, input.size(-1)});
  for (size_t i = 0; i < weights.size(); ++i) {
    const bool last = i + 1 == weights.size();
    x = dense_layer_cuda(x, weights[i], biases.get(i), /*relu=*/!last).contiguous();
    if (hidden != nullptr && !last) hidden->push_back(x);
  }
  return x.view(output_shape(input, x.size(1)));
}

at::Tensor mlp_cuda(const at::Tensor& input, at::TensorList weights, const c10::List<std::optional<at::Tensor>>& biases) {
  return mlp_layers_cuda("initkit::mlp", input, weights, biases, nullptr);
}

std::tuple<at::Tensor, std::vector<at::Tensor>> mlp_forward_cuda(const at::Tensor& input, at::TensorList weights,
                                                                  const c10::List<std::optional<at::Tensor>>& biases) {
  std::vector<at::Tensor> hidden;
  at::Tensor out = mlp_layers_cuda("initkit::_mlp_forward", input, weights, biases, &hidden);
  return {std::move(out), std::move(hidden)};
}

}  // namespace
}  // namespace initkit

TORCH_LIBRARY_IMPL(initkit, CUDA, m) {
  m.impl("linear_relu", &initkit::linear_relu_cuda);
  m.impl("mlp", &initkit::mlp_cuda);
  m.impl("_mlp_forward", &initkit::mlp_forward_cuda);
}
