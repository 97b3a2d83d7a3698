// quant/range/histogram.hpp — histogram observers: PyTorch's HistogramObserver (L2
// search) and AIMET's "tf_enhanced" SQNR search (docs/observers.md).
//
// The histogram (shared by both). `bins` (2048) counters on a power-of-two lattice: bin k
// covers [k w, (k+1) w) with w = 2^e, e the smallest exponent for which the observed
// [min, max] fits in `bins` bins (and at least ilogb(absmax) - 40, so bin indices stay
// below 2^41 and a constant tensor still gets a finite width). When new data widens the
// range, e grows and pairs of bins merge exactly; counts are integers. The state is
// therefore a pure function of the multiset of observed values: update order does not
// matter and merge() of two observers over two halves is *exactly* the observer over all
// the data. Departure from PyTorch: HistogramObserver grows its range by upsampling each
// bin 128x and re-binning with linear interpolation, which is approximate and depends on
// batch order; here the observed range occupies between bins/2 and bins lattice bins.
//
// histogram_observer::compute — PyTorch's `_non_linear_param_search` (after Caffe2's
// NormMinimization), on the occupied bins [floor(min/w), floor(max/w)]: shrink
// [start_bin, end_bin] from whichever side frees more bins per 1e-5 quantile step, stop when
// the L2 error grows. The error of a candidate range splits it into dst = 2^b (grid
// levels) bins and, assuming a uniform density inside each source bin, integrates
// (x - centre of x's destination bin)^2 with destinations clamped to the range
// (so clipped mass pays its distance to the first/last centre):
//   density_i * [ (h^3 - d_b^3) + (j1 - j0 - 1) 2 h^3 + (d_e^3 + h^3) ] / 3,  h = dst_width/2.
// The chosen range is intersected with the observed [min, max], then scale_from_range.
// Arithmetic in double (PyTorch evaluates the error in float32 tensors).
//
// sqnr_observer::compute — AIMET's SqnrEncodingAnalyzer ("tf_enhanced"): each bin's mass
// sits at its midpoint m; a candidate (delta, offset) on num_steps = qmax - qmin steps costs
//   sum_i count_i (m_i - (clamp(round(m_i / delta - offset), 0, num_steps) + offset) delta)^2
// with the terms of clipped bins (round(...) outside [0, num_steps]) multiplied by
// gamma = 3 ("3 * saturation error + quantization error"). Candidates as in AIMET:
// symmetric: delta = k/100 * 2 absmax / num_steps, k = 1..101, offset = -ceil(num_steps/2);
// asymmetric: 17 deltas k/16 * (max - min)/num_steps, 20 offsets spread over
// [-num_steps, 0] plus the observed one, each candidate range then clamped to the
// observed range and (delta, offset) recomputed. The winner maps to our grid as
// scale = delta, zero_point = qmin - offset.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <limits>
#include <optional>
#include <ostream>
#include <utility>
#include <vector>

#include <xtensor/xexpression.hpp>

#include "../detail/contiguous.hpp"
#include "../detail/parallel.hpp"
#include "../qparams.hpp"
#include "common.hpp"
#include "io.hpp"

namespace quant {
namespace detail {

// floor(k / 2^d) for signed k.
inline std::int64_t floor_shift(std::int64_t k, int d) noexcept {
  if (d <= 0) return k;
  if (d > 62) return k < 0 ? -1 : 0;
  return k >= 0 ? (k >> d) : -(((-k) - 1) >> d) - 1;
}

inline std::int64_t lattice_index(float x, int e) noexcept {
  return static_cast<std::int64_t>(std::floor(std::ldexp(static_cast<double>(x), -e)));
}

// The canonical lattice exponent for [lo, hi] and `bins` bins (see the header comment).
inline int lattice_exponent(float lo, float hi, std::size_t bins) noexcept {
  const float absmax = std::max(std::fabs(lo), std::fabs(hi));
  int e = absmax == 0.0f ? -200 : std::ilogb(absmax) - 40;
  while (static_cast<std::size_t>(lattice_index(hi, e) - lattice_index(lo, e)) + 1 > bins) ++e;
  return e;
}

class lattice_histogram {
 public:
  explicit lattice_histogram(std::size_t bins = 2048) : bins_(bins) {}

