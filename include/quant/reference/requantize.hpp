// quant/reference/requantize.hpp — quant::ref: requantization of int32 accumulators written
// straight from its formulas, in int64 and double, one element at a time. No SIMD, no tables,
// no threads: the yardstick the kernels of requantize.hpp are tested against.
//
// The routes differ on purpose from the library's: the doubling high multiply is the literal
// "(a b + nudge) / 2^31 with C++ truncating division", the power-of-two division is an exact
// double quotient rounded by std::round, the left shift is an int64 product, and the sum with
// the zero point and the clamp are done in int64.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "../requantize.hpp"

namespace quant {
namespace ref {

inline std::int32_t saturating_rounding_doubling_high_mul(std::int32_t a, std::int32_t b) {
  const std::int64_t int32_min = std::numeric_limits<std::int32_t>::min();
  if (a == int32_min && b == int32_min) return std::numeric_limits<std::int32_t>::max();
  const std::int64_t ab = static_cast<std::int64_t>(a) * b;
  const std::int64_t nudge = ab >= 0 ? (std::int64_t(1) << 30) : 1 - (std::int64_t(1) << 30);
  return static_cast<std::int32_t>((ab + nudge) / (std::int64_t(1) << 31));  // truncates toward 0
}

// x / 2^e is exact in double; std::round rounds half away from zero.
inline std::int32_t rounding_divide_by_pot(std::int32_t x, int exponent) {
  return static_cast<std::int32_t>(std::round(std::ldexp(static_cast<double>(x), -exponent)));
}

// TFLite's MultiplyByQuantizedMultiplier with our sign of the shift (M = q31 2^-31 2^-shift):
// left shift (saturated to int32) for shift < 0, high multiply, rounding right shift.
inline std::int32_t multiply_by_quantized_multiplier(std::int32_t acc, std::int32_t q31, int shift) {
  const int left = shift < 0 ? -shift : 0, right = shift > 0 ? shift : 0;
  std::int64_t x = static_cast<std::int64_t>(acc) * (std::int64_t(1) << left);
  x = std::min<std::int64_t>(std::max<std::int64_t>(x, std::numeric_limits<std::int32_t>::min()),
                             std::numeric_limits<std::int32_t>::max());
  return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(static_cast<std::int32_t>(x), q31), right);
}

inline std::int32_t clamp_sum(std::int64_t q, std::int32_t zero_point, std::int32_t lo, std::int32_t hi) {
  return static_cast<std::int32_t>(std::min<std::int64_t>(std::max<std::int64_t>(q + zero_point, lo), hi));
}

// clamp(z + MultiplyByQuantizedMultiplier(acc), lo, hi)
inline std::int32_t requantize_fixed_point(std::int32_t acc, fixed_point_multiplier m, std::int32_t zero_point,
                                           std::int32_t lo, std::int32_t hi) {
  return clamp_sum(multiply_by_quantized_multiplier(acc, m.q31, m.shift), zero_point, lo, hi);
}

// clamp(rne(float(acc) * M) + z, lo, hi): the float product is exact in double; std::nearbyint
// rounds half to even under the default FP environment.
inline std::int32_t requantize_float_scale(std::int32_t acc, float multiplier, std::int32_t zero_point,
                                           std::int32_t lo, std::int32_t hi) {
  const float v = static_cast<float>(acc) * multiplier;
  const double r = std::nearbyint(static_cast<double>(v));
  const double bound = 4.0e18;  // beyond every clamp; keeps the int64 conversion defined
  return clamp_sum(static_cast<std::int64_t>(std::min(std::max(r, -bound), bound)), zero_point, lo, hi);
}

// acc[rows, channels] row-major -> int32 outputs.
inline std::vector<std::int32_t> requantize(const std::vector<std::int32_t>& acc, std::size_t channels,
                                            const requantize_params& p) {
  std::vector<std::int32_t> out(acc.size());
  for (std::size_t i = 0; i < acc.size(); ++i) {
    const std::size_t c = p.channels() == 1 ? 0 : i % channels;
    out[i] = p.rounding == requantization::fixed_point
                 ? requantize_fixed_point(acc[i], p.fixed[c], p.zero_point, p.lo, p.hi)
                 : requantize_float_scale(acc[i], p.scale[c], p.zero_point, p.lo, p.hi);
  }
  return out;
}

// round_half_even(b / (s_in s_w[o])) in double (std::nearbyint, default FP environment).
inline std::vector<std::int64_t> quantize_bias(const std::vector<float>& bias, double input_scale,
                                               const std::vector<float>& weight_scales) {
  std::vector<std::int64_t> q(bias.size());
  for (std::size_t o = 0; o < bias.size(); ++o) {
    const double s = input_scale * static_cast<double>(weight_scales[weight_scales.size() == 1 ? 0 : o]);
    q[o] = static_cast<std::int64_t>(std::nearbyint(static_cast<double>(bias[o]) / s));
  }
  return q;
}

}  // namespace ref
}  // namespace quant
