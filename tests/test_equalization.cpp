#include <quant/equalization.hpp>
#include <quant/reference/transforms.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include <xtensor/xarray.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xsort.hpp>
#include <xtensor/xtensor.hpp>

#include "small_nets.hpp"
#include "test_helpers.hpp"

using namespace quant;
using namespace quant_test;

namespace {

layer_weights make_layer(std::vector<std::size_t> shape, layer_kind kind, std::uint32_t seed, double decades = 2.0) {
  layer_weights l;
  l.kind = kind;
  l.weight = random_weight(shape, seed, log_uniform_scales(shape[0], seed + 1000, decades));
  l.bias = random_bias(shape[0], seed + 2000);
  return l;
}

channel_gaussian random_gaussian(std::size_t n, std::uint32_t seed) {
  channel_gaussian g;
  g.mean = random_bias(n, seed);
  g.std = xt::abs(random_bias(n, seed + 1));
  return g;
}

// weight3 view of a layer read as the second of a pair (see reference/transforms.hpp).
ref::weight3 as_second(const layer_weights& l, std::size_t spatial = 1) {
  const std::size_t out = l.weight.shape()[0];
  std::size_t C, taps;
  if (l.kind == layer_kind::linear) {
    C = l.weight.shape()[1] / spatial;
    taps = spatial;
  } else {
    C = l.weight.shape()[1];
    taps = l.weight.shape()[2] * l.weight.shape()[3];
  }
  ref::weight3 r(out, std::vector<std::vector<double>>(C, std::vector<double>(taps)));
  for (std::size_t i = 0; i < l.weight.size(); ++i) r[i / (C * taps)][(i / taps) % C][i % taps] = l.weight.data()[i];
  return r;
}
using quant_test::to_vector;

// Runs `net` on inputs before and after CLE of the pair and compares.
template <class Net>
void check_function_preserved(layer_weights a, layer_weights b, activation_between act, std::size_t spatial, Net net,
                              std::size_t trials = 8) {
  const layer_weights a0 = a, b0 = b;
  const xt::xtensor<float, 1> S = equalize_pair(a, b, act, spatial);
  REQUIRE(S.size() == a.weight.shape()[0]);
  for (std::uint32_t t = 0; t < trials; ++t) {
    const std::vector<double> before = net(a0, b0, t), after = net(a, b, t);
    INFO("trial " << t);
    CHECK(relative_difference(after, before) < 1e-5);
  }
}

}  // namespace

