// CUDA kernels for initkit::uniform_fill, normal_fill, trunc_normal_fill and multi_fill.
// They follow the CPU kernels' counter mapping (common/fill_sampler.h) and call the same
// samplers, so a fill gives the CPU's values for the same seed, bit for bit (FP contraction is
// off on both sides), except the double truncated normals that call log, exp or erfc (inverse CDF,
// proposals): within a few ulp (libm against CUDA's math library).
//
// Work is cut into items of 16 bytes of output: one Philox block for float (4 values) and
// double (2 values), two consecutive blocks for half and bfloat16 (8 values). One thread
// makes one item and writes it with one 16-byte store when the item lies inside the tensor
// and is aligned; items at the edges (offset, tail, unaligned views) are stored element by
// element. Tiles of kThreads items are spread over a fixed grid with a grid-stride loop.
//
// Graph capture is refused: the Philox key is read on the host when the fill is launched
// (the seed tensor lives on the CPU), so a captured fill would be replayed with the same key
// and silently write the same numbers on every replay.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../common/fill_ops.h"
#include "../common/fill_sampler.h"

namespace initkit {
namespace {

constexpr int kThreads = 256;      // threads per block = items per tile
constexpr int kBlocksPerSm = 8;    // 2048 resident threads per SM on sm_80 and sm_90
constexpr int kItemBytes = 16;     // one vector store
constexpr int kMaxDims = 12;       // strided views with more (non-mergeable) dims go through a temporary

enum class DType : int32_t { Float, Double, Half, BFloat16 };

// One tensor to fill, with everything the kernel needs precomputed on the host.
struct FillDesc {
  void* data;
  int64_t numel;
  int64_t offset;      // logical index of element 0 (the op's `offset` argument)
  int64_t first_item;  // item holding logical index `offset`
  int64_t num_items;   // items overlapping [offset, offset + numel)
  int64_t tile_begin;  // multi fill: index of this tensor's first tile in the launch
  Sampler<float> f32;
  Sampler<double> f64;
  uint32_t key0, key1, stream0, stream1;
  DType dtype;
};

// Memory layout of a non-contiguous tensor, with mergeable dimensions merged.
struct StridedLayout {
  int32_t ndim;
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims];
};

// Values per item.
template <typename scalar_t>
constexpr int kItemElems = kItemBytes / static_cast<int>(sizeof(scalar_t));

int64_t item_elems(DType dtype) {
  switch (dtype) {
    case DType::Float: return kItemElems<float>;
    case DType::Double: return kItemElems<double>;
    default: return kItemElems<at::Half>;
  }
}

// The values of one item, for logical elements [first, first + kElems). `first` is a multiple
// of the item size, so the item starts on a Philox block: group first / 4 (32-bit types) or
// first / 2 (double), as in common/fill_sampler.h.
template <typename acc_t, int kElems>
__device__ __forceinline__ void sample_item(const FillDesc& d, const Sampler<acc_t>& s, uint64_t first,
                                            acc_t (&v)[kElems]) {
  constexpr int kPerBlock = sizeof(acc_t) == 4 ? 4 : 2;
  const StreamKey key{d.key0, d.key1, d.stream0, d.stream1};
#pragma unroll
  for (int b = 0; b < kElems / kPerBlock; ++b) {
    const uint64_t g[1] = {first / kPerBlock + b};
    const PhiloxWords r = block_words(key, g[0], 0);
    const uint32_t w[4][1] = {{r.w[0]}, {r.w[1]}, {r.w[2]}, {r.w[3]}};
    sample_lanes<1>(s, key, g, w, v + kPerBlock * b);
  }
}

// Output values of one item in the tensor's dtype (half and bfloat16 round from float).
template <typename scalar_t>
struct alignas(kItemBytes) Item {
  scalar_t v[kItemElems<scalar_t>];
};

template <typename scalar_t>
__device__ __forceinline__ Item<scalar_t> make_item(const FillDesc& d, uint64_t first) {
  constexpr int kElems = kItemElems<scalar_t>;
  Item<scalar_t> item;
  if constexpr (std::is_same_v<scalar_t, double>) {
    sample_item<double, kElems>(d, d.f64, first, item.v);
  } else {
    float v[kElems];
    sample_item<float, kElems>(d, d.f32, first, v);
    // Rounding to half/bfloat16 can reach `high`; torch keeps uniform_ half-open (as the CPU kernel).
    const bool keep_half_open = !std::is_same_v<scalar_t, float> && d.f32.kind == FillKind::Uniform;
#pragma unroll
    for (int j = 0; j < kElems; ++j) {
      scalar_t x = static_cast<scalar_t>(v[j]);
      if (keep_half_open && !(static_cast<float>(x) < d.f32.hi)) x = static_cast<scalar_t>(d.f32.lo);
      item.v[j] = x;
    }
  }
  return item;
}

// One st.global.v4: nvcc splits a struct or uint4 store into per-element stores when it
// cannot prove the alignment, which here is checked at run time.
template <typename scalar_t>
__device__ __forceinline__ void store_16_bytes(scalar_t* dst, const Item<scalar_t>& item) {
  uint32_t w[4];
  memcpy(w, &item, sizeof(w));
  asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "r"(w[0]), "r"(w[1]), "r"(w[2]), "r"(w[3])
               : "memory");
}

