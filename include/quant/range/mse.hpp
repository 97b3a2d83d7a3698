// quant/range/mse.hpp — MSE / Lp range search (docs/observers.md; Banner et al. 2019,
// Nagel et al. 2021 white paper §3.4, Nahshan et al. 2021 "LAPQ" for p = 2.4).
//
//   choose the clipping range minimising  E(r) = sum_i |x_i - fq_r(x_i)|^p
// where fq_r fake-quantizes with the (s, z) that scale_from_range gives for the range r.
// Candidates shrink the observed range [lo, hi] (widened to contain 0) by alpha:
//   r(alpha) = [alpha lo, alpha hi],  alpha = k / K, k = 1..K (K = 100 by default);
// symmetric schemes therefore search alpha * absmax, asymmetric ones the shrunk [min, max]
// (a one-parameter family; the zero point follows from each candidate's range).
// The best grid point k* is refined by golden-section search on [(k*-1)/K, (k*+1)/K]
// (20 iterations by default); the answer is the best alpha ever evaluated, so refinement
// never does worse than the grid. E is piecewise smooth, not unimodal, so golden section
// finds a local minimum next to the best grid point.
// Per channel: each channel is searched independently on its own values.
//
// The error kernel is fused: it fake-quantizes with the library's own affine body
// (detail/affine_body.hpp to_grid / from_grid, the chosen rounding policy and convention)
// and accumulates |(x - fq(x)) / absmax|^p without writing anything. Dividing by the
// tensor's absmax (a constant for all candidates, so the argmin is unchanged) keeps
// |e|^p far from float overflow for any p. Accumulation: float lanes within fixed pieces
// of 2^14 elements, pieces summed in double in piece order, so E is bit-identical for any
// thread count; the scalar and SIMD instantiations differ only by summation order
// (relative difference < 1e-5 in tests). p = 2 squares; other p use exp(p log|e|).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <optional>
#include <ostream>
#include <vector>

#include <xtensor/xexpression.hpp>

#include "../detail/affine_body.hpp"
#include "../detail/contiguous.hpp"
#include "../detail/golden_section.hpp"
#include "../detail/parallel.hpp"
#include "../qparams.hpp"
#include "../rounding.hpp"
#include "../simd/arch.hpp"
#include "common.hpp"
#include "io.hpp"
#include "samples.hpp"

namespace quant {

// Options of the Lp range search; defaults as in docs/observers.md.
struct mse_options {
  float p = 2.0f;                          // the norm; 2.4 as in LAPQ / BRECQ
  std::size_t candidates = 100;            // grid alpha = k / candidates, k = 1..candidates
  std::size_t refinement_iterations = 20;  // golden-section steps around the best grid point
  symmetric_scale_convention scale_convention = symmetric_scale_convention::pytorch;
  rounding_mode rounding = rounding_mode::half_to_even;  // any deterministic policy
  bool clamp_input_first = false;                        // true: AIMET convention

