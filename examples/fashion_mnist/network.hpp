// examples/fashion_mnist/network.hpp — the two small networks of the demo, written as a
// chain of GEMM layers so every quantization method sees the same thing: a weight matrix
// W [out, K] and an input matrix X [N, K] with z = X W^T + b.
//
//   dense  : X = the activations [batch, in]
//   conv3x3: X = im2col of the activations (channels-last, padding 1): one row per output
//            pixel, K = 9 * in_channels ordered (ky, kx, c). The weight is therefore the
//            [out, in*kh*kw] matrix AdaRound and BRECQ expect. The rows come from the
//            library's im2col kernel (quant/im2col.hpp) on the channels-last layout.
// Each layer is followed by an optional ReLU and an optional 2x2 max-pool. GEMMs go
// through xtensor-blas (xt::blas::gemm -> OpenBLAS); everything else is a plain loop.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <quant/im2col.hpp>
#include <xtensor-blas/xblas.hpp>
#include <xtensor/xtensor.hpp>

#include "../common/single_threaded_blas.hpp"

namespace examples {

using matrix = xt::xtensor<float, 2>;
using vector = xt::xtensor<float, 1>;

struct layer_spec {
  enum class kind { dense, conv3x3 } type = kind::dense;
  std::size_t in_channels = 0, out_channels = 0;  // dense: in/out features
  std::size_t height = 1, width = 1;              // conv: input spatial size
  bool relu = true;
  bool pool = false;

  std::size_t k() const { return type == kind::dense ? in_channels : 9 * in_channels; }
  std::size_t in_features() const { return height * width * in_channels; }
  std::size_t rows_per_sample() const { return type == kind::dense ? 1 : height * width; }
  std::size_t out_features() const {
    const std::size_t hw = type == kind::dense ? 1 : (pool ? (height / 2) * (width / 2) : height * width);
    return hw * out_channels;
  }
};

struct layer {
  layer_spec spec;
  matrix W;  // [out, K]
  vector b;  // [out]
};

struct network {
  std::string name;
  std::vector<layer> layers;
  std::size_t in_features() const { return layers.front().spec.in_features(); }
};

// MLP 784-256-256-10 with ReLU.
inline std::vector<layer_spec> mlp_specs() {
  using K = layer_spec::kind;
  return {{K::dense, 784, 256, 1, 1, true, false}, {K::dense, 256, 256, 1, 1, true, false},
          {K::dense, 256, 10, 1, 1, false, false}};
}

// conv 1->16 3x3 pad 1, ReLU, maxpool 2, conv 16->32 3x3 pad 1, ReLU, maxpool 2, fc 1568->10.
inline std::vector<layer_spec> cnn_specs() {
  using K = layer_spec::kind;
  return {{K::conv3x3, 1, 16, 28, 28, true, true}, {K::conv3x3, 16, 32, 14, 14, true, true},
          {K::dense, 1568, 10, 1, 1, false, false}};
}

// Kaiming-uniform weights (bound sqrt(6 / K)), zero biases, from a seeded 64-bit Mersenne
// twister. The uniform is built from the raw 64-bit draw so the weights are the same with
// any standard library.
inline network make_network(const std::string& name, const std::vector<layer_spec>& specs, std::uint64_t seed) {
  network net{name, {}};
  std::mt19937_64 rng(seed);
  for (const auto& s : specs) {
    layer l{s, matrix::from_shape({s.out_channels, s.k()}), vector::from_shape({s.out_channels})};
    const double bound = std::sqrt(6.0 / static_cast<double>(s.k()));
    for (auto& w : l.W) {
      const double u = static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
      w = static_cast<float>((2.0 * u - 1.0) * bound);
    }
    l.b.fill(0.0f);
    net.layers.push_back(std::move(l));
  }
  return net;
}

// ---- the pieces of a layer ------------------------------------------------------------

// Channels-last 3x3 im2col with padding 1 through the library's NCHW im2col (quant/im2col.hpp):
// an image [H, W, C] read as one channel of H rows of W*C values, with a 3 x 3C window moving
// C values at a time and C values of padding on each side, has for output (y, x) the patch
// row[(ky * 3 + kx) * C + c] = act[y + ky - 1, x + kx - 1, c] (0 outside the image): the
// channels-last patch with columns ordered (ky, kx, c).
inline quant::conv2d_shape channels_last_3x3(std::size_t H, std::size_t W, std::size_t C) {
  quant::conv2d_shape g;
  g.channels = 1;
  g.height = H;
  g.width = W * C;
  g.kernel_h = 3;
  g.kernel_w = 3 * C;
  g.stride_w = C;
  g.pad_h = 1;
  g.pad_w = C;
  return g;
}

// act [B, H*W*C] -> cols [B*H*W, 9*C].
template <class T>
void im2col3x3(const T* act, std::size_t batch, std::size_t H, std::size_t W, std::size_t C, T* cols) {
  const quant::conv2d_shape g = channels_last_3x3(H, W, C);
  for (std::size_t b = 0; b < batch; ++b)
    quant::kernels::im2col(act + b * g.image_size(), cols + b * g.positions() * g.patch_size(), g);
}

// Adjoint of im2col3x3: scatter-add dcols [B*H*W, 9*C] into dact [B, H*W*C].
template <class T>
void col2im3x3(const T* dcols, std::size_t batch, std::size_t H, std::size_t W, std::size_t C, T* dact) {
  const quant::conv2d_shape g = channels_last_3x3(H, W, C);
  for (std::size_t b = 0; b < batch; ++b)
    quant::kernels::col2im(dcols + b * g.positions() * g.patch_size(), dact + b * g.image_size(), g);
}

// The GEMM input of a layer for a batch of activations [B, in_features].
inline matrix gemm_input(const layer_spec& s, matrix act) {
  if (s.type == layer_spec::kind::dense) return act;
  const std::size_t B = act.shape()[0];
  matrix cols = matrix::from_shape({B * s.height * s.width, s.k()});
  im2col3x3(act.data(), B, s.height, s.width, s.in_channels, cols.data());
  return cols;
}

// z = X W^T + b
inline matrix affine(const matrix& X, const matrix& W, const vector& b) {
  matrix z = matrix::from_shape({X.shape()[0], W.shape()[0]});
  xt::blas::gemm(X, W, z, false, true, 1.0f, 0.0f);
  const std::size_t n = z.shape()[0], o = z.shape()[1];
  float* zp = z.data();
  const float* bp = b.data();
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < o; ++j) zp[i * o + j] += bp[j];
  return z;
}

