// Thread independence of the kernels that split their work into pieces: each is run on
// sizes that give it several pieces (and above parallel_min_elements), once with
// 1 thread and once with 2, and the outputs must agree bit for bit and with a serial
// expectation computed here. Before comparing, each test checks that "2 threads" really
// is a team of two: in a build that asks for OpenMP (QUANT_OPENMP, which defines
// QUANT_TEST_EXPECT_OPENMP) a missing OpenMP fails the test; a build configured without
// OpenMP has no threads to test and says so with a WARN in the output.
#include <quant/parallel.hpp>
#include <quant/im2col.hpp>
#include <quant/kmeans.hpp>
#include <quant/kurtosis.hpp>
#include <quant/quant_noise.hpp>
#include <quant/range/common.hpp>
#include <quant/range/histogram.hpp>
#include <quant/reference/kmeans.hpp>
#include <quant/reference/uniform.hpp>
#include <quant/ste.hpp>
#include <quant/uniform.hpp>

#include <xtensor/xadapt.hpp>

#include "test_helpers.hpp"

using namespace quant;
using quant_test::bits_of;
using quant_test::thread_cap;
using quant_test::with_threads;
using quant_test::require_bitwise_equal;

namespace {


}  // namespace

TEST_CASE("histogram add: several 2^16-value pieces, same counts for 1 and 2 threads as one piece at a time",
          "[threads][observers]") {
  quant_test::require_two_threads();
  const std::size_t n = 3 * (std::size_t(1) << 16) + 1234;
  const auto x = quant_test::normal_floats(n, 401, 2.0f);
  const float lo = *std::min_element(x.begin(), x.end()), hi = *std::max_element(x.begin(), x.end());
  auto run = [&] {
    detail::lattice_histogram h(512);
    h.add(x.data(), n, lo, hi);
    return h.counts();
  };
  const auto c1 = with_threads(1, run), c2 = with_threads(2, run);
  // serial expectation: the same values added in calls of 1000 (each one piece, one thread)
  detail::lattice_histogram s(512);
  for (std::size_t b = 0; b < n; b += 1000) s.add(x.data() + b, std::min<std::size_t>(1000, n - b), lo, hi);
  REQUIRE(c1.size() == s.counts().size());
  CHECK(c1 == c2);
  CHECK(c1 == s.counts());
  double total = 0.0;
  for (auto v : c1) total += static_cast<double>(v);
  CHECK(total == static_cast<double>(n));
}

TEST_CASE("channel min-max: every layout branch, 1 and 2 threads, equal to a direct loop", "[threads][observers]") {
  quant_test::require_two_threads();
  struct layout_case {
    const char* name;
    std::vector<std::size_t> shape;
    std::optional<std::ptrdiff_t> axis;
  };
  const std::vector<layout_case> cases = {
      {"per tensor (2^16 pieces)", {5, 40000}, std::nullopt},
      {"channel axis 1, inner >= 64 (one run per channel)", {40, 6, 1000}, 1},
      {"channel axis 1, inner < 64 (rows folded)", {9000, 12, 3}, 1},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    std::size_t n = 1;
    for (auto d : c.shape) n *= d;
    const auto x = quant_test::normal_floats(n, 402, 3.0f, 0.5f);
    const detail::channel_layout l = detail::make_channel_layout(c.shape, c.axis, "test");
    auto run = [&] { return detail::channel_min_max(x.data(), l, "test"); };
    const auto r1 = with_threads(1, run), r2 = with_threads(2, run);
    std::vector<float> lo(l.channels, INFINITY), hi(l.channels, -INFINITY);
    for (std::size_t e = 0; e < n; ++e) {
      const std::size_t ch = c.axis ? (e / l.inner) % l.channels : 0;
      lo[ch] = std::min(lo[ch], x[e]);
      hi[ch] = std::max(hi[ch], x[e]);
    }
    REQUIRE(r1.size() == l.channels);
    REQUIRE(r2.size() == l.channels);
    for (std::size_t ch = 0; ch < l.channels; ++ch) {
      INFO("channel " << ch);
      CHECK(bits_of(r1[ch].min) == bits_of(lo[ch]));
      CHECK(bits_of(r1[ch].max) == bits_of(hi[ch]));
      CHECK(bits_of(r2[ch].min) == bits_of(lo[ch]));
      CHECK(bits_of(r2[ch].max) == bits_of(hi[ch]));
    }
  }
}

