// The `quant` tool end to end: each test writes .npy inputs (bytes built here, not by the
// tool's own writer), runs the built binary through std::system, and checks exit codes,
// messages and outputs against values computed here from the formulas.
#include <sys/stat.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <fstream>
#include <random>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

// Everything below in its own namespace: the test files may be compiled together (unity build).
namespace cli_tests {

namespace {

const std::string tool = QUANT_CLI;
const std::string dir = TEST_TMP_DIR "/cli";

std::string path(const std::string& name) { return dir + "/" + name; }

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

struct run_result {
  int code;
  std::string output;  // stdout + stderr
};

run_result run(const std::string& args) {
  ::mkdir(TEST_TMP_DIR, 0755);
  ::mkdir(dir.c_str(), 0755);
  const std::string log = path("last_run.log");
  const int status = std::system((tool + " " + args + " > " + log + " 2>&1").c_str());
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str()};
}

// .npy version 1.0 written byte by byte.
void write_npy_bytes(const std::string& p, const std::string& descr, const std::vector<std::size_t>& shape,
                     const void* data, std::size_t nbytes, bool fortran = false, const char* magic = "\x93NUMPY") {
  std::string sh = "(";
  for (std::size_t d : shape) sh += std::to_string(d) + ",";
  if (shape.size() > 1) sh.pop_back();
  sh += ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                       ", 'shape': " + sh + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  ::mkdir(TEST_TMP_DIR, 0755);
  ::mkdir(dir.c_str(), 0755);
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(magic, 6);
  const unsigned char ver[2] = {1, 0};
  f.write(reinterpret_cast<const char*>(ver), 2);
  const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                                static_cast<unsigned char>(header.size() >> 8)};
  f.write(reinterpret_cast<const char*>(len), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
}

void write_f32(const std::string& p, const std::vector<std::size_t>& shape, const std::vector<float>& v,
               bool fortran = false) {
  write_npy_bytes(p, "<f4", shape, v.data(), v.size() * 4, fortran);
}

struct npy {
  std::string descr;
  std::string shape;  // the header's tuple text, e.g. "(2, 3)"
  std::vector<char> data;
  template <class T>
  std::vector<T> as() const {
    std::vector<T> v(data.size() / sizeof(T));
    std::memcpy(v.data(), data.data(), v.size() * sizeof(T));
    return v;
  }
};

npy read_npy(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  REQUIRE(f);
  std::vector<char> all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  REQUIRE(all.size() >= 10);
  REQUIRE(std::string(all.data(), 6) == "\x93NUMPY");
  const std::size_t hl = static_cast<unsigned char>(all[8]) | (static_cast<std::size_t>(static_cast<unsigned char>(all[9])) << 8);
  const std::string h(all.data() + 10, hl);
  npy r;
  const auto d = h.find("'descr': '");
  r.descr = h.substr(d + 10, h.find('\'', d + 10) - d - 10);
  const auto s = h.find("'shape': ");
  r.shape = h.substr(s + 9, h.find(')', s) - s - 8);
  r.data.assign(all.begin() + static_cast<std::ptrdiff_t>(10 + hl), all.end());
  return r;
}

nlohmann::json read_json(const std::string& p) {
  std::ifstream f(p);
  REQUIRE(f);
  nlohmann::json j;
  f >> j;
  return j;
}

// PyTorch-convention fake-quant, written from the formula: x * (1/s) in float, round half
// to even, + z, clamp, (q - z) * s.
float fq_ref(float x, float s, int z, int qmin, int qmax) {
  float q = std::nearbyint(x * (1.0f / s)) + static_cast<float>(z);
  q = std::min(std::max(q, static_cast<float>(qmin)), static_cast<float>(qmax));
  return (q - static_cast<float>(z)) * s;
}

bool no_leftovers() {
  const int st = std::system(("ls " + dir + " | grep -q '\\.tmp-'").c_str());
  return WIFEXITED(st) && WEXITSTATUS(st) != 0;
}

}  // namespace

TEST_CASE("quant --help for the tool and every subcommand") {
  for (const char* sub : {"", "fake-quant ", "quantize ", "calibrate ", "lsq-grad ", "adaround ", "kurtosis ", "pq ", "gptq "}) {
    const auto r = run(std::string(sub) + "--help");
    INFO(sub << r.output);
    CHECK(r.code == 0);
    CHECK_THAT(r.output, Catch::Contains("Usage"));
  }
}

TEST_CASE("fake-quant with an explicit per-tensor scale matches the formula") {
  const std::vector<float> x = {-1.0f, -0.26f, 0.0f, 0.24f, 0.25f, 0.35f, 0.7f, 5.0f, -0.05f, 0.15f};
  write_f32(path("x.npy"), {2, 5}, x);
  const auto r = run("fake-quant -i " + path("x.npy") + " -o " + path("y.npy") + " --bits 4 --scale 0.1");
  INFO(r.output);
  REQUIRE(r.code == 0);
  const npy y = read_npy(path("y.npy"));
  CHECK(y.descr == "<f4");
  CHECK(y.shape == "(2, 5)");
  const auto v = y.as<float>();
  REQUIRE(v.size() == x.size());
  for (std::size_t i = 0; i < x.size(); ++i) CHECK(v[i] == fq_ref(x[i], 0.1f, 0, -8, 7));
  CHECK(v[0] == fq_ref(-0.8f, 0.1f, 0, -8, 7));  // clamped at qmin
  CHECK(no_leftovers());
}

TEST_CASE("fake-quant: asymmetric unsigned grid, zero point, float64 input, rounding policies") {
  std::vector<double> x = {-0.3, -0.1, 0.0, 0.05, 0.25, 1.0};
  write_npy_bytes(path("x64.npy"), "<f8", {6}, x.data(), x.size() * 8);
  auto r = run("fake-quant -i " + path("x64.npy") + " -o " + path("y64.npy") +
               " --bits 3 --unsigned --scheme asymmetric --scale 0.1 --zero-point 2");
  INFO(r.output);
  REQUIRE(r.code == 0);
  auto v = read_npy(path("y64.npy")).as<float>();
  for (std::size_t i = 0; i < x.size(); ++i) CHECK(v[i] == fq_ref(static_cast<float>(x[i]), 0.1f, 2, 0, 7));
  // floor rounding: 0.05 / 0.1 -> floor(0.5) = 0 (half-to-even also gives 0, so use 0.25 -> 2 vs floor 2; 0.15 differs)
  write_f32(path("xr.npy"), {3}, {0.15f, -0.15f, 0.26f});
  r = run("fake-quant -i " + path("xr.npy") + " -o " + path("yr.npy") + " --bits 8 --scale 0.1 --rounding floor");
  REQUIRE(r.code == 0);
  v = read_npy(path("yr.npy")).as<float>();
  CHECK(v[0] == std::floor(0.15f * (1.0f / 0.1f)) * 0.1f);
  CHECK(v[1] == std::floor(-0.15f * (1.0f / 0.1f)) * 0.1f);
  CHECK(v[2] == std::floor(0.26f * (1.0f / 0.1f)) * 0.1f);
}

TEST_CASE("quantize per channel with a min-max observer writes integers, scales and encodings") {
  // W [3, 4]: channel c has absmax (c + 1).
  const std::vector<float> w = {1.0f, -0.5f, 0.25f, 0.0f, -2.0f, 1.0f, 0.3f, 0.1f, 3.0f, -1.5f, 0.7f, 2.9f};
  write_f32(path("w.npy"), {3, 4}, w);
  const auto r = run("quantize -i " + path("w.npy") + " -o " + path("q.npy") + " --bits 4 --axis 0 --observer minmax" +
                     " --scales-out " + path("s.npy") + " --zero-points-out " + path("z.npy") + " --encodings " +
                     path("enc.json"));
  INFO(r.output);
  REQUIRE(r.code == 0);
  const npy q = read_npy(path("q.npy"));
  CHECK(q.descr == "|i1");
  CHECK(q.shape == "(3, 4)");
  const auto qi = q.as<std::int8_t>();
  const auto s = read_npy(path("s.npy")).as<float>();
  const auto z = read_npy(path("z.npy")).as<std::int32_t>();
  REQUIRE(s.size() == 3);
  REQUIRE(z.size() == 3);
  for (std::size_t c = 0; c < 3; ++c) {
    // PyTorch symmetric: absmax / ((qmax - qmin) / 2) = absmax / 7.5
    CHECK(s[c] == static_cast<float>(c + 1) / 7.5f);
    CHECK(z[c] == 0);
    for (std::size_t i = 0; i < 4; ++i) {
      const float e = std::min(std::max(std::nearbyint(w[c * 4 + i] * (1.0f / s[c])), -8.0f), 7.0f);
      CHECK(qi[c * 4 + i] == static_cast<int>(e));
    }
  }
  const auto j = read_json(path("enc.json"));
  CHECK(j["bits"] == 4);
  CHECK(j["signed"] == true);
  CHECK(j["scheme"] == "symmetric");
  CHECK(j["granularity"] == "per_channel");
  CHECK(j["axis"] == 0);
  CHECK(j["dtype"] == "int8");
  CHECK(j["scales"].size() == 3);
  CHECK(j["scales"][2].get<float>() == s[2]);
  CHECK(j["zero_points"] == std::vector<int>{0, 0, 0});
}

