// quant/kurtosis.hpp — kurtosis of weight tensors and the KURE regularizer
// (docs/qat.md; Shkolnik et al. 2020, "Robust Quantization: One Model to Rule Them
// All", eq. 3-4).
//
//   kurtosis   K = mean(((w - mu) / sigma)^4) = m4 / m2^2,  m_k = mean((w - mu)^k)
//              (population moments). Uniform data gives 1.8, Gaussian 3, Laplace 6.
//              variance_estimator::unbiased uses sigma^2 = m2 * N / (N - 1) as the KURE
//              reference code does (torch.std): K_unbiased = K * ((N - 1) / N)^2.
//   KURE loss  L = (1 / T) * sum_i (K_i - K_target)^2 over T tensors, K_target = 1.8.
//              The training objective is L_task + lambda * L (lambda = 1.0 published).
//   gradient   dK/dw_j = c * [ (4/N) ((w_j - mu)^3 - m3) / m2^2 - (4 m4 / (N m2^3)) (w_j - mu) ]
//              with c = 1 (population) or ((N-1)/N)^2 (unbiased), and
//              dL/dw_j(i) = (2 / T) (K_i - K_target) dK_i/dw_j.
//   constant   a tensor with m2 = 0 has no kurtosis: its term is 0, its gradient 0, and it
//              is listed in kure_report::constant_tensors (never a NaN).
//
// Numerics: the moments take one pass over the data with double accumulators. Each fixed
// piece of 2^14 elements sums powers of (w - c), c = the piece's first element (a shift
// that removes the cancellation of raw moments), converts them to central sums and the
// pieces are merged in order with Pébay's (2008) pairwise update. Piece boundaries depend
// on N only, so results are bit-identical for any thread count; the SIMD and scalar paths
// differ only by the order of double additions inside a piece (relative ~1e-13).
// The gradient is a second, fused elementwise pass in float: g = (a y^2 - b) y - a m3,
// y = w - mu, with a, b computed once in double.
// NaN or inf weights are rejected (quant::domain_error): they have no kurtosis.
//
// Public API
//   struct moments { n, mean, m2, m3, m4 }                 population central moments
//   moments central_moments(const xt::xexpression<E>& w)
//   double  kurtosis(const xt::xexpression<E>& w, variance_estimator = population)
//   kure_result<C> kurtosis_loss(const std::vector<const C*>& weights, kure_options = {})
//       -> { loss, terms[i] {kurtosis, term, constant}, constant_tensors, gradients[i] }
//   kure_report kurtosis_loss_into(weights, std::vector<G*> grads, opts)   grads[i] = dL/dw_i
//   kure_report kurtosis_loss_accumulate(weights, std::vector<G*> grads, float lambda, opts)
//       grads[i] += lambda * dL/dw_i (adds the regularizer to a task gradient in place)
//   kernels::central_moments<Arch>(x, n), kernels::kurtosis_gradient<Arch>(...)  raw pointers
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include <xtensor/xexpression.hpp>

#include "detail/contiguous.hpp"
#include "detail/parallel.hpp"
#include "error.hpp"
#include "simd/arch.hpp"
#include "simd/widen.hpp"

