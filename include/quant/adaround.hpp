// quant/adaround.hpp — AdaRound: learn, per weight, whether to round up or down so that the
// layer *output* is reconstructed (Nagel et al. 2020, "Up or Down? Adaptive Rounding for
// Post-Training Quantization"; docs/adaround.md).
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
// Layer objective (eq. 25, with BRECQ's normalization and asymmetric reconstruction):
//   L = (1/B) sum_{b, o} (f_a(W x_b + bias) - f_a(W_soft x_hat_b + bias))_o^2 + lambda f_reg
// x = input in the full-precision model, x_hat = input in the quantized model (defaults to
// x), f_a = identity or ReLU, B = mini-batch of rows. The regularizer is off during the
// first `warmup` fraction of iterations; beta then anneals from beta_start to beta_end
// (linear as BRECQ/QDrop, or cosine as AIMET).
//
// Contents:
//  * primitives (lazy xtensor expressions, float or double): rectified_sigmoid,
//    rectified_sigmoid_grad, soft_weight, soft_weight_grad, hard_weight,
//    adaround_regularizer_terms, adaround_regularizer_grad; eager adaround_init,
//    adaround_regularizer, adaround_integer_weights.
//  * kernels::adaround_fused_step: the per-iteration pass over V (soft-weight gradient, h',
//    regularizer gradient, Adam, next sigmoid and soft weight) in one sweep, keeping
//    sigmoid(V) between iterations (one sigmoid per element per iteration) and skipping
//    the work of packs whose h is already binary; kernels::adaround_soft_weights sets up
//    its state.
//  * adaround_variables: V, its Adam state and the soft weight of one weight tensor (the
//    unit the layer optimizer, block reconstruction and custom trainers share).
//  * adaround_optimizer / adaround_layer: the layer optimizer (two GEMMs + the fused pass per
//    iteration), adaround_progress_printer for terminals.
// Numerics: every operation is the IEEE one in float except exp and log. Float SIMD packs
// use a division-free log and an exp written with explicit FMAs (Cephes' polynomials,
// both within 2 ulp, tested); scalar code uses std::exp / std::log, so SIMD and scalar
// results agree to a few ulp, not bit for bit. Multiply-adds that are spelled simd::fma
// are fused whatever the compiler's -ffp-contract. The pow of the regularizer is
// exp((beta - 1) log|2h-1|) times |2h-1|; in the fused pass |2h-1|^(beta-1) < e^-80 counts
// as 0, and Adam flushes its tiny moments (optim.hpp), so that no subnormal float ever
// enters the pass: on x86 each instruction that meets one takes a ~100-cycle assist, and
// at beta = 20 |2h-1|^19 is subnormal for 1 % of the weights (this had made the
// regularized phase 2x slower than the warm-up).
// Data layout of the layer optimizer: rows are samples. W [out, in], X [samples, in]
// (a Linear layer's input batch, or a conv layer's im2col matrix, see im2col.hpp), so a
// mini-batch is a gather of contiguous rows and both GEMMs run on it in place:
// Y = X_b W_soft^T [B, out] and dL/dW_soft = dY^T X_b [out, in].
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iomanip>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor-blas/xlinalg.hpp>
#include <xtensor/xfunction.hpp>
#include <xtensor/xtensor.hpp>

#include "detail/counter_random.hpp"
#include "detail/parallel.hpp"
#include "detail/segments.hpp"
#include "error.hpp"
#include "optim.hpp"
#include "qparams.hpp"
#include "simd/arch.hpp"
#include "uniform.hpp"

// On the per-chunk worker of the fused AdaRound pass: inline everything below it, xsimd's
// exp and log included (GCC otherwise calls them once per pack).
#if defined(__GNUC__) && !defined(__clang__)
#define QUANT_ADAROUND_FLATTEN __attribute__((flatten))
#else
#define QUANT_ADAROUND_FLATTEN
#endif