TEST_CASE("quantize: per group, unsigned asymmetric uint8, int16 for wide grids, float32 holding integers") {
  std::vector<float> x(16);
  for (std::size_t i = 0; i < 16; ++i) x[i] = 0.1f * static_cast<float>(i) - 0.4f;
  write_f32(path("g.npy"), {2, 8}, x);
  auto r = run("quantize -i " + path("g.npy") + " -o " + path("gq.npy") + " --bits 8 --unsigned --scheme asymmetric" +
               " --axis -1 --group 4 --observer minmax --encodings " + path("g.json"));
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(read_npy(path("gq.npy")).descr == "|u1");
  const auto j = read_json(path("g.json"));
  CHECK(j["granularity"] == "per_group");
  CHECK(j["group_size"] == 4);
  CHECK(j["scales"].size() == 4);
  const auto q = read_npy(path("gq.npy")).as<std::uint8_t>();
  for (std::size_t g = 0; g < 4; ++g) {
    const float s = j["scales"][g].get<float>();
    const int z = j["zero_points"][g].get<int>();
    for (std::size_t i = 0; i < 4; ++i)  // dequantized within half a step of x
      CHECK(std::fabs((static_cast<float>(q[g * 4 + i]) - static_cast<float>(z)) * s - x[g * 4 + i]) <= 0.5f * s + 1e-6f);
  }
  r = run("quantize -i " + path("g.npy") + " -o " + path("q12.npy") + " --bits 12 --scale 0.001");
  REQUIRE(r.code == 0);
  const npy q12 = read_npy(path("q12.npy"));
  CHECK(q12.descr == "<i2");
  CHECK(q12.as<std::int16_t>()[0] == -400);
  r = run("quantize -i " + path("g.npy") + " -o " + path("qf.npy") + " --bits 8 --scale 0.01 --dtype float32");
  REQUIRE(r.code == 0);
  const npy qf = read_npy(path("qf.npy"));
  CHECK(qf.descr == "<f4");
  CHECK(qf.as<float>()[15] == std::nearbyint(x[15] * (1.0f / 0.01f)));
}

TEST_CASE("calibrate over two files, then quantize with --params") {
  write_f32(path("a1.npy"), {2, 3}, {0.0f, 1.0f, 2.0f, -1.0f, 0.5f, 0.25f});
  write_f32(path("a2.npy"), {1, 3}, {4.0f, -3.0f, 0.0f});
  auto r = run("calibrate -i " + path("a1.npy") + " -i " + path("a2.npy") +
               " --bits 8 --unsigned --scheme asymmetric -o " + path("cal.json") + " --scales-out " + path("cal_s.npy"));
  INFO(r.output);
  REQUIRE(r.code == 0);
  const auto j = read_json(path("cal.json"));
  CHECK(j["granularity"] == "per_tensor");
  const float s = j["scales"][0].get<float>();
  CHECK(s == (4.0f - (-3.0f)) / 255.0f);  // min-max over both files
  CHECK(j["zero_points"][0] == static_cast<int>(0 - std::nearbyint(-3.0f / s)));
  CHECK(read_npy(path("cal_s.npy")).as<float>()[0] == s);
  r = run("fake-quant -i " + path("a2.npy") + " -o " + path("a2q.npy") + " --params " + path("cal.json"));
  REQUIRE(r.code == 0);
  const auto v = read_npy(path("a2q.npy")).as<float>();
  const int z = j["zero_points"][0].get<int>();
  CHECK(v[0] == fq_ref(4.0f, s, z, 0, 255));
  CHECK(v[1] == fq_ref(-3.0f, s, z, 0, 255));
  // Per channel along axis 1, mse observer: three scales.
  r = run("calibrate -i " + path("a1.npy") + " -i " + path("a2.npy") + " --axis 1 --observer mse -o " + path("cal2.json"));
  REQUIRE(r.code == 0);
  CHECK(read_json(path("cal2.json"))["scales"].size() == 3);
}

TEST_CASE("lsq-grad matches the LSQ / LSQ+ gradient formulas") {
  const std::vector<float> x = {-2.0f, -0.26f, 0.1f, 0.34f, 0.9f, 3.0f};
  const std::vector<float> dy = {0.5f, -1.0f, 2.0f, 0.25f, -0.5f, 1.0f};
  write_f32(path("lx.npy"), {6}, x);
  write_f32(path("ldy.npy"), {6}, dy);
  const float s = 0.2f;
  const int qmin = -4, qmax = 3;  // 3 bits signed
  auto r = run("lsq-grad --x " + path("lx.npy") + " --dy " + path("ldy.npy") + " --scale 0.2 --bits 3 --dx " +
               path("ldx.npy") + " -o " + path("lsq.json") + " --no-gradient-scaling");
  INFO(r.output);
  REQUIRE(r.code == 0);
  const auto dx = read_npy(path("ldx.npy")).as<float>();
  double ds = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double u = static_cast<double>(x[i] * (1.0f / s));
    const bool inside = u >= qmin && u <= qmax;
    CHECK(dx[i] == (inside ? dy[i] : 0.0f));
    ds += dy[i] * (u < qmin ? qmin : u > qmax ? qmax : std::nearbyint(u) - u);
  }
  const auto j = read_json(path("lsq.json"));
  CHECK(j["dscale"][0].get<double>() == Approx(ds).epsilon(1e-5));
  CHECK(j["gradient_scale"].get<double>() == 1.0);
  // LSQ+ with an offset and gradient scaling: dbeta = sum of dy outside, times g.
  r = run("lsq-grad --x " + path("lx.npy") + " --dy " + path("ldy.npy") + " --scale 0.2 --zero-point 0.1 --bits 3" +
          " --dx " + path("ldx2.npy") + " --dzero-point-out " + path("ldb.npy"));
  REQUIRE(r.code == 0);
  double db = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double u = static_cast<double>((x[i] - 0.1f) * (1.0f / s));
    if (u < qmin || u > qmax) db += dy[i];
  }
  const double g = 1.0 / std::sqrt(6.0 * qmax);
  CHECK(read_npy(path("ldb.npy")).as<float>()[0] == Approx(db * g).epsilon(1e-5));
}

TEST_CASE("adaround one layer: outputs, grid, and error no worse than round-to-nearest") {
  const std::size_t out = 8, in = 16, n = 256;
  std::vector<float> w(out * in), xs(n * in);
  std::uint32_t st = 12345u;
  auto rnd = [&] {
    st = st * 1664525u + 1013904223u;
    return static_cast<float>(st >> 8) / 16777216.0f - 0.5f;
  };
  for (auto& v : w) v = rnd();
  for (auto& v : xs) v = 2.0f * rnd();
  write_f32(path("aw.npy"), {out, in}, w);
  write_f32(path("ax.npy"), {n, in}, xs);
  ::mkdir(path("ar").c_str(), 0755);
  const auto r = run("adaround --weights " + path("aw.npy") + " --inputs " + path("ax.npy") +
                     " --bits 3 --iterations 300 --seed 7 --quiet --out-dir " + path("ar"));
  INFO(r.output);
  REQUIRE(r.code == 0);
  const npy q = read_npy(path("ar/integer_weights.npy"));
  CHECK(q.descr == "<i4");
  CHECK(q.shape == "(8, 16)");
  const auto qi = q.as<std::int32_t>();
  const auto s = read_npy(path("ar/scales.npy")).as<float>();
  const auto wq = read_npy(path("ar/weights.npy")).as<float>();
  REQUIRE(s.size() == out);
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t i = 0; i < in; ++i) {
      const std::size_t k = o * in + i;
      CHECK(qi[k] >= -4);
      CHECK(qi[k] <= 3);
      CHECK(wq[k] == static_cast<float>(qi[k]) * s[o]);
      // AdaRound only chooses between floor and ceil of W/s (or the clamped grid end).
      const float u = w[k] * (1.0f / s[o]);
      CHECK((qi[k] == std::floor(u) || qi[k] == std::floor(u) + 1 || qi[k] == -4 || qi[k] == 3));
    }
  const auto j = read_json(path("ar/report.json"));
  CHECK(j["iterations"] == 300);
  CHECK(j["reconstruction_error"]["adaround"].get<double>() <= j["reconstruction_error"]["round_to_nearest"].get<double>());
}

TEST_CASE("malformed .npy inputs exit with 1 and a clear message, and write nothing") {
  const std::vector<float> v = {1.0f, 2.0f, 3.0f, 4.0f};
  struct bad_case {
    const char* name;
    std::function<void(const std::string&)> write;
    const char* message;
  };
  const std::vector<bad_case> cases = {
      {"magic", [&](const std::string& p) { write_npy_bytes(p, "<f4", {4}, v.data(), 16, false, "\x93NUMPZ"); },
       "bad magic"},
      {"truncated", [&](const std::string& p) { write_npy_bytes(p, "<f4", {4}, v.data(), 10); }, "truncated data"},
      {"extra", [&](const std::string& p) { write_npy_bytes(p, "<f4", {3}, v.data(), 16); }, "unexpected bytes"},
      {"complex", [&](const std::string& p) { write_npy_bytes(p, "<c8", {2}, v.data(), 16); }, "unsupported dtype"},
      {"bigendian", [&](const std::string& p) { write_npy_bytes(p, ">f4", {4}, v.data(), 16); }, "big-endian"},
      {"int32", [&](const std::string& p) { write_npy_bytes(p, "<i4", {4}, v.data(), 16); }, "not a float type"},
      {"empty", [&](const std::string& p) { std::ofstream(p, std::ios::binary).write("\x93NUM", 4); }, "too short"},
      {"header", [&](const std::string& p) { write_npy_bytes(p, "<f4", {4}, v.data(), 16); std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary); f.seekp(8); f.put('\xff'); f.put('\x7f'); }, "truncated"},
  };
  for (const auto& c : cases) {
    const std::string in = path(std::string("bad_") + c.name + ".npy"), o = path(std::string("bad_out_") + c.name + ".npy");
    c.write(in);
    std::remove(o.c_str());
    const auto r = run("fake-quant -i " + in + " -o " + o + " --scale 0.1");
    INFO(c.name << ": " << r.output);
    CHECK(r.code == 1);
    CHECK_THAT(r.output, Catch::Contains(c.message));
    CHECK_THAT(r.output, Catch::Contains(in));
    CHECK_FALSE(exists(o));
  }
  const auto r = run("fake-quant -i " + path("missing.npy") + " -o " + path("m_out.npy") + " --scale 0.1");
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("cannot open"));
  CHECK(no_leftovers());
}

