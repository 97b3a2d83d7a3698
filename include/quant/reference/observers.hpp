// quant/reference/observers.hpp — quant::ref for range setting (ALGORITHMS.md §2): the
// statistics behind the observers as plain scalar loops in double, straight from the
// formulas, for the tests to hold the fast paths to.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "../qparams.hpp"
#include "uniform.hpp"

namespace quant {
namespace ref {

struct range {
  float min, max;
};

inline range min_max(const float* x, std::size_t n) {
  range r{std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()};
  for (std::size_t i = 0; i < n; ++i) {
    if (x[i] < r.min) r.min = x[i];
    if (x[i] > r.max) r.max = x[i];
  }
  return r;
}

// sum_i |(x_i - fq(x_i)) * norm|^p in double, fq from ref::fake_quantize (bit-exact with
// the kernels' affine body).
inline double lp_error(const std::vector<float>& x, float scale, std::int32_t zero_point, grid g, double p,
                       double norm = 1.0, rounding_mode mode = rounding_mode::half_to_even,
                       bool clamp_input_first = false) {
  const qparams q = qparams::per_tensor(g, scale, zero_point);
  const std::vector<float> y = fake_quantize(x, {x.size()}, q, mode, clamp_input_first);
  double sum = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double e = std::fabs((static_cast<double>(x[i]) - static_cast<double>(y[i])) * norm);
    sum += p == 2.0 ? e * e : std::pow(e, p);
  }
  return sum;
}

// The q-th percentile (q in [0, 100]) with linear interpolation between the two nearest
// ranks (numpy's default "linear" method): position q/100 * (n - 1) in sorted order.
inline double percentile(std::vector<float> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q / 100.0 * static_cast<double>(v.size() - 1);
  const std::size_t lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  const double f = pos - static_cast<double>(lo);
  return static_cast<double>(v[lo]) + f * (static_cast<double>(v[hi]) - static_cast<double>(v[lo]));
}

}  // namespace ref
}  // namespace quant
