// Integer models (examples/common/integer_model.hpp): the integer runner against the exact
// simulation bit for bit, the depthwise loop and the pooling rule against references written
// from the formulas, the engine directory round trip, and export's validation errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../common/integer_model.hpp"
#include "../common/model_runner.hpp"

// Everything below in its own namespace: the test files may be compiled together (unity build).
namespace integer_model_tests {

using namespace examples;

namespace {

encoding act_encoding(std::mt19937& rng, float lo, float hi) {
  // asymmetric 8-bit unsigned range [lo, hi] with a random stretch
  std::uniform_real_distribution<float> u(0.8f, 1.2f);
  const float a = lo * u(rng), b = hi * u(rng);
  const float s = (b - a) / 255.0f;
  const auto z = static_cast<std::int32_t>(std::lround(-a / s));
  encoding e;
  e.params = quant::qparams::per_tensor(quant::grid::int_unsigned(8), s, std::min(255, std::max(0, z)));
  e.scheme = quant::scheme::asymmetric;
  return e;
}

// Weights [out, ...] fake-quantized on a symmetric per-channel `bits` grid, plus the encoding.
void quantized_weights(model_layer& l, std::vector<std::size_t> shape, int bits, std::mt19937& rng, float spread) {
  const std::size_t out = shape[0];
  std::size_t k = 1;
  for (std::size_t i = 1; i < shape.size(); ++i) k *= shape[i];
  const quant::grid g = quant::grid::int_signed(bits);
  std::uniform_real_distribution<float> us(0.5f * spread, 1.5f * spread);
  std::uniform_int_distribution<int> uq(g.qmin(), g.qmax());
  std::vector<float> scales(out);
  l.weight = xt::xarray<float>::from_shape(shape);
  for (std::size_t o = 0; o < out; ++o) {
    scales[o] = us(rng) / static_cast<float>(std::sqrt(double(k)));
    for (std::size_t j = 0; j < k; ++j) l.weight.data()[o * k + j] = static_cast<float>(uq(rng)) * scales[o];
  }
  std::normal_distribution<float> nb(0.0f, 0.3f);
  xt::xtensor<float, 1> b = xt::xtensor<float, 1>::from_shape({out});
  for (auto& v : b) v = nb(rng);
  l.bias = b;
  encoding e;
  e.params = quant::qparams::per_channel(g, scales, 0);
  e.scheme = quant::scheme::symmetric;
  l.weight_encoding = e;
}

model_layer simple(layer_type t, const std::string& name) {
  model_layer l;
  l.type = t;
  l.name = name;
  return l;
}

model_layer pool(layer_type t, const std::string& name, std::size_t k, std::size_t s, std::size_t p) {
  model_layer l = simple(t, name);
  l.kernel_h = l.kernel_w = k;
  l.stride_h = l.stride_w = s;
  l.pad_h = l.pad_w = p;
  return l;
}

model_layer conv(const std::string& name, std::vector<std::size_t> shape, std::size_t stride, std::size_t pad,
                 std::size_t groups, int bits, std::mt19937& rng, float in_lo, float in_hi) {
  model_layer l = simple(layer_type::conv2d, name);
  quantized_weights(l, shape, bits, rng, 2.0f);
  l.stride_h = l.stride_w = stride;
  l.pad_h = l.pad_w = pad;
  l.groups = groups;
  l.input_encoding = act_encoding(rng, in_lo, in_hi);
  return l;
}

model_layer linear(const std::string& name, std::size_t out, std::size_t in, int bits, std::mt19937& rng, float in_lo,
                   float in_hi) {
  model_layer l = simple(layer_type::linear, name);
  quantized_weights(l, {out, in}, bits, rng, 2.0f);
  l.input_encoding = act_encoding(rng, in_lo, in_hi);
  return l;
}

// conv (stride 1, pad 1) relu, maxpool, depthwise (stride 2, pad 1) relu, avgpool 3x3 (pad 1;
// an accumulator segment), conv 3x3 stride 2 pad 1, relu6, pointwise conv, maxpool, relu,
// global average pool (an accumulator segment), flatten, linear.
model small_cnn(int bits, std::uint32_t seed) {
  std::mt19937 rng(seed);
  model m;
  m.input_shape = {3, 12, 12};
  m.layers.push_back(conv("c1", {8, 3, 3, 3}, 1, 1, 1, bits, rng, -1.0f, 1.0f));
  m.layers.push_back(simple(layer_type::relu, "r1"));
  m.layers.push_back(pool(layer_type::maxpool2d, "mp1", 2, 2, 0));
  m.layers.push_back(conv("dw", {8, 1, 3, 3}, 2, 1, 8, bits, rng, 0.0f, 2.0f));
  m.layers.push_back(simple(layer_type::relu, "r2"));
  m.layers.push_back(pool(layer_type::avgpool2d, "ap", 3, 1, 1));
  m.layers.push_back(conv("c2", {12, 8, 3, 3}, 2, 1, 1, bits, rng, 0.0f, 3.0f));
  m.layers.push_back(simple(layer_type::relu6, "r6"));
  m.layers.push_back(conv("pw", {16, 12, 1, 1}, 1, 0, 1, bits, rng, -2.0f, 2.0f));
  m.layers.push_back(pool(layer_type::maxpool2d, "mp2", 1, 1, 0));
  m.layers.push_back(simple(layer_type::relu, "r3"));
  m.layers.push_back(simple(layer_type::global_avgpool, "gap"));
  m.layers.push_back(simple(layer_type::flatten, "fl"));
  m.layers.push_back(linear("fc", 10, 16, bits, rng, 0.0f, 1.0f));
  validate_model(m);
  return m;
}

model small_mlp(int bits, std::uint32_t seed) {
  std::mt19937 rng(seed);
  model m;
  m.input_shape = {1, 6, 6};
  m.layers.push_back(simple(layer_type::flatten, "fl"));
  m.layers.push_back(linear("fc1", 40, 36, bits, rng, 0.0f, 1.0f));
  m.layers.push_back(simple(layer_type::relu, "r1"));
  m.layers.push_back(linear("fc2", 24, 40, bits, rng, 0.0f, 3.0f));
  m.layers.push_back(simple(layer_type::relu6, "r2"));
  m.layers.push_back(linear("fc3", 10, 24, bits, rng, 0.0f, 4.0f));
  validate_model(m);
  return m;
}

xt::xarray<float> random_input(const model& m, std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.8f);
  std::vector<std::size_t> s{n};
  s.insert(s.end(), m.input_shape.begin(), m.input_shape.end());
  xt::xarray<float> x = xt::xarray<float>::from_shape(s);
  for (auto& v : x) v = d(rng);
  return x;
}

void require_identical(const integer_run_result& a, const integer_run_result& b) {
  REQUIRE(a.logits.shape() == b.logits.shape());
  std::size_t logit_mismatch = 0;
  for (std::size_t i = 0; i < a.logits.size(); ++i) logit_mismatch += a.logits.data()[i] != b.logits.data()[i];
  CHECK(logit_mismatch == 0);
  REQUIRE(a.activations.size() == b.activations.size());
  for (std::size_t k = 0; k < a.activations.size(); ++k) {
    std::size_t mismatch = 0;
    for (std::size_t i = 0; i < a.activations[k].size(); ++i)
      mismatch += a.activations[k].data()[i] != b.activations[k].data()[i];
    INFO("op " << a.activation_ops[k]);
    CHECK(mismatch == 0);
  }
}

std::string tmp_dir(const std::string& name) {
  const std::string d = std::string(TEST_TMP_DIR) + "/integer_model/" + name;
  std::filesystem::create_directories(std::filesystem::path(d).parent_path());
  return d;
}

// Spread of the requantized values: a test on activations stuck at one value proves little.
std::size_t distinct(const xt::xarray<std::uint8_t>& a) {
  std::vector<bool> seen(256, false);
  for (auto v : a) seen[v] = true;
  return static_cast<std::size_t>(std::count(seen.begin(), seen.end(), true));
}

}  // namespace

