// CPU kernel of initkit::linear_relu: out[..., n] = max(0, sum_k input[..., k] * weight[n, k] + bias[n]).
// input [..., in] with any leading dims and any strides (reshaped to 2-D, a view when possible),
// weight [out, in], bias [out] or None, all float32/float64/float16/bfloat16 of one dtype.
// One output allocation; bias, GEMM and ReLU fused as described in dense_layer.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/linear_checks.h"
#include "dense_layer.h"

namespace initkit {
namespace {

at::Tensor linear_relu_cpu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_linear_args("initkit::linear_relu", input, weight, bias);
  const int64_t ins = weight.size(1), outs = weight.size(0);
  const int64_t rows = leading_rows(input);
  const at::Tensor x = input.dim() == 2 ? input : input.reshape({rows, ins});
  const at::Tensor out = cpu::dense_layer(x, weight, bias, /*relu=*/true);
  return input.dim() == 2 ? out : out.view(output_shape(input, outs));
}

}  // namespace
}  // namespace initkit

TORCH_LIBRARY_IMPL(initkit, CPU, m) { m.impl("linear_relu", &initkit::linear_relu_cpu); }
