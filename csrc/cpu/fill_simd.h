// The hand-written fill kernels, in one place: AVX-512 for the float32 Philox words, the normal
// fill and the rejection kind of the truncated normal; AVX2 + FMA for the Philox words, the
// float32 raw-word, uniform and normal blocks (the rejection kind's first draw), the scan for its
// out-of-bounds values and the float16 / bfloat16 stores (csrc/cpu/fill.cpp's cpu_kernels picks
// the level: the widest the CPU has, capped by INITKIT_CPU_KERNELS). The values are those of
// common/fill_sampler.h bit for bit: the same operations in the same order, with explicit fused
// multiply-adds exactly where the shared code has fmaf, and IEEE sqrt.
//
// The normal blocks keep Philox's words, Box-Muller and the interleave into element order in
// registers (the generic path stores the words, reloads them, and re-scans the values for the
// rejection kind). The rejection kind takes the indices of its out-of-bounds values from the
// normals while they are in registers (vpcompressd into a queue) and redraws them 64 lanes at a
// time, in registers too, as soon as a full batch was queued before the current block (the values
// it scatters back are still in L1), so only the last few batches of a call have spare lanes.
// Tensors larger than the caches make these fills wait on memory as much as on arithmetic: the
// output lines are prefetched for writing kPrefetchBlocks ahead, which measured (4096x8192 float32,
// 2 threads, one run) normal_ 0.94 -> 1.02 and trunc_normal_(+-2 std) 0.69 -> 0.80 of uniform_'s
// throughput.
//
// In L2 (one core, 1 MiB, the kernels alone, min of 150 interleaved rounds, one run), against the
// kernels before philox_shared_c1 in normal_blocks, RedrawQueue::ready and 64-lane batches: normal
// 0.483 -> 0.444 ns/element; rejection kind +-5 std (no rejections) 0.566 -> 0.559, +-2 std 0.692 ->
// 0.658, +-1.5 std 1.005 -> 0.876, +-1.3 std 1.261 -> 1.060. What the rejection kind still pays: a
// fixed +0.11 ns/element over the normal fill (the 16 compares and 8 vpcompressd pushes per block,
// about half each; compressing byte indices 64 at a time, AVX512-VBMI2, measured 3-6% faster but
// needs a second kernel for AVX-512 CPUs without it), and about 2.5 ns per redrawn value (the
// scatter about 0.5; the first draw's Philox alone is about 1.6 per block lane).
#pragma once
#include <cstdint>

namespace initkit {
// Philox blocks generated together. Each Philox round is a chain of dependent multiplies, so one
// batch's rounds are latency-bound; 32 lanes (4 AVX-512 registers per word) keep twice as many
// independent chains in flight as 16 did: measured 1.7x faster uniform and normal fills (one core,
// a 1 MiB buffer; the AVX2 clone gains too).
constexpr int64_t kLanes = 32;

// Float blocks (128 values) ahead that the fills prefetch their output lines for writing, here and
// in cpu/fill.cpp's portable loop: 4 KiB; 16 and 64 blocks measured the same or slower.
constexpr int64_t kPrefetchBlocks = 8;
}  // namespace initkit

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "../common/fill_sampler.h"

// (GCC 12's AVX-512 header self-initializes its "undefined" registers, which -Wuninitialized and
// -Wmaybe-uninitialized flag; the functions that inline these need the same pragmas.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// (popcnt and prefetchw: every AVX-512 CPU has them.)
#define INITKIT_AVX512 __attribute__((target("avx512f,popcnt,prfchw")))
#define INITKIT_AVX512_INLINE INITKIT_AVX512 inline __attribute__((always_inline))

namespace initkit {
namespace avx512 {

INITKIT_AVX512_INLINE __m512 set(float x) { return _mm512_set1_ps(x); }
INITKIT_AVX512_INLINE __m512i seti(uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }

// The 32x32->64 products c * m of 16 lanes as their high and low words: vpmuludq on the even and
// the odd lanes, merged by one two-source permute for each half.
INITKIT_AVX512_INLINE void mulhilo(__m512i c, __m512i m, __m512i& hi, __m512i& lo) {
  const __m512i e = _mm512_mul_epu32(c, m), o = _mm512_mul_epu32(_mm512_srli_epi64(c, 32), m);
  hi = _mm512_permutex2var_epi32(e, _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31), o);
  lo = _mm512_permutex2var_epi32(e, _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30), o);
}

// Philox4x32-10 rounds first_round .. 9 (k0, k1: that round's key) on H registers of 16 lanes:
// c[word][register]; each round's two XORs as one vpternlogd. Compilers do not find this form: it
// runs a uniform fill about 2x faster than the portable loop's AVX-512 clone (one core, L2).
template <int H>
INITKIT_AVX512_INLINE void philox_rounds(__m512i (&c)[4][H], uint32_t k0, uint32_t k1, int first_round = 0) {
  const __m512i m0 = _mm512_set1_epi64(kPhiloxM0), m1 = _mm512_set1_epi64(kPhiloxM1);
  for (int round = first_round; round < 10; ++round) {
    for (int h = 0; h < H; ++h) {
      __m512i hi0, lo0, hi1, lo1;
      mulhilo(c[0][h], m0, hi0, lo0);
      mulhilo(c[2][h], m1, hi1, lo1);
      c[0][h] = _mm512_ternarylogic_epi32(hi1, c[1][h], seti(k0), 0x96);  // a^b^c
      c[1][h] = lo1;
      c[2][h] = _mm512_ternarylogic_epi32(hi0, c[3][h], seti(k1), 0x96);
      c[3][h] = lo0;
    }
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
}

// Philox4x32-10 of blocks whose counter word 1 is c1 in every lane (a first draw of groups with the
// same high word: every whole-tensor fill below 2^34 elements): c1 and the stream words c2 = s0,
// c3 = s1 are lane-uniform, so the products of rounds 0 and 1 that involve only them are one scalar
// multiply each (2 of the 20 vector products). c[0]: the lanes' low words; c[1..3] are not read.
template <int H>
INITKIT_AVX512_INLINE void philox_shared_c1(__m512i (&c)[4][H], uint32_t c1, const StreamKey& key) {
  const __m512i m0 = _mm512_set1_epi64(kPhiloxM0), m1 = _mm512_set1_epi64(kPhiloxM1);
  uint32_t k0 = key.k0, k1 = key.k1;
  const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * key.s0;  // round 0: c2 * M1
  const uint32_t c0_round1 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
  const uint32_t c1_round1 = static_cast<uint32_t>(p1);
  for (int h = 0; h < H; ++h) {
    __m512i hi, lo;
    mulhilo(c[0][h], m0, hi, lo);
    c[2][h] = _mm512_ternarylogic_epi32(hi, seti(key.s1), seti(k1), 0x96);  // a^b^c
    c[3][h] = lo;
  }
  k0 += kPhiloxW0;
  k1 += kPhiloxW1;
  const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0_round1;  // round 1: c0 * M0
  for (int h = 0; h < H; ++h) {
    __m512i hi, lo;
    mulhilo(c[2][h], m1, hi, lo);
    c[0][h] = _mm512_ternarylogic_epi32(hi, seti(c1_round1), seti(k0), 0x96);
    c[1][h] = lo;
    c[2][h] = _mm512_ternarylogic_epi32(seti(static_cast<uint32_t>(p0 >> 32)), c[3][h], seti(k1), 0x96);
    c[3][h] = seti(static_cast<uint32_t>(p0));
  }
  k0 += kPhiloxW0;
  k1 += kPhiloxW1;
  philox_rounds<H>(c, k0, k1, 2);
}

INITKIT_AVX512_INLINE __m512i iota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }

