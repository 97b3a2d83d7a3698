// AdaRound: primitives against finite differences (double), the fused pass against the
// primitives and its Adam moments against Adam's formula, the layer loss gradient against
// central differences, the layer optimizer against round-to-nearest on held-out data.
#include <quant/adaround.hpp>
#include <quant/im2col.hpp>
#include <quant/observers.hpp>

#include <cmath>
#include <random>
#include <sstream>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xmath.hpp>

#include "adaround_test_helpers.hpp"
#include "test_helpers.hpp"

using namespace quant;
using quant_test::floor_base;
using quant_test::fused_pass_dv;
using quant_test::normal_matrix;

namespace {


// Correlated, non-negative inputs X = relu(Z A) with a low-dimensional latent Z (in/4
// dimensions): the setting where choosing the rounding by the output error beats rounding
// each weight to nearest.
xt::xtensor<float, 2> correlated_inputs(std::size_t rows, std::size_t in, std::uint32_t seed) {
  const std::size_t latent = std::max<std::size_t>(1, in / 4);
  const auto z = normal_matrix(rows, latent, seed);
  const auto a = normal_matrix(latent, in, 7, 1.0f / std::sqrt(static_cast<float>(latent)));
  xt::xtensor<float, 2> x = xt::xtensor<float, 2>::from_shape({rows, in});
  xt::blas::gemm(z, a, x);
  for (auto& v : x) v = v > 0.0f ? v : 0.0f;
  return x;
}

double output_error(const xt::xtensor<float, 2>& w, const xt::xtensor<float, 2>& wq, const xt::xtensor<float, 2>& x) {
  xt::xtensor<float, 2> y = xt::xtensor<float, 2>::from_shape({x.shape()[0], w.shape()[0]});
  xt::xtensor<float, 2> yq = y;
  xt::blas::gemm(x, w, y, false, true);
  xt::blas::gemm(x, wq, yq, false, true);
  double acc = 0.0;
  for (std::size_t i = 0; i < y.size(); ++i) acc += std::pow(double(y.data()[i]) - yq.data()[i], 2);
  return acc / static_cast<double>(x.shape()[0]);
}

}  // namespace

TEST_CASE("h, h', soft weight and regularizer gradients match central differences in double", "[adaround]") {
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> uv(-6.0, 6.0);
  xt::xarray<double> v = xt::xarray<double>::from_shape({400});
  for (auto& x : v) x = uv(rng);
  const double eps = 1e-6;
  xt::xarray<double> vp = v + eps, vm = v - eps;
  auto near_kink = [](double x) {  // where h meets 0 or 1 the derivative jumps
    const double s = 1.0 / (1.0 + std::exp(-x));
    const double u = s * 1.2 - 0.1;
    return std::fabs(u) < 1e-4 || std::fabs(u - 1.0) < 1e-4;
  };
  // h
  xt::xarray<double> h = rectified_sigmoid(v), hp = rectified_sigmoid(vp), hm = rectified_sigmoid(vm);
  xt::xarray<double> dh = rectified_sigmoid_grad(v);
  std::size_t clamped = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (near_kink(v(i))) continue;
    CHECK(dh(i) == Approx((hp(i) - hm(i)) / (2 * eps)).margin(1e-7));
    clamped += (dh(i) == 0.0);
    CHECK(h(i) >= 0.0);
    CHECK(h(i) <= 1.0);
  }
  CHECK(clamped > 20);  // the clamp region is exercised
  // regularizer terms, several beta
  for (float beta : {1.5f, 2.0f, 7.5f, 20.0f}) {
    xt::xarray<double> tp = adaround_regularizer_terms(vp, beta), tm = adaround_regularizer_terms(vm, beta);
    xt::xarray<double> g = adaround_regularizer_grad(v, beta);
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (near_kink(v(i))) continue;
      INFO("beta " << beta << " v " << v(i));
      CHECK(g(i) == Approx((tp(i) - tm(i)) / (2 * eps)).margin(1e-6));
    }
  }
  // soft weight: per-channel scales, weights beyond the grid (clamped: zero gradient)
  const qparams p = qparams::per_channel(grid::int_signed(3), {0.1f, 0.25f}, {0, 1}, 0);
  xt::xarray<double> w = xt::xarray<double>::from_shape({2, 200});
  std::normal_distribution<double> nw(0.0, 0.4);
  for (auto& x : w) x = nw(rng);
  xt::xarray<double> v2 = xt::reshape_view(v, {2, 200});
  xt::xarray<double> v2p = v2 + eps, v2m = v2 - eps;
  xt::xarray<double> sp = soft_weight(w, v2p, p), sm = soft_weight(w, v2m, p);
  xt::xarray<double> sg = soft_weight_grad(w, v2, p);
  xt::xarray<double> sw = soft_weight(w, v2, p);
  std::size_t zero_grad_inside = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (near_kink(v2.flat(i))) continue;
    const double fd = (sp.flat(i) - sm.flat(i)) / (2 * eps);
    if (std::fabs(fd - sg.flat(i)) > 1e-5) {
      // only where the clamp of the grid is hit exactly at this V (measure-zero) may they differ
      INFO("i " << i << " w " << w.flat(i) << " v " << v2.flat(i));
      CHECK(fd == Approx(sg.flat(i)).margin(1e-5));
    }
    zero_grad_inside += (sg.flat(i) == 0.0 && rectified_sigmoid_grad_functor{}(v2.flat(i)) > 0.0);
  }
  CHECK(zero_grad_inside > 5);  // some weights are clipped by the grid and get no gradient
  // the soft weight lies between the two neighbouring grid points
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double s = i < 200 ? double(0.1f) : double(0.25f), z = i < 200 ? 0 : 1;
    const double lo = s * (std::max(-4.0, std::min(3.0, std::floor(w.flat(i) / s) + z)) - z);
    CHECK(sw.flat(i) >= lo - 1e-6);
    CHECK(sw.flat(i) <= lo + s + 1e-6);
  }
}

TEST_CASE("adaround_init makes the soft weight start at W; hard rounding follows the sign of V", "[adaround]") {
  const auto w = normal_matrix(8, 37, 11, 0.3f);
  const qparams p = calibrate_minmax(w, grid::int_signed(4), scheme::symmetric, 0);
  const auto v = eager::adaround_init(w, p);
  xt::xtensor<float, 2> ws = soft_weight(w, v, p);
  for (std::size_t o = 0; o < 8; ++o)
    for (std::size_t i = 0; i < 37; ++i)  // W itself, clipped to the grid's range
      CHECK(ws(o, i) == Approx(std::min(std::max(w(o, i), -8 * p.scale(o)), 7 * p.scale(o))).margin(2e-6));
  // hard rounding at init = rounding to nearest (ties up) on the grid
  const auto q = eager::adaround_integer_weights(w, v, p);
  const auto q_rtn = eager::quantize<std::int32_t>(w, p);
  std::size_t diff = 0;
  for (std::size_t i = 0; i < w.size(); ++i) diff += q.data()[i] != q_rtn.data()[i];
  CHECK(diff <= 2);  // only exact ties may differ (W = -absmax sits on -7.5: RTN -8, AdaRound up)
  xt::xtensor<float, 2> hw = hard_weight(w, v, p);
  for (std::size_t o = 0; o < 8; ++o)
    for (std::size_t i = 0; i < 37; ++i) CHECK(hw(o, i) == p.scale(o) * static_cast<float>(q(o, i)));
  CHECK(eager::adaround_regularizer(v, 2.0f) == Approx(xt::sum(adaround_regularizer_terms(v, 2.0f))()).epsilon(1e-5));
}

