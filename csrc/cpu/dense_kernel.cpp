// initkit's own float32 GEMM (see dense_kernel.h). Only the functions marked INITKIT_AVX512 use
// AVX-512 instructions, and those marked INITKIT_AVX2_FMA AVX2 and FMA; panel_rows runs the widest
// the CPU has, and only where own_gemm_available() said yes.
#include "dense_kernel.h"
#include "multiversion.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define INITKIT_HAVE_SIMD_KERNELS 1
#include <immintrin.h>
#define INITKIT_AVX512 __attribute__((target("avx512f")))
#define INITKIT_AVX2_FMA __attribute__((target("avx2,fma")))
#endif

namespace initkit {
namespace cpu {
namespace {

constexpr int64_t kPanel = 32;       // rows of b per panel: two AVX-512 registers of floats
constexpr int64_t kTileRows = 6;     // rows of a per register tile (12 accumulators)
constexpr int64_t kRowBlock = 48;    // rows of a per task: 8 tiles against one panel
constexpr int64_t kPackChunk = 64;   // k values per transposed chunk while packing (8 KiB, in L1)
constexpr int64_t kSerialMacs = int64_t(1) << 17;  // below this a second thread costs more than it saves

#ifdef INITKIT_HAVE_SIMD_KERNELS

// c[r, 0..32) = relu?(sum_k a[r, k] * panel[k, 0..32) + bias), for MR rows; masks cut the last panel
// at N. max(0, x) as vmaxps(0, x) returns x when x is NaN (the second operand), and keeps -0.0.
// kHalf: a last panel with at most 16 valid columns (mask1 == 0) skips its second half's FMAs
// (an MLP's narrow output layer); the first half is computed alike.
template <int MR, bool kRelu, bool kHalf>
INITKIT_AVX512 void tile(const float* a, int64_t sr, int64_t sk, const float* panel, int64_t k_size, const float* bias,
                         float* c, int64_t ldc, __mmask16 mask0, __mmask16 mask1) {
  const __m512 bias0 = bias != nullptr ? _mm512_maskz_loadu_ps(mask0, bias) : _mm512_setzero_ps();
  const __m512 bias1 = bias != nullptr ? _mm512_maskz_loadu_ps(mask1, bias + 16) : _mm512_setzero_ps();
  __m512 acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) acc0[r] = bias0, acc1[r] = bias1;
  for (int64_t k = 0; k < k_size; ++k) {
    const __m512 b0 = _mm512_load_ps(panel + k * kPanel);
    if constexpr (kHalf) {
      for (int r = 0; r < MR; ++r) acc0[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r * sr + k * sk]), b0, acc0[r]);
      continue;
    }
    const __m512 b1 = _mm512_load_ps(panel + k * kPanel + 16);
    for (int r = 0; r < MR; ++r) {
      const __m512 x = _mm512_set1_ps(a[r * sr + k * sk]);
      acc0[r] = _mm512_fmadd_ps(x, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(x, b1, acc1[r]);
    }
  }
  if constexpr (kRelu) {
    const __m512 zero = _mm512_setzero_ps();
    for (int r = 0; r < MR; ++r) acc0[r] = _mm512_max_ps(zero, acc0[r]), acc1[r] = _mm512_max_ps(zero, acc1[r]);
  }
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(c + r * ldc, mask0, acc0[r]);
    if constexpr (!kHalf) _mm512_mask_storeu_ps(c + r * ldc + 16, mask1, acc1[r]);
  }
}

// Tile heights for `rows` rows, in order, as tile(r, height): kTileRows each, except that a
// remainder of 1 or 2 rows goes with the last full tile as 4 + 3 or 4 + 4 (fewer than 4 rows leave
// too few independent accumulators to hide the FMA latency). Each row is summed alike in every tile
// height: the split does not change any value.
template <class Tile>
inline void split_rows(int64_t rows, const Tile& tile) {
  int64_t r = 0;
  const int64_t full = rows % kTileRows != 0 && rows % kTileRows < 3 && rows > kTileRows ? rows / kTileRows - 1
                                                                                         : rows / kTileRows;
  for (; r < full * kTileRows; r += kTileRows) tile(r, kTileRows);
  if (rows - r > kTileRows) {
    tile(r, 4);
    r += 4;
  }
  if (rows > r) tile(r, static_cast<int>(rows - r));
}

