// quant/equalization.hpp — cross-layer equalization (CLE; Nagel et al. 2019, "Data-Free
// Quantization Through Weight Equalization and Bias Correction", §4 "cross-layer range
// equalization" and appendix A).
//
// For two layers y = f(W2 g(W1 x + b1) + b2) with g positively homogeneous
// (g(s z) = s g(z) for s > 0: identity, ReLU, and the max/avg pooling and flatten that may sit
// after it), scaling output channel i of the first layer by 1/S_i and input channel i of the
// second by S_i leaves the function unchanged. DFQ picks
//     r1_i = max |W1[i, ...]|       (first's output channel i)
//     r2_i = max |W2[:, i, ...]|    (second's input channel i; see layer_weights.hpp for how
//                                    linear-after-flatten and depthwise layers map channels)
//     S_i  = sqrt(r1_i / r2_i)
//     W1[i, ...] /= S_i,  b1[i] /= S_i,  W2[:, i, ...] *= S_i
// after which both ranges equal sqrt(r1_i r2_i): the per-channel ranges of the two layers are
// as even as one diagonal scaling can make them, which is what a per-tensor weight grid needs.
// The first layer's output statistics (the folded BN's beta and |gamma|) are divided by S_i
// too, since they describe the rescaled pre-activation.
//
// Not exact through bounded activations: ReLU6(x / S) != ReLU6(x) / S. DFQ replaces ReLU6 by
// ReLU before equalizing (which changes the float model where activations exceed 6); this
// header rejects activation_between::relu6 with quant::invalid_argument instead of silently
// changing the function — replace the activation yourself if you accept that.
//
// Channels with r1_i = 0 or r2_i = 0 are left alone (S_i = 1): nothing to balance, and no
// division by zero. S_i is computed in double and rounded to float; the float S_i is exactly
// the factor applied (each element is rescaled in double and rounded once), so returned
// scales reproduce the transformed weights.
//
// equalize_chain sweeps the pairs (layers[k], layers[k+1]) in order and repeats: equalizing a
// pair changes the output-channel ranges of layers[k+1] and so the next pair; DFQ iterates
// the pairwise step until the scales stop changing. Defaults: stop after the first sweep
// whose largest |S_i - 1| is below 1e-6 (a few float roundings above the 6e-8 half-ulp of
// 1.0, so a converged chain stops), or after 100 sweeps; report.converged says which.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include <xtensor/xexpression.hpp>
#include <xtensor/xtensor.hpp>

#include "detail/contiguous.hpp"
#include "error.hpp"
#include "layer_weights.hpp"

