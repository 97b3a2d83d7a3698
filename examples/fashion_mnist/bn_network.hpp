// examples/fashion_mnist/bn_network.hpp — the demo's third network: a MobileNet-style
// depthwise-separable CNN with batch norm (Howard et al. 2017; Ioffe & Szegedy 2015), with
// its training-mode forward and backward written from the formulas.
//
//   conv3x3 1->16 +BN+ReLU, depthwise3x3 16 +BN+ReLU, pointwise 16->32 +BN+ReLU, maxpool 2,
//   depthwise3x3 32 +BN+ReLU, pointwise 32->64 +BN+ReLU, maxpool 2, global average pool,
//   linear 64->10
//
// Activations are channels-last like network.hpp: a batch is [B, H*W*C], i.e. P = B*H*W
// pixel rows of C channels. Per layer kind, with x the input rows and z the output rows:
//   conv3x3      z = im2col(x) W^T        W [out, 9*in], columns ordered (ky, kx, c), pad 1
//   depthwise3x3 z[p, c] = sum_{ky,kx} W[c, 3ky+kx] x[p + (ky-1, kx-1), c]   (zero padding)
//   pointwise    z = x W^T                W [out, in]
//   dense        z = a W^T + b            a = x, or with global_pool a[b, c] = mean_s x[b, s, c]
// Convolutions before a BN have no bias (it would cancel against the batch mean).
// Batch norm per channel c over the P rows of the batch (training mode):
//   mu = mean z, var = mean (z - mu)^2 (biased), xhat = (z - mu) / sqrt(var + eps),
//   y = gamma xhat + beta; running_mean += m (mu - running_mean),
//   running_var += m (var * P/(P-1) - running_var), m = 0.1 (PyTorch's momentum convention);
// inference mode uses the running statistics instead of mu, var.
// Backward of the training-mode BN (the batch statistics depend on z):
//   dgamma = sum dy xhat, dbeta = sum dy,
//   dz = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy xhat)).
// Everything is templated on the scalar so the gradient test can run it in double.
// Per-channel sums (BN statistics, bias gradients) are accumulated in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <xtensor-blas/xblas.hpp>
#include <xtensor/xtensor.hpp>

#include "network.hpp"

namespace examples {

template <class T>
using tensor2 = xt::xtensor<T, 2>;
template <class T>
using tensor1 = xt::xtensor<T, 1>;

struct bn_layer_spec {
  enum class kind { conv3x3, depthwise3x3, pointwise, dense } type = kind::dense;
  std::size_t in_channels = 0, out_channels = 0;  // depthwise: equal
  std::size_t height = 1, width = 1;              // input spatial size (dense with global_pool: before pooling)
  bool batchnorm = false;
  bool relu = false;
  bool pool = false;         // 2x2 max-pool after the ReLU
  bool global_pool = false;  // dense only: average the input over its H*W positions first