inline void relu_inplace(matrix& z) {
  float* p = z.data();
  for (std::size_t i = 0, n = z.size(); i < n; ++i) p[i] = p[i] > 0.0f ? p[i] : 0.0f;
}

// ReLU and 2x2 max-pool after the GEMM; `argmax` (may be null) records the winners.
inline matrix post_gemm(const layer_spec& s, matrix z, std::size_t batch, std::vector<std::uint32_t>* argmax) {
  if (s.relu) relu_inplace(z);
  if (!s.pool) {
    z.reshape({batch, s.out_features()});
    return z;
  }
  const std::size_t H = s.height, W = s.width, C = s.out_channels, h2 = H / 2, w2 = W / 2;
  matrix out = matrix::from_shape({batch, h2 * w2 * C});
  if (argmax) argmax->resize(out.size());
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t y = 0; y < h2; ++y)
      for (std::size_t x = 0; x < w2; ++x)
        for (std::size_t c = 0; c < C; ++c) {
          std::size_t best = ((b * H + 2 * y) * W + 2 * x) * C + c;
          float bv = z.data()[best];
          for (std::size_t dy = 0; dy < 2; ++dy)
            for (std::size_t dx = 0; dx < 2; ++dx) {
              const std::size_t idx = ((b * H + 2 * y + dy) * W + 2 * x + dx) * C + c;
              if (z.data()[idx] > bv) bv = z.data()[idx], best = idx;
            }
          const std::size_t o = ((b * h2 + y) * w2 + x) * C + c;
          out.data()[o] = bv;
          if (argmax) (*argmax)[o] = static_cast<std::uint32_t>(best);
        }
  return out;
}

// ---- whole-network forward / backward ---------------------------------------------------

// Hooks that let the quantization methods change a forward pass: the weights each layer
// uses (null = the layer's own) and a transform of each layer's input activations.
struct forward_hooks {
  std::vector<const matrix*> weights;
  std::function<void(std::size_t layer, matrix& act)> input;
};

struct layer_cache {
  matrix X;       // GEMM input [N, K]
  matrix z;       // after ReLU, before pooling [N, out]
  std::vector<std::uint32_t> argmax;
};

inline const matrix& weights_of(const network& net, const forward_hooks* h, std::size_t l) {
  return (h && l < h->weights.size() && h->weights[l]) ? *h->weights[l] : net.layers[l].W;
}