  // Throws quant::invalid_argument naming `function`.
  void validate(const char* function) const {
    if (!(std::isfinite(p) && p > 0.0f && p <= 16.0f))
      detail::fail<invalid_argument>(function, "p", p, "must be in (0, 16]");
    if (candidates < 1 || candidates > 100000)
      detail::fail<invalid_argument>(function, "candidates", candidates, "must be in 1..100000");
    if (refinement_iterations > 200)
      detail::fail<invalid_argument>(function, "refinement_iterations", refinement_iterations, "must be <= 200");
    if (rounding == rounding_mode::stochastic)
      detail::fail<invalid_argument>(function, "rounding", "stochastic",
                                     "the range search needs a deterministic rounding policy");
  }
};

namespace detail {

template <class P>
QUANT_ALWAYS_INLINE P abs_pow(const P& a, float p) noexcept {
  if constexpr (simd::is_batch<P>::value) {
    return xsimd::select(a == P(0.0f), P(0.0f), xsimd::exp(P(p) * xsimd::log(a)));
  } else {
    return a == 0.0f ? 0.0f : std::exp(p * std::log(a));
  }
}

// sum |(x - fq(x)) * norm|^p over one contiguous run, one thread.
template <class Arch, class Round, class Convention, bool Square>
double lp_error_run(const float* x, std::size_t n, float scale, float zero_point, float qmin, float qmax, float p,
                    float norm) noexcept {
  using P = simd::pack<float, Arch>;
  constexpr std::size_t L = simd::lanes<float, Arch>;
  const float inv = 1.0f / scale;  // PyTorch: reciprocal once, in float
  auto body = [&](const auto& v, const auto& a) {
    using Q = std::decay_t<decltype(v)>;
    const Q e = (v - from_grid(to_grid<Convention>(v, a, plain_rounder<Round>{}), a)) * Q(norm);
    if constexpr (Square)
      return e * e;
    else
      return abs_pow(simd::abs(e), p);
  };
  std::size_t i = 0;
  float sum = 0.0f;
  if constexpr (L > 1) {
    const affine_pack<P> a = make_affine_pack<P>(P(scale), P(inv), P(zero_point), qmin, qmax);
    P acc0(0.0f), acc1(0.0f);
    for (; i + 2 * L <= n; i += 2 * L) {
      acc0 = acc0 + body(simd::load<Arch>(x + i), a);
      acc1 = acc1 + body(simd::load<Arch>(x + i + L), a);
    }
    for (; i + L <= n; i += L) acc0 = acc0 + body(simd::load<Arch>(x + i), a);
    sum = simd::reduce_add(acc0 + acc1);
  }
  const affine_pack<float> t = make_affine_pack<float>(scale, inv, zero_point, qmin, qmax);
  float tail = 0.0f;
  for (; i < n; ++i) tail += body(x[i], t);
  return static_cast<double>(sum) + static_cast<double>(tail);
}

constexpr std::size_t lp_error_piece = std::size_t(1) << 14;

}  // namespace detail

namespace kernels {

// E = sum_i |(x_i - fake_quantize(x_i; scale, zero_point)) * norm|^p over x[0..n), in
// double; nothing is written. Deterministic for any thread count (fixed pieces).
template <class Arch = simd::default_arch, class Round = round_half_to_even, class Convention = pytorch_convention>
double lp_error(const float* x, std::size_t n, float scale, std::int32_t zero_point, grid g, float p,
                float norm = 1.0f) noexcept {
  const float z = static_cast<float>(zero_point);
  const float qmin = static_cast<float>(g.qmin()), qmax = static_cast<float>(g.qmax());
  return detail::parallel_reduce(
      n, detail::lp_error_piece, 0.0,
      [&](std::size_t b, std::size_t e) {
        return p == 2.0f ? detail::lp_error_run<Arch, Round, Convention, true>(x + b, e - b, scale, z, qmin, qmax, p,
                                                                               norm)
                         : detail::lp_error_run<Arch, Round, Convention, false>(x + b, e - b, scale, z, qmin, qmax,
                                                                                p, norm);
      },
      [](double a, double b) { return a + b; });
}

}  // namespace kernels

// The outcome of one search: the chosen parameters, the shrink factor and its error
// (in units of absmax^p, see the header comment).
struct lp_search_result {
  scale_zero_point params;
  float alpha = 1.0f;
  double error = 0.0;
};

namespace detail {

template <class Arch, class Round, class Convention>
lp_search_result lp_search_impl(const float* x, std::size_t n, float min_val, float max_val, grid g, scheme s,
                                const mse_options& opt) {
  const float lo = std::min(min_val, 0.0f), hi = std::max(max_val, 0.0f);
  const float absmax = std::max(-lo, hi);
  lp_search_result best;
  best.params = scale_from_range(g, lo, hi, s, opt.scale_convention);
  if (absmax == 0.0f || n == 0) return best;  // all zeros: FLT_EPSILON scale, exact zeros
  const float norm = 1.0f / absmax;
  auto params_at = [&](double alpha) {
    const float a = static_cast<float>(alpha);
    return scale_from_range(g, a * lo, a * hi, s, opt.scale_convention);
  };
  auto error_at = [&](const scale_zero_point& sz) {
    return kernels::lp_error<Arch, Round, Convention>(x, n, sz.scale, sz.zero_point, g, opt.p, norm);
  };
  const std::size_t K = opt.candidates;
  std::size_t kbest = K;
  best.alpha = 1.0f;
  best.error = error_at(best.params);
  // from large alpha down, strict improvement only: ties keep the wider range
  for (std::size_t k = K; k-- > 1;) {
    const scale_zero_point sz = params_at(static_cast<double>(k) / static_cast<double>(K));
    const double e = error_at(sz);
    if (e < best.error) {
      best = {sz, static_cast<float>(static_cast<double>(k) / static_cast<double>(K)), e};
      kbest = k;
    }
  }
  // golden section on the bracket around the best grid point
  double a = static_cast<double>(kbest - 1) / static_cast<double>(K);
  double b = static_cast<double>(std::min(kbest + 1, K)) / static_cast<double>(K);
  auto eval = [&](double alpha) {
    const scale_zero_point sz = params_at(alpha);
    const double e = error_at(sz);
    if (e < best.error) best = {sz, static_cast<float>(alpha), e};
    return e;
  };
  if (opt.refinement_iterations > 0) detail::golden_section_search(eval, a, b, opt.refinement_iterations);
  return best;
}

template <class Arch, class Round>
lp_search_result lp_search_convention(const float* x, std::size_t n, float lo, float hi, grid g, scheme s,
                                      const mse_options& opt) {
  if (opt.clamp_input_first) return lp_search_impl<Arch, Round, aimet_convention>(x, n, lo, hi, g, s, opt);
  return lp_search_impl<Arch, Round, pytorch_convention>(x, n, lo, hi, g, s, opt);
}

}  // namespace detail

// Lp search over x[0..n) whose min and max are given (validated by the caller): the
// rounding policy and convention of `opt` are dispatched to the fused kernel.
template <class Arch = simd::default_arch>
lp_search_result lp_search(const float* x, std::size_t n, float min_val, float max_val, grid g, scheme s,
                           const mse_options& opt) {
  switch (opt.rounding) {
    case rounding_mode::half_away_from_zero:
      return detail::lp_search_convention<Arch, round_half_away_from_zero>(x, n, min_val, max_val, g, s, opt);
    case rounding_mode::half_up:
      return detail::lp_search_convention<Arch, round_half_up>(x, n, min_val, max_val, g, s, opt);
    case rounding_mode::floor:
      return detail::lp_search_convention<Arch, round_floor>(x, n, min_val, max_val, g, s, opt);
    case rounding_mode::ceil:
      return detail::lp_search_convention<Arch, round_ceil>(x, n, min_val, max_val, g, s, opt);
    case rounding_mode::toward_zero:
      return detail::lp_search_convention<Arch, round_toward_zero>(x, n, min_val, max_val, g, s, opt);
    default:
      return detail::lp_search_convention<Arch, round_half_to_even>(x, n, min_val, max_val, g, s, opt);
  }
}

namespace detail {

// Searches every channel of a channel-major buffer (channel c = values[c*m, (c+1)*m)),
// in parallel over channels; each search is serial inside, so the result is the same
// for any thread count.
inline qparams lp_search_channels(const std::vector<const float*>& data, const std::vector<std::size_t>& sizes,
                                  const std::vector<min_max_result>& ranges, grid g, scheme s,
                                  const mse_options& opt, std::optional<std::ptrdiff_t> axis) {
  std::vector<lp_search_result> res(data.size());
  std::size_t total = 0;
  for (auto m : sizes) total += m;
  if (!axis) {
    res[0] = lp_search(data[0], sizes[0], ranges[0].min, ranges[0].max, g, s, opt);
    return qparams::per_tensor(g, res[0].params.scale, res[0].params.zero_point);
  }
  parallel_for(data.size(), total, [&](std::size_t c) {
    res[c] = lp_search(data[c], sizes[c], ranges[c].min, ranges[c].max, g, s, opt);
  });
  std::vector<float> scales(res.size());
  std::vector<std::int32_t> zps(res.size());
  for (std::size_t c = 0; c < res.size(); ++c) {
    scales[c] = res[c].params.scale;
    zps[c] = res[c].params.zero_point;
  }
  return qparams::per_channel(g, std::move(scales), std::move(zps), *axis);
}

}  // namespace detail

// One-shot MSE / Lp calibration of x (per tensor, or per channel along channel_axis).
// Throws quant::domain_error on empty input or NaN/inf, quant::invalid_argument on a bad
// grid, axis or option.
template <class E>
quant::qparams calibrate_mse(const xt::xexpression<E>& x, quant::grid g, quant::scheme s,
                             std::optional<std::ptrdiff_t> channel_axis = std::nullopt,
                             const mse_options& opt = {}) {
  const char* fn = "calibrate_mse";
  g.validate(fn);
  opt.validate(fn);
  const auto in = detail::as_contiguous(x);
  const detail::channel_layout l = detail::make_channel_layout(in.shape(), channel_axis, fn);
  detail::require_nonempty(l.n, fn);
  const auto ranges = detail::channel_min_max(in.data(), l, fn);
  const std::size_t m = l.per_channel_size();
  std::vector<float> gathered;
  std::vector<const float*> data(l.channels);
  std::vector<std::size_t> sizes(l.channels, m);
  if (l.outer == 1) {  // channel slices are already contiguous (e.g. W[out, in], axis 0)
    for (std::size_t c = 0; c < l.channels; ++c) data[c] = in.data() + c * m;
  } else {
    gathered.resize(l.n);
    detail::gather_channels(in.data(), l, gathered.data());
    for (std::size_t c = 0; c < l.channels; ++c) data[c] = gathered.data() + c * m;
  }
  return detail::lp_search_channels(data, sizes, ranges, g, s, opt, channel_axis);
}

// Streaming MSE / Lp observer: keeps every observed value (detail/samples.hpp) and runs
// the search of calibrate_mse over all of them in compute(). merge() concatenates.
class mse_observer {
 public:
  explicit mse_observer(std::optional<std::ptrdiff_t> channel_axis = std::nullopt, const mse_options& opt = {})
      : opt_(opt) {
    opt_.validate("mse_observer");
    store_.ch.axis = channel_axis;
  }