TEST_CASE("Fortran-order input is read in its logical (row-major) order") {
  // Logical [[1, 2, 3], [4, 5, 6]] stored column by column.
  write_f32(path("fort.npy"), {2, 3}, {1.0f, 4.0f, 2.0f, 5.0f, 3.0f, 6.0f}, true);
  const auto r = run("fake-quant -i " + path("fort.npy") + " -o " + path("fort_out.npy") + " --bits 8 --scale 1");
  INFO(r.output);
  REQUIRE(r.code == 0);
  const npy y = read_npy(path("fort_out.npy"));
  CHECK(y.shape == "(2, 3)");
  CHECK(y.as<float>() == std::vector<float>{1, 2, 3, 4, 5, 6});
}

TEST_CASE("bad data in a well-formed file exits with 1") {
  write_f32(path("nan.npy"), {3}, {1.0f, std::nanf(""), 2.0f});
  auto r = run("quantize -i " + path("nan.npy") + " -o " + path("nan_q.npy") + " --scale 0.1");
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("NaN"));
  CHECK_FALSE(exists(path("nan_q.npy")));
  r = run("quantize -i " + path("nan.npy") + " -o " + path("nan_q.npy") + " --observer minmax");
  CHECK(r.code == 1);
  // Three scales for an axis of two channels.
  write_f32(path("two.npy"), {2, 2}, {1, 2, 3, 4});
  write_f32(path("three_scales.npy"), {3}, {0.1f, 0.1f, 0.1f});
  r = run("fake-quant -i " + path("two.npy") + " -o " + path("two_q.npy") + " --axis 0 --scale " +
          path("three_scales.npy"));
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("channels"));
  // adaround: X columns do not match W.
  write_f32(path("aw_bad.npy"), {2, 3}, {1, 2, 3, 4, 5, 6});
  ::mkdir(path("ar_bad").c_str(), 0755);
  r = run("adaround -w " + path("aw_bad.npy") + " -x " + path("two.npy") + " -o " + path("ar_bad") + " -q");
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("columns"));
  CHECK_FALSE(exists(path("ar_bad/report.json")));
}

TEST_CASE("usage errors exit with 2") {
  write_f32(path("u.npy"), {2}, {1.0f, 2.0f});
  const std::string io = " -i " + path("u.npy") + " -o " + path("u_out.npy");
  for (const std::string& args :
       {std::string(""), std::string("frobnicate"), "fake-quant" + io, "fake-quant" + io + " --scale 0.1 --observer mse",
        "fake-quant" + io + " --scale 0.1 --bits 1", "fake-quant" + io + " --scale 0.1 --bits 17",
        "fake-quant" + io + " --scale abc", "fake-quant" + io + " --scale 0.1 --rounding sideways",
        "fake-quant" + io + " --scale -1", "fake-quant" + io + " --scale 0.1 --zero-point 3",
        "fake-quant" + io + " --scale 0.1 --axis 5", "fake-quant" + io + " --scale 0.1 --bogus",
        "fake-quant -o " + path("u_out.npy") + " --scale 0.1", "quantize" + io + " --scale 0.1 --bits 12 --dtype int8",
        "lsq-grad --x " + path("u.npy"), "adaround -w " + path("u.npy") + " -x " + path("u.npy") + " -o /nonexistent"}) {
    std::remove(path("u_out.npy").c_str());
    const auto r = run(args);
    INFO(args << "\n" << r.output);
    CHECK(r.code == 2);
    CHECK_FALSE(r.output.empty());
    CHECK_FALSE(exists(path("u_out.npy")));
  }
}

// ---- kurtosis and pq -----------------------------------------------------------------------

namespace {

// Population kurtosis m4 / m2^2 of the float values, in double, two passes.
double kurtosis_ref(const std::vector<float>& v) {
  double mean = 0.0;
  for (float x : v) mean += x;
  mean /= static_cast<double>(v.size());
  double m2 = 0.0, m4 = 0.0;
  for (float x : v) {
    const double y = static_cast<double>(x) - mean;
    m2 += y * y;
    m4 += y * y * y * y;
  }
  m2 /= static_cast<double>(v.size());
  m4 /= static_cast<double>(v.size());
  return m4 / (m2 * m2);
}

std::vector<float> gaussian(std::size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(g);
  return v;
}

std::vector<std::uint8_t> read_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  REQUIRE(f);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// LSB-first bit stream, `bits` per index.
std::vector<std::uint32_t> unpack_ref(const std::vector<std::uint8_t>& bytes, std::size_t count, unsigned bits) {
  std::vector<std::uint32_t> out(count, 0);
  for (std::size_t i = 0; i < count; ++i)
    for (unsigned b = 0; b < bits; ++b) {
      const std::size_t bit = i * bits + b;
      out[i] |= static_cast<std::uint32_t>((bytes[bit / 8] >> (bit % 8)) & 1u) << b;
    }
  return out;
}

double sq_dist(const float* a, const float* b, std::size_t d) {
  double s = 0.0;
  for (std::size_t j = 0; j < d; ++j) s += (double(a[j]) - double(b[j])) * (double(a[j]) - double(b[j]));
  return s;
}

}  // namespace

TEST_CASE("kurtosis: per-file kurtosis, KURE terms and loss match double computations") {
  // A Gaussian sample (K near 3), an equispaced grid on [-1, 1] (K = 1.8 up to O(1/n^2)), a
  // heavy-tailed file (cubes of Gaussians) and a constant, checked against kurtosis_ref.
  const std::vector<float> g = gaussian(5000, 7);
  std::vector<float> u(1000);
  for (std::size_t i = 0; i < u.size(); ++i) u[i] = -1.0f + 2.0f * static_cast<float>(i) / 999.0f;
  std::vector<float> h = gaussian(2000, 11);
  for (auto& x : h) x = x * x * x;  // heavier tails
  write_f32(path("k_gauss.npy"), {50, 100}, g);
  write_f32(path("k_unif.npy"), {1000}, u);
  write_f32(path("k_heavy.npy"), {20, 10, 10}, h);
  write_f32(path("k_const.npy"), {4}, {0.5f, 0.5f, 0.5f, 0.5f});
  const std::string files = " -i " + path("k_gauss.npy") + " -i " + path("k_unif.npy") + " -i " + path("k_heavy.npy") +
                            " -i " + path("k_const.npy");
  const std::vector<std::vector<float>> data = {g, u, h};
  for (const bool unbiased : {false, true}) {
    std::remove(path("k.json").c_str());
    const auto r = run("kurtosis" + files + " --target 2.0 -o " + path("k.json") + (unbiased ? " --unbiased" : ""));
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK_THAT(r.output, Catch::Contains("constant"));  // the table names the constant file
    const auto j = read_json(path("k.json"));
    CHECK(j["variance"] == (unbiased ? "unbiased" : "population"));
    REQUIRE(j["files"].size() == 4);
    double loss = 0.0;
    for (std::size_t f = 0; f < 3; ++f) {
      const double n = static_cast<double>(data[f].size());
      const double k = kurtosis_ref(data[f]) * (unbiased ? ((n - 1) / n) * ((n - 1) / n) : 1.0);
      const auto& jf = j["files"][f];
      CHECK(jf["elements"] == data[f].size());
      CHECK(jf["constant"] == false);
      CHECK(jf["kurtosis"].get<double>() == Approx(k).epsilon(1e-9));
      const double term = (k - 2.0) * (k - 2.0) / 4.0;
      CHECK(jf["kure_term"].get<double>() == Approx(term).epsilon(1e-8));
      loss += term;
    }
    CHECK(j["files"][0]["shape"] == std::vector<std::size_t>{50, 100});
    CHECK(j["files"][0]["kurtosis"].get<double>() == Approx(3.0).margin(0.2));  // sampling error ~ sqrt(24/n)
    CHECK(j["files"][1]["kurtosis"].get<double>() == Approx(1.8).margin(0.01));
    CHECK(j["files"][2]["kurtosis"].get<double>() > 6.0);
    CHECK(j["files"][3]["constant"] == true);
    CHECK(j["files"][3]["kurtosis"].is_null());
    CHECK(j["files"][3]["kure_term"] == 0.0);
    CHECK(j["kure_loss"].get<double>() == Approx(loss).epsilon(1e-8));
  }
  // JSON on stdout is the same report.
  const auto r = run("kurtosis -i " + path("k_unif.npy") + " --format json");
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.output);
  CHECK(j["files"][0]["kurtosis"].get<double>() == Approx(kurtosis_ref(u)).epsilon(1e-9));
  CHECK(j["target"] == 1.8);
}

TEST_CASE("kurtosis: NaN, empty and malformed files exit with 1 naming the file") {
  write_f32(path("k_nan.npy"), {3}, {1.0f, std::nanf(""), 2.0f});
  auto r = run("kurtosis -i " + path("k_nan.npy"));
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("NaN"));
  CHECK_THAT(r.output, Catch::Contains("k_nan.npy"));
  write_f32(path("k_empty.npy"), {0}, {});
  r = run("kurtosis -i " + path("k_empty.npy"));
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("k_empty.npy"));
  std::remove(path("k_bad.json").c_str());
  r = run("kurtosis -i " + path("k_nan.npy") + " -o " + path("k_bad.json"));
  CHECK(r.code == 1);
  CHECK_FALSE(exists(path("k_bad.json")));
  for (const std::string& args : {std::string("kurtosis"), "kurtosis -i " + path("k_nan.npy") + " --format xml",
                                  "kurtosis -i " + path("k_nan.npy") + " --target abc"}) {
    r = run(args);
    INFO(args << "\n" << r.output);
    CHECK(r.code == 2);
  }
}

