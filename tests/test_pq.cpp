#include <quant/pq.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <string>

#include <xtensor/xadapt.hpp>
#include <xtensor/xtensor.hpp>

#include "test_helpers.hpp"

using namespace quant;

namespace {

using quant_test::normal_matrix;

// Brute-force nearest centroid in double.
std::uint32_t nearest(const float* x, const float* c, std::size_t k, std::size_t d) {
  std::uint32_t best = 0;
  double bd = 1e300;
  for (std::size_t q = 0; q < k; ++q) {
    double s = 0;
    for (std::size_t j = 0; j < d; ++j) s += (double(x[j]) - c[q * d + j]) * (double(x[j]) - c[q * d + j]);
    if (s < bd) bd = s, best = static_cast<std::uint32_t>(q);
  }
  return best;
}

}  // namespace

TEST_CASE("index bits and packing round trips", "[pq]") {
  CHECK(pq_index_bits(1) == 0);
  CHECK(pq_index_bits(2) == 1);
  CHECK(pq_index_bits(3) == 2);
  CHECK(pq_index_bits(256) == 8);
  CHECK(pq_index_bits(257) == 9);
  // known layout: LSB first
  xt::xtensor<std::uint32_t, 2> small = {{1, 2, 3, 4}};
  const auto p3 = pack_indices(small, 3);
  REQUIRE(p3.bytes.size() == 2);  // 12 bits
  CHECK(p3.bytes[0] == (1 | (2 << 3) | ((3 & 3) << 6)));
  CHECK(p3.bytes[1] == ((3 >> 2) | (4 << 1)));
  std::mt19937 g(5);
  for (unsigned bits = 1; bits <= 16; ++bits) {
    xt::xtensor<std::uint32_t, 2> idx = xt::xtensor<std::uint32_t, 2>::from_shape({7, 13});
    for (auto& v : idx) v = g() & ((1u << bits) - 1);
    const auto p = pack_indices(idx, bits);
    CHECK(p.bytes.size() == (7 * 13 * bits + 7) / 8);
    CHECK(bool(unpack_indices(p, 7, 13) == idx));
  }
  CHECK_THROWS_AS(pack_indices(small, 2), quant::invalid_argument);
  CHECK_THROWS_AS(unpack_indices(p3, 2, 3), quant::length_error);
}

TEST_CASE("shared codebook: a layer made of K distinct subvectors is reconstructed exactly", "[pq]") {
  const std::size_t d = 8, K = 16, rows = 32, cols = 64;
  const auto c = normal_matrix(K, d, 3);
  xt::xtensor<float, 2> w = xt::xtensor<float, 2>::from_shape({rows, cols});
  std::mt19937 g(1);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t s = 0; s < cols / d; ++s) {
      const std::size_t q = (r * 8 + s) < K ? (r * 8 + s) : g() % K;  // every centroid used
      for (std::size_t j = 0; j < d; ++j) w(r, s * d + j) = c(q, j);
    }
  pq_options opt;
  opt.init = kmeans_init::kmeans_plus_plus;  // D^2 sampling never picks a duplicate
  opt.iterations = 5;
  opt.d = d;
  opt.k = K;
  opt.seed = 11;
  const auto res = pq_quantize_layer(w, opt);
  CHECK(res.mse == 0.0);
  CHECK(bool(xt::xtensor<float, 2>(res.decoded) == w));
  CHECK(res.codebook.subspaces() == 1);
  CHECK(res.indices.shape()[0] == rows);
  CHECK(res.indices.shape()[1] == cols / d);
  // encode(decode(i)) == i for distinct centroids; decode via packed indices too
  const auto again = pq_encode(pq_decode(res.codebook, res.indices), res.codebook);
  CHECK(bool(again == res.indices));
  const auto packed = pack_indices(res.indices, pq_index_bits(K));
  CHECK(bool(pq_decode(res.codebook, unpack_indices(packed, rows, cols / d)) == w));
}