TEST_CASE("the eager entry points live in quant::eager; the earlier quant:: names forward to them", "[adaround]") {
  const auto w = normal_matrix(6, 19, 12, 0.3f);
  const qparams p = calibrate_minmax(w, grid::int_signed(3), scheme::symmetric, 0);
  const xt::xtensor<float, 2> v = eager::adaround_init(w, p);
  const xt::xtensor<std::int32_t, 2> q = eager::adaround_integer_weights(w, v, p);
  const xt::xtensor<float, 2> vq = eager::adaround_init_from_integers(w, q, p);
  const xt::xtensor<float, 2> vq2 = eager::adaround_init_from_integers(w, q, p, 0.2f);
  const double reg = eager::adaround_regularizer(v, 3.0f);
  SECTION("with quant::eager visible, the unqualified names are the eager ones (not ambiguous)") {
    using namespace quant::eager;
    CHECK((adaround_init(w, p) == v));
    CHECK((adaround_integer_weights(w, v, p) == q));
    CHECK((adaround_init_from_integers(w, q, p) == vq));
    CHECK(adaround_regularizer(v, 3.0f) == reg);
  }
  SECTION("the deprecated quant:: names give the same results") {
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    CHECK((quant::adaround_init(w, p) == v));
    CHECK((quant::adaround_integer_weights(w, v, p) == q));
    CHECK((quant::adaround_init_from_integers(w, q, p) == vq));
    CHECK((quant::adaround_init_from_integers(w, q, p, 0.2f) == vq2));
    CHECK(quant::adaround_regularizer(v, 3.0f) == reg);
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
  }
}

TEST_CASE("the fused pass equals the primitives composed: gradient, Adam, next soft weight", "[adaround]") {
  const std::size_t out = 5, in = 77;  // odd row length: scalar tails
  const auto w = normal_matrix(out, in, 5, 0.5f);
  const auto g = normal_matrix(out, in, 6, 0.2f);
  for (const qparams& p : {calibrate_minmax(w, grid::int_signed(3), scheme::symmetric, 0),
                           qparams::per_tensor(grid::int_unsigned(4), 0.05f, 7),
                           qparams::per_group(grid::int_signed(4), std::vector<float>(out * 7, 0.1f),
                                              std::vector<std::int32_t>(out * 7, 0), 1, 11),
                           calibrate_minmax(w, grid::int_signed(4), scheme::symmetric, 1)}) {
    auto v = eager::adaround_init(w, p);
    for (auto& x : v) x += 0.3f;
    const auto plan = detail::make_segment_plan(w.shape(), p, "test");
    const xt::xtensor<float, 2> base = floor_base(w, plan);
    const float beta = 6.0f, lambda = 0.05f;
    // the gradient from the primitives' formulas, element by element (any granularity)
    const float qmin = float(p.qmin()), qmax = float(p.qmax());
    xt::xtensor<float, 2> grad_want = xt::xtensor<float, 2>::from_shape(w.shape());
    detail::for_each_param(plan, 0, plan.n, [&](std::size_t i, float s, float, float) {
      const float vi = v.data()[i];
      const float q = base.data()[i] + rectified_sigmoid_functor{}(vi);
      const float dsoft = (q >= qmin && q <= qmax) ? s * rectified_sigmoid_grad_functor{}(vi) : 0.0f;
      grad_want.data()[i] = dsoft * g.data()[i] + lambda * adaround_regularizer_grad_functor{beta}(vi);
    });
    const double reg_want = eager::adaround_regularizer(v, beta);
    adam ref_opt(w.size(), adam_options{1e-2f});
    xt::xtensor<float, 2> v_want = v;
    ref_opt.step(v_want, grad_want);
    xt::xtensor<float, 2> ws_want = xt::xtensor<float, 2>::from_shape(w.shape());
    detail::for_each_param(plan, 0, plan.n, [&](std::size_t i, float s, float, float z) {
      const float q = base.data()[i] + rectified_sigmoid_functor{}(v_want.data()[i]);
      ws_want.data()[i] = s * (std::min(qmax, std::max(qmin, q)) - z);
    });

    for (int arch = 0; arch < 2; ++arch) {
      xt::xtensor<float, 2> vv = v, ws = xt::zeros<float>(w.shape()), sig = ws;
      std::vector<float> m(w.size(), 0.0f), s2(w.size(), 0.0f);
      kernels::adaround_step_constants c;
      c.adam = adam_step::make(adam_options{1e-2f}, 1);
      c.lambda = lambda;
      c.beta = beta;
      double reg;
      if (arch == 0) {
        kernels::adaround_soft_weights<simd::scalar>(plan, qmin, qmax, base.data(), vv.data(), sig.data(), ws.data());
        reg = kernels::adaround_fused_step<simd::scalar>(plan, qmin, qmax, base.data(), g.data(), vv.data(), sig.data(),
                                                         m.data(), s2.data(), ws.data(), c);
      } else {
        kernels::adaround_soft_weights<>(plan, qmin, qmax, base.data(), vv.data(), sig.data(), ws.data());
        reg = kernels::adaround_fused_step<>(plan, qmin, qmax, base.data(), g.data(), vv.data(), sig.data(), m.data(),
                                             s2.data(), ws.data(), c);
      }
      CHECK(reg == Approx(reg_want).epsilon(1e-5));
      for (std::size_t i = 0; i < w.size(); ++i) {
        CHECK(vv.data()[i] == Approx(v_want.data()[i]).margin(1e-5));
        CHECK(ws.data()[i] == Approx(ws_want.data()[i]).margin(1e-5));
        CHECK(sig.data()[i] == Approx(1.0 / (1.0 + std::exp(-double(vv.data()[i])))).margin(1e-6));
      }
    }
  }
}

TEST_CASE("h is exactly 0 or 1 and h' = 0 for |V| >= adaround_saturated_v (the fused pass's shortcut)", "[adaround]") {
  xt::xtensor<float, 1> v = xt::xtensor<float, 1>::from_shape({4003});
  for (std::size_t i = 0; i < v.size(); ++i) {
    const float a = adaround_saturated_v * std::pow(1.0005f, static_cast<float>(i / 2));  // up to ~17
    v(i) = i % 2 ? a : -a;
  }
  v(0) = adaround_saturated_v;
  v(1) = -adaround_saturated_v;
  const xt::xtensor<float, 1> h = rectified_sigmoid(v), hp = rectified_sigmoid_grad(v);  // SIMD in the SIMD build
  for (std::size_t i = 0; i < v.size(); ++i) {
    INFO("V = " << v(i));
    CHECK(h(i) == (v(i) > 0.0f ? 1.0f : 0.0f));
    CHECK(hp(i) == 0.0f);
    CHECK(rectified_sigmoid_functor{}(v(i)) == h(i));  // scalar std::exp
  }
  // just inside the boundary h is not yet binary
  CHECK(rectified_sigmoid_functor{}(2.39f) < 1.0f);
  CHECK(rectified_sigmoid_functor{}(-2.39f) > 0.0f);
}

