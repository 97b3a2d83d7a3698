#include <quant/lsq.hpp>
#include <quant/reference/lsq.hpp>

#include <algorithm>
#include <type_traits>

#include <xtensor/xadapt.hpp>

#include "test_helpers.hpp"
#include "torch_golden.hpp"

using namespace quant;
using quant_test::require_bitwise_equal;

namespace {

// |got - want| within the error bound of the kernel's compensated sums (a few ulp of
// g * sum|terms|) plus the final rounding to float.
void require_sum_close(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& abs,
                       const std::string& what) {
  REQUIRE(got.size() == want.size());
  for (std::size_t j = 0; j < got.size(); ++j) {
    const double tol = 8.0 * std::ldexp(abs[j], -24) + std::ldexp(std::fabs(want[j]), -23) + 1e-30;
    INFO(what << " [" << j << "]: got " << got[j] << " want " << want[j] << " tol " << tol);
    REQUIRE(std::fabs(static_cast<double>(got[j]) - want[j]) <= tol);
  }
}

lsq_params make_params(grid g, std::vector<float> s, std::vector<float> off, std::optional<std::ptrdiff_t> axis,
                       lsq_convention c = lsq_convention::paper) {
  lsq_params p;
  p.grid = g;
  p.scale = std::move(s);
  p.offset = std::move(off);
  p.channel_axis = axis;
  p.convention = c;
  return p;
}

// Kernel (default arch via eager, and the scalar instantiation) against ref::lsq.
void check_against_reference(const std::vector<float>& x, const std::vector<float>& dy,
                             const std::vector<std::size_t>& shape, const lsq_params& p, const std::string& what) {
  const auto want = ref::lsq(x, dy, shape, p);
  auto xa = xt::adapt(x, shape);
  auto da = xt::adapt(dy, shape);
  const std::size_t n = x.size();
  require_bitwise_equal(eager::lsq_forward(xa, p), want.y, n, what + " forward");
  const auto r = eager::lsq_forward_backward(xa, da, p);
  require_bitwise_equal(r.y, want.y, n, what + " fused y");
  require_bitwise_equal(r.dx, want.dx, n, what + " fused dx");
  require_sum_close(r.dscale, want.dscale, want.dscale_abs, what + " dscale");
  REQUIRE(r.doffset.size() == want.doffset.size());
  if (!want.doffset.empty()) require_sum_close(r.doffset, want.doffset, want.doffset_abs, what + " doffset");
  const auto b = eager::lsq_backward(xa, da, p);
  require_bitwise_equal(b.dx, want.dx, n, what + " backward dx");
  CHECK(b.dscale == r.dscale);
  CHECK(b.doffset == r.doffset);
  // the scalar instantiation of the same kernel
  const auto plan = detail::make_lsq_plan(shape, p, "test");
  std::vector<float> ys(n), dxs(n);
  std::vector<double> sds(p.scale.size()), sout(p.scale.size());
  detail::lsq_backward_dispatch<simd::scalar>(x.data(), dy.data(), ys.data(), dxs.data(), plan, p.convention,
                                              sds.data(), sout.data());
  require_bitwise_equal(ys, want.y, n, what + " scalar y");
  require_bitwise_equal(dxs, want.dx, n, what + " scalar dx");
  const auto fin = detail::finish_lsq_gradients(p, n, sds, sout);
  require_sum_close(fin.dscale, want.dscale, want.dscale_abs, what + " scalar dscale");
}

}  // namespace

TEST_CASE("LSQ / LSQ+ fused kernel matches the reference, every size and alignment", "[lsq]") {
  for (auto conv : {lsq_convention::paper, lsq_convention::pytorch}) {
    for (bool with_offset : {false, true}) {
      for (std::size_t n : quant_test::edge_sizes()) {
        for (std::size_t offset = 0; offset < 16; ++offset) {
          auto xb = quant_test::normal_floats(n + 32, 11 + static_cast<std::uint32_t>(n), 1.5f);
          auto gb = quant_test::normal_floats(n + 32, 12 + static_cast<std::uint32_t>(n));
          auto ties = quant_test::tie_floats(n + 32, 0.125f, 12);
          for (std::size_t i = 0; i < xb.size(); i += 3) xb[i] = ties[i];
          // x and dy where they lie in xb / gb: offset floats past a 64-byte boundary (dy elsewhere)
          const float* xp = quant_test::at_misalignment(xb, offset);
          const float* gp = quant_test::at_misalignment(gb, (offset + 5) % 16);
          const std::vector<float> x(xp, xp + n), dy(gp, gp + n);
          const lsq_params p = make_params(grid::int_signed(4), {0.125f},
                                           with_offset ? std::vector<float>{conv == lsq_convention::paper ? 0.3f : 2.0f}
                                                       : std::vector<float>{},
                                           std::nullopt, conv);
          const std::string what = std::string(conv == lsq_convention::paper ? "paper" : "pytorch") +
                                   (with_offset ? "+offset" : "") + " n=" + std::to_string(n) + " offset " +
                                   std::to_string(offset);
          check_against_reference(x, dy, {n}, p, what);
          // The same data where it lies in xb / gb, through the eager entry point (adaptors
          // read in place) and the SIMD kernel, with outputs misaligned differently.
          const auto want = ref::lsq(x, dy, {n}, p);
          const std::vector<std::size_t> shape{n};
          const auto r = eager::lsq_forward_backward(xt::adapt(xp, n, xt::no_ownership(), shape),
                                                     xt::adapt(gp, n, xt::no_ownership(), shape), p);
          require_bitwise_equal(r.y, want.y, n, what + " eager y, misaligned");
          require_bitwise_equal(r.dx, want.dx, n, what + " eager dx, misaligned");
          const auto plan = detail::make_lsq_plan(shape, p, "test");
          std::vector<float> yb(n + 32), dxb(n + 32);
          float* yp = quant_test::at_misalignment(yb, (offset + 1) % 16);
          float* dxp = quant_test::at_misalignment(dxb, (offset + 2) % 16);
          std::vector<double> sds(1), sout(1);
          detail::lsq_backward_dispatch<simd::default_arch>(xp, gp, yp, dxp, plan, p.convention, sds.data(),
                                                            sout.data());
          require_bitwise_equal(yp, want.y, n, what + " SIMD kernel y, misaligned");
          require_bitwise_equal(dxp, want.dx, n, what + " SIMD kernel dx, misaligned");
          const auto fin = detail::finish_lsq_gradients(p, n, sds, sout);
          require_sum_close(fin.dscale, want.dscale, want.dscale_abs, what + " SIMD kernel dscale, misaligned");
        }
      }
    }
  }
}

