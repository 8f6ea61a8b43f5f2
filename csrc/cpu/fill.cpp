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
#include <vector>

#include "../common/fill_sampler.h"
#include "../common/fill_ops.h"
#include "multiversion.h"

namespace initkit {
namespace {

constexpr int64_t kLanes = 16;  // Philox blocks generated together (one AVX-512 register)

// Philox4x32-10 (block_words(g, 0) of common/fill_sampler.h) for groups g0 .. g0+kLanes-1, stored
// word-major: words[j][lane]. The 32-bit words live in 64-bit lanes so that the 32x32->64
// products vectorize as plain unsigned multiplies of zero-extended values (about 1.8x faster
// on AVX-512 than the 32-bit formulation, which GCC widens with 64x64 multiplies).
inline void philox_lanes(const StreamKey& key, uint64_t g0, uint32_t (&words)[4][kLanes]) {
  constexpr uint64_t kLow = 0xffffffffu;
  for (int64_t l = 0; l < kLanes; ++l) {
    const uint64_t g = g0 + static_cast<uint64_t>(l);
    uint64_t c0 = g & kLow, c1 = g >> 32, c2 = key.s0, c3 = key.s1;
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

constexpr int64_t kBlockF32 = kLanes * 4;  // elements per block, 32-bit compute types
constexpr int64_t kBlockF64 = kLanes * 2;  // elements per block, double

// 64 float samples for logical elements [4*g0, 4*g0 + 64).
INITKIT_MULTIVERSION
void generate_block_f32(const Sampler<float>& sampler, const StreamKey& key, uint64_t g0, float* out) {
  const Sampler<float> s = sampler;  // a local copy: `out` cannot alias it, so the loops vectorize
  uint32_t w[4][kLanes];
  philox_lanes(key, g0, w);
  sample_lanes<kLanes>(s, key, g0, w, out);
}

// 32 double samples for logical elements [2*g0, 2*g0 + 32).
void generate_block_f64(const Sampler<double>& sampler, const StreamKey& key, uint64_t g0, double* out) {
  const Sampler<double> s = sampler;
  uint32_t w[4][kLanes];
  philox_lanes(key, g0, w);
  sample_lanes<kLanes>(s, key, g0, w, out);
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
  alignas(64) acc_t values[kBlock];

  // Logical range of this call, clipped to the tensor, as tensor-local indices.
  const int64_t first = std::max<int64_t>((job.first_block + block_begin) * kBlock - job.offset, 0);
  const int64_t last = std::min<int64_t>((job.first_block + block_end) * kBlock - job.offset, numel);
  std::optional<StridedCursor> cursor;
  if (!job.contiguous) cursor.emplace(job.tensor, first);

  for (int64_t b = block_begin; b < block_end; ++b) {
    const int64_t block_logical = (job.first_block + b) * kBlock;
    const int64_t lo = std::max<int64_t>(block_logical - job.offset, first);
    const int64_t hi = std::min<int64_t>(block_logical + kBlock - job.offset, last);
    const uint64_t g0 = static_cast<uint64_t>(block_logical / kPerGroup);
    acc_t* target = values;
    if constexpr (std::is_same_v<scalar_t, float>) {
      // Whole block inside a contiguous float tensor: generate in place.
      if (job.contiguous && hi - lo == kBlock) target = data + lo;
    }
    if constexpr (std::is_same_v<acc_t, double>) {
      generate_block_f64(job.sampler_f64, job.key, g0, target);
    } else {
      generate_block_f32(job.sampler_f32, job.key, g0, target);
    }
    if (target != values) continue;
    const acc_t* src = values + (lo + job.offset - block_logical);
    const bool keep_half_open = job.sampler_f32.kind == FillKind::Uniform && !std::is_same_v<scalar_t, acc_t>;
    for (int64_t i = lo; i < hi; ++i, ++src) {
      scalar_t v = static_cast<scalar_t>(*src);
      // Rounding to half/bfloat16 can reach `high`; torch keeps uniform_ half-open.
      if (keep_half_open && !(static_cast<acc_t>(v) < job.sampler_f32.hi)) v = static_cast<scalar_t>(job.sampler_f32.lo);
      if (job.contiguous) {
        data[i] = v;
      } else {
        data[cursor->offset()] = v;
        cursor->next();
      }
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
  constexpr int64_t kTaskBlocks = 256;
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

// The block is cut into runs contiguous in the global row-major order (dims after the last
// partial dim are whole): one job per run, with `offset` = the run's first global index, all in
// one parallel region.
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
  const int64_t runs = c10::multiply_integers(self.sizes().begin(), self.sizes().begin() + last);
  std::vector<FillJob> jobs;
  jobs.reserve(runs);
  std::vector<int64_t> index(last, 0);
  for (int64_t r = 0; r < runs; ++r) {
    at::Tensor run = self;
    int64_t start = dims ? origin[last] * global_stride[last] : 0;
    for (int64_t d = 0; d < last; ++d) {
      run = run.select(0, index[d]);
      start += (origin[d] + index[d]) * global_stride[d];
    }
    jobs.push_back(make_job(run, fill_kind, params.data(), key, stream, start));
    for (int64_t d = last - 1; d >= 0 && ++index[d] == self.size(d); --d) index[d] = 0;
  }
  run_jobs(jobs);
}

}  // namespace

TORCH_LIBRARY_IMPL(initkit, CPU, m) {
  SingleFillOps<fill_cpu>::register_on(m);
  m.impl("multi_fill", &multi_fill_cpu);
  m.impl("_fill_block", &fill_block_cpu);
}

}  // namespace initkit
