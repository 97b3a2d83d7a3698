// The integer GEMM (integer_gemm.hpp, packed_weights.hpp, integer_im2col.hpp) against the
// int64 formula in quant::ref, on every path (scalar tile and AVX2 tile in this binary),
// every tail of the register blocking, extreme values, and 1 vs 2 threads.
#include <quant/integer_gemm.hpp>
#include <quant/integer_im2col.hpp>
#include <quant/reference/integer_gemm.hpp>
#include <quant/reference/requantize.hpp>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xview.hpp>

#include <catch2/catch.hpp>

#include "test_helpers.hpp"

using quant_test::random_ints;

namespace {

template <class T>
xt::xtensor<T, 2> as_matrix(const std::vector<T>& v, std::size_t r, std::size_t c) {
  xt::xtensor<T, 2> m = xt::xtensor<T, 2>::from_shape({r, c});
  std::copy(v.begin(), v.end(), m.begin());
  return m;
}

template <class Act>
constexpr int act_min() {
  return std::numeric_limits<Act>::min();
}
template <class Act>
constexpr int act_max() {
  return std::numeric_limits<Act>::max();
}

// The arch tags compiled into this binary: the scalar tile always, the AVX2 tile when the
// compiler targets it.
struct scalar_tag {
  using arch = quant::simd::scalar;
};
#if defined(__AVX2__)
struct avx2_tag {
  using arch = xsimd::avx2;
};
#endif

// Runs integer_gemm_s32 on Arch through the pointer form with the given strides and an
// offset from an aligned start, and returns y [n, out] (checking the gaps stay untouched).
template <class Arch, class Act>
std::vector<std::int32_t> gemm_s32_strided(const std::vector<Act>& x, std::size_t n, std::size_t k, int z,
                                           const quant::packed_weights& pw, const std::int32_t* bias,
                                           std::size_t x_offset, std::size_t ldx, std::size_t y_offset,
                                           std::size_t ldy) {
  const std::size_t out = pw.out;
  std::vector<Act> xbuf(x_offset + n * ldx + 1, Act(7));
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < k; ++j) xbuf[x_offset + i * ldx + j] = x[i * k + j];
  const std::int32_t sentinel = -123456789;
  std::vector<std::int32_t> ybuf(y_offset + n * ldy + 1, sentinel);
  quant::integer_gemm_s32<Arch>(xbuf.data() + x_offset, n, ldx, z, pw, bias, ybuf.data() + y_offset, ldy);
  std::vector<std::int32_t> y(n * out);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t o = 0; o < out; ++o) y[i * out + o] = ybuf[y_offset + i * ldy + o];
  for (std::size_t i = 0; i < ybuf.size(); ++i) {
    const bool inside = i >= y_offset && (i - y_offset) / ldy < n && (i - y_offset) % ldy < out;
    if (!inside && ybuf[i] != sentinel) {
      INFO("write outside the output at buffer index " << i);
      REQUIRE(ybuf[i] == sentinel);
    }
  }
  return y;
}

void require_equal_acc(const std::vector<std::int32_t>& got, const std::vector<std::int64_t>& want,
                       const std::string& what) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    if (std::int64_t(got[i]) != want[i]) {
      INFO(what << ": element " << i << ": got " << got[i] << " want " << want[i]);
      REQUIRE(std::int64_t(got[i]) == want[i]);
    }
}

// One case: random activations / weights / bias, the GEMM on Arch equals the int64 formula.
template <class Arch, class Act>
void check_case(std::size_t n, std::size_t out, std::size_t k, int bits, std::uint32_t seed) {
  const int wlo = bits == 8 ? -128 : -8, whi = bits == 8 ? 127 : 7;
  const auto x = random_ints<Act>(n * k, act_min<Act>(), act_max<Act>(), seed);
  const auto w = random_ints<std::int8_t>(out * k, wlo, whi, seed + 1);
  const auto bias = random_ints<std::int32_t>(out, -100000, 100000, seed + 2);
  const int z = random_ints<int>(1, act_min<Act>(), act_max<Act>(), seed + 3)[0];
  const quant::packed_weights pw =
      bits == 8 ? quant::pack_weights(w.data(), out, k) : quant::pack_weights_int4(w.data(), out, k);
  const auto want = quant::ref::integer_gemm_accumulators(x.data(), n, k, z, w.data(), out, bias.data());
  const std::string what = std::string(Arch::name()) + " n=" + std::to_string(n) + " out=" + std::to_string(out) +
                           " k=" + std::to_string(k) + " bits=" + std::to_string(bits) + " z=" + std::to_string(z);
  // contiguous, and misaligned with padded strides
  require_equal_acc(gemm_s32_strided<Arch>(x, n, k, z, pw, bias.data(), 0, k, 0, out), want, what);
  require_equal_acc(gemm_s32_strided<Arch>(x, n, k, z, pw, bias.data(), 1, k + 3, 1, out + 5), want,
                    what + " (misaligned)");
}

