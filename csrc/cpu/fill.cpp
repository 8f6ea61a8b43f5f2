// CPU kernels for initkit::uniform_fill, normal_fill, trunc_normal_fill and multi_fill.
// In-place, write-only, one pass: values are generated in blocks of kLanes Philox counters
// (vectorized across lanes) straight into the tensor when it is contiguous, or into a
// 256-byte stack block that is scattered through the strides otherwise. Work is split over
// blocks with at::parallel_for; because every value depends only on (seed, stream, logical
// index) -- see common/fill_sampler.h -- the result is the same for any thread count.
// Half and bfloat16 are computed in float; double in double.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/MemoryOverlap.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "../common/fill_sampler.h"
#include "../common/fill_ops.h"
#include "multiversion.h"
#include "fill_simd.h"

namespace initkit {
namespace {

// Philox4x32-10 (block_words of common/fill_sampler.h) for kLanes (group, attempt) pairs, stored
// word-major: words[j][lane]. Portable form: the 32-bit words live in 64-bit lanes so that the
// 32x32->64 products vectorize as plain unsigned multiplies of zero-extended values (about 1.8x
// faster than the 32-bit formulation, which GCC widens with 64x64 multiplies). AVX2 and AVX-512 CPUs
// run the written-out forms of fill_simd.h instead; this loop is what older x86-64 CPUs and other
// compilers get.
C10_ALWAYS_INLINE void philox_lanes_portable(const StreamKey& key, const uint64_t (&group)[kLanes],
                                              const uint32_t (&attempt)[kLanes], uint32_t (&words)[4][kLanes]) {
  constexpr uint64_t kLow = 0xffffffffu;
  for (int64_t l = 0; l < kLanes; ++l) {
    const uint64_t g = group[l];
    uint64_t c0 = g & kLow, c1 = ((g >> 32) | (static_cast<uint64_t>(attempt[l]) << 24)) & kLow, c2 = key.s0,
             c3 = key.s1;
    uint64_t k0 = key.k0, k1 = key.k1;
    for (int round = 0; round < 10; ++round) {
      const uint64_t p0 = c0 * kPhiloxM0;  // both factors < 2^32: the full 64-bit product
      const uint64_t p1 = c2 * kPhiloxM1;
      c0 = ((p1 >> 32) ^ c1 ^ k0) & kLow;
      c1 = p1 & kLow;
      c2 = ((p0 >> 32) ^ c3 ^ k1) & kLow;
      c3 = p0 & kLow;
      k0 = (k0 + kPhiloxW0) & kLow;
      k1 = (k1 + kPhiloxW1) & kLow;
    }
    words[0][l] = static_cast<uint32_t>(c0);
    words[1][l] = static_cast<uint32_t>(c1);
    words[2][l] = static_cast<uint32_t>(c2);
    words[3][l] = static_cast<uint32_t>(c3);
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
// The level of fill_simd.h's kernels: multiversion.h's cpu_kernels().
bool cpu_has_avx512f() { return cpu_kernels() == CpuKernels::kAvx512; }
bool cpu_has_avx2() { return cpu_kernels() >= CpuKernels::kAvx2; }
// F16C's float16 conversion (every AVX2 CPU has it; a VM may hide it), at the AVX2 kernel level
// (store_16bit_avx2, for both 16-bit types).
bool cpu_has_f16c() {
  static const bool f16c = cpu_has_avx2() && __builtin_cpu_supports("f16c");
  return f16c;
}
#endif

C10_ALWAYS_INLINE void philox_lanes(const StreamKey& key, const uint64_t (&group)[kLanes],
                                     const uint32_t (&attempt)[kLanes], uint32_t (&words)[4][kLanes]) {
#if defined(__GNUC__) && defined(__x86_64__)
  if (cpu_has_avx512f()) return philox_lanes_avx512(key, group, attempt, words);
  if (cpu_has_avx2()) return philox_lanes_avx2(key, group, attempt, words);
#endif
  philox_lanes_portable(key, group, attempt, words);
}

// Groups g0 .. g0 + kLanes - 1.
C10_ALWAYS_INLINE void consecutive_groups(uint64_t g0, uint64_t (&group)[kLanes]) {
  for (int64_t l = 0; l < kLanes; ++l) group[l] = g0 + static_cast<uint64_t>(l);
}

constexpr int64_t kBlockF32 = kLanes * 4;  // elements per block, 32-bit compute types
constexpr int64_t kBlockF64 = kLanes * 2;  // elements per block, double
constexpr int64_t kChunkBlocks = 32;       // float blocks per chunk (4096 values): the generic rejection redraws batch over one
constexpr int64_t kChunkF32 = kChunkBlocks * kBlockF32;

// Writes to pos the indices i < n with out[i] outside [lo, hi]; returns their count.
int64_t find_outside(const float* out, int64_t n, float lo, float hi, uint32_t* pos) {
#if defined(__GNUC__) && defined(__x86_64__)
  if (cpu_has_avx2()) return find_outside_avx2(out, n, lo, hi, pos);
#endif
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {  // branch-free: a rejection every ~20 values would mispredict
    pos[count] = static_cast<uint32_t>(i);
    count += (out[i] < lo) | (out[i] > hi);
  }
  return count;
}

// Truncated normal by rejection: the values of out[0, n) (groups from g0) outside [a, b] are
// redrawn kLanes at a time from blocks 1, 2, ... of their groups (the law of fill_sampler.h's
// redraw_trunc_normal, which CUDA runs per element). The positions wait in one queue with their
// next attempt: a lane still outside goes back to the queue's end, so every batch but the last is
// full whatever the attempt (a value depends only on its own position's blocks, not on the order).
INITKIT_MULTIVERSION
void redraw_outside(const Sampler<float>& s, const StreamKey& key, uint64_t g0, int64_t n, float* out) {
  // A ring of entries position | (attempt - 1) << 16; never more than n <= kChunkF32 live entries.
  static_assert((kChunkF32 & (kChunkF32 - 1)) == 0 && kChunkF32 <= 0x10000, "the ring needs a power of 2");
  constexpr int64_t kMask = kChunkF32 - 1;
  uint32_t ring[kChunkF32];
  int64_t head = 0, tail = find_outside(out, n, s.lo, s.hi, ring);  // entries of attempt 1
  while (head < tail) {
    const int64_t lanes = std::min<int64_t>(kLanes, tail - head);
    uint64_t group[kLanes];
    uint32_t pos[kLanes], j[kLanes], attempt[kLanes], w[4][kLanes];
    for (int64_t l = 0; l < kLanes; ++l) {  // spare lanes redo the last entry
      const uint32_t e = ring[(head + std::min(l, lanes - 1)) & kMask];
      pos[l] = e & 0xffffu;
      attempt[l] = (e >> 16) + 1;
      group[l] = g0 + pos[l] / 4;
      j[l] = pos[l] % 4;
    }
    head += lanes;
    philox_lanes(key, group, attempt, w);
    float x[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) x[l] = normal_at(s, w[0][l], w[1][l], w[2][l], w[3][l], j[l]);
    for (int64_t l = 0; l < lanes; ++l) {
      if (x[l] >= s.lo && x[l] <= s.hi) {
        out[pos[l]] = x[l];
      } else if (attempt[l] < kMaxAttempts) {
        ring[tail++ & kMask] = pos[l] | attempt[l] << 16;
      } else {  // every attempt failed (P < 1e-38): as redraw_trunc_normal
        const uint32_t last[4] = {w[0][l], w[1][l], w[2][l], w[3][l]};
        out[pos[l]] = sample_trunc_normal(s, last[j[l]]);
      }
    }
  }
}

// kLanes blocks of samples for groups group[0..kLanes): float out[4l + j], double out[2l + j].
// kDeferRedraws (float): the rejection kind's out-of-bounds values are left for redraw_outside.
template <typename acc_t, bool kDeferRedraws = false>
C10_ALWAYS_INLINE void generate_lanes(const Sampler<acc_t>& sampler, const StreamKey& key, const uint64_t (&group)[kLanes],
                                      acc_t* out) {
  const Sampler<acc_t> s = sampler;  // a local copy: `out` cannot alias it, so the loops vectorize
  constexpr uint32_t kFirst[kLanes] = {};  // attempt 0: the first draw
  uint32_t w[4][kLanes];
  philox_lanes(key, group, kFirst, w);
  if constexpr (std::is_same_v<acc_t, float>) {
#if defined(__GNUC__) && defined(__x86_64__)
    // (gathered groups only: generate_blocks_f32 sends whole blocks of both normal kinds to
    // normal_blocks_avx512 or blocks_avx2)
    if (s.kind == FillKind::Normal && cpu_has_avx512f()) return normal_lanes_avx512(s, w, out);
    if (s.kind == FillKind::Normal && cpu_has_avx2()) return normal_lanes_avx2(s, w, out);
#endif
    sample_lanes<kLanes, kDeferRedraws>(s, key, group, w, out);
  } else {
    sample_lanes<kLanes>(s, key, group, w, out);
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
// Whole float blocks on AVX2 CPUs (without AVX-512), for the kinds blocks_avx2 has (the rejection kind:
// its first draw); false for the others.
bool blocks_on_avx2(const Sampler<float>& s, const StreamKey& key, uint64_t g0, int64_t n_blocks,
                    int64_t prefetch_end, float* out) {
  if (cpu_kernels() != CpuKernels::kAvx2) return false;
  switch (s.kind) {
    case FillKind::RawWords:
      blocks_avx2<FillKind::RawWords>(s, key, g0, n_blocks, prefetch_end, out);
      return true;
    case FillKind::Uniform:
      blocks_avx2<FillKind::Uniform>(s, key, g0, n_blocks, prefetch_end, out);
      return true;
    case FillKind::Normal:
    case FillKind::TruncNormalByRejection:
      blocks_avx2<FillKind::Normal>(s, key, g0, n_blocks, prefetch_end, out);
      return true;
    default:
      return false;
  }
}
#endif

// n_blocks * kBlockF32 float samples for logical elements [4*g0, 4*g0 + kBlockF32 n_blocks): chunks of
// up to kChunkBlocks blocks, then the rejection kind's redraws batched over the chunk (the ring's size).
INITKIT_MULTIVERSION
void generate_blocks_f32(const Sampler<float>& sampler, const StreamKey& key, uint64_t g0, int64_t n_blocks,
                         float* out) {
#if defined(__GNUC__) && defined(__x86_64__)
  if ((sampler.kind == FillKind::Normal || sampler.kind == FillKind::TruncNormalByRejection) && cpu_has_avx512f())
    return normal_blocks_avx512(sampler, key, g0, n_blocks, out);
#endif
  for (int64_t c = 0; c < n_blocks; c += kChunkBlocks) {
    const int64_t chunk = std::min(kChunkBlocks, n_blocks - c);
#if defined(__GNUC__) && defined(__x86_64__)
    const bool done = blocks_on_avx2(sampler, key, g0 + kLanes * c, chunk, n_blocks - c, out + kBlockF32 * c);
#else
    const bool done = false;
#endif
    for (int64_t k = c; k < c + chunk && !done; ++k) {
      uint64_t group[kLanes];
      consecutive_groups(g0 + kLanes * k, group);
      // Output lines prefetched for writing, as normal_blocks does (lines this call writes only): one
      // run, 4096x8192 uniform_ on 2 threads, 13.9 -> 12.1 ms and 14.0 -> 10.8 ms
      if (k + kPrefetchBlocks < n_blocks)
        for (int64_t i = 0; i < kBlockF32; i += 16)
          __builtin_prefetch(out + kBlockF32 * (k + kPrefetchBlocks) + i, 1, 3);
      generate_lanes<float, true>(sampler, key, group, out + kBlockF32 * k);
    }
    if (sampler.kind == FillKind::TruncNormalByRejection)
      redraw_outside(sampler, key, g0 + kLanes * c, kBlockF32 * chunk, out + kBlockF32 * c);
  }
}

// kBlockF64 double samples for logical elements [2*g0, 2*g0 + kBlockF64).
INITKIT_MULTIVERSION
void generate_block_f64(const Sampler<double>& sampler, const StreamKey& key, uint64_t g0, double* out) {
  uint64_t group[kLanes];
  consecutive_groups(g0, group);
  generate_lanes(sampler, key, group, out);
}

// Gathered groups (the short runs of sharded blocks).
INITKIT_MULTIVERSION
void generate_lanes_f32(const Sampler<float>& sampler, const StreamKey& key, const uint64_t (&group)[kLanes],
                        float* out) {
  generate_lanes(sampler, key, group, out);
}

// Walks a tensor's elements in logical (row-major) order, yielding memory offsets.
class StridedCursor {
 public:
  StridedCursor(const at::Tensor& t, int64_t linear) : sizes_(t.sizes().vec()), strides_(t.strides().vec()) {
    index_.assign(sizes_.size(), 0);
    for (int64_t d = static_cast<int64_t>(sizes_.size()) - 1; d >= 0; --d) {
      index_[d] = linear % sizes_[d];
      linear /= sizes_[d];
      offset_ += index_[d] * strides_[d];
    }
  }
  int64_t offset() const { return offset_; }
  void next() {
    for (int64_t d = static_cast<int64_t>(sizes_.size()) - 1; d >= 0; --d) {
      offset_ += strides_[d];
      if (++index_[d] < sizes_[d]) return;
      offset_ -= index_[d] * strides_[d];
      index_[d] = 0;
    }
  }

 private:
  std::vector<int64_t> sizes_, strides_, index_;
  int64_t offset_ = 0;
};

// Rounding a uniform's float values to half/bfloat16 can reach its `high`; torch keeps uniform_
// half-open, so such a value is stored as `low`. Rounding is monotone, so "rounds to >= high" is
// exactly "x >= the limit returned here" (the smallest float that rounds to >= high, found once per
// task by bisection over the float order, 32 steps): a compare in float that vectorizes with the conversion, where a
// per-element round trip did not (float16 uniform_ ran at half float16 normal_'s speed). +inf
// where nothing needs the clamp (other kinds, no rounding, or no float below `high` rounds up to it).
template <typename scalar_t, typename acc_t>
acc_t half_open_limit(const Sampler<acc_t>& s) {
  constexpr acc_t kNone = std::numeric_limits<acc_t>::infinity();
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return kNone;
  } else {
    static_assert(std::is_same_v<acc_t, float>, "16-bit fills accumulate in float");
    if (s.kind != FillKind::Uniform) return kNone;
    const auto rounds_to_high = [&](float x) { return !(static_cast<float>(static_cast<scalar_t>(x)) < s.hi); };
    if (!rounds_to_high(s.hi)) return kNone;
    // Float order as unsigned order: negative floats reversed below the positive ones.
    const auto ordered = [](float x) { const uint32_t b = float_bits(x); return (b >> 31) ? ~b : b | 0x80000000u; };
    const auto unordered = [](uint32_t o) { return bits_float((o >> 31) ? o & 0x7fffffffu : ~o); };
    // rounds_to_high: false at `below` (-inf), true at `at`
    uint32_t below = ordered(-std::numeric_limits<float>::infinity()), at = ordered(s.hi);
    while (at - below > 1) {
      const uint32_t mid = below + (at - below) / 2;
      (rounds_to_high(unordered(mid)) ? at : below) = mid;
    }
    return unordered(at);
  }
}

// Stores src[0, count) at the tensor's local indices [local, local + count): converted to scalar_t,
// contiguous or through `cursor` (which then walks on); values >= `limit` (half_open_limit) as `low`.
template <typename scalar_t, typename acc_t>
void store_values(const Sampler<acc_t>& s, acc_t limit, const acc_t* __restrict src, int64_t count, scalar_t* data,
                  int64_t local, StridedCursor* cursor) {
  const acc_t low = s.lo;
#if defined(__GNUC__) && defined(__x86_64__)
  if constexpr (std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>) {
    if (cursor == nullptr && cpu_has_f16c()) return store_16bit_avx2(src, count, data + local, limit, low);
  }
#endif
  if (cursor == nullptr) {
    scalar_t* __restrict dst = data + local;
    if (limit == std::numeric_limits<acc_t>::infinity()) {  // the common case: a plain (converting) copy
      for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<scalar_t>(src[i]);
    } else {
      for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<scalar_t>(src[i] < limit ? src[i] : low);
    }
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    data[cursor->offset()] = static_cast<scalar_t>(src[i] < limit ? src[i] : low);
    cursor->next();
  }
}

// One tensor of a (multi-)fill, with everything precomputed on the calling thread.
struct FillJob {
  at::Tensor tensor;
  Sampler<float> sampler_f32;
  Sampler<double> sampler_f64;
  StreamKey key;
  int64_t offset;       // logical index of the tensor's first element
  int64_t block_elems;  // kBlockF32 or kBlockF64
  int64_t first_block;  // global block holding logical index `offset`
  int64_t num_blocks;   // blocks overlapping [offset, offset + numel)
  bool contiguous;
};

template <typename scalar_t>
void fill_blocks(const FillJob& job, int64_t block_begin, int64_t block_end) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  constexpr int64_t kBlock = std::is_same_v<acc_t, double> ? kBlockF64 : kBlockF32;
  constexpr int64_t kPerGroup = std::is_same_v<acc_t, double> ? 2 : 4;
  const int64_t numel = job.tensor.numel();
  scalar_t* const data = job.tensor.data_ptr<scalar_t>();
  // Float chunks of up to kChunkBlocks blocks through `values` (in place: all whole blocks at once);
  // double, which redraws per element, one block at a time.
  constexpr int64_t kChunk = std::is_same_v<acc_t, double> ? 1 : kChunkBlocks;
  alignas(64) acc_t values[kChunk * kBlock];

  // Logical range of this call, clipped to the tensor, as tensor-local indices.
  const int64_t first = std::max<int64_t>((job.first_block + block_begin) * kBlock - job.offset, 0);
  const int64_t last = std::min<int64_t>((job.first_block + block_end) * kBlock - job.offset, numel);
  std::optional<StridedCursor> cursor;
  const acc_t limit = [&] {
    if constexpr (std::is_same_v<acc_t, double>) return half_open_limit<scalar_t>(job.sampler_f64);
    else return half_open_limit<scalar_t>(job.sampler_f32);
  }();
  if (!job.contiguous) cursor.emplace(job.tensor, first);

  for (int64_t b = block_begin, n_blocks; b < block_end; b += n_blocks) {
    n_blocks = std::min<int64_t>(kChunk, block_end - b);
    const int64_t chunk_logical = (job.first_block + b) * kBlock;
    if constexpr (std::is_same_v<scalar_t, float>) {
      // The whole blocks from b inside a contiguous float tensor: generated in place, in one call (so
      // the rejection kind's partial batches and the AVX-512 kernel's prefetch stop only at its end).
      const int64_t start = chunk_logical - job.offset;
      if (job.contiguous && start >= 0 && start + kBlock <= numel)
        n_blocks = std::min<int64_t>(block_end - b, (numel - start) / kBlock);
    }
    const int64_t lo = std::max<int64_t>(chunk_logical - job.offset, first);
    const int64_t hi = std::min<int64_t>(chunk_logical + n_blocks * kBlock - job.offset, last);
    const uint64_t g0 = static_cast<uint64_t>(chunk_logical / kPerGroup);
    acc_t* target = values;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {  // float and double: whole blocks in place
      if (job.contiguous && hi - lo == n_blocks * kBlock) target = data + lo;
    }
    if constexpr (std::is_same_v<acc_t, double>) {
      generate_block_f64(job.sampler_f64, job.key, g0, target);  // (kChunk is 1)
      if (target == values)
        store_values(job.sampler_f64, limit, values + (lo + job.offset - chunk_logical), hi - lo, data, lo,
                     cursor ? &*cursor : nullptr);
    } else {
      generate_blocks_f32(job.sampler_f32, job.key, g0, n_blocks, target);
      if (target == values)
        store_values(job.sampler_f32, limit, values + (lo + job.offset - chunk_logical), hi - lo, data, lo,
                     cursor ? &*cursor : nullptr);
    }
  }
}

void run_job_blocks(const FillJob& job, int64_t block_begin, int64_t block_end) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.tensor.scalar_type(), "initkit_fill", [&] {
    fill_blocks<scalar_t>(job, block_begin, block_end);
  });
}

FillJob make_job(const at::Tensor& t, FillKind kind, const double* params, uint64_t seed, int64_t stream,
                 int64_t offset) {
  FillJob job;
  job.tensor = t;
  job.sampler_f32 = make_sampler<float>(kind, params);
  job.sampler_f64 = make_sampler<double>(kind, params);
  job.key = StreamKey{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(stream),
                static_cast<uint32_t>(static_cast<uint64_t>(stream) >> 32)};
  job.offset = offset;
  job.block_elems = t.scalar_type() == at::kDouble ? kBlockF64 : kBlockF32;
  job.first_block = offset / job.block_elems;
  job.num_blocks = (offset + t.numel() + job.block_elems - 1) / job.block_elems - job.first_block;
  job.contiguous = t.is_contiguous();
  return job;
}

// Blocks [begin, end) of the jobs' consecutive block numbering.
void run_block_range(const std::vector<FillJob>& jobs, const std::vector<int64_t>& block_prefix, int64_t begin,
                     int64_t end) {
  size_t j = std::upper_bound(block_prefix.begin(), block_prefix.end(), begin) - block_prefix.begin() - 1;
  while (begin < end) {
    const int64_t stop = std::min(end, block_prefix[j + 1]);
    run_job_blocks(jobs[j], begin - block_prefix[j], stop - block_prefix[j]);
    begin = stop;
    ++j;
  }
}

// All jobs share one parallel region: blocks of every tensor are numbered consecutively and cut
// into tasks of kTaskBlocks that the threads take in turn from a shared counter, so a model's
// many small tensors still use every core, and a thread that finishes early (cheaper fill kinds
// in its share, a core taken by another process) takes more tasks instead of waiting.
void run_jobs(const std::vector<FillJob>& jobs) {
  std::vector<int64_t> block_prefix(jobs.size() + 1, 0);
  for (size_t i = 0; i < jobs.size(); ++i) block_prefix[i + 1] = block_prefix[i] + jobs[i].num_blocks;
  const int64_t total = block_prefix.back();
  if (total == 0) return;
  // 16 Ki float elements (8 Ki double): the least work worth a thread, >10 us against a fork/join
  // of a few us, so that a 256x256 fill already runs on two threads.
  constexpr int64_t kTaskBlocks = 16384 / kBlockF32;
  const int64_t tasks = (total + kTaskBlocks - 1) / kTaskBlocks;
  std::atomic<int64_t> next{0};
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {  // (one call per thread, up to `tasks` threads)
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < tasks;)
      run_block_range(jobs, block_prefix, t * kTaskBlocks, std::min(total, (t + 1) * kTaskBlocks));
  });
}

