#include <quant/uniform.hpp>
#include <quant/reference/uniform.hpp>

#include <xtensor/xadapt.hpp>
#include <xtensor/xrandom.hpp>

#include "test_helpers.hpp"

using namespace quant;
using quant_test::require_bitwise_equal;

namespace {

template <class Round>
void check_eager_per_tensor(rounding_mode mode, const Round& r = {}) {
  const grid g = grid::int_signed(8);
  const qparams p = qparams::per_tensor(g, 0.05f, 3);
  for (std::size_t n : quant_test::edge_sizes()) {
    for (std::size_t offset : {0, 1, 3}) {  // unaligned starts: pointers into one buffer
      auto base = quant_test::normal_floats(n + offset + 16, 17 + static_cast<std::uint32_t>(n), 4.0f);
      const float* x = base.data() + offset;
      if (offset) REQUIRE(reinterpret_cast<std::uintptr_t>(x) % 16 != 0);
      const std::vector<float> xv(x, x + n);
      std::uint64_t seed = 0;
      if constexpr (Round::is_stochastic) seed = r.seed;
      const auto want = ref::fake_quantize(xv, {n}, p, mode, false, seed);
      const std::string what = std::string(Round::name()) + " n=" + std::to_string(n) + " offset " + std::to_string(offset);
      // eager, reading the misaligned adaptor in place
      const auto xa = xt::adapt(x, n, xt::no_ownership(), std::vector<std::size_t>{n});
      const auto y = eager::fake_quantize<Round>(xa, p, r);
      require_bitwise_equal(y, want, n, what + " eager");
      // the SIMD and scalar-arch kernels on misaligned input and (differently) misaligned output
      std::vector<float> out(n + 16, -1.0f);
      float* yo = out.data() + (offset + 1) % 4;
      const auto plan = detail::make_segment_plan(std::vector<std::size_t>{n}, p, "test");
      kernels::fake_quantize<simd::default_arch, Round>(x, yo, plan, -128.f, 127.f, r);
      require_bitwise_equal(yo, want, n, what + " SIMD kernel");
      kernels::fake_quantize<simd::scalar, Round>(x, yo, plan, -128.f, 127.f, r);
      require_bitwise_equal(yo, want, n, what + " scalar kernel");
    }
  }
}

}  // namespace

TEST_CASE("grid bounds follow docs/numerics.md", "[qparams]") {
  CHECK(grid::int_signed(8).qmin() == -128);
  CHECK(grid::int_signed(8).qmax() == 127);
  CHECK(grid::int_signed(8, true).qmin() == -127);
  CHECK(grid::int_unsigned(8).qmin() == 0);
  CHECK(grid::int_unsigned(8).qmax() == 255);
  CHECK(grid::int_unsigned(4, true).qmin() == 1);
  CHECK(grid::int_signed(2).qmin() == -2);
  CHECK(grid::int_signed(16).qmax() == 32767);
  CHECK(grid::int_unsigned(16).qmax() == 65535);
}

TEST_CASE("eager fake-quant matches the scalar reference for every rounding policy", "[uniform]") {
  check_eager_per_tensor<round_half_to_even>(rounding_mode::half_to_even);
  check_eager_per_tensor<round_half_away_from_zero>(rounding_mode::half_away_from_zero);
  check_eager_per_tensor<round_half_up>(rounding_mode::half_up);
  check_eager_per_tensor<round_floor>(rounding_mode::floor);
  check_eager_per_tensor<round_ceil>(rounding_mode::ceil);
  check_eager_per_tensor<round_toward_zero>(rounding_mode::toward_zero);
  check_eager_per_tensor<round_stochastic>(rounding_mode::stochastic, round_stochastic{12345});
}

TEST_CASE("rounding ties follow each policy", "[rounding]") {
  // x * inv_s lands exactly on k + 0.5 with s = 1
  const std::vector<float> v = {-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f};
  const std::vector<float> even = {-2, -2, -0, 0, 2, 2};
  const std::vector<float> away = {-3, -2, -1, 1, 2, 3};
  const std::vector<float> up = {-2, -1, 0, 1, 2, 3};
  for (std::size_t i = 0; i < v.size(); ++i) {
    CHECK(round_half_to_even::apply(v[i]) == even[i]);
    CHECK(round_half_away_from_zero::apply(v[i]) == away[i]);
    CHECK(round_half_up::apply(v[i]) == up[i]);
  }
  CHECK(round_half_to_even::apply(0.49999997f) == 0.0f);
  CHECK(round_half_up::apply(0.49999997f) == 0.0f);
  CHECK(round_half_to_even::apply(8388609.0f) == 8388609.0f);  // 2^23 + 1: already integral
  CHECK(round_half_to_even::apply(-8388607.5f) == -8388608.0f);
}

