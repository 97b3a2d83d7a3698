// examples/tools/cmd_export.hpp — `quant export`: a quantized model bundle (written by
// `quant ptq`) to an integer engine directory (examples/common/integer_model.hpp;
// docs/integer_execution.md, "Integer model bundle").
//
//   quant export --model QUANTIZED_BUNDLE -o ENGINE_DIR [--requantization fixed-point|float-scale]
//                [--weight-format int8|int4]
//
// ENGINE_DIR appears only when complete (built under a temporary name, then renamed; an
// existing engine directory is replaced, anything else is left alone). Exit 2: usage or a
// malformed bundle; 1: a bundle that has no integer form (the message names the layer).
#pragma once

#include <cstdio>
#include <string>

#include "../common/integer_model.hpp"
#include "../common/model_bundle.hpp"
#include "cli_common.hpp"
#include "cmd_eval.hpp"

namespace quant_cli {

class export_command : public command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* c = app.add_subcommand("export", "turn a quantized bundle (quant ptq) into an integer engine directory");
    c->add_option("--model,-m", model_dir_, "quantized model bundle directory")->required();
    c->add_option("--out-dir,-o", out_dir_, "engine directory (created or replaced)")->required();
    c->add_option("--requantization", rounding_, "fixed-point (gemmlowp / TFLite) or float-scale (XNNPACK / ONNX Runtime)")
        ->check(CLI::IsMember({"fixed-point", "float-scale"}))
        ->capture_default_str();
    c->add_option("--weight-format", format_, "int8, or int4 (packed, two weights per byte; grids of <= 4 bits)")
        ->check(CLI::IsMember({"int8", "int4"}))
        ->capture_default_str();
    return c;
  }

  int run() override {
    const auto m = load_model_or_report(model_dir_);
    if (!m) return 2;
    examples::integer_model im;
    try {
      im = examples::make_integer_model(*m,
                                        rounding_ == "float-scale" ? quant::requantization::float_scale
                                                                   : quant::requantization::fixed_point,
                                        format_ == "int4" ? examples::weight_format::int4 : examples::weight_format::int8);
    } catch (const examples::integer_export_error& e) {
      throw data_error(std::string("cannot export ") + model_dir_ + ": " + e.what());
    }
    try {
      examples::save_integer_model(im, out_dir_);
    } catch (const std::exception& e) {
      throw data_error(std::string("cannot write the engine directory: ") + e.what());
    }
    std::size_t weight_ops = 0;
    for (const auto& op : im.ops) weight_ops += examples::is_weight_op(op.kind);
    std::printf("export: wrote %s (%zu weight layers, %s weights, %s requantization)\n", out_dir_.c_str(), weight_ops,
                format_.c_str(), quant::to_string(im.rounding));
    return 0;
  }

 private:
  std::string model_dir_, out_dir_, rounding_ = "fixed-point", format_ = "int8";
};

}  // namespace quant_cli
