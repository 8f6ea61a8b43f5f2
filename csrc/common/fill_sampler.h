// Fill kinds, their parameters and the per-element samplers, shared by CPU and CUDA: the
// sample_lanes functions at the end are the one place that decides what each kind samples.
//
// Counter mapping (the contract every backend follows, and what makes results independent
// of threads, chunking, grouping and device): an element with logical index i (row-major
// over the tensor's shape, plus the caller's `offset`) in stream `s` under key `seed` takes
// its random words from block_words(g, attempt 0) = Philox4x32-10(counter = {lo32(g), hi32(g),
// lo32(s), hi32(s)}, key = {lo32(seed), hi32(seed)}) with g = i / E:
//   float, half, bfloat16 (E = 4): element 4g+j uses word j; normals pair words (0,1), (2,3);
//   double (E = 2):                element 2g+j uses words (2j, 2j+1); a normal pair uses all 4.
// Draws beyond the first use block_words(g, attempt) with attempt 1..255 in the top byte of
// counter word 1, which no first draw uses while logical indices stay below 2^56 (the ops
// check it). The truncated normal picks its algorithm per call from (mean, std, a, b) in
// make_sampler; every choice is exact:
//   TruncNormalByRejection (acceptance >= kRejectionMinAcceptance): the normal a normal fill
//     would write there; where it falls outside [a, b], the first in-bounds normal of blocks
//     1, 2, ... at the same position.
//   TruncNormal: the inverse CDF on the element's word, where float/double resolve the law.
//   TruncNormalUniformProposal (narrow intervals) and TruncNormalExpProposal (intervals in one
//     tail, Robert 1995): attempt k proposes from block 2k and accepts with block 2k+1 (same
//     position), so element 4g+j's value depends only on its own words.
#pragma once
#include <cmath>
#include <cstdint>

#include "fill_math.h"

