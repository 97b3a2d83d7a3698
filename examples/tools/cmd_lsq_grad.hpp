// examples/tools/cmd_lsq_grad.hpp — `quant lsq-grad`: the LSQ / LSQ+ backward pass
// (quant/lsq.hpp; Esser et al. 2020, Bhalgat et al. 2020).
//
//   quant lsq-grad --x x.npy --dy dy.npy --scale S [--zero-point B] --dx dx.npy [-o grads.json]
//                  [--dscale-out ds.npy] [--dzero-point-out db.npy] [--bits 8] [--unsigned]
//                  [--narrow] [--axis A] [--no-gradient-scaling] [--elements-per-scale N]
//                  [--convention paper|pytorch]
//
// dx = dy inside the grid, 0 outside; d scale and d offset summed per tensor (or per channel
// along --axis) and multiplied by g = 1 / sqrt(N qmax) unless --no-gradient-scaling (N: all
// elements per scale, or --elements-per-scale). The grid takes no --scheme: the offset is
// given by --zero-point (an LSQ+ offset, or PyTorch's float zero point).
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include <quant/lsq.hpp>

#include "cli_common.hpp"

namespace quant_cli {

class lsq_grad_command : public command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* c = app.add_subcommand("lsq-grad", "LSQ / LSQ+ backward: dx, dscale (and d zero point) from x, dy");
    c->add_option("--x", x_, "input x (.npy)")->required();
    c->add_option("--dy", dy_, "upstream gradient dL/dx_hat (.npy, same shape)")->required();
    c->add_option("--scale", scale_, "step size: a number or a .npy with one per channel")->required();
    c->add_option("--zero-point", zero_point_,
                  "LSQ+ offset (paper) or float zero point (pytorch): number or .npy; omit for LSQ");
    c->add_option("--dx", dx_out_, "output dL/dx (.npy)")->required();
    c->add_option("-o,--output", json_out_, "write dscale / dzero_point as JSON");
    c->add_option("--dscale-out", dscale_out_, "write dscale as .npy");
    c->add_option("--dzero-point-out", dzero_point_out_, "write d zero point as .npy");
    add_grid_options(c, grid_, grid_flags::without_scheme);
    c->add_option("--axis", axis_, "per-channel axis (default: per tensor)");
    c->add_flag("--no-gradient-scaling", no_gradient_scaling_, "do not multiply by g = 1/sqrt(N qmax)");
    c->add_option("--elements-per-scale", elements_per_scale_, "N of the gradient scale (default: all)");
    c->add_option("--convention", convention_, "paper (LSQ/LSQ+) or pytorch (_fake_quantize_learnable_*)")
        ->check(CLI::IsMember({"paper", "pytorch"}))
        ->capture_default_str();
    return c;
  }

  int run() override {
    const xt::xarray<float> x = load_float(x_), dy = load_float(dy_);
    if (x.shape() != dy.shape())
      throw data_error("x " + examples::shape_text(shape_of(x)) + " and dy " + examples::shape_text(shape_of(dy)) +
                       " have different shapes");
    quant::lsq_params p;
    p.grid = grid_.grid();
    p.scale = numbers_or_npy(scale_, "--scale");
    if (!zero_point_.empty()) {
      p.offset = numbers_or_npy(zero_point_, "--zero-point");
      if (p.offset.size() == 1 && p.scale.size() > 1) p.offset.assign(p.scale.size(), p.offset[0]);
    }
    p.channel_axis = axis_;
    p.gradient_scaling = !no_gradient_scaling_;
    p.elements_per_scale = elements_per_scale_;
    p.convention = convention_ == "pytorch" ? quant::lsq_convention::pytorch : quant::lsq_convention::paper;
    xt::xarray<float> dx;
    const quant::lsq_param_gradients g = quant::eager::lsq_backward(x, dy, p, dx);
    output_set out;
    out.npy(dx_out_, dx);
    if (!dscale_out_.empty()) out.npy(dscale_out_, to_array(g.dscale));
    if (!dzero_point_out_.empty()) {
      if (g.doffset.empty()) throw usage_error("--dzero-point-out needs --zero-point (LSQ+)");
      out.npy(dzero_point_out_, to_array(g.doffset));
    }
    if (!json_out_.empty()) {
      json j;
      j["convention"] = convention_;
      j["bits"] = p.grid.bits;
      j["signed"] = p.grid.is_signed;
      j["gradient_scale"] = quant::lsq_gradient_scale(p, x.size());
      j["dscale"] = g.dscale;
      if (!g.doffset.empty()) j["dzero_point"] = g.doffset;
      out.text(json_out_, json_text(j));
    }
    out.commit();
    return 0;
  }

 private:
  std::string x_, dy_, scale_, zero_point_, dx_out_, json_out_, dscale_out_, dzero_point_out_;
  grid_options grid_;
  std::optional<std::ptrdiff_t> axis_;
  bool no_gradient_scaling_ = false;
  std::size_t elements_per_scale_ = 0;
  std::string convention_ = "paper";
};

}  // namespace quant_cli