namespace quant {

struct equalization_options {
  double threshold = 1e-6;       // stop when a whole sweep has max |S_i - 1| < threshold
  std::size_t max_sweeps = 100;  // ... or after this many sweeps
};

struct equalization_report {
  std::vector<xt::xtensor<float, 1>> scales;  // per pair: the product of the scales of all sweeps
  std::size_t sweeps = 0;
  double last_change = 0;  // max |S_i - 1| over all pairs of the last sweep
  bool converged = false;  // last_change < threshold
};

namespace detail {

struct pair_geometry {
  std::size_t channels = 0;  // first's output channels = second's input channels
  input_channels second;
};

inline void check_homogeneous(activation_between act, const char* fn, const char* name) {
  if (act == activation_between::relu6)
    fail<invalid_argument>(fn, name, "relu6",
                           "the transform is exact only for positively homogeneous activations (identity, relu); "
                           "replace ReLU6 by ReLU first if that change of the model is acceptable");
}

inline pair_geometry check_pair(const layer_weights& first, const layer_weights& second, std::size_t spatial,
                                const char* fn, const char* first_name, const char* second_name) {
  pair_geometry p;
  p.channels = check_layer(first, fn, first_name);
  check_layer(second, fn, second_name);
  p.second = input_channels_of(second.weight.shape(), second.kind, spatial, fn, second_name);
  if (p.second.channels != p.channels)
    fail<length_error>(fn, (std::string(second_name) + " input channels").c_str(), p.second.channels,
                       std::string("must equal the output channels of ") + first_name + " = " +
                           std::to_string(p.channels) + " (check spatial and the layer kinds)");
  return p;
}

// r_i = max |W[i, ...]| over a row-major [out, per] buffer.
inline std::vector<float> row_ranges(const float* w, std::size_t out, std::size_t per) {
  std::vector<float> r(out, 0.0f);
  for (std::size_t i = 0; i < out; ++i)
    for (std::size_t k = 0; k < per; ++k) r[i] = std::max(r[i], std::fabs(w[i * per + k]));
  return r;
}

inline std::vector<float> input_ranges(const float* w, const input_channels& g) {
  std::vector<float> r(g.channels, 0.0f);
  const std::size_t outs = g.depthwise ? 1 : g.out;
  for (std::size_t o = 0; o < outs; ++o)
    for (std::size_t c = 0; c < g.channels; ++c)
      for (std::size_t t = 0; t < g.taps; ++t) r[c] = std::max(r[c], std::fabs(w[g.index(o, c, t)]));
  return r;
}

inline float divided(float x, double s) { return static_cast<float>(static_cast<double>(x) / s); }
inline float multiplied(float x, double s) { return static_cast<float>(static_cast<double>(x) * s); }

// One CLE step on a validated pair; returns S.
inline xt::xtensor<float, 1> equalize_checked(layer_weights& first, layer_weights& second, const pair_geometry& p) {
  const std::size_t C = p.channels;
  const std::size_t per1 = first.weight.size() / C;
  const std::vector<float> r1 = row_ranges(first.weight.data(), C, per1);
  const std::vector<float> r2 = input_ranges(second.weight.data(), p.second);
  xt::xtensor<float, 1> S = xt::xtensor<float, 1>::from_shape({C});
  for (std::size_t i = 0; i < C; ++i)
    S[i] = (r1[i] > 0.0f && r2[i] > 0.0f)
               ? static_cast<float>(std::sqrt(static_cast<double>(r1[i]) / static_cast<double>(r2[i])))
               : 1.0f;
  // Weights cannot overflow (their new maxima are sqrt(r1_i r2_i)); biases and statistics can
  // when S_i is tiny. Check before changing anything.
  for (std::size_t i = 0; i < C; ++i) {
    const double s = S[i];
    checked_float(static_cast<double>(first.bias[i]) / s, "equalize_pair", "rescaled first.bias", i);
    if (first.output) {
      checked_float(static_cast<double>(first.output->mean[i]) / s, "equalize_pair", "rescaled first.output->mean", i);
      checked_float(static_cast<double>(first.output->std[i]) / s, "equalize_pair", "rescaled first.output->std", i);
    }
  }
  float* w1 = first.weight.data();
  for (std::size_t i = 0; i < C; ++i) {
    const double s = S[i];
    if (s == 1.0) continue;
    for (std::size_t k = 0; k < per1; ++k) w1[i * per1 + k] = divided(w1[i * per1 + k], s);
    first.bias[i] = divided(first.bias[i], s);
    if (first.output) {
      first.output->mean[i] = divided(first.output->mean[i], s);
      first.output->std[i] = divided(first.output->std[i], s);
    }
  }
  float* w2 = second.weight.data();
  const input_channels& g = p.second;
  const std::size_t outs = g.depthwise ? 1 : g.out;
  for (std::size_t o = 0; o < outs; ++o)
    for (std::size_t c = 0; c < C; ++c) {
      const double s = S[c];
      if (s == 1.0) continue;
      for (std::size_t t = 0; t < g.taps; ++t) {
        float& w = w2[g.index(o, c, t)];
        w = multiplied(w, s);
      }
    }
  return S;
}

}  // namespace detail

// Equalizes the channels between `first` and `second` in place and returns S ([C]).
// `spatial`: how many consecutive input features of a linear `second` belong to one channel of
// `first` (a conv output flattened in C order from [C, H, W]: H*W; after global pooling: 1);
// must be 1 for a conv `second`. Throws quant::invalid_argument for act == relu6 or
// spatial == 0, quant::length_error when the channel counts do not chain or a shape does not
// fit its kind, quant::domain_error for NaN/inf. Nothing is modified when it throws.
inline xt::xtensor<float, 1> equalize_pair(layer_weights& first, layer_weights& second,
                                           activation_between act = activation_between::relu, std::size_t spatial = 1) {
  const char* fn = "equalize_pair";
  detail::check_homogeneous(act, fn, "act");
  const detail::pair_geometry p = detail::check_pair(first, second, spatial, fn, "first", "second");
  return detail::equalize_checked(first, second, p);
}

// Sweeps equalize_pair over (layers[k], layers[k+1]) with acts[k], spatial[k] until a sweep's
// max |S_i - 1| < opt.threshold or opt.max_sweeps sweeps. Validates every pair before changing
// anything (only a bias overflowing float in a later sweep, quant::domain_error, can stop it
// half-way).
inline equalization_report equalize_chain(std::vector<layer_weights*> layers, const std::vector<activation_between>& acts,
                                          const std::vector<std::size_t>& spatial, const equalization_options& opt = {}) {
  const char* fn = "equalize_chain";
  if (layers.size() < 2) detail::fail<invalid_argument>(fn, "layers.size()", layers.size(), "must be >= 2");
  const std::size_t pairs = layers.size() - 1;
  if (acts.size() != pairs)
    detail::fail<length_error>(fn, "acts.size()", acts.size(), "must equal layers.size() - 1 = " + std::to_string(pairs));
  if (spatial.size() != pairs)
    detail::fail<length_error>(fn, "spatial.size()", spatial.size(), "must equal layers.size() - 1 = " + std::to_string(pairs));
  if (!(std::isfinite(opt.threshold) && opt.threshold >= 0.0))
    detail::fail<invalid_argument>(fn, "opt.threshold", opt.threshold, "must be finite and >= 0");
  if (opt.max_sweeps == 0) detail::fail<invalid_argument>(fn, "opt.max_sweeps", 0, "must be >= 1");
  for (std::size_t k = 0; k < layers.size(); ++k)
    if (layers[k] == nullptr)
      detail::fail<invalid_argument>(fn, ("layers[" + std::to_string(k) + "]").c_str(), "nullptr", "must point to a layer");
  std::vector<detail::pair_geometry> geo(pairs);
  for (std::size_t k = 0; k < pairs; ++k) {
    const std::string a = "layers[" + std::to_string(k) + "]", b = "layers[" + std::to_string(k + 1) + "]";
    detail::check_homogeneous(acts[k], fn, ("acts[" + std::to_string(k) + "]").c_str());
    if (spatial[k] == 0)
      detail::fail<invalid_argument>(fn, ("spatial[" + std::to_string(k) + "]").c_str(), 0, "must be >= 1");
    geo[k] = detail::check_pair(*layers[k], *layers[k + 1], spatial[k], fn, a.c_str(), b.c_str());
  }

  std::vector<std::vector<double>> product(pairs);
  for (std::size_t k = 0; k < pairs; ++k) product[k].assign(geo[k].channels, 1.0);
  equalization_report rep;
  while (rep.sweeps < opt.max_sweeps) {
    double change = 0.0;
    for (std::size_t k = 0; k < pairs; ++k) {
      const xt::xtensor<float, 1> S = detail::equalize_checked(*layers[k], *layers[k + 1], geo[k]);
      for (std::size_t i = 0; i < S.size(); ++i) {
        product[k][i] *= S[i];
        change = std::max(change, std::fabs(static_cast<double>(S[i]) - 1.0));
      }
    }
    ++rep.sweeps;
    rep.last_change = change;
    if (change < opt.threshold) {
      rep.converged = true;
      break;
    }
  }
  rep.scales.resize(pairs);
  for (std::size_t k = 0; k < pairs; ++k) {
    rep.scales[k] = xt::xtensor<float, 1>::from_shape({product[k].size()});
    for (std::size_t i = 0; i < product[k].size(); ++i) rep.scales[k][i] = static_cast<float>(product[k][i]);
  }
  return rep;
}

// r_i = max |W[i, ...]| per output channel (axis 0) of any weight.
template <class E>
xt::xtensor<float, 1> output_channel_ranges(const xt::xexpression<E>& weight) {
  const char* fn = "output_channel_ranges";
  const auto w = detail::as_contiguous(weight);
  if (w.shape().size() == 0 || w.size() == 0)
    detail::fail<length_error>(fn, "weight.shape", detail::shape_string(w.shape()), "must be non-empty with axis 0 = output channel");
  const std::size_t out = w.shape()[0];
  detail::check_finite(w.data(), w.size(), fn, "weight");
  const std::vector<float> r = detail::row_ranges(w.data(), out, w.size() / out);
  xt::xtensor<float, 1> t = xt::xtensor<float, 1>::from_shape({out});
  std::copy(r.begin(), r.end(), t.begin());
  return t;
}

// r2_i = max |W[:, i, ...]| per input channel of a layer read as the second of a pair.
inline xt::xtensor<float, 1> input_channel_ranges(const layer_weights& layer, std::size_t spatial = 1) {
  const char* fn = "input_channel_ranges";
  const detail::input_channels g = detail::input_channels_of(layer.weight.shape(), layer.kind, spatial, fn, "layer");
  detail::check_finite(layer.weight.data(), layer.weight.size(), fn, "layer.weight");
  const std::vector<float> r = detail::input_ranges(layer.weight.data(), g);
  xt::xtensor<float, 1> t = xt::xtensor<float, 1>::from_shape({r.size()});
  std::copy(r.begin(), r.end(), t.begin());
  return t;
}

// Per-channel range spread max_i r_i / min_i r_i over the output channels with r_i > 0
// (1 when no channel has a nonzero range): how many of a per-tensor grid's levels the
// narrowest channel loses. A reporting helper.
template <class E>
double channel_range_spread(const xt::xexpression<E>& weight) {
  const char* fn = "channel_range_spread";
  const auto w = detail::as_contiguous(weight);
  if (w.shape().size() == 0 || w.size() == 0)
    detail::fail<length_error>(fn, "weight.shape", detail::shape_string(w.shape()), "must be non-empty with axis 0 = output channel");
  detail::check_finite(w.data(), w.size(), fn, "weight");
  const std::size_t out = w.shape()[0];
  const std::vector<float> r = detail::row_ranges(w.data(), out, w.size() / out);
  float lo = std::numeric_limits<float>::infinity(), hi = 0.0f;
  for (float v : r)
    if (v > 0.0f) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  return hi > 0.0f ? static_cast<double>(hi) / static_cast<double>(lo) : 1.0;
}

}  // namespace quant
