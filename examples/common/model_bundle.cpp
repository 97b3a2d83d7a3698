// examples/common/model_bundle.cpp — the model bundle reader, checks and writer declared in
// model_bundle.hpp (the format: there and in docs/model_bundle.md).
#include "model_bundle.hpp"

#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

#include "encodings_json.hpp"
#include "npy_io.hpp"

namespace examples {

namespace detail {
namespace {

std::size_t pooled_size(std::size_t in, std::size_t k, std::size_t s, std::size_t p) {
  return (in + 2 * p - k) / s + 1;
}

}  // namespace

std::vector<std::size_t> layer_output_shape(const model_layer& l, const std::vector<std::size_t>& in,
                                            const std::string& file, const std::string& field) {
  auto fail = [&](const std::string& sub, const std::string& what) {
    throw bundle_error(file, field + (sub.empty() ? "" : "." + sub), what);
  };
  auto need_chw = [&](const char* what) {
    if (in.size() != 3)
      fail("", std::string(what) + " needs a [C, H, W] input, got " + shape_text(in) + " (is a flatten misplaced?)");
  };
  auto ws = [&] { return std::vector<std::size_t>(l.weight.shape().begin(), l.weight.shape().end()); };
  auto check_bias = [&](std::size_t out) {
    if (l.bias && l.bias->size() != out)
      fail("bias", "shape [" + std::to_string(l.bias->size()) + "] does not match " + std::to_string(out) +
                       " output channels");
  };
  switch (l.type) {
    case layer_type::linear: {
      if (l.weight.dimension() != 2) fail("weight", "linear weight must be [out, in], got " + shape_text(ws()));
      if (in.size() != 1)
        fail("", "linear needs a flat input, got " + shape_text(in) + " (add a flatten layer before it)");
      if (l.weight.shape()[1] != in[0])
        fail("weight", "shape " + shape_text(ws()) + ": " + std::to_string(l.weight.shape()[1]) +
                           " input features, but the previous layer gives " + std::to_string(in[0]));
      if (l.weight.shape()[0] == 0) fail("weight", "no output features");
      check_bias(l.weight.shape()[0]);
      return {l.weight.shape()[0]};
    }
    case layer_type::conv2d: {
      if (l.weight.dimension() != 4)
        fail("weight", "conv2d weight must be [out, in/groups, kh, kw], got " + shape_text(ws()));
      need_chw("conv2d");
      const std::size_t out = l.weight.shape()[0];
      if (l.groups == 0) fail("groups", "must be >= 1");
      if (in[0] % l.groups != 0 || out % l.groups != 0)
        fail("groups", std::to_string(l.groups) + " does not divide the " + std::to_string(in[0]) +
                           " input channels and the " + std::to_string(out) + " output channels");
      if (l.weight.shape()[1] != in[0] / l.groups)
        fail("weight", "shape " + shape_text(ws()) + ": expects " + std::to_string(l.weight.shape()[1] * l.groups) +
                           " input channels (in/groups = " + std::to_string(l.weight.shape()[1]) + ", groups " +
                           std::to_string(l.groups) + "), but the previous layer gives " + std::to_string(in[0]));
      if (out == 0 || l.weight.shape()[2] == 0 || l.weight.shape()[3] == 0) fail("weight", "empty kernel");
      if (l.stride_h == 0 || l.stride_w == 0) fail("stride", "must be >= 1");
      const std::size_t kh = l.weight.shape()[2], kw = l.weight.shape()[3];
      if (in[1] + 2 * l.pad_h < kh || in[2] + 2 * l.pad_w < kw)
        fail("padding", "the " + std::to_string(kh) + "x" + std::to_string(kw) + " kernel does not fit the padded " +
                            std::to_string(in[1]) + "x" + std::to_string(in[2]) + " input");
      check_bias(out);
      return {out, pooled_size(in[1], kh, l.stride_h, l.pad_h), pooled_size(in[2], kw, l.stride_w, l.pad_w)};
    }
    case layer_type::batchnorm2d: {
      need_chw("batchnorm2d");
      const std::size_t c = in[0];
      auto check = [&](std::size_t n, const char* f) {
        if (n != c) fail(f, "has " + std::to_string(n) + " entries, the input has " + std::to_string(c) + " channels");
      };
      if (l.weight.dimension() != 1) fail("weight", "must be [C], got " + shape_text(ws()));
      check(l.weight.size(), "weight");
      check(l.bias ? l.bias->size() : 0, "bias");
      check(l.running_mean.size(), "running_mean");
      check(l.running_var.size(), "running_var");
      for (float v : l.running_var)
        if (!(v >= 0.0f)) fail("running_var", "must be >= 0 (got " + std::to_string(v) + ")");
      if (!(l.eps > 0.0) || !std::isfinite(l.eps)) fail("eps", "must be a finite number > 0");
      return in;
    }
    case layer_type::relu:
    case layer_type::relu6: return in;
    case layer_type::maxpool2d:
    case layer_type::avgpool2d: {
      need_chw(to_string(l.type));
      if (l.kernel_h == 0 || l.kernel_w == 0) fail("kernel", "must be >= 1");
      if (l.stride_h == 0 || l.stride_w == 0) fail("stride", "must be >= 1");
      if (2 * l.pad_h > l.kernel_h || 2 * l.pad_w > l.kernel_w)
        fail("padding", "must be at most half the kernel (as in PyTorch)");
      if (in[1] + 2 * l.pad_h < l.kernel_h || in[2] + 2 * l.pad_w < l.kernel_w)
        fail("kernel", "larger than the padded " + std::to_string(in[1]) + "x" + std::to_string(in[2]) + " input");
      return {in[0], pooled_size(in[1], l.kernel_h, l.stride_h, l.pad_h),
              pooled_size(in[2], l.kernel_w, l.stride_w, l.pad_w)};
    }
    case layer_type::global_avgpool: need_chw("global_avgpool"); return {in[0], 1, 1};
    case layer_type::flatten: return {shape_size(in)};
  }
  fail("type", "unknown layer type");
  return {};
}

namespace {

template <class E>
void check_finite(const E& a, const std::string& file, const std::string& field) {
  std::size_t i = 0;
  for (auto v : a) {
    if (!std::isfinite(v))
      throw bundle_error(file, field, "non-finite value " + std::to_string(v) + " at flat index " + std::to_string(i));
    ++i;
  }
}

void check_encoding(const encoding& e, const std::vector<std::size_t>& shape, const std::string& file,
                           const std::string& field) {
  try {
    e.params.check_shape(shape, "model bundle");
  } catch (const std::exception& ex) {
    throw bundle_error(file, field, std::string("does not fit shape ") + shape_text(shape) + ": " + ex.what());
  }
  for (float s : e.params.scales())
    if (!(s > 0.0f) || !std::isfinite(s)) throw bundle_error(file, field, "scales must be finite and > 0");
}

}  // namespace
}  // namespace detail

void validate_model(const model& m, const std::string& dir) {
  const std::string json_file = dir + "/model.json";
  if (m.input_shape.empty() || (m.input_shape.size() != 1 && m.input_shape.size() != 3))
    throw bundle_error(json_file, "input_shape", "must be [C, H, W] or [features], got " + shape_text(m.input_shape));
  for (auto d : m.input_shape)
    if (d == 0) throw bundle_error(json_file, "input_shape", "zero-sized dimension in " + shape_text(m.input_shape));
  if (m.layers.empty()) throw bundle_error(json_file, "layers", "the model has no layers");
  std::vector<std::size_t> shape = m.input_shape;
  std::set<std::string> names;
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const auto& l = m.layers[i];
    const std::string field = "layers[" + std::to_string(i) + "]";
    if (!l.name.empty() && !names.insert(l.name).second)
      throw bundle_error(json_file, field + ".name", "'" + l.name + "' names two layers");
    const std::string stem = dir + "/" + (l.name.empty() ? field : l.name);
    if (l.type == layer_type::linear || l.type == layer_type::conv2d || l.type == layer_type::batchnorm2d) {
      detail::check_finite(l.weight, stem + ".weight.npy", field + ".weight");
      if (l.bias) detail::check_finite(*l.bias, stem + ".bias.npy", field + ".bias");
    }
    if (l.type == layer_type::batchnorm2d) {
      if (!l.bias) throw bundle_error(json_file, field + ".bias", "batchnorm2d needs beta");
      detail::check_finite(l.running_mean, stem + ".running_mean.npy", field + ".running_mean");
      detail::check_finite(l.running_var, stem + ".running_var.npy", field + ".running_var");
    }
    const auto out = detail::layer_output_shape(l, shape, json_file, field);
    if (shape_size(out) == 0) throw bundle_error(json_file, field, "produces an empty output " + shape_text(out));
    if (!has_weights(l.type) && (l.input_encoding || l.weight_encoding))
      throw bundle_error(json_file, field, "encodings are only allowed on linear and conv2d layers");
    if (l.input_encoding) {
      std::vector<std::size_t> batch_shape{1};
      batch_shape.insert(batch_shape.end(), shape.begin(), shape.end());
      detail::check_encoding(*l.input_encoding, batch_shape, json_file, field + ".input_encodings");
      if (l.input_encoding->params.granularity() != quant::granularity::per_tensor)
        throw bundle_error(json_file, field + ".input_encodings", "activation encodings must be per_tensor");
    }
    if (l.weight_encoding) {
      detail::check_encoding(*l.weight_encoding, {l.weight.shape().begin(), l.weight.shape().end()}, json_file,
                             field + ".weight_encodings");
    }
    shape = out;
  }
}