TEST_CASE("the fused pass keeps sigmoid(V) across steps exactly: same as recomputing it every step", "[adaround]") {
  // V spread over the interior, the saturation boundary and far beyond it, in runs so that
  // whole packs are saturated (the pass then skips the sigmoid and the stores); lambda on.
  const std::size_t out = 6, in = 203;
  const auto w = normal_matrix(out, in, 41, 0.4f);
  const auto g = normal_matrix(out, in, 42, 0.3f);
  const qparams p = calibrate_minmax(w, grid::int_signed(3), scheme::symmetric, 0);
  const auto plan = detail::make_segment_plan(w.shape(), p, "test");
  const float qmin = float(p.qmin()), qmax = float(p.qmax());
  const xt::xtensor<float, 2> base = floor_base(w, plan);
  xt::xtensor<float, 2> v0 = eager::adaround_init(w, p);
  for (std::size_t i = 0; i < v0.size(); ++i) {
    const std::size_t run = (i / 40) % 4;
    if (run == 1) v0.data()[i] = 2.401f + 0.001f * static_cast<float>(i % 7);  // will cross back inside
    if (run == 2) v0.data()[i] = -6.0f - static_cast<float>(i % 5);
    if (run == 3) v0.data()[i] = 2.3975f;  // just inside: leaves the interior during the steps
  }
  auto run_steps = [&](auto arch_tag, bool recompute) {
    using Arch = decltype(arch_tag);
    xt::xtensor<float, 2> V = v0, sig = xt::zeros<float>(w.shape()), ws = sig;
    std::vector<float> m(w.size(), 0.0f), s2(w.size(), 0.0f);
    kernels::adaround_soft_weights<Arch>(plan, qmin, qmax, base.data(), V.data(), sig.data(), ws.data());
    std::vector<double> regs;
    for (std::size_t t = 1; t <= 12; ++t) {
      if (recompute)
        kernels::adaround_soft_weights<Arch>(plan, qmin, qmax, base.data(), V.data(), sig.data(), ws.data());
      kernels::adaround_step_constants c;
      c.adam = adam_step::make(adam_options{5e-3f}, t);
      c.lambda = t > 3 ? 0.05f : 0.0f;
      c.beta = 8.0f;
      xt::xtensor<float, 2> gt = g * (t % 2 ? 1.0f : -0.5f);
      regs.push_back(kernels::adaround_fused_step<Arch>(plan, qmin, qmax, base.data(), gt.data(), V.data(), sig.data(),
                                                        m.data(), s2.data(), ws.data(), c));
    }
    std::vector<float> all(V.begin(), V.end());
    all.insert(all.end(), ws.begin(), ws.end());
    all.insert(all.end(), m.begin(), m.end());
    all.insert(all.end(), s2.begin(), s2.end());
    for (double r : regs) all.push_back(static_cast<float>(r));
    return all;
  };
  const auto a = run_steps(simd::default_arch{}, false), b = run_steps(simd::default_arch{}, true);
  quant_test::require_bitwise_equal(a.data(), b.data(), a.size(), "kept vs recomputed sigmoid (default arch)");
  const auto c = run_steps(simd::scalar{}, false), d = run_steps(simd::scalar{}, true);
  quant_test::require_bitwise_equal(c.data(), d.data(), c.size(), "kept vs recomputed sigmoid (scalar)");
}

#if !defined(QUANT_NO_SIMD)
TEST_CASE("the division-free SIMD log is as accurate as a float log on (0, 1] and beyond", "[adaround]") {
  using B = xsimd::batch<float, simd::default_arch>;
  constexpr std::size_t L = B::size;
  std::vector<float> x;
  for (float t = 1.0f; t > 1e-30f; t *= 0.9993f) x.push_back(t);
  for (float t = 1.0f; t < 1e6f; t *= 1.0007f) x.push_back(t);
  x.push_back(0.70710677f);
  x.push_back(0.70710683f);
  x.push_back(std::nextafter(1.0f, 0.0f));
  while (x.size() % L) x.push_back(0.5f);
  double worst = 0.0;
  for (std::size_t i = 0; i < x.size(); i += L) {
    alignas(64) float out[L];
    detail::log_of(B::load_unaligned(x.data() + i)).store_aligned(out);
    for (std::size_t k = 0; k < L; ++k) {
      const double want = std::log(static_cast<double>(x[i + k]));
      const double ulp = std::nextafter(static_cast<float>(std::fabs(want)), INFINITY) - static_cast<float>(std::fabs(want));
      if (want != 0.0) worst = std::max(worst, std::fabs(out[k] - want) / ulp);
      else CHECK(out[k] == 0.0f);
    }
  }
  INFO("worst error " << worst << " ulp");
  CHECK(worst <= 2.0);
}

TEST_CASE("the SIMD exp is within 2 ulp of exp, subnormal results included, and exact at the ends", "[adaround]") {
  using B = xsimd::batch<float, simd::default_arch>;
  constexpr std::size_t L = B::size;
  std::vector<float> x;
  for (float t = -110.0f; t < 90.0f; t += 0.00137f) x.push_back(t);
  for (float t : {0.0f, -0.0f, 88.72283935546875f, 88.7229f, 88.4f, -87.3366f, -103.9f, -104.0f, -1e30f, 1e30f,
                  std::nextafter(88.72283935546875f, 0.0f), INFINITY, -INFINITY, NAN})
    x.push_back(t);
  while (x.size() % L) x.push_back(1.0f);
  double worst = 0.0;
  std::size_t checked = 0;
  for (std::size_t i = 0; i < x.size(); i += L) {
    alignas(64) float out[L];
    detail::exp_of(B::load_unaligned(x.data() + i)).store_aligned(out);
    for (std::size_t k = 0; k < L; ++k) {
      const float xi = x[i + k];
      INFO("x = " << xi << ", exp_of = " << out[k]);
      if (std::isnan(xi)) {
        CHECK(std::isnan(out[k]));
        continue;
      }
      const double want = std::exp(static_cast<double>(xi));
      const float wf = static_cast<float>(want);
      if (std::isinf(wf)) {  // beyond FLT_MAX
        CHECK(out[k] == wf);
        continue;
      }
      if (wf < std::numeric_limits<float>::min()) {                 // 0 or subnormal
        CHECK(std::fabs(out[k] - want) <= std::ldexp(1.0, -149));  // one subnormal step
        continue;
      }
      const double ulp = std::nextafter(wf, INFINITY) - wf;
      worst = std::max(worst, std::fabs(out[k] - want) / ulp);
      ++checked;
    }
  }
  INFO("worst error " << worst << " ulp over " << checked << " normal results");
  CHECK(checked > 100000);
  CHECK(worst <= 2.0);
}
#endif

