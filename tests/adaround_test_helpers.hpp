// AdaRound test utilities shared by test_adaround and test_reconstruction: the fused
// pass's `base` and the dL/dV it computes, read back from Adam's first moment.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include <xtensor/xtensor.hpp>

#include <quant/adaround/fused_step.hpp>
#include <quant/adaround/rounding.hpp>
#include <quant/detail/segments.hpp>
#include <quant/optim.hpp>
#include <quant/qparams.hpp>

namespace quant_test {

// True where V is close enough to |V| = log 11 (h(V) = clip(1.2 sigmoid(V) - 0.1, 0, 1)
// reaches 0 or 1) that a difference quotient or float rounding may straddle the jump of h'.
inline bool near_h_kink(double v) {
  const double u = 1.2 / (1.0 + std::exp(-v)) - 0.1;
  return std::fabs(u) < 1e-5 || std::fabs(u - 1.0) < 1e-5;
}

// floor(W/s) + z, the fused pass's `base`, for W laid out by `plan`.
inline xt::xtensor<float, 2> floor_base(const xt::xtensor<float, 2>& w, const quant::detail::segment_plan& plan) {
  xt::xtensor<float, 2> base = xt::xtensor<float, 2>::from_shape(w.shape());
  quant::detail::for_each_param(plan, 0, plan.n, [&](std::size_t i, float, float inv_s, float z) {
    base.data()[i] = std::floor(w.data()[i] * inv_s) + z;
  });
  return base;
}

// dL/dV as the fused pass (kernels::adaround_fused_step, what adaround_variables::step
// runs) computes it from dL/dW_soft = grad at V, with regularizer weight lambda (0: the
// warm-up) and exponent beta: one Adam step from zero moments leaves m = (1 - beta1) dL/dV,
// which is divided back out.
inline std::vector<double> fused_pass_dv(const xt::xtensor<float, 2>& w, const xt::xtensor<float, 2>& v,
                                         const quant::qparams& p, const xt::xtensor<float, 2>& grad,
                                         float lambda = 0.0f, float beta = 2.0f) {
  const auto plan = quant::detail::make_segment_plan(w.shape(), p, "test");
  const xt::xtensor<float, 2> base = floor_base(w, plan);
  const float qmin = float(p.qmin()), qmax = float(p.qmax());
  xt::xtensor<float, 2> vv = v, sig = xt::zeros<float>(w.shape()), ws = sig;
  std::vector<float> m(w.size(), 0.0f), s2(w.size(), 0.0f);
  quant::kernels::adaround_step_constants c;
  c.adam = quant::adam_step::make(quant::adam_options{}, 1);
  c.lambda = lambda;
  c.beta = beta;
  quant::kernels::adaround_soft_weights<>(plan, qmin, qmax, base.data(), vv.data(), sig.data(), ws.data());
  quant::kernels::adaround_fused_step<>(plan, qmin, qmax, base.data(), grad.data(), vv.data(), sig.data(), m.data(),
                                        s2.data(), ws.data(), c);
  std::vector<double> dv(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) dv[i] = double(m[i]) / double(c.adam.one_minus_beta1);
  return dv;
}

}  // namespace quant_test
