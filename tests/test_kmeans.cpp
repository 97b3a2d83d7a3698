#include <quant/kmeans.hpp>
#include <quant/reference/kmeans.hpp>

#include <algorithm>
#include <cmath>
#include <random>

#include <xtensor/xadapt.hpp>
#include <xtensor/xtensor.hpp>

#include "test_helpers.hpp"

using namespace quant;

namespace {

// Points from a mixture of `clusters` Gaussian blobs in d dimensions.
std::vector<float> blobs(std::size_t n, std::size_t d, std::size_t clusters, std::uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> centres(clusters * d);
  for (auto& c : centres) c = 4.0f * nd(g);
  std::vector<float> x(n * d);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t c = i % clusters;
    for (std::size_t j = 0; j < d; ++j) x[i * d + j] = centres[c * d + j] + 0.5f * nd(g);
  }
  return x;
}

xt::xtensor<float, 2> as_matrix(const std::vector<float>& v, std::size_t d) {
  return xt::adapt(v, std::vector<std::size_t>{v.size() / d, d});
}

}  // namespace

TEST_CASE("E-step kernel matches the scalar reference exactly (d = 1..20, tails, unaligned)", "[kmeans]") {
  for (std::size_t d : {1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17, 20}) {
    for (std::size_t n : {1, 3, 15, 16, 17, 33, 1003}) {
      for (std::size_t k : {1, 2, 5, 16, 37}) {
        for (std::size_t off : {0, 1}) {
          auto base = quant_test::normal_floats(n * d + off, static_cast<std::uint32_t>(n * 31 + d), 1.0f);
          std::vector<float> x(base.begin() + off, base.end());
          auto c = quant_test::normal_floats(k * d, static_cast<std::uint32_t>(k + 7 * d), 1.0f);
          const auto want = ref::kmeans_assign(x, d, c);
          const detail::centroid_table t(c.data(), k, d);
          std::vector<std::uint32_t> got(n), got_scalar(n);
          detail::nearest_centroids(base.data() + off, n, t, got.data());
          detail::nearest_centroids<simd::scalar>(base.data() + off, n, t, got_scalar.data());
          INFO("d=" << d << " n=" << n << " k=" << k << " off=" << off);
          REQUIRE(got == want);
          REQUIRE(got_scalar == want);
        }
      }
    }
  }
}

TEST_CASE("E-step ties go to the first centroid; duplicates and huge d", "[kmeans]") {
  const std::size_t d = 8;
  std::vector<float> c(4 * d, 1.0f);  // four identical centroids
  std::vector<float> x(40 * d, 0.5f);
  const detail::centroid_table t(c.data(), 4, d);
  std::vector<std::uint32_t> idx(40, 99);
  detail::nearest_centroids(x.data(), 40, t, idx.data());
  for (auto v : idx) CHECK(v == 0);
  // d above the tiled kernel's limit uses the per-point loop with the same scores
  const std::size_t big = 70;
  auto xb = quant_test::normal_floats(9 * big, 3);
  auto cb = quant_test::normal_floats(5 * big, 4);
  const detail::centroid_table tb(cb.data(), 5, big);
  std::vector<std::uint32_t> ib(9);
  detail::nearest_centroids(xb.data(), 9, tb, ib.data());
  CHECK(ib == ref::kmeans_assign(xb, big, cb));
}

TEST_CASE("GEMM E-step agrees with the exact kernel on well separated data", "[kmeans]") {
  const std::size_t d = 48, n = 600, k = 12;
  auto x = blobs(n, d, k, 5);
  const auto pts = as_matrix(x, d);
  xt::xtensor<float, 2> c = xt::xtensor<float, 2>::from_shape({k, d});
  for (std::size_t q = 0; q < k; ++q)
    for (std::size_t j = 0; j < d; ++j) c(q, j) = x[q * d + j];  // point q belongs to blob q
  const auto gemm = kmeans_assign(pts, c, 32);
  const auto direct = kmeans_assign(pts, c, 1000);
  CHECK(bool(gemm == direct));
  CHECK(std::vector<std::uint32_t>(direct.begin(), direct.end()) == ref::kmeans_assign(x, d, std::vector<float>(c.begin(), c.end())));
}