TEST_CASE("integer runner equals the exact simulation bit for bit", "[integer_model]") {
  use_single_threaded_blas();
  for (int bits : {8, 4}) {
    for (auto rounding : {quant::requantization::fixed_point, quant::requantization::float_scale}) {
      const auto format = bits == 4 ? weight_format::int4 : weight_format::int8;
      DYNAMIC_SECTION("W" << bits << " " << quant::to_string(rounding)) {
        for (const model& m : {small_cnn(bits, 11u + bits), small_mlp(bits, 23u + bits)}) {
          const integer_model im = make_integer_model(m, rounding, format);
          const xt::xarray<float> x = random_input(m, 37, 5);
          const auto a = run_integer_model(im, x, integer_mode::integer, true, 16);
          const auto b = run_integer_model(im, x, integer_mode::exact_simulation, true, 16);
          require_identical(a, b);
          // every recorded activation actually varies
          for (const auto& act : a.activations) CHECK(distinct(act) >= 2);
          // thread count and chunking change nothing
          quant::set_num_threads(1);
          const auto c = run_integer_model(im, x, integer_mode::integer, true, 37);
          quant::set_num_threads(0);
          require_identical(a, c);
          // the integer model computes what the float simulation approximates: the logits
          // agree within a few quantization steps of the last layer's input
          const xt::xarray<float> f = run_model(m, x);
          const double step = im.ops.back().input.scale;
          double worst = 0.0, range = 0.0;
          for (std::size_t i = 0; i < f.size(); ++i) {
            worst = std::max(worst, std::fabs(double(f.data()[i]) - double(a.logits.data()[i])));
            range = std::max(range, std::fabs(double(f.data()[i])));
          }
          INFO("model with " << m.layers.size() << " layers, worst " << worst << " range " << range << " step " << step);
          CHECK(worst < 0.25 * range + 10 * step);
        }
      }
    }
  }
}

