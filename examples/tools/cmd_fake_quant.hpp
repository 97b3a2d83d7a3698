// examples/tools/cmd_fake_quant.hpp — `quant fake-quant`: quantize + dequantize a float array.
//
//   quant fake-quant -i x.npy -o y.npy --bits 4 [--axis 0 | --group 32]
//                    (--scale S | --observer mse | --params p.json) [--encodings e.json]
//
// y = (clamp(round(x / s) + z, qmin, qmax) - z) * s with the parameters from exactly one
// source (cli_common.hpp, resolve_params) and the --rounding policy; y is float32 of x's
// shape. --encodings also writes the parameters used as JSON.
#pragma once

#include <string>

#include <quant/uniform.hpp>

#include "cli_common.hpp"

namespace quant_cli {

class fake_quant_command : public command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* c = app.add_subcommand("fake-quant", "fake-quantize (quantize + dequantize) a float array");
    io_.add_to(c, "output .npy (float32)");
    c->add_option("--encodings", encodings_, "also write the parameters used as JSON");
    return c;
  }

  int run() override {
    const xt::xarray<float> x = load_float(io_.input);
    const quant::qparams p = resolve_params(x, io_.grid, io_.params);
    output_set out;
    with_rounding(io_.params, [&](auto round) {
      xt::xarray<float> y;
      quant::eager::fake_quantize<decltype(round)>(x, p, y, round);
      out.npy(io_.output, y);
      return 0;
    });
    if (!encodings_.empty())
      out.text(encodings_, json_text(qparams_json(p, io_.grid.sch(), shape_of(x), io_.params.rounding)));
    out.commit();
    return 0;
  }

 private:
  array_quantizer_options io_;
  std::string encodings_;
};

}  // namespace quant_cli