TEST_CASE("LSQ per channel: scalar runs, vector runs, every axis", "[lsq]") {
  for (auto conv : {lsq_convention::paper, lsq_convention::pytorch}) {
    for (const auto& shape : {std::vector<std::size_t>{3, 8, 70}, std::vector<std::size_t>{5, 3, 7},
                              std::vector<std::size_t>{2000, 3}}) {
      std::size_t n = 1;
      for (auto d : shape) n *= d;
      auto x = quant_test::normal_floats(n, 21, 1.0f);
      auto dy = quant_test::normal_floats(n, 22);
      for (std::ptrdiff_t axis = -1; axis < static_cast<std::ptrdiff_t>(shape.size()); ++axis) {
        const std::size_t ax = static_cast<std::size_t>(axis < 0 ? axis + static_cast<std::ptrdiff_t>(shape.size()) : axis);
        std::vector<float> s(shape[ax]), off(shape[ax]);
        for (std::size_t c = 0; c < s.size(); ++c) {
          s[c] = 0.04f + 0.02f * static_cast<float>(c % 7);
          off[c] = conv == lsq_convention::paper ? 0.1f * static_cast<float>(c % 3) - 0.1f
                                                 : static_cast<float>(c % 5) - 2.0f + 0.25f;
        }
        for (bool with_offset : {false, true}) {
          const lsq_params p = make_params(grid::int_unsigned(4), s, with_offset ? off : std::vector<float>{}, axis, conv);
          check_against_reference(x, dy, shape, p,
                                  "shape " + detail::shape_string(shape) + " axis " + std::to_string(axis));
        }
      }
    }
  }
}

// ---- finite differences in double ----------------------------------------------------
namespace {

// The straight-through surrogate whose exact derivatives are the LSQ gradients: with the
// region (inside/below/above) and the rounding residual r = round(v) - v frozen at the
// base point, x_tilde is smooth in (x, s, offset):
//   paper:   inside (v + r) s + beta, outside q_end s + beta,        v = (x - beta) / s
//   pytorch: inside (v + r - z) s,    outside (q_end - z) s,         v = z + x / s
struct frozen_element {
  int region;  // 0 inside, -1 below, +1 above
  double r;
};

std::vector<frozen_element> freeze(const std::vector<double>& x, const std::vector<std::size_t>& shape,
                                   const lsq_params& p, const std::vector<double>& s, const std::vector<double>& off) {
  const double qmin = p.grid.qmin(), qmax = p.grid.qmax();
  std::vector<frozen_element> f(x.size());
  for (std::size_t e = 0; e < x.size(); ++e) {
    const std::size_t j = ref::lsq_param_index(shape, p, e);
    const bool torch = p.convention == lsq_convention::pytorch;
    const double v = torch ? off[j] + x[e] / s[j] : (x[e] - off[j]) / s[j];
    const double q = std::nearbyint(v);
    const double lo = torch ? qmin - 0.5 : qmin, hi = torch ? qmax + 0.5 : qmax;  // torch tests the rounded value
    f[e].region = v < lo ? -1 : (v > hi ? 1 : 0);
    f[e].r = q - v;
  }
  return f;
}

double surrogate_loss(const std::vector<double>& x, const std::vector<double>& dy, const std::vector<std::size_t>& shape,
                      const lsq_params& p, const std::vector<double>& s, const std::vector<double>& off,
                      const std::vector<frozen_element>& f) {
  const double qmin = p.grid.qmin(), qmax = p.grid.qmax();
  const bool torch = p.convention == lsq_convention::pytorch;
  double loss = 0.0;
  for (std::size_t e = 0; e < x.size(); ++e) {
    const std::size_t j = ref::lsq_param_index(shape, p, e);
    const double qe = f[e].region < 0 ? qmin : qmax;
    double xt;
    if (!torch) {
      const double v = (x[e] - off[j]) / s[j];
      xt = f[e].region == 0 ? (v + f[e].r) * s[j] + off[j] : qe * s[j] + off[j];
    } else {
      const double v = off[j] + x[e] / s[j];
      xt = f[e].region == 0 ? (v + f[e].r - off[j]) * s[j] : (qe - off[j]) * s[j];
    }
    loss += dy[e] * xt;
  }
  return loss;
}

// Data whose v = (x - beta)/s (or z + x/s) stays >= 0.1 away from ties and grid ends, so
// the float kernel and the double formulas agree on every region and rounding.
std::vector<float> safe_data(std::size_t n, const std::vector<std::size_t>& shape, const lsq_params& p,
                             std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> k(p.grid.qmin() - 4, p.grid.qmax() + 3);
  std::uniform_real_distribution<double> frac(0.1, 0.4);
  std::bernoulli_distribution up(0.5);
  std::vector<float> x(n);
  for (std::size_t e = 0; e < n; ++e) {
    const std::size_t j = ref::lsq_param_index(shape, p, e);
    const double f = up(gen) ? frac(gen) : 1.0 - frac(gen);
    const double v = k(gen) + f;
    const double off = p.offset.empty() ? 0.0 : p.offset[j];
    x[e] = static_cast<float>(p.convention == lsq_convention::pytorch ? (v - off) * p.scale[j] : v * p.scale[j] + off);
  }
  return x;
}

}  // namespace

