// examples/tools/cmd_ptq.hpp — `quant ptq`: post-training quantization of a model bundle
// (examples/common/ptq_pipeline.hpp; docs/ptq.md).
//
//   quant ptq --model DIR --calib X.npy [--eval X.npy --labels y.npy] -o OUT_DIR
//             [--weight-bits 8] [--act-bits 8|32] [--weight-granularity per-tensor|per-channel]
//             [--weight-observer minmax|mse] [--act-observer minmax|mse] [--no-fold-bn] [--cle]
//             [--bias-absorption] [--bias-correction none|empirical|analytic]
//             [--rounding nearest|adaround|gptq] [--iterations N]
//
// Writes OUT_DIR as a quantized bundle (fake-quantized float weights, one encodings file per
// weight and activation quantizer) plus report.json (options, per-stage seconds, per-layer
// weight range spread before/after CLE, accuracy). OUT_DIR appears only when everything is
// written (built beside it under a temporary name, then renamed; an existing OUT_DIR is
// replaced only if it is empty or a bundle). Progress on stderr. Exit 2: usage or malformed
// bundle; 1: bad data.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "../common/model_bundle.hpp"
#include "../common/ptq_pipeline.hpp"
#include "cli_common.hpp"
#include "cmd_eval.hpp"

namespace quant_cli {

class ptq_command : public command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* c = app.add_subcommand("ptq", "post-training quantization of a model bundle: BN folding, CLE, bias "
                                        "absorption/correction, weight and activation quantizers");
    c->add_option("--model,-m", model_dir_, "model bundle directory")->required();
    c->add_option("--calib", calib_, "calibration inputs [N, ...input_shape] (.npy)")->required();
    c->add_option("--eval", eval_, "evaluation inputs (.npy; with --labels)");
    c->add_option("--labels", labels_, "evaluation labels [N] (.npy, uint8/int64/...)");
    c->add_option("--out-dir,-o", out_dir_, "output bundle directory (created or replaced)")->required();
    c->add_option("--weight-bits", weight_bits_, "weight bit width")->check(CLI::Range(2, 16))->capture_default_str();
    c->add_option("--act-bits", act_bits_, "activation bit width, 32 for none")
        ->check(CLI::Range(2, 16) | CLI::IsMember({32}))
        ->capture_default_str();
    c->add_option("--weight-granularity", granularity_, "per-tensor or per-channel (axis 0)")
        ->check(CLI::IsMember({"per-tensor", "per-channel"}))
        ->capture_default_str();
    add_observer_option(c, weight_observer_, "minmax or mse", "--weight-observer");
    add_observer_option(c, act_observer_, "minmax or mse", "--act-observer");
    c->add_flag("--fold-bn,!--no-fold-bn", fold_bn_, "fold batch norms into the layer before (default on)");
    c->add_flag("--cle", cle_, "cross-layer equalization");
    c->add_flag("--bias-absorption", absorption_, "high-bias absorption (needs --cle)");
    c->add_option("--bias-correction", bias_correction_, "none, empirical or analytic")
        ->check(CLI::IsMember({"none", "empirical", "analytic"}))
        ->capture_default_str();
    c->add_option("--rounding", rounding_, "nearest, adaround or gptq (GPTQ with the observer's scales)")
        ->check(CLI::IsMember({"nearest", "adaround", "gptq"}))
        ->capture_default_str();
    c->add_option("--iterations", iterations_, "AdaRound iterations per layer")
        ->check(CLI::Range(std::size_t(1), std::size_t(10000000)))
        ->capture_default_str();
    c->add_option("--adaround-samples", adaround_samples_, "calibration samples AdaRound uses")
        ->check(CLI::Range(std::size_t(1), std::size_t(1) << 30))
        ->capture_default_str();
    c->add_option("--seed", seed_, "AdaRound mini-batch seed")->capture_default_str();
    c->add_option("--batch", batch_, "samples per runner chunk (quant eval uses 256 too)")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    c->add_flag("--quiet,-q", quiet_, "no progress on stderr");
    return c;
  }

  int run() override {
    if (eval_.empty() != labels_.empty()) throw usage_error("--eval and --labels go together");
    if (absorption_ && !cle_) throw usage_error("--bias-absorption works on the CLE chains: add --cle");
    if (absorption_ && !fold_bn_) throw usage_error("--bias-absorption needs the folded BN statistics (drop --no-fold-bn)");
    if (bias_correction_ == "analytic" && !fold_bn_)
      throw usage_error("--bias-correction analytic needs the folded BN statistics (drop --no-fold-bn)");
    const auto m = load_model_or_report(model_dir_);
    if (!m) return 2;
    const xt::xarray<float> calib = load_float(calib_);
    check_input(*m, calib, calib_);
    std::optional<xt::xarray<float>> ex;
    std::vector<std::int64_t> labels;
    if (!eval_.empty()) {
      ex = load_float(eval_);
      check_input(*m, *ex, eval_);
      labels = load_labels(labels_);
      const auto out_shape = m->output_shape();
      check_labels(labels, ex->shape()[0], examples::shape_size(out_shape), labels_);
    }

    try {  // fail before the work, not after it
      examples::detail::check_replaceable(out_dir_);
    } catch (const examples::bundle_error& e) {
      throw usage_error(std::string("-o: ") + e.what());
    }

    examples::ptq_options o;
    o.fold_bn = fold_bn_;
    o.cle = cle_;
    o.bias_absorption = absorption_;
    o.weight_bits = weight_bits_;
    o.per_channel = granularity_ == "per-channel";
    o.weight_observer = weight_observer_ == "mse" ? examples::range_method::mse : examples::range_method::minmax;
    o.act_observer = act_observer_ == "mse" ? examples::range_method::mse : examples::range_method::minmax;
    o.act_bits = act_bits_;
    o.rounding = rounding_ == "adaround" ? examples::weight_rounding::adaround
                 : rounding_ == "gptq"   ? examples::weight_rounding::gptq
                                         : examples::weight_rounding::nearest;
    o.adaround.iterations = iterations_;
    o.adaround.seed = seed_;
    o.adaround_samples = adaround_samples_;
    o.bias_correction = bias_correction_ == "empirical"  ? examples::bias_correction_mode::empirical
                        : bias_correction_ == "analytic" ? examples::bias_correction_mode::analytic
                                                         : examples::bias_correction_mode::none;
    o.batch = batch_;
    if (!quiet_) o.progress = [](const std::string& s) { std::fprintf(stderr, "ptq: %s\n", s.c_str()); };

    examples::use_single_threaded_blas();
    const examples::ptq_result r = examples::run_ptq(*m, calib, o, ex ? &*ex : nullptr, ex ? &labels : nullptr);
    const json report = examples::ptq_report_json(r.report, o);
    try {
      examples::save_model(r.quantized, out_dir_, {{"report.json", json_text(report)}});
    } catch (const examples::bundle_error& e) {
      throw data_error(std::string("cannot write the output bundle: ") + e.what());
    }
    if (!quiet_) {
      for (const auto& [stage, s] : r.report.stage_seconds) std::fprintf(stderr, "ptq: %-32s %8.3f s\n", stage.c_str(), s);
      for (const auto& l : r.report.layers)
        std::fprintf(stderr, "ptq: %-12s %-16s range spread %9.2f -> %9.2f  %s  bias correction: %s\n",
                     l.name.c_str(), l.kind.c_str(), l.spread_folded, l.spread_equalized, l.rounding.c_str(),
                     l.bias_correction.c_str());
    }
    std::printf("ptq: wrote %s (%zu weight layers, W%d A%s)\n", out_dir_.c_str(), r.report.layers.size(),
                weight_bits_, act_bits_ == 32 ? "32 (float)" : std::to_string(act_bits_).c_str());
    if (r.report.accuracy) {
      std::printf("float %s\n", accuracy_line(*r.report.float_accuracy, r.report.eval_samples).c_str());
      std::printf("%s\n", accuracy_line(*r.report.accuracy, r.report.eval_samples).c_str());
    }
    return 0;
  }

 private:
  static void check_input(const examples::model& m, const xt::xarray<float>& x, const std::string& path) {
    const std::vector<std::size_t> got(x.shape().begin(), x.shape().end());
    if (got.size() != m.input_shape.size() + 1 || !std::equal(m.input_shape.begin(), m.input_shape.end(), got.begin() + 1))
      throw data_error(path + ": shape " + examples::shape_text(got) + ", the model expects [N, " +
                       examples::shape_text(m.input_shape).substr(1));
    if (got[0] == 0) throw data_error(path + ": no samples");
  }

  std::string model_dir_, calib_, eval_, labels_, out_dir_;
  int weight_bits_ = 8, act_bits_ = 8;
  std::string granularity_ = "per-tensor", weight_observer_ = "minmax", act_observer_ = "minmax";
  bool fold_bn_ = true, cle_ = false, absorption_ = false, quiet_ = false;
  std::string bias_correction_ = "none", rounding_ = "nearest";
  std::size_t iterations_ = 10000, adaround_samples_ = 1024, batch_ = 256;
  std::uint64_t seed_ = 0;
};

}  // namespace quant_cli