TEST_CASE("fake-quant special values: NaN passes, inf saturates, huge values saturate", "[uniform]") {
  const qparams p = qparams::per_tensor(grid::int_unsigned(8), 0.1f, 10);
  const float inf = std::numeric_limits<float>::infinity();
  xt::xarray<float> x = {std::nanf(""), inf, -inf, 1e30f, -1e30f, 0.0f};
  auto y = eager::fake_quantize(x, p);
  CHECK(std::isnan(y(0)));
  CHECK(y(1) == (255.0f - 10.0f) * 0.1f);
  CHECK(y(2) == (0.0f - 10.0f) * 0.1f);
  CHECK(y(3) == y(1));
  CHECK(y(4) == y(2));
  CHECK(y(5) == 0.0f);
  xt::xarray<float> lazy = fake_quantize(x, p);
  require_bitwise_equal(lazy, y, 6, "lazy");
}

TEST_CASE("per-channel along every axis and per-group match the reference", "[uniform]") {
  const std::vector<std::size_t> shape = {3, 8, 5};
  auto x = quant_test::normal_floats(3 * 8 * 5, 99, 2.0f);
  xt::xarray<float> xa = xt::adapt(x, shape);
  const grid g = grid::int_signed(4);
  for (std::ptrdiff_t axis : {0, 1, 2, -1, -3}) {
    const std::size_t ax = static_cast<std::size_t>(axis < 0 ? axis + 3 : axis);
    std::vector<float> s(shape[ax]);
    std::vector<std::int32_t> z(shape[ax]);
    for (std::size_t c = 0; c < s.size(); ++c) {
      s[c] = 0.1f + 0.07f * static_cast<float>(c);
      z[c] = static_cast<std::int32_t>(c % 3) - 1;
    }
    const qparams p = qparams::per_channel(g, s, z, axis);
    auto want = ref::fake_quantize(x, shape, p);
    auto y = eager::fake_quantize(xa, p);
    require_bitwise_equal(y, want, x.size(), "eager axis " + std::to_string(axis));
    xt::xarray<float> lazy = fake_quantize(xa, p);
    require_bitwise_equal(lazy, want, x.size(), "lazy axis " + std::to_string(axis));
  }
  for (std::ptrdiff_t axis : {0, 1, 2}) {
    const std::size_t ax = static_cast<std::size_t>(axis);
    for (std::size_t gs : {std::size_t(1), shape[ax]}) {
      const std::size_t groups = x.size() / gs;
      std::vector<float> s(groups);
      std::vector<std::int32_t> z(groups, 0);
      for (std::size_t k = 0; k < groups; ++k) s[k] = 0.05f + 0.01f * static_cast<float>(k % 17);
      const qparams p = qparams::per_group(g, s, z, axis, gs);
      require_bitwise_equal(eager::fake_quantize(xa, p), ref::fake_quantize(x, shape, p), x.size(),
                            "group axis " + std::to_string(axis));
    }
  }
  // per-group with g = 4 along the middle axis of size 8
  std::vector<float> s(3 * 2 * 5);
  for (std::size_t k = 0; k < s.size(); ++k) s[k] = 0.02f * static_cast<float>(k + 1);
  const qparams p = qparams::per_group(g, s, std::vector<std::int32_t>(s.size(), 0), 1, 4);
  require_bitwise_equal(eager::fake_quantize(xa, p), ref::fake_quantize(x, shape, p), x.size(), "group 4");
}

TEST_CASE("per-channel kernels on long rows (scalar runs) match the reference", "[uniform]") {
  const std::vector<std::size_t> shape = {4, 200};
  auto x = quant_test::normal_floats(800, 5);
  xt::xarray<float> xa = xt::adapt(x, shape);
  const qparams p = qparams::per_channel(grid::int_signed(8), {0.01f, 0.02f, 0.03f, 0.04f}, {0, 5, -5, 1}, 0);
  require_bitwise_equal(eager::fake_quantize(xa, p), ref::fake_quantize(x, shape, p), x.size());
}

