// Argument checks of every dense op (linear_relu, mlp and their internal forward/backward ops),
// on every backend. Exception types follow F.linear (RuntimeError for shape, dtype and device
// mistakes); every message names the op, the argument and the offending value. Each check runs
// before any size is read (a 0-D tensor must not reach size(-1)).
//
// initkit/_linear_checks.py makes the same checks, in the same order, with the same messages
// (for the fake kernels and the torch backend); tests/test_dense_bad_input.py compares the two.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/accumulate.h>

#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace initkit {

inline bool is_linear_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// The name Python prints (str(torch.float32) == "torch.float32"), so both sides read alike.
inline std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(t);
  }
}

// An argument's name, "weight" or "weights[2]": only printed into a failing check's message, so
// the checks of every call build no strings.
struct ArgName {
  const char* name;
  int64_t index = -1;  // -1: not a list item
};

inline std::ostream& operator<<(std::ostream& os, const ArgName& arg) {
  os << arg.name;
  if (arg.index >= 0) os << "[" << arg.index << "]";
  return os;
}

inline void check_input(const char* op, const at::Tensor& input) {
  TORCH_CHECK(input.dim() >= 1, op, ": expected an input of shape [..., in_features], got a 0-D tensor");
  TORCH_CHECK(is_linear_dtype(input.scalar_type()), op,
              ": expected float32, float64, float16 or bfloat16 tensors, got input dtype ",
              dtype_name(input.scalar_type()));
}

// `t` has the input's dtype and device.
inline void check_like_input(const char* op, const ArgName& what, const at::Tensor& t, const at::Tensor& input) {
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), op, ": expected ", what, " of the input's dtype ",
              dtype_name(input.scalar_type()), ", got ", dtype_name(t.scalar_type()));
  TORCH_CHECK(t.device() == input.device(), op, ": expected ", what, " on the input's device ", input.device(),
              ", got ", t.device());
}

// weight [out, in] with in == in_features; bias [out] or absent.
inline void check_layer(const char* op, const ArgName& weight_name, const ArgName& bias_name,
                        const at::Tensor& input, int64_t in_features, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(weight.dim() == 2, op, ": expected ", weight_name, " to be a 2-D weight [out_features, in_features], got shape ",
              weight.sizes());
  TORCH_CHECK(weight.size(1) == in_features, op, ": ", weight_name, " of shape ", weight.sizes(), " expects ", weight.size(1),
              " input features, but its input has ", in_features);
  check_like_input(op, weight_name, weight, input);
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), op, ": expected ", bias_name,
                " to be a 1-D bias of size ", weight.size(0), ", got shape ", bias->sizes());
    check_like_input(op, bias_name, *bias, input);
  }
}

// `t` has exactly the shape `expected` and the input's dtype and device.
inline void check_shaped(const char* op, const ArgName& what, const at::Tensor& t, c10::IntArrayRef expected,
                         const at::Tensor& input) {
  TORCH_CHECK(t.sizes() == expected, op, ": expected ", what, " of shape ", expected, ", got ", t.sizes());
  check_like_input(op, what, t, input);
}

inline std::vector<int64_t> output_shape(const at::Tensor& input, int64_t features) {
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end() - 1);
  shape.push_back(features);
  return shape;
}

inline int64_t leading_rows(const at::Tensor& input) {
  return c10::multiply_integers(input.sizes().begin(), input.sizes().end() - 1);
}

// input [..., in], weight [out, in], bias [out] or absent; one device, one float dtype.
inline void check_linear_args(const char* op, const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias) {
  check_input(op, input);
  check_layer(op, {"weight"}, {"bias"}, input, input.size(-1), weight, bias);
}

// _linear_relu_backward: as linear_relu, plus out and grad_out of the output's shape.
inline void check_linear_backward_args(const char* op, const at::Tensor& grad_out, const at::Tensor& out,
                                       const at::Tensor& input, const at::Tensor& weight) {
  check_linear_args(op, input, weight, std::nullopt);
  const std::vector<int64_t> shape = output_shape(input, weight.size(0));
  check_shaped(op, {"out"}, out, shape, input);
  check_shaped(op, {"grad_out"}, grad_out, shape, input);
}

inline void check_mlp_args(const char* op, const at::Tensor& input, at::TensorList weights,
                           const c10::List<std::optional<at::Tensor>>& biases) {
  check_input(op, input);
  TORCH_CHECK(!weights.empty(), op, ": expected at least one layer, got an empty weight list");
  TORCH_CHECK(biases.size() == weights.size(), op, ": expected one bias entry (a tensor or None) per weight, got ",
              biases.size(), " biases for ", weights.size(), " weights");
  int64_t features = input.size(-1);
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto index = static_cast<int64_t>(i);
    check_layer(op, {"weights", index}, {"biases", index}, input, features, weights[i], biases.get(i));
    features = weights[i].size(0);
  }
}

// _mlp_backward: as mlp, plus L-1 hidden activations [rows, width_i] and grad_out of the output's shape.
inline void check_mlp_backward_args(const char* op, const at::Tensor& grad_out, const at::Tensor& input,
                                    at::TensorList weights, const c10::List<std::optional<at::Tensor>>& biases,
                                    at::TensorList hidden) {
  check_mlp_args(op, input, weights, biases);
  TORCH_CHECK(hidden.size() + 1 == weights.size(), op, ": expected ", weights.size() - 1,
              " hidden activations (one per layer but the last), got ", hidden.size());
  const int64_t rows = leading_rows(input);
  for (size_t i = 0; i < hidden.size(); ++i) {
    check_shaped(op, {"hidden", static_cast<int64_t>(i)}, hidden[i], {rows, weights[i].size(0)}, input);
  }
  check_shaped(op, {"grad_out"}, grad_out, output_shape(input, weights.back().size(0)), input);
}

}  // namespace initkit
