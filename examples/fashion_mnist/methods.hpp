// examples/fashion_mnist/methods.hpp — the rows of the demo's table: each one quantizes
// the trained FP32 network with one method and measures test accuracy.
//
// Conventions shared by all rows:
//  * weights: symmetric signed grid, one scale per output channel (axis 0 of W [out, K]);
//  * activations ("WxAy" rows): the input of every layer is fake-quantized per tensor —
//    each ReLU output on an unsigned grid (zero point 0), the normalised image (which has
//    negative values) on a signed symmetric grid; ranges by MSE search on the calibration
//    activations (RTN, AdaRound) or learned (QDrop, LSQ/LSQ+; LSQ+ adds a learned offset);
//  * calibration and reconstruction data: 1024 training images chosen by the seed.
// New methods (KURE, Quant-Noise, PQ) add a function here and a line in row_registry().
#pragma once

#include <chrono>
#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include <iostream>

#include <quant/adaround.hpp>
#include <quant/gptq.hpp>
#include <quant/lsq.hpp>
#include <quant/observers.hpp>
#include <quant/optim.hpp>
#include <quant/qparams.hpp>
#include <quant/reconstruction.hpp>
#include <quant/uniform.hpp>

#include "../common/ptq_pipeline.hpp"
#include "bundle_export.hpp"
#include "integer_rows.hpp"
#include "report.hpp"
#include "trainer.hpp"

namespace examples {

// Iteration counts; --quick shrinks them.
struct method_budget {
  std::size_t adaround_iterations;
  std::size_t qdrop_iterations;
  std::size_t qat_steps;  // LSQ / LSQ+ fine-tuning: training batches of 128
  static method_budget full() { return {2000, 2000, 1500}; }
  static method_budget quick() { return {1000, 1000, 300}; }
};

struct model_context {
  const network& fp32;
  const split_tensors& train;
  const split_tensors& calib;
  const split_tensors& test;
  method_budget budget;
  std::uint64_t seed;
  train_config train_cfg = {};  // how the FP32 network was trained (KURE retrains with it)
  std::string cache_dir = {};   // where trained networks are cached ("" = no cache)
  bool retrain = false;
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

// ---- range setting (range_method {minmax, mse} is the PTQ pipeline's) -----------------

inline quant::qparams weight_qparams(const matrix& W, int bits, range_method m) {
  const quant::grid g = quant::grid::int_signed(bits);
  return m == range_method::mse ? quant::calibrate_mse(W, g, quant::scheme::symmetric, 0)
                                : quant::calibrate_minmax(W, g, quant::scheme::symmetric, 0);
}

// The activation grid of layer l's input: signed for the image, unsigned after a ReLU.
inline quant::grid activation_grid(std::size_t layer, int bits) {
  return layer == 0 ? quant::grid::int_signed(bits) : quant::grid::int_unsigned(bits);
}

inline quant::qparams activation_qparams(const matrix& act, std::size_t layer, int bits) {
  const quant::grid g = activation_grid(layer, bits);
  return quant::calibrate_mse(act, g, g.is_signed ? quant::scheme::symmetric : quant::scheme::asymmetric);
}

// ---- shared pieces ---------------------------------------------------------------------

using act_quantizer = std::function<void(matrix&)>;

// A network whose layers carry fake-quantized weights, plus the quantizer each layer
// applies to its input (empty = FP activations).
struct quantized_model {
  network net;
  std::vector<act_quantizer> act;

