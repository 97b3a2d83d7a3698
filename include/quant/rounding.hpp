// quant/rounding.hpp — rounding policies (docs/numerics.md).
//
// Each policy is a stateless type with one body, `apply(x)`, written once for scalars and
// xsimd batches. All of them are exact and independent of the floating-point environment:
// they start from t = trunc(x) (or floor), whose remainder f = x - t is exact in binary
// floating point, and decide the last unit from f. (std::nearbyint and the SIMD "current
// direction" instructions would follow MXCSR; a user's fesetround must not change a
// quantizer.)
//
//   round_half_to_even    (default; PyTorch's nearbyint under the default FP mode)
//   round_half_away_from_zero (AIMET's C++ core; std::round)
//   round_half_up         (ties toward +inf)
//   round_floor, round_ceil, round_toward_zero
//   round_stochastic      floor(x) + 1[u < x - floor(x)], u ~ U[0,1): unbiased,
//                         E[round(x)] = x. `u` comes from a counter-based generator
//                         (detail/counter_random.hpp) keyed by an explicit seed and the
//                         element index, so only eager kernels offer it.
#pragma once

#include "simd/arch.hpp"

namespace quant {

struct round_half_to_even {
  static constexpr bool is_stochastic = false;
  static constexpr const char* name() { return "half_to_even"; }
  template <class P>
  static QUANT_ALWAYS_INLINE P apply(const P& x) noexcept {
    if constexpr (simd::has_native_x86<P>::value) return simd::nearest_even(x);  // same bits, 2-3 ops
    const P t = simd::trunc(x);
    const P f = x - t;  // exact, |f| < 1, same sign as x
    const P a = simd::abs(f);
    const P half_t = t * P(0.5f);
    const auto t_is_odd = simd::trunc(half_t) != half_t;
    const auto up = (a > P(0.5f)) | ((a == P(0.5f)) & t_is_odd);
    const P one_signed = simd::select(f < P(0.0f), P(-1.0f), P(1.0f));
    return t + simd::select(up, one_signed, P(0.0f));
  }
};

struct round_half_away_from_zero {
  static constexpr bool is_stochastic = false;
  static constexpr const char* name() { return "half_away_from_zero"; }
  template <class P>
  static QUANT_ALWAYS_INLINE P apply(const P& x) noexcept {
    const P t = simd::trunc(x);
    const P f = x - t;
    const P one_signed = simd::select(f < P(0.0f), P(-1.0f), P(1.0f));
    return t + simd::select(simd::abs(f) >= P(0.5f), one_signed, P(0.0f));
  }
};

struct round_half_up {
  static constexpr bool is_stochastic = false;
  static constexpr const char* name() { return "half_up"; }
  template <class P>
  static QUANT_ALWAYS_INLINE P apply(const P& x) noexcept {
    const P t = simd::trunc(x);
    const P f = x - t;
    // positive side: f >= 0.5 goes up; negative side: f < -0.5 goes down, -0.5 stays.
    return t + simd::select(f >= P(0.5f), P(1.0f), simd::select(f < P(-0.5f), P(-1.0f), P(0.0f)));
  }
};

struct round_floor {
  static constexpr bool is_stochastic = false;
  static constexpr const char* name() { return "floor"; }
  template <class P>
  static QUANT_ALWAYS_INLINE P apply(const P& x) noexcept {
    return simd::floor(x);
  }
};

struct round_ceil {
  static constexpr bool is_stochastic = false;
  static constexpr const char* name() { return "ceil"; }
  template <class P>
  static QUANT_ALWAYS_INLINE P apply(const P& x) noexcept {
    return simd::ceil(x);
  }
};

struct round_toward_zero {
  static constexpr bool is_stochastic = false;
  static constexpr const char* name() { return "toward_zero"; }
  template <class P>
  static QUANT_ALWAYS_INLINE P apply(const P& x) noexcept {
    return simd::trunc(x);
  }
};

// Stochastic rounding carries its seed; kernels supply u per element index.
struct round_stochastic {
  static constexpr bool is_stochastic = true;
  static constexpr const char* name() { return "stochastic"; }
  std::uint64_t seed = 0;
  template <class P>
  static QUANT_ALWAYS_INLINE P apply(const P& x, const P& u) noexcept {
    const P t = simd::floor(x);
    const P f = x - t;  // in [0, 1]; exact except where it rounds up to 1, which still rounds up
    return t + simd::select(u < f, P(1.0f), P(0.0f));
  }
};

// Runtime name of a policy, for the CLI and JSON encodings.
enum class rounding_mode { half_to_even, half_away_from_zero, half_up, floor, ceil, toward_zero, stochastic };

}  // namespace quant
