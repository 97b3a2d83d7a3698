// Requantization of int32 accumulators: the two primitive operations against gemmlowp's own
// fixedpoint.h (when libgemmlowp-dev is installed), the fixed-point multiplier by
// reconstruction, the kernels against quant::ref (int64 / double, straight from the
// formulas), the AVX2 path against the scalar one, and bias quantization.
#include <quant/reference/requantize.hpp>
#include <quant/requantize.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#if __has_include(<gemmlowp/fixedpoint/fixedpoint.h>)
#include <gemmlowp/fixedpoint/fixedpoint.h>
#define QUANT_TEST_HAVE_GEMMLOWP 1
#endif

using namespace quant;

namespace {

constexpr std::int32_t int32_min = std::numeric_limits<std::int32_t>::min();
constexpr std::int32_t int32_max = std::numeric_limits<std::int32_t>::max();

// Corner operands: the extremes, their neighbours, powers of two and zero.
std::vector<std::int32_t> corner_values() {
  std::vector<std::int32_t> v = {int32_min, int32_min + 1, int32_min + 2, -(1 << 30) - 1, -(1 << 30), -(1 << 30) + 1,
                                 -65536, -3, -2, -1, 0, 1, 2, 3, 65536, (1 << 30) - 1, 1 << 30, (1 << 30) + 1,
                                 int32_max - 1, int32_max};
  for (int k = 0; k < 31; k += 3) v.push_back(std::int32_t(1) << k), v.push_back(-(std::int32_t(1) << k));
  return v;
}

// Exact ties of x / 2^e at every exponent: odd multiples of 2^(e-1), both signs, up to the
// int32 ends.
std::vector<std::pair<std::int32_t, int>> divide_ties() {
  std::vector<std::pair<std::int32_t, int>> t;
  for (int e = 1; e <= 31; ++e) {
    const std::int64_t half = std::int64_t(1) << (e - 1);
    for (std::int64_t k : {1, 3, 5, 7, 101, 1001}) {
      const std::int64_t x = k * half;
      if (x <= int32_max) t.push_back({static_cast<std::int32_t>(x), e});
      if (-x >= int32_min) t.push_back({static_cast<std::int32_t>(-x), e});
    }
    // the largest odd multiples that fit
    const std::int64_t kmax = (std::int64_t(int32_max) / half) | 1;
    for (std::int64_t k = kmax; k > 0 && k >= kmax - 4; k -= 2)
      if (k * half <= int32_max) t.push_back({static_cast<std::int32_t>(k * half), e}),
                                 t.push_back({static_cast<std::int32_t>(-k * half), e});
  }
  return t;
}

std::vector<std::int32_t> random_int32(std::size_t n, std::uint32_t seed, std::int32_t lo = int32_min,
                                       std::int32_t hi = int32_max) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<std::int32_t> d(lo, hi);
  std::vector<std::int32_t> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Log-uniform multipliers in [2^lo_exp, 2^hi_exp].
std::vector<double> random_multipliers(std::size_t n, std::uint32_t seed, double lo_exp, double hi_exp) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<double> d(lo_exp, hi_exp);
  std::vector<double> m(n);
  for (auto& x : m) x = std::exp2(d(g));
  return m;
}

template <class Out>
grid grid_of() {
  if (std::is_same<Out, std::uint8_t>::value) return grid::int_unsigned(8);
  if (std::is_same<Out, std::int8_t>::value) return grid::int_signed(8);
  return grid::int_signed(16);
}

}  // namespace

// ---- the primitives ------------------------------------------------------------------------

