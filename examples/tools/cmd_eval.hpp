// examples/tools/cmd_eval.hpp — `quant eval`: run a model bundle on an input array.
//
//   quant eval --model DIR --input X.npy [--labels y.npy] [--logits-out L.npy] [--batch 256]
//
// X is [N, ...input_shape] float32/float64; labels [N] uint8/int8/int32/int64. Prints the
// top-1 accuracy when labels are given. A quantized bundle is evaluated with its activation
// quantizers applied (the simulation `quant ptq` reported). Exit 2 for a malformed bundle
// (the message names the file and the field), 1 for bad data.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "../common/model_bundle.hpp"
#include "../common/model_runner.hpp"
#include "../common/npy_io.hpp"
#include "cli_common.hpp"

namespace quant_cli {

// Class labels as int64, from an integer .npy file of shape [N].
inline std::vector<std::int64_t> load_labels(const std::string& path) {
  try {
    const examples::npy_info info = examples::read_npy_info(path);
    if (info.shape.size() != 1)
      throw data_error(path + ": labels must be one-dimensional [N], got " + examples::shape_text(info.shape));
    std::vector<std::int64_t> out;
    auto take = [&](auto tag) {
      using T = decltype(tag);
      const auto a = xt::load_npy<T>(path);
      out.assign(a.begin(), a.end());
    };
    switch (info.dtype) {
      case examples::npy_dtype::u1: take(std::uint8_t{}); break;
      case examples::npy_dtype::i1: take(std::int8_t{}); break;
      case examples::npy_dtype::i2: take(std::int16_t{}); break;
      case examples::npy_dtype::u2: take(std::uint16_t{}); break;
      case examples::npy_dtype::i4: take(std::int32_t{}); break;
      case examples::npy_dtype::i8: take(std::int64_t{}); break;
      default:
        throw data_error(path + ": labels must be integers (uint8, int8, int16, uint16, int32 or int64), got " +
                         examples::npy_descr(info.dtype));
    }
    if (out.size() != info.size) throw data_error(path + ": label count does not match the header");
    for (auto v : out)
      if (v < 0) throw data_error(path + ": negative label " + std::to_string(v));
    return out;
  } catch (const examples::npy_error& e) {
    throw data_error(e.what());
  }
}

// The model, or exit status 2 with the bundle error on stderr.
inline std::optional<examples::model> load_model_or_report(const std::string& dir) {
  try {
    return examples::load_model(dir);
  } catch (const examples::bundle_error& e) {
    std::fprintf(stderr, "quant: malformed model bundle: %s\n", e.what());
    return std::nullopt;
  }
}

inline void check_labels(const std::vector<std::int64_t>& labels, std::size_t samples, std::size_t classes,
                         const std::string& path) {
  if (labels.size() != samples)
    throw data_error(path + ": " + std::to_string(labels.size()) + " labels for " + std::to_string(samples) +
                     " input samples");
  for (auto v : labels)
    if (static_cast<std::size_t>(v) >= classes)
      throw data_error(path + ": label " + std::to_string(v) + " but the model has " + std::to_string(classes) +
                       " outputs");
}

inline std::string accuracy_line(double acc, std::size_t n) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "top-1 accuracy: %.2f%% (%zu/%zu)", 100.0 * acc,
                static_cast<std::size_t>(std::llround(acc * static_cast<double>(n))), n);
  return buf;
}

class eval_command : public command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* c = app.add_subcommand("eval", "run a model bundle (model.json + .npy tensors) on inputs; top-1 accuracy");
    c->add_option("--model,-m", model_dir_, "model bundle directory")->required();
    c->add_option("--input,-i", input_, "inputs [N, ...input_shape] (.npy, float32/float64)")->required();
    c->add_option("--labels,-l", labels_, "labels [N] (.npy, uint8/int64/...)");
    c->add_option("--logits-out", logits_out_, "write the outputs [N, ...] (.npy, float32)");
    c->add_option("--batch", batch_, "samples per chunk")->check(CLI::Range(1, 1 << 20))->capture_default_str();
    return c;
  }

  int run() override {
    const auto m = load_model_or_report(model_dir_);
    if (!m) return 2;
    const xt::xarray<float> x = load_float(input_);
    std::vector<std::int64_t> labels;
    if (!labels_.empty()) labels = load_labels(labels_);
    examples::use_single_threaded_blas();
    examples::run_options ro;
    ro.batch = batch_;
    std::fprintf(stderr, "eval: %zu samples through %zu layers\n", x.shape().empty() ? std::size_t(0) : x.shape()[0],
                 m->layers.size());
    xt::xarray<float> logits;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      logits = examples::run_model(*m, x, ro);
    } catch (const std::length_error& e) {
      throw data_error(input_ + ": " + e.what());
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "eval: forward pass %.4f s (%d threads, batch %zu)\n", seconds, quant::num_threads(), batch_);
    output_set out;
    if (!logits_out_.empty()) out.npy(logits_out_, logits);
    if (!labels_.empty()) {
      const std::size_t n = logits.shape()[0];
      check_labels(labels, n, n ? logits.size() / n : 0, labels_);
      const double acc = examples::top1_accuracy(logits, labels);
      std::printf("%s\n", accuracy_line(acc, n).c_str());
    }
    out.commit();
    return 0;
  }

 private:
  std::string model_dir_, input_, labels_, logits_out_;
  std::size_t batch_ = 256;
};

}  // namespace quant_cli
