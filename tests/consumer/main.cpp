// What a user writes first: fake-quantize a tensor with int8 per-tensor parameters.
#include <quant/uniform.hpp>

#include <cstdio>

#include <xtensor/xtensor.hpp>

int main() {
  const xt::xtensor<float, 1> x = {-1.0f, -0.26f, 0.0f, 0.1f, 0.125f, 0.3f, 5.0f};
  const auto p = quant::qparams::per_tensor(quant::grid::int_signed(8), 0.25f, 0);
  const auto y = quant::eager::fake_quantize(x, p);
  // x / 0.25 rounded half to even, clamped to [-128, 127], times 0.25
  const xt::xtensor<float, 1> want = {-1.0f, -0.25f, 0.0f, 0.0f, 0.0f, 0.25f, 5.0f};
  if (!(y == want)) {
    std::printf("consumer: unexpected fake_quantize result\n");
    return 1;
  }
  std::printf("consumer: quant %d.%d.%d fake_quantize ok\n", quant::version.major, quant::version.minor,
              quant::version.patch);
  return 0;
}
