// quant/reference/observers.hpp — quant::ref for range setting (docs/observers.md): the
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

// The canonical power-of-two-lattice histogram of x with `bins` bins, computed directly
// from all the data: the smallest exponent e >= ilogb(absmax) - 40 with
// floor(max / 2^e) - floor(min / 2^e) < bins, then one count per floor(x / 2^e).
struct lattice_histogram {
  int exponent = 0;
  std::int64_t origin = 0;
  std::vector<std::uint64_t> counts;
};

inline lattice_histogram make_lattice_histogram(const std::vector<float>& x, std::size_t bins) {
  const range r = min_max(x.data(), x.size());
  const double absmax = std::max(std::fabs(static_cast<double>(r.min)), std::fabs(static_cast<double>(r.max)));
  lattice_histogram h;
  h.exponent = absmax == 0.0 ? -200 : std::ilogb(absmax) - 40;
  auto index = [&](float v) { return static_cast<std::int64_t>(std::floor(v / std::pow(2.0, h.exponent))); };
  while (index(r.max) - index(r.min) + 1 > static_cast<std::int64_t>(bins)) ++h.exponent;
  h.origin = index(r.min);
  h.counts.assign(bins, 0);
  for (float v : x) ++h.counts[static_cast<std::size_t>(index(v) - h.origin)];
  return h;
}

// PyTorch's histogram L2 error by direct piecewise integration: each source bin (uniform
// density) is cut at the destination-bin boundaries and every piece integrates
// (x - centre)^2 exactly, destinations clamped to [0, dst_bins - 1].
inline double histogram_l2_error(const std::vector<double>& hist, double bin_width, std::size_t start,
                                 std::size_t end, std::size_t dst_bins) {
  const double dw = bin_width * static_cast<double>(end - start + 1) / static_cast<double>(dst_bins);
  const double last = static_cast<double>(dst_bins - 1);
  double total = 0.0;
  for (std::size_t i = 0; i < hist.size(); ++i) {
    const double b = (static_cast<double>(i) - static_cast<double>(start)) * bin_width, e = b + bin_width;
    double u = b, piece_sum = 0.0;
    while (u < e) {
      const double j = std::min(std::max(std::floor(u / dw), 0.0), last);
      const double boundary = j == last ? e : (j + 1.0) * dw;
      const double v = std::min(e, std::max(boundary, u));
      const double c = (j + 0.5) * dw;
      piece_sum += ((v - c) * (v - c) * (v - c) - (u - c) * (u - c) * (u - c)) / 3.0;
      if (v == u) break;
      u = v;
    }
    total += hist[i] / bin_width * piece_sum;
  }
  return total;
}

}  // namespace ref
}  // namespace quant
