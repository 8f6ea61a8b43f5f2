// Public C++ header for LibTorch programs that link the initkit ops library.
//
// Including this header references initkit::register_ops(), which keeps the linker from
// dropping libinitkit_ops (whose static initializers register the initkit:: ops); without it,
// torch::jit::load of a model using initkit ops fails with "Unknown builtin op: initkit::...".
//
// It also gives one typed C++ entry point per public op (torchvision's vision::ops::nms()
// pattern): each call goes through the dispatcher (autograd, autocast, the device kernel) via a
// handle looked up once. initkit's own autograd and autocast layers call these too.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>

namespace initkit {
int register_ops();
namespace detail {
inline const int ops_registered = register_ops();
}  // namespace detail

namespace ops {

// relu(input @ weight.T + bias): input [..., in], weight [out, in], bias [out] or none.
inline at::Tensor linear_relu(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias = std::nullopt) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("initkit::linear_relu", "").typed<decltype(linear_relu)>();
  return op.call(input, weight, bias);
}

// An MLP in one op: ReLU after every layer but the last; biases[i] may be none.
inline at::Tensor mlp(const at::Tensor& input, at::TensorList weights, const c10::List<std::optional<at::Tensor>>& biases) {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("initkit::mlp", "").typed<decltype(mlp)>();
  return op.call(input, weights, biases);
}

}  // namespace ops
}  // namespace initkit
