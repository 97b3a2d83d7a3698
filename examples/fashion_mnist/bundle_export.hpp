// examples/fashion_mnist/bundle_export.hpp — the demo's trained networks as model bundles
// (../common/model_bundle.hpp: PyTorch layouts, NCHW activations, C-order flatten), so that
// `quant eval` / `quant ptq` run on exactly what the demo trained.
//
// The demo computes channels-last (network.hpp, bn_network.hpp), so the weights are permuted:
//   conv3x3   [out, 9*in] columns (ky, kx, c)  ->  [out, in, 3, 3]:  W'[o, c, ky, kx] = W[o, (3ky+kx) in + c]
//   depthwise [C, 9]                          ->  [C, 1, 3, 3]
//   pointwise [out, in]                       ->  [out, in, 1, 1]
//   dense after a flatten of an [H, W, C] map ->  columns from HWC to CHW order:
//                                                 W'[o, c*H*W + s] = W[o, s*C + c]
// Every bundle takes a [1, 28, 28] image (the MLP starts with a flatten, which for one
// channel is the demo's own pixel order).
#pragma once

#include <string>
#include <vector>

#include "../common/model_bundle.hpp"
#include "bn_network.hpp"
#include "network.hpp"

namespace examples {

namespace export_detail {

inline xt::xarray<float> conv3x3_weight(const matrix& W, std::size_t in) {
  const std::size_t out = W.shape()[0];
  xt::xarray<float> w = xt::xarray<float>::from_shape({out, in, 3, 3});
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t c = 0; c < in; ++c)
      for (std::size_t k = 0; k < 9; ++k) w(o, c, k / 3, k % 3) = W(o, k * in + c);
  return w;
}

// A dense layer whose input is an [H, W, C] map flattened channels-last: columns to C order.
inline xt::xarray<float> dense_weight_chw(const matrix& W, std::size_t hw, std::size_t C) {
  const std::size_t out = W.shape()[0];
  xt::xarray<float> w = xt::xarray<float>::from_shape({out, C * hw});
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t s = 0; s < hw; ++s)
      for (std::size_t c = 0; c < C; ++c) w(o, c * hw + s) = W(o, s * C + c);
  return w;
}

inline model_layer simple(layer_type t, const std::string& name) {
  model_layer l;
  l.type = t;
  l.name = name;
  return l;
}

inline model_layer maxpool2(const std::string& name) {
  model_layer l = simple(layer_type::maxpool2d, name);
  l.kernel_h = l.kernel_w = l.stride_h = l.stride_w = 2;
  return l;
}

inline model_layer conv(const std::string& name, xt::xarray<float> w, std::optional<xt::xtensor<float, 1>> bias,
                        std::size_t pad, std::size_t groups) {
  model_layer l = simple(layer_type::conv2d, name);
  l.weight = std::move(w);
  l.bias = std::move(bias);
  l.pad_h = l.pad_w = pad;
  l.groups = groups;
  return l;
}

}  // namespace export_detail

// The MLP or the CNN of network.hpp.
inline model to_bundle(const network& net) {
  using namespace export_detail;
  model m;
  m.input_shape = {1, 28, 28};
  bool flat = false;
  std::size_t H = 28, W = 28, C = 1;  // the current map, channels-last in the demo
  for (std::size_t i = 0; i < net.layers.size(); ++i) {
    const layer& L = net.layers[i];
    const std::string n = std::to_string(i + 1);
    if (L.spec.type == layer_spec::kind::conv3x3) {
      m.layers.push_back(conv("conv" + n, conv3x3_weight(L.W, L.spec.in_channels), L.b, 1, 1));
      C = L.spec.out_channels;
    } else {
      xt::xarray<float> w = L.W;
      if (!flat) {
        m.layers.push_back(simple(layer_type::flatten, "flatten"));
        if (C > 1) w = dense_weight_chw(L.W, H * W, C);
        flat = true;
      }
      model_layer fc = simple(layer_type::linear, "fc" + n);
      fc.weight = std::move(w);
      fc.bias = L.b;
      m.layers.push_back(std::move(fc));
    }
    if (L.spec.relu) m.layers.push_back(simple(layer_type::relu, "relu" + n));
    if (L.spec.pool) {
      m.layers.push_back(maxpool2("pool" + n));
      H /= 2, W /= 2;
    }
  }
  validate_model(m, net.name);
  return m;
}

// The batch-norm network of bn_network.hpp (BN in inference mode: running statistics).
inline model to_bundle(const bn_network& net) {
  using namespace export_detail;
  using K = bn_layer_spec::kind;
  model m;
  m.input_shape = {1, 28, 28};
  for (std::size_t i = 0; i < net.layers.size(); ++i) {
    const bn_layer<float>& L = net.layers[i];
    const bn_layer_spec& s = L.spec;
    const std::string n = std::to_string(i + 1);
    const std::optional<xt::xtensor<float, 1>> bias =
        s.batchnorm ? std::nullopt : std::optional<xt::xtensor<float, 1>>(L.b);
    switch (s.type) {
      case K::conv3x3: m.layers.push_back(conv("conv" + n, conv3x3_weight(L.W, s.in_channels), bias, 1, 1)); break;
      case K::depthwise3x3: {
        xt::xarray<float> w = L.W;
        w.reshape({s.out_channels, 1, 3, 3});
        m.layers.push_back(conv("dwconv" + n, std::move(w), bias, 1, s.out_channels));
        break;
      }
      case K::pointwise: {
        xt::xarray<float> w = L.W;
        w.reshape({s.out_channels, s.in_channels, 1, 1});
        m.layers.push_back(conv("pwconv" + n, std::move(w), bias, 0, 1));
        break;
      }
      case K::dense: {
        if (s.global_pool) m.layers.push_back(simple(layer_type::global_avgpool, "gap"));
        m.layers.push_back(simple(layer_type::flatten, "flatten"));
        model_layer fc = simple(layer_type::linear, "fc" + n);
        fc.weight = L.W;
        fc.bias = L.b;
        m.layers.push_back(std::move(fc));
        break;
      }
    }
    if (s.batchnorm) {
      model_layer bn = simple(layer_type::batchnorm2d, "bn" + n);
      bn.weight = L.gamma;
      bn.bias = L.beta;
      bn.running_mean = L.running_mean;
      bn.running_var = L.running_var;
      bn.eps = net.bn_eps;
      m.layers.push_back(std::move(bn));
    }
    if (s.relu) m.layers.push_back(simple(layer_type::relu, "relu" + n));
    if (s.pool) m.layers.push_back(maxpool2("pool" + n));
  }
  validate_model(m, net.name);
  return m;
}

}  // namespace examples