  // Adds n finite values whose min and max are given.
  void add(const float* x, std::size_t n, float lo, float hi) {
    if (n == 0) return;
    rebin(total_ ? std::min(min_, lo) : lo, total_ ? std::max(max_, hi) : hi);
    const std::size_t piece = std::size_t(1) << 16;
    const std::size_t pieces = (n + piece - 1) / piece;
    std::vector<std::vector<std::uint32_t>> part(pieces);
    const double inv_w = std::ldexp(1.0, -exponent_);
    parallel_for(pieces, n, [&](std::size_t k) {
      std::vector<std::uint32_t>& h = part[k];
      h.assign(bins_, 0);
      const std::size_t e = std::min(n, (k + 1) * piece);
      for (std::size_t i = k * piece; i < e; ++i)
        ++h[static_cast<std::size_t>(static_cast<std::int64_t>(std::floor(static_cast<double>(x[i]) * inv_w)) -
                                     origin_)];
    });
    for (const auto& h : part)
      for (std::size_t b = 0; b < bins_; ++b) counts_[b] += h[b];
    total_ += n;
  }

  void merge(const lattice_histogram& o) {
    if (o.total_ == 0) return;
    if (total_ == 0) {
      *this = o;
      return;
    }
    rebin(std::min(min_, o.min_), std::max(max_, o.max_));
    for (std::size_t b = 0; b < o.bins_; ++b)
      if (o.counts_[b]) counts_[static_cast<std::size_t>(floor_shift(o.origin_ + static_cast<std::int64_t>(b),
                                                                     exponent_ - o.exponent_) -
                                                         origin_)] += o.counts_[b];
    total_ += o.total_;
  }

  std::size_t bins() const noexcept { return bins_; }
  std::uint64_t total() const noexcept { return total_; }
  float min() const noexcept { return min_; }
  float max() const noexcept { return max_; }
  int exponent() const noexcept { return exponent_; }
  std::int64_t origin() const noexcept { return origin_; }
  double bin_width() const noexcept { return std::ldexp(1.0, exponent_); }
  const std::vector<std::uint64_t>& counts() const noexcept { return counts_; }
  // Bins from floor(min/w) to floor(max/w), the ones the searches run over.
  std::size_t occupied() const noexcept {
    return total_ ? static_cast<std::size_t>(lattice_index(max_, exponent_) - origin_) + 1 : 0;
  }

  void save(std::ostream& os) const {
    write_scalar(os, "bins", static_cast<std::uint64_t>(bins_));
    write_scalar(os, "total", total_);
    write_field(os, "range", std::vector<float>{min_, max_});
    write_scalar(os, "exponent", exponent_);
    write_scalar(os, "origin", static_cast<long long>(origin_));
    write_field(os, "counts", counts_);
  }

  void load(observer_reader& r) {
    lattice_histogram h(static_cast<std::size_t>(r.scalar<std::uint64_t>("bins")));
    if (h.bins_ < 2 || h.bins_ > (std::size_t(1) << 24)) r.bad("bins", "must be in 2..2^24");
    h.total_ = r.scalar<std::uint64_t>("total");
    const auto range = r.field<float>("range", 2);
    h.min_ = range[0];
    h.max_ = range[1];
    h.exponent_ = r.scalar<int>("exponent");
    h.origin_ = static_cast<std::int64_t>(r.scalar<long long>("origin"));
    h.counts_ = r.field<std::uint64_t>("counts", h.bins_);
    std::uint64_t sum = 0;
    for (auto c : h.counts_) sum += c;
    if (sum != h.total_) r.bad("counts", "do not add up to total");
    if (h.total_ == 0) r.bad("total", "an empty histogram is not saved");
    if (!(std::isfinite(h.min_) && std::isfinite(h.max_) && h.min_ <= h.max_)) r.bad("range", "needs finite min <= max");
    if (h.exponent_ != lattice_exponent(h.min_, h.max_, h.bins_) ||
        h.origin_ != lattice_index(h.min_, h.exponent_))
      r.bad("exponent", "inconsistent with the stored range");
    *this = std::move(h);
  }

  friend bool operator==(const lattice_histogram& a, const lattice_histogram& b) {
    return a.bins_ == b.bins_ && a.total_ == b.total_ && (a.total_ == 0 || (a.min_ == b.min_ && a.max_ == b.max_ &&
                                                                             a.exponent_ == b.exponent_ &&
                                                                             a.origin_ == b.origin_ &&
                                                                             a.counts_ == b.counts_));
  }

