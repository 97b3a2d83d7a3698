// quant/layer_weights.hpp — the value types the data-free transforms (batch-norm folding,
// cross-layer equalization, bias absorption, bias correction; Nagel et al. 2019,
// "Data-Free Quantization Through Weight Equalization and Bias Correction") work on.
//
// Layouts are PyTorch's, axis 0 = output channel:
//   layer_kind::linear            weight [out, in]
//   layer_kind::conv2d            weight [out, in, kh, kw]      (groups = 1)
//   layer_kind::depthwise_conv2d  weight [C, 1, kh, kw]         (groups = C: channel i reads
//                                                                input channel i only)
// channel_gaussian models a layer's per-channel pre-activation as N(mean, std^2); after
// batch-norm folding it is (beta, |gamma|) of the folded BN, and every transform that rescales
// or shifts the layer's output updates it in step.
//
// Reading a layer as "the second layer" of a pair, its input channel i owns
//   linear:    the `spatial` consecutive input features i*spatial .. (i+1)*spatial-1
//              (a [C, H, W] map flattened in C order: spatial = H*W; after global pooling: 1)
//   conv2d:    the kernel slice W[:, i, :, :]
//   depthwise: the filter W[i, 0, :, :] of output channel i
// detail::input_channels describes that mapping once for all transforms.
#pragma once

#include <cmath>
#include <cstddef>
#include <optional>
#include <string>

#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

#include "error.hpp"

namespace quant {

// Per-channel model of a pre-activation: N(mean, std^2).
struct channel_gaussian {
  xt::xtensor<float, 1> mean, std;
};

enum class layer_kind { linear, conv2d, depthwise_conv2d };

// What sits between two layers. Pooling and flatten commute with positive per-channel
// scaling and are not listed; relu6 (or any bounded activation) does not.
enum class activation_between { identity, relu, relu6 };

struct layer_weights {
  xt::xarray<float> weight;                // see the layouts above
  xt::xtensor<float, 1> bias;              // [out]; zeros if the layer has none
  layer_kind kind = layer_kind::linear;
  std::optional<channel_gaussian> output;  // folded BN statistics of this layer's output, if any
};

inline const char* to_string(layer_kind k) noexcept {
  switch (k) {
    case layer_kind::linear: return "linear";
    case layer_kind::conv2d: return "conv2d";
    case layer_kind::depthwise_conv2d: return "depthwise_conv2d";
  }
  return "?";
}

inline const char* to_string(activation_between a) noexcept {
  switch (a) {
    case activation_between::identity: return "identity";
    case activation_between::relu: return "relu";
    case activation_between::relu6: return "relu6";
  }
  return "?";
}

namespace detail {

inline std::string arg_name(const char* layer, const char* field) { return std::string(layer) + "." + field; }

// Number of elements of a [out, ...] weight per output channel, after checking the rank
// and the depthwise [C, 1, kh, kw] form for `kind`.
template <class S>
std::size_t check_weight_shape(const S& shape, layer_kind kind, const char* fn, const std::string& name) {
  const std::size_t rank = shape.size();
  const std::size_t want = kind == layer_kind::linear ? 2 : 4;
  if (rank != want)
    fail<length_error>(fn, (name + ".shape").c_str(), shape_string(shape),
                       std::string("a ") + to_string(kind) + " weight must have rank " + std::to_string(want));
  if (kind == layer_kind::depthwise_conv2d && shape[1] != 1)
    fail<length_error>(fn, (name + ".shape").c_str(), shape_string(shape),
                       "a depthwise_conv2d weight must be [C, 1, kh, kw]");
  std::size_t n = 1;
  for (std::size_t d = 0; d < rank; ++d) {
    if (shape[d] == 0) fail<length_error>(fn, (name + ".shape").c_str(), shape_string(shape), "must have no zero extent");
    if (d > 0) n *= shape[d];
  }
  return n;
}

inline void check_finite(const float* x, std::size_t n, const char* fn, const std::string& name) {
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]))
      fail<domain_error>(fn, (name + "[" + std::to_string(i) + "]").c_str(), x[i], "must be finite");
}