__device__ __forceinline__ int64_t strided_offset(const StridedLayout& layout, int64_t linear) {
  int64_t offset = 0;
  for (int dim = layout.ndim - 1; dim >= 0; --dim) {
    offset += (linear % layout.sizes[dim]) * layout.strides[dim];
    linear /= layout.sizes[dim];
  }
  return offset;
}

// Generates item `k` of tensor `d` (0 = the item holding logical index d.offset) and stores
// the elements that belong to the tensor.
template <typename scalar_t, bool kStrided>
__device__ __forceinline__ void fill_item(const FillDesc& d, const StridedLayout& layout, int64_t k) {
  constexpr int kElems = kItemElems<scalar_t>;
  const int64_t logical = (d.first_item + k) * kElems;
  const Item<scalar_t> item = make_item<scalar_t>(d, static_cast<uint64_t>(logical));
  scalar_t* const data = static_cast<scalar_t*>(d.data);
  const int64_t local = logical - d.offset;  // tensor index of item.v[0]; negative in the first item
  if (!kStrided && local >= 0 && local + kElems <= d.numel &&
      reinterpret_cast<uintptr_t>(data + local) % kItemBytes == 0) {
    store_16_bytes(data + local, item);
    return;
  }
#pragma unroll
  for (int j = 0; j < kElems; ++j) {
    const int64_t i = local + j;
    if (i < 0 || i >= d.numel) continue;
    data[kStrided ? strided_offset(layout, i) : i] = item.v[j];
  }
}

// One tensor, any layout.
template <typename scalar_t, bool kStrided>
__global__ void __launch_bounds__(kThreads) fill_one_kernel(const FillDesc d, const StridedLayout layout) {
  const int64_t num_tiles = (d.num_items + kThreads - 1) / kThreads;
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    const int64_t k = tile * kThreads + threadIdx.x;
    if (k < d.num_items) fill_item<scalar_t, kStrided>(d, layout, k);
  }
}

// Many contiguous tensors in one launch: tile t belongs to the last tensor whose tile_begin
// is <= t (binary search; every tensor's tiles start a new tile, so a block never mixes
// tensors and the dtype and kind branches are uniform across it).
__global__ void __launch_bounds__(kThreads) fill_many_kernel(const FillDesc* descs, int32_t num_descs,
                                                             int64_t num_tiles) {
  const StridedLayout unused{};
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    int32_t lo = 0, hi = num_descs - 1;
    while (lo < hi) {
      const int32_t mid = (lo + hi + 1) / 2;
      if (descs[mid].tile_begin <= tile) lo = mid; else hi = mid - 1;
    }
    const FillDesc& d = descs[lo];
    const int64_t k = (tile - d.tile_begin) * kThreads + threadIdx.x;
    if (k >= d.num_items) continue;
    switch (d.dtype) {
      case DType::Float: fill_item<float, false>(d, unused, k); break;
      case DType::Double: fill_item<double, false>(d, unused, k); break;
      case DType::Half: fill_item<at::Half, false>(d, unused, k); break;
      case DType::BFloat16: fill_item<at::BFloat16, false>(d, unused, k); break;
    }
  }
}

