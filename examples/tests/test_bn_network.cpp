// The demo's batch-norm network (examples/fashion_mnist/bn_network.hpp): each layer kind's
// forward against a direct loop written here from its formula, batch norm in training and
// inference mode against the formulas, PyTorch's running-average update, and the backward
// against central finite differences of the whole network in double precision.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "../fashion_mnist/bn_network.hpp"

// Everything below in its own namespace: the test files may be compiled together (unity build).
namespace bn_network_tests {

using namespace examples;
using K = bn_layer_spec::kind;

namespace {

template <class T>
tensor2<T> random_matrix(std::size_t r, std::size_t c, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> n(0.0, scale);
  tensor2<T> m = tensor2<T>::from_shape({r, c});
  for (auto& v : m) v = static_cast<T>(n(rng));
  return m;
}

template <class T>
void randomize(basic_bn_network<T>& net, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.5, 1.5), s(-0.5, 0.5);
  for (auto& L : net.layers) {
    L.W = random_matrix<T>(L.W.shape()[0], L.W.shape()[1], rng, 0.5);
    for (auto& v : L.b) v = static_cast<T>(s(rng));
    if (L.spec.batchnorm) {
      for (auto& v : L.gamma) v = static_cast<T>(u(rng));
      for (auto& v : L.beta) v = static_cast<T>(s(rng));
      for (auto& v : L.running_mean) v = static_cast<T>(s(rng));
      for (auto& v : L.running_var) v = static_cast<T>(u(rng));
    }
  }
}

// x[b, y, x, c] of a channels-last batch, 0 outside the image (zero padding).
double at(const tensor2<double>& x, std::size_t b, std::ptrdiff_t y, std::ptrdiff_t xx, std::size_t c, std::size_t H,
          std::size_t W, std::size_t C) {
  if (y < 0 || xx < 0 || y >= static_cast<std::ptrdiff_t>(H) || xx >= static_cast<std::ptrdiff_t>(W)) return 0.0;
  return x(b, (static_cast<std::size_t>(y) * W + static_cast<std::size_t>(xx)) * C + c);
}

basic_bn_network<double> single(const bn_layer_spec& s, std::mt19937_64& rng) {
  auto net = make_bn_network<double>("one", {s}, 7);
  randomize(net, rng);
  return net;
}

// A small network with every layer kind: 8x8x2 input.
std::vector<bn_layer_spec> small_specs() {
  return {{K::conv3x3, 2, 4, 8, 8, true, true, false, false},
          {K::depthwise3x3, 4, 4, 8, 8, true, true, false, false},
          {K::pointwise, 4, 6, 8, 8, true, true, true, false},
          {K::depthwise3x3, 6, 6, 4, 4, true, true, false, false},
          {K::pointwise, 6, 5, 4, 4, true, true, true, false},
          {K::dense, 5, 3, 2, 2, false, false, false, true}};
}

}  // namespace