// Counter words 0 and 1 of groups g + 16 h + (0..15), attempt 0: the 64-bit sum with its carry.
INITKIT_AVX512_INLINE void first_draw_counters(uint64_t g, int h, __m512i& c0, __m512i& c1) {
  const __m512i lo = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(g)));
  const __m512i hi = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(g >> 32)));
  c0 = _mm512_add_epi32(lo, _mm512_add_epi32(iota(), _mm512_set1_epi32(16 * h)));
  c1 = _mm512_mask_add_epi32(hi, _mm512_cmplt_epu32_mask(c0, lo), hi, _mm512_set1_epi32(1));
}

// ---- Box-Muller, as sample_normal_pair / log_positive / sincos_two_pi ------------------------

INITKIT_AVX512_INLINE __m512 log_positive(__m512 x) {
  const __m512i offset = _mm512_sub_epi32(_mm512_castps_si512(x), seti(0x3f3504f3u));
  const __m512 e = _mm512_cvtepi32_ps(_mm512_srai_epi32(offset, 23));
  const __m512 m = _mm512_sub_ps(
      _mm512_castsi512_ps(_mm512_add_epi32(_mm512_and_si512(offset, seti(0x007fffffu)), seti(0x3f3504f3u))), set(1.0f));
  const __m512 z = _mm512_mul_ps(m, m);
  __m512 y = set(8.7004370987e-2f);
  y = _mm512_fmadd_ps(y, m, set(-1.4267487824e-1f));
  y = _mm512_fmadd_ps(y, m, set(1.4914767444e-1f));
  y = _mm512_fmadd_ps(y, m, set(-1.6577585042e-1f));
  y = _mm512_fmadd_ps(y, m, set(1.9963063300e-1f));
  y = _mm512_fmadd_ps(y, m, set(-2.5001338124e-1f));
  y = _mm512_fmadd_ps(y, m, set(3.3333909512e-1f));
  y = _mm512_mul_ps(_mm512_mul_ps(y, m), z);
  y = _mm512_fmadd_ps(set(-0.5f), z, y);
  return _mm512_fmadd_ps(set(0.693147180559945f), e, _mm512_add_ps(m, y));
}

INITKIT_AVX512_INLINE void sincos_two_pi(__m512i w, __m512& s, __m512& c) {
  const __m512i v = _mm512_add_epi32(w, seti(0x20000000u));
  const __m512 x = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_slli_epi32(w, 2)), set(1.57079632679489662f * 0x1p-32f));
  const __m512 x2 = _mm512_mul_ps(x, x);
  __m512 ps = set(-1.9515295891e-4f);
  ps = _mm512_fmadd_ps(ps, x2, set(8.3321608736e-3f));
  ps = _mm512_fmadd_ps(ps, x2, set(-1.6666654611e-1f));
  const __m512 sin_r = _mm512_fmadd_ps(_mm512_mul_ps(x, x2), ps, x);
  __m512 pc = set(2.443315711809948e-5f);
  pc = _mm512_fmadd_ps(pc, x2, set(-1.388731625493765e-3f));
  pc = _mm512_fmadd_ps(pc, x2, set(4.166664568298827e-2f));
  const __m512 cos_r = _mm512_fmadd_ps(_mm512_mul_ps(x2, x2), pc, _mm512_fmadd_ps(set(-0.5f), x2, set(1.0f)));
  const __mmask16 swap = _mm512_test_epi32_mask(v, seti(0x40000000u));  // odd quadrant
  const __m512i s0 = _mm512_castps_si512(_mm512_mask_blend_ps(swap, sin_r, cos_r));
  const __m512i c0 = _mm512_castps_si512(_mm512_mask_blend_ps(swap, cos_r, sin_r));
  const __m512i sign = seti(0x80000000u);
  s = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(s0, v, sign, 0x78));  // s0 ^ (v & sign)
  c = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(c0, _mm512_add_epi32(v, seti(0x40000000u)), sign, 0x78));
}

INITKIT_AVX512_INLINE void normal_pair(__m512 scale, __m512 shift, __m512i w0, __m512i w1, __m512& x0, __m512& x1) {
  const __m512 u = _mm512_fmadd_ps(_mm512_cvtepu32_ps(w0), set(0x1p-32f), set(0x1p-33f));
  const __m512 radius = _mm512_sqrt_ps(_mm512_mul_ps(set(-2.0f), log_positive(u)));
  __m512 sin_t, cos_t;
  sincos_two_pi(w1, sin_t, cos_t);
  x0 = _mm512_fmadd_ps(scale, _mm512_mul_ps(radius, cos_t), shift);
  x1 = _mm512_fmadd_ps(scale, _mm512_mul_ps(radius, sin_t), shift);
}

// ---- the rejection kind's queue ------------------------------------------------------------
// Entries position | (attempt - 1) << 24 (position: element index from the call's first group),
// live ones in [head, tail); those below `ready` were queued before the current block. Batches take
// only those (while at most kMaxLive are live): the entries of the block just computed sit in stores
// that have not reached L1 and whose values come at the end of the block's long dependency chain, so
// a batch loading them waits for the whole block, and the branch that starts it resolves only then
// (one core, 1 MiB, two runs: +-1.5 std 1.02 -> 0.97 ns/element, +-1.3 std -3..-6%, +-2 std 0..-2%).
// The vector stores write 16 entries whatever their count, hence the slack.
constexpr int kBlockValues = 128;  // 32 lanes x 4 words
struct RedrawQueue {
  // Lanes per batch: 64 (4 registers, independent chains that hide each other's latency) measured
  // 10-17% faster than 32 at +-1.3 std, 1-2% at +-2 (one core, 1 MiB, two runs).
  static constexpr int64_t kBatch = 64;
  static constexpr int64_t kMaxLive = 256;
  static constexpr int64_t kCapacity = 1024;  // >= live while batching (kMaxLive + kBlockValues) + make_room's reserve
  uint32_t entry[kCapacity];
  int64_t head = 0, ready = 0, tail = 0;
  // Room for one push of a block's (or a batch's) entries, + 16 written past the last.
  void make_room() {
    if (tail + kBlockValues + 16 <= kCapacity) return;
    std::memmove(entry, entry + head, sizeof(uint32_t) * (tail - head));
    ready -= head;
    tail -= head;
    head = 0;
  }
  bool batch_ready() const { return ready - head >= kBatch || tail - head > kMaxLive; }
};

