// quant/requantize.hpp — int32 accumulator -> 8-bit output (Jacob et al. 2018, "Quantization
// and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", §2.2).
//
// A layer y = w x + b with x = s_x (q_x - z_x), w = s_w[o] q_w (symmetric weights) and
// y = s_y (q_y - z_y) accumulates acc[o] = sum_k q_w[o,k] (q_x[k] - z_x) + q_b[o] in int32,
// with q_b[o] = round_half_even(b[o] / (s_x s_w[o])) (quantize_bias). The output integer is
//
//     q_y = clamp(z_y + round(M[o] acc[o]), lo, hi),     M[o] = s_x s_w[o] / s_y,
//
// with ReLU / ReLU6 folded into [lo, hi] (make_requantize_params). Two conventions, both exact:
//
// fixed_point (gemmlowp, TFLite's MultiplyByQuantizedMultiplier):
//   M = M0 2^-shift, M0 in [0.5, 1) held as q31 = round(M0 2^31) (a q31 that rounds up to
//   2^31 becomes 2^30 with the shift one lower). Then, with l = max(-shift, 0) and
//   r = max(shift, 0):
//     x  = acc 2^l                                   (saturated to int32)
//     h  = saturating_rounding_doubling_high_mul(x, q31)
//        = (x q31 + nudge) / 2^31, C++ truncating division, nudge = 2^30 if x q31 >= 0 else
//          1 - 2^30; INT32_MIN * INT32_MIN -> INT32_MAX. Equivalently floor((x q31 + 2^30)
//          / 2^31): ties of the high product go toward +infinity (ARM's vqrdmulh).
//     q  = rounding_divide_by_pot(h, r)              (x / 2^r, ties away from zero)
//     q_y = clamp(q + z_y, lo, hi)
//   Valid multipliers: 2^-31 <= M <= 2^30, which gives -31 <= shift <= 30. The left shift
//   saturates (gemmlowp and TFLite leave that overflow undefined); a saturated x means
//   |M acc| >= 2^30, far beyond any output grid, so the clamp gives the bound the exact
//   product would give.
//
// float_scale (XNNPACK "fp32", ONNX Runtime):
//   q_y = clamp(round_half_even(float(acc) * float(M)) + z_y, lo, hi), float arithmetic
//   (the int -> float conversion and the product round to nearest even under the default
//   floating-point environment, as in those engines; the rounding to an integer is exact and
//   independent of it).
//
// The two conventions differ by at most one unit, and only where M acc lies within one float
// or Q31 rounding of a tie.
//
// Kernels: requantize() over a row-major block acc[rows, channels] (the layout of a layer
// output [N, out]) and requantize_channel_major() over [channels, cols]; AVX2 bodies (integer
// intrinsics: xsimd 8.1 has no 32x32->64 multiply) and a scalar body, written once in
// kernels::requantize_lanes, plus a fused AVX2 fixed-point body for the usual case M < 1/2
// (kernels::requantize_fused: one 64-bit addend and one shift instead of the two rounding
// steps, same results); threads via detail/parallel.hpp with thread-count-independent
// pieces, so results are identical for every thread count and on every path.
// For a GEMM epilogue: build a kernels::requantize_plan once, then per register of
// accumulators call kernels::requantize_lanes<rounding, left_shift>(acc, lanes) with lanes from
// kernels::load_lanes (one channel per lane) or kernels::broadcast_lanes (one channel for all
// lanes), and kernels::store_narrow / store_narrow4 to write int8 / uint8.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "detail/parallel.hpp"
#include "error.hpp"
#include "qparams.hpp"
#include "rounding.hpp"
#include "simd/arch.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace quant {

// ---- the fixed-point multiplier ---------------------------------------------------------

// M = (q31 / 2^31) 2^-shift with q31 in [2^30, 2^31) (M0 in [0.5, 1)).
struct fixed_point_multiplier {
  std::int32_t q31 = 0;
  int shift = 0;
  // The multiplier this represents, exactly (q31 2^(-31-shift) is a double).
  double real() const { return std::ldexp(static_cast<double>(q31), -31 - shift); }
};

// The range make_fixed_point_multiplier accepts: 2^-31 <= M <= 2^30.
constexpr double fixed_point_multiplier_min = 1.0 / 2147483648.0;
constexpr double fixed_point_multiplier_max = 1073741824.0;

// M -> (q31, shift) with q31 = round(M0 2^31) (half away from zero; M0 2^31 is exact in
// double, so this is the only rounding: |real() - M| <= 2^-32 2^-shift <= 2^-31 M).
// Throws quant::invalid_argument naming "multiplier" unless M is finite and in
// [fixed_point_multiplier_min, fixed_point_multiplier_max].
inline fixed_point_multiplier make_fixed_point_multiplier(double real_multiplier) {
  if (!(std::isfinite(real_multiplier) && real_multiplier >= fixed_point_multiplier_min &&
        real_multiplier <= fixed_point_multiplier_max))
    detail::fail<invalid_argument>("make_fixed_point_multiplier", "multiplier", real_multiplier,
                                   "must be finite and in [2^-31, 2^30]");
  int e = 0;
  const double m0 = std::frexp(real_multiplier, &e);  // M = m0 2^e, m0 in [0.5, 1)
  double q = std::round(std::ldexp(m0, 31));
  if (q == 2147483648.0) {  // m0 rounded up to 1: 2^31 2^-31 2^e = 2^30 2^-31 2^(e+1)
    q = 1073741824.0;
    ++e;
  }
  return {static_cast<std::int32_t>(q), -e};
}

// ---- the two primitive operations (gemmlowp's fixedpoint.h semantics) ------------------