TEST_CASE("bn_network: each layer kind's forward equals its formula", "[bn_network]") {
  std::mt19937_64 rng(11);
  const std::size_t B = 2, H = 5, W = 4;

  SECTION("conv3x3 with padding 1, weight columns ordered (ky, kx, c)") {
    const std::size_t C = 3, O = 4;
    auto net = single({K::conv3x3, C, O, H, W, false, false, false, false}, rng);
    const tensor2<double> x = random_matrix<double>(B, H * W * C, rng);
    const tensor2<double> z = bn_forward(net, x, false);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t y = 0; y < H; ++y)
        for (std::size_t xx = 0; xx < W; ++xx)
          for (std::size_t o = 0; o < O; ++o) {
            double e = net.layers[0].b[o];
            for (std::size_t ky = 0; ky < 3; ++ky)
              for (std::size_t kx = 0; kx < 3; ++kx)
                for (std::size_t c = 0; c < C; ++c)
                  e += net.layers[0].W(o, (ky * 3 + kx) * C + c) *
                       at(x, b, static_cast<std::ptrdiff_t>(y + ky) - 1, static_cast<std::ptrdiff_t>(xx + kx) - 1, c, H, W, C);
            CHECK(z(b, (y * W + xx) * O + o) == Approx(e).epsilon(1e-12).margin(1e-12));
          }
  }

  SECTION("depthwise 3x3: channel c reads input channel c only, weight [C, 3ky+kx]") {
    const std::size_t C = 5;
    auto net = single({K::depthwise3x3, C, C, H, W, false, false, false, false}, rng);
    const tensor2<double> x = random_matrix<double>(B, H * W * C, rng);
    const tensor2<double> z = bn_forward(net, x, false);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t y = 0; y < H; ++y)
        for (std::size_t xx = 0; xx < W; ++xx)
          for (std::size_t c = 0; c < C; ++c) {
            double e = net.layers[0].b[c];
            for (std::size_t ky = 0; ky < 3; ++ky)
              for (std::size_t kx = 0; kx < 3; ++kx)
                e += net.layers[0].W(c, ky * 3 + kx) *
                     at(x, b, static_cast<std::ptrdiff_t>(y + ky) - 1, static_cast<std::ptrdiff_t>(xx + kx) - 1, c, H, W, C);
            CHECK(z(b, (y * W + xx) * C + c) == Approx(e).epsilon(1e-12).margin(1e-12));
          }
  }

  SECTION("pointwise + ReLU + 2x2 max-pool") {
    const std::size_t C = 3, O = 2;
    auto net = single({K::pointwise, C, O, H - 1, W, false, true, true, false}, rng);
    const tensor2<double> x = random_matrix<double>(B, (H - 1) * W * C, rng);
    const tensor2<double> z = bn_forward(net, x, false);
    REQUIRE(z.shape()[1] == 2 * 2 * O);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t y = 0; y < 2; ++y)
        for (std::size_t xx = 0; xx < 2; ++xx)
          for (std::size_t o = 0; o < O; ++o) {
            double best = -1.0;
            for (std::size_t dy = 0; dy < 2; ++dy)
              for (std::size_t dx = 0; dx < 2; ++dx) {
                double v = net.layers[0].b[o];
                for (std::size_t c = 0; c < C; ++c)
                  v += net.layers[0].W(o, c) * x(b, ((2 * y + dy) * W + 2 * xx + dx) * C + c);
                best = std::max(best, std::max(v, 0.0));
              }
            CHECK(z(b, (y * 2 + xx) * O + o) == Approx(best).epsilon(1e-12).margin(1e-12));
          }
  }

  SECTION("dense after global average pooling") {
    const std::size_t C = 4, O = 3;
    auto net = single({K::dense, C, O, H, W, false, false, false, true}, rng);
    const tensor2<double> x = random_matrix<double>(B, H * W * C, rng);
    const tensor2<double> z = bn_forward(net, x, false);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t o = 0; o < O; ++o) {
        double e = net.layers[0].b[o];
        for (std::size_t c = 0; c < C; ++c) {
          double mean = 0.0;
          for (std::size_t p = 0; p < H * W; ++p) mean += x(b, p * C + c);
          e += net.layers[0].W(o, c) * mean / static_cast<double>(H * W);
        }
        CHECK(z(b, o) == Approx(e).epsilon(1e-12).margin(1e-12));
      }
  }
}

TEST_CASE("bn_network: batch norm in training and inference mode", "[bn_network]") {
  std::mt19937_64 rng(12);
  const std::size_t B = 3, H = 3, W = 4, C = 3, O = 4, P = B * H * W;
  auto net = single({K::pointwise, C, O, H, W, true, false, false, false}, rng);
  const tensor2<double> x = random_matrix<double>(B, H * W * C, rng, 2.0);
  // The pre-BN output z = x W^T, per row (pixel) and channel.
  auto z_of = [&](std::size_t p, std::size_t o) {
    double v = 0.0;
    for (std::size_t c = 0; c < C; ++c) v += net.layers[0].W(o, c) * x.data()[p * C + c];
    return v;
  };
  std::vector<double> mean(O, 0.0), var(O, 0.0);
  for (std::size_t o = 0; o < O; ++o) {
    for (std::size_t p = 0; p < P; ++p) mean[o] += z_of(p, o) / P;
    for (std::size_t p = 0; p < P; ++p) var[o] += (z_of(p, o) - mean[o]) * (z_of(p, o) - mean[o]) / P;
  }
  const auto& L = net.layers[0];

  SECTION("training mode normalizes with the batch mean and biased variance") {
    const tensor2<double> y = bn_forward(net, x, true);
    for (std::size_t p = 0; p < P; ++p)
      for (std::size_t o = 0; o < O; ++o) {
        const double e = L.gamma[o] * (z_of(p, o) - mean[o]) / std::sqrt(var[o] + net.bn_eps) + L.beta[o];
        CHECK(y.data()[p * O + o] == Approx(e).epsilon(1e-12).margin(1e-12));
      }
  }

  SECTION("inference mode normalizes with the running statistics") {
    const tensor2<double> y = bn_forward(net, x, false);
    for (std::size_t p = 0; p < P; ++p)
      for (std::size_t o = 0; o < O; ++o) {
        const double e =
            L.gamma[o] * (z_of(p, o) - L.running_mean[o]) / std::sqrt(L.running_var[o] + net.bn_eps) + L.beta[o];
        CHECK(y.data()[p * O + o] == Approx(e).epsilon(1e-12).margin(1e-12));
      }
  }

  SECTION("running averages: momentum 0.1, unbiased variance (PyTorch)") {
    const std::vector<double> rm0(L.running_mean.begin(), L.running_mean.end());
    const std::vector<double> rv0(L.running_var.begin(), L.running_var.end());
    std::vector<bn_layer_cache<double>> cache;
    bn_forward(net, x, true, &cache);
    update_running_statistics(net, cache);
    for (std::size_t o = 0; o < O; ++o) {
      CHECK(net.layers[0].running_mean[o] == Approx(0.9 * rm0[o] + 0.1 * mean[o]).epsilon(1e-13));
      CHECK(net.layers[0].running_var[o] ==
            Approx(0.9 * rv0[o] + 0.1 * var[o] * P / (P - 1.0)).epsilon(1e-13));
    }
  }

  SECTION("a training-mode forward leaves the network unchanged") {
    const auto before = net.layers[0].running_mean;
    bn_forward(net, x, true);
    CHECK(bool(xt::all(xt::equal(net.layers[0].running_mean, before))));
  }
}

