// Fill kinds, their parameters and the per-element samplers, shared by CPU and CUDA.
//
// Counter mapping (the contract every backend follows, and what makes results independent
// of threads, chunking, grouping and device): an element with logical index i (row-major
// over the tensor's shape, plus the caller's `offset`) in stream `s` under key `seed` takes
// its random words from Philox4x32-10(counter = {lo32(g), hi32(g), lo32(s), hi32(s)},
// key = {lo32(seed), hi32(seed)}) with g = i / E:
//   float, half, bfloat16 (E = 4): element 4g+j uses word j; normals pair words (0,1), (2,3);
//   double (E = 2):                element 2g+j uses words (2j, 2j+1); a normal pair uses all 4.
// A wide truncated normal (acceptance >= 0.99) takes the normal that position as a normal fill
// would and, only where that falls outside [a, b], redraws: attempt k (1..255) of group g uses
// counter word 1 = hi32(g) | k << 24, which no first draw uses while logical indices stay below
// 2^56 (the ops check it). Narrower truncations use the exact inverse CDF on the word.
#pragma once
#include <cmath>
#include <cstdint>

#include "fill_math.h"

namespace initkit {

// The op schemas number the kinds 0..2; TruncNormalByRejection is chosen by make_sampler.
enum class FillKind : int64_t { Uniform = 0, Normal = 1, TruncNormal = 2, TruncNormalByRejection = 3 };
constexpr int64_t kNumFillParams = 4;  // uniform: low, high; normal: mean, std; trunc: mean, std, a, b
constexpr int64_t kMaxLogicalIndex = int64_t(1) << 56;
// Rejection from the untruncated normal costs one normal plus a rare scalar redraw; below this
// acceptance the exact inverse CDF is cheaper.
constexpr double kRejectionMinAcceptance = 0.99;
constexpr uint32_t kMaxRedraws = 255;

// The Philox key and the tensor's stream, as counter/key words.
struct StreamKey {
  uint32_t k0, k1, s0, s1;
};

template <typename acc_t>
struct Sampler {
  FillKind kind;
  acc_t shift;  // uniform: low  ; normal, trunc: mean
  acc_t scale;  // uniform: high - low ; normal, trunc: std
  acc_t lo;     // uniform: low (value used when rounding reaches `high`) ; trunc: a
  acc_t hi;     // uniform: high (exclusive) ; trunc: b
  acc_t p_low;  // trunc: Phi(alpha)
  acc_t q_high; // trunc: 1 - Phi(beta)
  acc_t width;  // trunc: Phi(beta) - Phi(alpha), computed without cancellation
};

inline double std_normal_cdf_upper(double x) { return 0.5 * std::erfc(x * 0.70710678118654752440); }

// Everything that depends only on the parameters is computed here once per tensor, in double.
template <typename acc_t>
Sampler<acc_t> make_sampler(FillKind kind, const double* p) {
  Sampler<acc_t> s{};
  s.kind = kind;
  if (kind == FillKind::Uniform) {
    s.shift = static_cast<acc_t>(p[0]);
    s.scale = static_cast<acc_t>(p[1] - p[0]);
    s.lo = static_cast<acc_t>(p[0]);
    s.hi = static_cast<acc_t>(p[1]);
  } else if (kind == FillKind::Normal) {
    s.shift = static_cast<acc_t>(p[0]);
    s.scale = static_cast<acc_t>(p[1]);
  } else {
    const double mean = p[0], std = p[1], a = p[2], b = p[3];
    s.shift = static_cast<acc_t>(mean);
    s.lo = static_cast<acc_t>(a);
    s.hi = static_cast<acc_t>(b);
    if (std == 0.0) {  // degenerate law: every sample is the clamped mean
      s.kind = FillKind::Uniform;
      const double v = std::fmin(std::fmax(mean, a), b);
      s.shift = s.lo = static_cast<acc_t>(v);
      s.scale = 0;
      s.hi = static_cast<acc_t>(INFINITY);
      return s;
    }
    s.scale = static_cast<acc_t>(std);
    const double alpha = (a - mean) / std, beta = (b - mean) / std;
    const double p_alpha = std_normal_cdf_upper(-alpha), q_alpha = std_normal_cdf_upper(alpha);
    const double p_beta = std_normal_cdf_upper(-beta), q_beta = std_normal_cdf_upper(beta);
    s.p_low = static_cast<acc_t>(p_alpha);
    s.q_high = static_cast<acc_t>(q_beta);
    // Subtract the two small tail masses on the side where they are small.
    const double width = alpha > 0 ? q_alpha - q_beta : p_beta - p_alpha;
    s.width = static_cast<acc_t>(width);
    if (width >= kRejectionMinAcceptance) s.kind = FillKind::TruncNormalByRejection;
  }
  return s;
}

// ---- float samplers (also used for half and bfloat16) --------------------------------------
INITKIT_HOST_DEVICE float sample_uniform(const Sampler<float>& s, uint32_t w) {
  const float x = s.shift + s.scale * unit_closed_open(w);
  return x < s.hi ? x : s.lo;  // rounding can reach `high`; keep the range half-open
}

// Box-Muller on one word pair.
INITKIT_HOST_DEVICE void sample_normal_pair(const Sampler<float>& s, uint32_t w0, uint32_t w1,
                                            float& x0, float& x1) {
  const float radius = sqrtf(-2.0f * log_positive(unit_open_closed(w0)));
  float sin_t, cos_t;
  sincos_two_pi(static_cast<float>(w1) * 0x1p-32f, sin_t, cos_t);
  x0 = s.shift + s.scale * (radius * cos_t);
  x1 = s.shift + s.scale * (radius * sin_t);
}

// Inverse CDF restricted to [Phi(alpha), Phi(beta)]. The word gives u and 1-u exactly (u(w)
// and u(~w)), so p = Phi(alpha) + u*width and 1-p = (1-Phi(beta)) + (1-u)*width are both
// accurate; the smaller one goes through the lower-half inverse CDF. No clamping of the
// distribution's mass happens: the final clamp only absorbs rounding at the bounds.
INITKIT_HOST_DEVICE float sample_trunc_normal(const Sampler<float>& s, uint32_t w) {
  const float p = s.p_low + unit_open_closed(w) * s.width;
  const float q = s.q_high + unit_open_closed(~w) * s.width;
  const bool lower = p < 0.5f;
  const float z_abs = ndtri_lower(lower ? p : q);
  const float z = lower ? z_abs : -z_abs;
  const float x = s.shift + s.scale * z;
  const float above = x < s.lo ? s.lo : x;
  return above > s.hi ? s.hi : above;
}

INITKIT_HOST_DEVICE PhiloxWords redraw_words(const StreamKey& key, uint64_t g, uint32_t attempt) {
  return philox4x32_10(static_cast<uint32_t>(g), static_cast<uint32_t>(g >> 32) | (attempt << 24), key.s0, key.s1,
                       key.k0, key.k1);
}

// Element 4g+j of a wide truncated normal whose first normal fell outside [a, b]: the first
// in-bounds normal of its redraws (position j of each redraw block).
INITKIT_HOST_DEVICE float redraw_trunc_normal(const Sampler<float>& s, const StreamKey& key, uint64_t g, int j) {
  PhiloxWords r{};
  for (uint32_t attempt = 1; attempt <= kMaxRedraws; ++attempt) {
    r = redraw_words(key, g, attempt);
    float x0, x1;
    sample_normal_pair(s, r.w[j & 2], r.w[(j & 2) + 1], x0, x1);
    const float x = (j & 1) ? x1 : x0;
    if (x >= s.lo && x <= s.hi) return x;
  }
  return sample_trunc_normal(s, r.w[j]);  // after 255 misses (P < 1e-500): the inverse CDF
}

// ---- double samplers ---------------------------------------------------------------------
INITKIT_HOST_DEVICE double sample_uniform(const Sampler<double>& s, uint32_t hi, uint32_t lo) {
  const double x = s.shift + s.scale * unit_closed_open(hi, lo);
  return x < s.hi ? x : s.lo;
}

INITKIT_HOST_DEVICE void sample_normal_pair(const Sampler<double>& s, const uint32_t* w, double& x0,
                                            double& x1) {
  const double radius = sqrt(-2.0 * log(unit_open_closed(w[0], w[1])));
  const double theta = 6.28318530717958647692 * unit_closed_open(w[2], w[3]);
  x0 = s.shift + s.scale * (radius * cos(theta));
  x1 = s.shift + s.scale * (radius * sin(theta));
}

INITKIT_HOST_DEVICE double sample_trunc_normal(const Sampler<double>& s, uint32_t hi, uint32_t lo) {
  const double p = s.p_low + unit_open_closed(hi, lo) * s.width;
  const double q = s.q_high + unit_open_closed(~hi, ~lo) * s.width;
  const double z = p < 0.5 ? ndtri_lower(p) : -ndtri_lower(q);
  const double x = s.shift + s.scale * z;
  return fmin(fmax(x, s.lo), s.hi);
}

// Element 2g+j of a wide truncated normal (double), as the float version.
INITKIT_HOST_DEVICE double redraw_trunc_normal(const Sampler<double>& s, const StreamKey& key, uint64_t g, int j) {
  PhiloxWords r{};
  for (uint32_t attempt = 1; attempt <= kMaxRedraws; ++attempt) {
    r = redraw_words(key, g, attempt);
    double x0, x1;
    sample_normal_pair(s, r.w, x0, x1);
    const double x = j ? x1 : x0;
    if (x >= s.lo && x <= s.hi) return x;
  }
  return sample_trunc_normal(s, r.w[2 * j], r.w[2 * j + 1]);
}

}  // namespace initkit