// a[r, k] is at a + r * sr + k * sk: any strides (the backward's transposed operands included;
// the broadcasts are scalar loads either way).
template <bool kRelu, bool kHalf>
INITKIT_AVX512 void tile_rows(int64_t rows, const float* a, int64_t sr, int64_t sk, const float* panel,
                              int64_t k_size, const float* bias, float* c, int64_t ldc, __mmask16 mask0,
                              __mmask16 mask1) {
  split_rows(rows, [&](int64_t r, int height) {
    const float* ar = a + r * sr;
    float* cr = c + r * ldc;
    switch (height) {
      case 6: tile<6, kRelu, kHalf>(ar, sr, sk, panel, k_size, bias, cr, ldc, mask0, mask1); break;
      case 5: tile<5, kRelu, kHalf>(ar, sr, sk, panel, k_size, bias, cr, ldc, mask0, mask1); break;
      case 4: tile<4, kRelu, kHalf>(ar, sr, sk, panel, k_size, bias, cr, ldc, mask0, mask1); break;
      case 3: tile<3, kRelu, kHalf>(ar, sr, sk, panel, k_size, bias, cr, ldc, mask0, mask1); break;
      case 2: tile<2, kRelu, kHalf>(ar, sr, sk, panel, k_size, bias, cr, ldc, mask0, mask1); break;
      default: tile<1, kRelu, kHalf>(ar, sr, sk, panel, k_size, bias, cr, ldc, mask0, mask1); break;
    }
  });
}

__mmask16 lane_mask(int64_t valid) {
  return valid >= 16 ? __mmask16(0xffff) : valid <= 0 ? __mmask16(0) : __mmask16((1u << valid) - 1);
}

// One panel (its first `valid` columns, 1..32) against `rows` rows of a, on the tile_rows instance
// for relu and the panel's width.
INITKIT_AVX512 void panel_rows_avx512(bool relu, int64_t rows, const float* a, int64_t sr, int64_t sk,
                                      const float* panel, int64_t k_size, const float* bias, float* c, int64_t ldc,
                                      int64_t valid) {
  const __mmask16 mask0 = lane_mask(valid), mask1 = lane_mask(valid - 16);
  const bool half = mask1 == 0;
  if (relu) {
    (half ? tile_rows<true, true> : tile_rows<true, false>)(rows, a, sr, sk, panel, k_size, bias, c, ldc, mask0, mask1);
  } else {
    (half ? tile_rows<false, true> : tile_rows<false, false>)(rows, a, sr, sk, panel, k_size, bias, c, ldc, mask0, mask1);
  }
}

// ---- AVX2 + FMA: the same sums on 8-lane registers, one half of the panel (16 columns) at a time:
// a 6-row tile is then 12 accumulators, two panel loads and six broadcasts per k, as on AVX-512.
// Every output is summed exactly as the AVX-512 tile sums it (bias, then k in order, one FMA each),
// so both ISAs give the same bits.

// The row loops unrolled before GCC's loop optimizations: unrolled later, the accumulators stay an
// array in memory too and all 12 are stored on every k (half speed on AVX2's 16 registers).
#define INITKIT_UNROLL _Pragma("GCC unroll 8")