TEST_CASE("pq: centroids, packed indices, decoded weights and sizes agree with each other and the formulas") {
  const std::size_t rows = 16, cols = 24, d = 4, K = 8;
  const std::vector<float> w = gaussian(rows * cols, 3);
  write_f32(path("pq_w.npy"), {rows, cols}, w);
  const std::string out = path("pq1");
  ::mkdir(out.c_str(), 0755);
  const auto r = run("pq -w " + path("pq_w.npy") + " --d 4 --k 8 --seed 5 --iterations 10 -o " + out);
  INFO(r.output);
  REQUIRE(r.code == 0);
  const npy c = read_npy(out + "/centroids.npy");
  CHECK(c.descr == "<f4");
  CHECK(c.shape == "(1, 8, 4)");
  const auto cv = c.as<float>();
  const std::size_t subvectors = rows * cols / d;
  const unsigned bits = 3;
  const npy ix = read_npy(out + "/indices.npy");
  CHECK(ix.descr == "|u1");
  const auto bytes = ix.as<std::uint8_t>();
  REQUIRE(bytes.size() == (subvectors * bits + 7) / 8);
  const auto idx = unpack_ref(bytes, subvectors, bits);
  const npy dec = read_npy(out + "/decoded.npy");
  CHECK(dec.shape == "(16, 24)");
  const auto dv = dec.as<float>();
  double sse = 0.0;
  for (std::size_t s = 0; s < subvectors; ++s) {
    REQUIRE(idx[s] < K);
    for (std::size_t j = 0; j < d; ++j) CHECK(dv[s * d + j] == cv[idx[s] * d + j]);  // decode = centroids[indices]
    // Each subvector sits at its nearest centroid.
    const double mine = sq_dist(&w[s * d], &cv[idx[s] * d], d);
    for (std::size_t q = 0; q < K; ++q) CHECK(mine <= sq_dist(&w[s * d], &cv[q * d], d) + 1e-9);
    sse += mine;
  }
  const auto j = read_json(out + "/report.json");
  CHECK(j["index_bits"] == bits);
  CHECK(j["subvectors"] == subvectors);
  CHECK(j["codebooks"] == 1);
  CHECK(j["mse"].get<double>() == Approx(sse / double(rows * cols)).epsilon(1e-9));
  CHECK(j["mse"] == j["mse_float_centroids"]);
  const auto& z = j["size"];
  const std::size_t index_bytes = (subvectors * bits + 7) / 8, centroid_bytes = 4 * K * d;
  CHECK(z["float32_bytes"] == 4 * rows * cols);
  CHECK(z["index_bytes"] == index_bytes);
  CHECK(z["centroid_bytes"] == centroid_bytes);
  CHECK(z["total_bytes"] == index_bytes + centroid_bytes);
  CHECK(z["compression_ratio"].get<double>() == Approx(double(4 * rows * cols) / double(index_bytes + centroid_bytes)));
  CHECK(z["int8_centroids"]["centroid_bytes"] == K * d + 4);
  // The k-means objective is recorded and ends no higher than it starts.
  const auto obj = j["kmeans_objective"][0].get<std::vector<double>>();
  REQUIRE(obj.size() == 10);
  CHECK(obj.back() <= obj.front());
  // Same seed, same bytes.
  const std::string out2 = path("pq1b");
  ::mkdir(out2.c_str(), 0755);
  REQUIRE(run("pq -w " + path("pq_w.npy") + " --d 4 --k 8 --seed 5 --iterations 10 -o " + out2).code == 0);
  CHECK(read_bytes(out2 + "/indices.npy") == read_bytes(out + "/indices.npy"));
  CHECK(read_bytes(out2 + "/centroids.npy") == read_bytes(out + "/centroids.npy"));
}

TEST_CASE("pq: per-subspace layout, int8 centroids, raw .bin indices, conv weights") {
  const std::size_t out_ch = 8, in_ch = 2, kk = 3, d = 9, K = 4;  // rows of 18 -> 2 subspaces of d = 9
  const std::size_t cols = in_ch * kk * kk, S = cols / d;
  const std::vector<float> w = gaussian(out_ch * cols, 5);
  write_f32(path("pq_conv.npy"), {out_ch, in_ch, kk, kk}, w);
  const std::string out = path("pq2");
  ::mkdir(out.c_str(), 0755);
  const auto r = run("pq -w " + path("pq_conv.npy") + " --d 9 --k 4 --layout per-subspace --init kmeans++" +
                     " --int8-centroids --indices-format bin -o " + out);
  INFO(r.output);
  REQUIRE(r.code == 0);
  const npy c = read_npy(out + "/centroids.npy");
  CHECK(c.descr == "|i1");
  CHECK(c.shape == "(2, 4, 9)");
  const auto cq = c.as<std::int8_t>();
  const auto scales = read_npy(out + "/centroid_scales.npy").as<float>();
  REQUIRE(scales.size() == S);
  for (std::size_t s = 0; s < S; ++s) {  // the largest centroid magnitude maps to 127
    int absmax = 0;
    for (std::size_t i = 0; i < K * d; ++i) absmax = std::max(absmax, std::abs(int(cq[s * K * d + i])));
    CHECK(absmax == 127);
  }
  const auto bytes = read_bytes(out + "/indices.bin");
  const std::size_t subvectors = out_ch * S;
  REQUIRE(bytes.size() == (subvectors * 2 + 7) / 8);
  CHECK_FALSE(exists(out + "/indices.npy"));
  const auto idx = unpack_ref(bytes, subvectors, 2);
  const npy dec = read_npy(out + "/decoded.npy");
  CHECK(dec.shape == "(8, 2, 3, 3)");
  const auto dv = dec.as<float>();
  double sse = 0.0;
  for (std::size_t row = 0; row < out_ch; ++row)
    for (std::size_t s = 0; s < S; ++s) {
      const std::uint32_t q = idx[row * S + s];
      REQUIRE(q < K);
      for (std::size_t j = 0; j < d; ++j) {
        const std::size_t e = row * cols + s * d + j;
        CHECK(dv[e] == static_cast<float>(cq[(s * K + q) * d + j]) * scales[s]);  // codebook of subspace s
        sse += (double(w[e]) - double(dv[e])) * (double(w[e]) - double(dv[e]));
      }
    }
  const auto j = read_json(out + "/report.json");
  CHECK(j["centroids"] == "int8");
  CHECK(j["codebooks"] == S);
  CHECK(j["mse"].get<double>() == Approx(sse / double(w.size())).epsilon(1e-9));
  CHECK(j["mse_int8_centroids"] == j["mse"]);
  CHECK(j["size"]["centroid_bytes"] == S * K * d + 4 * S);
  CHECK(j["size"]["index_bytes"] == bytes.size());
  CHECK(j["size"]["total_bytes"] == bytes.size() + S * K * d + 4 * S);
}

TEST_CASE("pq: bad weights exit with 1, bad options with 2, and nothing is written") {
  const std::string out = path("pq_bad");
  ::mkdir(out.c_str(), 0755);
  write_f32(path("pq_w10.npy"), {4, 10}, gaussian(40, 1));
  write_f32(path("pq_1d.npy"), {16}, gaussian(16, 1));
  std::vector<float> nan_w = gaussian(64, 2);
  nan_w[37] = std::nanf("");
  write_f32(path("pq_nan.npy"), {8, 8}, nan_w);
  struct bad_case {
    std::string args, message;
  };
  const std::vector<bad_case> cases = {
      {"pq -w " + path("pq_w10.npy") + " --d 4 --k 2", "does not divide the row length 10"},
      {"pq -w " + path("pq_w10.npy") + " --d 5 --k 9", "larger than the 8 subvectors"},
      {"pq -w " + path("pq_w10.npy") + " --d 5 --k 5 --layout per-subspace", "larger than the 4 subvectors"},
      {"pq -w " + path("pq_nan.npy") + " --d 4 --k 4", "NaN"},
      {"pq -w " + path("pq_1d.npy") + " --d 4 --k 2", "not a weight matrix"},
      {"pq -w " + path("missing.npy") + " --d 4 --k 2", "cannot open"},
  };
  for (const auto& c : cases) {
    const auto r = run(c.args + " -o " + out);
    INFO(c.args << "\n" << r.output);
    CHECK(r.code == 1);
    CHECK_THAT(r.output, Catch::Contains(c.message));
    CHECK_FALSE(exists(out + "/report.json"));
    CHECK_FALSE(exists(out + "/decoded.npy"));
  }
  for (const std::string& args :
       {"pq -w " + path("pq_w10.npy") + " --d 5 --k 0 -o " + out, "pq -w " + path("pq_w10.npy") + " --d 0 -o " + out,
        "pq -w " + path("pq_w10.npy") + " --d 5", "pq -w " + path("pq_w10.npy") + " --d 5 -o " + path("nowhere/x"),
        "pq -w " + path("pq_w10.npy") + " --d 5 --k 2 --layout rows -o " + out,
        "pq -w " + path("pq_w10.npy") + " --d 5 --k 2 --indices-format txt -o " + out}) {
    const auto r = run(args);
    INFO(args << "\n" << r.output);
    CHECK(r.code == 2);
    CHECK_FALSE(exists(out + "/report.json"));
  }
  const int st = std::system(("ls " + out + " | grep -q '\\.tmp-'").c_str());
  CHECK((WIFEXITED(st) && WEXITSTATUS(st) != 0));
}

TEST_CASE("a .npy header with a repeated key is rejected (the two header parsers would disagree)") {
  // Found by reading xtensor's reader beside ours: xnpy takes the first 'shape' and parses the
  // rest of the header after it, ours took both tuples; the array came back with a shape
  // (2, 0, 0) the header check never saw.
  const std::vector<float> v = {1.0f, 2.0f};
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'shape': (1,), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  ::mkdir(TEST_TMP_DIR, 0755);
  ::mkdir(dir.c_str(), 0755);
  const std::string in = path("dup_key.npy"), o = path("dup_key_out.npy");
  {
    std::ofstream f(in, std::ios::binary | std::ios::trunc);
    f.write("\x93NUMPY\x01\x00", 8);
    f.put(static_cast<char>(header.size() & 0xff));
    f.put(static_cast<char>(header.size() >> 8));
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    f.write(reinterpret_cast<const char*>(v.data()), 8);
  }
  std::remove(o.c_str());
  const auto r = run("fake-quant -i " + in + " -o " + o + " --scale 0.1");
  INFO(r.output);
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("key 'shape' appears twice"));
  CHECK_FALSE(exists(o));
}

