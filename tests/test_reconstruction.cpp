// BRECQ block reconstruction with QDrop: beats layer-wise AdaRound + plain activation
// quantization at W2A4 on held-out data; conv blocks; determinism; bad input.
#include <quant/reconstruction.hpp>

#include <cmath>
#include <vector>

#include "test_helpers.hpp"

using namespace quant;

namespace {

xt::xtensor<float, 2> normal_matrix(std::size_t r, std::size_t c, std::uint32_t seed, float sd = 1.0f) {
  auto v = quant_test::normal_floats(r * c, seed, sd);
  xt::xtensor<float, 2> m = xt::xtensor<float, 2>::from_shape({r, c});
  std::copy(v.begin(), v.end(), m.begin());
  return m;
}

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