  bool spatial() const { return type != kind::dense; }
  std::size_t weight_columns() const {
    switch (type) {
      case kind::conv3x3: return 9 * in_channels;
      case kind::depthwise3x3: return 9;
      default: return in_channels;
    }
  }
  std::size_t out_height() const { return spatial() ? (pool ? height / 2 : height) : 1; }
  std::size_t out_width() const { return spatial() ? (pool ? width / 2 : width) : 1; }
  std::size_t in_features() const { return height * width * in_channels; }
  std::size_t out_features() const { return out_height() * out_width() * out_channels; }
};

template <class T>
struct bn_layer {
  bn_layer_spec spec;
  tensor2<T> W;  // see the header comment; depthwise [C, 9]
  tensor1<T> b;  // [out]; zeros and not trained for a layer followed by BN
  tensor1<T> gamma, beta, running_mean, running_var;  // [out] when spec.batchnorm
};

template <class T>
struct basic_bn_network {
  std::string name;
  std::vector<bn_layer<T>> layers;
  double bn_eps = 1e-5;
  double bn_momentum = 0.1;
  std::size_t in_features() const { return layers.front().spec.in_features(); }
};
using bn_network = basic_bn_network<float>;

// The demo's network on 28x28x1 inputs.
inline std::vector<bn_layer_spec> bnnet_specs() {
  using K = bn_layer_spec::kind;
  return {{K::conv3x3, 1, 16, 28, 28, true, true, false, false},
          {K::depthwise3x3, 16, 16, 28, 28, true, true, false, false},
          {K::pointwise, 16, 32, 28, 28, true, true, true, false},
          {K::depthwise3x3, 32, 32, 14, 14, true, true, false, false},
          {K::pointwise, 32, 64, 14, 14, true, true, true, false},
          {K::dense, 64, 10, 7, 7, false, false, false, true}};
}

// Kaiming-uniform weights (bound sqrt(6 / fan_in), fan_in = 9*in, 9, in, in) from the seeded
// Mersenne twister as in make_network; zero biases; BN gamma 1, beta 0, running mean 0, var 1.
template <class T = float>
basic_bn_network<T> make_bn_network(const std::string& name, const std::vector<bn_layer_spec>& specs,
                                    std::uint64_t seed) {
  basic_bn_network<T> net;
  net.name = name;
  std::mt19937_64 rng(seed ^ 0xb47c4e0aULL);
  for (const auto& s : specs) {
    bn_layer<T> l;
    l.spec = s;
    const std::size_t k = s.weight_columns();
    l.W = tensor2<T>::from_shape({s.out_channels, k});
    const double bound = std::sqrt(6.0 / static_cast<double>(k));
    for (auto& w : l.W) {
      const double u = static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
      w = static_cast<T>((2.0 * u - 1.0) * bound);
    }
    l.b = xt::zeros<T>({s.out_channels});
    if (s.batchnorm) {
      l.gamma = xt::ones<T>({s.out_channels});
      l.beta = xt::zeros<T>({s.out_channels});
      l.running_mean = xt::zeros<T>({s.out_channels});
      l.running_var = xt::ones<T>({s.out_channels});
    }
    net.layers.push_back(std::move(l));
  }
  return net;
}

namespace bn_detail {

// Depthwise 3x3, padding 1, channels-last. wt is the weight transposed to [9, C].
template <class T>
void depthwise_forward(const T* x, std::size_t batch, std::size_t H, std::size_t W, std::size_t C, const T* wt, T* z) {
  std::fill(z, z + batch * H * W * C, T(0));
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t y = 0; y < H; ++y)
      for (std::size_t xx = 0; xx < W; ++xx) {
        T* out = z + ((b * H + y) * W + xx) * C;
        for (std::size_t ky = 0; ky < 3; ++ky) {
          const std::ptrdiff_t sy = static_cast<std::ptrdiff_t>(y + ky) - 1;
          if (sy < 0 || sy >= static_cast<std::ptrdiff_t>(H)) continue;
          for (std::size_t kx = 0; kx < 3; ++kx) {
            const std::ptrdiff_t sx = static_cast<std::ptrdiff_t>(xx + kx) - 1;
            if (sx < 0 || sx >= static_cast<std::ptrdiff_t>(W)) continue;
            const T* in = x + ((b * H + static_cast<std::size_t>(sy)) * W + static_cast<std::size_t>(sx)) * C;
            const T* w = wt + (ky * 3 + kx) * C;
#pragma omp simd
            for (std::size_t c = 0; c < C; ++c) out[c] += w[c] * in[c];
          }
        }
      }
}

// Gradients of depthwise_forward: dwt [9, C] (overwritten) and, if dx, dx [B, H*W*C].
template <class T>
void depthwise_backward(const T* x, const T* dz, std::size_t batch, std::size_t H, std::size_t W, std::size_t C,
                        const T* wt, T* dwt, T* dx) {
  std::vector<double> acc(9 * C, 0.0);
  std::vector<T> part(9 * C);
  if (dx) std::fill(dx, dx + batch * H * W * C, T(0));
  for (std::size_t b = 0; b < batch; ++b) {
    // Accumulate one image in T, then add it to the double total (keeps float sums short).
    std::fill(part.begin(), part.end(), T(0));
    for (std::size_t y = 0; y < H; ++y)
      for (std::size_t xx = 0; xx < W; ++xx) {
        const T* g = dz + ((b * H + y) * W + xx) * C;
        for (std::size_t ky = 0; ky < 3; ++ky) {
          const std::ptrdiff_t sy = static_cast<std::ptrdiff_t>(y + ky) - 1;
          if (sy < 0 || sy >= static_cast<std::ptrdiff_t>(H)) continue;
          for (std::size_t kx = 0; kx < 3; ++kx) {
            const std::ptrdiff_t sx = static_cast<std::ptrdiff_t>(xx + kx) - 1;
            if (sx < 0 || sx >= static_cast<std::ptrdiff_t>(W)) continue;
            const std::size_t off = ((b * H + static_cast<std::size_t>(sy)) * W + static_cast<std::size_t>(sx)) * C;
            const T* in = x + off;
            const std::size_t k = ky * 3 + kx;
            T* dw = part.data() + k * C;
#pragma omp simd
            for (std::size_t c = 0; c < C; ++c) dw[c] += g[c] * in[c];
            if (dx) {
              const T* w = wt + k * C;
              T* d = dx + off;
#pragma omp simd
              for (std::size_t c = 0; c < C; ++c) d[c] += w[c] * g[c];
            }
          }
        }
      }
    for (std::size_t i = 0; i < 9 * C; ++i) acc[i] += static_cast<double>(part[i]);
  }
  for (std::size_t i = 0; i < 9 * C; ++i) dwt[i] = static_cast<T>(acc[i]);
}

// 2x2 max-pool, channels-last; argmax records the winner's index into x (the first of
// equal maxima in the order (0,0), (0,1), (1,0), (1,1)).
template <class T>
void maxpool2(const T* x, std::size_t batch, std::size_t H, std::size_t W, std::size_t C, T* out,
              std::uint32_t* argmax) {
  const std::size_t h2 = H / 2, w2 = W / 2;
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t y = 0; y < h2; ++y)
      for (std::size_t xx = 0; xx < w2; ++xx) {
        const std::size_t i00 = ((b * H + 2 * y) * W + 2 * xx) * C, i01 = i00 + C, i10 = i00 + W * C, i11 = i10 + C;
        const std::size_t o = ((b * h2 + y) * w2 + xx) * C;
        const std::uint32_t j00 = static_cast<std::uint32_t>(i00), j01 = static_cast<std::uint32_t>(i01),
                            j10 = static_cast<std::uint32_t>(i10), j11 = static_cast<std::uint32_t>(i11);
        if (argmax) {
#pragma omp simd
          for (std::size_t c = 0; c < C; ++c) {
            T bv = x[i00 + c];
            std::uint32_t bi = j00 + static_cast<std::uint32_t>(c);
            if (x[i01 + c] > bv) bv = x[i01 + c], bi = j01 + static_cast<std::uint32_t>(c);
            if (x[i10 + c] > bv) bv = x[i10 + c], bi = j10 + static_cast<std::uint32_t>(c);
            if (x[i11 + c] > bv) bv = x[i11 + c], bi = j11 + static_cast<std::uint32_t>(c);
            out[o + c] = bv;
            argmax[o + c] = bi;
          }
        } else {
#pragma omp simd
          for (std::size_t c = 0; c < C; ++c) {
            T bv = x[i00 + c];
            if (x[i01 + c] > bv) bv = x[i01 + c];
            if (x[i10 + c] > bv) bv = x[i10 + c];
            if (x[i11 + c] > bv) bv = x[i11 + c];
            out[o + c] = bv;
          }
        }
      }
}