TEST_CASE("LSQ gradients equal finite differences of the straight-through surrogate", "[lsq][fd]") {
  struct setup {
    std::vector<std::size_t> shape;
    std::optional<std::ptrdiff_t> axis;
    lsq_convention conv;
    grid g;
  };
  const std::vector<setup> setups = {
      {{600}, std::nullopt, lsq_convention::paper, grid::int_signed(4)},
      {{600}, std::nullopt, lsq_convention::pytorch, grid::int_unsigned(4)},
      {{4, 90}, 0, lsq_convention::paper, grid::int_unsigned(3)},
      {{30, 4}, 1, lsq_convention::pytorch, grid::int_signed(3)},
      {{3, 4, 5}, -2, lsq_convention::paper, grid::int_signed(2)},
  };
  for (const auto& su : setups) {
    std::size_t n = 1;
    for (auto d : su.shape) n *= d;
    const std::size_t ax = su.axis ? static_cast<std::size_t>(*su.axis < 0 ? *su.axis + static_cast<std::ptrdiff_t>(su.shape.size()) : *su.axis) : 0;
    const std::size_t np = su.axis ? su.shape[ax] : 1;
    std::vector<float> s(np), off(np);
    for (std::size_t j = 0; j < np; ++j) {
      s[j] = 0.05f + 0.01f * static_cast<float>(j);
      off[j] = su.conv == lsq_convention::paper ? 0.013f * static_cast<float>(j) - 0.02f
                                                : static_cast<float>(j % 3) + (su.g.is_signed ? -1.0f : 0.0f);
    }
    const lsq_params p = make_params(su.g, s, off, su.axis, su.conv);
    const auto xf = safe_data(n, su.shape, p, 77);
    const auto dyf = quant_test::normal_floats(n, 78);
    const std::vector<double> x(xf.begin(), xf.end()), dy(dyf.begin(), dyf.end());
    const std::vector<double> sd(s.begin(), s.end()), od(off.begin(), off.end());
    const auto exact = ref::lsq_exact(x, dy, su.shape, p, sd, od);
    const auto frozen = freeze(x, su.shape, p, sd, od);
    const double g = lsq_gradient_scale(p, n);
    INFO("shape " << detail::shape_string(su.shape) << (su.conv == lsq_convention::paper ? " paper" : " pytorch"));
    for (std::size_t j = 0; j < np; ++j) {
      const double h = 1e-6 * sd[j];
      auto sp = sd, sm = sd;
      sp[j] += h;
      sm[j] -= h;
      const double fd_s = (surrogate_loss(x, dy, su.shape, p, sp, od, frozen) -
                           surrogate_loss(x, dy, su.shape, p, sm, od, frozen)) / (2 * h);
      CHECK(exact.dscale[j] == Approx(g * fd_s).epsilon(1e-6).margin(1e-9));
      auto op = od, om = od;
      op[j] += 1e-6;
      om[j] -= 1e-6;
      const double fd_o = (surrogate_loss(x, dy, su.shape, p, sd, op, frozen) -
                           surrogate_loss(x, dy, su.shape, p, sd, om, frozen)) / 2e-6;
      CHECK(exact.doffset[j] == Approx(g * fd_o).epsilon(1e-6).margin(1e-9));
    }
    for (std::size_t e = 0; e < n; e += 37) {
      auto xp = x, xm = x;
      xp[e] += 1e-6;
      xm[e] -= 1e-6;
      const double fd_x = (surrogate_loss(xp, dy, su.shape, p, sd, od, frozen) -
                           surrogate_loss(xm, dy, su.shape, p, sd, od, frozen)) / 2e-6;
      CHECK(exact.dx[e] == Approx(fd_x).epsilon(1e-6).margin(1e-9));
    }
    // the float kernels against the double formulas (same regions and roundings here)
    auto xa = xt::adapt(xf, su.shape);
    auto da = xt::adapt(dyf, su.shape);
    const auto r = eager::lsq_forward_backward(xa, da, p);
    for (std::size_t e = 0; e < n; ++e) {
      REQUIRE(r.dx[e] == static_cast<float>(exact.dx[e]));
      REQUIRE(r.y[e] == Approx(exact.y[e]).epsilon(1e-6).margin(1e-7));
    }
    const auto fl = ref::lsq(xf, dyf, su.shape, p);
    for (std::size_t j = 0; j < np; ++j) {
      CHECK(std::fabs(r.dscale[j] - exact.dscale[j]) <= 1e-5 * fl.dscale_abs[j] + 1e-12);
      CHECK(std::fabs(r.doffset[j] - exact.doffset[j]) <= 1e-5 * fl.doffset_abs[j] + 1e-12);
    }
  }
}

