// quant/range/percentile.hpp — percentile range setting (docs/observers.md; McKinstry et
// al. 2019, Wu et al. 2020 "Integer quantization ... principles and empirical evaluation").
//
//   [lo, hi] = [P_(100 - p)(x), P_p(x)],  p in (50, 100], default 99.99
// P_q is the exact q-th percentile of every observed value with linear interpolation
// between the two nearest ranks (numpy's default "linear" method, Hyndman & Fan type 7):
//   pos = q / 100 * (n - 1),  P_q = v[floor(pos)] + frac(pos) (v[floor(pos)+1] - v[floor(pos)])
// on the sorted values v, evaluated in double and rounded once to float. p = 100 gives
// min-max. The range is then widened to contain 0 (scale_from_range).
// State: the exact samples (range/samples.hpp); merge() concatenates, so two observers
// over two halves give exactly the percentiles of the whole.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <istream>
#include <optional>
#include <ostream>
#include <vector>

#include <xtensor/xexpression.hpp>

#include "../detail/contiguous.hpp"
#include "../qparams.hpp"
#include "common.hpp"
#include "io.hpp"
#include "samples.hpp"

namespace quant {

namespace detail {

inline void check_percentile(double p, const char* function) {
  if (!(p > 50.0 && p <= 100.0)) fail<invalid_argument>(function, "percentile", p, "must be in (50, 100]");
}

// The q-th percentile (linear interpolation) of v; reorders v.
inline double percentile_linear(std::vector<float>& v, double q) {
  const double pos = q / 100.0 * static_cast<double>(v.size() - 1);
  const std::size_t k = static_cast<std::size_t>(std::floor(pos));
  const double f = pos - static_cast<double>(k);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  const double a = v[k];
  if (f == 0.0 || k + 1 >= v.size()) return a;
  const double b = *std::min_element(v.begin() + static_cast<std::ptrdiff_t>(k) + 1, v.end());
  return a + f * (b - a);
}

}  // namespace detail

class percentile_observer {
 public:
  explicit percentile_observer(double percentile = 99.99, std::optional<std::ptrdiff_t> channel_axis = std::nullopt)
      : p_(percentile) {
    detail::check_percentile(percentile, "percentile_observer");
    store_.ch.axis = channel_axis;
  }

  template <class E>
  void update(const xt::xexpression<E>& x) {
    const auto in = detail::as_contiguous(x);
    store_.append(in.data(), in.shape(), "percentile_observer::update");
  }

  void merge(const percentile_observer& other) { store_.merge(other.store_, "percentile_observer::merge"); }

  // Per channel [P_(100-p), P_p] (see the header comment).
  std::vector<std::pair<float, float>> ranges() const {
    store_.ch.require_data("percentile_observer::ranges");
    std::vector<std::pair<float, float>> r(store_.values.size());
    for (std::size_t c = 0; c < r.size(); ++c) {
      std::vector<float> v = store_.values[c];
      const double lo = detail::percentile_linear(v, 100.0 - p_);
      const double hi = detail::percentile_linear(v, p_);
      r[c] = {static_cast<float>(lo), static_cast<float>(hi)};
    }
    return r;
  }

  qparams compute(grid g, scheme s, symmetric_scale_convention conv = symmetric_scale_convention::pytorch) const {
    const char* fn = "percentile_observer::compute";
    g.validate(fn);
    store_.ch.require_data(fn);
    const auto r = ranges();
    std::vector<float> lo(r.size()), hi(r.size());
    for (std::size_t c = 0; c < r.size(); ++c) {
      lo[c] = r[c].first;
      hi[c] = r[c].second;
    }
    return detail::qparams_from_ranges(g, s, conv, lo, hi, store_.ch.axis);
  }

  double percentile() const noexcept { return p_; }
  bool empty() const noexcept { return store_.ch.channels == 0; }
  std::size_t channels() const noexcept { return store_.ch.channels; }
  const std::vector<std::vector<float>>& values() const noexcept { return store_.values; }
  void reset() { store_.clear(); }

  void save(std::ostream& os) const {
    detail::write_header(os, "percentile");
    detail::write_scalar(os, "percentile", p_);
    store_.save(os);
    detail::write_end(os);
  }
  void load(std::istream& is) {
    detail::observer_reader r{is, "percentile_observer::load"};
    r.header("percentile");
    const double p = r.scalar<double>("percentile");
    if (!(p > 50.0 && p <= 100.0)) r.bad("percentile", "must be in (50, 100]");
    detail::sample_store s;
    s.load(r);
    r.end();
    p_ = p;
    store_ = std::move(s);
  }

 private:
  double p_;
  detail::sample_store store_;
};

}  // namespace quant
