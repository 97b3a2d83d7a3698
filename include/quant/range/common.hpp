// quant/range/common.hpp — what every observer (range setter) shares: the channel
// layout of a tensor around the quantization axis, the validated min/max reduction that
// feeds all of them, channel-major gathering, and turning ranges into qparams.
//
// Layout. A row-major tensor with a channel axis decomposes its flat index as (o, c, i)
// with sizes (outer, C, inner); per tensor is C = 1. All observers reduce per channel c.
//
// Min/max. One fused pass computes min, max and a non-finite flag (sum of x * 0, which is
// NaN as soon as one x is NaN or +-inf): observers reject NaN/inf because one of them
// would poison the range (docs/numerics.md). Min/max are exact, so any split across
// threads gives the same answer; -0 is normalised to +0 so that saved state does not
// depend on the order in which the two zeros were met.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../detail/parallel.hpp"
#include "../error.hpp"
#include "../qparams.hpp"
#include "../simd/arch.hpp"

namespace quant {
namespace detail {

// (outer, channels, inner) around the axis; channels == 1 and axis unset for per tensor.
struct channel_layout {
  std::size_t outer = 1, channels = 1, inner = 1, n = 0;
  bool per_channel = false;
  std::size_t axis = 0;  // wrapped
  std::size_t per_channel_size() const noexcept { return outer * inner; }
};

template <class Shape>
channel_layout make_channel_layout(const Shape& shape, std::optional<std::ptrdiff_t> axis, const char* function) {
  channel_layout l;
  std::size_t n = 1;
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  l.n = n;
  if (!axis) {
    l.inner = n;
    return l;
  }
  if (shape.size() == 0)
    fail<invalid_argument>(function, "channel_axis", *axis, "a 0-dimensional tensor has no channel axis");
  l.per_channel = true;
  l.axis = wrap_axis(*axis, shape.size(), function);
  for (std::size_t d = 0; d < l.axis; ++d) l.outer *= static_cast<std::size_t>(shape[d]);
  l.channels = static_cast<std::size_t>(shape[l.axis]);
  for (std::size_t d = l.axis + 1; d < shape.size(); ++d) l.inner *= static_cast<std::size_t>(shape[d]);
  return l;
}

inline void require_nonempty(std::size_t n, const char* function) {
  if (n == 0) fail<domain_error>(function, "x.size()", 0, "an observer needs at least one value");
}

struct min_max_result {
  float min = std::numeric_limits<float>::infinity();
  float max = -std::numeric_limits<float>::infinity();
  bool finite = true;
};

inline min_max_result combine(const min_max_result& a, const min_max_result& b) noexcept {
  return {std::min(a.min, b.min), std::max(a.max, b.max), a.finite && b.finite};
}

// min, max and finiteness of x[0..n), one thread. Four independent accumulators hide the
// latency of min/max; the scalar tail uses the same comparisons.
template <class Arch>
min_max_result min_max_run(const float* x, std::size_t n) noexcept {
  constexpr std::size_t L = simd::lanes<float, Arch>;
  constexpr float inf = std::numeric_limits<float>::infinity();
  float mn = inf, mx = -inf, bad = 0.0f;
  std::size_t i = 0;
  if constexpr (L > 1) {
    using P = simd::pack<float, Arch>;
    if (n >= 4 * L) {
      P lo[4] = {P(inf), P(inf), P(inf), P(inf)};
      P hi[4] = {P(-inf), P(-inf), P(-inf), P(-inf)};
      P nf[4] = {P(0.0f), P(0.0f), P(0.0f), P(0.0f)};
      for (; i + 4 * L <= n; i += 4 * L) {
        for (std::size_t u = 0; u < 4; ++u) {
          const P v = simd::load<Arch>(x + i + u * L);
          lo[u] = xsimd::min(lo[u], v);
          hi[u] = xsimd::max(hi[u], v);
          nf[u] = nf[u] + v * P(0.0f);
        }
      }
      for (; i + L <= n; i += L) {
        const P v = simd::load<Arch>(x + i);
        lo[0] = xsimd::min(lo[0], v);
        hi[0] = xsimd::max(hi[0], v);
        nf[0] = nf[0] + v * P(0.0f);
      }
      alignas(64) float a[L], b[L];
      for (std::size_t u = 0; u < 4; ++u) {
        lo[u].store_aligned(a);
        hi[u].store_aligned(b);
        for (std::size_t j = 0; j < L; ++j) {
          mn = std::min(mn, a[j]);
          mx = std::max(mx, b[j]);
        }
        bad += simd::reduce_add(nf[u]);
      }
    }
  }
  for (; i < n; ++i) {
    const float v = x[i];
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
    bad += v * 0.0f;
  }
  return {mn, mx, bad == 0.0f};
}

constexpr std::size_t min_max_piece = std::size_t(1) << 16;

// Per-channel min/max of a contiguous row-major tensor (parallel when large). Throws
// quant::domain_error naming `function` if any value is NaN or +-inf.
template <class Arch = simd::default_arch>
std::vector<min_max_result> channel_min_max(const float* x, const channel_layout& l, const char* function) {
  std::vector<min_max_result> out(l.channels);
  if (l.n == 0) return out;
  if (!l.per_channel || l.channels == 1) {
    out[0] = parallel_reduce(
        l.n, min_max_piece, min_max_result{},
        [&](std::size_t b, std::size_t e) { return min_max_run<Arch>(x + b, e - b); },
        [](const min_max_result& a, const min_max_result& b) { return combine(a, b); });
  } else if (l.inner >= 64) {
    // one contiguous run per (o, c)
    std::vector<min_max_result> seg(l.outer * l.channels);
    parallel_for(seg.size(), l.n, [&](std::size_t s) { seg[s] = min_max_run<Arch>(x + s * l.inner, l.inner); });
    for (std::size_t s = 0; s < seg.size(); ++s) out[s % l.channels] = combine(out[s % l.channels], seg[s]);
  } else {
    // short runs: fold whole rows of C*inner elementwise, then each channel's inner slots
    const std::size_t row = l.channels * l.inner;
    const std::size_t rows_per_piece = std::max<std::size_t>(1, min_max_piece / row);
    const std::size_t pieces = (l.outer + rows_per_piece - 1) / rows_per_piece;
    std::vector<std::vector<min_max_result>> part(pieces);
    parallel_for(pieces, l.n, [&](std::size_t k) {
      std::vector<float> lo(row, std::numeric_limits<float>::infinity());
      std::vector<float> hi(row, -std::numeric_limits<float>::infinity());
      float bad = 0.0f;
      const std::size_t r1 = std::min(l.outer, (k + 1) * rows_per_piece);
      for (std::size_t r = k * rows_per_piece; r < r1; ++r) {
        const float* xr = x + r * row;
        for (std::size_t j = 0; j < row; ++j) {
          const float v = xr[j];
          lo[j] = v < lo[j] ? v : lo[j];
          hi[j] = v > hi[j] ? v : hi[j];
          bad += v * 0.0f;
        }
      }
      part[k].assign(l.channels, min_max_result{});
      for (std::size_t c = 0; c < l.channels; ++c)
        for (std::size_t i = 0; i < l.inner; ++i) {
          part[k][c].min = std::min(part[k][c].min, lo[c * l.inner + i]);
          part[k][c].max = std::max(part[k][c].max, hi[c * l.inner + i]);
        }
      part[k][0].finite = bad == 0.0f;
    });
    for (const auto& p : part)
      for (std::size_t c = 0; c < l.channels; ++c) out[c] = combine(out[c], p[c]);
  }
  for (auto& r : out) {
    if (!r.finite) {
      fail<domain_error>(function, "x", "NaN or infinite values", "observers need finite data");
    }
    r.min += 0.0f;  // -0 -> +0
    r.max += 0.0f;
  }
  return out;
}

// Copies channel c's values (all o, i) into dst[c * outer * inner ...], channel-major.
inline void gather_channels(const float* x, const channel_layout& l, float* dst) {
  const std::size_t m = l.per_channel_size();
  for (std::size_t o = 0; o < l.outer; ++o)
    for (std::size_t c = 0; c < l.channels; ++c) {
      const float* src = x + (o * l.channels + c) * l.inner;
      std::copy(src, src + l.inner, dst + c * m + o * l.inner);
    }
}

// Per-tensor or per-channel qparams from one [min, max] per channel (scale_from_range:
// the range widened to contain 0, scale floored at FLT_EPSILON).
inline qparams qparams_from_ranges(grid g, scheme s, symmetric_scale_convention conv, const std::vector<float>& lo,
                                   const std::vector<float>& hi, std::optional<std::ptrdiff_t> axis) {
  if (!axis) {
    const scale_zero_point sz = scale_from_range(g, lo.at(0), hi.at(0), s, conv);
    return qparams::per_tensor(g, sz.scale, sz.zero_point);
  }
  std::vector<float> scales(lo.size());
  std::vector<std::int32_t> zps(lo.size());
  for (std::size_t c = 0; c < lo.size(); ++c) {
    const scale_zero_point sz = scale_from_range(g, lo[c], hi[c], s, conv);
    scales[c] = sz.scale;
    zps[c] = sz.zero_point;
  }
  return qparams::per_channel(g, std::move(scales), std::move(zps), *axis);
}

// Binds an observer to its channel axis and channel count (fixed by the first accepted
// update).
struct observer_channels {
  std::optional<std::ptrdiff_t> axis;
  std::size_t channels = 0;  // 0: nothing observed yet

