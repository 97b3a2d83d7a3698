#include <quant/bias_correction.hpp>
#include <quant/im2col.hpp>
#include <quant/reference/transforms.hpp>

#include <algorithm>
#include <cmath>
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

// Round-to-nearest on a symmetric grid of step s: a stand-in for any weight quantizer.
xt::xarray<float> quantized(const xt::xarray<float>& w, float s) {
  xt::xarray<float> q = w;
  for (auto& v : q) v = std::nearbyint(v / s) * s;
  return q;
}

// Rows of seeded U[lo, hi) floats (non-negative by default: ReLU outputs have a nonzero mean).
xt::xtensor<float, 2> uniform_rows(std::size_t n, std::size_t f, std::uint32_t seed, double lo = 0.0, double hi = 2.0) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  xt::xtensor<float, 2> x = xt::xtensor<float, 2>::from_shape({n, f});
  for (auto& v : x) v = static_cast<float>(d(g));
  return x;
}

ref::weight3 as_weight3(const xt::xarray<float>& w, layer_kind kind, std::size_t spatial = 1) {
  const std::size_t out = w.shape()[0];
  const std::size_t C = kind == layer_kind::linear ? w.shape()[1] / spatial : w.shape()[1];
  const std::size_t taps = kind == layer_kind::linear ? spatial : w.shape()[2] * w.shape()[3];
  ref::weight3 r(out, std::vector<std::vector<double>>(C, std::vector<double>(taps)));
  for (std::size_t i = 0; i < w.size(); ++i) r[i / (C * taps)][(i / taps) % C][i % taps] = w.data()[i];
  return r;
}

}  // namespace

TEST_CASE("input_mean_accumulator: streaming mean, merge of random splits equals one pass", "[bias_correction]") {
  SECTION("mean of batches equals the direct double mean") {
    const auto x = uniform_rows(301, 7, 1, -3.0, 5.0);
    input_mean_accumulator acc(7);
    for (std::size_t b = 0; b < 301; b += 64)
      acc.add(xt::view(x, xt::range(b, std::min<std::size_t>(b + 64, 301)), xt::all()));
    acc.add(xt::xtensor<float, 2>::from_shape({0, 7}));
    CHECK(acc.count() == 301);
    const auto m = acc.mean();
    for (std::size_t k = 0; k < 7; ++k) {
      double s = 0;
      for (std::size_t i = 0; i < 301; ++i) s += x(i, k);
      CHECK(std::fabs(m[k] - s / 301) <= 1e-15 * std::fabs(s / 301) + 1e-16);
    }
  }
  SECTION("random splits") {
    std::mt19937_64 g(2);
    for (bool dyadic : {true, false}) {
      // Dyadic values (k / 1024, |k| < 4096) sum exactly in double: merge must be bit-equal.
      xt::xtensor<float, 2> x = uniform_rows(500, 5, 3, -4.0, 4.0);
      if (dyadic)
        for (auto& v : x) v = std::nearbyint(v * 1024.0f) / 1024.0f;
      input_mean_accumulator whole(5);
      whole.add(x);
      for (int trial = 0; trial < 10; ++trial) {
        std::vector<std::size_t> cuts = {0, 500};
        std::uniform_int_distribution<std::size_t> u(0, 500);
        for (int k = 0; k < 4; ++k) cuts.push_back(u(g));
        std::sort(cuts.begin(), cuts.end());
        input_mean_accumulator merged(5);
        for (std::size_t k = 0; k + 1 < cuts.size(); ++k) {
          input_mean_accumulator part(5);
          part.add(xt::view(x, xt::range(cuts[k], cuts[k + 1]), xt::all()));
          merged.merge(part);
        }
        CHECK(merged.count() == 500);
        const auto a = merged.mean(), b = whole.mean();
        for (std::size_t f = 0; f < 5; ++f) {
          if (dyadic)
            CHECK(a[f] == b[f]);
          else
            CHECK(std::fabs(a[f] - b[f]) <= 1e-14 * std::max(1.0, std::fabs(b[f])));
        }
      }
    }
  }
  SECTION("validation") {
    CHECK_THROWS_AS(input_mean_accumulator(0), invalid_argument);
    input_mean_accumulator acc(3);
    CHECK_THROWS_AS(acc.mean(), invalid_argument);
    CHECK_THROWS_AS(acc.add(xt::xtensor<float, 2>::from_shape({2, 4})), length_error);
    CHECK_THROWS_AS(acc.add(xt::xtensor<float, 1>::from_shape({3})), length_error);
    xt::xtensor<float, 2> bad = xt::zeros<float>({2, 3});
    bad(1, 2) = NAN;
    CHECK_THROWS_AS(acc.add(bad), domain_error);
    CHECK(acc.count() == 0);  // the rejected batch added nothing
    CHECK_THROWS_AS(acc.merge(input_mean_accumulator(2)), length_error);
  }
}