namespace quant {

enum class variance_estimator { population, unbiased };

// Population central moments of n values: m_k = mean((x - mean)^k).
struct moments {
  std::size_t n = 0;
  double mean = 0.0, m2 = 0.0, m3 = 0.0, m4 = 0.0;
};

struct kure_options {
  double target = 1.8;  // K_T: the kurtosis of a uniform distribution
  variance_estimator variance = variance_estimator::population;
};

struct kure_term {
  double kurtosis = 0.0;  // K_i (0 for a constant tensor)
  double term = 0.0;      // (K_i - K_T)^2 / T, this tensor's share of the loss
  bool constant = false;  // m2 == 0: no kurtosis, term and gradient are 0
};

struct kure_report {
  double loss = 0.0;
  std::vector<kure_term> terms;
  std::vector<std::size_t> constant_tensors;  // indices of tensors with m2 == 0
};

template <class C>
struct kure_result : kure_report {
  std::vector<detail::result_container_t<C, float>> gradients;  // dL/dw_i, shaped like w_i
};

namespace detail {

// Central sums of one piece (M_k = sum (x - mean)^k), the state Pébay's merge combines.
struct central_sums {
  double n = 0.0, mean = 0.0, M2 = 0.0, M3 = 0.0, M4 = 0.0;
};

// Pébay 2008, eq. 3.1 (pairwise update of central sums up to order 4).
inline central_sums merge(const central_sums& a, const central_sums& b) noexcept {
  if (a.n == 0.0) return b;
  if (b.n == 0.0) return a;
  const double n = a.n + b.n;
  const double delta = b.mean - a.mean;
  const double d_n = delta / n;
  const double d_n2 = d_n * d_n;
  const double na_nb = a.n * b.n;
  central_sums r;
  r.n = n;
  r.mean = a.mean + d_n * b.n;
  r.M2 = a.M2 + b.M2 + delta * d_n * na_nb;
  r.M3 = a.M3 + b.M3 + delta * d_n2 * na_nb * (a.n - b.n) + 3.0 * d_n * (a.n * b.M2 - b.n * a.M2);
  r.M4 = a.M4 + b.M4 + delta * d_n2 * d_n * na_nb * (a.n * a.n - na_nb + b.n * b.n) +
         6.0 * d_n2 * (a.n * a.n * b.M2 + b.n * b.n * a.M2) + 4.0 * d_n * (a.n * b.M3 - b.n * a.M3);
  return r;
}

constexpr std::size_t moments_piece = std::size_t(1) << 14;

// Lanes summed in index order through memory (xsimd's double hadd trips a GCC 12
// -Wuninitialized false positive in avx512fintrin.h).
template <class Arch>
QUANT_ALWAYS_INLINE double sum_lanes(const simd::pack<double, Arch>& v) noexcept {
  if constexpr (std::is_same<Arch, simd::scalar>::value) {
    return v;
  } else {
    constexpr std::size_t L = simd::lanes<double, Arch>;
    alignas(64) double buf[L];
    v.store_aligned(buf);
    double s = 0.0;
    for (std::size_t j = 0; j < L; ++j) s += buf[j];
    return s;
  }
}

// Sums of powers of y = x - c over one piece, then converted to central sums.
template <class Arch>
central_sums piece_sums(const float* x, std::size_t n) noexcept {
  using D = simd::pack<double, Arch>;
  constexpr std::size_t L = simd::lanes<double, Arch>;
  const double c = static_cast<double>(x[0]);
  // Two accumulator sets: the double adds are latency-bound otherwise.
  auto body = [c](const auto& xv, auto& s1, auto& s2, auto& s3, auto& s4) {
    using P = std::decay_t<decltype(xv)>;
    const P y = xv - P(c);
    const P y2 = y * y;
    s1 += y;
    s2 += y2;
    s3 += y2 * y;
    s4 += y2 * y2;
  };
  D a1(0.0), a2(0.0), a3(0.0), a4(0.0), b1(0.0), b2(0.0), b3(0.0), b4(0.0);
  std::size_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    body(simd::load_widen<Arch>(x + i), a1, a2, a3, a4);
    body(simd::load_widen<Arch>(x + i + L), b1, b2, b3, b4);
  }
  double s1 = sum_lanes<Arch>(a1 + b1), s2 = sum_lanes<Arch>(a2 + b2);
  double s3 = sum_lanes<Arch>(a3 + b3), s4 = sum_lanes<Arch>(a4 + b4);
  for (; i < n; ++i) body(static_cast<double>(x[i]), s1, s2, s3, s4);
  const double nn = static_cast<double>(n);
  const double my = s1 / nn;  // mean of y
  const double my2 = my * my;
  central_sums r;
  r.n = nn;
  r.mean = c + my;
  r.M2 = s2 - nn * my2;
  r.M3 = s3 - 3.0 * my * s2 + 2.0 * nn * my2 * my;
  r.M4 = s4 - 4.0 * my * s3 + 6.0 * my2 * s2 - 3.0 * nn * my2 * my2;
  // A piece of identical values has exactly zero sums; tiny negative M2 from rounding
  // in nearly constant pieces would make the kurtosis meaningless.
  if (r.M2 < 0.0) r.M2 = 0.0;
  return r;
}

}  // namespace detail

