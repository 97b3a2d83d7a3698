#include <quant/ste.hpp>
#include <quant/reference/uniform.hpp>

#include <xtensor/xadapt.hpp>

#include "test_helpers.hpp"
#include "torch_golden.hpp"

using namespace quant;
using quant_test::require_bitwise_equal;

namespace {

std::vector<float> times(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> r(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) r[i] = a[i] * b[i];
  return r;
}

}  // namespace

TEST_CASE("eager clipped STE matches dy * reference mask, every size and alignment", "[ste]") {
  const qparams p = qparams::per_tensor(grid::int_signed(4), 0.25f, 2);
  for (std::size_t n : quant_test::edge_sizes()) {
    for (std::size_t offset = 0; offset < 16; ++offset) {
      auto xb = quant_test::normal_floats(n + 32, 3 + static_cast<std::uint32_t>(n), 2.0f);
      auto gb = quant_test::normal_floats(n + 32, 4 + static_cast<std::uint32_t>(n));
      // half of the x on exact ties around the grid ends
      auto ties = quant_test::tie_floats(n + 32, 0.25f, 12);
      for (std::size_t i = 0; i < xb.size(); i += 2) xb[i] = ties[i];
      // The kernels read x and dy where they lie in xb and gb: `offset` floats past a
      // 64-byte boundary (dy at another misalignment).
      const float* xp = quant_test::at_misalignment(xb, offset);
      const float* gp = quant_test::at_misalignment(gb, (offset + 7) % 16);
      const std::vector<float> x(xp, xp + n), dy(gp, gp + n);
      const std::vector<std::size_t> shape{n};
      const auto want = times(dy, ref::ste_mask(x, shape, p));
      const auto xa = xt::adapt(xp, n, xt::no_ownership(), shape);
      const auto da = xt::adapt(gp, n, xt::no_ownership(), shape);
      require_bitwise_equal(eager::ste_backward(xa, da, p), want, n, "eager n=" + std::to_string(n));
      std::vector<float> ds(n + 32);
      float* dsp = quant_test::at_misalignment(ds, (offset + 1) % 16);  // output misaligned differently
      const auto plan = detail::make_segment_plan(shape, p, "test");
      kernels::ste_backward<simd::default_arch>(xp, gp, dsp, plan, -8.f, 7.f);
      require_bitwise_equal(dsp, want, n, "SIMD kernel");
      kernels::ste_backward<simd::scalar>(xp, gp, dsp, plan, -8.f, 7.f);
      require_bitwise_equal(dsp, want, n, "scalar kernel");
      xt::xarray<float> lazy = ste_backward(xa, da, 0.25f, 2, grid::int_signed(4));
      require_bitwise_equal(lazy, want, n, "lazy per tensor");
      xt::xarray<float> lazy_q = ste_backward(xa, da, p);
      require_bitwise_equal(lazy_q, want, n, "lazy qparams");
    }
  }
}

TEST_CASE("STE mask is taken before clamping, with the forward's rounding", "[ste]") {
  // s = 1, z = 0, int4 [-8, 7]: 7.4 rounds to 7 (inside), 7.5 rounds to 8 (even: outside),
  // 6.5 rounds to 6, -8.5 rounds to -8 (inside), -8.6 to -9 (outside)
  xt::xarray<float> x = {7.4f, 7.5f, 6.5f, -8.5f, -8.6f, 8.5f};
  xt::xarray<float> dy = {1.f, 1.f, 1.f, 1.f, 1.f, 1.f};
  const qparams p = qparams::per_tensor(grid::int_signed(4), 1.0f, 0);
  xt::xarray<float> want = {1.f, 0.f, 1.f, 1.f, 0.f, 0.f};
  CHECK((eager::ste_backward(x, dy, p) == want));
  // half away from zero: -8.5 -> -9 is outside, 6.5 -> 7 inside, 7.5 -> 8 outside
  xt::xarray<float> want_away = {1.f, 0.f, 1.f, 0.f, 0.f, 0.f};
  CHECK((eager::ste_backward<round_half_away_from_zero>(x, dy, p) == want_away));
  xt::xarray<float> lazy_away = ste_backward<round_half_away_from_zero>(x, dy, p);
  CHECK((lazy_away == want_away));
  // PyTorch multiplies dy by the mask: a negative dy outside the grid gives -0.0
  xt::xarray<float> neg = {-2.f, -2.f, -2.f, -2.f, -2.f, -2.f};
  auto g = eager::ste_backward(x, neg, p);
  CHECK(std::signbit(g(1)));
  CHECK(g(1) == 0.0f);
  // NaN input: no grid value, no gradient
  xt::xarray<float> xn = {std::nanf("")};
  xt::xarray<float> one = {1.0f};
  CHECK(eager::ste_backward(xn, one, p)(0) == 0.0f);
}

