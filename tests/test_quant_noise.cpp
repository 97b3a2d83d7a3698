#include <quant/quant_noise.hpp>
#include <quant/reference/uniform.hpp>

#include <cmath>

#include <xtensor/xadapt.hpp>
#include <xtensor/xtensor.hpp>

#include "test_helpers.hpp"

using namespace quant;

namespace {
using quant_test::normal_matrix;
}  // namespace

TEST_CASE("block layouts: linear, 1x1 conv, k x k conv", "[quant_noise]") {
  auto l = noise_blocks::linear(4, 16, 8);
  CHECK(l.count() == 8);
  CHECK(l.block == 8);
  auto c3 = noise_blocks::conv(5, 3, 3, 3, 8);  // one block per (out, in) kernel
  CHECK(c3.block == 9);
  CHECK(c3.count() == 15);
  auto c1 = noise_blocks::conv(5, 16, 1, 1, 4);
  CHECK(c1.block == 4);
  CHECK(c1.count() == 20);
  CHECK_THROWS_AS(noise_blocks::linear(4, 12, 8), quant::invalid_argument);
  CHECK_THROWS_WITH(noise_blocks::linear(4, 12, 8), Catch::Contains("block_size = 8") && Catch::Contains("in = 12"));
  CHECK_THROWS_AS(noise_blocks::conv(4, 12, 1, 1, 8), quant::invalid_argument);
  CHECK_THROWS_AS(noise_blocks::linear(4, 16, 0), quant::invalid_argument);
  CHECK_THROWS_AS(noise_blocks::for_shape(std::vector<std::size_t>{2, 3, 4}, 2), quant::invalid_argument);
}

TEST_CASE("mask: frequency close to p, deterministic, thread-count independent", "[quant_noise]") {
  quant_test::require_two_threads();  // fails if "2 threads" would be a serial run
  const auto blocks = noise_blocks::linear(1024, 8192, 8);  // 2^20 blocks
  for (float p : {0.05f, 0.1f, 0.2f}) {
    set_num_threads(1);
    const auto m1 = quant_noise_mask(blocks, p, 77);
    set_num_threads(2);
    const auto m2 = quant_noise_mask(blocks, p, 77);
    set_num_threads(0);
    REQUIRE(bool(m1 == m2));
    double f = 0;
    for (auto v : m1) f += v;
    f /= static_cast<double>(m1.size());
    // sd = sqrt(p (1-p) / 2^20) < 4e-4
    CHECK(std::fabs(f - p) < 2e-3);
    const auto m3 = quant_noise_mask(blocks, p, 78);
    CHECK(bool(m3 != m1));
  }
  const auto none = quant_noise_mask(blocks, 0.0f, 1);
  const auto all = quant_noise_mask(blocks, 1.0f, 1);
  for (std::size_t b = 0; b < none.size(); b += 997) {
    CHECK(none[b] == 0);
    CHECK(all[b] == 1);
  }
  CHECK_THROWS_AS(quant_noise_mask(blocks, 1.5f, 1), quant::invalid_argument);
  CHECK_THROWS_AS(quant_noise_mask(blocks, std::nanf(""), 1), quant::invalid_argument);
}

TEST_CASE("proxy noise zeroes whole blocks and rescales survivors; backward is the dropout gradient",
          "[quant_noise]") {
  const auto w = normal_matrix(16, 32, 3);
  quant_noise_options opt;
  opt.p = 0.25f;
  opt.block_size = 8;
  opt.seed = 5;
  auto r = quant_noise(w, opt, proxy_noise{});
  REQUIRE(r.weights.shape() == w.shape());
  REQUIRE(r.mask.size() == 16 * 4);
  const float keep = 1.0f / (1.0f - 0.25f);
  std::size_t noised = 0;
  for (std::size_t o = 0; o < 16; ++o)
    for (std::size_t i = 0; i < 32; ++i) {
      const bool sel = r.mask(o * 4 + i / 8) != 0;
      if (sel)
        CHECK(r.weights(o, i) == 0.0f);
      else
        CHECK(r.weights(o, i) == w(o, i) * keep);
      noised += sel;
    }
  CHECK(noised == 8 * r.noised_blocks);
  CHECK(r.noised_blocks > 0);
  CHECK(r.noised_blocks < 64);
  // the same seed gives the same result
  auto r2 = quant_noise(w, opt, proxy_noise{});
  CHECK(bool(r2.weights == r.weights));

  xt::xtensor<float, 2> g = normal_matrix(16, 32, 4);
  auto gw = quant_noise_backward(g, r);
  for (std::size_t o = 0; o < 16; ++o)
    for (std::size_t i = 0; i < 32; ++i)
      CHECK(gw(o, i) == (r.mask(o * 4 + i / 8) ? 0.0f : g(o, i) * keep));
  CHECK_THROWS_AS(quant_noise_backward(normal_matrix(16, 16, 1), r), quant::length_error);
  opt.p = 1.0f;
  CHECK_THROWS_AS(quant_noise(w, opt, proxy_noise{}), quant::invalid_argument);
}

