// The CPU building blocks of linear_relu and mlp: one dense layer out = x @ w.T + b, with an
// optional ReLU. Shared by cpu/linear_relu.cpp and cpu/mlp.cpp.
//
// Forward: one output allocation and no separate bias pass:
//   - tiny layers (few multiply-adds, contiguous float/double): a direct loop with bias and ReLU
//     fused per element; the cost of one BLAS call (dispatch, checks, bias copy) is larger than
//     the arithmetic. Single rows in inference go to initkit's own kernel instead (dense_kernel.h),
//     whose packed weight panels are cached;
//   - otherwise the GEMM with the bias and the ReLU on the engine dense_gemm.h picks for the
//     shape (MKL, oneDNN: then an in-place, vectorized, parallel clamp that keeps NaN, which
//     oneDNN's ReLU post-op does not; initkit's own kernel clamps in its stores). Clamping by row blocks right after each block's GEMM (to catch the
//     output in cache) was measured slower with MKL on 1 and 2 threads (5% and 20-40%: smaller
//     GEMMs parallelize worse), and the clamp pass costs < 5% of the GEMM at every benchmarked
//     shape, so the GEMM runs whole.
// Inputs may be strided (BLAS takes strides); the output is contiguous.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <optional>

#include "dense_gemm.h"
#include "multiversion.h"

namespace initkit {
namespace cpu {

// Direct loop up to kTinyMacs multiply-adds, or kTinyRowMacs for a single row (a GEMV: each
// output is one long dot product, so the per-output horizontal sum is cheap next to it).
constexpr int64_t kTinyMacs = 8192;
constexpr int64_t kTinyRowMacs = 131072;

// out[m, n] = relu?(dot(x[m, :], w[n, :]) + b[n]) for contiguous rows. kLanes independent
// partial sums: they vectorize (one AVX-512 register of floats) and break the serial dependency.
template <typename T>
C10_ALWAYS_INLINE void tiny_dense(const T* x, const T* w, const T* b, T* out, int64_t rows, int64_t outs, int64_t ins, bool relu) {
  constexpr int kLanes = 16;
  for (int64_t m = 0; m < rows; ++m) {
    const T* xr = x + m * ins;
    for (int64_t n = 0; n < outs; ++n) {
      const T* wr = w + n * ins;
      if (ins < kLanes) {  // narrow layer: a plain dot product beats reducing kLanes partial sums
        T v = b != nullptr ? b[n] : T(0);
        for (int64_t k = 0; k < ins; ++k) v += xr[k] * wr[k];
        out[m * outs + n] = (relu && v < T(0)) ? T(0) : v;
        continue;
      }
      T acc[kLanes] = {};
      int64_t k = 0;
      for (; k + kLanes <= ins; k += kLanes) {
        for (int j = 0; j < kLanes; ++j) acc[j] += xr[k + j] * wr[k + j];
      }
      for (int j = 0; k < ins; ++k, ++j) acc[j] += xr[k] * wr[k];
      for (int width = kLanes / 2; width > 0; width /= 2) {
        for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
      }
      T v = acc[0];
      if (b != nullptr) v += b[n];
      out[m * outs + n] = (relu && v < T(0)) ? T(0) : v;  // NaN passes through, like torch.relu
    }
  }
}

INITKIT_MULTIVERSION inline void tiny_dense_isa(const float* x, const float* w, const float* b, float* out,
                                                      int64_t rows, int64_t outs, int64_t ins, bool relu) {
  tiny_dense(x, w, b, out, rows, outs, ins, relu);
}

INITKIT_MULTIVERSION inline void tiny_dense_isa(const double* x, const double* w, const double* b, double* out,
                                                      int64_t rows, int64_t outs, int64_t ins, bool relu) {
  tiny_dense(x, w, b, out, rows, outs, ins, relu);
}

inline bool is_dense_rows(const at::Tensor& t) {
  return t.stride(-1) == 1 && (t.dim() == 1 || t.size(0) <= 1 || t.stride(0) == t.size(1));
}

// [M, N] (contiguous) = relu?(x [M, K] @ w[N, K].T + b).
inline at::Tensor dense_layer(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b, bool relu) {
  const int64_t rows = x.size(0), outs = w.size(0), ins = w.size(1);
  if (rows == 0 || outs == 0) return at::empty({rows, outs}, x.options());
  const bool has_bias = b.has_value() && b->defined();
  const auto dtype = x.scalar_type();
  const int64_t macs = rows * outs * ins;
  const bool gemv = rows == 1 && macs > kTinyMacs && macs <= kTinyRowMacs;
  if (gemv && pack_weights_allowed() && w.is_contiguous() && own_gemm_usable(x, w, b)) {
    // Inference GEMV: the cached panels stream at load speed, about 4x the dot-product loop below
    // (which reduces a vector of partial sums per output).
    return gemm_own(x, w, b, relu);
  }
  const bool tiny = macs <= kTinyMacs || gemv;
  if (tiny && (dtype == at::kFloat || dtype == at::kDouble) && is_dense_rows(x) && w.is_contiguous() &&
      (!has_bias || b->is_contiguous())) {
    at::Tensor out = at::empty({rows, outs}, x.options());
    AT_DISPATCH_FLOATING_TYPES(dtype, "initkit_dense_layer_cpu", [&] {
      tiny_dense_isa(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), has_bias ? b->data_ptr<scalar_t>() : nullptr,
                     out.data_ptr<scalar_t>(), rows, outs, ins, relu);
    });
    return out;
  }
  return gemm_nt(x, w, b, relu);
}

}  // namespace cpu
}  // namespace initkit