std::vector<std::size_t> model::shape_before(std::size_t i) const {
  std::vector<std::size_t> shape = input_shape;
  for (std::size_t k = 0; k < i && k < layers.size(); ++k)
    shape = detail::layer_output_shape(layers[k], shape, "<model>", "layers[" + std::to_string(k) + "]");
  return shape;
}

// ---- reading -------------------------------------------------------------------------------

namespace detail {
namespace {

struct bundle_reader {
  std::string dir, json_file;

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw bundle_error(json_file, field, what);
  }

  // A tensor file named by key `key` of layer object `j` (field path `field`).
  xt::xarray<float> tensor(const nlohmann::json& j, const char* key, const std::string& field) const {
    const std::string f = field + "." + key;
    if (!j.contains(key) || j[key].is_null()) fail(f, "missing (a .npy file name is required)");
    if (!j[key].is_string()) fail(f, "must be a .npy file name");
    const std::string name = j[key].get<std::string>();
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      fail(f, "'" + name + "' must be a plain file name inside the bundle directory");
    const std::string path = dir + "/" + name;
    try {
      npy_info info = read_npy_info(path);
      if (info.dtype != npy_dtype::f4 && info.dtype != npy_dtype::f8)
        throw bundle_error(path, f, std::string("dtype ") + npy_descr(info.dtype) + ": float32 or float64 expected");
      return load_npy_float(path);
    } catch (const npy_error& e) {
      // npy_error's message starts with the path already
      throw bundle_error(path, f, std::string(e.what()).substr(path.size() + 2));
    }
  }