TEST_CASE("export: integers, bias, multipliers from the formulas", "[integer_model]") {
  const model m = small_mlp(8, 3);
  const integer_model im = make_integer_model(m);
  const integer_op& fc1 = im.ops[1];
  const model_layer& l = m.layers[1];
  REQUIRE(fc1.kind == integer_op_kind::linear);
  CHECK(fc1.activation == quant::fused_activation::relu);
  const double s_in = l.input_encoding->params.scale(0), s_out = m.layers[3].input_encoding->params.scale(0);
  for (std::size_t o = 0; o < 40; ++o) {
    const double sw = l.weight_encoding->params.scale(o);
    CHECK(fc1.multipliers[o] == s_in * sw / s_out);
    CHECK(fc1.bias[o] == static_cast<std::int32_t>(std::nearbyint(double((*l.bias)(o)) / (s_in * sw))));
    for (std::size_t k = 0; k < 36; ++k) CHECK(float(fc1.weights(o, k)) * float(sw) == l.weight(o, k));
  }
  CHECK(fc1.rq.lo == m.layers[3].input_encoding->params.zero_point(0));  // relu folded
  const integer_op& fc2 = im.ops[2];
  const auto& e3 = m.layers[5].input_encoding->params;
  CHECK(fc2.rq.hi == std::min<std::int32_t>(255, e3.zero_point(0) + std::lround(6.0 / e3.scale(0))));  // relu6
  CHECK(im.ops.back().logits);
  CHECK(im.ops.back().output_scales[3] ==
        double(m.layers[5].input_encoding->params.scale(0)) * double(m.layers[5].weight_encoding->params.scale(3)));
}

TEST_CASE("depthwise integer loop against a padded-tensor reference", "[integer_model]") {
  std::mt19937 rng(9);
  model m;
  m.input_shape = {4, 7, 6};
  m.layers.push_back(conv("dw", {4, 1, 3, 2}, 2, 1, 4, 8, rng, 0.0f, 1.0f));
  m.layers[0].pad_w = 0;
  m.layers.push_back(simple(layer_type::flatten, "fl"));
  m.layers.push_back(linear("fc", 3, 4 * 4 * 3, 8, rng, 0.0f, 1.0f));
  validate_model(m);
  const integer_model im = make_integer_model(m);
  const integer_op& op = im.ops[0];
  REQUIRE(op.kind == integer_op_kind::depthwise_conv2d);
  std::uniform_int_distribution<int> u(0, 255);
  std::vector<std::uint8_t> x(4 * 7 * 6);
  for (auto& v : x) v = static_cast<std::uint8_t>(u(rng));
  const std::size_t OH = op.out_shape[1], OW = op.out_shape[2];
  REQUIRE(OH == 4);
  REQUIRE(OW == 3);
  std::vector<std::int32_t> acc(4 * OH * OW);
  depthwise_conv_integer(x.data(), acc.data(), op);
  // reference: pad the image with the zero point, then the textbook sum in int64
  const std::int64_t z = op.input.zero_point;
  const std::size_t PH = 7 + 2, PW = 6;
  for (std::size_t c = 0; c < 4; ++c)
    for (std::size_t oy = 0; oy < OH; ++oy)
      for (std::size_t ox = 0; ox < OW; ++ox) {
        std::int64_t a = op.bias[c];
        for (std::size_t ky = 0; ky < 3; ++ky)
          for (std::size_t kx = 0; kx < 2; ++kx) {
            const std::size_t py = oy * 2 + ky, px = ox * 2 + kx;
            REQUIRE(px < PW);
            const std::int64_t v = (py == 0 || py == PH - 1) ? z : x[(c * 7 + py - 1) * 6 + px];
            a += std::int64_t(op.weights(c, ky * 2 + kx)) * (v - z);
          }
        CHECK(acc[(c * OH + oy) * OW + ox] == a);
      }
}

