// The ReLU part of the dense ops' backward on CPU, in one pass over the gradient:
//   grad_pre = threshold_backward(grad_out, out, 0)   (grad where !(out <= 0): NaN outputs pass, as in torch)
//   grad_bias = grad_pre.sum(0)                        (column sums, accumulated during the same pass)
// The sums run over fixed blocks of kBiasRows rows (a partial row per block, then the blocks in
// order), so the result does not depend on the thread count. float, double and bfloat16 (its sums
// in float, rounded once at the end, as torch's sum does); other dtypes go through
// threshold_backward and sum.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>

#include "multiversion.h"

namespace initkit {
namespace cpu {

constexpr int64_t kBiasRows = 64;

// The value a stored element compares and sums as: itself, or for bfloat16 (kept as its bits: the
// gradient's bits are copied) the float its bits widen to.
template <typename T>
C10_ALWAYS_INLINE T widen(T v) {
  return v;
}

C10_ALWAYS_INLINE float widen(uint16_t bf16_bits) {
  const uint32_t wide = static_cast<uint32_t>(bf16_bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof(f));
  return f;
}

// Rows [r0, r1) of the [rows, n] gradient: dst = mask(grad, out), partial[j] = sum over the rows
// (in Acc: float for bfloat16, whose sum torch also accumulates in float and rounds once).
template <typename T, typename Acc>
C10_ALWAYS_INLINE void relu_grad_rows(const T* grad, int64_t sg, const T* out, int64_t so, T* dst, Acc* partial,
                                      int64_t r0, int64_t r1, int64_t n) {
  if (partial != nullptr) std::fill(partial, partial + n, Acc(0));
  for (int64_t r = r0; r < r1; ++r) {
    const T* g = grad + r * sg;
    const T* o = out + r * so;
    T* d = dst + r * n;
    if (partial != nullptr) {
      for (int64_t j = 0; j < n; ++j) {
        const T v = widen(o[j]) <= Acc(0) ? T(0) : g[j];
        d[j] = v;
        partial[j] += widen(v);
      }
    } else {
      for (int64_t j = 0; j < n; ++j) d[j] = widen(o[j]) <= Acc(0) ? T(0) : g[j];
    }
  }
}

INITKIT_MULTIVERSION inline void relu_grad_rows_isa(const float* grad, int64_t sg, const float* out, int64_t so,
                                                    float* dst, float* partial, int64_t r0, int64_t r1, int64_t n) {
  relu_grad_rows(grad, sg, out, so, dst, partial, r0, r1, n);
}

INITKIT_MULTIVERSION inline void relu_grad_rows_isa(const double* grad, int64_t sg, const double* out, int64_t so,
                                                    double* dst, double* partial, int64_t r0, int64_t r1, int64_t n) {
  relu_grad_rows(grad, sg, out, so, dst, partial, r0, r1, n);
}

// bfloat16: fused, this pass replaced threshold_backward + sum (two passes): 35 -> 16 us at
// 256x1024 (one run, 2 threads).
INITKIT_MULTIVERSION inline void relu_grad_rows_isa(const uint16_t* grad, int64_t sg, const uint16_t* out, int64_t so,
                                                    uint16_t* dst, float* partial, int64_t r0, int64_t r1, int64_t n) {
  relu_grad_rows(grad, sg, out, so, dst, partial, r0, r1, n);
}

// sum[j] = partials[0, j] + partials[1, j] + ... for columns [c0, c1), blocks in order.
template <typename T>
C10_ALWAYS_INLINE void sum_blocks(const T* partials, int64_t blocks, int64_t n, T* sum, int64_t c0, int64_t c1) {
  std::fill(sum + c0, sum + c1, T(0));
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const T* p = partials + blk * n;
    for (int64_t j = c0; j < c1; ++j) sum[j] += p[j];
  }
}

INITKIT_MULTIVERSION inline void sum_blocks_isa(const float* partials, int64_t blocks, int64_t n, float* sum,
                                                int64_t c0, int64_t c1) {
  sum_blocks(partials, blocks, n, sum, c0, c1);
}

INITKIT_MULTIVERSION inline void sum_blocks_isa(const double* partials, int64_t blocks, int64_t n, double* sum,
                                                int64_t c0, int64_t c1) {
  sum_blocks(partials, blocks, n, sum, c0, c1);
}

// The fused pass over [rows, n] rows of stride sg / so: T the stored element, Acc the sums' type.
template <typename T, typename Acc>
void relu_grad_blocks(const T* gp, int64_t sg, const T* op, int64_t so, T* dp, Acc* partials, Acc* sum, int64_t rows,
                      int64_t n) {
  const int64_t blocks = (rows + kBiasRows - 1) / kBiasRows;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, kBiasRows * n));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t r0 = blk * kBiasRows, r1 = std::min(rows, r0 + kBiasRows);
      relu_grad_rows_isa(gp, sg, op, so, dp, partials != nullptr ? partials + blk * n : nullptr, r0, r1, n);
    }
  });
  if (partials != nullptr && blocks != 1) {  // (no rows: the sum of no blocks, zeros)
    const int64_t col_grain = std::max<int64_t>(256, 32768 / std::max<int64_t>(1, blocks));
    at::parallel_for(0, n, col_grain, [&](int64_t c0, int64_t c1) { sum_blocks_isa(partials, blocks, n, sum, c0, c1); });
  }
}