TEST_CASE("one Lloyd round equals the reference E-step + M-step exactly, empty clusters split", "[kmeans]") {
  const std::size_t d = 4, n = 300;
  auto x = blobs(n, d, 3, 9);
  const auto pts = as_matrix(x, d);
  // centroid 2 is far from everything: it ends up empty and is re-seeded by a split
  std::vector<float> c0 = {x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], 1e3f, 1e3f, 1e3f, 1e3f};
  xt::xtensor<float, 2> c = as_matrix(c0, d);
  const auto idx = kmeans_assign(pts, c);
  const auto want_idx = ref::kmeans_assign(x, d, c0);
  REQUIRE(std::vector<std::uint32_t>(idx.begin(), idx.end()) == want_idx);
  const auto upd = kmeans_update(pts, idx, c);
  std::size_t splits = 0;
  const auto want_c = ref::kmeans_update(x, d, want_idx, c0, 1e-6f, &splits);
  CHECK(upd.empty_splits == 1);
  CHECK(splits == 1);
  quant_test::require_bitwise_equal(upd.centroids.data(), want_c, want_c.size(), "centroids");
  std::size_t total = 0;
  for (auto v : upd.counts) total += v;
  CHECK(total == n);
  CHECK(upd.counts[2] > 0);

  // kmeans() with these initial centroids and 1 iteration reproduces the same centroids
  kmeans_options opt;
  opt.k = 3;
  opt.iterations = 1;
  opt.initial_centroids = c;  // the options hold a copy: changing c afterwards changes nothing
  c.fill(0.0f);
  const auto r = kmeans(pts, opt);
  quant_test::require_bitwise_equal(r.centroids.data(), want_c, want_c.size(), "kmeans centroids");
  CHECK(r.objective.size() == 1);
  CHECK(r.objective[0] == Approx(ref::kmeans_sse(x, d, c0, want_idx)).epsilon(1e-12));
  CHECK(r.empty_splits == 1);
  const auto final_idx = ref::kmeans_assign(x, d, want_c);
  CHECK(std::vector<std::uint32_t>(r.assignments.begin(), r.assignments.end()) == final_idx);
  CHECK(r.final_objective == Approx(ref::kmeans_sse(x, d, want_c, final_idx)).epsilon(1e-12));
}

TEST_CASE("several Lloyd rounds equal the reference loop exactly", "[kmeans]") {
  const std::size_t d = 9, n = 2000, k = 10;
  auto x = blobs(n, d, 7, 13);
  const auto pts = as_matrix(x, d);
  kmeans_options opt;
  opt.k = k;
  opt.iterations = 6;
  opt.seed = 4;
  const auto r = kmeans(pts, opt);
  auto c0 = kmeans_initial_centroids(pts, k, kmeans_init::random_sample, 4);
  std::vector<float> c(c0.begin(), c0.end());
  for (std::size_t it = 0; it < 6; ++it) {
    const auto idx = ref::kmeans_assign(x, d, c);
    CHECK(r.objective[it] == Approx(ref::kmeans_sse(x, d, c, idx)).epsilon(1e-12));
    c = ref::kmeans_update(x, d, idx, c, 1e-6f);
  }
  quant_test::require_bitwise_equal(r.centroids.data(), c, c.size(), "centroids after 6 rounds");
}

