// quant/qparams.hpp — the integer grid and the scale / zero point that map reals onto it
// (docs/numerics.md; Jacob et al. 2018).
//
//   grid:     bits b in 2..16; signed [-2^(b-1), 2^(b-1)-1] or unsigned [0, 2^b-1];
//             narrow range drops the lowest value (signed: [-(2^(b-1)-1), 2^(b-1)-1]).
//   qparams:  one (scale, zero point) per tensor, per channel along an axis, or per group
//             of g consecutive elements along an axis. Scales are finite and > 0 with a
//             finite float reciprocal (s >= 1/FLT_MAX); zero points are integers on the
//             grid. Everything is validated on construction, so kernels never check again.
//   from a range: scale_from_range turns [min, max] into (s, z) with PyTorch's
//             `_calculate_qparams` arithmetic (float32), the range widened to contain 0,
//             scale floored at FLT_EPSILON; the symmetric-scale convention is selectable.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "error.hpp"
#include "rounding.hpp"

namespace quant {

// ---- grid ---------------------------------------------------------------------------
struct grid {
  int bits = 8;
  bool is_signed = true;
  bool narrow = false;

  constexpr std::int32_t qmin() const noexcept {
    return is_signed ? -(std::int32_t(1) << (bits - 1)) + (narrow ? 1 : 0) : (narrow ? 1 : 0);
  }
  constexpr std::int32_t qmax() const noexcept {
    return is_signed ? (std::int32_t(1) << (bits - 1)) - 1 : (std::int32_t(1) << bits) - 1;
  }
  constexpr std::int32_t levels() const noexcept { return qmax() - qmin() + 1; }

  // Throws quant::invalid_argument unless 2 <= bits <= 16.
  void validate(const char* function) const {
    if (bits < 2 || bits > 16)
      detail::fail<invalid_argument>(function, "bits", bits, "must be in 2..16");
  }

  static constexpr grid int_signed(int b, bool narrow_range = false) noexcept { return {b, true, narrow_range}; }
  static constexpr grid int_unsigned(int b, bool narrow_range = false) noexcept { return {b, false, narrow_range}; }
  friend constexpr bool operator==(const grid& a, const grid& b) noexcept {
    return a.bits == b.bits && a.is_signed == b.is_signed && a.narrow == b.narrow;
  }
  friend constexpr bool operator!=(const grid& a, const grid& b) noexcept { return !(a == b); }
};

enum class granularity { per_tensor, per_channel, per_group };
enum class scheme { symmetric, asymmetric };

// How a symmetric scale is derived from absmax (toolkits differ, docs/numerics.md).
enum class symmetric_scale_convention {
  pytorch,          // absmax / ((qmax - qmin) / 2)
  aimet,            // absmax / floor((2^b - 1) / 2)
  brevitas_narrow,  // absmax / (2^(b-1) - 1)
};

namespace detail {
inline std::size_t wrap_axis(std::ptrdiff_t axis, std::size_t ndim, const char* function) {
  const std::ptrdiff_t n = static_cast<std::ptrdiff_t>(ndim);
  if (axis < -n || axis >= n)
    fail<invalid_argument>(function, "axis", axis,
                           "out of range for a tensor of " + std::to_string(ndim) + " dimensions");
  return static_cast<std::size_t>(axis < 0 ? axis + n : axis);
}

// Kernels multiply by the float reciprocal 1/s, so s must also be large enough for 1/s to be
// finite (s >= ~2.94e-39, a subnormal): below that, 0 * (1/s) = 0 * inf would turn a zero
// input into NaN.
inline void check_scale(float s, const char* function) {
  if (!(std::isfinite(s) && s > 0.0f)) fail<invalid_argument>(function, "scale", s, "must be finite and > 0");
  if (!std::isfinite(1.0f / s))
    fail<invalid_argument>(function, "scale", s, "is so small that 1/scale overflows float (needs scale >= 1/FLT_MAX)");
}
}  // namespace detail

// ---- qparams -----------------------------------------------------------------------
class qparams {
 public:
  qparams() : qparams(per_tensor(quant::grid{}, 1.0f, 0)) {}

