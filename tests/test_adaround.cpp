// AdaRound: primitives against finite differences (double), the fused pass against the
// primitives, the layer optimizer against round-to-nearest on held-out data.
#include <quant/adaround.hpp>
#include <quant/im2col.hpp>
#include <quant/observers.hpp>

#include <cmath>
#include <random>
#include <sstream>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xmath.hpp>

#include "test_helpers.hpp"

using namespace quant;
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

// floor(W/s) + z, the fused pass's `base`, for W laid out by `plan`.
xt::xtensor<float, 2> floor_base(const xt::xtensor<float, 2>& w, const detail::segment_plan& plan) {
  xt::xtensor<float, 2> base = xt::xtensor<float, 2>::from_shape(w.shape());
  detail::for_each_param(plan, 0, plan.n, [&](std::size_t i, float, float inv_s, float z) {
    base.data()[i] = std::floor(w.data()[i] * inv_s) + z;
  });
  return base;
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
  const auto v = adaround_init(w, p);
  xt::xtensor<float, 2> ws = soft_weight(w, v, p);
  for (std::size_t o = 0; o < 8; ++o)
    for (std::size_t i = 0; i < 37; ++i)  // W itself, clipped to the grid's range
      CHECK(ws(o, i) == Approx(std::min(std::max(w(o, i), -8 * p.scale(o)), 7 * p.scale(o))).margin(2e-6));
  // hard rounding at init = rounding to nearest (ties up) on the grid
  const auto q = adaround_integer_weights(w, v, p);
  const auto q_rtn = eager::quantize<std::int32_t>(w, p);
  std::size_t diff = 0;
  for (std::size_t i = 0; i < w.size(); ++i) diff += q.data()[i] != q_rtn.data()[i];
  CHECK(diff <= 2);  // only exact ties may differ (W = -absmax sits on -7.5: RTN -8, AdaRound up)
  xt::xtensor<float, 2> hw = hard_weight(w, v, p);
  for (std::size_t o = 0; o < 8; ++o)
    for (std::size_t i = 0; i < 37; ++i) CHECK(hw(o, i) == p.scale(o) * static_cast<float>(q(o, i)));
  CHECK(adaround_regularizer(v, 2.0f) == Approx(xt::sum(adaround_regularizer_terms(v, 2.0f))()).epsilon(1e-5));
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
    auto v = adaround_init(w, p);
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
    const double reg_want = adaround_regularizer(v, beta);
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
  xt::xtensor<float, 2> v0 = adaround_init(w, p);
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

namespace {
struct layer_case {
  xt::xtensor<float, 2> w, x_cal, x_test;
};
layer_case make_layer(std::size_t out, std::size_t in) {
  return {normal_matrix(out, in, 21, 1.0f / std::sqrt(static_cast<float>(in))), correlated_inputs(1024, in, 22),
          correlated_inputs(1024, in, 23)};
}
}  // namespace

TEST_CASE("AdaRound beats round-to-nearest on held-out data at 4, 3 and 2 bits; h ends binary", "[adaround]") {
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
  auto xn = x;
  xn(3, 2) = NAN;
  CHECK_THROWS_AS(adaround_layer(w, xn, p, o), quant::domain_error);
  auto wn = w;
  wn(0, 0) = INFINITY;
  CHECK_THROWS_AS(adaround_layer(wn, x, p, o), quant::domain_error);
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