namespace quant {

// Stretch parameters of the rectified sigmoid (Louizos et al. 2018, as used by AdaRound).
constexpr float adaround_zeta = 1.1f;
constexpr float adaround_gamma = -0.1f;

// The activation following the layer in the reconstruction objective.
enum class activation { identity, relu };

namespace detail {

template <class B>
using enable_floating_batch = std::enable_if_t<std::is_floating_point<typename B::value_type>::value, int>;

// Value type a lazy functor computes in: double for double inputs, float otherwise.
template <class T>
using compute_t = std::conditional_t<std::is_same<std::decay_t<T>, double>::value, double, float>;

QUANT_ALWAYS_INLINE float exp_of(float x) noexcept { return std::exp(x); }
QUANT_ALWAYS_INLINE double exp_of(double x) noexcept { return std::exp(x); }
// GCC 12 warns inside xsimd's AVX-512 exp/log about the _mm512_undefined_* merge sources
// of its maskless intrinsics; those values are never read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
template <class A>
QUANT_ALWAYS_INLINE xsimd::batch<double, A> exp_of(const xsimd::batch<double, A>& x) noexcept {
  return xsimd::exp(x);
}
// exp(x) for float packs: x = k ln2 + r with k = round(x / ln2) and ln2 in two parts
// (Cody-Waite), exp(r) = 1 + r + r^2 P(r) with Cephes' expf polynomial (the one xsimd
// uses), times 2^k built in exponent fields; subnormal results down to 0 below -104, inf
// above log(FLT_MAX), NaN stays NaN. Within 2 ulp of exp (tested). Written out instead of
// xsimd::exp because xsimd 8.1 evaluates its polynomial with a generic a * b + c on
// AVX-512 (no FMA there), which -ffp-contract=off turns into twice the instructions and
// other bits.
template <class A>
QUANT_ALWAYS_INLINE xsimd::batch<float, A> exp_of(const xsimd::batch<float, A>& x) noexcept {
  using B = xsimd::batch<float, A>;
  using I = xsimd::batch<std::int32_t, A>;
  // Clamped first so that lanes far out of range do not build garbage exponents (and
  // subnormal intermediates) before the selects at the end; NaN passes the clamp.
  const B xc = simd::clamp(x, B(-104.0f), B(89.0f));
  const B k = xsimd::nearbyint(xc * B(1.44269504088896341f));
  B r = simd::fma(k, B(-0.693359375f), xc);
  r = simd::fma(k, B(2.12194440e-4f), r);
  B y = B(1.3997796e-03f);
  y = simd::fma(y, r, B(8.3955629e-03f));
  y = simd::fma(y, r, B(4.1665401e-02f));
  y = simd::fma(y, r, B(1.6666277e-01f));
  y = simd::fma(y, r, B(5.0000000e-01f));
  y = simd::fma(y, r * r, r) + B(1.0f);
  // 2^k as 2^(k/2) 2^(k - k/2): both halves are normal floats for every k in [-150, 128],
  // so results near FLT_MAX stay finite and below FLT_MIN become subnormal as they should.
  const I n = xsimd::to_int(k), n1 = n >> 1;
  const B e = y * xsimd::bitwise_cast<B>((n1 + I(127)) << 23) * xsimd::bitwise_cast<B>((n - n1 + I(127)) << 23);
  return xsimd::select(x < B(-104.0f), B(0.0f),
                       xsimd::select(x > B(88.72283935546875f), B(std::numeric_limits<float>::infinity()), e));
}
QUANT_ALWAYS_INLINE float log_of(float x) noexcept { return std::log(x); }
QUANT_ALWAYS_INLINE double log_of(double x) noexcept { return std::log(x); }
template <class A>
QUANT_ALWAYS_INLINE xsimd::batch<double, A> log_of(const xsimd::batch<double, A>& x) noexcept {
  return xsimd::log(x);
}
// log(x) for finite float packs x > 0 without a division (xsimd's log divides once per
// pack, 10 cycles of the divider per 16 lanes): x = 2^k m with m in
// [sqrt(1/2), sqrt(2)), log(1 + f), f = m - 1, from Cephes' logf polynomial (relative error
// < 1e-7, as xsimd's), k log 2 added in two parts. x <= 0, inf and NaN are not handled:
// callers select them away.
template <class A>
QUANT_ALWAYS_INLINE xsimd::batch<float, A> log_of(const xsimd::batch<float, A>& x) noexcept {
  using B = xsimd::batch<float, A>;
  using I = xsimd::batch<std::int32_t, A>;
  I ix = xsimd::bitwise_cast<I>(x);
  ix = ix + I(0x3f800000 - 0x3f3504f3);  // moves the cut of the mantissa range to sqrt(1/2)
  const B k = xsimd::to_float(I((ix >> 23) - I(0x7f)));
  ix = (ix & I(0x007fffff)) + I(0x3f3504f3);
  const B f = xsimd::bitwise_cast<B>(ix) - B(1.0f);
  const B z = f * f;
  B y = B(7.0376836292e-2f);
  y = simd::fma(y, f, B(-1.1514610310e-1f));
  y = simd::fma(y, f, B(1.1676998740e-1f));
  y = simd::fma(y, f, B(-1.2420140846e-1f));
  y = simd::fma(y, f, B(1.4249322787e-1f));
  y = simd::fma(y, f, B(-1.6668057665e-1f));
  y = simd::fma(y, f, B(2.0000714765e-1f));
  y = simd::fma(y, f, B(-2.4999993993e-1f));
  y = simd::fma(y, f, B(3.3333331174e-1f));
  y = simd::fma(k, B(-2.12194440e-4f), simd::fma(B(-0.5f), z, y * f * z));
  return simd::fma(k, B(0.693359375f), f + y);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

template <class P>
QUANT_ALWAYS_INLINE P sigmoid(const P& v) noexcept {
  return P(1) / (P(1) + exp_of(-v));
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
  return simd::select(a > P(0), exp_of(e * log_of(a)), P(0));
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
  template <class B, detail::enable_floating_batch<B> = 0>
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
  template <class B, detail::enable_floating_batch<B> = 0>
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
  template <class B, detail::enable_floating_batch<B> = 0>
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
  template <class B, detail::enable_floating_batch<B> = 0>
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

// ====================================================================================
// Eager primitives (contiguous float tensors; any granularity, including per-group)
// ====================================================================================
namespace detail {
inline void require_finite(const float* x, std::size_t n, const char* function, const char* argument) {
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]))
      fail<domain_error>(function, argument, x[i], "must be finite (element " + std::to_string(i) + ")");
}

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
  auto v = adaround_init(w, p);
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

// ====================================================================================
// The fused pass over V (one per iteration of the layer / block optimizers)
// ====================================================================================

// |V| from which h(V) is exactly 0 or 1 and h'(V) = 0: the clamp of h starts at
// |V| = log(11) = 2.3979 (sigmoid = 1/12 or 11/12); at 2.4 the stretched sigmoid is already
// 1.9e-4 beyond the clamp, a thousand times any float rounding of it, so the shortcut
// below never changes a result.
constexpr float adaround_saturated_v = 2.4f;

namespace kernels {

// What one fused pass needs besides the buffers.
struct adaround_step_constants {
  adam_step adam;
  float lambda = 0.0f;  // regularizer weight (0: warm-up, the regularizer is skipped)
  float beta = 2.0f;    // regularizer exponent at this iteration
};

}  // namespace kernels

namespace detail {

template <class T, class A>
QUANT_ALWAYS_INLINE bool any_of(const xsimd::batch_bool<T, A>& m) noexcept {
  return xsimd::any(m);
}
QUANT_ALWAYS_INLINE bool any_of(bool m) noexcept { return m; }
template <class T, class A>
QUANT_ALWAYS_INLINE bool all_of(const xsimd::batch_bool<T, A>& m) noexcept {
  return xsimd::all(m);
}
QUANT_ALWAYS_INLINE bool all_of(bool m) noexcept { return m; }

// The per-element state of the fused pass.
struct adaround_buffers {
  const float* base;  // floor(W/s) + z
  const float* grad;  // dL_rec/dW_soft
  float* V;
  float* sig;     // sigmoid(V) (or its limit 0 / 1 where |V| >= adaround_saturated_v)
  float* m;       // Adam moments
  float* v;
  float* w_soft;  // s (clamp(base + h(V), qmin, qmax) - z)
};

// sigmoid(V) and the soft weight for one pack (the init, and the end of every step).
template <class P>
QUANT_ALWAYS_INLINE void adaround_store_soft(const adaround_buffers& f, std::size_t e, const P& vn, const P& s,
                                             const P& z, float qmin, float qmax) noexcept {
  using A = simd::arch_of<P>;
  const P sn = sigmoid(vn);
  simd::store(f.sig + e, sn);
  const P hn = simd::clamp(stretched(sn), P(0.0f), P(1.0f));
  simd::store(f.w_soft + e, (simd::clamp(simd::load<A>(f.base + e) + hn, P(qmin), P(qmax)) - z) * s);
}

// The fused step in three stages over a block of a run (formulas:
// kernels::adaround_fused_step): the gradient into a small L1 buffer, Adam, then the
// next sigmoid and soft weight. Each stage is a short loop whose packs are independent,
// so the out-of-order core overlaps the long latencies (exp, log, sqrt and three
// divisions per pack) across packs instead of waiting on one pack's chain.

// dL/dV of one pack into g; returns the regularizer terms (0 where h is binary or
// lambda = 0).
template <class P>
QUANT_ALWAYS_INLINE P adaround_gradient_pack(const adaround_buffers& f, std::size_t e, float* g_out, const P& s,
                                             float qmin, float qmax, const kernels::adaround_step_constants& c,
                                             bool regularize) noexcept {
  using A = simd::arch_of<P>;
  const P sg = simd::load<A>(f.sig + e);
  const P u = stretched(sg);
  const auto inside = (u > P(0.0f)) & (u < P(1.0f));
  P g(0.0f), term(0.0f);
  // Where h is 0 or 1, h' = 0: the reconstruction gradient, the regularizer term
  // 1 - |2h-1|^beta and its gradient are all exactly 0 (late in the schedule, most packs).
  if (any_of(inside)) {
    const P h = simd::clamp(u, P(0.0f), P(1.0f));
    const P hp = stretched_grad(inside, sg);
    const P q = simd::load<A>(f.base + e) + h;
    g = simd::select((q >= P(qmin)) & (q <= P(qmax)), simd::load<A>(f.grad + e) * s, P(0.0f)) * hp;
    if (regularize) {
      const P t = simd::fma(P(2.0f), h, P(-1.0f));
      const P at = simd::abs(t);
      // |t|^(beta-1), taken as 0 below e^-80 (also for t = 0): exp would return a subnormal
      // there (and 0 below e^-104), and subnormals cost a microcode assist per instruction.
      const P arg = P(c.beta - 1.0f) * log_of(simd::select(at > P(0.0f), at, P(1.0f)));
      const auto normal = (at > P(0.0f)) & (arg > P(-80.0f));
      const P pw = simd::select(normal, exp_of(simd::select(normal, arg, P(0.0f))), P(0.0f));
      term = simd::fma(-pw, at, P(1.0f));  // 1 - |t|^beta
      g = simd::fma(P(-2.0f * c.beta * c.lambda) * simd::select(t < P(0.0f), -pw, pw), hp, g);
    }
  }
  simd::store(g_out, g);
  return term;
}

template <class P>
QUANT_ALWAYS_INLINE void adaround_adam_pack(const adaround_buffers& f, std::size_t e, const float* g,
                                            const adam_step& adam) noexcept {
  using A = simd::arch_of<P>;
  P mm = simd::load<A>(f.m + e), vs = simd::load<A>(f.v + e);
  const P vn = adam.apply(simd::load<A>(f.V + e), simd::load<A>(g), mm, vs);
  simd::store(f.m + e, mm);
  simd::store(f.v + e, vs);
  simd::store(f.V + e, vn);
}

// sig and w_soft for the new V (sig still holds the old one on entry).
template <class P>
QUANT_ALWAYS_INLINE void adaround_next_soft_pack(const adaround_buffers& f, std::size_t e, const P& s, const P& z,
                                                 float qmin, float qmax) noexcept {
  using A = simd::arch_of<P>;
  const P vn = simd::load<A>(f.V + e);
  if (any_of(!(simd::abs(vn) >= P(adaround_saturated_v)))) {  // (NaN takes this path too)
    adaround_store_soft(f, e, vn, s, z, qmin, qmax);
    return;
  }
  // h(V_new) is binary: no sigmoid. If h(V_old) was the same, sig and w_soft stay as they are.
  const P u = stretched(simd::load<A>(f.sig + e));
  const P hn = simd::select(vn > P(0.0f), P(1.0f), P(0.0f));
  if (all_of(((u <= P(0.0f)) | (u >= P(1.0f))) & (simd::clamp(u, P(0.0f), P(1.0f)) == hn))) return;
  simd::store(f.sig + e, hn);  // the limit of sigmoid: the same h, and h' = 0
  simd::store(f.w_soft + e, (simd::clamp(simd::load<A>(f.base + e) + hn, P(qmin), P(qmax)) - z) * s);
}

// body(e, s, z) over the elements [begin, end) of `plan`: SIMD packs (s, z as packs of
// the same width, broadcast or loaded from the parameter table), then a scalar tail per
// run running the same body on floats.
template <class Arch, class Body>
QUANT_ALWAYS_INLINE void for_each_param_pack(const segment_plan& plan, std::size_t begin, std::size_t end,
                                             Body&& body) {
  using PB = simd::pack<float, Arch>;
  constexpr std::size_t L = simd::lanes<float, Arch>;
  const float* scale = plan.scale();
  const float* zero = plan.zero_point();
  const bool vec = plan.vector_params;
  for_each_run(plan, begin, end, [&](std::size_t e, std::size_t len, std::size_t po) QUANT_INLINE_LAMBDA {
    const float* sp = scale + po;
    const float* zp = zero + po;
    std::size_t k = 0;
    if (vec) {
      for (; k + L <= len; k += L) body(e + k, simd::load<Arch>(sp + k), simd::load<Arch>(zp + k));
      for (; k < len; ++k) body(e + k, sp[k], zp[k]);
    } else {
      const PB s = simd::broadcast<Arch>(*sp), z = simd::broadcast<Arch>(*zp);
      for (; k + L <= len; k += L) body(e + k, s, z);
      for (; k < len; ++k) body(e + k, *sp, *zp);
    }
  });
}

}  // namespace detail

namespace kernels {

// sig = sigmoid(V) and w_soft = s (clamp(base + h(V), qmin, qmax) - z) for every element:
// the state adaround_fused_step expects on its first call.
template <class Arch = simd::default_arch>
void adaround_soft_weights(const detail::segment_plan& plan, float qmin, float qmax, const float* QUANT_RESTRICT base,
                           const float* QUANT_RESTRICT V, float* QUANT_RESTRICT sig,
                           float* QUANT_RESTRICT w_soft) noexcept {
  const detail::adaround_buffers f{base, nullptr, nullptr, sig, nullptr, nullptr, w_soft};
  detail::for_each_chunk(plan, [&](std::size_t b, std::size_t e) QUANT_ADAROUND_FLATTEN {
    detail::for_each_param_pack<Arch>(plan, b, e, [&](std::size_t i, const auto& s, const auto& z) QUANT_INLINE_LAMBDA {
      using P = std::decay_t<decltype(s)>;
      detail::adaround_store_soft(f, i, simd::load<simd::arch_of<P>>(V + i), s, z, qmin, qmax);
    });
  });
}

// One AdaRound iteration's elementwise work, for every element, in one pass:
//   h, h'  from sig = sigmoid(V)                    (kept from the previous pass: one
//                                                    sigmoid per element per iteration)
//   dV    = grad * s * 1[qmin <= base + h <= qmax] * h'(V) + lambda * df_reg/dV
//   V     <- Adam(V, dV)                             (m, v updated in place)
//   sig   <- sigmoid(V_new),  w_soft <- s (clamp(base + h(V_new), qmin, qmax) - z)
// with base = floor(W/s) + z and grad = dL_rec/dW_soft at the current V. Returns
// f_reg = sum(1 - |2h - 1|^beta) at the old V (0 when lambda = 0: warm-up skips the pow).
// Entry state: sig and w_soft as left by adaround_soft_weights or the previous call.
// |2h-1|^beta is |2h-1|^(beta-1) (one exp(log)) times |2h-1|. Packs where h is binary
// before and after the step skip the gradient, the pow and the sigmoid and leave sig and
// w_soft unwritten (their values are unchanged), so the pass gets cheaper as h converges.
// Regularizer partials are per fixed chunk (detail::chunk_elements), combined in order:
// the same value for any thread count. `partials`: detail::chunk_count(plan) doubles of
// scratch, or nullptr (then allocated here).
template <class Arch = simd::default_arch>
double adaround_fused_step(const detail::segment_plan& plan, float qmin, float qmax, const float* QUANT_RESTRICT base,
                           const float* QUANT_RESTRICT grad, float* QUANT_RESTRICT V, float* QUANT_RESTRICT sig,
                           float* QUANT_RESTRICT m, float* QUANT_RESTRICT v, float* QUANT_RESTRICT w_soft,
                           const adaround_step_constants& c, double* partials = nullptr) {
  const bool regularize = c.lambda > 0.0f;
  const std::size_t chunks = detail::chunk_count(plan);
  std::vector<double> own;
  if (!partials) {
    own.resize(chunks);
    partials = own.data();
  }
  const detail::adaround_buffers buffers{base, grad, V, sig, m, v, w_soft};
  detail::for_each_chunk(plan, [&](std::size_t b, std::size_t e) QUANT_ADAROUND_FLATTEN {
    // Local copies: the stores through the buffers cannot then alias the pointers and
    // constants, which stay in registers instead of being reloaded for every pack.
    const detail::adaround_buffers f = buffers;
    const adaround_step_constants k = c;
    const float* scale = plan.scale();
    const float* zero = plan.zero_point();
    const bool vec = plan.vector_params;
    using PB = simd::pack<float, Arch>;
    constexpr std::size_t L = simd::lanes<float, Arch>;
    constexpr std::size_t block = 256;
    alignas(64) float g[block];
    PB acc(0.0f);
    float acc_tail = 0.0f;
    detail::for_each_run(plan, b, e, [&](std::size_t r0, std::size_t len, std::size_t po) QUANT_INLINE_LAMBDA {
      for (std::size_t b0 = 0; b0 < len; b0 += block) {
        const std::size_t n = std::min(block, len - b0), e0 = r0 + b0;
        const float* sp = scale + po + (vec ? b0 : 0);
        const float* zp = zero + po + (vec ? b0 : 0);
        const PB sb = simd::broadcast<Arch>(*sp), zb = simd::broadcast<Arch>(*zp);
        const std::size_t packed = n - n % L;
        std::size_t i = 0;
        for (; i < packed; i += L)
          acc = acc + detail::adaround_gradient_pack(f, e0 + i, g + i, vec ? simd::load<Arch>(sp + i) : sb, qmin, qmax,
                                                     k, regularize);
        for (; i < n; ++i)
          acc_tail += detail::adaround_gradient_pack(f, e0 + i, g + i, vec ? sp[i] : *sp, qmin, qmax, k, regularize);
        for (i = 0; i < packed; i += L) detail::adaround_adam_pack<PB>(f, e0 + i, g + i, k.adam);
        for (; i < n; ++i) detail::adaround_adam_pack<float>(f, e0 + i, g + i, k.adam);
        for (i = 0; i < packed; i += L)
          detail::adaround_next_soft_pack(f, e0 + i, vec ? simd::load<Arch>(sp + i) : sb,
                                          vec ? simd::load<Arch>(zp + i) : zb, qmin, qmax);
        for (; i < n; ++i) detail::adaround_next_soft_pack(f, e0 + i, vec ? sp[i] : *sp, vec ? zp[i] : *zp, qmin, qmax);
      }
    });
    partials[b / detail::chunk_elements] = static_cast<double>(simd::reduce_add(acc)) + static_cast<double>(acc_tail);
  });
  double total = 0.0;
  for (std::size_t t = 0; t < chunks; ++t) total += partials[t];
  return regularize ? total : 0.0;
}

}  // namespace kernels

// ====================================================================================
// The layer optimizer
// ====================================================================================

// What the progress callback receives after each iteration.
struct adaround_progress {
  std::size_t iteration = 0;    // iterations done (1-based)
  std::size_t iterations = 0;   // total
  double reconstruction_loss = 0.0;  // this mini-batch: mean over rows of the summed squared output error
  double regularizer = 0.0;     // f_reg = sum(1 - |2h-1|^beta) at the V the step started from (0 in warm-up)
  float beta = 0.0f;            // the regularizer exponent of this iteration
  bool warmup = false;          // true while the regularizer is off
};

// Options of adaround_layer (defaults: docs/adaround.md).
struct adaround_options {
  std::size_t iterations = 10000;
  std::size_t batch_size = 32;  // rows of X per iteration (conv: 32 images = 32 * OH * OW im2col rows)
  float lambda = 0.01f;         // regularizer weight
  float warmup = 0.2f;          // fraction of iterations without the regularizer, in [0, 1)
  float beta_start = 20.f, beta_end = 2.f;  // beta_start >= beta_end >= 1
  enum class schedule { linear, cosine } beta_schedule = schedule::linear;  // linear: BRECQ/QDrop; cosine: AIMET
  float learning_rate = 1e-3f;  // Adam, on V
  std::uint64_t seed = 0;       // mini-batch sampling
  activation act = activation::identity;  // f_a, the activation after the layer
  std::function<void(const adaround_progress&)> progress;  // called after every iteration (optional)
  // Starting V, shaped like W (empty: AdaRound's init h(V) = W/s - floor(W/s)); e.g.
  // adaround_init_from_integers(W, gptq.integer_weights, qparams) to refine GPTQ's rounding.
  xt::xtensor<float, 2> initial_v;

