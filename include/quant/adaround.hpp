// quant/adaround.hpp — AdaRound: learn, per weight, whether to round up or down so that the
// layer *output* is reconstructed (Nagel et al. 2020, "Up or Down? Adaptive Rounding for
// Post-Training Quantization"; ALGORITHMS.md §4).
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
//    regularizer gradient, Adam, next soft weight) in one sweep.
//  * adaround_optimizer / adaround_layer: the layer optimizer (two GEMMs + the fused pass per
//    iteration), adaround_progress_printer for terminals.
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
#include "error.hpp"
#include "optim.hpp"
#include "qparams.hpp"
#include "simd/arch.hpp"
#include "uniform.hpp"

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
template <class T, class A>
QUANT_ALWAYS_INLINE xsimd::batch<T, A> exp_of(const xsimd::batch<T, A>& x) noexcept {
  return xsimd::exp(x);
}
QUANT_ALWAYS_INLINE float log_of(float x) noexcept { return std::log(x); }
QUANT_ALWAYS_INLINE double log_of(double x) noexcept { return std::log(x); }
template <class T, class A>
QUANT_ALWAYS_INLINE xsimd::batch<T, A> log_of(const xsimd::batch<T, A>& x) noexcept {
  return xsimd::log(x);
}

template <class P>
QUANT_ALWAYS_INLINE P sigmoid(const P& v) noexcept {
  return P(1) / (P(1) + exp_of(-v));
}

// sigmoid(V) stretched to (gamma, zeta), before the clamp.
template <class P>
QUANT_ALWAYS_INLINE P stretched(const P& sig) noexcept {
  return sig * P(adaround_zeta - adaround_gamma) + P(adaround_gamma);
}

template <class P>
QUANT_ALWAYS_INLINE P rect_sigmoid(const P& v) noexcept {
  return simd::clamp(stretched(sigmoid(v)), P(0), P(1));
}

template <class P>
QUANT_ALWAYS_INLINE P rect_sigmoid_grad(const P& v) noexcept {
  const P sig = sigmoid(v);
  const P u = stretched(sig);
  return simd::select((u > P(0)) & (u < P(1)), sig * (P(1) - sig) * P(adaround_zeta - adaround_gamma), P(0));
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
  const P hp = simd::select((u > P(0)) & (u < P(1)), sig * (P(1) - sig) * P(adaround_zeta - adaround_gamma), P(0));
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

// How a qparams set maps onto the flat row-major elements of a tensor: the flat index
// decomposes as (o, c, i) with sizes (outer, C, inner) around the axis, and the elements
// are cut into runs that share one (s, z) ("scalar" runs) or walk a contiguous parameter
// table in step with the data ("vector" runs: per-channel with inner = 1, per-group with
// inner > 1).
struct param_layout {
  granularity gran = granularity::per_tensor;
  std::size_t n = 0, channels = 1, inner = 1, group = 1;
  std::vector<float> scale, inv_scale, zero_point;  // one entry per parameter

  struct run {
    std::size_t param, length;
    bool vector;
  };

  template <class Shape>
  static param_layout make(const Shape& shape, const qparams& p, const char* function) {
    param_layout l;
    const std::size_t axis = p.check_shape(shape, function);
    l.gran = p.granularity();
    l.n = 1;
    for (auto d : shape) l.n *= static_cast<std::size_t>(d);
    if (l.gran != granularity::per_tensor) {
      l.channels = static_cast<std::size_t>(shape[axis]);
      for (std::size_t d = axis + 1; d < shape.size(); ++d) l.inner *= static_cast<std::size_t>(shape[d]);
      l.group = l.gran == granularity::per_group ? p.group_size() : 1;
    }
    for (std::size_t j = 0; j < p.size(); ++j) {
      l.scale.push_back(p.scales()[j]);
      l.inv_scale.push_back(1.0f / p.scales()[j]);  // float reciprocal, as quant's affine kernels
      l.zero_point.push_back(static_cast<float>(p.zero_points()[j]));
    }
    return l;
  }

  // The run that starts at flat element e, at most `limit` long.
  run at(std::size_t e, std::size_t limit) const noexcept {
    if (gran == granularity::per_tensor) return {0, limit, false};
    const std::size_t c = (e / inner) % channels, i = e % inner;
    if (gran == granularity::per_channel) {
      if (inner == 1) return {c, std::min(limit, channels - c), true};
      return {c, std::min(limit, inner - i), false};
    }
    const std::size_t o = e / (channels * inner);
    const std::size_t k = o * (channels / group) + c / group;
    if (inner == 1) return {k, std::min(limit, group - c % group), false};
    return {k * inner + i, std::min(limit, inner - i), true};
  }

  // body(e, s, inv_s, z) for every element of [begin, end), serially.
  template <class Body>
  void for_each(std::size_t begin, std::size_t end, Body&& body) const {
    for (std::size_t e = begin; e < end;) {
      const run r = at(e, end - e);
      for (std::size_t k = 0; k < r.length; ++k) {
        const std::size_t j = r.param + (r.vector ? k : 0);
        body(e + k, scale[j], inv_scale[j], zero_point[j]);
      }
      e += r.length;
    }
  }
};
}  // namespace detail

