// quant/adaround/layer.hpp — AdaRound for one layer: the layer optimizer, its options and
// its report (Nagel et al. 2020; docs/adaround.md).
//
// Layer objective (eq. 25, with BRECQ's normalization and asymmetric reconstruction):
//   L = (1/B) sum_{b, o} (f_a(W x_b + bias) - f_a(W_soft x_hat_b + bias))_o^2 + lambda f_reg
// x = input in the full-precision model, x_hat = input in the quantized model (defaults to
// x), f_a = identity or ReLU, B = mini-batch of rows, lambda and beta from the options'
// adaround_schedule (adaround/schedule.hpp), W_soft and f_reg from adaround/rounding.hpp.
// Data layout: rows are samples. W [out, in], X [samples, in] (a Linear layer's input
// batch, or a conv layer's im2col matrix, see im2col.hpp), so a mini-batch is a gather of
// contiguous rows and both GEMMs run on it in place: Y = X_b W_soft^T [B, out] and
// dL/dW_soft = dY^T X_b [out, in] (BLAS, detail/blas_gemm.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "../detail/blas_gemm.hpp"
#include "../detail/checks.hpp"
#include "../detail/parallel.hpp"
#include "../detail/row_sampling.hpp"
#include "../error.hpp"
#include "../qparams.hpp"
#include "../simd/arch.hpp"
#include "../uniform.hpp"
#include "schedule.hpp"
#include "variables.hpp"

namespace quant {

// The activation following the layer in the reconstruction objective.
enum class activation { identity, relu };

namespace detail {
// The checks adaround_options and block_options share, in one order.
inline void validate_adaround_loop(const char* function, std::size_t iterations, std::size_t batch_size, float lambda,
                                   const adaround_schedule& schedule, float learning_rate) {
  if (iterations == 0) fail<invalid_argument>(function, "iterations", iterations, "must be >= 1");
  if (batch_size == 0) fail<invalid_argument>(function, "batch_size", batch_size, "must be >= 1");
  if (!(std::isfinite(lambda) && lambda >= 0.0f))
    fail<invalid_argument>(function, "lambda", lambda, "must be finite and >= 0");
  schedule.validate(function);
  if (!(std::isfinite(learning_rate) && learning_rate > 0.0f))
    fail<invalid_argument>(function, "learning_rate", learning_rate, "must be finite and > 0");
}
}  // namespace detail

// Options of adaround_layer (defaults: docs/adaround.md). The schedule fields (warmup,
// beta_start, beta_end, beta_schedule) come from adaround_schedule.
struct adaround_options : adaround_schedule {
  std::size_t iterations = 10000;
  std::size_t batch_size = 32;  // rows of X per iteration (conv: 32 images = 32 * OH * OW im2col rows)
  float lambda = 0.01f;         // regularizer weight
  float learning_rate = 1e-3f;  // Adam, on V
  std::uint64_t seed = 0;       // mini-batch sampling
  activation act = activation::identity;  // f_a, the activation after the layer
  std::function<void(const adaround_progress&)> progress;  // called after every iteration (optional)
  // Starting V, shaped like W (empty: AdaRound's init h(V) = W/s - floor(W/s)); e.g.
  // eager::adaround_init_from_integers(W, gptq.integer_weights, qparams) to refine GPTQ's rounding.
  xt::xtensor<float, 2> initial_v;

  // Throws quant::invalid_argument naming `function` and the field.
  void validate(const char* function) const {
    detail::validate_adaround_loop(function, iterations, batch_size, lambda, *this, learning_rate);
  }