// quant::ref's requantization (int64 / double, written from the formulas) of one value.
std::int32_t ref_requantize(std::int32_t acc, std::size_t channel, const quant::requantize_params& p) {
  const std::size_t c = p.channels() == 1 ? 0 : channel;
  return p.rounding == quant::requantization::fixed_point
             ? quant::ref::requantize_fixed_point(acc, p.fixed[c], p.zero_point, p.lo, p.hi)
             : quant::ref::requantize_float_scale(acc, p.scale[c], p.zero_point, p.lo, p.hi);
}

}  // namespace

TEMPLATE_TEST_CASE("integer_gemm_s32 equals the int64 formula on every tail of the blocking", "[integer_gemm]",
                   scalar_tag
#if defined(__AVX2__)
                   ,
                   avx2_tag
#endif
) {
  using Arch = typename TestType::arch;
  // rows: GEMV, below / at / above the 6-row tile and the 48-row task; channels: below / at /
  // above the 16-channel block and the 64-channel task; K: odd, even, around 32, a conv K.
  const std::vector<std::size_t> ks = {1, 2, 3, 31, 32, 33, 100, 1152};
  const std::vector<std::pair<std::size_t, std::size_t>> shapes = {{1, 1},  {1, 16},  {1, 17}, {5, 15}, {6, 16},
                                                                    {7, 33}, {13, 64}, {49, 65}, {2, 130}, {1, 130}};
  std::uint32_t seed = 1;
  SECTION("uint8 activations, int8 weights") {
    for (auto k : ks)
      for (auto s : shapes) check_case<Arch, std::uint8_t>(s.first, s.second, k, 8, seed++);
  }
  SECTION("int8 activations, int8 weights") {
    for (auto k : ks)
      for (auto s : shapes) check_case<Arch, std::int8_t>(s.first, s.second, k, 8, seed++);
  }
  SECTION("uint8 activations, int4 weights") {
    for (auto k : ks)
      for (auto s : shapes) check_case<Arch, std::uint8_t>(s.first, s.second, k, 4, seed++);
  }
  SECTION("int8 activations, int4 weights") {
    for (auto k : ks)
      for (auto s : shapes) check_case<Arch, std::int8_t>(s.first, s.second, k, 4, seed++);
  }
  SECTION("a layer-sized GEMM (N = 100, out = 96, K = 1152)") {
    check_case<Arch, std::uint8_t>(100, 96, 1152, 8, 77);
    check_case<Arch, std::uint8_t>(100, 96, 1152, 4, 78);
  }
}

