// The CPU building blocks of linear_relu and mlp: one dense layer out = x @ w.T + b, with an
// optional ReLU. Shared by cpu/linear_relu.cpp and cpu/mlp.cpp.
//
// Forward: one output allocation and no separate bias pass:
//   - tiny layers (few multiply-adds, contiguous rows): a direct loop with bias and ReLU fused per
//     element; the cost of one BLAS call (dispatch, checks, bias copy; for bfloat16 about 4 us,
//     its GEMMs go to oneDNN) is larger than the arithmetic. The backward's tiny GEMMs likewise
//     (mm_nt below). Single rows in inference go to initkit's own kernel instead (dense_kernel.h),
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
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "dense_gemm.h"
#include "multiversion.h"

namespace initkit {
namespace cpu {

// Direct loop up to kTinyMacs multiply-adds, or kTinyRowMacs for a single row (a GEMV: each
// output is one long dot product, so the per-output horizontal sum is cheap next to it).
constexpr int64_t kTinyMacs = 8192;
constexpr int64_t kTinyRowMacs = 131072;

// out[m, n] = relu?(dot(x[m, :], w[n, :]) + b[n]) for contiguous rows, summed in Acc (float for
// the 16-bit types, rounded once at the end as their BLAS GEMMs do). kLanes independent partial
// sums: they vectorize (one AVX-512 register of floats) and break the serial dependency.
template <typename T, typename Acc>
C10_ALWAYS_INLINE void tiny_dense(const T* x, const T* w, const T* b, T* out, int64_t rows, int64_t outs, int64_t ins,
                                  bool relu) {
  constexpr int kLanes = 16;
  for (int64_t m = 0; m < rows; ++m) {
    const T* xr = x + m * ins;
    for (int64_t n = 0; n < outs; ++n) {
      const T* wr = w + n * ins;
      Acc v;
      if (ins < kLanes) {  // narrow layer: a plain dot product beats reducing kLanes partial sums
        v = b != nullptr ? Acc(b[n]) : Acc(0);
        for (int64_t k = 0; k < ins; ++k) v += Acc(xr[k]) * Acc(wr[k]);
      } else {
        Acc acc[kLanes] = {};
        int64_t k = 0;
        for (; k + kLanes <= ins; k += kLanes) {
          for (int j = 0; j < kLanes; ++j) acc[j] += Acc(xr[k + j]) * Acc(wr[k + j]);
        }
        for (int j = 0; k < ins; ++k, ++j) acc[j] += Acc(xr[k]) * Acc(wr[k]);
        for (int width = kLanes / 2; width > 0; width /= 2) {
          for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
        }
        v = acc[0];
        if (b != nullptr) v += Acc(b[n]);
      }
      out[m * outs + n] = T((relu && v < Acc(0)) ? Acc(0) : v);  // NaN passes through, like torch.relu
    }
  }
}

// c [M, N] = a [M, K] @ bt [K, N] for bt with contiguous rows (row stride sbk) and a of any
// strides: row m of c accumulates a[m, k] * bt[k, :] over k in Acc (vectorized along N), then is
// rounded once. The backward's GEMMs take this form: grad_pre @ weight and grad_pre.T @ input.
template <typename T, typename Acc>
C10_ALWAYS_INLINE void tiny_mm(const T* a, int64_t sam, int64_t sak, const T* bt, int64_t sbk, T* c, Acc* row,
                               int64_t m_size, int64_t n_size, int64_t k_size) {
  for (int64_t m = 0; m < m_size; ++m) {
    std::fill(row, row + n_size, Acc(0));
    for (int64_t k = 0; k < k_size; ++k) {
      const Acc s = Acc(a[m * sam + k * sak]);
      const T* br = bt + k * sbk;
      for (int64_t n = 0; n < n_size; ++n) row[n] += s * Acc(br[n]);
    }
    for (int64_t n = 0; n < n_size; ++n) c[m * n_size + n] = T(row[n]);
  }
}

// The ISA-dispatched clones (multiversion.h), one per stored type.
#define INITKIT_TINY_DENSE_CLONES(T)                                                                                 \
  INITKIT_MULTIVERSION inline void tiny_dense_isa(const T* x, const T* w, const T* b, T* out, int64_t rows,          \
                                                  int64_t outs, int64_t ins, bool relu) {                            \
    tiny_dense<T, at::opmath_type<T>>(x, w, b, out, rows, outs, ins, relu);                                        \
  }                                                                                                                  \
  INITKIT_MULTIVERSION inline void tiny_mm_isa(const T* a, int64_t sam, int64_t sak, const T* bt, int64_t sbk, T* c, \
                                               at::opmath_type<T>* row, int64_t m_size, int64_t n_size,              \
                                               int64_t k_size) {                                                     \
    tiny_mm<T, at::opmath_type<T>>(a, sam, sak, bt, sbk, c, row, m_size, n_size, k_size);                          \
  }
INITKIT_TINY_DENSE_CLONES(float)
INITKIT_TINY_DENSE_CLONES(double)
INITKIT_TINY_DENSE_CLONES(c10::BFloat16)
INITKIT_TINY_DENSE_CLONES(c10::Half)
#undef INITKIT_TINY_DENSE_CLONES

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
  if (tiny && is_dense_rows(x) && w.is_contiguous() && (!has_bias || b->is_contiguous())) {
    at::Tensor out = at::empty({rows, outs}, x.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "initkit_dense_layer_cpu", [&] {
      tiny_dense_isa(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), has_bias ? b->data_ptr<scalar_t>() : nullptr,
                     out.data_ptr<scalar_t>(), rows, outs, ins, relu);
    });
    return out;
  }
  return gemm_nt(x, w, b, relu);
}

// a [M, K] @ b [N, K].T on any device, for the backward passes: tiny products with b's columns
// contiguous (b = weight.T or input.T) in the direct loop above, others on the engine gemm_nt
// picks, at::mm off the CPU.
inline at::Tensor mm_nt(const at::Tensor& a, const at::Tensor& b) {
  if (!a.is_cpu()) return at::mm(a, b.t());
  const int64_t m = a.size(0), n = b.size(0), k = a.size(1);
  if (m * n * k > kTinyMacs || (b.stride(0) != 1 && n > 1) || m == 0 || n == 0) {
    return gemm_nt(a, b, std::nullopt, /*relu=*/false);
  }
  at::Tensor c = at::empty({m, n}, a.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.scalar_type(), "initkit_mm_nt_cpu", [&] {
    std::vector<at::opmath_type<scalar_t>> row(n);
    tiny_mm_isa(a.data_ptr<scalar_t>(), a.stride(0), a.stride(1), b.data_ptr<scalar_t>(), b.stride(1), c.data_ptr<scalar_t>(),
                row.data(), m, n, k);
  });
  return c;
}

}  // namespace cpu
}  // namespace initkit