  // Throws quant::invalid_argument naming `function` and the field.
  void validate(const char* function) const {
    if (iterations == 0) detail::fail<invalid_argument>(function, "iterations", iterations, "must be >= 1");
    if (batch_size == 0) detail::fail<invalid_argument>(function, "batch_size", batch_size, "must be >= 1");
    if (!(std::isfinite(lambda) && lambda >= 0.0f))
      detail::fail<invalid_argument>(function, "lambda", lambda, "must be finite and >= 0");
    if (!(warmup >= 0.0f && warmup < 1.0f))
      detail::fail<invalid_argument>(function, "warmup", warmup, "must be in [0, 1)");
    if (!(std::isfinite(beta_end) && beta_end >= 1.0f))
      detail::fail<invalid_argument>(function, "beta_end", beta_end, "must be finite and >= 1");
    if (!(std::isfinite(beta_start) && beta_start >= beta_end))
      detail::fail<invalid_argument>(function, "beta_start", beta_start,
                                     "must be finite and >= beta_end = " + std::to_string(beta_end));
    if (!(std::isfinite(learning_rate) && learning_rate > 0.0f))
      detail::fail<invalid_argument>(function, "learning_rate", learning_rate, "must be finite and > 0");
  }

  // Iterations (0-based k < warmup_iterations()) that run without the regularizer.
  std::size_t warmup_iterations() const noexcept {
    return static_cast<std::size_t>(static_cast<double>(warmup) * static_cast<double>(iterations));
  }
  // beta at 0-based iteration k: beta_start through warm-up, then annealed to beta_end.
  float beta_at(std::size_t k) const noexcept {
    const std::size_t w = warmup_iterations();
    if (k <= w || iterations <= w) return beta_start;
    const double rel = static_cast<double>(k - w) / static_cast<double>(iterations - w);
    const double span = static_cast<double>(beta_start) - beta_end;
    if (beta_schedule == schedule::cosine)
      return static_cast<float>(beta_end + 0.5 * span * (1.0 + std::cos(3.14159265358979323846 * rel)));
    return static_cast<float>(beta_end + span * (1.0 - rel));
  }
};

struct adaround_report {
  double rtn_error = 0.0;       // round-to-nearest weights: mean over all calibration rows of the
  double adaround_error = 0.0;  //   summed squared error of f_a(W x + b) vs f_a(W_q x_hat + b); same for AdaRound
  double flipped_fraction = 0.0;     // fraction of weights whose integer differs from round-to-nearest
  double non_binary_fraction = 0.0;  // fraction of h(V) strictly inside (0, 1) at the end
  std::size_t iterations = 0;
};

struct adaround_result {
  xt::xtensor<std::int32_t, 2> integer_weights;  // [out, in], on the grid of `qparams`
  quant::qparams qparams;                        // the scales / zero points used (unchanged)
  xt::xtensor<float, 2> weights;                 // fake-quantized: s (q - z)
  adaround_report report;
};

namespace detail {

// 64 uniform bits for counter `index` of a stream (two lanes of the counter hash).
inline std::uint64_t counter_bits64(std::uint64_t seed, std::uint64_t index) noexcept {
  auto bits32 = [seed](std::uint64_t i) {
    const counter_key key = counter_key::make(seed, i);
    return static_cast<std::uint64_t>(mix32(mix32(static_cast<std::uint32_t>(i) ^ key.k1) ^ key.k2));
  };
  return (bits32(2 * index) << 32) | bits32(2 * index + 1);
}

// A uniform integer in [0, n) (multiply-high: bias below 2^-64 * n).
inline std::size_t counter_index(std::uint64_t seed, std::uint64_t index, std::size_t n) noexcept {
  return static_cast<std::size_t>((static_cast<unsigned __int128>(counter_bits64(seed, index)) * n) >> 64);
}

// Draws `batch` distinct rows of [0, perm.size()) into perm[0, batch): a partial
// Fisher-Yates shuffle continued from the previous draw (each draw is a uniform subset).
inline void sample_rows(std::vector<std::size_t>& perm, std::size_t batch, std::uint64_t seed,
                        std::uint64_t draw) noexcept {
  const std::size_t n = perm.size();
  for (std::size_t j = 0; j < batch; ++j) {
    const std::size_t r = j + counter_index(seed, draw * batch + j, n - j);
    std::swap(perm[j], perm[r]);
  }
}

// dst[j, :] = src[rows[j], :] (dst preallocated with `count` rows; a copy, so threading
// it over fixed row blocks changes nothing but the time).
inline void gather_rows(const xt::xtensor<float, 2>& src, const std::size_t* rows, std::size_t count,
                        xt::xtensor<float, 2>& dst) {
  const std::size_t w = src.shape()[1];
  constexpr std::size_t block = 16;
  parallel_for((count + block - 1) / block, count * w, [&](std::size_t t) {
    const std::size_t end = std::min(count, (t + 1) * block);
    for (std::size_t j = t * block; j < end; ++j) std::copy_n(src.data() + rows[j] * w, w, dst.data() + j * w);
  });
}

// C = A B^T (A [m, k], B [n, k]) through BLAS, into the preallocated C.
inline void gemm_nt(const xt::xtensor<float, 2>& a, const xt::xtensor<float, 2>& b, xt::xtensor<float, 2>& c) {
  xt::blas::gemm(a, b, c, false, true);
}
// C = A^T B (A [k, m], B [k, n]).
inline void gemm_tn(const xt::xtensor<float, 2>& a, const xt::xtensor<float, 2>& b, xt::xtensor<float, 2>& c) {
  xt::blas::gemm(a, b, c, true, false);
}

// y = f_a(y + bias) in place over rows of width `out`.
inline void add_bias_activate(xt::xtensor<float, 2>& y, const float* bias, activation act) noexcept {
  const std::size_t rows = y.shape()[0], out = y.shape()[1];
  float* p = y.data();
  for (std::size_t r = 0; r < rows; ++r, p += out)
    for (std::size_t o = 0; o < out; ++o) {
      float x = bias ? p[o] + bias[o] : p[o];
      if (act == activation::relu && !(x > 0.0f)) x = 0.0f;
      p[o] = x;
    }
}

// mean over rows of sum_o (f_a(W x_hat + b) - target)^2 over all rows of x_hat.
inline double layer_output_error(const xt::xtensor<float, 2>& w, const xt::xtensor<float, 2>& x_hat,
                                 const xt::xtensor<float, 2>& target, const float* bias, activation act) {
  xt::xtensor<float, 2> y = xt::xtensor<float, 2>::from_shape({x_hat.shape()[0], w.shape()[0]});
  gemm_nt(x_hat, w, y);
  add_bias_activate(y, bias, act);
  double acc = 0.0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    const double d = static_cast<double>(y.data()[i]) - target.data()[i];
    acc += d * d;
  }
  return acc / static_cast<double>(x_hat.shape()[0]);
}

// The reconstruction loss of one mini-batch row and its gradient, in place:
//   y <- (2/B) f_a'(pre) (f_a(pre) - t),  pre = y + bias;  returns sum (f_a(pre) - t)^2
// (summed in float packs per row, then in double across rows by the caller).
template <class Arch = simd::default_arch>
float layer_loss_row(float* QUANT_RESTRICT y, const float* QUANT_RESTRICT t, const float* QUANT_RESTRICT bias,
                     std::size_t out, activation act, float two_over_b) noexcept {
  using PB = simd::pack<float, Arch>;
  constexpr std::size_t L = simd::lanes<float, Arch>;
  const bool relu = act == activation::relu;
  PB acc(0.0f);
  float acc_tail = 0.0f;
  auto body = [&](std::size_t o, auto tag) QUANT_INLINE_LAMBDA {
    using P = decltype(tag);
    using A = simd::arch_of<P>;
    const P pre = simd::load<A>(y + o) + simd::load<A>(bias + o);
    if (relu) {
      const auto pass = pre > P(0.0f);
      const P d = simd::select(pass, pre, P(0.0f)) - simd::load<A>(t + o);
      simd::store(y + o, simd::select(pass, P(two_over_b) * d, P(0.0f)));
      return d * d;
    }
    const P d = pre - simd::load<A>(t + o);
    simd::store(y + o, P(two_over_b) * d);
    return d * d;
  };
  std::size_t o = 0;
  for (; o + L <= out; o += L) acc = acc + body(o, PB{});
  for (; o < out; ++o) acc_tail += body(o, 0.0f);
  return simd::reduce_add(acc) + acc_tail;
}

}  // namespace detail

// The AdaRound variables of one weight tensor W [out, in] (conv: [out, C*KH*KW]) with
// their Adam state and the current soft weight: the part of AdaRound that does not
// depend on the network. The layer optimizer and block reconstruction (reconstruction.hpp)
// own one per layer; a custom trainer can own them too: fill gradient() with
// dL_rec/dW_soft at soft_weights(), call step(lambda, beta), repeat, then take
// integer_weights() / hard_weights().
// Weight qparams: any granularity of W (per output channel, axis 0, is the usual choice);
// they stay fixed. All buffers are allocated here, once.
class adaround_variables {
 public:
  adaround_variables() = default;
  // Throws quant::domain_error for non-finite W, quant::length_error / invalid_argument for
  // qparams that do not fit W or a learning rate that is not finite and > 0.
  adaround_variables(const xt::xtensor<float, 2>& W, const quant::qparams& weight_qparams,
                     float learning_rate = 1e-3f, const char* function = "adaround_variables")
      : w_(W), qp_(weight_qparams), adam_(W.size(), adam_options{learning_rate}) {
    detail::require_finite(W.data(), W.size(), function, "W");
    plan_ = detail::make_segment_plan(W.shape(), qp_, function);
    qmin_ = static_cast<float>(qp_.qmin());
    qmax_ = static_cast<float>(qp_.qmax());
    v_ = adaround_init(W, qp_);
    base_ = xt::xtensor<float, 2>::from_shape(W.shape());
    detail::for_each_param(plan_, 0, plan_.n, [&](std::size_t i, float, float inv_s, float z) {
      base_.data()[i] = std::floor(W.data()[i] * inv_s) + z;
    });
    sig_ = xt::xtensor<float, 2>::from_shape(W.shape());
    w_soft_ = xt::xtensor<float, 2>::from_shape(W.shape());
    grad_ = xt::zeros<float>(W.shape());
    partials_.assign(detail::chunk_count(plan_), 0.0);
    kernels::adaround_soft_weights<>(plan_, qmin_, qmax_, base_.data(), v_.data(), sig_.data(), w_soft_.data());
  }

