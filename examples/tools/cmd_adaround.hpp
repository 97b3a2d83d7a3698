// examples/tools/cmd_adaround.hpp — `quant adaround`: AdaRound one layer (quant/adaround.hpp;
// Nagel et al. 2020).
//
//   quant adaround -w W.npy -x X.npy [--quantized-inputs Xq.npy] [--bias b.npy] [--relu]
//                  --bits 4 [--observer mse|minmax] [--iterations 2000] [--batch 32]
//                  [--lambda 0.01] [--lr 1e-3] [--seed 0] [-q] -o DIR
//
// W is [out, in], X [samples, in] the layer's calibration inputs in the float model (Xq the
// same inputs in the quantized model: the layer then learns to reconstruct W X from Xq).
// Per-channel scales come from the observer; AdaRound learns up/down rounding of W / s.
// Writes integer_weights.npy [out, in] int32, scales.npy, zero_points.npy [out],
// weights.npy (fake-quantized float32) and report.json (the encodings, the options,
// reconstruction errors of AdaRound and round-to-nearest, flipped and non-binary fractions).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include <quant/adaround.hpp>

#include "cli_common.hpp"

namespace quant_cli {

class adaround_command : public command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* c = app.add_subcommand("adaround", "AdaRound one layer: learn up/down rounding of W [out, in]");
    c->add_option("--weights,-w", weights_, "W [out, in] (.npy)")->required();
    c->add_option("--inputs,-x", inputs_, "calibration inputs X [samples, in] in the FP model (.npy)")->required();
    c->add_option("--quantized-inputs", quantized_inputs_, "the same inputs in the quantized model (.npy)");
    c->add_option("--bias", bias_, "bias [out] (.npy)");
    c->add_option("--out-dir,-o", out_dir_,
                  "writes integer_weights.npy, scales.npy, zero_points.npy, weights.npy, report.json")
        ->required()
        ->check(CLI::ExistingDirectory);
    add_grid_options(c, grid_);
    add_observer_option(c, observer_, "per-channel scales from minmax or mse");
    c->add_option("--iterations", iterations_, "optimisation steps")
        ->check(CLI::Range(std::size_t(1), std::size_t(10000000)))
        ->capture_default_str();
    c->add_option("--batch", batch_, "rows of X per step")->check(CLI::PositiveNumber)->capture_default_str();
    c->add_option("--lambda", lambda_, "regularizer weight")->check(CLI::NonNegativeNumber)->capture_default_str();
    c->add_option("--lr", learning_rate_, "Adam learning rate")->check(CLI::PositiveNumber)->capture_default_str();
    c->add_option("--seed", seed_, "mini-batch sampling seed")->capture_default_str();
    c->add_flag("--relu", relu_, "the layer is followed by a ReLU (reconstruct after it)");
    c->add_flag("--quiet,-q", quiet_, "no progress line");
    return c;
  }

  int run() override {
    const layer_data d = load_layer_data(weights_, inputs_);
    const xt::xtensor<float, 2>& W = d.W;
    const xt::xtensor<float, 2>& X = d.X;
    std::optional<xt::xtensor<float, 2>> Xq;
    if (!quantized_inputs_.empty()) {
      Xq = load_matrix(quantized_inputs_);
      if (Xq->shape() != X.shape()) throw data_error("--quantized-inputs must have the shape of --inputs");
    }
    std::optional<xt::xtensor<float, 1>> b;
    if (!bias_.empty()) {
      const xt::xarray<float> a = load_float(bias_);
      if (a.dimension() != 1 || a.shape()[0] != W.shape()[0])
        throw data_error("--bias must be a 1-D array of " + std::to_string(W.shape()[0]) + " values");
      b = a;
    }
    const quant::qparams wq = observe(W, grid_, observer_, 0);
    quant::adaround_options o;
    o.iterations = iterations_;
    o.batch_size = batch_;
    o.lambda = lambda_;
    o.learning_rate = learning_rate_;
    o.seed = seed_;
    o.act = relu_ ? quant::activation::relu : quant::activation::identity;
    if (!quiet_) o.progress = quant::adaround_progress_printer(std::cerr, "adaround", isatty(STDERR_FILENO) != 0);
    const quant::adaround_result r = quant::adaround_layer(W, X, wq, o, Xq ? &*Xq : nullptr, b ? &*b : nullptr);
    output_set out;
    const std::string dir = out_dir_ + "/";
    out.npy(dir + "integer_weights.npy", r.integer_weights);
    out.npy(dir + "scales.npy", to_array(r.qparams.scales()));
    out.npy(dir + "zero_points.npy", to_array(r.qparams.zero_points()));
    out.npy(dir + "weights.npy", r.weights);
    json j = qparams_json(r.qparams, grid_.sch(), {W.shape()[0], W.shape()[1]}, "adaround");
    j["observer"] = observer_;
    j["iterations"] = r.report.iterations;
    j["seed"] = seed_;
    j["activation"] = relu_ ? "relu" : "identity";
    j["reconstruction_error"] = {{"round_to_nearest", r.report.rtn_error},
                                 {"adaround", r.report.adaround_error},
                                 {"ratio", r.report.rtn_error > 0 ? r.report.adaround_error / r.report.rtn_error : 1.0}};
    j["flipped_fraction"] = r.report.flipped_fraction;
    j["non_binary_fraction"] = r.report.non_binary_fraction;
    out.text(dir + "report.json", json_text(j));
    out.commit();
    std::printf("adaround: reconstruction error %.6g (round-to-nearest %.6g), %.2f%% of weights flipped\n",
                r.report.adaround_error, r.report.rtn_error, 100.0 * r.report.flipped_fraction);
    return 0;
  }

 private:
  std::string weights_, inputs_, quantized_inputs_, bias_, out_dir_;
  grid_options grid_;
  std::string observer_ = "mse";
  std::size_t iterations_ = 2000, batch_ = 32;
  float lambda_ = 0.01f, learning_rate_ = 1e-3f;
  std::uint64_t seed_ = 0;
  bool relu_ = false, quiet_ = false;
};

}  // namespace quant_cli
