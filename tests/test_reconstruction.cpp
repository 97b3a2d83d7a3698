// BRECQ block reconstruction with QDrop: beats layer-wise AdaRound + plain activation
// quantization at W2A4 on held-out data; conv blocks; determinism; bad input; the
// gradients of V and of the step sizes against central differences in double, Fisher
// weighting, QDrop's keep probability and p = 1 as plain BRECQ.
#include <quant/reconstruction.hpp>

#include <cmath>
#include <string>
#include <vector>

#include <xtensor/xview.hpp>

#include "adaround_test_helpers.hpp"
#include "test_helpers.hpp"

using namespace quant;
using quant_test::fused_pass_dv;
using quant_test::normal_matrix;

namespace {


// Correlated block inputs: a low-dimensional latent mixed into `in` features (signed).
xt::xtensor<float, 2> block_inputs(std::size_t rows, std::size_t in, std::uint32_t seed) {
  const auto z = normal_matrix(rows, in / 4, seed);
  const auto a = normal_matrix(in / 4, in, 70, 1.0f / std::sqrt(static_cast<float>(in / 4)));
  xt::xtensor<float, 2> x = xt::xtensor<float, 2>::from_shape({rows, in});
  xt::blas::gemm(z, a, x);
  return x;
}

block_layer linear(std::size_t out, std::size_t in, std::uint32_t seed, activation act, int wbits) {
  block_layer L;
  L.weight = normal_matrix(out, in, seed, std::sqrt(2.0f / static_cast<float>(in)));
  L.bias = xt::xtensor<float, 1>::from_shape({out});
  for (std::size_t o = 0; o < out; ++o) L.bias(o) = 0.05f * static_cast<float>(static_cast<int>(o % 7) - 3);
  L.act = act;
  L.weight_qparams = calibrate_mse(L.weight, grid::int_signed(wbits), scheme::symmetric, 0);
  return L;
}

// Attaches MSE-initialized A-bit input quantizers computed on the FP activations.
void attach_quantizers(std::vector<block_layer>& layers, const xt::xtensor<float, 2>& x, int abits) {
  xt::xtensor<float, 2> a = x;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    layers[l].input_quantizer = activation_quantizer(a, l == 0 ? grid::int_signed(abits) : grid::int_unsigned(abits));
    std::vector<block_layer> one = {layers[l]};
    one[0].input_quantizer.reset();
    a = block_forward(one, a, false);
  }
}

double output_error(const xt::xtensor<float, 2>& y, const xt::xtensor<float, 2>& t) {
  double acc = 0.0;
  for (std::size_t i = 0; i < y.size(); ++i) acc += std::pow(double(y.data()[i]) - t.data()[i], 2);
  return acc / static_cast<double>(y.shape()[0]);
}

}  // namespace

TEST_CASE("QDrop at W2A4 beats layer-wise AdaRound followed by plain activation quantization", "[reconstruction][long]") {
  const std::size_t in = 32;
  std::vector<block_layer> layers = {linear(48, in, 1, activation::relu, 2), linear(48, 48, 2, activation::relu, 2),
                                     linear(16, 48, 3, activation::identity, 2)};
  const auto x_cal = block_inputs(1024, in, 10), x_test = block_inputs(1024, in, 11);
  attach_quantizers(layers, x_cal, 4);
  const auto y_test = block_forward(layers, x_test, false);
  // A short schedule (2000 instead of 20000 iterations): a larger step and a stronger
  // regularizer (lambda 0.1) so that h still ends binary; the same for both methods.
  const std::size_t iters = 2000;
  const float lambda = 0.1f;

  // Baseline: AdaRound each layer on its FP input, then quantize activations as initialized.
  std::vector<block_layer> base = layers;
  xt::xtensor<float, 2> a = x_cal;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    adaround_options o;
    o.iterations = iters;
    o.learning_rate = 1e-2f;
    o.lambda = lambda;
    o.batch_size = 32;
    o.act = layers[l].act;
    const auto r = adaround_layer(layers[l].weight, a, layers[l].weight_qparams, o, nullptr, &layers[l].bias);
    base[l].weight = r.weights;
    std::vector<block_layer> one = {layers[l]};
    one[0].input_quantizer.reset();
    a = block_forward(one, a, false);
  }
  const double e_base = output_error(block_forward(base, x_test, true), y_test);

  // Block reconstruction with QDrop (p = 0.5) and learned step sizes.
  block_options bo;
  bo.iterations = iters;
  bo.learning_rate = 1e-2f;
  bo.lambda = lambda;
  bo.scale_learning_rate = 1e-3f;  // short schedule
  bo.seed = 3;
  std::size_t calls = 0;
  bo.progress = [&](const adaround_progress&) { ++calls; };
  const auto r = reconstruct_block(layers, x_cal, bo);
  CHECK(calls == iters);
  const double e_qdrop = output_error(block_forward(r.layers, x_test, true), y_test);
  // RTN weights with the initial quantizers, for scale
  std::vector<block_layer> rtn = layers;
  for (auto& L : rtn) L.weight = eager::fake_quantize(L.weight, L.weight_qparams);
  const double e_rtn = output_error(block_forward(rtn, x_test, true), y_test);
  INFO("held-out block error: RTN " << e_rtn << ", AdaRound + act quant " << e_base << ", QDrop " << e_qdrop);
  CHECK(e_qdrop < 0.9 * e_base);
  CHECK(e_base < e_rtn);
  CHECK(r.report.final_error < r.report.initial_error);
  for (double nb : r.report.non_binary_fraction) CHECK(nb < 0.05);
  for (std::size_t l = 0; l < 3; ++l) {
    CHECK(r.layers[l].input_quantizer->scale[0] != layers[l].input_quantizer->scale[0]);  // learned
    CHECK(r.integer_weights[l].shape()[0] == layers[l].weight.shape()[0]);
  }
}

