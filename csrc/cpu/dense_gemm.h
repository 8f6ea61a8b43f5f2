// The CPU GEMM of the dense ops: c [M, N] = a [M, K] @ b [N, K].T (+ bias), a and b any strides,
// on the fastest of three engines, chosen per shape by measurement:
//   - MKL (at::addmm / at::mm), what eager F.linear runs;
//   - oneDNN's inner product (torch's mkldnn::_linear_pointwise op, reached through the
//     dispatcher: no new dependency; absent or disabled -> not used). On AVX-512 Xeons it runs
//     up to 2x MKL's float32 FLOP rate (issue 10), but costs ~10 us more per call and loses at
//     some small and skinny shapes;
//   - initkit's own float32 kernel for AVX-512 or AVX2 (dense_kernel.h: packed panels, a 6x32 register
//     tile), which wins where the other two spend more on fixed per-call costs than on FLOPs.
// No engine wins everywhere. The rule: shapes with fewer than kCalibrateMinMacs multiply-adds go
// to MKL (oneDNN's fixed cost per call is larger than the whole GEMM there); for the others, the
// first call of each (M, N, K, dtype, strides, bias, threads) times every usable engine on its own
// data (calibrate() below: interleaved rounds, each engine's fastest run, a re-timing on near ties, MKL kept unless
// beaten by a margin), keeps the winner for the process and returns the winner's result. Measured,
// not guessed: which engine wins depends on the shape, the operand strides (backward passes
// transposed views) and the CPU, and differs between forward and backward at the same layer size
// (issue 10). INITKIT_CPU_GEMM=mkl, =onednn or =initkit pins one
// engine where it can run (e.g. for bit-identical results across processes: the engines round
// differently).
//
// No oneDNN ReLU post-op: its eltwise ReLU maps NaN to 0 (F.relu keeps NaN), so MKL's and oneDNN's
// outputs are clamped after the GEMM; initkit's kernel clamps in its stores.
//
// Packed weights (inference): when the caller allows it (PackWeightsGuard, set by the autograd
// layer only when no graph is recorded), b is reordered once into the engine's layout (oneDNN's
// blocked layout by mkldnn::_reorder_linear_weight, or initkit's panels) and reused while its TensorImpl, data pointer and version
// counter are unchanged; a changed weight repacks. Memory: one extra copy of each packed weight
// (same dtype and size, plus oneDNN's block padding) for as long as the weight lives (entries
// hold weak references; at most kMaxPacked are kept). A write that bypasses the version counter
// (through `.data`) is not seen: as for any cached derived tensor in torch.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/intrusive_ptr.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "dense_kernel.h"
#include "multiversion.h"

namespace initkit {
namespace cpu {

constexpr int64_t kCalibrateMinMacs = 1 << 16;
constexpr size_t kMaxPacked = 256;

enum class Engine : uint8_t { kMkl, kOneDnn, kOwn };
constexpr int kEngines = 3;

// Set while the autograd layer runs an op without recording a graph: weights may be packed.
inline bool& pack_weights_allowed() {
  thread_local bool allowed = false;
  return allowed;
}

struct PackWeightsGuard {
  explicit PackWeightsGuard(bool allow) : previous_(pack_weights_allowed()) { pack_weights_allowed() = allow; }
  ~PackWeightsGuard() { pack_weights_allowed() = previous_; }
  PackWeightsGuard(const PackWeightsGuard&) = delete;
  PackWeightsGuard& operator=(const PackWeightsGuard&) = delete;