TEST_CASE("average pools run on the accumulators, the area folded into the multiplier", "[integer_model]") {
  const model m = small_cnn(8, 4);
  const integer_model im = make_integer_model(m);
  const integer_op& dw = im.ops[2];  // c1, mp1, dw(+relu, avgpool)
  REQUIRE(dw.kind == integer_op_kind::depthwise_conv2d);
  REQUIRE(dw.acc_ops.size() == 2);
  CHECK(dw.acc_ops[0].kind == integer_op_kind::clamp);
  CHECK(dw.acc_ops[1].kind == integer_op_kind::avgpool2d);
  CHECK(dw.acc_divisor == 9);
  const double s_in = m.layers[3].input_encoding->params.scale(0), s_out = m.layers[6].input_encoding->params.scale(0);
  for (std::size_t o = 0; o < 8; ++o)
    CHECK(dw.multipliers[o] == s_in * double(m.layers[3].weight_encoding->params.scale(o)) / (s_out * 9.0));
  // pw: maxpool 1x1, relu, global average pool over 2x2, flatten
  const integer_op& pw = im.ops[4];
  REQUIRE(pw.name == "pw");
  CHECK(pw.acc_divisor == 4);
  CHECK(pw.out_shape == std::vector<std::size_t>{16});
  SECTION("the segment by hand: relu, window sums with padded taps 0, one requantization") {
    // run the model up to dw's input in the integer runner, then recompute dw's output
    const xt::xarray<float> x = random_input(m, 3, 8);
    const auto r = run_integer_model(im, x, integer_mode::integer, true);
    const auto& in = r.activations[1];  // after mp1: [3, 8, 6, 6]
    const auto& got = r.activations[2];  // after dw + relu + avgpool: [3, 8, 3, 3]
    REQUIRE(got.shape()[3] == 3);
    for (std::size_t s = 0; s < 3; ++s) {
      std::vector<std::int32_t> acc(8 * 3 * 3);
      depthwise_conv_integer(in.data() + s * 8 * 36, acc.data(), dw);
      for (auto& v : acc) v = std::max(v, 0);
      for (std::size_t c = 0; c < 8; ++c)
        for (std::size_t oy = 0; oy < 3; ++oy)
          for (std::size_t ox = 0; ox < 3; ++ox) {
            std::int64_t sum = 0;
            for (int dy = -1; dy <= 1; ++dy)
              for (int dx = -1; dx <= 1; ++dx) {
                const int y = int(oy) + dy, xx = int(ox) + dx;
                if (y >= 0 && y < 3 && xx >= 0 && xx < 3) sum += acc[(c * 3 + y) * 3 + xx];
              }
            CHECK(int(got(s, c, oy, ox)) == quant::requantize_one(static_cast<std::int32_t>(sum), c, dw.rq));
          }
    }
  }
}