TEST_CASE("a conv -> ReLU -> linear block reconstructs; same seed and 1 vs 2 threads identical", "[reconstruction]") {
  block_layer conv;
  conv.type = block_layer::kind::conv2d;
  conv.conv.channels = 2, conv.conv.height = 6, conv.conv.width = 6, conv.conv.kernel_h = 3, conv.conv.kernel_w = 3;
  conv.conv.pad_h = 1, conv.conv.pad_w = 1, conv.conv.stride_h = 2, conv.conv.stride_w = 2;
  conv.weight = normal_matrix(4, conv.conv.patch_size(), 5, 0.3f);
  conv.bias = xt::zeros<float>({4});
  conv.weight_qparams = calibrate_mse(conv.weight, grid::int_signed(3), scheme::symmetric, 0);
  block_layer fc = linear(8, conv.out_features(), 6, activation::identity, 3);
  std::vector<block_layer> layers = {conv, fc};
  const auto x = block_inputs(256, conv.conv.image_size(), 12);
  attach_quantizers(layers, x, 4);
  block_options bo;
  bo.iterations = 300;
  bo.learning_rate = 1e-2f;
  bo.batch_size = 16;
  set_num_threads(1);
  const auto r1 = reconstruct_block(layers, x, bo);
  set_num_threads(2);
  const auto r2 = reconstruct_block(layers, x, bo);
  set_num_threads(0);
  INFO("initial " << r1.report.initial_error << " final " << r1.report.final_error);
  CHECK(r1.report.final_error < r1.report.initial_error);
  CHECK(r1.report.final_error == r2.report.final_error);
  for (std::size_t l = 0; l < 2; ++l) {
    quant_test::require_bitwise_equal(r1.layers[l].weight, r2.layers[l].weight, r1.layers[l].weight.size(), "weights");
    CHECK(r1.layers[l].input_quantizer->scale[0] == r2.layers[l].input_quantizer->scale[0]);
  }
  // Fisher weighting and an explicit X_hat are accepted
  xt::xtensor<float, 2> fisher = xt::ones<float>({256, 8});
  xt::xtensor<float, 2> x_hat = x * 1.01f;
  bo.iterations = 20;
  CHECK_NOTHROW(reconstruct_block(layers, x, bo, &x_hat, &fisher));
}

TEST_CASE("reconstruct_block rejects bad input with quant exceptions", "[reconstruction]") {
  std::vector<block_layer> layers = {linear(8, 6, 1, activation::relu, 4), linear(4, 8, 2, activation::identity, 4)};
  const auto x = normal_matrix(40, 6, 3);
  block_options bo;
  bo.iterations = 2;
  bo.batch_size = 8;
  CHECK_NOTHROW(reconstruct_block(layers, x, bo));
  CHECK_THROWS_AS(reconstruct_block(layers, normal_matrix(40, 7, 3), bo), quant::length_error);
  CHECK_THROWS_AS(reconstruct_block({}, x, bo), quant::invalid_argument);
  auto bad = layers;
  bad[1].weight = normal_matrix(4, 9, 1);
  bad[1].weight_qparams = calibrate_minmax(bad[1].weight, grid::int_signed(4), scheme::symmetric, 0);
  CHECK_THROWS_WITH(reconstruct_block(bad, x, bo), Catch::Contains("previous layer's out_features"));
  auto o = bo;
  o.batch_size = 41;
  CHECK_THROWS_AS(reconstruct_block(layers, x, o), quant::invalid_argument);
  o = bo;
  o.iterations = 0;
  CHECK_THROWS_AS(reconstruct_block(layers, x, o), quant::invalid_argument);
  o = bo;
  o.lambda = -1.0f;
  CHECK_THROWS_AS(reconstruct_block(layers, x, o), quant::invalid_argument);
  o = bo;
  o.qdrop_probability = 0.0f;
  CHECK_THROWS_AS(reconstruct_block(layers, x, o), quant::invalid_argument);
  xt::xtensor<float, 2> empty = xt::xtensor<float, 2>::from_shape({0, 6});
  CHECK_THROWS_AS(reconstruct_block(layers, empty, bo), quant::invalid_argument);
  auto xn = x;
  xn(1, 1) = NAN;
  CHECK_THROWS_AS(reconstruct_block(layers, xn, bo), quant::domain_error);
  auto wn = layers;
  wn[1].weight(0, 1) = NAN;
  CHECK_THROWS_WITH(reconstruct_block(wn, x, bo), Catch::Contains("quant::reconstruct_block: weight = nan"));
  xt::xtensor<float, 2> fisher = xt::ones<float>({40, 5});
  CHECK_THROWS_AS(reconstruct_block(layers, x, bo, nullptr, &fisher), quant::length_error);
}

// ---- gradients, Fisher weighting and QDrop against their formulas ----------------------
namespace {

// A block with every path a gradient takes: the block input's quantizer (signed 4-bit) on
// X_hat, a conv layer (bias, ReLU), the next layer's input quantizer (unsigned 4-bit), a
// linear layer with bias, and non-constant Fisher weights.
struct gradient_case {
  std::vector<block_layer> layers;
  xt::xtensor<float, 2> x, x_hat, fisher;
};

gradient_case make_gradient_case() {
  gradient_case c;
  block_layer conv;
  conv.type = block_layer::kind::conv2d;
  conv.conv.channels = 2, conv.conv.height = 5, conv.conv.width = 5, conv.conv.kernel_h = 3, conv.conv.kernel_w = 3;
  conv.conv.pad_h = 1, conv.conv.pad_w = 1, conv.conv.stride_h = 1, conv.conv.stride_w = 1;
  conv.weight = normal_matrix(3, conv.conv.patch_size(), 81, 0.3f);
  conv.bias = xt::xtensor<float, 1>::from_shape({3});
  conv.bias(0) = 0.1f, conv.bias(1) = -0.05f, conv.bias(2) = 0.02f;
  conv.weight_qparams = calibrate_minmax(conv.weight, grid::int_signed(3), scheme::symmetric, 0);
  const block_layer fc = linear(6, conv.out_features(), 82, activation::identity, 3);
  c.layers = {conv, fc};
  const std::size_t rows = 24;
  c.x = block_inputs(rows, conv.conv.image_size(), 83);
  c.x_hat = c.x + 0.05f * normal_matrix(rows, conv.conv.image_size(), 84);
  attach_quantizers(c.layers, c.x, 4);
  c.fisher = xt::xtensor<float, 2>::from_shape({rows, 6});
  for (std::size_t i = 0; i < c.fisher.size(); ++i) c.fisher.data()[i] = 0.5f + 0.01f * static_cast<float>(i % 97);
  return c;
}

// The block's reconstruction loss in double, written from the formulas:
//   L = (1/B) sum_{b,j} F_bj (y_bj - t_bj)^2,  t = the FP block on X, y = the block on X_hat
// with soft weights and both quantizers applied (p = 1). A quantizer's straight-through
// gradient is the exact derivative of its surrogate
//   Q~(x, s) = s clamp(x/s, qmin, qmax) + s r,   r = round(clamp(u0)) - clamp(u0) frozen
// at the evaluation point (u0 = x/s there): it equals s round(clamp(x/s)) at that point,
// dQ~/dx = 1[qmin <= u <= qmax], dQ~/ds = round(u) - u inside and qmin / qmax outside (LSQ).
// Central differences of L with the residuals r frozen therefore give the gradients a
// straight-through backward pass must produce.
struct block_loss {
  const gradient_case& c;
  std::vector<double> r0, r1;  // frozen residuals of the two quantizers
  xt::xtensor<double, 2> target;
  // distances to the kinks at the evaluation point (ReLU at 0, clamps, rounding ties)
  double min_abs_pre = INFINITY, min_clamp_gap = INFINITY, min_tie_gap = INFINITY;