TEST_CASE("saturating_rounding_doubling_high_mul: (a b + nudge) / 2^31 truncating, INT32_MIN^2 saturates") {
  SECTION("closed forms") {
    CHECK(saturating_rounding_doubling_high_mul(int32_min, int32_min) == int32_max);
    CHECK(saturating_rounding_doubling_high_mul(int32_max, int32_max) == int32_max - 1);  // (2^31-1)^2/2^31 = 2^31 - 2 + 2^-31
    CHECK(saturating_rounding_doubling_high_mul(int32_min, int32_max) == -int32_max);     // -2^31 + 1 exactly
    CHECK(saturating_rounding_doubling_high_mul(1 << 30, 3) == 2);     // 1.5 -> 2 (tie up)
    CHECK(saturating_rounding_doubling_high_mul(1 << 30, -3) == -1);   // -1.5 -> -1 (tie up)
    CHECK(saturating_rounding_doubling_high_mul(1 << 30, -1) == 0);    // -0.5 -> 0
    CHECK(saturating_rounding_doubling_high_mul(1 << 30, 1) == 1);     // 0.5 -> 1
    CHECK(saturating_rounding_doubling_high_mul(0, int32_min) == 0);
  }
  SECTION("equals quant::ref (literal truncating-division formula) on corners and random pairs") {
    const auto c = corner_values();
    for (auto a : c)
      for (auto b : c) {
        INFO("a = " << a << ", b = " << b);
        REQUIRE(saturating_rounding_doubling_high_mul(a, b) == ref::saturating_rounding_doubling_high_mul(a, b));
      }
    const auto a = random_int32(200000, 1), b = random_int32(200000, 2);
    for (std::size_t i = 0; i < a.size(); ++i)
      REQUIRE(saturating_rounding_doubling_high_mul(a[i], b[i]) == ref::saturating_rounding_doubling_high_mul(a[i], b[i]));
  }
#if defined(QUANT_TEST_HAVE_GEMMLOWP)
  SECTION("bit-identical to gemmlowp::SaturatingRoundingDoublingHighMul") {
    const auto c = corner_values();
    for (auto a : c)
      for (auto b : c) {
        INFO("a = " << a << ", b = " << b);
        REQUIRE(saturating_rounding_doubling_high_mul(a, b) == gemmlowp::SaturatingRoundingDoublingHighMul(a, b));
      }
    // products on exact ties k 2^30, k odd, of both signs
    for (int s = 0; s <= 30; ++s)
      for (std::int32_t k : {1, -1, 3, -3, 5, -5, 255, -255, 32767, -32767}) {
        const std::int32_t a = std::int32_t(1) << s;
        const std::int64_t b64 = static_cast<std::int64_t>(k) * (std::int64_t(1) << (30 - s));
        if (b64 < int32_min || b64 > int32_max) continue;
        const std::int32_t b = static_cast<std::int32_t>(b64);
        INFO("a = " << a << ", b = " << b);
        REQUIRE(saturating_rounding_doubling_high_mul(a, b) == gemmlowp::SaturatingRoundingDoublingHighMul(a, b));
      }
    const auto a = random_int32(1000000, 3), b = random_int32(1000000, 4);
    const auto bs = random_int32(1000000, 5, -70000, 70000);  // small operands: many near-ties
    for (std::size_t i = 0; i < a.size(); ++i) {
      REQUIRE(saturating_rounding_doubling_high_mul(a[i], b[i]) == gemmlowp::SaturatingRoundingDoublingHighMul(a[i], b[i]));
      REQUIRE(saturating_rounding_doubling_high_mul(bs[i], b[i]) ==
              gemmlowp::SaturatingRoundingDoublingHighMul(bs[i], b[i]));
    }
  }
#endif
}

TEST_CASE("rounding_divide_by_pot: x / 2^e to nearest, ties away from zero, 0 <= e <= 31") {
  SECTION("closed forms") {
    CHECK(rounding_divide_by_pot(5, 1) == 3);
    CHECK(rounding_divide_by_pot(-5, 1) == -3);
    CHECK(rounding_divide_by_pot(-6, 2) == -2);  // -1.5
    CHECK(rounding_divide_by_pot(6, 2) == 2);
    CHECK(rounding_divide_by_pot(-5, 2) == -1);  // -1.25
    CHECK(rounding_divide_by_pot(int32_min, 31) == -1);
    CHECK(rounding_divide_by_pot(int32_max, 31) == 1);
    CHECK(rounding_divide_by_pot(-(1 << 30), 31) == -1);  // -0.5
    CHECK(rounding_divide_by_pot(1 << 30, 31) == 1);      // 0.5
    CHECK(rounding_divide_by_pot(-(1 << 30) + 1, 31) == 0);
    CHECK(rounding_divide_by_pot(int32_min, 0) == int32_min);
    CHECK(rounding_divide_by_pot(0, 17) == 0);
  }
  SECTION("equals quant::ref (exact double quotient, std::round) on ties, corners and random inputs") {
    for (auto [x, e] : divide_ties()) {
      INFO("x = " << x << ", e = " << e);
      REQUIRE(rounding_divide_by_pot(x, e) == ref::rounding_divide_by_pot(x, e));
    }
    for (auto x : corner_values())
      for (int e = 0; e <= 31; ++e) REQUIRE(rounding_divide_by_pot(x, e) == ref::rounding_divide_by_pot(x, e));
    const auto x = random_int32(320000, 6);
    for (std::size_t i = 0; i < x.size(); ++i)
      REQUIRE(rounding_divide_by_pot(x[i], int(i % 32)) == ref::rounding_divide_by_pot(x[i], int(i % 32)));
  }
#if defined(QUANT_TEST_HAVE_GEMMLOWP)
  SECTION("bit-identical to gemmlowp::RoundingDivideByPOT") {
    for (auto [x, e] : divide_ties()) {
      INFO("x = " << x << ", e = " << e);
      REQUIRE(rounding_divide_by_pot(x, e) == gemmlowp::RoundingDivideByPOT(x, e));
    }
    for (auto x : corner_values())
      for (int e = 0; e <= 31; ++e) REQUIRE(rounding_divide_by_pot(x, e) == gemmlowp::RoundingDivideByPOT(x, e));
    const auto x = random_int32(1000000, 7);
    for (std::size_t i = 0; i < x.size(); ++i)
      REQUIRE(rounding_divide_by_pot(x[i], int(i % 32)) == gemmlowp::RoundingDivideByPOT(x[i], int(i % 32)));
  }
#endif
}

