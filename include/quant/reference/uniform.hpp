// quant/reference/uniform.hpp — quant::ref: the affine formulas of docs/numerics.md as
// plain scalar loops over flat row-major buffers. No SIMD, no plans, no threads: the
// yardstick every fast path is tested against, bit for bit.
//
// Rounding here uses the C library (std::nearbyint under the default FP environment,
// std::round, and double-precision floor(v + 0.5)), deliberately a different route from
// the exact trunc-based policies of rounding.hpp.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../detail/counter_random.hpp"
#include "../qparams.hpp"
#include "../rounding.hpp"

namespace quant {
namespace ref {

inline float round_value(float v, rounding_mode mode, std::uint64_t seed = 0, std::uint64_t index = 0) {
  switch (mode) {
    case rounding_mode::half_to_even: return std::nearbyint(v);
    case rounding_mode::half_away_from_zero: return std::round(v);
    case rounding_mode::half_up: return static_cast<float>(std::floor(static_cast<double>(v) + 0.5));
    case rounding_mode::floor: return std::floor(v);
    case rounding_mode::ceil: return std::ceil(v);
    case rounding_mode::toward_zero: return std::trunc(v);
    case rounding_mode::stochastic: {
      const double f = std::floor(static_cast<double>(v));
      const float u = detail::counter_uniform(seed, index);
      return static_cast<float>(f + (static_cast<double>(u) < static_cast<double>(v) - f ? 1.0 : 0.0));
    }
  }
  return v;
}

// Index of the (scale, zero point) that element `e` of a tensor of `shape` uses.
inline std::size_t param_index(const std::vector<std::size_t>& shape, const qparams& p, std::size_t e) {
  if (p.granularity() == granularity::per_tensor) return 0;
  const std::size_t ax = detail::wrap_axis(p.axis(), shape.size(), "ref::param_index");
  std::size_t inner = 1;
  for (std::size_t d = ax + 1; d < shape.size(); ++d) inner *= shape[d];
  const std::size_t c = (e / inner) % shape[ax];
  if (p.granularity() == granularity::per_channel) return c;
  const std::size_t o = e / (inner * shape[ax]);
  const std::size_t i = e % inner;
  const std::size_t groups = shape[ax] / p.group_size();
  return (o * groups + c / p.group_size()) * inner + i;
}

struct affine_element {
  float s, inv_s, z, qmin, qmax;
};

inline affine_element element_params(const std::vector<std::size_t>& shape, const qparams& p, std::size_t e) {
  const std::size_t k = param_index(shape, p, e);
  const float s = p.scales()[k];
  return {s, 1.0f / s, static_cast<float>(p.zero_points()[k]), static_cast<float>(p.qmin()),
          static_cast<float>(p.qmax())};
}

// Grid value of x (float, clamped); PyTorch convention or AIMET (clamp input first).
inline float to_grid(float x, const affine_element& a, rounding_mode mode, bool clamp_input_first,
                     std::uint64_t seed, std::uint64_t index) {
  if (clamp_input_first) {
    const float lo = (a.qmin - a.z) * a.s, hi = (a.qmax - a.z) * a.s;
    if (x < lo) x = lo;
    if (x > hi) x = hi;
  }
  if (std::isnan(x)) return x;
  float q = round_value(x * a.inv_s, mode, seed, index) + a.z;
  if (q < a.qmin) q = a.qmin;
  if (q > a.qmax) q = a.qmax;
  return q;
}

inline std::vector<float> fake_quantize(const std::vector<float>& x, const std::vector<std::size_t>& shape,
                                        const qparams& p, rounding_mode mode = rounding_mode::half_to_even,
                                        bool clamp_input_first = false, std::uint64_t seed = 0) {
  std::vector<float> y(x.size());
  for (std::size_t e = 0; e < x.size(); ++e) {
    const affine_element a = element_params(shape, p, e);
    const float q = to_grid(x[e], a, mode, clamp_input_first, seed, e);
    y[e] = (q - a.z) * a.s;
  }
  return y;
}

inline std::vector<std::int32_t> quantize(const std::vector<float>& x, const std::vector<std::size_t>& shape,
                                          const qparams& p, rounding_mode mode = rounding_mode::half_to_even,
                                          bool clamp_input_first = false, std::uint64_t seed = 0) {
  std::vector<std::int32_t> q(x.size());
  for (std::size_t e = 0; e < x.size(); ++e)
    q[e] = static_cast<std::int32_t>(to_grid(x[e], element_params(shape, p, e), mode, clamp_input_first, seed, e));
  return q;
}

// Clipped STE mask: 1 where qmin <= round(x * inv_s) + z <= qmax (before clamping), with
// the forward's rounding policy (stochastic: the same u(seed, e) as the forward).
inline std::vector<float> ste_mask(const std::vector<float>& x, const std::vector<std::size_t>& shape,
                                   const qparams& p, rounding_mode mode = rounding_mode::half_to_even,
                                   std::uint64_t seed = 0) {
  std::vector<float> m(x.size());
  for (std::size_t e = 0; e < x.size(); ++e) {
    const affine_element a = element_params(shape, p, e);
    const float q = round_value(x[e] * a.inv_s, mode, seed, e) + a.z;
    m[e] = (q >= a.qmin && q <= a.qmax) ? 1.0f : 0.0f;
  }
  return m;
}

}  // namespace ref
}  // namespace quant
