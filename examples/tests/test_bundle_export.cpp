// The demo's networks exported as model bundles (examples/fashion_mnist/bundle_export.hpp):
// the bundle runner (examples/common/model_runner.hpp, NCHW, PyTorch layouts) on the exported
// model gives the logits of the demo's own channels-last forward, before and after a
// save/load round trip; and the layout permutations put each weight where PyTorch has it.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <cmath>
#include <random>
#include <string>

#include "../common/model_runner.hpp"
#include "../fashion_mnist/bundle_export.hpp"

// Everything below in its own namespace: the test files may be compiled together (unity build).
namespace bundle_export_tests {

using namespace examples;

namespace {

const std::string tmp_dir = TEST_TMP_DIR "/bundle_export";

matrix random_images(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  matrix x = matrix::from_shape({n, 784});
  for (auto& v : x) v = nd(rng);
  return x;
}

// The runner's input: [n, 1, 28, 28] (same memory order as the demo's [n, 784] for one channel).
xt::xarray<float> as_nchw(const matrix& x) {
  xt::xarray<float> a = x;
  a.reshape({x.shape()[0], 1, 28, 28});
  return a;
}

// max |a - b| / max |b| over all logits.
double relative_difference(const xt::xarray<float>& a, const matrix& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a.data()[i]) - b.data()[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b.data()[i])));
  }
  return diff / scale;
}

void randomize_biases(network& net, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-0.2f, 0.2f);
  for (auto& l : net.layers)
    for (auto& b : l.b) b = u(rng);
}

// BN statistics and affine parameters far from the identity, so a misplaced channel shows.
void randomize_bn(bn_network& net, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> pos(0.3f, 2.0f), sym(-0.5f, 0.5f);
  for (auto& L : net.layers) {
    for (auto& b : L.b) b = sym(rng);
    if (!L.spec.batchnorm) continue;
    for (auto& v : L.gamma) v = pos(rng);
    for (auto& v : L.beta) v = sym(rng);
    for (auto& v : L.running_mean) v = sym(rng);
    for (auto& v : L.running_var) v = pos(rng);
  }
}

model round_trip(const model& m, const std::string& name) {
  ::mkdir(TEST_TMP_DIR, 0755);
  ::mkdir(tmp_dir.c_str(), 0755);
  save_model(m, tmp_dir + "/" + name);
  return load_model(tmp_dir + "/" + name);
}

}  // namespace

TEST_CASE("bundle export: the runner reproduces the demo's forward", "[bundle_export]") {
  use_single_threaded_blas();
  const matrix x = random_images(37, 5);

  SECTION("MLP") {
    network net = make_network("mlp", mlp_specs(), 3);
    randomize_biases(net, 4);
    const matrix ref = forward(net, x);
    const model m = to_bundle(net);
    CHECK(relative_difference(run_model(m, as_nchw(x)), ref) < 1e-4);
    CHECK(relative_difference(run_model(round_trip(m, "mlp"), as_nchw(x)), ref) < 1e-4);
  }

  SECTION("CNN: conv weights to [out, in, kh, kw], the classifier's columns from HWC to CHW") {
    network net = make_network("cnn", cnn_specs(), 3);
    randomize_biases(net, 4);
    const matrix ref = forward(net, x);
    const model m = to_bundle(net);
    CHECK(relative_difference(run_model(m, as_nchw(x)), ref) < 1e-4);
    CHECK(relative_difference(run_model(round_trip(m, "cnn"), as_nchw(x)), ref) < 1e-4);
  }

  SECTION("BN network in inference mode: depthwise [C, 1, 3, 3], pointwise [out, in, 1, 1], BN layers") {
    bn_network net = make_bn_network<float>("bnnet", bnnet_specs(), 3);
    randomize_bn(net, 4);
    const matrix ref = bn_forward(net, x, false);
    const model m = to_bundle(net);
    CHECK(relative_difference(run_model(m, as_nchw(x)), ref) < 1e-4);
    CHECK(relative_difference(run_model(round_trip(m, "bnnet"), as_nchw(x)), ref) < 1e-4);
  }
}

TEST_CASE("bundle export: weight layouts are PyTorch's", "[bundle_export]") {
  SECTION("conv3x3: W'[o, c, ky, kx] = W[o, (3 ky + kx) in + c]") {
    matrix W = matrix::from_shape({2, 27});
    for (std::size_t i = 0; i < W.size(); ++i) W.data()[i] = static_cast<float>(i);
    const xt::xarray<float> w = export_detail::conv3x3_weight(W, 3);
    REQUIRE(w.shape() == std::vector<std::size_t>{2, 3, 3, 3});
    CHECK(w(1, 2, 0, 1) == W(1, 1 * 3 + 2));
    CHECK(w(0, 1, 2, 2) == W(0, 8 * 3 + 1));
    CHECK(w(1, 0, 1, 0) == W(1, 3 * 3 + 0));
  }
  SECTION("dense after an HWC flatten: W'[o, c*HW + s] = W[o, s*C + c]") {
    matrix W = matrix::from_shape({1, 12});
    for (std::size_t i = 0; i < W.size(); ++i) W.data()[i] = static_cast<float>(i);
    const xt::xarray<float> w = export_detail::dense_weight_chw(W, 4, 3);
    // CHW order: channel 0's four positions first, i.e. HWC columns 0, 3, 6, 9.
    CHECK(w(0, 0) == 0.0f);
    CHECK(w(0, 1) == 3.0f);
    CHECK(w(0, 3) == 9.0f);
    CHECK(w(0, 4) == 1.0f);
    CHECK(w(0, 11) == 11.0f);
  }
  SECTION("the BN network's layer sequence") {
    const model m = to_bundle(make_bn_network<float>("bnnet", bnnet_specs(), 1));
    std::string seq;
    for (const auto& l : m.layers) seq += std::string(to_string(l.type)) + " ";
    CHECK(seq ==
          "conv2d batchnorm2d relu conv2d batchnorm2d relu conv2d batchnorm2d relu maxpool2d "
          "conv2d batchnorm2d relu conv2d batchnorm2d relu maxpool2d global_avgpool flatten linear ");
    CHECK(m.layers[3].groups == 16);
    CHECK(m.layers[10].groups == 32);
    CHECK_FALSE(m.layers[0].bias.has_value());
  }
}

}  // namespace bundle_export_tests