  static double quantize(double x, double s, const grid& g, double& r, bool freeze, double& clamp_gap,
                         double& tie_gap) {
    const double u = x / s, qmin = g.qmin(), qmax = g.qmax();
    const double cu = std::min(qmax, std::max(qmin, u));
    if (freeze) {
      r = std::nearbyint(cu) - cu;  // round half to even (default rounding mode)
      if (u != 0.0) clamp_gap = std::min({clamp_gap, std::fabs(u - qmin), std::fabs(u - qmax)});
      tie_gap = std::min(tie_gap, std::fabs(std::fabs(cu - std::floor(cu)) - 0.5));
    }
    return s * (cu + r);
  }

  // y [B, 6] for soft weights w0 [3, 18], w1 [6, 75] and step sizes s0, s1; quantize:
  // false for the FP targets; freeze: record the residuals (and the kink distances).
  xt::xtensor<double, 2> forward(const xt::xtensor<float, 2>& x, const std::vector<double>& w0,
                                 const std::vector<double>& w1, double s0, double s1, bool quantize_acts,
                                 bool freeze) {
    const block_layer &L0 = c.layers[0], &L1 = c.layers[1];
    const conv2d_shape& g = L0.conv;
    const std::size_t B = x.shape()[0], C = g.channels, H = g.height, W = g.width, P = g.positions();
    const std::size_t K = g.patch_size(), O0 = L0.weight.shape()[0], F1 = O0 * P, O1 = L1.weight.shape()[0];
    if (freeze) {
      r0.assign(x.size(), 0.0);
      r1.assign(B * F1, 0.0);
    }
    std::vector<double> a0(x.size());
    for (std::size_t k = 0; k < x.size(); ++k)
      a0[k] = quantize_acts ? quantize(x.data()[k], s0, L0.input_quantizer->grid, r0[k], freeze, min_clamp_gap,
                                       min_tie_gap)
                            : double(x.data()[k]);
    std::vector<double> a1(B * F1);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t o = 0; o < O0; ++o)
        for (std::size_t oy = 0; oy < g.out_h(); ++oy)
          for (std::size_t ox = 0; ox < g.out_w(); ++ox) {
            double acc = L0.bias(o);
            for (std::size_t ch = 0; ch < C; ++ch)
              for (std::size_t ky = 0; ky < 3; ++ky)
                for (std::size_t kx = 0; kx < 3; ++kx) {
                  const long iy = long(oy + ky) - 1, ix = long(ox + kx) - 1;
                  if (iy < 0 || iy >= long(H) || ix < 0 || ix >= long(W)) continue;
                  acc += w0[o * K + (ch * 3 + ky) * 3 + kx] * a0[b * C * H * W + ch * H * W + iy * W + ix];
                }
            if (freeze && quantize_acts) min_abs_pre = std::min(min_abs_pre, std::fabs(acc));
            const std::size_t k = b * F1 + o * P + oy * g.out_w() + ox;
            a1[k] = acc > 0.0 ? acc : 0.0;
            if (quantize_acts)
              a1[k] = quantize(a1[k], s1, L1.input_quantizer->grid, r1[k], freeze, min_clamp_gap, min_tie_gap);
          }
    xt::xtensor<double, 2> y = xt::xtensor<double, 2>::from_shape({B, O1});
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t j = 0; j < O1; ++j) {
        double acc = L1.bias(j);
        for (std::size_t k = 0; k < F1; ++k) acc += w1[j * F1 + k] * a1[b * F1 + k];
        y(b, j) = acc;
      }
    return y;
  }

  double loss(const std::vector<double>& w0, const std::vector<double>& w1, double s0, double s1,
              bool freeze = false) {
    const auto y = forward(c.x_hat, w0, w1, s0, s1, true, freeze);
    double acc = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) acc += double(c.fisher.data()[i]) * std::pow(y.data()[i] - target.data()[i], 2);
    return acc / static_cast<double>(y.shape()[0]);
  }

  explicit block_loss(const gradient_case& gc) : c(gc) {
    const std::vector<double> w0(c.layers[0].weight.begin(), c.layers[0].weight.end());
    const std::vector<double> w1(c.layers[1].weight.begin(), c.layers[1].weight.end());
    target = forward(c.x, w0, w1, 1.0, 1.0, false, false);
  }
};

// W_soft = s (clamp(floor(W/s) + h(V) + z, qmin, qmax) - z) of one element in double
// (W/s as W * (1/s) with the float reciprocal, as the header states).
double soft_weight_at(const block_layer& L, std::size_t k, double v) {
  const std::size_t o = k / L.weight.shape()[1];
  const float s = L.weight_qparams.scale(o), inv = 1.0f / s, z = float(L.weight_qparams.zero_point(o));
  const double base = std::floor(L.weight.data()[k] * inv) + z;
  const double h = std::min(1.0, std::max(0.0, 1.2 / (1.0 + std::exp(-v)) - 0.1));
  return double(s) * (std::min<double>(L.weight_qparams.qmax(), std::max<double>(L.weight_qparams.qmin(), base + h)) - z);
}
using quant_test::near_h_kink;

// quant's built-in Linear/Conv2d block (the callbacks reconstruct_block(layers, ...) runs),
// recording what passes through it in the first reconstruction iteration.
struct recording_block {
  detail::layer_block inner;
  std::vector<xt::xtensor<float, 2>> grads;  // dL/dW_soft per layer
  xt::xtensor<float, 2> dy;                  // dL/dy handed to backward
  explicit recording_block(const std::vector<block_layer>& layers) : inner(layers) {}
  block_callbacks callbacks() {
    block_callbacks cb;
    cb.forward = [this](block_pass& p, const xt::xtensor<float, 2>& x, xt::xtensor<float, 2>& y) {
      inner.forward(p, x, y);
    };
    cb.backward = [this](block_pass& p, const xt::xtensor<float, 2>& d) {
      inner.backward(p, d);
      if (p.iteration() != 0) return;
      dy = d;
      grads.clear();
      for (std::size_t l = 0; l < p.layers(); ++l) grads.push_back(p.weight_gradient(l));
    };
    return cb;
  }
};

// One reconstruction iteration on all rows (batch = rows), plain BRECQ (p = 1).
block_options one_full_batch_iteration(std::size_t rows) {
  block_options bo;
  bo.iterations = 1;
  bo.batch_size = rows;
  bo.qdrop_probability = 1.0f;
  bo.learning_rate = 1e-2f;
  bo.scale_learning_rate = 1e-2f;
  return bo;
}

}  // namespace