  std::size_t size() const noexcept { return w_.size(); }
  const xt::xtensor<float, 2>& weight() const noexcept { return w_; }  // the full-precision W

  // Replaces V (e.g. by adaround_init_from_integers) and recomputes the soft weight; call
  // it before the first step() (Adam's state is not reset). Throws quant::length_error for
  // a shape other than W's, quant::domain_error for non-finite V.
  void set_v(const xt::xtensor<float, 2>& v, const char* function = "adaround_variables::set_v") {
    if (v.shape() != w_.shape())
      detail::fail<length_error>(function, "V.shape()", detail::shape_string(v.shape()),
                                 "must equal W.shape() = " + detail::shape_string(w_.shape()));
    detail::require_finite(v.data(), v.size(), function, "V");
    v_ = v;
    kernels::adaround_soft_weights<>(plan_, qmin_, qmax_, base_.data(), v_.data(), sig_.data(), w_soft_.data());
  }

  const quant::qparams& weight_qparams() const noexcept { return qp_; }
  const xt::xtensor<float, 2>& v() const noexcept { return v_; }
  // s (clamp(floor(W/s) + h(V) + z, qmin, qmax) - z) at the current V.
  const xt::xtensor<float, 2>& soft_weights() const noexcept { return w_soft_; }
  // dL_rec/dW_soft, shaped like W: write it before step().
  xt::xtensor<float, 2>& gradient() noexcept { return grad_; }
  std::size_t steps() const noexcept { return adam_.steps(); }

