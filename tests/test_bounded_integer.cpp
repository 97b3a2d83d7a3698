// detail/bounded_integer.hpp: the high word of a 64 x 64-bit product (the portable
// 32-bit-limb form against exact values and, where the compiler has one, the 128-bit
// type), and uniform_below's range and spread.
#include <quant/detail/bounded_integer.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

using quant::detail::multiply_high;
using quant::detail::multiply_high_portable;
using quant::detail::uniform_below;

TEST_CASE("multiply_high: floor(a b / 2^64)", "[detail][bounded_integer]") {
  const std::uint64_t max = ~std::uint64_t(0);
  SECTION("exact values") {
    // (2^64 - 1)^2 = 2^128 - 2^65 + 1: high word 2^64 - 2.
    CHECK(multiply_high_portable(max, max) == max - 1);
    CHECK(multiply_high_portable(max, 1) == 0);
    CHECK(multiply_high_portable(max, 2) == 1);
    CHECK(multiply_high_portable(0, max) == 0);
    // 2^63 * b = b 2^63: high word floor(b / 2).
    CHECK(multiply_high_portable(std::uint64_t(1) << 63, 12345) == 6172);
    // 2^32 * 2^32 = 2^64.
    CHECK(multiply_high_portable(std::uint64_t(1) << 32, std::uint64_t(1) << 32) == 1);
    // (2^32 + 1)(2^32 - 1) = 2^64 - 1: high word 0 (carry across the limbs).
    CHECK(multiply_high_portable((std::uint64_t(1) << 32) + 1, (std::uint64_t(1) << 32) - 1) == 0);
    // (2^64 - 1)(2^32 + 1) = 2^96 + 2^64 - 2^32 - 1: high word 2^32.
    CHECK(multiply_high_portable(max, (std::uint64_t(1) << 32) + 1) == std::uint64_t(1) << 32);
    static_assert(multiply_high_portable(max, max) == max - 1, "usable in constant expressions");
  }
#if defined(__SIZEOF_INT128__)
  SECTION("equals the 128-bit product's high word") {
    std::mt19937_64 g(3);
    for (int i = 0; i < 100000; ++i) {
      const std::uint64_t a = g(), b = (i % 3 == 0) ? g() >> (i % 64) : g();
      const auto exact = static_cast<std::uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
      REQUIRE(multiply_high_portable(a, b) == exact);
      REQUIRE(multiply_high(a, b) == exact);
    }
  }
#endif
}

TEST_CASE("uniform_below: integers in [0, n)", "[detail][bounded_integer]") {
  SECTION("bounds: 0 for the smallest bits, n - 1 for the largest") {
    for (std::uint64_t n : {std::uint64_t(1), std::uint64_t(2), std::uint64_t(7), std::uint64_t(1) << 40}) {
      CHECK(uniform_below(0, n) == 0);
      CHECK(uniform_below(~std::uint64_t(0), n) == n - 1);
    }
  }
  SECTION("equal counts for bits on a regular lattice") {
    // bits = j 2^64 / (n m) for j < n m hits every value of [0, n) exactly m times.
    const std::uint64_t n = 5, m = 64;
    std::vector<int> count(n, 0);
    const std::uint64_t step = ~std::uint64_t(0) / (n * m) + 1;
    for (std::uint64_t j = 0; j < n * m; ++j) ++count[uniform_below(j * step, n)];
    for (std::uint64_t v = 0; v < n; ++v) CHECK(count[v] == static_cast<int>(m));
  }
}