TEST_CASE("equalize_pair keeps the float function of two-layer nets", "[equalization]") {
  SECTION("linear -> ReLU -> linear") {
    check_function_preserved(make_layer({12, 7}, layer_kind::linear, 1), make_layer({5, 12}, layer_kind::linear, 2),
                             activation_between::relu, 1, [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                               return linear(b.weight, b.bias, relu(linear(a.weight, a.bias, random_vector(7, t))));
                             });
  }
  SECTION("linear -> identity -> linear") {
    check_function_preserved(make_layer({6, 4}, layer_kind::linear, 3), make_layer({3, 6}, layer_kind::linear, 4),
                             activation_between::identity, 1, [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                               return linear(b.weight, b.bias, linear(a.weight, a.bias, random_vector(4, t)));
                             });
  }
  SECTION("conv -> ReLU -> maxpool -> conv (padding 1)") {
    check_function_preserved(make_layer({6, 3, 3, 3}, layer_kind::conv2d, 5), make_layer({4, 6, 3, 3}, layer_kind::conv2d, 6),
                             activation_between::relu, 1, [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                               const map3 x = random_map(3, 8, 8, t);
                               return conv2d(b.weight, b.bias, maxpool2(relu(conv2d(a.weight, a.bias, x, 1, 1))), 1, 1).v;
                             });
  }
  SECTION("conv -> ReLU -> flatten -> linear (spatial = H*W)") {
    check_function_preserved(make_layer({4, 2, 3, 3}, layer_kind::conv2d, 7), make_layer({3, 4 * 25}, layer_kind::linear, 8),
                             activation_between::relu, 25, [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                               const map3 x = random_map(2, 5, 5, t);
                               return linear(b.weight, b.bias, flatten(relu(conv2d(a.weight, a.bias, x, 1, 1))));
                             });
  }
  SECTION("conv -> ReLU -> global average pool -> linear (spatial = 1)") {
    check_function_preserved(make_layer({5, 2, 3, 3}, layer_kind::conv2d, 9), make_layer({3, 5}, layer_kind::linear, 10),
                             activation_between::relu, 1, [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                               const map3 x = random_map(2, 6, 6, t);
                               return linear(b.weight, b.bias, global_avgpool(relu(conv2d(a.weight, a.bias, x, 1, 1))));
                             });
  }
  SECTION("depthwise -> ReLU -> pointwise conv") {
    check_function_preserved(make_layer({5, 1, 3, 3}, layer_kind::depthwise_conv2d, 11),
                             make_layer({4, 5, 1, 1}, layer_kind::conv2d, 12), activation_between::relu, 1,
                             [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                               const map3 x = random_map(5, 6, 6, t);
                               return conv2d(b.weight, b.bias, relu(conv2d(a.weight, a.bias, x, 5, 1)), 1, 0).v;
                             });
  }
  SECTION("conv -> ReLU -> depthwise") {
    check_function_preserved(make_layer({5, 3, 3, 3}, layer_kind::conv2d, 13),
                             make_layer({5, 1, 3, 3}, layer_kind::depthwise_conv2d, 14), activation_between::relu, 1,
                             [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                               const map3 x = random_map(3, 6, 6, t);
                               return conv2d(b.weight, b.bias, relu(conv2d(a.weight, a.bias, x, 1, 1)), 5, 1).v;
                             });
  }
  SECTION("depthwise -> ReLU -> depthwise") {
    check_function_preserved(make_layer({4, 1, 3, 3}, layer_kind::depthwise_conv2d, 15),
                             make_layer({4, 1, 3, 3}, layer_kind::depthwise_conv2d, 16), activation_between::relu, 1,
                             [](const layer_weights& a, const layer_weights& b, std::uint32_t t) {
                               const map3 x = random_map(4, 6, 6, t);
                               return conv2d(b.weight, b.bias, relu(conv2d(a.weight, a.bias, x, 4, 1)), 4, 1).v;
                             });
  }
}

TEST_CASE("equalize_pair: after one step both ranges are sqrt(r1 r2)", "[equalization]") {
  struct pair_case {
    const char* name;
    layer_weights a, b;
    std::size_t spatial;
  };
  std::vector<pair_case> cases = {
      {"linear/linear", make_layer({9, 4}, layer_kind::linear, 21, 3.0), make_layer({3, 9}, layer_kind::linear, 22, 3.0), 1},
      {"conv/flatten/linear", make_layer({4, 2, 3, 3}, layer_kind::conv2d, 23, 3.0),
       make_layer({3, 4 * 9}, layer_kind::linear, 24, 3.0), 9},
      {"conv/conv", make_layer({6, 3, 3, 3}, layer_kind::conv2d, 25, 3.0), make_layer({2, 6, 3, 3}, layer_kind::conv2d, 26), 1},
      {"depthwise/conv", make_layer({6, 1, 3, 3}, layer_kind::depthwise_conv2d, 27, 3.0),
       make_layer({5, 6, 1, 1}, layer_kind::conv2d, 28), 1},
      {"conv/depthwise", make_layer({6, 3, 3, 3}, layer_kind::conv2d, 29, 3.0),
       make_layer({6, 1, 3, 3}, layer_kind::depthwise_conv2d, 30, 3.0), 1},
  };
  for (auto& c : cases) {
    INFO(c.name);
    c.a.output = random_gaussian(c.a.weight.shape()[0], 31);
    const layer_weights a0 = c.a, b0 = c.b;
    const auto r1 = output_channel_ranges(c.a.weight);
    const auto r2 = input_channel_ranges(c.b, c.spatial);
    const xt::xtensor<float, 1> S = equalize_pair(c.a, c.b, activation_between::relu, c.spatial);
    const auto q1 = output_channel_ranges(c.a.weight);
    const auto q2 = input_channel_ranges(c.b, c.spatial);
    // The same step in double, straight from the formulas.
    ref::weight3 rw1 = as_second(a0), rw2 = as_second(b0, c.spatial);
    std::vector<double> rb1 = to_vector(a0.bias), rm = to_vector(a0.output->mean), rs = to_vector(a0.output->std);
    const std::vector<double> rS =
        ref::equalize_pair(rw1, rb1, &rm, &rs, rw2, b0.kind == layer_kind::depthwise_conv2d);
    for (std::size_t i = 0; i < S.size(); ++i) {
      const double g = std::sqrt(static_cast<double>(r1[i]) * static_cast<double>(r2[i]));
      // S rounded to float (2^-24), applied in double, each weight rounded once (2^-24).
      CHECK(std::fabs(q1[i] - g) <= 2.5e-7 * g);
      CHECK(std::fabs(q2[i] - g) <= 2.5e-7 * g);
      CHECK(std::fabs(S[i] - rS[i]) <= 6e-8 * rS[i]);
      CHECK(std::fabs(c.a.bias[i] - rb1[i]) <= 1.2e-7 * std::fabs(rb1[i]));
      CHECK(std::fabs(c.a.output->mean[i] - rm[i]) <= 1.2e-7 * std::fabs(rm[i]));
      CHECK(std::fabs(c.a.output->std[i] - rs[i]) <= 1.2e-7 * std::fabs(rs[i]));
    }
    const ref::weight3 got2 = as_second(c.b, c.spatial);
    for (std::size_t o = 0; o < got2.size(); ++o)
      for (std::size_t j = 0; j < got2[o].size(); ++j)
        for (std::size_t t = 0; t < got2[o][j].size(); ++t)
          REQUIRE(std::fabs(got2[o][j][t] - rw2[o][j][t]) <= 1.2e-7 * std::fabs(rw2[o][j][t]));
    // Each element is exactly W / double(S_i) (or W * double(S_i)) rounded once.
    const std::size_t per1 = a0.weight.size() / S.size();
    for (std::size_t k = 0; k < a0.weight.size(); ++k)
      REQUIRE(c.a.weight.data()[k] == static_cast<float>(static_cast<double>(a0.weight.data()[k]) / S[k / per1]));
  }
}