 private:
  bool previous_;
};

using LinearPointwiseSig = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                      c10::string_view, c10::List<std::optional<at::Scalar>>,
                                      std::optional<c10::string_view>);
using ReorderWeightSig = at::Tensor(const at::Tensor&, std::optional<int64_t>);

template <typename Sig>
std::optional<c10::TypedOperatorHandle<Sig>> find_op(const char* name) {
  const auto handle = c10::Dispatcher::singleton().findSchema({name, ""});
  if (!handle.has_value() || !handle->hasKernelForDispatchKey(c10::DispatchKey::CPU)) return std::nullopt;
  try {
    return handle->template typed<Sig>();
  } catch (const c10::Error&) {  // a torch whose kernel has another C++ signature: MKL only
    return std::nullopt;
  }
}

inline const std::optional<c10::TypedOperatorHandle<LinearPointwiseSig>>& linear_pointwise_op() {
  static const auto op = find_op<LinearPointwiseSig>("mkldnn::_linear_pointwise");
  return op;
}

inline const std::optional<c10::TypedOperatorHandle<ReorderWeightSig>>& reorder_weight_op() {
  static const auto op = find_op<ReorderWeightSig>("mkldnn::_reorder_linear_weight");
  return op;
}

// INITKIT_CPU_GEMM: "mkl", "onednn" or unset/"auto".
inline std::optional<Engine> pinned_engine() {
  static const std::optional<Engine> pinned = []() -> std::optional<Engine> {
    const char* env = std::getenv("INITKIT_CPU_GEMM");
    if (env == nullptr) return std::nullopt;
    if (std::strcmp(env, "mkl") == 0) return Engine::kMkl;
    if (std::strcmp(env, "onednn") == 0) return Engine::kOneDnn;
    if (std::strcmp(env, "initkit") == 0) return Engine::kOwn;
    return std::nullopt;
  }();
  return pinned;
}

// torch's own test whether oneDNN runs a 16-bit type on this CPU (mkldnn::_is_mkldnn_{bf16,fp16}_supported):
// its float16 linear needs AVX512-FP16 or AVX-NE-CONVERT and throws without them (AMD Zen 5 has
// neither). Absent from a torch build: not usable.
inline bool onednn_supports(const char* check) {
  const auto handle = c10::Dispatcher::singleton().findSchema({check, ""});
  if (!handle.has_value()) return false;
  try {
    return handle->typed<bool()>().call();
  } catch (const c10::Error&) {
    return false;
  }
}

inline bool onednn_usable(const at::Tensor& a, const at::Tensor& b) {
  static const bool bf16 = onednn_supports("mkldnn::_is_mkldnn_bf16_supported");
  static const bool fp16 = onednn_supports("mkldnn::_is_mkldnn_fp16_supported");
  const auto dtype = a.scalar_type();
  return (dtype == at::kFloat || (dtype == at::kBFloat16 && bf16) || (dtype == at::kHalf && fp16)) &&
         a.size(0) > 0 && a.size(1) > 0 && b.size(0) > 0 && linear_pointwise_op().has_value() &&
         at::globalContext().userEnabledMkldnn();
}

// ---- packed weights ------------------------------------------------------------------------

struct PackedWeight {
  c10::weak_intrusive_ptr<c10::TensorImpl> owner;
  Engine engine;
  const void* data;
  int64_t version;
  std::vector<int64_t> sizes;  // `w.data = other` keeps the TensorImpl and the version, not the shape
  at::Tensor packed;
};

inline std::mutex& pack_mutex() {
  static std::mutex m;
  return m;
}

inline std::vector<PackedWeight>& pack_cache() {
  static std::vector<PackedWeight> cache;
  return cache;
}

// The packed form of weight b [N, K] for `engine` (made by pack(b)), or an undefined tensor when b
// cannot be tracked.
template <typename Pack>
at::Tensor packed_weight(const at::Tensor& b, Engine engine, Pack pack) {
  if (!pack_weights_allowed() || b.is_inference() || !b.is_contiguous()) return {};
  const int64_t version = b._version();
  const void* data = b.data_ptr();
  std::lock_guard<std::mutex> lock(pack_mutex());
  auto& cache = pack_cache();
  for (auto it = cache.begin(); it != cache.end();) {
    if (it->owner.expired()) {
      it = cache.erase(it);
      continue;
    }
    if (it->owner._unsafe_get_target() == b.unsafeGetTensorImpl() && it->engine == engine) {
      if (it->data == data && it->version == version && it->packed.scalar_type() == b.scalar_type() &&
          b.sizes().equals(it->sizes))
        return it->packed;
      it = cache.erase(it);  // the weight changed: repack below
      continue;
    }
    ++it;
  }
  at::Tensor packed = pack(b);
  if (cache.size() >= kMaxPacked) cache.erase(cache.begin());
  cache.push_back({c10::weak_intrusive_ptr<c10::TensorImpl>(b.getIntrusivePtr()), engine, data, version, b.sizes().vec(),
                   packed});
  return packed;
}

// ---- the ReLU epilogue of MKL and oneDNN ------------------------------------------------------

constexpr int64_t kReluGrain = 32768;  // elements per task of the clamp

// max(v, 0) in place over n contiguous values; NaN stays NaN. The store is unconditional so the
// loop vectorizes (a conditional store stays a mispredicted branch per element).

INITKIT_MULTIVERSION inline void relu_span(float* data, int64_t n) {
  for (int64_t i = 0; i < n; ++i) data[i] = data[i] < 0.0f ? 0.0f : data[i];
}

INITKIT_MULTIVERSION inline void relu_span(double* data, int64_t n) {
  for (int64_t i = 0; i < n; ++i) data[i] = data[i] < 0.0 ? 0.0 : data[i];
}

inline void relu_inplace(at::Tensor& t) {
  if (t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16) {
    t.relu_();  // ATen's vectorized 16-bit ReLU (also keeps NaN); the scalar loop converts per element
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "initkit_relu_cpu", [&] {
    scalar_t* const data = t.data_ptr<scalar_t>();
    at::parallel_for(0, t.numel(), kReluGrain,
                     [data](int64_t begin, int64_t end) { relu_span(data + begin, end - begin); });
  });
}

// ---- the three engines ------------------------------------------------------------------------

inline at::Tensor gemm_mkl(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias, bool relu) {
  at::Tensor out = bias.has_value() && bias->defined() ? at::addmm(*bias, a, b.t()) : at::mm(a, b.t());
  if (relu) relu_inplace(out);
  return out;
}

inline at::Tensor gemm_onednn(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias, bool relu) {
  const at::Tensor packed = reorder_weight_op().has_value() ? packed_weight(b, Engine::kOneDnn, [&](const at::Tensor& w) {
    return reorder_weight_op()->call(w, a.size(0));
  }) : at::Tensor();
  at::Tensor out = linear_pointwise_op()->call(a, packed.defined() ? packed : b, bias, "none", {std::nullopt}, std::nullopt);
  if (relu) relu_inplace(out);
  return out;
}

inline at::Tensor gemm_own(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias, bool relu) {
  at::Tensor panels = packed_weight(b, Engine::kOwn, pack_gemm_panels);
  if (!panels.defined()) panels = pack_gemm_panels(b);
  return own_gemm(a, panels, b.size(0), bias, relu);
}

inline at::Tensor gemm_with(Engine engine, const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias,
                            bool relu) {
  switch (engine) {
    case Engine::kOneDnn: return gemm_onednn(a, b, bias, relu);
    case Engine::kOwn: return gemm_own(a, b, bias, relu);
    default: return gemm_mkl(a, b, bias, relu);
  }
}

inline bool engine_usable(Engine engine, const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias) {
  switch (engine) {
    case Engine::kOneDnn: return onednn_usable(a, b);
    case Engine::kOwn: return own_gemm_usable(a, b, bias);
    default: return true;
  }
}

// ---- the per-shape choice ------------------------------------------------------------------

// (M, N, K, dtype, a contiguous, b contiguous, bias, weights packable, threads). Packable (inference)
// and training calls differ: only the former reuse packed weights.
using GemmKey = std::tuple<int64_t, int64_t, int64_t, int, bool, bool, bool, bool, int>;

struct GemmKeyHash {
  size_t operator()(const GemmKey& k) const {
    size_t h = 0;
    const auto mix = [&h](size_t v) { h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); };
    mix(std::get<0>(k)), mix(std::get<1>(k)), mix(std::get<2>(k)), mix(std::get<3>(k));
    mix(std::get<4>(k)), mix(std::get<5>(k)), mix(std::get<6>(k)), mix(std::get<7>(k)), mix(std::get<8>(k));
    return h;
  }
};