// (a b + nudge) / 2^31 with C++ truncating division, nudge = 2^30 if a b >= 0 else 1 - 2^30;
// the one overflow, INT32_MIN * INT32_MIN, gives INT32_MAX. Computed as
// floor((a b + 2^30) / 2^31), which equals it for every a b (for a b < 0 both are
// ceil((a b + 1 - 2^30) / 2^31) = floor((a b + 2^30) / 2^31)).
inline std::int32_t saturating_rounding_doubling_high_mul(std::int32_t a, std::int32_t b) noexcept {
  if (a == std::numeric_limits<std::int32_t>::min() && b == a) return std::numeric_limits<std::int32_t>::max();
  const std::int64_t p = static_cast<std::int64_t>(a) * static_cast<std::int64_t>(b);
  return static_cast<std::int32_t>((p + (std::int64_t(1) << 30)) >> 31);  // arithmetic shift = floor
}

// x / 2^exponent rounded to nearest, ties away from zero; 0 <= exponent <= 31.
// With x = f 2^e + t, f = floor(x / 2^e), 0 <= t < 2^e: the result is f + 1 iff
// t > 2^(e-1) - 1 + [x < 0] (t >= half for x >= 0, t > half for x < 0), else f.
inline std::int32_t rounding_divide_by_pot(std::int32_t x, int exponent) noexcept {
  const std::int32_t mask = static_cast<std::int32_t>((std::uint32_t(1) << exponent) - 1u);
  const std::int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + ((x & mask) > threshold ? 1 : 0);
}

// ---- parameters ---------------------------------------------------------------------------

enum class requantization {
  fixed_point,  // gemmlowp / TFLite
  float_scale,  // XNNPACK fp32 / ONNX Runtime: clamp(rne(float(acc) * M) + z)
};
enum class fused_activation { none, relu, relu6 };

inline const char* to_string(requantization r) noexcept {
  return r == requantization::fixed_point ? "fixed_point" : "float_scale";
}

// Everything the requantization of an int32 accumulator needs; per tensor (one multiplier)
// or per output channel. make_requantize_params fills both `fixed` and `scale`, so either
// rounding can be chosen afterwards.
struct requantize_params {
  requantization rounding = requantization::fixed_point;
  std::vector<fixed_point_multiplier> fixed;  // one per channel, or one
  std::vector<float> scale;                   // float(M) per channel, or one
  std::int32_t zero_point = 0;                // output zero point, on the output grid
  std::int32_t lo = -128, hi = 127;           // clamp bounds, activation folded in
  std::size_t channels() const noexcept { return rounding == requantization::fixed_point ? fixed.size() : scale.size(); }
};

// M[o] = s_in s_w[o] / s_out (one, or one per output channel), the output grid, its zero
// point, the rounding and the activation: relu -> lo = max(qmin, z), relu6 -> also
// hi = min(qmax, z + round(6 / s_out)) (round half away from zero, as TFLite's activation
// range; output_scale is needed for relu6 only).
// Throws quant::invalid_argument naming "multipliers" (empty), "multiplier" (out of range),
// "bits", "output_zero_point" (off the grid), "output_scale" (relu6 without a finite scale > 0).
inline requantize_params make_requantize_params(const std::vector<double>& multipliers, const grid& output_grid,
                                                std::int32_t output_zero_point, requantization rounding,
                                                fused_activation act = fused_activation::none,
                                                double output_scale = 0.0) {
  const char* fn = "make_requantize_params";
  output_grid.validate(fn);
  if (multipliers.empty()) detail::fail<invalid_argument>(fn, "multipliers.size()", 0, "must be >= 1");
  const std::int32_t qmin = output_grid.qmin(), qmax = output_grid.qmax();
  if (output_zero_point < qmin || output_zero_point > qmax)
    detail::fail<invalid_argument>(fn, "output_zero_point", output_zero_point,
                                   "must lie on the output grid [" + std::to_string(qmin) + ", " +
                                       std::to_string(qmax) + "]");
  requantize_params p;
  p.rounding = rounding;
  p.zero_point = output_zero_point;
  p.fixed.reserve(multipliers.size());
  p.scale.reserve(multipliers.size());
  for (double m : multipliers) {
    p.fixed.push_back(make_fixed_point_multiplier(m));  // validates the range
    p.scale.push_back(static_cast<float>(m));
  }
  p.lo = qmin;
  p.hi = qmax;
  if (act == fused_activation::relu || act == fused_activation::relu6) p.lo = std::max(qmin, output_zero_point);
  if (act == fused_activation::relu6) {
    if (!(std::isfinite(output_scale) && output_scale > 0.0))
      detail::fail<invalid_argument>(fn, "output_scale", output_scale, "must be finite and > 0 for relu6");
    const double top = static_cast<double>(output_zero_point) + std::round(6.0 / output_scale);
    p.hi = static_cast<std::int32_t>(std::min(static_cast<double>(qmax), top));
  }
  return p;
}

// int32 bias with scale s_in s_w[o]: round_half_even(b[o] / (s_in s_w[o])) in double.
// weight_scales holds one scale (per tensor) or one per bias entry.
// Throws quant::invalid_argument naming "input_scale" / "weight_scales[o]" (not finite > 0),
// quant::length_error naming "weight_scales.size()", quant::domain_error naming "bias[o]"
// (not finite) and quant::invalid_argument naming "bias[o]" when the result leaves int32.
inline std::vector<std::int32_t> quantize_bias(const std::vector<float>& bias, double input_scale,
                                               const std::vector<float>& weight_scales) {
  const char* fn = "quantize_bias";
  if (!(std::isfinite(input_scale) && input_scale > 0.0))
    detail::fail<invalid_argument>(fn, "input_scale", input_scale, "must be finite and > 0");
  if (weight_scales.size() != 1 && weight_scales.size() != bias.size())
    detail::fail<length_error>(fn, "weight_scales.size()", weight_scales.size(),
                               "must be 1 or bias.size() = " + std::to_string(bias.size()));
  std::vector<std::int32_t> q(bias.size());
  for (std::size_t o = 0; o < bias.size(); ++o) {
    const std::size_t k = weight_scales.size() == 1 ? 0 : o;
    const float sw = weight_scales[k];
    if (!(std::isfinite(sw) && sw > 0.0f))
      detail::fail<invalid_argument>(fn, ("weight_scales[" + std::to_string(k) + "]").c_str(), sw,
                                     "must be finite and > 0");
    if (!std::isfinite(bias[o]))
      detail::fail<domain_error>(fn, ("bias[" + std::to_string(o) + "]").c_str(), bias[o], "must be finite");
    const double v = static_cast<double>(bias[o]) / (input_scale * static_cast<double>(sw));
    // Round half to even, exactly and independent of the FP environment.
    double r = std::trunc(v);
    const double f = v - r;  // exact
    if (std::fabs(f) > 0.5 || (std::fabs(f) == 0.5 && std::fmod(r, 2.0) != 0.0)) r += f < 0 ? -1.0 : 1.0;
    if (!(r >= -2147483648.0 && r <= 2147483647.0))
      detail::fail<invalid_argument>(fn, ("bias[" + std::to_string(o) + "]").c_str(), bias[o],
                                     "b / (input_scale * weight_scale) = " + std::to_string(v) +
                                         " does not fit int32 (channel " + std::to_string(o) + ")");
    q[o] = static_cast<std::int32_t>(r);
  }
  return q;
}