  forward_hooks hooks() const {
    forward_hooks h;
    if (!act.empty())
      h.input = [this](std::size_t l, matrix& a) {
        if (act[l]) act[l](a);
      };
    return h;
  }
};

inline act_quantizer fake_quant_of(const quant::qparams& p) {
  return [p](matrix& a) { quant::eager::fake_quantize(a, p, a); };
}

inline act_quantizer lsq_quant_of(const quant::lsq_params& p) {
  return [p](matrix& a) {
    const xt::xarray<float> q = quant::eager::lsq_forward(a, p);
    std::copy(q.begin(), q.end(), a.begin());
  };
}

// The input activations of every layer on `x`, running `hooks` (none: the FP network).
// inputs[l] is what layer l receives before its own input quantizer.
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
inline std::vector<act_quantizer> calibrate_activations(const network& net, const matrix& calib_x, int bits) {
  std::vector<act_quantizer> act;
  const auto inputs = layer_inputs(net, calib_x, nullptr);
  for (std::size_t l = 0; l < inputs.size(); ++l) act.push_back(fake_quant_of(activation_qparams(inputs[l], l, bits)));
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

inline std::string wa_label(const std::string& method, int w, int a) {
  return method + " W" + std::to_string(w) + (a == 32 ? "" : "A" + std::to_string(a));
}

inline std::string wa_series(const std::string& method, int abits) {
  return abits == 32 ? method : method + " A" + std::to_string(abits);
}

// AdaRound / QDrop progress through the demo's progress line (ETA, 10 % steps in logs).
inline std::function<void(const quant::adaround_progress&)> printer(const std::string& label) {
  auto bar = std::make_shared<progress>(label, 1);
  return [bar, label](const quant::adaround_progress& p) {
    if (p.iteration <= 1) *bar = progress(label, p.iterations);
    char buf[96];
    std::snprintf(buf, sizeof buf, "loss %.3e  beta %.2f%s", p.reconstruction_loss, p.beta, p.warmup ? " (warm-up)" : "");
    bar->update(p.iteration, buf);
  };
}

// Rows of X per optimisation mini-batch: 32 samples, i.e. 32 images' worth of im2col rows
// for a convolution (docs/adaround.md).
inline std::size_t batch_rows(const layer_spec& s) { return 32 * s.rows_per_sample(); }

// ---- methods ------------------------------------------------------------------------------

inline result_row run_fp32(const model_context& c) {
  return make_row("FP32", "FP32", 32, 32, accuracy(c.fp32, c.test));
}

// Round-to-nearest weights (per-channel scales by min-max or MSE), optionally with
// quantized activations.
inline result_row run_rtn(const model_context& c, int wbits, int abits, range_method m) {
  quantized_model q{c.fp32, {}};
  for (auto& l : q.net.layers) l.W = quant::eager::fake_quantize(l.W, weight_qparams(l.W, wbits, m));
  if (abits != 32) q.act = calibrate_activations(c.fp32, c.calib.x, abits);
  const forward_hooks h = q.hooks();
  const std::string name = m == range_method::mse ? "RTN MSE" : "RTN min-max";
  return make_row(name, wa_series(name, abits), wbits, abits, accuracy(q.net, c.test, &h));
}

// AdaRound layer by layer, first to last (Nagel 2020): each layer's V is optimised so that
// its (ReLU) output on the quantized model's input X_hat matches the FP output on X.
// Scales: per-channel MSE. With abits, X_hat is also activation-quantized (RTN ranges).
inline result_row run_adaround(const model_context& c, int wbits, int abits) {
  quantized_model q{c.fp32, {}};
  if (abits != 32) q.act = calibrate_activations(c.fp32, c.calib.x, abits);
  const std::vector<matrix> fp_inputs = layer_inputs(c.fp32, c.calib.x, nullptr);
  std::string note;
  for (std::size_t l = 0; l < q.net.layers.size(); ++l) {
    const layer& L = c.fp32.layers[l];
    const forward_hooks h = q.hooks();
    matrix a_hat = layer_inputs(q.net, c.calib.x, &h)[l];
    if (!q.act.empty()) q.act[l](a_hat);
    const matrix X = gemm_input(L.spec, fp_inputs[l]);
    const matrix X_hat = gemm_input(L.spec, std::move(a_hat));
    quant::adaround_options o;
    o.iterations = c.budget.adaround_iterations;
    o.batch_size = batch_rows(L.spec);
    o.seed = c.seed + l;
    o.act = L.spec.relu ? quant::activation::relu : quant::activation::identity;
    o.progress = printer("adaround " + c.fp32.name + wa_label("", wbits, abits) + " layer " + std::to_string(l));
    const quant::adaround_result r =
        quant::adaround_layer(L.W, X, weight_qparams(L.W, wbits, range_method::mse), o, &X_hat, &L.b);
    q.net.layers[l].W = r.weights;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%sL%zu %.3g", l ? ", " : "recon. error vs RTN: ", l,
                  r.report.rtn_error > 0 ? r.report.adaround_error / r.report.rtn_error : 1.0);
    note += buf;
  }
  const forward_hooks h = q.hooks();
  result_row row = make_row("AdaRound", wa_series("AdaRound", abits), wbits, abits, accuracy(q.net, c.test, &h));
  row.note = note;
  return row;
}

// GPTQ (Frantar 2022) layer by layer, first to last, on the quantized model's input X_hat
// (activation-quantized with abits). Per-channel rows use the per-channel MSE scales of RTN
// MSE (GPTQ changes only the rounding); with `group`, scales per group of `group` input
// columns recomputed when each group starts, falling back to per channel where K is not a
// multiple of the group. then_adaround: AdaRound (as run_adaround, same scales) started
// from GPTQ's integers. The note gives each layer's calibration reconstruction error over
// RTN's with the same scales, and the time of the quantization (forwards included).
inline result_row run_gptq(const model_context& c, int wbits, int abits, std::size_t group = 0,
                           bool then_adaround = false) {
  const auto t0 = std::chrono::steady_clock::now();
  quantized_model q{c.fp32, {}};
  if (abits != 32) q.act = calibrate_activations(c.fp32, c.calib.x, abits);
  std::vector<matrix> fp_inputs;
  if (then_adaround) fp_inputs = layer_inputs(c.fp32, c.calib.x, nullptr);
  std::string note, fallback;
  double gptq_seconds = 0.0;
  for (std::size_t l = 0; l < q.net.layers.size(); ++l) {
    const layer& L = c.fp32.layers[l];
    const forward_hooks h = q.hooks();
    matrix a_hat = layer_inputs(q.net, c.calib.x, &h)[l];
    if (!q.act.empty()) q.act[l](a_hat);
    const matrix X_hat = gemm_input(L.spec, std::move(a_hat));
    const std::size_t K = L.W.shape()[1];
    quant::gptq_result r;
    if (group && K % group == 0) {
      quant::gptq_options g;
      g.grid = quant::grid::int_signed(wbits);
      g.group_size = group;
      g.group_scales = quant::gptq_group_scales::at_group_start;
      r = quant::gptq_layer(L.W, X_hat, g);
    } else {
      if (group) fallback += (fallback.empty() ? "" : ",") + std::string("L") + std::to_string(l);
      r = quant::gptq_layer(L.W, X_hat, weight_qparams(L.W, wbits, range_method::mse));
    }
    gptq_seconds += r.report.seconds;
    double ratio = r.report.rtn_error > 0 ? r.report.gptq_error / r.report.rtn_error : 1.0;
    q.net.layers[l].W = r.weights;
    if (then_adaround) {
      quant::adaround_options o;
      o.iterations = c.budget.adaround_iterations;
      o.batch_size = batch_rows(L.spec);
      o.seed = c.seed + l;
      o.act = L.spec.relu ? quant::activation::relu : quant::activation::identity;
      o.initial_v = quant::eager::adaround_init_from_integers(L.W, r.integer_weights, r.qparams);
      o.progress = printer("gptq+adaround " + c.fp32.name + wa_label("", wbits, abits) + " layer " + std::to_string(l));
      const quant::adaround_result a =
          quant::adaround_layer(L.W, gemm_input(L.spec, fp_inputs[l]), r.qparams, o, &X_hat, &L.b);
      q.net.layers[l].W = a.weights;
      ratio = a.report.rtn_error > 0 ? a.report.adaround_error / a.report.rtn_error : 1.0;
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "%sL%zu %.3g", l ? ", " : "recon. error vs RTN: ", l, ratio);
    note += buf;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const forward_hooks h = q.hooks();
  const std::string name = then_adaround ? "GPTQ+AdaRound" : group ? "GPTQ g" + std::to_string(group) : "GPTQ";
  result_row row = make_row(name, wa_series(name, abits), wbits, abits, accuracy(q.net, c.test, &h));
  char buf[96];
  std::snprintf(buf, sizeof buf, "; %.1f s (GPTQ calls %.2f s)", seconds, gptq_seconds);
  row.note = note + buf;
  if (!fallback.empty()) row.note += "; per channel (K not a multiple of " + std::to_string(group) + "): " + fallback;
  return row;
}

// QDrop (Wei 2022) through quant::reconstruct_block, one block per layer (the conv layers
// as Linear blocks on their im2col rows, so the 2x2 pooling stays outside the block):
// AdaRound V and the LSQ step size of the block input learned jointly, the input
// quantizer dropped element-wise with p = 0.5 during reconstruction.
inline result_row run_qdrop(const model_context& c, int wbits, int abits) {
  quantized_model q{c.fp32, std::vector<act_quantizer>(c.fp32.layers.size())};
  const std::vector<matrix> fp_inputs = layer_inputs(c.fp32, c.calib.x, nullptr);
  for (std::size_t l = 0; l < q.net.layers.size(); ++l) {
    const layer& L = c.fp32.layers[l];
    const forward_hooks h = q.hooks();
    const matrix X = gemm_input(L.spec, fp_inputs[l]);
    const matrix X_hat = gemm_input(L.spec, layer_inputs(q.net, c.calib.x, &h)[l]);
    quant::block_layer bl;
    bl.type = quant::block_layer::kind::linear;
    bl.weight = L.W;
    bl.bias = L.b;
    bl.act = L.spec.relu ? quant::activation::relu : quant::activation::identity;
    bl.weight_qparams = weight_qparams(L.W, wbits, range_method::mse);
    bl.input_quantizer = quant::activation_quantizer(X, activation_grid(l, abits));
    quant::block_options o;
    o.iterations = c.budget.qdrop_iterations;
    o.batch_size = batch_rows(L.spec);
    o.seed = c.seed + 100 + l;
    o.qdrop_probability = 0.5f;
    o.progress = printer("qdrop " + c.fp32.name + wa_label("", wbits, abits) + " layer " + std::to_string(l));
    const quant::block_result r = quant::reconstruct_block({bl}, X, o, &X_hat);
    q.net.layers[l].W = r.layers[0].weight;
    q.act[l] = lsq_quant_of(*r.layers[0].input_quantizer);
  }
  const forward_hooks h = q.hooks();
  return make_row("QDrop", wa_series("QDrop", abits), wbits, abits, accuracy(q.net, c.test, &h));
}

// LSQ (Esser 2020) / LSQ+ (Bhalgat 2020) quantization-aware fine-tuning from the FP32
// weights: every weight matrix (per-channel step sizes) and every layer input (per-tensor
// step size; LSQ+ also a learned offset) is fake-quantized in the forward pass; the
// backward goes straight through the rounding (quant::eager::lsq_backward) and Adam
// updates weights, biases, step sizes and offsets. Init: LSQ 2 mean|x| / sqrt(qmax); LSQ+
// weights max(|mu - 3 sigma|, |mu + 3 sigma|) / 2^(b-1), activations by MSE over (s, beta).
inline result_row run_lsq(const model_context& c, int wbits, int abits, bool plus) {
  network net = c.fp32;
  const std::size_t n_layers = net.layers.size();
  std::vector<quant::lsq_params> wq(n_layers), aq(n_layers);
  const auto calib_inputs = layer_inputs(c.fp32, c.calib.x, nullptr);
  for (std::size_t l = 0; l < n_layers; ++l) {
    const quant::grid wg = quant::grid::int_signed(wbits);
    wq[l].grid = wg;
    wq[l].channel_axis = 0;
    wq[l].scale = plus ? quant::lsq_plus_init_weights(net.layers[l].W, wg, 0) : quant::lsq_init_scale(net.layers[l].W, wg, 0);
    const matrix& a = calib_inputs[l];
    aq[l].elements_per_scale = a.shape()[1];
    if (plus) {  // asymmetric: unsigned grid plus a learned offset, also for the signed image
      aq[l].grid = quant::grid::int_unsigned(abits);
      const quant::lsq_scale_offset so = quant::lsq_plus_init_mse(a, aq[l].grid);
      aq[l].scale = {so.scale};
      aq[l].offset = {so.offset};
    } else {
      aq[l].grid = activation_grid(l, abits);
      aq[l].scale = quant::lsq_init_scale(a, aq[l].grid);
    }
  }
  // Optimisers: weights and biases (lr 1e-4), quantizer parameters (lr 1e-3), cosine decay.
  const float lr_w = 1e-4f, lr_q = 1e-3f;
  std::vector<quant::adam> opt_w, opt_b, opt_ws, opt_as, opt_ao;
  for (std::size_t l = 0; l < n_layers; ++l) {
    opt_w.emplace_back(net.layers[l].W.size(), quant::adam_options{lr_w});
    opt_b.emplace_back(net.layers[l].b.size(), quant::adam_options{lr_w});
    opt_ws.emplace_back(wq[l].scale.size(), quant::adam_options{lr_q});
    opt_as.emplace_back(1, quant::adam_options{lr_q});
    opt_ao.emplace_back(1, quant::adam_options{lr_q});
  }
  const std::size_t steps = c.budget.qat_steps, B = 128;
  std::mt19937_64 rng(c.seed ^ 0x15a7ULL);
  std::vector<std::size_t> idx(c.train.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  shuffle_indices(idx, rng);
  const std::string label = std::string(plus ? "LSQ+" : "LSQ") + " " + net.name + " W" + std::to_string(wbits) + "A" +
                            std::to_string(abits);
  progress bar(label, steps);
  std::vector<std::uint8_t> labels(B);
  std::vector<matrix> w_hat(n_layers), act_in(n_layers);
  double running = 0.0;
  for (std::size_t t = 0, pos = 0; t < steps; ++t, pos += B) {
    if (pos + B > idx.size()) shuffle_indices(idx, rng), pos = 0;
    const float decay = quant::cosine_decay(1.0f, t, steps);
    forward_hooks h;
    for (std::size_t l = 0; l < n_layers; ++l) {
      const xt::xarray<float> wf = quant::eager::lsq_forward(net.layers[l].W, wq[l]);
      w_hat[l] = matrix::from_shape(net.layers[l].W.shape());
      std::copy(wf.begin(), wf.end(), w_hat[l].begin());
      h.weights.push_back(&w_hat[l]);
    }
    h.input = [&](std::size_t l, matrix& a) {
      act_in[l] = a;
      const xt::xarray<float> qa = quant::eager::lsq_forward(a, aq[l]);
      std::copy(qa.begin(), qa.end(), a.begin());
    };
    std::vector<layer_cache> cache;
    matrix xb = gather_rows(c.train.x, idx, pos, B);
    for (std::size_t i = 0; i < B; ++i) labels[i] = c.train.labels[idx[pos + i]];
    const matrix logits = forward(net, std::move(xb), &h, &cache);
    matrix dlogits;
    const double loss = softmax_cross_entropy(logits, labels.data(), dlogits);
    running = t == 0 ? loss : 0.98 * running + 0.02 * loss;
    std::vector<quant::lsq_param_gradients> ag(n_layers);
    const gradients g = backward(net, cache, std::move(dlogits), &h, [&](std::size_t l, matrix& dact) {
      xt::xarray<float> dx;
      ag[l] = quant::eager::lsq_backward(act_in[l], dact, aq[l], dx);
      std::copy(dx.begin(), dx.end(), dact.begin());
    });
    for (std::size_t l = 0; l < n_layers; ++l) {
      matrix dW = matrix::from_shape(net.layers[l].W.shape());
      const quant::lsq_param_gradients wg = quant::eager::lsq_backward(net.layers[l].W, g.dW[l], wq[l], dW);
      for (auto* o : {&opt_w[l], &opt_b[l]}) o->set_learning_rate(std::max(lr_w * decay, 1e-12f));
      for (auto* o : {&opt_ws[l], &opt_as[l], &opt_ao[l]}) o->set_learning_rate(std::max(lr_q * decay, 1e-12f));
      opt_w[l].step(net.layers[l].W, dW);
      opt_b[l].step(net.layers[l].b, g.db[l]);
      opt_ws[l].step(wq[l].scale, wg.dscale);
      opt_as[l].step(aq[l].scale, ag[l].dscale);
      if (plus) opt_ao[l].step(aq[l].offset, ag[l].doffset);
      quant::clamp_scale(wq[l]);
      quant::clamp_scale(aq[l]);
    }
    char buf[48];
    std::snprintf(buf, sizeof buf, "loss %.4f", running);
    bar.update(t + 1, buf);
  }
  quantized_model q{net, {}};
  for (std::size_t l = 0; l < n_layers; ++l) {
    const xt::xarray<float> wf = quant::eager::lsq_forward(net.layers[l].W, wq[l]);
    std::copy(wf.begin(), wf.end(), q.net.layers[l].W.begin());
    q.act.push_back(lsq_quant_of(aq[l]));
  }
  const forward_hooks h = q.hooks();
  const std::string name = plus ? "LSQ+" : "LSQ";
  result_row r = make_row(name, name, wbits, abits, accuracy(q.net, c.test, &h));
  r.note = std::to_string(steps) + " steps";
  return r;
}

// ---- the registry -------------------------------------------------------------------------

struct row_def {
  std::string models;  // "mlp,cnn" or "mlp"
  std::string label;   // what --only matches, e.g. "AdaRound W3"
  std::function<result_row(const model_context&)> run;
  bool quick = true;   // part of --quick
  bool applies_to(const std::string& model) const { return models.find(model) != std::string::npos; }
  bool matches(const std::vector<std::string>& only) const {
    if (label == "FP32") return true;
    for (const auto& o : only)
      if (label.find(o) != std::string::npos) return true;
    return false;
  }
};

}  // namespace examples

// KURE, Quant-Noise and iPQ (they use the pieces above).
#include "compression_methods.hpp"

namespace examples {

// Every row of the table, in order. A new method adds its lines here.
inline std::vector<row_def> row_registry() {
  std::vector<row_def> rows;
  const std::string all = "mlp,cnn";
  rows.push_back({all, "FP32", run_fp32});
  for (range_method m : {range_method::minmax, range_method::mse})
    for (int b : {8, 4, 3, 2})
      rows.push_back({all, wa_label(m == range_method::mse ? "RTN MSE" : "RTN min-max", b, 32),
                      [=](const model_context& c) { return run_rtn(c, b, 32, m); }});
  for (int b : {4, 3, 2})
    rows.push_back({all, wa_label("AdaRound", b, 32), [=](const model_context& c) { return run_adaround(c, b, 32); },
                    b != 4});
  // QDrop and AdaRound at W4A4 run on the MLP only: on the CNN they would double the run.
  for (int b : {4, 2}) {
    rows.push_back({all, wa_label("RTN MSE", b, 4), [=](const model_context& c) { return run_rtn(c, b, 4, range_method::mse); }});
    rows.push_back({b == 2 ? all : "mlp", wa_label("AdaRound", b, 4), [=](const model_context& c) { return run_adaround(c, b, 4); }, false});
    rows.push_back({"mlp", wa_label("QDrop", b, 4), [=](const model_context& c) { return run_qdrop(c, b, 4); }, b == 2});
  }
  // GPTQ (per-channel MSE scales; groups of 32 with per-group scales; GPTQ-initialised
  // AdaRound). --quick keeps one cheap row: the MLP's GPTQ W3.
  for (int b : {4, 3, 2}) {
    rows.push_back({"mlp", wa_label("GPTQ", b, 32), [=](const model_context& c) { return run_gptq(c, b, 32); }, b == 3});
    rows.push_back({"cnn", wa_label("GPTQ", b, 32), [=](const model_context& c) { return run_gptq(c, b, 32); }, false});
  }
  rows.push_back({all, wa_label("GPTQ", 2, 4), [=](const model_context& c) { return run_gptq(c, 2, 4); }, false});
  rows.push_back({all, wa_label("GPTQ g32", 3, 32), [=](const model_context& c) { return run_gptq(c, 3, 32, 32); }, false});
  rows.push_back({all, wa_label("GPTQ+AdaRound", 2, 32), [=](const model_context& c) { return run_gptq(c, 2, 32, 0, true); },
                  false});
  // QAT rows fine-tune the whole network: the MLP only (the CNN's would dominate the run).
  for (bool plus : {false, true})
    for (int b : {4, 2})
      rows.push_back({"mlp", wa_label(plus ? "LSQ+" : "LSQ", b, b), [=](const model_context& c) { return run_lsq(c, b, b, plus); },
                      plus == (b == 2)});
  // KURE against the plain network, Quant-Noise + iPQ (MLP only): compression_methods.hpp.
  add_compression_rows(rows);
  // The integer model beside its float and exact simulations (integer_rows.hpp); --quick keeps
  // the MLP's W8A8.
  for (int b : {8, 4})
    rows.push_back({all, wa_label("integer per-channel", b, 8),
                    [=](const model_context& c) {
                      return integer_proof_row(c.fp32.name, to_bundle(c.fp32), to_nchw(c.calib).x, to_nchw(c.test), b);
                    },
                    b == 8});
  return rows;
}

}  // namespace examples
