#include <quant/kurtosis.hpp>
#include <quant/reference/kurtosis.hpp>

#include <cmath>
#include <random>

#include <xtensor/xadapt.hpp>
#include <xtensor/xtensor.hpp>

#include "test_helpers.hpp"

using namespace quant;

namespace {

std::vector<double> to_double(const float* x, std::size_t n) { return std::vector<double>(x, x + n); }

template <class Dist>
xt::xtensor<float, 1> sample(Dist d, std::size_t n, std::uint32_t seed) {
  std::mt19937_64 g(seed);
  xt::xtensor<float, 1> x = xt::xtensor<float, 1>::from_shape({n});
  for (auto& v : x) v = static_cast<float>(d(g));
  return x;
}

xt::xtensor<float, 1> laplace(std::size_t n, std::uint32_t seed) {
  std::mt19937_64 g(seed);
  std::exponential_distribution<double> e(1.0);
  std::bernoulli_distribution s(0.5);
  xt::xtensor<float, 1> x = xt::xtensor<float, 1>::from_shape({n});
  for (auto& v : x) v = static_cast<float>(s(g) ? e(g) : -e(g));
  return x;
}

double rel(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-300); }

}  // namespace

TEST_CASE("kurtosis of large samples: uniform 1.8, Gaussian 3, Laplace 6", "[kurtosis]") {
  const std::size_t n = std::size_t(1) << 20;
  // Standard errors of the sample kurtosis at N = 2^20: uniform ~0.001, Gaussian
  // sqrt(24/N) ~ 0.005, Laplace ~ 0.05 (8th moment 2520 sigma^8); tolerances are ~5 SE.
  CHECK(std::fabs(kurtosis(sample(std::uniform_real_distribution<double>(-1, 1), n, 1)) - 1.8) < 0.006);
  CHECK(std::fabs(kurtosis(sample(std::normal_distribution<double>(0, 1), n, 2)) - 3.0) < 0.025);
  CHECK(std::fabs(kurtosis(laplace(n, 3)) - 6.0) < 0.25);
  // location and scale do not matter
  CHECK(std::fabs(kurtosis(sample(std::normal_distribution<double>(1000.0, 0.01), n, 4)) - 3.0) < 0.025);
}

TEST_CASE("one-pass moments match the two-pass double reference (SIMD and scalar, edge sizes, unaligned)",
          "[kurtosis]") {
  for (std::size_t n : quant_test::edge_sizes()) {
    if (n == 0) continue;
    for (std::size_t off : {0, 1, 3}) {
      for (float mean : {0.0f, 50.0f}) {
        auto base = quant_test::normal_floats(n + off, 7 + static_cast<std::uint32_t>(n), 2.0f, mean);
        const float* x = base.data() + off;
        const auto want = ref::central_moments(to_double(x, n));
        const moments fast = kernels::central_moments(x, n);
        const moments scal = kernels::central_moments<simd::scalar>(x, n);
        INFO("n=" << n << " off=" << off << " mean=" << mean);
        CHECK(fast.n == n);
        CHECK(rel(fast.mean, want.mean) < 1e-12);
        CHECK(rel(scal.mean, want.mean) < 1e-12);
        if (n > 1) {
          // central sums lose ~ (|c - mu| / sigma)^k eps_double at worst: relative 1e-10 is ample
          CHECK(rel(fast.m2, want.m2) < 1e-10);
          CHECK(rel(scal.m2, want.m2) < 1e-10);
          CHECK(std::fabs(fast.m3 - want.m3) < 1e-10 * std::pow(want.m2, 1.5));
          CHECK(std::fabs(scal.m3 - want.m3) < 1e-10 * std::pow(want.m2, 1.5));
          CHECK(rel(fast.m4, want.m4) < 1e-10);
          CHECK(rel(scal.m4, want.m4) < 1e-10);
        }
      }
    }
  }
}

TEST_CASE("moments over many pieces match the reference and do not depend on the thread count", "[kurtosis]") {
  quant_test::require_two_threads();  // fails if "2 threads" would be a serial run
  const std::size_t n = 100003;  // several 2^14 pieces and a tail
  auto x = quant_test::normal_floats(n, 99, 3.0f, -7.0f);
  for (std::size_t i = 0; i < n; i += 97) x[i] *= 5.0f;  // heavier tails
  const auto want = ref::central_moments(to_double(x.data(), n));
  set_num_threads(1);
  const moments m1 = kernels::central_moments(x.data(), n);
  set_num_threads(2);
  const moments m2 = kernels::central_moments(x.data(), n);
  set_num_threads(0);
  CHECK(m1.mean == m2.mean);
  CHECK(m1.m2 == m2.m2);
  CHECK(m1.m3 == m2.m3);
  CHECK(m1.m4 == m2.m4);
  CHECK(rel(m1.m2, want.m2) < 1e-12);
  CHECK(rel(m1.m4, want.m4) < 1e-12);
  CHECK(std::fabs(m1.m3 - want.m3) < 1e-12 * std::pow(want.m2, 1.5));
}