INITKIT_AVX512_INLINE __mmask16 outside(__m512 x, __m512 lo, __m512 hi) {
  return _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ) | _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ);
}

INITKIT_AVX512_INLINE void push(RedrawQueue& q, __mmask16 m, __m512i entries) {
  _mm512_storeu_si512(q.entry + q.tail, _mm512_maskz_compress_epi32(m, entries));
  q.tail += __builtin_popcount(m);
}

// One batch of the queue's first min(16 H, live) entries in H registers (kBatch / 16; 2 or 1 for a
// call's last entries): block `attempt` of each entry's group, the normal at its position; in bounds:
// scattered to out, else queued again with the next attempt (after kMaxAttempts: the inverse CDF
// on the last block's word, as redraw_trunc_normal).
template <int H>
INITKIT_AVX512_INLINE void redraw_batch(const Sampler<float>& s, const StreamKey& key, uint64_t g0, float* out,
                                        RedrawQueue& q) {
  q.make_room();
  const int64_t lanes = std::min<int64_t>(16 * H, q.tail - q.head);
  __m512i c[4][H], entry[H];
  __mmask16 valid[H];
  const __m512i g_lo = seti(static_cast<uint32_t>(g0)), g_hi = seti(static_cast<uint32_t>(g0 >> 32));
  for (int h = 0; h < H; ++h) {
    const int64_t n = std::max<int64_t>(0, std::min<int64_t>(16, lanes - 16 * h));
    valid[h] = static_cast<__mmask16>((1u << n) - 1);
    entry[h] = _mm512_maskz_loadu_epi32(valid[h], q.entry + q.head + 16 * h);
    const __m512i pos = _mm512_and_si512(entry[h], seti(0x00ffffffu));
    const __m512i attempt = _mm512_add_epi32(_mm512_srli_epi32(entry[h], 24), seti(1));
    c[0][h] = _mm512_add_epi32(g_lo, _mm512_srli_epi32(pos, 2));
    const __m512i hi = _mm512_mask_add_epi32(g_hi, _mm512_cmplt_epu32_mask(c[0][h], g_lo), g_hi, seti(1));
    c[1][h] = _mm512_or_si512(hi, _mm512_slli_epi32(attempt, 24));
    c[2][h] = seti(key.s0);
    c[3][h] = seti(key.s1);
  }
  q.head += lanes;
  philox_rounds<H>(c, key.k0, key.k1);
  const __m512 scale = set(s.scale), shift = set(s.shift), lo = set(s.lo), hi = set(s.hi);
  for (int h = 0; h < H; ++h) {
    const __m512i pos = _mm512_and_si512(entry[h], seti(0x00ffffffu));
    const __mmask16 second_pair = _mm512_test_epi32_mask(pos, seti(2)), odd = _mm512_test_epi32_mask(pos, seti(1));
    __m512 x0, x1;
    normal_pair(scale, shift, _mm512_mask_blend_epi32(second_pair, c[0][h], c[2][h]),
                _mm512_mask_blend_epi32(second_pair, c[1][h], c[3][h]), x0, x1);
    const __m512 x = _mm512_mask_blend_ps(odd, x0, x1);
    const __mmask16 rejected = outside(x, lo, hi) & valid[h];
    _mm512_mask_i32scatter_ps(out, valid[h] & ~rejected, pos, x, 4);
    if (rejected == 0) continue;
    const __mmask16 last = rejected & _mm512_cmpge_epu32_mask(entry[h], seti((kMaxAttempts - 1) << 24));
    push(q, rejected & ~last, _mm512_add_epi32(entry[h], seti(1u << 24)));
    if (last != 0) {  // every attempt failed (P < 1e-38)
      alignas(64) uint32_t p[16], w[4][16];
      _mm512_store_si512(p, pos);
      for (int j = 0; j < 4; ++j) _mm512_store_si512(w[j], c[j][h]);
      for (int l = 0; l < 16; ++l)
        if ((last >> l) & 1) out[p[l]] = sample_trunc_normal(s, w[p[l] % 4][l]);
    }
  }
}

// Elements 0 .. 63 of 16 groups from the four values of each (v[j][l] is element 4l + j).
INITKIT_AVX512_INLINE void store_interleaved(float* out, __m512 v0, __m512 v1, __m512 v2, __m512 v3) {
  const __m512i lo_half = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_half = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const __m512i first = _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
  const __m512i second = _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
  const __m512 a = _mm512_permutex2var_ps(v0, lo_half, v1), b = _mm512_permutex2var_ps(v0, hi_half, v1);
  const __m512 c = _mm512_permutex2var_ps(v2, lo_half, v3), d = _mm512_permutex2var_ps(v2, hi_half, v3);
  _mm512_storeu_ps(out, _mm512_permutex2var_ps(a, first, c));
  _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(a, second, c));
  _mm512_storeu_ps(out + 32, _mm512_permutex2var_ps(b, first, d));
  _mm512_storeu_ps(out + 48, _mm512_permutex2var_ps(b, second, d));
}

// n_blocks blocks of 32 groups from g0 (elements 4 g0 ...) of the normal fill, or of the
// rejection kind (kTrunc): out-of-bounds values queued while in registers and redrawn as above.
// n_blocks * 128 < 2^24 (the queue's position field).