TEST_CASE("equalize_pair: zero-range channels keep scale 1 and their weights", "[equalization]") {
  layer_weights a = make_layer({5, 4}, layer_kind::linear, 41), b = make_layer({3, 5}, layer_kind::linear, 42);
  for (std::size_t k = 0; k < 4; ++k) a.weight(2, k) = 0.0f;  // dead output channel of a
  for (std::size_t o = 0; o < 3; ++o) b.weight(o, 3) = 0.0f;  // input channel b never reads
  const layer_weights a0 = a, b0 = b;
  const auto S = equalize_pair(a, b);
  CHECK(S[2] == 1.0f);
  CHECK(S[3] == 1.0f);
  for (std::size_t k = 0; k < 4; ++k) CHECK(a.weight(3, k) == a0.weight(3, k));
  CHECK(a.bias[2] == a0.bias[2]);
  CHECK(a.bias[3] == a0.bias[3]);
  for (std::size_t o = 0; o < 3; ++o) {
    CHECK(b.weight(o, 2) == b0.weight(o, 2));
    CHECK(b.weight(o, 3) == 0.0f);
  }
  CHECK(S[0] != 1.0f);
  CHECK(std::isfinite(S[0]));
}

TEST_CASE("equalize_chain converges and its scales reproduce the weights", "[equalization]") {
  // conv -> ReLU -> depthwise -> ReLU -> pointwise -> ReLU -> flatten -> linear: the
  // depthwise-separable pattern CLE is for.
  std::vector<layer_weights> L = {make_layer({6, 2, 3, 3}, layer_kind::conv2d, 51, 2.5),
                                  make_layer({6, 1, 3, 3}, layer_kind::depthwise_conv2d, 52, 2.5),
                                  make_layer({4, 6, 1, 1}, layer_kind::conv2d, 53, 2.5),
                                  make_layer({3, 4 * 16}, layer_kind::linear, 54, 1.0)};
  L[1].output = random_gaussian(6, 55);
  const std::vector<layer_weights> L0 = L;
  auto net = [](const std::vector<layer_weights>& n, std::uint32_t t) {
    const map3 x = random_map(2, 4, 4, t);
    const map3 h1 = relu(conv2d(n[0].weight, n[0].bias, x, 1, 1));
    const map3 h2 = relu(conv2d(n[1].weight, n[1].bias, h1, 6, 1));
    const map3 h3 = relu(conv2d(n[2].weight, n[2].bias, h2, 1, 0));
    return linear(n[3].weight, n[3].bias, flatten(h3));
  };
  const equalization_report rep = equalize_chain({&L[0], &L[1], &L[2], &L[3]},
                                                 {activation_between::relu, activation_between::relu, activation_between::relu},
                                                 {1, 1, 16});
  INFO("sweeps " << rep.sweeps << " last change " << rep.last_change);
  CHECK(rep.converged);
  CHECK(rep.last_change < 1e-6);
  CHECK(rep.sweeps > 1);
  CHECK(rep.sweeps < 100);
  REQUIRE(rep.scales.size() == 3);

  for (std::uint32_t t = 0; t < 6; ++t) CHECK(relative_difference(net(L, t), net(L0, t)) < 1e-5);

  // W_k = W_k^0 * S_{k-1}[input channel] / S_k[output channel], up to one rounding per sweep.
  const double tol = 1e-6 * static_cast<double>(rep.sweeps);
  for (std::size_t k = 0; k < 4; ++k) {
    const ref::weight3 w0 = as_second(L0[k], k == 3 ? 16 : 1), w = as_second(L[k], k == 3 ? 16 : 1);
    const bool dw = L[k].kind == layer_kind::depthwise_conv2d;
    for (std::size_t o = 0; o < w0.size(); ++o)
      for (std::size_t j = 0; j < w0[o].size(); ++j)
        for (std::size_t t = 0; t < w0[o][j].size(); ++t) {
          double want = w0[o][j][t];
          if (k > 0) want *= rep.scales[k - 1][ref::input_channel(o, j, dw)];
          if (k < 3) want /= rep.scales[k][o];
          REQUIRE(std::fabs(w[o][j][t] - want) <= tol * std::fabs(want) + 1e-30);
        }
    if (k < 3)
      for (std::size_t o = 0; o < L[k].bias.size(); ++o)
        CHECK(std::fabs(L[k].bias[o] - L0[k].bias[o] / rep.scales[k][o]) <= tol * std::fabs(L0[k].bias[o] / rep.scales[k][o]));
  }
  for (std::size_t i = 0; i < 6; ++i) {
    const double want = L0[1].output->std[i] / rep.scales[1][i];
    CHECK(std::fabs(L[1].output->std[i] - want) <= tol * want);
  }
  // Converged: every pair is equalized (one more step would change nothing beyond rounding).
  for (std::size_t k = 0; k < 3; ++k) {
    const auto r1 = output_channel_ranges(L[k].weight);
    const auto r2 = input_channel_ranges(L[k + 1], k == 2 ? 16 : 1);
    for (std::size_t i = 0; i < r1.size(); ++i) CHECK(std::fabs(r1[i] / r2[i] - 1.0) < 1e-5);
  }
}

