// quant/adaround/rounding.hpp — AdaRound's soft and hard rounding of a weight tensor
// (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization";
// docs/adaround.md). No BLAS, no iostreams.
//
//   rectified sigmoid  h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1),  zeta = 1.1, gamma = -0.1
//                      (paper eq. 23)
//   h'(V)              = sigmoid(V) (1 - sigmoid(V)) (zeta - gamma) where 0 < h < 1, else 0
//   init               V = -log((zeta - gamma) / (r - gamma) - 1),  r = W/s - floor(W/s), so h(V) = r
//                      and the soft weight starts at W (inside the grid)
//   soft weight        W_soft = s (clamp(floor(W/s) + h(V) + z, qmin, qmax) - z)          (eq. 22)
//   dW_soft/dV         = s h'(V) where qmin <= floor(W/s) + h + z <= qmax, else 0
//   hard weight        q = clamp(floor(W/s) + 1[V >= 0] + z, qmin, qmax), W_q = s (q - z)
//   regularizer        f_reg = sum(1 - |2 h(V) - 1|^beta)                                   (eq. 24)
//   df_reg/dV          = -2 beta |2h - 1|^(beta - 1) sign(2h - 1) h'(V)
// W/s is computed as W * (1/s) with the float reciprocal, as everywhere in quant.
//
// Lazy primitives (xtensor expressions, float or double, vectorized under
// XTENSOR_USE_XSIMD): rectified_sigmoid, rectified_sigmoid_grad, soft_weight,
// soft_weight_grad, hard_weight, adaround_regularizer_terms, adaround_regularizer_grad.
// Eager (namespace eager, like every eager entry point; any xtensor expression, any
// granularity incl. per-group): eager::adaround_init, eager::adaround_init_from_integers,
// eager::adaround_integer_weights, eager::adaround_regularizer.
// Numerics: every operation is the IEEE one except exp and log (simd/exp_log.hpp: SIMD
// and scalar agree to a few ulp, not bit for bit); |t|^e is exp(e log|t|) with 0^e = 0.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xfunction.hpp>
#include <xtensor/xtensor.hpp>

#include "../detail/checks.hpp"
#include "../detail/parallel.hpp"
#include "../detail/segments.hpp"
#include "../error.hpp"
#include "../optim.hpp"
#include "../qparams.hpp"
#include "../simd/arch.hpp"
#include "../simd/exp_log.hpp"
#include "../uniform.hpp"