TEST_CASE("kurtosis gradient pass: several pieces, 1 and 2 threads, equal to the formula in float",
          "[threads][kurtosis]") {
  quant_test::require_two_threads();
  const std::size_t n = 5 * detail::moments_piece + 13;
  const auto x = quant_test::normal_floats(n, 403, 1.5f, 0.25f);
  const auto g0 = quant_test::normal_floats(n, 404);
  const float mu = 0.2f, a = 0.37f, b = 1.3f, a_m3 = -0.05f;
  for (bool accumulate : {false, true}) {
    INFO((accumulate ? "accumulate" : "overwrite"));
    auto run = [&] {
      std::vector<float> g = g0;
      kernels::kurtosis_gradient(x.data(), n, mu, a, b, a_m3, g.data(), accumulate);
      return g;
    };
    const auto r1 = with_threads(1, run), r2 = with_threads(2, run);
    std::vector<float> want(n);
    for (std::size_t i = 0; i < n; ++i) {
      const float y = x[i] - mu;
      const float v = (a * (y * y) - b) * y - a_m3;  // -ffp-contract=off: no fused multiply-add
      want[i] = accumulate ? g0[i] + v : v;
    }
    require_bitwise_equal(r2, r1, n, "2 threads vs 1");
    require_bitwise_equal(r1, want, n, "vs formula");
  }
}

TEST_CASE("fake_quantize_with_mask and dequantize: several chunks, 1 and 2 threads, equal to the reference",
          "[threads][uniform][ste]") {
  quant_test::require_two_threads();
  const std::size_t rows = 24, cols = 4099;  // > 2^16, not a multiple of the chunk
  const std::size_t n = rows * cols;
  const auto x = quant_test::normal_floats(n, 405, 4.0f);
  const xt::xtensor<float, 2> xa = xt::adapt(x, std::array<std::size_t, 2>{rows, cols});
  std::vector<float> s(rows);
  std::vector<std::int32_t> z(rows);
  for (std::size_t r = 0; r < rows; ++r) s[r] = 0.03f + 0.004f * static_cast<float>(r), z[r] = static_cast<int>(r % 5) - 2;
  const qparams pc = qparams::per_channel(grid::int_signed(6), s, z, 0);
  const qparams pt = qparams::per_tensor(grid::int_signed(4), 0.4f, 1);
  for (const qparams& p : {pt, pc}) {
    INFO((p.granularity() == granularity::per_tensor ? "per tensor" : "per channel"));
    SECTION("fake_quantize_with_mask") {
      auto run = [&] { return eager::fake_quantize_with_mask(xa, p); };
      const auto r1 = with_threads(1, run), r2 = with_threads(2, run);
      const auto want_y = ref::fake_quantize(x, {rows, cols}, p);
      const auto want_m = ref::ste_mask(x, {rows, cols}, p);
      require_bitwise_equal(r2.y, r1.y, n, "y: 2 threads vs 1");
      require_bitwise_equal(r1.y, want_y, n, "y vs reference");
      std::size_t mask_diff = 0, mask_ref_diff = 0;
      for (std::size_t i = 0; i < n; ++i) {
        mask_diff += r1.mask.flat(i) != r2.mask.flat(i);
        mask_ref_diff += static_cast<float>(r1.mask.flat(i)) != want_m[i];
      }
      CHECK(mask_diff == 0);
      CHECK(mask_ref_diff == 0);
    }
    SECTION("dequantize") {
      const auto q = eager::quantize<std::int8_t>(xa, p);
      auto run = [&] { return eager::dequantize(q, p); };
      const auto d1 = with_threads(1, run), d2 = with_threads(2, run);
      std::vector<float> want(n);
      for (std::size_t i = 0; i < n; ++i) {
        const auto a = ref::element_params({rows, cols}, p, i);
        want[i] = (static_cast<float>(q.flat(i)) - a.z) * a.s;
      }
      require_bitwise_equal(d2, d1, n, "2 threads vs 1");
      require_bitwise_equal(d1, want, n, "vs (q - z) * s");
    }
  }
}

TEST_CASE("im2col over a batch: one image per piece, 1 and 2 threads, equal to the index formula", "[threads][im2col]") {
  quant_test::require_two_threads();
  conv2d_shape g;
  g.channels = 3, g.height = 23, g.width = 19, g.kernel_h = 3, g.kernel_w = 4;
  g.stride_h = 2, g.stride_w = 1, g.pad_h = 1, g.pad_w = 2, g.dilation_h = 1, g.dilation_w = 2;
  const std::size_t batch = 12;
  const auto xv = quant_test::normal_floats(batch * g.image_size(), 406);
  const xt::xtensor<float, 4> x = xt::adapt(xv, std::array<std::size_t, 4>{batch, g.channels, g.height, g.width});
  const std::size_t oh = g.out_h(), ow = g.out_w(), k = g.patch_size();
  REQUIRE(batch * oh * ow * k > parallel_min_elements);
  auto run = [&] { return im2col(x, g); };
  const auto c1 = with_threads(1, run), c2 = with_threads(2, run);
  require_bitwise_equal(c2, c1, c1.size(), "2 threads vs 1");
  std::size_t wrong = 0;
  for (std::size_t n = 0; n < batch; ++n)
    for (std::size_t oy = 0; oy < oh; ++oy)
      for (std::size_t ox = 0; ox < ow; ++ox)
        for (std::size_t c = 0; c < g.channels; ++c)
          for (std::size_t ky = 0; ky < g.kernel_h; ++ky)
            for (std::size_t kx = 0; kx < g.kernel_w; ++kx) {
              const long y = static_cast<long>(oy * g.stride_h + ky * g.dilation_h) - static_cast<long>(g.pad_h);
              const long xx = static_cast<long>(ox * g.stride_w + kx * g.dilation_w) - static_cast<long>(g.pad_w);
              const bool in = y >= 0 && y < static_cast<long>(g.height) && xx >= 0 && xx < static_cast<long>(g.width);
              const float want = in ? x(n, c, static_cast<std::size_t>(y), static_cast<std::size_t>(xx)) : 0.0f;
              wrong += bits_of(c1((n * oh + oy) * ow + ox, (c * g.kernel_h + ky) * g.kernel_w + kx)) != bits_of(want);
            }
  CHECK(wrong == 0);
}