TEST_CASE("engine directory round trip", "[integer_model]") {
  for (auto format : {weight_format::int8, weight_format::int4}) {
    const model m = small_cnn(format == weight_format::int8 ? 8 : 4, 77);
    const integer_model im = make_integer_model(m, quant::requantization::float_scale, format);
    const std::string dir = tmp_dir(format == weight_format::int8 ? "rt8" : "rt4");
    save_integer_model(im, dir);
    const integer_model back = load_integer_model(dir);
    CHECK(back.rounding == quant::requantization::float_scale);
    REQUIRE(back.ops.size() == im.ops.size());
    for (std::size_t i = 0; i < im.ops.size(); ++i) CHECK(back.ops[i].weights == im.ops[i].weights);
    const xt::xarray<float> x = random_input(m, 9, 1);
    require_identical(run_integer_model(im, x, integer_mode::integer, true),
                      run_integer_model(back, x, integer_mode::integer, true));
  }
  SECTION("malformed engine.json names the field") {
    const std::string dir = tmp_dir("broken");
    save_integer_model(make_integer_model(small_mlp(8, 1)), dir);
    std::string text;
    {
      std::ifstream f(dir + "/engine.json");
      text.assign(std::istreambuf_iterator<char>(f), {});
    }
    const std::string good = "\"requantization\": \"fixed_point\"";
    const auto pos = text.find(good);
    REQUIRE(pos != std::string::npos);
    text.replace(pos, good.size(), "\"requantization\": \"rounded_hmm\"");
    std::ofstream(dir + "/engine.json") << text;
    CHECK_THROWS_WITH(load_integer_model(dir), Catch::Contains("requantization"));
  }
  SECTION("bytes after the JSON document are an error, trailing whitespace is not") {
    const std::string dir = tmp_dir("trailing");
    save_integer_model(make_integer_model(small_mlp(8, 1)), dir);
    std::ofstream(dir + "/engine.json", std::ios::app) << " \n\t";
    CHECK_NOTHROW(load_integer_model(dir));
    std::ofstream(dir + "/engine.json", std::ios::app) << "}x";
    CHECK_THROWS_WITH(load_integer_model(dir), Catch::Contains("engine.json") && Catch::Contains("not valid JSON"));
  }
}

// engine.json is outside data: every field the runner relies on is checked against the
// others and against the files before anything is allocated or run (found by fuzz_model_bundle).
TEST_CASE("a malformed engine.json is refused, never allocated or run", "[integer_model]") {
  // small_mlp's engine: ops fl [1,6,6] -> [36], fc1 [40, 36], fc2 [24, 40], fc3 [10, 24] (logits).
  const std::string dir = tmp_dir("lying");
  save_integer_model(make_integer_model(small_mlp(8, 5)), dir);
  nlohmann::json good;
  {
    std::ifstream f(dir + "/engine.json");
    f >> good;
  }
  REQUIRE(good["ops"].size() == 4);
  REQUIRE(good["ops"][1]["weights_shape"] == nlohmann::json::array({40, 36}));
  auto load_with = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = good;
    edit(j);
    std::ofstream(dir + "/engine.json", std::ios::trunc) << j.dump();
    return load_integer_model(dir);
  };
  CHECK_NOTHROW(load_with([](nlohmann::json&) {}));
  SECTION("a weights_shape larger than the file (6.4e8 bytes claimed, 1440 held)") {
    CHECK_THROWS_WITH(load_with([](nlohmann::json& j) { j["ops"][1]["weights_shape"] = {40, 16000000}; }),
                      Catch::Contains("ops[1]") && Catch::Contains("element count"));
    // beyond 2^24 per entry a shape is refused as such
    CHECK_THROWS_WITH(load_with([](nlohmann::json& j) { j["ops"][1]["weights_shape"] = {40, 36000000}; }),
                      Catch::Contains("ops[1]") && Catch::Contains("weights_shape"));
  }
  SECTION("a weights_shape that agrees with the file but not with the input (K = 40 for 36 features)") {
    // 36 x 40 = 1440 bytes: the file's size, so only the geometry check can refuse it
    // (per-channel entries trimmed to 36 so that everything else agrees)
    CHECK_THROWS_WITH(load_with([](nlohmann::json& j) {
                        auto& op = j["ops"][1];
                        op["weights_shape"] = {36, 40};
                        for (const char* key : {"weight_scales", "bias", "multipliers", "fixed_point_multipliers",
                                                "shifts", "float_multipliers"}) {
                          auto v = op[key];
                          if (v.size() == 40) op[key] = std::vector<nlohmann::json>(v.begin(), v.begin() + 36);
                        }
                      }),
                      Catch::Contains("ops[1]") && Catch::Contains("do not fit the input"));
  }
  SECTION("an output_shape the op does not compute (the runner would write past its buffers)") {
    CHECK_THROWS_WITH(load_with([](nlohmann::json& j) {
                        j["ops"][3]["output_shape"] = {300};
                        j["output_shape"] = {300};
                      }),
                      Catch::Contains("ops[3]") && Catch::Contains("output_shape"));
    CHECK_THROWS_WITH(load_with([](nlohmann::json& j) {
                        j["ops"][0]["output_shape"] = {40};
                        j["ops"][1]["input_shape"] = {40};
                      }),
                      Catch::Contains("ops[0]") && Catch::Contains("output_shape"));
  }
  SECTION("no op outputs the logits") {
    CHECK_THROWS_WITH(load_with([](nlohmann::json& j) { j["ops"].erase(3); }), Catch::Contains("logits"));
  }
  SECTION("numbers outside their type are refused, not cast") {
    CHECK_THROWS_WITH(load_with([](nlohmann::json& j) { j["version"] = 1e30; }), Catch::Contains("version"));
    CHECK_THROWS_WITH(load_with([](nlohmann::json& j) { j["input"]["zero_point"] = 1e30; }),
                      Catch::Contains("zero_point"));
    CHECK_THROWS_WITH(load_with([](nlohmann::json& j) { j["ops"][2]["bias"][0] = 4294967296.0; }),
                      Catch::Contains("bias"));
    CHECK_THROWS_WITH(load_with([](nlohmann::json& j) { j["ops"][1]["input_shape"] = {-36}; }),
                      Catch::Contains("input_shape"));
  }
  SECTION("a weights file outside the directory") {
    CHECK_THROWS_WITH(load_with([](nlohmann::json& j) { j["ops"][1]["weights"] = "../fc1.weights.npy"; }),
                      Catch::Contains("plain file name"));
  }
}