TEST_CASE("kurtosis gradient: reference vs finite differences in double, fast vs reference", "[kurtosis]") {
  for (bool unbiased : {false, true}) {
    const std::size_t n = 37;
    auto xf = quant_test::normal_floats(n, 5, 1.0f, 0.3f);
    xf[3] = 4.0f;
    std::vector<double> x = to_double(xf.data(), n);
    const auto g = ref::kurtosis_gradient(x, unbiased);
    double gmax = 0;
    for (double v : g) gmax = std::max(gmax, std::fabs(v));
    for (std::size_t j = 0; j < n; ++j) {
      const double h = 1e-6;
      auto xp = x, xm = x;
      xp[j] += h;
      xm[j] -= h;
      const double fd = (ref::kurtosis(xp, unbiased) - ref::kurtosis(xm, unbiased)) / (2 * h);
      INFO("j=" << j << " unbiased=" << unbiased);
      CHECK(std::fabs(fd - g[j]) < 1e-7 * gmax);
    }
  }
}

TEST_CASE("KURE loss and gradients over several tensors match finite differences", "[kurtosis]") {
  xt::xtensor<float, 2> a = xt::adapt(quant_test::normal_floats(12 * 5, 1, 0.5f), std::vector<std::size_t>{12, 5});
  xt::xtensor<float, 2> b = xt::adapt(quant_test::normal_floats(7 * 3, 2, 2.0f), std::vector<std::size_t>{7, 3});
  b(0, 0) = 9.0f;
  for (bool unbiased : {false, true}) {
    kure_options opt;
    opt.variance = unbiased ? variance_estimator::unbiased : variance_estimator::population;
    opt.target = 1.8;
    auto r = kurtosis_loss(std::vector<const xt::xtensor<float, 2>*>{&a, &b}, opt);
    std::vector<std::vector<double>> ws = {to_double(a.data(), a.size()), to_double(b.data(), b.size())};
    CHECK(rel(r.loss, ref::kure_loss(ws, 1.8, unbiased)) < 1e-10);
    REQUIRE(r.terms.size() == 2);
    CHECK(rel(r.terms[0].kurtosis, ref::kurtosis(ws[0], unbiased)) < 1e-10);
    CHECK(r.constant_tensors.empty());
    REQUIRE(r.gradients.size() == 2);
    CHECK(r.gradients[1].shape()[0] == 7);
    CHECK(r.gradients[1].shape()[1] == 3);
    for (std::size_t t = 0; t < 2; ++t) {
      double gmax = 0;
      std::vector<double> fd(ws[t].size());
      for (std::size_t j = 0; j < ws[t].size(); ++j) {
        auto wp = ws, wm = ws;
        const double h = 1e-6;
        wp[t][j] += h;
        wm[t][j] -= h;
        fd[j] = (ref::kure_loss(wp, 1.8, unbiased) - ref::kure_loss(wm, 1.8, unbiased)) / (2 * h);
        gmax = std::max(gmax, std::fabs(fd[j]));
      }
      for (std::size_t j = 0; j < ws[t].size(); ++j) {
        INFO("tensor " << t << " j=" << j);
        // float gradient pass: ~1e-6 relative to the largest component
        CHECK(std::fabs(r.gradients[t].data()[j] - fd[j]) < 2e-5 * gmax);
      }
    }
  }
}

TEST_CASE("fused gradient pass: SIMD and scalar kernels are bit-identical, accumulate adds", "[kurtosis]") {
  for (std::size_t n : quant_test::edge_sizes()) {
    for (std::size_t off : {0, 1}) {
      auto base = quant_test::normal_floats(n + off, 11, 1.0f);
      const float* x = base.data() + off;
      std::vector<float> g1(n + off, 0.5f), g2(n + off, 0.5f), g3(n + off, 0.5f);
      kernels::kurtosis_gradient(x, n, 0.1f, 0.3f, 0.7f, 0.05f, g1.data() + off, false);
      kernels::kurtosis_gradient<simd::scalar>(x, n, 0.1f, 0.3f, 0.7f, 0.05f, g2.data() + off, false);
      quant_test::require_bitwise_equal(g1.data() + off, g2.data() + off, n, "n=" + std::to_string(n));
      kernels::kurtosis_gradient(x, n, 0.1f, 0.3f, 0.7f, 0.05f, g3.data() + off, true);
      for (std::size_t j = 0; j < n; ++j) CHECK(g3[off + j] == 0.5f + g1[off + j]);
    }
  }
}