TEST_CASE("empirical_bias_correction removes the mean output shift on the calibration data", "[bias_correction]") {
  SECTION("linear") {
    const auto w = random_weight({6, 10}, 11);
    const auto wq = quantized(w, 0.25f);
    const auto b = random_bias(6, 12);
    const auto x = uniform_rows(400, 10, 13);
    input_mean_accumulator acc(10);
    for (std::size_t s = 0; s < 400; s += 37) acc.add(xt::view(x, xt::range(s, std::min<std::size_t>(s + 37, 400)), xt::all()));
    const xt::xtensor<float, 1> delta = empirical_bias_correction(w, wq, acc);
    xt::xtensor<float, 1> b_new = b - delta;
    std::vector<double> shift_before(6, 0.0), shift_after(6, 0.0);
    for (std::size_t i = 0; i < 400; ++i) {
      const std::vector<double> xi(x.begin() + i * 10, x.begin() + (i + 1) * 10);
      const auto y = linear(w, b, xi), yq = linear(wq, b, xi), yc = linear(wq, b_new, xi);
      for (std::size_t o = 0; o < 6; ++o) {
        shift_before[o] += (yq[o] - y[o]) / 400;
        shift_after[o] += (yc[o] - y[o]) / 400;
      }
    }
    double largest = 0;
    for (std::size_t o = 0; o < 6; ++o) {
      largest = std::max(largest, std::fabs(shift_before[o]));
      // delta rounded to float, b - delta rounded to float: a few 1e-7 of |b| + |delta|
      CHECK(std::fabs(shift_after[o]) <= 4e-7 * (std::fabs(b[o]) + std::fabs(delta[o])) + 1e-12);
    }
    CHECK(largest > 0.05);  // there was a shift to remove
  }
  SECTION("conv2d (padding 1) through im2col rows, and depthwise") {
    const std::size_t N = 3, C = 3, H = 6, W = 5;
    xt::xtensor<float, 4> x = xt::xtensor<float, 4>::from_shape({N, C, H, W});
    {
      const auto r = uniform_rows(N * C * H * W, 1, 21);
      std::copy(r.begin(), r.end(), x.begin());
    }
    conv2d_shape g;
    g.channels = C;
    g.height = H;
    g.width = W;
    g.kernel_h = g.kernel_w = 3;
    g.pad_h = g.pad_w = 1;
    for (bool depthwise : {false, true}) {
      INFO((depthwise ? "depthwise" : "conv2d"));
      const std::size_t out = depthwise ? C : 4;
      const auto w = depthwise ? random_weight({C, 1, 3, 3}, 22) : random_weight({out, C, 3, 3}, 23);
      const auto wq = quantized(w, 0.3f);
      const auto b = random_bias(out, 24);
      input_mean_accumulator acc(C * 9);
      for (std::size_t n = 0; n < N; ++n) acc.add(im2col(xt::xtensor<float, 4>(xt::view(x, xt::range(n, n + 1))), g));
      const xt::xtensor<float, 1> delta =
          empirical_bias_correction(w, wq, acc, depthwise ? layer_kind::depthwise_conv2d : layer_kind::conv2d);
      const xt::xtensor<float, 1> b_new = b - delta;
      std::vector<double> shift(out, 0.0), before(out, 0.0);
      for (std::size_t n = 0; n < N; ++n) {
        map3 xn(C, H, W);
        for (std::size_t i = 0; i < C * H * W; ++i) xn.v[i] = x.data()[n * C * H * W + i];
        const std::size_t groups = depthwise ? C : 1;
        const map3 y = conv2d(w, b, xn, groups, 1), yq = conv2d(wq, b, xn, groups, 1), yc = conv2d(wq, b_new, xn, groups, 1);
        for (std::size_t o = 0; o < out; ++o)
          for (std::size_t p = 0; p < H * W; ++p) {
            shift[o] += (yc.v[o * H * W + p] - y.v[o * H * W + p]) / static_cast<double>(N * H * W);
            before[o] += (yq.v[o * H * W + p] - y.v[o * H * W + p]) / static_cast<double>(N * H * W);
          }
      }
      double largest = 0;
      for (std::size_t o = 0; o < out; ++o) {
        largest = std::max(largest, std::fabs(before[o]));
        CHECK(std::fabs(shift[o]) <= 4e-7 * (std::fabs(b[o]) + std::fabs(delta[o])) + 1e-12);
      }
      CHECK(largest > 0.02);
    }
  }
}