TEST_CASE("identity STE passes dy through", "[ste]") {
  auto x = quant_test::normal_floats(1003, 8, 30.0f);
  auto dy = quant_test::normal_floats(1003, 9);
  auto xa = xt::adapt(x, std::vector<std::size_t>{1003});
  auto da = xt::adapt(dy, std::vector<std::size_t>{1003});
  const qparams p = qparams::per_tensor(grid::int_unsigned(8), 0.01f, 10);
  require_bitwise_equal(eager::ste_backward(xa, da, p, ste_mode::identity), dy, dy.size(), "eager");
  xt::xarray<float> lazy = ste_backward(xa, da, p, ste_mode::identity);
  require_bitwise_equal(lazy, dy, dy.size(), "lazy");
  xt::xarray<float> inplace = da;  // output aliasing dy
  eager::ste_backward(xa, inplace, p, inplace, ste_mode::identity);
  require_bitwise_equal(inplace, dy, dy.size(), "in place");
}

TEST_CASE("STE per channel on every axis and per group matches the reference", "[ste]") {
  const std::vector<std::size_t> shape = {3, 8, 70};
  const std::size_t n = 3 * 8 * 70;
  auto x = quant_test::normal_floats(n, 31, 1.5f);
  auto dy = quant_test::normal_floats(n, 32);
  xt::xarray<float> xa = xt::adapt(x, shape), da = xt::adapt(dy, shape);
  const grid g = grid::int_signed(4);
  for (std::ptrdiff_t axis : {0, 1, 2, -1}) {
    const std::size_t ax = static_cast<std::size_t>(axis < 0 ? axis + 3 : axis);
    std::vector<float> s(shape[ax]);
    std::vector<std::int32_t> z(shape[ax]);
    for (std::size_t c = 0; c < s.size(); ++c) {
      s[c] = 0.05f + 0.03f * static_cast<float>(c % 11);
      z[c] = static_cast<std::int32_t>(c % 5) - 2;
    }
    const qparams p = qparams::per_channel(g, s, z, axis);
    const auto want = times(dy, ref::ste_mask(x, shape, p));
    require_bitwise_equal(eager::ste_backward(xa, da, p), want, n, "eager axis " + std::to_string(axis));
    xt::xarray<float> lazy = ste_backward(xa, da, p);
    require_bitwise_equal(lazy, want, n, "lazy axis " + std::to_string(axis));
  }
  std::vector<float> s(3 * 8 * 7);
  for (std::size_t k = 0; k < s.size(); ++k) s[k] = 0.02f * static_cast<float>(k % 13 + 1);
  const qparams pg = qparams::per_group(g, s, std::vector<std::int32_t>(s.size(), 1), 2, 10);
  require_bitwise_equal(eager::ste_backward(xa, da, pg), times(dy, ref::ste_mask(x, shape, pg)), n, "group");
}

TEST_CASE("lazy STE composes with expressions", "[ste]") {
  xt::xarray<float> w = xt::adapt(quant_test::normal_floats(1003, 1), std::vector<std::size_t>{1003});
  xt::xarray<float> b = xt::adapt(quant_test::normal_floats(1003, 2), std::vector<std::size_t>{1003});
  xt::xarray<float> dy = xt::adapt(quant_test::normal_floats(1003, 3), std::vector<std::size_t>{1003});
  const qparams p = qparams::per_tensor(grid::int_signed(4), 0.3f, 0);
  xt::xarray<float> lazy = ste_backward(w * 2.0f + b, dy * 0.5f, 0.3f, 0, grid::int_signed(4));
  xt::xarray<float> xs = w * 2.0f + b, ds = dy * 0.5f;
  require_bitwise_equal(lazy, eager::ste_backward(xs, ds, p), 1003);
}