namespace kernels {

// The architecture requantize() runs on: AVX2 where the compiler targets it (also on
// AVX-512 machines), else the scalar body.
#if defined(__AVX2__) && !defined(QUANT_NO_SIMD)
using requantize_arch = xsimd::avx2;
#else
using requantize_arch = simd::scalar;
#endif

template <class Arch>
constexpr bool is_avx2_arch = std::is_base_of<xsimd::avx2, Arch>::value;

// Tables are padded to a multiple of this many entries (copies of channel 0), so a pack
// load at any channel c < channels() stays inside them.
constexpr std::size_t table_padding = 16;

// requantize_params validated once and expanded into per-channel tables for the bodies.
// All bounds are relative to the zero point: the body clamps q to [lo - z, hi - z] and adds z
// afterwards (equal to clamp(q + z, lo, hi), without the overflow of q + z).
struct requantize_plan {
  requantization rounding = requantization::fixed_point;
  std::size_t channels = 1;     // 1: per tensor
  bool any_left_shift = false;  // some channel has M >= 1 (shift < 0)
  bool all_right_shift = false; // every channel has shift >= 1 (M < 1/2): the fused AVX2 body applies
  std::int32_t zero_point = 0, lo_minus_z = 0, hi_minus_z = 0;
  float lo_minus_z_f = 0.0f, hi_minus_z_f = 0.0f;
  // fixed point, per channel: q31, left shift l, right shift r, 2^r - 1, 2^(r-1) - 1 (0 for r = 0)
  std::vector<std::int32_t> q31, left, right, mask, half_minus_one;
  // fused body (all_right_shift): r - 1 per channel, and the 64-bit addends
  // K+ = 2^30 + 2^(30+r), K- = K+ - 2^31 per channel, in blocks of 8 channels laid out as
  // [even channels 0 2 4 6, odd channels 1 3 5 7] (the lanes of vpmuldq's products)
  std::vector<std::int32_t> right_minus_one;
  std::vector<std::int64_t> addend_plus, addend_minus;
  std::vector<float> scale;  // float scale, per channel

