// Argument checks shared by the CPU and CUDA fill ops. Exception types follow what
// torch.nn.init raises for the same mistake (RuntimeError from tensor.uniform_/normal_),
// and every message names the op and the offending value.
#pragma once
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "fill_sampler.h"

namespace initkit {

inline void check_fill_target(const at::Tensor& t, const char* op) {
  const auto dtype = t.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": expected a float32, float64, float16 or bfloat16 tensor, got ", dtype);
  TORCH_CHECK(t.layout() == at::kStrided, op, ": expected a strided (dense) tensor, got layout ", t.layout());
  // Writing one random value per element is meaningless if elements share memory.
  at::assert_no_internal_overlap(t);
}

// torch's uniform_ range check (aten/src/ATen/native/DistributionTemplates.h): both ends
// finite in the dtype, and a width the dtype can hold (else every value rounds to garbage).
template <typename scalar_t>
void check_uniform_range(double from, double to, const char* op) {
  const auto lowest = static_cast<double>(std::numeric_limits<scalar_t>::lowest());
  const auto max = static_cast<double>(std::numeric_limits<scalar_t>::max());
  const auto dtype = c10::CppTypeToScalarType<scalar_t>::value;
  TORCH_CHECK(from >= lowest && from <= max, op, ": from is out of bounds for ", dtype, ", got ", from);
  TORCH_CHECK(to >= lowest && to <= max, op, ": to is out of bounds for ", dtype, ", got ", to);
  TORCH_CHECK(from <= to, op, ": expects a [low, high) range, but found low=", from, " > high=", to);
  TORCH_CHECK(to - from <= max, op, ": expects high - low <= the largest ", dtype, " (", max, "), but found high=", to,
              " and low=", from);
}

// torch.nn.init.trunc_normal_ samples every interval from uniform_(a, b) when the mean or std is
// not finite (and intervals of mass <= 0.3 otherwise), so it refuses what uniform_'s range check
// refuses; refused alike here. With a finite mean and std initkit samples any interval exactly (an
// infinite or out-of-range bound included) and refuses only one that holds no finite value of the
// dtype, which would fill +-inf (torch refuses those too, or fills inf or NaN).
template <typename scalar_t>
void check_trunc_normal_bounds(double mean, double std, double a, double b, const char* op) {
  if (!std::isfinite(mean) || !std::isfinite(std)) {
    check_uniform_range<scalar_t>(a, b, op);
  } else {
    const auto dtype = c10::CppTypeToScalarType<scalar_t>::value;
    TORCH_CHECK(a <= static_cast<double>(std::numeric_limits<scalar_t>::max()) &&
                    b >= static_cast<double>(std::numeric_limits<scalar_t>::lowest()),
                op, ": from is out of bounds for ", dtype, ": [a, b] = [", a, ", ", b, "] holds no finite ", dtype,
                " value");
  }
}

inline void check_fill_params(FillKind kind, const double* p, at::ScalarType dtype, const char* op) {
  switch (kind) {
    case FillKind::Uniform:
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "check_uniform_range",
                                      [&] { check_uniform_range<scalar_t>(p[0], p[1], op); });
      break;
    case FillKind::Normal:  // a non-finite mean or std fills what mean + std * z gives, as torch's normal_
      TORCH_CHECK(p[1] >= 0.0, op, ": expects std >= 0.0, but found std ", p[1]);
      break;
    case FillKind::TruncNormal:
      TORCH_CHECK(p[1] >= 0.0, op, ": expects std >= 0.0, but found std ", p[1]);
      TORCH_CHECK(p[2] <= p[3], op, ": expects bounds a <= b, but found a=", p[2], " > b=", p[3]);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "check_trunc_normal_bounds",
                                      [&] { check_trunc_normal_bounds<scalar_t>(p[0], p[1], p[2], p[3], op); });
      break;
    case FillKind::RawWords:
      TORCH_CHECK(dtype == at::kFloat, op, ": writes 32-bit words into a float32 tensor, got ", dtype);
      break;
    default:
      TORCH_CHECK_VALUE(false, op, ": unknown fill kind ", static_cast<int64_t>(kind));
  }
}

// The Philox key: a 0-dim (or one-element) int64 CPU tensor, so that torch.compile can trace
// the seed draw instead of breaking the graph on a Python int.
inline uint64_t seed_value(const at::Tensor& seed, const char* op) {
  TORCH_CHECK(seed.defined(), op, ": seed must be a one-element int64 CPU tensor (e.g. initkit.init.new_seed()), got None");
  TORCH_CHECK(seed.numel() == 1 && seed.scalar_type() == at::kLong && seed.device().is_cpu(), op,
              ": seed must be a one-element int64 CPU tensor, got ", seed.numel(), " elements of ",
              seed.scalar_type(), " on ", seed.device());
  return static_cast<uint64_t>(seed.item<int64_t>());
}

// multi_fill writes all its tensors in one parallel region: elements two of them share would be
// written from several threads at once, with values that depend on the schedule. Refused when
// torch can tell (at::get_overlap_status: full or partial overlap; its TooHard cases, interleaved
// strided views, pass as they pass torch's own in-place overlap checks). Sorted by storage, so
// only tensors of one storage are compared.
inline void check_no_shared_memory(at::TensorList tensors, const char* op) {
  std::vector<std::pair<const c10::StorageImpl*, size_t>> by_storage;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].numel() > 0 && tensors[i].has_storage())
      by_storage.emplace_back(tensors[i].storage().unsafeGetStorageImpl(), i);
  }
  std::sort(by_storage.begin(), by_storage.end());
  for (size_t k = 0; k < by_storage.size(); ++k) {
    for (size_t m = k + 1; m < by_storage.size() && by_storage[m].first == by_storage[k].first; ++m) {
      const auto status = at::get_overlap_status(tensors[by_storage[k].second], tensors[by_storage[m].second]);
      TORCH_CHECK(status != at::MemOverlapStatus::Full && status != at::MemOverlapStatus::Partial, op, ": tensors ",
                  by_storage[k].second, " and ", by_storage[m].second,
                  " share memory (fill each on its own, or clone() one of them)");
    }
  }
}

// Every argument of multi_fill; returns the key.
inline uint64_t check_multi_fill_args(at::TensorList tensors, at::IntArrayRef kinds, at::ArrayRef<double> params,
                                      const at::Tensor& seed, at::IntArrayRef streams, const char* op) {
  const size_t n = tensors.size();
  TORCH_CHECK_VALUE(kinds.size() == n && streams.size() == n &&
                        params.size() == n * static_cast<size_t>(kNumFillParams),
                    op, ": expected ", n, " kinds, ", n, " streams and ", n * kNumFillParams, " params for ", n,
                    " tensors, got ", kinds.size(), ", ", streams.size(), " and ", params.size());
  for (size_t i = 0; i < n; ++i) {
    TORCH_CHECK_VALUE(kinds[i] >= 0 && kinds[i] <= static_cast<int64_t>(FillKind::TruncNormal), op,
                      ": unknown fill kind ", kinds[i], " for tensor ", i);
    TORCH_CHECK(tensors[i].device() == tensors[0].device(), op, ": all tensors must be on one device, got ",
                tensors[0].device(), " and ", tensors[i].device());
    check_fill_target(tensors[i], op);
    check_fill_params(static_cast<FillKind>(kinds[i]), params.data() + i * kNumFillParams, tensors[i].scalar_type(), op);
  }
  check_no_shared_memory(tensors, op);
  return seed_value(seed, op);
}

}  // namespace initkit
