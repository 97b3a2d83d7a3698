// examples/fashion_mnist/bn_methods.hpp — the rows of the batch-norm network (bnnet): the
// data-free PTQ pipeline of ../common/ptq_pipeline.hpp on the trained network exported as a
// model bundle (bundle_export.hpp), evaluated with the bundle runner. Every row is what
//   quant ptq --model <cache>/<key>/bundle --calib <calib x> [options]
// computes (same calibration images, same runner, same defaults: min-max weight and
// activation ranges, symmetric per-tensor weights, asymmetric per-tensor activations at the
// input of every weight layer).
//
// Rows, per-tensor weights at W8/W6/W4 with A8: RTN after BN folding; + CLE; + CLE + high-bias
// absorption; + CLE + absorption + empirical bias correction; one analytic bias-correction
// row; per-channel RTN for reference; AdaRound after CLE at W4A8. The note gives the largest
// per-layer channel-range spread (max over channels / min over channels of max |W[c, ...]|)
// after folding -> after CLE. Last, the integer rows of integer_rows.hpp (per-channel W8A8
// and W4A8, as for the MLP and the CNN).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "../common/model_runner.hpp"
#include "../common/ptq_pipeline.hpp"
#include "bn_trainer.hpp"
#include "bundle_export.hpp"
#include "methods.hpp"
#include "report.hpp"

namespace examples {

struct bn_context {
  const model& fp32;  // the trained bnnet as a bundle (BN layers unfolded)
  const nchw_split& calib;
  const nchw_split& test;
  method_budget budget;
  std::uint64_t seed;
};

// The trained network: loaded from <cache_dir>/<key> or trained and saved there.
inline bn_network trained_bn_network(const train_config& cfg, const split_tensors& train_set,
                                     const std::string& cache_dir, bool retrain, double& seconds,
                                     std::string& cache_entry) {
  bn_network net = make_bn_network<float>("bnnet", bnnet_specs(), cfg.seed);
  cache_entry = cache_dir + "/" + bn_cache_key(net, cfg);
  const auto t0 = std::chrono::steady_clock::now();
  if (!retrain && load_cached_bn(net, cache_entry)) {
    std::fprintf(stderr, "bnnet: FP32 weights loaded from %s\n", cache_entry.c_str());
  } else {
    train_bn(net, train_set, cfg);
    save_cached_bn(net, cache_entry);
    std::fprintf(stderr, "bnnet: FP32 weights cached in %s\n", cache_entry.c_str());
  }
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return net;
}

inline double bundle_accuracy(const model& m, const nchw_split& s, std::size_t batch = 256) {
  run_options ro;
  ro.batch = batch;
  return top1_accuracy(run_model(m, s.x, ro), s.labels);
}

inline result_row run_bn_fp32(const bn_context& c) {
  return make_row("FP32", "FP32", 32, 32, bundle_accuracy(c.fp32, c.test));
}

inline std::string spread_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, v >= 100.0 ? "%.0f" : "%.1f", v);
  return buf;
}

// One pipeline configuration, evaluated on the test set.
inline result_row run_bn_ptq(const bn_context& c, const std::string& method, const std::string& series,
                             ptq_options o) {
  o.progress = {};
  const ptq_result r = run_ptq(c.fp32, c.calib.x, o);
  result_row row = make_row(method, series, o.weight_bits, o.act_bits, bundle_accuracy(r.quantized, c.test, o.batch));
  double before = 1.0, after = 1.0;
  std::size_t worst = 0;
  for (std::size_t k = 0; k < r.report.layers.size(); ++k) {
    const auto& l = r.report.layers[k];
    if (l.spread_folded > before) before = l.spread_folded, worst = k;
    after = std::max(after, l.spread_equalized);
  }
  const std::string where = r.report.layers.empty() ? "" : " (" + r.report.layers[worst].name + ")";
  row.note = o.cle ? "spread " + spread_text(before) + where + " -> " + spread_text(after)
                   : "spread " + spread_text(before) + where;
  if (o.rounding == weight_rounding::adaround) {
    std::string err;
    for (const auto& l : r.report.layers)
      if (l.adaround_error && l.adaround_rtn_error && *l.adaround_rtn_error > 0) {
        char buf[48];
        std::snprintf(buf, sizeof buf, "%s%s %.2g", err.empty() ? "; recon. error vs RTN: " : ", ", l.name.c_str(),
                      *l.adaround_error / *l.adaround_rtn_error);
        err += buf;
      }
    row.note += err;
  }
  return row;
}

struct bn_row_def {
  std::string label;  // what --only matches
  std::function<result_row(const bn_context&)> run;
  bool matches(const std::vector<std::string>& only) const {
    if (label == "FP32") return true;
    for (const auto& o : only)
      if (label.find(o) != std::string::npos) return true;
    return false;
  }
};

inline std::vector<bn_row_def> bn_row_registry() {
  std::vector<bn_row_def> rows;
  rows.push_back({"FP32", run_bn_fp32});
  struct variant {
    const char* method;
    bool cle, absorb;
    bias_correction_mode bc;
  };
  const variant per_tensor[] = {{"RTN per-tensor", false, false, bias_correction_mode::none},
                                {"CLE", true, false, bias_correction_mode::none},
                                {"CLE+absorb", true, true, bias_correction_mode::none},
                                {"CLE+absorb+BC", true, true, bias_correction_mode::empirical}};
  for (const variant& v : per_tensor)
    for (int b : {8, 6, 4}) {
      ptq_options o;
      o.weight_bits = b;
      o.act_bits = 8;
      o.cle = v.cle;
      o.bias_absorption = v.absorb;
      o.bias_correction = v.bc;
      const std::string m = v.method;
      rows.push_back({wa_label(m, b, 8), [=](const bn_context& c) { return run_bn_ptq(c, m, m, o); }});
    }
  {
    ptq_options o;
    o.weight_bits = 6;
    o.cle = o.bias_absorption = true;
    o.bias_correction = bias_correction_mode::analytic;
    rows.push_back({wa_label("CLE+absorb+BC analytic", 6, 8),
                    [=](const bn_context& c) { return run_bn_ptq(c, "CLE+absorb+BC analyt.", "CLE+absorb+BC analytic", o); }});
  }
  for (int b : {8, 6, 4}) {
    ptq_options o;
    o.weight_bits = b;
    o.per_channel = true;
    rows.push_back({wa_label("RTN per-channel", b, 8),
                    [=](const bn_context& c) { return run_bn_ptq(c, "RTN per-channel", "RTN per-channel", o); }});
  }
  rows.push_back({wa_label("CLE+AdaRound", 4, 8), [](const bn_context& c) {
                    ptq_options o;
                    o.weight_bits = 4;
                    o.cle = true;
                    o.rounding = weight_rounding::adaround;
                    o.adaround.iterations = c.budget.adaround_iterations / 2;
                    o.adaround.seed = c.seed;
                    return run_bn_ptq(c, "CLE+AdaRound", "CLE+AdaRound", o);
                  }});
  // The integer model beside its float and exact simulations (integer_rows.hpp).
  for (int b : {8, 4})
    rows.push_back({wa_label("integer per-channel", b, 8),
                    [=](const bn_context& c) { return integer_proof_row("bnnet", c.fp32, c.calib.x, c.test, b); }});
  return rows;
}

}  // namespace examples