TEST_CASE("expected_relu: closed form against mpmath, Monte Carlo and limits", "[bias_correction]") {
  SECTION("40-digit values from mpmath: mu*ncdf(mu/s) + s*npdf(mu/s)") {
    struct row {
      double mu, s, want;
    };
    const row rows[] = {{0, 1, 0.39894228040143267794},
                        {1, 1, 1.0833154705876862984},
                        {-1, 1, 0.083315470587686298383},
                        {2.5, 0.5, 2.5000000267308276692},
                        {-3, 2, 0.058613587525209257215},
                        {-1.25, 1, 0.05058686830545283288},
                        {-1.75, 1, 0.016173794314831606199},
                        {-4.9, 1, 9.096269060079092159e-8},
                        {-5.1, 1, 3.1127138593057757051e-8},
                        {-6, 1, 1.5635697959709664279e-10},
                        {-10, 1, 7.4745602545893280366e-25},
                        {-20, 1, 1.3700124947295799431e-90},
                        {-30, 1, 1.6319567340914011894e-199},
                        {-37, 1, 1.5451991905122024593e-301},
                        {7, 0.01, 7.0},
                        {-0.3, 3.0, 1.0528059936141439961},
                        {0.001, 1000.0, 398.94278040163214908}};
    for (const row& r : rows) {
      INFO("mu " << r.mu << " sigma " << r.s);
      CHECK(std::fabs(expected_relu(r.mu, r.s) - r.want) <= 2e-15 * r.want);
    }
  }
  SECTION("seeded Monte Carlo") {
    std::mt19937_64 g(31);
    for (auto [mu, s] : {std::pair<double, double>{0.7, 1.3}, {-1.5, 0.8}, {0.0, 2.0}, {3.0, 0.5}}) {
      std::normal_distribution<double> d(mu, s);
      const std::size_t n = 1000000;
      double sum = 0, sum2 = 0;
      for (std::size_t i = 0; i < n; ++i) {
        const double v = std::max(d(g), 0.0);
        sum += v;
        sum2 += v * v;
      }
      const double m = sum / n, se = std::sqrt((sum2 / n - m * m) / n);
      INFO("mu " << mu << " sigma " << s << " MC " << m << " +- " << se);
      CHECK(std::fabs(expected_relu(mu, s) - m) < 5 * se);
    }
  }
  SECTION("limits and identities") {
    CHECK(expected_relu(2.0, 0.0) == 2.0);
    CHECK(expected_relu(-2.0, 0.0) == 0.0);
    CHECK(expected_relu(2.0, 1e-300) == 2.0);
    CHECK(expected_relu(-2.0, 1e-300) == 0.0);
    CHECK(std::fabs(expected_relu(2.0, 1e-9) - 2.0) <= 4.5e-16);
    CHECK(expected_relu(-2.0, 1e-9) == 0.0);
    CHECK(std::fabs(expected_relu(0.0, 3.0) - 3.0 / std::sqrt(2 * M_PI)) <= 1e-16 * 3.0);
    for (double mu : {-12.0, -5.0, -1.0, 0.3, 4.0}) {
      // E[ReLU(x)] - E[ReLU(-x)] = E[x] = mu
      CHECK(std::fabs(expected_relu(mu, 1.5) - expected_relu(-mu, 1.5) - mu) <= 1e-15 * std::max(1.0, std::fabs(mu)));
      // positive homogeneity: E[ReLU(a x)] = a E[ReLU(x)]
      CHECK(std::fabs(expected_relu(4 * mu, 6.0) - 4 * expected_relu(mu, 1.5)) <= 1e-14 * expected_relu(4 * mu, 6.0));
    }
    // the two evaluation branches meet at mu/sigma = -1.5 without a step: across it the
    // difference is the derivative dE/dmu = Phi(mu/sigma) times the step
    const double h = 1e-9, lo = expected_relu(-1.5 - h, 1.0), hi = expected_relu(-1.5 + h, 1.0);
    const double slope = 0.5 * std::erfc(1.5 / std::sqrt(2.0));
    CHECK(std::fabs((hi - lo) / (2 * h) - slope) <= 1e-5 * slope);
  }
  SECTION("validation") {
    CHECK_THROWS_AS(expected_relu(0.0, -1.0), invalid_argument);
    CHECK_THROWS_AS(expected_relu(NAN, 1.0), domain_error);
    CHECK_THROWS_AS(expected_relu(0.0, INFINITY), domain_error);
  }
}