// z = x W^T (+ b) through BLAS.
template <class T>
tensor2<T> gemm_nt(const tensor2<T>& x, const tensor2<T>& W) {
  tensor2<T> z = tensor2<T>::from_shape({x.shape()[0], W.shape()[0]});
  xt::blas::gemm(x, W, z, false, true, T(1), T(0));
  return z;
}

}  // namespace bn_detail

template <class T>
struct bn_layer_cache {
  tensor2<T> input;  // what dW needs: im2col rows (conv3x3), the input rows (others), pooled input (dense)
  tensor2<T> xhat;   // BN: normalized pre-activation [P, out]
  std::vector<T> inv_std;
  tensor2<T> y;      // after ReLU, before the max-pool [P, out]
  std::vector<std::uint32_t> argmax;
  std::vector<double> batch_mean, batch_var;  // BN in training mode: the batch statistics (biased var)
  std::size_t batch_rows = 0;                 // P, the rows they were taken over
};

// Logits [B, classes]. training = true: BN normalizes with the batch statistics (and `cache`
// keeps them for update_running_statistics); false: with the running averages. With `cache`
// it keeps what bn_backward needs.
template <class T>
tensor2<T> bn_forward(const basic_bn_network<T>& net, tensor2<T> act, bool training,
                      std::vector<bn_layer_cache<T>>* cache = nullptr) {
  const std::size_t B = act.shape()[0];
  if (cache) cache->assign(net.layers.size(), {});
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const bn_layer<T>& L = net.layers[l];
    const bn_layer_spec& s = L.spec;
    const std::size_t HW = s.height * s.width;
    const std::size_t P = s.spatial() ? B * HW : B, O = s.out_channels;
    tensor2<T> z;
    tensor2<T> saved_input;
    switch (s.type) {
      case bn_layer_spec::kind::conv3x3: {
        tensor2<T> cols = tensor2<T>::from_shape({P, 9 * s.in_channels});
        im2col3x3(act.data(), B, s.height, s.width, s.in_channels, cols.data());
        z = bn_detail::gemm_nt(cols, L.W);
        saved_input = std::move(cols);
        break;
      }
      case bn_layer_spec::kind::depthwise3x3: {
        const tensor2<T> wt = xt::transpose(L.W);
        z = tensor2<T>::from_shape({P, O});
        bn_detail::depthwise_forward(act.data(), B, s.height, s.width, O, wt.data(), z.data());
        saved_input = std::move(act);
        break;
      }
      case bn_layer_spec::kind::pointwise: {
        act.reshape({P, s.in_channels});
        z = bn_detail::gemm_nt(act, L.W);
        saved_input = std::move(act);
        break;
      }
      case bn_layer_spec::kind::dense: {
        if (s.global_pool) {
          tensor2<T> a = tensor2<T>::from_shape({B, s.in_channels});
          const std::size_t C = s.in_channels;
          for (std::size_t b = 0; b < B; ++b) {
            std::vector<double> sum(C, 0.0);
            for (std::size_t p = 0; p < HW; ++p)
              for (std::size_t c = 0; c < C; ++c) sum[c] += static_cast<double>(act.data()[(b * HW + p) * C + c]);
            for (std::size_t c = 0; c < C; ++c) a(b, c) = static_cast<T>(sum[c] / static_cast<double>(HW));
          }
          act = std::move(a);
        }
        act.reshape({B, s.in_channels});
        z = bn_detail::gemm_nt(act, L.W);
        saved_input = std::move(act);
        break;
      }
    }
    T* zp = z.data();
    if (s.batchnorm) {
      std::vector<double> mean(O, 0.0), var(O, 0.0);
      if (training) {
        // One pass of sums and sums of squares in double: var = E[z^2] - E[z]^2 loses
        // ~log2(E[z^2] / var) of double's 53 bits, far below float's 24 for any sane layer.
        double* m = mean.data();
        double* v = var.data();
        for (std::size_t p = 0; p < P; ++p) {
          const T* row = zp + p * O;
#pragma omp simd
          for (std::size_t c = 0; c < O; ++c) {
            const double zc = static_cast<double>(row[c]);
            m[c] += zc;
            v[c] += zc * zc;
          }
        }
        for (std::size_t c = 0; c < O; ++c) {
          m[c] /= static_cast<double>(P);
          v[c] = std::max(0.0, v[c] / static_cast<double>(P) - m[c] * m[c]);
        }
        if (cache) {
          (*cache)[l].batch_mean = mean;
          (*cache)[l].batch_var = var;
          (*cache)[l].batch_rows = P;
        }
      } else {
        for (std::size_t c = 0; c < O; ++c) mean[c] = L.running_mean[c], var[c] = L.running_var[c];
      }
      std::vector<T> inv_std(O), shift(O);
      for (std::size_t c = 0; c < O; ++c) {
        inv_std[c] = static_cast<T>(1.0 / std::sqrt(var[c] + net.bn_eps));
        shift[c] = static_cast<T>(mean[c]);
      }
      // xhat = (z - mu) inv_std (kept for backward), y = gamma xhat + beta, ReLU; in one pass.
      T* xh = nullptr;
      if (cache) {
        (*cache)[l].xhat = tensor2<T>::from_shape({P, O});
        (*cache)[l].inv_std = inv_std;
        xh = (*cache)[l].xhat.data();
      }
      const T *sh = shift.data(), *is = inv_std.data(), *ga = L.gamma.data(), *be = L.beta.data();
      const T floor = s.relu ? T(0) : -std::numeric_limits<T>::infinity();
      for (std::size_t p = 0; p < P; ++p) {
        T* row = zp + p * O;
        if (xh) {
          T* xr = xh + p * O;
#pragma omp simd
          for (std::size_t c = 0; c < O; ++c) {
            const T n = (row[c] - sh[c]) * is[c];
            xr[c] = n;
            const T y = ga[c] * n + be[c];
            row[c] = y > floor ? y : floor;
          }
        } else {
#pragma omp simd
          for (std::size_t c = 0; c < O; ++c) {
            const T y = ga[c] * ((row[c] - sh[c]) * is[c]) + be[c];
            row[c] = y > floor ? y : floor;
          }
        }
      }
    } else {
      const T* bp = L.b.data();
      for (std::size_t p = 0; p < P; ++p) {
        T* row = zp + p * O;
#pragma omp simd
        for (std::size_t c = 0; c < O; ++c) row[c] += bp[c];
      }
      if (s.relu) {
        const std::size_t n = z.size();
#pragma omp simd
        for (std::size_t i = 0; i < n; ++i) zp[i] = zp[i] > T(0) ? zp[i] : T(0);
      }
    }
    tensor2<T> out;
    if (s.pool) {
      out = tensor2<T>::from_shape({B, s.out_features()});
      std::vector<std::uint32_t>* am = cache ? &(*cache)[l].argmax : nullptr;
      if (am) am->resize(out.size());
      bn_detail::maxpool2(zp, B, s.height, s.width, O, out.data(), am ? am->data() : nullptr);
    } else {
      if (cache)
        out = z;
      else
        out = std::move(z);
      out.reshape({B, s.out_features()});
    }
    if (cache) {
      (*cache)[l].input = std::move(saved_input);
      (*cache)[l].y = std::move(z);
    }
    act = std::move(out);
  }
  return act;
}

