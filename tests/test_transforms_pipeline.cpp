// The data-free pipeline end to end on a small depthwise-separable block, as docs/transforms.md
// shows it: fold -> CLE -> absorb -> quantize -> bias correction.
#include <quant/batchnorm_folding.hpp>
#include <quant/bias_absorption.hpp>
#include <quant/bias_correction.hpp>
#include <quant/equalization.hpp>

#include <cmath>
#include <random>

#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

#include "small_nets.hpp"
#include "test_helpers.hpp"

using namespace quant;
using namespace quant_test;

namespace {

// BN whose running variances span four decades: after folding, per-channel weight ranges
// differ by ~100x, as in real depthwise layers.
batchnorm_params spread_bn(std::size_t n, std::uint32_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  batchnorm_params bn;
  bn.gamma = bn.beta = bn.running_mean = bn.running_var = xt::xtensor<float, 1>::from_shape({n});
  for (std::size_t i = 0; i < n; ++i) {
    bn.gamma[i] = static_cast<float>((u(g) < 0.2 ? -1 : 1) * (0.5 + u(g)));
    bn.beta[i] = static_cast<float>(2.0 * u(g) - 0.5 + (u(g) < 0.4 ? 5.0 : 0.0));  // some high biases
    bn.running_mean[i] = static_cast<float>(0.2 * (u(g) - 0.5));
    bn.running_var[i] = static_cast<float>(std::pow(10.0, 4.0 * u(g) - 3.0));
  }
  return bn;
}

map3 apply_bn(map3 y, const batchnorm_params& bn) {
  for (std::size_t c = 0; c < y.C; ++c)
    for (std::size_t i = 0; i < y.H * y.W; ++i) {
      double& v = y.v[c * y.H * y.W + i];
      v = bn.gamma[c] * (v - bn.running_mean[c]) / std::sqrt(static_cast<double>(bn.running_var[c]) + bn.eps) + bn.beta[c];
    }
  return y;
}

// Symmetric per-tensor round-to-nearest with 2^(bits-1) - 1 levels each side.
xt::xarray<float> per_tensor_rtn(const xt::xarray<float>& w, int bits) {
  float m = 0;
  for (float v : w) m = std::max(m, std::fabs(v));
  const float s = m / static_cast<float>((1 << (bits - 1)) - 1);
  xt::xarray<float> q = w;
  for (auto& v : q) v = std::nearbyint(v / s) * s;
  return q;
}

struct block {
  layer_weights l1, l2, l3;
  map3 operator()(const map3& x) const {
    return conv2d(l3.weight, l3.bias, relu(conv2d(l2.weight, l2.bias, relu(conv2d(l1.weight, l1.bias, x, 1, 1)), l2.weight.shape()[0], 1)), 1, 0);
  }
  block quantized(int bits) const {
    block q = *this;
    q.l1.weight = per_tensor_rtn(l1.weight, bits);
    q.l2.weight = per_tensor_rtn(l2.weight, bits);
    q.l3.weight = per_tensor_rtn(l3.weight, bits);
    return q;
  }
};

double output_mse(const block& a, const block& b, std::size_t n) {
  double s = 0;
  std::size_t count = 0;
  for (std::uint32_t t = 0; t < n; ++t) {
    const map3 x = random_map(2, 8, 8, 900 + t);
    const map3 ya = a(x), yb = b(x);
    for (std::size_t i = 0; i < ya.v.size(); ++i) s += (ya.v[i] - yb.v[i]) * (ya.v[i] - yb.v[i]);
    count += ya.v.size();
  }
  return s / static_cast<double>(count);
}

}  // namespace