namespace initkit {

// The op schemas number the kinds 0..2; the other truncated normal algorithms are chosen by
// make_sampler.
enum class FillKind : int64_t {
  Uniform = 0,
  Normal = 1,
  TruncNormal = 2,  // by the inverse CDF
  TruncNormalByRejection = 3,
  TruncNormalUniformProposal = 4,
  TruncNormalExpProposal = 5,
  RawWords = 6,  // the generator floor (op _philox_fill): Philox words stored as float32 bits
};
constexpr int64_t kNumFillParams = 4;  // uniform: low, high; normal: mean, std; trunc: mean, std, a, b
constexpr int64_t kMaxLogicalIndex = int64_t(1) << 56;
// Rejection from the untruncated normal costs one normal plus, for the rejected fraction, redraws
// (on the CPU batched 32 or 64 lanes at a time, each a whole Philox block): below this acceptance the
// exact inverse CDF is cheaper. Measured on one core: +-1.3 std (acceptance 0.81) by rejection
// takes 0.8x the inverse CDF's time in float32, 0.9x in float64; +-1 std (0.68) 1.35x in float32.
constexpr double kRejectionMinAcceptance = 0.8;
// Narrow intervals: the uniform proposal from this acceptance up (exact in the dtype's own grid,
// where the inverse CDF's grid of p values would show).
constexpr double kUniformProposalMinAcceptance = 0.9;
constexpr uint32_t kMaxAttempts = 255;  // blocks per position beyond the first

// The Philox key (63-bit seeds) and the tensor's stream, as counter/key words.
struct StreamKey {
  uint32_t k0, k1, s0, s1;
};

// Block `attempt` of group g: attempt 0 is the first draw, 1..255 the redraws.
INITKIT_HOST_DEVICE PhiloxWords block_words(const StreamKey& key, uint64_t g, uint32_t attempt) {
  return philox4x32_10(static_cast<uint32_t>(g), static_cast<uint32_t>(g >> 32) | (attempt << 24), key.s0, key.s1,
                       key.k0, key.k1);
}

template <typename acc_t>
struct Sampler {
  FillKind kind;
  acc_t shift;  // uniform: low  ; normal, trunc: mean
  acc_t scale;  // uniform: high - low ; normal, trunc: std
  acc_t lo;     // uniform: low (value used when rounding reaches `high`) ; trunc: a
  acc_t hi;     // uniform: high (exclusive) ; trunc: b
  acc_t p_low;  // inverse CDF: Phi(alpha)
  acc_t q_high; // inverse CDF: 1 - Phi(beta)
  acc_t width;  // inverse CDF: Phi(beta) - Phi(alpha), computed without cancellation
  // Proposals. Uniform: x = origin + span * u, accepted if 2E > zm (zm + m2) with zm = (x - near) / std
  // (near = the point of [a, b] closest to the mean, m2 = 2 (near - mean) / std, E ~ Exp(1)).
  // Exponential (standardized one-sided interval [al, be], al >= 0, mirrored by `side`):
  // d = -log(q + u (1 - q)) / lambda, q = exp(-lambda (be - al)), accepted if
  // 2E > (d + delta)^2 - c with delta = al - lambda, c = (min(lambda, be) - lambda)^2; x = origin + side std d.
  acc_t origin, span, near, m2, lambda, q, delta, c, side;
};

inline double std_normal_cdf_upper(double x) { return 0.5 * std::erfc(x * 0.70710678118654752440); }

// Mills ratio Q(x) / phi(x) for x >= 0, without underflow in the far tail.
inline double mills_ratio(double x) {
  if (x < 8.0) return 1.25331413731550025121 * std::erfc(x * 0.70710678118654752440) * std::exp(0.5 * x * x);
  double f = x;  // continued fraction x + 1/(x + 2/(x + 3/(x + ...)))
  for (int k = 60; k >= 1; --k) f = x + k / f;
  return 1.0 / f;
}

// Whether the inverse CDF in acc_t gives the law rounded to acc_t on [alpha, beta]: the
// smaller-side probabilities stay far above acc_t's underflow; the absolute error of z (about
// eps * Q(z) / phi(z) <= 1.25 eps) is below 2^-12 of the interval; and, in float, the interval
// reaches within 3 of the mean: further out the few-ulp error of z itself (|z| > 3) would pile
// up values on some float cells of the steep tail, where the exponential proposal rounds cleanly.
template <typename acc_t>
bool inverse_cdf_resolves(double alpha, double beta, double mass) {
  const bool single = sizeof(acc_t) == 4;
  const double eps = single ? 0x1p-24 : 0x1p-53;
  const double nearest = alpha > 0 ? alpha : beta < 0 ? -beta : 0.0;
  return mass >= (single ? 1e-20 : 1e-280) && beta - alpha >= 0x1p12 * 1.25 * eps && (!single || nearest <= 3.0);
}

// Narrow and far-tail truncations (see make_sampler): a uniform proposal on [a, b], or an
// exponential proposal from the bound nearer the mean (intervals in one tail).
template <typename acc_t>
void set_proposal(Sampler<acc_t>& s, double mean, double a, double b, double alpha, double beta, double mass,
                  bool inverse_cdf_ok) {
  const double m = alpha > 0 ? alpha : beta < 0 ? beta : 0.0;  // the point of [alpha, beta] nearest 0
  s.kind = FillKind::TruncNormalUniformProposal;
  s.origin = static_cast<acc_t>(a);
  s.span = static_cast<acc_t>(b - a);
  s.near = static_cast<acc_t>(alpha > 0 ? a : beta < 0 ? b : mean);
  s.m2 = static_cast<acc_t>(2.0 * m);
  // Acceptances: uniform mass / ((beta - alpha) phi(m)); exponential with Robert's rate for
  // [al, inf), computed relative to phi(al) so that far tails do not underflow.
  const double al = alpha > 0 ? alpha : -beta, be = alpha > 0 ? beta : -alpha;  // one-sided: al > 0
  const double lambda = 0.5 * (al + std::sqrt(al * al + 4.0));
  double accept_uniform = mass / ((beta - alpha) * 0.39894228040143267794), accept_exp = 0.0;
  if (m != 0.0) {
    const double tail = std::isinf(be) ? 0.0 : mills_ratio(be) * std::exp(-0.5 * (be - al) * (be + al));
    const double mass_over_phi = mills_ratio(al) - tail;
    accept_uniform = mass_over_phi / (be - al);
    const double top = std::fmin(lambda, be) - lambda;
    const double q = std::exp(-lambda * (be - al));
    // The exponential's inverse CDF runs on q + u (1 - q): it needs 1 - q well above acc_t's epsilon.
    if (lambda * (be - al) >= 0.5)
      accept_exp = mass_over_phi * lambda / ((1.0 - q) * std::exp(0.5 * (lambda - al) * (lambda - al) - 0.5 * top * top));
    s.lambda = static_cast<acc_t>(lambda);
    s.q = static_cast<acc_t>(q);
    s.delta = static_cast<acc_t>(al - lambda);
    s.c = static_cast<acc_t>(top * top);
  }
  if (accept_uniform >= kUniformProposalMinAcceptance) return;
  if (inverse_cdf_ok) {
    s.kind = FillKind::TruncNormal;
  } else if (accept_exp > accept_uniform) {
    s.kind = FillKind::TruncNormalExpProposal;
    s.origin = static_cast<acc_t>(alpha > 0 ? a : b);
    s.side = static_cast<acc_t>(alpha > 0 ? 1.0 : -1.0);
  }
}

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
  } else if (kind != FillKind::RawWords) {
    const double mean = p[0], std = p[1], a = p[2], b = p[3];
    if (std::isinf(std) || std::isnan(mean)) {
      // U(a, b) (the checks leave only finite bounds here): the law's limit as std -> inf, and for
      // a NaN mean or an infinite mean and std, which have none, what torch.nn.init.trunc_normal_ gives.
      s.kind = FillKind::Uniform;
      s.shift = s.lo = static_cast<acc_t>(a);
      s.scale = static_cast<acc_t>(b - a);
      s.hi = static_cast<acc_t>(b);
      return s;
    }
    s.shift = static_cast<acc_t>(mean);
    s.lo = static_cast<acc_t>(a);
    s.hi = static_cast<acc_t>(b);
    const double alpha = (a - mean) / std, beta = (b - mean) / std;
    if (std == 0.0 || !(beta > alpha)) {  // degenerate law (std 0, a == b or an infinite mean): the clamped mean
      s.kind = FillKind::Uniform;
      const double v = std::fmin(std::fmax(mean, a), b);
      s.shift = s.lo = static_cast<acc_t>(v);
      s.scale = 0;
      s.hi = static_cast<acc_t>(INFINITY);
      return s;
    }
    s.scale = static_cast<acc_t>(std);
    const double p_alpha = std_normal_cdf_upper(-alpha), q_alpha = std_normal_cdf_upper(alpha);
    const double p_beta = std_normal_cdf_upper(-beta), q_beta = std_normal_cdf_upper(beta);
    s.p_low = static_cast<acc_t>(p_alpha);
    s.q_high = static_cast<acc_t>(q_beta);
    // Subtract the two small tail masses on the side where they are small.
    const double width = alpha > 0 ? q_alpha - q_beta : p_beta - p_alpha;
    s.width = static_cast<acc_t>(width);
    if (width >= kRejectionMinAcceptance) {
      // Bounds beyond every value the normal samplers produce (|z| <= sqrt(-2 log u_min): 6.77 for
      // float's u >= 2^-33, 8.66 for double's u >= 2^-54; fma and the rounding are monotone in z): no
      // normal is ever rejected, so this is the normal fill, without the bounds checks (same values).
      const acc_t z_max = sizeof(acc_t) == 4 ? 7 : 9;
      const bool inside = std::fma(s.scale, -z_max, s.shift) >= s.lo && std::fma(s.scale, z_max, s.shift) <= s.hi;
      s.kind = inside ? FillKind::Normal : FillKind::TruncNormalByRejection;
    } else {
      set_proposal(s, mean, a, b, alpha, beta, width, inverse_cdf_resolves<acc_t>(alpha, beta, width));
    }
  }
  return s;
}