  std::optional<xt::xtensor<float, 1>> optional_vector(const nlohmann::json& j, const char* key,
                                                       const std::string& field) const {
    if (!j.contains(key) || j[key].is_null()) return std::nullopt;
    return vector(j, key, field);
  }
  xt::xtensor<float, 1> vector(const nlohmann::json& j, const char* key, const std::string& field) const {
    xt::xarray<float> a = tensor(j, key, field);
    if (a.dimension() != 1) {
      const std::string name = j[key].get<std::string>();
      throw bundle_error(dir + "/" + name, field + "." + key,
                         "must be one-dimensional, got shape " +
                             shape_text({a.shape().begin(), a.shape().end()}));
    }
    return xt::xtensor<float, 1>(a);
  }

  // A non-negative integer or a pair [h, w] of them; `dflt` when absent.
  std::pair<std::size_t, std::size_t> pair(const nlohmann::json& j, const char* key, const std::string& field,
                                           std::optional<std::pair<std::size_t, std::size_t>> dflt) const {
    const std::string f = field + "." + key;
    if (!j.contains(key) || j[key].is_null()) {
      if (!dflt) fail(f, "missing");
      return *dflt;
    }
    auto one = [&](const nlohmann::json& v) -> std::size_t {
      if (!v.is_number_integer() || v.get<long long>() < 0 || v.get<long long>() > (1 << 20))
        fail(f, "must be a non-negative integer (or a pair of them), got " + v.dump());
      return static_cast<std::size_t>(v.get<long long>());
    };
    const auto& v = j[key];
    if (v.is_array()) {
      if (v.size() != 2) fail(f, "a pair [h, w] has two entries, got " + v.dump());
      return {one(v[0]), one(v[1])};
    }
    const std::size_t s = one(v);
    return {s, s};
  }