TEST_CASE("block gradients match central differences of the loss: V of every layer, both step sizes",
          "[reconstruction]") {
  const gradient_case c = make_gradient_case();
  const std::size_t rows = c.x.shape()[0];
  std::vector<xt::xtensor<float, 2>> v0;
  std::vector<std::vector<double>> w_soft(2);
  for (std::size_t l = 0; l < 2; ++l) {
    v0.push_back(eager::adaround_init(c.layers[l].weight, c.layers[l].weight_qparams));  // the V of the first iteration
    for (std::size_t k = 0; k < v0[l].size(); ++k) w_soft[l].push_back(soft_weight_at(c.layers[l], k, v0[l].data()[k]));
  }
  const double s0 = c.layers[0].input_quantizer->scale[0], s1 = c.layers[1].input_quantizer->scale[0];
  block_loss L(c);
  const double loss0 = L.loss(w_soft[0], w_soft[1], s0, s1, true);
  INFO("distances to kinks: |pre| " << L.min_abs_pre << ", clamp " << L.min_clamp_gap << ", tie " << L.min_tie_gap);
  REQUIRE(L.min_abs_pre > 1e-4);    // no difference quotient straddles a ReLU kink,
  REQUIRE(L.min_clamp_gap > 1e-4);  // a clamp of a quantizer,
  REQUIRE(L.min_tie_gap > 1e-5);    // and float's u = x (1/s), within 2e-6 of x/s, rounds as double's

  recording_block rec(c.layers);
  block_options bo = one_full_batch_iteration(rows);
  double reported_loss = -1.0;
  bo.progress = [&](const adaround_progress& pr) { reported_loss = pr.reconstruction_loss; };
  reconstruct_block(rec.callbacks(), rec.inner.weights(), rec.inner.quantizers(), c.x, bo, &c.x_hat, &c.fisher);
  REQUIRE(rec.grads.size() == 2);

  SECTION("the reported loss is (1/B) sum F (y - t)^2") { CHECK(reported_loss == Approx(loss0).epsilon(1e-5)); }

  SECTION("dL/dV of both layers") {
    const double eps = 1e-6;
    for (std::size_t l = 0; l < 2; ++l) {
      const block_layer& Ll = c.layers[l];
      const std::vector<double> dv = fused_pass_dv(Ll.weight, v0[l], Ll.weight_qparams, rec.grads[l]);
      std::vector<double> fd(dv.size(), 0.0);
      double scale = 0.0;
      std::size_t checked = 0;
      for (std::size_t k = 0; k < dv.size(); ++k) {
        if (near_h_kink(v0[l].data()[k])) continue;
        auto w = w_soft;
        w[l][k] = soft_weight_at(Ll, k, v0[l].data()[k] + eps);
        const double lp = L.loss(w[0], w[1], s0, s1);
        w[l][k] = soft_weight_at(Ll, k, v0[l].data()[k] - eps);
        const double lm = L.loss(w[0], w[1], s0, s1);
        fd[k] = (lp - lm) / (2.0 * eps);
        scale = std::max(scale, std::fabs(fd[k]));
        ++checked;
      }
      REQUIRE(checked > dv.size() * 3 / 4);
      double worst = 0.0;
      for (std::size_t k = 0; k < dv.size(); ++k) {
        if (near_h_kink(v0[l].data()[k])) continue;
        const double tol = 1e-5 * scale + 1e-4 * std::fabs(fd[k]);
        worst = std::max(worst, std::fabs(dv[k] - fd[k]) / tol);
        if (std::fabs(dv[k] - fd[k]) > tol) {
          INFO("layer " << l << " V[" << k << "]: quant " << dv[k] << ", central difference " << fd[k]);
          CHECK(dv[k] == Approx(fd[k]).margin(tol));
        }
      }
      INFO("layer " << l << ": worst |error| / tolerance " << worst << ", max |dL/dV| " << scale);
      CHECK(worst <= 1.0);
      CHECK(scale > 0.0);
    }
  }

  SECTION("dL/ds of both quantizers, read from the first Adam step on s") {
    // The step sizes' gradients are not returned; their first Adam step is
    //   s_1 = s_0 - lr g / (|g| + eps)        (m_hat = g, sqrt(v_hat) = |g| at step 1)
    // which reveals g itself when |g| is near Adam's eps = 1e-8. Constant Fisher weights
    // c scale the loss and every gradient by c; choosing c = eps / |g_expected| puts each
    // step size's gradient there, and g = eps rho / (1 - rho), rho = |s_0 - s_1| / lr.
    // Expected: LSQ's gradient scale 1/sqrt(N qmax) (N = features per sample) times the
    // central difference of the straight-through surrogate loss in s.
    const double s[2] = {s0, s1};
    for (std::size_t j = 0; j < 2; ++j) {
      const double h = 1e-6 * s[j];
      const double lp = L.loss(w_soft[0], w_soft[1], j == 0 ? s0 + h : s0, j == 1 ? s1 + h : s1);
      const double lm = L.loss(w_soft[0], w_soft[1], j == 0 ? s0 - h : s0, j == 1 ? s1 - h : s1);
      const lsq_params& q = *c.layers[j].input_quantizer;
      const double g_scale = 1.0 / std::sqrt(double(c.layers[j].in_features()) * q.grid.qmax());
      const double want = g_scale * (lp - lm) / (2.0 * h);
      REQUIRE(std::fabs(want) > 0.0);
      const float cf = static_cast<float>(1e-8 / std::fabs(want));
      const xt::xtensor<float, 2> fisher_c = cf * c.fisher;
      const auto rc = reconstruct_block(c.layers, c.x, one_full_batch_iteration(rows), &c.x_hat, &fisher_c);
      const double s_new = rc.layers[j].input_quantizer->scale[0];
      const double rho = (s[j] - s_new) / double(one_full_batch_iteration(rows).scale_learning_rate);
      REQUIRE(std::fabs(rho) < 1.0);
      const double implied = 1e-8 * rho / (1.0 - std::fabs(rho));
      INFO("quantizer " << j << ": s " << s[j] << " -> " << s_new << ", implied gradient " << implied / cf
                        << ", central difference " << want);
      CHECK(implied / double(cf) == Approx(want).epsilon(1e-4));
    }
  }
}