TEST_CASE("integer GEMM accumulators reach the int32 bounds without overflow", "[integer_gemm]") {
  const std::size_t n = 7, out = 17;
  SECTION("uint8 255 x int8 -128 at the largest K: -2147483520") {
    const std::size_t k = quant::integer_gemm_max_k<std::uint8_t>(8);
    REQUIRE(k == 65793);
    REQUIRE(std::int64_t(k) * 255 * 128 < (std::int64_t(1) << 31));
    REQUIRE(std::int64_t(k + 1) * 255 * 128 >= (std::int64_t(1) << 31));
    const xt::xtensor<std::uint8_t, 2> x = xt::xtensor<std::uint8_t, 2>(std::array<std::size_t, 2>{n, k}, 255);
    const xt::xtensor<std::int8_t, 2> w = xt::xtensor<std::int8_t, 2>(std::array<std::size_t, 2>{out, k}, -128);
    const auto pw = quant::pack_weights(w);
    const auto y = quant::integer_gemm_s32<quant::simd::scalar>(x, 0, pw);
    for (auto v : y) REQUIRE(v == -2147483520);
#if defined(__AVX2__)
    const auto y2 = quant::integer_gemm_s32<xsimd::avx2>(x, 0, pw);
    for (auto v : y2) REQUIRE(v == -2147483520);
#endif
  }
  SECTION("uint8 0 - z 255 times int8 127 at the largest K: -2130706305 (zero point through the row sums)") {
    const std::size_t k = 65793;
    const xt::xtensor<std::uint8_t, 2> x = xt::xtensor<std::uint8_t, 2>(std::array<std::size_t, 2>{n, k}, 0);
    const xt::xtensor<std::int8_t, 2> w = xt::xtensor<std::int8_t, 2>(std::array<std::size_t, 2>{out, k}, 127);
    const auto pw = quant::pack_weights(w);
    const std::int32_t want = static_cast<std::int32_t>(-std::int64_t(k) * 255 * 127);
    for (auto v : quant::integer_gemm_s32(x, 255, pw)) REQUIRE(v == want);
    for (auto v : quant::integer_gemm_s32<quant::simd::scalar>(x, 255, pw)) REQUIRE(v == want);
  }
  SECTION("int8 -128 x int8 -128 at the largest int8 K: 2147467264") {
    const std::size_t k = quant::integer_gemm_max_k<std::int8_t>(8);
    REQUIRE(k == 131071);
    const xt::xtensor<std::int8_t, 2> x = xt::xtensor<std::int8_t, 2>(std::array<std::size_t, 2>{2, k}, -128);
    const xt::xtensor<std::int8_t, 2> w = xt::xtensor<std::int8_t, 2>(std::array<std::size_t, 2>{3, k}, -128);
    const auto pw = quant::pack_weights(w);
    for (auto v : quant::integer_gemm_s32(x, 0, pw)) REQUIRE(v == 2147467264);
    for (auto v : quant::integer_gemm_s32<quant::simd::scalar>(x, 0, pw)) REQUIRE(v == 2147467264);
  }
  SECTION("int4 weights: the int16 partial sums of the vpmaddubsw tile at their bound") {
    // 8 quads of 255 x -8 = -32640 per int16 lane before each widening; K not a multiple of 32
    const std::size_t k = 4099;
    const xt::xtensor<std::int8_t, 2> w = xt::xtensor<std::int8_t, 2>(std::array<std::size_t, 2>{out, k}, -8);
    const auto p4 = quant::pack_weights_int4(w);
    const xt::xtensor<std::uint8_t, 2> xu = xt::xtensor<std::uint8_t, 2>(std::array<std::size_t, 2>{n, k}, 255);
    const xt::xtensor<std::int8_t, 2> xs = xt::xtensor<std::int8_t, 2>(std::array<std::size_t, 2>{n, k}, 127);
    for (auto v : quant::integer_gemm_s32(xu, 0, p4)) REQUIRE(v == -8 * 255 * 4099);
    for (auto v : quant::integer_gemm_s32<quant::simd::scalar>(xu, 0, p4)) REQUIRE(v == -8 * 255 * 4099);
    for (auto v : quant::integer_gemm_s32(xs, -128, p4)) REQUIRE(v == -8 * 255 * 4099);
    for (auto v : quant::integer_gemm_s32(xs, 0, p4)) REQUIRE(v == -8 * 127 * 4099);
    const xt::xtensor<std::uint8_t, 2> x1 = xt::view(xu, xt::range(0, 1), xt::all());  // GEMV
    for (auto v : quant::integer_gemm_s32(x1, 0, p4)) REQUIRE(v == -8 * 255 * 4099);
  }
  SECTION("a bias that takes the accumulator to INT32_MAX exactly") {
    const std::size_t k = 1000;
    const xt::xtensor<std::uint8_t, 2> x = xt::xtensor<std::uint8_t, 2>(std::array<std::size_t, 2>{n, k}, 255);
    const xt::xtensor<std::int8_t, 2> w = xt::xtensor<std::int8_t, 2>(std::array<std::size_t, 2>{out, k}, 127);
    const auto pw = quant::pack_weights(w);
    const std::int64_t dot = std::int64_t(k) * 255 * 127;
    xt::xtensor<std::int32_t, 1> bias = xt::xtensor<std::int32_t, 1>::from_shape({out});
    bias.fill(static_cast<std::int32_t>(std::numeric_limits<std::int32_t>::max() - dot));
    for (auto v : quant::integer_gemm_s32(x, 0, pw, bias)) REQUIRE(v == std::numeric_limits<std::int32_t>::max());
    bias(3) += 1;  // the bound now exceeds int32 for channel 3
    REQUIRE_THROWS_WITH(quant::integer_gemm_s32(x, 0, pw, bias), Catch::Contains("bias[3]"));
  }
}

TEST_CASE("int4 weights give the same accumulators as the same values in int8", "[integer_gemm]") {
  const std::size_t n = 11, out = 37, k = 301;
  const auto w = random_ints<std::int8_t>(out * k, -8, 7, 5);
  const auto x = as_matrix(random_ints<std::uint8_t>(n * k, 0, 255, 6), n, k);
  const auto as8 = quant::pack_weights(w.data(), out, k);
  const auto as4 = quant::pack_weights_int4(w.data(), out, k);
  // half a byte per weight: 3 blocks of 16 channels, K padded to 304 (8-bit: 302)
  REQUIRE(as4.bytes.size() == 3 * 16 * 304 / 2);
  REQUIRE(as8.bytes.size() == 3 * 16 * 302);
  // the export format: element 2j in the low nibble of byte j (quant::pack_int4)
  const auto nibbles = quant::pack_int4(w.data(), w.size(), quant::grid::int_signed(4));
  const auto from_export = quant::pack_weights_int4(nibbles, out, k);
  REQUIRE(from_export.bytes == as4.bytes);
  const auto y8 = quant::integer_gemm_s32(x, 100, as8);
  REQUIRE(bool(quant::integer_gemm_s32(x, 100, as4) == y8));
  REQUIRE(bool(quant::integer_gemm_s32<quant::simd::scalar>(x, 100, as4) == y8));
  REQUIRE(bool(quant::integer_gemm_s32(x, 100, from_export) == y8));
}

TEST_CASE("packed weights unpack to the source values, with the row sums of the formula", "[integer_gemm]") {
  for (std::size_t out : {1, 16, 17, 40})
    for (std::size_t k : {1, 2, 7, 64}) {
      const auto w8 = as_matrix(random_ints<std::int8_t>(out * k, -128, 127, std::uint32_t(out * 100 + k)), out, k);
      const auto w4 = as_matrix(random_ints<std::int8_t>(out * k, -8, 7, std::uint32_t(out * 100 + k + 1)), out, k);
      for (int bits : {8, 4}) {
        const auto& w = bits == 8 ? w8 : w4;
        const auto p = bits == 8 ? quant::pack_weights(w) : quant::pack_weights_int4(w);
        REQUIRE(bool(quant::unpack_weights(p) == w));
        for (std::size_t o = 0; o < out; ++o) {
          std::int64_t s = 0, a = 0;
          for (std::size_t j = 0; j < k; ++j) s += w(o, j), a += std::abs(int(w(o, j)));
          REQUIRE(p.row_sums[o] == s);
          REQUIRE(p.abs_row_sums[o] == a);
        }
      }
    }
}