// ---- float samplers (also used for half and bfloat16) --------------------------------------
INITKIT_HOST_DEVICE float sample_uniform(const Sampler<float>& s, uint32_t w) {
  const float x = s.shift + s.scale * unit_closed_open(w);
  return x < s.hi ? x : s.lo;  // rounding can reach `high`; keep the range half-open
}

// Box-Muller on one word pair. (cpu/fill_simd.h's avx512::normal_pair and avx2::normal_pairs repeat
// these operations, and those of log_positive and sincos_two_pi, in intrinsics: change all three or
// the CPU's bits split; a test compares every kernel level the CPU has.)
INITKIT_HOST_DEVICE void sample_normal_pair(const Sampler<float>& s, uint32_t w0, uint32_t w1,
                                            float& x0, float& x1) {
  const float radius = sqrtf(-2.0f * log_positive(unit_open_closed(w0)));
  float sin_t, cos_t;
  sincos_two_pi(w1, sin_t, cos_t);
  x0 = fmaf(s.scale, radius * cos_t, s.shift);
  x1 = fmaf(s.scale, radius * sin_t, s.shift);
}

// The normal at position j (0..3) of a group from that group's block words: the pair (0, 1) or
// (2, 3), first or second value. Branch-free, so lanes with different j vectorize together.
INITKIT_HOST_DEVICE float normal_at(const Sampler<float>& s, uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3,
                                    uint32_t j) {
  const bool second_pair = (j & 2u) != 0;
  float x0, x1;
  sample_normal_pair(s, second_pair ? w2 : w0, second_pair ? w3 : w1, x0, x1);
  return (j & 1u) ? x1 : x0;
}