inline std::mutex& choice_mutex() {
  static std::mutex m;
  return m;
}

inline std::unordered_map<GemmKey, Engine, GemmKeyHash>& choices() {
  static std::unordered_map<GemmKey, Engine, GemmKeyHash> table;
  return table;
}

// The calibration of one shape, on this call's own data. Each usable engine runs once first (oneDNN
// creates its primitive, the own kernel packs its panels); then the engines are timed in rounds,
// interleaved, the order rotating each round, and each engine's fastest run is kept: load on the
// shared machine only adds time, so the minimum is the estimate of an engine's own speed that a
// burst of load cannot flip (with medians of 3 runs, a burst during two of one engine's runs
// decides: one benchmark run here gave 4096x1024 forward+backward 1.23x eager instead of the usual
// 1.8x, as if a backward GEMM had stayed on MKL at half oneDNN's speed). Rounds: as many as fit in
// kCalibrationBudgetS, between kMinRounds and kMaxRounds; where one round alone exceeds the budget
// (large shapes, a GEMM takes milliseconds) the first run counts as a sample too. When the two
// fastest engines are within kRetimeMargin (and the rounds took under kRetimeBudgetS) the same
// number of rounds is timed again. A winner other than MKL (eager F.linear's engine) must beat
// MKL by kSwitchMargin: a near tie goes to MKL, so a noisy calibration cannot leave the op slower
// than eager. Cost, once per shape and pass: 2 x kCalibrationBudgetS (20 ms) at most for small and
// medium GEMMs (measured 10-12 ms at 32x256 and 64x256), otherwise kMinRounds calls of each engine
// (x2 on a near tie below kRetimeBudgetS): about 9-18 calls of the GEMM, e.g. 0.14 s at 256x1024
// on the loaded 2-core VM.
constexpr int kMinRounds = 3;
constexpr int kMaxRounds = 15;
constexpr double kCalibrationBudgetS = 0.02;
constexpr double kRetimeMargin = 0.05;
constexpr double kRetimeBudgetS = 0.1;  // no re-timing after rounds this long (seconds of GEMMs)
constexpr double kSwitchMargin = 0.03;