TEST_CASE("fake_quantize_with_mask: y equals fake_quantize, mask equals the STE mask", "[ste]") {
  for (std::size_t n : quant_test::edge_sizes()) {
    auto x = quant_test::normal_floats(n, 50 + static_cast<std::uint32_t>(n), 5.0f);
    const std::vector<std::size_t> shape{n};
    auto xa = xt::adapt(x, shape);
    const qparams p = qparams::per_tensor(grid::int_unsigned(4), 0.5f, 7);
    auto r = eager::fake_quantize_with_mask(xa, p);
    require_bitwise_equal(r.y, eager::fake_quantize(xa, p), n, "y");
    const auto m = ref::ste_mask(x, shape, p);
    for (std::size_t i = 0; i < n; ++i) REQUIRE(static_cast<float>(r.mask(i)) == m[i]);
  }
  // stochastic rounding: the mask belongs to the same draw as y, and ste_backward with the
  // forward's seed reproduces it
  const std::size_t n = 4099;
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = 7.0f + static_cast<float>(i % 100) * 0.01f;  // 7.0 .. 7.99
  auto xa = xt::adapt(x, std::vector<std::size_t>{n});
  const qparams p = qparams::per_tensor(grid::int_signed(4), 1.0f, 0);
  const round_stochastic rs{99};
  auto r = eager::fake_quantize_with_mask(xa, p, rs);
  require_bitwise_equal(r.y, eager::fake_quantize(xa, p, rs), n, "stochastic y");
  xt::xarray<float> ones = xt::ones<float>({n});
  auto dx = eager::ste_backward(xa, ones, p, ste_mode::clipped, rs);
  std::size_t outside = 0;
  for (std::size_t i = 0; i < n; ++i) {
    REQUIRE(static_cast<float>(r.mask(i)) == dx(i));
    outside += r.mask(i) == 0;
  }
  CHECK(outside > n / 4);  // x - 7 averages ~0.5: about half round up out of the grid
  CHECK(outside < 3 * n / 4);
}

TEST_CASE("eager STE is identical for 1 and 2 threads", "[ste]") {
  quant_test::require_two_threads();  // fails if "2 threads" would be a serial run
  const std::size_t n = (1u << 17) + 5;
  auto x = quant_test::normal_floats(n, 61, 3.0f);
  auto dy = quant_test::normal_floats(n, 62);
  auto xa = xt::adapt(x, std::vector<std::size_t>{n});
  auto da = xt::adapt(dy, std::vector<std::size_t>{n});
  const qparams p = qparams::per_tensor(grid::int_signed(4), 0.4f, 0);
  set_num_threads(1);
  auto a = eager::ste_backward(xa, da, p);
  set_num_threads(2);
  auto b = eager::ste_backward(xa, da, p);
  set_num_threads(0);
  require_bitwise_equal(a, b, n);
  require_bitwise_equal(a, times(dy, ref::ste_mask(x, {n}, p)), n, "reference");
}

TEST_CASE("STE validates shapes and parameters", "[ste][errors]") {
  xt::xarray<float> x = xt::zeros<float>({4, 6});
  xt::xarray<float> dy = xt::zeros<float>({4, 5});
  const qparams p = qparams::per_tensor(grid::int_signed(8), 1.0f);
  CHECK_THROWS_AS(eager::ste_backward(x, dy, p), quant::length_error);
  CHECK_THROWS_WITH(eager::ste_backward(x, dy, p), Catch::Contains("ste_backward") && Catch::Contains("dy.shape"));
  CHECK_THROWS_AS(ste_backward(x, dy, p), quant::length_error);
  CHECK_THROWS_AS(ste_backward(x, dy, 1.0f, 0, grid::int_signed(8)), quant::length_error);
  xt::xarray<float> d2 = xt::zeros<float>({4, 6});
  CHECK_THROWS_AS(ste_backward(x, d2, 0.0f, 0, grid::int_signed(8)), quant::invalid_argument);
  CHECK_THROWS_AS(ste_backward(x, d2, 1.0f, 0, grid::int_signed(17)), quant::invalid_argument);
  const qparams bad_axis = qparams::per_channel(grid::int_signed(8), {1.f, 1.f, 1.f, 1.f}, 2);
  CHECK_THROWS_WITH(eager::ste_backward(x, d2, bad_axis), Catch::Contains("axis = 2"));
  CHECK_THROWS_AS(eager::fake_quantize_with_mask(x, bad_axis), quant::invalid_argument);
  const qparams three = qparams::per_channel(grid::int_signed(8), {1.f, 1.f, 1.f}, 0);
  CHECK_THROWS_AS(ste_backward(x, d2, three), quant::length_error);
  xt::xarray<float> empty = xt::zeros<float>({0});
  CHECK(eager::ste_backward(empty, empty, p).size() == 0);
}

// ---- PyTorch golden data (tools/torch_golden.py) -------------------------------------

