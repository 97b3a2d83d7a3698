// The PTQ pipeline (examples/common/ptq_pipeline.hpp) on a small depthwise-separable BN
// network: properties checked against direct computations — folding and CLE keep the float
// function, weights lie on their grids, the first activation quantizer is the min-max formula,
// empirical bias correction removes the last layer's mean output shift, the reported accuracy
// is the saved bundle's.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "../common/model_bundle.hpp"
#include "../common/model_runner.hpp"
#include "../common/ptq_pipeline.hpp"

// Everything below in its own namespace: the test files may be compiled together (unity build).
namespace ptq_pipeline_tests {

using examples::layer_type;
using examples::model;
using examples::model_layer;

namespace {

xt::xarray<float> uniform(std::vector<std::size_t> shape, std::uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  xt::xarray<float> a = xt::xarray<float>::from_shape(shape);
  for (auto& v : a) v = u(rng);
  return a;
}

model_layer conv(const std::string& name, std::size_t out, std::size_t in_per_group, std::size_t k, std::size_t groups,
                 std::uint64_t seed, float scale) {
  model_layer l;
  l.type = layer_type::conv2d;
  l.name = name;
  l.weight = uniform({out, in_per_group, k, k}, seed, -scale, scale);
  // uneven channel ranges, as after real training
  for (std::size_t o = 0; o < out; ++o) {
    const float f = 0.1f + 3.0f * float(o % 5) / 4.0f;
    for (std::size_t i = 0; i < l.weight.size() / out; ++i) l.weight.data()[o * (l.weight.size() / out) + i] *= f;
  }
  l.pad_h = l.pad_w = k / 2;
  l.groups = groups;
  return l;
}
model_layer bn(const std::string& name, std::size_t c, std::uint64_t seed) {
  model_layer l;
  l.type = layer_type::batchnorm2d;
  l.name = name;
  l.weight = uniform({c}, seed, 0.3f, 2.0f);
  l.bias = xt::xtensor<float, 1>(uniform({c}, seed + 1, -0.5f, 1.5f));
  l.running_mean = xt::xtensor<float, 1>(uniform({c}, seed + 2, -0.5f, 0.5f));
  l.running_var = xt::xtensor<float, 1>(uniform({c}, seed + 3, 0.2f, 4.0f));
  return l;
}
model_layer op(layer_type t, std::size_t k = 0) {
  model_layer l;
  l.type = t;
  l.kernel_h = l.kernel_w = l.stride_h = l.stride_w = k ? k : 1;
  return l;
}

// conv 1->6 +BN+ReLU, depthwise +BN+ReLU, pointwise 6->8 +BN+ReLU, max-pool 2, flatten, linear 8*4*4 -> 5
model bn_network() {
  model m;
  m.input_shape = {1, 8, 8};
  m.layers = {conv("c1", 6, 1, 3, 1, 1, 0.6f), bn("bn1", 6, 10), op(layer_type::relu),
              conv("dw", 6, 1, 3, 6, 2, 0.6f), bn("bn2", 6, 20),  op(layer_type::relu),
              conv("pw", 8, 6, 1, 1, 3, 0.6f), bn("bn3", 8, 30),  op(layer_type::relu),
              op(layer_type::maxpool2d, 2),    op(layer_type::flatten)};
  model_layer fc;
  fc.type = layer_type::linear;
  fc.name = "fc";
  fc.weight = uniform({5, 128}, 4, -0.2f, 0.2f);
  fc.bias = xt::xtensor<float, 1>(uniform({5}, 5, -0.1f, 0.1f));
  m.layers.push_back(fc);
  examples::validate_model(m);
  return m;
}

double max_rel_diff(const xt::xarray<float>& a, const xt::xarray<float>& b) {
  REQUIRE(a.shape() == b.shape());
  double worst = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::fabs(double(a.data()[i]) - double(b.data()[i])));
    scale = std::max(scale, std::fabs(double(b.data()[i])));
  }
  return worst / scale;
}

}  // namespace