namespace kernels {

// Population central moments of x[0..n) (n >= 1). Non-finite input gives non-finite
// moments (the entry points check).
template <class Arch = simd::default_arch>
moments central_moments(const float* x, std::size_t n) noexcept {
  const detail::central_sums s = detail::parallel_reduce(
      n, detail::moments_piece, detail::central_sums{},
      [x](std::size_t b, std::size_t e) { return detail::piece_sums<Arch>(x + b, e - b); },
      [](const detail::central_sums& a, const detail::central_sums& b) { return detail::merge(a, b); });
  moments m;
  m.n = n;
  if (n == 0) return m;
  m.mean = s.mean;
  m.m2 = s.M2 / s.n;
  m.m3 = s.M3 / s.n;
  m.m4 = s.M4 / s.n;
  return m;
}

// g[j] (= or +=) a * (y^3 - m3) - b * y, y = x[j] - mu: the fused gradient pass.
// Callers fold the chain-rule factor of their loss into a and b.
template <class Arch = simd::default_arch>
void kurtosis_gradient(const float* x, std::size_t n, float mu, float a, float b, float a_m3, float* g,
                       bool accumulate) noexcept {
  using P = simd::pack<float, Arch>;
  constexpr std::size_t L = simd::lanes<float, Arch>;
  auto body = [&](std::size_t i, auto tag) {
    using Q = decltype(tag);
    using A = simd::arch_of<Q>;
    const Q y = simd::load<A>(x + i) - Q(mu);
    Q v = (Q(a) * (y * y) - Q(b)) * y - Q(a_m3);
    if (accumulate) v = simd::load<A>(g + i) + v;
    simd::store(g + i, v);
  };
  detail::parallel_for((n + detail::moments_piece - 1) / detail::moments_piece, n, [&](std::size_t k) {
    const std::size_t b0 = k * detail::moments_piece;
    const std::size_t e = b0 + detail::moments_piece < n ? b0 + detail::moments_piece : n;
    std::size_t i = b0;
    for (; i + L <= e; i += L) body(i, P{});
    for (; i < e; ++i) body(i, float{});
  });
}

}  // namespace kernels

namespace detail {

inline void check_moments(const moments& m, const char* function, std::size_t tensor) {
  if (!(std::isfinite(m.mean) && std::isfinite(m.m2) && std::isfinite(m.m3) && std::isfinite(m.m4)))
    fail<domain_error>(function, "weights", "tensor " + std::to_string(tensor),
                       "contains NaN or inf (kurtosis is undefined)");
}

// K and the gradient coefficients of dK/dw for one tensor; constant tensors give
// is_constant = true.
struct kurtosis_terms {
  double k = 0.0, a = 0.0, b = 0.0;  // dK/dw = a (y^3 - m3) - b y
  bool is_constant = false;
};

inline kurtosis_terms kurtosis_from_moments(const moments& m, variance_estimator v) noexcept {
  kurtosis_terms t;
  if (!(m.m2 > 0.0)) {
    t.is_constant = true;
    return t;
  }
  const double n = static_cast<double>(m.n);
  const double c = (v == variance_estimator::unbiased) ? ((n - 1.0) / n) * ((n - 1.0) / n) : 1.0;
  const double m2sq = m.m2 * m.m2;
  t.k = c * m.m4 / m2sq;
  t.a = c * 4.0 / (n * m2sq);
  t.b = c * 4.0 * m.m4 / (n * m2sq * m.m2);
  return t;
}

template <class C>
const float* tensor_data(const C* w, const char* function, std::size_t i) {
  static_assert(is_row_major_float_container<C>::value, "weights must be row-major float containers");
  if (w == nullptr) fail<invalid_argument>(function, "weights", "tensor " + std::to_string(i), "is a null pointer");
  if (w->size() == 0) fail<invalid_argument>(function, "weights", "tensor " + std::to_string(i), "is empty");
  return w->data();
}

// Computes the report and calls emit(i, x, n, mu, a, b, a*m3) for each non-constant tensor.
template <class C, class Emit>
kure_report kure_core(const std::vector<const C*>& weights, const kure_options& opt, const char* fn, Emit&& emit) {
  if (weights.empty()) fail<invalid_argument>(fn, "weights.size()", 0, "needs at least one tensor");
  if (!std::isfinite(opt.target)) fail<invalid_argument>(fn, "target", opt.target, "must be finite");
  const double T = static_cast<double>(weights.size());
  kure_report r;
  r.terms.resize(weights.size());
  std::vector<moments> ms(weights.size());
  for (std::size_t i = 0; i < weights.size(); ++i) {  // validate everything before any output
    const float* x = tensor_data(weights[i], fn, i);
    ms[i] = kernels::central_moments(x, weights[i]->size());
    check_moments(ms[i], fn, i);
  }
  for (std::size_t i = 0; i < weights.size(); ++i) {
    const kurtosis_terms kt = kurtosis_from_moments(ms[i], opt.variance);
    kure_term& term = r.terms[i];
    if (kt.is_constant) {
      term.constant = true;
      r.constant_tensors.push_back(i);
      emit(i, nullptr, 0.0, 0.0, 0.0, 0.0);
      continue;
    }
    const double diff = kt.k - opt.target;
    term.kurtosis = kt.k;
    term.term = diff * diff / T;
    r.loss += term.term;
    const double chain = 2.0 * diff / T;
    emit(i, weights[i]->data(), ms[i].mean, chain * kt.a, chain * kt.b, chain * kt.a * ms[i].m3);
  }
  return r;
}

}  // namespace detail