namespace quant {

// Stretch parameters of the rectified sigmoid (Louizos et al. 2018, as used by AdaRound).
constexpr float adaround_zeta = 1.1f;
constexpr float adaround_gamma = -0.1f;

namespace detail {

// Earlier name of the guard of the functors' simd_apply (float and double packs).
template <class B>
using enable_floating_batch [[deprecated("use simd::enable_if_pack_of<B, float, double>")]] =
    simd::enable_if_pack_of<B, float, double>;

// Value type a lazy functor computes in: double for double inputs, float otherwise.
template <class T>
using compute_t = std::conditional_t<std::is_same<std::decay_t<T>, double>::value, double, float>;

// Earlier names of simd::exp / simd::log (simd/exp_log.hpp).
template <class P>
QUANT_ALWAYS_INLINE P exp_of(const P& x) noexcept {
  return simd::exp(x);
}
template <class P>
QUANT_ALWAYS_INLINE P log_of(const P& x) noexcept {
  return simd::log(x);
}

template <class P>
QUANT_ALWAYS_INLINE P sigmoid(const P& v) noexcept {
  return P(1) / (P(1) + simd::exp(-v));
}

// sigmoid(V) stretched to (gamma, zeta), before the clamp.
template <class P>
QUANT_ALWAYS_INLINE P stretched(const P& sig) noexcept {
  return simd::fma(sig, P(adaround_zeta - adaround_gamma), P(adaround_gamma));
}

// h'(V) from sig = sigmoid(V) where 0 < h < 1 (`inside`), else 0.
template <class P, class M>
QUANT_ALWAYS_INLINE P stretched_grad(const M& inside, const P& sig) noexcept {
  return simd::select(inside, simd::fma(-sig, sig, sig) * P(adaround_zeta - adaround_gamma), P(0));  // sig (1 - sig)
}

template <class P>
QUANT_ALWAYS_INLINE P rect_sigmoid(const P& v) noexcept {
  return simd::clamp(stretched(sigmoid(v)), P(0), P(1));
}

template <class P>
QUANT_ALWAYS_INLINE P rect_sigmoid_grad(const P& v) noexcept {
  const P sig = sigmoid(v);
  const P u = stretched(sig);
  return stretched_grad((u > P(0)) & (u < P(1)), sig);
}

// |t|^e for e >= 0 with 0^e = 0 (the regularizer terms only use it where that is the limit).
template <class P>
QUANT_ALWAYS_INLINE P pow_abs(const P& t, const P& e) noexcept {
  const P a = simd::abs(t);
  return simd::select(a > P(0), simd::exp(e * simd::log(a)), P(0));
}

template <class P>
QUANT_ALWAYS_INLINE P regularizer_term(const P& v, const P& beta) noexcept {
  const P t = P(2) * rect_sigmoid(v) - P(1);
  return P(1) - pow_abs(t, beta);
}

template <class P>
QUANT_ALWAYS_INLINE P regularizer_grad(const P& v, const P& beta) noexcept {
  const P sig = sigmoid(v);
  const P u = stretched(sig);
  const P h = simd::clamp(u, P(0), P(1));
  const P hp = stretched_grad((u > P(0)) & (u < P(1)), sig);
  const P t = P(2) * h - P(1);
  const P p = pow_abs(t, beta - P(1));
  return P(-2) * beta * simd::select(t < P(0), -p, p) * hp;
}

}  // namespace detail

// ====================================================================================
// Lazy primitives
// ====================================================================================
// V -> h(V)
struct rectified_sigmoid_functor {
  template <class T>
  auto operator()(const T& v) const noexcept {
    return detail::rect_sigmoid(static_cast<detail::compute_t<T>>(v));
  }
  template <class B, simd::enable_if_pack_of<B, float, double> = 0>
  B simd_apply(const B& v) const noexcept {
    return detail::rect_sigmoid(v);
  }
};

// V -> h'(V)
struct rectified_sigmoid_grad_functor {
  template <class T>
  auto operator()(const T& v) const noexcept {
    return detail::rect_sigmoid_grad(static_cast<detail::compute_t<T>>(v));
  }
  template <class B, simd::enable_if_pack_of<B, float, double> = 0>
  B simd_apply(const B& v) const noexcept {
    return detail::rect_sigmoid_grad(v);
  }
};

// V -> 1 - |2 h(V) - 1|^beta (one regularizer term)
struct adaround_regularizer_term_functor {
  float beta;
  template <class T>
  auto operator()(const T& v) const noexcept {
    using C = detail::compute_t<T>;
    return detail::regularizer_term(static_cast<C>(v), static_cast<C>(beta));
  }
  template <class B, simd::enable_if_pack_of<B, float, double> = 0>
  B simd_apply(const B& v) const noexcept {
    return detail::regularizer_term(v, B(static_cast<typename B::value_type>(beta)));
  }
};

// V -> d(1 - |2h - 1|^beta)/dV
struct adaround_regularizer_grad_functor {
  float beta;
  template <class T>
  auto operator()(const T& v) const noexcept {
    using C = detail::compute_t<T>;
    return detail::regularizer_grad(static_cast<C>(v), static_cast<C>(beta));
  }
  template <class B, simd::enable_if_pack_of<B, float, double> = 0>
  B simd_apply(const B& v) const noexcept {
    return detail::regularizer_grad(v, B(static_cast<typename B::value_type>(beta)));
  }
};

// (W, V, s, 1/s, z) -> soft weight; (W, V, s, 1/s, z) -> dW_soft/dV; (W, V, ...) -> hard weight.
struct soft_weight_functor {
  float qmin, qmax;
  template <class T, class U>
  auto operator()(const T& w, const U& v, float s, float inv_s, float z) const noexcept {
    using C = std::common_type_t<detail::compute_t<T>, detail::compute_t<U>>;
    const C q = detail::rect_sigmoid(static_cast<C>(v)) + std::floor(static_cast<C>(w) * C(inv_s)) + C(z);
    return C(s) * (simd::clamp(q, C(qmin), C(qmax)) - C(z));
  }
};
struct soft_weight_grad_functor {
  float qmin, qmax;
  template <class T, class U>
  auto operator()(const T& w, const U& v, float s, float inv_s, float z) const noexcept {
    using C = std::common_type_t<detail::compute_t<T>, detail::compute_t<U>>;
    const C q = detail::rect_sigmoid(static_cast<C>(v)) + std::floor(static_cast<C>(w) * C(inv_s)) + C(z);
    return (q >= C(qmin) && q <= C(qmax)) ? C(s) * detail::rect_sigmoid_grad(static_cast<C>(v)) : C(0);
  }
};
struct hard_weight_functor {
  float qmin, qmax;
  template <class T, class U>
  float operator()(const T& w, const U& v, float s, float inv_s, float z) const noexcept {
    const float q = std::floor(static_cast<float>(w) * inv_s) + (static_cast<float>(v) >= 0.0f ? 1.0f : 0.0f) + z;
    return s * (simd::clamp(q, qmin, qmax) - z);
  }
};

namespace detail {
inline void check_beta(float beta, const char* function) {
  if (!(std::isfinite(beta) && beta >= 1.0f))
    fail<invalid_argument>(function, "beta", beta, "must be finite and >= 1");
}

template <class F, class EW, class EV>
auto make_weight_expression(EW&& w, EV&& v, const qparams& p, const char* function) {
  if (w.dimension() != v.dimension() || !std::equal(w.shape().begin(), w.shape().end(), v.shape().begin()))
    fail<length_error>(function, "V.shape()", shape_string(v.shape()),
                       "must equal W.shape() = " + shape_string(w.shape()));
  const std::size_t ndim = w.dimension();
  check_channel_count(w, p, ndim, function);
  auto ops = make_channel_operands(p, ndim, function);
  return xt::xfunction<F, xt::const_xclosure_t<EW>, xt::const_xclosure_t<EV>, xt::xarray<float>, xt::xarray<float>,
                       xt::xarray<float>>(F{static_cast<float>(p.qmin()), static_cast<float>(p.qmax())},
                                          std::forward<EW>(w), std::forward<EV>(v), std::move(ops.scale),
                                          std::move(ops.inv_scale), std::move(ops.zero_point));
}
}  // namespace detail

// h(V), elementwise and lazy (float or double, vectorized under XTENSOR_USE_XSIMD).
template <class E>
auto rectified_sigmoid(E&& v) {
  return xt::xfunction<rectified_sigmoid_functor, xt::const_xclosure_t<E>>(rectified_sigmoid_functor{},
                                                                          std::forward<E>(v));
}
// h'(V) (0 where h is clamped to 0 or 1).
template <class E>
auto rectified_sigmoid_grad(E&& v) {
  return xt::xfunction<rectified_sigmoid_grad_functor, xt::const_xclosure_t<E>>(rectified_sigmoid_grad_functor{},
                                                                               std::forward<E>(v));
}
// The terms 1 - |2h(V) - 1|^beta of the regularizer (sum them for f_reg). beta >= 1.
template <class E>
auto adaround_regularizer_terms(E&& v, float beta) {
  detail::check_beta(beta, "adaround_regularizer_terms");
  return xt::xfunction<adaround_regularizer_term_functor, xt::const_xclosure_t<E>>(
      adaround_regularizer_term_functor{beta}, std::forward<E>(v));
}
// d f_reg / dV, elementwise. beta >= 1.
template <class E>
auto adaround_regularizer_grad(E&& v, float beta) {
  detail::check_beta(beta, "adaround_regularizer_grad");
  return xt::xfunction<adaround_regularizer_grad_functor, xt::const_xclosure_t<E>>(
      adaround_regularizer_grad_functor{beta}, std::forward<E>(v));
}
// W_soft(W, V) with per-tensor or per-channel qparams (lazy; V has W's shape).
template <class EW, class EV>
auto soft_weight(EW&& w, EV&& v, const qparams& p) {
  return detail::make_weight_expression<soft_weight_functor>(std::forward<EW>(w), std::forward<EV>(v), p,
                                                             "soft_weight");
}
// dW_soft/dV (elementwise: W_soft[i] depends on V[i] only).
template <class EW, class EV>
auto soft_weight_grad(EW&& w, EV&& v, const qparams& p) {
  return detail::make_weight_expression<soft_weight_grad_functor>(std::forward<EW>(w), std::forward<EV>(v), p,
                                                                  "soft_weight_grad");
}
// Hard-rounded fake-quantized weight s (clamp(floor(W/s) + 1[V >= 0] + z) - z).
template <class EW, class EV>
auto hard_weight(EW&& w, EV&& v, const qparams& p) {
  return detail::make_weight_expression<hard_weight_functor>(std::forward<EW>(w), std::forward<EV>(v), p,
                                                             "hard_weight");
}

namespace detail {
// body(i, s, 1/s, z) for every element i of [begin, end) of a tensor laid out by `plan`
// (detail/segments.hpp), serially. For the one-off setup loops; kernels walk runs.
template <class Body>
void for_each_param(const segment_plan& plan, std::size_t begin, std::size_t end, Body&& body) {
  const float* s = plan.scale();
  const float* inv = plan.inv_scale();
  const float* z = plan.zero_point();
  const bool vec = plan.vector_params;
  for_each_run(plan, begin, end, [&](std::size_t b, std::size_t len, std::size_t po) {
    for (std::size_t k = 0; k < len; ++k) {
      const std::size_t j = po + (vec ? k : 0);
      body(b + k, s[j], inv[j], z[j]);
    }
  });
}
}  // namespace detail

// ====================================================================================
// Eager entry points over xtensor expressions
// ====================================================================================
namespace eager {

// V such that h(V) = W/s - floor(W/s) (AdaRound's init: the soft weight starts at W).
// Returns a container shaped like W. Throws on non-finite W or qparams that do not fit W.
template <class E>
auto adaround_init(const xt::xexpression<E>& w, const qparams& p) {
  const char* fn = "adaround_init";
  const auto in = detail::as_contiguous(w);
  detail::require_finite(in.data(), in.size(), fn, "W");
  const auto plan = detail::make_segment_plan(in.shape(), p, fn);
  using R = detail::result_container_t<E, float>;
  R v = R::from_shape(in.shape());
  const float* x = in.data();
  float* out = v.data();
  detail::for_each_param(plan, 0, plan.n, [&](std::size_t i, float, float inv_s, float) {
    const float t = x[i] * inv_s;
    const float r = t - std::floor(t);  // [0, 1]
    // h^{-1}(r) = -log((zeta - gamma)/(r - gamma) - 1); r - gamma >= 0.1 so no division by 0.
    out[i] = -std::log((adaround_zeta - adaround_gamma) / (r - adaround_gamma) - 1.0f);
  });
  return v;
}

// V whose hard rounding reproduces given integers q (e.g. GPTQ's, gptq.hpp), to start
// AdaRound from another method's rounding: where clamp(floor(W/s) + u + z, qmin, qmax) = q
// for exactly one u in {0, 1}, h(V) = margin (u = 0) or 1 - margin (u = 1); where both give q
// (clamped), AdaRound's own init; where neither does (q beyond floor(W/s) + z + {0, 1}), the
// nearer one. margin in (0, 0.5): h stays off the clamped ends, so V still has a gradient.
// Throws like adaround_init, quant::length_error when q's shape differs from W's and
// quant::invalid_argument for a margin outside (0, 0.5).
template <class EW, class EQ>
auto adaround_init_from_integers(const xt::xexpression<EW>& w, const xt::xexpression<EQ>& q, const qparams& p,
                                 float margin = 0.1f) {
  const char* fn = "adaround_init_from_integers";
  if (!(margin > 0.0f && margin < 0.5f)) detail::fail<invalid_argument>(fn, "margin", margin, "must be in (0, 0.5)");
  const auto& qe = q.derived_cast();
  const auto in = detail::as_contiguous(w);
  if (!std::equal(in.shape().begin(), in.shape().end(), qe.shape().begin(), qe.shape().end()))
    detail::fail<length_error>(fn, "q.shape()", detail::shape_string(qe.shape()),
                               "must equal W.shape() = " + detail::shape_string(in.shape()));
  auto v = eager::adaround_init(w, p);
  const auto plan = detail::make_segment_plan(in.shape(), p, fn);
  const float qmin = static_cast<float>(p.qmin()), qmax = static_cast<float>(p.qmax());
  const float up = -std::log((adaround_zeta - adaround_gamma) / (1.0f - margin - adaround_gamma) - 1.0f);
  const float down = -std::log((adaround_zeta - adaround_gamma) / (margin - adaround_gamma) - 1.0f);
  const std::vector<double> qflat(qe.begin(), qe.end());  // row-major order, as W's flat index
  detail::for_each_param(plan, 0, plan.n, [&](std::size_t i, float, float inv_s, float z) {
    const float target = static_cast<float>(qflat[i]);
    const float base = std::floor(in.data()[i] * inv_s) + z;
    const float lo = simd::clamp(base, qmin, qmax), hi = simd::clamp(base + 1.0f, qmin, qmax);
    if (lo == target && hi == target) return;
    v.data()[i] = (hi == target || (lo != target && target > hi)) ? up : down;
  });
  return v;
}

// Hard-rounded integers clamp(floor(W/s) + 1[V >= 0] + z, qmin, qmax) as int32.
template <class EW, class EV>
auto adaround_integer_weights(const xt::xexpression<EW>& w, const xt::xexpression<EV>& v, const qparams& p) {
  const char* fn = "adaround_integer_weights";
  const auto wi = detail::as_contiguous(w);
  const auto vi = detail::as_contiguous(v);
  if (!std::equal(wi.shape().begin(), wi.shape().end(), vi.shape().begin(), vi.shape().end()))
    detail::fail<length_error>(fn, "V.shape()", detail::shape_string(vi.shape()),
                               "must equal W.shape() = " + detail::shape_string(wi.shape()));
  const auto plan = detail::make_segment_plan(wi.shape(), p, fn);
  using R = detail::result_container_t<EW, std::int32_t>;
  R q = R::from_shape(wi.shape());
  const float qmin = static_cast<float>(p.qmin()), qmax = static_cast<float>(p.qmax());
  detail::for_each_param(plan, 0, plan.n, [&](std::size_t i, float, float inv_s, float z) {
    const float g = std::floor(wi.data()[i] * inv_s) + (vi.data()[i] >= 0.0f ? 1.0f : 0.0f) + z;
    q.data()[i] = static_cast<std::int32_t>(simd::clamp(g, qmin, qmax));
  });
  return q;
}

// f_reg = sum(1 - |2h(V) - 1|^beta), accumulated in double (fixed pieces: the same value
// for any thread count).
template <class E>
double adaround_regularizer(const xt::xexpression<E>& v, float beta) {
  detail::check_beta(beta, "adaround_regularizer");
  const auto in = detail::as_contiguous(v);
  const float* x = in.data();
  return detail::parallel_reduce(
      in.size(), detail::optim_piece, 0.0,
      [&](std::size_t b, std::size_t e) {
        double acc = 0.0;
        for (std::size_t i = b; i < e; ++i) acc += static_cast<double>(detail::regularizer_term(x[i], beta));
        return acc;
      },
      [](double a, double b) { return a + b; });
}

}  // namespace eager

// Earlier names of the eager entry points (they were in quant:: itself), deprecated. The
// unused trailing pack makes each less specialized than its eager:: namesake, so a call
// that sees both (using namespace quant::eager, plus quant:: by argument-dependent lookup)
// takes the eager:: one instead of being ambiguous.
template <class E, class... None>
[[deprecated("use quant::eager::adaround_init")]] auto adaround_init(const xt::xexpression<E>& w, const qparams& p,
                                                                      None...) {
  return eager::adaround_init(w, p);
}
template <class EW, class EQ, class... None>
[[deprecated("use quant::eager::adaround_init_from_integers")]] auto adaround_init_from_integers(
    const xt::xexpression<EW>& w, const xt::xexpression<EQ>& q, const qparams& p, None...) {
  return eager::adaround_init_from_integers(w, q, p);
}
template <class EW, class EQ, class... None>
[[deprecated("use quant::eager::adaround_init_from_integers")]] auto adaround_init_from_integers(
    const xt::xexpression<EW>& w, const xt::xexpression<EQ>& q, const qparams& p, float margin, None...) {
  return eager::adaround_init_from_integers(w, q, p, margin);
}
template <class EW, class EV, class... None>
[[deprecated("use quant::eager::adaround_integer_weights")]] auto adaround_integer_weights(
    const xt::xexpression<EW>& w, const xt::xexpression<EV>& v, const qparams& p, None...) {
  return eager::adaround_integer_weights(w, v, p);
}
template <class E, class... None>
[[deprecated("use quant::eager::adaround_regularizer")]] double adaround_regularizer(const xt::xexpression<E>& v,
                                                                                    float beta, None...) {
  return eager::adaround_regularizer(v, beta);
}

}  // namespace quant
