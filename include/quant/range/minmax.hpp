// quant/range/minmax.hpp — min-max and moving-average min-max observers
// (docs/observers.md; Jacob et al. 2018 §3; PyTorch MinMaxObserver /
// MovingAverageMinMaxObserver).
//
//   min-max:         [m, M] = [min x, max x] over everything observed.
//   moving average:  m <- m + c (m_batch - m) (= (1 - c) m + c m_batch), same for M,
//                    c = 0.01; the first batch initialises m = m_batch. Written as
//                    PyTorch writes it (float32, `m + c * (b - m)`), so the state matches
//                    MovingAverageMinMaxObserver bit for bit on the same batches.
// compute() widens [m, M] to contain 0 and calls scale_from_range (scale floored at
// FLT_EPSILON; the symmetric-scale convention is an argument). Per channel: one [m, M]
// per slice along the axis (negative axes wrap), each channel independent.
//
// merge(): min-max takes the elementwise min/max, so two observers over two halves give
// exactly the observer over all the data. A moving average depends on batch order and
// cannot be merged exactly; merge() returns the average of the two states weighted by
// their batch counts (the estimate two data-parallel workers would agree on; merging with
// an empty observer is the identity). It is *not* the EMA of the concatenated stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <istream>
#include <optional>
#include <ostream>
#include <vector>

#include <xtensor/xexpression.hpp>

#include "../detail/contiguous.hpp"
#include "../qparams.hpp"
#include "common.hpp"
#include "io.hpp"

namespace quant {

// Running min and max of everything observed (per tensor or per channel).
class minmax_observer {
 public:
  explicit minmax_observer(std::optional<std::ptrdiff_t> channel_axis = std::nullopt) { ch_.axis = channel_axis; }

  // Folds x into the range. Throws quant::domain_error on empty input or NaN/inf,
  // quant::invalid_argument on a bad axis, quant::length_error on a channel-count change.
  template <class E>
  void update(const xt::xexpression<E>& x) {
    const char* fn = "minmax_observer::update";
    const auto in = detail::as_contiguous(x);
    const detail::channel_layout l = ch_.bind(in.shape(), fn);
    const auto r = detail::channel_min_max(in.data(), l, fn);
    ch_.commit(l);
    fold(r);
  }

  // Exact: min/max of both (two halves == the whole).
  void merge(const minmax_observer& other) {
    ch_.check_merge(other.ch_, "minmax_observer::merge");
    if (other.empty()) return;
    if (empty()) {
      *this = other;
      return;
    }
    for (std::size_t c = 0; c < min_.size(); ++c) {
      min_[c] = std::min(min_[c], other.min_[c]);
      max_[c] = std::max(max_[c], other.max_[c]);
    }
  }

  qparams compute(grid g, scheme s,
                  symmetric_scale_convention conv = symmetric_scale_convention::pytorch) const {
    const char* fn = "minmax_observer::compute";
    g.validate(fn);
    ch_.require_data(fn);
    return detail::qparams_from_ranges(g, s, conv, min_, max_, ch_.axis);
  }

  bool empty() const noexcept { return ch_.channels == 0; }
  std::size_t channels() const noexcept { return ch_.channels; }
  std::optional<std::ptrdiff_t> channel_axis() const noexcept { return ch_.axis; }
  const std::vector<float>& min() const noexcept { return min_; }
  const std::vector<float>& max() const noexcept { return max_; }
  void reset() noexcept {
    ch_.channels = 0;
    min_.clear();
    max_.clear();
  }

  void save(std::ostream& os) const {
    detail::write_header(os, "minmax");
    detail::write_axis(os, ch_.axis);
    detail::write_field(os, "min", min_);
    detail::write_field(os, "max", max_);
    detail::write_end(os);
  }
  void load(std::istream& is) {
    detail::observer_reader r{is, "minmax_observer::load"};
    r.header("minmax");
    minmax_observer o(r.axis());
    o.min_ = r.field<float>("min");
    o.max_ = r.field<float>("max", o.min_.size());
    r.end();
    check_loaded(o.min_, o.max_, o.ch_.axis, r);
    o.ch_.channels = o.min_.size();
    *this = std::move(o);
  }