TEST_CASE("data-free pipeline on conv-BN-ReLU -> depthwise-BN-ReLU -> pointwise", "[transforms]") {
  const std::size_t C = 8;
  const auto w1 = random_weight({C, 2, 3, 3}, 1), w2 = random_weight({C, 1, 3, 3}, 2), w3 = random_weight({6, C, 1, 1}, 3);
  const auto b3 = random_bias(6, 4);
  const batchnorm_params bn1 = spread_bn(C, 5), bn2 = spread_bn(C, 6);
  auto original = [&](const map3& x) {
    const map3 h1 = relu(apply_bn(conv2d(w1, xt::xtensor<float, 1>(xt::zeros<float>({C})), x, 1, 1), bn1));
    const map3 h2 = relu(apply_bn(conv2d(w2, xt::xtensor<float, 1>(xt::zeros<float>({C})), h1, C, 1), bn2));
    return conv2d(w3, b3, h2, 1, 0);
  };

  const folded_layer f1 = fold_batchnorm(w1, bn1), f2 = fold_batchnorm(w2, bn2);
  block folded{{f1.weight, f1.bias, layer_kind::conv2d, f1.output},
               {f2.weight, f2.bias, layer_kind::depthwise_conv2d, f2.output},
               {w3, b3, layer_kind::conv2d, std::nullopt}};
  for (std::uint32_t t = 0; t < 4; ++t) {
    const map3 x = random_map(2, 8, 8, t);
    CHECK(relative_difference(folded(x).v, original(x).v) < 1e-5);
  }
  const double spread_before = channel_range_spread(folded.l2.weight);
  CHECK(spread_before > 10);

  block eq = folded;
  using A = activation_between;
  const equalization_report rep = equalize_chain({&eq.l1, &eq.l2, &eq.l3}, {A::relu, A::relu}, {1, 1});
  CHECK(rep.converged);
  for (std::uint32_t t = 0; t < 4; ++t) {
    const map3 x = random_map(2, 8, 8, t);
    CHECK(relative_difference(eq(x).v, folded(x).v) < 1e-5);
  }
  // Per-tensor 6-bit weights: CLE lowers the output error.
  const double mse_folded = output_mse(folded.quantized(6), folded, 6);
  const double mse_cle = output_mse(eq.quantized(6), eq, 6);
  INFO("output MSE, W6 per tensor: folded " << mse_folded << ", after CLE " << mse_cle << " (" << rep.sweeps << " sweeps)");
  CHECK(mse_cle < 0.5 * mse_folded);

  block ab = eq;
  const auto c1 = absorb_high_bias(ab.l1, ab.l2);
  const auto c2 = absorb_high_bias(ab.l2, ab.l3);
  CHECK(xt::sum(c1)() + xt::sum(c2)() > 0.0f);
  for (std::size_t i = 0; i < C; ++i) CHECK(ab.l2.output->mean[i] == static_cast<float>(static_cast<double>(eq.l2.output->mean[i]) - c2[i]));

  // Quantize, then correct every layer's bias in network order from calibration inputs of
  // the quantized model (empirical; each layer's input already passes through the corrected
  // layers before it).
  const block q = ab.quantized(6);
  block corrected = q;
  std::vector<map3> calib;
  for (std::uint32_t t = 0; t < 16; ++t) calib.push_back(random_map(2, 8, 8, 500 + t));
  input_mean_accumulator a1(2 * 9), a2(C * 9), a3(C);
  for (const map3& x : calib) a1.add(patches(x, 3, 1));
  corrected.l1.bias -= empirical_bias_correction(ab.l1.weight, q.l1.weight, a1);
  for (const map3& x : calib) a2.add(patches(relu(conv2d(corrected.l1.weight, corrected.l1.bias, x, 1, 1)), 3, 1));
  corrected.l2.bias -= empirical_bias_correction(ab.l2.weight, q.l2.weight, a2, layer_kind::depthwise_conv2d);
  for (const map3& x : calib) {
    const map3 h1 = relu(conv2d(corrected.l1.weight, corrected.l1.bias, x, 1, 1));
    a3.add(patches(relu(conv2d(corrected.l2.weight, corrected.l2.bias, h1, C, 1)), 1, 0));
  }
  corrected.l3.bias -= empirical_bias_correction(ab.l3.weight, q.l3.weight, a3);

  // rms over output channels of the mean output error on the calibration data
  auto mean_error = [&](const block& m) {
    std::vector<double> e(6, 0.0);
    for (const map3& x : calib) {
      const map3 ya = m(x), yb = ab(x);
      for (std::size_t o = 0; o < 6; ++o)
        for (std::size_t p = 0; p < 64; ++p) e[o] += (ya.v[o * 64 + p] - yb.v[o * 64 + p]) / (16 * 64);
    }
    double s = 0;
    for (double v : e) s += v * v;
    return std::sqrt(s / 6);
  };
  const double before = mean_error(q), after = mean_error(corrected);
  INFO("rms of per-channel mean output error: uncorrected " << before << ", corrected " << after);
  CHECK(after < 0.5 * before);

  // The data-free form of the docs' example runs on the same block.
  const auto delta = analytic_bias_correction(ab.l3.weight, q.l3.weight, *q.l2.output, A::relu, layer_kind::conv2d);
  for (float d : delta) CHECK(std::isfinite(d));
}
