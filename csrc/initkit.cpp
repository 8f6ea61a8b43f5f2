// The one TORCH_LIBRARY block of the initkit namespace: every op schema lives here.
// Kernels are registered per backend with TORCH_LIBRARY_IMPL (cpu/, cuda/); fake kernels for
// torch.compile and torch.export are registered in Python by initkit/_ext/fake_kernels.py.
#include <torch/library.h>

#include "common/philox.h"

#include "include/initkit/ops.h"

namespace initkit {
int register_ops() { return 0; }  // see include/initkit/ops.h

namespace {
std::vector<int64_t> philox4x32_10_words(c10::IntArrayRef counter, c10::IntArrayRef key) {
  TORCH_CHECK_VALUE(counter.size() == 4 && key.size() == 2, "initkit::_philox4x32_10: expected 4 counter and 2 key words, got ",
                    counter.size(), " and ", key.size());
  const auto word = [](int64_t v) { return static_cast<uint32_t>(v); };
  const PhiloxWords r = philox4x32_10(word(counter[0]), word(counter[1]), word(counter[2]), word(counter[3]),
                                      word(key[0]), word(key[1]));
  return {r.w[0], r.w[1], r.w[2], r.w[3]};
}
}  // namespace
}  // namespace initkit

TORCH_LIBRARY(initkit, m) {
  m.set_python_module("initkit._ext.fake_kernels");
  // In-place fills. `seed` is the Philox key as a one-element int64 CPU tensor; `stream`
  // selects an independent random stream; `offset` is the logical index of the first element
  // (a shard of a larger tensor gets exactly the values of that part of the whole).
  m.def("uniform_fill(Tensor(a!) self, float low, float high, Tensor seed, int stream=0, int offset=0) -> ()");
  m.def("normal_fill(Tensor(a!) self, float mean, float std, Tensor seed, int stream=0, int offset=0) -> ()");
  m.def(
      "trunc_normal_fill(Tensor(a!) self, float mean, float std, float a, float b, Tensor seed, int stream=0, "
      "int offset=0) -> ()");
  // Many tensors in one parallel region (one launch on CUDA). kinds: 0 uniform, 1 normal,
  // 2 truncated normal; params: 4 per tensor (low, high, -, -) / (mean, std, -, -) /
  // (mean, std, a, b). Tensor i uses stream streams[i] and equals a single fill with it.
  m.def("multi_fill(Tensor(a!)[] tensors, int[] kinds, float[] params, Tensor seed, int[] streams) -> ()");
  // A block of a larger logical tensor (a DTensor's local shard): self holds the elements
  // [origin[d], origin[d] + self.size(d)) of a tensor of global_sizes, and each element gets the
  // value of its GLOBAL logical index, so the block equals that part of the whole tensor's fill.
  // kind and params as for multi_fill. CPU only (initkit/sharded.py cuts CUDA blocks into runs).
  m.def(
      "_fill_block(Tensor(a!) self, int kind, float[] params, Tensor seed, int stream, int[] global_sizes, "
      "int[] origin) -> ()");
  // The generator floor for benchmarks: the Philox words a float32 fill would use, stored as
  // their bits (same counters, no sampling).
  m.def("_philox_fill(Tensor(a!) self, Tensor seed, int stream=0) -> ()");
  // The raw generator, for known-answer tests: four counter words and two key words in, four
  // output words out (each a uint32 carried in an int).
  m.def("_philox4x32_10(int[] counter, int[] key) -> int[]");

  // Fused dense layers. linear_relu(input [..., in], weight [out, in], bias [out]) ==
  // relu(F.linear(input, weight, bias)). Its backward takes the saved output (ReLU mask =
  // out > 0) and output_mask = which of (grad_input, grad_weight, grad_bias) to compute.
  m.def("linear_relu(Tensor input, Tensor weight, Tensor? bias=None) -> Tensor");
  m.def(
      "_linear_relu_backward(Tensor grad_out, Tensor out, Tensor input, Tensor weight, bool[3] output_mask) "
      "-> (Tensor?, Tensor?, Tensor?)");
  // A whole MLP: ReLU between layers, none after the last; biases[i] may be None.
  // _mlp_forward also returns the L-1 hidden activations (after ReLU, as [rows, width]) that
  // _mlp_backward needs; grad_biases holds one gradient per bias that is present.
  m.def("mlp(Tensor input, Tensor[] weights, Tensor?[] biases) -> Tensor");
  m.def("_mlp_forward(Tensor input, Tensor[] weights, Tensor?[] biases) -> (Tensor, Tensor[])");
  m.def(
      "_mlp_backward(Tensor grad_out, Tensor input, Tensor[] weights, Tensor?[] biases, Tensor[] hidden, "
      "bool input_grad) -> (Tensor?, Tensor[], Tensor[])");
}

// Device-independent: no tensors, so it is registered for every dispatch key at once.
TORCH_LIBRARY_IMPL(initkit, CompositeExplicitAutograd, m) { m.impl("_philox4x32_10", &initkit::philox4x32_10_words); }