  friend bool operator==(const minmax_observer& a, const minmax_observer& b) {
    return a.ch_.axis == b.ch_.axis && a.ch_.channels == b.ch_.channels && a.min_ == b.min_ && a.max_ == b.max_;
  }

 private:
  friend class moving_average_minmax_observer;
  static void check_loaded(const std::vector<float>& lo, const std::vector<float>& hi,
                           const std::optional<std::ptrdiff_t>& axis, detail::observer_reader& r) {
    if (!axis && lo.size() > 1) r.bad("min count", "a per-tensor observer has one range");
    for (std::size_t c = 0; c < lo.size(); ++c)
      if (!(std::isfinite(lo[c]) && std::isfinite(hi[c]) && lo[c] <= hi[c])) r.bad("range", "needs finite min <= max");
  }

  void fold(const std::vector<detail::min_max_result>& r) {
    if (min_.empty()) {
      min_.resize(r.size());
      max_.resize(r.size());
      for (std::size_t c = 0; c < r.size(); ++c) {
        min_[c] = r[c].min;
        max_[c] = r[c].max;
      }
      return;
    }
    for (std::size_t c = 0; c < r.size(); ++c) {
      min_[c] = std::min(min_[c], r[c].min);
      max_[c] = std::max(max_[c], r[c].max);
    }
  }

  detail::observer_channels ch_;
  std::vector<float> min_, max_;
};

// Exponential moving average of each batch's min and max.
class moving_average_minmax_observer {
 public:
  // averaging_constant c in (0, 1]; throws quant::invalid_argument otherwise.
  explicit moving_average_minmax_observer(float averaging_constant = 0.01f,
                                          std::optional<std::ptrdiff_t> channel_axis = std::nullopt)
      : c_(averaging_constant) {
    if (!(averaging_constant > 0.0f && averaging_constant <= 1.0f))
      detail::fail<invalid_argument>("moving_average_minmax_observer", "averaging_constant", averaging_constant,
                                     "must be in (0, 1]");
    ch_.axis = channel_axis;
  }

  // One batch: m <- m + c (min(batch) - m), M likewise; the first batch initialises.
  template <class E>
  void update(const xt::xexpression<E>& x) {
    const char* fn = "moving_average_minmax_observer::update";
    const auto in = detail::as_contiguous(x);
    const detail::channel_layout l = ch_.bind(in.shape(), fn);
    const auto r = detail::channel_min_max(in.data(), l, fn);
    ch_.commit(l);
    if (batches_ == 0) {
      min_.resize(r.size());
      max_.resize(r.size());
      for (std::size_t c = 0; c < r.size(); ++c) {
        min_[c] = r[c].min;
        max_[c] = r[c].max;
      }
    } else {
      for (std::size_t c = 0; c < r.size(); ++c) {
        min_[c] = min_[c] + c_ * (r[c].min - min_[c]);
        max_[c] = max_[c] + c_ * (r[c].max - max_[c]);
      }
    }
    ++batches_;
  }

  // Batch-count-weighted average of the two states (see the header comment); the
  // averaging constants must agree.
  void merge(const moving_average_minmax_observer& other) {
    const char* fn = "moving_average_minmax_observer::merge";
    ch_.check_merge(other.ch_, fn);
    if (other.c_ != c_)
      detail::fail<invalid_argument>(fn, "other.averaging_constant", other.c_,
                                     "must equal this observer's " + std::to_string(c_));
    if (other.batches_ == 0) return;
    if (batches_ == 0) {
      *this = other;
      return;
    }
    const double na = static_cast<double>(batches_), nb = static_cast<double>(other.batches_);
    for (std::size_t c = 0; c < min_.size(); ++c) {
      min_[c] = static_cast<float>((na * min_[c] + nb * other.min_[c]) / (na + nb));
      max_[c] = static_cast<float>((na * max_[c] + nb * other.max_[c]) / (na + nb));
    }
    batches_ += other.batches_;
  }