TEST_CASE("encode is the exact nearest centroid; decode looks it up (shared and per-subspace)", "[pq]") {
  const std::size_t d = 4, rows = 300, cols = 24, K = 32;
  const auto w = normal_matrix(rows, cols, 8);
  for (auto layout : {pq_layout::shared, pq_layout::per_subspace}) {
    pq_options opt;
    opt.d = d;
    opt.k = K;
    opt.iterations = 8;
    opt.layout = layout;
    opt.seed = 2;
    const auto cb = pq_train(w, opt);
    CHECK(cb.subspaces() == (layout == pq_layout::shared ? 1 : cols / d));
    const auto idx = pq_encode(w, cb);
    const auto dec = pq_decode(cb, idx);
    double err = 0;
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t s = 0; s < cols / d; ++s) {
        const float* cs = cb.centroids.data() + (layout == pq_layout::shared ? 0 : s) * K * d;
        CHECK(idx(r, s) == nearest(&w(r, s * d), cs, K, d));
        for (std::size_t j = 0; j < d; ++j) {
          CHECK(dec(r, s * d + j) == cs[idx(r, s) * d + j]);
          err += std::pow(double(w(r, s * d + j)) - dec(r, s * d + j), 2);
        }
      }
    const auto res = pq_quantize_layer(w, opt);
    CHECK(bool(res.indices == idx));
    CHECK(res.mse == Approx(err / (rows * cols)).epsilon(1e-12));
    // Unit Gaussian data: 32 centroids in 4-D must beat the 16-point product of optimal
    // 1-bit scalar quantizers (+-sqrt(2/pi) per coordinate), whose MSE is 1 - 2/pi = 0.363
    // per coordinate (the data variance, 1, was the old bound).
    CHECK(res.mse < 1.0 - 2.0 / 3.14159265358979);
    REQUIRE(!res.objective.empty());
    CHECK(res.objective[0].size() == 8);
  }
}

TEST_CASE("conv weights are flattened to [out, in*kh*kw]", "[pq]") {
  xt::xtensor<float, 4> w = xt::adapt(quant_test::normal_floats(40 * 4 * 3 * 3, 4), std::vector<std::size_t>{40, 4, 3, 3});
  const auto res = pq_quantize_layer(w, 9, 16, 1);
  CHECK(res.decoded.dimension() == 4);
  CHECK(res.decoded.shape()[3] == 3);
  CHECK(res.indices.shape()[0] == 40);
  CHECK(res.indices.shape()[1] == 4);
  const auto flat = pq_decode(res.codebook, res.indices);
  for (std::size_t i = 0; i < flat.size(); ++i) CHECK(res.decoded.data()[i] == flat.data()[i]);
  // Values: with d = 9 the subvector (o, c) is filter o's 3x3 kernel on input channel c
  // (PyTorch's weight.reshape(out, -1) order); its index is the exact nearest centroid and
  // decoded(o, c, ky, kx) that centroid's entry ky * 3 + kx.
  REQUIRE(res.codebook.centroids.shape()[0] == 1);
  const float* cs = res.codebook.centroids.data();
  double err = 0.0;
  std::size_t wrong_index = 0, wrong_value = 0;
  for (std::size_t o = 0; o < 40; ++o)
    for (std::size_t c = 0; c < 4; ++c) {
      const std::uint32_t q = res.indices(o, c);
      wrong_index += q != nearest(&w(o, c, 0, 0), cs, 16, 9);
      for (std::size_t ky = 0; ky < 3; ++ky)
        for (std::size_t kx = 0; kx < 3; ++kx) {
          wrong_value += res.decoded(o, c, ky, kx) != cs[q * 9 + ky * 3 + kx];
          err += std::pow(double(w(o, c, ky, kx)) - res.decoded(o, c, ky, kx), 2);
        }
    }
  CHECK(wrong_index == 0);
  CHECK(wrong_value == 0);
  CHECK(res.mse == Approx(err / w.size()).epsilon(1e-12));
  CHECK(res.mse < 1.0);  // 16 centroids fitted to the 160 kernels do better than the zero kernel (variance 1)
}

