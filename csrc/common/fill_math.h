// Turning Philox words into samples, shared by the CPU and CUDA fill kernels.
// Everything here is branch-free straight-line code (selects, no calls in the float path)
// so that the CPU compiler vectorizes it across lanes, and so that host and device
// evaluate exactly the same operations in the same order: with FP contraction off on
// both sides, float results are bit-identical between CPU and CUDA.
#pragma once
#include <cmath>
#include <cstdint>

#include "philox.h"

namespace initkit {

INITKIT_HOST_DEVICE uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  return __builtin_bit_cast(uint32_t, x);
#endif
}
INITKIT_HOST_DEVICE float bits_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  return __builtin_bit_cast(float, b);
#endif
}

INITKIT_HOST_DEVICE uint64_t double_bits(double x) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  return __builtin_bit_cast(uint64_t, x);
#endif
}
INITKIT_HOST_DEVICE double bits_double(uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(b));
#else
  return __builtin_bit_cast(double, b);
#endif
}

// A signed integer |i| < 2^51 as a double, exactly, by adding it to the bits of 1.5 * 2^52 (whose
// ulp is 1): plain 64-bit integer and double arithmetic, which vectorizes on AVX2 (it has no
// 64-bit integer to double conversion).
INITKIT_HOST_DEVICE double small_int_to_double(int64_t i) {
  return bits_double(0x4338000000000000ull + static_cast<uint64_t>(i)) - 0x1.8p52;
}

// ---- uniforms -------------------------------------------------------------------------
// [0, 1) with 24 random bits, as torch's CPU uniform_ for float.
INITKIT_HOST_DEVICE float unit_closed_open(uint32_t w) {
  return static_cast<float>(w >> 8) * 0x1p-24f;
}
// (0, 1] (curand's mapping): never 0, so log() and the inverse CDF stay finite; the
// smallest value 2^-33 keeps small tail probabilities at full relative precision.
INITKIT_HOST_DEVICE float unit_open_closed(uint32_t w) {
  return fmaf(static_cast<float>(w), 0x1p-32f, 0x1p-33f);  // the product is exact: as w * 2^-32 + 2^-33
}
// static_cast<double>(bits) for bits < 2^53 (exact), in operations that vectorize: bit 52 apart,
// the rest through small_int_to_double.
INITKIT_HOST_DEVICE double u53_to_double(uint64_t bits) {
  const double top = (bits >> 52) != 0 ? 0x1p52 : 0.0;
  return (top + small_int_to_double(static_cast<int64_t>(bits & 0xfffffffffffffull) - (int64_t(1) << 51))) + 0x1p51;
}
// Double precision: 53 bits from two words.
INITKIT_HOST_DEVICE double unit_closed_open(uint32_t hi, uint32_t lo) {
  return u53_to_double(((static_cast<uint64_t>(hi) << 32) | lo) >> 11) * 0x1p-53;
}
INITKIT_HOST_DEVICE double unit_open_closed(uint32_t hi, uint32_t lo) {
  return u53_to_double(((static_cast<uint64_t>(hi) << 32) | lo) >> 11) * 0x1p-53 + 0x1p-54;
}

// ---- float math ------------------------------------------------------------------------
// Natural log for normal positive floats: range-reduce to 1 + m in [sqrt(1/2), sqrt(2)), then
// log(1 + m) = m - m^2/2 + m^3 P(m) with P of degree 6 (minimax for log1p's relative error on
// that interval, 3.2e-8 before rounding; Cephes logf uses degree 8). Measured max error over
// (0, 1] against double log: 1.21 ulp (Cephes: 0.82). ln 2 in one float is enough: e <= 33 here,
// and e * ln2_f is off by < 7e-8 absolute, under an ulp of the result for every e != 0. The
// polynomial runs on explicit fmaf: correctly rounded on every CPU clone and on CUDA, so the bits
// still agree with contraction off.
INITKIT_HOST_DEVICE float log_positive(float x) {
  // x = 2^e (1 + m) with 1 + m in [sqrt(1/2), sqrt(2)): offsetting the bits by those of
  // sqrt(1/2) (0x3f3504f3) puts the boundary between exponents exactly there (m is exact).
  const uint32_t offset = float_bits(x) - 0x3f3504f3u;
  const int32_t e = static_cast<int32_t>(offset) >> 23;
  const float m = bits_float((offset & 0x007fffffu) + 0x3f3504f3u) - 1.0f;
  const float z = m * m;
  float y = 8.7004370987e-2f;
  y = fmaf(y, m, -1.4267487824e-1f);
  y = fmaf(y, m, 1.4914767444e-1f);
  y = fmaf(y, m, -1.6577585042e-1f);
  y = fmaf(y, m, 1.9963063300e-1f);
  y = fmaf(y, m, -2.5001338124e-1f);
  y = fmaf(y, m, 3.3333909512e-1f);
  y = y * m * z;
  y = fmaf(-0.5f, z, y);
  return fmaf(0.693147180559945f, static_cast<float>(e), m + y);
}

