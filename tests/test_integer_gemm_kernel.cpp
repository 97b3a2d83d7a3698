// The pieces of the integer GEMM's tiles (detail/integer_gemm_kernel.hpp) at their bounds:
// the tiles' activation rows (int16 / int8 with the 8 sum_k x term of the int4 path), and
// the int16 partial sums of the int4 vpmaddubsw tiles at the largest magnitude the scheme
// allows (stored nibble 15 times activation -128), on the 6-row tiles, their row tails and
// the batch-1 pass, scalar and AVX2, against the int64 formula in quant::ref.
#include <quant/integer_gemm.hpp>
#include <quant/reference/integer_gemm.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "test_helpers.hpp"

using quant_test::random_ints;

namespace {

// tile_activations on a row that starts `offset` bytes into a buffer, compared with its
// definition: x (int8 weights, as int16), x or x - 128 (int4 weights, int8), zeros up to kp,
// and 8 sum_k of the int4 row.
template <int Bits, class Act>
void check_tile_activations(std::size_t k, std::size_t offset, std::uint32_t seed) {
  using xt_t = quant::detail::igemm::activation_t<Bits>;
  const int lo = std::numeric_limits<Act>::min(), hi = std::numeric_limits<Act>::max();
  const auto buf = random_ints<Act>(k + offset, lo, hi, seed);
  const Act* src = buf.data() + offset;
  const std::size_t kp = k + 5;
  std::vector<xt_t> dst(kp + offset + 1, xt_t(99));
  const std::int32_t got = quant::detail::igemm::tile_activations<Bits>(src, k, kp, dst.data() + offset);
  std::int64_t sum = 0;
  for (std::size_t i = 0; i < k; ++i) {
    const int want = Bits == 4 && !std::is_signed<Act>::value ? int(src[i]) - 128 : int(src[i]);
    sum += want;
    if (int(dst[offset + i]) != want) {
      INFO("k=" << k << " offset=" << offset << " element " << i);
      REQUIRE(int(dst[offset + i]) == want);
    }
  }
  for (std::size_t i = k; i < kp; ++i) REQUIRE(int(dst[offset + i]) == 0);
  REQUIRE(int(dst[offset + kp]) == 99);  // nothing written past kp
  for (std::size_t i = 0; i < offset; ++i) REQUIRE(int(dst[i]) == 99);
  REQUIRE(std::int64_t(got) == (Bits == 4 ? 8 * sum : 0));
}

template <class Arch, class Act>
void require_formula(const std::vector<Act>& x, std::size_t n, std::size_t k, int z, const std::vector<std::int8_t>& w,
                     std::size_t out, const std::string& what) {
  const auto pw = quant::pack_weights_int4(w.data(), out, k);
  std::vector<std::int32_t> y(n * out);
  quant::integer_gemm_s32<Arch>(x.data(), n, k, z, pw, nullptr, y.data(), out);
  const auto want = quant::ref::integer_gemm_accumulators(x.data(), n, k, z, w.data(), out, nullptr);
  for (std::size_t i = 0; i < want.size(); ++i)
    if (std::int64_t(y[i]) != want[i]) {
      INFO(what << " (" << Arch::name() << "): element " << i << " got " << y[i] << " want " << want[i]);
      REQUIRE(std::int64_t(y[i]) == want[i]);
    }
}

template <class Act>
void require_formula_all_paths(const std::vector<Act>& x, std::size_t n, std::size_t k, int z,
                               const std::vector<std::int8_t>& w, std::size_t out, const std::string& what) {
  require_formula<quant::simd::scalar>(x, n, k, z, w, out, what);
#if defined(__AVX2__)
  require_formula<xsimd::avx2>(x, n, k, z, w, out, what);
#endif
}

}  // namespace