template <bool kTrunc>
INITKIT_AVX512 void normal_blocks(const Sampler<float>& s, const StreamKey& key, uint64_t g0, int64_t n_blocks,
                                  float* out) {
  const __m512 scale = set(s.scale), shift = set(s.shift), lo = set(s.lo), hi = set(s.hi);
  RedrawQueue q;
  for (int64_t k = 0; k < n_blocks; ++k) {
    const uint64_t g = g0 + 32 * k;
    __m512i c[4][2];
    for (int h = 0; h < 2; ++h) {
      first_draw_counters(g, h, c[0][h], c[1][h]);
      c[2][h] = seti(key.s0);
      c[3][h] = seti(key.s1);
    }
    if (k + kPrefetchBlocks < n_blocks)  // (only lines this call writes: another thread may own the next)
      for (int i = 0; i < kBlockValues; i += 16)
        _mm_prefetch(reinterpret_cast<const char*>(out + kBlockValues * (k + kPrefetchBlocks) + i), _MM_HINT_ET0);
    if (static_cast<uint32_t>(g) <= 0xffffffffu - 31) {  // the 32 groups share their high word
      philox_shared_c1<2>(c, static_cast<uint32_t>(g >> 32), key);
    } else {
      philox_rounds<2>(c, key.k0, key.k1);
    }
    if constexpr (kTrunc) q.make_room();
    for (int h = 0; h < 2; ++h) {
      __m512 x[4];
      normal_pair(scale, shift, c[0][h], c[1][h], x[0], x[1]);
      normal_pair(scale, shift, c[2][h], c[3][h], x[2], x[3]);
      float* const dst = out + kBlockValues * k + 64 * h;
      store_interleaved(dst, x[0], x[1], x[2], x[3]);
      if constexpr (kTrunc) {
        const __m512i index = _mm512_add_epi32(seti(static_cast<uint32_t>(kBlockValues * k + 64 * h)),
                                               _mm512_slli_epi32(iota(), 2));
        for (int j = 0; j < 4; ++j) push(q, outside(x[j], lo, hi), _mm512_add_epi32(index, seti(j)));
      }
    }
    if constexpr (kTrunc) {
      while (q.batch_ready()) redraw_batch<RedrawQueue::kBatch / 16>(s, key, g0, out, q);
      q.ready = q.tail;
    }
  }
  if constexpr (kTrunc) {
    while (q.tail - q.head > 16) redraw_batch<2>(s, key, g0, out, q);
    while (q.tail > q.head) redraw_batch<1>(s, key, g0, out, q);
  }
}

}  // namespace avx512

// ---- the kernels cpu/fill.cpp dispatches to (cpu_kernels) -------------------------------------

// Philox4x32-10 (block_words) for kLanes (group, attempt) pairs, words[j][lane], with philox_rounds.
INITKIT_AVX512 inline void philox_lanes_avx512(const StreamKey& key, const uint64_t (&group)[kLanes],
                                        const uint32_t (&attempt)[kLanes], uint32_t (&words)[4][kLanes]) {
  using avx512::seti;
  static_assert(kLanes == 32, "two registers of 16 lanes");
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  __m512i c[4][2];
  for (int h = 0; h < 2; ++h) {
    const __m512i ga = _mm512_loadu_si512(group + 16 * h), gb = _mm512_loadu_si512(group + 16 * h + 8);
    const __m512i att = _mm512_loadu_si512(attempt + 16 * h);
    c[0][h] = _mm512_permutex2var_epi32(ga, even, gb);  // the groups' low words
    c[1][h] = _mm512_or_si512(_mm512_permutex2var_epi32(ga, odd, gb), _mm512_slli_epi32(att, 24));
    c[2][h] = seti(key.s0);
    c[3][h] = seti(key.s1);
  }
  // The first draw of groups with the same high word: lane-uniform words 1..3 (see philox_shared_c1).
  const uint32_t c1_lane0 = static_cast<uint32_t>(_mm512_cvtsi512_si32(c[1][0]));
  if ((_mm512_cmpeq_epi32_mask(c[1][0], seti(c1_lane0)) & _mm512_cmpeq_epi32_mask(c[1][1], seti(c1_lane0))) == 0xffff) {
    avx512::philox_shared_c1<2>(c, c1_lane0, key);
  } else {
    avx512::philox_rounds<2>(c, key.k0, key.k1);
  }
  for (int j = 0; j < 4; ++j)
    for (int h = 0; h < 2; ++h) _mm512_storeu_si512(words[j] + 16 * h, c[j][h]);
}

// The normal fill and the rejection kind on float blocks (positions in the queue: < 2^24).
INITKIT_AVX512 inline void normal_blocks_avx512(const Sampler<float>& s, const StreamKey& key, uint64_t g0, int64_t n_blocks,
                                         float* out) {
  constexpr int64_t kMaxBlocks = (int64_t(1) << 24) / (kLanes * 4);
  for (int64_t k = 0; k < n_blocks; k += kMaxBlocks) {
    const int64_t n = std::min(kMaxBlocks, n_blocks - k);
    float* const o = out + kLanes * 4 * k;
    const uint64_t g = g0 + static_cast<uint64_t>(kLanes * k);
    if (s.kind == FillKind::TruncNormalByRejection) {
      avx512::normal_blocks<true>(s, key, g, n, o);
    } else {
      avx512::normal_blocks<false>(s, key, g, n, o);
    }
  }
}

// The normal fill's kLanes blocks from their words (sample_lanes' Normal case; gathered groups).
INITKIT_AVX512 inline void normal_lanes_avx512(const Sampler<float>& s, const uint32_t (&w)[4][kLanes], float* out) {
  const __m512 scale = _mm512_set1_ps(s.scale), shift = _mm512_set1_ps(s.shift);
  for (int h = 0; h < kLanes / 16; ++h) {
    __m512 x[4];
    avx512::normal_pair(scale, shift, _mm512_loadu_si512(w[0] + 16 * h), _mm512_loadu_si512(w[1] + 16 * h), x[0], x[1]);
    avx512::normal_pair(scale, shift, _mm512_loadu_si512(w[2] + 16 * h), _mm512_loadu_si512(w[3] + 16 * h), x[2], x[3]);
    avx512::store_interleaved(out + 64 * h, x[0], x[1], x[2], x[3]);
  }
}

// ---- AVX2 (+FMA): Box-Muller on 8 lanes, the avx512 functions above line for line in 256-bit
// intrinsics (AVX2 has no mask registers, ternary logic or unsigned conversion) ----------------
#define INITKIT_AVX2 __attribute__((target("avx2,fma,popcnt")))
#define INITKIT_AVX2_INLINE INITKIT_AVX2 inline __attribute__((always_inline))