TEST_CASE("equalize_pair maximizes DFQ's precision objective sum_i (r1_i / R1) (r2_i / R2)", "[equalization]") {
  // Nagel et al. 2019, eq. 8-9: with R = max_i r_i the per-tensor range, the pair's total
  // per-channel precision sum_i p1_i p2_i is maximal at r1_i = r2_i. Any other positive
  // rescaling of the equalized pair must not do better.
  auto objective = [](const xt::xtensor<float, 1>& r1, const xt::xtensor<float, 1>& r2) {
    const double R1 = xt::amax(r1)(), R2 = xt::amax(r2)();
    double s = 0;
    for (std::size_t i = 0; i < r1.size(); ++i) s += (r1[i] / R1) * (r2[i] / R2);
    return s;
  };
  layer_weights a = make_layer({10, 6}, layer_kind::linear, 81, 3.0), b = make_layer({7, 10}, layer_kind::linear, 82, 0.0);
  const double before = objective(output_channel_ranges(a.weight), input_channel_ranges(b));
  equalize_pair(a, b);
  const auto r1 = output_channel_ranges(a.weight), r2 = input_channel_ranges(b);
  const double best = objective(r1, r2);
  CHECK(best > before);
  std::mt19937_64 g(83);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  for (int trial = 0; trial < 200; ++trial) {
    xt::xtensor<float, 1> p1 = r1, p2 = r2;
    for (std::size_t i = 0; i < 10; ++i) {
      const double s = std::exp(0.5 * u(g));
      p1[i] = static_cast<float>(r1[i] / s);
      p2[i] = static_cast<float>(r2[i] * s);
    }
    CHECK(objective(p1, p2) <= best * (1 + 1e-6));
  }
}