  // One fused pass (kernels::adaround_fused_step) with the gradient in gradient():
  // lambda = 0 during warm-up. Returns f_reg = sum(1 - |2h-1|^beta) at the V before the
  // step (0 when lambda = 0).
  double step(float lambda, float beta) noexcept {
    kernels::adaround_step_constants c;
    c.adam = adam_.next_step();
    c.lambda = lambda;
    c.beta = beta;
    return kernels::adaround_fused_step<>(plan_, qmin_, qmax_, base_.data(), grad_.data(), v_.data(), sig_.data(),
                                          adam_.first_moment(), adam_.second_moment(), w_soft_.data(), c,
                                          partials_.data());
  }

  // clamp(floor(W/s) + 1[V >= 0] + z, qmin, qmax)
  xt::xtensor<std::int32_t, 2> integer_weights() const { return adaround_integer_weights(w_, v_, qp_); }
  // s (q - z) for the integers q above.
  xt::xtensor<float, 2> hard_weights() const {
    const auto q = integer_weights();
    xt::xtensor<float, 2> r = xt::xtensor<float, 2>::from_shape(w_.shape());
    detail::for_each_param(plan_, 0, plan_.n, [&](std::size_t i, float s, float, float z) {
      r.data()[i] = (static_cast<float>(q.data()[i]) - z) * s;
    });
    return r;
  }
  // Fraction of weights whose hard-rounded integer differs from round-to-nearest.
  double flipped_fraction() const {
    const auto q = integer_weights();
    const auto q_rtn = eager::quantize<std::int32_t>(w_, qp_);
    std::size_t flipped = 0;
    for (std::size_t i = 0; i < q.size(); ++i) flipped += q.data()[i] != q_rtn.data()[i];
    return static_cast<double>(flipped) / static_cast<double>(q.size());
  }
  // Fraction of h(V) strictly inside (0, 1).
  double non_binary_fraction() const {
    std::size_t soft = 0;
    for (std::size_t i = 0; i < v_.size(); ++i) {
      const float h = detail::rect_sigmoid(v_.data()[i]);
      soft += (h > 0.0f && h < 1.0f);
    }
    return static_cast<double>(soft) / static_cast<double>(v_.size());
  }

