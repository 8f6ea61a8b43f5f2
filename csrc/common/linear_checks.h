// Argument checks shared by the linear_relu and mlp kernels (CPU and CUDA). Exception types
// follow F.linear (RuntimeError for shape, dtype and device mistakes); every message names the
// op and the offending value.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace initkit {

inline bool is_linear_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// One layer: weight [out, in] with in == in_features, bias [out] or absent, both of the
// input's dtype and device. `layer` is -1 for the single-layer op.
inline void check_layer_args(const char* op, int64_t layer, const at::Tensor& input, int64_t in_features,
                             const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(weight.dim() == 2, op, ": expected a 2-D weight [out_features, in_features]",
              layer >= 0 ? " for layer " + std::to_string(layer) : "", ", got shape ", weight.sizes());
  TORCH_CHECK(weight.size(1) == in_features, op, ": ", layer >= 0 ? "layer " + std::to_string(layer) + " " : "",
              "weight shape ", weight.sizes(), " expects ", weight.size(1), " input features, but the input has ",
              in_features, " (input shape ", input.sizes(), ")");
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), op, ": expected input and weight to have the same dtype, got ",
              input.scalar_type(), " and ", weight.scalar_type());
  TORCH_CHECK(weight.device() == input.device(), op, ": expected input and weight on the same device, got ",
              input.device(), " and ", weight.device());
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), op, ": expected a 1-D bias of size ",
                weight.size(0), ", got shape ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == input.scalar_type(), op, ": expected bias dtype ", input.scalar_type(), ", got ",
                bias->scalar_type());
    TORCH_CHECK(bias->device() == input.device(), op, ": expected bias on ", input.device(), ", got ", bias->device());
  }
}

inline void check_input(const char* op, const at::Tensor& input) {
  TORCH_CHECK(input.dim() >= 1, op, ": expected an input of shape [..., in_features], got a 0-D tensor");
  TORCH_CHECK(is_linear_dtype(input.scalar_type()), op,
              ": expected float32, float64, float16 or bfloat16 tensors, got input dtype ", input.scalar_type());
}

// input [..., in], weight [out, in], bias [out] or absent; one device, one float dtype.
inline void check_linear_args(const char* op, const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias) {
  check_input(op, input);
  check_layer_args(op, -1, input, input.size(-1), weight, bias);
}

inline void check_mlp_args(const char* op, const at::Tensor& input, at::TensorList weights,
                           const c10::List<std::optional<at::Tensor>>& biases) {
  check_input(op, input);
  TORCH_CHECK(!weights.empty(), op, ": expected at least one layer, got an empty weight list");
  TORCH_CHECK(biases.size() == weights.size(), op, ": expected one bias entry (a tensor or None) per weight, got ",
              biases.size(), " biases for ", weights.size(), " weights");
  int64_t features = input.size(-1);
  for (size_t i = 0; i < weights.size(); ++i) {
    check_layer_args(op, static_cast<int64_t>(i), input, features, weights[i], biases.get(i));
    features = weights[i].size(0);
  }
}

}  // namespace initkit
