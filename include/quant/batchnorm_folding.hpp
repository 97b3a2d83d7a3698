// quant/batchnorm_folding.hpp — folding an inference-mode batch norm into the layer before it
// (Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
// Integer-Arithmetic-Only Inference"; Nagel et al. 2019, "Data-Free Quantization").
//
// A layer y = W x + b followed by BN(y) = gamma (y - mu) / sqrt(var + eps) + beta (PyTorch
// BatchNorm1d/2d in eval mode, running statistics mu and var) is one layer
//     W'[i, ...] = W[i, ...] * f_i,   b'_i = beta_i + (b_i - mu_i) * f_i,
//     f_i = gamma_i / sqrt(var_i + eps),
// i the output channel (axis 0). Nothing else about the weight's layout matters, so linear
// [out, in] and conv [out, in/groups, kh, kw] of any groups (depthwise included) fold alike.
//
// The folded layer also carries the BN's model of its output: pre-activation channel i is
// N(beta_i, gamma_i^2) (the normalized input is taken as standard normal), stored as
// channel_gaussian{mean = beta, std = |gamma|}. High-bias absorption and analytic bias
// correction read it; transforms that rescale or shift the layer update it.
//
// Numerics: f_i, the products and b' are computed in double and rounded once to float, so
// every folded element is within one float rounding of the exact value (PyTorch's
// fuse_conv_bn_weights computes in float and rounds several times).
// Validation: channel counts (quant::length_error), eps <= 0 or not finite and negative
// variances (quant::invalid_argument), NaN/inf anywhere in the inputs or a folded value that
// overflows float (quant::domain_error); each message names the argument.
#pragma once

#include <cmath>
#include <cstddef>
#include <string>

#include <xtensor/xarray.hpp>
#include <xtensor/xexpression.hpp>
#include <xtensor/xtensor.hpp>

#include "error.hpp"
#include "layer_weights.hpp"

namespace quant {

// PyTorch BatchNorm2d/1d in eval mode.
struct batchnorm_params {
  xt::xtensor<float, 1> gamma, beta, running_mean, running_var;
  double eps = 1e-5;
};

struct folded_layer {
  xt::xarray<float> weight;   // same shape as the input weight, axis 0 = output channel
  xt::xtensor<float, 1> bias;  // [out]
  channel_gaussian output;     // the folded BN's beta and |gamma|
};

namespace detail {

inline void check_batchnorm(const batchnorm_params& bn, std::size_t out, const char* fn) {
  auto sized = [&](const xt::xtensor<float, 1>& v, const char* name) {
    if (v.size() != out)
      fail<length_error>(fn, name, v.size(), "must equal the weight's output channel count " + std::to_string(out));
  };
  sized(bn.gamma, "bn.gamma.size()");
  sized(bn.beta, "bn.beta.size()");
  sized(bn.running_mean, "bn.running_mean.size()");
  sized(bn.running_var, "bn.running_var.size()");
  if (!(std::isfinite(bn.eps) && bn.eps > 0.0)) fail<invalid_argument>(fn, "bn.eps", bn.eps, "must be finite and > 0");
  check_finite(bn.gamma.data(), out, fn, "bn.gamma");
  check_finite(bn.beta.data(), out, fn, "bn.beta");
  check_finite(bn.running_mean.data(), out, fn, "bn.running_mean");
  check_finite(bn.running_var.data(), out, fn, "bn.running_var");
  for (std::size_t i = 0; i < out; ++i)
    if (bn.running_var[i] < 0.0f)
      fail<invalid_argument>(fn, ("bn.running_var[" + std::to_string(i) + "]").c_str(), bn.running_var[i],
                             "a variance must be >= 0");
}

inline folded_layer fold_batchnorm_impl(xt::xarray<float> w, const float* bias, std::size_t bias_size,
                                        const batchnorm_params& bn, const char* fn) {
  if (w.dimension() == 0) fail<length_error>(fn, "weight.dimension()", 0, "must be >= 1 (axis 0 = output channel)");
  const std::size_t out = w.shape()[0];
  if (out == 0 || w.size() == 0) fail<length_error>(fn, "weight.shape", shape_string(w.shape()), "must not be empty");
  if (bias != nullptr && bias_size != out)
    fail<length_error>(fn, "bias.size()", bias_size, "must equal the weight's output channel count " + std::to_string(out));
  check_batchnorm(bn, out, fn);
  check_finite(w.data(), w.size(), fn, "weight");
  if (bias != nullptr) check_finite(bias, out, fn, "bias");

  const std::size_t per = w.size() / out;
  folded_layer r;
  r.bias = xt::xtensor<float, 1>::from_shape({out});
  r.output.mean = xt::xtensor<float, 1>::from_shape({out});
  r.output.std = xt::xtensor<float, 1>::from_shape({out});
  float* pw = w.data();
  for (std::size_t i = 0; i < out; ++i) {
    const double f = static_cast<double>(bn.gamma[i]) /
                     std::sqrt(static_cast<double>(bn.running_var[i]) + bn.eps);
    for (std::size_t k = 0; k < per; ++k)
      pw[i * per + k] = checked_float(static_cast<double>(pw[i * per + k]) * f, fn, "folded weight", i * per + k);
    const double b = bias != nullptr ? static_cast<double>(bias[i]) : 0.0;
    r.bias[i] = checked_float(static_cast<double>(bn.beta[i]) + (b - static_cast<double>(bn.running_mean[i])) * f, fn,
                              "folded bias", i);
    r.output.mean[i] = bn.beta[i];
    r.output.std[i] = std::fabs(bn.gamma[i]);
  }
  r.weight = std::move(w);
  return r;
}

}  // namespace detail

// Folds bn into a layer without bias (b = 0).
template <class E>
folded_layer fold_batchnorm(const xt::xexpression<E>& weight, const batchnorm_params& bn) {
  return detail::fold_batchnorm_impl(xt::xarray<float>(weight.derived_cast()), nullptr, 0, bn, "fold_batchnorm");
}

// Folds bn into a layer with bias b ([out]).
template <class E, class B>
folded_layer fold_batchnorm(const xt::xexpression<E>& weight, const xt::xexpression<B>& bias,
                            const batchnorm_params& bn) {
  const xt::xarray<float> b = bias.derived_cast();
  if (b.dimension() != 1)
    detail::fail<length_error>("fold_batchnorm", "bias.shape", detail::shape_string(b.shape()), "must be 1-D [out]");
  return detail::fold_batchnorm_impl(xt::xarray<float>(weight.derived_cast()), b.data(), b.size(), bn, "fold_batchnorm");
}

}  // namespace quant