 private:
  xt::xtensor<float, 2> w_;
  quant::qparams qp_;
  adam adam_{0};
  detail::segment_plan plan_;
  float qmin_ = 0.0f, qmax_ = 0.0f;
  xt::xtensor<float, 2> v_, base_, sig_, w_soft_, grad_;
  std::vector<double> partials_;
};

// AdaRound for one layer, one iteration at a time (adaround_layer runs it to the end).
// W [out, in]; X [samples, in] the layer's input in the full-precision model; X_hat the
// input in the quantized model (asymmetric reconstruction; nullptr: X); bias [out] or
// nullptr. X and X_hat are referenced, not copied: they must outlive the optimizer.
// Weight qparams: any granularity of W (per output channel, axis 0, is the usual choice);
// they stay fixed. Each step(): sample `batch_size` rows, gather them, Y = X_b W_soft^T
// (GEMM), dL/dY in place, G = dY^T X_b (GEMM into the variables' gradient), then the
// fused pass over V. Every buffer is allocated once, in the constructor. BLAS runs
// outside any parallel region; the gather and the fused pass use quant's threads;
// results are identical for any thread count and the same seed.
class adaround_optimizer {
 public:
  adaround_optimizer(const xt::xtensor<float, 2>& W, const xt::xtensor<float, 2>& X, const quant::qparams& weight_qparams,
                     adaround_options options = {}, const xt::xtensor<float, 2>* X_hat = nullptr,
                     const xt::xtensor<float, 1>* bias = nullptr)
      : x_(&X), x_hat_(X_hat ? X_hat : &X), opt_(std::move(options)) {
    const char* fn = "adaround_layer";
    opt_.validate(fn);
    const std::size_t out = W.shape()[0], in = W.shape()[1], samples = X.shape()[0];
    if (out == 0 || in == 0)
      detail::fail<invalid_argument>(fn, "W.shape()", detail::shape_string(W.shape()), "must be non-empty");
    if (samples == 0)
      detail::fail<invalid_argument>(fn, "X.shape()", detail::shape_string(X.shape()),
                                     "calibration data must have at least one row");
    if (X.shape()[1] != in)
      detail::fail<length_error>(fn, "X.shape()", detail::shape_string(X.shape()),
                                 "must be [samples, " + std::to_string(in) + "] for W of shape " +
                                     detail::shape_string(W.shape()));
    if (X_hat && (X_hat->shape()[0] != samples || X_hat->shape()[1] != in))
      detail::fail<length_error>(fn, "X_hat.shape()", detail::shape_string(X_hat->shape()),
                                 "must equal X.shape() = " + detail::shape_string(X.shape()));
    if (bias && bias->size() != out)
      detail::fail<length_error>(fn, "bias.size()", bias->size(), "must equal W.shape()[0] = " + std::to_string(out));
    if (opt_.batch_size > samples)
      detail::fail<invalid_argument>(fn, "batch_size", opt_.batch_size,
                                     "exceeds the " + std::to_string(samples) + " calibration rows");
    detail::require_finite(X.data(), X.size(), fn, "X");
    if (X_hat) detail::require_finite(X_hat->data(), X_hat->size(), fn, "X_hat");
    if (bias) detail::require_finite(bias->data(), bias->size(), fn, "bias");
    vars_ = adaround_variables(W, weight_qparams, opt_.learning_rate, fn);
    if (opt_.initial_v.size() != 0) vars_.set_v(opt_.initial_v, fn);
    bias_.assign(out, 0.0f);
    if (bias) std::copy(bias->begin(), bias->end(), bias_.begin());
    has_bias_ = bias != nullptr;

    // FP targets f_a(X W^T + b) for every calibration row, once.
    target_ = xt::xtensor<float, 2>::from_shape({samples, out});
    detail::gemm_nt(X, W, target_);
    detail::add_bias_activate(target_, bias_ptr(), opt_.act);

    perm_.resize(samples);
    for (std::size_t i = 0; i < samples; ++i) perm_[i] = i;
    xb_ = xt::xtensor<float, 2>::from_shape({opt_.batch_size, in});
    yb_ = xt::xtensor<float, 2>::from_shape({opt_.batch_size, out});
  }