TEST_CASE("lazy fake-quant composes with expressions and equals eager", "[uniform]") {
  xt::xarray<float> w = xt::adapt(quant_test::normal_floats(1003, 1), std::vector<std::size_t>{1003});
  xt::xarray<float> b = xt::adapt(quant_test::normal_floats(1003, 2), std::vector<std::size_t>{1003});
  const qparams p = qparams::per_tensor(grid::int_signed(8), 0.02f, 0);
  xt::xarray<float> lazy = fake_quantize(w * 2.0f + b, 0.02f, 0, grid::int_signed(8));
  xt::xarray<float> sum = w * 2.0f + b;
  require_bitwise_equal(lazy, eager::fake_quantize(sum, p), sum.size());
  xt::xarray<float> lazy_q = fake_quantize(w * 2.0f + b, p);
  require_bitwise_equal(lazy_q, lazy, sum.size());
}

TEST_CASE("quantize / dequantize round trip and integer types", "[uniform]") {
  auto x = quant_test::normal_floats(1003, 7, 3.0f);
  xt::xarray<float> xa = xt::adapt(x, std::vector<std::size_t>{1003});
  const qparams p = qparams::per_tensor(grid::int_unsigned(8), 0.05f, 128);
  auto q = eager::quantize<std::uint8_t>(xa, p);
  auto want = ref::quantize(x, {1003}, p);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(static_cast<std::int32_t>(q(i)) == want[i]);
  xt::xarray<std::uint8_t> lazy_q = quantize<std::uint8_t>(xa, p);
  CHECK((lazy_q == q));
  auto dq = eager::dequantize(q, p);
  require_bitwise_equal(dq, eager::fake_quantize(xa, p), x.size(), "dequantize(quantize) == fake_quantize");
  xt::xarray<float> lazy_dq = dequantize(q, p);
  require_bitwise_equal(lazy_dq, dq, x.size());
  CHECK_THROWS_AS(eager::quantize<std::int8_t>(xa, p), quant::invalid_argument);  // [0,255] does not fit int8
  xt::xarray<float> with_nan = {1.0f, std::nanf("")};
  CHECK_THROWS_AS(eager::quantize<std::uint8_t>(with_nan, p), quant::domain_error);
  CHECK_THROWS_AS(xt::xarray<std::uint8_t>(quantize<std::uint8_t>(with_nan, p)), quant::domain_error);
}

TEST_CASE("AIMET convention clamps in float first", "[uniform]") {
  // With s = 0.1, qmax = 127 the representable top is 12.7; x = 12.76 rounds to 128 under
  // the PyTorch convention then clamps; AIMET clamps x to 12.7 first. Both give 12.7 here,
  // but the grid values before clamping differ — compare against the reference.
  auto x = quant_test::normal_floats(257, 3, 8.0f);
  const qparams p = qparams::per_tensor(grid::int_signed(8), 0.1f, 0);
  xt::xarray<float> xa = xt::adapt(x, std::vector<std::size_t>{257});
  auto y = eager::fake_quantize<round_half_away_from_zero, aimet_convention>(xa, p);
  require_bitwise_equal(y, ref::fake_quantize(x, {257}, p, rounding_mode::half_away_from_zero, true), 257);
}

TEST_CASE("stochastic rounding is unbiased and independent of threads", "[uniform][rounding]") {
  const std::size_t n = (1u << 17) + 3;
  std::vector<float> x(n, 0.3f);
  xt::xarray<float> xa = xt::adapt(x, std::vector<std::size_t>{n});
  const qparams p = qparams::per_tensor(grid::int_signed(8), 1.0f, 0);
  set_num_threads(1);
  auto y1 = eager::fake_quantize(xa, p, round_stochastic{7});
  set_num_threads(2);
  auto y2 = eager::fake_quantize(xa, p, round_stochastic{7});
  set_num_threads(0);
  require_bitwise_equal(y1, y2, n, "1 vs 2 threads");
  const double mean = xt::mean(y1)();
  // Bernoulli(0.3) mean over n samples: sd = sqrt(0.21 / n) ~ 0.0013; allow 5 sd
  CHECK(std::fabs(mean - 0.3) < 5 * std::sqrt(0.21 / static_cast<double>(n)));
  auto y3 = eager::fake_quantize(xa, p, round_stochastic{8});
  CHECK(xt::any(xt::not_equal(y1, y3)));
}