TEST_CASE("equalize_chain: two layers converge in the second sweep; max_sweeps caps", "[equalization]") {
  layer_weights a = make_layer({8, 5}, layer_kind::linear, 61), b = make_layer({4, 8}, layer_kind::linear, 62);
  layer_weights a2 = a, b2 = b;
  const auto rep = equalize_chain({&a, &b}, {activation_between::relu}, {1});
  CHECK(rep.converged);
  CHECK(rep.sweeps == 2);
  const auto S = equalize_pair(a2, b2);
  for (std::size_t i = 0; i < 8; ++i) CHECK(std::fabs(rep.scales[0][i] / S[i] - 1.0) < 3e-7);

  layer_weights c = make_layer({6, 2, 3, 3}, layer_kind::conv2d, 63), d = make_layer({6, 1, 3, 3}, layer_kind::depthwise_conv2d, 64),
                e = make_layer({3, 6}, layer_kind::linear, 65);
  equalization_options one;
  one.max_sweeps = 1;
  const auto capped = equalize_chain({&c, &d, &e}, {activation_between::relu, activation_between::relu}, {1, 1}, one);
  CHECK(capped.sweeps == 1);
  CHECK_FALSE(capped.converged);
  CHECK(capped.last_change > 1e-3);
}

TEST_CASE("channel_range_spread and the range helpers", "[equalization]") {
  xt::xarray<float> w = {{2.0f, -1.0f}, {0.25f, -0.5f}, {0.0f, 0.0f}, {-8.0f, 3.0f}};
  CHECK(channel_range_spread(w) == 16.0);
  const auto r = output_channel_ranges(w);
  CHECK(r[0] == 2.0f);
  CHECK(r[1] == 0.5f);
  CHECK(r[2] == 0.0f);
  CHECK(r[3] == 8.0f);
  CHECK(channel_range_spread(xt::xarray<float>(xt::zeros<float>({3, 2}))) == 1.0);
  layer_weights l;
  l.weight = xt::xarray<float>{{1.0f, -4.0f, 0.5f, 0.0f}, {-2.0f, 1.0f, 0.0f, 0.25f}};
  const auto in = input_channel_ranges(l, 2);  // channel 0 = features 0,1; channel 1 = features 2,3
  CHECK(in[0] == 4.0f);
  CHECK(in[1] == 0.5f);
  CHECK_THROWS_AS(channel_range_spread(xt::xarray<float>{{1.0f, NAN}}), domain_error);
  CHECK_THROWS_AS(channel_range_spread(xt::xarray<float>(xt::zeros<float>({0, 2}))), length_error);
}

