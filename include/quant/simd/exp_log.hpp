// quant/simd/exp_log.hpp — exp and log with one spelling for scalars and packs.
//
//   simd::exp(x), simd::log(x)   float, double, xsimd::batch<float|double, A>
//
// Scalars use std::exp / std::log. Double packs use xsimd's exp / log. Float packs use
// the two functions below: Cephes' single-precision polynomials (the ones xsimd uses)
// evaluated with explicit FMAs (simd::fma), so their bits do not depend on the
// compiler's -ffp-contract, and log without a division.
//   exp: x = k ln2 + r, |r| <= ln2 / 2, exp(x) = 2^k (1 + r + r^2 P(r));
//        within 2 ulp of exp; 0 below -104, +inf above log(FLT_MAX), NaN stays NaN.
//   log: x = 2^k m, m in [sqrt(1/2), sqrt(2)), log(x) = k ln2 + log(1 + f), f = m - 1,
//        relative error < 1e-7 for finite x > 0; x <= 0, inf and NaN are not handled
//        (callers select them away).
// SIMD and scalar results therefore agree to a few ulp, not bit for bit.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "arch.hpp"

namespace quant {
namespace simd {

QUANT_ALWAYS_INLINE float exp(float x) noexcept { return std::exp(x); }
QUANT_ALWAYS_INLINE double exp(double x) noexcept { return std::exp(x); }
// GCC 12 warns inside xsimd's AVX-512 exp/log about the _mm512_undefined_* merge sources
// of its maskless intrinsics; those values are never read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
template <class A>
QUANT_ALWAYS_INLINE xsimd::batch<double, A> exp(const xsimd::batch<double, A>& x) noexcept {
  return xsimd::exp(x);
}
// exp(x) for float packs: x = k ln2 + r with k = round(x / ln2) and ln2 in two parts
// (Cody-Waite), exp(r) = 1 + r + r^2 P(r) with Cephes' expf polynomial (the one xsimd
// uses), times 2^k built in exponent fields; subnormal results down to 0 below -104, inf
// above log(FLT_MAX), NaN stays NaN. Within 2 ulp of exp (tested). Written out instead of
// xsimd::exp because xsimd 8.1 evaluates its polynomial with a generic a * b + c on
// AVX-512 (no FMA there), which -ffp-contract=off turns into twice the instructions and
// other bits.
template <class A>
QUANT_ALWAYS_INLINE xsimd::batch<float, A> exp(const xsimd::batch<float, A>& x) noexcept {
  using B = xsimd::batch<float, A>;
  using I = xsimd::batch<std::int32_t, A>;
  // Clamped first so that lanes far out of range do not build garbage exponents (and
  // subnormal intermediates) before the selects at the end; NaN passes the clamp.
  const B xc = simd::clamp(x, B(-104.0f), B(89.0f));
  const B k = xsimd::nearbyint(xc * B(1.44269504088896341f));
  B r = simd::fma(k, B(-0.693359375f), xc);
  r = simd::fma(k, B(2.12194440e-4f), r);
  B y = B(1.3997796e-03f);
  y = simd::fma(y, r, B(8.3955629e-03f));
  y = simd::fma(y, r, B(4.1665401e-02f));
  y = simd::fma(y, r, B(1.6666277e-01f));
  y = simd::fma(y, r, B(5.0000000e-01f));
  y = simd::fma(y, r * r, r) + B(1.0f);
  // 2^k as 2^(k/2) 2^(k - k/2): both halves are normal floats for every k in [-150, 128],
  // so results near FLT_MAX stay finite and below FLT_MIN become subnormal as they should.
  const I n = xsimd::to_int(k), n1 = n >> 1;
  const B e = y * xsimd::bitwise_cast<B>((n1 + I(127)) << 23) * xsimd::bitwise_cast<B>((n - n1 + I(127)) << 23);
  return xsimd::select(x < B(-104.0f), B(0.0f),
                       xsimd::select(x > B(88.72283935546875f), B(std::numeric_limits<float>::infinity()), e));
}
QUANT_ALWAYS_INLINE float log(float x) noexcept { return std::log(x); }
QUANT_ALWAYS_INLINE double log(double x) noexcept { return std::log(x); }
template <class A>
QUANT_ALWAYS_INLINE xsimd::batch<double, A> log(const xsimd::batch<double, A>& x) noexcept {
  return xsimd::log(x);
}
// log(x) for finite float packs x > 0 without a division (xsimd's log divides once per
// pack, 10 cycles of the divider per 16 lanes): x = 2^k m with m in
// [sqrt(1/2), sqrt(2)), log(1 + f), f = m - 1, from Cephes' logf polynomial (relative error
// < 1e-7, as xsimd's), k log 2 added in two parts. x <= 0, inf and NaN are not handled:
// callers select them away.
template <class A>
QUANT_ALWAYS_INLINE xsimd::batch<float, A> log(const xsimd::batch<float, A>& x) noexcept {
  using B = xsimd::batch<float, A>;
  using I = xsimd::batch<std::int32_t, A>;
  I ix = xsimd::bitwise_cast<I>(x);
  ix = ix + I(0x3f800000 - 0x3f3504f3);  // moves the cut of the mantissa range to sqrt(1/2)
  const B k = xsimd::to_float(I((ix >> 23) - I(0x7f)));
  ix = (ix & I(0x007fffff)) + I(0x3f3504f3);
  const B f = xsimd::bitwise_cast<B>(ix) - B(1.0f);
  const B z = f * f;
  B y = B(7.0376836292e-2f);
  y = simd::fma(y, f, B(-1.1514610310e-1f));
  y = simd::fma(y, f, B(1.1676998740e-1f));
  y = simd::fma(y, f, B(-1.2420140846e-1f));
  y = simd::fma(y, f, B(1.4249322787e-1f));
  y = simd::fma(y, f, B(-1.6668057665e-1f));
  y = simd::fma(y, f, B(2.0000714765e-1f));
  y = simd::fma(y, f, B(-2.4999993993e-1f));
  y = simd::fma(y, f, B(3.3333331174e-1f));
  y = simd::fma(k, B(-2.12194440e-4f), simd::fma(B(-0.5f), z, y * f * z));
  return simd::fma(k, B(0.693359375f), f + y);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace simd
}  // namespace quant
