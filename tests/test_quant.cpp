// The umbrella header compiles on its own and exposes every concept.
#include <quant/quant.hpp>

#include <catch2/catch.hpp>

TEST_CASE("umbrella header exposes the library", "[quant]") {
  const quant::qparams p = quant::qparams::per_tensor(quant::grid::int_signed(8), 0.5f, 0);
  xt::xarray<float> x = {0.26f, -0.74f, 100.0f};
  xt::xarray<float> y = quant::eager::fake_quantize(x, p);
  CHECK(y(0) == 0.5f);
  CHECK(y(1) == -0.5f);
  CHECK(y(2) == 63.5f);
  CHECK(quant::version.major == QUANT_VERSION_MAJOR);
  quant::set_num_threads(1);
  CHECK(quant::num_threads() == 1);
  quant::set_num_threads(0);
  int pieces = 0;
  quant::parallel_for(3, 0, [&](std::size_t t) { pieces += static_cast<int>(t) + 1; });
  CHECK(pieces == 6);
}
