// The CPU building blocks of linear_relu and mlp: one dense layer out = x @ w.T + b, with an
// optional ReLU, and its backward. Shared by cpu/linear_relu.cpp and cpu/mlp.cpp.
//
// Forward: one output allocation, no separate bias pass, and the ReLU applied while the output
// is still in cache:
//   - tiny layers (few multiply-adds, contiguous float/double): a direct loop; the cost of one
//     BLAS call (dispatch, checks, bias copy) is larger than the arithmetic;
//   - otherwise at::addmm_out (the bias is copied into the output, then GEMM with beta=1) by
//     blocks of rows whose output fits in L2, each block clamped right after its GEMM. Blocking
//     only when the weight is small enough to stay cached across blocks: for a large weight the
//     GEMM dominates and the clamp pass is noise.
// Inputs may be strided (BLAS takes strides); the output is contiguous.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <optional>

namespace initkit {
namespace cpu {

constexpr int64_t kTinyMacs = 8192;                  // direct loop up to this many multiply-adds
constexpr int64_t kBlockBytes = 256 * 1024;          // output rows per GEMM block: about L2
constexpr int64_t kCachedWeightBytes = 1024 * 1024;  // block only when the weight stays cached
constexpr int64_t kReluGrain = 32768;                // elements per task of the clamp

template <typename T>
void tiny_dense(const T* x, const T* w, const T* b, T* out, int64_t rows, int64_t outs, int64_t ins, bool relu) {
  for (int64_t m = 0; m < rows; ++m) {
    const T* xr = x + m * ins;
    for (int64_t n = 0; n < outs; ++n) {
      const T* wr = w + n * ins;
      // Four partial sums: independent chains instead of one serial dependency.
      T acc[4] = {0, 0, 0, 0};
      int64_t k = 0;
      for (; k + 4 <= ins; k += 4) {
        for (int j = 0; j < 4; ++j) acc[j] += xr[k + j] * wr[k + j];
      }
      for (; k < ins; ++k) acc[0] += xr[k] * wr[k];
      T v = (acc[0] + acc[1]) + (acc[2] + acc[3]);
      if (b != nullptr) v += b[n];
      out[m * outs + n] = (relu && v < T(0)) ? T(0) : v;  // NaN passes through, like torch.relu
    }
  }
}

inline bool is_dense_rows(const at::Tensor& t) {
  return t.stride(-1) == 1 && (t.dim() == 1 || t.size(0) <= 1 || t.stride(0) == t.size(1));
}

// In-place max(v, 0) over a contiguous tensor; NaN stays NaN.
inline void relu_inplace(at::Tensor& t) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "initkit_relu_cpu", [&] {
    scalar_t* data = t.data_ptr<scalar_t>();
    at::parallel_for(0, t.numel(), kReluGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (data[i] < scalar_t(0)) data[i] = scalar_t(0);
      }
    });
  });
}

// out [M, N] (contiguous) = relu?(x [M, K] @ w[N, K].T + b).
inline void dense_layer(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b, at::Tensor& out,
                        bool relu) {
  const int64_t rows = x.size(0), outs = w.size(0), ins = w.size(1);
  if (rows == 0 || outs == 0) return;
  const bool has_bias = b.has_value() && b->defined();
  const auto dtype = x.scalar_type();
  if (rows * outs * ins <= kTinyMacs && (dtype == at::kFloat || dtype == at::kDouble) && is_dense_rows(x) &&
      w.is_contiguous() && (!has_bias || b->is_contiguous())) {
    AT_DISPATCH_FLOATING_TYPES(dtype, "initkit_dense_layer_cpu", [&] {
      tiny_dense<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                           has_bias ? b->data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), rows, outs, ins,
                           relu);
    });
    return;
  }
  int64_t block = rows;
  if (relu && static_cast<int64_t>(w.nbytes()) <= kCachedWeightBytes) {
    block = std::max<int64_t>(16, kBlockBytes / (outs * static_cast<int64_t>(out.element_size())));
  }
  const at::Tensor wt = w.t();
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t r = std::min(block, rows - r0);
    at::Tensor o = r == rows ? out : out.narrow(0, r0, r);
    const at::Tensor xb = r == rows ? x : x.narrow(0, r0, r);
    if (has_bias) {
      at::addmm_out(o, *b, xb, wt);
    } else {
      at::mm_out(o, xb, wt);
    }
    if (relu) relu_inplace(o);
  }
}

// Backward of out = relu(x @ w.T + b) from the saved output (mask = out > 0). grad_out and
// out are [M, N]; x is [M, K]. Returns the masked gradient of the pre-activation.
inline at::Tensor relu_grad(const at::Tensor& grad_out, const at::Tensor& out) {
  return at::threshold_backward(grad_out, out, 0);
}

}  // namespace cpu
}  // namespace initkit