TEST_CASE("Fisher weights multiply each squared error: constant weights c scale the loss and every gradient by c",
          "[reconstruction]") {
  const gradient_case c = make_gradient_case();
  const std::size_t rows = c.x.shape()[0];
  struct run_record {
    double loss = 0.0;
    xt::xtensor<float, 2> dy;
    std::vector<xt::xtensor<float, 2>> grads;
  };
  auto run = [&](const xt::xtensor<float, 2>* fisher) {
    recording_block rec(c.layers);
    block_options bo = one_full_batch_iteration(rows);
    run_record out;
    bo.progress = [&](const adaround_progress& pr) { out.loss = pr.reconstruction_loss; };
    reconstruct_block(rec.callbacks(), rec.inner.weights(), rec.inner.quantizers(), c.x, bo, &c.x_hat, fisher);
    out.dy = rec.dy;
    out.grads = rec.grads;
    return out;
  };
  const run_record plain = run(nullptr);
  REQUIRE(plain.grads.size() == 2);
  REQUIRE(plain.loss > 0.0);

  SECTION("c = 4 (a power of two): loss, dL/dy and dL/dW_soft exactly 4 times the unweighted ones") {
    const xt::xtensor<float, 2> four = xt::full_like(c.fisher, 4.0f);
    const run_record w = run(&four);
    CHECK(w.loss == 4.0 * plain.loss);
    const xt::xtensor<float, 2> dy4 = 4.0f * plain.dy;
    quant_test::require_bitwise_equal(w.dy, dy4, dy4.size(), "dL/dy");
    for (std::size_t l = 0; l < 2; ++l) {
      const xt::xtensor<float, 2> g4 = 4.0f * plain.grads[l];
      quant_test::require_bitwise_equal(w.grads[l], g4, g4.size(), "dL/dW_soft, layer " + std::to_string(l));
    }
  }
  SECTION("c = 0.3: the same within float rounding") {
    const xt::xtensor<float, 2> f = xt::full_like(c.fisher, 0.3f);
    const run_record w = run(&f);
    CHECK(w.loss == Approx(0.3 * plain.loss).epsilon(1e-6));
    for (std::size_t i = 0; i < w.dy.size(); ++i)
      CHECK(w.dy.data()[i] == Approx(0.3 * plain.dy.data()[i]).margin(1e-6 * std::fabs(plain.dy.data()[i])));
    for (std::size_t l = 0; l < 2; ++l) {
      double scale = 0.0, worst = 0.0;
      for (float g : plain.grads[l]) scale = std::max(scale, std::fabs(double(g)));
      for (std::size_t i = 0; i < w.grads[l].size(); ++i)
        worst = std::max(worst, std::fabs(w.grads[l].data()[i] - 0.3 * plain.grads[l].data()[i]));
      INFO("layer " << l);
      CHECK(worst <= 1e-6 * scale);
    }
  }
  SECTION("non-constant weights: dL/dy = (2/B) F (y - t) row by row") {
    // dL/dy / (2/B) under F, divided by the same under F = 1, is F of that row's sample.
    // The batch is all rows in a sampled order; each row's F is recovered from the
    // ratio and must be one of the rows of F (the weights follow their sample).
    const run_record w = run(&c.fisher);
    const std::size_t out = c.fisher.shape()[1];
    std::size_t matched = 0;
    for (std::size_t b = 0; b < rows; ++b) {
      std::vector<double> ratio(out);
      for (std::size_t j = 0; j < out; ++j) ratio[j] = double(w.dy(b, j)) / double(plain.dy(b, j));
      for (std::size_t r = 0; r < rows; ++r) {
        bool same = true;
        for (std::size_t j = 0; j < out; ++j) same = same && std::fabs(ratio[j] - c.fisher(r, j)) <= 1e-6 * c.fisher(r, j);
        if (same) {
          ++matched;
          break;
        }
      }
    }
    CHECK(matched == rows);
  }
}

namespace {
// x_q = s round(clamp(x * (1/s), qmin, qmax)) of a per-tensor LSQ quantizer (float, as
// lsq.hpp states), and whether u = x/s is inside [qmin, qmax].
float lsq_value(float x, const lsq_params& q, bool* inside = nullptr) {
  const float s = q.scale[0], u = x * (1.0f / s);
  const float lo = float(q.grid.qmin()), hi = float(q.grid.qmax());
  if (inside) *inside = u >= lo && u <= hi;
  return std::nearbyint(std::min(hi, std::max(lo, u))) * s;
}
}  // namespace

TEST_CASE("QDrop keeps the quantized activation with probability p; dropped elements pass x and dL/dx unchanged",
          "[reconstruction]") {
  // where(u < p, x_q, x) with u ~ U[0, 1): u < 1 always, so p = 1 quantizes every element
  // (plain BRECQ) and p is the fraction of elements quantized. Recorded in a custom block:
  // the quantizer's input and output in each reconstruction pass, and quantize_backward's
  // input and output.
  const std::size_t rows = 64, in = 48, out = 8;
  const auto x = normal_matrix(rows, in, 91);
  std::vector<block_weight> weights = {{normal_matrix(out, in, 92, 0.2f), {}}};
  weights[0].weight_qparams = calibrate_minmax(weights[0].weight, grid::int_signed(4), scheme::symmetric, 0);
  lsq_params q = activation_quantizer(x, grid::int_signed(3));
  q.scale[0] *= 0.7f;  // some inputs beyond the grid: the straight-through gradient is 0 there
  struct pass_record {
    xt::xtensor<float, 2> in, out, d_in, d_out;
  };
  for (float p : {1.0f, 0.75f, 0.25f}) {
    std::vector<pass_record> passes;
    bool quantized_passes_ok = true;
    block_callbacks cb;
    cb.forward = [&](block_pass& pass, const xt::xtensor<float, 2>& xb, xt::xtensor<float, 2>& y) {
      xt::xtensor<float, 2> a = xb;
      pass.quantize(0, a);
      if (pass.mode() == block_pass::stage::reconstruction) passes.push_back({xb, a, {}, {}});
      if (pass.mode() == block_pass::stage::quantized)
        for (std::size_t i = 0; i < a.size(); ++i) quantized_passes_ok &= a.data()[i] == lsq_value(xb.data()[i], q);
      y = xt::xtensor<float, 2>::from_shape({xb.shape()[0], out});
      xt::blas::gemm(a, pass.weight(0), y, false, true);
    };
    cb.backward = [&](block_pass& pass, const xt::xtensor<float, 2>& dy) {
      xt::blas::gemm(dy, passes.back().out, pass.weight_gradient(0), true, false);
      xt::xtensor<float, 2> d = xt::xtensor<float, 2>::from_shape({dy.shape()[0], in});
      xt::blas::gemm(dy, pass.weight(0), d);
      passes.back().d_in = d;
      pass.quantize_backward(0, d);
      passes.back().d_out = d;
    };
    block_options bo;
    bo.iterations = 8;
    bo.batch_size = 32;
    bo.learn_activation_scales = false;  // x_q below uses the step size as given
    bo.qdrop_probability = p;
    bo.seed = 17;
    reconstruct_block(cb, weights, {q}, x, bo);
    REQUIRE(passes.size() == bo.iterations);
    CHECK(quantized_passes_ok);  // the reports always quantize
    std::size_t kept = 0, decided = 0, wrong = 0, masks_differ = 0;
    for (std::size_t k = 0; k < passes.size(); ++k) {
      const pass_record& r = passes[k];
      for (std::size_t i = 0; i < r.in.size(); ++i) {
        bool inside = false;
        const float xi = r.in.data()[i], xq = lsq_value(xi, q, &inside), yi = r.out.data()[i];
        if (xq == xi) continue;  // on the grid: both branches agree
        const bool keep = yi == xq;
        wrong += !keep && yi != xi;  // neither x_q nor x
        ++decided;
        kept += keep;
        const float want_d = keep ? (inside ? r.d_in.data()[i] : 0.0f) : r.d_in.data()[i];
        wrong += r.d_out.data()[i] != want_d;
        if (k > 0) masks_differ += keep != (passes[0].out.data()[i] == lsq_value(passes[0].in.data()[i], q));
      }
    }
    const double frac = double(kept) / double(decided), sd = std::sqrt(p * (1.0 - p) / double(decided));
    INFO("p = " << p << ": " << kept << " of " << decided << " elements quantized (" << frac << ")");
    CHECK(wrong == 0);
    CHECK(decided > 10000);
    if (p == 1.0f) {
      CHECK(kept == decided);
    } else {
      CHECK(std::fabs(frac - p) <= 4.0 * sd);
      CHECK(masks_differ > 0);  // a new mask every iteration
    }
  }
}