 private:
  // Moves the counts onto the canonical lattice of [lo, hi] (exact: bins only merge).
  void rebin(float lo, float hi) {
    const int e = lattice_exponent(lo, hi, bins_);
    const std::int64_t origin = lattice_index(lo, e);
    if (total_ == 0) {
      counts_.assign(bins_, 0);
    } else if (e != exponent_ || origin != origin_) {
      std::vector<std::uint64_t> c(bins_, 0);
      for (std::size_t b = 0; b < bins_; ++b)
        if (counts_[b])
          c[static_cast<std::size_t>(floor_shift(origin_ + static_cast<std::int64_t>(b), e - exponent_) - origin)] +=
              counts_[b];
      counts_ = std::move(c);
    }
    exponent_ = e;
    origin_ = origin;
    min_ = lo;
    max_ = hi;
  }

  std::size_t bins_;
  std::uint64_t total_ = 0;
  float min_ = 0.0f, max_ = 0.0f;
  int exponent_ = 0;
  std::int64_t origin_ = 0;
  std::vector<std::uint64_t> counts_;
};

// L2 error of quantizing the histogram hist[0..bins) (first edge at 0, width bin_width)
// onto dst_bins levels spanning source bins [start, end] (PyTorch's
// _compute_quantization_error, in double).
inline double histogram_l2_error(const std::vector<double>& hist, double bin_width, std::size_t start,
                                 std::size_t end, std::size_t dst_bins) {
  const double dst_width = bin_width * static_cast<double>(end - start + 1) / static_cast<double>(dst_bins);
  if (dst_width == 0.0) return 0.0;
  const double last = static_cast<double>(dst_bins - 1);
  const double h = dst_width / 2.0;
  const double full = 2.0 * h * h * h / 3.0;
  double norm = 0.0;
  for (std::size_t i = 0; i < hist.size(); ++i) {
    if (hist[i] == 0.0) continue;
    const double b = (static_cast<double>(i) - static_cast<double>(start)) * bin_width;
    const double e = b + bin_width;
    const double j0 = std::min(std::max(std::floor(b / dst_width), 0.0), last);
    const double j1 = std::min(std::max(std::floor(e / dst_width), 0.0), last);
    const double db = b - (j0 + 0.5) * dst_width;
    const double de = e - (j1 + 0.5) * dst_width;
    const double density = hist[i] / bin_width;
    norm += density * ((h * h * h - db * db * db) / 3.0 + (j1 - j0 - 1.0) * full + (de * de * de + h * h * h) / 3.0);
  }
  return norm;
}

// PyTorch's _non_linear_param_search over hist (first edge first_edge, width bin_width):
// returns the chosen [min, max].
inline std::pair<double, double> histogram_l2_search(const std::vector<double>& hist, double first_edge,
                                                     double bin_width, std::size_t dst_bins) {
  const std::size_t bins = hist.size();
  std::vector<double> csum(bins);
  double total = 0.0;
  for (std::size_t i = 0; i < bins; ++i) csum[i] = (total += hist[i]);
  const double stepsize = 1e-5;
  double alpha = 0.0, beta = 1.0;
  std::size_t start_bin = 0, end_bin = bins - 1;
  double norm_min = std::numeric_limits<double>::infinity();
  while (alpha < beta) {
    const double next_alpha = alpha + stepsize, next_beta = beta - stepsize;
    std::size_t l = start_bin, r = end_bin;
    while (l < end_bin && csum[l] < next_alpha * total) ++l;
    while (r > start_bin && csum[r] > next_beta * total) --r;
    std::size_t next_start = start_bin, next_end = end_bin;
    if ((l - start_bin) > (end_bin - r)) {
      next_start = l;
      alpha = next_alpha;
    } else {
      next_end = r;
      beta = next_beta;
    }
    if (next_start == start_bin && next_end == end_bin) continue;
    const double norm = histogram_l2_error(hist, bin_width, next_start, next_end, dst_bins);
    if (norm > norm_min) break;
    norm_min = norm;
    start_bin = next_start;
    end_bin = next_end;
  }
  return {first_edge + bin_width * static_cast<double>(start_bin),
          first_edge + bin_width * static_cast<double>(end_bin + 1)};
}

// The occupied bins of h as doubles (the searches' input).
inline std::vector<double> occupied_counts(const lattice_histogram& h) {
  const std::size_t n = h.occupied();
  return std::vector<double>(h.counts().begin(), h.counts().begin() + static_cast<std::ptrdiff_t>(n));
}

// Per-channel lattice histograms with the observer plumbing.
struct histogram_set {
  observer_channels ch;
  std::size_t bins = 2048;
  std::vector<lattice_histogram> hist;

