// Tensors past 2^31 elements: quantize, dequantize, fake-quantize, the min-max observer and
// the integer export (int8 and packed int4) on 2^31 + 17 elements, checked against the
// scalar reference (quant::ref, 64-bit indices throughout) at the start and from 100
// elements before index 2^31 to the end, where a 32-bit index (int or a wrapped unsigned)
// would read, write or key the random stream of the wrong element. The data are a hash of
// the full 64-bit index, the extremes sit past 2^31, and stochastic rounding keys on the
// element index, so an index truncated anywhere changes a checked value.
//
// Memory: one float tensor of 8 GiB plus at most 3 GiB of integers at a time (12.0 GiB
// resident at peak). Built by every test build, registered with ctest (label `large`)
// only when QUANT_LARGE_TESTS=ON; scripts/run-large-tests.sh builds and runs it.
#include <quant/export.hpp>
#include <quant/observers.hpp>
#include <quant/reference/observers.hpp>
#include <quant/reference/uniform.hpp>
#include <quant/uniform.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include <catch2/catch.hpp>
#include <xtensor/xadapt.hpp>
#include <xtensor/xtensor.hpp>

using namespace quant;

namespace {

constexpr std::size_t two31 = std::size_t(1) << 31;
constexpr std::size_t n = two31 + 17;
constexpr std::size_t channels = 5, inner = 429496733;  // [5, inner]: channel 4 spans index 2^31
static_assert(channels * inner == n, "shape of the per-channel view");

// A value in about [-3, 3) from all 64 bits of the index (splitmix64 finaliser).
inline float value_at(std::size_t i) noexcept {
  std::uint64_t z = static_cast<std::uint64_t>(i) + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(static_cast<std::int64_t>(z >> 40) - (std::int64_t(1) << 23)) * 0x1p-23f * 3.0f;
}

// The elements every check looks at: the first 100, and from 2^31 - 100 to the last one
// (2^31 lies 17 elements before the end).
std::vector<std::size_t> checked_indices() {
  std::vector<std::size_t> idx;
  for (std::size_t i = 0; i < 100; ++i) idx.push_back(i);
  for (std::size_t i = two31 - 100; i < n; ++i) idx.push_back(i);
  return idx;
}

// Planted values: the extremes lie past 2^31 (a min-max over the first 2^31 elements
// misses them), and exact ties of the per-tensor grid sit on both sides of 2^31.
constexpr float scale = 0.03125f;  // 2^-5: inv_s = 32 exactly, so k + 1/2 ties are exact
constexpr std::size_t max_at = two31 + 3, min_at = n - 1;
constexpr float planted_max = 7.25f, planted_min = -6.5f;

void fill(float* x) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (long long i = 0; i < static_cast<long long>(n); ++i) x[i] = value_at(static_cast<std::size_t>(i));
  x[max_at] = planted_max;
  x[min_at] = planted_min;
  for (std::size_t i : {two31 - 2, two31, two31 + 1, n - 2})
    x[i] = (static_cast<float>(static_cast<int>(i % 7)) + 0.5f) * scale;  // k + 1/2 on the grid
}

}  // namespace