TEST_CASE("LSQ gradient scale: default N, explicit N, off", "[lsq]") {
  auto x = quant_test::normal_floats(800, 5);
  auto dy = quant_test::normal_floats(800, 6);
  auto xa = xt::adapt(x, std::vector<std::size_t>{8, 100});
  auto da = xt::adapt(dy, std::vector<std::size_t>{8, 100});
  lsq_params p = make_params(grid::int_signed(8), std::vector<float>(8, 0.01f), std::vector<float>(8, 0.0f), 0);
  CHECK(lsq_gradient_scale(p, 800) == 1.0 / std::sqrt(100.0 * 127.0));
  p.gradient_scaling = false;
  CHECK(lsq_gradient_scale(p, 800) == 1.0);
  const auto unscaled = eager::lsq_backward(xa, da, p);
  p.gradient_scaling = true;
  const auto scaled = eager::lsq_backward(xa, da, p);
  p.elements_per_scale = 50;  // e.g. features per sample of an activation
  CHECK(lsq_gradient_scale(p, 800) == 1.0 / std::sqrt(50.0 * 127.0));
  const auto explicit_n = eager::lsq_backward(xa, da, p);
  for (std::size_t c = 0; c < 8; ++c) {
    CHECK(scaled.dscale[c] == Approx(unscaled.dscale[c] / std::sqrt(100.0 * 127.0)).epsilon(1e-6));
    CHECK(scaled.doffset[c] == Approx(unscaled.doffset[c] / std::sqrt(100.0 * 127.0)).epsilon(1e-6));
    CHECK(explicit_n.dscale[c] == Approx(unscaled.dscale[c] / std::sqrt(50.0 * 127.0)).epsilon(1e-6));
  }
  require_bitwise_equal(scaled.dx, unscaled.dx, 800, "dx does not depend on g");
}

TEST_CASE("LSQ closed forms: hand-computed gradients", "[lsq]") {
  // int4 signed [-8, 7], s = 0.5, beta = 0.25: u = (x - 0.25) / 0.5
  xt::xarray<float> x = {0.25f + 0.5f * 1.2f, 0.25f + 0.5f * -2.7f, 10.0f, -10.0f};
  xt::xarray<float> dy = {1.0f, 2.0f, 3.0f, 4.0f};
  lsq_params p = make_params(grid::int_signed(4), {0.5f}, {0.25f}, std::nullopt);
  p.gradient_scaling = false;
  const auto r = eager::lsq_forward_backward(x, dy, p);
  CHECK(r.y(0) == 1.0f * 0.5f + 0.25f);
  CHECK(r.y(1) == -3.0f * 0.5f + 0.25f);
  CHECK(r.y(2) == 7.0f * 0.5f + 0.25f);
  CHECK(r.y(3) == -8.0f * 0.5f + 0.25f);
  CHECK((r.dx == xt::xarray<float>{1.0f, 2.0f, 0.0f, 0.0f}));
  // ds = 1 * (1 - 1.2) + 2 * (-3 + 2.7) + 3 * 7 + 4 * (-8) = -0.2 - 0.6 + 21 - 32
  CHECK(r.dscale[0] == Approx(-11.8).epsilon(1e-6));
  CHECK(r.doffset[0] == Approx(7.0).epsilon(1e-6));  // dy outside: 3 + 4
  // LSQ (no offset) with beta = 0 equals LSQ+ with beta = 0, and has no offset gradient
  lsq_params lsq = make_params(grid::int_signed(4), {0.5f}, {}, std::nullopt);
  lsq_params plus0 = make_params(grid::int_signed(4), {0.5f}, {0.0f}, std::nullopt);
  const auto a = eager::lsq_backward(x, dy, lsq), b = eager::lsq_backward(x, dy, plus0);
  CHECK(a.doffset.empty());
  CHECK(a.dscale == b.dscale);
  // LSQ forward equals plain fake-quant with z = 0 (values; -0.0 vs +0.0 may differ)
  auto big = quant_test::normal_floats(1003, 9, 3.0f);
  auto ba = xt::adapt(big, std::vector<std::size_t>{1003});
  auto fq = eager::fake_quantize(ba, qparams::per_tensor(grid::int_signed(4), 0.5f, 0));
  CHECK((eager::lsq_forward(ba, lsq) == fq));
}

TEST_CASE("LSQ reductions are identical for 1 and 2 threads", "[lsq]") {
  quant_test::require_two_threads();  // fails if "2 threads" would be a serial run
  const std::size_t n = 7 * 37451;  // > 2^18, several pieces per channel
  auto x = quant_test::normal_floats(n, 41, 2.0f);
  auto dy = quant_test::normal_floats(n, 42);
  for (const auto& shape : {std::vector<std::size_t>{n}, std::vector<std::size_t>{7, n / 7},
                            std::vector<std::size_t>{n / 7, 7}}) {
    auto xa = xt::adapt(x, shape);
    auto da = xt::adapt(dy, shape);
    std::optional<std::ptrdiff_t> axis;
    std::size_t np = 1;
    if (shape.size() == 2) {
      axis = shape[0] == 7 ? 0 : 1;
      np = 7;
    }
    for (auto conv : {lsq_convention::paper, lsq_convention::pytorch}) {
      const lsq_params p = make_params(grid::int_signed(4), std::vector<float>(np, 0.3f),
                                       std::vector<float>(np, conv == lsq_convention::paper ? 0.1f : 1.0f), axis, conv);
      set_num_threads(1);
      const auto a = eager::lsq_forward_backward(xa, da, p);
      set_num_threads(2);
      const auto b = eager::lsq_forward_backward(xa, da, p);
      set_num_threads(0);
      require_bitwise_equal(a.y, b.y, n, "y");
      require_bitwise_equal(a.dx, b.dx, n, "dx");
      CHECK(a.dscale == b.dscale);
      CHECK(a.doffset == b.doffset);
      // and the long compensated sums are as accurate as promised
      const auto want = ref::lsq(x, dy, shape, p);
      require_sum_close(a.dscale, want.dscale, want.dscale_abs, "dscale");
      require_sum_close(a.doffset, want.doffset, want.doffset_abs, "doffset");
    }
  }
}