TEST_CASE("qparams validation names the argument and the value", "[qparams][errors]") {
  CHECK_THROWS_WITH(qparams::per_tensor(grid::int_signed(17), 1.0f), Catch::Contains("bits = 17"));
  CHECK_THROWS_WITH(qparams::per_tensor(grid::int_signed(1), 1.0f), Catch::Contains("bits = 1"));
  CHECK_THROWS_AS(qparams::per_tensor(grid::int_signed(8), 0.0f), quant::invalid_argument);
  CHECK_THROWS_WITH(qparams::per_tensor(grid::int_signed(8), -1.0f), Catch::Contains("scale = -1"));
  CHECK_THROWS_AS(qparams::per_tensor(grid::int_signed(8), std::nanf("")), quant::invalid_argument);
  CHECK_THROWS_AS(qparams::per_tensor(grid::int_signed(8), INFINITY), quant::invalid_argument);
  CHECK_THROWS_WITH(qparams::per_tensor(grid::int_signed(8), 1.0f, 128), Catch::Contains("zero_point = 128"));
  CHECK_THROWS_AS(qparams::per_channel(grid::int_signed(8), {1.0f, 2.0f}, {0}, 0), quant::length_error);
  CHECK_THROWS_AS(qparams::per_group(grid::int_signed(8), {1.0f}, {0}, 0, 0), quant::invalid_argument);
  xt::xarray<float> x = xt::zeros<float>({4, 6});
  const qparams pc = qparams::per_channel(grid::int_signed(8), {1.f, 1.f, 1.f}, 0);
  CHECK_THROWS_AS(eager::fake_quantize(x, pc), quant::length_error);
  CHECK_THROWS_AS(fake_quantize(x, pc), quant::length_error);
  const qparams bad_axis = qparams::per_channel(grid::int_signed(8), {1.f, 1.f, 1.f, 1.f}, 2);
  CHECK_THROWS_WITH(eager::fake_quantize(x, bad_axis), Catch::Contains("axis = 2"));
  const qparams pg = qparams::per_group(grid::int_signed(8), std::vector<float>(6, 1.f), std::vector<std::int32_t>(6, 0), 1, 4);
  CHECK_THROWS_WITH(eager::fake_quantize(x, pg), Catch::Contains("group_size = 4"));
  try {
    qparams::per_tensor(grid::int_signed(8), -2.0f);
    FAIL("no throw");
  } catch (const quant::error& e) {
    CHECK(std::string(e.what()).find("qparams::per_tensor") != std::string::npos);
  }
}

TEST_CASE("scale_from_range: PyTorch arithmetic, degenerate ranges", "[qparams]") {
  // asymmetric uint8 over [-1, 3]: s = 4/255, z = 0 - round(-1 / s) = 64 (63.75 -> 64)
  auto a = scale_from_range(grid::int_unsigned(8), -1.0f, 3.0f, scheme::asymmetric);
  CHECK(a.scale == 4.0f / 255.0f);
  CHECK(a.zero_point == 64);
  // symmetric int8 absmax 2: s = 2 / 127.5
  auto s = scale_from_range(grid::int_signed(8), -2.0f, 1.0f, scheme::symmetric);
  CHECK(s.scale == 2.0f / 127.5f);
  CHECK(s.zero_point == 0);
  CHECK(scale_from_range(grid::int_signed(8), -2.0f, 1.0f, scheme::symmetric, symmetric_scale_convention::aimet).scale ==
        2.0f / 127.0f);
  CHECK(scale_from_range(grid::int_signed(4), -2.0f, 1.0f, scheme::symmetric,
                         symmetric_scale_convention::brevitas_narrow).scale == 2.0f / 7.0f);
  CHECK(scale_from_range(grid::int_unsigned(8), 0.f, 1.f, scheme::symmetric).zero_point == 128);
  // all-zero tensor: scale floor, zero maps to exactly zero
  auto z = scale_from_range(grid::int_signed(8), 0.0f, 0.0f, scheme::asymmetric);
  CHECK(z.scale == FLT_EPSILON);
  const qparams p = qparams::per_tensor(grid::int_signed(8), z.scale, z.zero_point);
  xt::xarray<float> zeros = xt::zeros<float>({10});
  CHECK((eager::fake_quantize(zeros, p) == zeros));
  // a constant positive tensor: range widened to include 0, value representable
  auto c = scale_from_range(grid::int_unsigned(8), 2.0f, 2.0f, scheme::asymmetric);
  CHECK(c.zero_point == 0);
  CHECK_THROWS_AS(scale_from_range(grid::int_signed(8), 1.0f, -1.0f, scheme::asymmetric), quant::invalid_argument);
  CHECK_THROWS_AS(scale_from_range(grid::int_signed(8), std::nanf(""), 1.0f, scheme::asymmetric), quant::domain_error);
}

