// quant/bias_absorption.hpp — high-bias absorption (Nagel et al. 2019, "Data-Free
// Quantization", §4 "absorbing high biases").
//
// After equalization some channels of `first` carry large positive biases, which widen the
// activation range the next quantizer must cover. If channel i's pre-activation x_i is never
// below c_i >= 0, then ReLU(x_i) = ReLU(x_i - c_i) + c_i, and the constant c_i can move into
// the next layer's bias:
//     c_i = max(0, beta_i - sigmas * |gamma_i|)      (sigmas = 3: DFQ's choice)
//     b1_i -= c_i,   first.output->mean_i -= c_i,   b2 += W2 c
// with (beta_i, |gamma_i|) = first.output, the folded BN's model of x_i ~ N(beta_i, gamma_i^2)
// (required: without it there is nothing to bound x_i by). The transform is exact for every
// input whose pre-activation satisfies x_i >= c_i; under the Gaussian model that fails with
// probability Phi(-sigmas) (0.13% at 3 sigma), so it changes the float model slightly.
//
// W2 c, by the kind of `second`:
//   linear:    b2[o] += sum_i c_i * sum_{s < spatial} W2[o, i*spatial + s]
//              (every feature of channel i after a C-order flatten carries the constant c_i)
//   conv2d:    b2[o] += sum_i c_i * sum_{ky,kx} W2[o, i, ky, kx]
//   depthwise: b2[i] += c_i * sum_{ky,kx} W2[i, 0, ky, kx]
// A conv's zero padding makes the conv forms approximate at the borders: a padded position
// contributes 0, not the absorbed c_i, so border outputs shift by the missing terms. 1x1 convs,
// unpadded convs and linear layers are exact. Pooling between the layers (max or average)
// keeps a constant channel constant, so it does not matter.
//
// Only for ReLU (or identity, where any c is exact) between the layers: ReLU6 is rejected with
// quant::invalid_argument, since min(x, 6) does not commute with the shift.
// Numerics: c and W2 c in double, each result rounded once to float.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "equalization.hpp"
#include "error.hpp"
#include "layer_weights.hpp"

namespace quant {

// Absorbs c = max(0, mean - sigmas * std) of first.output into second's bias (see above) and
// returns c ([C]). Throws quant::invalid_argument for act == relu6, a missing first.output,
// sigmas < 0 or not finite, spatial == 0; quant::length_error when the channels do not chain;
// quant::domain_error for NaN/inf. Nothing is modified when it throws.
inline xt::xtensor<float, 1> absorb_high_bias(layer_weights& first, layer_weights& second, activation_between act,
                                              std::size_t spatial = 1, double sigmas = 3.0) {
  const char* fn = "absorb_high_bias";
  detail::check_homogeneous(act, fn, "act");
  if (!(std::isfinite(sigmas) && sigmas >= 0.0)) detail::fail<invalid_argument>(fn, "sigmas", sigmas, "must be finite and >= 0");
  if (!first.output)
    detail::fail<invalid_argument>(fn, "first.output", "absent",
                                   "high-bias absorption needs the folded BN statistics (beta, |gamma|) of first");
  const detail::pair_geometry p = detail::check_pair(first, second, spatial, fn, "first", "second");
  const std::size_t C = p.channels;
  const detail::input_channels& g = p.second;

  xt::xtensor<float, 1> c = xt::xtensor<float, 1>::from_shape({C});
  for (std::size_t i = 0; i < C; ++i) {
    const double v = static_cast<double>(first.output->mean[i]) - sigmas * static_cast<double>(first.output->std[i]);
    c[i] = v > 0.0 ? static_cast<float>(v) : 0.0f;
  }
  // b2 += W2 c, every output's sum in double.
  const float* w2 = second.weight.data();
  std::vector<double> add(g.out, 0.0);
  for (std::size_t o = 0; o < g.out; ++o) {
    double acc = 0.0;
    if (g.depthwise) {
      for (std::size_t t = 0; t < g.taps; ++t) acc += static_cast<double>(w2[g.index(o, o, t)]);
      acc *= static_cast<double>(c[o]);
    } else {
      for (std::size_t ch = 0; ch < C; ++ch) {
        if (c[ch] == 0.0f) continue;
        double s = 0.0;
        for (std::size_t t = 0; t < g.taps; ++t) s += static_cast<double>(w2[g.index(o, ch, t)]);
        acc += s * static_cast<double>(c[ch]);
      }
    }
    add[o] = acc;
  }
  std::vector<float> b2(g.out);
  for (std::size_t o = 0; o < g.out; ++o)
    b2[o] = detail::checked_float(static_cast<double>(second.bias[o]) + add[o], fn, "second.bias", o);
  std::copy(b2.begin(), b2.end(), second.bias.begin());
  for (std::size_t i = 0; i < C; ++i) {
    if (c[i] == 0.0f) continue;
    first.bias[i] = static_cast<float>(static_cast<double>(first.bias[i]) - static_cast<double>(c[i]));
    first.output->mean[i] = static_cast<float>(static_cast<double>(first.output->mean[i]) - static_cast<double>(c[i]));
  }
  return c;
}

// The same with ReLU between the layers (the case DFQ describes).
inline xt::xtensor<float, 1> absorb_high_bias(layer_weights& first, layer_weights& second, std::size_t spatial = 1,
                                              double sigmas = 3.0) {
  return absorb_high_bias(first, second, activation_between::relu, spatial, sigmas);
}

}  // namespace quant