  qparams compute(grid g, scheme s,
                  symmetric_scale_convention conv = symmetric_scale_convention::pytorch) const {
    const char* fn = "moving_average_minmax_observer::compute";
    g.validate(fn);
    ch_.require_data(fn);
    return detail::qparams_from_ranges(g, s, conv, min_, max_, ch_.axis);
  }

  bool empty() const noexcept { return batches_ == 0; }
  std::size_t channels() const noexcept { return ch_.channels; }
  std::optional<std::ptrdiff_t> channel_axis() const noexcept { return ch_.axis; }
  float averaging_constant() const noexcept { return c_; }
  std::uint64_t batches() const noexcept { return batches_; }
  const std::vector<float>& min() const noexcept { return min_; }
  const std::vector<float>& max() const noexcept { return max_; }
  void reset() noexcept {
    ch_.channels = 0;
    batches_ = 0;
    min_.clear();
    max_.clear();
  }

  void save(std::ostream& os) const {
    detail::write_header(os, "moving_average_minmax");
    detail::write_axis(os, ch_.axis);
    detail::write_scalar(os, "averaging_constant", c_);
    detail::write_scalar(os, "batches", batches_);
    detail::write_field(os, "min", min_);
    detail::write_field(os, "max", max_);
    detail::write_end(os);
  }
  void load(std::istream& is) {
    detail::observer_reader r{is, "moving_average_minmax_observer::load"};
    r.header("moving_average_minmax");
    const auto axis = r.axis();
    const float c = r.scalar<float>("averaging_constant");
    if (!(c > 0.0f && c <= 1.0f)) r.bad("averaging_constant", "must be in (0, 1]");
    moving_average_minmax_observer o(c, axis);
    o.batches_ = r.scalar<std::uint64_t>("batches");
    o.min_ = r.field<float>("min");
    o.max_ = r.field<float>("max", o.min_.size());
    r.end();
    if ((o.batches_ == 0) != o.min_.empty()) r.bad("batches", "inconsistent with the stored ranges");
    minmax_observer::check_loaded(o.min_, o.max_, axis, r);
    o.ch_.channels = o.min_.size();
    *this = std::move(o);
  }

  friend bool operator==(const moving_average_minmax_observer& a, const moving_average_minmax_observer& b) {
    return a.ch_.axis == b.ch_.axis && a.ch_.channels == b.ch_.channels && a.c_ == b.c_ &&
           a.batches_ == b.batches_ && a.min_ == b.min_ && a.max_ == b.max_;
  }

 private:
  float c_;
  std::uint64_t batches_ = 0;
  detail::observer_channels ch_;
  std::vector<float> min_, max_;
};

// One-shot min-max calibration: qparams from the min and max of x (per tensor, or per
// channel along channel_axis), PyTorch's symmetric-scale convention.
template <class E>
quant::qparams calibrate_minmax(const xt::xexpression<E>& x, quant::grid g, quant::scheme s,
                                std::optional<std::ptrdiff_t> channel_axis = std::nullopt) {
  const char* fn = "calibrate_minmax";
  g.validate(fn);
  const auto in = detail::as_contiguous(x);
  const detail::channel_layout l = detail::make_channel_layout(in.shape(), channel_axis, fn);
  detail::require_nonempty(l.n, fn);
  const auto r = detail::channel_min_max(in.data(), l, fn);
  std::vector<float> lo(r.size()), hi(r.size());
  for (std::size_t c = 0; c < r.size(); ++c) {
    lo[c] = r[c].min;
    hi[c] = r[c].max;
  }
  return detail::qparams_from_ranges(g, s, symmetric_scale_convention::pytorch, lo, hi, channel_axis);
}

}  // namespace quant
