// quant/adaround/variables.hpp — the AdaRound variables of one weight tensor: V, its Adam
// state, sigmoid(V) and the soft weight W_soft = s (clamp(floor(W/s) + h(V) + z, qmin, qmax) - z)
// (docs/adaround.md; formulas in adaround/rounding.hpp).
//
// The network-independent part of AdaRound, shared by the layer optimizer
// (adaround/layer.hpp), block reconstruction (reconstruction.hpp) and custom trainers:
//   vars.gradient() = dL_rec/dW_soft at vars.soft_weights();  vars.step(lambda, beta);  ...
//   vars.integer_weights() / vars.hard_weights()
// with lambda and beta from an adaround_schedule (adaround/schedule.hpp). Including this
// header alone gives the whole BLAS-free core (rounding primitives, the fused step, the
// variables): no xtensor-blas, no iostreams.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "../detail/checks.hpp"
#include "../detail/segments.hpp"
#include "../error.hpp"
#include "../optim.hpp"
#include "../qparams.hpp"
#include "../uniform.hpp"
#include "fused_step.hpp"
#include "rounding.hpp"

namespace quant {

class adaround_variables;

namespace detail {
// x as an owned [rows, columns] float matrix (a copy; other value types converted).
// Throws quant::invalid_argument naming `function` and `argument` when x is not 2-D.
template <class E>
xt::xtensor<float, 2> float_matrix(const xt::xexpression<E>& x, const char* function, const char* argument) {
  const auto& e = x.derived_cast();
  if (e.dimension() != 2)
    fail<invalid_argument>(function, (std::string(argument) + ".shape()").c_str(), shape_string(e.shape()),
                           "must be a matrix [rows, columns]");
  return xt::xtensor<float, 2>(e);
}

// For the algorithms that own adaround_variables (the layer optimizer, block
// reconstruction): construction and set_v with errors naming the algorithm.
struct adaround_variables_access;
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
  // W: any 2-D xtensor expression (copied, as float). Throws quant::invalid_argument for a
  // W that is not 2-D, quant::domain_error for non-finite W, quant::length_error /
  // invalid_argument for qparams that do not fit W or a learning rate that is not finite
  // and > 0.
  template <class E>
  adaround_variables(const xt::xexpression<E>& W, const quant::qparams& weight_qparams, float learning_rate = 1e-3f)
      : adaround_variables(detail::float_matrix(W, "adaround_variables", "W"), weight_qparams, learning_rate,
                           "adaround_variables") {}

  std::size_t size() const noexcept { return w_.size(); }
  const xt::xtensor<float, 2>& weight() const noexcept { return w_; }  // the full-precision W

  // Replaces V (any expression shaped like W, e.g. from eager::adaround_init_from_integers)
  // and recomputes the soft weight; call it before the first step() (Adam's state is not
  // reset). Throws quant::length_error for a shape other than W's, quant::domain_error for
  // non-finite V.
  template <class E>
  void set_v(const xt::xexpression<E>& v) {
    assign_v(v, "adaround_variables::set_v");
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
  xt::xtensor<std::int32_t, 2> integer_weights() const { return eager::adaround_integer_weights(w_, v_, qp_); }
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
  friend struct detail::adaround_variables_access;

  // The constructor and set_v with errors naming `function`.
  adaround_variables(xt::xtensor<float, 2> W, const quant::qparams& weight_qparams, float learning_rate,
                     const char* function)
      : w_(std::move(W)), qp_(weight_qparams), adam_(w_.size(), checked_adam_options(learning_rate, function)) {
    detail::require_finite(w_.data(), w_.size(), function, "W");
    plan_ = detail::make_segment_plan(w_.shape(), qp_, function);
    qmin_ = static_cast<float>(qp_.qmin());
    qmax_ = static_cast<float>(qp_.qmax());
    v_ = eager::adaround_init(w_, qp_);
    base_ = xt::xtensor<float, 2>::from_shape(w_.shape());
    detail::for_each_param(plan_, 0, plan_.n, [&](std::size_t i, float, float inv_s, float z) {
      base_.data()[i] = std::floor(w_.data()[i] * inv_s) + z;
    });
    sig_ = xt::xtensor<float, 2>::from_shape(w_.shape());
    w_soft_ = xt::xtensor<float, 2>::from_shape(w_.shape());
    grad_ = xt::zeros<float>(w_.shape());
    partials_.assign(detail::chunk_count(plan_), 0.0);
    kernels::adaround_soft_weights<>(plan_, qmin_, qmax_, base_.data(), v_.data(), sig_.data(), w_soft_.data());
  }

  // Adam's options for V, validated under the caller's name (not Adam's).
  static adam_options checked_adam_options(float learning_rate, const char* function) {
    const adam_options o{learning_rate};
    o.validate(function);
    return o;
  }

  template <class E>
  void assign_v(const xt::xexpression<E>& v, const char* function) {
    const auto& e = v.derived_cast();
    if (!std::equal(e.shape().begin(), e.shape().end(), w_.shape().begin(), w_.shape().end()))
      detail::fail<length_error>(function, "V.shape()", detail::shape_string(e.shape()),
                                 "must equal W.shape() = " + detail::shape_string(w_.shape()));
    xt::xtensor<float, 2> nv(e);
    detail::require_finite(nv.data(), nv.size(), function, "V");
    v_ = std::move(nv);
    kernels::adaround_soft_weights<>(plan_, qmin_, qmax_, base_.data(), v_.data(), sig_.data(), w_soft_.data());
  }

  xt::xtensor<float, 2> w_;
  quant::qparams qp_;
  adam adam_{0};
  detail::segment_plan plan_;
  float qmin_ = 0.0f, qmax_ = 0.0f;
  xt::xtensor<float, 2> v_, base_, sig_, w_soft_, grad_;
  std::vector<double> partials_;
};

namespace detail {
struct adaround_variables_access {
  static adaround_variables make(xt::xtensor<float, 2> W, const quant::qparams& weight_qparams, float learning_rate,
                                 const char* function) {
    return adaround_variables(std::move(W), weight_qparams, learning_rate, function);
  }
  template <class E>
  static void set_v(adaround_variables& vars, const xt::xexpression<E>& v, const char* function) {
    vars.assign_v(v, function);
  }
};
}  // namespace detail

}  // namespace quant