TEMPLATE_TEST_CASE("integer_gemm (fused requantization) equals quant::ref requantization of the exact accumulator",
                   "[integer_gemm]", scalar_tag
#if defined(__AVX2__)
                   ,
                   avx2_tag
#endif
) {
  using Arch = typename TestType::arch;
  const std::size_t n = 23, out = 45, k = 97;
  const auto xv = random_ints<std::uint8_t>(n * k, 0, 255, 11);
  const auto wv = random_ints<std::int8_t>(out * k, -127, 127, 12);
  const auto bv = random_ints<std::int32_t>(out, -20000, 20000, 13);
  const int zx = 131;
  const auto acc = quant::ref::integer_gemm_accumulators(xv.data(), n, k, zx, wv.data(), out, bv.data());
  // per-channel multipliers around 1e-4 .. 1e-3 (accumulators of +-2e6 map onto the grid),
  // one >= 1 to exercise the left shift
  const std::vector<double> m_per_channel = [&] {
    std::vector<double> m(out);
    for (std::size_t o = 0; o < out; ++o) m[o] = 1e-4 * (1.0 + 0.2 * double(o));
    m[5] = 1.5;
    return m;
  }();
  const std::vector<double> m_tensor = {3.1e-4};
  for (int bits : {8, 4}) {
    std::vector<std::int8_t> w = wv;
    if (bits == 4)
      for (auto& v : w) v = static_cast<std::int8_t>(v % 8);
    const auto acc_b = bits == 8 ? acc : quant::ref::integer_gemm_accumulators(xv.data(), n, k, zx, w.data(), out, bv.data());
    const auto pw = bits == 8 ? quant::pack_weights(w.data(), out, k) : quant::pack_weights_int4(w.data(), out, k);
    for (auto rounding : {quant::requantization::fixed_point, quant::requantization::float_scale})
      for (const auto* ms : {&m_per_channel, &m_tensor})
        for (auto act : {quant::fused_activation::none, quant::fused_activation::relu6}) {
          const std::string what = std::string(Arch::name()) + " bits " + std::to_string(bits) + " " +
                                   quant::to_string(rounding) + (ms == &m_tensor ? " per tensor" : " per channel") +
                                   (act == quant::fused_activation::none ? "" : " relu6");
          DYNAMIC_SECTION(what) {
            // uint8 output
            const auto pu = quant::make_requantize_params(*ms, quant::grid::int_unsigned(8), 7, rounding, act, 0.05);
            std::vector<std::uint8_t> yu(n * out + 1);
            quant::integer_gemm<Arch>(xv.data(), n, k, zx, pw, bv.data(), pu, yu.data() + 1, out);
            // int8 output
            const auto ps = quant::make_requantize_params(*ms, quant::grid::int_signed(8), -3, rounding, act, 0.05);
            std::vector<std::int8_t> ys(n * out);
            quant::integer_gemm<Arch>(xv.data(), n, k, zx, pw, bv.data(), ps, ys.data(), out);
            for (std::size_t i = 0; i < n; ++i)
              for (std::size_t o = 0; o < out; ++o) {
                const std::int64_t a = acc_b[i * out + o];
                REQUIRE(a == std::int64_t(std::int32_t(a)));
                INFO("row " << i << " channel " << o << " acc " << a);
                REQUIRE(int(yu[1 + i * out + o]) == ref_requantize(std::int32_t(a), o, pu));
                REQUIRE(int(ys[i * out + o]) == ref_requantize(std::int32_t(a), o, ps));
              }
          }
        }
  }
}