TEST_CASE("LSQ initialisations follow docs/qat.md", "[lsq][init]") {
  xt::xarray<float> x = {1.0f, -1.0f, 2.0f, -2.0f};
  // LSQ: 2 * mean|x| / sqrt(qmax) = 3 / sqrt(127)
  CHECK(lsq_init_scale(x, grid::int_signed(8))[0] == static_cast<float>(3.0 / std::sqrt(127.0)));
  xt::xarray<float> w = {{1.0f, -1.0f}, {4.0f, 0.0f}};
  const auto sc = lsq_init_scale(w, grid::int_signed(4), 0);  // rows: mean|.| = 1, 2
  REQUIRE(sc.size() == 2);
  CHECK(sc[0] == static_cast<float>(2.0 / std::sqrt(7.0)));
  CHECK(sc[1] == static_cast<float>(4.0 / std::sqrt(7.0)));
  const auto sc1 = lsq_init_scale(w, grid::int_signed(4), -1);  // columns: mean|.| = 2.5, 0.5
  CHECK(sc1[0] == static_cast<float>(5.0 / std::sqrt(7.0)));
  xt::xarray<float> zeros = xt::zeros<float>({5});
  CHECK(lsq_init_scale(zeros, grid::int_signed(8))[0] == FLT_EPSILON);
  // LSQ+ weights: {1, 3}: mu = 2, sigma = 1 -> max(|2 - 3|, |2 + 3|) / 2^(b-1) = 5 / 128
  xt::xarray<float> w2 = {1.0f, 3.0f};
  CHECK(lsq_plus_init_weights(w2, grid::int_signed(8))[0] == 5.0f / 128.0f);
  xt::xarray<float> w3 = {{1.0f, 3.0f}, {-2.0f, -2.0f}};
  const auto pw = lsq_plus_init_weights(w3, grid::int_signed(4), 0);
  CHECK(pw[0] == 5.0f / 8.0f);
  CHECK(pw[1] == 2.0f / 8.0f);
  // LSQ+ activations, min-max: [-1, 3] on uint8 -> s = 4/255, beta = -1
  xt::xarray<float> a = {-1.0f, 0.5f, 3.0f, 2.0f};
  const auto mm = lsq_plus_init_minmax(a, grid::int_unsigned(8));
  CHECK(mm.scale == 4.0f / 255.0f);
  CHECK(mm.offset == -1.0f);
  // the grid then spans exactly [min, max]
  lsq_params p = make_params(grid::int_unsigned(8), {mm.scale}, {mm.offset}, std::nullopt);
  const auto y = eager::lsq_forward(a, p);
  CHECK(y(0) == -1.0f);
  CHECK(y(2) == Approx(3.0f).epsilon(1e-6));
  // LSQ+ activations, MSE: never worse than min-max, clearly better on heavy tails
  auto heavy = quant_test::normal_floats(4000, 3);
  heavy[0] = 12.0f;
  heavy[1] = -9.0f;
  auto ha = xt::adapt(heavy, std::vector<std::size_t>{4000});
  const grid g4 = grid::int_unsigned(4);
  const auto m0 = lsq_plus_init_minmax(ha, g4);
  const auto m1 = lsq_plus_init_mse(ha, g4);
  auto err = [&](const std::vector<float>& data, lsq_scale_offset so) {
    auto da = xt::adapt(data, std::vector<std::size_t>{data.size()});
    const auto yy = eager::lsq_forward(da, make_params(g4, {so.scale}, {so.offset}, std::nullopt));
    double e = 0;
    for (std::size_t i = 0; i < data.size(); ++i) e += (data[i] - yy(i)) * static_cast<double>(data[i] - yy(i));
    return e;
  };
  CHECK(err(heavy, m1) < 0.5 * err(heavy, m0));
  CHECK(m1.scale < m0.scale);
  // on uniform data min-max is already close to optimal: MSE init stays close to it
  std::vector<float> uni(4096);
  for (std::size_t i = 0; i < uni.size(); ++i) uni[i] = static_cast<float>(i) / 4095.0f;
  auto ua = xt::adapt(uni, std::vector<std::size_t>{4096});
  const auto u0 = lsq_plus_init_minmax(ua, g4), u1 = lsq_plus_init_mse(ua, g4);
  CHECK(err(uni, u1) <= err(uni, u0));
  CHECK(u1.scale == Approx(u0.scale).epsilon(0.1));
  CHECK_THROWS_AS(lsq_init_scale(xt::xarray<float>{1.0f, std::nanf("")}, grid::int_signed(8)), quant::domain_error);
  CHECK_THROWS_AS(lsq_plus_init_minmax(xt::xarray<float>(xt::zeros<float>({0})), g4), quant::invalid_argument);
  CHECK_THROWS_AS(lsq_init_scale(x, grid::int_signed(1)), quant::invalid_argument);
}