#if defined(__AVX2__)
TEST_CASE("AVX2 forms of the primitives equal the scalar ones lane by lane") {
  const auto ra = random_int32(4096, 8), rb = random_int32(4096, 9);
  // every corner against every corner, plus random pairs, 8 lanes at a time
  std::vector<std::int32_t> xa, xb;
  const auto c = corner_values();
  for (auto u : c)
    for (auto v : c) xa.push_back(u), xb.push_back(v);
  xa.insert(xa.end(), ra.begin(), ra.end());
  xb.insert(xb.end(), rb.begin(), rb.end());
  while (xa.size() % 8) xa.push_back(int32_min), xb.push_back(int32_min);
  for (std::size_t i = 0; i < xa.size(); i += 8) {
    const __m256i va = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&xa[i]));
    const __m256i vb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&xb[i]));
    alignas(32) std::int32_t h[8], d[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(h), kernels::saturating_rounding_doubling_high_mul<true>(va, vb));
    // per-lane exponents 0..31 cycling through the lanes
    alignas(32) std::int32_t e[8], m[8], hm[8];
    for (int j = 0; j < 8; ++j)
      e[j] = int((i / 8 + j * 5) % 32), m[j] = int((std::uint32_t(1) << e[j]) - 1u), hm[j] = m[j] >> 1;
    _mm256_store_si256(reinterpret_cast<__m256i*>(d),
                       kernels::rounding_divide_by_pot(va, _mm256_load_si256(reinterpret_cast<const __m256i*>(e)),
                                                       _mm256_load_si256(reinterpret_cast<const __m256i*>(m)),
                                                       _mm256_load_si256(reinterpret_cast<const __m256i*>(hm))));
    for (int j = 0; j < 8; ++j) {
      INFO("a = " << xa[i + j] << ", b = " << xb[i + j] << ", e = " << e[j]);
      REQUIRE(h[j] == ref::saturating_rounding_doubling_high_mul(xa[i + j], xb[i + j]));
      REQUIRE(d[j] == ref::rounding_divide_by_pot(xa[i + j], e[j]));
    }
  }
}
#endif

// ---- the multiplier --------------------------------------------------------------------------

TEST_CASE("make_fixed_point_multiplier: M = q31 2^-31 2^-shift, q31 in [2^30, 2^31), 2^-31 relative accuracy") {
  auto check_reconstruction = [](double m) {
    const fixed_point_multiplier f = make_fixed_point_multiplier(m);
    INFO("M = " << m << ", q31 = " << f.q31 << ", shift = " << f.shift);
    REQUIRE(f.q31 >= (std::int32_t(1) << 30));
    REQUIRE(f.shift >= -31);
    REQUIRE(f.shift <= 30);
    const double back = std::ldexp(static_cast<double>(f.q31), -31 - f.shift);  // M0 2^-shift
    REQUIRE(f.real() == back);
    REQUIRE(std::fabs(back - m) <= std::ldexp(m, -31));
  };
  SECTION("random multipliers from 2^-31 to 2^30") {
    for (double m : random_multipliers(20000, 10, -31.0, 30.0)) check_reconstruction(m);
  }
  SECTION("powers of two are exact: q31 = 2^30") {
    for (int k = -31; k <= 30; ++k) {
      const auto f = make_fixed_point_multiplier(std::ldexp(1.0, k));
      CHECK(f.q31 == (1 << 30));
      CHECK(f.shift == -k - 1);
      CHECK(f.real() == std::ldexp(1.0, k));
    }
  }
  SECTION("M0 that rounds up to 2^31 moves into the shift") {
    const double m = 1.0 - std::ldexp(1.0, -33);  // M0 2^31 = 2^31 - 1/4 -> 2^31
    const auto f = make_fixed_point_multiplier(m);
    CHECK(f.q31 == (1 << 30));
    CHECK(f.shift == -1);
    CHECK(f.real() == 1.0);
    const auto g = make_fixed_point_multiplier(std::ldexp(m, -10));
    CHECK(g.q31 == (1 << 30));
    CHECK(g.shift == 9);
  }
  SECTION("a q31 tie rounds away from zero") {
    const double m = 0.5 + std::ldexp(1.0, -32);  // M0 2^31 = 2^30 + 1/2
    CHECK(make_fixed_point_multiplier(m).q31 == (1 << 30) + 1);
  }
  SECTION("M >= 1 gives a negative shift (left shift); tiny M a large one") {
    CHECK(make_fixed_point_multiplier(3.0).q31 == 3 * (1 << 29));
    CHECK(make_fixed_point_multiplier(3.0).shift == -2);
    CHECK(make_fixed_point_multiplier(fixed_point_multiplier_max).shift == -31);
    CHECK(make_fixed_point_multiplier(fixed_point_multiplier_min).shift == 30);
    check_reconstruction(1.0);
    check_reconstruction(fixed_point_multiplier_max);
    check_reconstruction(fixed_point_multiplier_min);
    check_reconstruction(std::nextafter(fixed_point_multiplier_min, 1.0));
    check_reconstruction(std::nextafter(fixed_point_multiplier_max, 0.0));
  }
  SECTION("out of range, zero, negative, NaN and inf throw naming the multiplier") {
    for (double m : {0.0, -0.0, -1.0, std::nan(""), HUGE_VAL, -HUGE_VAL, std::ldexp(1.0, -32),
                     std::nextafter(fixed_point_multiplier_min, 0.0), std::nextafter(fixed_point_multiplier_max, 1e300),
                     std::ldexp(1.0, 31)}) {
      INFO("M = " << m);
      CHECK_THROWS_AS(make_fixed_point_multiplier(m), quant::invalid_argument);
      CHECK_THROWS_WITH(make_fixed_point_multiplier(m), Catch::Contains("quant::make_fixed_point_multiplier: multiplier"));
    }
  }
}