// Lanes 0 .. valid - 1 of 8 (an integer mask for maskload / maskstore).
INITKIT_AVX2_FMA inline __m256i lanes_below(int64_t valid) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::clamp<int64_t>(valid, 0, 8))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// c[r, 0..valid) = relu?(sum_k a[r, k] * half[k, 0..16) + bias) for MR rows, valid in 1..16 (the
// panel's half at `half`, its rows kPanel apart).
template <int MR, bool kRelu>
INITKIT_AVX2_FMA void tile_avx2(const float* a, int64_t sr, int64_t sk, const float* half, int64_t k_size,
                                const float* bias, float* c, int64_t ldc, int64_t valid) {
  const __m256 bias0 = bias != nullptr ? _mm256_maskload_ps(bias, lanes_below(valid)) : _mm256_setzero_ps();
  const __m256 bias1 = bias != nullptr ? _mm256_maskload_ps(bias + 8, lanes_below(valid - 8)) : _mm256_setzero_ps();
  __m256 acc0[MR], acc1[MR];
  INITKIT_UNROLL for (int r = 0; r < MR; ++r) acc0[r] = bias0, acc1[r] = bias1;
  for (int64_t k = 0; k < k_size; ++k) {
    const __m256 b0 = _mm256_load_ps(half + k * kPanel), b1 = _mm256_load_ps(half + k * kPanel + 8);
    INITKIT_UNROLL for (int r = 0; r < MR; ++r) {
      const __m256 x = _mm256_set1_ps(a[r * sr + k * sk]);
      acc0[r] = _mm256_fmadd_ps(x, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(x, b1, acc1[r]);
    }
  }
  if constexpr (kRelu) {  // max(0, x) returns x when x is NaN, and keeps -0.0, as on AVX-512
    const __m256 zero = _mm256_setzero_ps();
    INITKIT_UNROLL for (int r = 0; r < MR; ++r) acc0[r] = _mm256_max_ps(zero, acc0[r]), acc1[r] = _mm256_max_ps(zero, acc1[r]);
  }
  if (valid >= 16) {
    INITKIT_UNROLL for (int r = 0; r < MR; ++r) _mm256_storeu_ps(c + r * ldc, acc0[r]), _mm256_storeu_ps(c + r * ldc + 8, acc1[r]);
  } else {
    const __m256i mask0 = lanes_below(valid), mask1 = lanes_below(valid - 8);
    INITKIT_UNROLL for (int r = 0; r < MR; ++r)
      _mm256_maskstore_ps(c + r * ldc, mask0, acc0[r]), _mm256_maskstore_ps(c + r * ldc + 8, mask1, acc1[r]);
  }
}

template <bool kRelu>
INITKIT_AVX2_FMA void tile_rows_avx2(int64_t rows, const float* a, int64_t sr, int64_t sk, const float* half,
                                     int64_t k_size, const float* bias, float* c, int64_t ldc, int64_t valid) {
  split_rows(rows, [&](int64_t r, int height) {
    const float* ar = a + r * sr;
    float* cr = c + r * ldc;
    switch (height) {
      case 6: tile_avx2<6, kRelu>(ar, sr, sk, half, k_size, bias, cr, ldc, valid); break;
      case 5: tile_avx2<5, kRelu>(ar, sr, sk, half, k_size, bias, cr, ldc, valid); break;
      case 4: tile_avx2<4, kRelu>(ar, sr, sk, half, k_size, bias, cr, ldc, valid); break;
      case 3: tile_avx2<3, kRelu>(ar, sr, sk, half, k_size, bias, cr, ldc, valid); break;
      case 2: tile_avx2<2, kRelu>(ar, sr, sk, half, k_size, bias, cr, ldc, valid); break;
      default: tile_avx2<1, kRelu>(ar, sr, sk, half, k_size, bias, cr, ldc, valid); break;
    }
  });
}

INITKIT_AVX2_FMA void panel_rows_avx2(bool relu, int64_t rows, const float* a, int64_t sr, int64_t sk,
                                      const float* panel, int64_t k_size, const float* bias, float* c, int64_t ldc,
                                      int64_t valid) {
  for (int64_t h = 0; h < kPanel && h < valid; h += 16) {
    const float* bias_h = bias != nullptr ? bias + h : nullptr;
    const int64_t valid_h = std::min<int64_t>(16, valid - h);
    (relu ? tile_rows_avx2<true> : tile_rows_avx2<false>)(rows, a, sr, sk, panel + h, k_size, bias_h, c + h, ldc,
                                                          valid_h);
  }
}

// One panel's first `valid` columns (1..32) against `rows` rows of a, on the widest kernel
// (multiversion.h's cpu_kernels(): INITKIT_CPU_KERNELS=avx2 runs the AVX2 tile on AVX-512 CPUs).
void panel_rows(bool relu, int64_t rows, const float* a, int64_t sr, int64_t sk, const float* panel, int64_t k_size,
                const float* bias, float* c, int64_t ldc, int64_t valid) {
  (cpu_kernels() == CpuKernels::kAvx512 ? panel_rows_avx512 : panel_rows_avx2)(relu, rows, a, sr, sk, panel, k_size,
                                                                              bias, c, ldc, valid);
}

#endif  // INITKIT_HAVE_SIMD_KERNELS

// Panel p of b (rows 32p .. 32p + 31), k-major. Unit stride along n copies 32 values per k;
// unit stride along k is transposed in chunks of kPackChunk k so the writes stay in L1.
void pack_panel(const float* b, int64_t n_size, int64_t k_size, int64_t sn, int64_t sk, int64_t p, float* out) {
  const int64_t n0 = p * kPanel, valid = std::min(kPanel, n_size - n0);
  if (valid < kPanel) std::fill(out, out + k_size * kPanel, 0.0f);
  if (sn == 1) {
    for (int64_t k = 0; k < k_size; ++k) std::copy_n(b + n0 + k * sk, valid, out + k * kPanel);
    return;
  }
  for (int64_t k0 = 0; k0 < k_size; k0 += kPackChunk) {
    const int64_t k1 = std::min(k_size, k0 + kPackChunk);
    for (int64_t j = 0; j < valid; ++j) {
      const float* row = b + (n0 + j) * sn;
      for (int64_t k = k0; k < k1; ++k) out[k * kPanel + j] = row[k * sk];
    }
  }
}

}  // namespace