  template <class Shape>
  void add(const float* x, const Shape& shape, const char* function) {
    const channel_layout l = ch.bind(shape, function);
    const auto r = channel_min_max(x, l, function);
    ch.commit(l);
    if (hist.empty()) hist.assign(l.channels, lattice_histogram(bins));
    if (l.channels == 1) {
      hist[0].add(x, l.n, r[0].min, r[0].max);
      return;
    }
    std::vector<float> buf(l.n);
    gather_channels(x, l, buf.data());
    const std::size_t m = l.per_channel_size();
    for (std::size_t c = 0; c < l.channels; ++c) hist[c].add(buf.data() + c * m, m, r[c].min, r[c].max);
  }

  void merge(const histogram_set& o, const char* function) {
    ch.check_merge(o.ch, function);
    if (o.bins != bins)
      fail<invalid_argument>(function, "other.bins()", o.bins, "must equal this observer's " + std::to_string(bins));
    if (o.hist.empty()) return;
    if (hist.empty()) {
      *this = o;
      return;
    }
    for (std::size_t c = 0; c < hist.size(); ++c) hist[c].merge(o.hist[c]);
  }

  void save(std::ostream& os) const {
    write_axis(os, ch.axis);
    write_scalar(os, "bins", static_cast<std::uint64_t>(bins));
    write_scalar(os, "channels", static_cast<std::uint64_t>(hist.size()));
    for (const auto& h : hist) h.save(os);
  }

  void load(observer_reader& r) {
    histogram_set s;
    s.ch.axis = r.axis();
    s.bins = static_cast<std::size_t>(r.scalar<std::uint64_t>("bins"));
    const auto channels = r.scalar<std::uint64_t>("channels");
    if (!s.ch.axis && channels > 1) r.bad("channels", "a per-tensor observer has one histogram");
    for (std::uint64_t c = 0; c < channels; ++c) {
      lattice_histogram h;
      h.load(r);
      if (h.bins() != s.bins) r.bad("bins", "every channel has the observer's bin count");
      s.hist.push_back(std::move(h));
    }
    s.ch.channels = s.hist.size();
    *this = std::move(s);
  }

  friend bool operator==(const histogram_set& a, const histogram_set& b) {
    return a.ch.axis == b.ch.axis && a.bins == b.bins && a.hist == b.hist;
  }
};

inline void check_bins(std::size_t bins, const char* function) {
  if (bins < 2 || bins > (std::size_t(1) << 24)) fail<invalid_argument>(function, "bins", bins, "must be in 2..2^24");
}

}  // namespace detail

// PyTorch HistogramObserver semantics (see the header comment).
class histogram_observer {
 public:
  explicit histogram_observer(std::optional<std::ptrdiff_t> channel_axis = std::nullopt, std::size_t bins = 2048) {
    detail::check_bins(bins, "histogram_observer");
    set_.ch.axis = channel_axis;
    set_.bins = bins;
  }

  template <class E>
  void update(const xt::xexpression<E>& x) {
    const auto in = detail::as_contiguous(x);
    set_.add(in.data(), in.shape(), "histogram_observer::update");
  }

  // Exact: two observers over two halves == one observer over all the data.
  void merge(const histogram_observer& other) { set_.merge(other.set_, "histogram_observer::merge"); }

  // The L2-optimal [min, max] per channel for a grid of `levels` levels.
  std::vector<std::pair<float, float>> ranges(std::size_t levels) const {
    set_.ch.require_data("histogram_observer::ranges");
    std::vector<std::pair<float, float>> r;
    for (const auto& h : set_.hist) {
      if (h.min() == h.max()) {
        r.emplace_back(h.min(), h.max());
        continue;
      }
      const auto mm = detail::histogram_l2_search(detail::occupied_counts(h),
                                                  static_cast<double>(h.origin()) * h.bin_width(), h.bin_width(),
                                                  levels);
      const float lo = std::max(static_cast<float>(mm.first), h.min());
      const float hi = std::min(static_cast<float>(mm.second), h.max());
      r.emplace_back(std::min(lo, hi), std::max(lo, hi));
    }
    return r;
  }