TEST_CASE("gptq one layer: outputs, groups, act order, errors recomputed from the data; bad input exits 1 or 2") {
  const std::size_t out = 6, in = 16, n = 200;
  std::vector<float> w(out * in), xs(n * in);
  std::uint32_t st = 777u;
  auto rnd = [&] {
    st = st * 1664525u + 1013904223u;
    return static_cast<float>(st >> 8) / 16777216.0f - 0.5f;
  };
  for (auto& v : w) v = rnd();
  // correlated inputs: column i mixes a shared latent with its own noise
  for (std::size_t r = 0; r < n; ++r) {
    const float a = rnd(), b = rnd();
    for (std::size_t i = 0; i < in; ++i) xs[r * in + i] = (i % 2 ? a : b) + 0.3f * rnd();
  }
  write_f32(path("gw.npy"), {out, in}, w);
  write_f32(path("gx.npy"), {n, in}, xs);
  // mean over rows of sum_o ((W - Wq) x)^2 in double
  auto error_of = [&](const std::vector<float>& wq) {
    double acc = 0.0;
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t o = 0; o < out; ++o) {
        double y = 0.0;
        for (std::size_t i = 0; i < in; ++i) y += (double(w[o * in + i]) - wq[o * in + i]) * xs[r * in + i];
        acc += y * y;
      }
    return acc / double(n);
  };

  SECTION("per channel, 3-bit symmetric") {
    ::mkdir(path("gq").c_str(), 0755);
    const auto r = run("gptq -w " + path("gw.npy") + " -x " + path("gx.npy") + " --bits 3 -o " + path("gq"));
    INFO(r.output);
    REQUIRE(r.code == 0);
    const npy q = read_npy(path("gq/integer_weights.npy"));
    CHECK(q.descr == "<i4");
    CHECK(q.shape == "(6, 16)");
    const auto qi = q.as<std::int32_t>();
    const auto s = read_npy(path("gq/scales.npy")).as<float>();
    const auto z = read_npy(path("gq/zero_points.npy")).as<std::int32_t>();
    const auto wq = read_npy(path("gq/weights.npy")).as<float>();
    REQUIRE(s.size() == out);
    std::vector<float> rtn(out * in);
    for (std::size_t o = 0; o < out; ++o) {
      CHECK(z[o] == 0);
      for (std::size_t i = 0; i < in; ++i) {
        const std::size_t k = o * in + i;
        CHECK(qi[k] >= -4);
        CHECK(qi[k] <= 3);
        CHECK(wq[k] == static_cast<float>(qi[k]) * s[o]);
        rtn[k] = fq_ref(w[k], s[o], 0, -4, 3);
      }
    }
    const auto j = read_json(path("gq/report.json"));
    const double e_gptq = j["reconstruction_error"]["gptq"].get<double>();
    const double e_rtn = j["reconstruction_error"]["round_to_nearest"].get<double>();
    CHECK(std::abs(e_gptq - error_of(wq)) <= 1e-9 * e_gptq);
    CHECK(std::abs(e_rtn - error_of(rtn)) <= 1e-9 * e_rtn);
    CHECK(e_gptq < e_rtn);
    CHECK(j["block_size"] == 128);
    CHECK(j["dead_inputs"] == 0);
    CHECK(no_leftovers());
  }

  SECTION("groups of 4 at group start, asymmetric unsigned, act order, block 3") {
    ::mkdir(path("gq_group").c_str(), 0755);
    const auto r = run("gptq -w " + path("gw.npy") + " -x " + path("gx.npy") +
                       " --bits 3 --unsigned --scheme asymmetric --group-size 4 --group-scales at-group-start"
                       " --act-order --block-size 3 --observer minmax -o " + path("gq_group"));
    INFO(r.output);
    REQUIRE(r.code == 0);
    const npy sn = read_npy(path("gq_group/scales.npy"));
    CHECK(sn.shape == "(6, 4)");
    const auto s = sn.as<float>();
    const auto z = read_npy(path("gq_group/zero_points.npy")).as<std::int32_t>();
    const auto qi = read_npy(path("gq_group/integer_weights.npy")).as<std::int32_t>();
    const auto wq = read_npy(path("gq_group/weights.npy")).as<float>();
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t i = 0; i < in; ++i) {
        const std::size_t k = o * in + i, g = o * 4 + i / 4;
        CHECK(qi[k] >= 0);
        CHECK(qi[k] <= 7);
        CHECK(wq[k] == static_cast<float>(qi[k] - z[g]) * s[g]);
      }
    const auto j = read_json(path("gq_group/report.json"));
    CHECK(j["act_order"] == true);
    CHECK(j["group_scales"] == "at-group-start");
    CHECK(std::abs(j["reconstruction_error"]["gptq"].get<double>() - error_of(wq)) <= 1e-9 * error_of(wq));
  }

  SECTION("bad data exits 1, bad options 2, nothing is written") {
    ::mkdir(path("gq_bad").c_str(), 0755);
    write_f32(path("gx_cols.npy"), {4, in + 1}, std::vector<float>(4 * (in + 1), 1.0f));
    auto r = run("gptq -w " + path("gw.npy") + " -x " + path("gx_cols.npy") + " -o " + path("gq_bad"));
    CHECK(r.code == 1);
    CHECK_THAT(r.output, Catch::Contains("columns"));
    std::vector<float> nan_x = xs;
    nan_x[5] = std::nanf("");
    write_f32(path("gx_nan.npy"), {n, in}, nan_x);
    r = run("gptq -w " + path("gw.npy") + " -x " + path("gx_nan.npy") + " -o " + path("gq_bad"));
    CHECK(r.code == 1);
    // rows (2, ..., 2) and (0, ..., 0): H is singular; without dampening the Cholesky fails
    std::vector<float> sing(2 * in, 0.0f);
    for (std::size_t i = 0; i < in; ++i) sing[i] = 2.0f;
    write_f32(path("gx_sing.npy"), {2, in}, sing);
    r = run("gptq -w " + path("gw.npy") + " -x " + path("gx_sing.npy") + " --damp 0 -o " + path("gq_bad"));
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK_THAT(r.output, Catch::Contains("damp"));
    r = run("gptq -w " + path("gw.npy") + " -x " + path("gx.npy") + " --group-size 5 -o " + path("gq_bad"));
    CHECK(r.code == 2);
    r = run("gptq -w " + path("gw.npy") + " -x " + path("gx.npy") + " --group-scales at-group-start -o " +
            path("gq_bad"));
    CHECK(r.code == 2);
    r = run("gptq -w " + path("gw.npy") + " -x " + path("gx.npy") + " --block-size 0 -o " + path("gq_bad"));
    CHECK(r.code == 2);
    CHECK_FALSE(exists(path("gq_bad/integer_weights.npy")));
    CHECK_FALSE(exists(path("gq_bad/report.json")));
  }
}

// ---- model bundles: quant eval / quant ptq ---------------------------------------------------

namespace {

// A small BN network as a bundle, written byte by byte: conv 1->4 3x3 (no bias) + BN + ReLU,
// max-pool 2, depthwise 3x3 + ReLU, flatten, linear 36->3.
void write_small_bundle(const std::string& d) {
  ::mkdir(TEST_TMP_DIR, 0755);
  ::mkdir(dir.c_str(), 0755);
  ::mkdir(d.c_str(), 0755);
  std::uint32_t st = 4242u;
  auto rnd = [&](float lo, float hi) {
    st = st * 1664525u + 1013904223u;
    return lo + (hi - lo) * (static_cast<float>(st >> 8) / 16777216.0f);
  };
  auto tensor = [&](const std::string& name, std::vector<std::size_t> shape, float lo, float hi) {
    std::size_t n = 1;
    for (auto s : shape) n *= s;
    std::vector<float> v(n);
    for (auto& x : v) x = rnd(lo, hi);
    write_f32(d + "/" + name, shape, v);
  };
  tensor("c1.weight.npy", {4, 1, 3, 3}, -1.0f, 1.0f);
  tensor("bn1.weight.npy", {4}, 0.5f, 1.5f);
  tensor("bn1.bias.npy", {4}, -0.2f, 0.8f);
  tensor("bn1.running_mean.npy", {4}, -0.3f, 0.3f);
  tensor("bn1.running_var.npy", {4}, 0.5f, 3.0f);
  tensor("c2.weight.npy", {4, 1, 3, 3}, -1.0f, 1.0f);
  tensor("c2.bias.npy", {4}, -0.1f, 0.1f);
  tensor("fc.weight.npy", {3, 36}, -0.5f, 0.5f);
  tensor("fc.bias.npy", {3}, -0.1f, 0.1f);
  std::ofstream(d + "/model.json") << R"({"format": "quant-model", "version": 1, "input_shape": [1, 6, 6], "layers": [
    {"type": "conv2d", "name": "c1", "weight": "c1.weight.npy", "bias": null, "stride": 1, "padding": 1, "groups": 1},
    {"type": "batchnorm2d", "name": "bn1", "weight": "bn1.weight.npy", "bias": "bn1.bias.npy",
     "running_mean": "bn1.running_mean.npy", "running_var": "bn1.running_var.npy", "eps": 1e-5},
    {"type": "relu"}, {"type": "maxpool2d", "kernel": 2},
    {"type": "conv2d", "name": "c2", "weight": "c2.weight.npy", "bias": "c2.bias.npy", "padding": 1, "groups": 4},
    {"type": "relu"}, {"type": "flatten"},
    {"type": "linear", "name": "fc", "weight": "fc.weight.npy", "bias": "fc.bias.npy"}]})";
}

std::vector<float> random_images(std::size_t n, std::uint32_t seed) {
  std::vector<float> v(n * 36);
  for (auto& x : v) {
    seed = seed * 1664525u + 1013904223u;
    x = static_cast<float>(seed >> 8) / 16777216.0f * 2.0f - 0.5f;
  }
  return v;
}

