// The clamp-first fake-quant body (detail/affine_run.hpp) and the x86 shortcuts it uses
// (simd::nearest_even, simd::clamp_nan, the AVX-512 bounded rounding) against the
// reference formulation on the values where shortcuts go wrong: exact ties, signed
// zeros, values just inside and outside the grid, NaN, infinities, huge magnitudes.
#include <quant/reference/uniform.hpp>
#include <quant/uniform.hpp>

#include <cfloat>
#include <limits>

#include <xtensor/xadapt.hpp>
#include <xtensor/xview.hpp>

#include "test_helpers.hpp"

using namespace quant;
using quant_test::bits_of;
using quant_test::require_bitwise_equal;

namespace {

// Hard inputs for scale s, zero point z on grid g.
std::vector<float> hard_values(float s, std::int32_t z, const grid& g) {
  std::vector<float> v = {0.0f, -0.0f, std::nanf(""), -std::nanf(""), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(), FLT_MAX, -FLT_MAX, 1e30f, -1e30f,
                          FLT_MIN, -FLT_MIN, 1e-40f, -1e-40f};
  for (int k = -300; k <= 300; ++k) {
    const float t = (static_cast<float>(k) + 0.5f) * s;  // ties (exact when s is a power of two)
    v.push_back(t);
    v.push_back(std::nextafter(t, 0.0f));
    v.push_back(std::nextafter(t, 1e9f));
    v.push_back(static_cast<float>(k) * s);
    v.push_back(-0.3f * s * static_cast<float>(k % 3));  // small negatives round to zero
  }
  for (float q : {static_cast<float>(g.qmin() - z), static_cast<float>(g.qmax() - z)})
    for (float d : {-1.5f, -1.0f, -0.5f, -0.25f, 0.0f, 0.25f, 0.5f, 1.0f, 1.5f}) v.push_back((q + d) * s);
  for (float big : {8388607.5f, 8388608.0f, 16777216.0f, 4194303.5f, 2147483648.0f})
    v.push_back(big * s), v.push_back(-big * s);
  return v;
}

template <class Round, class Convention = pytorch_convention>
void check_policy(rounding_mode mode, const qparams& p) {
  const bool aimet = Convention::clamp_input_first;
  const auto x = hard_values(p.scale(), p.zero_point(), p.grid());
  const std::size_t n = x.size();
  const auto want = ref::fake_quantize(x, {n}, p, mode, aimet, 5);
  const auto plan = detail::make_segment_plan(std::vector<std::size_t>{n}, p, "test");
  const Round r = [] {
    if constexpr (Round::is_stochastic)
      return Round{5};
    else
      return Round{};
  }();
  std::vector<float> y(n), ys(n);
  kernels::fake_quantize<simd::default_arch, Round, Convention>(x.data(), y.data(), plan, r);
  kernels::fake_quantize<simd::scalar, Round, Convention>(x.data(), ys.data(), plan, r);
  const std::string what = std::string(Round::name()) + "/" + Convention::name();
  require_bitwise_equal(y, want, n, what + " SIMD");
  require_bitwise_equal(ys, want, n, what + " scalar");
  if constexpr (!Round::is_stochastic) {
    if constexpr (std::is_same<Convention, pytorch_convention>::value) {
      xt::xarray<float> lazy = fake_quantize<Round>(xt::adapt(x, std::vector<std::size_t>{n}), p.scale(),
                                                    p.zero_point(), p.grid());
      require_bitwise_equal(lazy, want, n, what + " lazy");
    }
  }
  // integer quantize, NaN left out (it throws)
  std::vector<float> finite;
  for (float v : x)
    if (v == v) finite.push_back(v);
  const auto qwant = ref::quantize(finite, {finite.size()}, p, mode, aimet, 5);
  const auto fplan = detail::make_segment_plan(std::vector<std::size_t>{finite.size()}, p, "test");
  std::vector<std::int32_t> q(finite.size());
  CHECK(kernels::quantize<std::int32_t, simd::default_arch, Round, Convention>(finite.data(), q.data(), fplan, r) == 0);
  for (std::size_t i = 0; i < q.size(); ++i) {
    if (q[i] != qwant[i]) {
      INFO(what << " quantize of " << finite[i] << ": got " << q[i] << " want " << qwant[i]);
      REQUIRE(q[i] == qwant[i]);
    }
  }
}

void check_all(const qparams& p) {
  check_policy<round_half_to_even>(rounding_mode::half_to_even, p);
  check_policy<round_half_away_from_zero>(rounding_mode::half_away_from_zero, p);
  check_policy<round_half_up>(rounding_mode::half_up, p);
  check_policy<round_floor>(rounding_mode::floor, p);
  check_policy<round_ceil>(rounding_mode::ceil, p);
  check_policy<round_toward_zero>(rounding_mode::toward_zero, p);
  check_policy<round_stochastic>(rounding_mode::stochastic, p);
  check_policy<round_half_away_from_zero, aimet_convention>(rounding_mode::half_away_from_zero, p);
  check_policy<round_half_to_even, aimet_convention>(rounding_mode::half_to_even, p);
}

}  // namespace