TEST_CASE("QDrop with p = 1 is plain BRECQ: bit-identical to a block that quantizes every activation itself",
          "[reconstruction]") {
  // With step sizes fixed (learning them needs pass.quantize), p = 1 must equal a block
  // that applies LSQ's forward to every activation and LSQ's straight-through backward
  // to its gradient, with no drop anywhere.
  const std::size_t in = 20;
  std::vector<block_layer> layers = {linear(24, in, 41, activation::relu, 3), linear(8, 24, 42, activation::identity, 3)};
  const auto x = block_inputs(200, in, 43);
  attach_quantizers(layers, x, 4);
  block_options bo;
  bo.iterations = 150;
  bo.batch_size = 16;
  bo.learning_rate = 1e-2f;
  bo.warmup = 0.3f;
  bo.seed = 5;
  bo.qdrop_probability = 1.0f;
  bo.learn_activation_scales = false;
  const auto brecq = reconstruct_block(layers, x, bo);

  // the block written out, quantizing by itself
  struct self_quantizing {
    const std::vector<block_layer>* layers;
    std::vector<xt::xtensor<float, 2>> raw, x_in, pre;
    void forward(block_pass& pass, const xt::xtensor<float, 2>& xb, xt::xtensor<float, 2>& y) {
      const std::size_t n = layers->size();
      raw.resize(n), x_in.resize(n), pre.resize(n);
      xt::xtensor<float, 2> a = xb;
      for (std::size_t l = 0; l < n; ++l) {
        const block_layer& L = (*layers)[l];
        raw[l] = a;
        if (pass.quantize_activations()) {
          const xt::xarray<float> aq = eager::lsq_forward(a, *L.input_quantizer);
          std::copy(aq.begin(), aq.end(), a.begin());
        }
        x_in[l] = a;
        const auto& w = pass.weight(l);
        pre[l] = xt::xtensor<float, 2>::from_shape({a.shape()[0], w.shape()[0]});
        xt::blas::gemm(a, w, pre[l], false, true);
        for (std::size_t r = 0; r < a.shape()[0]; ++r)
          for (std::size_t o = 0; o < w.shape()[0]; ++o) pre[l](r, o) += L.bias(o);
        a = pre[l];
        if (L.act == activation::relu)
          for (auto& v : a) v = v > 0.0f ? v : 0.0f;
      }
      y = a;
    }
    void backward(block_pass& pass, const xt::xtensor<float, 2>& dy) {
      xt::xtensor<float, 2> d = dy;
      for (std::size_t l = layers->size(); l-- > 0;) {
        const block_layer& L = (*layers)[l];
        if (L.act == activation::relu)
          for (std::size_t i = 0; i < d.size(); ++i) d.data()[i] = pre[l].data()[i] > 0.0f ? d.data()[i] : 0.0f;
        xt::blas::gemm(d, x_in[l], pass.weight_gradient(l), true, false);
        xt::xtensor<float, 2> dx = xt::xtensor<float, 2>::from_shape({d.shape()[0], x_in[l].shape()[1]});
        xt::blas::gemm(d, pass.weight(l), dx);
        xt::xtensor<float, 2> dxq;
        eager::lsq_backward(raw[l], dx, *L.input_quantizer, dxq);  // 1[qmin <= u <= qmax] dx
        d = dxq;
      }
    }
  } self{&layers, {}, {}, {}};
  block_callbacks cb;
  cb.forward = [&](block_pass& p, const xt::xtensor<float, 2>& xb, xt::xtensor<float, 2>& y) { self.forward(p, xb, y); };
  cb.backward = [&](block_pass& p, const xt::xtensor<float, 2>& dy) { self.backward(p, dy); };
  std::vector<block_weight> weights;
  for (const auto& L : layers) weights.push_back({L.weight, L.weight_qparams});
  const auto own = reconstruct_block(cb, weights, {}, x, bo);
  for (std::size_t l = 0; l < layers.size(); ++l) {
    quant_test::require_bitwise_equal(brecq.layers[l].weight, own.weights[l], own.weights[l].size(),
                                      "hard weights, layer " + std::to_string(l));
    CHECK(brecq.integer_weights[l] == own.integer_weights[l]);
    CHECK(brecq.report.non_binary_fraction[l] == own.report.non_binary_fraction[l]);
    CHECK(brecq.layers[l].input_quantizer->scale[0] == layers[l].input_quantizer->scale[0]);  // not learned
  }
  CHECK(brecq.report.initial_error == own.report.initial_error);
  CHECK(brecq.report.final_error == own.report.final_error);
  // and p < 1 is not: the drop changes the result
  bo.qdrop_probability = 0.5f;
  const auto qdrop = reconstruct_block(layers, x, bo);
  bool differs = false;
  for (std::size_t l = 0; l < layers.size(); ++l) differs = differs || !(qdrop.integer_weights[l] == own.integer_weights[l]);
  CHECK(differs);
}

// ---- custom blocks through block_callbacks -------------------------------------------
namespace {

enum class act_kind { identity, relu, leaky };

// A user's own chain of Linear layers y = f(x_q W^T + b), written here with plain GEMMs:
// optional input quantizer j per layer (-1: none), activation per layer. Holds what the
// backward pass needs, as a user's module would.
struct user_linear_chain {
  std::vector<xt::xtensor<float, 1>> bias;
  std::vector<act_kind> act;
  std::vector<int> quantizer;
  float slope = 0.1f;  // leaky ReLU
  std::vector<xt::xtensor<float, 2>> x_in, pre;