INITKIT_HOST_DEVICE float clamp_to_bounds(const Sampler<float>& s, float x) {
  const float above = x < s.lo ? s.lo : x;
  return above > s.hi ? s.hi : above;
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
  return clamp_to_bounds(s, s.shift + s.scale * z);
}

// Proposal from word w, accepted with word e (see Sampler): false if rejected.
INITKIT_HOST_DEVICE bool propose_trunc_normal(const Sampler<float>& s, uint32_t w, uint32_t e, float& x) {
  const float two_e = -2.0f * log_positive(unit_open_closed(e));
  if (s.kind == FillKind::TruncNormalUniformProposal) {
    x = s.origin + s.span * unit_closed_open(w);
    const float zm = (x - s.near) / s.scale;
    return two_e > zm * (zm + s.m2);
  }
  const float d = -log_positive(s.q + unit_open_closed(w) * (1.0f - s.q)) / s.lambda;
  x = s.origin + s.side * (s.scale * d);
  const float t = d + s.delta;
  return two_e > t * t - s.c;
}

// ---- double samplers ---------------------------------------------------------------------
INITKIT_HOST_DEVICE double sample_uniform(const Sampler<double>& s, uint32_t hi, uint32_t lo) {
  const double x = s.shift + s.scale * unit_closed_open(hi, lo);
  return x < s.hi ? x : s.lo;
}

// Box-Muller in double: words (0, 1) give the radius, words (2, 3) the angle.
INITKIT_HOST_DEVICE void sample_normal_pair(const Sampler<double>& s, const uint32_t* w, double& x0,
                                            double& x1) {
  const double radius = sqrt(-2.0 * log_positive(unit_open_closed(w[0], w[1])));
  double sin_t, cos_t;
  sincos_two_pi(w[2], w[3], sin_t, cos_t);
  x0 = s.shift + s.scale * (radius * cos_t);
  x1 = s.shift + s.scale * (radius * sin_t);
}

INITKIT_HOST_DEVICE double clamp_to_bounds(const Sampler<double>& s, double x) { return fmin(fmax(x, s.lo), s.hi); }

