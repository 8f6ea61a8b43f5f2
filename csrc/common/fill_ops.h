// The single-tensor fill ops (uniform_fill, normal_fill, trunc_normal_fill, _philox_fill) of one backend,
// written once: each packs its parameters, runs the shared checks, reads the key and calls the
// backend's `fill(self, kind, params, key, stream, offset, op)`.
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>

#include "fill_checks.h"

namespace initkit {

using BackendFill = void (*)(const at::Tensor& self, FillKind kind, const double* params, uint64_t key,
                             int64_t stream, int64_t offset, const char* op);

template <BackendFill fill>
struct SingleFillOps {
  static void uniform(at::Tensor& self, double low, double high, const at::Tensor& seed, int64_t stream,
                      int64_t offset) {
    const double p[kNumFillParams] = {low, high, 0, 0};
    run(self, FillKind::Uniform, p, seed, stream, offset, "initkit::uniform_fill");
  }
  static void normal(at::Tensor& self, double mean, double std, const at::Tensor& seed, int64_t stream,
                     int64_t offset) {
    const double p[kNumFillParams] = {mean, std, 0, 0};
    run(self, FillKind::Normal, p, seed, stream, offset, "initkit::normal_fill");
  }
  static void trunc_normal(at::Tensor& self, double mean, double std, double a, double b, const at::Tensor& seed,
                           int64_t stream, int64_t offset) {
    const double p[kNumFillParams] = {mean, std, a, b};
    run(self, FillKind::TruncNormal, p, seed, stream, offset, "initkit::trunc_normal_fill");
  }

  static void philox_words(at::Tensor& self, const at::Tensor& seed, int64_t stream) {
    const double p[kNumFillParams] = {0, 0, 0, 0};
    run(self, FillKind::RawWords, p, seed, stream, 0, "initkit::_philox_fill");
  }

  // Registers the four single-tensor ops in the backend's TORCH_LIBRARY_IMPL block.
  static void register_on(torch::Library& m) {
    m.impl("uniform_fill", &uniform);
    m.impl("normal_fill", &normal);
    m.impl("trunc_normal_fill", &trunc_normal);
    m.impl("_philox_fill", &philox_words);
  }

 private:
  static void run(const at::Tensor& self, FillKind kind, const double* p, const at::Tensor& seed, int64_t stream,
                  int64_t offset, const char* op) {
    check_fill_target(self, op);
    check_fill_params(kind, p, self.scalar_type(), op);
    TORCH_CHECK_VALUE(offset >= 0, op, ": offset must be >= 0, got ", offset);
    TORCH_CHECK_VALUE(offset <= kMaxLogicalIndex - self.numel(), op, ": logical indices must stay below 2^56, got offset ",
                      offset, " for ", self.numel(), " elements");
    fill(self, kind, p, seed_value(seed, op), stream, offset, op);  // the seed is a CPU tensor: no device sync
  }
};

}  // namespace initkit