  requantize_plan() = default;
  explicit requantize_plan(const requantize_params& p, const char* function = "requantize_plan") {
    rounding = p.rounding;
    const bool fixed = p.rounding == requantization::fixed_point;
    channels = p.channels();
    if (channels == 0)
      detail::fail<invalid_argument>(function, fixed ? "p.fixed.size()" : "p.scale.size()", 0, "must be >= 1");
    if (p.lo > p.hi) detail::fail<invalid_argument>(function, "p.lo", p.lo, "must be <= p.hi = " + std::to_string(p.hi));
    const std::int64_t lz = std::int64_t(p.lo) - p.zero_point, hz = std::int64_t(p.hi) - p.zero_point;
    if (lz < std::numeric_limits<std::int32_t>::min() || hz > std::numeric_limits<std::int32_t>::max() ||
        std::max(-lz, hz) > (std::int64_t(1) << 24))
      detail::fail<invalid_argument>(function, "p.zero_point", p.zero_point,
                                     "p.lo - z and p.hi - z must lie in [-2^24, 2^24]");
    zero_point = p.zero_point;
    lo_minus_z = static_cast<std::int32_t>(lz);
    hi_minus_z = static_cast<std::int32_t>(hz);
    lo_minus_z_f = static_cast<float>(lz);
    hi_minus_z_f = static_cast<float>(hz);
    const std::size_t padded = (channels + table_padding - 1) / table_padding * table_padding;
    if (fixed) {
      q31.resize(padded), left.resize(padded), right.resize(padded), mask.resize(padded), half_minus_one.resize(padded);
      for (std::size_t c = 0; c < padded; ++c) {
        const std::size_t k = c < channels ? c : 0;
        const fixed_point_multiplier m = p.fixed[k];
        if (m.q31 < (std::int32_t(1) << 30) || m.shift < -31 || m.shift > 30)
          detail::fail<invalid_argument>(function, ("p.fixed[" + std::to_string(k) + "].shift").c_str(), m.shift,
                                         "q31 = " + std::to_string(m.q31) +
                                             ": needs q31 in [2^30, 2^31) and shift in [-31, 30] "
                                             "(use make_fixed_point_multiplier)");
        q31[c] = m.q31;
        left[c] = m.shift < 0 ? -m.shift : 0;
        right[c] = m.shift > 0 ? m.shift : 0;
        mask[c] = static_cast<std::int32_t>((std::uint32_t(1) << right[c]) - 1u);
        half_minus_one[c] = mask[c] >> 1;
        any_left_shift = any_left_shift || left[c] != 0;
      }
      all_right_shift = true;
      for (std::size_t c = 0; c < padded; ++c) all_right_shift = all_right_shift && right[c] >= 1;
      if (all_right_shift) {
        right_minus_one.resize(padded), addend_plus.resize(padded), addend_minus.resize(padded);
        for (std::size_t c = 0; c < padded; ++c) {
          right_minus_one[c] = right[c] - 1;
          const std::size_t slot = c / 8 * 8 + (c % 2) * 4 + (c % 8) / 2;
          addend_plus[slot] = (std::int64_t(1) << 30) + (std::int64_t(1) << (30 + right[c]));
          addend_minus[slot] = addend_plus[slot] - (std::int64_t(1) << 31);
        }
      }
    } else {
      scale.resize(padded);
      for (std::size_t c = 0; c < padded; ++c) {
        const std::size_t k = c < channels ? c : 0;
        const float s = p.scale[k];
        if (!(std::isfinite(s) && s > 0.0f))
          detail::fail<invalid_argument>(function, ("p.scale[" + std::to_string(k) + "]").c_str(), s,
                                         "must be finite and > 0");
        scale[c] = s;
      }
    }
  }
};

// The plan's tables as raw pointers and values: kernels copy it into a local, which no
// store through an int8_t* (a character type, allowed to alias anything) can invalidate,
// so the pointers and bounds stay in registers across a loop.
struct requantize_view {
  requantization rounding;
  const std::int32_t *q31, *left, *right, *mask, *half_minus_one;
  const float* scale;
  std::int32_t zero_point, lo_minus_z, hi_minus_z;
  float lo_minus_z_f, hi_minus_z_f;
  const std::int32_t* right_minus_one;
  const std::int64_t *addend_plus, *addend_minus;
};

inline requantize_view view_of(const requantize_plan& p) noexcept {
  return {p.rounding,       p.q31.data(),          p.left.data(),         p.right.data(),
          p.mask.data(),    p.half_minus_one.data(), p.scale.data(),      p.zero_point,
          p.lo_minus_z,     p.hi_minus_z,          p.lo_minus_z_f,        p.hi_minus_z_f,
          p.right_minus_one.data(), p.addend_plus.data(), p.addend_minus.data()};
}
inline const requantize_view& view_of(const requantize_view& v) noexcept { return v; }

// The constants of one pack of lanes: P = int32 pack, F = float pack (plain int32_t / float
// for simd::scalar).
template <class Arch>
struct requantize_lanes_t {
  using P = simd::pack<std::int32_t, Arch>;
  using F = simd::pack<float, Arch>;
  P q31, left, right, mask, half_minus_one;  // fixed point
  F scale, lo_f, hi_f;                       // float scale (bounds minus z)
  P lo, hi, zero_point;                      // bounds minus z, z
};

// Lanes for channels c .. c + L - 1 (one channel per lane) of a requantize_plan or a
// requantize_view. Loads stay inside the tables for every c < channels (table_padding).
template <class Arch, class Tables>
QUANT_ALWAYS_INLINE requantize_lanes_t<Arch> load_lanes(const Tables& tables, std::size_t c) noexcept {
  using P = simd::pack<std::int32_t, Arch>;
  using F = simd::pack<float, Arch>;
  const requantize_view& t = view_of(tables);
  requantize_lanes_t<Arch> k;
  if (t.rounding == requantization::fixed_point) {
    k.q31 = simd::load<Arch>(t.q31 + c);
    k.left = simd::load<Arch>(t.left + c);
    k.right = simd::load<Arch>(t.right + c);
    k.mask = simd::load<Arch>(t.mask + c);
    k.half_minus_one = simd::load<Arch>(t.half_minus_one + c);
  } else {
    k.scale = simd::load<Arch>(t.scale + c);
  }
  k.lo_f = F(t.lo_minus_z_f), k.hi_f = F(t.hi_minus_z_f);
  k.lo = P(t.lo_minus_z), k.hi = P(t.hi_minus_z), k.zero_point = P(t.zero_point);
  return k;
}

// Lanes that all use channel c (c = 0 for a per-tensor plan): a channel-major block.
template <class Arch, class Tables>
QUANT_ALWAYS_INLINE requantize_lanes_t<Arch> broadcast_lanes(const Tables& tables, std::size_t c) noexcept {
  using P = simd::pack<std::int32_t, Arch>;
  using F = simd::pack<float, Arch>;
  const requantize_view& t = view_of(tables);
  requantize_lanes_t<Arch> k;
  if (t.rounding == requantization::fixed_point) {
    k.q31 = P(t.q31[c]), k.left = P(t.left[c]), k.right = P(t.right[c]);
    k.mask = P(t.mask[c]), k.half_minus_one = P(t.half_minus_one[c]);
  } else {
    k.scale = F(t.scale[c]);
  }
  k.lo_f = F(t.lo_minus_z_f), k.hi_f = F(t.hi_minus_z_f);
  k.lo = P(t.lo_minus_z), k.hi = P(t.hi_minus_z), k.zero_point = P(t.zero_point);
  return k;
}

// ---- the bodies, scalar and AVX2 ------------------------------------------------------------

// x 2^l saturated to int32, 0 <= l <= 31.
QUANT_ALWAYS_INLINE std::int32_t saturating_left_shift(std::int32_t x, std::int32_t l) noexcept {
  const std::int64_t v = static_cast<std::int64_t>(x) * (std::int64_t(1) << l);
  return static_cast<std::int32_t>(
      std::min<std::int64_t>(std::max<std::int64_t>(v, std::numeric_limits<std::int32_t>::min()),
                             std::numeric_limits<std::int32_t>::max()));
}

#if defined(__AVX2__)
QUANT_ALWAYS_INLINE __m256i saturating_left_shift(__m256i x, __m256i l) noexcept {
  const __m256i y = _mm256_sllv_epi32(x, l);
  const __m256i kept = _mm256_cmpeq_epi32(_mm256_srav_epi32(y, l), x);  // no bit lost
  const __m256i sat = _mm256_xor_si256(_mm256_srai_epi32(x, 31), _mm256_set1_epi32(0x7fffffff));
  return _mm256_blendv_epi8(sat, y, kept);
}

// 8 lanes of saturating_rounding_doubling_high_mul: the 64-bit products of even and odd
// lanes (vpmuldq), + 2^30, bits 31..62 of each back into its 32-bit lane. Saturate = false
// skips the INT32_MIN * INT32_MIN check (callers whose b is never INT32_MIN).
template <bool Saturate = true>
QUANT_ALWAYS_INLINE __m256i saturating_rounding_doubling_high_mul(__m256i a, __m256i b) noexcept {
  const __m256i nudge = _mm256_set1_epi64x(std::int64_t(1) << 30);
  const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(a, b), nudge);
  const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(a, 32), _mm256_srli_epi64(b, 32)), nudge);
  __m256i h = _mm256_blend_epi32(_mm256_srli_epi64(even, 31), _mm256_slli_epi64(odd, 1), 0xAA);
  if constexpr (Saturate) {
    const __m256i min = _mm256_set1_epi32(std::numeric_limits<std::int32_t>::min());
    // the overflow lands on 2^31 = INT32_MIN bits; xor with all-ones turns it into INT32_MAX
    h = _mm256_xor_si256(h, _mm256_and_si256(_mm256_cmpeq_epi32(a, min), _mm256_cmpeq_epi32(b, min)));
  }
  return h;
}