TEST_CASE("the fused pass keeps subnormals out: |2h-1|^(beta-1) below e^-80 counts as 0", "[adaround]") {
  // V spread so that |2h - 1| covers (0, 1) densely: at beta = 20 about 1 % of the
  // weights have |2h-1|^19 below FLT_MIN. The pass must give the formula's values within
  // float rounding and leave no subnormal number in V, m, v or the soft weights.
  const std::size_t out = 8, in = 1000;
  const auto w = normal_matrix(out, in, 51, 0.3f);
  const qparams p = calibrate_minmax(w, grid::int_signed(4), scheme::symmetric, 0);
  const auto plan = detail::make_segment_plan(w.shape(), p, "test");
  const float qmin = float(p.qmin()), qmax = float(p.qmax());
  const xt::xtensor<float, 2> base = floor_base(w, plan);
  xt::xtensor<float, 2> V = xt::xtensor<float, 2>::from_shape(w.shape());
  for (std::size_t i = 0; i < V.size(); ++i) V.data()[i] = -2.39f + 4.78f * static_cast<float>(i) / V.size();
  const auto g = normal_matrix(out, in, 52, 1e-3f);
  const float beta = 20.0f, lambda = 0.01f;
  double reg_want = 0.0;
  for (std::size_t i = 0; i < V.size(); ++i) {
    const double h = std::min(1.0, std::max(0.0, 1.2 / (1.0 + std::exp(-double(V.data()[i]))) - 0.1));
    reg_want += 1.0 - std::pow(std::fabs(2.0 * h - 1.0), double(beta));
  }
  xt::xtensor<float, 2> ws = xt::zeros<float>(w.shape()), sig = ws;
  std::vector<float> m(w.size(), 0.0f), s2(w.size(), 0.0f);
  kernels::adaround_soft_weights<>(plan, qmin, qmax, base.data(), V.data(), sig.data(), ws.data());
  kernels::adaround_step_constants c;
  c.adam = adam_step::make(adam_options{}, 1);
  c.lambda = lambda;
  c.beta = beta;
  const double reg = kernels::adaround_fused_step<>(plan, qmin, qmax, base.data(), g.data(), V.data(), sig.data(),
                                                    m.data(), s2.data(), ws.data(), c);
  CHECK(reg == Approx(reg_want).epsilon(1e-5));
  auto subnormals = [](const float* a, std::size_t n) {
    return std::count_if(a, a + n, [](float x) { return std::fpclassify(x) == FP_SUBNORMAL; });
  };
  CHECK(subnormals(V.data(), V.size()) == 0);
  CHECK(subnormals(m.data(), m.size()) == 0);
  CHECK(subnormals(s2.data(), s2.size()) == 0);
  CHECK(subnormals(ws.data(), ws.size()) == 0);
}

// ---- Adam moments of the fused pass and the layer loss gradient, from the formulas ------
namespace {
// The formulas of adaround.hpp in double: h(V), h'(V), one regularizer term and its
// derivative (zeta = 1.1, gamma = -0.1).
double ref_sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }
double ref_stretched(double v) { return ref_sigmoid(v) * 1.2 - 0.1; }
double ref_h(double v) { return std::min(1.0, std::max(0.0, ref_stretched(v))); }
double ref_h_prime(double v) {
  const double s = ref_sigmoid(v), u = s * 1.2 - 0.1;
  return (u > 0.0 && u < 1.0) ? s * (1.0 - s) * 1.2 : 0.0;
}
double ref_reg_term(double v, double beta) { return 1.0 - std::pow(std::fabs(2.0 * ref_h(v) - 1.0), beta); }
// -2 beta |2h-1|^(beta-1) sign(2h-1) h'(V), with the fused pass's documented cut:
// |2h-1|^(beta-1) < e^-80 counts as 0.
double ref_reg_grad(double v, double beta) {
  const double t = 2.0 * ref_h(v) - 1.0;
  const double p = std::pow(std::fabs(t), beta - 1.0);
  if (!(p >= std::exp(-80.0))) return 0.0;
  return -2.0 * beta * (t < 0.0 ? -p : p) * ref_h_prime(v);
}
using quant_test::near_h_kink;

// One Adam step in double from Kingma & Ba's formula with the options' (float)
// parameters, and quant's documented flush of |g| < eps 2^-24 to 0.
struct ref_adam {
  double beta1, beta2, eps, lr;
  std::size_t t = 0;
  explicit ref_adam(const adam_options& o) : beta1(o.beta1), beta2(o.beta2), eps(o.epsilon), lr(o.learning_rate) {}
  void begin_step() { ++t; }
  double apply(double& p, double g, double& m, double& v) const {
    if (std::fabs(g) < eps * std::ldexp(1.0, -24)) g = 0.0;
    m = beta1 * m + (1.0 - beta1) * g;
    v = beta2 * v + (1.0 - beta2) * g * g;
    const double mhat = m / (1.0 - std::pow(beta1, double(t))), vhat = v / (1.0 - std::pow(beta2, double(t)));
    p -= lr * mhat / (std::sqrt(vhat) + eps);
    return p;
  }
};

}  // namespace