INITKIT_HOST_DEVICE double sample_trunc_normal(const Sampler<double>& s, uint32_t hi, uint32_t lo) {
  const double p = s.p_low + unit_open_closed(hi, lo) * s.width;
  const double q = s.q_high + unit_open_closed(~hi, ~lo) * s.width;
  const double z = p < 0.5 ? ndtri_lower(p) : -ndtri_lower(q);
  return clamp_to_bounds(s, s.shift + s.scale * z);
}

INITKIT_HOST_DEVICE bool propose_trunc_normal(const Sampler<double>& s, const uint32_t* w, const uint32_t* e,
                                              double& x) {
  const double two_e = -2.0 * log(unit_open_closed(e[0], e[1]));
  if (s.kind == FillKind::TruncNormalUniformProposal) {
    x = s.origin + s.span * unit_closed_open(w[0], w[1]);
    const double zm = (x - s.near) / s.scale;
    return two_e > zm * (zm + s.m2);
  }
  const double d = -log(s.q + unit_open_closed(w[0], w[1]) * (1.0 - s.q)) / s.lambda;
  x = s.origin + s.side * (s.scale * d);
  const double t = d + s.delta;
  return two_e > t * t - s.c;
}

// ---- the redraw loops, one per precision ---------------------------------------------------
// Position j (element 4g+j, or 2g+j for double) of group g. Normal rejection: the first
// in-bounds normal of blocks 1, 2, ...; proposals: attempt k proposes from block 2k, accepts
// with block 2k+1. After every attempt failed (P < 1e-38 for every law make_sampler sends
// here): the inverse CDF / the last proposal, clamped.
template <typename acc_t>
INITKIT_HOST_DEVICE acc_t redraw_trunc_normal(const Sampler<acc_t>& s, const StreamKey& key, uint64_t g, int j) {
  constexpr bool kSingle = sizeof(acc_t) == 4;
  PhiloxWords r{};
  if (s.kind == FillKind::TruncNormalByRejection) {
    for (uint32_t attempt = 1; attempt <= kMaxAttempts; ++attempt) {
      r = block_words(key, g, attempt);
      acc_t x;
      if constexpr (kSingle) {
        x = normal_at(s, r.w[0], r.w[1], r.w[2], r.w[3], j);
      } else {
        acc_t x0, x1;
        sample_normal_pair(s, r.w, x0, x1);
        x = (j & 1) ? x1 : x0;
      }
      if (x >= s.lo && x <= s.hi) return x;
    }
    if constexpr (kSingle) {
      return sample_trunc_normal(s, r.w[j]);
    } else {
      return sample_trunc_normal(s, r.w[2 * j], r.w[2 * j + 1]);
    }
  }
  acc_t x = s.origin;
  for (uint32_t attempt = 0; 2 * attempt + 1 <= kMaxAttempts; ++attempt) {
    const PhiloxWords w = block_words(key, g, 2 * attempt);
    const PhiloxWords e = block_words(key, g, 2 * attempt + 1);
    bool accepted;
    if constexpr (kSingle) {
      accepted = propose_trunc_normal(s, w.w[j], e.w[j], x);
    } else {
      accepted = propose_trunc_normal(s, w.w + 2 * j, e.w + 2 * j, x);
    }
    if (accepted) break;
  }
  return clamp_to_bounds(s, x);
}