TEST_CASE("objective is non-increasing; k-means++ and random init; sampling", "[kmeans]") {
  const std::size_t d = 8, n = 20000;
  auto x = blobs(n, d, 40, 21);
  const auto pts = as_matrix(x, d);
  for (auto init : {kmeans_init::random_sample, kmeans_init::kmeans_plus_plus}) {
    kmeans_options opt;
    opt.k = 64;
    opt.iterations = 15;
    opt.init = init;
    opt.seed = 8;
    const auto r = kmeans(pts, opt);
    REQUIRE(r.objective.size() == 15);
    for (std::size_t t = 1; t < r.objective.size(); ++t) CHECK(r.objective[t] <= r.objective[t - 1] * (1 + 1e-9));
    CHECK(r.final_objective <= r.objective.back() * (1 + 1e-9));
    CHECK(r.mse() == Approx(r.final_objective / (n * d)));
    // 40 blobs, variance 0.25 per coordinate around centres of variance 16: with 64 >= 40
    // clusters and a centroid in every blob the optimum is below the within-blob 0.25, and
    // k-means++ seeds every blob here. Random init may leave blobs merged, so no value
    // bound follows for it: what Lloyd's algorithm guarantees (a fixed point) is checked in
    // the next test.
    if (init == kmeans_init::kmeans_plus_plus) CHECK(r.mse() < 0.25);
  }
  kmeans_options opt;
  opt.k = 64;
  opt.iterations = 10;
  opt.max_training_points = 4000;
  const auto rs = kmeans(pts, opt);
  CHECK(rs.assignments.size() == n);
  CHECK(rs.mse() < 0.25);  // trained on a 4000-point sample, every blob still separated
}

TEST_CASE("Lloyd's iteration ends at a fixed point: nearest-centroid assignments, centroids at their means",
          "[kmeans]") {
  // Lloyd's two steps each minimise the objective over one variable with the other fixed, so
  // once the assignments stop changing the result is a fixed point of both: every point is
  // assigned to a nearest centroid and every non-empty centroid is the mean of its points.
  // Checked in double, independently of the library's float E-step and piecewise sums.
  const std::size_t d = 8, n = 6000, k = 48;
  const auto x = blobs(n, d, 40, 31);
  const auto pts = as_matrix(x, d);
  for (auto init : {kmeans_init::random_sample, kmeans_init::kmeans_plus_plus}) {
    kmeans_options opt;
    opt.k = k;
    opt.iterations = 60;  // both inits come to rest within 30 here
    opt.init = init;
    opt.seed = 3;
    const auto r = kmeans(pts, opt);
    INFO("init " << (init == kmeans_init::random_sample ? "random_sample" : "kmeans_plus_plus"));
    // non-increasing from each iteration to the next (slack for the float E-step's near ties)
    for (std::size_t t = 1; t < r.objective.size(); ++t) CHECK(r.objective[t] <= r.objective[t - 1] * (1 + 1e-9));
    // converged: the last iterations changed nothing (this premise of the checks below must hold)
    std::size_t stable = 0;
    while (stable + 1 < r.objective.size() &&
           r.objective[r.objective.size() - 2 - stable] == r.objective[r.objective.size() - 1 - stable])
      ++stable;
    REQUIRE(stable >= 3);
    const float* c = r.centroids.data();
    std::vector<double> sum(k * d, 0.0), abs_sum(k, 0.0);
    std::vector<std::size_t> count(k, 0);
    double sse = 0.0, max_c2 = 0.0;
    for (std::size_t q = 0; q < k; ++q) {
      double c2 = 0.0;
      for (std::size_t j = 0; j < d; ++j) c2 += double(c[q * d + j]) * c[q * d + j];
      max_c2 = std::max(max_c2, c2);
    }
    std::size_t not_nearest = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const float* xi = x.data() + i * d;
      double best = 1e300, x2 = 0.0;
      std::vector<double> dist(k);
      for (std::size_t q = 0; q < k; ++q) {
        double s = 0.0;
        for (std::size_t j = 0; j < d; ++j) s += (double(xi[j]) - c[q * d + j]) * (double(xi[j]) - c[q * d + j]);
        dist[q] = s;
        best = std::min(best, s);
      }
      for (std::size_t j = 0; j < d; ++j) x2 += double(xi[j]) * xi[j];
      const std::uint32_t a = r.assignments(i);
      if (a >= k) FAIL("assignment " << a << " of point " << i << " is not a centroid");
      // the float E-step ranks ||c||^2 - 2 x.c: a near tie may go either way within its rounding
      not_nearest += dist[a] > best + 1e-5 * (x2 + max_c2);
      sse += dist[a];
      ++count[a];
      for (std::size_t j = 0; j < d; ++j) {
        sum[a * d + j] += xi[j];
        abs_sum[a] += std::fabs(xi[j]);
      }
    }
    CHECK(not_nearest == 0);
    CHECK(r.final_objective == Approx(sse).epsilon(1e-12));
    CHECK(r.final_objective == r.objective.back());  // the last M-step moved nothing
    std::size_t empty = 0, off_mean = 0;
    for (std::size_t q = 0; q < k; ++q) {
      if (count[q] == 0) {
        ++empty;
        continue;
      }
      for (std::size_t j = 0; j < d; ++j) {
        const double mean = sum[q * d + j] / double(count[q]);
        // the mean rounded to float (half an ulp <= 2^-24 |mean|), plus the order of the double sums
        off_mean += std::fabs(c[q * d + j] - mean) > 0x1p-24 * std::fabs(mean) + 1e-12 * abs_sum[q] / double(count[q]);
      }
    }
    CHECK(off_mean == 0);
    CHECK(empty == 0);  // an empty cluster would have been split, and the iteration would not be at rest
  }
}