// ---- host side ---------------------------------------------------------------------------

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::Float;
    case at::kDouble: return DType::Double;
    case at::kHalf: return DType::Half;
    default: return DType::BFloat16;  // check_fill_target admits only these four
  }
}

FillDesc make_desc(const at::Tensor& t, FillKind kind, const double* params, uint64_t seed, int64_t stream,
                   int64_t offset) {
  FillDesc d{};
  d.data = t.data_ptr();
  d.numel = t.numel();
  d.offset = offset;
  d.dtype = dtype_of(t);
  const int64_t elems = item_elems(d.dtype);
  d.first_item = offset / elems;
  d.num_items = (offset + d.numel + elems - 1) / elems - d.first_item;
  d.f32 = make_sampler<float>(kind, params);
  d.f64 = make_sampler<double>(kind, params);
  d.key0 = static_cast<uint32_t>(seed);
  d.key1 = static_cast<uint32_t>(seed >> 32);
  d.stream0 = static_cast<uint32_t>(stream);
  d.stream1 = static_cast<uint32_t>(static_cast<uint64_t>(stream) >> 32);
  return d;
}

// Sizes and strides with size-1 dims dropped and dims merged where the outer one steps
// exactly over the inner one. Returns false if more than kMaxDims remain.
bool collapse_layout(const at::Tensor& t, StridedLayout& layout) {
  int64_t sizes[kMaxDims], strides[kMaxDims];  // innermost first while building
  int32_t n = 0;
  for (int64_t dim = t.dim() - 1; dim >= 0; --dim) {
    const int64_t size = t.size(dim), stride = t.stride(dim);
    if (size == 1) continue;
    if (n > 0 && stride == strides[n - 1] * sizes[n - 1]) {
      sizes[n - 1] *= size;
      continue;
    }
    if (n == kMaxDims) return false;
    sizes[n] = size;
    strides[n] = stride;
    ++n;
  }
  layout.ndim = n;
  for (int32_t i = 0; i < n; ++i) {  // outermost first, as strided_offset walks them
    layout.sizes[i] = sizes[n - 1 - i];
    layout.strides[i] = strides[n - 1 - i];
  }
  return true;
}

int64_t grid_size(int64_t num_tiles) {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return std::max<int64_t>(1, std::min<int64_t>(num_tiles, static_cast<int64_t>(sms) * kBlocksPerSm));
}

void check_not_capturing(cudaStream_t stream, const char* op) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  TORCH_CHECK(status == cudaStreamCaptureStatusNone, op,
              ": cannot be captured into a CUDA graph: the random key is read on the host when the fill is "
              "launched, so every replay of the graph would write the same numbers. Initialize the tensors "
              "before capturing (or outside torch.compile's CUDA graphs).");
}