// 8 lanes of rounding_divide_by_pot with per-lane exponent r, mask = 2^r - 1 and
// half_minus_one = mask >> 1 (precomputed).
QUANT_ALWAYS_INLINE __m256i rounding_divide_by_pot(__m256i x, __m256i r, __m256i mask, __m256i half_minus_one) noexcept {
  const __m256i threshold = _mm256_sub_epi32(half_minus_one, _mm256_srai_epi32(x, 31));  // + [x < 0]
  const __m256i up = _mm256_cmpgt_epi32(_mm256_and_si256(x, mask), threshold);        // -1 where rounding up
  return _mm256_sub_epi32(_mm256_srav_epi32(x, r), up);
}

// The fused fixed-point body for shift r >= 1 (requantize_plan::all_right_shift). With
// p = acc q31 (64-bit) the two roundings collapse into one floor:
//   rounding_divide_by_pot(floor((p + 2^30) / 2^31), r)
//     = floor((p + 2^30 + 2^31 (2^(r-1) - [p < 0])) / 2^(31+r))
// (f + 1 exactly when the remainder t of h = f 2^r + t reaches 2^(r-1) + [h < 0]; nested
// floors of integer quotients compose; for -2^30 <= p < 0, where [p < 0] and [h < 0]
// differ, both sides are 0). The addend is K+ or K- = K+ - 2^31 chosen by the sign bit of
// p (vblendvpd); floor(v / 2^32) is the high half of v, and one vpsravd by r - 1 finishes.
// |p| < 2^62 and K < 2^61, so v never overflows.
struct fused_fixed_lanes {
  __m256i q31, q31_odd, plus_even, plus_odd, minus_even, minus_odd, right_minus_one, lo, hi, zero_point;
};

// Channels c .. c + 7 with c a multiple of 8 (the tables' block layout).
QUANT_ALWAYS_INLINE fused_fixed_lanes load_fused_lanes(const requantize_view& t, std::size_t c) noexcept {
  const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.q31 + c));
  return {q,
          _mm256_srli_epi64(q, 32),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.addend_plus + c)),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.addend_plus + c + 4)),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.addend_minus + c)),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.addend_minus + c + 4)),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.right_minus_one + c)),
          _mm256_set1_epi32(t.lo_minus_z),
          _mm256_set1_epi32(t.hi_minus_z),
          _mm256_set1_epi32(t.zero_point)};
}

// Channel c in every lane (the slot of c in its block holds its addends).
QUANT_ALWAYS_INLINE fused_fixed_lanes broadcast_fused_lanes(const requantize_view& t, std::size_t c) noexcept {
  const std::size_t slot = c / 8 * 8 + (c % 2) * 4 + (c % 8) / 2;
  const __m256i q = _mm256_set1_epi32(t.q31[c]);
  const __m256i plus = _mm256_set1_epi64x(t.addend_plus[slot]), minus = _mm256_set1_epi64x(t.addend_minus[slot]);
  return {q,     q,     plus, plus, minus, minus, _mm256_set1_epi32(t.right_minus_one[c]), _mm256_set1_epi32(t.lo_minus_z),
          _mm256_set1_epi32(t.hi_minus_z), _mm256_set1_epi32(t.zero_point)};
}

QUANT_ALWAYS_INLINE __m256i requantize_fused(__m256i acc, const fused_fixed_lanes& k) noexcept {
  const __m256i pe = _mm256_mul_epi32(acc, k.q31);
  const __m256i po = _mm256_mul_epi32(_mm256_srli_epi64(acc, 32), k.q31_odd);
  const __m256i ke = _mm256_castpd_si256(
      _mm256_blendv_pd(_mm256_castsi256_pd(k.plus_even), _mm256_castsi256_pd(k.minus_even), _mm256_castsi256_pd(pe)));
  const __m256i ko = _mm256_castpd_si256(
      _mm256_blendv_pd(_mm256_castsi256_pd(k.plus_odd), _mm256_castsi256_pd(k.minus_odd), _mm256_castsi256_pd(po)));
  const __m256i ve = _mm256_add_epi64(pe, ke), vo = _mm256_add_epi64(po, ko);
  const __m256i high = _mm256_blend_epi32(_mm256_srli_epi64(ve, 32), vo, 0xAA);  // floor(v / 2^32)
  __m256i q = _mm256_srav_epi32(high, k.right_minus_one);
  q = _mm256_min_epi32(_mm256_max_epi32(q, k.lo), k.hi);
  return _mm256_add_epi32(q, k.zero_point);
}
#endif

