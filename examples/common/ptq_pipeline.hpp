// examples/common/ptq_pipeline.hpp — post-training quantization of a model bundle, composed
// from the library's primitives (Nagel et al. 2019 "Data-Free Quantization"; Nagel et al.
// 2021 "A White Paper on Neural Network Quantization", §3-4):
//
//   1. batch-norm folding (default on): every linear/conv2d followed directly by a
//      batchnorm2d becomes one layer (quant/batchnorm_folding.hpp); the BN's (beta, |gamma|)
//      is kept as the layer's output model for steps 3 and 5
//   2. cross-layer equalization (optional): chains of consecutive weight layers separated only
//      by ReLU, max/avg/global pooling and flatten (quant/equalization.hpp); a linear layer
//      after flatten reads channel i as its H*W consecutive inputs; depthwise convs take part;
//      ReLU6, an unfolded BN or a grouped (non-depthwise) conv ends a chain
//   3. high-bias absorption (optional) on every pair of a chain whose first layer has BN
//      statistics (quant/bias_absorption.hpp)
//   4. then layer by layer, in order, on calibration data run through the model quantized so
//      far (run_layers of model_runner.hpp: earlier weights and activation quantizers applied):
//      a. the activation quantizer at the layer's input: per-tensor asymmetric on the unsigned
//         act_bits grid, min-max or MSE (act_bits 32: none)
//      b. the weight quantizer: symmetric signed weight_bits grid, per-tensor or per-channel
//         (axis 0), min-max or MSE; rounding to nearest, AdaRound (quant/adaround.hpp, on the
//         layer's im2col rows, reconstructing after the following ReLU), GPTQ (quant/gptq.hpp,
//         on the quantized-model input rows, with the observer's scales), or a custom
//         rounding callback
//      c. bias correction (optional): empirical, b -= (W_q - W) E[x] with E[x] the mean of
//         the layer's (quantized-model) input rows, or analytic, E[x] from the previous
//         layer's BN statistics through the activation between (quant/bias_correction.hpp)
// The result is a model whose weights are fake-quantized floats with input_encodings and
// weight_encodings on every weight layer: run_model on it is the simulation, so the accuracy
// reported here is what `quant eval` prints for the saved bundle (same runner, same batch).
// Biases stay float (as in PyTorch's and AIMET's simulation).
//
// Not covered: AdaRound and bias correction of grouped (non-depthwise) convs, AdaRound of
// depthwise convs (they are not one GEMM): those layers round to nearest / keep their bias,
// and the report says so.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <quant/adaround.hpp>
#include <quant/batchnorm_folding.hpp>
#include <quant/bias_absorption.hpp>
#include <quant/bias_correction.hpp>
#include <quant/equalization.hpp>
#include <quant/gptq.hpp>
#include <quant/im2col.hpp>
#include <quant/layer_weights.hpp>
#include <quant/observers.hpp>
#include <quant/uniform.hpp>

#include "model_bundle.hpp"
#include "model_runner.hpp"

namespace examples {

enum class range_method { minmax, mse };
enum class weight_rounding { nearest, adaround, gptq, custom };
enum class bias_correction_mode { none, empirical, analytic };
inline const char* to_string(weight_rounding r);

// What a custom weight rounding (e.g. GPTQ) receives for one layer: W as [out, K] (a conv's
// weight.reshape(out, -1)), the chosen qparams (axis 0 when per channel), and the layer's
// input rows X [samples, K] (a conv's im2col rows) in the float model and in the model
// quantized so far (after the layer's own input quantizer). Returns W_q [out, K] on the grid.
struct weight_rounding_context {
  std::size_t layer;
  const xt::xtensor<float, 2>& weight;
  const quant::qparams& qparams;
  const xt::xtensor<float, 2>& float_inputs;
  const xt::xtensor<float, 2>& quantized_inputs;
};

struct ptq_options {
  bool fold_bn = true;
  bool cle = false;
  quant::equalization_options cle_options{};
  bool bias_absorption = false;
  double absorption_sigmas = 3.0;
  int weight_bits = 8;
  bool per_channel = false;
  range_method weight_observer = range_method::minmax;
  weight_rounding rounding = weight_rounding::nearest;
  quant::adaround_options adaround{};  // iterations etc.; batch_size counts samples here
  std::size_t adaround_samples = 1024;  // calibration samples AdaRound sees (the first ones)
  std::function<xt::xtensor<float, 2>(const weight_rounding_context&)> custom_rounding;  // rounding == custom
  bias_correction_mode bias_correction = bias_correction_mode::none;
  int act_bits = 8;  // 32: no activation quantizers
  range_method act_observer = range_method::minmax;
  std::size_t batch = 256;  // runner chunk size (eval must use the same to reproduce bit for bit)
  std::function<void(const std::string&)> progress;  // one line per step (optional)