// ---- parameters and activations ------------------------------------------------------------------

TEST_CASE("make_requantize_params: grid bounds, ReLU and ReLU6 folded into [lo, hi]") {
  using R = requantization;
  SECTION("no activation: the grid") {
    const auto p = make_requantize_params({0.01}, grid::int_unsigned(8), 7, R::fixed_point);
    CHECK(p.lo == 0);
    CHECK(p.hi == 255);
    CHECK(p.zero_point == 7);
    CHECK(p.channels() == 1);
    const auto n = make_requantize_params({0.01}, grid::int_signed(8, true), 0, R::float_scale);
    CHECK(n.lo == -127);
    CHECK(n.hi == 127);
  }
  SECTION("relu: lo = max(qmin, z)") {
    CHECK(make_requantize_params({0.01}, grid::int_signed(8), -20, R::fixed_point, fused_activation::relu).lo == -20);
    CHECK(make_requantize_params({0.01}, grid::int_signed(8), -20, R::fixed_point, fused_activation::relu).hi == 127);
  }
  SECTION("relu6: hi = min(qmax, z + round(6 / s_out))") {
    const auto a = make_requantize_params({0.01, 0.02}, grid::int_signed(8), -10, R::fixed_point,
                                          fused_activation::relu6, 0.05);  // 6 / 0.05 = 120
    CHECK(a.lo == -10);
    CHECK(a.hi == 110);
    CHECK(a.channels() == 2);
    const auto b = make_requantize_params({0.01}, grid::int_unsigned(8), 0, R::fixed_point, fused_activation::relu6,
                                          6.0 / 255.0);
    CHECK(b.hi == 255);
    const auto c = make_requantize_params({0.01}, grid::int_signed(8), 0, R::fixed_point, fused_activation::relu6, 0.001);
    CHECK(c.hi == 127);  // 6000 above the grid
    const auto d = make_requantize_params({0.01}, grid::int_unsigned(8), 3, R::fixed_point, fused_activation::relu6,
                                          6.0 / 100.5);  // 100.5 -> 101 (half away from zero)
    CHECK(d.hi == 104);
  }
  SECTION("requantized outputs respect the folded bounds and equal the clamped plain outputs") {
    const auto acc = random_int32(5000, 11, -100000, 100000);
    for (R r : {R::fixed_point, R::float_scale}) {
      const auto plain = make_requantize_params({0.002}, grid::int_signed(8), -5, r);
      const auto relu6 = make_requantize_params({0.002}, grid::int_signed(8), -5, r, fused_activation::relu6, 0.1);
      REQUIRE(relu6.lo == -5);
      REQUIRE(relu6.hi == 55);
      const auto q = requantize<std::int8_t>(acc, 1, relu6);
      const auto q0 = requantize<std::int8_t>(acc, 1, plain);
      for (std::size_t i = 0; i < acc.size(); ++i) {
        REQUIRE(q[i] >= -5);
        REQUIRE(q[i] <= 55);
        REQUIRE(q[i] == std::min<int>(std::max<int>(q0[i], -5), 55));
      }
    }
  }
  SECTION("bad arguments throw naming them") {
    CHECK_THROWS_WITH(make_requantize_params({}, grid{}, 0, R::fixed_point), Catch::Contains("multipliers.size()"));
    CHECK_THROWS_WITH(make_requantize_params({0.1, 0.0}, grid{}, 0, R::fixed_point), Catch::Contains("multiplier = 0"));
    CHECK_THROWS_WITH(make_requantize_params({0.1}, grid{}, 128, R::fixed_point), Catch::Contains("output_zero_point = 128"));
    CHECK_THROWS_WITH(make_requantize_params({0.1}, grid::int_unsigned(8), -1, R::fixed_point),
                      Catch::Contains("output_zero_point = -1"));
    CHECK_THROWS_WITH(make_requantize_params({0.1}, grid{}, 0, R::fixed_point, fused_activation::relu6),
                      Catch::Contains("output_scale = 0"));
    CHECK_THROWS_WITH(make_requantize_params({0.1}, grid{1, true, false}, 0, R::fixed_point), Catch::Contains("bits = 1"));
  }
}

