// examples/tools/cmd_kurtosis.hpp — `quant kurtosis`: kurtosis of arrays and their KURE
// terms (quant/kurtosis.hpp; Shkolnik et al. 2020).
//
//   quant kurtosis -i a.npy [-i b.npy ...] [--unbiased] [--target 1.8] [--format table|json] [-o k.json]
//
// One row per file: the kurtosis (population m4 / m2^2, or with the unbiased variance), and
// the file's KURE term (K - K_T)^2 / T, T = number of files, so the terms sum to the KURE
// loss of the files taken as the layers of one model. A constant array has no kurtosis: it
// is reported as constant with a term of 0, as the library's KURE loss does.
#pragma once

#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <quant/kurtosis.hpp>

#include "cli_common.hpp"

namespace quant_cli {

class kurtosis_command : public command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* c = app.add_subcommand("kurtosis", "kurtosis of each array and its KURE term (K - target)^2 / files");
    c->add_option("-i,--input", inputs_, "input .npy files (float32 or float64), e.g. one per layer")->required();
    c->add_flag("--unbiased", unbiased_, "use the unbiased variance (torch.std, as the KURE reference code)");
    c->add_option("--target", target_, "KURE target kurtosis (1.8: uniform)")->capture_default_str();
    c->add_option("--format", format_, "stdout format: table or json")
        ->check(CLI::IsMember({"table", "json"}))
        ->capture_default_str();
    c->add_option("-o,--output", output_, "also write the JSON report to this file");
    return c;
  }

  int run() override {
    const json j = report();
    if (format_ == "json") std::cout << json_text(j);
    else print_table(j);
    if (!output_.empty()) {
      output_set out;
      out.text(output_, json_text(j));
      out.commit();
    }
    return 0;
  }

 private:
  json report() const {
    const auto v = unbiased_ ? quant::variance_estimator::unbiased : quant::variance_estimator::population;
    const double T = static_cast<double>(inputs_.size());
    json files = json::array();
    double loss = 0.0;
    for (const auto& path : inputs_) {
      const xt::xarray<float> x = load_float(path);
      quant::moments m;
      double k = 0.0;
      try {
        m = quant::central_moments(x);
        k = quant::kurtosis(x, v);
      } catch (const quant::error& e) {
        throw data_error(path + ": " + e.what());
      }
      const bool constant = !(m.m2 > 0.0);
      const double term = constant ? 0.0 : (k - target_) * (k - target_) / T;
      loss += term;
      json f;
      f["file"] = path;
      f["shape"] = shape_of(x);
      f["elements"] = x.size();
      f["mean"] = m.mean;
      f["std"] = std::sqrt(m.m2);  // population
      f["constant"] = constant;
      if (constant) f["kurtosis"] = nullptr;
      else f["kurtosis"] = k;
      f["kure_term"] = term;
      files.push_back(f);
    }
    json j;
    j["variance"] = unbiased_ ? "unbiased" : "population";
    j["target"] = target_;
    j["files"] = files;
    j["kure_loss"] = loss;
    return j;
  }

  void print_table(const json& j) const {
    std::printf("%-40s %14s %12s %12s  %s\n", "file", "elements", "kurtosis", "KURE term", "");
    for (const auto& f : j["files"]) {
      std::string name = f["file"].get<std::string>();
      if (name.size() > 40) name = "..." + name.substr(name.size() - 37);
      if (f["constant"].get<bool>())
        std::printf("%-40s %14zu %12s %12.6g  constant (no kurtosis)\n", name.c_str(), f["elements"].get<std::size_t>(),
                    "-", 0.0);
      else
        std::printf("%-40s %14zu %12.6f %12.6g\n", name.c_str(), f["elements"].get<std::size_t>(),
                    f["kurtosis"].get<double>(), f["kure_term"].get<double>());
    }
    std::printf("KURE loss (target %.4g, %s variance): %.6g\n", target_, unbiased_ ? "unbiased" : "population",
                j["kure_loss"].get<double>());
  }

  std::vector<std::string> inputs_;
  std::string output_, format_ = "table";
  bool unbiased_ = false;
  double target_ = 1.8;
};

}  // namespace quant_cli