  qparams compute(grid g, scheme s, symmetric_scale_convention conv = symmetric_scale_convention::pytorch) const {
    const char* fn = "histogram_observer::compute";
    g.validate(fn);
    set_.ch.require_data(fn);
    const auto r = ranges(static_cast<std::size_t>(g.levels()));
    std::vector<float> lo, hi;
    for (const auto& p : r) {
      lo.push_back(p.first);
      hi.push_back(p.second);
    }
    return detail::qparams_from_ranges(g, s, conv, lo, hi, set_.ch.axis);
  }

  bool empty() const noexcept { return set_.hist.empty(); }
  std::size_t channels() const noexcept { return set_.hist.size(); }
  std::size_t bins() const noexcept { return set_.bins; }
  const detail::lattice_histogram& histogram(std::size_t channel = 0) const { return set_.hist.at(channel); }
  void reset() {
    set_.hist.clear();
    set_.ch.channels = 0;
  }

  void save(std::ostream& os) const {
    detail::write_header(os, "histogram");
    set_.save(os);
    detail::write_end(os);
  }
  void load(std::istream& is) {
    detail::observer_reader r{is, "histogram_observer::load"};
    r.header("histogram");
    set_.load(r);
    r.end();
  }

  friend bool operator==(const histogram_observer& a, const histogram_observer& b) { return a.set_ == b.set_; }

 private:
  detail::histogram_set set_;
};

// AIMET tf_enhanced / SqnrEncodingAnalyzer defaults.
struct sqnr_options {
  float gamma = 3.0f;  // weight of the saturation (clipping) error
  std::size_t symmetric_delta_candidates = 101;
  std::size_t asymmetric_delta_candidates = 17;
  std::size_t offset_candidates = 21;
  std::size_t bins = 2048;

  void validate(const char* function) const {
    if (!(std::isfinite(gamma) && gamma > 0.0f)) detail::fail<invalid_argument>(function, "gamma", gamma, "must be > 0");
    if (symmetric_delta_candidates < 2)
      detail::fail<invalid_argument>(function, "symmetric_delta_candidates", symmetric_delta_candidates, "must be >= 2");
    if (asymmetric_delta_candidates < 2)
      detail::fail<invalid_argument>(function, "asymmetric_delta_candidates", asymmetric_delta_candidates,
                                     "must be >= 2");
    if (offset_candidates < 3)
      detail::fail<invalid_argument>(function, "offset_candidates", offset_candidates, "must be >= 3");
    detail::check_bins(bins, function);
  }
};

namespace detail {

// AIMET's expected noise of (delta, offset) on a histogram given by bin midpoints.
inline double sqnr_cost(const std::vector<double>& hist, double first_mid, double bin_width, double delta,
                        double offset, double num_steps, double gamma) {
  double sum = 0.0;
  for (std::size_t i = 0; i < hist.size(); ++i) {
    if (hist[i] == 0.0) continue;
    const double m = first_mid + bin_width * static_cast<double>(i);
    const double q = std::nearbyint(m / delta - offset);
    const bool clipped = q < 0.0 || q > num_steps;
    const double qdq = (std::min(std::max(q, 0.0), num_steps) + offset) * delta;
    const double e = (qdq - m) * (qdq - m) * hist[i];
    sum += clipped ? gamma * e : e;
  }
  return sum;
}

struct delta_offset {
  double delta, offset;
};

// AIMET's candidate search; lo <= 0 <= hi already.
inline delta_offset sqnr_search(const std::vector<double>& hist, double first_mid, double bin_width, double lo,
                                double hi, double num_steps, bool symmetric, const sqnr_options& opt) {
  const double eps = static_cast<double>(FLT_EPSILON);
  hi = std::max(hi, lo + eps * num_steps);
  std::vector<delta_offset> cand;
  if (symmetric) {
    const double max_delta = 2.0 * std::max(hi, -lo) / num_steps;
    const double offset = -std::ceil(num_steps / 2.0);
    const double nd = static_cast<double>(opt.symmetric_delta_candidates);
    for (std::size_t k = 1; k <= opt.symmetric_delta_candidates; ++k)
      cand.push_back({std::max(max_delta * static_cast<double>(k) / (nd - 1.0), eps), offset});
  } else {
    const double max_delta = (hi - lo) / num_steps;
    const double observed_offset = std::nearbyint(lo / max_delta);
    const double observed_min = max_delta * observed_offset;
    const double observed_max = observed_min + max_delta * num_steps;
    const std::size_t num_offsets =
        std::min(static_cast<std::size_t>(num_steps) + 2, opt.offset_candidates);
    const double step = num_steps / static_cast<double>(num_offsets - 2);
    std::vector<double> offsets;
    for (std::size_t j = 0; j + 1 < num_offsets; ++j)
      offsets.push_back(std::nearbyint(-num_steps + step * static_cast<double>(j)));
    offsets.push_back(observed_offset);
    const double nd = static_cast<double>(opt.asymmetric_delta_candidates);
    for (std::size_t k = 1; k <= opt.asymmetric_delta_candidates; ++k) {
      const double d = max_delta * static_cast<double>(k) / (nd - 1.0);
      for (double o : offsets) {
        const double tmin = std::max(observed_min, d * o);
        const double tmax = std::min(observed_max, tmin + d * num_steps);
        const double nd2 = std::max((tmax - tmin) / num_steps, eps);
        cand.push_back({nd2, std::nearbyint(tmin / nd2)});
      }
    }
  }
  delta_offset best = cand[0];
  double best_cost = std::numeric_limits<double>::infinity();
  for (const auto& c : cand) {
    const double cost = sqnr_cost(hist, first_mid, bin_width, c.delta, c.offset, num_steps, opt.gamma);
    if (cost < best_cost) {
      best_cost = cost;
      best = c;
    }
  }
  return best;
}

}  // namespace detail

// AIMET tf_enhanced (SQNR) observer (see the header comment).
class sqnr_observer {
 public:
  explicit sqnr_observer(std::optional<std::ptrdiff_t> channel_axis = std::nullopt, const sqnr_options& opt = {})
      : opt_(opt) {
    opt_.validate("sqnr_observer");
    set_.ch.axis = channel_axis;
    set_.bins = opt.bins;
  }

