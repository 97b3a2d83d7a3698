#include <quant/batchnorm_folding.hpp>
#include <quant/reference/transforms.hpp>

#include <cmath>
#include <limits>
#include <random>

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include "small_nets.hpp"
#include "test_helpers.hpp"

using namespace quant;
using namespace quant_test;

namespace {

// Seeded BN parameters with negative and positive gammas and variances over decades.
batchnorm_params random_bn(std::size_t n, std::uint32_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  batchnorm_params bn;
  bn.gamma = bn.beta = bn.running_mean = bn.running_var = xt::xtensor<float, 1>::from_shape({n});
  for (std::size_t i = 0; i < n; ++i) {
    bn.gamma[i] = static_cast<float>(2.0 * u(g));
    bn.beta[i] = static_cast<float>(u(g));
    bn.running_mean[i] = static_cast<float>(0.5 * u(g));
    bn.running_var[i] = static_cast<float>(std::pow(10.0, 2.0 * u(g)));
  }
  bn.running_var[0] = 0.0f;  // a dead channel: only eps keeps the factor finite
  return bn;
}

// Direct eval-mode BN of a [C, H, W] map in double.
map3 batchnorm(map3 y, const batchnorm_params& bn) {
  for (std::size_t c = 0; c < y.C; ++c)
    for (std::size_t i = 0; i < y.H * y.W; ++i) {
      double& v = y.v[c * y.H * y.W + i];
      v = static_cast<double>(bn.gamma[c]) * (v - bn.running_mean[c]) / std::sqrt(static_cast<double>(bn.running_var[c]) + bn.eps) +
          bn.beta[c];
    }
  return y;
}

ref::weight3 to_weight3(const xt::xarray<float>& w) {
  const std::size_t out = w.shape()[0], per = w.size() / out;
  ref::weight3 r(out, std::vector<std::vector<double>>(1, std::vector<double>(per)));
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t k = 0; k < per; ++k) r[o][0][k] = w.data()[o * per + k];
  return r;
}

using quant_test::to_vector;

}  // namespace

TEST_CASE("fold_batchnorm: the folded conv equals conv followed by BN", "[batchnorm_folding]") {
  const map3 x = random_map(3, 7, 6, 11);
  SECTION("conv2d, groups 1, with bias") {
    const auto w = random_weight({5, 3, 3, 3}, 1);
    const auto b = random_bias(5, 2);
    const batchnorm_params bn = random_bn(5, 3);
    const folded_layer f = fold_batchnorm(w, b, bn);
    REQUIRE(f.weight.shape() == w.shape());
    const map3 want = batchnorm(conv2d(w, b, x, 1, 1), bn);
    const map3 got = conv2d(f.weight, f.bias, x, 1, 1);
    CHECK(relative_difference(got.v, want.v) < 1e-6);
  }
  SECTION("depthwise conv (groups = C), no bias") {
    const auto w = random_weight({3, 1, 3, 3}, 4);
    const batchnorm_params bn = random_bn(3, 5);
    const folded_layer f = fold_batchnorm(w, bn);
    const xt::xtensor<float, 1> zero = xt::zeros<float>({3});
    const map3 want = batchnorm(conv2d(w, zero, x, 3, 1), bn);
    const map3 got = conv2d(f.weight, f.bias, x, 3, 1);
    CHECK(relative_difference(got.v, want.v) < 1e-6);
  }
  SECTION("grouped conv (groups 3, 6 outputs) and stride 2") {
    const auto w = random_weight({6, 1, 3, 3}, 6);
    const auto b = random_bias(6, 7);
    const batchnorm_params bn = random_bn(6, 8);
    const folded_layer f = fold_batchnorm(w, b, bn);
    const map3 want = batchnorm(conv2d(w, b, x, 3, 0, 2), bn);
    const map3 got = conv2d(f.weight, f.bias, x, 3, 0, 2);
    CHECK(relative_difference(got.v, want.v) < 1e-6);
  }
  SECTION("linear (BatchNorm1d)") {
    const auto w = random_weight({4, 9}, 9);
    const auto b = random_bias(4, 10);
    const batchnorm_params bn = random_bn(4, 12);
    const folded_layer f = fold_batchnorm(w, b, bn);
    for (std::uint32_t s = 0; s < 5; ++s) {
      const auto in = random_vector(9, 100 + s);
      map3 y(4, 1, 1);
      y.v = linear(w, b, in);
      const map3 want = batchnorm(y, bn);
      CHECK(relative_difference(linear(f.weight, f.bias, in), want.v) < 1e-6);
    }
  }
}

TEST_CASE("fold_batchnorm: every element is the double result rounded once; output = (beta, |gamma|)",
          "[batchnorm_folding]") {
  const auto w = random_weight({6, 2, 3, 3}, 21);
  const auto b = random_bias(6, 22);
  batchnorm_params bn = random_bn(6, 23);
  bn.eps = 1e-3;
  const folded_layer f = fold_batchnorm(w, b, bn);
  ref::weight3 rw = to_weight3(w);
  std::vector<double> rb = to_vector(b);
  ref::fold_batchnorm(rw, rb, to_vector(bn.gamma), to_vector(bn.beta), to_vector(bn.running_mean),
                      to_vector(bn.running_var), bn.eps);
  const std::size_t per = w.size() / 6;
  for (std::size_t o = 0; o < 6; ++o) {
    for (std::size_t k = 0; k < per; ++k) REQUIRE(f.weight.data()[o * per + k] == static_cast<float>(rw[o][0][k]));
    CHECK(f.bias[o] == static_cast<float>(rb[o]));
    CHECK(f.output.mean[o] == bn.beta[o]);
    CHECK(f.output.std[o] == std::fabs(bn.gamma[o]));
  }
}