TEST_CASE("bn_network: backward equals central finite differences (double)", "[bn_network]") {
  std::mt19937_64 rng(13);
  auto net = make_bn_network<double>("small", small_specs(), 3);
  randomize(net, rng);
  const std::size_t B = 3;
  const tensor2<double> x = random_matrix<double>(B, net.in_features(), rng);
  const tensor2<double> R = random_matrix<double>(B, 3, rng);  // loss = sum R * logits
  auto loss = [&](const basic_bn_network<double>& n, const tensor2<double>& in) {
    const tensor2<double> logits = bn_forward(n, in, true);
    double s = 0.0;
    for (std::size_t i = 0; i < logits.size(); ++i) s += R.data()[i] * logits.data()[i];
    return s;
  };
  std::vector<bn_layer_cache<double>> cache;
  bn_forward(net, x, true, &cache);
  const bn_gradients<double> g = bn_backward(net, cache, R, true);

  const double h = 1e-6;
  double worst = 0.0;
  std::size_t checked = 0;
  // |analytic - fd| relative to max(1, |analytic|): ReLU kinks and pooling ties are
  // measure-zero on random data; the FD truncation and rounding errors are ~1e-9 here.
  auto compare = [&](double analytic, double& param, basic_bn_network<double>& n, const tensor2<double>& in) {
    const double saved = param;
    param = saved + h;
    const double up = loss(n, in);
    param = saved - h;
    const double down = loss(n, in);
    param = saved;
    const double fd = (up - down) / (2 * h);
    const double err = std::fabs(analytic - fd) / std::max(1.0, std::fabs(analytic));
    worst = std::max(worst, err);
    ++checked;
    return err;
  };
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    auto& L = net.layers[l];
    INFO("layer " << l);
    for (std::size_t i = 0; i < L.W.size(); ++i) CHECK(compare(g.dW[l].data()[i], L.W.data()[i], net, x) < 1e-6);
    if (L.spec.batchnorm) {
      for (std::size_t i = 0; i < L.gamma.size(); ++i) CHECK(compare(g.dgamma[l][i], L.gamma[i], net, x) < 1e-6);
      for (std::size_t i = 0; i < L.beta.size(); ++i) CHECK(compare(g.dbeta[l][i], L.beta[i], net, x) < 1e-6);
    } else {
      for (std::size_t i = 0; i < L.b.size(); ++i) CHECK(compare(g.db[l][i], L.b[i], net, x) < 1e-6);
    }
  }
  tensor2<double> xin = x;
  for (std::size_t i = 0; i < xin.size(); ++i) CHECK(compare(g.dinput.data()[i], xin.data()[i], net, xin) < 1e-6);
  INFO("worst relative error " << worst << " over " << checked << " derivatives");
  CHECK(checked > 400);
  CHECK(worst < 1e-6);
}

TEST_CASE("bn_network: the demo's network has the shapes of the issue", "[bn_network]") {
  const auto net = make_bn_network<float>("bnnet", bnnet_specs(), 1);
  REQUIRE(net.layers.size() == 6);
  CHECK(net.in_features() == 784);
  CHECK(net.layers[0].W.shape() == std::array<std::size_t, 2>{16, 9});
  CHECK(net.layers[1].W.shape() == std::array<std::size_t, 2>{16, 9});
  CHECK(net.layers[2].W.shape() == std::array<std::size_t, 2>{32, 16});
  CHECK(net.layers[3].W.shape() == std::array<std::size_t, 2>{32, 9});
  CHECK(net.layers[4].W.shape() == std::array<std::size_t, 2>{64, 32});
  CHECK(net.layers[5].W.shape() == std::array<std::size_t, 2>{10, 64});
  for (std::size_t l = 0; l + 1 < net.layers.size(); ++l)
    CHECK(net.layers[l].spec.out_features() == net.layers[l + 1].spec.in_features());
  const tensor2<float> logits = bn_forward(net, tensor2<float>(xt::zeros<float>({2, 784})), false);
  CHECK(logits.shape() == std::array<std::size_t, 2>{2, 10});
}

}  // namespace bn_network_tests
