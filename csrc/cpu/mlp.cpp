// CPU kernels of initkit::mlp and initkit::_mlp_forward: a whole MLP in one op call,
//   h0 = input, h_{i+1} = relu(h_i @ weights[i].T + biases[i]), no ReLU after the last layer.
// For small MLPs the per-layer cost of the dispatcher, autograd and Python dominates the
// arithmetic; here each layer is one dense_layer call (a direct loop for tiny layers), or, in
// float32 inference, where it measures faster, the whole MLP is one parallel region of initkit's
// own kernel with the rows split across threads (cpu::own_mlp: no fork and join per layer, no
// thread idle on a narrow last layer).
// _mlp_forward also returns the hidden activations h_1 .. h_{L-1} as [rows, width] tensors, which
// the autograd kernel saves for _mlp_backward.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "../common/linear_checks.h"
#include "dense_layer.h"

namespace initkit {
namespace {

using OptionalTensorList = c10::List<std::optional<at::Tensor>>;

// Layer by layer: each layer is one dense_layer call on its own engine.
at::Tensor layer_by_layer(const at::Tensor& x, at::TensorList weights, const OptionalTensorList& biases,
                          std::vector<at::Tensor>* hidden) {
  at::Tensor h = x;
  const size_t layers = weights.size();
  for (size_t i = 0; i < layers; ++i) {
    const bool last = i + 1 == layers;
    at::Tensor out = cpu::dense_layer(h, weights[i], biases.get(i), /*relu=*/!last);
    if (hidden != nullptr && !last) hidden->push_back(out);
    h = std::move(out);
  }
  return h;
}

// Inference on initkit's own kernel, the rows split across threads through every layer
// (cpu::own_mlp), from the weights' cached panels.
at::Tensor own_rows(const at::Tensor& x, at::TensorList weights, const OptionalTensorList& biases) {
  std::vector<at::Tensor> panels, bias_list;
  std::vector<int64_t> outs;
  for (size_t i = 0; i < weights.size(); ++i) {
    panels.push_back(cpu::packed_weight(weights[i], cpu::Engine::kOwn, cpu::pack_gemm_panels));
    outs.push_back(weights[i].size(0));
    bias_list.push_back(biases.get(i).value_or(at::Tensor()));
  }
  return cpu::own_mlp(x, panels, outs, bias_list);
}

// The MLP shapes whose inference runs own_rows (true) or layer by layer (false), keyed by
// (rows, in_features, input contiguous, threads, then per layer: out_features, bias present).
std::mutex& rows_choice_mutex() {
  static std::mutex m;
  return m;
}

std::map<std::vector<int64_t>, bool>& rows_choices() {
  static std::map<std::vector<int64_t>, bool> table;
  return table;
}

// Inference (weights may stay packed): own_rows where it is usable and measured faster than layer
// by layer for this shape (cpu::calibrate_choice, layer by layer playing MKL's part: own_rows must
// win by the margin), else layer by layer. own_rows gives the bits of the own engine layer by layer.
at::Tensor inference_layers(const at::Tensor& x, at::TensorList weights, const OptionalTensorList& biases) {
  const auto pinned = cpu::pinned_engine();
  bool usable = x.scalar_type() == at::kFloat && cpu::own_gemm_available() && x.size(0) > 0 && x.size(1) > 0 &&
                (!pinned.has_value() || *pinned == cpu::Engine::kOwn);
  std::vector<int64_t> key{x.size(0), x.size(1), x.is_contiguous(), at::get_num_threads()};
  double macs = 0;
  for (size_t i = 0; usable && i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    const std::optional<at::Tensor> b = biases.get(i);
    const bool has_bias = b.has_value() && b->defined();
    // Packable weights only (cpu::packed_weight): contiguous and not inference tensors.
    usable = w.size(0) > 0 && w.is_contiguous() && !w.is_inference() && (!has_bias || b->is_contiguous());
    macs += static_cast<double>(x.size(0)) * w.size(0) * w.size(1);
    key.push_back(w.size(0));
    key.push_back(has_bias);
  }
  // Below kCalibrateMinMacs in all: the layers' direct loops (dense_layer.h).
  if (!usable || macs < cpu::kCalibrateMinMacs) return layer_by_layer(x, weights, biases, nullptr);
  if (pinned.has_value()) return own_rows(x, weights, biases);
  {
    std::lock_guard<std::mutex> lock(rows_choice_mutex());
    const auto it = rows_choices().find(key);
    if (it != rows_choices().end())
      return it->second ? own_rows(x, weights, biases) : layer_by_layer(x, weights, biases, nullptr);
  }
  layer_by_layer(x, weights, biases, nullptr);  // untimed: calibrates each layer's engine first
  const bool candidates[cpu::kEngines] = {true, true, false};
  at::Tensor result;
  const int winner = cpu::calibrate_choice(candidates, [&](int e) {
    return e == 1 ? own_rows(x, weights, biases) : layer_by_layer(x, weights, biases, nullptr);
  }, 0, &result);
  std::lock_guard<std::mutex> lock(rows_choice_mutex());
  rows_choices().emplace(std::move(key), winner == 1);
  return result;
}

at::Tensor mlp_layers(const char* op, const at::Tensor& input, at::TensorList weights,
                      const OptionalTensorList& biases, std::vector<at::Tensor>* hidden) {
  check_mlp_args(op, input, weights, biases);
  const int64_t rows = leading_rows(input);
  const at::Tensor x = input.dim() == 2 ? input : input.reshape({rows, input.size(-1)});
  const at::Tensor out = hidden == nullptr && cpu::pack_weights_allowed() ? inference_layers(x, weights, biases)
                                                                          : layer_by_layer(x, weights, biases, hidden);
  if (input.dim() == 2) return out;
  return out.view(output_shape(input, out.size(1)));
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