TEMPLATE_TEST_CASE("a prepared integer_gemm_layer computes what the unprepared call computes", "[integer_gemm]",
                   scalar_tag
#if defined(__AVX2__)
                   ,
                   avx2_tag
#endif
) {
  using Arch = typename TestType::arch;
  const std::size_t out = 37, k = 61;
  const auto xv = random_ints<std::uint8_t>(9 * k, 0, 255, 21);
  const auto wv = random_ints<std::int8_t>(out * k, -7, 7, 22);  // fits int4 and int8
  const auto bv = random_ints<std::int32_t>(out, -5000, 5000, 23);
  const int zx = 77;
  std::vector<double> m(out);
  for (std::size_t o = 0; o < out; ++o) m[o] = 2e-3 * (1.0 + 0.1 * double(o));
  for (int bits : {8, 4})
    for (auto rounding : {quant::requantization::fixed_point, quant::requantization::float_scale})
      for (bool per_channel : {true, false}) {
        DYNAMIC_SECTION(Arch::name() << " bits " << bits << " " << quant::to_string(rounding)
                                     << (per_channel ? " per channel" : " per tensor")) {
          const auto rq = quant::make_requantize_params(per_channel ? m : std::vector<double>{m[3]},
                                                        quant::grid::int_unsigned(8), 5, rounding,
                                                        quant::fused_activation::relu);
          const auto pack = [&] {
            return bits == 8 ? quant::pack_weights(wv.data(), out, k) : quant::pack_weights_int4(wv.data(), out, k);
          };
          const quant::integer_gemm_layer<std::uint8_t> layer(pack(), zx, bv, rq);
          REQUIRE(layer.weights().bits == bits);
          REQUIRE(layer.x_zero_point() == zx);
          const auto acc = quant::ref::integer_gemm_accumulators(xv.data(), 9, k, zx, wv.data(), out, bv.data());
          // n = 1 (the GEMV), 6 (one full tile) and 9 rows; output rows padded to ldy = out + 3
          for (std::size_t n : {std::size_t(1), std::size_t(6), std::size_t(9)}) {
            std::vector<std::uint8_t> y(n * (out + 3), 0xAB);
            for (int repeat = 0; repeat < 2; ++repeat) {  // the layer is reusable
              quant::integer_gemm<Arch>(xv.data(), n, k, layer, y.data(), out + 3);
              for (std::size_t i = 0; i < n; ++i)
                for (std::size_t o = 0; o < out + 3; ++o) {
                  INFO("n " << n << " row " << i << " channel " << o);
                  if (o >= out) {
                    REQUIRE(int(y[i * (out + 3) + o]) == 0xAB);  // padding untouched
                    continue;
                  }
                  REQUIRE(int(y[i * (out + 3) + o]) == ref_requantize(std::int32_t(acc[i * out + o]), o, rq));
                }
            }
          }
        }
      }
}

TEST_CASE("the xtensor integer_gemm takes the bias as quantize_bias returns it", "[integer_gemm]") {
  const std::size_t n = 5, out = 19, k = 33;
  const auto xv = random_ints<std::uint8_t>(n * k, 0, 255, 51);
  const auto wv = random_ints<std::int8_t>(out * k, -127, 127, 52);
  const auto bv = random_ints<std::int32_t>(out, -3000, 3000, 53);
  const auto rq = quant::make_requantize_params(std::vector<double>(out, 4e-4), quant::grid::int_signed(8), -2,
                                                quant::requantization::fixed_point);
  const auto y = quant::integer_gemm<std::int8_t>(as_matrix(xv, n, k), 9, quant::pack_weights(wv.data(), out, k), bv, rq);
  const auto acc = quant::ref::integer_gemm_accumulators(xv.data(), n, k, 9, wv.data(), out, bv.data());
  REQUIRE(y.shape()[0] == n);
  REQUIRE(y.shape()[1] == out);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t o = 0; o < out; ++o) REQUIRE(int(y(i, o)) == ref_requantize(std::int32_t(acc[i * out + o]), o, rq));
  REQUIRE_THROWS_WITH(quant::integer_gemm<std::int8_t>(as_matrix(xv, n, k), 9, quant::pack_weights(wv.data(), out, k),
                                                       std::vector<std::int32_t>(3), rq),
                      Catch::Contains("bias.size() = 3"));
}

TEST_CASE("integer_gemm_layer validates once, naming the argument", "[integer_gemm]") {
  const auto wv = random_ints<std::int8_t>(5 * 8, -127, 127, 31);
  const auto rq = quant::make_requantize_params({1e-3}, quant::grid::int_signed(8), 0,
                                                quant::requantization::fixed_point);
  using layer_u8 = quant::integer_gemm_layer<std::uint8_t>;
  SECTION("zero point off the activation grid") {
    REQUIRE_THROWS_AS(layer_u8(quant::pack_weights(wv.data(), 5, 8), 256, {}, rq), quant::invalid_argument);
    REQUIRE_THROWS_WITH(layer_u8(quant::pack_weights(wv.data(), 5, 8), -1, {}, rq),
                        Catch::Contains("integer_gemm_layer") && Catch::Contains("x_zero_point = -1"));
  }
  SECTION("bias of the wrong length") {
    REQUIRE_THROWS_AS(layer_u8(quant::pack_weights(wv.data(), 5, 8), 0, std::vector<std::int32_t>(4), rq),
                      quant::length_error);
    REQUIRE_THROWS_WITH(layer_u8(quant::pack_weights(wv.data(), 5, 8), 0, std::vector<std::int32_t>(4), rq),
                        Catch::Contains("bias.size() = 4"));
  }
  SECTION("requantization channels that match neither 1 nor out") {
    const auto rq3 = quant::make_requantize_params({1e-3, 2e-3, 3e-3}, quant::grid::int_signed(8), 0,
                                                   quant::requantization::fixed_point);
    REQUIRE_THROWS_WITH(layer_u8(quant::pack_weights(wv.data(), 5, 8), 0, {}, rq3),
                        Catch::Contains("rq.channels() = 3"));
  }
  SECTION("a bias that breaks the accumulator bound") {
    std::vector<std::int32_t> huge(5, 0);
    huge[2] = std::numeric_limits<std::int32_t>::max() - 10;
    REQUIRE_THROWS_WITH(layer_u8(quant::pack_weights(wv.data(), 5, 8), 0, huge, rq), Catch::Contains("bias[2]"));
  }
  SECTION("strides and output range are checked per call") {
    const layer_u8 layer(quant::pack_weights(wv.data(), 5, 8), 0, {}, rq);
    const auto x = random_ints<std::uint8_t>(2 * 8, 0, 255, 32);
    std::vector<std::int8_t> y(2 * 5);
    REQUIRE_THROWS_WITH(quant::integer_gemm(x.data(), 2, 7, layer, y.data(), 5), Catch::Contains("ldx = 7"));
    REQUIRE_THROWS_WITH(quant::integer_gemm(x.data(), 2, 8, layer, y.data(), 4), Catch::Contains("ldy = 4"));
    std::vector<std::uint8_t> yu(2 * 5);  // rq's bounds [-128, 127] do not fit uint8
    REQUIRE_THROWS_WITH(quant::integer_gemm(x.data(), 2, 8, layer, yu.data(), 5), Catch::Contains("p.lo = -128"));
    REQUIRE_NOTHROW(quant::integer_gemm(x.data(), 2, 8, layer, y.data(), 5));
  }
}