void fill_cpu(const at::Tensor& self, FillKind kind, const double* params, uint64_t key, int64_t stream,
              int64_t offset, const char* /*op*/) {
  run_jobs({make_job(self, kind, params, key, stream, offset)});
}

void multi_fill_cpu(at::TensorList tensors, at::IntArrayRef kinds, at::ArrayRef<double> params,
                    const at::Tensor& seed, at::IntArrayRef streams) {
  const char* op = "initkit::multi_fill";
  const uint64_t key = check_multi_fill_args(tensors, kinds, params, seed, streams, op);
  std::vector<FillJob> jobs;
  jobs.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    jobs.push_back(make_job(tensors[i], static_cast<FillKind>(kinds[i]), params.data() + i * kNumFillParams, key,
                            streams[i], 0));
  }
  run_jobs(jobs);
}

// ---- _fill_block: a block of a larger logical tensor (a DTensor's shard) ----------------------
// The block is cut into runs contiguous in the global row-major order (dims after the last
// partial dim are whole): run r covers `run_len` global indices from run_start(r), and local
// elements [r * run_len, (r + 1) * run_len) in row-major order. Work items are runs, or pieces of
// at most kPieceElems of a long run. The Philox groups the items need are gathered kLanes at a time,
// across run boundaries, so short runs (Shard(1) over many ranks) generate only the groups they
// touch, with the sampler built once per call.
struct BlockPlan {
  at::Tensor tensor;
  Sampler<float> sampler_f32;
  Sampler<double> sampler_f64;
  StreamKey key;
  std::vector<int64_t> lead_sizes;   // local sizes of the dims before the last partial dim
  std::vector<int64_t> lead_strides; // their global row-major strides
  int64_t base;                      // global index of run 0's first element
  int64_t run_len;
  int64_t piece_len;                 // elements per work item
  int64_t pieces_per_run;
  bool contiguous;

