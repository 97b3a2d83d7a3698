// examples/tools/cmd_calibrate.hpp — `quant calibrate`: run an observer over arrays.
//
//   quant calibrate -i a.npy [-i b.npy ...] [--observer minmax|mse] --bits 8 [--axis 1]
//                   -o params.json [--scales-out s.npy] [--zero-points-out z.npy]
//
// The observer sees every file in turn (same shape except along the batch) and the
// parameters are computed once at the end; params.json is usable as `--params` of
// fake-quant / quantize.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <quant/observers.hpp>

#include "cli_common.hpp"

namespace quant_cli {

class calibrate_command : public command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* c = app.add_subcommand("calibrate", "run an observer over one or more arrays and write the parameters");
    c->add_option("-i,--input", inputs_, "input .npy files (same shape except along the batch)")->required();
    c->add_option("-o,--output", output_, "output JSON (usable as `--params` of fake-quant/quantize)")->required();
    add_grid_options(c, grid_);
    c->add_option("--axis", axis_, "per-channel axis (default: per tensor)");
    add_observer_option(c, observer_, "minmax or mse");
    c->add_option("--scales-out", scales_out_, "also write the scales as .npy");
    c->add_option("--zero-points-out", zero_points_out_, "also write the zero points as .npy");
    return c;
  }

  int run() override {
    std::optional<quant::minmax_observer> mm;
    std::optional<quant::mse_observer> ms;
    if (observer_ == "mse") ms.emplace(axis_);
    else mm.emplace(axis_);
    std::vector<std::size_t> shape;
    for (const auto& path : inputs_) {
      const xt::xarray<float> x = load_float(path);
      if (axis_ && x.dimension() == 0) throw data_error(path + ": --axis given but the array is a scalar");
      try {
        if (ms) ms->update(x);
        else mm->update(x);
      } catch (const quant::error& e) {
        throw data_error(path + ": " + e.what());
      }
      shape = shape_of(x);
    }
    const quant::qparams p = ms ? ms->compute(grid_.grid(), grid_.sch()) : mm->compute(grid_.grid(), grid_.sch());
    json j = qparams_json(p, grid_.sch(), shape, "half_to_even");
    j.erase("shape");
    j.erase("rounding");
    j["observer"] = observer_;
    j["inputs"] = inputs_;
    output_set out;
    out.text(output_, json_text(j));
    if (!scales_out_.empty()) out.npy(scales_out_, to_array(p.scales()));
    if (!zero_points_out_.empty()) out.npy(zero_points_out_, to_array(p.zero_points()));
    out.commit();
    return 0;
  }

 private:
  std::vector<std::string> inputs_;
  std::string output_, scales_out_, zero_points_out_;
  grid_options grid_;
  std::optional<std::ptrdiff_t> axis_;
  std::string observer_ = "minmax";
};

}  // namespace quant_cli