TEST_CASE("ptq pipeline: folding and CLE keep the float function; grids and encodings", "[ptq]") {
  examples::use_single_threaded_blas();
  const model m = bn_network();
  const xt::xarray<float> calib = uniform({64, 1, 8, 8}, 77, -1.0f, 2.0f);
  const xt::xarray<float> reference = examples::run_model(m, calib);

  SECTION("BN folding alone is the same function") {
    const model f = examples::fold_batchnorms(m);
    CHECK(f.layers.size() == m.layers.size() - 3);
    CHECK(max_rel_diff(examples::run_model(f, calib), reference) < 1e-5);
  }

  SECTION("16-bit weights, float activations: with and without CLE the outputs stay the float ones") {
    for (bool cle : {false, true}) {
      INFO("cle " << cle);
      examples::ptq_options o;
      o.weight_bits = 16;
      o.act_bits = 32;
      o.cle = cle;
      const auto r = examples::run_ptq(m, calib, o);
      // 16-bit per-tensor rounding: relative error ~ 2^-16 of the largest weight per layer
      CHECK(max_rel_diff(examples::run_model(r.quantized, calib), reference) < 2e-3);
      for (const auto& l : r.quantized.layers) CHECK(!l.input_encoding);
      REQUIRE(r.report.layers.size() == 4);
      if (cle) {
        CHECK(r.report.cle_chains == 1);  // c1 -> dw -> pw -> fc (through max-pool and flatten)
        // the uneven ranges of c1 are evened out
        CHECK(r.report.layers[0].spread_equalized < r.report.layers[0].spread_folded);
      }
    }
  }

  SECTION("weights lie on their grids; the first activation quantizer is min-max of the calibration data") {
    for (bool per_channel : {false, true}) {
      INFO("per channel " << per_channel);
      examples::ptq_options o;
      o.weight_bits = 4;
      o.act_bits = 8;
      o.per_channel = per_channel;
      o.cle = true;
      o.bias_absorption = true;
      const auto r = examples::run_ptq(m, calib, o);
      for (const auto& l : r.quantized.layers) {
        if (!examples::has_weights(l.type)) continue;
        REQUIRE(l.weight_encoding);
        REQUIRE(l.input_encoding);
        const auto& p = l.weight_encoding->params;
        const std::size_t out = l.weight.shape()[0], per = l.weight.size() / out;
        for (std::size_t o2 = 0; o2 < out; ++o2) {
          const double s = p.scale(per_channel ? o2 : 0);
          for (std::size_t k = 0; k < per; ++k) {
            const double q = double(l.weight.data()[o2 * per + k]) / s;
            REQUIRE(std::fabs(q - std::nearbyint(q)) < 1e-3);
            REQUIRE(q >= -8.0 - 1e-3);
            REQUIRE(q <= 7.0 + 1e-3);
          }
        }
      }
      // layer 0's input is the calibration data itself: asymmetric uint8 min-max with 0 in range
      const auto& a = r.quantized.layers[0].input_encoding->params;
      const double lo = std::min(0.0, double(xt::amin(calib)())), hi = std::max(0.0, double(xt::amax(calib)()));
      CHECK(a.qmin() == 0);
      CHECK(a.qmax() == 255);
      CHECK(a.scale() == Approx((hi - lo) / 255.0).epsilon(1e-6));
      CHECK(a.zero_point() == static_cast<int>(std::nearbyint(-lo / ((hi - lo) / 255.0))));
    }
  }

  SECTION("empirical bias correction: the last layer's mean output on the calibration data is unshifted") {
    examples::ptq_options o;
    o.weight_bits = 3;
    o.act_bits = 8;
    o.bias_correction = examples::bias_correction_mode::empirical;
    const auto r = examples::run_ptq(m, calib, o);
    const model& q = r.quantized;
    const std::size_t last = q.layers.size() - 1;
    // the fc layer's actual inputs in the quantized model (its input quantizer applied)
    const xt::xarray<float> pre = examples::run_layers(q, calib, 0, last);
    const xt::xarray<float> x = quant::eager::fake_quantize(pre, q.layers[last].input_encoding->params);
    // its float weights: the same pipeline without weight quantization error (16 bits,
    // no correction) gives W and b of the folded model up to 2^-16
    examples::ptq_options f = o;
    f.weight_bits = 16;
    f.bias_correction = examples::bias_correction_mode::none;
    const model& wf = examples::run_ptq(m, calib, f).quantized;
    const auto& Wq = q.layers[last].weight;
    const auto& W = wf.layers[last].weight;
    const auto& bq = *q.layers[last].bias;
    const auto& b = *wf.layers[last].bias;
    const std::size_t N = x.shape()[0], F = x.shape()[1];
    for (std::size_t o2 = 0; o2 < 5; ++o2) {
      double mq = 0.0, mf = 0.0, shift_uncorrected = 0.0;
      for (std::size_t n = 0; n < N; ++n) {
        double zq = bq(o2), zf = b(o2), d = 0.0;
        for (std::size_t k = 0; k < F; ++k) {
          zq += double(Wq(o2, k)) * x(n, k);
          zf += double(W(o2, k)) * x(n, k);
          d += (double(Wq(o2, k)) - double(W(o2, k))) * x(n, k);
        }
        mq += zq / double(N);
        mf += zf / double(N);
        shift_uncorrected += d / double(N);
      }
      INFO("output " << o2 << ": shift before correction " << shift_uncorrected);
      CHECK(std::fabs(mq - mf) < 2e-3 * (1.0 + std::fabs(shift_uncorrected)));
      CHECK(std::fabs(mq - mf) <= std::fabs(shift_uncorrected) + 1e-6);
    }
  }

  SECTION("the reported accuracy is the saved bundle's, bit for bit") {
    std::vector<std::int64_t> labels(calib.shape()[0]);
    const auto pred = examples::top1(reference);
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int64_t>(pred[i]);
    examples::ptq_options o;
    o.weight_bits = 3;
    o.act_bits = 4;
    o.cle = true;
    o.bias_correction = examples::bias_correction_mode::analytic;
    const auto r = examples::run_ptq(m, calib, o, &calib, &labels);
    REQUIRE(r.report.float_accuracy);
    CHECK(*r.report.float_accuracy == 1.0);
    const std::string dir = std::string(TEST_TMP_DIR) + "/ptq_saved";
    std::filesystem::create_directories(TEST_TMP_DIR);  // (ctest may run this file first)
    examples::save_model(r.quantized, dir);
    const model back = examples::load_model(dir);
    const auto a = examples::run_model(r.quantized, calib), b = examples::run_model(back, calib);
    CHECK(bool(a == b));
    CHECK(examples::top1_accuracy(b, labels) == *r.report.accuracy);
    CHECK(r.report.layers[0].bias_correction.find("skipped") == 0);  // no BN before the first layer
    CHECK(r.report.layers[1].bias_correction == "analytic");
  }

  SECTION("bad options are rejected") {
    examples::ptq_options o;
    o.bias_absorption = true;  // without cle
    CHECK_THROWS_AS(examples::run_ptq(m, calib, o), std::invalid_argument);
    o = {};
    o.act_bits = 1;
    CHECK_THROWS_AS(examples::run_ptq(m, calib, o), std::invalid_argument);
    o = {};
    o.rounding = examples::weight_rounding::custom;  // without a callback
    CHECK_THROWS_AS(examples::run_ptq(m, calib, o), std::invalid_argument);
  }
}

}  // namespace ptq_pipeline_tests