namespace avx2 {

INITKIT_AVX2_INLINE __m256 set(float x) { return _mm256_set1_ps(x); }
INITKIT_AVX2_INLINE __m256i seti(uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }

// The functions below take N independent registers and issue each operation for all N before the
// next: Box-Muller is a long chain of dependent operations (the log's polynomial, the square root,
// the sine and cosine polynomials), and with the chains of N registers interleaved in the
// instruction stream they overlap inside the out-of-order window, where one register's chain
// after another's did not. The values are those of N separate calls.
#define INITKIT_EACH _Pragma("GCC unroll 8") for (int i = 0; i < N; ++i)

// float(w) for unsigned w, correctly rounded (AVX2 converts only signed words): both 16-bit halves
// convert exactly, hi * 2^16 is exact, so the one rounding is that of the sum.
template <int N>
INITKIT_AVX2_INLINE void u32_to_float(const __m256i (&w)[N], __m256 (&f)[N]) {
  INITKIT_EACH f[i] = _mm256_cvtepi32_ps(_mm256_and_si256(w[i], seti(0xffffu)));
  INITKIT_EACH f[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(w[i], 16)), set(65536.0f), f[i]);
}

template <int N>
INITKIT_AVX2_INLINE void log_positive(const __m256 (&x)[N], __m256 (&y)[N]) {
  __m256 e[N], m[N], z[N];
  INITKIT_EACH {
    const __m256i offset = _mm256_sub_epi32(_mm256_castps_si256(x[i]), seti(0x3f3504f3u));
    e[i] = _mm256_cvtepi32_ps(_mm256_srai_epi32(offset, 23));
    m[i] = _mm256_sub_ps(
        _mm256_castsi256_ps(_mm256_add_epi32(_mm256_and_si256(offset, seti(0x007fffffu)), seti(0x3f3504f3u))), set(1.0f));
  }
  INITKIT_EACH z[i] = _mm256_mul_ps(m[i], m[i]);
  INITKIT_EACH y[i] = _mm256_fmadd_ps(set(8.7004370987e-2f), m[i], set(-1.4267487824e-1f));
  INITKIT_EACH y[i] = _mm256_fmadd_ps(y[i], m[i], set(1.4914767444e-1f));
  INITKIT_EACH y[i] = _mm256_fmadd_ps(y[i], m[i], set(-1.6577585042e-1f));
  INITKIT_EACH y[i] = _mm256_fmadd_ps(y[i], m[i], set(1.9963063300e-1f));
  INITKIT_EACH y[i] = _mm256_fmadd_ps(y[i], m[i], set(-2.5001338124e-1f));
  INITKIT_EACH y[i] = _mm256_fmadd_ps(y[i], m[i], set(3.3333909512e-1f));
  INITKIT_EACH y[i] = _mm256_mul_ps(_mm256_mul_ps(y[i], m[i]), z[i]);
  INITKIT_EACH y[i] = _mm256_fmadd_ps(set(-0.5f), z[i], y[i]);
  INITKIT_EACH y[i] = _mm256_fmadd_ps(set(0.693147180559945f), e[i], _mm256_add_ps(m[i], y[i]));
}

template <int N>
INITKIT_AVX2_INLINE void sincos_two_pi(const __m256i (&w)[N], __m256 (&s)[N], __m256 (&c)[N]) {
  __m256 x[N], x2[N], ps[N], pc[N];
  INITKIT_EACH x[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_slli_epi32(w[i], 2)), set(1.57079632679489662f * 0x1p-32f));
  INITKIT_EACH x2[i] = _mm256_mul_ps(x[i], x[i]);
  INITKIT_EACH ps[i] = _mm256_fmadd_ps(set(-1.9515295891e-4f), x2[i], set(8.3321608736e-3f));
  INITKIT_EACH pc[i] = _mm256_fmadd_ps(set(2.443315711809948e-5f), x2[i], set(-1.388731625493765e-3f));
  INITKIT_EACH ps[i] = _mm256_fmadd_ps(ps[i], x2[i], set(-1.6666654611e-1f));
  INITKIT_EACH pc[i] = _mm256_fmadd_ps(pc[i], x2[i], set(4.166664568298827e-2f));
  INITKIT_EACH {
    const __m256 sin_r = _mm256_fmadd_ps(_mm256_mul_ps(x[i], x2[i]), ps[i], x[i]);
    const __m256 cos_r =
        _mm256_fmadd_ps(_mm256_mul_ps(x2[i], x2[i]), pc[i], _mm256_fmadd_ps(set(-0.5f), x2[i], set(1.0f)));
    // Odd quadrant (bit 30 of v) as the blend mask's sign bit.
    const __m256i v = _mm256_add_epi32(w[i], seti(0x20000000u));
    const __m256 swap = _mm256_castsi256_ps(_mm256_slli_epi32(v, 1));
    const __m256 sign = _mm256_castsi256_ps(seti(0x80000000u));
    s[i] = _mm256_xor_ps(_mm256_blendv_ps(sin_r, cos_r, swap), _mm256_and_ps(_mm256_castsi256_ps(v), sign));
    c[i] = _mm256_xor_ps(_mm256_blendv_ps(cos_r, sin_r, swap),
                         _mm256_and_ps(_mm256_castsi256_ps(_mm256_add_epi32(v, seti(0x40000000u))), sign));
  }
}

// Box-Muller on N register pairs (w0[i], w1[i]) -> (x0[i], x1[i]).
template <int N>
INITKIT_AVX2_INLINE void normal_pairs(__m256 scale, __m256 shift, const __m256i (&w0)[N], const __m256i (&w1)[N],
                                      __m256 (&x0)[N], __m256 (&x1)[N]) {
  __m256 u[N], radius[N], sin_t[N], cos_t[N];
  u32_to_float<N>(w0, u);
  INITKIT_EACH u[i] = _mm256_fmadd_ps(u[i], set(0x1p-32f), set(0x1p-33f));
  log_positive<N>(u, radius);
  sincos_two_pi<N>(w1, sin_t, cos_t);
  INITKIT_EACH radius[i] = _mm256_sqrt_ps(_mm256_mul_ps(set(-2.0f), radius[i]));
  INITKIT_EACH x0[i] = _mm256_fmadd_ps(scale, _mm256_mul_ps(radius[i], cos_t[i]), shift);
  INITKIT_EACH x1[i] = _mm256_fmadd_ps(scale, _mm256_mul_ps(radius[i], sin_t[i]), shift);
}
#undef INITKIT_EACH

// Where 8 groups sit in a register's lanes: kNatural, lane l holds group l; kEvenOdd, the lanes hold
// groups 0, 2, 4, 6 | 1, 3, 5, 7 (blocks_avx2 gives its Philox lanes those counters, so that one
// vshufps packs two registers of 64-bit lanes into that order: pack_low_words_even_odd).
enum class LaneOrder { kNatural, kEvenOdd };