  template <class Shape>
  channel_layout bind(const Shape& shape, const char* function) {
    channel_layout l = make_channel_layout(shape, axis, function);
    require_nonempty(l.n, function);
    if (channels != 0 && l.channels != channels)
      fail<length_error>(function, "shape", shape_string(shape),
                         "the observer has " + std::to_string(channels) + " channels, this tensor has " +
                             std::to_string(l.channels) + " along axis " + std::to_string(l.axis));
    return l;
  }

  // Called once the data passed validation, so a rejected first batch leaves the
  // observer empty.
  void commit(const channel_layout& l) noexcept { channels = l.channels; }

  void check_merge(const observer_channels& other, const char* function) const {
    if (axis != other.axis)
      fail<invalid_argument>(function, "other.channel_axis", other.axis ? std::to_string(*other.axis) : "none",
                             std::string("must equal this observer's channel axis (") +
                                 (axis ? std::to_string(*axis) : "none") + ")");
    if (channels != 0 && other.channels != 0 && channels != other.channels)
      fail<length_error>(function, "other.channels()", other.channels,
                         "must equal this observer's " + std::to_string(channels) + " channels");
  }

  void require_data(const char* function) const {
    if (channels == 0) fail<domain_error>(function, "observer", "empty", "compute() needs at least one update()");
  }
};

}  // namespace detail
}  // namespace quant