inline float checked_float(double v, const char* fn, const char* name, std::size_t i) {
  const float f = static_cast<float>(v);
  if (!std::isfinite(f))
    fail<domain_error>(fn, (std::string(name) + "[" + std::to_string(i) + "]").c_str(), v, "overflows float");
  return f;
}

// Checks a channel_gaussian of `channels` channels: finite means, finite std >= 0.
inline void check_gaussian(const channel_gaussian& g, std::size_t channels, const char* fn, const std::string& name) {
  if (g.mean.size() != channels)
    fail<length_error>(fn, (name + ".mean.size()").c_str(), g.mean.size(), "must equal the channel count " + std::to_string(channels));
  if (g.std.size() != channels)
    fail<length_error>(fn, (name + ".std.size()").c_str(), g.std.size(), "must equal the channel count " + std::to_string(channels));
  check_finite(g.mean.data(), channels, fn, name + ".mean");
  check_finite(g.std.data(), channels, fn, name + ".std");
  for (std::size_t i = 0; i < channels; ++i)
    if (g.std[i] < 0.0f)
      fail<invalid_argument>(fn, (name + ".std[" + std::to_string(i) + "]").c_str(), g.std[i], "must be >= 0");
}

// Validates a whole layer (weight shape for its kind, bias size, output statistics, finite
// values) and returns its output channel count.
inline std::size_t check_layer(const layer_weights& l, const char* fn, const char* name) {
  check_weight_shape(l.weight.shape(), l.kind, fn, name);
  const std::size_t out = l.weight.shape()[0];
  if (l.bias.size() != out)
    fail<length_error>(fn, arg_name(name, "bias.size()").c_str(), l.bias.size(),
                       "must equal the output channel count " + std::to_string(out) + " (zeros if the layer has no bias)");
  check_finite(l.weight.data(), l.weight.size(), fn, arg_name(name, "weight"));
  check_finite(l.bias.data(), out, fn, arg_name(name, "bias"));
  if (l.output) check_gaussian(*l.output, out, fn, arg_name(name, "output"));
  return out;
}

// How a layer read as the second of a pair sees its input channels: element t of input
// channel c for output o sits at weight[(o * channels + c) * taps + t] (dense), or at
// weight[c * taps + t] for o == c only (depthwise).
struct input_channels {
  std::size_t out = 0, channels = 0, taps = 0;
  bool depthwise = false;
  std::size_t index(std::size_t o, std::size_t c, std::size_t t) const noexcept {
    return depthwise ? c * taps + t : (o * channels + c) * taps + t;
  }
};

template <class S>
input_channels input_channels_of(const S& shape, layer_kind kind, std::size_t spatial, const char* fn,
                                 const std::string& name) {
  check_weight_shape(shape, kind, fn, name);
  if (spatial == 0) fail<invalid_argument>(fn, "spatial", spatial, "must be >= 1");
  input_channels g;
  g.out = shape[0];
  switch (kind) {
    case layer_kind::linear:
      if (shape[1] % spatial != 0)
        fail<length_error>(fn, (name + ".shape").c_str(), shape_string(shape),
                           "its input features must be a multiple of spatial = " + std::to_string(spatial));
      g.channels = shape[1] / spatial;
      g.taps = spatial;
      break;
    case layer_kind::conv2d:
    case layer_kind::depthwise_conv2d:
      if (spatial != 1)
        fail<invalid_argument>(fn, "spatial", spatial,
                               std::string("must be 1 when ") + name + " is a " + to_string(kind) + " layer");
      g.depthwise = kind == layer_kind::depthwise_conv2d;
      g.channels = g.depthwise ? shape[0] : shape[1];
      g.taps = shape[2] * shape[3];
      break;
  }
  return g;
}

}  // namespace detail
}  // namespace quant