  std::optional<encoding> encodings(const nlohmann::json& j, const char* key, const std::string& field) const {
    if (!j.contains(key) || j[key].is_null()) return std::nullopt;
    const std::string f = field + "." + key;
    if (!j[key].is_string()) fail(f, "must be a .json file name");
    const std::string name = j[key].get<std::string>();
    if (name.empty() || name.find('/') != std::string::npos) fail(f, "'" + name + "' must be a plain file name");
    const std::string path = dir + "/" + name;
    std::ifstream in(path);
    if (!in) throw bundle_error(path, f, "cannot open");
    nlohmann::json e;
    try {
      in >> e;
    } catch (const nlohmann::json::exception& ex) {
      throw bundle_error(path, f, std::string("not JSON: ") + ex.what());
    }
    encoding out;
    try {
      out.params = encodings_from_json(e, path);
      out.scheme = e.value("scheme", std::string("asymmetric")) == "symmetric" ? quant::scheme::symmetric
                                                                                : quant::scheme::asymmetric;
      out.rounding = e.value("rounding", std::string("half_to_even"));
    } catch (const encodings_error& ex) {
      throw bundle_error(path, f, std::string(ex.what()).substr(path.size() + 2));
    } catch (const nlohmann::json::exception& ex) {
      throw bundle_error(path, f, ex.what());
    }
    if (out.rounding != "half_to_even") throw bundle_error(path, f + ".rounding", "only half_to_even is supported");
    return out;
  }
};

const std::vector<std::pair<const char*, layer_type>>& layer_type_names() {
  static const std::vector<std::pair<const char*, layer_type>> names = {
      {"linear", layer_type::linear},       {"conv2d", layer_type::conv2d},
      {"batchnorm2d", layer_type::batchnorm2d}, {"relu", layer_type::relu},
      {"relu6", layer_type::relu6},         {"maxpool2d", layer_type::maxpool2d},
      {"avgpool2d", layer_type::avgpool2d}, {"global_avgpool", layer_type::global_avgpool},
      {"flatten", layer_type::flatten}};
  return names;
}

}  // namespace
}  // namespace detail