  float f(act_kind a, float v) const {
    if (a == act_kind::relu) return v > 0.0f ? v : 0.0f;
    if (a == act_kind::leaky) return v > 0.0f ? v : slope * v;
    return v;
  }
  float df(act_kind a, float v) const {
    if (a == act_kind::relu) return v > 0.0f ? 1.0f : 0.0f;
    if (a == act_kind::leaky) return v > 0.0f ? 1.0f : slope;
    return 1.0f;
  }

  void forward(block_pass& pass, const xt::xtensor<float, 2>& x, xt::xtensor<float, 2>& y) {
    const std::size_t n = pass.layers(), rows = x.shape()[0];
    x_in.resize(n);
    pre.resize(n);
    xt::xtensor<float, 2> a = x;
    for (std::size_t l = 0; l < n; ++l) {
      x_in[l] = a;
      if (quantizer[l] >= 0) pass.quantize(static_cast<std::size_t>(quantizer[l]), x_in[l]);
      const auto& w = pass.weight(l);
      pre[l] = xt::xtensor<float, 2>::from_shape({rows, w.shape()[0]});
      xt::blas::gemm(x_in[l], w, pre[l], false, true);
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t o = 0; o < w.shape()[0]; ++o) pre[l](r, o) += bias[l](o);
      a = pre[l];
      for (auto& v : a) v = f(act[l], v);
    }
    y = a;
  }

  void backward(block_pass& pass, const xt::xtensor<float, 2>& dy) {
    xt::xtensor<float, 2> d = dy;
    for (std::size_t l = pass.layers(); l-- > 0;) {
      for (std::size_t i = 0; i < d.size(); ++i) d.data()[i] *= df(act[l], pre[l].data()[i]);
      xt::blas::gemm(d, x_in[l], pass.weight_gradient(l), true, false);
      if (l == 0 && quantizer[l] < 0) break;
      xt::xtensor<float, 2> dx = xt::xtensor<float, 2>::from_shape({d.shape()[0], x_in[l].shape()[1]});
      xt::blas::gemm(d, pass.weight(l), dx);
      if (quantizer[l] >= 0) pass.quantize_backward(static_cast<std::size_t>(quantizer[l]), dx);
      d = dx;
    }
  }

  block_callbacks callbacks() {
    block_callbacks cb;
    cb.forward = [this](block_pass& p, const xt::xtensor<float, 2>& x, xt::xtensor<float, 2>& y) { forward(p, x, y); };
    cb.backward = [this](block_pass& p, const xt::xtensor<float, 2>& dy) { backward(p, dy); };
    return cb;
  }

  // Evaluation outside quant: weights w, quantizers applied always (p = 1).
  xt::xtensor<float, 2> run(const std::vector<xt::xtensor<float, 2>>& w, const std::vector<lsq_params>& q,
                            const xt::xtensor<float, 2>& x) const {
    xt::xtensor<float, 2> a = x;
    for (std::size_t l = 0; l < w.size(); ++l) {
      if (quantizer[l] >= 0) {
        const xt::xarray<float> aq = eager::lsq_forward(a, q[static_cast<std::size_t>(quantizer[l])]);
        std::copy(aq.begin(), aq.end(), a.begin());
      }
      xt::xtensor<float, 2> p = xt::xtensor<float, 2>::from_shape({a.shape()[0], w[l].shape()[0]});
      xt::blas::gemm(a, w[l], p, false, true);
      for (std::size_t r = 0; r < p.shape()[0]; ++r)
        for (std::size_t o = 0; o < p.shape()[1]; ++o) p(r, o) = f(act[l], p(r, o) + bias[l](o));
      a = p;
    }
    return a;
  }
};

}  // namespace

TEST_CASE("a user-defined block (Linear, leaky ReLU, Linear) reconstructs below round-to-nearest", "[reconstruction][long]") {
  const std::size_t in = 32, hidden = 48, out = 16;
  const auto x_cal = block_inputs(1024, in, 20), x_test = block_inputs(1024, in, 21);
  std::vector<block_weight> weights(2);
  weights[0].weight = normal_matrix(hidden, in, 22, std::sqrt(2.0f / in));
  weights[1].weight = normal_matrix(out, hidden, 23, std::sqrt(2.0f / hidden));
  for (auto& w : weights) w.weight_qparams = calibrate_mse(w.weight, grid::int_signed(2), scheme::symmetric, 0);
  user_linear_chain user;
  user.bias = {xt::zeros<float>({hidden}), xt::xtensor<float, 1>::from_shape({out})};
  for (std::size_t o = 0; o < out; ++o) user.bias[1](o) = 0.03f * static_cast<float>(o % 5);
  user.act = {act_kind::leaky, act_kind::identity};
  user.quantizer = {0, 1};
  // A4 quantizers from the FP activations (both signed: leaky ReLU keeps negatives)
  std::vector<xt::xtensor<float, 2>> w_fp = {weights[0].weight, weights[1].weight};
  std::vector<lsq_params> q = {activation_quantizer(x_cal, grid::int_signed(4))};
  {
    user_linear_chain first = user;
    first.quantizer = {-1};
    first.act = {act_kind::leaky};
    const auto h = first.run({w_fp[0]}, {}, x_cal);
    q.push_back(activation_quantizer(h, grid::int_signed(4)));
  }
  block_options bo;
  bo.iterations = 1500;
  bo.learning_rate = 1e-2f;
  bo.lambda = 0.1f;
  bo.scale_learning_rate = 1e-3f;
  bo.seed = 4;
  const auto r = reconstruct_block(user.callbacks(), weights, q, x_cal, bo);
  user_linear_chain eval = user;
  const auto y_fp = [&] {
    user_linear_chain fp = user;
    fp.quantizer = {-1, -1};
    return fp.run(w_fp, {}, x_test);
  }();
  std::vector<xt::xtensor<float, 2>> w_rtn;
  for (const auto& w : weights) w_rtn.push_back(eager::fake_quantize(w.weight, w.weight_qparams));
  const double e_rtn = output_error(eval.run(w_rtn, q, x_test), y_fp);
  const double e_rec = output_error(eval.run(r.weights, r.activation_quantizers, x_test), y_fp);
  INFO("held-out error: RTN " << e_rtn << ", reconstructed " << e_rec << " (calibration: " << r.report.initial_error
                              << " -> " << r.report.final_error << ")");
  CHECK(e_rec < 0.7 * e_rtn);
  CHECK(r.report.final_error < r.report.initial_error);
  // the report's initial error is the RTN block on the calibration data
  const auto y_cal = [&] {
    user_linear_chain fp = user;
    fp.quantizer = {-1, -1};
    return fp.run(w_fp, {}, x_cal);
  }();
  CHECK(r.report.initial_error == Approx(output_error(eval.run(w_rtn, q, x_cal), y_cal)).epsilon(1e-6));
  for (double nb : r.report.non_binary_fraction) CHECK(nb < 0.05);
  for (std::size_t j = 0; j < 2; ++j) CHECK(r.activation_quantizers[j].scale[0] != q[j].scale[0]);  // learned
  for (std::size_t l = 0; l < 2; ++l)
    for (std::size_t i = 0; i < r.weights[l].size(); ++i)
      CHECK(r.weights[l].data()[i] ==
            weights[l].weight_qparams.scale(i / weights[l].weight.shape()[1]) *
                static_cast<float>(r.integer_weights[l].data()[i]));
}