  std::size_t iteration() const noexcept { return k_; }
  bool done() const noexcept { return k_ >= opt_.iterations; }
  const adaround_options& options() const noexcept { return opt_; }
  const xt::xtensor<float, 2>& v() const noexcept { return vars_.v(); }  // the rounding variables
  const xt::xtensor<float, 2>& soft_weights() const noexcept { return vars_.soft_weights(); }
  const adaround_variables& variables() const noexcept { return vars_; }
  const adaround_progress& last_progress() const noexcept { return last_; }

  // One iteration (no-op once done()).
  void step() {
    if (done()) return;
    const detail::beside_blas blas_scope;  // quant's loops beside BLAS threads (docs/threading.md)
    const std::size_t B = opt_.batch_size, out = yb_.shape()[1];
    detail::sample_rows(perm_, B, opt_.seed, k_);
    detail::gather_rows(*x_hat_, perm_.data(), B, xb_);
    detail::gemm_nt(xb_, vars_.soft_weights(), yb_);  // [B, out]
    // dL/dY in place and the loss L = (1/B) sum (f_a(y + b) - t)^2
    const float two_over_b = 2.0f / static_cast<float>(B);
    double loss = 0.0;
    for (std::size_t j = 0; j < B; ++j)
      loss += detail::layer_loss_row<>(yb_.data() + j * out, target_.data() + perm_[j] * out, bias_.data(), out,
                                       opt_.act, two_over_b);
    detail::gemm_tn(yb_, xb_, vars_.gradient());  // [out, in]
    const bool warm = k_ < opt_.warmup_iterations();
    const float beta = opt_.beta_at(k_);
    const double reg = vars_.step(warm ? 0.0f : opt_.lambda, beta);
    ++k_;
    last_ = adaround_progress{k_, opt_.iterations, loss / static_cast<double>(B), reg, beta, warm};
    if (opt_.progress) opt_.progress(last_);
  }