TEST_CASE("the fused pass's Adam moments after 1, 2 and 3 steps follow Adam's formula on the reference gradient",
          "[adaround]") {
  // Per-channel scales small enough that many weights lie beyond the 3-bit grid (no
  // reconstruction gradient, only the regularizer's), V inside (-2.3, 2.3) and saturated
  // (|V| >= 2.6: h binary, no gradient), gradients of ordinary size and, in one band of
  // columns, so small (|dL/dV| ~ 1e-9) that Adam's eps matters. Step 1 is warm-up
  // (lambda = 0); steps 2 and 3 add the regularizer at two betas. The gradient dL/dW_soft
  // changes from step to step, so after steps 2 and 3 the update depends on the moments'
  // values, not only on the sign of one gradient.
  const std::size_t out = 6, in = 67;  // odd rows: scalar tails
  const auto w = normal_matrix(out, in, 61, 0.3f);
  std::vector<float> scales(out);
  for (std::size_t o = 0; o < out; ++o) scales[o] = 0.05f * (1.0f + 0.25f * static_cast<float>(o));
  const qparams p = qparams::per_channel(grid::int_signed(3), scales, 0);
  const auto plan = detail::make_segment_plan(w.shape(), p, "test");
  const float qmin = float(p.qmin()), qmax = float(p.qmax());
  const xt::xtensor<float, 2> base = floor_base(w, plan);
  xt::xtensor<float, 2> v0 = xt::xtensor<float, 2>::from_shape(w.shape());
  for (std::size_t i = 0; i < v0.size(); ++i) {
    const float frac = static_cast<float>((i * 37) % 101) / 100.0f;
    v0.data()[i] = i % 5 == 4 ? (i % 2 ? 1.0f : -1.0f) * (2.6f + static_cast<float>(i % 3)) : -2.3f + 4.6f * frac;
  }
  std::vector<xt::xtensor<float, 2>> g = {normal_matrix(out, in, 62, 0.2f), normal_matrix(out, in, 63, 0.2f),
                                          normal_matrix(out, in, 64, 0.2f)};
  for (auto& gt : g)
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t i = 3; i < in; i += 7) gt(o, i) *= 1e-6f;
  const float lambdas[3] = {0.0f, 2e-3f, 2e-3f}, betas[3] = {20.0f, 10.0f, 4.0f};
  const adam_options ao{1e-2f};

  // Reference: dL/dV = g s 1[qmin <= base + h <= qmax] h'(V) + lambda df_reg/dV, Adam in double.
  const std::size_t n = w.size();
  std::vector<double> V(v0.begin(), v0.end()), M(n, 0.0), S(n, 0.0), mag(n, 0.0);
  std::vector<std::vector<double>> want_v(3), want_m(3), want_s(3), want_mag(3);
  std::vector<double> want_reg(3, 0.0);
  ref_adam ref(ao);
  std::size_t clipped = 0, saturated = 0, regularized = 0, tiny = 0;
  for (std::size_t t = 0; t < 3; ++t) {
    ref.begin_step();
    for (std::size_t i = 0; i < n; ++i) {
      const double s = scales[i / in], h = ref_h(V[i]), q = double(base.data()[i]) + h;
      const double rec = (q >= qmin && q <= qmax) ? double(g[t].data()[i]) * s * ref_h_prime(V[i]) : 0.0;
      const double reg = lambdas[t] * ref_reg_grad(V[i], betas[t]);
      if (lambdas[t] > 0.0f) want_reg[t] += ref_reg_term(V[i], betas[t]);
      mag[i] = std::max(mag[i], std::fabs(rec) + std::fabs(reg));  // scale of the float rounding errors
      if (t == 0) {
        clipped += (q < qmin || q > qmax) && ref_h_prime(V[i]) > 0.0;
        saturated += ref_h_prime(V[i]) == 0.0;
        tiny += std::fabs(rec) > 0.0 && std::fabs(rec) < 1e-7;
      }
      regularized += reg != 0.0;
      ref.apply(V[i], rec + reg, M[i], S[i]);
    }
    want_v[t] = V, want_m[t] = M, want_s[t] = S, want_mag[t] = mag;
  }
  CHECK(clipped > 20);
  CHECK(saturated > 40);
  CHECK(tiny > 10);
  CHECK(regularized > 200);

  auto run = [&](auto arch_tag) {
    using Arch = decltype(arch_tag);
    xt::xtensor<float, 2> vv = v0, sig = xt::zeros<float>(w.shape()), ws = sig;
    std::vector<float> m(n, 0.0f), s2(n, 0.0f);
    kernels::adaround_soft_weights<Arch>(plan, qmin, qmax, base.data(), vv.data(), sig.data(), ws.data());
    for (std::size_t t = 0; t < 3; ++t) {
      kernels::adaround_step_constants c;
      c.adam = adam_step::make(ao, t + 1);
      c.lambda = lambdas[t];
      c.beta = betas[t];
      const double reg = kernels::adaround_fused_step<Arch>(plan, qmin, qmax, base.data(), g[t].data(), vv.data(),
                                                            sig.data(), m.data(), s2.data(), ws.data(), c);
      INFO("step " << t + 1);
      CHECK(reg == Approx(want_reg[t]).epsilon(1e-5));
      double worst_m = 0.0, worst_v = 0.0, worst_V = 0.0;
      for (std::size_t i = 0; i < n; ++i) {
        // m and v within float rounding of the gradient (exp/log within a few ulp; the
        // regularizer's pow within ~80 ulp) relative to the size of the gradient's terms,
        // V within a few ulp plus what those errors move it
        const double a = want_mag[t][i];
        worst_m = std::max(worst_m, std::fabs(m[i] - want_m[t][i]) / (1e-5 * a + 1e-30));
        const double v_scale = (1.0 - double(ao.beta2)) * double(t + 1) * a * a;  // bounds v
        worst_v = std::max(worst_v, std::fabs(s2[i] - want_s[t][i]) / (4e-5 * v_scale + 1e-38));
        const double vi = want_v[t][i];
        worst_V = std::max(worst_V, std::fabs(vv.data()[i] - vi) / (4e-7 * std::fabs(vi) + 1e-5 * ao.learning_rate));
        if (t == 2) {
          const double s = scales[i / in], z = 0.0;
          const double qs = std::min<double>(qmax, std::max<double>(qmin, base.data()[i] + ref_h(vi)));
          CHECK(ws.data()[i] == Approx(s * (qs - z)).margin(1e-6));
          if (std::fabs(vi) < 2.39) CHECK(sig.data()[i] == Approx(ref_sigmoid(vi)).margin(1e-6));  // else kept as 0 / 1
        }
      }
      INFO("worst error / tolerance: m " << worst_m << ", v " << worst_v << ", V " << worst_V);
      CHECK(worst_m <= 1.0);
      CHECK(worst_v <= 1.0);
      CHECK(worst_V <= 1.0);
    }
  };
  SECTION("scalar") { run(simd::scalar{}); }
  SECTION("default arch") { run(simd::default_arch{}); }
}

namespace {
// The layer objective of adaround.hpp in double, for one weight's central difference:
//   L(V) = (1/B) sum_{b,o} (f_a(W_soft(V) x_hat_b + bias) - f_a(W x_b + bias))_o^2 + lambda f_reg(V)
// Only output o and one regularizer term depend on V[o, i], so the difference quotient
// is taken over those terms (the others cancel exactly).
struct layer_objective {
  const xt::xtensor<float, 2>&w, &x, &x_hat;
  const xt::xtensor<float, 1>* bias;
  bool relu;
  const qparams& p;
  double lambda, beta;
  xt::xtensor<double, 2> pre_hat, target;  // [B, out] at V (pre-activation) and the FP targets

  double f(double a) const { return relu && !(a > 0.0) ? 0.0 : a; }
  double soft(std::size_t o, std::size_t i, double v) const {
    const float s = p.scale(o), inv = 1.0f / s, z = float(p.zero_point(o));
    const double base = std::floor(w(o, i) * inv) + z;  // W * (1/s) with the float reciprocal
    return double(s) * (std::min<double>(p.qmax(), std::max<double>(p.qmin(), base + ref_h(v))) - z);
  }
  void prepare(const xt::xtensor<float, 2>& v) {
    const std::size_t B = x.shape()[0], out = w.shape()[0], in = w.shape()[1];
    pre_hat = xt::zeros<double>({B, out});
    target = xt::zeros<double>({B, out});
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t o = 0; o < out; ++o) {
        double a = bias ? double((*bias)(o)) : 0.0, t = a;
        for (std::size_t i = 0; i < in; ++i) {
          a += soft(o, i, v(o, i)) * x_hat(b, i);
          t += double(w(o, i)) * x(b, i);
        }
        pre_hat(b, o) = a;
        target(b, o) = f(t);
      }
  }
  double central_difference(const xt::xtensor<float, 2>& v, std::size_t o, std::size_t i, double eps) const {
    const double dw_plus = soft(o, i, v(o, i) + eps) - soft(o, i, v(o, i));
    const double dw_minus = soft(o, i, v(o, i) - eps) - soft(o, i, v(o, i));
    const std::size_t B = x.shape()[0];
    double diff = 0.0;
    for (std::size_t b = 0; b < B; ++b) {
      const double ep = f(pre_hat(b, o) + dw_plus * x_hat(b, i)) - target(b, o);
      const double em = f(pre_hat(b, o) + dw_minus * x_hat(b, i)) - target(b, o);
      diff += ep * ep - em * em;
    }
    diff /= static_cast<double>(B);
    diff += lambda * (ref_reg_term(v(o, i) + eps, beta) - ref_reg_term(v(o, i) - eps, beta));
    return diff / (2.0 * eps);
  }
};
}  // namespace