// The requantized integers (already clamped, zero point added) of one pack of accumulators.
// Rounding: the convention; LeftShift = false is valid when no lane has shift < 0
// (requantize_plan::any_left_shift) and skips the saturating left shift.
template <requantization Rounding, bool LeftShift, class Arch>
QUANT_ALWAYS_INLINE simd::pack<std::int32_t, Arch> requantize_lanes(const simd::pack<std::int32_t, Arch>& acc,
                                                                    const requantize_lanes_t<Arch>& k) noexcept {
  if constexpr (std::is_same<Arch, simd::scalar>::value) {
    std::int32_t q;
    if constexpr (Rounding == requantization::fixed_point) {
      const std::int32_t x = LeftShift ? saturating_left_shift(acc, k.left) : acc;
      q = quant::rounding_divide_by_pot(quant::saturating_rounding_doubling_high_mul(x, k.q31), k.right);
    } else {
      const float v = static_cast<float>(acc) * k.scale;
      const float c = std::min(std::max(v, k.lo_f), k.hi_f);
      q = static_cast<std::int32_t>(round_half_to_even::apply(c));
    }
    return std::min(std::max(q, k.lo), k.hi) + k.zero_point;
  } else {
#if defined(__AVX2__)
    static_assert(is_avx2_arch<Arch>, "requantize_lanes: AVX2 or simd::scalar");
    __m256i q;
    if constexpr (Rounding == requantization::fixed_point) {
      __m256i x = acc;
      if constexpr (LeftShift) x = saturating_left_shift(x, k.left);
      q = rounding_divide_by_pot(saturating_rounding_doubling_high_mul<false>(x, k.q31), k.right, k.mask,
                                 k.half_minus_one);
    } else {
      __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), k.scale);
      v = _mm256_min_ps(k.hi_f, _mm256_max_ps(k.lo_f, v));
      q = _mm256_cvttps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    q = _mm256_min_epi32(_mm256_max_epi32(q, k.lo), k.hi);
    return _mm256_add_epi32(q, k.zero_point);
#else
    static_assert(std::is_same<Arch, simd::scalar>::value, "requantize_lanes: AVX2 or simd::scalar");
    return acc;
#endif
  }
}

// Stores one pack of requantized values (already in Out's range).
template <class Out, class Arch>
QUANT_ALWAYS_INLINE void store_narrow(Out* dst, const simd::pack<std::int32_t, Arch>& v) noexcept {
  if constexpr (std::is_same<Arch, simd::scalar>::value) {
    *dst = static_cast<Out>(v);
  } else {
#if defined(__AVX2__)
    if constexpr (std::is_same<Out, std::int32_t>::value) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v);
    } else {
      const __m256i x = v;
      const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
      const __m128i b = std::is_same<Out, std::int8_t>::value ? _mm_packs_epi16(w, w) : _mm_packus_epi16(w, w);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), b);
    }
#endif
  }
}

// Stores four consecutive packs (4 L values) at once.
template <class Out, class Arch>
QUANT_ALWAYS_INLINE void store_narrow4(Out* dst, const simd::pack<std::int32_t, Arch>& v0,
                                       const simd::pack<std::int32_t, Arch>& v1,
                                       const simd::pack<std::int32_t, Arch>& v2,
                                       const simd::pack<std::int32_t, Arch>& v3) noexcept {
  constexpr std::size_t L = simd::lanes<std::int32_t, Arch>;
  if constexpr (std::is_same<Arch, simd::scalar>::value || std::is_same<Out, std::int32_t>::value) {
    store_narrow<Out, Arch>(dst, v0), store_narrow<Out, Arch>(dst + L, v1);
    store_narrow<Out, Arch>(dst + 2 * L, v2), store_narrow<Out, Arch>(dst + 3 * L, v3);
  } else {
#if defined(__AVX2__)
    // per 128-bit half: int16 [v0 lo4, v1 lo4 | v0 hi4, v1 hi4], then bytes in 4-lane groups
    // [v0a v1a v2a v3a | v0b v1b v2b v3b]; the permutation puts each pack's halves together.
    const __m256i p01 = _mm256_packs_epi32(v0, v1), p23 = _mm256_packs_epi32(v2, v3);
    const __m256i b = std::is_same<Out, std::int8_t>::value ? _mm256_packs_epi16(p01, p23) : _mm256_packus_epi16(p01, p23);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst),
                        _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
#endif
  }
}

// One contiguous run of len accumulators. VectorParams: element i uses the plan's channel
// channel0 + i; else every element uses channel channel0 (per tensor: 0).
// Fused: the fused AVX2 fixed-point body (plan.all_right_shift; with VectorParams, channel0
// a multiple of 8).
template <requantization Rounding, bool LeftShift, bool VectorParams, class Arch, class Out, bool Fused = false>
QUANT_ALWAYS_INLINE void requantize_run(const requantize_plan& plan, const std::int32_t* acc, std::size_t len,
                                        std::size_t channel0, Out* out) noexcept {
  constexpr std::size_t L = simd::lanes<std::int32_t, Arch>;
  using P = simd::pack<std::int32_t, Arch>;
  requantize_view view = view_of(plan);
  view.rounding = Rounding;  // lets the compiler drop the other convention's loads
  auto lanes_at = [&](std::size_t i) QUANT_INLINE_LAMBDA {
#if defined(__AVX2__)
    if constexpr (Fused)
      return VectorParams ? load_fused_lanes(view, channel0 + i) : broadcast_fused_lanes(view, channel0);
    else
#endif
      return VectorParams ? load_lanes<Arch>(view, channel0 + i) : broadcast_lanes<Arch>(view, channel0);
  };
  auto body = [&](const P& a, const auto& k) QUANT_INLINE_LAMBDA -> P {
#if defined(__AVX2__)
    if constexpr (Fused)
      return requantize_fused(a, k);
    else
#endif
      return requantize_lanes<Rounding, LeftShift, Arch>(a, k);
  };
  std::size_t i = 0;
  if constexpr (VectorParams) {
    for (; i + 4 * L <= len; i += 4 * L) {
      const P r0 = body(simd::load<Arch>(acc + i), lanes_at(i));
      const P r1 = body(simd::load<Arch>(acc + i + L), lanes_at(i + L));
      const P r2 = body(simd::load<Arch>(acc + i + 2 * L), lanes_at(i + 2 * L));
      const P r3 = body(simd::load<Arch>(acc + i + 3 * L), lanes_at(i + 3 * L));
      store_narrow4<Out, Arch>(out + i, r0, r1, r2, r3);
    }
    for (; i + L <= len; i += L)
      store_narrow<Out, Arch>(out + i, body(simd::load<Arch>(acc + i), lanes_at(i)));
  } else {
    const auto k = lanes_at(0);
    for (; i + 4 * L <= len; i += 4 * L) {
      const P r0 = body(simd::load<Arch>(acc + i), k);
      const P r1 = body(simd::load<Arch>(acc + i + L), k);
      const P r2 = body(simd::load<Arch>(acc + i + 2 * L), k);
      const P r3 = body(simd::load<Arch>(acc + i + 3 * L), k);
      store_narrow4<Out, Arch>(out + i, r0, r1, r2, r3);
    }
    for (; i + L <= len; i += L)
      store_narrow<Out, Arch>(out + i, body(simd::load<Arch>(acc + i), k));
  }
  if constexpr (L > 1) {  // the tail: the scalar body, same arithmetic
    for (; i < len; ++i) {
      const std::size_t c = VectorParams ? channel0 + i : channel0;
      store_narrow<Out, simd::scalar>(
          out + i, requantize_lanes<Rounding, LeftShift, simd::scalar>(acc[i], broadcast_lanes<simd::scalar>(view, c)));
    }
  }
}