// V such that h(V) = W/s - floor(W/s) (AdaRound's init: the soft weight starts at W).
// Returns a container shaped like W. Throws on non-finite W or qparams that do not fit W.
template <class E>
auto adaround_init(const xt::xexpression<E>& w, const qparams& p) {
  const char* fn = "adaround_init";
  const auto in = detail::as_contiguous(w);
  detail::require_finite(in.data(), in.size(), fn, "W");
  const auto layout = detail::param_layout::make(in.shape(), p, fn);
  using R = detail::result_container_t<E, float>;
  R v = R::from_shape(in.shape());
  const float* x = in.data();
  float* out = v.data();
  layout.for_each(0, layout.n, [&](std::size_t i, float, float inv_s, float) {
    const float t = x[i] * inv_s;
    const float r = t - std::floor(t);  // [0, 1]
    // h^{-1}(r) = -log((zeta - gamma)/(r - gamma) - 1); r - gamma >= 0.1 so no division by 0.
    out[i] = -std::log((adaround_zeta - adaround_gamma) / (r - adaround_gamma) - 1.0f);
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
  const auto layout = detail::param_layout::make(wi.shape(), p, fn);
  using R = detail::result_container_t<EW, std::int32_t>;
  R q = R::from_shape(wi.shape());
  const float qmin = static_cast<float>(p.qmin()), qmax = static_cast<float>(p.qmax());
  layout.for_each(0, layout.n, [&](std::size_t i, float, float inv_s, float z) {
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
namespace kernels {

// What one fused pass needs besides the buffers.
struct adaround_step_constants {
  adam_step adam;
  float lambda = 0.0f;  // regularizer weight (0: warm-up, the regularizer is skipped)
  float beta = 2.0f;    // regularizer exponent at this iteration
};

// For every element, with base = floor(W/s) + z and grad = dL_rec/dW_soft at the current V:
//   dV    = grad * s * 1[qmin <= base + h <= qmax] * h'(V) + lambda * df_reg/dV
//   V     <- Adam(V, dV)                          (m, v updated in place)
//   w_soft = s (clamp(base + h(V_new), qmin, qmax) - z)   (the weight of the next forward)
// and returns f_reg at the old V (0 when lambda = 0). One read of base, grad, V, m, v and
// one write of V, m, v, w_soft per element: the pass is bound by that traffic, the two
// sigmoids and the pow hide under it. Regularizer partials are per fixed piece, combined
// in order (the same value for any thread count).
template <class Arch = simd::default_arch>
double adaround_fused_step(const detail::param_layout& layout, float qmin, float qmax, const float* QUANT_RESTRICT base,
                           const float* QUANT_RESTRICT grad, float* QUANT_RESTRICT V, float* QUANT_RESTRICT m,
                           float* QUANT_RESTRICT v, float* QUANT_RESTRICT w_soft,
                           const adaround_step_constants& c) {
  const bool regularize = c.lambda > 0.0f;
  const std::size_t n = layout.n, piece = detail::optim_piece;
  const std::size_t pieces = (n + piece - 1) / piece;
  std::vector<double> parts(pieces, 0.0);
  detail::parallel_for(pieces, n, [&](std::size_t t) {
    using PB = simd::pack<float, Arch>;
    constexpr std::size_t L = simd::lanes<float, Arch>;
    PB acc(0.0f);
    float acc_tail = 0.0f;
    // One element pack at e with parameters (s, z) as packs of the same width.
    auto body = [&](std::size_t e, const auto& s, const auto& z) {
      using P = std::decay_t<decltype(s)>;
      using A = simd::arch_of<P>;
      const P b = simd::load<A>(base + e);
      const P vv = simd::load<A>(V + e);
      const P sig = detail::sigmoid(vv);
      const P u = detail::stretched(sig);
      const P h = simd::clamp(u, P(0.0f), P(1.0f));
      const P hp = simd::select((u > P(0.0f)) & (u < P(1.0f)),
                                sig * (P(1.0f) - sig) * P(adaround_zeta - adaround_gamma), P(0.0f));
      const P q = b + h;
      P g = simd::select((q >= P(qmin)) & (q <= P(qmax)), simd::load<A>(grad + e) * s, P(0.0f)) * hp;
      if (regularize) {
        const P tt = P(2.0f) * h - P(1.0f);
        const P pw = detail::pow_abs(tt, P(c.beta - 1.0f));  // |2h-1|^(beta-1)
        const P term = P(1.0f) - pw * simd::abs(tt);
        if constexpr (simd::is_batch<P>::value)
          acc = acc + term;
        else
          acc_tail += term;
        g = g + P(-2.0f * c.beta * c.lambda) * simd::select(tt < P(0.0f), -pw, pw) * hp;
      }
      P mm = simd::load<A>(m + e), vs = simd::load<A>(v + e);
      const P vn = c.adam.apply(vv, g, mm, vs);
      simd::store(m + e, mm);
      simd::store(v + e, vs);
      simd::store(V + e, vn);
      simd::store(w_soft + e, (simd::clamp(b + detail::rect_sigmoid(vn), P(qmin), P(qmax)) - z) * s);
    };
    const std::size_t begin = t * piece, end = std::min(n, begin + piece);
    for (std::size_t e = begin; e < end;) {
      const auto r = layout.at(e, end - e);
      const float* sp = layout.scale.data() + r.param;
      const float* zp = layout.zero_point.data() + r.param;
      std::size_t k = 0;
      if (r.vector) {
        for (; k + L <= r.length; k += L) body(e + k, simd::load<Arch>(sp + k), simd::load<Arch>(zp + k));
        for (; k < r.length; ++k) body(e + k, sp[k], zp[k]);
      } else {
        const PB s = simd::broadcast<Arch>(*sp), z = simd::broadcast<Arch>(*zp);
        for (; k + L <= r.length; k += L) body(e + k, s, z);
        for (; k < r.length; ++k) body(e + k, *sp, *zp);
      }
      e += r.length;
    }
    parts[t] = static_cast<double>(simd::reduce_add(acc)) + static_cast<double>(acc_tail);
  });
  double total = 0.0;
  for (double p : parts) total += p;
  return total;
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

// Options of adaround_layer (defaults: ALGORITHMS.md §4).
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

// dst[j, :] = src[rows[j], :]
inline void gather_rows(const xt::xtensor<float, 2>& src, const std::size_t* rows, std::size_t count,
                        xt::xtensor<float, 2>& dst) {
  const std::size_t w = src.shape()[1];
  for (std::size_t j = 0; j < count; ++j)
    std::copy_n(src.data() + rows[j] * w, w, dst.data() + j * w);
}

// C = A B^T (A [m, k], B [n, k]) through BLAS.
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

}  // namespace detail

// AdaRound for one layer, one iteration at a time (adaround_layer runs it to the end).
// W [out, in]; X [samples, in] the layer's input in the full-precision model; X_hat the
// input in the quantized model (asymmetric reconstruction; nullptr: X); bias [out] or
// nullptr. X and X_hat are referenced, not copied: they must outlive the optimizer.
// Weight qparams: any granularity of W (per output channel, axis 0, is the usual choice);
// they stay fixed. Each step(): sample `batch_size` rows, Y = X_b W_soft^T (GEMM),
// dL/dY, G = dY^T X_b (GEMM), then the fused pass over V. BLAS runs outside any parallel
// region; the fused pass uses quant's threads; results are identical for any thread count
// and the same seed.
class adaround_optimizer {
 public:
  adaround_optimizer(const xt::xtensor<float, 2>& W, const xt::xtensor<float, 2>& X, const quant::qparams& weight_qparams,
                     adaround_options options = {}, const xt::xtensor<float, 2>* X_hat = nullptr,
                     const xt::xtensor<float, 1>* bias = nullptr)
      : w_(W), x_(&X), x_hat_(X_hat ? X_hat : &X), qp_(weight_qparams), opt_(std::move(options)),
        adam_(W.size(), adam_options{options_lr_checked()}) {
    const char* fn = "adaround_layer";
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
    detail::require_finite(W.data(), W.size(), fn, "W");
    detail::require_finite(X.data(), X.size(), fn, "X");
    if (X_hat) detail::require_finite(X_hat->data(), X_hat->size(), fn, "X_hat");
    if (bias) {
      detail::require_finite(bias->data(), bias->size(), fn, "bias");
      bias_.assign(bias->begin(), bias->end());
    }
    layout_ = detail::param_layout::make(W.shape(), qp_, fn);

    // base = floor(W/s) + z; V so that h(V) = W/s - floor(W/s)
    v_ = adaround_init(W, qp_);
    base_ = xt::xtensor<float, 2>::from_shape(W.shape());
    w_soft_ = xt::xtensor<float, 2>::from_shape(W.shape());
    const float qmin = static_cast<float>(qp_.qmin()), qmax = static_cast<float>(qp_.qmax());
    layout_.for_each(0, layout_.n, [&](std::size_t i, float s, float inv_s, float z) {
      base_.data()[i] = std::floor(W.data()[i] * inv_s) + z;
      w_soft_.data()[i] = (simd::clamp(base_.data()[i] + detail::rect_sigmoid(v_.data()[i]), qmin, qmax) - z) * s;
    });

    // FP targets f_a(X W^T + b) for every calibration row, once.
    target_ = xt::xtensor<float, 2>::from_shape({samples, out});
    detail::gemm_nt(X, W, target_);
    detail::add_bias_activate(target_, bias_ptr(), opt_.act);

    perm_.resize(samples);
    for (std::size_t i = 0; i < samples; ++i) perm_[i] = i;
    xb_ = xt::xtensor<float, 2>::from_shape({opt_.batch_size, in});
    yb_ = xt::xtensor<float, 2>::from_shape({opt_.batch_size, out});
    grad_ = xt::xtensor<float, 2>::from_shape({out, in});
  }

  std::size_t iteration() const noexcept { return k_; }
  bool done() const noexcept { return k_ >= opt_.iterations; }
  const adaround_options& options() const noexcept { return opt_; }
  const xt::xtensor<float, 2>& v() const noexcept { return v_; }             // the rounding variables
  const xt::xtensor<float, 2>& soft_weights() const noexcept { return w_soft_; }
  const adaround_progress& last_progress() const noexcept { return last_; }

  // One iteration (no-op once done()).
  void step() {
    if (done()) return;
    const std::size_t B = opt_.batch_size, out = w_.shape()[0];
    detail::sample_rows(perm_, B, opt_.seed, k_);
    detail::gather_rows(*x_hat_, perm_.data(), B, xb_);
    detail::gemm_nt(xb_, w_soft_, yb_);  // [B, out]
    // dL/dY (in place) and the loss, L = (1/B) sum (f_a(y) - t)^2
    const float two_over_b = 2.0f / static_cast<float>(B);
    const float* bias = bias_ptr();
    double loss = 0.0;
    for (std::size_t j = 0; j < B; ++j) {
      const float* t = target_.data() + perm_[j] * out;
      float* y = yb_.data() + j * out;
      for (std::size_t o = 0; o < out; ++o) {
        const float pre = bias ? y[o] + bias[o] : y[o];
        const bool pass = opt_.act == activation::identity || pre > 0.0f;
        const float d = (pass ? pre : 0.0f) - t[o];
        loss += static_cast<double>(d) * d;
        y[o] = pass ? two_over_b * d : 0.0f;
      }
    }
    detail::gemm_tn(yb_, xb_, grad_);  // [out, in]
    const bool warm = k_ < opt_.warmup_iterations();
    kernels::adaround_step_constants c;
    c.adam = adam_.next_step();
    c.beta = opt_.beta_at(k_);
    c.lambda = warm ? 0.0f : opt_.lambda;
    const double reg = kernels::adaround_fused_step<>(layout_, static_cast<float>(qp_.qmin()),
                                                      static_cast<float>(qp_.qmax()), base_.data(), grad_.data(),
                                                      v_.data(), adam_.first_moment(), adam_.second_moment(),
                                                      w_soft_.data(), c);
    ++k_;
    last_ = adaround_progress{k_, opt_.iterations, loss / static_cast<double>(B), warm ? 0.0 : reg, c.beta, warm};
    if (opt_.progress) opt_.progress(last_);
  }

  // Runs the remaining iterations.
  void run() {
    while (!done()) step();
  }

  // Hard-rounded weights and the report (errors over all calibration rows, X_hat input).
  adaround_result result() const {
    adaround_result r;
    r.qparams = qp_;
    r.integer_weights = adaround_integer_weights(w_, v_, qp_);
    r.weights = xt::xtensor<float, 2>::from_shape(w_.shape());
    layout_.for_each(0, layout_.n, [&](std::size_t i, float s, float, float z) {
      r.weights.data()[i] = (static_cast<float>(r.integer_weights.data()[i]) - z) * s;
    });
    const xt::xtensor<float, 2> w_rtn = eager::fake_quantize(w_, qp_);
    const xt::xtensor<std::int32_t, 2> q_rtn = eager::quantize<std::int32_t>(w_, qp_);
    r.report.rtn_error = detail::layer_output_error(w_rtn, *x_hat_, target_, bias_ptr(), opt_.act);
    r.report.adaround_error = detail::layer_output_error(r.weights, *x_hat_, target_, bias_ptr(), opt_.act);
    std::size_t flipped = 0, soft = 0;
    for (std::size_t i = 0; i < w_.size(); ++i) {
      flipped += r.integer_weights.data()[i] != q_rtn.data()[i];
      const float h = detail::rect_sigmoid(v_.data()[i]);
      soft += (h > 0.0f && h < 1.0f);
    }
    r.report.flipped_fraction = static_cast<double>(flipped) / static_cast<double>(w_.size());
    r.report.non_binary_fraction = static_cast<double>(soft) / static_cast<double>(w_.size());
    r.report.iterations = k_;
    return r;
  }

 private:
  float options_lr_checked() {
    opt_.validate("adaround_layer");
    return opt_.learning_rate;
  }
  const float* bias_ptr() const noexcept { return bias_.empty() ? nullptr : bias_.data(); }

  xt::xtensor<float, 2> w_;
  const xt::xtensor<float, 2>* x_;
  const xt::xtensor<float, 2>* x_hat_;
  quant::qparams qp_;
  adaround_options opt_;
  adam adam_;
  detail::param_layout layout_;
  std::vector<float> bias_;
  xt::xtensor<float, 2> v_, base_, w_soft_, target_, xb_, yb_, grad_;
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
