#include <quant/bias_absorption.hpp>
#include <quant/reference/transforms.hpp>

#include <cmath>
#include <functional>

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xtensor.hpp>

#include "small_nets.hpp"
#include "test_helpers.hpp"

using namespace quant;
using namespace quant_test;

namespace {

// A first layer whose pre-activation is provably >= c_i = beta_i - 3 gamma_i for inputs in
// [-1, 1] (zero padding included): with L_i = sum |W[i, ...]|, x_i >= b_i - L_i, so
// beta_i = b_i and gamma_i = 1.001 L_i / 3 bound it. b_i = f_i L_i with f_i from `factors`:
// f > 1.001 gives a high bias that gets absorbed, f <= 1.001 gives c_i = 0.
layer_weights bounded_first(std::vector<std::size_t> shape, layer_kind kind, std::uint32_t seed,
                            const std::vector<double>& factors) {
  layer_weights l;
  l.kind = kind;
  l.weight = random_weight(shape, seed);
  const std::size_t C = shape[0], per = l.weight.size() / C;
  l.bias = xt::xtensor<float, 1>::from_shape({C});
  channel_gaussian g;
  g.mean = g.std = xt::xtensor<float, 1>::from_shape({C});
  for (std::size_t i = 0; i < C; ++i) {
    double L = 0;
    for (std::size_t k = 0; k < per; ++k) L += std::fabs(l.weight.data()[i * per + k]);
    l.bias[i] = static_cast<float>(factors[i % factors.size()] * L);
    g.mean[i] = l.bias[i];
    g.std[i] = static_cast<float>(1.001 * L / 3.0);
  }
  l.output = g;
  return l;
}

const std::vector<double> mixed = {2.5, 0.5, -1.0, 4.0, 1.5};

layer_weights second_layer(std::vector<std::size_t> shape, layer_kind kind, std::uint32_t seed) {
  layer_weights l;
  l.kind = kind;
  l.weight = random_weight(shape, seed);
  l.bias = random_bias(shape[0], seed + 1);
  return l;
}

template <class Net>
xt::xtensor<float, 1> check_unchanged(layer_weights a, layer_weights b, std::size_t spatial, Net net) {
  const layer_weights a0 = a, b0 = b;
  const xt::xtensor<float, 1> c = absorb_high_bias(a, b, spatial);
  std::size_t absorbed = 0;
  for (std::size_t i = 0; i < c.size(); ++i) {
    CHECK(c[i] >= 0.0f);
    absorbed += c[i] > 0.0f;
    CHECK(a.bias[i] == static_cast<float>(static_cast<double>(a0.bias[i]) - c[i]));
    CHECK(a.output->mean[i] == static_cast<float>(static_cast<double>(a0.output->mean[i]) - c[i]));
    CHECK(a.output->std[i] == a0.output->std[i]);
  }
  CHECK(absorbed > 0);
  CHECK(absorbed < c.size());
  for (std::uint32_t t = 0; t < 6; ++t) {
    INFO("trial " << t);
    CHECK(relative_difference(net(a, b, t), net(a0, b0, t)) < 1e-6);
  }
  return c;
}

}  // namespace

TEST_CASE("absorb_high_bias keeps ReLU networks' outputs where no padding is involved", "[bias_absorption]") {
  SECTION("linear -> ReLU -> linear") {
    check_unchanged(bounded_first({8, 5}, layer_kind::linear, 1, mixed), second_layer({4, 8}, layer_kind::linear, 2), 1,
                    [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                      return linear(b.weight, b.bias, relu(linear(a.weight, a.bias, random_vector(5, t))));
                    });
  }
  SECTION("conv 3x3 (padding 1) -> ReLU -> maxpool -> conv 3x3 (no padding)") {
    check_unchanged(bounded_first({5, 2, 3, 3}, layer_kind::conv2d, 3, mixed), second_layer({3, 5, 3, 3}, layer_kind::conv2d, 4),
                    1, [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                      const map3 x = random_map(2, 8, 8, t);
                      return conv2d(b.weight, b.bias, maxpool2(relu(conv2d(a.weight, a.bias, x, 1, 1))), 1, 0).v;
                    });
  }
  SECTION("1x1 conv -> ReLU -> 1x1 conv") {
    check_unchanged(bounded_first({6, 3, 1, 1}, layer_kind::conv2d, 5, mixed), second_layer({4, 6, 1, 1}, layer_kind::conv2d, 6),
                    1, [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                      const map3 x = random_map(3, 5, 5, t);
                      return conv2d(b.weight, b.bias, relu(conv2d(a.weight, a.bias, x, 1, 0)), 1, 0).v;
                    });
  }
  SECTION("conv -> ReLU -> flatten -> linear (spatial = H*W)") {
    check_unchanged(bounded_first({5, 2, 3, 3}, layer_kind::conv2d, 7, mixed), second_layer({3, 5 * 16}, layer_kind::linear, 8),
                    16, [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                      const map3 x = random_map(2, 4, 4, t);
                      return linear(b.weight, b.bias, flatten(relu(conv2d(a.weight, a.bias, x, 1, 1))));
                    });
  }
  SECTION("conv -> ReLU -> depthwise (no padding)") {
    check_unchanged(bounded_first({5, 2, 3, 3}, layer_kind::conv2d, 9, mixed),
                    second_layer({5, 1, 3, 3}, layer_kind::depthwise_conv2d, 10), 1,
                    [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                      const map3 x = random_map(2, 6, 6, t);
                      return conv2d(b.weight, b.bias, relu(conv2d(a.weight, a.bias, x, 1, 1)), 5, 0).v;
                    });
  }
  SECTION("depthwise (padding 1) -> ReLU -> pointwise") {
    check_unchanged(bounded_first({5, 1, 3, 3}, layer_kind::depthwise_conv2d, 11, mixed),
                    second_layer({3, 5, 1, 1}, layer_kind::conv2d, 12), 1,
                    [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                      const map3 x = random_map(5, 6, 6, t);
                      return conv2d(b.weight, b.bias, relu(conv2d(a.weight, a.bias, x, 5, 1)), 1, 0).v;
                    });
  }
}