// ---- one place per kind: L blocks of Philox words to samples ----------------------------------
// words[j][l] is word j of block (group[l], attempt 0); group[l] is only read by the redraws. The
// CPU runs L = 32 lanes so the loops vectorize (consecutive groups for whole tensors, gathered ones
// for short runs of sharded blocks); CUDA runs L = 1. Float: out[4l + j]; double: out[2l + j].
// kDeferRedraws (float, CPU): the rejection kind leaves out-of-bounds normals in place for the
// caller, which redraws them many lanes at a time with the same law (redraw_outside in cpu/fill.cpp).
template <int L, bool kDeferRedraws = false>
INITKIT_HOST_DEVICE void sample_lanes(const Sampler<float>& s, const StreamKey& key, const uint64_t (&group)[L],
                                      const uint32_t (&w)[4][L], float* out) {
  switch (s.kind) {
    case FillKind::RawWords:
      for (int l = 0; l < L; ++l)
        for (int j = 0; j < 4; ++j) out[4 * l + j] = bits_float(w[j][l]);
      break;
    case FillKind::Uniform:
      for (int l = 0; l < L; ++l)
        for (int j = 0; j < 4; ++j) out[4 * l + j] = sample_uniform(s, w[j][l]);
      break;
    case FillKind::Normal:
    case FillKind::TruncNormalByRejection: {  // the normal fill's values, then rare redraws
      for (int l = 0; l < L; ++l) {
        sample_normal_pair(s, w[0][l], w[1][l], out[4 * l + 0], out[4 * l + 1]);
        sample_normal_pair(s, w[2][l], w[3][l], out[4 * l + 2], out[4 * l + 3]);
      }
      if (s.kind == FillKind::Normal || kDeferRedraws) break;
      int32_t outside = 0;  // one vectorized pass; redraws are rare
      for (int i = 0; i < 4 * L; ++i) outside |= static_cast<int32_t>((out[i] < s.lo) | (out[i] > s.hi));
      if (outside == 0) break;
      for (int i = 0; i < 4 * L; ++i)
        if (!(out[i] >= s.lo && out[i] <= s.hi)) out[i] = redraw_trunc_normal(s, key, group[i / 4], i % 4);
      break;
    }
    case FillKind::TruncNormal: {
      float v[4][L];  // lane-contiguous first (vectorizes), then interleaved into `out`
      for (int j = 0; j < 4; ++j)
        for (int l = 0; l < L; ++l) v[j][l] = sample_trunc_normal(s, w[j][l]);
      for (int l = 0; l < L; ++l)
        for (int j = 0; j < 4; ++j) out[4 * l + j] = v[j][l];
      break;
    }
    default:  // narrow or far-tail truncations: scalar rejection on their own blocks
      for (int i = 0; i < 4 * L; ++i) out[i] = redraw_trunc_normal(s, key, group[i / 4], i % 4);
      break;
  }
}

template <int L>
INITKIT_HOST_DEVICE void sample_lanes(const Sampler<double>& s, const StreamKey& key, const uint64_t (&group)[L],
                                      const uint32_t (&w)[4][L], double* out) {
  switch (s.kind) {  // one loop per kind, so that the uniform and normal loops vectorize
    case FillKind::Uniform:
      for (int l = 0; l < L; ++l) {
        out[2 * l] = sample_uniform(s, w[0][l], w[1][l]);
        out[2 * l + 1] = sample_uniform(s, w[2][l], w[3][l]);
      }
      break;
    case FillKind::Normal:
    case FillKind::TruncNormalByRejection: {  // the normal fill's values, then rare redraws
      for (int l = 0; l < L; ++l) {
        const uint32_t lane[4] = {w[0][l], w[1][l], w[2][l], w[3][l]};
        sample_normal_pair(s, lane, out[2 * l], out[2 * l + 1]);
      }
      if (s.kind == FillKind::Normal) break;
      for (int i = 0; i < 2 * L; ++i)
        if (!(out[i] >= s.lo && out[i] <= s.hi)) out[i] = redraw_trunc_normal(s, key, group[i / 2], i % 2);
      break;
    }
    case FillKind::TruncNormal:
      for (int l = 0; l < L; ++l) {
        out[2 * l] = sample_trunc_normal(s, w[0][l], w[1][l]);
        out[2 * l + 1] = sample_trunc_normal(s, w[2][l], w[3][l]);
      }
      break;
    default:  // narrow or far-tail truncations: scalar rejection on their own blocks
      for (int i = 0; i < 2 * L; ++i) out[i] = redraw_trunc_normal(s, key, group[i / 2], i % 2);
      break;
  }
}

}  // namespace initkit