// The line after `prefix` up to the end of that line.
std::string line_with(const std::string& out, const std::string& prefix) {
  const auto p = out.find(prefix);
  if (p == std::string::npos) return "";
  return out.substr(p, out.find('\n', p + 1) - p);
}

}  // namespace

TEST_CASE("eval and ptq on a model bundle: accuracy, outputs, and ptq's accuracy reproduced by eval") {
  const std::string bundle = path("small_bundle");
  write_small_bundle(bundle);
  const std::size_t n = 64;
  write_f32(path("imgs.npy"), {n, 1, 6, 6}, random_images(n, 99));
  write_f32(path("calib_imgs.npy"), {128, 1, 6, 6}, random_images(128, 7));

  // float logits -> labels: argmax for samples 16.., a wrong class for the first 16
  auto r = run("eval --model " + bundle + " --input " + path("imgs.npy") + " --logits-out " + path("logits.npy"));
  INFO(r.output);
  REQUIRE(r.code == 0);
  const npy lg = read_npy(path("logits.npy"));
  CHECK(lg.shape == "(64, 3)");
  const auto logits = lg.as<float>();
  REQUIRE(logits.size() == n * 3);
  std::vector<std::uint8_t> y8(n);
  std::vector<std::int64_t> y64(n);
  for (std::size_t i = 0; i < n; ++i) {
    const float* l = logits.data() + 3 * i;
    const std::size_t a = static_cast<std::size_t>(std::max_element(l, l + 3) - l);
    y8[i] = static_cast<std::uint8_t>(i < 16 ? (a + 1) % 3 : a);
    y64[i] = y8[i];
  }
  write_npy_bytes(path("y8.npy"), "|u1", {n}, y8.data(), n);
  write_npy_bytes(path("y64.npy"), "<i8", {n}, y64.data(), n * 8);

  SECTION("eval prints the top-1 accuracy for uint8 and int64 labels") {
    for (const char* y : {"y8.npy", "y64.npy"}) {
      r = run("eval --model " + bundle + " --input " + path("imgs.npy") + " --labels " + path(y));
      INFO(r.output);
      CHECK(r.code == 0);
      CHECK_THAT(r.output, Catch::Contains("top-1 accuracy: 75.00% (48/64)"));
    }
  }

  SECTION("ptq writes a quantized bundle whose eval accuracy is exactly the reported one") {
    const std::string out = path("small_q");
    std::system(("rm -rf " + out).c_str());
    r = run("ptq --model " + bundle + " --calib " + path("calib_imgs.npy") + " --eval " + path("imgs.npy") +
            " --labels " + path("y64.npy") + " -o " + out +
            " --weight-bits 4 --act-bits 6 --cle --bias-absorption --bias-correction empirical --act-observer mse");
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK_THAT(r.output, Catch::Contains("float top-1 accuracy: 75.00% (48/64)"));
    for (const char* f : {"model.json", "report.json", "c1.weight.npy", "c1.input.json", "c1.weight.json", "c2.input.json",
                          "c2.weight.json", "fc.input.json", "fc.weight.json"})
      CHECK(exists(out + "/" + f));
    CHECK_FALSE(exists(out + "/bn1.weight.npy"));  // folded
    const auto rep = read_json(out + "/report.json");
    CHECK(rep["options"]["weight_bits"] == 4);
    CHECK(rep["options"]["act_bits"] == 6);
    CHECK(rep["calibration_samples"] == 128);
    REQUIRE(rep["layers"].size() == 3);
    for (const auto& l : rep["layers"]) CHECK(l["bias_correction"] == "empirical");
    for (const char* stage : {"bn folding", "cle", "bias absorption", "calibration forward", "activation calibration",
                              "weight quantization", "bias correction", "quantized evaluation"})
      CHECK(rep["stage_seconds"].contains(stage));
    // the activation encodings: 6-bit unsigned asymmetric, per tensor
    const auto enc = read_json(out + "/fc.input.json");
    CHECK(enc["qmin"] == 0);
    CHECK(enc["qmax"] == 63);
    CHECK(enc["granularity"] == "per_tensor");
    // every stored weight lies on its 4-bit grid
    const auto w = read_npy(out + "/fc.weight.npy").as<float>();
    const float s = read_json(out + "/fc.weight.json")["scales"][0].get<float>();
    for (float v : w) {
      const float q = v / s;
      CHECK(std::fabs(q - std::nearbyint(q)) < 1e-4f);
      CHECK(std::fabs(q) <= 8.0f);
    }
    const std::string reported = line_with(r.output, "\ntop-1 accuracy: ").substr(1);
    REQUIRE(!reported.empty());
    auto e = run("eval --model " + out + " --input " + path("imgs.npy") + " --labels " + path("y8.npy"));
    INFO(e.output);
    CHECK(e.code == 0);
    CHECK(line_with(e.output, "top-1 accuracy: ") == reported);
    const double acc = rep["accuracy"].get<double>();
    char buf[64];
    std::snprintf(buf, sizeof buf, "top-1 accuracy: %.2f%%", 100.0 * acc);
    CHECK_THAT(reported, Catch::StartsWith(buf));
    CHECK(no_leftovers());
  }

  SECTION("ptq --rounding gptq keeps the observer's scales, stays on the grid, and reconstructs no worse than nearest") {
    // Weight-only W4 per channel: the weight scales depend on the (folded) weights alone, so
    // a nearest run and a GPTQ run must store the same scales; GPTQ changes only the integers.
    const std::string near = path("small_near"), gq = path("small_gptq");
    std::system(("rm -rf " + near + " " + gq).c_str());
    const std::string base = "ptq --model " + bundle + " --calib " + path("calib_imgs.npy") +
                             " --weight-bits 4 --act-bits 32 --weight-granularity per-channel --weight-observer mse -q -o ";
    auto rn = run(base + near);
    INFO(rn.output);
    REQUIRE(rn.code == 0);
    r = run(base + gq + " --rounding gptq");
    INFO(r.output);
    REQUIRE(r.code == 0);
    const auto rep = read_json(gq + "/report.json");
    CHECK(rep["options"]["rounding"] == "gptq");
    CHECK(rep["stage_seconds"].contains("weight quantization (gptq)"));
    REQUIRE(rep["layers"].size() == 3);
    for (const auto& l : rep["layers"]) {
      INFO(l["name"]);
      if (l["kind"] == "depthwise_conv2d") {  // not one GEMM: nearest, with a note
        CHECK(l["rounding"] == "nearest");
        CHECK_FALSE(l.contains("gptq_error"));
        continue;
      }
      CHECK(l["rounding"] == "gptq");
      REQUIRE(l.contains("gptq_error"));
      CHECK(l["gptq_error"].get<double>() <= l["gptq_rtn_error"].get<double>() * (1.0 + 1e-9));
    }
    CHECK(rep["notes"].dump().find("c2: depthwise_conv2d is not one GEMM; rounded to nearest") != std::string::npos);
    for (const char* name : {"c1", "c2", "fc"}) {
      INFO(name);
      const auto jn = read_json(near + "/" + name + ".weight.json"), jg = read_json(gq + "/" + name + ".weight.json");
      REQUIRE(jn["scales"] == jg["scales"]);
      const auto w = read_npy(gq + "/" + name + ".weight.npy").as<float>();
      const auto sc = jg["scales"].get<std::vector<float>>();
      REQUIRE(!sc.empty());
      const std::size_t per = w.size() / sc.size();
      for (std::size_t i = 0; i < w.size(); ++i) {
        const float q = w[i] / sc[i / per];
        CHECK(std::fabs(q - std::nearbyint(q)) < 1e-4f);
        CHECK(std::fabs(q) <= 8.0f);
      }
    }
    CHECK(no_leftovers());
  }

  SECTION("failures exit 1 or 2 and leave no output directory") {
    const std::string out = path("small_fail");
    std::system(("rm -rf " + out).c_str());
    const std::string base = "ptq --model " + bundle + " -o " + out + " --calib ";
    // malformed bundle: exit 2 naming the file and the field
    const std::string broken = path("broken_bundle");
    write_small_bundle(broken);
    write_f32(broken + "/c2.weight.npy", {4, 2, 3, 3}, std::vector<float>(72, 0.1f));
    r = run("ptq --model " + broken + " -o " + out + " --calib " + path("calib_imgs.npy"));
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains("layers[4].weight"));
    CHECK_THAT(r.output, Catch::Contains("model.json"));
    CHECK_FALSE(exists(out));
    std::remove((broken + "/c2.weight.npy").c_str());
    r = run("eval --model " + broken + " --input " + path("imgs.npy"));
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains("c2.weight.npy"));
    CHECK_THAT(r.output, Catch::Contains("layers[4].weight"));
    // data errors: exit 1
    write_f32(path("bad_shape.npy"), {2, 1, 5, 5}, std::vector<float>(50, 0.0f));
    r = run(base + path("bad_shape.npy"));
    CHECK(r.code == 1);
    CHECK_FALSE(exists(out));
    r = run(base + path("missing.npy"));
    CHECK(r.code == 1);
    write_npy_bytes(path("y_short.npy"), "|u1", {10}, y8.data(), 10);
    r = run(base + path("calib_imgs.npy") + " --eval " + path("imgs.npy") + " --labels " + path("y_short.npy"));
    CHECK(r.code == 1);
    CHECK_THAT(r.output, Catch::Contains("10 labels for 64"));
    CHECK_FALSE(exists(out));
    r = run("eval --model " + bundle + " --input " + path("bad_shape.npy"));
    CHECK(r.code == 1);
    // usage errors: exit 2
    r = run(base + path("calib_imgs.npy") + " --bias-absorption");
    CHECK(r.code == 2);
    r = run(base + path("calib_imgs.npy") + " --act-bits 33");
    CHECK(r.code == 2);
    r = run(base + path("calib_imgs.npy") + " --eval " + path("imgs.npy"));
    CHECK(r.code == 2);
    CHECK_FALSE(exists(out));
    // an existing output directory survives a failed run untouched
    ::mkdir(out.c_str(), 0755);
    std::ofstream(out + "/marker") << "keep";
    r = run(base + path("bad_shape.npy"));
    CHECK(r.code == 1);
    CHECK(exists(out + "/marker"));
    // ... and a directory that is not a bundle is never replaced, even by a good run
    r = run(base + path("calib_imgs.npy"));
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains("refusing to replace"));
    CHECK(exists(out + "/marker"));
    CHECK_FALSE(exists(out + "/model.json"));
    CHECK(no_leftovers());
  }
}