TEST_CASE("streaming-store path with its alignment peel, from a misaligned start", "[uniform][streaming]") {
  // >= 16 MiB of floats takes the non-temporal store path on AVX-512 builds, which first
  // peels elements up to an aligned output address; start input and output at different
  // misalignments. (Other builds run the same sizes through the ordinary stores.)
  const std::size_t n = (std::size_t(4) << 20) + 37;
  if (!detail::use_streaming_stores<simd::default_arch>(n))
    WARN("no streaming stores in this build (they are AVX-512 only): ordinary stores checked instead");
  const qparams p = qparams::per_tensor(grid::int_signed(4), 0.125f, -2);
  auto base = quant_test::normal_floats(n + 8, 91, 1.0f);
  const auto ties = quant_test::tie_floats(n + 8, 0.125f, 92);
  for (std::size_t i = 0; i < base.size(); i += 5) base[i] = ties[i];
  for (std::size_t in_off : {1, 3}) {
    const float* x = base.data() + in_off;
    std::vector<float> out(n + 8, -1.0f);
    float* y = out.data() + 2;
    const std::vector<float> xv(x, x + n);
    const auto want = ref::fake_quantize(xv, {n}, p, rounding_mode::half_to_even);
    const auto plan = detail::make_segment_plan(std::vector<std::size_t>{n}, p, "test");
    kernels::fake_quantize<simd::default_arch, round_half_to_even>(x, y, plan, static_cast<float>(p.qmin()),
                                                                   static_cast<float>(p.qmax()));
    require_bitwise_equal(y, want, n, "streaming, input offset " + std::to_string(in_off));
    CHECK(out[0] == -1.0f);
    CHECK(out[1] == -1.0f);
    CHECK(out[n + 2] == -1.0f);  // nothing written past the end
  }
}

TEST_CASE("AIMET clamp-first differs from clamp-last where floor / ceil meet the float bounds", "[uniform][aimet]") {
  // s = 0.013 (float), int8, z = 0. Clamp-first clamps x to hi = fl(127 s), lo = fl(-128 s),
  // and in float fl(hi * fl(1/s)) = 126.99999237... < 127, fl(lo * fl(1/s)) = -127.99999237...
  // So with floor every x >= hi lands on 126 (clamp-last: 127), with ceil every x <= lo on
  // -127 (clamp-last: -128). Half-way roundings cannot see the difference.
  const float s = 0.013f, inv = 1.0f / s;
  const float hi = 127.0f * s, lo = -128.0f * s;
  REQUIRE(hi * inv < 127.0f);
  REQUIRE(hi * inv > 126.5f);
  REQUIRE(lo * inv > -128.0f);
  const qparams p = qparams::per_tensor(grid::int_signed(8), s, 0);
  const xt::xarray<float> x = {hi, 5.0f, 1e30f, INFINITY, lo, -5.0f, -1e30f, -INFINITY};
  SECTION("floor") {
    const std::vector<int> aimet = {126, 126, 126, 126, -128, -128, -128, -128};
    const std::vector<int> torch = {126, 127, 127, 127, -128, -128, -128, -128};
    const auto qa = eager::quantize<std::int8_t, round_floor, aimet_convention>(x, p);
    const auto qt = eager::quantize<std::int8_t, round_floor, pytorch_convention>(x, p);
    const xt::xarray<std::int8_t> qa_lazy = quant::quantize<std::int8_t, round_floor, aimet_convention>(x, p);
    const auto ya = eager::fake_quantize<round_floor, aimet_convention>(x, p);
    for (std::size_t i = 0; i < x.size(); ++i) {
      INFO("x = " << x(i));
      CHECK(int(qa(i)) == aimet[i]);
      CHECK(int(qa_lazy(i)) == aimet[i]);
      CHECK(int(qt(i)) == torch[i]);
      CHECK(ya(i) == static_cast<float>(aimet[i]) * s);
    }
  }
  SECTION("ceil") {
    const std::vector<int> aimet = {127, 127, 127, 127, -127, -127, -127, -127};
    const std::vector<int> torch = {127, 127, 127, 127, -127, -128, -128, -128};
    const auto qa = eager::quantize<std::int8_t, round_ceil, aimet_convention>(x, p);
    const auto qt = eager::quantize<std::int8_t, round_ceil, pytorch_convention>(x, p);
    const auto ya = eager::fake_quantize<round_ceil, aimet_convention>(x, p);
    for (std::size_t i = 0; i < x.size(); ++i) {
      INFO("x = " << x(i));
      CHECK(int(qa(i)) == aimet[i]);
      CHECK(int(qt(i)) == torch[i]);
      CHECK(ya(i) == static_cast<float>(aimet[i]) * s);
    }
  }
  SECTION("4 bits, z = -3, floor: the clamp-first top is qmax - 1") {
    const qparams p4 = qparams::per_tensor(grid::int_signed(4), s, -3);
    const float hi4 = 10.0f * s;  // (qmax - z) s
    REQUIRE(hi4 * inv < 10.0f);
    const xt::xarray<float> x4 = {hi4, 1.0f, INFINITY};
    const auto qa = eager::quantize<std::int8_t, round_floor, aimet_convention>(x4, p4);
    const auto qt = eager::quantize<std::int8_t, round_floor, pytorch_convention>(x4, p4);
    for (std::size_t i = 0; i < x4.size(); ++i) {
      CHECK(int(qa(i)) == 6);
      CHECK(int(qt(i)) == (i == 0 ? 6 : 7));
    }
  }
}