TEST_CASE("analytic_bias_correction matches quant::ref for every layer kind", "[bias_correction]") {
  channel_gaussian in;
  in.mean = xt::xtensor<float, 1>{1.5f, -0.5f, 0.0f, -3.0f, 6.5f, 0.25f};
  in.std = xt::xtensor<float, 1>{1.0f, 0.5f, 2.0f, 1.0f, 1.0f, 0.0f};
  struct kind_case {
    layer_kind kind;
    std::vector<std::size_t> shape;
    std::size_t spatial;
  };
  for (const kind_case& k : {kind_case{layer_kind::linear, {4, 6}, 1}, kind_case{layer_kind::linear, {4, 6 * 5}, 5},
                             kind_case{layer_kind::conv2d, {4, 6, 3, 3}, 1},
                             kind_case{layer_kind::depthwise_conv2d, {6, 1, 3, 3}, 1}}) {
    for (activation_between act : {activation_between::identity, activation_between::relu, activation_between::relu6}) {
      INFO(to_string(k.kind) << " spatial " << k.spatial << " " << to_string(act));
      const auto w = random_weight(k.shape, 41);
      const auto wq = quantized(w, 0.2f);
      const xt::xtensor<float, 1> delta = analytic_bias_correction(w, wq, in, act, k.kind, k.spatial);
      std::vector<double> e(6);
      for (std::size_t c = 0; c < 6; ++c) {
        const double m = in.mean[c], s = in.std[c];
        e[c] = act == activation_between::identity ? m
               : act == activation_between::relu   ? ref::expected_relu(m, s)
                                                   : ref::expected_relu(m, s) - ref::expected_relu(m - 6.0, s);
      }
      const bool dw = k.kind == layer_kind::depthwise_conv2d;
      const std::vector<double> want = ref::bias_correction(as_weight3(w, k.kind, k.spatial), as_weight3(wq, k.kind, k.spatial), e, dw);
      REQUIRE(delta.size() == want.size());
      double scale = 0;
      for (double v : want) scale = std::max(scale, std::fabs(v));
      for (std::size_t o = 0; o < want.size(); ++o) CHECK(std::fabs(delta[o] - want[o]) <= 1e-7 * std::fabs(want[o]) + 1e-12 * scale);
    }
  }
}

TEST_CASE("analytic_bias_correction agrees with the empirical one on Gaussian pre-activations", "[bias_correction]") {
  const std::size_t C = 5, n = 400000;
  channel_gaussian in;
  in.mean = xt::xtensor<float, 1>{0.5f, -1.0f, 2.0f, 5.5f, 0.0f};
  in.std = xt::xtensor<float, 1>{1.0f, 0.7f, 1.5f, 1.0f, 3.0f};
  const auto w = random_weight({3, C}, 51);
  const auto wq = quantized(w, 0.4f);
  for (activation_between act : {activation_between::relu, activation_between::relu6}) {
    INFO(to_string(act));
    std::mt19937_64 g(52);
    std::normal_distribution<double> d(0.0, 1.0);
    input_mean_accumulator acc(C);
    xt::xtensor<float, 2> rows = xt::xtensor<float, 2>::from_shape({1000, C});
    std::vector<double> var(C, 0.0);
    for (std::size_t b = 0; b < n / 1000; ++b) {
      for (std::size_t i = 0; i < 1000; ++i)
        for (std::size_t c = 0; c < C; ++c) {
          double v = std::max(0.0, in.mean[c] + in.std[c] * d(g));
          if (act == activation_between::relu6) v = std::min(v, 6.0);
          rows(i, c) = static_cast<float>(v);
          var[c] += v * v / n;
        }
      acc.add(rows);
    }
    const auto m = acc.mean();
    const auto emp = empirical_bias_correction(w, wq, acc);
    const auto ana = analytic_bias_correction(w, wq, in, act, layer_kind::linear);
    for (std::size_t o = 0; o < 3; ++o) {
      double se2 = 0;  // the channels are independent: Var(delta) = sum dW^2 Var(x_c) / n
      for (std::size_t c = 0; c < C; ++c) {
        const double dwc = static_cast<double>(wq(o, c)) - w(o, c);
        se2 += dwc * dwc * (var[c] - m[c] * m[c]) / n;
      }
      INFO("output " << o << " empirical " << emp[o] << " analytic " << ana[o] << " se " << std::sqrt(se2));
      CHECK(std::fabs(emp[o] - ana[o]) < 5 * std::sqrt(se2) + 1e-7);
    }
  }
}