TEST_CASE("conv weights made of 16 distinct kernels are reconstructed exactly", "[pq]") {
  // Filter o, input channel c holds kernel (o * 4 + c) % 16 of a fixed set. k-means++ seeds
  // with probability proportional to the squared distance to the chosen centres, which is 0
  // for a copy of a chosen kernel: its 16 seeds are the 16 kernels, Lloyd keeps them, and
  // decoding is exact.
  const auto kernels = quant_test::normal_floats(16 * 9, 21);
  xt::xtensor<float, 4> w = xt::xtensor<float, 4>::from_shape({20, 4, 3, 3});
  for (std::size_t o = 0; o < 20; ++o)
    for (std::size_t c = 0; c < 4; ++c)
      for (std::size_t j = 0; j < 9; ++j) w(o, c, j / 3, j % 3) = kernels[((o * 4 + c) % 16) * 9 + j];
  pq_options opt;
  opt.init = kmeans_init::kmeans_plus_plus;
  opt.d = 9;
  opt.k = 16;
  opt.seed = 3;
  const auto res = pq_quantize_layer(w, opt);
  CHECK(res.mse == 0.0);
  quant_test::require_bitwise_equal(res.decoded.data(), w.data(), w.size(), "decoded conv weight");
}

TEST_CASE("size accounting and int8 centroids", "[pq]") {
  const auto w = normal_matrix(64, 128, 6);
  const auto res = pq_quantize_layer(w, 8, 16, 3);
  const auto& s = res.size;
  CHECK(s.weights == 8192);
  CHECK(s.float32_bytes == 32768);
  CHECK(s.index_bits == 4);
  CHECK(s.index_bytes == 1024 * 4 / 8);
  CHECK(s.centroid_bytes == 16 * 8 * 4);
  CHECK(s.centroid_bytes_int8 == 16 * 8 + 4);
  CHECK(s.compression_ratio() == Approx(32768.0 / (512 + 512)));
  CHECK(s.compression_ratio_int8() == Approx(32768.0 / (512 + 132)));
  const auto q = quantize_centroids(res.codebook);
  REQUIRE(q.scales.size() == 1);
  float absmax = 0;
  for (float v : res.codebook.centroids) absmax = std::max(absmax, std::fabs(v));
  CHECK(q.scales[0] == absmax / 127.0f);
  const auto back = dequantize_centroids(q);
  for (std::size_t i = 0; i < back.centroids.size(); ++i) {
    CHECK(std::fabs(back.centroids.data()[i] - res.codebook.centroids.data()[i]) <= 0.5f * q.scales[0] * 1.0001f);
    CHECK(std::abs(int(q.values.data()[i])) <= 127);
  }
  // per-subspace: one scale per codebook
  pq_options opt;
  opt.layout = pq_layout::per_subspace;
  auto wp = normal_matrix(40, 16, 1);
  for (std::size_t r = 0; r < 40; ++r)
    for (std::size_t c = 8; c < 16; ++c) wp(r, c) *= 10.0f;  // the second column block is 10x wider
  opt.d = 8;
  opt.k = 8;
  opt.seed = 1;
  const auto ps = pq_quantize_layer(wp, opt);
  const auto qs = quantize_centroids(ps.codebook);
  REQUIRE(qs.scales.size() == 2);
  CHECK(ps.size.centroid_bytes == 2 * 8 * 8 * 4);
  // each codebook's scale is its own absmax / 127, and its values dequantize within half a step
  const auto back_ps = dequantize_centroids(qs);
  for (std::size_t sub = 0; sub < 2; ++sub) {
    float am = 0.0f;
    for (std::size_t i = 0; i < 64; ++i) am = std::max(am, std::fabs(ps.codebook.centroids.data()[sub * 64 + i]));
    CHECK(qs.scales[sub] == am / 127.0f);
    for (std::size_t i = 0; i < 64; ++i) {
      const float c = ps.codebook.centroids.data()[sub * 64 + i];
      CHECK(int(qs.values.data()[sub * 64 + i]) == int(std::max(-127.0f, std::min(127.0f, std::nearbyint(c * (1.0f / qs.scales[sub]))))));
      CHECK(std::fabs(back_ps.centroids.data()[sub * 64 + i] - c) <= 0.5f * qs.scales[sub] * 1.0001f);
    }
  }
  CHECK(qs.scales[1] > 5.0f * qs.scales[0]);  // trained on their own columns
  // the layer's indices point into the codebook of their own column block
  const auto dec = pq_decode(ps.codebook, ps.indices);
  for (std::size_t r = 0; r < 40; ++r)
    for (std::size_t sub = 0; sub < 2; ++sub) {
      const float* cs = ps.codebook.centroids.data() + sub * 64;
      CHECK(ps.indices(r, sub) == nearest(&wp(r, sub * 8), cs, 8, 8));
      for (std::size_t j = 0; j < 8; ++j) CHECK(dec(r, sub * 8 + j) == cs[ps.indices(r, sub) * 8 + j]);
    }
}