TEST_CASE("fold_batchnorm: accepts views and other value types", "[batchnorm_folding]") {
  const auto w = random_weight({4, 6}, 31);
  const batchnorm_params bn = random_bn(4, 32);
  const xt::xarray<double> wd = w;
  const folded_layer a = fold_batchnorm(w, bn);
  const folded_layer b = fold_batchnorm(wd, bn);
  const xt::xarray<float> wide = xt::concatenate(xt::xtuple(w, w), 1);
  const folded_layer c = fold_batchnorm(xt::view(wide, xt::all(), xt::range(0, 6)), bn);
  require_bitwise_equal(a.weight.data(), b.weight.data(), a.weight.size(), "double input");
  require_bitwise_equal(a.weight.data(), c.weight.data(), a.weight.size(), "strided view");
  require_bitwise_equal(a.bias.data(), c.bias.data(), 4, "bias");
}

TEST_CASE("fold_batchnorm: validation names the argument", "[batchnorm_folding][validation]") {
  const auto w = random_weight({3, 2}, 41);
  const auto b = random_bias(3, 42);
  const batchnorm_params good = random_bn(3, 43);
  auto with = [&](auto edit) {
    batchnorm_params bn = good;
    edit(bn);
    return bn;
  };
  SECTION("channel counts") {
    CHECK_THROWS_AS(fold_batchnorm(w, with([](batchnorm_params& p) { p.gamma = xt::zeros<float>({4}); })), length_error);
    CHECK_THROWS_AS(fold_batchnorm(w, with([](batchnorm_params& p) { p.beta = xt::zeros<float>({2}); })), length_error);
    CHECK_THROWS_AS(fold_batchnorm(w, with([](batchnorm_params& p) { p.running_mean = xt::zeros<float>({1}); })),
                    length_error);
    CHECK_THROWS_AS(fold_batchnorm(w, with([](batchnorm_params& p) { p.running_var = xt::ones<float>({5}); })),
                    length_error);
    CHECK_THROWS_AS(fold_batchnorm(w, xt::xtensor<float, 1>(xt::zeros<float>({2})), good), length_error);
    CHECK_THROWS_AS(fold_batchnorm(w, xt::xtensor<float, 2>(xt::zeros<float>({3, 1})), good), length_error);
    CHECK_THROWS_AS(fold_batchnorm(xt::xarray<float>(xt::zeros<float>({0, 2})), xt::xtensor<float, 1>(), good),
                    length_error);
    CHECK_THROWS_WITH(fold_batchnorm(w, with([](batchnorm_params& p) { p.gamma = xt::zeros<float>({4}); })),
                      Catch::Contains("bn.gamma.size() = 4"));
  }
  SECTION("negative variance, eps") {
    CHECK_THROWS_AS(fold_batchnorm(w, with([](batchnorm_params& p) { p.running_var[1] = -1e-3f; })), invalid_argument);
    CHECK_THROWS_WITH(fold_batchnorm(w, with([](batchnorm_params& p) { p.running_var[1] = -1e-3f; })),
                      Catch::Contains("bn.running_var[1]"));
    CHECK_THROWS_AS(fold_batchnorm(w, with([](batchnorm_params& p) { p.eps = 0.0; })), invalid_argument);
    CHECK_THROWS_AS(fold_batchnorm(w, with([](batchnorm_params& p) { p.eps = -1e-5; })), invalid_argument);
    CHECK_THROWS_AS(fold_batchnorm(w, with([](batchnorm_params& p) { p.eps = std::nan(""); })), invalid_argument);
    CHECK_THROWS_AS(fold_batchnorm(w, with([](batchnorm_params& p) { p.eps = INFINITY; })), invalid_argument);
  }
  SECTION("non-finite values") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(fold_batchnorm(w, with([&](batchnorm_params& p) { p.gamma[2] = nan; })), domain_error);
    CHECK_THROWS_AS(fold_batchnorm(w, with([&](batchnorm_params& p) { p.beta[0] = INFINITY; })), domain_error);
    CHECK_THROWS_AS(fold_batchnorm(w, with([&](batchnorm_params& p) { p.running_mean[0] = -INFINITY; })), domain_error);
    CHECK_THROWS_AS(fold_batchnorm(w, with([&](batchnorm_params& p) { p.running_var[0] = nan; })), domain_error);
    auto wn = w;
    wn(1, 1) = nan;
    CHECK_THROWS_AS(fold_batchnorm(wn, good), domain_error);
    CHECK_THROWS_WITH(fold_batchnorm(wn, good), Catch::Contains("weight[3]"));
    auto bn = b;
    bn[2] = INFINITY;
    CHECK_THROWS_AS(fold_batchnorm(w, bn, good), domain_error);
  }
  SECTION("a folded value that overflows float") {
    auto big = w;
    big(0, 0) = 3e38f;
    CHECK_THROWS_AS(fold_batchnorm(big, with([](batchnorm_params& p) {
                                     p.gamma[0] = 10.0f;
                                     p.running_var[0] = 1.0f;
                                   })),
                    domain_error);
  }
}