TEST_CASE("tile activation rows: the row as the tiles read it, zero padded, with 8 sum_k x for int4",
          "[integer_gemm]") {
  // k = 1, 31 (tail only), 32 (one vector), 64 + 7 (vectors and a tail), 4099; unaligned starts
  for (std::size_t k : {1u, 31u, 32u, 71u, 4099u})
    for (std::size_t offset : {0u, 1u, 3u}) {
      const std::uint32_t seed = static_cast<std::uint32_t>(k * 10 + offset);
      check_tile_activations<8, std::uint8_t>(k, offset, seed);
      check_tile_activations<8, std::int8_t>(k, offset, seed);
      check_tile_activations<4, std::uint8_t>(k, offset, seed);
      check_tile_activations<4, std::int8_t>(k, offset, seed);
    }
  SECTION("the sum at its extremes: uint8 0 (x - 128 = -128) and 255 (127) over 4099 taps") {
    std::vector<std::uint8_t> zeros(4099, 0), top(4099, 255);
    std::vector<std::int8_t> dst(4100);
    REQUIRE(quant::detail::igemm::tile_activations<4>(zeros.data(), 4099, 4100, dst.data()) == 8 * -128 * 4099);
    REQUIRE(quant::detail::igemm::tile_activations<4>(top.data(), 4099, 4100, dst.data()) == 8 * 127 * 4099);
  }
}

TEST_CASE("int4 tiles: int16 partial sums at the bound of the nibble x int8 scheme", "[integer_gemm]") {
  // The tiles multiply stored nibbles w + 8 (15 for w = 7) by int8 activations (uint8 x - 128:
  // -128 for x = 0), so every pair is 2 * 15 * (-128) = -3840 and 8 quads sum to -30720 in
  // each int16 lane before the widening. K = 4099: many 8-quad runs, a partial last run and a
  // padded last quad; n = 13: two full 6-row tiles and a 1-row tail; out = 40: a partial block.
  const std::size_t k = 4099, out = 40;
  const std::vector<std::int8_t> w7(out * k, 7), w8(out * k, -8);
  SECTION("uint8 activations 0 (tile value -128), weights 7, any zero point") {
    for (std::size_t n : {13u, 1u})
      for (int z : {0, 255, 77}) {
        const std::vector<std::uint8_t> x(n * k, 0);
        require_formula_all_paths(x, n, k, z, w7, out, "x=0 w=7 n=" + std::to_string(n) + " z=" + std::to_string(z));
      }
  }
  SECTION("int8 activations -128, weights 7; and 127 against nibble 0 (w = -8)") {
    for (std::size_t n : {13u, 1u}) {
      const std::vector<std::int8_t> lo(n * k, -128), hi(n * k, 127);
      require_formula_all_paths(lo, n, k, 0, w7, out, "x=-128 w=7 n=" + std::to_string(n));
      require_formula_all_paths(lo, n, k, -128, w7, out, "x=-128 w=7 z=-128 n=" + std::to_string(n));
      require_formula_all_paths(hi, n, k, 5, w8, out, "x=127 w=-8 n=" + std::to_string(n));
    }
  }
  SECTION("alternating extremes within a quad: nibbles 15 / 0 against activations -128 / 127") {
    std::vector<std::int8_t> w(out * k);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = (i % 2) ? std::int8_t(-8) : std::int8_t(7);
    for (std::size_t n : {13u, 1u}) {
      std::vector<std::uint8_t> x(n * k);
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = (i % 2) ? 255 : 0;
      require_formula_all_paths(x, n, k, 128, w, out, "alternating n=" + std::to_string(n));
    }
  }
  SECTION("random data with misaligned rows (stride K + 3, start at byte 1)") {
    const std::size_t n = 13, ldx = k + 3;
    const auto w = random_ints<std::int8_t>(out * k, -8, 7, 31);
    const auto xr = random_ints<std::uint8_t>(n * k, 0, 255, 32);
    std::vector<std::uint8_t> buf(1 + n * ldx, 0);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < k; ++j) buf[1 + i * ldx + j] = xr[i * k + j];
    const auto pw = quant::pack_weights_int4(w.data(), out, k);
    const auto want = quant::ref::integer_gemm_accumulators(xr.data(), n, k, 9, w.data(), out, nullptr);
    std::vector<std::int32_t> y(n * out), ys(n * out);
    quant::integer_gemm_s32(buf.data() + 1, n, ldx, 9, pw, nullptr, y.data(), out);
    quant::integer_gemm_s32<quant::simd::scalar>(buf.data() + 1, n, ldx, 9, pw, nullptr, ys.data(), out);
    for (std::size_t i = 0; i < want.size(); ++i) {
      REQUIRE(std::int64_t(y[i]) == want[i]);
      REQUIRE(std::int64_t(ys[i]) == want[i]);
    }
  }
}