TEST_CASE("clamp_scale keeps step sizes positive", "[lsq]") {
  std::vector<float> s = {1.0f, 0.0f, -3.0f, 1e-30f};
  clamp_scale(s);
  CHECK(s == std::vector<float>{1.0f, FLT_EPSILON, FLT_EPSILON, FLT_EPSILON});
  lsq_params p = make_params(grid::int_signed(8), {-1.0f}, {}, std::nullopt);
  clamp_scale(p, 1e-3f);
  CHECK(p.scale[0] == 1e-3f);
  std::vector<float> bad = {std::nanf("")};
  CHECK_THROWS_AS(clamp_scale(bad), quant::domain_error);
  CHECK_THROWS_AS(clamp_scale(s, 0.0f), quant::invalid_argument);
}

TEST_CASE("LSQ validates its parameters and shapes", "[lsq][errors]") {
  xt::xarray<float> x = xt::zeros<float>({4, 6});
  xt::xarray<float> dy = xt::zeros<float>({4, 6});
  auto bad = [&](lsq_params p) { return eager::lsq_backward(x, dy, p); };
  CHECK_THROWS_WITH(bad(make_params(grid::int_signed(8), {0.0f}, {}, std::nullopt)),
                    Catch::Contains("lsq_backward") && Catch::Contains("scale = 0"));
  CHECK_THROWS_AS(bad(make_params(grid::int_signed(8), {std::nanf("")}, {}, std::nullopt)), quant::invalid_argument);
  CHECK_THROWS_AS(bad(make_params(grid::int_signed(8), {}, {}, std::nullopt)), quant::invalid_argument);
  CHECK_THROWS_AS(bad(make_params(grid::int_signed(8), {1.f, 1.f}, {}, std::nullopt)), quant::length_error);
  CHECK_THROWS_AS(bad(make_params(grid::int_signed(8), {1.f}, {0.f, 0.f}, std::nullopt)), quant::length_error);
  CHECK_THROWS_AS(bad(make_params(grid::int_signed(8), {1.f}, {INFINITY}, std::nullopt)), quant::invalid_argument);
  CHECK_THROWS_AS(bad(make_params(grid::int_signed(8), {1.f, 1.f, 1.f}, {}, 0)), quant::length_error);
  CHECK_THROWS_WITH(bad(make_params(grid::int_signed(8), {1.f, 1.f, 1.f, 1.f}, {}, 2)), Catch::Contains("axis = 2"));
  CHECK_THROWS_WITH(bad(make_params(grid::int_signed(17), {1.f}, {}, std::nullopt)), Catch::Contains("bits = 17"));
  xt::xarray<float> dy2 = xt::zeros<float>({6, 4});
  CHECK_THROWS_AS(eager::lsq_backward(x, dy2, make_params(grid::int_signed(8), {1.f}, {}, std::nullopt)),
                  quant::length_error);
  CHECK_THROWS_AS(eager::lsq_forward(x, make_params(grid::int_signed(8), {-1.f}, {}, std::nullopt)),
                  quant::invalid_argument);
  // empty input: empty outputs, zero gradients
  xt::xarray<float> e = xt::zeros<float>({0});
  const auto r = eager::lsq_backward(e, e, make_params(grid::int_signed(8), {1.f}, {0.5f}, std::nullopt));
  CHECK(r.dx.size() == 0);
  CHECK(r.dscale == std::vector<float>{0.0f});
  CHECK(r.doffset == std::vector<float>{0.0f});
}

TEST_CASE("lsq_forward into a caller-provided tensor equals the returning form bit for bit", "[lsq][out]") {
  // 6 x 3 x 4000 = 72000 elements: above parallel_min_elements, several pieces per run, and
  // runs of 4000 (full packs and a tail) per channel along axis 1.
  const std::vector<std::size_t> shape{6, 3, 4000};
  const std::size_t n = 6 * 3 * 4000;
  auto xv = quant_test::normal_floats(n, 77, 1.5f);
  const auto ties = quant_test::tie_floats(n, 0.125f, 12);
  for (std::size_t i = 0; i < n; i += 4) xv[i] = ties[i];
  const std::vector<float> no_dy(n, 0.0f);
  const xt::xarray<float> x = xt::adapt(xv, shape);
  const std::vector<std::pair<std::string, lsq_params>> cases = {
      {"paper LSQ per tensor", make_params(grid::int_signed(4), {0.125f}, {}, std::nullopt)},
      {"paper LSQ+ per channel", make_params(grid::int_unsigned(4), {0.1f, 0.2f, 0.15f}, {-0.3f, 0.1f, 0.0f}, 1)},
      {"pytorch per tensor, zero point 2.5",
       make_params(grid::int_unsigned(8), {0.02f}, {2.5f}, std::nullopt, lsq_convention::pytorch)},
      {"pytorch per channel", make_params(grid::int_signed(8), {0.01f, 0.02f, 0.03f, 0.04f, 0.05f, 0.06f},
                                          {-3.0f, 0.0f, 1.5f, 2.0f, 7.0f, -0.5f}, 0, lsq_convention::pytorch)},
  };
  for (const auto& [name, params] : cases) {
    const lsq_params& p = params;  // captured below: C++17 lambdas cannot capture a structured binding
    DYNAMIC_SECTION(name) {
      const xt::xarray<float> returned = eager::lsq_forward(x, p);
      const auto want = ref::lsq(xv, no_dy, shape, p);  // scalar reference, straight from the formula
      require_bitwise_equal(returned.data(), want.y, n, name + ": returning form vs reference");
      SECTION("into an xarray, for 1 and 2 threads") {
        for (int threads : {1, 2}) {
          xt::xarray<float> y = xt::xarray<float>::from_shape(shape);
          y.fill(-7.0f);
          quant_test::with_threads(threads, [&] {
            eager::lsq_forward(x, p, y);
            return 0;
          });
          REQUIRE(std::vector<std::size_t>(y.shape().begin(), y.shape().end()) == shape);
          require_bitwise_equal(y.data(), returned.data(), n, name + ": " + std::to_string(threads) + " thread(s)");
        }
      }
      SECTION("into an xtensor of the same shape, from a lazy expression") {
        xt::xtensor<float, 3> y = xt::xtensor<float, 3>::from_shape({6, 3, 4000});
        eager::lsq_forward(x * 1.0f, p, y);
        require_bitwise_equal(y.data(), returned.data(), n, name + ": xtensor");
      }
      SECTION("in place (y is x)") {
        xt::xarray<float> y = x;
        eager::lsq_forward(y, p, y);
        require_bitwise_equal(y.data(), returned.data(), n, name + ": in place");
      }
      SECTION("a y of another shape is resized; one of another fixed rank is rejected before any write") {
        xt::xarray<float> transposed = xt::xarray<float>::from_shape({6, 4000, 3});
        eager::lsq_forward(x, p, transposed);
        REQUIRE(std::vector<std::size_t>(transposed.shape().begin(), transposed.shape().end()) == shape);
        require_bitwise_equal(transposed.data(), returned.data(), n, name + ": resized");
        xt::xtensor<float, 2> flat = xt::xtensor<float, 2>::from_shape({18, 4000});
        flat.fill(-7.0f);
        CHECK_THROWS_WITH(eager::lsq_forward(x, p, flat), Catch::StartsWith("quant::lsq_forward: y.shape = [18, 4000]"));
        CHECK(std::all_of(flat.begin(), flat.end(), [](float v) { return v == -7.0f; }));
      }
    }
  }
}