TEST_CASE("equalize_pair / equalize_chain validation", "[equalization][validation]") {
  const layer_weights a = make_layer({4, 3}, layer_kind::linear, 71), b = make_layer({2, 4}, layer_kind::linear, 72);
  auto pair = [&](std::function<void(layer_weights&, layer_weights&)> edit, activation_between act = activation_between::relu,
                  std::size_t spatial = 1) {
    layer_weights x = a, y = b;
    edit(x, y);
    equalize_pair(x, y, act, spatial);
  };
  auto none = [](layer_weights&, layer_weights&) {};
  SECTION("bounded activation") {
    CHECK_THROWS_AS(pair(none, activation_between::relu6), invalid_argument);
    CHECK_THROWS_WITH(pair(none, activation_between::relu6), Catch::Contains("act = relu6"));
  }
  SECTION("shapes and channel counts") {
    CHECK_THROWS_AS(pair(none, activation_between::relu, 0), invalid_argument);
    CHECK_THROWS_AS(pair(none, activation_between::relu, 3), length_error);  // 4 features, spatial 3
    CHECK_THROWS_AS(pair(none, activation_between::relu, 2), length_error);  // 2 channels != 4
    CHECK_THROWS_AS(pair([](layer_weights&, layer_weights& y) { y.weight = random_weight({2, 5}, 1); }), length_error);
    CHECK_THROWS_AS(pair([](layer_weights& x, layer_weights&) { x.bias = xt::zeros<float>({3}); }), length_error);
    CHECK_THROWS_AS(pair([](layer_weights& x, layer_weights&) { x.weight = random_weight({4, 3, 1}, 2); }), length_error);
    CHECK_THROWS_AS(pair([](layer_weights&, layer_weights& y) {
                      y.kind = layer_kind::depthwise_conv2d;
                      y.weight = random_weight({4, 2, 3, 3}, 3);
                      y.bias = xt::zeros<float>({4});
                    }),
                    length_error);
    CHECK_THROWS_AS(pair([](layer_weights& x, layer_weights&) {
                      x.output = channel_gaussian{xt::zeros<float>({3}), xt::zeros<float>({3})};
                    }),
                    length_error);
    CHECK_THROWS_AS(pair([](layer_weights&, layer_weights& y) {
                      y.kind = layer_kind::conv2d;
                      y.weight = random_weight({2, 4, 3, 3}, 4);
                    },
                         activation_between::relu, 2),
                    invalid_argument);  // spatial must be 1 for a conv second layer
  }
  SECTION("non-finite values and negative std") {
    CHECK_THROWS_AS(pair([](layer_weights& x, layer_weights&) { x.weight(1, 1) = NAN; }), domain_error);
    CHECK_THROWS_AS(pair([](layer_weights&, layer_weights& y) { y.weight(0, 3) = INFINITY; }), domain_error);
    CHECK_THROWS_AS(pair([](layer_weights& x, layer_weights&) { x.bias[0] = NAN; }), domain_error);
    CHECK_THROWS_AS(pair([](layer_weights& x, layer_weights&) {
                      x.output = channel_gaussian{xt::zeros<float>({4}), xt::zeros<float>({4})};
                      x.output->std[2] = -1.0f;
                    }),
                    invalid_argument);
  }
  SECTION("a rescaled bias that overflows float; nothing is modified") {
    layer_weights x = a, y = b;
    for (std::size_t k = 0; k < 3; ++k) x.weight(0, k) = 1e-20f;
    for (std::size_t o = 0; o < 2; ++o) y.weight(o, 0) = 1e20f;
    x.bias[0] = 1e30f;  // S_0 = 1e-20: b / S overflows
    const layer_weights x0 = x, y0 = y;
    CHECK_THROWS_AS(equalize_pair(x, y), domain_error);
    require_bitwise_equal(x.weight.data(), x0.weight.data(), x.weight.size(), "first untouched");
    require_bitwise_equal(y.weight.data(), y0.weight.data(), y.weight.size(), "second untouched");
  }
  SECTION("chain arguments; a bad later pair changes nothing") {
    layer_weights x = a, y = b, z = make_layer({3, 2}, layer_kind::linear, 73);
    const layer_weights x0 = x;
    using A = activation_between;
    CHECK_THROWS_AS(equalize_chain({&x}, {}, {}), invalid_argument);
    CHECK_THROWS_AS(equalize_chain({&x, &y, &z}, {A::relu}, {1, 1}), length_error);
    CHECK_THROWS_AS(equalize_chain({&x, &y, &z}, {A::relu, A::relu}, {1}), length_error);
    CHECK_THROWS_AS(equalize_chain({&x, nullptr, &z}, {A::relu, A::relu}, {1, 1}), invalid_argument);
    CHECK_THROWS_AS(equalize_chain({&x, &y, &z}, {A::relu, A::relu6}, {1, 1}), invalid_argument);
    CHECK_THROWS_AS(equalize_chain({&x, &y, &z}, {A::relu, A::relu}, {1, 0}), invalid_argument);
    CHECK_THROWS_WITH(equalize_chain({&x, &y, &z}, {A::relu, A::relu6}, {1, 1}), Catch::Contains("acts[1]"));
    equalization_options bad;
    bad.threshold = -1;
    CHECK_THROWS_AS(equalize_chain({&x, &y}, {A::relu}, {1}, bad), invalid_argument);
    bad.threshold = NAN;
    CHECK_THROWS_AS(equalize_chain({&x, &y}, {A::relu}, {1}, bad), invalid_argument);
    bad = {};
    bad.max_sweeps = 0;
    CHECK_THROWS_AS(equalize_chain({&x, &y}, {A::relu}, {1}, bad), invalid_argument);
    z.weight = random_weight({3, 5}, 74);  // pair 1 does not chain
    CHECK_THROWS_AS(equalize_chain({&x, &y, &z}, {A::relu, A::relu}, {1, 1}), length_error);
    require_bitwise_equal(x.weight.data(), x0.weight.data(), x.weight.size(), "first pair untouched");
  }
}