TEST_CASE("conv k x k: one block per (out, in) kernel", "[quant_noise]") {
  xt::xtensor<float, 4> w = xt::adapt(quant_test::normal_floats(6 * 4 * 3 * 3, 9), std::vector<std::size_t>{6, 4, 3, 3});
  quant_noise_options opt;
  opt.p = 0.5f;
  opt.seed = 11;
  auto r = quant_noise(w, opt, proxy_noise{});
  REQUIRE(r.mask.size() == 24);
  const float keep = 1.0f / (1.0f - 0.5f);
  for (std::size_t o = 0; o < 6; ++o)
    for (std::size_t i = 0; i < 4; ++i)
      for (std::size_t a = 0; a < 3; ++a)
        for (std::size_t b = 0; b < 3; ++b)
          CHECK(r.weights(o, i, a, b) == (r.mask(o * 4 + i) ? 0.0f : w(o, i, a, b) * keep));
  CHECK(r.noised_blocks > 0);
  CHECK(r.noised_blocks < 24);
}

TEST_CASE("scalar noise: noised blocks are the foundation's fake-quant, the rest exact; STE backward",
          "[quant_noise]") {
  const auto w = normal_matrix(8, 64, 21);
  const qparams qp = qparams::per_tensor(grid::int_signed(4), 0.3f, 0);
  quant_noise_options opt;
  opt.p = 0.3f;
  opt.seed = 2;
  auto r = quant_noise(w, opt, scalar_noise{qp});
  const std::vector<float> wv(w.begin(), w.end());
  const auto fq = ref::fake_quantize(wv, {8, 64}, qp, rounding_mode::half_to_even, false, 0);
  for (std::size_t e = 0; e < w.size(); ++e) {
    const bool sel = r.mask(e / 8) != 0;
    CHECK(r.weights.data()[e] == (sel ? fq[e] : wv[e]));
  }
  CHECK(r.noised_blocks > 0);
  auto g = normal_matrix(8, 64, 1);
  auto gw = quant_noise_backward(g, r);
  CHECK(bool(gw == g));
  // per-channel qparams work too
  std::vector<float> scales(8, 0.2f);
  auto rc = quant_noise(w, opt, scalar_noise{qparams::per_channel(grid::int_signed(4), scales, 0)});
  CHECK(bool(rc.mask == r.mask));
}

TEST_CASE("PQ noise replaces each subvector of a noised block by its nearest centroid", "[quant_noise]") {
  const std::size_t d = 4, K = 6;
  xt::xtensor<float, 2> c = normal_matrix(K, d, 31);
  const auto w = normal_matrix(10, 16, 32);
  quant_noise_options opt;
  opt.p = 0.4f;
  opt.block_size = 8;
  opt.seed = 3;
  auto r = quant_noise(w, opt, pq_noise{&c});
  for (std::size_t o = 0; o < 10; ++o)
    for (std::size_t s = 0; s < 4; ++s) {
      const bool sel = r.mask(o * 2 + s / 2) != 0;
      // brute force nearest in double
      std::size_t best = 0;
      double bd = 1e300;
      for (std::size_t k = 0; k < K; ++k) {
        double dd = 0;
        for (std::size_t j = 0; j < d; ++j) dd += std::pow(double(w(o, s * d + j)) - c(k, j), 2);
        if (dd < bd) bd = dd, best = k;
      }
      for (std::size_t j = 0; j < d; ++j) CHECK(r.weights(o, s * d + j) == (sel ? c(best, j) : w(o, s * d + j)));
    }
  CHECK(r.noised_blocks > 0);
  xt::xtensor<float, 2> c3 = normal_matrix(K, 3, 1);
  CHECK_THROWS_AS(quant_noise(w, opt, pq_noise{&c3}), quant::invalid_argument);
  CHECK_THROWS_AS(quant_noise(w, opt, pq_noise{nullptr}), quant::invalid_argument);
}