// Population central moments of any float expression (evaluated once if it is not a
// contiguous float container). Throws quant::invalid_argument on an empty input.
template <class E>
moments central_moments(const xt::xexpression<E>& w) {
  const auto in = detail::as_contiguous(w);
  if (in.size() == 0) detail::fail<invalid_argument>("central_moments", "w.size()", 0, "must be >= 1");
  return kernels::central_moments(in.data(), in.size());
}

// Kurtosis m4 / m2^2 (or with the unbiased variance). 0 for a constant tensor. Throws
// quant::invalid_argument on an empty input, quant::domain_error on NaN/inf.
template <class E>
double kurtosis(const xt::xexpression<E>& w, variance_estimator v = variance_estimator::population) {
  const char* fn = "kurtosis";
  const auto in = detail::as_contiguous(w);
  if (in.size() == 0) detail::fail<invalid_argument>(fn, "w.size()", 0, "must be >= 1");
  const moments m = kernels::central_moments(in.data(), in.size());
  detail::check_moments(m, fn, 0);
  return detail::kurtosis_from_moments(m, v).k;
}

// KURE loss over the tensors (one per layer, any shapes) and dL/dw for each, shaped like
// the tensors. C is a row-major float container (xt::xtensor<float, N>, xt::xarray<float>).
template <class C>
kure_result<C> kurtosis_loss(const std::vector<const C*>& weights, const kure_options& opt = {}) {
  kure_result<C> out;
  out.gradients.resize(weights.size());
  kure_report r = detail::kure_core(weights, opt, "kurtosis_loss",
                                    [&](std::size_t i, const float* x, double mu, double a, double b, double am3) {
                                      auto& g = out.gradients[i];
                                      g.resize(weights[i]->shape());
                                      if (x == nullptr) {
                                        std::fill(g.begin(), g.end(), 0.0f);
                                        return;
                                      }
                                      kernels::kurtosis_gradient(x, g.size(), static_cast<float>(mu),
                                                                 static_cast<float>(a), static_cast<float>(b),
                                                                 static_cast<float>(am3), g.data(), false);
                                    });
  static_cast<kure_report&>(out) = std::move(r);
  return out;
}

namespace detail {
template <class C, class G>
kure_report kure_into(const std::vector<const C*>& weights, const std::vector<G*>& grads, float lambda,
                      const kure_options& opt, bool accumulate, const char* fn) {
  static_assert(is_row_major_float_container<G>::value, "grads must be row-major float containers");
  if (grads.size() != weights.size())
    fail<length_error>(fn, "grads.size()", grads.size(), "must equal weights.size() = " + std::to_string(weights.size()));
  if (!std::isfinite(lambda)) fail<invalid_argument>(fn, "lambda", lambda, "must be finite");
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (grads[i] == nullptr) fail<invalid_argument>(fn, "grads", "tensor " + std::to_string(i), "is a null pointer");
    if (weights[i] != nullptr && grads[i]->size() != weights[i]->size())
      fail<length_error>(fn, "grads", "tensor " + std::to_string(i) + " of " + std::to_string(grads[i]->size()) + " elements",
                         "must match its weight tensor of " + std::to_string(weights[i]->size()));
  }
  const double l = static_cast<double>(lambda);
  return kure_core(weights, opt, fn, [&](std::size_t i, const float* x, double mu, double a, double b, double am3) {
    if (x == nullptr) {
      if (!accumulate) std::fill(grads[i]->data(), grads[i]->data() + grads[i]->size(), 0.0f);
      return;
    }
    kernels::kurtosis_gradient(x, weights[i]->size(), static_cast<float>(mu), static_cast<float>(l * a),
                               static_cast<float>(l * b), static_cast<float>(l * am3), grads[i]->data(), accumulate);
  });
}
}  // namespace detail

// Writes dL/dw_i into caller-provided grads[i] (same element counts as weights[i]) and
// returns the report: the allocation-free form of kurtosis_loss.
template <class C, class G>
kure_report kurtosis_loss_into(const std::vector<const C*>& weights, const std::vector<G*>& grads,
                               const kure_options& opt = {}) {
  return detail::kure_into(weights, grads, 1.0f, opt, false, "kurtosis_loss_into");
}

// Adds lambda * dL/dw_i to grads[i] and returns the report (whose loss is the unscaled
// L). For a trainer: task gradients in, task + lambda * KURE gradients out.
template <class C, class G>
kure_report kurtosis_loss_accumulate(const std::vector<const C*>& weights, const std::vector<G*>& grads,
                                     float lambda, const kure_options& opt = {}) {
  return detail::kure_into(weights, grads, lambda, opt, true, "kurtosis_loss_accumulate");
}

}  // namespace quant