TEST_CASE("tensors of 2^31 + 17 elements: every element index is 64-bit", "[large]") {
  const std::vector<std::size_t> idx = checked_indices();
  const std::vector<std::size_t> shape1{n}, shape2{channels, inner};
  const grid s8 = grid::int_signed(8), s4 = grid::int_signed(4);
  const qparams per_tensor = qparams::per_tensor(s8, scale, 3);
  const qparams per_channel = qparams::per_channel(s4, {0.5f, 0.375f, 0.75f, 1.25f, 0.4f}, {0, -1, 2, 0, 1}, 0);
  const std::uint64_t seed = 0xfeedbeefcafeull;

  auto x = xt::xtensor<float, 1>::from_shape({n});
  fill(x.data());
  std::vector<float> x_at(idx.size());  // the inputs at the checked indices, kept for later
  for (std::size_t k = 0; k < idx.size(); ++k) x_at[k] = x(idx[k]);
  auto x2 = xt::adapt(x.data(), n, xt::no_ownership(), std::array<std::size_t, 2>{channels, inner});

  // reference integer of element e (64-bit index e: also the stochastic stream's counter)
  auto ref_q = [&](float v, const std::vector<std::size_t>& shape, const qparams& p, std::size_t e,
                   rounding_mode mode) {
    return ref::to_grid(v, ref::element_params(shape, p, e), mode, false, seed, e);
  };

  SECTION("min-max observer: per tensor and per channel, extremes past 2^31") {
    const ref::range r = ref::min_max(x.data(), n);
    REQUIRE(r.max == planted_max);
    REQUIRE(r.min == planted_min);
    minmax_observer whole;
    whole.update(x);
    const qparams pt = whole.compute(grid::int_unsigned(8), scheme::asymmetric);
    const scale_zero_point expect = scale_from_range(grid::int_unsigned(8), r.min, r.max, scheme::asymmetric);
    CHECK(pt.scales()[0] == expect.scale);
    CHECK(pt.zero_points()[0] == expect.zero_point);

    std::vector<float> lo(channels), hi(channels);
    for (std::size_t c = 0; c < channels; ++c) {
      const ref::range rc = ref::min_max(x.data() + c * inner, inner);
      lo[c] = rc.min;
      hi[c] = rc.max;
    }
    minmax_observer per_channel_observer(std::ptrdiff_t(0));
    per_channel_observer.update(x2);
    const qparams pc = per_channel_observer.compute(grid::int_unsigned(8), scheme::asymmetric);
    for (std::size_t c = 0; c < channels; ++c) {
      INFO("channel " << c);
      const scale_zero_point e = scale_from_range(grid::int_unsigned(8), lo[c], hi[c], scheme::asymmetric);
      CHECK(pc.scales()[c] == e.scale);
      CHECK(pc.zero_points()[c] == e.zero_point);
    }
    CHECK(hi[max_at / inner] == planted_max);
    CHECK(lo[min_at / inner] == planted_min);
  }

  SECTION("quantize to 2^31 + 17 int8 values, export, dequantize; fake-quantize in place") {
    {  // per tensor, half to even, and per channel with stochastic rounding
      const auto q = eager::quantize<std::int8_t>(x, per_tensor);
      REQUIRE(q.size() == n);
      for (std::size_t k = 0; k < idx.size(); ++k) {
        INFO("element " << idx[k]);
        CHECK(q(idx[k]) == ref_q(x_at[k], shape1, per_tensor, idx[k], rounding_mode::half_to_even));
      }
    }
    {
      const auto q = eager::quantize<std::int8_t>(x2, per_channel, round_stochastic{seed});
      REQUIRE(q.size() == n);
      for (std::size_t k = 0; k < idx.size(); ++k) {
        INFO("element " << idx[k]);
        CHECK(q.data()[idx[k]] == ref_q(x_at[k], shape2, per_channel, idx[k], rounding_mode::stochastic));
      }
    }
    {  // packed int4: element e in byte e / 2, low nibble for even e, two's complement
      const packed_int4 t = eager::export_int4(x2, per_channel);
      REQUIRE(t.bytes.size() == (n + 1) / 2);
      for (std::size_t k = 0; k < idx.size(); ++k) {
        INFO("element " << idx[k]);
        const std::size_t e = idx[k];
        const int nib = (t.bytes[e / 2] >> ((e % 2) * 4)) & 0xF;
        CHECK((nib >= 8 ? nib - 16 : nib) == ref_q(x_at[k], shape2, per_channel, e, rounding_mode::half_to_even));
      }
      CHECK((t.bytes.back() >> 4) == 0);  // n is odd: the last high nibble stays 0
    }
    quantized_tensor<std::int8_t> t = eager::export_int<std::int8_t>(x, per_tensor);
    REQUIRE(t.values.size() == n);
    CHECK(t.params.scales() == per_tensor.scales());
    for (std::size_t k = 0; k < idx.size(); ++k) {
      INFO("element " << idx[k]);
      CHECK(t.values(idx[k]) == ref_q(x_at[k], shape1, per_tensor, idx[k], rounding_mode::half_to_even));
    }

    eager::fake_quantize(x, per_tensor, x);  // in place (out may alias x)
    for (std::size_t k = 0; k < idx.size(); ++k) {
      INFO("element " << idx[k]);
      const float qr = ref_q(x_at[k], shape1, per_tensor, idx[k], rounding_mode::half_to_even);
      CHECK(x(idx[k]) == (qr - 3.0f) * scale);
    }
    x = xt::xtensor<float, 1>();  // free 8 GiB before dequantize allocates its own

    const auto y = eager::dequantize(t.values, per_tensor);
    REQUIRE(y.size() == n);
    for (std::size_t k = 0; k < idx.size(); ++k) {
      INFO("element " << idx[k]);
      CHECK(y(idx[k]) == static_cast<float>(t.values(idx[k]) - 3) * scale);
      CHECK(y(idx[k]) == (ref_q(x_at[k], shape1, per_tensor, idx[k], rounding_mode::half_to_even) - 3.0f) * scale);
    }
  }
}
