// The model bundle (examples/common/model_bundle.hpp) and its runner (model_runner.hpp):
// save/load round trip, every malformed-bundle error naming its file and field, the runner
// against a float64 implementation of each layer written from PyTorch's definitions, thread
// and chunk independence, and logits against PyTorch's on a committed golden bundle.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <quant/parallel.hpp>

#include "../common/model_bundle.hpp"
#include "../common/model_runner.hpp"
#include "../common/npy_io.hpp"

// Everything below in its own namespace: the test files may be compiled together (unity build).
namespace model_bundle_tests {

namespace fs = std::filesystem;
using examples::layer_type;
using examples::model;
using examples::model_layer;

namespace {

std::string tmp_dir(const std::string& name) {
  const fs::path p = fs::path(TEST_TMP_DIR) / ("bundle_" + name);
  fs::remove_all(p);
  fs::create_directories(p.parent_path());
  return p.string();
}

xt::xarray<float> random_array(std::vector<std::size_t> shape, std::uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  xt::xarray<float> a = xt::xarray<float>::from_shape(shape);
  for (auto& v : a) v = u(rng);
  return a;
}
xt::xtensor<float, 1> random_vector(std::size_t n, std::uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  xt::xarray<float> a = random_array({n}, seed, lo, hi);
  return xt::xtensor<float, 1>(a);
}

model_layer conv(std::string name, std::size_t out, std::size_t in_per_group, std::size_t k, std::size_t stride,
                 std::size_t pad, std::size_t groups, bool bias, std::uint64_t seed) {
  model_layer l;
  l.type = layer_type::conv2d;
  l.name = std::move(name);
  l.weight = random_array({out, in_per_group, k, k}, seed, -0.5f, 0.5f);
  if (bias) l.bias = random_vector(out, seed + 1);
  l.stride_h = l.stride_w = stride;
  l.pad_h = l.pad_w = pad;
  l.groups = groups;
  return l;
}
model_layer bn(std::string name, std::size_t c, std::uint64_t seed) {
  model_layer l;
  l.type = layer_type::batchnorm2d;
  l.name = std::move(name);
  l.weight = random_array({c}, seed, 0.5f, 1.5f);
  l.bias = random_vector(c, seed + 1);
  l.running_mean = random_vector(c, seed + 2);
  l.running_var = random_vector(c, seed + 3, 0.2f, 2.0f);
  l.eps = 1e-3;
  return l;
}
model_layer simple(layer_type t) {
  model_layer l;
  l.type = t;
  return l;
}
model_layer pool(layer_type t, std::size_t k, std::size_t s, std::size_t p) {
  model_layer l;
  l.type = t;
  l.kernel_h = l.kernel_w = k;
  l.stride_h = l.stride_w = s;
  l.pad_h = l.pad_w = p;
  return l;
}
model_layer linear(std::string name, std::size_t out, std::size_t in, bool bias, std::uint64_t seed) {
  model_layer l;
  l.type = layer_type::linear;
  l.name = std::move(name);
  l.weight = random_array({out, in}, seed, -0.3f, 0.3f);
  if (bias) l.bias = random_vector(out, seed + 1);
  return l;
}

// A model with every layer type: 3x9x9 input.
model every_layer_model() {
  model m;
  m.input_shape = {3, 9, 9};
  m.layers.push_back(conv("conv1", 8, 3, 3, 1, 1, 1, false, 10));  // 8x9x9
  m.layers.push_back(bn("bn1", 8, 20));
  m.layers.push_back(simple(layer_type::relu));
  m.layers.push_back(conv("dw", 8, 1, 3, 2, 1, 8, true, 30));  // depthwise, 8x5x5
  m.layers.push_back(bn("bn2", 8, 40));
  m.layers.push_back(simple(layer_type::relu6));
  m.layers.push_back(conv("grouped", 6, 4, 2, 1, 0, 2, true, 50));  // groups 2, 6x4x4
  m.layers.push_back(pool(layer_type::maxpool2d, 3, 1, 1));         // 6x4x4
  m.layers.push_back(pool(layer_type::avgpool2d, 2, 2, 1));         // 6x3x3
  m.layers.push_back(conv("pw", 5, 6, 1, 1, 0, 1, true, 60));       // pointwise 5x3x3
  m.layers.push_back(simple(layer_type::flatten));                  // 45
  m.layers.push_back(linear("fc1", 7, 45, true, 70));
  m.layers.push_back(simple(layer_type::relu));
  m.layers.push_back(linear("fc2", 4, 7, false, 80));
  return m;
}

// ---- float64 reference, straight from PyTorch's definitions --------------------------------

using dvec = std::vector<double>;

struct dtensor {
  std::vector<std::size_t> shape;  // one sample
  dvec v;                          // [N, shape...]
};

dtensor ref_layer(const model_layer& l, const dtensor& x, std::size_t N) {
  const auto& s = x.shape;
  dtensor y;
  auto at = [&](std::size_t n, std::size_t c, std::ptrdiff_t h, std::ptrdiff_t w, bool& inside) -> double {
    inside = h >= 0 && w >= 0 && h < static_cast<std::ptrdiff_t>(s[1]) && w < static_cast<std::ptrdiff_t>(s[2]);
    if (!inside) return 0.0;
    return x.v[((n * s[0] + c) * s[1] + static_cast<std::size_t>(h)) * s[2] + static_cast<std::size_t>(w)];
  };
  switch (l.type) {
    case layer_type::conv2d: {
      const std::size_t O = l.weight.shape()[0], cpg = l.weight.shape()[1], kh = l.weight.shape()[2],
                        kw = l.weight.shape()[3];
      const std::size_t OH = (s[1] + 2 * l.pad_h - kh) / l.stride_h + 1, OW = (s[2] + 2 * l.pad_w - kw) / l.stride_w + 1;
      const std::size_t opg = O / l.groups;
      y.shape = {O, OH, OW};
      y.v.assign(N * O * OH * OW, 0.0);
      for (std::size_t n = 0; n < N; ++n)
        for (std::size_t o = 0; o < O; ++o)
          for (std::size_t oy = 0; oy < OH; ++oy)
            for (std::size_t ox = 0; ox < OW; ++ox) {
              double acc = l.bias ? (*l.bias)(o) : 0.0;
              for (std::size_t ci = 0; ci < cpg; ++ci)
                for (std::size_t ky = 0; ky < kh; ++ky)
                  for (std::size_t kx = 0; kx < kw; ++kx) {
                    bool in = false;
                    const double xv = at(n, (o / opg) * cpg + ci, std::ptrdiff_t(oy * l.stride_h + ky) - std::ptrdiff_t(l.pad_h),
                                         std::ptrdiff_t(ox * l.stride_w + kx) - std::ptrdiff_t(l.pad_w), in);
                    acc += double(l.weight(o, ci, ky, kx)) * xv;
                  }
              y.v[((n * O + o) * OH + oy) * OW + ox] = acc;
            }
      return y;
    }
    case layer_type::batchnorm2d: {
      y = x;
      const std::size_t P = s[1] * s[2];
      for (std::size_t n = 0; n < N; ++n)
        for (std::size_t c = 0; c < s[0]; ++c)
          for (std::size_t p = 0; p < P; ++p) {
            double& v = y.v[(n * s[0] + c) * P + p];
            v = (v - l.running_mean(c)) / std::sqrt(double(l.running_var(c)) + l.eps) * double(l.weight(c)) +
                (*l.bias)(c);
          }
      return y;
    }
    case layer_type::relu:
      y = x;
      for (auto& v : y.v) v = std::max(v, 0.0);
      return y;
    case layer_type::relu6:
      y = x;
      for (auto& v : y.v) v = std::min(std::max(v, 0.0), 6.0);
      return y;
    case layer_type::maxpool2d:
    case layer_type::avgpool2d: {
      const std::size_t OH = (s[1] + 2 * l.pad_h - l.kernel_h) / l.stride_h + 1;
      const std::size_t OW = (s[2] + 2 * l.pad_w - l.kernel_w) / l.stride_w + 1;
      y.shape = {s[0], OH, OW};
      y.v.assign(N * s[0] * OH * OW, 0.0);
      for (std::size_t n = 0; n < N; ++n)
        for (std::size_t c = 0; c < s[0]; ++c)
          for (std::size_t oy = 0; oy < OH; ++oy)
            for (std::size_t ox = 0; ox < OW; ++ox) {
              double best = -INFINITY, sum = 0.0;
              for (std::size_t ky = 0; ky < l.kernel_h; ++ky)
                for (std::size_t kx = 0; kx < l.kernel_w; ++kx) {
                  bool in = false;
                  const double v = at(n, c, std::ptrdiff_t(oy * l.stride_h + ky) - std::ptrdiff_t(l.pad_h),
                                      std::ptrdiff_t(ox * l.stride_w + kx) - std::ptrdiff_t(l.pad_w), in);
                  if (in) best = std::max(best, v);  // max pool pads with -inf
                  sum += v;                          // avg pool counts the zero padding
                }
              y.v[((n * s[0] + c) * OH + oy) * OW + ox] =
                  l.type == layer_type::maxpool2d ? best : sum / double(l.kernel_h * l.kernel_w);
            }
      return y;
    }
    case layer_type::global_avgpool: {
      y.shape = {s[0], 1, 1};
      y.v.assign(N * s[0], 0.0);
      const std::size_t P = s[1] * s[2];
      for (std::size_t n = 0; n < N; ++n)
        for (std::size_t c = 0; c < s[0]; ++c) {
          double acc = 0.0;
          for (std::size_t p = 0; p < P; ++p) acc += x.v[(n * s[0] + c) * P + p];
          y.v[n * s[0] + c] = acc / double(P);
        }
      return y;
    }
    case layer_type::flatten: {
      // torch.flatten(x, 1) of a contiguous NCHW tensor: index (c*H + h)*W + w
      y.shape = {examples::shape_size(s)};
      y.v = x.v;
      return y;
    }
    case layer_type::linear: {
      const std::size_t O = l.weight.shape()[0], F = l.weight.shape()[1];
      y.shape = {O};
      y.v.assign(N * O, 0.0);
      for (std::size_t n = 0; n < N; ++n)
        for (std::size_t o = 0; o < O; ++o) {
          double acc = l.bias ? (*l.bias)(o) : 0.0;
          for (std::size_t f = 0; f < F; ++f) acc += double(l.weight(o, f)) * x.v[n * F + f];
          y.v[n * O + o] = acc;
        }
      return y;
    }
  }
  return y;
}

dtensor ref_model(const model& m, const xt::xarray<float>& x, std::size_t begin, std::size_t end) {
  dtensor t;
  t.shape.assign(x.shape().begin() + 1, x.shape().end());
  t.v.assign(x.begin(), x.end());
  for (std::size_t i = begin; i < end; ++i) t = ref_layer(m.layers[i], t, x.shape()[0]);
  return t;
}

// max |a - b| / (1 + max |b|)
double rel_error(const xt::xarray<float>& a, const dvec& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    worst = std::max(worst, std::fabs(double(a.data()[i]) - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return worst / (1.0 + scale);
}

void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream f(path);
  f << j.dump(1);
}
nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  nlohmann::json j;
  f >> j;
  return j;
}

// Asserts that loading `dir` throws a bundle_error whose message names `file` and `field`.
void require_bundle_error(const std::string& dir, const std::string& file, const std::string& field,
                          const std::string& also = "") {
  try {
    examples::load_model(dir);
    FAIL("load_model accepted a malformed bundle (expected an error on " << field << ")");
  } catch (const examples::bundle_error& e) {
    INFO(e.what());
    CHECK(e.file == file);
    CHECK(e.field == field);
    const std::string msg = e.what();
    CHECK(msg.find(file) != std::string::npos);
    CHECK(msg.find(field) != std::string::npos);
    if (!also.empty()) CHECK(msg.find(also) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("model bundle: save then load gives back the same model", "[model_bundle]") {
  model m = every_layer_model();
  examples::encoding in_enc{quant::qparams::per_tensor({8, false, false}, 0.05f, 3), quant::scheme::asymmetric,
                            "half_to_even"};
  examples::encoding w_enc{quant::qparams::per_channel({4, true, false}, {0.1f, 0.2f, 0.3f, 0.4f, 0.5f}, 0),
                           quant::scheme::symmetric, "half_to_even"};
  m.layers[9].input_encoding = in_enc;
  m.layers[9].weight_encoding = w_enc;
  const std::string dir = tmp_dir("roundtrip");
  examples::save_model(m, dir);
  REQUIRE(fs::exists(dir + "/model.json"));
  const model r = examples::load_model(dir);

  REQUIRE(r.input_shape == m.input_shape);
  REQUIRE(r.layers.size() == m.layers.size());
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    INFO("layer " << i);
    const auto &a = m.layers[i], &b = r.layers[i];
    CHECK(a.type == b.type);
    if (!a.name.empty()) CHECK(a.name == b.name);
    CHECK(bool(a.weight == b.weight));
    CHECK(a.bias.has_value() == b.bias.has_value());
    if (a.bias && b.bias) CHECK(bool(*a.bias == *b.bias));
    CHECK(bool(a.running_mean == b.running_mean));
    CHECK(bool(a.running_var == b.running_var));
    CHECK(a.eps == b.eps);
    CHECK(a.groups == b.groups);
    if (a.type == layer_type::conv2d || a.type == layer_type::maxpool2d || a.type == layer_type::avgpool2d) {
      CHECK(a.stride_h == b.stride_h);
      CHECK(a.stride_w == b.stride_w);
      CHECK(a.pad_h == b.pad_h);
      CHECK(a.pad_w == b.pad_w);
    }
    if (a.type == layer_type::maxpool2d || a.type == layer_type::avgpool2d) {
      CHECK(a.kernel_h == b.kernel_h);
      CHECK(a.kernel_w == b.kernel_w);
    }
    CHECK(a.input_encoding.has_value() == b.input_encoding.has_value());
    CHECK(a.weight_encoding.has_value() == b.weight_encoding.has_value());
  }
  const auto& ie = r.layers[9].input_encoding->params;
  CHECK(ie.scales() == std::vector<float>{0.05f});
  CHECK(ie.zero_points() == std::vector<std::int32_t>{3});
  CHECK(ie.grid().bits == 8);
  CHECK(!ie.grid().is_signed);
  const auto& we = r.layers[9].weight_encoding->params;
  CHECK(we.granularity() == quant::granularity::per_channel);
  CHECK(we.scales() == w_enc.params.scales());
  CHECK(r.layers[9].weight_encoding->scheme == quant::scheme::symmetric);

  SECTION("saving over an existing bundle replaces it, and no temporary directory is left") {
    model m2 = m;
    m2.layers.pop_back();
    m2.layers.pop_back();
    examples::save_model(m2, dir);
    CHECK(examples::load_model(dir).layers.size() == m.layers.size() - 2);
    std::vector<std::string> temporaries;  // the save's own temporaries, among other tests' files
    for (const auto& e : fs::directory_iterator(fs::path(dir).parent_path()))
      if (e.path().filename().string().find("bundle_roundtrip.") != std::string::npos)
        temporaries.push_back(e.path().filename().string());
    CHECK(temporaries.empty());
  }
  SECTION("a directory that is neither empty nor a bundle is never replaced") {
    const std::string other = tmp_dir("not_a_bundle");
    fs::create_directories(other);
    std::ofstream(other + "/notes.txt") << "mine";
    CHECK_THROWS_WITH(examples::save_model(m, other), Catch::Contains("refusing to replace"));
    CHECK(fs::exists(other + "/notes.txt"));
    CHECK(!fs::exists(other + "/model.json"));
  }
  SECTION("a model that does not validate is not written at all") {
    model bad = m;
    bad.layers[11].weight = random_array({7, 44}, 1);
    const std::string bad_dir = tmp_dir("not_written");
    CHECK_THROWS_AS(examples::save_model(bad, bad_dir), examples::bundle_error);
    CHECK(!fs::exists(bad_dir));
  }
}

TEST_CASE("model bundle: malformed bundles name the file and the field", "[model_bundle]") {
  const std::string dir = tmp_dir("malformed");
  const std::string json_file = dir + "/model.json";
  auto fresh = [&] {
    examples::save_model(every_layer_model(), dir);
    return read_json(json_file);
  };

  SECTION("missing model.json") {
    fresh();
    fs::remove(json_file);
    require_bundle_error(dir, json_file, "", "cannot open");
  }
  SECTION("bytes after the JSON document (found by fuzz_encodings_json in the sibling reader)") {
    fresh();
    std::ofstream(json_file, std::ios::app) << "\n{}";
    require_bundle_error(dir, json_file, "", "not valid JSON");
  }
  SECTION("missing tensor file") {
    fresh();
    fs::remove(dir + "/conv1.weight.npy");
    require_bundle_error(dir, dir + "/conv1.weight.npy", "layers[0].weight", "cannot open");
  }
  SECTION("missing tensor key") {
    auto j = fresh();
    j["layers"][1].erase("running_var");
    write_json(json_file, j);
    require_bundle_error(dir, json_file, "layers[1].running_var", "missing");
  }
  SECTION("wrong weight shape: input channels do not chain") {
    fresh();
    examples::save_npy(dir + "/pw.weight.npy", random_array({5, 7, 1, 1}, 3));
    require_bundle_error(dir, json_file, "layers[9].weight", "previous layer gives 6");
  }
  SECTION("linear features do not chain") {
    fresh();
    examples::save_npy(dir + "/fc2.weight.npy", random_array({4, 8}, 3));
    require_bundle_error(dir, json_file, "layers[13].weight", "previous layer gives 7");
  }
  SECTION("bias of the wrong length") {
    fresh();
    examples::save_npy(dir + "/fc1.bias.npy", random_array({6}, 3));
    require_bundle_error(dir, json_file, "layers[11].bias");
  }
  SECTION("batchnorm with the wrong channel count") {
    fresh();
    examples::save_npy(dir + "/bn2.running_mean.npy", random_array({9}, 3));
    require_bundle_error(dir, json_file, "layers[4].running_mean", "8 channels");
  }
  SECTION("wrong dtype") {
    fresh();
    xt::xarray<std::int32_t> w = xt::zeros<std::int32_t>({8, 3, 3, 3});
    examples::save_npy(dir + "/conv1.weight.npy", w);
    require_bundle_error(dir, dir + "/conv1.weight.npy", "layers[0].weight", "float32 or float64");
  }
  SECTION("unknown layer type") {
    auto j = fresh();
    j["layers"][2]["type"] = "gelu";
    write_json(json_file, j);
    require_bundle_error(dir, json_file, "layers[2].type", "gelu");
  }
  SECTION("groups that do not divide the channels") {
    auto j = fresh();
    j["layers"][6]["groups"] = 3;
    write_json(json_file, j);
    require_bundle_error(dir, json_file, "layers[6].groups");
  }
  SECTION("zero stride, negative padding, dilation") {
    auto j = fresh();
    j["layers"][0]["stride"] = 0;
    write_json(json_file, j);
    require_bundle_error(dir, json_file, "layers[0].stride");
    j = fresh();
    j["layers"][0]["padding"] = -1;
    write_json(json_file, j);
    require_bundle_error(dir, json_file, "layers[0].padding");
    j = fresh();
    j["layers"][0]["dilation"] = 2;
    write_json(json_file, j);
    require_bundle_error(dir, json_file, "layers[0].dilation");
  }
  SECTION("pool padding larger than half the kernel") {
    auto j = fresh();
    j["layers"][8]["padding"] = 2;
    write_json(json_file, j);
    require_bundle_error(dir, json_file, "layers[8].padding");
  }
  SECTION("linear before flatten") {
    auto j = fresh();
    j["layers"].erase(10);
    write_json(json_file, j);
    require_bundle_error(dir, json_file, "layers[10]", "flatten");
  }
  SECTION("non-finite value") {
    fresh();
    xt::xarray<float> w = random_array({7, 45}, 70);
    w(3, 4) = std::numeric_limits<float>::quiet_NaN();
    examples::save_npy(dir + "/fc1.weight.npy", w);
    require_bundle_error(dir, dir + "/fc1.weight.npy", "layers[11].weight", "non-finite");
  }
  SECTION("negative running variance") {
    fresh();
    examples::save_npy(dir + "/bn1.running_var.npy", random_array({8}, 3, -1.0f, -0.5f));
    require_bundle_error(dir, json_file, "layers[1].running_var", ">= 0");
  }
  SECTION("wrong format, version, input shape") {
    auto j = fresh();
    j["format"] = "onnx";
    write_json(json_file, j);
    require_bundle_error(dir, json_file, "format");
    j = fresh();
    j["version"] = 2;
    write_json(json_file, j);
    require_bundle_error(dir, json_file, "version");
    j = fresh();
    j["input_shape"] = {4, 9, 9};
    write_json(json_file, j);
    require_bundle_error(dir, json_file, "layers[0].weight", "previous layer gives 4");
  }
  SECTION("tensor file outside the bundle") {
    auto j = fresh();
    j["layers"][0]["weight"] = "../x.npy";
    write_json(json_file, j);
    require_bundle_error(dir, json_file, "layers[0].weight", "plain file name");
  }
  SECTION("encodings file that is not an encodings document") {
    auto j = fresh();
    j["layers"][11]["input_encodings"] = "fc1.input.json";
    write_json(json_file, j);
    write_json(dir + "/fc1.input.json", nlohmann::json{{"bits", 8}});
    require_bundle_error(dir, dir + "/fc1.input.json", "layers[11].input_encodings");
  }
}

TEST_CASE("model runner: every layer type against a float64 reference", "[model_runner]") {
  examples::use_single_threaded_blas();
  const model m = every_layer_model();
  examples::validate_model(m);
  const xt::xarray<float> x = random_array({5, 3, 9, 9}, 99);

  SECTION("whole model") {
    const auto y = examples::run_model(m, x);
    REQUIRE(y.shape() == std::vector<std::size_t>{5, 4});
    CHECK(rel_error(y, ref_model(m, x, 0, m.layers.size()).v) < 1e-5);
  }
  SECTION("each layer alone (no fusion), on its own input") {
    for (std::size_t i = 0; i < m.layers.size(); ++i) {
      INFO("layer " << i << " (" << examples::to_string(m.layers[i].type) << ")");
      const auto xi = examples::run_layers(m, x, 0, i);
      const auto yi = examples::run_layers(m, xi, i, i + 1);
      const dtensor ref = ref_model(m, xi, i, i + 1);
      CHECK(std::vector<std::size_t>(yi.shape().begin() + 1, yi.shape().end()) == ref.shape);
      CHECK(rel_error(yi, ref.v) < 1e-5);
    }
  }
  SECTION("strided conv with asymmetric geometry, global average pooling") {
    model g;
    g.input_shape = {2, 11, 8};
    model_layer c = conv("c", 4, 2, 3, 1, 0, 1, true, 5);
    c.stride_h = 2;
    c.stride_w = 3;
    c.pad_h = 1;
    c.pad_w = 2;
    g.layers.push_back(c);
    model_layer d = conv("d", 4, 1, 3, 2, 1, 4, false, 6);  // depthwise, stride 2
    g.layers.push_back(d);
    g.layers.push_back(simple(layer_type::global_avgpool));
    g.layers.push_back(simple(layer_type::flatten));
    examples::validate_model(g);
    const xt::xarray<float> xg = random_array({3, 2, 11, 8}, 7);
    const auto y = examples::run_model(g, xg);
    const dtensor ref = ref_model(g, xg, 0, g.layers.size());
    CHECK(std::vector<std::size_t>(y.shape().begin() + 1, y.shape().end()) == ref.shape);
    CHECK(rel_error(y, ref.v) < 1e-5);
  }
  SECTION("input quantizers are applied at weight-layer inputs, and the hook sees the quantized input") {
    model q = m;
    q.layers[11].input_encoding =
        examples::encoding{quant::qparams::per_tensor({8, false, false}, 0.25f, 10), quant::scheme::asymmetric};
    const auto before = examples::run_layers(q, x, 0, 11);
    xt::xarray<float> seen;
    examples::run_options opt;
    opt.on_layer_input = [&](const examples::layer_input& in) {
      if (in.layer == 11) seen = xt::adapt(in.data, in.samples * 45, xt::no_ownership(), std::vector<std::size_t>{in.samples, 45});
    };
    const auto y = examples::run_model(q, x, opt);
    REQUIRE(seen.size() == before.size());
    for (std::size_t k = 0; k < seen.size(); ++k) {
      // the 8-bit unsigned grid: (clamp(round(v / 0.25) + 10, 0, 255) - 10) * 0.25
      const double qv = std::min(255.0, std::max(0.0, std::nearbyint(double(before.data()[k]) / 0.25) + 10.0));
      REQUIRE(seen.data()[k] == static_cast<float>((qv - 10.0) * 0.25));
    }
    const auto expect = examples::run_layers(q, seen, 11, q.layers.size(), [] {
      examples::run_options o;
      o.apply_encodings = false;
      return o;
    }());
    CHECK(bool(y == expect));
    examples::run_options off;
    off.apply_encodings = false;
    CHECK(bool(examples::run_model(q, x, off) == examples::run_model(m, x)));
  }
  SECTION("results do not depend on the thread count; chunks only through their size") {
    const xt::xarray<float> big = random_array({70, 3, 9, 9}, 3);
    examples::run_options opt;
    opt.batch = 16;
    quant::set_num_threads(1);
    const auto one = examples::run_model(m, big, opt);
    quant::set_num_threads(2);
    const auto two = examples::run_model(m, big, opt);
    quant::set_num_threads(0);
    CHECK(bool(one == two));
    CHECK(rel_error(one, ref_model(m, big, 0, m.layers.size()).v) < 1e-5);
  }
  SECTION("a wrongly shaped input is rejected") {
    CHECK_THROWS_AS(examples::run_model(m, random_array({2, 3, 9, 8}, 1)), std::length_error);
    CHECK_THROWS_AS(examples::run_model(m, random_array({2, 243}, 1)), std::length_error);
  }
}

TEST_CASE("model runner: logits match PyTorch on the golden bundle (tools/make_bundle_golden.py)", "[model_runner]") {
  examples::use_single_threaded_blas();
  // Exported by tools/export_bundle.py from an nn.Sequential with every layer type (BN in
  // eval mode with non-default statistics, depthwise stride 2, grouped with a 2x3 kernel and
  // (1, 2) stride, padded max/avg pools, global pooling, flatten, bias-free layers).
  const model m = examples::load_model(std::string(TEST_DATA_DIR) + "/golden_bundle");
  REQUIRE(m.layers.size() == 18);
  const xt::xarray<float> x = examples::load_npy_float(std::string(TEST_DATA_DIR) + "/golden_input.npy");
  const xt::xarray<float> torch_logits = examples::load_npy_float(std::string(TEST_DATA_DIR) + "/golden_logits.npy");
  const auto y = examples::run_model(m, x);
  REQUIRE(y.shape() == torch_logits.shape());
  double worst = 0.0;
  for (std::size_t i = 0; i < y.size(); ++i)
    worst = std::max(worst, std::fabs(double(y.data()[i]) - double(torch_logits.data()[i])) /
                                std::max(1e-3, std::fabs(double(torch_logits.data()[i]))));
  INFO("largest relative difference " << worst);
  CHECK(worst < 1e-5);
  // and the float64 reference agrees with both
  const dtensor ref = ref_model(m, x, 0, m.layers.size());
  CHECK(rel_error(torch_logits, ref.v) < 1e-5);
}

}  // namespace model_bundle_tests
