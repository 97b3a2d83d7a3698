// examples/common/model_bundle.hpp — a sequential model on disk: a directory with
// model.json and one .npy per tensor, as people export it from PyTorch without extra
// packages (docs/model_bundle.md has the format and a ten-line exporter).
//
//   {"format": "quant-model", "version": 1, "input_shape": [1, 28, 28],
//    "layers": [{"type": "conv2d", "name": "conv1", "weight": "conv1.weight.npy", "bias": null,
//                "stride": 1, "padding": 1, "groups": 1}, ...]}
//
// Layouts are PyTorch's: linear weight [out, in], conv2d weight [out, in/groups, kh, kw],
// activations NCHW, `flatten` in C order (torch.flatten(x, 1)). `input_shape` is one
// sample's shape: [C, H, W] or [features]. Layer types and their keys:
//   linear          weight, bias (file or null)
//   conv2d          weight, bias, stride, padding (int or [h, w]), groups (dilation 1 only)
//   batchnorm2d     weight (gamma), bias (beta), running_mean, running_var, eps  (eval mode)
//   relu, relu6
//   maxpool2d       kernel, stride (default kernel), padding (default 0)   (floor mode)
//   avgpool2d       kernel, stride, padding (zeros counted, as torch's default)
//   global_avgpool  [C, H, W] -> [C, 1, 1]  (nn.AdaptiveAvgPool2d(1))
//   flatten         [C, H, W] -> [C*H*W]
// A quantized bundle adds, on linear/conv2d layers, "input_encodings" (the activation
// quantizer applied to the layer's input) and "weight_encodings" (the weight quantizer the
// stored, already fake-quantized weights were made with): quant-encodings JSON files
// (encodings_json.hpp).
//
// load_model validates everything (missing file, wrong shape or dtype, unknown type or key
// value, channel counts that do not chain, bad stride/padding/groups, non-finite values)
// and throws examples::bundle_error whose message names the file and the field.
// save_model writes into a temporary directory beside the target and renames it into
// place, so a failure never leaves a partial bundle under the final name.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <quant/qparams.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

#include "encodings_json.hpp"
#include "npy_io.hpp"

namespace examples {

enum class layer_type { linear, conv2d, batchnorm2d, relu, relu6, maxpool2d, avgpool2d, global_avgpool, flatten };

inline const char* to_string(layer_type t) noexcept {
  switch (t) {
    case layer_type::linear: return "linear";
    case layer_type::conv2d: return "conv2d";
    case layer_type::batchnorm2d: return "batchnorm2d";
    case layer_type::relu: return "relu";
    case layer_type::relu6: return "relu6";
    case layer_type::maxpool2d: return "maxpool2d";
    case layer_type::avgpool2d: return "avgpool2d";
    case layer_type::global_avgpool: return "global_avgpool";
    case layer_type::flatten: return "flatten";
  }
  return "?";
}

inline bool has_weights(layer_type t) noexcept { return t == layer_type::linear || t == layer_type::conv2d; }

// A malformed bundle: `file` is the file at fault (model.json or a tensor), `field` the
// JSON path of the offending entry, e.g. "layers[3].weight".
struct bundle_error : std::runtime_error {
  bundle_error(std::string file_, std::string field_, const std::string& what)
      : std::runtime_error(file_ + ": " + (field_.empty() ? "" : field_ + ": ") + what),
        file(std::move(file_)),
        field(std::move(field_)) {}
  std::string file, field;
};

// A quantizer as stored in a bundle: the parameters and how they were made.
struct encoding {
  quant::qparams params;
  quant::scheme scheme = quant::scheme::asymmetric;
  std::string rounding = "half_to_even";
};

struct model_layer {
  layer_type type = layer_type::relu;
  std::string name;  // unique; names the layer's files on save ("<name>.weight.npy")

  // linear: weight [out, in]; conv2d: [out, in/groups, kh, kw]; batchnorm2d: gamma [C].
  xt::xarray<float> weight;
  // linear / conv2d: optional bias [out]; batchnorm2d: beta [C] (always present).
  std::optional<xt::xtensor<float, 1>> bias;
  // batchnorm2d
  xt::xtensor<float, 1> running_mean, running_var;
  double eps = 1e-5;
  // conv2d and pools
  std::size_t kernel_h = 1, kernel_w = 1;  // pools (conv: from the weight)
  std::size_t stride_h = 1, stride_w = 1;
  std::size_t pad_h = 0, pad_w = 0;
  std::size_t groups = 1;  // conv2d
  // quantized bundles (linear / conv2d only)
  std::optional<encoding> input_encoding, weight_encoding;

  std::size_t out_channels() const { return weight.shape()[0]; }
  bool is_depthwise(std::size_t in_channels) const {
    return type == layer_type::conv2d && groups > 1 && groups == in_channels && weight.shape()[0] == in_channels &&
           weight.shape()[1] == 1;
  }
};

struct model {
  std::vector<std::size_t> input_shape;  // one sample: [C, H, W] or [features]
  std::vector<model_layer> layers;

  // Shape of one sample before layer i (i = layers.size(): the output). Assumes a valid model.
  std::vector<std::size_t> shape_before(std::size_t i) const;
  std::vector<std::size_t> output_shape() const { return shape_before(layers.size()); }
};

inline std::size_t shape_size(const std::vector<std::size_t>& s) {
  std::size_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

namespace detail {

// The output shape of layer `l` for input `in`; throws bundle_error(file, field, ...) when
// the layer does not fit its input or its own parameters are invalid.
std::vector<std::size_t> layer_output_shape(const model_layer& l, const std::vector<std::size_t>& in,
                                            const std::string& file, const std::string& field);

// Writes `text` to `path` (bundle_error when it cannot).
void write_text_file(const std::string& path, const std::string& text);

template <class E>
void write_npy_file(const std::string& path, const E& a) {
  write_text_file(path, xt::dump_npy(a));
}

// Whether `to` may be replaced by a new bundle: absent, an empty directory, or a bundle.
void check_replaceable(const std::filesystem::path& to);

}  // namespace detail

// Checks the whole model (shapes chain, parameters valid, values finite); `dir` names the
// bundle in errors. load_model calls it; call it on models built in code before running them.
void validate_model(const model& m, const std::string& dir = "<model>");

// Reads and validates the bundle in `dir`.
model load_model(const std::string& dir);

// Writes every file of `m` (and the `extra` text files, name -> content, e.g. a report)
// into `<dir>.tmp-<pid>`, then renames that directory to `dir`. An existing `dir` is replaced
// only if it is empty or a bundle (has a model.json); anything else is refused (bundle_error).
void save_model(const model& m, const std::string& dir,
                const std::vector<std::pair<std::string, std::string>>& extra = {});

}  // namespace examples