// `run(e)` computes the result with candidate e (of kEngines; usable[e] says which take part);
// `fallback` plays MKL's part. Returns the winner, its result in *result.
template <typename Run>
int calibrate_choice(const bool (&usable)[kEngines], Run run, int fallback, at::Tensor* winner_result) {
  std::vector<double> samples[kEngines];
  at::Tensor result[kEngines];
  int order[kEngines], count = 0;
  for (int e = 0; e < kEngines; ++e)
    if (usable[e]) order[count++] = e;
  const auto timed = [&](int e) {
    const auto start = std::chrono::steady_clock::now();
    result[e] = run(e);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  double round_s = 0;
  double first[kEngines] = {};
  for (int i = 0; i < count; ++i) round_s += first[order[i]] = timed(order[i]);
  int rounds = static_cast<int>(kCalibrationBudgetS / std::max(round_s, 1e-9));
  if (rounds < kMinRounds) {  // a GEMM of milliseconds: the first run is a sample (its setup cost is noise)
    for (int i = 0; i < count; ++i) samples[order[i]].push_back(first[order[i]]);
    rounds = kMinRounds - 1;
  }
  rounds = std::min(rounds, kMaxRounds);
  double fastest[kEngines];
  const auto time_rounds = [&](int n) {
    for (int r = 0; r < n; ++r) {
      std::rotate(order, order + 1, order + count);
      for (int i = 0; i < count; ++i) samples[order[i]].push_back(timed(order[i]));
    }
    for (int e = 0; e < kEngines; ++e)
      fastest[e] = usable[e] ? *std::min_element(samples[e].begin(), samples[e].end())
                             : std::numeric_limits<double>::infinity();
    int best = static_cast<int>(std::min_element(fastest, fastest + kEngines) - fastest);
    double second = std::numeric_limits<double>::infinity();
    for (int e = 0; e < kEngines; ++e)
      if (e != best) second = std::min(second, fastest[e]);
    return std::make_pair(best, second);
  };
  const auto start = std::chrono::steady_clock::now();
  auto [best, second] = time_rounds(std::max(rounds, 1));
  const double spent = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (second < fastest[best] * (1 + kRetimeMargin) && spent < kRetimeBudgetS)
    std::tie(best, second) = time_rounds(std::max(rounds, 1));
  if (best != fallback && fastest[best] * (1 + kSwitchMargin) > fastest[fallback]) best = fallback;
  *winner_result = result[best];
  return best;
}

inline at::Tensor calibrate(const bool (&usable)[kEngines], const at::Tensor& a, const at::Tensor& b,
                            const std::optional<at::Tensor>& bias, bool relu, Engine* winner) {
  at::Tensor result;
  const auto run = [&](int e) { return gemm_with(static_cast<Engine>(e), a, b, bias, relu); };
  *winner = static_cast<Engine>(calibrate_choice(usable, run, static_cast<int>(Engine::kMkl), &result));
  return result;
}

// c = relu?(a @ b.T (+ bias)) on the chosen engine; contiguous [M, N] output.
inline at::Tensor gemm_nt(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias_arg,
                          bool relu) {
  // A strided bias (a view with steps) made contiguous once: oneDNN's inner product ignores the
  // bias strides, and the engine chosen for a shape must suit every call of that shape.
  const std::optional<at::Tensor> bias =
      bias_arg.has_value() && bias_arg->defined() && !bias_arg->is_contiguous() ? bias_arg->contiguous() : bias_arg;
  bool usable[kEngines];
  int candidates = 0;
  for (int e = 0; e < kEngines; ++e) candidates += usable[e] = engine_usable(static_cast<Engine>(e), a, b, bias);
  if (candidates == 1) return gemm_mkl(a, b, bias, relu);
  if (const auto pinned = pinned_engine()) return gemm_with(usable[static_cast<int>(*pinned)] ? *pinned : Engine::kMkl, a, b, bias, relu);
  const int64_t m = a.size(0), n = b.size(0), k = a.size(1);
  const double macs = static_cast<double>(m) * n * k;
  if (macs < kCalibrateMinMacs) return gemm_mkl(a, b, bias, relu);
  const GemmKey key{m, n, k, static_cast<int>(a.scalar_type()), a.is_contiguous(), b.is_contiguous(),
                    bias.has_value() && bias->defined(), pack_weights_allowed(), at::get_num_threads()};
  {
    std::lock_guard<std::mutex> lock(choice_mutex());
    const auto it = choices().find(key);
    // (torch.backends.mkldnn may have been switched off since the shape was measured.)
    if (it != choices().end()) {
      return gemm_with(usable[static_cast<int>(it->second)] ? it->second : Engine::kMkl, a, b, bias, relu);
    }
  }
  Engine winner = Engine::kMkl;
  at::Tensor result = calibrate(usable, a, b, bias, relu, &winner);
  {
    std::lock_guard<std::mutex> lock(choice_mutex());
    choices().emplace(key, winner);
  }
  return result;
}

}  // namespace cpu
}  // namespace initkit