  int64_t run_start(int64_t r) const {
    int64_t start = base;
    for (int64_t d = static_cast<int64_t>(lead_sizes.size()) - 1; d >= 0; --d) {
      start += (r % lead_sizes[d]) * lead_strides[d];
      r /= lead_sizes[d];
    }
    return start;
  }
};

constexpr int64_t kPieceElems = 16384;  // a multiple of kBlockF32 and kBlockF64

template <typename scalar_t>
void fill_block_items(const BlockPlan& plan, int64_t item_begin, int64_t item_end) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  constexpr int64_t kPerGroup = std::is_same_v<acc_t, double> ? 2 : 4;
  constexpr int64_t kBlock = kLanes * kPerGroup;
  scalar_t* const data = plan.tensor.data_ptr<scalar_t>();
  const Sampler<acc_t>* sampler;
  if constexpr (std::is_same_v<acc_t, double>) {
    sampler = &plan.sampler_f64;
  } else {
    sampler = &plan.sampler_f32;
  }
  // The batch: kLanes groups, and the segments of their samples that belong to the block, in local order.
  alignas(64) acc_t values[kBlock];
  uint64_t group[kLanes];
  int64_t seg_from[kLanes], seg_count[kLanes];
  int lanes = 0, segments = 0;
  // Items are consecutive in local order: one write position (and cursor) walks them.
  int64_t local = (item_begin / plan.pieces_per_run) * plan.run_len + (item_begin % plan.pieces_per_run) * plan.piece_len;
  std::optional<StridedCursor> cursor;
  const acc_t limit = half_open_limit<scalar_t>(*sampler);
  if (!plan.contiguous) cursor.emplace(plan.tensor, local);

  auto flush = [&] {
    for (int l = lanes; l < kLanes; ++l) group[l] = group[lanes - 1];  // padding lanes, not stored
    acc_t* target = values;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      if (plan.contiguous && segments == 1 && seg_count[0] == kBlock) target = data + local;  // in place
    }
    // Consecutive groups (long runs) take the whole-tensor kernel: measured 1.29x faster on AVX-512
    // than the same groups gathered (generate_lanes_f32), 1024x16384 normal, one thread.
    bool consecutive = true;
    for (int l = 1; l < kLanes; ++l) consecutive &= group[l] == group[0] + static_cast<uint64_t>(l);
    if constexpr (std::is_same_v<acc_t, double>) {
      generate_lanes(*sampler, plan.key, group, target);  // (double is not multiversioned: one kernel)
    } else if (consecutive) {
      generate_blocks_f32(*sampler, plan.key, group[0], 1, target);
    } else {
      generate_lanes_f32(*sampler, plan.key, group, target);
    }
    if (target != values) {
      local += kBlock;
    } else {
      for (int k = 0; k < segments; ++k) {
        store_values(*sampler, limit, values + seg_from[k], seg_count[k], data, local, cursor ? &*cursor : nullptr);
        local += seg_count[k];
      }
    }
    lanes = segments = 0;
  };

  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t piece = item % plan.pieces_per_run;
    int64_t next = plan.run_start(item / plan.pieces_per_run) + piece * plan.piece_len;  // global index
    int64_t count = std::min(plan.piece_len, plan.run_len - piece * plan.piece_len);
    if constexpr (std::is_same_v<scalar_t, float>) {
      // The whole blocks of a long run of a contiguous float tensor: generated in place, many blocks per
      // call, as the whole-tensor fill does (one block per flush cost 1.19x its time at R = 1).
      const int64_t whole = next % kPerGroup == 0 && lanes == 0 && plan.contiguous ? count / kBlock : 0;
      if (whole > 0) {
        generate_blocks_f32(*sampler, plan.key, static_cast<uint64_t>(next / kPerGroup), whole, data + local);
        local += whole * kBlock;
        next += whole * kBlock;
        count -= whole * kBlock;
      }
    }
    while (count > 0) {
      const int64_t j = next % kPerGroup;
      const int64_t take = std::min(count, (kLanes - lanes) * kPerGroup - j);
      const uint64_t g = static_cast<uint64_t>(next / kPerGroup);
      const int64_t groups = (j + take + kPerGroup - 1) / kPerGroup;
      for (int64_t i = 0; i < groups; ++i) group[lanes + i] = g + static_cast<uint64_t>(i);
      seg_from[segments] = lanes * kPerGroup + j;
      seg_count[segments++] = take;
      lanes += static_cast<int>(groups);
      next += take;
      count -= take;
      if (lanes == kLanes) flush();
    }
  }
  if (lanes > 0) flush();
}

