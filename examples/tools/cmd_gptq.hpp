// examples/tools/cmd_gptq.hpp — `quant gptq`: GPTQ rounding of one layer (quant/gptq.hpp).
//
//   quant gptq -w W.npy -x X.npy -o OUT_DIR [--bits 4] [--scheme symmetric|asymmetric]
//              [--observer mse|minmax] [--group-size N [--group-scales fixed|at-group-start]]
//              [--act-order] [--damp 0.01] [--block-size 128]
//
// W is [out, in] (a conv layer's weight reshaped to [out, C*KH*KW]), X [samples, in] the
// layer's calibration inputs (a conv layer's im2col rows). Writes, like `quant adaround`,
// integer_weights.npy [out, in] int32, scales.npy and zero_points.npy ([out] per channel,
// [out, in / N] per group), weights.npy (fake-quantized float32) and report.json (the
// encodings, the options, reconstruction errors of GPTQ and round-to-nearest on X, the
// fraction of weights rounded differently from nearest, dead inputs, time). Exit 1 for bad
// data (unreadable arrays, shapes that do not fit, NaN, a Hessian that is not positive
// definite after dampening), 2 for usage errors (incl. a group size that does not divide in).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <quant/gptq.hpp>

#include "cli_common.hpp"

namespace quant_cli {

class gptq_command : public command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* c = app.add_subcommand("gptq", "GPTQ one layer: Hessian-based rounding of W [out, in] (no training)");
    c->add_option("--weights,-w", weights_, "W [out, in] (.npy)")->required();
    c->add_option("--inputs,-x", inputs_, "calibration inputs X [samples, in] (.npy)")->required();
    c->add_option("--out-dir,-o", out_dir_,
                  "writes integer_weights.npy, scales.npy, zero_points.npy, weights.npy, report.json")
        ->required()
        ->check(CLI::ExistingDirectory);
    add_grid_options(c, grid_);
    add_observer_option(c, observer_, "scales from mse or minmax (per channel, or per group)");
    c->add_option("--group-size", group_size_, "one scale per N consecutive input columns (default: per channel)")
        ->check(CLI::PositiveNumber);
    c->add_option("--group-scales", group_scales_,
                  "fixed: group scales chosen before the sweep; at-group-start: from the compensated weights")
        ->check(CLI::IsMember({"fixed", "at-group-start"}))
        ->capture_default_str();
    c->add_flag("--act-order", act_order_, "quantize columns by decreasing Hessian diagonal");
    c->add_option("--damp", damp_, "dampening, relative to the mean Hessian diagonal")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    c->add_option("--block-size", block_size_, "columns per lazy batch")->check(CLI::PositiveNumber)->capture_default_str();
    return c;
  }

  int run() override {
    const layer_data data = load_layer_data(weights_, inputs_);
    const xt::xtensor<float, 2>& W = data.W;
    const xt::xtensor<float, 2>& X = data.X;
    if (X.shape()[0] == 0) throw data_error(inputs_ + " has no rows");
    if (group_scales_ != "fixed" && group_size_ == 0) throw usage_error("--group-scales needs --group-size");
    quant::gptq_options o;
    o.grid = grid_.grid();
    o.scheme = grid_.sch();
    o.observer = observer_ == "mse" ? quant::gptq_observer::mse : quant::gptq_observer::minmax;
    o.group_size = group_size_;
    o.group_scales = group_scales_ == "fixed" ? quant::gptq_group_scales::fixed : quant::gptq_group_scales::at_group_start;
    o.act_order = act_order_;
    o.damp = damp_;
    o.block_size = block_size_;
    const quant::gptq_result r = quant::gptq_layer(W, X, o);

    const std::size_t out = W.shape()[0], in = W.shape()[1];
    xt::xarray<float> scales = to_array(r.qparams.scales());
    xt::xarray<std::int32_t> zero_points = to_array(r.qparams.zero_points());
    if (group_size_ != 0) {
      scales.reshape({out, in / group_size_});
      zero_points.reshape({out, in / group_size_});
    }
    output_set files;
    const std::string d = out_dir_ + "/";
    files.npy(d + "integer_weights.npy", r.integer_weights);
    files.npy(d + "scales.npy", scales);
    files.npy(d + "zero_points.npy", zero_points);
    files.npy(d + "weights.npy", r.weights);
    json j = qparams_json(r.qparams, grid_.sch(), {out, in}, "gptq");
    j["observer"] = observer_;
    j["group_size"] = group_size_;
    j["group_scales"] = group_scales_;
    j["act_order"] = act_order_;
    j["damp"] = damp_;
    j["block_size"] = block_size_;
    j["calibration_rows"] = X.shape()[0];
    j["reconstruction_error"] = {{"round_to_nearest", r.report.rtn_error},
                                 {"gptq", r.report.gptq_error},
                                 {"ratio", r.report.rtn_error > 0 ? r.report.gptq_error / r.report.rtn_error : 1.0}};
    j["flipped_fraction"] = r.report.flipped_fraction;
    j["dead_inputs"] = r.report.dead_inputs;
    j["damp_added"] = r.report.damp;
    j["seconds"] = r.report.seconds;
    files.text(d + "report.json", json_text(j));
    files.commit();
    std::printf("gptq: reconstruction error %.6g (round-to-nearest %.6g), %.2f%% of weights rounded differently, %.2f s\n",
                r.report.gptq_error, r.report.rtn_error, 100.0 * r.report.flipped_fraction, r.report.seconds);
    return 0;
  }

 private:
  std::string weights_, inputs_, out_dir_;
  grid_options grid_;
  std::string observer_ = "mse", group_scales_ = "fixed";
  std::size_t group_size_ = 0, block_size_ = 128;
  bool act_order_ = false;
  double damp_ = 0.01;
};

}  // namespace quant_cli
