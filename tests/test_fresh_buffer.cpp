// Large fresh outputs are advised to use huge pages (detail/fresh_buffer.hpp): the advice
// never changes what is computed and accepts any pointer and size.
#include <quant/detail/fresh_buffer.hpp>
#include <quant/reference/uniform.hpp>
#include <quant/uniform.hpp>

#include <cstdlib>
#include <vector>

#include <xtensor/xadapt.hpp>

#include "test_helpers.hpp"

using namespace quant;
using quant_test::require_bitwise_equal;

TEST_CASE("huge-page advice accepts any buffer and leaves its contents alone", "[fresh_buffer]") {
  SECTION("null, empty and small buffers") {
    detail::advise_huge_pages(nullptr, 0);
    detail::advise_huge_pages(nullptr, std::size_t(64) << 20);
    std::vector<float> small(1000, 1.5f);
    detail::advise_huge_pages(small.data(), small.size() * sizeof(float));
    std::size_t changed = 0;
    for (float v : small) changed += v != 1.5f;
    CHECK(changed == 0);
  }
  SECTION("a large buffer at an address that is not page aligned, written after the advice") {
    const std::size_t n = (std::size_t(6) << 20) / sizeof(float) + 3;
    std::vector<float> storage(n + 1);
    float* p = storage.data() + 1;
    detail::advise_huge_pages(p, n * sizeof(float));
    for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<float>(i % 1000);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < n; ++i) wrong += p[i] != static_cast<float>(i % 1000);
    CHECK(wrong == 0);
  }
}

TEST_CASE("fake_quantize into a fresh large tensor equals the caller-provided-output form and the reference",
          "[fresh_buffer][uniform]") {
  const std::size_t rows = 64, cols = (std::size_t(1) << 21) / rows + 7;  // > 8 MiB, odd row length
  const auto v = quant_test::normal_floats(rows * cols, 5);
  xt::xtensor<float, 2> x = xt::adapt(v, std::vector<std::size_t>{rows, cols});
  const qparams p = qparams::per_tensor(grid::int_signed(4), 0.11f, -1);
  const xt::xtensor<float, 2> fresh = eager::fake_quantize(x, p);
  REQUIRE(fresh.shape() == x.shape());
  xt::xtensor<float, 2> provided = xt::zeros<float>({rows, cols});
  eager::fake_quantize(x, p, provided);
  require_bitwise_equal(fresh, provided, rows * cols, "fresh vs provided");
  require_bitwise_equal(fresh, ref::fake_quantize(v, {rows, cols}, p), rows * cols, "fresh vs quant::ref");
}