// Four rows of a per-channel row-major block at once: each pack of channel constants is
// loaded once and applied to the four rows (a quarter of the table loads of four single-row
// runs). Same bodies, same results.
template <requantization Rounding, bool LeftShift, class Arch, class Out, bool Fused = false>
QUANT_ALWAYS_INLINE void requantize_rows4(const requantize_plan& plan, const std::int32_t* acc, std::size_t channels,
                                          Out* out) noexcept {
  constexpr std::size_t L = simd::lanes<std::int32_t, Arch>;
  requantize_view view = view_of(plan);
  view.rounding = Rounding;
  const std::size_t s = channels;
  std::size_t c = 0;
  if constexpr (L > 1) {
    for (; c + L <= channels; c += L) {
#if defined(__AVX2__)
      if constexpr (Fused) {
        const fused_fixed_lanes k = load_fused_lanes(view, c);
        for (std::size_t j = 0; j < 4; ++j)
          store_narrow<Out, Arch>(out + j * s + c,
                                  simd::pack<std::int32_t, Arch>(requantize_fused(simd::load<Arch>(acc + j * s + c), k)));
        continue;
      }
#endif
      const requantize_lanes_t<Arch> k = load_lanes<Arch>(view, c);
      for (std::size_t j = 0; j < 4; ++j)
        store_narrow<Out, Arch>(out + j * s + c,
                                requantize_lanes<Rounding, LeftShift, Arch>(simd::load<Arch>(acc + j * s + c), k));
    }
  }
  for (; c < channels; ++c) {
    const requantize_lanes_t<simd::scalar> k = broadcast_lanes<simd::scalar>(view, c);
    for (std::size_t j = 0; j < 4; ++j)
      store_narrow<Out, simd::scalar>(out + j * s + c,
                                      requantize_lanes<Rounding, LeftShift, simd::scalar>(acc[j * s + c], k));
  }
}

// Elements per piece handed to one thread (boundaries independent of the thread count).
// Blocks below requantize_parallel_min stay on one thread: at a few elements per ns they
// take tens of microseconds, the scale of waking a second thread.
constexpr std::size_t requantize_piece = std::size_t(1) << 14;
constexpr std::size_t requantize_parallel_min = std::size_t(1) << 18;
inline std::size_t parallel_size(std::size_t n) noexcept { return n >= requantize_parallel_min ? n : 0; }

template <class Out>
void check_output_range(const requantize_params& p, const char* function) {
  constexpr std::int64_t omin = std::numeric_limits<Out>::min(), omax = std::numeric_limits<Out>::max();
  if (p.lo < omin) detail::fail<invalid_argument>(function, "p.lo", p.lo, "below the output type's minimum " + std::to_string(omin));
  if (p.hi > omax) detail::fail<invalid_argument>(function, "p.hi", p.hi, "above the output type's maximum " + std::to_string(omax));
}

template <class F>
void dispatch_rounding(const requantize_plan& plan, F&& f) {
  if (plan.rounding == requantization::float_scale)
    f(std::integral_constant<requantization, requantization::float_scale>{}, std::false_type{});
  else if (plan.any_left_shift)
    f(std::integral_constant<requantization, requantization::fixed_point>{}, std::true_type{});
  else
    f(std::integral_constant<requantization, requantization::fixed_point>{}, std::false_type{});
}

// dispatch_rounding plus the choice of the fused AVX2 fixed-point body (all shifts >= 1).
template <class Arch, class F>
void dispatch_fused(const requantize_plan& plan, F&& f) {
  dispatch_rounding(plan, [&](auto rounding, auto left) {
    constexpr bool can_fuse = decltype(rounding)::value == requantization::fixed_point && !decltype(left)::value &&
                              is_avx2_arch<Arch>;
    if (can_fuse && plan.all_right_shift)
      f(rounding, left, std::integral_constant<bool, can_fuse>{});
    else
      f(rounding, left, std::false_type{});
  });
}