// ---- requantization against the reference --------------------------------------------------------

TEST_CASE("requantize_one: the TFLite composition and the float-scale formula") {
  using R = requantization;
  SECTION("M = 1/2: the high multiply rounds ties up, so -3/2 -> -1 and 3/2 -> 2") {
    const auto p = make_requantize_params({0.5}, grid::int_signed(16), 0, R::fixed_point);
    CHECK(requantize_one(3, 0, p) == 2);
    CHECK(requantize_one(-3, 0, p) == -1);
    CHECK(requantize_one(-1, 0, p) == 0);
    CHECK(requantize_one(1, 0, p) == 1);
  }
  SECTION("M = 1/4: ties of the final shift go away from zero after the high multiply") {
    const auto p = make_requantize_params({0.25}, grid::int_signed(16), 0, R::fixed_point);
    CHECK(requantize_one(2, 0, p) == 1);    // h = floor(3/2) = 1, 1/2 -> 1
    CHECK(requantize_one(-2, 0, p) == -1);  // h = floor(-1/2) = -1, -1/2 -> -1
    CHECK(requantize_one(-6, 0, p) == -2);  // h = floor(-5/2) = -3, -3/2 -> -2
  }
  SECTION("float scale: round half to even of float(acc) * M") {
    const auto p = make_requantize_params({0.5}, grid::int_signed(16), 0, R::float_scale);
    for (int a : {1, 3, 5, -1, -3, -5, 7}) CHECK(requantize_one(a, 0, p) == static_cast<int>(std::nearbyint(a * 0.5)));
    CHECK(requantize_one(3, 0, p) == 2);
    CHECK(requantize_one(5, 0, p) == 2);
    CHECK(requantize_one(-5, 0, p) == -2);
  }
}

namespace {

// Multipliers for `channels` channels: mostly log-uniform in [2^-24, 2^-4] (typical layers),
// every fourth an exact power of two (ties at every stage), every eleventh in [1/4, 1/2)
// (shift 1), and, with large_ones, every seventh (and a per-tensor one) in [2^-1, 2^3]
// (shift 0, and M >= 1: left shifts).
std::vector<double> test_multipliers(std::size_t channels, std::uint32_t seed, bool large_ones) {
  auto m = random_multipliers(channels, seed, -24.0, -4.0);
  const auto big = random_multipliers(channels, seed + 1, -1.0, 3.0);
  for (std::size_t c = 0; c < channels; ++c) {
    if (c % 4 == 1) m[c] = std::ldexp(1.0, -int(2 + c % 20));
    if (c % 11 == 5) m[c] = 0.25 + 0.25 * (m[c] * 15.0);  // m[c] <= 2^-4 here: [1/4, 1/2)
    if (large_ones && (c % 7 == 3 || channels == 1)) m[c] = big[c];
  }
  return m;
}

// Accumulators for a [rows, channels] block: random over the full int32 range, random
// small ones, and exact ties k 2^(e-1) (k odd) for the power-of-two channels.
std::vector<std::int32_t> test_accumulators(std::size_t rows, std::size_t channels, const std::vector<double>& m,
                                            std::uint32_t seed) {
  const auto wide = random_int32(rows * channels, seed);
  const auto small = random_int32(rows * channels, seed + 1, -(1 << 20), 1 << 20);
  std::vector<std::int32_t> acc(rows * channels);
  for (std::size_t i = 0; i < acc.size(); ++i) {
    const std::size_t c = i % channels;
    int e = 0;
    const double f = std::frexp(m[c % m.size()], &e);
    if (f == 0.5 && e <= 0 && i % 3 == 0) {  // M = 2^(e-1): ties at odd multiples of 2^(-e)
      const std::int64_t k = 2 * (small[i] % 4096) + 1;
      acc[i] = static_cast<std::int32_t>(k * (std::int64_t(1) << (-e)));
    } else {
      acc[i] = i % 5 == 0 ? wide[i] : small[i];
    }
  }
  return acc;
}

template <class Out>
std::vector<std::int32_t> widen(const std::vector<Out>& v) {
  return std::vector<std::int32_t>(v.begin(), v.end());
}

template <class Out>
requantize_params test_params(const std::vector<double>& m, requantization r, std::int32_t z_seed) {
  const grid g = grid_of<Out>();
  const std::int32_t z = g.qmin() + static_cast<std::int32_t>(z_seed % (g.qmax() - g.qmin() + 1));
  return make_requantize_params(m, g, z, r);
}

}  // namespace