TEST_CASE("integer GEMM results do not depend on the thread count or the path", "[integer_gemm]") {
  const std::size_t n = 150, out = 100, k = 1152;  // parallel (above the threshold), many tasks
  const auto x = as_matrix(random_ints<std::uint8_t>(n * k, 0, 255, 21), n, k);
  const auto w = random_ints<std::int8_t>(out * k, -128, 127, 22);
  const auto pw = quant::pack_weights(w.data(), out, k);
  const auto pu = quant::make_requantize_params({2e-5}, quant::grid::int_unsigned(8), 128,
                                                quant::requantization::fixed_point);
  xt::xtensor<std::int32_t, 1> bias = xt::xtensor<std::int32_t, 1>::from_shape({out});
  bias.fill(12345);
  quant::set_num_threads(1);
  const auto s1 = quant::integer_gemm_s32(x, 3, pw, bias);
  const auto q1 = quant::integer_gemm<std::uint8_t>(x, 3, pw, bias, pu);
  quant::set_num_threads(2);
  const auto s2 = quant::integer_gemm_s32(x, 3, pw, bias);
  const auto q2 = quant::integer_gemm<std::uint8_t>(x, 3, pw, bias, pu);
  const auto s_scalar = quant::integer_gemm_s32<quant::simd::scalar>(x, 3, pw, bias);
  quant::set_num_threads(0);
  REQUIRE(bool(s1 == s2));
  REQUIRE(bool(q1 == q2));
  REQUIRE(bool(s_scalar == s1));
  const auto want = quant::ref::integer_gemm_accumulators(x.data(), n, k, 3, w.data(), out, bias.data());
  for (std::size_t i = 0; i < want.size(); ++i) REQUIRE(std::int64_t(s1.data()[i]) == want[i]);
}

TEST_CASE("batch-1 GEMV results do not depend on the thread count or the path", "[integer_gemm]") {
  const std::size_t out = 1000, k = 1152;  // 63 blocks: pairs and a single one, parallel
  const auto x = as_matrix(random_ints<std::uint8_t>(k, 0, 255, 23), 1, k);
  const auto w = random_ints<std::int8_t>(out * k, -8, 7, 24);
  for (int bits : {8, 4}) {
    const auto pw = bits == 8 ? quant::pack_weights(w.data(), out, k) : quant::pack_weights_int4(w.data(), out, k);
    quant::set_num_threads(1);
    const auto s1 = quant::integer_gemm_s32(x, 200, pw);
    quant::set_num_threads(2);
    const auto s2 = quant::integer_gemm_s32(x, 200, pw);
    quant::set_num_threads(0);
    REQUIRE(bool(s1 == s2));
    REQUIRE(bool(quant::integer_gemm_s32<quant::simd::scalar>(x, 200, pw) == s1));
    const auto want = quant::ref::integer_gemm_accumulators(x.data(), 1, k, 200, w.data(), out, nullptr);
    for (std::size_t i = 0; i < want.size(); ++i) REQUIRE(std::int64_t(s1.data()[i]) == want[i]);
  }
}