// PyTorch's running averages after a training-mode forward with `cache`:
// running += momentum * (batch - running), the variance unbiased (P / (P - 1)).
template <class T>
void update_running_statistics(basic_bn_network<T>& net, const std::vector<bn_layer_cache<T>>& cache) {
  const double m = net.bn_momentum;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    bn_layer<T>& L = net.layers[l];
    const bn_layer_cache<T>& c = cache[l];
    if (!L.spec.batchnorm || c.batch_mean.empty()) continue;
    const double P = static_cast<double>(c.batch_rows);
    for (std::size_t ch = 0; ch < L.spec.out_channels; ++ch) {
      const double unbiased = c.batch_rows > 1 ? c.batch_var[ch] * P / (P - 1.0) : c.batch_var[ch];
      L.running_mean[ch] = static_cast<T>((1.0 - m) * static_cast<double>(L.running_mean[ch]) + m * c.batch_mean[ch]);
      L.running_var[ch] = static_cast<T>((1.0 - m) * static_cast<double>(L.running_var[ch]) + m * unbiased);
    }
  }
}

template <class T>
struct bn_gradients {
  std::vector<tensor2<T>> dW;
  std::vector<tensor1<T>> db, dgamma, dbeta;  // db only for layers without BN
  tensor2<T> dinput;                          // d loss / d network input [B, in_features]
};