TEMPLATE_TEST_CASE("requantize equals quant::ref on per-tensor and per-channel blocks, both roundings", "",
                   std::int8_t, std::uint8_t, std::int32_t) {
  using Out = TestType;
  for (requantization r : {requantization::fixed_point, requantization::float_scale})
    for (std::size_t channels : {1, 5, 8, 13, 37, 256})
      for (bool per_channel : {false, true})
        for (bool large : {false, true}) {
          const std::size_t rows = 23;
          const auto m = test_multipliers(per_channel ? channels : 1, std::uint32_t(channels * 7 + large), large);
          const auto p = test_params<Out>(m, r, std::int32_t(channels * 31 + 5));
          const auto acc = test_accumulators(rows, channels, m, std::uint32_t(channels + 100 * large));
          INFO(to_string(r) << ", channels " << channels << (per_channel ? " per channel" : " per tensor")
                            << (large ? ", with M >= 1" : "") << ", z = " << p.zero_point);
          const auto want = ref::requantize(acc, channels, p);
          const auto got = widen(requantize<Out>(acc, channels, p));
          for (std::size_t i = 0; i < acc.size(); ++i) {
            INFO("element " << i << ", acc " << acc[i] << ", channel " << i % channels);
            REQUIRE(got[i] == want[i]);
            REQUIRE(requantize_one(acc[i], i % channels, p) == want[i]);
          }
        }
}

TEST_CASE("the fixed-point result is within one unit of round(M acc) computed exactly") {
  // |M acc| below 2^20, M in [2^-20, 2^2]: the double product M acc is exact to far below a
  // unit, so the only difference is the double rounding (high product, then shift).
  const auto m = random_multipliers(64, 12, -20.0, 2.0);
  const auto p = make_requantize_params(m, grid::int_signed(16), 0, requantization::fixed_point);
  requantize_params wide = p;
  wide.lo = -(1 << 24), wide.hi = 1 << 24;
  const auto acc = random_int32(64 * 2000, 13, -(1 << 18), 1 << 18);
  for (std::size_t i = 0; i < acc.size(); ++i) {
    const std::size_t c = i % 64;
    const double exact = std::round(p.fixed[c].real() * acc[i]);
    REQUIRE(std::fabs(requantize_one(acc[i], c, wide) - exact) <= 1.0);
  }
}