TEST_CASE("absorb_high_bias: a padded second conv is exact inside and off by the padded taps at the border",
          "[bias_absorption]") {
  layer_weights a = bounded_first({4, 2, 3, 3}, layer_kind::conv2d, 21, mixed);
  layer_weights b = second_layer({3, 4, 3, 3}, layer_kind::conv2d, 22);
  const layer_weights a0 = a, b0 = b;
  const auto c = absorb_high_bias(a, b);
  const map3 x = random_map(2, 5, 5, 23);
  const map3 before = conv2d(b0.weight, b0.bias, relu(conv2d(a0.weight, a0.bias, x, 1, 1)), 1, 1);
  const map3 after = conv2d(b.weight, b.bias, relu(conv2d(a.weight, a.bias, x, 1, 1)), 1, 1);
  double scale = 0;
  for (double v : before.v) scale = std::max(scale, std::fabs(v));
  std::size_t differing = 0;
  for (std::size_t o = 0; o < 3; ++o)
    for (std::size_t y = 0; y < 5; ++y)
      for (std::size_t xx = 0; xx < 5; ++xx) {
        // The padded taps of output (o, y, x) would have read c; zero padding reads 0.
        double missing = 0;
        for (std::size_t ch = 0; ch < 4; ++ch)
          for (std::size_t ky = 0; ky < 3; ++ky)
            for (std::size_t kx = 0; kx < 3; ++kx) {
              const long iy = static_cast<long>(y + ky) - 1, ix = static_cast<long>(xx + kx) - 1;
              if (iy < 0 || ix < 0 || iy >= 5 || ix >= 5) missing += static_cast<double>(b.weight(o, ch, ky, kx)) * c[ch];
            }
        const double d = after.at(o, y, xx) - before.at(o, y, xx);
        CHECK(std::fabs(d - missing) <= 1e-6 * scale);
        differing += std::fabs(d) > 1e-3 * scale;
      }
  CHECK(differing > 0);
}

TEST_CASE("absorb_high_bias matches quant::ref and follows sigmas", "[bias_absorption]") {
  for (double sigmas : {3.0, 1.0, 0.0}) {
    for (layer_kind k2 : {layer_kind::linear, layer_kind::conv2d, layer_kind::depthwise_conv2d}) {
      INFO("sigmas " << sigmas << " second " << to_string(k2));
      layer_weights a = bounded_first({6, 3, 3, 3}, layer_kind::conv2d, 31, mixed);
      const std::size_t spatial = k2 == layer_kind::linear ? 4 : 1;
      layer_weights b = k2 == layer_kind::linear   ? second_layer({5, 24}, k2, 32)
                        : k2 == layer_kind::conv2d ? second_layer({5, 6, 3, 3}, k2, 33)
                                                   : second_layer({6, 1, 3, 3}, k2, 34);
      const layer_weights a0 = a, b0 = b;
      const auto c = absorb_high_bias(a, b, activation_between::relu, spatial, sigmas);
      std::vector<double> b1(a0.bias.begin(), a0.bias.end()), mean(a0.output->mean.begin(), a0.output->mean.end()),
          sd(a0.output->std.begin(), a0.output->std.end()), b2(b0.bias.begin(), b0.bias.end());
      const std::size_t C = 6, taps = b0.weight.size() / (b0.weight.shape()[0] * (k2 == layer_kind::depthwise_conv2d ? 1 : C));
      ref::weight3 w2(b0.weight.shape()[0],
                      std::vector<std::vector<double>>(k2 == layer_kind::depthwise_conv2d ? 1 : C, std::vector<double>(taps)));
      for (std::size_t i = 0; i < b0.weight.size(); ++i)
        w2[i / (w2[0].size() * taps)][(i / taps) % w2[0].size()][i % taps] = b0.weight.data()[i];
      const std::vector<double> rc = ref::absorb_high_bias(b1, mean, sd, w2, b2, k2 == layer_kind::depthwise_conv2d, sigmas);
      double bscale = 0;
      for (double v : b2) bscale = std::max(bscale, std::fabs(v));
      for (std::size_t i = 0; i < C; ++i) {
        CHECK(c[i] == static_cast<float>(rc[i]));
        CHECK(std::fabs(a.bias[i] - b1[i]) <= 1.2e-7 * std::fabs(b1[i]) + 1e-6 * std::fabs(a0.bias[i]));
      }
      for (std::size_t o = 0; o < b2.size(); ++o) CHECK(std::fabs(b.bias[o] - b2[o]) <= 1e-6 * bscale);
      if (sigmas == 0.0)
        for (std::size_t i = 0; i < C; ++i) CHECK(c[i] == std::max(0.0f, a0.output->mean[i]));
    }
  }
}