TEST_CASE("fake-quant and its mask are bit-identical to PyTorch 1.13", "[ste][uniform][torch]") {
  const auto cases = quant_test::read_golden("torch_fake_quantize.txt");
  REQUIRE(cases.size() > 50);
  for (const auto& c : cases) {
    INFO(c.name);
    const grid g = quant_test::grid_for(c.qmin, c.qmax);
    const auto& x = c["x"];
    const auto& s = c["scale"];
    std::vector<std::int32_t> z;
    for (float v : c["zero_point"]) z.push_back(static_cast<std::int32_t>(v));
    const qparams p = c.kind == "fq_tensor" ? qparams::per_tensor(g, s[0], z[0])
                                            : qparams::per_channel(g, s, z, c.axis);
    xt::xarray<float> xa = xt::adapt(x, c.shape);
    const std::size_t n = x.size();
    require_bitwise_equal(eager::fake_quantize(xa, p), c["y"], n, "eager fake_quantize");
    xt::xarray<float> lazy = fake_quantize(xa, p);
    require_bitwise_equal(lazy, c["y"], n, "lazy fake_quantize(qparams)");
    if (c.kind == "fq_tensor") {
      xt::xarray<float> lazy_t = fake_quantize(xa, s[0], z[0], g);
      require_bitwise_equal(lazy_t, c["y"], n, "lazy fake_quantize(scale, zero_point)");
    }
    require_bitwise_equal(ref::fake_quantize(x, c.shape, p), c["y"], n, "ref::fake_quantize");
    auto r = eager::fake_quantize_with_mask(xa, p);
    require_bitwise_equal(r.y, c["y"], n, "fake_quantize_with_mask y");
    for (std::size_t i = 0; i < n; ++i) REQUIRE(static_cast<float>(r.mask(i)) == c["mask"][i]);
    xt::xarray<float> ones = xt::ones<float>(c.shape);
    require_bitwise_equal(eager::ste_backward(xa, ones, p), c["mask"], n, "eager STE");
    xt::xarray<float> lazy_ste = ste_backward(xa, ones, p);
    require_bitwise_equal(lazy_ste, c["mask"], n, "lazy STE");
  }
}

namespace {
template <class Round>
void check_ste_policy(rounding_mode mode, const std::vector<float>& hand_mask, const Round& r = {}) {
  // Hand-computed masks: s = 1, z = 0, int4 [-8, 7], x = 7.5, -8.5, 7.2, -8.2.
  const xt::xarray<float> x = {7.5f, -8.5f, 7.2f, -8.2f};
  const xt::xarray<float> dy = {1.0f, 2.0f, 3.0f, 4.0f};
  const qparams p1 = qparams::per_tensor(grid::int_signed(4), 1.0f, 0);
  const auto got = eager::ste_backward<Round>(x, dy, p1, ste_mode::clipped, r);
  for (std::size_t i = 0; i < x.size(); ++i) {
    INFO(Round::name() << " x = " << x(i));
    CHECK(got(i) == dy(i) * hand_mask[i]);
  }
  // Against the reference mask with the same policy, on ties around both grid ends, per
  // channel, sizes through the vector body and tail.
  const std::vector<std::size_t> shape{3, 41};
  auto xv = quant_test::tie_floats(3 * 41, 0.25f, 12);
  const auto dyv = quant_test::normal_floats(3 * 41, 77);
  for (std::size_t i = 1; i < xv.size(); i += 4) xv[i] = std::nextafter(xv[i], 0.0f);
  const qparams p = qparams::per_channel(grid::int_signed(4), {0.25f, 0.5f, 0.125f}, {2, 0, -3}, 0);
  std::uint64_t seed = 0;
  if constexpr (Round::is_stochastic) seed = r.seed;
  const auto mask = ref::ste_mask(xv, shape, p, mode, seed);
  const auto out = eager::ste_backward<Round>(xt::adapt(xv, shape), xt::adapt(dyv, shape), p, ste_mode::clipped, r);
  require_bitwise_equal(out, times(dyv, mask), xv.size(), std::string(Round::name()) + " vs ref::ste_mask");
}
}  // namespace

TEST_CASE("STE mask with every rounding policy: hand-computed cases and the reference", "[ste][rounding]") {
  //                                                           7.5  -8.5  7.2  -8.2
  check_ste_policy<round_half_to_even>(rounding_mode::half_to_even, {0, 1, 1, 1});
  check_ste_policy<round_half_away_from_zero>(rounding_mode::half_away_from_zero, {0, 0, 1, 1});
  check_ste_policy<round_half_up>(rounding_mode::half_up, {0, 1, 1, 1});
  check_ste_policy<round_floor>(rounding_mode::floor, {1, 0, 1, 0});
  check_ste_policy<round_ceil>(rounding_mode::ceil, {0, 1, 0, 1});
  check_ste_policy<round_toward_zero>(rounding_mode::toward_zero, {1, 1, 1, 1});
}