#if defined(__AVX2__) && !defined(QUANT_NO_SIMD)
TEST_CASE("AVX2 and scalar requantize are bit-identical: vector body, tails, unaligned pointers, 1 and 2 threads") {
  using avx2 = xsimd::avx2;
  using scalar = simd::scalar;
  auto run_case = [](std::size_t rows, std::size_t channels, bool per_channel, requantization r, bool large,
                     std::size_t acc_offset, std::size_t out_offset) {
    const auto m = test_multipliers(per_channel ? channels : 1, std::uint32_t(rows + channels), large);
    const auto p = test_params<std::int8_t>(m, r, std::int32_t(rows * 3 + channels));
    const auto acc = test_accumulators(rows, channels, m, std::uint32_t(rows * channels + acc_offset));
    const std::size_t n = acc.size();
    // all shifts >= 1 selects the fused fixed-point body; M >= 1/2 the general one
    if (!large) REQUIRE(kernels::requantize_plan(p).all_right_shift == (r == requantization::fixed_point));
    std::vector<std::int32_t> abuf(n + 4);
    for (std::size_t i = 0; i < n; ++i) abuf[acc_offset + i] = acc[i];  // misaligned start inside a buffer
    std::vector<std::int8_t> vbuf(n + 4, 0x55), sbuf(n + 4, 0x55);
    kernels::requantize_with<avx2>(abuf.data() + acc_offset, rows, channels, p, vbuf.data() + out_offset);
    kernels::requantize_with<scalar>(abuf.data() + acc_offset, rows, channels, p, sbuf.data() + out_offset);
    const auto want = ref::requantize(acc, channels, p);
    INFO("rows " << rows << ", channels " << channels << (per_channel ? " per channel " : " per tensor ") << to_string(r)
                 << (large ? " M >= 1" : "") << ", offsets " << acc_offset << "/" << out_offset);
    for (std::size_t i = 0; i < n; ++i) {
      INFO("element " << i);
      REQUIRE(vbuf[out_offset + i] == sbuf[out_offset + i]);
      REQUIRE(int(vbuf[out_offset + i]) == want[i]);
    }
    // nothing written outside [out, out + n)
    for (std::size_t i = 0; i < out_offset; ++i) REQUIRE(vbuf[i] == 0x55);
    for (std::size_t i = out_offset + n; i < vbuf.size(); ++i) REQUIRE(vbuf[i] == 0x55);
  };
  SECTION("channels around multiples of 8 and 32, odd row counts, offsets 0..3") {
    std::size_t k = 0;
    for (std::size_t channels : {1, 3, 7, 8, 9, 15, 31, 32, 33, 40, 63, 256, 257})
      for (std::size_t rows : {1, 2, 5})
        for (requantization r : {requantization::fixed_point, requantization::float_scale})
          for (bool per_channel : {false, true}) {
            ++k;
            run_case(rows, channels, per_channel, r, k % 2 == 0, k % 4, (k / 4) % 4);
          }
  }
  SECTION("uint8 and int32 outputs, channel-major blocks") {
    for (requantization r : {requantization::fixed_point, requantization::float_scale})
      for (std::size_t channels : {1, 6, 33})
        for (std::size_t cols : {1, 7, 8, 70}) {
          const auto m = test_multipliers(channels, std::uint32_t(cols + channels), true);
          const auto pu = test_params<std::uint8_t>(m, r, 77);
          const auto pi = test_params<std::int32_t>(m, r, 1234);
          const auto acc = test_accumulators(cols, channels, m, 99);  // used as [channels, cols]
          std::vector<std::int32_t> abuf(acc.size() + 3);
          std::copy(acc.begin(), acc.end(), abuf.begin() + 3);
          std::vector<std::uint8_t> vu(acc.size() + 1), su(acc.size() + 1);
          std::vector<std::int32_t> vi(acc.size() + 2), si(acc.size() + 2);
          kernels::requantize_channel_major_with<avx2>(abuf.data() + 3, channels, cols, pu, vu.data() + 1);
          kernels::requantize_channel_major_with<scalar>(abuf.data() + 3, channels, cols, pu, su.data() + 1);
          kernels::requantize_channel_major_with<avx2>(abuf.data() + 3, channels, cols, pi, vi.data() + 2);
          kernels::requantize_channel_major_with<scalar>(abuf.data() + 3, channels, cols, pi, si.data() + 2);
          for (std::size_t c = 0; c < channels; ++c)
            for (std::size_t j = 0; j < cols; ++j) {
              const std::size_t i = c * cols + j;
              INFO(to_string(r) << " channels " << channels << " cols " << cols << " channel " << c << " col " << j);
              const auto wu = ref::requantize_fixed_point(acc[i], pu.fixed[c], pu.zero_point, pu.lo, pu.hi);
              const auto wuf = ref::requantize_float_scale(acc[i], pu.scale[c], pu.zero_point, pu.lo, pu.hi);
              const auto wi = ref::requantize_fixed_point(acc[i], pi.fixed[c], pi.zero_point, pi.lo, pi.hi);
              const auto wif = ref::requantize_float_scale(acc[i], pi.scale[c], pi.zero_point, pi.lo, pi.hi);
              const bool fixed = r == requantization::fixed_point;
              REQUIRE(vu[1 + i] == su[1 + i]);
              REQUIRE(int(vu[1 + i]) == (fixed ? wu : wuf));
              REQUIRE(vi[2 + i] == si[2 + i]);
              REQUIRE(vi[2 + i] == (fixed ? wi : wif));
            }
        }
  }
  SECTION("1 and 2 threads give the same bytes (blocks large enough to be split)") {
    for (requantization r : {requantization::fixed_point, requantization::float_scale})
      for (std::size_t channels : {std::size_t(1), std::size_t(256), std::size_t(1000)})
        for (bool large : {false, true}) {
          const std::size_t rows = 300007 / channels + 1;  // above requantize_parallel_min
          const auto m = test_multipliers(channels, 5, large);
          const auto p = test_params<std::int8_t>(m, r, 3);
          const auto acc = test_accumulators(rows, channels, m, 6);
          std::vector<std::int8_t> one(acc.size()), two(acc.size()), cm1(acc.size()), cm2(acc.size());
          set_num_threads(1);
          requantize(acc.data(), rows, channels, p, one.data());
          requantize_channel_major(acc.data(), channels, rows, p, cm1.data());
          set_num_threads(2);
          requantize(acc.data(), rows, channels, p, two.data());
          requantize_channel_major(acc.data(), channels, rows, p, cm2.data());
          set_num_threads(0);
          REQUIRE(one == two);
          REQUIRE(cm1 == cm2);
          const auto want = ref::requantize(acc, channels, p);
          for (std::size_t i = 0; i < acc.size(); ++i) REQUIRE(int(one[i]) == want[i]);
        }
  }
}
#endif