// Elements 0 .. 31 of 8 groups from the four values of each (v[j] holds value j of every group, in
// lane order kOrder): a 4x8 transpose within 128-bit halves, giving in each register the values of
// the groups in lanes l | l + 4, stored in element order (in kEvenOdd those are groups 2l, 2l + 1:
// no lane-crossing shuffle).
template <LaneOrder kOrder>
INITKIT_AVX2_INLINE void store_interleaved(float* out, __m256 v0, __m256 v1, __m256 v2, __m256 v3) {
  const __m256 t0 = _mm256_unpacklo_ps(v0, v1), t1 = _mm256_unpackhi_ps(v0, v1);  // lanes 0, 1 | 4, 5 and 2, 3 | 6, 7
  const __m256 t2 = _mm256_unpacklo_ps(v2, v3), t3 = _mm256_unpackhi_ps(v2, v3);
  const __m256 r04 = _mm256_shuffle_ps(t0, t2, 0x44), r15 = _mm256_shuffle_ps(t0, t2, 0xee);
  const __m256 r26 = _mm256_shuffle_ps(t1, t3, 0x44), r37 = _mm256_shuffle_ps(t1, t3, 0xee);
  if constexpr (kOrder == LaneOrder::kEvenOdd) {
    _mm256_storeu_ps(out, r04);
    _mm256_storeu_ps(out + 8, r15);
    _mm256_storeu_ps(out + 16, r26);
    _mm256_storeu_ps(out + 24, r37);
  } else {
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(r04, r15, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(r26, r37, 0x20));
    _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(r04, r15, 0x31));
    _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(r26, r37, 0x31));
  }
}

// The normals of two 8-lane steps (a[j], b[j]: word j of groups g .. g + 7 and g + 8 .. g + 15, in lane
// order kOrder), their four Box-Muller pairs on normal_pairs<4>, stored in element order: out[0, 64).
template <LaneOrder kOrder>
INITKIT_AVX2_INLINE void normal_two_steps(__m256 scale, __m256 shift, const __m256i (&a)[4], const __m256i (&b)[4],
                                          float* out) {
  const __m256i first[4] = {a[0], a[2], b[0], b[2]}, second[4] = {a[1], a[3], b[1], b[3]};
  __m256 even[4], odd[4];
  normal_pairs<4>(scale, shift, first, second, even, odd);
  store_interleaved<kOrder>(out, even[0], odd[0], even[1], odd[1]);
  store_interleaved<kOrder>(out + 32, even[2], odd[2], even[3], odd[3]);
}

// Byte l of kLeftPack[m] is the position of m's l-th set bit (the rest 0): a vpermd that moves
// the lanes of mask m to the front.
constexpr uint64_t left_pack(unsigned m) {
  uint64_t packed = 0;
  for (int bit = 0, l = 0; bit < 8; ++bit)
    if ((m >> bit) & 1) packed |= static_cast<uint64_t>(bit) << (8 * l++);
  return packed;
}
constexpr auto kLeftPack = [] {
  struct { uint64_t v[256]; } t{};
  for (unsigned m = 0; m < 256; ++m) t.v[m] = left_pack(m);
  return t;
}();

// Counter word 1 of lanes l .. l + 3, (group >> 32) | attempt << 24, in 64-bit lanes.
INITKIT_AVX2_INLINE __m256i word1(const uint64_t* group, const uint32_t* attempt, int64_t l) {
  const __m256i g = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + l));
  const __m256i att = _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(attempt + l)));
  return _mm256_or_si256(_mm256_srli_epi64(g, 32), _mm256_slli_epi64(att, 24));
}

}  // namespace avx2

// cpu/fill.cpp's find_outside on AVX2: the indices i < n with x[i] < lo or x[i] > hi into pos, 8 at
// a time by left-packing the compare mask (the scalar loop's count is a chain through its stores:
// ~1 ns per element on a Zen 2 core). Each store writes 8 entries at pos + count <= pos + i, so
// nothing lands past pos + n.
INITKIT_AVX2 inline int64_t find_outside_avx2(const float* x, int64_t n, float lo, float hi, uint32_t* pos) {
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  int64_t count = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 out = _mm256_or_ps(_mm256_cmp_ps(v, vlo, _CMP_LT_OQ), _mm256_cmp_ps(v, vhi, _CMP_GT_OQ));
    const unsigned m = static_cast<unsigned>(_mm256_movemask_ps(out));
    const __m256i order = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(avx2::kLeftPack.v[m])));
    const __m256i index = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(i)), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(pos + count), index);
    count += __builtin_popcount(m);
  }
  for (; i < n; ++i) {
    pos[count] = static_cast<uint32_t>(i);
    count += (x[i] < lo) | (x[i] > hi);
  }
  return count;
}

// The normal fill's kLanes blocks from their words (sample_lanes' Normal case), on AVX2 + FMA.
INITKIT_AVX2 inline void normal_lanes_avx2(const Sampler<float>& s, const uint32_t (&w)[4][kLanes], float* out) {
  const __m256 scale = _mm256_set1_ps(s.scale), shift = _mm256_set1_ps(s.shift);
  for (int l = 0; l < kLanes; l += 16) {
    __m256i a[4], b[4];
    for (int j = 0; j < 4; ++j) {
      a[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[j] + l));
      b[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[j] + l + 8));
    }
    avx2::normal_two_steps<avx2::LaneOrder::kNatural>(scale, shift, a, b, out + 4 * l);
  }
}

// store_values' contiguous 16-bit cases (cpu/fill.cpp), 8 floats at a time, values >= limit as `low`
// first (half_open_limit), each rounded to nearest even exactly as c10's conversions (no fill writes
// NaN): float16 by F16C's vcvtps2ph (subnormals and overflow to infinity included), bfloat16 by
// c10::BFloat16's integer rounding (bits + 0x7fff + lsb) >> 16.
#define INITKIT_AVX2_F16C __attribute__((target("avx2,f16c")))
template <typename scalar_t>
INITKIT_AVX2_F16C inline __m128i round_to_16bit(__m256 x) {
  if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    return _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT);
  } else {
    static_assert(std::is_same_v<scalar_t, c10::BFloat16>, "float16 or bfloat16");
    const __m256i b = _mm256_castps_si256(x);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), lsb), 16);
    // packus packs within 128-bit halves: lanes 0-3 and 4-7 of r land in 64-bit parts 0 and 2
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08));
  }
}

template <typename scalar_t>
INITKIT_AVX2_F16C void store_16bit_avx2(const float* src, int64_t count, scalar_t* dst, float limit, float low) {
  const __m256 vlimit = _mm256_set1_ps(limit), vlow = _mm256_set1_ps(low);
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256 x = _mm256_loadu_ps(src + i);
    const __m256 kept = _mm256_blendv_ps(vlow, x, _mm256_cmp_ps(x, vlimit, _CMP_LT_OQ));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), round_to_16bit<scalar_t>(kept));
  }
  if (i < count) {  // the tail through a full register (AVX2 has no masked 16-bit store)
    alignas(32) float in[8] = {};
    alignas(16) scalar_t out[8];
    std::memcpy(in, src + i, sizeof(float) * (count - i));
    store_16bit_avx2(in, 8, out, limit, low);
    std::memcpy(dst + i, out, sizeof(scalar_t) * (count - i));
  }
}