void fill_block_cpu(at::Tensor& self, int64_t kind, at::ArrayRef<double> params, const at::Tensor& seed,
                    int64_t stream, at::IntArrayRef global_sizes, at::IntArrayRef origin) {
  const char* op = "initkit::_fill_block";
  TORCH_CHECK_VALUE(kind >= 0 && kind <= static_cast<int64_t>(FillKind::TruncNormal), op, ": unknown fill kind ", kind);
  TORCH_CHECK_VALUE(params.size() == static_cast<size_t>(kNumFillParams), op, ": expected ", kNumFillParams,
                    " params, got ", params.size());
  const int64_t dims = self.dim();
  TORCH_CHECK_VALUE(static_cast<int64_t>(global_sizes.size()) == dims && static_cast<int64_t>(origin.size()) == dims, op,
                    ": expected ", dims, " global sizes and origins for a ", dims, "-D block, got ", global_sizes.size(),
                    " and ", origin.size());
  int64_t global_numel = 1;
  for (int64_t d = 0; d < dims; ++d) {
    TORCH_CHECK_VALUE(origin[d] >= 0 && origin[d] + self.size(d) <= global_sizes[d], op, ": dim ", d, " of the block, [",
                      origin[d], ", ", origin[d] + self.size(d), "), is outside the global size ", global_sizes[d]);
    global_numel *= global_sizes[d];
  }
  TORCH_CHECK_VALUE(global_numel <= kMaxLogicalIndex, op, ": logical indices must stay below 2^56, got ", global_numel,
                    " elements");
  const FillKind fill_kind = static_cast<FillKind>(kind);
  check_fill_target(self, op);
  check_fill_params(fill_kind, params.data(), self.scalar_type(), op);
  const uint64_t key = seed_value(seed, op);
  if (self.numel() == 0) return;
  int64_t last = 0;  // the last dim the block does not cover whole
  for (int64_t d = 0; d < dims; ++d)
    if (self.size(d) != global_sizes[d]) last = d;
  std::vector<int64_t> global_stride(dims, 1);
  for (int64_t d = dims - 2; d >= 0; --d) global_stride[d] = global_stride[d + 1] * global_sizes[d + 1];

  BlockPlan plan{};
  plan.tensor = self;
  if (self.scalar_type() == at::kDouble) {
    plan.sampler_f64 = make_sampler<double>(fill_kind, params.data());
  } else {
    plan.sampler_f32 = make_sampler<float>(fill_kind, params.data());
  }
  plan.key = StreamKey{static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32), static_cast<uint32_t>(stream),
                       static_cast<uint32_t>(static_cast<uint64_t>(stream) >> 32)};
  plan.lead_sizes.assign(self.sizes().begin(), self.sizes().begin() + last);
  plan.lead_strides.assign(global_stride.begin(), global_stride.begin() + last);
  plan.base = 0;
  for (int64_t d = 0; d < dims; ++d) plan.base += origin[d] * global_stride[d];
  const int64_t runs = c10::multiply_integers(plan.lead_sizes);
  plan.run_len = self.numel() / runs;
  plan.piece_len = std::min(plan.run_len, kPieceElems);
  plan.pieces_per_run = (plan.run_len + plan.piece_len - 1) / plan.piece_len;
  plan.contiguous = self.is_contiguous();
  const int64_t grain = std::max<int64_t>(1, kPieceElems / plan.piece_len);  // about kPieceElems per task
  at::parallel_for(0, runs * plan.pieces_per_run, grain, [&](int64_t begin, int64_t end) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, self.scalar_type(), "initkit_fill_block", [&] {
      fill_block_items<scalar_t>(plan, begin, end);
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(initkit, CPU, m) {
  SingleFillOps<fill_cpu>::register_on(m);
  m.impl("multi_fill", &multi_fill_cpu);
  m.impl("_fill_block", &fill_block_cpu);
}

}  // namespace initkit