TEST_CASE("the layer loss gradient dL/dV with bias, ReLU, X_hat and the regularizer matches central differences",
          "[adaround]") {
  // One optimizer step on all calibration rows (batch = rows) at a V away from the init,
  // so that W_soft differs from W; the regularizer on from the first iteration (no warm-up).
  // The optimizer's dL/dW_soft (left in its variables' gradient buffer by the step) goes
  // through the fused pass as adaround_variables::step sends it; the resulting dL/dV is
  // compared with central differences of L in double.
  const std::size_t out = 8, in = 24, rows = 40;
  const auto w = normal_matrix(out, in, 71, 0.3f);
  const auto x = correlated_inputs(rows, in, 72);
  const xt::xtensor<float, 2> x_hat = x + 0.05f * normal_matrix(rows, in, 73);
  xt::xtensor<float, 1> bias = xt::xtensor<float, 1>::from_shape({out});
  for (std::size_t o = 0; o < out; ++o) bias(o) = 0.15f * static_cast<float>(static_cast<int>(o % 5) - 2);
  const qparams p = calibrate_minmax(w, grid::int_signed(3), scheme::symmetric, 0);
  adaround_options opt;
  opt.iterations = 1;
  opt.batch_size = rows;
  opt.warmup = 0.0f;
  opt.lambda = 0.01f;
  opt.beta_start = opt.beta_end = 3.0f;
  opt.act = activation::relu;
  opt.initial_v = eager::adaround_init(w, p) + 0.6f * normal_matrix(out, in, 74);
  const xt::xtensor<float, 2> v0 = opt.initial_v;
  adaround_optimizer ada(w, x, p, opt, &x_hat, &bias);
  ada.step();
  // adaround_optimizer exposes its variables read-only; the step has just filled their
  // gradient buffer with dL_rec/dW_soft at v0.
  const xt::xtensor<float, 2> grad = const_cast<adaround_variables&>(ada.variables()).gradient();
  const std::vector<double> dv = fused_pass_dv(w, v0, p, grad, opt.lambda, opt.beta_start);

  layer_objective L{w, x, x_hat, &bias, true, p, opt.lambda, opt.beta_start, {}, {}};
  L.prepare(v0);
  double min_abs_pre = INFINITY;
  std::size_t relu_off = 0;
  for (double a : L.pre_hat) {
    min_abs_pre = std::min(min_abs_pre, std::fabs(a));
    relu_off += a <= 0.0;
  }
  REQUIRE(min_abs_pre > 1e-4);  // no difference quotient straddles the ReLU's kink
  CHECK(relu_off > L.pre_hat.size() / 10);  // the ReLU is active on part of the outputs
  const double eps = 1e-6;
  std::vector<double> fd(w.size(), 0.0);
  double scale = 0.0;
  std::size_t checked = 0;
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t i = 0; i < in; ++i) {
      if (near_h_kink(v0(o, i))) continue;
      fd[o * in + i] = L.central_difference(v0, o, i, eps);
      scale = std::max(scale, std::fabs(fd[o * in + i]));
      ++checked;
    }
  REQUIRE(checked > w.size() * 3 / 4);
  double worst = 0.0;
  for (std::size_t k = 0; k < w.size(); ++k) {
    if (near_h_kink(v0.data()[k])) continue;
    const double tol = 1e-5 * scale + 1e-4 * std::fabs(fd[k]);
    worst = std::max(worst, std::fabs(dv[k] - fd[k]) / tol);
    if (std::fabs(dv[k] - fd[k]) > tol) {
      INFO("V[" << k << "] = " << v0.data()[k] << ": fused pass " << dv[k] << ", central difference " << fd[k]);
      CHECK(dv[k] == Approx(fd[k]).margin(tol));
    }
  }
  INFO("worst |error| / tolerance " << worst << ", max |dL/dV| " << scale);
  CHECK(worst <= 1.0);

  SECTION("each of X_hat, the bias, the ReLU and the regularizer changes the gradient beyond the tolerance") {
    // The same comparison against objectives that each drop one ingredient: a gradient
    // computed without it would fail the check above.
    const xt::xtensor<float, 1> no_bias = xt::zeros<float>({out});
    layer_objective variants[4] = {{w, x, x, &bias, true, p, opt.lambda, opt.beta_start, {}, {}},
                                   {w, x, x_hat, &no_bias, true, p, opt.lambda, opt.beta_start, {}, {}},
                                   {w, x, x_hat, &bias, false, p, opt.lambda, opt.beta_start, {}, {}},
                                   {w, x, x_hat, &bias, true, p, 0.0, opt.beta_start, {}, {}}};
    for (auto& Lv : variants) {
      Lv.prepare(v0);
      double dev = 0.0;
      for (std::size_t o = 0; o < out; ++o)
        for (std::size_t i = 0; i < in; ++i)
          if (!near_h_kink(v0(o, i)))
            dev = std::max(dev, std::fabs(Lv.central_difference(v0, o, i, eps) - dv[o * in + i]));
      CHECK(dev > 100.0 * 1e-5 * scale);
    }
  }
  SECTION("the first Adam step moves V by -lr g / (|g| + eps) for that gradient") {
    const double lr = opt.learning_rate;
    for (std::size_t k = 0; k < w.size(); ++k) {
      if (near_h_kink(v0.data()[k])) continue;
      const double want = v0.data()[k] - lr * fd[k] / (std::fabs(fd[k]) + 1e-8);
      CHECK(ada.v().data()[k] == Approx(want).margin(4e-7 * std::fabs(want) + 1e-3 * lr));
    }
  }
}

namespace {
struct layer_case {
  xt::xtensor<float, 2> w, x_cal, x_test;
};
layer_case make_layer(std::size_t out, std::size_t in) {
  return {normal_matrix(out, in, 21, 1.0f / std::sqrt(static_cast<float>(in))), correlated_inputs(1024, in, 22),
          correlated_inputs(1024, in, 23)};
}
}  // namespace