TEST_CASE("export errors name the layer", "[integer_model]") {
  SECTION("asymmetric weight grid") {
    model m = small_mlp(8, 2);
    auto& e = *m.layers[3].weight_encoding;
    std::vector<std::int32_t> z(e.params.size(), 1);
    e.params = quant::qparams::per_channel(quant::grid::int_signed(8), e.params.scales(), z, 0);
    CHECK_THROWS_WITH(make_integer_model(m), Catch::Contains("layer fc2") && Catch::Contains("symmetric"));
  }
  SECTION("missing activation quantizer") {
    model m = small_mlp(8, 2);
    m.layers[5].input_encoding.reset();
    CHECK_THROWS_WITH(make_integer_model(m), Catch::Contains("layer fc3") && Catch::Contains("input_encodings"));
  }
  SECTION("weights off their grid") {
    model m = small_mlp(8, 2);
    m.layers[1].weight(2, 3) += 1e-3f;
    CHECK_THROWS_WITH(make_integer_model(m), Catch::Contains("layer fc1") && Catch::Contains("weight[2, 3]"));
  }
  SECTION("an 8-bit grid exported as int4") {
    CHECK_THROWS_WITH(make_integer_model(small_mlp(8, 2), quant::requantization::fixed_point, weight_format::int4),
                      Catch::Contains("layer fc1") && Catch::Contains("int4"));
  }
  SECTION("an unfolded batch norm") {
    model m = small_cnn(8, 2);
    model_layer bn = simple(layer_type::batchnorm2d, "bn");
    bn.weight = xt::ones<float>({8});
    bn.bias = xt::xtensor<float, 1>(xt::zeros<float>({8}));
    bn.running_mean = xt::zeros<float>({8});
    bn.running_var = xt::ones<float>({8});
    m.layers.insert(m.layers.begin() + 1, bn);
    CHECK_THROWS_WITH(make_integer_model(m), Catch::Contains("layer bn") && Catch::Contains("not folded"));
  }
  SECTION("relu6 before an average pool") {
    model m = small_cnn(8, 2);
    m.layers[4] = simple(layer_type::relu6, "r2");
    CHECK_THROWS_WITH(make_integer_model(m), Catch::Contains("layer r2") && Catch::Contains("average pool"));
  }
  SECTION("a signed activation grid") {
    model m = small_mlp(8, 2);
    m.layers[3].input_encoding->params = quant::qparams::per_tensor(quant::grid::int_signed(8), 0.1f, 0);
    CHECK_THROWS_WITH(make_integer_model(m), Catch::Contains("layer fc2") && Catch::Contains("unsigned"));
  }
}