  using adaround_schedule::beta_at;
  using adaround_schedule::warmup_iterations;
  // The schedule over this->iterations.
  std::size_t warmup_iterations() const noexcept { return warmup_iterations(iterations); }
  float beta_at(std::size_t k) const noexcept { return beta_at(k, iterations); }
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

// AdaRound for one layer, one iteration at a time (adaround_layer runs it to the end).
// W [out, in] (any 2-D xtensor expression, copied); X [samples, in] the layer's input in
// the full-precision model (any 2-D xtensor expression); X_hat the input in the quantized
// model (asymmetric reconstruction; nullptr: X); bias [out] or nullptr. An lvalue X of type
// xt::xtensor<float, 2>, X_hat and bias are referenced, not copied: they must outlive the
// optimizer. A temporary xt::xtensor<float, 2> is moved in; an X of any other type is
// copied once, as float.
// Weight qparams: any granularity of W (per output channel, axis 0, is the usual choice);
// they stay fixed. Each step(): sample `batch_size` rows, gather them, Y = X_b W_soft^T
// (GEMM), dL/dY in place, G = dY^T X_b (GEMM into the variables' gradient), then the
// fused pass over V. Every buffer is allocated once, in the constructor. BLAS runs
// outside any parallel region; the gather and the fused pass use quant's threads;
// results are identical for any thread count and the same seed.
class adaround_optimizer {
 public:
  template <class EW, class EX>
  adaround_optimizer(const xt::xexpression<EW>& W, const xt::xexpression<EX>& X, const quant::qparams& weight_qparams,
                     adaround_options options = {}, const xt::xtensor<float, 2>* X_hat = nullptr,
                     const xt::xtensor<float, 1>* bias = nullptr)
      : x_hat_(X_hat), opt_(std::move(options)) {
    const char* fn = "adaround_layer";
    if constexpr (std::is_same<EX, xt::xtensor<float, 2>>::value)
      x_ = &X.derived_cast();
    else
      x_own_ = detail::float_matrix(X, fn, "X");
    init(detail::float_matrix(W, fn, "W"), weight_qparams, bias, fn);
  }
  template <class EW>
  adaround_optimizer(const xt::xexpression<EW>& W, xt::xtensor<float, 2>&& X, const quant::qparams& weight_qparams,
                     adaround_options options = {}, const xt::xtensor<float, 2>* X_hat = nullptr,
                     const xt::xtensor<float, 1>* bias = nullptr)
      : x_own_(std::move(X)), x_hat_(X_hat), opt_(std::move(options)) {
    init(detail::float_matrix(W, "adaround_layer", "W"), weight_qparams, bias, "adaround_layer");
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
    detail::gather_rows(x_hat(), perm_.data(), B, xb_);
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
    r.report.rtn_error = detail::layer_output_error(w_rtn, x_hat(), target_, bias_ptr(), opt_.act);
    r.report.adaround_error = detail::layer_output_error(r.weights, x_hat(), target_, bias_ptr(), opt_.act);
    r.report.flipped_fraction = vars_.flipped_fraction();
    r.report.non_binary_fraction = vars_.non_binary_fraction();
    r.report.iterations = k_;
    return r;
  }

 private:
  const float* bias_ptr() const noexcept { return has_bias_ ? bias_.data() : nullptr; }
  const xt::xtensor<float, 2>& x() const noexcept { return x_ ? *x_ : x_own_; }
  const xt::xtensor<float, 2>& x_hat() const noexcept { return x_hat_ ? *x_hat_ : x(); }

  void init(xt::xtensor<float, 2> W, const quant::qparams& weight_qparams, const xt::xtensor<float, 1>* bias,
            const char* fn) {
    const xt::xtensor<float, 2>& X = x();
    const xt::xtensor<float, 2>* X_hat = x_hat_;
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
    vars_ = detail::adaround_variables_access::make(std::move(W), weight_qparams, opt_.learning_rate, fn);
    if (opt_.initial_v.size() != 0) detail::adaround_variables_access::set_v(vars_, opt_.initial_v, fn);
    bias_.assign(out, 0.0f);
    if (bias) std::copy(bias->begin(), bias->end(), bias_.begin());
    has_bias_ = bias != nullptr;

    // FP targets f_a(X W^T + b) for every calibration row, once.
    target_ = xt::xtensor<float, 2>::from_shape({samples, out});
    detail::gemm_nt(X, vars_.weight(), target_);
    detail::add_bias_activate(target_, bias_ptr(), opt_.act);

    perm_.resize(samples);
    for (std::size_t i = 0; i < samples; ++i) perm_[i] = i;
    xb_ = xt::xtensor<float, 2>::from_shape({opt_.batch_size, in});
    yb_ = xt::xtensor<float, 2>::from_shape({opt_.batch_size, out});
  }

  const xt::xtensor<float, 2>* x_ = nullptr;      // the caller's X, or nullptr: x_own_
  xt::xtensor<float, 2> x_own_;                   // X when it is not an lvalue xt::xtensor<float, 2>
  const xt::xtensor<float, 2>* x_hat_ = nullptr;  // nullptr: X
  adaround_options opt_;
  adaround_variables vars_;
  std::vector<float> bias_;  // zeros without a bias (the loss row adds it unconditionally)
  bool has_bias_ = false;
  xt::xtensor<float, 2> target_, xb_, yb_;
  std::vector<std::size_t> perm_;
  std::size_t k_ = 0;
  adaround_progress last_;
};

// AdaRound one layer to the end (see adaround_optimizer for shapes and semantics; W and X
// any 2-D xtensor expressions). Throws quant::invalid_argument (options, W or X not 2-D,
// empty data, batch larger than the data), quant::length_error (shapes),
// quant::domain_error (non-finite W, X, X_hat or bias).
template <class EW, class EX>
adaround_result adaround_layer(const xt::xexpression<EW>& W, const xt::xexpression<EX>& X,
                               const quant::qparams& weight_qparams, const adaround_options& opt = {},
                               const xt::xtensor<float, 2>* X_hat = nullptr,
                               const xt::xtensor<float, 1>* bias = nullptr) {
  adaround_optimizer o(W, X, weight_qparams, opt, X_hat, bias);
  o.run();
  return o.result();
}

}  // namespace quant