model load_model(const std::string& dir) {
  detail::bundle_reader r{dir, dir + "/model.json"};
  std::ifstream in(r.json_file);
  if (!in) throw bundle_error(r.json_file, "", "cannot open (is '" + dir + "' a model bundle directory?)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);  // the whole file: trailing bytes after the document are an error
  } catch (const nlohmann::json::exception& e) {
    throw bundle_error(r.json_file, "", std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) r.fail("", "must be a JSON object");
  if (j.value("format", std::string()) != "quant-model") r.fail("format", "must be \"quant-model\"");
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"].get<int>() != 1)
    r.fail("version", "must be 1");
  model m;
  if (!j.contains("input_shape") || !j["input_shape"].is_array()) r.fail("input_shape", "missing (an array of sizes)");
  for (const auto& d : j["input_shape"]) {
    if (!d.is_number_integer() || d.get<long long>() <= 0 || d.get<long long>() > (1 << 24))
      r.fail("input_shape", "entries must be positive integers, got " + j["input_shape"].dump());
    m.input_shape.push_back(d.get<std::size_t>());
  }
  if (!j.contains("layers") || !j["layers"].is_array()) r.fail("layers", "missing (an array of layer objects)");
  for (std::size_t i = 0; i < j["layers"].size(); ++i) {
    const auto& lj = j["layers"][i];
    const std::string field = "layers[" + std::to_string(i) + "]";
    if (!lj.is_object()) r.fail(field, "must be an object");
    if (!lj.contains("type") || !lj["type"].is_string()) r.fail(field + ".type", "missing");
    const std::string type = lj["type"].get<std::string>();
    model_layer l;
    bool known = false;
    for (const auto& [n, t] : detail::layer_type_names())
      if (type == n) l.type = t, known = true;
    if (!known)
      r.fail(field + ".type", "unknown layer type '" + type +
                                  "' (known: linear, conv2d, batchnorm2d, relu, relu6, maxpool2d, avgpool2d, "
                                  "global_avgpool, flatten)");
    if (lj.contains("name")) {
      if (!lj["name"].is_string()) r.fail(field + ".name", "must be a string");
      l.name = lj["name"].get<std::string>();
    }
    switch (l.type) {
      case layer_type::linear:
        l.weight = r.tensor(lj, "weight", field);
        l.bias = r.optional_vector(lj, "bias", field);
        break;
      case layer_type::conv2d: {
        l.weight = r.tensor(lj, "weight", field);
        l.bias = r.optional_vector(lj, "bias", field);
        std::tie(l.stride_h, l.stride_w) = r.pair(lj, "stride", field, std::make_pair(std::size_t(1), std::size_t(1)));
        std::tie(l.pad_h, l.pad_w) = r.pair(lj, "padding", field, std::make_pair(std::size_t(0), std::size_t(0)));
        const auto dil = r.pair(lj, "dilation", field, std::make_pair(std::size_t(1), std::size_t(1)));
        if (dil.first != 1 || dil.second != 1) r.fail(field + ".dilation", "only dilation 1 is supported");
        if (lj.contains("groups")) {
          if (!lj["groups"].is_number_integer() || lj["groups"].get<long long>() < 1)
            r.fail(field + ".groups", "must be a positive integer, got " + lj["groups"].dump());
          l.groups = lj["groups"].get<std::size_t>();
        }
        break;
      }
      case layer_type::batchnorm2d:
        l.weight = r.vector(lj, "weight", field);
        l.bias = r.vector(lj, "bias", field);
        l.running_mean = r.vector(lj, "running_mean", field);
        l.running_var = r.vector(lj, "running_var", field);
        if (lj.contains("eps")) {
          if (!lj["eps"].is_number()) r.fail(field + ".eps", "must be a number");
          l.eps = lj["eps"].get<double>();
        }
        break;
      case layer_type::maxpool2d:
      case layer_type::avgpool2d: {
        std::tie(l.kernel_h, l.kernel_w) = r.pair(lj, "kernel", field, std::nullopt);
        std::tie(l.stride_h, l.stride_w) = r.pair(lj, "stride", field, std::make_pair(l.kernel_h, l.kernel_w));
        std::tie(l.pad_h, l.pad_w) = r.pair(lj, "padding", field, std::make_pair(std::size_t(0), std::size_t(0)));
        if (lj.value("ceil_mode", false)) r.fail(field + ".ceil_mode", "only floor mode is supported");
        break;
      }
      default: break;
    }
    if (has_weights(l.type)) {
      l.input_encoding = r.encodings(lj, "input_encodings", field);
      l.weight_encoding = r.encodings(lj, "weight_encodings", field);
    } else if (lj.contains("input_encodings") || lj.contains("weight_encodings")) {
      r.fail(field, "encodings are only allowed on linear and conv2d layers");
    }
    m.layers.push_back(std::move(l));
  }
  validate_model(m, dir);
  return m;
}

// ---- writing -------------------------------------------------------------------------------

namespace detail {

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw bundle_error(path, "", "cannot create");
  f << text;
  f.flush();
  if (!f) throw bundle_error(path, "", "write failed (disk full?)");
}

void check_replaceable(const std::filesystem::path& to) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(to, ec)) return;
  if (!fs::is_directory(to, ec)) throw bundle_error(to.string(), "", "exists and is not a directory");
  if (fs::is_empty(to, ec) || fs::exists(to / "model.json", ec)) return;
  throw bundle_error(to.string(), "",
                     "exists and is neither empty nor a model bundle (no model.json): refusing to replace it");
}

namespace {

// Renames `from` onto `to` (absent, empty, or a bundle: it is replaced).
void replace_directory(const std::filesystem::path& from, const std::filesystem::path& to) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(to)) {
    check_replaceable(to);
    const fs::path old = to.string() + ".old-" + std::to_string(::getpid());
    fs::rename(to, old, ec);
    if (ec) throw bundle_error(to.string(), "", "cannot move the existing directory aside: " + ec.message());
    fs::rename(from, to, ec);
    if (ec) {
      fs::rename(old, to);
      throw bundle_error(to.string(), "", "cannot rename the new bundle into place: " + ec.message());
    }
    fs::remove_all(old, ec);
    return;
  }
  fs::rename(from, to, ec);
  if (ec) throw bundle_error(to.string(), "", "cannot rename the new bundle into place: " + ec.message());
}

}  // namespace
}  // namespace detail