// ---- AVX2 Philox: each 32-bit word in a 64-bit lane (vpmuludq reads only the low halves, so the
// high halves may hold anything and, unlike in the portable loop, are never masked), 8 lanes per
// step in registers (2 x 4 ymm), the steps independent for out-of-order overlap. Measured against
// the portable loop built for x86-64-v3 (its AVX2 clone), both alone in a test program on a Zen 5's
// AVX2 units: 97 vs 253 ns per 32-lane block (callgrind: 2.4x fewer instructions).
// Where counter word 1 is the same in every lane (a first draw of groups with the same high word:
// every whole-tensor fill below 2^34 elements), rounds 0 and 1 take their lane-uniform products on
// scalars, as avx512::philox_shared_c1 does: 2 of the 20 vector multiplies, which bound this loop
// (a Zen 2 core, a test program: 1.19 -> 1.04 ns per word).
namespace avx2 {

// Rounds 0 and 1 of blocks with counter words 1..3 = (c1, s0, s1): their lane-uniform parts.
struct SharedWord1 {
  __m256i c1_k0, hi_p0_k1, s1_k1, lo_p0;
};
INITKIT_AVX2_INLINE SharedWord1 shared_word1(const StreamKey& key, uint32_t c1) {
  const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * key.s0;  // round 0: c2 * M1
  const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * (static_cast<uint32_t>(p1 >> 32) ^ c1 ^ key.k0);  // round 1: c0 * M0
  return {_mm256_set1_epi64x(static_cast<uint32_t>(p1) ^ (key.k0 + kPhiloxW0)),
          _mm256_set1_epi64x(static_cast<uint32_t>(p0 >> 32) ^ (key.k1 + kPhiloxW1)),
          _mm256_set1_epi64x(key.s1 ^ key.k1), _mm256_set1_epi64x(static_cast<uint32_t>(p0))};
}

// Philox4x32-10 of 8 lanes (c[word][h], lanes 4h .. 4h + 3), given counter word 0 of each lane in
// c0[h]: with `shared` (its word 1 then c1, as shared_word1 was given), or else word 1 from c[1].
INITKIT_AVX2_INLINE void philox8(const StreamKey& key, const SharedWord1* shared, const __m256i (&c0)[2],
                                 __m256i (&c)[4][2]) {
  const __m256i m0 = _mm256_set1_epi64x(kPhiloxM0), m1 = _mm256_set1_epi64x(kPhiloxM1);
  const int first_round = shared != nullptr ? 2 : 0;
  for (int h = 0; h < 2; ++h) {
    if (shared != nullptr) {
      const __m256i p0 = _mm256_mul_epu32(c0[h], m0);  // round 0
      const __m256i q1 = _mm256_mul_epu32(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), shared->s1_k1), m1);  // round 1
      c[0][h] = _mm256_xor_si256(_mm256_srli_epi64(q1, 32), shared->c1_k0);
      c[1][h] = q1;
      c[2][h] = _mm256_xor_si256(p0, shared->hi_p0_k1);  // the low half of p0 is round 0's word 3
      c[3][h] = shared->lo_p0;
    } else {
      c[0][h] = c0[h];
      c[2][h] = _mm256_set1_epi64x(key.s0);
      c[3][h] = _mm256_set1_epi64x(key.s1);
    }
  }
  uint32_t k0 = key.k0 + first_round * kPhiloxW0, k1 = key.k1 + first_round * kPhiloxW1;
  for (int round = first_round; round < 10; ++round) {
    const __m256i vk0 = _mm256_set1_epi64x(k0), vk1 = _mm256_set1_epi64x(k1);
    for (int h = 0; h < 2; ++h) {
      const __m256i p0 = _mm256_mul_epu32(c[0][h], m0), p1 = _mm256_mul_epu32(c[2][h], m1);
      c[0][h] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), c[1][h]), vk0);
      c[1][h] = p1;
      c[2][h] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), c[3][h]), vk1);
      c[3][h] = p0;
    }
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
}

// sample_uniform on 8 words, x = shift + scale * (w >> 8) 2^-24 kept below hi, with two shortcuts that
// give the same bits: (w >> 8) 2^-24 scale is (w >> 8) (scale 2^-24), one product, where scale 2^-24
// is exact (|scale| >= 2^-102 or 0: scaling by 2^-24 is then exact and both products round the same
// real number); and no compare where the largest value, at w >> 8 = 2^24 - 1, is already below hi
// (x grows with w where scale >= 0: rounding is monotone), as for every range but those only a few
// float steps wide. One Zen 3 core, 1 MiB, min of 60 interleaved rounds, two runs: 0.895-0.908 ->
// 0.876-0.880 ns/element (raw Philox words: 0.77).
struct UniformValues {
  __m256 shift, scale, hi, lo;
  bool folded, clamped;

  INITKIT_AVX2_INLINE explicit UniformValues(const Sampler<float>& s)
      : shift(_mm256_set1_ps(s.shift)), hi(_mm256_set1_ps(s.hi)), lo(_mm256_set1_ps(s.lo)) {
    folded = s.scale == 0.0f || std::fabs(s.scale) >= 0x1p-102f;
    scale = _mm256_set1_ps(folded ? s.scale * 0x1p-24f : s.scale);
    clamped = !(s.scale >= 0.0f && s.shift + s.scale * unit_closed_open(0xffffffffu) < s.hi);
  }

  INITKIT_AVX2_INLINE __m256 values(__m256i w) const {
    const __m256 top = _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 8));
    const __m256 v = _mm256_add_ps(
        shift, folded ? _mm256_mul_ps(top, scale) : _mm256_mul_ps(scale, _mm256_mul_ps(top, _mm256_set1_ps(0x1p-24f))));
    return clamped ? _mm256_blendv_ps(lo, v, _mm256_cmp_ps(v, hi, _CMP_LT_OQ)) : v;
  }
};

// The low halves of the 64-bit lanes of a and b as 8 32-bit lanes a0, a1, b0, b1 | a2, a3, b2, b3: one
// vshufps. With a holding groups 0, 2, 1, 3 and b groups 4, 6, 5, 7, that is LaneOrder::kEvenOdd.
INITKIT_AVX2_INLINE __m256i pack_low_words_even_odd(__m256i a, __m256i b) {
  return _mm256_castps_si256(_mm256_shuffle_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), 0x88));
}