// ---- integer models: quant export / quant run ------------------------------------------------

namespace {
std::string file_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
}  // namespace

TEST_CASE("export and run: integer kernels and exact simulation give identical files; errors exit 1 or 2") {
  const std::string bundle = path("int_bundle");
  write_small_bundle(bundle);
  const std::size_t n = 48;
  write_f32(path("int_imgs.npy"), {n, 1, 6, 6}, random_images(n, 5));
  write_f32(path("int_calib.npy"), {96, 1, 6, 6}, random_images(96, 6));
  std::vector<std::int64_t> y(n);
  for (std::size_t i = 0; i < n; ++i) y[i] = static_cast<std::int64_t>(i % 3);
  write_npy_bytes(path("int_y.npy"), "<i8", {n}, y.data(), n * 8);

  for (const char* bits : {"8", "4"}) {
    DYNAMIC_SECTION("W" << bits << "A8 per channel") {
      const std::string q = path(std::string("int_q") + bits), e = path(std::string("int_e") + bits);
      std::system(("rm -rf " + q + " " + e + " " + path("acts_i") + " " + path("acts_e")).c_str());
      auto r = run("ptq --model " + bundle + " --calib " + path("int_calib.npy") + " -o " + q + " --weight-bits " + bits +
                   " --weight-granularity per-channel -q");
      INFO(r.output);
      REQUIRE(r.code == 0);
      r = run("export --model " + q + " -o " + e + " --weight-format " + (bits[0] == '4' ? "int4" : "int8") +
              " --requantization float-scale");
      INFO(r.output);
      REQUIRE(r.code == 0);
      CHECK(exists(e + "/engine.json"));
      CHECK(exists(e + "/fc.weights.npy"));
      const auto ej = read_json(e + "/engine.json");
      CHECK(ej["format"] == "quant-integer-model");
      CHECK(ej["requantization"] == "float_scale");
      CHECK(ej["weight_format"] == (bits[0] == '4' ? "int4" : "int8"));
      // the weights file: int8 [out, K] or the packed nibbles [(out*K + 1) / 2]
      CHECK(read_npy(e + "/fc.weights.npy").shape == (bits[0] == '4' ? "(54,)" : "(3, 36)"));
      ::mkdir(path("acts_i").c_str(), 0755);
      ::mkdir(path("acts_e").c_str(), 0755);
      r = run("run --model " + e + " --input " + path("int_imgs.npy") + " --labels " + path("int_y.npy") +
              " --logits-out " + path("int_li.npy") + " --activations-out " + path("acts_i"));
      INFO(r.output);
      REQUIRE(r.code == 0);
      const std::string acc_line = line_with(r.output, "top-1 accuracy: ");
      CHECK_FALSE(acc_line.empty());
      auto s = run("run --model " + e + " --input " + path("int_imgs.npy") + " --labels " + path("int_y.npy") +
                   " --simulate exact --logits-out " + path("int_le.npy") + " --activations-out " + path("acts_e"));
      INFO(s.output);
      REQUIRE(s.code == 0);
      CHECK(line_with(s.output, "top-1 accuracy: ") == acc_line);
      CHECK(read_npy(path("int_li.npy")).shape == "(48, 3)");
      CHECK(file_bytes(path("int_li.npy")) == file_bytes(path("int_le.npy")));
      // c1 (+BN folded, relu), pool, c2 (+relu), flatten: one file per op before fc
      for (const char* f : {"00_c1.npy", "01_maxpool2d2.npy", "02_c2.npy", "03_flatten5.npy"}) {
        INFO(f);
        REQUIRE(exists(path("acts_i") + "/" + f));
        CHECK(file_bytes(path("acts_i") + "/" + f) == file_bytes(path("acts_e") + "/" + f));
      }
      CHECK(read_npy(path("acts_i") + "/02_c2.npy").shape == "(48, 4, 3, 3)");
      auto c = run("run --model " + e + " --input " + path("int_imgs.npy") + " --check-exact");
      INFO(c.output);
      CHECK(c.code == 0);
      CHECK_THAT(c.output, Catch::Contains("logits differing: 0 of 144; predictions differing: 0 of 48"));
      CHECK(no_leftovers());
    }
  }

  SECTION("a float bundle, an 8-bit grid as int4, a malformed engine, a foreign output directory") {
    const std::string e = path("int_bad_e");
    std::system(("rm -rf " + e).c_str());
    auto r = run("export --model " + bundle + " -o " + e);
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK_THAT(r.output, Catch::Contains("layer c1") && Catch::Contains("input_encodings"));
    CHECK_FALSE(exists(e));
    const std::string q = path("int_q8b");
    std::system(("rm -rf " + q).c_str());
    REQUIRE(run("ptq --model " + bundle + " --calib " + path("int_calib.npy") + " -o " + q + " -q").code == 0);
    r = run("export --model " + q + " -o " + e + " --weight-format int4");
    CHECK(r.code == 1);
    CHECK_THAT(r.output, Catch::Contains("int4"));
    CHECK_FALSE(exists(e));
    r = run("export --model " + q + " -o " + e + " --requantization rounded");
    CHECK(r.code == 2);
    // an existing directory that is not an engine directory is left alone
    const std::string foreign = path("int_foreign");
    ::mkdir(foreign.c_str(), 0755);
    std::ofstream(foreign + "/keep.txt") << "mine";
    r = run("export --model " + q + " -o " + foreign);
    CHECK(r.code == 1);
    CHECK(file_bytes(foreign + "/keep.txt") == "mine");
    // a malformed engine.json: exit 2 naming the file and the field
    REQUIRE(run("export --model " + q + " -o " + e).code == 0);
    std::string text = file_bytes(e + "/engine.json");
    const std::string key = "\"weight_format\": \"int8\"";
    const auto pos = text.find(key);
    REQUIRE(pos != std::string::npos);
    text.replace(pos, key.size(), "\"weight_format\": \"int3\"");
    std::ofstream(e + "/engine.json", std::ios::trunc) << text;
    r = run("run --model " + e + " --input " + path("int_imgs.npy") + " --logits-out " + path("int_never.npy"));
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains("engine.json") && Catch::Contains("weight_format"));
    CHECK_FALSE(exists(path("int_never.npy")));
    // wrong input shape: exit 1
    REQUIRE(run("export --model " + q + " -o " + e).code == 0);
    write_f32(path("int_wrong.npy"), {2, 1, 5, 5}, std::vector<float>(50, 0.5f));
    r = run("run --model " + e + " --input " + path("int_wrong.npy") + " --logits-out " + path("int_never.npy"));
    CHECK(r.code == 1);
    CHECK_FALSE(exists(path("int_never.npy")));
  }
}

// ---- lsq-grad and adaround options --------------------------------------------------------

namespace {

// Bytes of a file, or "" when it does not exist.
std::string file_text(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Mean over the rows of the summed squared output error of one layer, in double:
// (1/n) sum_{r, o} (f(W x_r + b) - f(Wq xhat_r + b))_o^2, f = ReLU or identity.
double layer_error_ref(const std::vector<float>& W, const std::vector<float>& Wq, const std::vector<float>& X,
                       const std::vector<float>& Xhat, const std::vector<float>& b, bool relu, std::size_t out,
                       std::size_t in) {
  const std::size_t n = X.size() / in;
  auto f = [&](double v) { return relu && v < 0.0 ? 0.0 : v; };
  double sum = 0.0;
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t o = 0; o < out; ++o) {
      double t = b.empty() ? 0.0 : b[o], y = t;
      for (std::size_t i = 0; i < in; ++i) {
        t += double(W[o * in + i]) * X[r * in + i];
        y += double(Wq[o * in + i]) * Xhat[r * in + i];
      }
      sum += (f(t) - f(y)) * (f(t) - f(y));
    }
  return sum / static_cast<double>(n);
}

// Round-to-nearest (half to even) of W [out, in] on a signed symmetric grid with per-row scales.
std::vector<std::int32_t> rtn_ref(const std::vector<float>& W, const std::vector<float>& s, std::size_t in, int qmin,
                                  int qmax) {
  std::vector<std::int32_t> q(W.size());
  for (std::size_t k = 0; k < W.size(); ++k) {
    const float v = std::nearbyint(W[k] * (1.0f / s[k / in]));
    q[k] = static_cast<std::int32_t>(std::min(std::max(v, float(qmin)), float(qmax)));
  }
  return q;
}

}  // namespace