TEST_CASE("Quant-Noise apply: proxy and scalar noise, 1 and 2 threads, equal to the per-block formula",
          "[threads][quant_noise]") {
  quant_test::require_two_threads();
  const std::size_t out = 96, in = 1024;  // 12288 blocks of 8, 98304 weights
  const auto wv = quant_test::normal_floats(out * in, 407, 0.2f);
  const xt::xtensor<float, 2> w = xt::adapt(wv, std::array<std::size_t, 2>{out, in});
  quant_noise_options opt;
  opt.p = 0.15f;
  opt.block_size = 8;
  opt.seed = 31;
  const std::size_t n = out * in;
  SECTION("proxy: noised blocks zero, the others scaled by 1 / (1 - p)") {
    auto run = [&] { return quant_noise(w, opt, proxy_noise{}); };
    const auto r1 = with_threads(1, run), r2 = with_threads(2, run);
    require_bitwise_equal(r2.weights, r1.weights, n, "2 threads vs 1");
    const float keep = 1.0f / (1.0f - opt.p);
    std::vector<float> want(n);
    for (std::size_t e = 0; e < n; ++e) {
      const bool noised = detail::counter_uniform(opt.seed, e / opt.block_size) < opt.p;
      want[e] = noised ? 0.0f : wv[e] * keep;
    }
    require_bitwise_equal(r1.weights, want, n, "vs formula");
  }
  SECTION("scalar: noised blocks fake-quantized") {
    const qparams p = qparams::per_tensor(grid::int_signed(4), 0.05f, 0);
    auto run = [&] { return quant_noise(w, opt, scalar_noise{p}); };
    const auto r1 = with_threads(1, run), r2 = with_threads(2, run);
    require_bitwise_equal(r2.weights, r1.weights, n, "2 threads vs 1");
    const auto fq = ref::fake_quantize(wv, {out, in}, p);
    std::vector<float> want(n);
    for (std::size_t e = 0; e < n; ++e)
      want[e] = detail::counter_uniform(opt.seed, e / opt.block_size) < opt.p ? fq[e] : wv[e];
    require_bitwise_equal(r1.weights, want, n, "vs formula");
  }
}

TEST_CASE("k-means on its GEMM path (d >= 32): E-step and whole runs identical for 1 and 2 threads",
          "[threads][kmeans]") {
  quant_test::require_two_threads();
  const std::size_t d = 32, n = 6000, k = 24;
  // Well separated blobs (centres 3 apart per coordinate, noise sd 0.1): every point's
  // nearest centre is unambiguous, so the GEMM E-step must equal the exact-distance reference.
  std::vector<float> centres = quant_test::normal_floats(k * d, 408, 3.0f);
  std::vector<float> x(n * d);
  const auto noise = quant_test::normal_floats(n * d, 409, 0.1f);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) x[i * d + j] = centres[(i % k) * d + j] + noise[i * d + j];
  const xt::xtensor<float, 2> pts = xt::adapt(x, std::array<std::size_t, 2>{n, d});
  const xt::xtensor<float, 2> c = xt::adapt(centres, std::array<std::size_t, 2>{k, d});
  auto assign = [&] { return kmeans_assign(pts, c); };  // gemm_min_dim = 32
  const auto a1 = with_threads(1, assign), a2 = with_threads(2, assign);
  const auto want = ref::kmeans_assign(x, d, centres);
  std::size_t diff = 0, ref_diff = 0;
  for (std::size_t i = 0; i < n; ++i) {
    diff += a1(i) != a2(i);
    ref_diff += a1(i) != want[i];
  }
  CHECK(diff == 0);
  CHECK(ref_diff == 0);
  kmeans_options opt;
  opt.k = k;
  opt.iterations = 4;
  opt.seed = 5;
  auto run = [&] { return kmeans(pts, opt); };
  const auto r1 = with_threads(1, run), r2 = with_threads(2, run);
  require_bitwise_equal(r2.centroids, r1.centroids, k * d, "centroids: 2 threads vs 1");
  CHECK(bool(r1.assignments == r2.assignments));
  CHECK(r1.objective == r2.objective);
}