// The same for a holding groups 0..3 and b groups 4..7, in the natural order: the middle 64-bit
// pairs swapped.
INITKIT_AVX2_INLINE __m256i pack_low_words(__m256i a, __m256i b) {
  return _mm256_permute4x64_epi64(pack_low_words_even_odd(a, b), 0xd8);
}

}  // namespace avx2

// Philox4x32-10 (block_words) for kLanes (group, attempt) pairs, words[j][lane], with avx2::philox8.
INITKIT_AVX2 inline void philox_lanes_avx2(const StreamKey& key, const uint64_t (&group)[kLanes],
                                           const uint32_t (&attempt)[kLanes], uint32_t (&words)[4][kLanes]) {
  const uint32_t c1 = static_cast<uint32_t>(group[0] >> 32) | attempt[0] << 24;
  __m256i differ = _mm256_setzero_si256();
  for (int64_t l = 0; l < kLanes; l += 4)
    differ = _mm256_or_si256(differ, _mm256_xor_si256(avx2::word1(group, attempt, l), _mm256_set1_epi64x(c1)));
  const bool same_word1 = _mm256_testz_si256(differ, _mm256_set1_epi64x(0xffffffffu));
  const avx2::SharedWord1 shared = avx2::shared_word1(key, c1);
  for (int64_t l0 = 0; l0 < kLanes; l0 += 8) {
    __m256i c0[2], c[4][2];
    for (int h = 0; h < 2; ++h) {
      c0[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + l0 + 4 * h));
      if (!same_word1) c[1][h] = avx2::word1(group, attempt, l0 + 4 * h);
    }
    avx2::philox8(key, same_word1 ? &shared : nullptr, c0, c);
    for (int j = 0; j < 4; ++j)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(words[j] + l0), avx2::pack_low_words(c[j][0], c[j][1]));
  }
}

// n_blocks blocks of 32 consecutive groups from g0 (elements 4 g0 ...) of a RawWords, Uniform or
// Normal fill (or the rejection kind's first draw, its redraws left to the caller), kept in
// registers from the counters to the interleaved stores, as avx512::normal_blocks. Lines are
// prefetched for writing kPrefetchBlocks ahead while k + kPrefetchBlocks < prefetch_end (the
// blocks this call's caller writes). Two phases per block: the four Philox steps back to back
// (their words parked in L1), then the samples: consecutive steps' Philox chains, which are
// independent, then overlap in the out-of-order window, where Box-Muller's long chain between them
// kept them apart; and the normal's four pairs of two steps go through normal_pairs<4>, their
// chains interleaved (eight: spills). One Zen 3 core, 1 MiB, min of 100 interleaved rounds, two
// runs of each build: raw Philox 0.903 -> 0.763 ns/word, uniform 1.009 -> 0.884; normal 1.753 ->
// 1.537 (two phases) -> 1.424 (normal_pairs<2>, a step's two pairs) -> 1.290 (<4>); trunc +-2 std
// 2.308 -> 2.127 -> 1.88 ns/element. The words are kept in LaneOrder::kEvenOdd: one vshufps per
// register, where the natural order took three lane-crossing shuffles, and no vperm2f128 in the
// stores. The same measure, 25 rounds, two runs: raw Philox 0.77-0.79 -> 0.67-0.68 ns/word, uniform
// 0.86-0.91 -> 0.75-0.76, normal 1.32-1.33 -> 1.20-1.21, trunc +-2 std 1.88-1.93 -> 1.77 ns/element.
template <FillKind kKind>
INITKIT_AVX2 void blocks_avx2(const Sampler<float>& s, const StreamKey& key, uint64_t g0, int64_t n_blocks,
                              int64_t prefetch_end, float* out) {
  const __m256 scale = _mm256_set1_ps(s.scale), shift = _mm256_set1_ps(s.shift);
  const avx2::UniformValues uniform(s);
  for (int64_t k = 0; k < n_blocks; ++k) {
    const uint64_t g = g0 + static_cast<uint64_t>(kLanes * k);
    if (k + kPrefetchBlocks < prefetch_end)
      for (int64_t i = 0; i < kLanes * 4; i += 16) __builtin_prefetch(out + kLanes * 4 * (k + kPrefetchBlocks) + i, 1, 3);
    const bool same_word1 = static_cast<uint32_t>(g) <= 0xffffffffu - (kLanes - 1);
    const avx2::SharedWord1 shared = avx2::shared_word1(key, static_cast<uint32_t>(g >> 32));
    alignas(32) __m256i words[kLanes / 8][4];
    for (int64_t l0 = 0; l0 < kLanes; l0 += 8) {
      __m256i c0[2], c[4][2];
      for (int h = 0; h < 2; ++h) {  // groups 0, 2, 1, 3 and 4, 6, 5, 7 of the step (LaneOrder::kEvenOdd)
        c0[h] = _mm256_add_epi64(_mm256_set1_epi64x(static_cast<int64_t>(g + l0 + 4 * h)), _mm256_setr_epi64x(0, 2, 1, 3));
        if (!same_word1) c[1][h] = _mm256_srli_epi64(c0[h], 32);  // word 1: the group's high word
      }
      avx2::philox8(key, same_word1 ? &shared : nullptr, c0, c);
      for (int j = 0; j < 4; ++j) words[l0 / 8][j] = avx2::pack_low_words_even_odd(c[j][0], c[j][1]);
    }
    float* const block_out = out + kLanes * 4 * k;
    if constexpr (kKind == FillKind::Normal) {  // (also the rejection kind's first draw)
      for (int64_t l0 = 0; l0 < kLanes; l0 += 16)
        avx2::normal_two_steps<avx2::LaneOrder::kEvenOdd>(scale, shift, words[l0 / 8], words[l0 / 8 + 1],
                                                          block_out + 4 * l0);
    } else {
      for (int64_t l0 = 0; l0 < kLanes; l0 += 8) {
        const __m256i* w = words[l0 / 8];
        __m256 x[4];
        if constexpr (kKind == FillKind::RawWords) {
          for (int j = 0; j < 4; ++j) x[j] = _mm256_castsi256_ps(w[j]);
        } else {  // sample_uniform
          for (int j = 0; j < 4; ++j) x[j] = uniform.values(w[j]);
        }
        avx2::store_interleaved<avx2::LaneOrder::kEvenOdd>(block_out + 4 * l0, x[0], x[1], x[2], x[3]);
      }
    }
  }
}

}  // namespace initkit

#pragma GCC diagnostic pop
#endif