// grad_out and out: [rows, n] (any row stride, any column stride). Returns (grad_pre contiguous
// [rows, n], grad_bias [n] or nullopt).
inline std::pair<at::Tensor, std::optional<at::Tensor>> relu_grad_and_bias(const at::Tensor& grad_out,
                                                                           const at::Tensor& out, bool bias_grad) {
  const auto dtype = grad_out.scalar_type();
  if (!grad_out.is_cpu() || (dtype != at::kFloat && dtype != at::kDouble && dtype != at::kBFloat16) ||
      out.scalar_type() != dtype) {
    at::Tensor grad_pre = at::threshold_backward(grad_out, out, 0);
    return {grad_pre, bias_grad ? std::optional<at::Tensor>(grad_pre.sum(0)) : std::nullopt};
  }
  const at::Tensor g = grad_out.stride(1) == 1 ? grad_out : grad_out.contiguous();
  const at::Tensor o = out.stride(1) == 1 ? out : out.contiguous();
  const int64_t rows = g.size(0), n = g.size(1);
  at::Tensor grad_pre = at::empty({rows, n}, g.options().memory_format(at::MemoryFormat::Contiguous));
  const int64_t blocks = (rows + kBiasRows - 1) / kBiasRows;
  const auto acc_options = g.options().dtype(dtype == at::kBFloat16 ? at::kFloat : dtype);
  // The sums in the accumulator type; one block (up to kBiasRows rows): its partial row is the sum.
  at::Tensor sum = bias_grad ? at::empty({n}, acc_options) : at::Tensor();
  at::Tensor partials = bias_grad && blocks > 1 ? at::empty({blocks, n}, acc_options) : sum;
  if (dtype == at::kBFloat16) {
    relu_grad_blocks(reinterpret_cast<const uint16_t*>(g.data_ptr()), g.stride(0),
                     reinterpret_cast<const uint16_t*>(o.data_ptr()), o.stride(0),
                     reinterpret_cast<uint16_t*>(grad_pre.data_ptr()), bias_grad ? partials.data_ptr<float>() : nullptr,
                     bias_grad ? sum.data_ptr<float>() : nullptr, rows, n);
    if (!bias_grad) return {grad_pre, std::nullopt};
    // Rounded here rather than by sum.to(): that op's dispatch costs more than a small layer's sums.
    at::Tensor grad_bias = at::empty({n}, g.options());
    const float* sums = sum.data_ptr<float>();
    c10::BFloat16* rounded = grad_bias.data_ptr<c10::BFloat16>();
    for (int64_t j = 0; j < n; ++j) rounded[j] = c10::BFloat16(sums[j]);
    return {grad_pre, grad_bias};
  }
  AT_DISPATCH_FLOATING_TYPES(dtype, "initkit_relu_grad_cpu", [&] {
    relu_grad_blocks(g.data_ptr<scalar_t>(), g.stride(0), o.data_ptr<scalar_t>(), o.stride(0),
                     grad_pre.data_ptr<scalar_t>(), bias_grad ? partials.data_ptr<scalar_t>() : nullptr,
                     bias_grad ? sum.data_ptr<scalar_t>() : nullptr, rows, n);
  });
  return {grad_pre, bias_grad ? std::optional<at::Tensor>(sum) : std::nullopt};
}

}  // namespace cpu
}  // namespace initkit