  static qparams per_tensor(quant::grid g, float scale, std::int32_t zero_point = 0) {
    return qparams(g, {scale}, {zero_point}, granularity::per_tensor, 0, 0, "qparams::per_tensor");
  }
  // One (scale, zero point) per slice along `axis` (negative counts from the end).
  static qparams per_channel(quant::grid g, std::vector<float> scales, std::vector<std::int32_t> zero_points,
                             std::ptrdiff_t axis) {
    return qparams(g, std::move(scales), std::move(zero_points), granularity::per_channel, axis, 0,
                   "qparams::per_channel");
  }
  // Per channel with all zero points 0 (symmetric).
  static qparams per_channel(quant::grid g, std::vector<float> scales, std::ptrdiff_t axis) {
    std::vector<std::int32_t> z(scales.size(), 0);
    return per_channel(g, std::move(scales), std::move(z), axis);
  }
  // One (scale, zero point) per block of `group_size` consecutive elements along `axis`.
  // Layout: the tensor's shape with shape[axis] replaced by shape[axis] / group_size,
  // row-major (for W[out, in] grouped along in: scales[o * (in/g) + j]).
  static qparams per_group(quant::grid g, std::vector<float> scales, std::vector<std::int32_t> zero_points,
                           std::ptrdiff_t axis, std::size_t group_size) {
    return qparams(g, std::move(scales), std::move(zero_points), granularity::per_group, axis, group_size,
                   "qparams::per_group");
  }

  const quant::grid& grid() const noexcept { return grid_; }
  std::int32_t qmin() const noexcept { return grid_.qmin(); }
  std::int32_t qmax() const noexcept { return grid_.qmax(); }
  quant::granularity granularity() const noexcept { return granularity_; }
  std::ptrdiff_t axis() const noexcept { return axis_; }
  std::size_t group_size() const noexcept { return group_size_; }
  std::size_t size() const noexcept { return scales_.size(); }
  const std::vector<float>& scales() const noexcept { return scales_; }
  const std::vector<std::int32_t>& zero_points() const noexcept { return zero_points_; }
  float scale(std::size_t i = 0) const { return scales_.at(i); }
  std::int32_t zero_point(std::size_t i = 0) const { return zero_points_.at(i); }
  bool is_symmetric() const noexcept {
    for (auto z : zero_points_)
      if (z != 0) return false;
    return true;
  }

  // Checks that these parameters fit a tensor of `shape` and returns the wrapped axis
  // (0 for per-tensor). Throws quant::invalid_argument / quant::length_error.
  template <class Shape>
  std::size_t check_shape(const Shape& shape, const char* function) const {
    if (granularity_ == granularity::per_tensor) return 0;
    const std::size_t ax = detail::wrap_axis(axis_, shape.size(), function);
    const std::size_t c = static_cast<std::size_t>(shape[ax]);
    if (granularity_ == granularity::per_channel) {
      if (c != scales_.size())
        detail::fail<length_error>(function, "shape", detail::shape_string(shape),
                                   "axis " + std::to_string(ax) + " has " + std::to_string(c) + " channels but " +
                                       std::to_string(scales_.size()) + " scales were given");
      return ax;
    }
    if (c % group_size_ != 0)
      detail::fail<invalid_argument>(function, "group_size", group_size_,
                                     "does not divide axis " + std::to_string(ax) + " of size " + std::to_string(c));
    std::size_t total = 1;
    for (auto d : shape) total *= static_cast<std::size_t>(d);
    if (total / group_size_ != scales_.size())
      detail::fail<length_error>(function, "shape", detail::shape_string(shape),
                                 "needs " + std::to_string(total / group_size_) + " group scales but " +
                                     std::to_string(scales_.size()) + " were given");
    return ax;
  }