// sin(2*pi*t) and cos(2*pi*t) for the angle t = w / 2^32, reduced in integers: with v = w + 2^29,
// the quadrant q = round(4t) mod 4 is v >> 30, the remainder 4t - round(4t) in [-1/2, 1/2) is the
// word shifted left by 2 as a signed 2^-32 fraction; then Cephes minimax polynomials on
// [-pi/4, pi/4] (on fmaf). Max error against double sin/cos: 1.2e-7 absolute.
INITKIT_HOST_DEVICE void sincos_two_pi(uint32_t w, float& s, float& c) {
  const uint32_t v = w + 0x20000000u;
  const float x = static_cast<float>(static_cast<int32_t>(w << 2)) * (1.57079632679489662f * 0x1p-32f);
  const float x2 = x * x;
  float ps = -1.9515295891e-4f;
  ps = fmaf(ps, x2, 8.3321608736e-3f);
  ps = fmaf(ps, x2, -1.6666654611e-1f);
  const float sin_r = fmaf(x * x2, ps, x);
  float pc = 2.443315711809948e-5f;
  pc = fmaf(pc, x2, -1.388731625493765e-3f);
  pc = fmaf(pc, x2, 4.166664568298827e-2f);
  const float cos_r = fmaf(x2 * x2, pc, fmaf(-0.5f, x2, 1.0f));
  const bool swap = (v & 0x40000000u) != 0;  // odd quadrant
  const float s0 = swap ? cos_r : sin_r;
  const float c0 = swap ? sin_r : cos_r;
  // Signs: sin < 0 in quadrants 2, 3 (bit 31 of v), cos < 0 in quadrants 1, 2 (bit 31 of v + 2^30).
  s = bits_float(float_bits(s0) ^ (v & 0x80000000u));
  c = bits_float(float_bits(c0) ^ ((v + 0x40000000u) & 0x80000000u));
}

// Inverse standard-normal CDF for p in (0, 0.5] (lower half only: callers pass the smaller
// of p and 1-p, each computed without cancellation). Acklam's rational approximation
// (relative error < 1.2e-9, far below float's epsilon), covering the deep tail exactly.
INITKIT_HOST_DEVICE float ndtri_lower(float p) {
  // Both branches are evaluated (branch-free for SIMD); the rational of the selected branch is
  // divided once.
  const bool tail = p < 0.02425f;
  // Central region, |p - 0.5| <= 0.47575: x = q * a(r) / b(r) with r = q^2.
  const float q = p - 0.5f;
  const float r = q * q;
  float na = -3.969683028665376e+01f;
  na = na * r + 2.209460984245205e+02f;
  na = na * r - 2.759285104469687e+02f;
  na = na * r + 1.383577518672690e+02f;
  na = na * r - 3.066479806614716e+01f;
  na = na * r + 2.506628277459239e+00f;
  float db = -5.447609879822406e+01f;
  db = db * r + 1.615858368580409e+02f;
  db = db * r - 1.556989798598866e+02f;
  db = db * r + 6.680131188771972e+01f;
  db = db * r - 1.328068155288572e+01f;
  db = db * r + 1.0f;
  // Lower tail, p < 0.02425: x = c(t) / d(t) with t = sqrt(-2 log p).
  const float t = sqrtf(-2.0f * log_positive(p));
  float nc = -7.784894002430293e-03f;
  nc = nc * t - 3.223964580411365e-01f;
  nc = nc * t - 2.400758277161838e+00f;
  nc = nc * t - 2.549732539343734e+00f;
  nc = nc * t + 4.374664141464968e+00f;
  nc = nc * t + 2.938163982698783e+00f;
  float dd = 7.784695709041462e-03f;
  dd = dd * t + 3.224671290700398e-01f;
  dd = dd * t + 2.445134137142996e+00f;
  dd = dd * t + 3.754408661907416e+00f;
  dd = dd * t + 1.0f;
  return (tail ? nc : na * q) / (tail ? dd : db);
}

// ---- double math -------------------------------------------------------------------------
// The float64 normal's log and sin/cos, written out (not libm's) so that every CPU, every libm and
// CUDA give the same bits, and so that the lane loops vectorize. Both use the classic fdlibm
// polynomials (Sun Microsystems' freely distributable libm, which FreeBSD's, musl's and Java's
// StrictMath carry), evaluated here branch-free. tests/test_fill_math.py checks the normals they
// give against an exact Box-Muller (within 2 ulp of the radius).

