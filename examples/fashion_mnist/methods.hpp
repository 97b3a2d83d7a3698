// examples/fashion_mnist/methods.hpp — the rows of the demo's table: each one quantizes
// the trained FP32 network with one method and measures test accuracy.
//
// Conventions shared by all rows:
//  * weights: symmetric signed grid, one scale per output channel (axis 0 of W [out, K]);
//  * activations ("WxAy" rows): the input of every layer — the normalised image and each
//    ReLU output — is fake-quantized per tensor on an asymmetric unsigned grid whose range
//    is set on the calibration activations (1024 training images);
//  * calibration and reconstruction data: 1024 training images chosen by the seed.
// New methods (KURE, Quant-Noise, PQ) add a function here and a line in row_registry().
#pragma once

#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <quant/observers.hpp>
#include <quant/qparams.hpp>
#include <quant/uniform.hpp>

#include "report.hpp"
#include "trainer.hpp"

namespace examples {

// Iteration counts; --quick shrinks them.
struct method_budget {
  std::size_t adaround_iterations;
  std::size_t qdrop_iterations;
  std::size_t qat_epochs_fraction_batches;  // LSQ fine-tuning: number of training batches
  static method_budget full() { return {2000, 2000, 1500}; }
  static method_budget quick() { return {600, 600, 300}; }
};

struct model_context {
  const network& fp32;
  const split_tensors& train;
  const split_tensors& calib;
  const split_tensors& test;
  method_budget budget;
  std::uint64_t seed;
};

inline split_tensors calibration_subset(const split_tensors& train, std::size_t n, std::uint64_t seed) {
  std::vector<std::size_t> idx(train.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::mt19937_64 rng(seed ^ 0xca11b4a7eULL);
  shuffle_indices(idx, rng);
  split_tensors c;
  c.x = gather_rows(train.x, idx, 0, n);
  for (std::size_t i = 0; i < n; ++i) c.labels.push_back(train.labels[idx[i]]);
  return c;
}

// ---- range setting -------------------------------------------------------------------
enum class range_method { min_max, mse };

inline quant::qparams weight_qparams(const matrix& W, int bits, range_method m) {
  const quant::grid g = quant::grid::int_signed(bits);
  return m == range_method::mse ? quant::calibrate_mse(W, g, quant::scheme::symmetric, 0)
                                : quant::calibrate_minmax(W, g, quant::scheme::symmetric, 0);
}

inline quant::qparams activation_qparams(const matrix& act, int bits, range_method m) {
  const quant::grid g = quant::grid::int_unsigned(bits);
  return m == range_method::mse ? quant::calibrate_mse(act, g, quant::scheme::asymmetric)
                                : quant::calibrate_minmax(act, g, quant::scheme::asymmetric);
}

// ---- shared pieces ---------------------------------------------------------------------

// A network whose layers carry fake-quantized weights, plus the per-layer activation
// quantizers the hooks apply (empty = FP activations).
struct quantized_model {
  network net;
  std::vector<std::optional<quant::qparams>> act;

  forward_hooks hooks() const {
    forward_hooks h;
    if (!act.empty())
      h.input = [this](std::size_t l, matrix& a) {
        if (act[l]) quant::eager::fake_quantize(a, *act[l], a);
      };
    return h;
  }
};

// The input activations of every layer on the calibration set, running `hooks`
// (FP: no hooks). inputs[l] is what layer l receives before its own input quantizer.
inline std::vector<matrix> layer_inputs(const network& net, const matrix& x, const forward_hooks* hooks) {
  std::vector<matrix> inputs;
  forward_hooks spy = hooks ? *hooks : forward_hooks{};
  auto inner = spy.input;
  spy.input = [&](std::size_t l, matrix& a) {
    inputs.push_back(a);
    if (inner) inner(l, a);
  };
  forward(net, x, &spy);
  return inputs;
}

// Per-tensor activation quantizers for every layer input, calibrated on the FP network.
inline std::vector<std::optional<quant::qparams>> calibrate_activations(const network& net, const matrix& calib_x,
                                                                        int bits, range_method m) {
  std::vector<std::optional<quant::qparams>> act;
  for (const matrix& a : layer_inputs(net, calib_x, nullptr)) act.push_back(activation_qparams(a, bits, m));
  return act;
}

inline result_row make_row(const std::string& method, const std::string& series, int wbits, int abits, double acc) {
  result_row r;
  r.method = method;
  r.series = series;
  r.wbits = wbits;
  r.abits = abits;
  r.accuracy = acc;
  return r;
}

// ---- methods ------------------------------------------------------------------------------

inline result_row run_fp32(const model_context& c) {
  return make_row("FP32", "FP32", 32, 32, accuracy(c.fp32, c.test));
}

// Round-to-nearest weights (and optionally activations) with the given range setter.
inline result_row run_rtn(const model_context& c, int wbits, int abits, range_method m) {
  quantized_model q{c.fp32, {}};
  for (auto& l : q.net.layers) l.W = quant::eager::fake_quantize(l.W, weight_qparams(l.W, wbits, m));
  if (abits) q.act = calibrate_activations(c.fp32, c.calib.x, abits, range_method::mse);
  const forward_hooks h = q.hooks();
  const std::string rm = m == range_method::mse ? "MSE" : "min-max";
  const std::string series = abits ? "RTN A" + std::to_string(abits) : "RTN " + rm;
  return make_row(abits ? "RTN (MSE)" : "RTN " + rm, series, wbits, abits, accuracy(q.net, c.test, &h));
}

// ---- the registry -------------------------------------------------------------------------

struct row_def {
  std::string models;  // "mlp,cnn" or "mlp"
  std::function<result_row(const model_context&)> run;
  bool applies_to(const std::string& model) const { return models.find(model) != std::string::npos; }
};

inline std::vector<row_def> row_registry(bool quick) {
  std::vector<row_def> rows;
  const std::string all = "mlp,cnn";
  rows.push_back({all, run_fp32});
  for (range_method m : {range_method::min_max, range_method::mse})
    for (int b : {8, 4, 3, 2}) rows.push_back({all, [=](const model_context& c) { return run_rtn(c, b, 0, m); }});
  for (int b : {4, 2})
    rows.push_back({all, [=](const model_context& c) { return run_rtn(c, b, 4, range_method::mse); }});
  (void)quick;
  // Later issues add their rows here:
  //   KURE (quant/kurtosis.hpp): fine-tune with the kurtosis regularizer, then RTN W4/W3/W2.
  //   Quant-Noise (quant/quant_noise.hpp): fine-tune with block noise, then RTN / PQ.
  //   PQ / iPQ (quant/pq.hpp): product-quantized layers with fine-tuned centroids.
  return rows;
}

}  // namespace examples
