// fuzz_model_bundle — the model bundle reader (examples/common/model_bundle.hpp, load_model)
// and the integer engine reader (examples/common/integer_model.hpp, load_integer_model) on
// fuzzed directories.
//
// Input: a small archive of files, each section "\n=== <name>\n<bytes>" (bytes before the
// first section are ignored; at most 8 files; names are plain, no '/'). The files are written
// into a fresh directory private to this process: model.json with its .npy tensors and
// encodings .json files, and/or engine.json with its weight .npy files. The seed corpus
// holds real bundles and engine directories, so mutations start from valid ones.
//
// Contract: load_model throws examples::bundle_error or returns a model that validate_model
// accepts, whose shapes chain (output_shape), and that save_model -> load_model reproduces
// (layer types, names, shapes, weights bit for bit). load_integer_model throws
// examples::bundle_error or returns a model that runs: run_integer_model on one sample of
// input_shape (zeros) returns logits of output_shape, or throws a documented error
// (std::length_error for a wrong shape). No other exception, no sanitizer report, and no
// allocation beyond what the files hold (libFuzzer's -malloc_limit_mb).
#include <filesystem>
#include <string>
#include <vector>

#include "../examples/common/integer_model.hpp"
#include "../examples/common/model_bundle.hpp"
#include "fuzz_common.hpp"

namespace fs = std::filesystem;

namespace {

struct file {
  std::string name, bytes;
};

std::vector<file> split(const std::uint8_t* data, std::size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  const std::string marker = "\n=== ";
  std::vector<file> files;
  std::size_t p = s.find(marker);
  while (p != std::string::npos && files.size() < 8) {
    const std::size_t name_begin = p + marker.size();
    const std::size_t eol = s.find('\n', name_begin);
    if (eol == std::string::npos) break;
    const std::size_t next = s.find(marker, eol);
    file f{s.substr(name_begin, eol - name_begin), s.substr(eol + 1, next == std::string::npos ? std::string::npos : next - eol - 1)};
    p = next;
    if (f.name.empty() || f.name.size() > 64 || f.name.find('/') != std::string::npos || f.name.find('\0') != std::string::npos ||
        f.name == "." || f.name == "..")
      continue;
    files.push_back(std::move(f));
  }
  return files;
}

bool same_bits(const xt::xarray<float>& a, const xt::xarray<float>& b) {
  if (a.shape() != b.shape()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (fuzz::bits_of(a.data()[i]) != fuzz::bits_of(b.data()[i])) return false;
  return true;
}

void check_model(const std::string& dir, const std::string& scratch) {
  examples::model m;
  try {
    m = examples::load_model(dir);
  } catch (const examples::bundle_error&) {
    return;
  } catch (const std::exception& e) {
    fuzz::fail(std::string("load_model threw an undocumented exception: ") + e.what());
  }
  try {
    examples::validate_model(m, dir);
    (void)m.output_shape();
  } catch (const std::exception& e) {
    fuzz::fail(std::string("a model load_model returned does not validate: ") + e.what());
  }
  const std::string copy = scratch + "-copy";
  std::error_code ec;
  fs::remove_all(copy, ec);
  examples::model again;
  try {
    examples::save_model(m, copy);
    again = examples::load_model(copy);
  } catch (const std::exception& e) {
    fuzz::fail(std::string("save_model -> load_model failed on a loaded model: ") + e.what());
  }
  fs::remove_all(copy, ec);
  fuzz::require(again.input_shape == m.input_shape && again.layers.size() == m.layers.size(),
                "save -> load changed the input shape or the layer count");
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const auto &a = m.layers[i], &b = again.layers[i];
    const std::string at = " of layer " + std::to_string(i);
    fuzz::require(a.type == b.type, "save -> load changed the type" + at);
    fuzz::require(a.name.empty() || a.name == b.name, "save -> load changed the name" + at);
    fuzz::require(same_bits(a.weight, b.weight), "save -> load changed the weight" + at);
    fuzz::require(a.bias.has_value() == b.bias.has_value() &&
                      (!a.bias || same_bits(xt::xarray<float>(*a.bias), xt::xarray<float>(*b.bias))),
                  "save -> load changed the bias" + at);
    fuzz::require(a.stride_h == b.stride_h && a.stride_w == b.stride_w && a.pad_h == b.pad_h && a.pad_w == b.pad_w &&
                      a.groups == b.groups && a.kernel_h == b.kernel_h && a.kernel_w == b.kernel_w,
                  "save -> load changed the geometry" + at);
    fuzz::require(a.input_encoding.has_value() == b.input_encoding.has_value() &&
                      a.weight_encoding.has_value() == b.weight_encoding.has_value(),
                  "save -> load dropped an encoding" + at);
  }
}

void check_engine(const std::string& dir) {
  examples::integer_model im;
  try {
    im = examples::load_integer_model(dir);
  } catch (const examples::bundle_error&) {
    return;
  } catch (const std::exception& e) {
    fuzz::fail(std::string("load_integer_model threw an undocumented exception: ") + e.what());
  }
  // An accepted engine runs on one sample of its input shape.
  const std::size_t in_size = examples::shape_size(im.input_shape);
  if (im.input_shape.empty() || in_size == 0 || in_size > (1u << 16)) return;  // (a size the reader allows)
  std::vector<std::size_t> shape{1};
  shape.insert(shape.end(), im.input_shape.begin(), im.input_shape.end());
  const xt::xarray<float> x = xt::zeros<float>(shape);
  for (auto mode : {examples::integer_mode::integer, examples::integer_mode::exact_simulation}) {
    try {
      const auto r = examples::run_integer_model(im, x, mode);
      std::vector<std::size_t> want{1};
      const auto os = im.output_shape();
      want.insert(want.end(), os.begin(), os.end());
      fuzz::require(std::equal(r.logits.shape().begin(), r.logits.shape().end(), want.begin(), want.end()),
                    "run_integer_model's logits do not have output_shape");
    } catch (const std::length_error&) {
    } catch (const quant::error& e) {
      fuzz::fail(std::string("an engine load_integer_model accepted fails to run: ") + e.what());
    } catch (const std::exception& e) {
      fuzz::fail(std::string("run_integer_model on an accepted engine threw: ") + e.what());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string dir = fuzz::scratch_path("bundle");
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  const std::vector<file> files = split(data, size);
  bool model = false, engine = false;
  for (const auto& f : files) {
    fuzz::write_file(dir + "/" + f.name, reinterpret_cast<const std::uint8_t*>(f.bytes.data()), f.bytes.size());
    model = model || f.name == "model.json";
    engine = engine || f.name == "engine.json";
  }
  fuzz::context() = std::to_string(files.size()) + " files";
  if (model) check_model(dir, dir);
  if (engine) check_engine(dir);
  fs::remove_all(dir, ec);
  return 0;
}
