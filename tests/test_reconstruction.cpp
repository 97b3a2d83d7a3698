// BRECQ block reconstruction with QDrop: beats layer-wise AdaRound + plain activation
// quantization at W2A4 on held-out data; conv blocks; determinism; bad input.
#include <quant/reconstruction.hpp>

#include <cmath>
#include <string>
#include <vector>

#include <xtensor/xview.hpp>

#include "test_helpers.hpp"

using namespace quant;
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

TEST_CASE("QDrop at W2A4 beats layer-wise AdaRound followed by plain activation quantization", "[reconstruction]") {
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
  xt::xtensor<float, 2> fisher = xt::ones<float>({40, 5});
  CHECK_THROWS_AS(reconstruct_block(layers, x, bo, nullptr, &fisher), quant::length_error);
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

TEST_CASE("a user-defined block (Linear, leaky ReLU, Linear) reconstructs below round-to-nearest", "[reconstruction]") {
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
