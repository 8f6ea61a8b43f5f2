// Autocast for initkit::linear_relu and initkit::mlp (AutocastCPU and AutocastCUDA): inside an
// autocast region the float32 arguments are cast to the autocast dtype (bf16/fp16, like F.linear
// there), then the op is redispatched below autocast. Without this, bf16 activations would meet
// fp32 weights and the kernels' dtype check would fire. float64 is left alone, as autocast does.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "../include/initkit/ops.h"

namespace initkit {
namespace {

using OptionalTensor = std::optional<at::Tensor>;

template <c10::DeviceType device>
at::Tensor linear_relu_autocast(const at::Tensor& input, const at::Tensor& weight, const OptionalTensor& bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device));
  const auto dtype = at::autocast::get_autocast_dtype(device);
  return ops::linear_relu(at::autocast::cached_cast(dtype, input, device), at::autocast::cached_cast(dtype, weight, device),
                 at::autocast::cached_cast(dtype, bias, device));
}

template <c10::DeviceType device>
at::Tensor mlp_autocast(const at::Tensor& input, at::TensorList weights, const c10::List<OptionalTensor>& biases) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device));
  const auto dtype = at::autocast::get_autocast_dtype(device);
  c10::List<OptionalTensor> cast_biases;
  for (size_t i = 0; i < biases.size(); ++i) cast_biases.push_back(at::autocast::cached_cast(dtype, biases.get(i), device));
  return ops::mlp(at::autocast::cached_cast(dtype, input, device), at::autocast::cached_cast(dtype, weights, device),
                 cast_biases);
}

}  // namespace
}  // namespace initkit

TORCH_LIBRARY_IMPL(initkit, AutocastCPU, m) {
  m.impl("linear_relu", &initkit::linear_relu_autocast<c10::DeviceType::CPU>);
  m.impl("mlp", &initkit::mlp_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(initkit, AutocastCUDA, m) {
  m.impl("linear_relu", &initkit::linear_relu_autocast<c10::DeviceType::CUDA>);
  m.impl("mlp", &initkit::mlp_autocast<c10::DeviceType::CUDA>);
}
