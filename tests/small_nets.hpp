// Tiny float64 forward passes for the transform tests (direct loops, no im2col, no BLAS):
// the independent side of "the float function is unchanged".
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xtensor.hpp>

namespace quant_test {

// A [C, H, W] activation in double.
struct map3 {
  std::size_t C = 0, H = 0, W = 0;
  std::vector<double> v;
  map3() = default;
  map3(std::size_t c, std::size_t h, std::size_t w) : C(c), H(h), W(w), v(c * h * w, 0.0) {}
  double& at(std::size_t c, std::size_t y, std::size_t x) { return v[(c * H + y) * W + x]; }
  double at(std::size_t c, std::size_t y, std::size_t x) const { return v[(c * H + y) * W + x]; }
};

inline map3 random_map(std::size_t c, std::size_t h, std::size_t w, std::uint32_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  map3 m(c, h, w);
  for (auto& x : m.v) x = d(g);
  return m;
}

inline std::vector<double> random_vector(std::size_t n, std::uint32_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// A float tensor of the given shape with seeded N(0, 1) values; row r of axis 0 scaled by
// row_scale[r] when given (to make per-channel ranges differ by orders of magnitude).
inline xt::xarray<float> random_weight(std::vector<std::size_t> shape, std::uint32_t seed,
                                       const std::vector<double>& row_scale = {}) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  xt::xarray<float> w = xt::xarray<float>::from_shape(shape);
  const std::size_t per = w.size() / shape[0];
  for (std::size_t i = 0; i < w.size(); ++i)
    w.data()[i] = static_cast<float>(d(g) * (row_scale.empty() ? 1.0 : row_scale[i / per]));
  return w;
}

// 10^u, u uniform in [-decades, decades]: per-channel scales spanning 2*decades decades.
inline std::vector<double> log_uniform_scales(std::size_t n, std::uint32_t seed, double decades = 2.0) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> d(-decades, decades);
  std::vector<double> s(n);
  for (auto& x : s) x = std::pow(10.0, d(g));
  return s;
}

inline xt::xtensor<float, 1> random_bias(std::size_t n, std::uint32_t seed, double sd = 1.0) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d(0.0, sd);
  xt::xtensor<float, 1> b = xt::xtensor<float, 1>::from_shape({n});
  for (auto& x : b) x = static_cast<float>(d(g));
  return b;
}

// y = W x + b, W [out, in].
inline std::vector<double> linear(const xt::xarray<float>& w, const xt::xtensor<float, 1>& b, const std::vector<double>& x) {
  const std::size_t out = w.shape()[0], in = w.shape()[1];
  std::vector<double> y(out);
  for (std::size_t o = 0; o < out; ++o) {
    double s = b[o];
    for (std::size_t k = 0; k < in; ++k) s += static_cast<double>(w(o, k)) * x[k];
    y[o] = s;
  }
  return y;
}

// PyTorch Conv2d: weight [out, in/groups, kh, kw], zero padding, stride.
inline map3 conv2d(const xt::xarray<float>& w, const xt::xtensor<float, 1>& b, const map3& x, std::size_t groups,
                   std::size_t pad, std::size_t stride = 1) {
  const std::size_t out = w.shape()[0], cg = w.shape()[1], kh = w.shape()[2], kw = w.shape()[3];
  const std::size_t OH = (x.H + 2 * pad - kh) / stride + 1, OW = (x.W + 2 * pad - kw) / stride + 1;
  const std::size_t out_per_group = out / groups;
  map3 y(out, OH, OW);
  for (std::size_t o = 0; o < out; ++o) {
    const std::size_t g = o / out_per_group;
    for (std::size_t oy = 0; oy < OH; ++oy)
      for (std::size_t ox = 0; ox < OW; ++ox) {
        double s = b[o];
        for (std::size_t j = 0; j < cg; ++j)
          for (std::size_t ky = 0; ky < kh; ++ky)
            for (std::size_t kx = 0; kx < kw; ++kx) {
              const long iy = static_cast<long>(oy * stride + ky) - static_cast<long>(pad);
              const long ix = static_cast<long>(ox * stride + kx) - static_cast<long>(pad);
              if (iy < 0 || ix < 0 || iy >= static_cast<long>(x.H) || ix >= static_cast<long>(x.W)) continue;
              s += static_cast<double>(w(o, j, ky, kx)) * x.at(g * cg + j, static_cast<std::size_t>(iy), static_cast<std::size_t>(ix));
            }
        y.at(o, oy, ox) = s;
      }
  }
  return y;
}

inline std::vector<double> relu(std::vector<double> x) {
  for (auto& v : x) v = std::max(v, 0.0);
  return x;
}
inline map3 relu(map3 x) {
  for (auto& v : x.v) v = std::max(v, 0.0);
  return x;
}
inline map3 maxpool2(const map3& x) {
  map3 y(x.C, x.H / 2, x.W / 2);
  for (std::size_t c = 0; c < x.C; ++c)
    for (std::size_t i = 0; i < y.H; ++i)
      for (std::size_t j = 0; j < y.W; ++j)
        y.at(c, i, j) = std::max(std::max(x.at(c, 2 * i, 2 * j), x.at(c, 2 * i, 2 * j + 1)),
                                 std::max(x.at(c, 2 * i + 1, 2 * j), x.at(c, 2 * i + 1, 2 * j + 1)));
  return y;
}
inline std::vector<double> flatten(const map3& x) { return x.v; }
inline std::vector<double> global_avgpool(const map3& x) {
  std::vector<double> y(x.C, 0.0);
  for (std::size_t c = 0; c < x.C; ++c) {
    for (std::size_t i = 0; i < x.H * x.W; ++i) y[c] += x.v[c * x.H * x.W + i];
    y[c] /= static_cast<double>(x.H * x.W);
  }
  return y;
}

// im2col rows of a [C, H, W] map for a k x k kernel, stride 1, zero padding `pad`:
// [OH*OW, C*k*k], columns in (c, ky, kx) order like weight.reshape(out, -1).
inline xt::xtensor<float, 2> patches(const map3& x, std::size_t k, std::size_t pad) {
  const std::size_t OH = x.H + 2 * pad - k + 1, OW = x.W + 2 * pad - k + 1;
  xt::xtensor<float, 2> r = xt::zeros<float>({OH * OW, x.C * k * k});
  for (std::size_t oy = 0; oy < OH; ++oy)
    for (std::size_t ox = 0; ox < OW; ++ox)
      for (std::size_t c = 0; c < x.C; ++c)
        for (std::size_t ky = 0; ky < k; ++ky)
          for (std::size_t kx = 0; kx < k; ++kx) {
            const long iy = static_cast<long>(oy + ky) - static_cast<long>(pad), ix = static_cast<long>(ox + kx) - static_cast<long>(pad);
            if (iy < 0 || ix < 0 || iy >= static_cast<long>(x.H) || ix >= static_cast<long>(x.W)) continue;
            r(oy * OW + ox, (c * k + ky) * k + kx) = static_cast<float>(x.at(c, static_cast<std::size_t>(iy), static_cast<std::size_t>(ix)));
          }
  return r;
}

// max |a - b| / max |b|: agreement of two outputs relative to their scale.
inline double relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0, m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d = std::max(d, std::fabs(a[i] - b[i]));
    m = std::max(m, std::fabs(b[i]));
  }
  return m > 0 ? d / m : d;
}

// The values of a float vector in double, for comparisons against double references.
inline std::vector<double> to_vector(const xt::xtensor<float, 1>& v) { return std::vector<double>(v.begin(), v.end()); }

}  // namespace quant_test