  void validate() const {
    if (weight_bits < 2 || weight_bits > 16)
      throw std::invalid_argument("weight_bits = " + std::to_string(weight_bits) + ": must be in [2, 16]");
    if (act_bits != 32 && (act_bits < 2 || act_bits > 16))
      throw std::invalid_argument("act_bits = " + std::to_string(act_bits) + ": must be in [2, 16] or 32 (none)");
    if (rounding == weight_rounding::custom && !custom_rounding)
      throw std::invalid_argument("rounding = custom needs custom_rounding");
    if (bias_absorption && !cle)
      throw std::invalid_argument("bias_absorption works on the CLE chains: enable cle too");
    if (bias_absorption && !fold_bn)
      throw std::invalid_argument("bias_absorption needs the folded BN statistics: enable fold_bn");
    if (bias_correction == bias_correction_mode::analytic && !fold_bn)
      throw std::invalid_argument("analytic bias correction needs the folded BN statistics: enable fold_bn");
  }
};

struct ptq_layer_report {
  std::size_t index = 0;  // in the quantized model
  std::string name, kind;
  double spread_folded = 1.0;     // max/min output-channel weight range after BN folding
  double spread_equalized = 1.0;  // ... after CLE (and absorption); equal to the above without CLE
  std::string rounding;           // nearest / adaround / gptq / custom
  std::optional<double> adaround_rtn_error, adaround_error;
  std::optional<double> gptq_rtn_error, gptq_error;  // on the quantized-model input rows
  std::string bias_correction = "none";  // none / empirical / analytic / skipped: why
  double max_abs_bias_delta = 0.0;
  std::optional<float> input_scale;
  std::optional<std::int32_t> input_zero_point;
};

struct ptq_report {
  std::vector<std::pair<std::string, double>> stage_seconds;  // in order of first use
  std::vector<ptq_layer_report> layers;
  std::size_t calibration_samples = 0;
  std::size_t cle_chains = 0, cle_sweeps = 0;
  bool cle_converged = true;
  std::vector<std::string> notes;
  std::optional<double> float_accuracy, accuracy;  // top-1 on the eval data, when given
  std::size_t eval_samples = 0;

  void add_time(const std::string& stage, double s) {
    for (auto& [n, t] : stage_seconds)
      if (n == stage) {
        t += s;
        return;
      }
    stage_seconds.emplace_back(stage, s);
  }
  double total_seconds() const {
    double t = 0.0;
    for (const auto& st : stage_seconds) t += st.second;
    return t;
  }
};

struct ptq_result {
  model quantized;
  ptq_report report;
};

// BN folding alone: every linear/conv2d directly followed by batchnorm2d becomes one layer.
// `outputs` (optional) receives, per layer of the result, the folded BN's output model.
model fold_batchnorms(const model& m, std::vector<std::optional<quant::channel_gaussian>>* outputs = nullptr);

// The pipeline above. `calib` [N, ...input_shape]; eval_x / eval_labels optional (both or
// neither). Throws std::invalid_argument for bad options, quant:: errors from the primitives.
ptq_result run_ptq(const model& input, const xt::xarray<float>& calib, const ptq_options& opt,
                   const xt::xarray<float>* eval_x = nullptr, const std::vector<std::int64_t>* eval_labels = nullptr);

inline const char* to_string(range_method r) { return r == range_method::mse ? "mse" : "minmax"; }
inline const char* to_string(weight_rounding r) {
  return r == weight_rounding::adaround ? "adaround"
         : r == weight_rounding::gptq   ? "gptq"
         : r == weight_rounding::custom ? "custom"
                                        : "nearest";
}
inline const char* to_string(bias_correction_mode b) {
  return b == bias_correction_mode::empirical ? "empirical" : b == bias_correction_mode::analytic ? "analytic" : "none";
}

// The report (and the options that produced it) as JSON.
nlohmann::ordered_json ptq_report_json(const ptq_report& r, const ptq_options& o);

}  // namespace examples