TEST_CASE("requantize rejects mismatched channels and bounds outside the output type") {
  const auto p = make_requantize_params({0.1, 0.2, 0.3}, grid::int_signed(8), 0, requantization::fixed_point);
  std::vector<std::int32_t> acc(12);
  std::vector<std::int8_t> out(12);
  CHECK_THROWS_AS(requantize(acc.data(), 3, 4, p, out.data()), quant::length_error);
  CHECK_THROWS_WITH(requantize(acc.data(), 3, 4, p, out.data()), Catch::Contains("quant::requantize: channels = 4"));
  CHECK_NOTHROW(requantize(acc.data(), 4, 3, p, out.data()));
  const auto u = make_requantize_params({0.1}, grid::int_unsigned(8), 0, requantization::fixed_point);
  CHECK_THROWS_WITH(requantize(acc.data(), 3, 4, u, out.data()), Catch::Contains("p.hi = 255"));
  auto bad = p;
  bad.lo = 5, bad.hi = 4;
  CHECK_THROWS_WITH(requantize(acc.data(), 4, 3, bad, out.data()), Catch::Contains("p.lo = 5"));
  bad = p;
  bad.fixed[1].shift = 40;
  CHECK_THROWS_WITH(requantize(acc.data(), 4, 3, bad, out.data()), Catch::Contains("p.fixed[1].shift = 40"));
  bad = p;
  bad.rounding = requantization::float_scale;
  bad.scale[2] = -1.0f;
  CHECK_THROWS_WITH(requantize(acc.data(), 4, 3, bad, out.data()), Catch::Contains("p.scale[2] = -1"));
  CHECK_THROWS_AS(requantize_channel_major(acc.data(), 4, 3, p, out.data()), quant::length_error);
  CHECK_THROWS_WITH(requantize<std::int8_t>(acc, 5, p), Catch::Contains("acc.size() = 12"));
}

// ---- bias ------------------------------------------------------------------------------------

TEST_CASE("quantize_bias: round half to even of b / (s_in s_w[o]), int32 overflow is an error naming the channel") {
  SECTION("ties go to even") {
    // s = 0.5: b / s = 2 b
    const auto q = quantize_bias({0.25f, 0.75f, -0.25f, -0.75f, 1.25f, -1.25f, 0.3f}, 0.5, {1.0f});
    CHECK(q == std::vector<std::int32_t>{0, 2, 0, -2, 2, -2, 1});
  }
  SECTION("per channel equals quant::ref on random data") {
    std::mt19937 g(14);
    std::normal_distribution<float> nb(0.0f, 3.0f);
    std::uniform_real_distribution<float> ns(1e-4f, 1e-1f);
    std::vector<float> b(1000), sw(1000);
    for (auto& v : b) v = nb(g);
    for (auto& v : sw) v = ns(g);
    const double s_in = 0.0173;
    const auto q = quantize_bias(b, s_in, sw);
    const auto want = ref::quantize_bias(b, s_in, sw);
    for (std::size_t o = 0; o < b.size(); ++o) REQUIRE(q[o] == want[o]);
  }
  SECTION("the int32 ends: 2^31 - 128 and -2^31 fit, 2^31 does not") {
    CHECK(quantize_bias({2147483520.0f, -2147483648.0f}, 1.0, {1.0f}) ==
          std::vector<std::int32_t>{2147483520, int32_min});
    CHECK_THROWS_AS(quantize_bias({0.0f, 1.0f, 2.0f, 2147483648.0f}, 1.0, {1.0f}), quant::invalid_argument);
    CHECK_THROWS_WITH(quantize_bias({0.0f, 1.0f, 2.0f, 4.0f}, 1e-9, {1.0f, 1.0f, 1.0f, 1.0f}),
                      Catch::Contains("bias[3] = 4") && Catch::Contains("channel 3"));
  }
  SECTION("bad arguments") {
    CHECK_THROWS_AS(quantize_bias({std::nanf("")}, 1.0, {1.0f}), quant::domain_error);
    CHECK_THROWS_WITH(quantize_bias({1.0f}, 0.0, {1.0f}), Catch::Contains("input_scale = 0"));
    CHECK_THROWS_WITH(quantize_bias({1.0f, 2.0f}, 1.0, {1.0f, 0.0f}), Catch::Contains("weight_scales[1] = 0"));
    CHECK_THROWS_AS(quantize_bias({1.0f, 2.0f, 3.0f}, 1.0, {1.0f, 2.0f}), quant::length_error);
  }
}