TEST_CASE("LSQ results: one type per form, each extending the parameter gradients", "[lsq]") {
  static_assert(std::is_base_of<lsq_param_gradients, lsq_gradients>::value, "");
  static_assert(std::is_base_of<lsq_gradients, lsq_forward_backward_result>::value, "");
  const xt::xarray<float> x = {0.3f, -1.4f, 9.0f, 0.05f};
  const xt::xarray<float> dy = {1.0f, -2.0f, 0.5f, 4.0f};
  const lsq_params p = make_params(grid::int_signed(4), {0.5f}, {0.25f}, std::nullopt);
  xt::xarray<float> y, dx, dx2;
  const lsq_param_gradients into = eager::lsq_forward_backward(x, dy, p, y, dx);
  const lsq_param_gradients into_backward = eager::lsq_backward(x, dy, p, dx2);
  const lsq_gradients backward = eager::lsq_backward(x, dy, p);
  const lsq_forward_backward_result fused = eager::lsq_forward_backward(x, dy, p);
  for (const lsq_param_gradients* g : {&into_backward, static_cast<const lsq_param_gradients*>(&backward),
                                       static_cast<const lsq_param_gradients*>(&fused)}) {
    CHECK(g->dscale == into.dscale);
    CHECK(g->doffset == into.doffset);
  }
  require_bitwise_equal(backward.dx, dx, 4, "backward dx");
  require_bitwise_equal(fused.dx, dx, 4, "fused dx");
  require_bitwise_equal(dx2, dx, 4, "out-parameter backward dx");
  require_bitwise_equal(fused.y, y, 4, "fused y");
}

// ---- PyTorch golden data (tools/torch_golden.py) -------------------------------------

TEST_CASE("PyTorch convention matches torch._fake_quantize_learnable_per_*_affine", "[lsq][torch]") {
  const auto cases = quant_test::read_golden("torch_learnable.txt");
  REQUIRE(cases.size() >= 10);
  double worst = 0.0;
  for (const auto& c : cases) {
    INFO(c.name);
    lsq_params p;
    p.grid = quant_test::grid_for(c.qmin, c.qmax);
    p.scale = c["scale"];
    p.offset = c["zero_point"];
    if (c.kind == "lsq_channel") p.channel_axis = c.axis;
    p.convention = lsq_convention::pytorch;
    p.gradient_scaling = c.grad_factor_n != 0;
    p.elements_per_scale = c.grad_factor_n;
    xt::xarray<float> xa = xt::adapt(c["x"], c.shape);
    xt::xarray<float> da = xt::adapt(c["dy"], c.shape);
    const std::size_t n = xa.size();
    require_bitwise_equal(eager::lsq_forward(xa, p), c["y"], n, "forward");
    const auto r = eager::lsq_forward_backward(xa, da, p);
    require_bitwise_equal(r.y, c["y"], n, "fused forward");
    require_bitwise_equal(r.dx, c["dx"], n, "dx");
    const auto want = ref::lsq(c["x"], c["dy"], c.shape, p);
    require_bitwise_equal(want.y, c["y"], n, "ref forward");
    for (const auto& [ours, theirs] : {std::make_pair(&r.dscale, &c["dscale"]),
                                       std::make_pair(&r.doffset, &c["dzero_point"])}) {
      REQUIRE(ours->size() == theirs->size());
      for (std::size_t j = 0; j < ours->size(); ++j) {
        const double a = (*ours)[j], b = (*theirs)[j];
        const double rel = std::fabs(a - b) / std::max(std::fabs(b), 1e-30);
        worst = std::max(worst, b == 0.0 ? std::fabs(a) : rel);
        INFO("parameter " << j << ": ours " << a << " torch " << b);
        CHECK((b == 0.0 ? std::fabs(a) < 1e-30 : rel <= 1e-5));
      }
    }
  }
  WARN("largest relative difference of reduced gradients vs PyTorch: " << worst);
}