// requantize() on an explicit architecture (tests compare simd::scalar with AVX2).
template <class Arch, class Out>
void requantize_with(const std::int32_t* acc, std::size_t rows, std::size_t channels, const requantize_params& p,
                     Out* out) {
  static_assert(std::is_same<Out, std::int8_t>::value || std::is_same<Out, std::uint8_t>::value ||
                    std::is_same<Out, std::int32_t>::value,
                "requantize: Out must be int8_t, uint8_t or int32_t");
  const char* fn = "requantize";
  const requantize_plan plan(p, fn);
  if (plan.channels != 1 && plan.channels != channels)
    detail::fail<length_error>(fn, "channels", channels,
                               "the parameters hold " + std::to_string(plan.channels) + " channels (or 1 for per tensor)");
  check_output_range<Out>(p, fn);
  const std::size_t n = rows * channels;
  if (n == 0) return;
  dispatch_fused<Arch>(plan, [&](auto rounding, auto left, auto fused) {
    constexpr requantization R = decltype(rounding)::value;
    constexpr bool LS = decltype(left)::value, F = decltype(fused)::value;
    if (plan.channels == 1) {  // per tensor: one flat run
      const std::size_t pieces = (n + requantize_piece - 1) / requantize_piece;
      detail::parallel_for(pieces, parallel_size(n), [&](std::size_t t) {
        const std::size_t b = t * requantize_piece, e = std::min(n, b + requantize_piece);
        requantize_run<R, LS, false, Arch, Out, F>(plan, acc + b, e - b, 0, out + b);
      });
    } else {  // rows start at channel 0: pack starts are multiples of 8, as the fused body needs
      const std::size_t rows_per_piece = std::max<std::size_t>(1, requantize_piece / channels);
      const std::size_t pieces = (rows + rows_per_piece - 1) / rows_per_piece;
      detail::parallel_for(pieces, parallel_size(n), [&](std::size_t t) {
        const std::size_t rb = t * rows_per_piece, re = std::min(rows, rb + rows_per_piece);
        std::size_t r = rb;
        if constexpr (R == requantization::fixed_point)  // five tables: share their loads across rows
          for (; r + 4 <= re; r += 4)
            requantize_rows4<R, LS, Arch, Out, F>(plan, acc + r * channels, channels, out + r * channels);
        for (; r < re; ++r)
          requantize_run<R, LS, true, Arch, Out, F>(plan, acc + r * channels, channels, 0, out + r * channels);
      });
    }
  });
}

// requantize_channel_major() on an explicit architecture.
template <class Arch, class Out>
void requantize_channel_major_with(const std::int32_t* acc, std::size_t channels, std::size_t cols,
                                   const requantize_params& p, Out* out) {
  static_assert(std::is_same<Out, std::int8_t>::value || std::is_same<Out, std::uint8_t>::value ||
                    std::is_same<Out, std::int32_t>::value,
                "requantize_channel_major: Out must be int8_t, uint8_t or int32_t");
  const char* fn = "requantize_channel_major";
  const requantize_plan plan(p, fn);
  if (plan.channels != 1 && plan.channels != channels)
    detail::fail<length_error>(fn, "channels", channels,
                               "the parameters hold " + std::to_string(plan.channels) + " channels (or 1 for per tensor)");
  check_output_range<Out>(p, fn);
  const std::size_t n = channels * cols;
  if (n == 0) return;
  const std::size_t per_row = (cols + requantize_piece - 1) / requantize_piece;
  dispatch_fused<Arch>(plan, [&](auto rounding, auto left, auto fused) {
    constexpr requantization R = decltype(rounding)::value;
    constexpr bool LS = decltype(left)::value, F = decltype(fused)::value;
    detail::parallel_for(channels * per_row, parallel_size(n), [&](std::size_t t) {
      const std::size_t c = t / per_row, b = (t % per_row) * requantize_piece, e = std::min(cols, b + requantize_piece);
      requantize_run<R, LS, false, Arch, Out, F>(plan, acc + c * cols + b, e - b, plan.channels == 1 ? 0 : c,
                                                 out + c * cols + b);
    });
  });
}

}  // namespace kernels

// ---- public entry points -----------------------------------------------------------------------

// One accumulator of channel c (ignored for per-tensor parameters) -> the output integer.
// p must satisfy what requantize() checks (parameters from make_requantize_params do).
inline std::int32_t requantize_one(std::int32_t acc, std::size_t channel, const requantize_params& p) noexcept {
  const std::size_t c = p.channels() == 1 ? 0 : channel;
  const std::int32_t lo = p.lo - p.zero_point, hi = p.hi - p.zero_point;
  std::int32_t q;
  if (p.rounding == requantization::fixed_point) {
    const fixed_point_multiplier m = p.fixed[c];
    const std::int32_t x = m.shift < 0 ? kernels::saturating_left_shift(acc, -m.shift) : acc;
    q = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, m.q31), m.shift > 0 ? m.shift : 0);
  } else {
    const float v = static_cast<float>(acc) * p.scale[c];
    q = static_cast<std::int32_t>(
        round_half_to_even::apply(std::min(std::max(v, static_cast<float>(lo)), static_cast<float>(hi))));
  }
  return std::min(std::max(q, lo), hi) + p.zero_point;
}

// acc[rows, channels] row-major (channel fastest) -> out[rows, channels]; Out = int8_t,
// uint8_t or int32_t (for inspection). Exact; identical for every thread count and on the
// scalar and AVX2 paths. Throws quant::length_error naming "channels" when p has neither 1
// nor `channels` channels, quant::invalid_argument naming "p.lo" / "p.hi" when the bounds
// do not fit Out, and the checks of kernels::requantize_plan.
template <class Out>
void requantize(const std::int32_t* acc, std::size_t rows, std::size_t channels, const requantize_params& p, Out* out) {
  kernels::requantize_with<kernels::requantize_arch>(acc, rows, channels, p, out);
}

// acc[channels, cols] row-major (a channel per row, e.g. a convolution output [C, H*W]).
template <class Out>
void requantize_channel_major(const std::int32_t* acc, std::size_t channels, std::size_t cols,
                              const requantize_params& p, Out* out) {
  kernels::requantize_channel_major_with<kernels::requantize_arch>(acc, channels, cols, p, out);
}

// std::vector convenience: acc.size() must be rows * channels.
template <class Out>
std::vector<Out> requantize(const std::vector<std::int32_t>& acc, std::size_t channels, const requantize_params& p) {
  if (channels == 0 || acc.size() % channels != 0)
    detail::fail<length_error>("requantize", "acc.size()", acc.size(),
                               "must be a multiple of channels = " + std::to_string(channels));
  std::vector<Out> out(acc.size());
  requantize(acc.data(), acc.size() / channels, channels, p, out.data());
  return out;
}

}  // namespace quant
