#include <quant/export.hpp>
#include <quant/reference/uniform.hpp>

#include <xtensor/xadapt.hpp>

#include "test_helpers.hpp"

using namespace quant;

TEST_CASE("int4 nibble order: element 2k low, 2k+1 high, two's complement", "[export]") {
  const std::vector<std::int8_t> q = {1, 2, -1, -8, 7, 0, 3};
  const auto b = pack_int4(q, grid::int_signed(4));
  REQUIRE(b.size() == 4);
  CHECK(b[0] == 0x21);  // 1 low, 2 high
  CHECK(b[1] == 0x8F);  // -1 -> 0xF low, -8 -> 0x8 high
  CHECK(b[2] == 0x07);  // 7 low, 0 high
  CHECK(b[3] == 0x03);  // odd length: high nibble padded with 0
  CHECK(unpack_int4(b, q.size(), true) == q);
  const std::vector<std::int8_t> u = {15, 0, 9, 12};
  const auto bu = pack_int4(u, grid::int_unsigned(4));
  CHECK(bu == std::vector<std::uint8_t>{0x0F, 0xC9});
  CHECK(unpack_int4(bu, u.size(), false) == u);
}

TEST_CASE("int4 pack / unpack round-trips every grid value and length", "[export]") {
  for (grid g : {grid::int_signed(4), grid::int_unsigned(4), grid::int_signed(4, true), grid::int_signed(2),
                 grid::int_unsigned(3), grid::int_unsigned(4, true)}) {
    for (std::size_t n : quant_test::edge_sizes()) {
      std::vector<std::int8_t> q(n);
      for (std::size_t i = 0; i < n; ++i)
        q[i] = static_cast<std::int8_t>(g.qmin() + static_cast<int>((i * 7) % static_cast<std::size_t>(g.levels())));
      const auto b = pack_int4(q, g);
      REQUIRE(b.size() == (n + 1) / 2);
      REQUIRE(unpack_int4(b, n, g.is_signed) == q);
    }
  }
}

TEST_CASE("export_int4 keeps the parameters; dequantize equals fake_quantize", "[export]") {
  const std::vector<std::size_t> shape = {6, 33};
  auto x = quant_test::normal_floats(6 * 33, 5, 2.0f);
  xt::xarray<float> xa = xt::adapt(x, shape);
  std::vector<float> s(6);
  std::vector<std::int32_t> z(6);
  for (std::size_t c = 0; c < 6; ++c) {
    s[c] = 0.1f + 0.05f * static_cast<float>(c);
    z[c] = static_cast<std::int32_t>(c) - 3;
  }
  const qparams p = qparams::per_channel(grid::int_signed(4), s, z, 0);
  const auto t = eager::export_int4(xa, p);
  CHECK(t.shape == shape);
  CHECK(t.size() == x.size());
  CHECK(t.bytes.size() == (x.size() + 1) / 2);
  CHECK(t.params.scales() == s);
  CHECK(t.params.zero_points() == z);
  const auto q = unpack(t);
  const auto want = ref::quantize(x, shape, p);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(static_cast<std::int32_t>(q.flat(i)) == want[i]);
  quant_test::require_bitwise_equal(dequantize(t), eager::fake_quantize(xa, p), x.size(), "dequantize(int4)");
  // per-group (g = 11 along the rows): the LLM weight layout
  std::vector<float> gs(6 * 3);
  for (std::size_t k = 0; k < gs.size(); ++k) gs[k] = 0.05f * static_cast<float>(k + 1);
  const qparams pg = qparams::per_group(grid::int_unsigned(4), gs, std::vector<std::int32_t>(gs.size(), 8), 1, 11);
  const auto tg = eager::export_int4(xa, pg);
  quant_test::require_bitwise_equal(dequantize(tg), eager::fake_quantize(xa, pg), x.size(), "per-group int4");
}

TEST_CASE("export int8 / uint8 with their scales and zero points", "[export]") {
  auto x = quant_test::normal_floats(1003, 6, 3.0f);
  xt::xarray<float> xa = xt::adapt(x, std::vector<std::size_t>{1003});
  const qparams ps = qparams::per_tensor(grid::int_signed(8), 0.03f, -5);
  const auto t8 = eager::export_int<std::int8_t>(xa, ps);
  CHECK(t8.params.scale() == 0.03f);
  CHECK(t8.params.zero_point() == -5);
  const auto want = ref::quantize(x, {1003}, ps);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(static_cast<std::int32_t>(t8.values(i)) == want[i]);
  quant_test::require_bitwise_equal(dequantize(t8), eager::fake_quantize(xa, ps), x.size(), "int8");
  const qparams pu = qparams::per_tensor(grid::int_unsigned(8), 0.03f, 128);
  const auto tu = eager::export_int<std::uint8_t>(xa, pu);
  quant_test::require_bitwise_equal(dequantize(tu), eager::fake_quantize(xa, pu), x.size(), "uint8");
  CHECK_THROWS_AS(eager::export_int<std::int8_t>(xa, pu), quant::invalid_argument);  // [0, 255] does not fit
}

TEST_CASE("export validates grids and values", "[export][errors]") {
  xt::xarray<float> x = {0.5f, 1.0f};
  const qparams p8 = qparams::per_tensor(grid::int_signed(8), 0.1f);
  CHECK_THROWS_AS(eager::export_int4(x, p8), quant::invalid_argument);
  CHECK_THROWS_WITH(eager::export_int4(x, p8), Catch::Contains("export_int4") && Catch::Contains("bits = 8"));
  const std::vector<std::int8_t> q = {1, 8};
  CHECK_THROWS_WITH(pack_int4(q, grid::int_signed(4)), Catch::Contains("q[1] = 8"));
  CHECK_THROWS_AS(pack_int4(q, grid::int_signed(5)), quant::invalid_argument);
  CHECK_THROWS_AS(pack_int4(std::vector<std::int8_t>{-1}, grid::int_unsigned(4)), quant::invalid_argument);
  CHECK_THROWS_AS(unpack_int4(std::vector<std::uint8_t>{0, 0}, 5, true), quant::length_error);
  xt::xarray<float> nan = {std::nanf("")};
  CHECK_THROWS_AS(eager::export_int4(nan, qparams::per_tensor(grid::int_signed(4), 0.1f)), quant::domain_error);
  CHECK(pack_int4(std::vector<std::int8_t>{}, grid::int_signed(4)).empty());
}