TEST_CASE("PyTorch convention rounds zero_point + x * inv_scale once, as PyTorch's backward kernel",
          "[lsq][torch][ties]") {
  // Cases with one element per scale and grad_factor 1: each reduced gradient is a single
  // term, so PyTorch's values must be reproduced exactly (0 and -0 compare equal). The
  // inputs are chosen so that rounding the product before adding the zero point moves the
  // grid value across a half-integer (tools/torch_golden.py, fused_tie_inputs).
  const auto cases = quant_test::read_golden("torch_learnable.txt");
  std::size_t tie_cases = 0;
  for (const auto& c : cases) {
    if (c.name.rfind("lsq_tie", 0) != 0) continue;
    ++tie_cases;
    INFO(c.name);
    lsq_params p;
    p.grid = quant_test::grid_for(c.qmin, c.qmax);
    p.scale = c["scale"];
    p.offset = c["zero_point"];
    if (c.kind == "lsq_channel") p.channel_axis = c.axis;
    p.convention = lsq_convention::pytorch;
    p.gradient_scaling = false;
    xt::xarray<float> xa = xt::adapt(c["x"], c.shape);
    xt::xarray<float> da = xt::adapt(c["dy"], c.shape);
    const std::size_t n = xa.size();
    const std::size_t params = p.scale.size();
    REQUIRE(params == n);
    const auto want_ref = ref::lsq(c["x"], c["dy"], c.shape, p);
    for (int threads : {1, 2}) {
      quant::set_num_threads(threads);
      const auto r = eager::lsq_forward_backward(xa, da, p);
      quant::set_num_threads(0);
      require_bitwise_equal(r.y, c["y"], n, "y");
      require_bitwise_equal(r.dx, c["dx"], n, "dx");
      for (std::size_t j = 0; j < params; ++j) {
        INFO("element " << j << " x " << c["x"][j] << " threads " << threads);
        CHECK(r.dscale[j] == c["dscale"][j]);
        CHECK(r.doffset[j] == c["dzero_point"][j]);
        CHECK(static_cast<float>(want_ref.dscale[j]) == c["dscale"][j]);
        CHECK(static_cast<float>(want_ref.doffset[j]) == c["dzero_point"][j]);
        CHECK(want_ref.dx[j] == c["dx"][j]);
      }
    }
  }
  CHECK(tie_cases >= 10);
}

TEST_CASE("LSQ on an unsigned narrow grid (0 off the grid) matches the reference", "[lsq]") {
  // Found by fuzz_lsq: the kernel's plan was built from qparams with zero point 0, which is
  // not on [1, 2^b - 1], so every call threw "qparams::per_tensor: zero_point = 0" although
  // the parameters are valid LSQ parameters.
  const std::vector<std::size_t> shape{3, 37};
  const std::size_t n = 3 * 37;
  const auto x = quant_test::normal_floats(n, 41, 1.0f, 0.8f);
  const auto dy = quant_test::normal_floats(n, 42);
  for (auto conv : {lsq_convention::paper, lsq_convention::pytorch}) {
    const std::string c = conv == lsq_convention::paper ? "paper" : "pytorch";
    check_against_reference(x, dy, shape, make_params(grid::int_unsigned(4, true), {0.1f}, {}, std::nullopt, conv),
                            c + " per tensor, LSQ");
    check_against_reference(x, dy, shape,
                            make_params(grid::int_unsigned(3, true), {0.1f, 0.2f, 0.05f}, {}, 0, conv),
                            c + " per channel, LSQ");
    check_against_reference(x, dy, shape,
                            make_params(grid::int_unsigned(4, true), {0.1f}, {conv == lsq_convention::paper ? -0.2f : 3.0f},
                                        std::nullopt, conv),
                            c + " per tensor, LSQ+");
  }
}

TEST_CASE("LSQ NaN policy: NaN x gives y = NaN, dx = 0 and a NaN gradient for its own scale only", "[lsq][nan]") {
  // As PyTorch's _fake_quantize_learnable_per_*_affine: the NaN element fails both clamp
  // tests, so dx = 0; its term of the scale gradient, round(x/s) - x/s, is NaN.
  for (auto conv : {lsq_convention::paper, lsq_convention::pytorch}) {
    INFO((conv == lsq_convention::paper ? "paper" : "pytorch"));
    const std::size_t rows = 2, cols = 40;
    auto x = quant_test::normal_floats(rows * cols, 71, 1.0f);
    const auto dy = quant_test::normal_floats(rows * cols, 72);
    x[7] = std::nanf("");  // row 0 only
    const lsq_params p = make_params(grid::int_signed(4), {0.2f, 0.3f}, {}, 0, conv);
    const auto xa = xt::adapt(x, std::vector<std::size_t>{rows, cols});
    const auto da = xt::adapt(dy, std::vector<std::size_t>{rows, cols});
    const auto r = eager::lsq_forward_backward(xa, da, p);
    CHECK(std::isnan(r.y.flat(7)));
    CHECK(r.dx.flat(7) == 0.0f);
    REQUIRE(r.dscale.size() == 2);
    CHECK(std::isnan(r.dscale[0]));
    CHECK(std::isfinite(r.dscale[1]));
    // every other element as without the NaN
    const auto want = ref::lsq(x, dy, {rows, cols}, p);
    require_bitwise_equal(r.y, want.y, x.size(), "y");
    require_bitwise_equal(r.dx, want.dx, x.size(), "dx");
    // the forward alone passes NaN too
    CHECK(std::isnan(eager::lsq_forward(xa, p).flat(7)));
  }
}