  // Runs the remaining iterations.
  void run() {
    while (!done()) step();
  }

  // Hard-rounded weights and the report (errors over all calibration rows, X_hat input).
  adaround_result result() const {
    adaround_result r;
    r.qparams = vars_.weight_qparams();
    r.integer_weights = vars_.integer_weights();
    r.weights = vars_.hard_weights();
    const xt::xtensor<float, 2> w_rtn = eager::fake_quantize(vars_.weight(), r.qparams);
    r.report.rtn_error = detail::layer_output_error(w_rtn, *x_hat_, target_, bias_ptr(), opt_.act);
    r.report.adaround_error = detail::layer_output_error(r.weights, *x_hat_, target_, bias_ptr(), opt_.act);
    r.report.flipped_fraction = vars_.flipped_fraction();
    r.report.non_binary_fraction = vars_.non_binary_fraction();
    r.report.iterations = k_;
    return r;
  }

 private:
  const float* bias_ptr() const noexcept { return has_bias_ ? bias_.data() : nullptr; }

  const xt::xtensor<float, 2>* x_;
  const xt::xtensor<float, 2>* x_hat_;
  adaround_options opt_;
  adaround_variables vars_;
  std::vector<float> bias_;  // zeros without a bias (the loss row adds it unconditionally)
  bool has_bias_ = false;
  xt::xtensor<float, 2> target_, xb_, yb_;
  std::vector<std::size_t> perm_;
  std::size_t k_ = 0;
  adaround_progress last_;
};

// AdaRound one layer to the end (see adaround_optimizer for shapes and semantics).
// Throws quant::invalid_argument (options, empty data, batch larger than the data),
// quant::length_error (shapes), quant::domain_error (non-finite W, X, X_hat or bias).
inline adaround_result adaround_layer(const xt::xtensor<float, 2>& W, const xt::xtensor<float, 2>& X,
                                      const quant::qparams& weight_qparams, const adaround_options& opt = {},
                                      const xt::xtensor<float, 2>* X_hat = nullptr,
                                      const xt::xtensor<float, 1>* bias = nullptr) {
  adaround_optimizer o(W, X, weight_qparams, opt, X_hat, bias);
  o.run();
  return o.result();
}

// A progress callback that redraws one terminal line:
//   "adaround [ 4200/10000]  42%  loss 1.234e-02  reg 3.210e+02  beta 14.20  2.1 s, ETA 2.9 s"
// with '\r' (no newline until the last iteration) when `carriage_return`, else one line
// per update. Redraws at most every `min_interval_seconds` (and always at the end).
// Copyable, so it fits in adaround_options::progress.
class adaround_progress_printer {
 public:
  explicit adaround_progress_printer(std::ostream& os, std::string label = "adaround", bool carriage_return = true,
                                     double min_interval_seconds = 0.1)
      : os_(&os), label_(std::move(label)), cr_(carriage_return), interval_(min_interval_seconds) {}

  void operator()(const adaround_progress& p) {
    const auto now = clock::now();
    if (p.iteration <= 1 || !started_) {
      start_ = now;
      started_ = true;
      last_draw_ = now - std::chrono::hours(1);
    }
    const bool last = p.iteration >= p.iterations;
    const double since = std::chrono::duration<double>(now - last_draw_).count();
    if (!last && since < interval_) return;
    last_draw_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double eta = p.iteration ? elapsed / static_cast<double>(p.iteration) *
                                         static_cast<double>(p.iterations - std::min(p.iterations, p.iteration))
                                   : 0.0;
    const int width = static_cast<int>(std::to_string(p.iterations).size());
    std::ostringstream line;
    line << label_ << " [" << std::setw(width) << p.iteration << '/' << p.iterations << "] " << std::setw(3)
         << (p.iterations ? 100 * p.iteration / p.iterations : 100) << "%  loss " << std::scientific
         << std::setprecision(3) << p.reconstruction_loss << "  reg " << p.regularizer << std::fixed
         << std::setprecision(2) << "  beta " << p.beta << (p.warmup ? " (warm-up)" : "           ") << "  "
         << format_seconds(elapsed) << ", ETA " << format_seconds(eta);
    if (cr_)
      *os_ << '\r' << line.str() << (last ? "\n" : "") << std::flush;
    else
      *os_ << line.str() << '\n' << std::flush;
  }

  static std::string format_seconds(double s) {
    std::ostringstream o;
    if (s < 60.0) {
      o << std::fixed << std::setprecision(1) << s << " s";
    } else {
      const long t = static_cast<long>(s + 0.5);
      o << t / 3600 << ':' << std::setw(2) << std::setfill('0') << (t / 60) % 60 << ':' << std::setw(2) << t % 60;
    }
    return o.str();
  }

 private:
  using clock = std::chrono::steady_clock;
  std::ostream* os_;
  std::string label_;
  bool cr_;
  double interval_;
  bool started_ = false;
  clock::time_point start_, last_draw_;
};

}  // namespace quant