TEST_CASE("AdaRound beats round-to-nearest on held-out data at 4, 3 and 2 bits; h ends binary", "[adaround][long]") {
  const auto L = make_layer(24, 64);
  for (int bits : {4, 3, 2}) {
    const grid g = grid::int_signed(bits);
    const qparams p = calibrate_mse(L.w, g, scheme::symmetric, 0);
    adaround_options o;
    o.iterations = 3000;  // short schedule: a larger step than the default 1e-3
    o.learning_rate = 1e-2f;
    o.batch_size = 64;
    o.seed = 1;
    std::size_t calls = 0;
    o.progress = [&](const adaround_progress& pr) {
      ++calls;
      CHECK(pr.warmup == (pr.iteration <= 600));
      CHECK(pr.beta <= 20.0f);
    };
    const auto r = adaround_layer(L.w, L.x_cal, p, o);
    CHECK(calls == o.iterations);
    const xt::xtensor<float, 2> w_rtn = eager::fake_quantize(L.w, p);
    const double e_rtn = output_error(L.w, w_rtn, L.x_test), e_ada = output_error(L.w, r.weights, L.x_test);
    INFO("bits " << bits << ": held-out error RTN " << e_rtn << ", AdaRound " << e_ada << ", flipped "
                 << r.report.flipped_fraction << ", non-binary " << r.report.non_binary_fraction);
    CHECK(e_ada < 0.5 * e_rtn);
    CHECK(r.report.adaround_error < 0.5 * r.report.rtn_error);
    CHECK(r.report.non_binary_fraction < 0.02);
    CHECK(r.report.flipped_fraction > 0.0);
    CHECK(r.report.iterations == o.iterations);
    // integer weights on the grid, weights = s (q - z)
    for (std::size_t oi = 0; oi < 24; ++oi)
      for (std::size_t i = 0; i < 64; ++i) {
        CHECK(r.integer_weights(oi, i) >= g.qmin());
        CHECK(r.integer_weights(oi, i) <= g.qmax());
        CHECK(r.weights(oi, i) == p.scale(oi) * static_cast<float>(r.integer_weights(oi, i)));
      }
  }
}

TEST_CASE("AdaRound with ReLU, bias, asymmetric reconstruction and a cosine schedule", "[adaround]") {
  const auto L = make_layer(16, 48);
  xt::xtensor<float, 1> bias = xt::xtensor<float, 1>::from_shape({16});
  for (std::size_t i = 0; i < 16; ++i) bias(i) = 0.1f * static_cast<float>(i % 5) - 0.2f;
  // the quantized model's input: the FP input plus a small perturbation
  xt::xtensor<float, 2> x_hat = L.x_cal + 0.02f * normal_matrix(1024, 48, 99);
  const qparams p = calibrate_mse(L.w, grid::int_signed(3), scheme::symmetric, 0);
  adaround_options o;
  o.iterations = 1500;
  o.learning_rate = 1e-2f;
  o.act = activation::relu;
  o.beta_schedule = adaround_options::schedule::cosine;
  const auto r = adaround_layer(L.w, L.x_cal, p, o, &x_hat, &bias);
  INFO("RTN " << r.report.rtn_error << " AdaRound " << r.report.adaround_error);
  CHECK(r.report.adaround_error < 0.8 * r.report.rtn_error);
  CHECK(o.beta_at(0) == 20.0f);
  CHECK(o.beta_at(300) == 20.0f);
  CHECK(o.beta_at(300 + 600) == Approx(11.0f));
  CHECK(o.beta_at(1499) == Approx(2.0f).margin(1e-3));
}

TEST_CASE("same seed, same result; 1 and 2 threads identical", "[adaround]") {
  const auto w = normal_matrix(64, 1024, 31, 0.05f);  // 2^16 weights: the fused pass runs threaded
  const auto x = correlated_inputs(64, 1024, 32);
  const qparams p = calibrate_minmax(w, grid::int_signed(4), scheme::symmetric, 0);
  adaround_options o;
  o.iterations = 6;
  o.warmup = 0.5f;
  o.batch_size = 16;
  o.seed = 5;
  set_num_threads(1);
  adaround_optimizer a(w, x, p, o);
  a.run();
  set_num_threads(2);
  adaround_optimizer b(w, x, p, o);
  b.run();
  set_num_threads(0);
  quant_test::require_bitwise_equal(a.v(), b.v(), w.size(), "V, 1 vs 2 threads");
  CHECK(a.last_progress().reconstruction_loss == b.last_progress().reconstruction_loss);
  CHECK(a.last_progress().regularizer == b.last_progress().regularizer);
  o.seed = 6;
  adaround_optimizer c(w, x, p, o);
  c.run();
  CHECK(c.last_progress().reconstruction_loss != a.last_progress().reconstruction_loss);
}

TEST_CASE("the layer optimizer and the variables take any 2-D xtensor expression", "[adaround]") {
  // The same values as an xtensor, an xarray, a double xarray (converted to float, exactly:
  // every value is a float) and a lazy expression give bit-identical results.
  const auto w = normal_matrix(5, 12, 81, 0.4f);
  const auto x = normal_matrix(30, 12, 82);
  const qparams p = calibrate_minmax(w, grid::int_signed(4), scheme::symmetric, 0);
  adaround_options o;
  o.iterations = 40;
  o.batch_size = 8;
  o.seed = 3;
  const adaround_result want = adaround_layer(w, x, p, o);
  const auto same = [&](const adaround_result& r) {
    CHECK((r.integer_weights == want.integer_weights));
    CHECK((r.weights == want.weights));
    CHECK(r.report.adaround_error == want.report.adaround_error);
    CHECK(r.report.rtn_error == want.report.rtn_error);
  };
  SECTION("xarray<float>") { same(adaround_layer(xt::xarray<float>(w), xt::xarray<float>(x), p, o)); }
  SECTION("xarray<double>") {
    same(adaround_layer(xt::xarray<double>(xt::cast<double>(w)), xt::xarray<double>(xt::cast<double>(x)), p, o));
  }
  SECTION("lazy expressions") { same(adaround_layer(1.0f * w, x + 0.0f, p, o)); }
  SECTION("adaround_optimizer keeps its own copy of an X that is not an xtensor<float, 2>") {
    adaround_optimizer a(w, xt::xarray<float>(x), p, o);  // the temporary ends here
    a.run();
    same(a.result());
  }
  SECTION("adaround_optimizer takes over a temporary xtensor<float, 2> X instead of referencing it") {
    adaround_optimizer a(w, xt::xtensor<float, 2>(x), p, o);  // the temporary ends here
    a.run();
    same(a.result());
  }
  SECTION("adaround_variables and set_v") {
    const adaround_variables a(w, p), b(xt::xarray<double>(xt::cast<double>(w)), p);
    CHECK((a.soft_weights() == b.soft_weights()));
    adaround_variables c(w, p);
    const xt::xtensor<float, 2> v = eager::adaround_init(w, p) + 0.25f;
    c.set_v(v);
    adaround_variables d(w, p);
    d.set_v(v - 0.0f);
    CHECK((c.soft_weights() == d.soft_weights()));
    CHECK((c.v() == v));
  }
}