TEST_CASE("integer convolution through im2col padded with the zero point", "[integer_gemm]") {
  // direct convolution from its definition: taps outside the image contribute the real
  // value 0, i.e. nothing; inside, w (x - z)
  quant::conv2d_shape g;
  g.channels = 3, g.height = 9, g.width = 7, g.kernel_h = 3, g.kernel_w = 2;
  g.stride_h = 2, g.stride_w = 1, g.pad_h = 1, g.pad_w = 2, g.dilation_h = 1, g.dilation_w = 2;
  const std::size_t batch = 2, out = 19, k = g.patch_size(), oh = g.out_h(), ow = g.out_w();
  const int z = 77;
  const auto xv = random_ints<std::uint8_t>(batch * g.image_size(), 0, 255, 31);
  xt::xtensor<std::uint8_t, 4> x = xt::xtensor<std::uint8_t, 4>::from_shape({batch, g.channels, g.height, g.width});
  std::copy(xv.begin(), xv.end(), x.begin());
  const auto w = random_ints<std::int8_t>(out * k, -128, 127, 32);
  const auto bias = random_ints<std::int32_t>(out, -1000, 1000, 33);

  const auto cols = quant::im2col(x, g, z);
  REQUIRE(cols.shape()[0] == batch * oh * ow);
  REQUIRE(cols.shape()[1] == k);
  const auto cols_ref = quant::ref::im2col(xv.data(), batch, g, std::uint8_t(z));
  REQUIRE(std::equal(cols.begin(), cols.end(), cols_ref.begin()));

  xt::xtensor<std::int32_t, 1> b = xt::xtensor<std::int32_t, 1>::from_shape({out});
  std::copy(bias.begin(), bias.end(), b.begin());
  const auto y = quant::integer_gemm_s32(cols, z, quant::pack_weights(w.data(), out, k), b);
  for (std::size_t bi = 0; bi < batch; ++bi)
    for (std::size_t oy = 0; oy < oh; ++oy)
      for (std::size_t ox = 0; ox < ow; ++ox)
        for (std::size_t o = 0; o < out; ++o) {
          std::int64_t s = bias[o];
          for (std::size_t c = 0; c < g.channels; ++c)
            for (std::size_t ky = 0; ky < g.kernel_h; ++ky)
              for (std::size_t kx = 0; kx < g.kernel_w; ++kx) {
                const long yy = long(oy * g.stride_h + ky * g.dilation_h) - long(g.pad_h);
                const long xx = long(ox * g.stride_w + kx * g.dilation_w) - long(g.pad_w);
                if (yy < 0 || yy >= long(g.height) || xx < 0 || xx >= long(g.width)) continue;
                const int xq = x(bi, c, std::size_t(yy), std::size_t(xx));
                s += std::int64_t(w[o * k + (c * g.kernel_h + ky) * g.kernel_w + kx]) * (xq - z);
              }
          REQUIRE(std::int64_t(y((bi * oh + oy) * ow + ox, o)) == s);
        }
}