void save_model(const model& m, const std::string& dir,
                const std::vector<std::pair<std::string, std::string>>& extra) {
  namespace fs = std::filesystem;
  validate_model(m, dir);
  fs::path target(dir);
  while (!target.empty() && target.filename().empty()) target = target.parent_path();  // "out/" -> "out"
  detail::check_replaceable(target);  // before any work
  const fs::path tmp = target.string() + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec) || ec)
    throw bundle_error(tmp.string(), "", "cannot create the temporary directory: " + ec.message());
  try {
    nlohmann::ordered_json j;
    j["format"] = "quant-model";
    j["version"] = 1;
    j["input_shape"] = m.input_shape;
    j["layers"] = nlohmann::ordered_json::array();
    std::vector<std::size_t> shape = m.input_shape;
    for (std::size_t i = 0; i < m.layers.size(); ++i) {
      const auto& l = m.layers[i];
      const std::string name = l.name.empty() ? std::string(to_string(l.type)) + std::to_string(i) : l.name;
      nlohmann::ordered_json lj;
      lj["type"] = to_string(l.type);
      lj["name"] = name;
      auto put = [&](const char* key, const std::string& suffix, const auto& a) {
        const std::string file = name + "." + suffix + ".npy";
        detail::write_npy_file((tmp / file).string(), a);
        lj[key] = file;
      };
      auto pair = [](std::size_t a, std::size_t b) {
        return a == b ? nlohmann::ordered_json(a) : nlohmann::ordered_json::array({a, b});
      };
      switch (l.type) {
        case layer_type::linear:
        case layer_type::conv2d:
          put("weight", "weight", l.weight);
          if (l.bias)
            put("bias", "bias", *l.bias);
          else
            lj["bias"] = nullptr;
          if (l.type == layer_type::conv2d) {
            lj["stride"] = pair(l.stride_h, l.stride_w);
            lj["padding"] = pair(l.pad_h, l.pad_w);
            lj["groups"] = l.groups;
          }
          break;
        case layer_type::batchnorm2d:
          put("weight", "weight", l.weight);
          put("bias", "bias", *l.bias);
          put("running_mean", "running_mean", l.running_mean);
          put("running_var", "running_var", l.running_var);
          lj["eps"] = l.eps;
          break;
        case layer_type::maxpool2d:
        case layer_type::avgpool2d:
          lj["kernel"] = pair(l.kernel_h, l.kernel_w);
          lj["stride"] = pair(l.stride_h, l.stride_w);
          lj["padding"] = pair(l.pad_h, l.pad_w);
          break;
        default: break;
      }
      if (l.input_encoding) {
        std::vector<std::size_t> s{1};
        s.insert(s.end(), shape.begin(), shape.end());
        const std::string file = name + ".input.json";
        detail::write_text_file((tmp / file).string(),
                                encodings_json(l.input_encoding->params, l.input_encoding->scheme, s,
                                               l.input_encoding->rounding)
                                        .dump(2) +
                                    "\n");
        lj["input_encodings"] = file;
      }
      if (l.weight_encoding) {
        const std::string file = name + ".weight.json";
        detail::write_text_file(
            (tmp / file).string(),
            encodings_json(l.weight_encoding->params, l.weight_encoding->scheme,
                           {l.weight.shape().begin(), l.weight.shape().end()}, l.weight_encoding->rounding)
                    .dump(2) +
                "\n");
        lj["weight_encodings"] = file;
      }
      j["layers"].push_back(lj);
      shape = detail::layer_output_shape(l, shape, dir, "layers[" + std::to_string(i) + "]");
    }
    detail::write_text_file((tmp / "model.json").string(), j.dump(1) + "\n");
    for (const auto& [name, text] : extra) detail::write_text_file((tmp / name).string(), text);
    detail::replace_directory(tmp, target);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace examples