// Natural log of a normal positive double: x = 2^e (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)) (f
// exact, as in log_positive above), then log(1 + f) = 2 atanh(s) with s = f / (2 + f):
// f - (f^2/2 - s (f^2/2 + R(s^2))), R a degree-7 polynomial in s^2; e ln 2 added in two parts.
INITKIT_HOST_DEVICE double log_positive(double x) {
  const uint64_t offset = double_bits(x) - 0x3fe6a09e667f3bcdull;  // the bits of sqrt(1/2)
  const double e = static_cast<double>(static_cast<int32_t>(static_cast<int64_t>(offset) >> 52));
  const double f = bits_double((offset & 0x000fffffffffffffull) + 0x3fe6a09e667f3bcdull) - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s, w = z * z;
  const double odd = z * fma(w, fma(w, fma(w, 1.479819860511658591e-01, 1.818357216161805012e-01), 2.857142874366239149e-01),
                             6.666666666666735130e-01);
  const double even = w * fma(w, fma(w, 1.531383769920937332e-01, 2.222219843214978396e-01), 3.999999999940941908e-01);
  const double r = odd + even;
  const double half_f2 = 0.5 * f * f;
  return e * 6.93147180369123816490e-01 - ((half_f2 - (s * (half_f2 + r) + e * 1.90821492927058770002e-10)) - f);
}

// sin(2 pi t) and cos(2 pi t) for the angle t = w / 2^64 turns (w = hi:lo), reduced in integers as
// sincos_two_pi above: the quadrant q = round(4t) mod 4 from v = w + 2^61, the remainder 4t - round(4t)
// as a signed 64-bit fraction kept to 2^-52; then fdlibm's sin and cos kernels on [-pi/4, pi/4].
INITKIT_HOST_DEVICE void sincos_two_pi(uint32_t hi, uint32_t lo, double& s, double& c) {
  const uint64_t w = (static_cast<uint64_t>(hi) << 32) | lo;
  const uint64_t v = w + (uint64_t(1) << 61);
  const double x = small_int_to_double(static_cast<int64_t>(w << 2) >> 12) * (1.57079632679489661923 * 0x1p-52);
  const double z = x * x;
  const double ps = fma(z, fma(z, fma(z, fma(z, 1.58969099521155010221e-10, -2.50507602534068634195e-08),
                                      2.75573137070700676789e-06), -1.98412698298579493134e-04), 8.33333333332248946124e-03);
  const double sin_r = x + x * z * fma(z, ps, -1.66666666666666324348e-01);
  const double pc = z * fma(z, fma(z, fma(z, fma(z, fma(z, -1.13596475577881948265e-11, 2.08757232129817482790e-09),
                                             -2.75573143513906633035e-07), 2.48015872894767294178e-05),
                                   -1.38888888888741095749e-03), 4.16666666666666019037e-02);
  const double half_z = 0.5 * z, one_minus = 1.0 - half_z;
  const double cos_r = one_minus + (((1.0 - one_minus) - half_z) + z * pc);
  const bool swap = (v & (uint64_t(1) << 62)) != 0;  // odd quadrant
  const double s0 = swap ? cos_r : sin_r;
  const double c0 = swap ? sin_r : cos_r;
  s = bits_double(double_bits(s0) ^ (v & (uint64_t(1) << 63)));
  c = bits_double(double_bits(c0) ^ ((v + (uint64_t(1) << 62)) & (uint64_t(1) << 63)));
}

// Double inverse normal CDF for p in (0, 0.5]: Acklam's approximation refined by one Halley
// step on erfc, which brings it to full double precision (rare scalar path; double fills
// are not the hot path).
INITKIT_HOST_DEVICE double ndtri_lower(double p) {
  double x;
  if (p < 0.02425) {
    const double t = sqrt(-2.0 * log(p));
    x = (((((-7.784894002430293e-03 * t - 3.223964580411365e-01) * t - 2.400758277161838e+00) * t -
           2.549732539343734e+00) * t + 4.374664141464968e+00) * t + 2.938163982698783e+00) /
        ((((7.784695709041462e-03 * t + 3.224671290700398e-01) * t + 2.445134137142996e+00) * t +
          3.754408661907416e+00) * t + 1.0);
  } else {
    const double q = p - 0.5, r = q * q;
    x = (((((-3.969683028665376e+01 * r + 2.209460984245205e+02) * r - 2.759285104469687e+02) * r +
           1.383577518672690e+02) * r - 3.066479806614716e+01) * r + 2.506628277459239e+00) * q /
        (((((-5.447609879822406e+01 * r + 1.615858368580409e+02) * r - 1.556989798598866e+02) * r +
           6.680131188771972e+01) * r - 1.328068155288572e+01) * r + 1.0);
  }
  const double e = 0.5 * erfc(-x * 0.70710678118654752440) - p;
  const double u = e * 2.50662827463100050242 * exp(0.5 * x * x);
  return x - u / (1.0 + 0.5 * x * u);
}

}  // namespace initkit