TEST_CASE("iPQ: centroids move by the average gradient of their subvectors", "[pq]") {
  const std::size_t d = 4, K = 8;
  const auto w = normal_matrix(50, 16, 12);
  const auto g = normal_matrix(50, 16, 13);
  auto res = pq_quantize_layer(w, d, K, 5);
  const auto avg = ipq_centroid_gradients(res.codebook, res.indices, g);
  std::vector<double> sum(K * d, 0.0);
  std::vector<int> cnt(K, 0);
  for (std::size_t r = 0; r < 50; ++r)
    for (std::size_t s = 0; s < 4; ++s) {
      const auto q = res.indices(r, s);
      ++cnt[q];
      for (std::size_t j = 0; j < d; ++j) sum[q * d + j] += g(r, s * d + j);
    }
  for (std::size_t q = 0; q < K; ++q)
    for (std::size_t j = 0; j < d; ++j)
      CHECK(avg(0, q, j) == Approx(cnt[q] ? sum[q * d + j] / cnt[q] : 0.0).margin(1e-6));
  auto cb = res.codebook;
  ipq_update_centroids(cb, res.indices, g, 0.1f);
  for (std::size_t i = 0; i < cb.centroids.size(); ++i)
    CHECK(cb.centroids.data()[i] == res.codebook.centroids.data()[i] - 0.1f * avg.data()[i]);
  CHECK_THROWS_AS(ipq_centroid_gradients(res.codebook, res.indices, normal_matrix(50, 8, 1)), quant::length_error);
}

TEST_CASE("stage-wise iPQ quantizes one stage at a time and fine-tunes quantized stages", "[pq]") {
  xt::xtensor<float, 2> w0 = normal_matrix(64, 32, 1), w1 = normal_matrix(32, 16, 2);
  const auto w1_orig = w1;
  ipq_stagewise<> model;
  pq_options opt;
  opt.k = 16;
  opt.d = 8;
  model.add_layer("fc0", w0, opt, 0);
  model.add_layer("fc1", w1, opt, 1);
  CHECK(model.stage_count() == 2);
  const auto mses = model.quantize_stage(0);
  REQUIRE(mses.size() == 1);
  CHECK(model.at(0).quantized);
  CHECK(!model.at(1).quantized);
  CHECK(bool(w0 == pq_decode(model.at(0).codebook, model.at(0).indices)));
  CHECK(bool(w1 == w1_orig));
  const auto g0 = normal_matrix(64, 32, 3), g1 = normal_matrix(32, 16, 4);
  const auto before = model.at(0).codebook.centroids;
  CHECK(model.finetune_step({&g0, &g1}, 0.05f) == 1);
  CHECK(bool(model.at(0).codebook.centroids != before));
  CHECK(bool(w0 == pq_decode(model.at(0).codebook, model.at(0).indices)));
  CHECK(bool(w1 == w1_orig));  // not quantized yet: the caller's optimizer owns it
  model.quantize_stage(1);
  CHECK(model.at(1).quantized);
  const auto sz = model.size();
  CHECK(sz.weights == 64 * 32 + 32 * 16);
  CHECK(sz.centroid_bytes == 2 * 16 * 8 * 4);
  CHECK_THROWS_AS(model.finetune_step({&g0}, 0.1f), quant::length_error);
}