bool own_gemm_available() {
#ifdef INITKIT_HAVE_SIMD_KERNELS
  return cpu_kernels() >= CpuKernels::kAvx2;
#else
  return false;
#endif
}

bool own_gemm_usable(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias) {
  const bool has_bias = bias.has_value() && bias->defined();
  return own_gemm_available() && a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat && a.dim() == 2 &&
         b.dim() == 2 && a.size(0) > 0 && a.size(1) > 0 && b.size(0) > 0 &&
         (!has_bias || (bias->scalar_type() == at::kFloat && bias->is_contiguous()));
}

at::Tensor pack_gemm_panels(const at::Tensor& b) {
  const int64_t n_size = b.size(0), k_size = b.size(1), panels = (n_size + kPanel - 1) / kPanel;
  at::Tensor out = at::empty({panels, k_size, kPanel}, b.options());  // 64-byte aligned (CPU allocator)
  const float* src = b.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const int64_t sn = b.stride(0), sk = b.stride(1);
  const int64_t grain = std::max<int64_t>(1, kSerialMacs / std::max<int64_t>(1, k_size * kPanel * 8));
  at::parallel_for(0, panels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) pack_panel(src, n_size, k_size, sn, sk, p, dst + p * k_size * kPanel);
  });
  return out;
}

at::Tensor own_gemm(const at::Tensor& a, const at::Tensor& panels, int64_t n, const std::optional<at::Tensor>& bias,
                    bool relu) {
  const int64_t m = a.size(0), k_size = a.size(1), panel_count = panels.size(0);
  at::Tensor c = at::empty({m, n}, a.options().memory_format(at::MemoryFormat::Contiguous));
#ifdef INITKIT_HAVE_SIMD_KERNELS
  TORCH_CHECK(own_gemm_available() && panels.size(1) == k_size && panel_count * kPanel >= n,
              "initkit: own_gemm called without AVX-512 or AVX2 or with mismatched panels");
  const float* a_data = a.data_ptr<float>();
  const int64_t sr = a.stride(0), sk = a.stride(1);
  const float* p_data = panels.data_ptr<float>();
  const float* bias_data = bias.has_value() && bias->defined() ? bias->data_ptr<float>() : nullptr;
  float* c_data = c.data_ptr<float>();
  // Tasks: (panel, block of kRowBlock rows), panel-major so one thread keeps its panel in cache.
  const int64_t row_blocks = (m + kRowBlock - 1) / kRowBlock, tasks = panel_count * row_blocks;
  const int64_t task_macs = std::min(m, kRowBlock) * kPanel * k_size;
  const int64_t grain = std::max<int64_t>(1, kSerialMacs / task_macs);
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / row_blocks, r0 = (t % row_blocks) * kRowBlock;
      const int64_t n0 = p * kPanel;
      const int64_t rows = std::min(kRowBlock, m - r0);
      const float* panel = p_data + p * k_size * kPanel;
      const float* bias_n0 = bias_data != nullptr ? bias_data + n0 : nullptr;
      float* c_block = c_data + r0 * n + n0;
      panel_rows(relu, rows, a_data + r0 * sr, sr, sk, panel, k_size, bias_n0, c_block, n, std::min(kPanel, n - n0));
    }
  });