TEST_CASE("same seed, same result for 1 and 2 threads; different seeds differ", "[kmeans]") {
  quant_test::require_two_threads();  // fails if "2 threads" would be a serial run
  const std::size_t d = 8, n = 40000;  // several M-step pieces
  auto x = blobs(n, d, 30, 2);
  const auto pts = as_matrix(x, d);
  for (auto init : {kmeans_init::random_sample, kmeans_init::kmeans_plus_plus}) {
    kmeans_options opt;
    opt.k = 32;
    opt.iterations = 8;
    opt.seed = 77;
    opt.init = init;
    set_num_threads(1);
    const auto a = kmeans(pts, opt);
    set_num_threads(2);
    const auto b = kmeans(pts, opt);
    set_num_threads(0);
    CHECK(bool(a.centroids == b.centroids));
    CHECK(bool(a.assignments == b.assignments));
    CHECK(a.objective == b.objective);
    opt.seed = 78;
    const auto c = kmeans(pts, opt);
    CHECK(bool(c.centroids != a.centroids));
  }
}

TEST_CASE("k-means errors", "[kmeans]") {
  auto x = quant_test::normal_floats(40, 1);
  const auto pts = as_matrix(x, 4);  // 10 points
  kmeans_options opt;
  opt.k = 11;
  CHECK_THROWS_AS(kmeans(pts, opt), quant::invalid_argument);
  CHECK_THROWS_WITH(kmeans(pts, opt), Catch::Contains("fewer points than centroids"));
  opt.k = 0;
  CHECK_THROWS_AS(kmeans(pts, opt), quant::invalid_argument);
  opt.k = 4;
  auto bad = x;
  bad[13] = std::nanf("");
  CHECK_THROWS_AS(kmeans(as_matrix(bad, 4), opt), quant::domain_error);
  bad[13] = INFINITY;
  CHECK_THROWS_WITH(kmeans(as_matrix(bad, 4), opt), Catch::Contains("point 3"));
  opt.max_training_points = 2;
  CHECK_THROWS_AS(kmeans(pts, opt), quant::invalid_argument);
  opt.max_training_points = 0;
  xt::xtensor<float, 2> wrong = xt::zeros<float>({4, 3});
  opt.initial_centroids = wrong;
  CHECK_THROWS_AS(kmeans(pts, opt), quant::length_error);
  CHECK_THROWS_WITH(kmeans(pts, opt), Catch::Contains("quant::kmeans: initial_centroids = [4, 3]") &&
                                          Catch::Contains("[k, d] = [4, 4]"));
  xt::xtensor<float, 2> nonfinite = xt::zeros<float>({4, 4});
  nonfinite(2, 1) = std::nanf("");
  opt.initial_centroids = nonfinite;
  CHECK_THROWS_AS(kmeans(pts, opt), quant::domain_error);
  CHECK_THROWS_WITH(kmeans(pts, opt), Catch::Contains("quant::kmeans: initial_centroids = nan") &&
                                          Catch::Contains("centroid 2"));
  opt.initial_centroids.reset();
  CHECK_NOTHROW(kmeans(pts, opt));
  CHECK_THROWS_AS(kmeans_assign(pts, wrong), quant::length_error);
}