TEST_CASE("PQ errors", "[pq]") {
  const auto w = normal_matrix(8, 12, 1);
  CHECK_THROWS_AS(pq_quantize_layer(w, 8, 4, 1), quant::invalid_argument);  // 12 % 8
  CHECK_THROWS_WITH(pq_quantize_layer(w, 8, 4, 1), Catch::Contains("d = 8") && Catch::Contains("12"));
  CHECK_THROWS_AS(pq_quantize_layer(w, 4, 64, 1), quant::invalid_argument);  // 24 subvectors < 64
  auto bad = w;
  bad(2, 3) = std::nanf("");
  CHECK_THROWS_AS(pq_quantize_layer(bad, 4, 4, 1), quant::domain_error);
  const auto res = pq_quantize_layer(w, 4, 4, 1);
  auto idx = res.indices;
  idx(0, 0) = 4;
  CHECK_THROWS_AS(pq_decode(res.codebook, idx), quant::invalid_argument);
  CHECK_THROWS_AS(pq_encode(normal_matrix(8, 10, 1), res.codebook), quant::invalid_argument);
  xt::xtensor<float, 1> v = {1.0f, 2.0f};
  CHECK_THROWS_AS(pq_quantize_layer(v, 1, 1, 1), quant::invalid_argument);
}

TEST_CASE("pq_quantize_layer takes its options as given", "[pq]") {
  const auto w = normal_matrix(24, 32, 4);
  pq_options opt;
  opt.d = 4;
  opt.k = 16;
  opt.seed = 9;
  opt.iterations = 6;
  opt.init = kmeans_init::kmeans_plus_plus;
  opt.layout = pq_layout::per_subspace;
  SECTION("d, k, seed and the rest come from the options: the same as pq_train + pq_encode") {
    const auto res = pq_quantize_layer(w, opt);
    const auto cb = pq_train(w, opt);
    CHECK(res.codebook.d == 4);
    CHECK(res.codebook.k == 16);
    CHECK(res.codebook.layout == pq_layout::per_subspace);
    CHECK(bool(res.codebook.centroids == cb.centroids));
    CHECK(bool(res.indices == pq_encode(w, cb)));
    REQUIRE(res.objective.size() == 8);
    CHECK(res.objective[0].size() == 6);
  }
  SECTION("(W, d, k, seed) is the options with those three set and the rest at their defaults") {
    pq_options o3;
    o3.d = 4;
    o3.k = 16;
    o3.seed = 9;
    const auto a = pq_quantize_layer(w, 4, 16, 9);
    const auto b = pq_quantize_layer(w, o3);
    CHECK(bool(a.codebook.centroids == b.codebook.centroids));
    CHECK(bool(a.indices == b.indices));
  }
  SECTION("options that do not fit W are refused, naming the value") {
    auto o = opt;
    o.d = 5;  // 32 % 5 != 0
    CHECK_THROWS_AS(pq_quantize_layer(w, o), quant::invalid_argument);
    CHECK_THROWS_WITH(pq_quantize_layer(w, o), Catch::Contains("quant::pq_quantize_layer: d = 5") && Catch::Contains("32"));
    o = opt;
    o.k = 25;  // 24 rows per subspace
    CHECK_THROWS_AS(pq_quantize_layer(w, o), quant::invalid_argument);
  }
  SECTION("the deprecated (W, d, k, seed, options) form refuses options that disagree instead of overwriting them") {
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    const auto same = pq_quantize_layer(w, 4, 16, 9, opt);
    CHECK(bool(same.indices == pq_quantize_layer(w, opt).indices));
    CHECK_THROWS_AS(pq_quantize_layer(w, 8, 16, 9, opt), quant::invalid_argument);
    CHECK_THROWS_WITH(pq_quantize_layer(w, 8, 16, 9, opt),
                      Catch::Contains("quant::pq_quantize_layer: options.d = 4") && Catch::Contains("d = 8"));
    CHECK_THROWS_WITH(pq_quantize_layer(w, 4, 32, 9, opt),
                      Catch::Contains("quant::pq_quantize_layer: options.k = 16") && Catch::Contains("k = 32"));
    CHECK_THROWS_WITH(pq_quantize_layer(w, 4, 16, 1, opt),
                      Catch::Contains("quant::pq_quantize_layer: options.seed = 9") && Catch::Contains("seed = 1"));
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
  }
}