TEST_CASE("clamp-first fake-quant equals the reference on ties, zeros, bounds, NaN, inf", "[uniform][rounding]") {
  check_all(qparams::per_tensor(grid::int_signed(8), 0.25f, 0));
  check_all(qparams::per_tensor(grid::int_signed(8), 0.125f, -7));
  check_all(qparams::per_tensor(grid::int_unsigned(8), 0.5f, 128));
  check_all(qparams::per_tensor(grid::int_unsigned(4, true), 1.0f, 3));
  check_all(qparams::per_tensor(grid::int_signed(16), 1.0f / 1024.0f, 1000));
  check_all(qparams::per_tensor(grid::int_unsigned(16), 0.03f, 65535));
  check_all(qparams::per_tensor(grid::int_signed(2), 3.0f, 1));
}

TEST_CASE("x86 rounding and clamping shortcuts equal the generic bodies", "[simd][rounding]") {
  using A = simd::default_arch;
  using P = simd::pack<float, A>;
  constexpr std::size_t L = simd::lanes<float, A>;
  auto x = hard_values(1.0f, 0, grid::int_signed(16));
  for (float v : quant_test::normal_floats(2000, 4, 100.0f)) x.push_back(v);
  while (x.size() % L) x.push_back(0.5f);
  for (std::size_t i = 0; i < x.size(); i += L) {
    const P v = simd::load<A>(x.data() + i);
    alignas(64) float got[L];
    simd::store(got, round_half_to_even::apply(v));
    alignas(64) float clamped[L];
    simd::store(clamped, detail::clamp_nan(v, P(-3.0f), P(0.0f)));
    for (std::size_t j = 0; j < L; ++j) {
      // generic forms on single floats (the scalar path never takes a shortcut)
      const float r = round_half_to_even::apply(x[i + j]);
      const float c = simd::clamp(x[i + j], -3.0f, 0.0f);
      INFO("x = " << x[i + j]);
      CHECK(((r != r && got[j] != got[j]) || bits_of(r) == bits_of(got[j])));
      CHECK(((c != c && clamped[j] != clamped[j]) || bits_of(c) == bits_of(clamped[j])));
    }
  }
}

TEST_CASE("eager fake-quant reads views and adaptors in place and handles overlap", "[uniform]") {
  const grid g = grid::int_signed(8);
  const qparams p = qparams::per_tensor(g, 0.05f, 1);
  const std::size_t n = 1003;
  auto x = quant_test::normal_floats(n, 8, 3.0f);
  const auto want = ref::fake_quantize(x, {n}, p);
  // adaptor over a std::vector and a row view of a matrix
  require_bitwise_equal(eager::fake_quantize(xt::adapt(x, std::vector<std::size_t>{n}), p), want, n, "adaptor");
  xt::xtensor<float, 2> m = xt::zeros<float>({std::size_t(3), n});
  std::copy(x.begin(), x.end(), m.begin() + n);
  require_bitwise_equal(eager::fake_quantize(xt::view(m, 1, xt::all()), p), want, n, "row view");
  // a strided (column) view is copied first
  xt::xtensor<float, 2> mt = xt::transpose(m);
  require_bitwise_equal(eager::fake_quantize(xt::view(mt, xt::all(), 1), p), want, n, "column view");
  // in place
  xt::xtensor<float, 1> inplace = xt::adapt(x, std::array<std::size_t, 1>{n});
  eager::fake_quantize(inplace, p, inplace);
  require_bitwise_equal(inplace, want, n, "in place");
  // input = a view into the output, which must be resized: read before it is freed
  xt::xtensor<float, 1> buf = xt::zeros<float>({n + 1});
  std::copy(x.begin(), x.end(), buf.begin() + 1);
  eager::fake_quantize(xt::view(buf, xt::range(1, n + 1)), p, buf);
  REQUIRE(buf.size() == n);
  require_bitwise_equal(buf, want, n, "view into the output");
}

TEST_CASE("lazy entry points reject per-group parameters and name the eager form", "[uniform][errors]") {
  const xt::xarray<float> x = xt::zeros<float>({4, 8});
  const qparams pg = qparams::per_group(grid::int_signed(8), std::vector<float>(8, 0.1f),
                                        std::vector<std::int32_t>(8, 0), 1, 4);
  CHECK_THROWS_AS(fake_quantize(x, pg), quant::invalid_argument);
  CHECK_THROWS_WITH(fake_quantize(x, pg), Catch::Contains("granularity") && Catch::Contains("quant::eager::"));
  CHECK_THROWS_AS(quantize<std::int8_t>(x, pg), quant::invalid_argument);
  // the eager form takes them
  CHECK(eager::fake_quantize(x, pg).size() == x.size());
}