// Backward of a training-mode bn_forward from d logits. With want_input, also d input.
template <class T>
bn_gradients<T> bn_backward(const basic_bn_network<T>& net, const std::vector<bn_layer_cache<T>>& cache,
                            tensor2<T> dout, bool want_input = false) {
  const std::size_t n = net.layers.size();
  const std::size_t B = dout.shape()[0];
  bn_gradients<T> g;
  g.dW.resize(n);
  g.db.resize(n);
  g.dgamma.resize(n);
  g.dbeta.resize(n);
  for (std::size_t li = n; li-- > 0;) {
    const bn_layer<T>& L = net.layers[li];
    const bn_layer_spec& s = L.spec;
    const bn_layer_cache<T>& c = cache[li];
    const std::size_t P = c.y.shape()[0], O = s.out_channels;
    tensor2<T> dz;
    if (s.pool) {
      dz = xt::zeros<T>({P, O});
      for (std::size_t i = 0; i < c.argmax.size(); ++i) dz.data()[c.argmax[i]] += dout.data()[i];
    } else {
      dz = std::move(dout);
      dz.reshape({P, O});
    }
    T* d = dz.data();
    const T* y = c.y.data();
    const T relu_floor = s.relu ? T(0) : -std::numeric_limits<T>::infinity();  // dz = 0 where y <= floor
    if (s.batchnorm) {
      // ReLU mask and the two per-channel sums in one pass.
      const T* xh = c.xhat.data();
      std::vector<double> sum_dy(O, 0.0), sum_dy_xhat(O, 0.0);
      double *sd = sum_dy.data(), *sdx = sum_dy_xhat.data();
      for (std::size_t p = 0; p < P; ++p) {
        T* dr = d + p * O;
        const T* xr = xh + p * O;
        const T* yr = y + p * O;
#pragma omp simd
        for (std::size_t ch = 0; ch < O; ++ch) {
          const T dm = yr[ch] > relu_floor ? dr[ch] : T(0);
          dr[ch] = dm;
          sd[ch] += static_cast<double>(dm);
          sdx[ch] += static_cast<double>(dm) * static_cast<double>(xr[ch]);
        }
      }
      g.dgamma[li] = tensor1<T>::from_shape({O});
      g.dbeta[li] = tensor1<T>::from_shape({O});
      std::vector<T> k(O), mean_dy(O), mean_dyx(O);
      for (std::size_t ch = 0; ch < O; ++ch) {
        g.dgamma[li][ch] = static_cast<T>(sum_dy_xhat[ch]);
        g.dbeta[li][ch] = static_cast<T>(sum_dy[ch]);
        k[ch] = L.gamma[ch] * c.inv_std[ch];
        mean_dy[ch] = static_cast<T>(sum_dy[ch] / static_cast<double>(P));
        mean_dyx[ch] = static_cast<T>(sum_dy_xhat[ch] / static_cast<double>(P));
      }
      const T *kp = k.data(), *mdy = mean_dy.data(), *mdx = mean_dyx.data();
      for (std::size_t p = 0; p < P; ++p) {
        T* dr = d + p * O;
        const T* xr = xh + p * O;
#pragma omp simd
        for (std::size_t ch = 0; ch < O; ++ch) dr[ch] = kp[ch] * (dr[ch] - mdy[ch] - xr[ch] * mdx[ch]);
      }
    } else {
      if (s.relu) {
        const std::size_t n_el = dz.size();
#pragma omp simd
        for (std::size_t i = 0; i < n_el; ++i) d[i] = y[i] > T(0) ? d[i] : T(0);
      }
      std::vector<double> sum(O, 0.0);
      double* sp = sum.data();
      for (std::size_t p = 0; p < P; ++p) {
        const T* dr = d + p * O;
#pragma omp simd
        for (std::size_t ch = 0; ch < O; ++ch) sp[ch] += static_cast<double>(dr[ch]);
      }
      g.db[li] = tensor1<T>::from_shape({O});
      for (std::size_t ch = 0; ch < O; ++ch) g.db[li][ch] = static_cast<T>(sum[ch]);
    }
    const bool need_dx = li > 0 || want_input;
    tensor2<T> dx;
    switch (s.type) {
      case bn_layer_spec::kind::depthwise3x3: {
        const tensor2<T> wt = xt::transpose(L.W);
        tensor2<T> dwt = tensor2<T>::from_shape({9, O});
        if (need_dx) dx = tensor2<T>::from_shape({B, s.in_features()});
        bn_detail::depthwise_backward(c.input.data(), d, B, s.height, s.width, O, wt.data(), dwt.data(),
                                      need_dx ? dx.data() : nullptr);
        g.dW[li] = xt::transpose(dwt);
        break;
      }
      default: {
        // z = X W^T: dW = dz^T X, dX = dz W.
        g.dW[li] = tensor2<T>::from_shape(L.W.shape());
        xt::blas::gemm(dz, c.input, g.dW[li], true, false, T(1), T(0));
        if (!need_dx) break;
        tensor2<T> dX = tensor2<T>::from_shape({P, L.W.shape()[1]});
        xt::blas::gemm(dz, L.W, dX, false, false, T(1), T(0));
        if (s.type == bn_layer_spec::kind::conv3x3) {
          dx = tensor2<T>::from_shape({B, s.in_features()});
          col2im3x3(dX.data(), B, s.height, s.width, s.in_channels, dx.data());
        } else if (s.type == bn_layer_spec::kind::dense && s.global_pool) {
          const std::size_t HW = s.height * s.width, C = s.in_channels;
          dx = tensor2<T>::from_shape({B, s.in_features()});
          const T inv = T(1) / static_cast<T>(HW);
          for (std::size_t b = 0; b < B; ++b)
            for (std::size_t p = 0; p < HW; ++p)
              for (std::size_t ch = 0; ch < C; ++ch) dx.data()[(b * HW + p) * C + ch] = dX(b, ch) * inv;
        } else {
          dx = std::move(dX);
          dx.reshape({B, s.in_features()});
        }
      }
    }
    if (need_dx) dout = std::move(dx);
  }
  if (want_input) g.dinput = std::move(dout);
  return g;
}

}  // namespace examples
