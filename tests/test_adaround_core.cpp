// The BLAS-free AdaRound core (adaround/variables.hpp and what it includes) on its own:
// this translation unit includes nothing else from quant, so it also checks that the core
// brings in neither xtensor-blas nor the GEMM helpers nor the terminal printer, and that a
// custom trainer can be written from the core and the schedule alone.
#include <quant/adaround/schedule.hpp>
#include <quant/adaround/variables.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <type_traits>
#include <vector>

#include <xtensor/xtensor.hpp>

#include <catch2/catch.hpp>

// ---- what the core must not include ------------------------------------------------------
// xtensor-blas's include guards.
#if defined(XBLAS_HPP) || defined(XLINALG_HPP)
#error "quant/adaround/variables.hpp includes xtensor-blas"
#endif

// Probes: a declaration in a namespace used by a using-directive is found by qualified lookup
// only when the enclosing namespace declares no such name itself. If the core declared
// quant::adaround_progress_printer or quant::detail::gemm_nt, the names below would resolve
// to those instead of the probes.
namespace quant {
namespace core_probe {
struct adaround_progress_printer {
  static constexpr bool probe = true;
};
}  // namespace core_probe
using namespace core_probe;
namespace detail {
namespace core_probe {
constexpr int gemm_nt = 1;
constexpr int gemm_tn = 1;
}  // namespace core_probe
using namespace core_probe;
}  // namespace detail
}  // namespace quant

namespace {
constexpr bool printer_absent = quant::adaround_progress_printer::probe;
constexpr bool gemm_absent = std::is_same<decltype(quant::detail::gemm_nt), const int>::value &&
                             std::is_same<decltype(quant::detail::gemm_tn), const int>::value;
static_assert(printer_absent, "the core declares adaround_progress_printer (iostreams)");
static_assert(gemm_absent, "the core declares the BLAS GEMM helpers");

}  // namespace

TEST_CASE("AdaRound core: the BLAS-free headers alone", "[adaround][core]") {
  using namespace quant;
  SECTION("the translation unit has no BLAS and no progress printer") {
    CHECK(printer_absent);
    CHECK(gemm_absent);
  }

  // 4-bit signed grid [-8, 7], one scale per output channel, and weights W = s (k + r) with
  // k in [-8, 6] and r in [0.1, 0.9]: every weight starts strictly between two grid points,
  // where h'(V) > 0 (at r = 0 the clamped h would have no gradient).
  const std::size_t out = 6, in = 20;
  std::vector<float> scales(out);
  for (std::size_t o = 0; o < out; ++o) scales[o] = 0.03f * static_cast<float>(o + 1);
  std::mt19937 gen(11);
  std::uniform_int_distribution<int> k_dist(-8, 6);
  std::uniform_real_distribution<float> r_dist(0.1f, 0.9f);
  xt::xtensor<float, 2> W = xt::xtensor<float, 2>::from_shape({out, in});
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t i = 0; i < in; ++i) W(o, i) = scales[o] * (static_cast<float>(k_dist(gen)) + r_dist(gen));
  const qparams p = qparams::per_channel(grid::int_signed(4), scales, std::vector<std::int32_t>(out, 0), 0);

  SECTION("the soft weight starts at W") {
    // h(V0) = W/s - floor(W/s), so s (floor(W/s) + h(V0)) = W up to float rounding.
    const adaround_variables vars(W, p);
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t i = 0; i < in; ++i) CHECK(vars.soft_weights()(o, i) == Approx(W(o, i)).margin(1e-5f * scales[o]));
  }

  SECTION("a custom trainer reaches a target rounding under the schedule") {
    // Target: round up or down by a seeded coin, q* = clamp(floor(W/s) + u, -8, 7); loss
    // ||W_soft - s q*||^2, whose minimum is h = u. The loop takes lambda and beta from an
    // adaround_schedule as adaround_layer does; the hard rounding must end at q*.
    std::mt19937 g(5);
    xt::xtensor<std::int32_t, 2> target = xt::xtensor<std::int32_t, 2>::from_shape({out, in});
    xt::xtensor<float, 2> w_target = xt::xtensor<float, 2>::from_shape({out, in});
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t i = 0; i < in; ++i) {
        const float base = std::floor(W(o, i) * (1.0f / scales[o]));
        const float q = std::min(7.0f, std::max(-8.0f, base + static_cast<float>(g() & 1u)));
        target(o, i) = static_cast<std::int32_t>(q);
        w_target(o, i) = scales[o] * q;
      }
    adaround_variables vars(W, p, 0.05f);
    adaround_schedule sched;  // warm-up 0.2, beta 20 -> 2 linear
    const std::size_t n = 600;
    for (std::size_t k = 0; k < n; ++k) {
      for (std::size_t e = 0; e < W.size(); ++e)
        vars.gradient().data()[e] = 2.0f * (vars.soft_weights().data()[e] - w_target.data()[e]);
      vars.step(sched.in_warmup(k, n) ? 0.0f : 0.01f, sched.beta_at(k, n));
    }
    CHECK(vars.steps() == n);
    const auto q = vars.integer_weights();
    const auto wq = vars.hard_weights();
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t i = 0; i < in; ++i) {
        CHECK(q(o, i) == target(o, i));
        CHECK(wq(o, i) == scales[o] * static_cast<float>(target(o, i)));
      }
    CHECK(vars.non_binary_fraction() == 0.0);
  }
}