TEST_CASE("lsq-grad options: --narrow, --elements-per-scale, --convention pytorch; a failed run keeps old outputs") {
  // u = x / s = -3.6, -2.3, 0.65, 1.45, 3.2, 8.1 with s = 0.2 (no ties).
  const std::vector<float> x = {-0.72f, -0.46f, 0.13f, 0.29f, 0.64f, 1.62f};
  const std::vector<float> dy = {0.5f, -1.0f, 2.0f, 0.25f, -0.5f, 1.0f};
  write_f32(path("ox.npy"), {6}, x);
  write_f32(path("ody.npy"), {6}, dy);
  const float s = 0.2f;
  const std::string base = "lsq-grad --x " + path("ox.npy") + " --dy " + path("ody.npy") + " --scale 0.2 --bits 3";
  // LSQ (paper) backward written from the formula for the grid [qmin, qmax].
  auto expect = [&](int qmin, int qmax, std::vector<float>& dx, double& ds) {
    dx.assign(x.size(), 0.0f);
    ds = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double u = static_cast<double>(x[i] * (1.0f / s));
      if (u >= qmin && u <= qmax) dx[i] = dy[i];
      ds += dy[i] * (u < qmin ? qmin : u > qmax ? qmax : std::nearbyint(u) - u);
    }
  };

  SECTION("--narrow drops the lowest grid value: u = -3.6 leaves the 3-bit grid [-3, 3]") {
    for (const bool narrow : {false, true}) {
      const auto r = run(base + (narrow ? " --narrow" : "") + " --no-gradient-scaling --dx " + path("odx.npy") +
                         " -o " + path("olsq.json"));
      INFO(r.output);
      REQUIRE(r.code == 0);
      std::vector<float> dx;
      double ds = 0.0;
      expect(narrow ? -3 : -4, 3, dx, ds);
      CHECK(read_npy(path("odx.npy")).as<float>() == dx);
      CHECK(read_json(path("olsq.json"))["dscale"][0].get<double>() == Approx(ds).epsilon(1e-5));
    }
    std::vector<float> wide, narrow;
    double ds = 0.0;
    expect(-4, 3, wide, ds);
    expect(-3, 3, narrow, ds);
    CHECK(wide != narrow);  // the data tells the two grids apart
  }

  SECTION("--elements-per-scale N sets the gradient scale g = 1 / sqrt(N qmax)") {
    std::vector<float> dx;
    double ds = 0.0;
    expect(-4, 3, dx, ds);
    for (const std::size_t n : {std::size_t(0), std::size_t(2), std::size_t(50)}) {
      const auto r = run(base + (n ? " --elements-per-scale " + std::to_string(n) : std::string()) + " --dx " +
                         path("odx.npy") + " -o " + path("olsq.json"));
      INFO(n << "\n" << r.output);
      REQUIRE(r.code == 0);
      const double g = 1.0 / std::sqrt(double(n ? n : x.size()) * 3.0);  // default N: all 6 elements
      const auto j = read_json(path("olsq.json"));
      CHECK(j["gradient_scale"].get<double>() == Approx(g).epsilon(1e-6));
      CHECK(j["dscale"][0].get<double>() == Approx(ds * g).epsilon(1e-5));
    }
  }

  SECTION("--convention pytorch: an integer zero point added before rounding, dz = -dy s outside") {
    const int z = 2, qmin = -4, qmax = 3;
    const auto r = run(base + " --zero-point 2 --convention pytorch --no-gradient-scaling --dx " + path("odx.npy") +
                       " --dzero-point-out " + path("odz.npy") + " -o " + path("olsq.json"));
    INFO(r.output);
    REQUIRE(r.code == 0);
    std::vector<float> dx(x.size(), 0.0f);
    double dz = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double xq = std::nearbyint(static_cast<double>(x[i] * (1.0f / s)) + z);  // -7.3 -0.3 2.65 3.45 5.2 10.1
      if (xq >= qmin && xq <= qmax) dx[i] = dy[i];
      else dz += -double(dy[i]) * s;
    }
    CHECK(read_npy(path("odx.npy")).as<float>() == dx);
    CHECK(read_npy(path("odz.npy")).as<float>()[0] == Approx(dz).epsilon(1e-6));
    const auto j = read_json(path("olsq.json"));
    CHECK(j["convention"] == "pytorch");
    CHECK(j["dzero_point"][0].get<double>() == Approx(dz).epsilon(1e-6));
    // The paper convention reads the same number as an offset in x's units: another mask.
    const auto p = run(base + " --zero-point 2 --no-gradient-scaling --dx " + path("odx_paper.npy"));
    REQUIRE(p.code == 0);
    CHECK(read_npy(path("odx_paper.npy")).as<float>() != dx);
  }

  SECTION("a run that fails after its work leaves the earlier outputs as they were") {
    REQUIRE(run(base + " --dx " + path("okeep.npy") + " -o " + path("okeep.json")).code == 0);
    const std::string dx_before = file_text(path("okeep.npy")), json_before = file_text(path("okeep.json"));
    // --dzero-point-out without --zero-point is refused only once dx has been computed.
    const auto r = run(base + " --narrow --dx " + path("okeep.npy") + " -o " + path("okeep.json") +
                       " --dzero-point-out " + path("okeep_dz.npy"));
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains("--dzero-point-out needs --zero-point"));
    CHECK(file_text(path("okeep.npy")) == dx_before);
    CHECK(file_text(path("okeep.json")) == json_before);
    CHECK_FALSE(exists(path("okeep_dz.npy")));
    CHECK(no_leftovers());
  }
}

TEST_CASE("adaround options: --bias, --relu, --quantized-inputs, --lr, --lambda, --batch") {
  const std::size_t out = 6, in = 12, n = 128;
  std::mt19937 g(2024);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> w(out * in), xs(n * in), xq(n * in), b(out);
  for (auto& v : w) v = nd(g);
  for (auto& v : xs) v = nd(g);
  for (std::size_t k = 0; k < xq.size(); ++k) xq[k] = xs[k] + 0.2f * nd(g);  // the inputs after earlier quantizers
  for (auto& v : b) v = 2.0f * nd(g);
  write_f32(path("pw.npy"), {out, in}, w);
  write_f32(path("px.npy"), {n, in}, xs);
  write_f32(path("pxq.npy"), {n, in}, xq);
  write_f32(path("pb.npy"), {out}, b);
  const std::string dir_a = path("pa"), common = "adaround -w " + path("pw.npy") + " -x " + path("px.npy") +
                                                 " --bits 3 --seed 1 -q ";
  ::mkdir(dir_a.c_str(), 0755);
  auto run_in = [&](const std::string& args) {
    const auto r = run(common + args + " -o " + dir_a);
    INFO(args << "\n" << r.output);
    REQUIRE(r.code == 0);
    return read_json(dir_a + "/report.json");
  };

  SECTION("--bias, --relu and --quantized-inputs enter the reported errors as documented") {
    for (const bool with_options : {false, true}) {
      const auto j = run_in("--iterations 30" + std::string(with_options ? " --bias " + path("pb.npy") + " --relu" +
                                                                               " --quantized-inputs " + path("pxq.npy")
                                                                         : ""));
      const auto s = read_npy(dir_a + "/scales.npy").as<float>();
      const auto wq = read_npy(dir_a + "/weights.npy").as<float>();
      std::vector<float> w_rtn(w.size());
      const auto q = rtn_ref(w, s, in, -4, 3);
      for (std::size_t k = 0; k < w.size(); ++k) w_rtn[k] = static_cast<float>(q[k]) * s[k / in];
      const std::vector<float>& xhat = with_options ? xq : xs;
      const std::vector<float> bias = with_options ? b : std::vector<float>{};
      const double rtn = layer_error_ref(w, w_rtn, xs, xhat, bias, with_options, out, in);
      CHECK(j["activation"] == (with_options ? "relu" : "identity"));
      CHECK(j["reconstruction_error"]["round_to_nearest"].get<double>() == Approx(rtn).epsilon(1e-4));
      CHECK(j["reconstruction_error"]["adaround"].get<double>() ==
            Approx(layer_error_ref(w, wq, xs, xhat, bias, with_options, out, in)).epsilon(1e-4));
      if (with_options) {  // each of the three options alone changes the expected error by far more than 1e-4
        CHECK(std::fabs(layer_error_ref(w, w_rtn, xs, xhat, {}, true, out, in) / rtn - 1.0) > 0.01);
        CHECK(std::fabs(layer_error_ref(w, w_rtn, xs, xhat, b, false, out, in) / rtn - 1.0) > 0.01);
        CHECK(std::fabs(layer_error_ref(w, w_rtn, xs, xs, b, true, out, in) / rtn - 1.0) > 0.01);
      }
    }
  }

  SECTION("--lr: a vanishing learning rate leaves round-to-nearest, a large one changes roundings") {
    auto j = run_in("--iterations 50 --lr 1e-12");
    const auto s = read_npy(dir_a + "/scales.npy").as<float>();
    CHECK(read_npy(dir_a + "/integer_weights.npy").as<std::int32_t>() == rtn_ref(w, s, in, -4, 3));
    CHECK(j["flipped_fraction"].get<double>() == 0.0);
    j = run_in("--iterations 50 --lr 0.05");
    CHECK(read_npy(dir_a + "/integer_weights.npy").as<std::int32_t>() != rtn_ref(w, s, in, -4, 3));
    CHECK(j["flipped_fraction"].get<double>() > 0.0);
  }

  SECTION("--lambda: the regularizer drives h(V) to 0 or 1; without it more of h stays in between") {
    const double free = run_in("--iterations 200 --lr 0.05 --lambda 0")["non_binary_fraction"].get<double>();
    const double pushed = run_in("--iterations 200 --lr 0.05 --lambda 1")["non_binary_fraction"].get<double>();
    INFO(free << " " << pushed);
    CHECK(free > 0.1);
    CHECK(pushed < free / 2);
  }

  SECTION("--batch: rows per step; the same batch reproduces, another changes, more rows than X is refused") {
    run_in("--iterations 100 --lr 0.05 --batch 8");
    const std::string first = file_text(dir_a + "/weights.npy"), report = file_text(dir_a + "/report.json");
    run_in("--iterations 100 --lr 0.05 --batch 8");
    CHECK(file_text(dir_a + "/weights.npy") == first);
    CHECK(file_text(dir_a + "/report.json") == report);
    run_in("--iterations 100 --lr 0.05 --batch 64");
    const std::string other = file_text(dir_a + "/report.json");
    CHECK(other != report);
    const auto r = run(common + "--iterations 100 --lr 0.05 --batch " + std::to_string(n + 1) + " -o " + dir_a);
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains("batch_size"));
    CHECK(file_text(dir_a + "/report.json") == other);  // the failed run left the last outputs alone
    const int st = std::system(("ls " + dir_a + " | grep -q '\\.tmp-'").c_str());
    CHECK((WIFEXITED(st) && WEXITSTATUS(st) != 0));  // and no temporary files
  }
}

}  // namespace cli_tests
