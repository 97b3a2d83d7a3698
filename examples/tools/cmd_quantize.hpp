// examples/tools/cmd_quantize.hpp — `quant quantize`: a float array to integers.
//
//   quant quantize -i x.npy -o q.npy ... [--dtype auto|int8|uint8|int16|int32|float32]
//                  [--scales-out s.npy] [--zero-points-out z.npy] [--encodings e.json]
//
// q = clamp(round(x / s) + z, qmin, qmax) with the parameters from exactly one source
// (cli_common.hpp, resolve_params). --dtype auto picks the smallest integer type holding the
// grid; float32 stores the integers as floats (exact up to 2^24).
#pragma once

#include <cstdint>
#include <string>

#include <quant/uniform.hpp>

#include "cli_common.hpp"

namespace quant_cli {

// The smallest .npy integer type that holds every value of the grid.
inline std::string auto_dtype(const quant::grid& g) {
  if (g.qmin() >= -128 && g.qmax() <= 127) return "int8";
  if (g.qmin() >= 0 && g.qmax() <= 255) return "uint8";
  if (g.qmin() >= -32768 && g.qmax() <= 32767) return "int16";
  return "int32";
}

class quantize_command : public command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* c = app.add_subcommand("quantize", "quantize a float array to integers, with scales/zero points and JSON");
    io_.add_to(c, "output .npy of integers");
    c->add_option("--dtype", dtype_, "output type: auto (smallest that fits), int8, uint8, int16, int32, float32")
        ->check(CLI::IsMember({"auto", "int8", "uint8", "int16", "int32", "float32"}))
        ->capture_default_str();
    c->add_option("--scales-out", scales_out_, "write the scales (.npy, float32)");
    c->add_option("--zero-points-out", zero_points_out_, "write the zero points (.npy, int32)");
    c->add_option("--encodings", encodings_, "write bits, scheme, axis, scales and zero points as JSON");
    return c;
  }

  int run() override {
    const xt::xarray<float> x = load_float(io_.input);
    const quant::qparams p = resolve_params(x, io_.grid, io_.params);
    const std::string dtype = dtype_ == "auto" ? auto_dtype(p.grid()) : dtype_;
    output_set out;
    with_rounding(io_.params, [&](auto round) {
      using R = decltype(round);
      if (dtype == "int8") out.npy(io_.output, quant::eager::quantize<std::int8_t, R>(x, p, round));
      else if (dtype == "uint8") out.npy(io_.output, quant::eager::quantize<std::uint8_t, R>(x, p, round));
      else if (dtype == "int16") out.npy(io_.output, quant::eager::quantize<std::int16_t, R>(x, p, round));
      else if (dtype == "int32") out.npy(io_.output, quant::eager::quantize<std::int32_t, R>(x, p, round));
      else {  // float32 holding the integers (exact up to 2^24)
        const xt::xarray<std::int32_t> q = quant::eager::quantize<std::int32_t, R>(x, p, round);
        out.npy(io_.output, xt::xarray<float>(xt::cast<float>(q)));
      }
      return 0;
    });
    if (!scales_out_.empty()) out.npy(scales_out_, to_array(p.scales()));
    if (!zero_points_out_.empty()) out.npy(zero_points_out_, to_array(p.zero_points()));
    json j = qparams_json(p, io_.grid.sch(), shape_of(x), io_.params.rounding);
    j["dtype"] = dtype;
    if (!encodings_.empty()) out.text(encodings_, json_text(j));
    out.commit();
    return 0;
  }

 private:
  array_quantizer_options io_;
  std::string encodings_, scales_out_, zero_points_out_;
  std::string dtype_ = "auto";
};

}  // namespace quant_cli