// Logits [B, classes]. With `cache`, keeps what backward needs.
inline matrix forward(const network& net, matrix act, const forward_hooks* hooks = nullptr,
                      std::vector<layer_cache>* cache = nullptr) {
  const std::size_t B = act.shape()[0];
  if (cache) cache->resize(net.layers.size());
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const layer& L = net.layers[l];
    if (hooks && hooks->input) hooks->input(l, act);
    matrix X = gemm_input(L.spec, std::move(act));
    matrix z = affine(X, weights_of(net, hooks, l), L.b);
    if (cache) {
      auto& c = (*cache)[l];
      if (L.spec.relu) relu_inplace(z);
      c.X = std::move(X);
      c.z = z;
      layer_spec s = L.spec;
      s.relu = false;  // already applied
      act = post_gemm(s, std::move(z), B, &c.argmax);
    } else {
      act = post_gemm(L.spec, std::move(z), B, nullptr);
    }
  }
  return act;
}

struct gradients {
  std::vector<matrix> dW;
  std::vector<vector> db;
};

// Backward from d logits. `hooks` must be the ones the forward used (for the weights).
// `input_grad_hook(l, dact)` lets a quantizer on layer l's input turn d(x_hat) into dx.
inline gradients backward(const network& net, const std::vector<layer_cache>& cache, matrix dout,
                          const forward_hooks* hooks = nullptr,
                          const std::function<void(std::size_t, matrix&)>& input_grad_hook = {}) {
  const std::size_t n_layers = net.layers.size();
  gradients g;
  g.dW.resize(n_layers);
  g.db.resize(n_layers);
  const std::size_t B = dout.shape()[0];
  for (std::size_t li = n_layers; li-- > 0;) {
    const layer& L = net.layers[li];
    const layer_cache& c = cache[li];
    const std::size_t N = c.z.shape()[0], O = c.z.shape()[1];
    matrix dz;
    if (L.spec.pool) {
      dz = xt::zeros<float>({N, O});
      for (std::size_t i = 0; i < c.argmax.size(); ++i) dz.data()[c.argmax[i]] += dout.data()[i];
    } else {
      dz = std::move(dout);
      dz.reshape({N, O});
    }
    if (L.spec.relu)
      for (std::size_t i = 0; i < dz.size(); ++i)
        if (!(c.z.data()[i] > 0.0f)) dz.data()[i] = 0.0f;
    g.dW[li] = matrix::from_shape({O, L.spec.k()});
    xt::blas::gemm(dz, c.X, g.dW[li], true, false, 1.0f, 0.0f);
    g.db[li] = xt::zeros<float>({O});
    float* db = g.db[li].data();
    for (std::size_t i = 0; i < N; ++i)
      for (std::size_t j = 0; j < O; ++j) db[j] += dz.data()[i * O + j];
    if (li == 0 && !input_grad_hook) break;
    matrix dX = matrix::from_shape({N, L.spec.k()});
    xt::blas::gemm(dz, weights_of(net, hooks, li), dX, false, false, 1.0f, 0.0f);
    if (L.spec.type == layer_spec::kind::conv3x3) {
      matrix dact = matrix::from_shape({B, L.spec.in_features()});
      col2im3x3(dX.data(), B, L.spec.height, L.spec.width, L.spec.in_channels, dact.data());
      dout = std::move(dact);
    } else {
      dout = std::move(dX);
    }
    if (input_grad_hook) input_grad_hook(li, dout);
  }
  return g;
}

// Mean softmax cross-entropy over the batch; writes d loss / d logits into dlogits.
inline double softmax_cross_entropy(const matrix& logits, const std::uint8_t* labels, matrix& dlogits) {
  const std::size_t B = logits.shape()[0], C = logits.shape()[1];
  dlogits = matrix::from_shape({B, C});
  double loss = 0.0;
  for (std::size_t i = 0; i < B; ++i) {
    float m = -std::numeric_limits<float>::infinity();
    for (std::size_t j = 0; j < C; ++j) m = std::max(m, logits(i, j));
    double sum = 0.0;
    for (std::size_t j = 0; j < C; ++j) sum += std::exp(static_cast<double>(logits(i, j) - m));
    const double log_sum = std::log(sum);
    loss += log_sum - static_cast<double>(logits(i, labels[i]) - m);
    for (std::size_t j = 0; j < C; ++j) {
      const double p = std::exp(static_cast<double>(logits(i, j) - m) - log_sum);
      dlogits(i, j) = static_cast<float>((p - (j == labels[i] ? 1.0 : 0.0)) / static_cast<double>(B));
    }
  }
  return loss / static_cast<double>(B);
}

}  // namespace examples