TEST_CASE("absorb_high_bias: identity between layers is exact for any c", "[bias_absorption]") {
  layer_weights a = second_layer({5, 4}, layer_kind::linear, 41), b = second_layer({3, 5}, layer_kind::linear, 42);
  a.output = channel_gaussian{xt::xtensor<float, 1>{3.0f, -1.0f, 10.0f, 0.5f, 7.0f}, xt::xtensor<float, 1>{0.5f, 1.0f, 1.0f, 2.0f, 0.1f}};
  const layer_weights a0 = a, b0 = b;
  const auto c = absorb_high_bias(a, b, activation_between::identity);
  CHECK(c[0] == 1.5f);
  CHECK(c[1] == 0.0f);
  CHECK(c[2] == 7.0f);
  for (std::uint32_t t = 0; t < 4; ++t) {
    const auto x = random_vector(4, 50 + t, -10, 10);
    CHECK(relative_difference(linear(b.weight, b.bias, linear(a.weight, a.bias, x)),
                              linear(b0.weight, b0.bias, linear(a0.weight, a0.bias, x))) < 1e-6);
  }
}

TEST_CASE("absorb_high_bias validation", "[bias_absorption][validation]") {
  const layer_weights a = bounded_first({4, 3}, layer_kind::linear, 61, mixed), b = second_layer({2, 4}, layer_kind::linear, 62);
  auto run = [&](std::function<void(layer_weights&, layer_weights&)> edit, activation_between act = activation_between::relu,
                 std::size_t spatial = 1, double sigmas = 3.0) {
    layer_weights x = a, y = b;
    edit(x, y);
    absorb_high_bias(x, y, act, spatial, sigmas);
  };
  auto none = [](layer_weights&, layer_weights&) {};
  CHECK_NOTHROW(run(none));
  CHECK_THROWS_AS(run(none, activation_between::relu6), invalid_argument);
  CHECK_THROWS_AS(run([](layer_weights& x, layer_weights&) { x.output.reset(); }), invalid_argument);
  CHECK_THROWS_WITH(run([](layer_weights& x, layer_weights&) { x.output.reset(); }), Catch::Contains("first.output"));
  CHECK_THROWS_AS(run(none, activation_between::relu, 1, -1.0), invalid_argument);
  CHECK_THROWS_AS(run(none, activation_between::relu, 1, NAN), invalid_argument);
  CHECK_THROWS_AS(run(none, activation_between::relu, 0), invalid_argument);
  CHECK_THROWS_AS(run(none, activation_between::relu, 2), length_error);
  CHECK_THROWS_AS(run([](layer_weights&, layer_weights& y) { y.bias = xt::zeros<float>({3}); }), length_error);
  CHECK_THROWS_AS(run([](layer_weights& x, layer_weights&) { x.output->mean = xt::zeros<float>({5}); }), length_error);
  CHECK_THROWS_AS(run([](layer_weights& x, layer_weights&) { x.output->mean[1] = NAN; }), domain_error);
  CHECK_THROWS_AS(run([](layer_weights&, layer_weights& y) { y.weight(1, 1) = INFINITY; }), domain_error);
  // b2 overflowing float: nothing is modified.
  layer_weights x = a, y = b;
  y.weight(0, 0) = 3e38f;
  y.bias[0] = 3e38f;
  const layer_weights x0 = x;
  CHECK_THROWS_AS(absorb_high_bias(x, y), domain_error);
  require_bitwise_equal(x.bias.data(), x0.bias.data(), 4, "first.bias untouched");
  CHECK(y.bias[0] == 3e38f);
}