  template <class E>
  void update(const xt::xexpression<E>& x) {
    const auto in = detail::as_contiguous(x);
    store_.append(in.data(), in.shape(), "mse_observer::update");
  }

  void merge(const mse_observer& other) { store_.merge(other.store_, "mse_observer::merge"); }

  // The Lp search over everything observed; `conv` overrides options().scale_convention.
  qparams compute(grid g, scheme s, symmetric_scale_convention conv = symmetric_scale_convention::pytorch) const {
    const char* fn = "mse_observer::compute";
    g.validate(fn);
    store_.ch.require_data(fn);
    mse_options opt = opt_;
    opt.scale_convention = conv;
    std::vector<const float*> data;
    std::vector<std::size_t> sizes;
    for (const auto& v : store_.values) {
      data.push_back(v.data());
      sizes.push_back(v.size());
    }
    return detail::lp_search_channels(data, sizes, store_.range, g, s, opt, store_.ch.axis);
  }

  bool empty() const noexcept { return store_.ch.channels == 0; }
  std::size_t channels() const noexcept { return store_.ch.channels; }
  const mse_options& options() const noexcept { return opt_; }
  const std::vector<std::vector<float>>& values() const noexcept { return store_.values; }
  void reset() { store_.clear(); }

  // Saves the samples (the options are the constructor's and are not saved).
  void save(std::ostream& os) const {
    detail::write_header(os, "mse");
    store_.save(os);
    detail::write_end(os);
  }
  void load(std::istream& is) {
    detail::observer_reader r{is, "mse_observer::load"};
    r.header("mse");
    store_.load(r);
    r.end();
  }

 private:
  mse_options opt_;
  detail::sample_store store_;
};

}  // namespace quant