TEST_CASE("built-in Linear + ReLU layers through the callback interface: bit-identical to the built-in path",
          "[reconstruction]") {
  const std::size_t in = 20;
  std::vector<block_layer> layers = {linear(24, in, 31, activation::relu, 3), linear(8, 24, 32, activation::identity, 3)};
  const auto x = block_inputs(200, in, 33);
  attach_quantizers(layers, x, 4);
  layers[0].input_quantizer.reset();  // a layer without a quantizer: the indices shift
  xt::xtensor<float, 2> x_hat = x * 1.02f;
  xt::xtensor<float, 2> fisher = xt::xtensor<float, 2>::from_shape({200, 8});
  for (std::size_t i = 0; i < fisher.size(); ++i) fisher.data()[i] = 0.5f + 0.01f * static_cast<float>(i % 97);
  block_options bo;
  bo.iterations = 120;
  bo.batch_size = 16;
  bo.learning_rate = 1e-2f;
  bo.scale_learning_rate = 1e-3f;
  bo.warmup = 0.25f;
  bo.seed = 9;
  for (int variant = 0; variant < 2; ++variant) {
    const auto* xh = variant ? &x_hat : nullptr;
    const auto* fi = variant ? &fisher : nullptr;
    const auto builtin = reconstruct_block(layers, x, bo, xh, fi);
    user_linear_chain user;
    std::vector<block_weight> weights;
    std::vector<lsq_params> q;
    for (const auto& L : layers) {
      weights.push_back({L.weight, L.weight_qparams});
      user.bias.push_back(L.bias);
      user.act.push_back(L.act == activation::relu ? act_kind::relu : act_kind::identity);
      user.quantizer.push_back(L.input_quantizer ? static_cast<int>(q.size()) : -1);
      if (L.input_quantizer) q.push_back(*L.input_quantizer);
    }
    const auto custom = reconstruct_block(user.callbacks(), weights, q, x, bo, xh, fi);
    for (std::size_t l = 0; l < layers.size(); ++l) {
      quant_test::require_bitwise_equal(builtin.layers[l].weight, custom.weights[l], custom.weights[l].size(),
                                        "hard weights, layer " + std::to_string(l));
      CHECK(builtin.integer_weights[l] == custom.integer_weights[l]);
      CHECK(builtin.report.non_binary_fraction[l] == custom.report.non_binary_fraction[l]);
    }
    REQUIRE(custom.activation_quantizers.size() == 1);
    CHECK(builtin.layers[1].input_quantizer->scale[0] == custom.activation_quantizers[0].scale[0]);
    CHECK(custom.activation_quantizers[0].scale[0] != q[0].scale[0]);
    CHECK(builtin.report.initial_error == custom.report.initial_error);
    CHECK(builtin.report.final_error == custom.report.final_error);
  }
}

TEST_CASE("custom blocks: bad callbacks and misuse of the pass throw", "[reconstruction]") {
  const auto x = normal_matrix(40, 6, 3);
  std::vector<block_weight> weights = {{normal_matrix(4, 6, 1), {}}};
  weights[0].weight_qparams = calibrate_minmax(weights[0].weight, grid::int_signed(4), scheme::symmetric, 0);
  const std::vector<lsq_params> q = {activation_quantizer(x, grid::int_signed(4))};
  block_options bo;
  bo.iterations = 3;
  bo.batch_size = 8;
  user_linear_chain user;
  user.bias = {xt::zeros<float>({4})};
  user.act = {act_kind::relu};
  user.quantizer = {0};
  CHECK_NOTHROW(reconstruct_block(user.callbacks(), weights, q, x, bo));
  CHECK_THROWS_AS(reconstruct_block(block_callbacks{}, weights, q, x, bo), quant::invalid_argument);
  CHECK_THROWS_AS(reconstruct_block(user.callbacks(), {}, q, x, bo), quant::invalid_argument);
  // a forward that drops a row
  auto cb = user.callbacks();
  auto fwd = cb.forward;
  cb.forward = [fwd](block_pass& p, const xt::xtensor<float, 2>& xx, xt::xtensor<float, 2>& y) {
    fwd(p, xx, y);
    y = xt::view(y, xt::range(1, y.shape()[0]), xt::all());
  };
  CHECK_THROWS_AS(reconstruct_block(cb, weights, q, x, bo), quant::length_error);
  // a quantizer used twice in one pass, one that does not exist, a gradient outside reconstruction
  cb = user.callbacks();
  cb.forward = [fwd](block_pass& p, const xt::xtensor<float, 2>& xx, xt::xtensor<float, 2>& y) {
    xt::xtensor<float, 2> a = xx;
    p.quantize(0, a);
    fwd(p, xx, y);
  };
  CHECK_THROWS_WITH(reconstruct_block(cb, weights, q, x, bo), Catch::Contains("once per pass"));
  cb.forward = [](block_pass& p, const xt::xtensor<float, 2>& xx, xt::xtensor<float, 2>& y) {
    y = xx;
    p.quantize(1, y);
  };
  CHECK_THROWS_AS(reconstruct_block(cb, weights, q, x, bo), quant::length_error);
  cb.forward = [](block_pass& p, const xt::xtensor<float, 2>& xx, xt::xtensor<float, 2>& y) {
    y = xx;
    p.weight_gradient(0);
  };
  CHECK_THROWS_AS(reconstruct_block(cb, weights, q, x, bo), quant::invalid_argument);
  auto bad_q = q;
  bad_q[0].scale = {0.1f, 0.2f};
  CHECK_THROWS_AS(reconstruct_block(user.callbacks(), weights, bad_q, x, bo), quant::invalid_argument);
  auto xn = x;
  xn(2, 2) = NAN;
  CHECK_THROWS_AS(reconstruct_block(user.callbacks(), weights, q, xn, bo), quant::domain_error);
}
