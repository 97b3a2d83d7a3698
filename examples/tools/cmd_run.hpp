// examples/tools/cmd_run.hpp — `quant run`: execute an integer engine directory written by
// `quant export` with integer arithmetic only (examples/common/integer_model.hpp).
//
//   quant run --model ENGINE_DIR --input X.npy [--labels y.npy] [--logits-out L.npy]
//             [--activations-out DIR] [--simulate exact] [--check-exact] [--batch 256]
//
// The float input is quantized once with the first layer's input quantizer; the logits are
// the last layer's int32 accumulators dequantized. --simulate exact computes the same
// pipeline as a fake-quant simulation would (integer-valued doubles, BLAS GEMMs), which gives
// the same integers and logits. --activations-out writes one <index>_<name>.npy (uint8
// [N, ...]) per op output on an 8-bit grid. --check-exact runs both and prints, per op, how
// many uint8 activations differ, how many logits differ (bitwise) and how many predictions
// differ; exit 1 if anything differs. All outputs appear together or not at all.
// Exit 2: usage or a malformed engine directory; 1: bad data.
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "../common/integer_model.hpp"
#include "../common/model_runner.hpp"
#include "cli_common.hpp"
#include "cmd_eval.hpp"

namespace quant_cli {

class run_command : public command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* c = app.add_subcommand("run", "run an integer engine directory (quant export) with integer arithmetic");
    c->add_option("--model,-m", model_dir_, "engine directory")->required();
    c->add_option("--input,-i", input_, "inputs [N, ...input_shape] (.npy, float32/float64)")->required();
    c->add_option("--labels,-l", labels_, "labels [N] (.npy, uint8/int64/...)");
    c->add_option("--logits-out", logits_out_, "write the dequantized logits (.npy, float32)");
    c->add_option("--activations-out", act_dir_, "existing directory: every op's uint8 output as <index>_<name>.npy");
    c->add_option("--simulate", simulate_, "exact: the exact simulation instead of the integer kernels")
        ->check(CLI::IsMember({"exact"}));
    c->add_flag("--check-exact", check_, "run the integer kernels AND the exact simulation; count mismatches");
    c->add_option("--batch", batch_, "samples per chunk")->check(CLI::Range(1, 1 << 20))->capture_default_str();
    return c;
  }

  int run() override {
    examples::integer_model im;
    try {
      im = examples::load_integer_model(model_dir_);
    } catch (const examples::bundle_error& e) {
      std::fprintf(stderr, "quant: malformed engine directory: %s\n", e.what());
      return 2;
    }
    if (!act_dir_.empty()) {
      struct stat st {};
      if (::stat(act_dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw usage_error("--activations-out " + act_dir_ + " is not an existing directory");
    }
    const xt::xarray<float> x = load_float(input_);
    std::vector<std::int64_t> labels;
    if (!labels_.empty()) labels = load_labels(labels_);
    examples::use_single_threaded_blas();
    if (check_) return check_exact(im, x, labels);
    const bool exact = simulate_ == "exact";
    const auto t0 = std::chrono::steady_clock::now();
    examples::integer_run_result r;
    try {
      r = examples::run_integer_model(im, x, exact ? examples::integer_mode::exact_simulation : examples::integer_mode::integer,
                                      !act_dir_.empty(), batch_);
    } catch (const std::length_error& e) {
      throw data_error(input_ + ": " + e.what());
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "run: %s %zu samples in %.4f s (%d threads, batch %zu)\n", exact ? "exact simulation of" : "integer run of",
                 x.shape()[0], seconds, quant::num_threads(), batch_);
    output_set out;
    if (!logits_out_.empty()) out.npy(logits_out_, r.logits);
    for (std::size_t k = 0; k < r.activations.size(); ++k) {
      const auto& op = im.ops[r.activation_ops[k]];
      char idx[16];
      std::snprintf(idx, sizeof idx, "%02zu", r.activation_ops[k]);
      out.npy(act_dir_ + "/" + idx + "_" + op.name + ".npy", r.activations[k]);
    }
    if (!labels_.empty()) {
      const std::size_t n = r.logits.shape()[0];
      check_labels(labels, n, n ? r.logits.size() / n : 0, labels_);
      std::printf("%s\n", accuracy_line(examples::top1_accuracy(r.logits, labels), n).c_str());
    }
    out.commit();
    return 0;
  }

 private:
  int check_exact(const examples::integer_model& im, const xt::xarray<float>& x, const std::vector<std::int64_t>& labels) {
    auto timed = [&](examples::integer_mode mode, double& sec) {
      const auto t0 = std::chrono::steady_clock::now();
      examples::integer_run_result r;
      try {
        r = examples::run_integer_model(im, x, mode, true, batch_);
      } catch (const std::length_error& e) {
        throw data_error(input_ + ": " + e.what());
      }
      sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return r;
    };
    double ti = 0, te = 0;
    const auto a = timed(examples::integer_mode::integer, ti);
    const auto b = timed(examples::integer_mode::exact_simulation, te);
    std::printf("check: integer run %.3f s, exact simulation %.3f s (%zu samples, batch %zu)\n", ti, te, x.shape()[0],
                batch_);
    std::size_t total = 0;
    for (std::size_t k = 0; k < a.activations.size(); ++k) {
      std::size_t d = 0;
      for (std::size_t i = 0; i < a.activations[k].size(); ++i) d += a.activations[k].data()[i] != b.activations[k].data()[i];
      total += d;
      std::printf("check: op %2zu %-12s uint8 activations differing: %zu of %zu\n", a.activation_ops[k],
                  im.ops[a.activation_ops[k]].name.c_str(), d, a.activations[k].size());
    }
    std::size_t dl = 0;
    for (std::size_t i = 0; i < a.logits.size(); ++i) dl += a.logits.data()[i] != b.logits.data()[i];
    const auto pa = examples::top1(a.logits), pb = examples::top1(b.logits);
    std::size_t dp = 0;
    for (std::size_t i = 0; i < pa.size(); ++i) dp += pa[i] != pb[i];
    std::printf("check: logits differing: %zu of %zu; predictions differing: %zu of %zu\n", dl, a.logits.size(), dp,
                pa.size());
    if (!labels.empty()) {
      const std::size_t n = a.logits.shape()[0];
      check_labels(labels, n, n ? a.logits.size() / n : 0, labels_);
      std::printf("check: integer %s\n", accuracy_line(examples::top1_accuracy(a.logits, labels), n).c_str());
      std::printf("check: exact simulation %s\n", accuracy_line(examples::top1_accuracy(b.logits, labels), n).c_str());
    }
    return total + dl + dp == 0 ? 0 : 1;
  }

  bool check_ = false;
  std::string model_dir_, input_, labels_, logits_out_, act_dir_, simulate_;
  std::size_t batch_ = 256;
};

}  // namespace quant_cli
