// The README's usage example, compiled and run. tests/readme_snippet.cmake checks that
// the README shows exactly the lines between the BEGIN/END markers below.
#include <quant/observers.hpp>
#include <quant/ste.hpp>
#include <quant/uniform.hpp>

#include <xtensor/xrandom.hpp>

#include <catch2/catch.hpp>

TEST_CASE("README usage example", "[readme]") {
  xt::random::seed(0);
  xt::xtensor<float, 2> dy = xt::ones<float>({64, 128});
  // BEGIN README EXAMPLE
  xt::xtensor<float, 2> w = xt::random::randn<float>({64, 128}, 0.0f, 0.1f);  // weights [out, in]
  // Symmetric 4-bit grid, one scale per output channel chosen by MSE search.
  quant::qparams p = quant::calibrate_mse(w, quant::grid::int_signed(4), quant::scheme::symmetric, 0);
  xt::xtensor<float, 2> w_fq = quant::eager::fake_quantize(w, p);   // fused SIMD kernel
  auto w_int = quant::eager::quantize<std::int8_t>(w, p);           // integers for export
  xt::xtensor<float, 2> y = quant::fake_quantize(2.0f * w + 0.1f, p);  // lazy: no temporary
  xt::xtensor<float, 2> dw = quant::eager::ste_backward(w, dy, p);  // clipped STE gradient
  // END README EXAMPLE
  REQUIRE(p.size() == 64);
  for (std::size_t o = 0; o < 64; ++o) {
    const float s = p.scale(o);
    for (std::size_t i = 0; i < 128; ++i) {
      CHECK(w_fq(o, i) == static_cast<float>(w_int(o, i)) * s);
      CHECK(w_int(o, i) >= -8);
      CHECK(w_int(o, i) <= 7);
      // |w - w_fq| <= s/2 inside the grid, and the STE passes exactly there
      const bool inside = std::nearbyint(w(o, i) / s) >= -8 && std::nearbyint(w(o, i) / s) <= 7;
      if (inside) CHECK(std::fabs(w(o, i) - w_fq(o, i)) <= 0.5f * s * (1.0f + 1e-6f));
      CHECK(dw(o, i) == (inside ? 1.0f : 0.0f));
    }
  }
  xt::xtensor<float, 2> affine = 2.0f * w + 0.1f;
  CHECK((y == quant::eager::fake_quantize(affine, p)));
}