TEST_CASE("bad inputs throw clear quant exceptions", "[adaround]") {
  const auto w = normal_matrix(4, 8, 1);
  const auto x = normal_matrix(20, 8, 2);
  const qparams p = calibrate_minmax(w, grid::int_signed(4), scheme::symmetric, 0);
  adaround_options o;
  o.iterations = 2;
  o.batch_size = 4;
  CHECK_NOTHROW(adaround_layer(w, x, p, o));
  CHECK_THROWS_AS(adaround_layer(w, normal_matrix(20, 9, 2), p, o), quant::length_error);
  CHECK_THROWS_WITH(adaround_layer(w, normal_matrix(20, 9, 2), p, o), Catch::Contains("quant::adaround_layer: X.shape()"));
  xt::xtensor<float, 2> empty = xt::xtensor<float, 2>::from_shape({0, 8});
  CHECK_THROWS_AS(adaround_layer(w, empty, p, o), quant::invalid_argument);
  auto o2 = o;
  o2.batch_size = 21;
  CHECK_THROWS_WITH(adaround_layer(w, x, p, o2), Catch::Contains("batch_size = 21"));
  o2 = o;
  o2.iterations = 0;
  CHECK_THROWS_AS(adaround_layer(w, x, p, o2), quant::invalid_argument);
  o2 = o;
  o2.lambda = -0.1f;
  CHECK_THROWS_WITH(adaround_layer(w, x, p, o2), Catch::Contains("lambda = -0.1"));
  o2 = o;
  o2.warmup = 1.0f;
  CHECK_THROWS_AS(adaround_layer(w, x, p, o2), quant::invalid_argument);
  o2 = o;
  o2.beta_end = 30.0f;
  CHECK_THROWS_AS(adaround_layer(w, x, p, o2), quant::invalid_argument);
  o2 = o;
  o2.learning_rate = 0.0f;
  CHECK_THROWS_AS(adaround_layer(w, x, p, o2), quant::invalid_argument);
  // named by the entry point called, not by the Adam inside it
  CHECK_THROWS_WITH(adaround_layer(w, x, p, o2), "quant::adaround_layer: learning_rate = 0: must be finite and > 0");
  CHECK_THROWS_WITH(adaround_variables(w, p, 0.0f), "quant::adaround_variables: learning_rate = 0: must be finite and > 0");
  CHECK_THROWS_WITH(adaround_variables(w, p, std::nanf("")),
                    "quant::adaround_variables: learning_rate = nan: must be finite and > 0");
  auto xn = x;
  xn(3, 2) = NAN;
  CHECK_THROWS_AS(adaround_layer(w, xn, p, o), quant::domain_error);
  auto wn = w;
  wn(0, 0) = INFINITY;
  CHECK_THROWS_AS(adaround_layer(wn, x, p, o), quant::domain_error);
  CHECK_THROWS_WITH(adaround_layer(wn, x, p, o), Catch::Contains("quant::adaround_layer: W = inf"));
  auto ov = o;
  ov.initial_v = xt::zeros<float>({4, 9});
  CHECK_THROWS_WITH(adaround_layer(w, x, p, ov), Catch::Contains("quant::adaround_layer: V.shape() = [4, 9]"));
  const xt::xarray<float> x3 = xt::zeros<float>({20, 8, 1});
  CHECK_THROWS_AS(adaround_layer(w, x3, p, o), quant::invalid_argument);
  CHECK_THROWS_WITH(adaround_layer(w, x3, p, o), Catch::Contains("quant::adaround_layer: X.shape() = [20, 8, 1]"));
  CHECK_THROWS_WITH(adaround_layer(xt::xarray<float>(xt::zeros<float>({4, 8, 1})), x, p, o),
                    Catch::Contains("quant::adaround_layer: W.shape() = [4, 8, 1]"));
  xt::xtensor<float, 2> xh = normal_matrix(19, 8, 3);
  CHECK_THROWS_AS(adaround_layer(w, x, p, o, &xh), quant::length_error);
  xt::xtensor<float, 1> b3 = xt::zeros<float>({3});
  CHECK_THROWS_AS(adaround_layer(w, x, p, o, nullptr, &b3), quant::length_error);
  const qparams p5 = qparams::per_channel(grid::int_signed(4), std::vector<float>(5, 0.1f), 0);
  CHECK_THROWS_AS(adaround_layer(w, x, p5, o), quant::length_error);
  CHECK_THROWS_AS(adaround_regularizer_terms(x, 0.5f), quant::invalid_argument);
}

TEST_CASE("progress printer draws a line with ETA", "[adaround]") {
  std::ostringstream os;
  adaround_progress_printer pr(os, "layer1", true, 0.0);
  for (std::size_t i = 1; i <= 3; ++i) pr(adaround_progress{i, 3, 0.5, 12.0, 20.0f, i == 1});
  const std::string s = os.str();
  CHECK(s.find("\rlayer1 [1/3]  33%") != std::string::npos);
  CHECK(s.find("(warm-up)") != std::string::npos);
  CHECK(s.find("ETA") != std::string::npos);
  CHECK(s.back() == '\n');
  CHECK(adaround_progress_printer::format_seconds(3725.0) == "1:02:05");
}

TEST_CASE("im2col: convolution as a GEMM matches the direct sum; col2im is its adjoint", "[im2col]") {
  conv2d_shape g;
  g.channels = 3, g.height = 7, g.width = 6, g.kernel_h = 3, g.kernel_w = 2;
  g.stride_h = 2, g.stride_w = 1, g.pad_h = 1, g.pad_w = 1, g.dilation_h = 1, g.dilation_w = 2;
  const std::size_t n = 2, out = 4;
  xt::xtensor<float, 4> x = xt::xtensor<float, 4>::from_shape({n, 3, 7, 6});
  auto xv = quant_test::normal_floats(x.size(), 8);
  std::copy(xv.begin(), xv.end(), x.begin());
  const auto w = normal_matrix(out, g.patch_size(), 9);
  const auto cols = im2col(x, g);
  REQUIRE(cols.shape()[0] == n * g.out_h() * g.out_w());
  xt::xtensor<float, 2> y = xt::xtensor<float, 2>::from_shape({cols.shape()[0], out});
  xt::blas::gemm(cols, w, y, false, true);
  const auto y4 = rows_to_nchw(y, g.out_h(), g.out_w());
  for (std::size_t b = 0; b < n; ++b)
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t oy = 0; oy < g.out_h(); ++oy)
        for (std::size_t ox = 0; ox < g.out_w(); ++ox) {
          double acc = 0.0;
          for (std::size_t c = 0; c < 3; ++c)
            for (std::size_t ky = 0; ky < 3; ++ky)
              for (std::size_t kx = 0; kx < 2; ++kx) {
                const long yy = long(oy * 2 + ky) - 1, xx = long(ox + kx * 2) - 1;
                if (yy < 0 || yy >= 7 || xx < 0 || xx >= 6) continue;
                acc += double(x(b, c, yy, xx)) * w(o, (c * 3 + ky) * 2 + kx);
              }
          CHECK(y4(b, o, oy, ox) == Approx(acc).margin(1e-4));
        }
  const auto d = normal_matrix(cols.shape()[0], cols.shape()[1], 10);
  const auto dx = col2im(d, g);
  double lhs = 0.0, rhs = 0.0;
  for (std::size_t i = 0; i < cols.size(); ++i) lhs += double(cols.data()[i]) * d.data()[i];
  for (std::size_t i = 0; i < x.size(); ++i) rhs += double(x.data()[i]) * dx.data()[i];
  CHECK(lhs == Approx(rhs).epsilon(1e-5));
  conv2d_shape bad = g;
  bad.kernel_h = 20;
  CHECK_THROWS_AS(im2col(x, bad), quant::invalid_argument);
  bad = g;
  bad.channels = 4;
  CHECK_THROWS_AS(im2col(x, bad), quant::length_error);
}