TEST_CASE("iPQ refuses a NaN or infinite gradient and leaves codebooks and weights unchanged", "[pq]") {
  // W [50, 16], d = 4: 200 subvectors; the check runs in the gradient's row-major order and
  // names the flat index of the first non-finite element.
  const std::size_t d = 4, K = 8;
  const auto w = normal_matrix(50, 16, 12);
  const auto g = normal_matrix(50, 16, 13);
  const auto res = pq_quantize_layer(w, d, K, 5);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    // first element, inside a row, last element, and two bad values (the lower one named)
    for (const std::vector<std::size_t>& at : std::vector<std::vector<std::size_t>>{
             {0}, {16 * 7 + 9}, {50 * 16 - 1}, {16 * 40 + 2, 16 * 3 + 5}}) {
      auto gb = g;
      for (std::size_t i : at) gb.data()[i] = bad;
      const std::size_t first = *std::min_element(at.begin(), at.end());
      std::ostringstream value;
      value << bad;
      const std::string named = "grad[" + std::to_string(first) + "] = " + value.str() + ": must be finite";
      INFO(named);
      CHECK_THROWS_AS(ipq_centroid_gradients(res.codebook, res.indices, gb), quant::domain_error);
      CHECK_THROWS_WITH(ipq_centroid_gradients(res.codebook, res.indices, gb), "quant::ipq_centroid_gradients: " + named);
      auto cb = res.codebook;
      CHECK_THROWS_WITH(ipq_update_centroids(cb, res.indices, gb, 0.1f), "quant::ipq_update_centroids: " + named);
      CHECK(bool(cb.centroids == res.codebook.centroids));
    }
  }
  SECTION("stage-wise: a bad gradient of any layer leaves every layer as it was") {
    xt::xtensor<float, 2> w0 = normal_matrix(64, 32, 1), w1 = normal_matrix(32, 16, 2);
    ipq_stagewise<> model;
    pq_options opt;
    opt.k = 16;
    opt.d = 8;
    model.add_layer("fc0", w0, opt, 0);
    model.add_layer("fc1", w1, opt, 0);
    model.quantize_stage(0);
    const auto c0 = model.at(0).codebook.centroids, c1 = model.at(1).codebook.centroids;
    const auto w0_before = w0, w1_before = w1;
    const auto g0 = normal_matrix(64, 32, 3);
    auto g1 = normal_matrix(32, 16, 4);
    g1(31, 15) = std::numeric_limits<float>::infinity();  // the last element of layer 1
    CHECK_THROWS_WITH(model.finetune_step({&g0, &g1}, 0.05f),
                      "quant::ipq_stagewise::finetune_step: grads[1][511] = inf: must be finite");
    CHECK(bool(model.at(0).codebook.centroids == c0));  // layer 0 comes first and was not moved
    CHECK(bool(model.at(1).codebook.centroids == c1));
    CHECK(bool(w0 == w0_before));
    CHECK(bool(w1 == w1_before));
    CHECK_THROWS_WITH(model.finetune_step({&g0, &g1}, std::nanf("")),
                      "quant::ipq_stagewise::finetune_step: lr = nan: must be finite");
    g1(31, 15) = 0.0f;
    CHECK(model.finetune_step({&g0, &g1}, 0.05f) == 2);  // finite: both layers move
    CHECK(bool(model.at(0).codebook.centroids != c0));
    CHECK(bool(w0 == pq_decode(model.at(0).codebook, model.at(0).indices)));
  }
}