// The integer GEMM bounds its int32 accumulation over every uint8 input byte (|x - z| up to
// 255 for z = 0), whatever the activation grid: K <= integer_gemm_max_k<uint8_t>(8) = 65 793
// and |bias| + max|x - z| sum_k |w| <= 2^31 - 1. An engine the kernel would refuse at run time
// is refused when it is made or loaded, also when its activation grid (here 4 bits, |x - z|
// <= 15) alone would keep the accumulator far inside int32.
TEST_CASE("an engine the integer GEMM would refuse is refused at export and at load", "[integer_model]") {
  const std::size_t kmax = quant::integer_gemm_max_k<std::uint8_t>(8);
  REQUIRE(kmax == 2147483647u / (255u * 128u));
  const float s_w = 0x1p-12f, s_in = 0x1p-4f;
  auto model_with_k = [&](std::size_t k) {
    model m;
    m.input_shape = {1, 1, k};
    m.layers.push_back(simple(layer_type::flatten, "fl"));
    model_layer l = simple(layer_type::linear, "fc");
    l.weight = xt::xarray<float>::from_shape({2, k});
    std::fill(l.weight.begin(), l.weight.end(), 127.0f * s_w);  // every weight at the grid's top
    l.bias = xt::xtensor<float, 1>(xt::zeros<float>({2}));
    encoding we;
    we.params = quant::qparams::per_channel(quant::grid::int_signed(8), std::vector<float>{s_w, s_w}, 0);
    we.scheme = quant::scheme::symmetric;
    l.weight_encoding = we;
    encoding ae;
    ae.params = quant::qparams::per_tensor(quant::grid::int_unsigned(4), s_in, 0);
    ae.scheme = quant::scheme::asymmetric;
    l.input_encoding = ae;
    m.layers.push_back(l);
    validate_model(m);
    return m;
  };
  SECTION("K at the kernel's limit exports, loads and runs; one more is refused at export") {
    const model at_limit = model_with_k(kmax);
    const integer_model im = make_integer_model(at_limit);
    // inputs at the top of the 4-bit grid: acc = 15 * 127 * K, logit = acc * s_in * s_w (exact)
    xt::xarray<float> x = xt::xarray<float>::from_shape({1, 1, 1, kmax});
    std::fill(x.begin(), x.end(), 15.0f * s_in);
    const auto r = run_integer_model(im, x, integer_mode::integer, false);
    REQUIRE(r.logits.size() == 2);
    const double want = 15.0 * 127.0 * double(kmax) * double(s_in) * double(s_w);
    CHECK(double(r.logits(0, 0)) == Approx(want).epsilon(1e-7));
    CHECK(double(r.logits(0, 1)) == Approx(want).epsilon(1e-7));
    CHECK_THROWS_WITH(make_integer_model(model_with_k(kmax + 1)),
                      Catch::Contains("layer fc") && Catch::Contains("w.k = " + std::to_string(kmax + 1)));
  }
  SECTION("a bias at the accumulator bound loads; one more is refused at load") {
    // 255 * 127 * K + |bias| <= 2^31 - 1 with K = kmax: the largest bias the kernel takes
    const std::int64_t largest = 2147483647 - 255 * 127 * std::int64_t(kmax);
    REQUIRE(largest > 0);
    const std::string dir = tmp_dir("bias_bound");
    save_integer_model(make_integer_model(model_with_k(kmax)), dir);
    nlohmann::json j;
    {
      std::ifstream f(dir + "/engine.json");
      f >> j;
    }
    REQUIRE(j["ops"].size() == 2);
    auto load_with_bias = [&](std::int64_t b) {
      j["ops"][1]["bias"][0] = b;
      std::ofstream(dir + "/engine.json", std::ios::trunc) << j.dump();
      return load_integer_model(dir);
    };
    const integer_model ok = load_with_bias(-largest);
    xt::xarray<float> x = xt::zeros<float>({std::size_t(1), std::size_t(1), std::size_t(1), kmax});
    CHECK_NOTHROW(run_integer_model(ok, x, integer_mode::integer, false));
    CHECK_THROWS_WITH(load_with_bias(largest + 1), Catch::Contains("bias[0]") && Catch::Contains("exceeds int32"));
    CHECK_THROWS_WITH(load_with_bias(-(largest + 1)), Catch::Contains("bias[0]") && Catch::Contains("exceeds int32"));
  }
}

}  // namespace integer_model_tests