template <bool kStrided>
void launch_one(const FillDesc& d, const StridedLayout& layout, cudaStream_t stream) {
  const int64_t num_tiles = (d.num_items + kThreads - 1) / kThreads;
  const auto grid = static_cast<unsigned int>(grid_size(num_tiles));
  switch (d.dtype) {
    case DType::Float: fill_one_kernel<float, kStrided><<<grid, kThreads, 0, stream>>>(d, layout); break;
    case DType::Double: fill_one_kernel<double, kStrided><<<grid, kThreads, 0, stream>>>(d, layout); break;
    case DType::Half: fill_one_kernel<at::Half, kStrided><<<grid, kThreads, 0, stream>>>(d, layout); break;
    case DType::BFloat16: fill_one_kernel<at::BFloat16, kStrided><<<grid, kThreads, 0, stream>>>(d, layout); break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Fills one tensor on the current stream (caller holds the device guard). Non-contiguous
// tensors are written through their strides; only a view with more than kMaxDims
// non-mergeable dims goes through a contiguous temporary.
void fill_tensor(const at::Tensor& t, FillKind kind, const double* params, uint64_t seed, int64_t stream,
                 int64_t offset, cudaStream_t cuda_stream) {
  if (t.numel() == 0) return;
  StridedLayout layout{};
  if (t.is_contiguous()) {
    launch_one<false>(make_desc(t, kind, params, seed, stream, offset), layout, cuda_stream);
  } else if (collapse_layout(t, layout)) {
    launch_one<true>(make_desc(t, kind, params, seed, stream, offset), layout, cuda_stream);
  } else {
    const at::Tensor tmp = at::empty(t.sizes(), t.options());
    launch_one<false>(make_desc(tmp, kind, params, seed, stream, offset), layout, cuda_stream);
    t.copy_(tmp);
  }
}

void fill_cuda(const at::Tensor& self, FillKind kind, const double* params, uint64_t key, int64_t stream,
               int64_t offset, const char* op) {
  const c10::cuda::CUDAGuard guard(self.device());
  const cudaStream_t cuda_stream = c10::cuda::getCurrentCUDAStream();
  check_not_capturing(cuda_stream, op);
  fill_tensor(self, kind, params, key, stream, offset, cuda_stream);
}

// Contiguous tensors go into one launch; their descriptor table travels to the device
// through a pinned buffer and an asynchronous copy on the current stream (the caching host
// allocator keeps the buffer alive until the copy has run). Non-contiguous tensors get their
// own strided launch; every tensor's values are the same either way.
void multi_fill_cuda(at::TensorList tensors, at::IntArrayRef kinds, at::ArrayRef<double> params,
                     const at::Tensor& seed, at::IntArrayRef streams) {
  const char* op = "initkit::multi_fill";
  const uint64_t key = check_multi_fill_args(tensors, kinds, params, seed, streams, op);
  if (tensors.empty()) return;
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const cudaStream_t cuda_stream = c10::cuda::getCurrentCUDAStream();
  check_not_capturing(cuda_stream, op);

  std::vector<FillDesc> descs;
  int64_t num_tiles = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    const FillKind kind = static_cast<FillKind>(kinds[i]);
    const double* p = params.data() + i * kNumFillParams;
    if (t.numel() == 0) continue;
    if (!t.is_contiguous()) {
      fill_tensor(t, kind, p, key, streams[i], 0, cuda_stream);
      continue;
    }
    FillDesc d = make_desc(t, kind, p, key, streams[i], 0);
    d.tile_begin = num_tiles;
    num_tiles += (d.num_items + kThreads - 1) / kThreads;
    descs.push_back(d);
  }
  if (descs.empty()) return;
  if (descs.size() == 1) {
    launch_one<false>(descs[0], StridedLayout{}, cuda_stream);
    return;
  }
  const auto bytes = static_cast<int64_t>(descs.size() * sizeof(FillDesc));
  at::Tensor host = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  std::memcpy(host.data_ptr(), descs.data(), bytes);
  at::Tensor table = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(tensors[0].device()));
  table.copy_(host, /*non_blocking=*/true);
  const auto grid = static_cast<unsigned int>(grid_size(num_tiles));
  fill_many_kernel<<<grid, kThreads, 0, cuda_stream>>>(static_cast<const FillDesc*>(table.const_data_ptr()),
                                                      static_cast<int32_t>(descs.size()), num_tiles);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(initkit, CUDA, m) {
  SingleFillOps<fill_cuda>::register_on(m);
  m.impl("multi_fill", &multi_fill_cuda);
}

}  // namespace initkit