  template <class E>
  void update(const xt::xexpression<E>& x) {
    const auto in = detail::as_contiguous(x);
    set_.add(in.data(), in.shape(), "sqnr_observer::update");
  }

  void merge(const sqnr_observer& other) { set_.merge(other.set_, "sqnr_observer::merge"); }

  // The search's (delta, offset) become scale = delta, zero_point = qmin - offset; the
  // symmetric-scale convention does not apply (the search picks delta itself) and is
  // accepted for interface uniformity only.
  qparams compute(grid g, scheme s, symmetric_scale_convention = symmetric_scale_convention::pytorch) const {
    const char* fn = "sqnr_observer::compute";
    g.validate(fn);
    set_.ch.require_data(fn);
    const double num_steps = static_cast<double>(g.qmax() - g.qmin());
    std::vector<float> scales;
    std::vector<std::int32_t> zps;
    for (const auto& h : set_.hist) {
      const double w = h.bin_width();
      const detail::delta_offset d = detail::sqnr_search(
          detail::occupied_counts(h), (static_cast<double>(h.origin()) + 0.5) * w, w,
          std::min(static_cast<double>(h.min()), 0.0), std::max(static_cast<double>(h.max()), 0.0), num_steps,
          s == scheme::symmetric, opt_);
      const float scale = std::max(static_cast<float>(d.delta), FLT_EPSILON);
      const double z = std::min(std::max(static_cast<double>(g.qmin()) - d.offset, static_cast<double>(g.qmin())),
                                static_cast<double>(g.qmax()));
      scales.push_back(scale);
      zps.push_back(static_cast<std::int32_t>(z));
    }
    if (!set_.ch.axis) return qparams::per_tensor(g, scales[0], zps[0]);
    return qparams::per_channel(g, std::move(scales), std::move(zps), *set_.ch.axis);
  }

  bool empty() const noexcept { return set_.hist.empty(); }
  std::size_t channels() const noexcept { return set_.hist.size(); }
  const sqnr_options& options() const noexcept { return opt_; }
  const detail::lattice_histogram& histogram(std::size_t channel = 0) const { return set_.hist.at(channel); }
  void reset() {
    set_.hist.clear();
    set_.ch.channels = 0;
  }

  void save(std::ostream& os) const {
    detail::write_header(os, "sqnr");
    set_.save(os);
    detail::write_end(os);
  }
  void load(std::istream& is) {
    detail::observer_reader r{is, "sqnr_observer::load"};
    r.header("sqnr");
    detail::histogram_set s;
    s.load(r);
    r.end();
    if (s.bins != opt_.bins) r.bad("bins", "must equal this observer's options().bins");
    set_ = std::move(s);
  }

  friend bool operator==(const sqnr_observer& a, const sqnr_observer& b) { return a.set_ == b.set_; }

 private:
  sqnr_options opt_;
  detail::histogram_set set_;
};

}  // namespace quant