TEST_CASE("stochastic STE mask follows the forward's draws", "[ste][rounding]") {
  // x = 7.5: rounds to 8 (outside) exactly when u < 0.5, so the mask is 1[u >= 0.5] with
  // u = the counter uniform of that element; the reference mask uses the same draws.
  const std::size_t n = 4099;
  const std::vector<float> xv(n, 7.5f), dyv(n, 1.0f);
  const qparams p = qparams::per_tensor(grid::int_signed(4), 1.0f, 0);
  const round_stochastic r{99};
  const auto out = eager::ste_backward<round_stochastic>(xt::adapt(xv, std::vector<std::size_t>{n}),
                                                         xt::adapt(dyv, std::vector<std::size_t>{n}), p,
                                                         ste_mode::clipped, r);
  const auto mask = ref::ste_mask(xv, {n}, p, rounding_mode::stochastic, 99);
  require_bitwise_equal(out, mask, n, "stochastic vs ref");
  double inside = 0;
  for (std::size_t i = 0; i < n; ++i) inside += out(i);
  // Bernoulli(1/2): sd = sqrt(n / 4) ~ 32; allow 5 sd.
  CHECK(std::fabs(inside - n / 2.0) < 5.0 * std::sqrt(n / 4.0));
}

TEST_CASE("ste_backward with an lvalue mode or rounding policy selects the returning overload", "[ste]") {
  // The out-parameter overload is SFINAE-constrained to float containers: an lvalue ste_mode
  // used to select it (and fail its static_assert), a const lvalue policy was ambiguous
  // under clang.
  const qparams p = qparams::per_tensor(grid::int_signed(4), 0.25f, 0);
  const xt::xarray<float> x = {-2.2f, -2.0f, -1.9f, 0.3f, 1.75f, 1.8f};
  const xt::xarray<float> dy = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  ste_mode clipped = ste_mode::clipped;
  const ste_mode clipped_c = ste_mode::clipped;
  const round_ceil ceil_c{};
  const std::vector<float> xv(x.begin(), x.end()), dv(dy.begin(), dy.end());
  const auto want_even = times(dv, ref::ste_mask(xv, {6}, p, rounding_mode::half_to_even));
  const auto want_ceil = times(dv, ref::ste_mask(xv, {6}, p, rounding_mode::ceil));
  require_bitwise_equal(eager::ste_backward(x, dy, p, clipped), want_even, 6, "lvalue mode");
  require_bitwise_equal(eager::ste_backward(x, dy, p, clipped_c, ceil_c), want_ceil, 6, "const lvalue policy");
  xt::xarray<float> out;
  eager::ste_backward(x, dy, p, out, clipped_c, ceil_c);
  require_bitwise_equal(out, want_ceil, 6, "out parameter");
  // the two masks differ here (-2.2 / s = -8.8: ceil -8 inside, half-to-even -9 outside)
  CHECK(want_even[0] == 0.0f);
  CHECK(want_ceil[0] == 1.0f);
}

TEST_CASE("STE NaN policy: NaN x passes no gradient, NaN dy stays NaN inside and outside the grid", "[ste][nan]") {
  // dx = dy * mask as a float product (PyTorch's dY * mask): NaN * 0 = NaN, so a NaN dy
  // is never silenced; a NaN x has no grid value, its mask is 0.
  const qparams p = qparams::per_tensor(grid::int_signed(4), 0.5f, 0);
  const float nan = std::nanf("");
  const xt::xarray<float> x = {nan, nan, 1.0f, 9.0f, -9.0f, INFINITY, -INFINITY};
  const xt::xarray<float> dy = {1.0f, nan, nan, nan, 2.0f, 3.0f, -4.0f};
  const auto dx = eager::ste_backward(x, dy, p);
  const xt::xarray<float> lazy = ste_backward(x, dy, p);
  for (const auto* g : {&dx, &lazy}) {
    CHECK((*g)(0) == 0.0f);
    CHECK(std::isnan((*g)(1)));
    CHECK(std::isnan((*g)(2)));
    CHECK(std::isnan((*g)(3)));  // outside the grid, yet NaN * 0 = NaN
    CHECK((*g)(4) == 0.0f);
    CHECK((*g)(5) == 0.0f);
    CHECK((*g)(6) == 0.0f);
    CHECK(std::signbit((*g)(6)));  // -4 * 0 = -0
  }
  const auto m = eager::fake_quantize_with_mask(x, p);
  CHECK(int(m.mask(0)) == 0);
  CHECK(int(m.mask(2)) == 1);
  CHECK(std::isnan(m.y(0)));
  CHECK(m.y(5) == 3.5f);
  CHECK(m.y(6) == -4.0f);
}