TEST_CASE("integer GEMM rejects bad input with the argument's name", "[integer_gemm]") {
  const auto w = random_ints<std::int8_t>(5 * 8, -128, 127, 41);
  const auto pw = quant::pack_weights(w.data(), 5, 8);
  const auto x = as_matrix(random_ints<std::uint8_t>(3 * 8, 0, 255, 42), 3, 8);
  const auto xs = as_matrix(random_ints<std::int8_t>(3 * 8, -128, 127, 42), 3, 8);
  const auto rq = quant::make_requantize_params({1e-3}, quant::grid::int_signed(8), 0,
                                                quant::requantization::fixed_point);
  SECTION("zero points off the activation grid") {
    REQUIRE_THROWS_AS(quant::integer_gemm_s32(x, 256, pw), quant::invalid_argument);
    REQUIRE_THROWS_WITH(quant::integer_gemm_s32(x, -1, pw), Catch::Contains("x_zero_point = -1"));
    REQUIRE_THROWS_WITH(quant::integer_gemm_s32(xs, 128, pw), Catch::Contains("x_zero_point = 128"));
    REQUIRE_NOTHROW(quant::integer_gemm_s32(xs, -128, pw));
  }
  SECTION("K beyond the int32 bound") {
    const std::size_t k = 65794;
    const std::vector<std::int8_t> big(k, 1);
    const auto pb = quant::pack_weights(big.data(), 1, k);
    const xt::xtensor<std::uint8_t, 2> xb = xt::zeros<std::uint8_t>({std::size_t(1), k});
    REQUIRE_THROWS_WITH(quant::integer_gemm_s32(xb, 0, pb), Catch::Contains("w.k = 65794"));
    const xt::xtensor<std::int8_t, 2> xsb = xt::zeros<std::int8_t>({std::size_t(1), k});
    REQUIRE(quant::integer_gemm_s32(xsb, 0, pb)(0, 0) == 0);  // int8 activations allow it
    const auto p4 = quant::pack_weights_int4(big.data(), 1, k);
    REQUIRE(quant::integer_gemm_s32(xb, 0, p4)(0, 0) == 0);  // int4 weights allow it
  }
  SECTION("a zero point that widens |x - z| beyond the bound") {
    const std::size_t k = 131071;
    const std::vector<std::int8_t> big(k, -128);
    const auto pb = quant::pack_weights(big.data(), 1, k);
    const xt::xtensor<std::int8_t, 2> xsb = xt::zeros<std::int8_t>({std::size_t(1), k});
    REQUIRE_NOTHROW(quant::integer_gemm_s32(xsb, 0, pb));
    REQUIRE_THROWS_WITH(quant::integer_gemm_s32(xsb, 100, pb), Catch::Contains("x_zero_point"));
  }
  SECTION("shapes and strides") {
    const auto x7 = as_matrix(random_ints<std::uint8_t>(3 * 7, 0, 255, 43), 3, 7);
    REQUIRE_THROWS_AS(quant::integer_gemm_s32(x7, 0, pw), quant::length_error);
    REQUIRE_THROWS_WITH(quant::integer_gemm_s32(x7, 0, pw), Catch::Contains("x.shape() = [3, 7]"));
    xt::xtensor<std::int32_t, 1> b4 = xt::zeros<std::int32_t>({std::size_t(4)});
    REQUIRE_THROWS_WITH(quant::integer_gemm_s32(x, 0, pw, b4), Catch::Contains("bias.size() = 4"));
    std::vector<std::int32_t> y(3 * 5);
    REQUIRE_THROWS_WITH(quant::integer_gemm_s32(x.data(), 3, 7, 0, pw, nullptr, y.data(), 5),
                        Catch::Contains("ldx = 7"));
    REQUIRE_THROWS_WITH(quant::integer_gemm_s32(x.data(), 3, 8, 0, pw, nullptr, y.data(), 4),
                        Catch::Contains("ldy = 4"));
    REQUIRE_THROWS_WITH(quant::pack_weights(w.data(), 0, 8), Catch::Contains("out = 0"));
    REQUIRE_THROWS_WITH(quant::pack_weights(w.data(), 5, 0), Catch::Contains("k = 0"));
  }
  SECTION("per-channel requantization sizes and output range") {
    const auto rq3 = quant::make_requantize_params({1e-3, 1e-3, 1e-3}, quant::grid::int_signed(8), 0,
                                                   quant::requantization::fixed_point);
    REQUIRE_THROWS_AS(quant::integer_gemm<std::int8_t>(x, 0, pw, {}, rq3), quant::length_error);
    REQUIRE_THROWS_WITH(quant::integer_gemm<std::int8_t>(x, 0, pw, {}, rq3), Catch::Contains("rq.channels() = 3"));
    REQUIRE_THROWS_WITH(quant::integer_gemm<std::uint8_t>(x, 0, pw, {}, rq), Catch::Contains("p.lo = -128"));
    REQUIRE_NOTHROW(quant::integer_gemm<std::int8_t>(x, 0, pw, {}, rq));
  }
  SECTION("weights off their grid") {
    std::vector<std::int8_t> w4(4 * 3, 1);
    w4[7] = 8;
    REQUIRE_THROWS_AS(quant::pack_weights_int4(w4.data(), 4, 3), quant::invalid_argument);
    REQUIRE_THROWS_WITH(quant::pack_weights_int4(w4.data(), 4, 3), Catch::Contains("w[2, 1] = 8"));
    REQUIRE_THROWS_WITH(quant::pack_weights_int4(std::vector<std::uint8_t>(5), 4, 3),
                        Catch::Contains("nibbles.size() = 5"));
  }
  SECTION("integer im2col") {
    quant::conv2d_shape g;
    g.channels = 2, g.height = 4, g.width = 4, g.kernel_h = 3, g.kernel_w = 3, g.pad_h = 1, g.pad_w = 1;
    const xt::xtensor<std::uint8_t, 4> img = xt::zeros<std::uint8_t>({std::size_t(1), std::size_t(2), std::size_t(4), std::size_t(4)});
    REQUIRE_THROWS_WITH(quant::im2col(img, g, 300), Catch::Contains("zero_point = 300"));
    const xt::xtensor<std::uint8_t, 4> bad = xt::zeros<std::uint8_t>({std::size_t(1), std::size_t(3), std::size_t(4), std::size_t(4)});
    REQUIRE_THROWS_AS(quant::im2col(bad, g, 0), quant::length_error);
  }
}

TEST_CASE("check_integer_gemm throws exactly what the GEMM throws, at the K and accumulator bounds",
          "[integer_gemm]") {
  // w = 127 everywhere, uint8 activations with z = 0 (|x - z| <= 255): K = 65 793 is the last
  // K the kernel takes, and then |bias| <= 2^31 - 1 - 255 * 127 * 65 793 = 16 777 342.
  const std::size_t kmax = quant::integer_gemm_max_k<std::uint8_t>(8);
  REQUIRE(kmax == 65793);
  const std::int32_t largest_bias = 2147483647 - 255 * 127 * 65793;
  REQUIRE(largest_bias == 16777342);
  // message of f(), or "" when it does not throw quant::invalid_argument
  auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const quant::invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  for (std::size_t k : {kmax, kmax + 1}) {
    const std::vector<std::int8_t> w(2 * k, 127);
    const auto pw = quant::pack_weights(w.data(), 2, k);
    const xt::xtensor<std::uint8_t, 2> x = xt::zeros<std::uint8_t>({std::size_t(1), k});
    for (std::int32_t b : {0, largest_bias, largest_bias + 1, -largest_bias, -largest_bias - 1}) {
      const xt::xtensor<std::int32_t, 1> bias = {0, b};
      INFO("K = " << k << ", bias[1] = " << b);
      const std::string want = message([&] { quant::integer_gemm_s32(x, 0, pw, bias); });
      const std::string got = message([&] { quant::check_integer_gemm<std::uint8_t>(pw, 0, bias.data(), "integer_gemm_s32"); });
      CHECK(got == want);
      const bool refused = k > kmax || b > largest_bias || b < -largest_bias;
      CHECK(got.empty() == !refused);
    }
  }
}