TEST_CASE("a scale whose reciprocal overflows is rejected; the smallest accepted one quantizes 0 to 0",
          "[qparams][errors]") {
  // Found by fuzz_uniform: s = 2^-149 (subnormal) was accepted, 1/s = inf in float, and
  // x = 0 became 0 * inf = NaN: fake-quant returned NaN and quantize threw "NaN" for NaN-free input.
  const float tiny = std::numeric_limits<float>::denorm_min();
  REQUIRE(std::isinf(1.0f / tiny));
  CHECK_THROWS_WITH(qparams::per_tensor(grid::int_signed(8), tiny), Catch::Contains("1/scale overflows"));
  CHECK_THROWS_AS(qparams::per_channel(grid::int_signed(8), {0.5f, 1e-39f}, 0), quant::invalid_argument);
  // The smallest float whose reciprocal is finite: found by walking down from 1/FLT_MAX.
  float s = 1.0f / std::numeric_limits<float>::max();
  while (std::isfinite(1.0f / std::nextafter(s, 0.0f))) s = std::nextafter(s, 0.0f);
  while (!std::isfinite(1.0f / s)) s = std::nextafter(s, 1.0f);
  const qparams p = qparams::per_tensor(grid::int_signed(8), s, 3);
  const xt::xarray<float> x = {0.0f, -0.0f, s, -s, 1.0f, INFINITY};
  const auto y = eager::fake_quantize(x, p);
  const auto q = eager::quantize<std::int8_t>(x, p);
  const std::vector<int> want_q = {3, 3, 4, 2, 127, 127};
  for (std::size_t i = 0; i < x.size(); ++i) {
    INFO("x = " << x(i));
    CHECK(int(q(i)) == want_q[i]);
    CHECK(y(i) == static_cast<float>(want_q[i] - 3) * s);
  }
}

TEST_CASE("dequantize validates the parameters against the shape", "[uniform][errors]") {
  const xt::xarray<std::int8_t> q = xt::zeros<std::int8_t>({3, 4});
  const qparams three = qparams::per_channel(grid::int_signed(8), {0.1f, 0.2f, 0.3f}, 0);
  CHECK_NOTHROW(eager::dequantize(q, three));
  const qparams four_on_0 = qparams::per_channel(grid::int_signed(8), {0.1f, 0.2f, 0.3f, 0.4f}, 0);
  CHECK_THROWS_AS(eager::dequantize(q, four_on_0), quant::length_error);
  CHECK_THROWS_AS(quant::dequantize(q, four_on_0), quant::length_error);
  const qparams axis_2 = qparams::per_channel(grid::int_signed(8), {0.1f, 0.2f, 0.3f}, 2);
  CHECK_THROWS_WITH(eager::dequantize(q, axis_2), Catch::Contains("axis = 2"));
  const qparams groups = qparams::per_group(grid::int_signed(8), {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f}, {0, 0, 0, 0, 0, 0}, 1, 2);
  CHECK_NOTHROW(eager::dequantize(q, groups));
  CHECK_THROWS_AS(quant::dequantize(q, groups), quant::invalid_argument);  // lazy: no per-group
  const qparams groups_of_3 = qparams::per_group(grid::int_signed(8), {0.1f, 0.2f, 0.3f, 0.4f}, {0, 0, 0, 0}, 1, 3);
  CHECK_THROWS_AS(eager::dequantize(q, groups_of_3), quant::invalid_argument);
}