TEST_CASE("kmeans_update and kmeans_initial_centroids validate their arguments", "[kmeans][errors]") {
  const std::size_t d = 4, n = 10, k = 3;
  auto x = blobs(n, d, k, 3);
  const auto pts = as_matrix(x, d);
  const xt::xtensor<float, 2> c = kmeans_initial_centroids(pts, k, kmeans_init::random_sample, 1);
  xt::xtensor<std::uint32_t, 1> a = xt::zeros<std::uint32_t>({n});
  CHECK_NOTHROW(kmeans_update(pts, a, c));
  const xt::xtensor<std::uint32_t, 1> short_a = xt::zeros<std::uint32_t>({n - 1});
  CHECK_THROWS_WITH(kmeans_update(pts, short_a, c), Catch::Contains("assignments.size() = 9"));
  CHECK_THROWS_AS(kmeans_update(pts, short_a, c), quant::length_error);
  const xt::xtensor<float, 2> wrong_d = xt::zeros<float>({k, d + 1});
  CHECK_THROWS_AS(kmeans_update(pts, a, wrong_d), quant::length_error);
  a(7) = 3;  // == k
  CHECK_THROWS_WITH(kmeans_update(pts, a, c), Catch::Contains("assignment = 3"));
  CHECK_THROWS_AS(kmeans_update(pts, a, c), quant::invalid_argument);
  const xt::xarray<float> cube = xt::zeros<float>({2, 5, 4});
  CHECK_THROWS_AS(kmeans_update(cube, a, c), quant::invalid_argument);
  CHECK_THROWS_AS(kmeans_initial_centroids(cube, k, kmeans_init::random_sample, 1), quant::invalid_argument);
  CHECK_THROWS_WITH(kmeans_initial_centroids(pts, n + 1, kmeans_init::kmeans_plus_plus, 1),
                    Catch::Contains("fewer points than centroids"));
  CHECK_THROWS_AS(kmeans_initial_centroids(pts, 0, kmeans_init::random_sample, 1), quant::invalid_argument);
  auto bad = x;
  bad[5] = std::nanf("");
  CHECK_THROWS_AS(kmeans_initial_centroids(as_matrix(bad, d), k, kmeans_init::random_sample, 1), quant::domain_error);
}

TEST_CASE("kmeans_update rejects NaN and infinite points and centroids, naming them", "[kmeans][errors]") {
  const std::size_t d = 4, n = 10, k = 3;
  auto x = blobs(n, d, k, 5);
  const xt::xtensor<float, 2> c = kmeans_initial_centroids(as_matrix(x, d), k, kmeans_init::random_sample, 2);
  xt::xtensor<std::uint32_t, 1> a = xt::zeros<std::uint32_t>({n});
  for (std::size_t i = 0; i < n; ++i) a(i) = static_cast<std::uint32_t>(i % k);
  auto bad = x;
  bad[2 * d + 1] = std::nanf("");  // point 2
  CHECK_THROWS_AS(kmeans_update(as_matrix(bad, d), a, c), quant::domain_error);
  CHECK_THROWS_WITH(kmeans_update(as_matrix(bad, d), a, c),
                    Catch::Contains("kmeans_update: points = nan") && Catch::Contains("first at point 2"));
  bad[2 * d + 1] = -INFINITY;
  CHECK_THROWS_AS(kmeans_update(as_matrix(bad, d), a, c), quant::domain_error);
  xt::xtensor<float, 2> bad_c = c;
  bad_c(1, 3) = std::nanf("");
  CHECK_THROWS_WITH(kmeans_update(as_matrix(x, d), a, bad_c),
                    Catch::Contains("kmeans_update: centroids = nan") && Catch::Contains("first at centroid 1"));
  CHECK_THROWS_AS(kmeans_update(as_matrix(x, d), a, bad_c), quant::domain_error);
}