#else
  TORCH_CHECK(false, "initkit: own_gemm is not built for this CPU architecture");
#endif
  return c;
}

at::Tensor own_mlp(const at::Tensor& a, at::TensorList panels, c10::ArrayRef<int64_t> outs, at::TensorList biases) {
  const int64_t m = a.size(0);
  const size_t layers = panels.size();
  struct Layer {
    const float* panels;
    int64_t panel_count, k_size, n;
    const float* bias;
    float* out;
  };
  std::vector<Layer> plan(layers);
  at::Tensor result;
  std::vector<at::Tensor> hidden;  // the hidden layers' outputs [m, outs[l]], kept alive for the call
  int64_t row_macs = 0;
  for (size_t l = 0; l < layers; ++l) {
    at::Tensor out = at::empty({m, outs[l]}, a.options().memory_format(at::MemoryFormat::Contiguous));
    plan[l] = {panels[l].data_ptr<float>(), panels[l].size(0), panels[l].size(1), outs[l],
               biases[l].defined() ? biases[l].data_ptr<float>() : nullptr, out.data_ptr<float>()};
    row_macs += plan[l].panel_count * kPanel * plan[l].k_size;
    if (l + 1 < layers) {
      hidden.push_back(std::move(out));
    } else {
      result = std::move(out);
    }
  }
#ifdef INITKIT_HAVE_SIMD_KERNELS
  bool chained = plan[0].k_size == a.size(1);
  for (size_t l = 0; l < layers; ++l) {
    chained = chained && plan[l].panel_count * kPanel >= plan[l].n && (l == 0 || plan[l].k_size == plan[l - 1].n);
  }
  TORCH_CHECK(own_gemm_available() && chained, "initkit: own_mlp called without AVX-512 or AVX2 or with mismatched panels");
  // Blocks of at most kRowBlock rows, as many as a multiple of the thread count (even shares).
  const int64_t threads = at::get_num_threads();
  int64_t blocks = std::max((m + kRowBlock - 1) / kRowBlock, std::min<int64_t>(threads, m));
  blocks = (blocks + threads - 1) / threads * threads;
  const int64_t block_rows = (m + blocks - 1) / blocks;
  blocks = (m + block_rows - 1) / block_rows;
  const int64_t grain = std::max<int64_t>(1, kSerialMacs / (block_rows * row_macs));
  const float* a_data = a.data_ptr<float>();
  const int64_t a_sr = a.stride(0), a_sk = a.stride(1);
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t r0 = blk * block_rows, rows = std::min(block_rows, m - r0);
      const float* x = a_data + r0 * a_sr;
      int64_t sr = a_sr, sk = a_sk;
      for (size_t l = 0; l < layers; ++l) {
        const Layer& L = plan[l];
        float* out = L.out + r0 * L.n;
        for (int64_t p = 0; p < L.panel_count; ++p) {
          const int64_t n0 = p * kPanel;
          const float* panel = L.panels + p * L.k_size * kPanel;
          const float* bias = L.bias != nullptr ? L.bias + n0 : nullptr;
          panel_rows(l + 1 < layers, rows, x, sr, sk, panel, L.k_size, bias, out + n0, L.n, std::min(kPanel, L.n - n0));
        }
        x = out, sr = L.n, sk = 1;
      }
    }
  });
#else
  TORCH_CHECK(false, "initkit: own_mlp is not built for this CPU architecture");
#endif
  return result;
}

}  // namespace cpu
}  // namespace initkit