 private:
  qparams(quant::grid g, std::vector<float> s, std::vector<std::int32_t> z, quant::granularity gr,
          std::ptrdiff_t axis, std::size_t group, const char* function)
      : grid_(g), scales_(std::move(s)), zero_points_(std::move(z)), granularity_(gr), axis_(axis),
        group_size_(group) {
    grid_.validate(function);
    if (scales_.empty()) detail::fail<invalid_argument>(function, "scales.size()", 0, "must be >= 1");
    if (scales_.size() != zero_points_.size())
      detail::fail<length_error>(function, "zero_points.size()", zero_points_.size(),
                                 "must equal scales.size() = " + std::to_string(scales_.size()));
    if (gr == granularity::per_group && group == 0)
      detail::fail<invalid_argument>(function, "group_size", group, "must be >= 1");
    for (float v : scales_) detail::check_scale(v, function);
    for (std::int32_t v : zero_points_)
      if (v < grid_.qmin() || v > grid_.qmax())
        detail::fail<invalid_argument>(function, "zero_point", v,
                                       "must lie on the grid [" + std::to_string(grid_.qmin()) + ", " +
                                           std::to_string(grid_.qmax()) + "]");
  }

  quant::grid grid_;
  std::vector<float> scales_;
  std::vector<std::int32_t> zero_points_;
  quant::granularity granularity_;
  std::ptrdiff_t axis_;
  std::size_t group_size_;
};

// ---- from a range --------------------------------------------------------------------
struct scale_zero_point {
  float scale;
  std::int32_t zero_point;
};

// (s, z) for the range [min_val, max_val] on grid `g` (PyTorch `_calculate_qparams`,
// float32 arithmetic): the range is widened to contain 0; asymmetric:
// s = (max - min) / (qmax - qmin), z = qmin - round_half_even(min / s) clamped to the grid;
// symmetric: s = absmax / denominator(convention), z = 0 on signed grids and
// (qmin + qmax + 1) / 2 on unsigned ones. s is floored at FLT_EPSILON so a constant or
// all-zero tensor still gets a valid scale.
inline scale_zero_point scale_from_range(grid g, float min_val, float max_val, scheme sch,
                                         symmetric_scale_convention conv = symmetric_scale_convention::pytorch) {
  const char* fn = "scale_from_range";
  g.validate(fn);
  if (!std::isfinite(min_val)) detail::fail<domain_error>(fn, "min_val", min_val, "must be finite");
  if (!std::isfinite(max_val)) detail::fail<domain_error>(fn, "max_val", max_val, "must be finite");
  if (min_val > max_val)
    detail::fail<invalid_argument>(fn, "min_val", min_val, "must be <= max_val = " + std::to_string(max_val));
  const float lo = std::min(min_val, 0.0f);
  const float hi = std::max(max_val, 0.0f);
  const float qmin = static_cast<float>(g.qmin()), qmax = static_cast<float>(g.qmax());
  if (sch == scheme::symmetric) {
    const float absmax = std::max(-lo, hi);
    float denom = 0.0f;
    switch (conv) {
      case symmetric_scale_convention::pytorch: denom = (qmax - qmin) / 2.0f; break;
      case symmetric_scale_convention::aimet: denom = std::floor((std::ldexp(1.0f, g.bits) - 1.0f) / 2.0f); break;
      case symmetric_scale_convention::brevitas_narrow: denom = std::ldexp(1.0f, g.bits - 1) - 1.0f; break;
    }
    const float s = std::max(absmax / denom, FLT_EPSILON);
    const std::int32_t z = g.is_signed ? 0 : (g.qmin() + g.qmax() + 1) / 2;
    return {s, z};
  }
  const float s = std::max((hi - lo) / (qmax - qmin), FLT_EPSILON);
  const float r = round_half_to_even::apply(lo / s);  // torch.round: half to even
  float zf = qmin - r;
  zf = std::min(std::max(zf, qmin), qmax);
  return {s, static_cast<std::int32_t>(zf)};
}

}  // namespace quant