TEST_CASE("kurtosis_loss_accumulate adds lambda * gradient to task gradients", "[kurtosis]") {
  xt::xtensor<float, 2> a = xt::adapt(quant_test::normal_floats(40, 3), std::vector<std::size_t>{8, 5});
  xt::xtensor<float, 2> ga = xt::ones<float>({8, 5});
  std::vector<const xt::xtensor<float, 2>*> ws{&a};
  auto full = kurtosis_loss(ws);
  auto rep = kurtosis_loss_accumulate(ws, std::vector<xt::xtensor<float, 2>*>{&ga}, 0.5f);
  CHECK(rep.loss == full.loss);
  for (std::size_t j = 0; j < a.size(); ++j)
    CHECK(ga.data()[j] == Approx(1.0f + 0.5f * full.gradients[0].data()[j]).epsilon(1e-5));
}

TEST_CASE("a constant tensor has term 0, zero gradient and is reported", "[kurtosis]") {
  xt::xtensor<float, 2> c = xt::xtensor<float, 2>::from_shape({4, 4});
  c.fill(0.25f);
  xt::xtensor<float, 2> one = xt::xtensor<float, 2>::from_shape({1, 1});
  one.fill(3.0f);
  xt::xtensor<float, 2> w = xt::adapt(quant_test::normal_floats(64, 8), std::vector<std::size_t>{8, 8});
  auto r = kurtosis_loss(std::vector<const xt::xtensor<float, 2>*>{&c, &w, &one});
  REQUIRE(r.constant_tensors == std::vector<std::size_t>{0, 2});
  CHECK(r.terms[0].constant);
  CHECK(r.terms[0].term == 0.0);
  CHECK(!std::isnan(r.loss));
  const double k = ref::kurtosis(to_double(w.data(), w.size()));
  CHECK(rel(r.loss, (k - 1.8) * (k - 1.8) / 3.0) < 1e-10);
  for (float v : r.gradients[0]) CHECK(v == 0.0f);
  for (float v : r.gradients[2]) CHECK(v == 0.0f);
  CHECK(kurtosis(c) == 0.0);
  // a large constant spread over many pieces is still exactly constant
  xt::xtensor<float, 1> big = xt::xtensor<float, 1>::from_shape({70000});
  big.fill(1234.5f);
  CHECK(kurtosis(big) == 0.0);
}

TEST_CASE("kurtosis errors are clear quant:: exceptions", "[kurtosis]") {
  using V = std::vector<const xt::xtensor<float, 1>*>;
  xt::xtensor<float, 1> empty = xt::xtensor<float, 1>::from_shape({0});
  xt::xtensor<float, 1> w = {1.0f, 2.0f, 4.0f};
  xt::xtensor<float, 1> bad = {1.0f, std::nanf(""), 4.0f};
  xt::xtensor<float, 1> inf = {1.0f, INFINITY, 4.0f};
  CHECK_THROWS_AS(kurtosis_loss(V{}), quant::invalid_argument);
  CHECK_THROWS_AS(kurtosis_loss(V{&w, nullptr}), quant::invalid_argument);
  CHECK_THROWS_AS(kurtosis_loss(V{&empty}), quant::invalid_argument);
  CHECK_THROWS_AS(kurtosis_loss(V{&w, &bad}), quant::domain_error);
  CHECK_THROWS_AS(kurtosis(inf), quant::domain_error);
  CHECK_THROWS_AS(kurtosis(empty), quant::invalid_argument);
  CHECK_THROWS_WITH(kurtosis_loss(V{&w, &bad}), Catch::Contains("quant::kurtosis_loss") && Catch::Contains("NaN"));
  xt::xtensor<float, 1> g2 = xt::zeros<float>({2});
  CHECK_THROWS_AS(kurtosis_loss_accumulate(V{&w}, std::vector<xt::xtensor<float, 1>*>{&g2}, 1.0f), quant::length_error);
  CHECK_THROWS_AS(kurtosis_loss_accumulate(V{&w}, std::vector<xt::xtensor<float, 1>*>{}, 1.0f), quant::length_error);
}