TEST_CASE("bias correction validation", "[bias_correction][validation]") {
  const auto w = random_weight({3, 4}, 61);
  const auto wq = quantized(w, 0.5f);
  input_mean_accumulator acc(4);
  acc.add(uniform_rows(5, 4, 62));
  channel_gaussian in{xt::zeros<float>({4}), xt::ones<float>({4})};
  using A = activation_between;
  SECTION("empirical") {
    CHECK_THROWS_AS(empirical_bias_correction(w, random_weight({3, 5}, 63), acc), length_error);
    CHECK_THROWS_AS(empirical_bias_correction(random_weight({3, 5}, 64), random_weight({3, 5}, 65), acc), length_error);
    CHECK_THROWS_AS(empirical_bias_correction(w, wq, input_mean_accumulator(4)), invalid_argument);  // no rows
    CHECK_THROWS_AS(empirical_bias_correction(random_weight({4, 2, 3, 3}, 66), random_weight({4, 2, 3, 3}, 67), acc,
                                              layer_kind::depthwise_conv2d),
                    length_error);
    input_mean_accumulator dwacc(9);  // depthwise needs C*kh*kw = 18 features
    dwacc.add(uniform_rows(2, 9, 68));
    CHECK_THROWS_AS(empirical_bias_correction(random_weight({2, 1, 3, 3}, 69), random_weight({2, 1, 3, 3}, 70), dwacc,
                                              layer_kind::depthwise_conv2d),
                    length_error);
    // a named kind checks the shape; the dense form reads any rank >= 2 as [out, features]
    CHECK_THROWS_AS(empirical_bias_correction(w, wq, acc, layer_kind::conv2d), length_error);
    const auto cw = random_weight({3, 1, 2, 2}, 73);
    CHECK_NOTHROW(empirical_bias_correction(cw, quantized(cw, 0.5f), acc));
    CHECK_NOTHROW(empirical_bias_correction(cw, quantized(cw, 0.5f), acc, layer_kind::conv2d));
    CHECK_THROWS_AS(empirical_bias_correction(cw, quantized(cw, 0.5f), acc, layer_kind::linear), length_error);
    auto bad = wq;
    bad(2, 1) = NAN;
    CHECK_THROWS_AS(empirical_bias_correction(w, bad, acc), domain_error);
    CHECK_THROWS_WITH(empirical_bias_correction(w, bad, acc), Catch::Contains("quantized_weight[9]"));
  }
  SECTION("analytic") {
    CHECK_NOTHROW(analytic_bias_correction(w, wq, in, A::relu, layer_kind::linear));
    CHECK_THROWS_AS(analytic_bias_correction(w, wq, in, A::relu, layer_kind::linear, 3), length_error);
    CHECK_THROWS_AS(analytic_bias_correction(w, wq, in, A::relu, layer_kind::linear, 2), length_error);  // 2 channels != 4
    CHECK_THROWS_AS(analytic_bias_correction(w, wq, in, A::relu, layer_kind::linear, 0), invalid_argument);
    CHECK_THROWS_AS(analytic_bias_correction(w, wq, in, A::relu, layer_kind::conv2d), length_error);  // rank 2
    CHECK_THROWS_AS(analytic_bias_correction(w, random_weight({4, 3}, 71), in, A::relu, layer_kind::linear), length_error);
    channel_gaussian neg = in;
    neg.std[1] = -1.0f;
    CHECK_THROWS_AS(analytic_bias_correction(w, wq, neg, A::relu, layer_kind::linear), invalid_argument);
    channel_gaussian nan = in;
    nan.mean[0] = NAN;
    CHECK_THROWS_AS(analytic_bias_correction(w, wq, nan, A::relu, layer_kind::linear), domain_error);
    channel_gaussian short_in{xt::zeros<float>({3}), xt::ones<float>({3})};
    CHECK_THROWS_AS(analytic_bias_correction(w, wq, short_in, A::relu, layer_kind::linear), length_error);
    const auto cw = random_weight({2, 4, 3, 3}, 72);
    CHECK_THROWS_AS(analytic_bias_correction(cw, quantized(cw, 0.5f), in, A::relu, layer_kind::conv2d, 2), invalid_argument);
  }
}
