// fuzz_cli_params — the `quant` tool's parsing of quantizer options (examples/tools/
// cli_common.hpp): CLI11 with add_grid_options / add_param_options, then resolve_params,
// which turns --scale / --zero-point (numbers or .npy files), --axis, --group, --observer,
// --scheme and the grid into qparams. This is what `quant fake-quant` and `quant quantize`
// run before touching the data, in process.
//
// Input: line 1 configures the data (bytes read by FuzzedDataProvider): the input tensor x
// (rank 0..3, sizes 1..4, ordinary values, zeros, NaN, huge or subnormal ones) and two
// optional .npy files written to a private directory (float32 or float64, 0..6 values,
// arbitrary, e.g. negative or non-integer zero points). Every further line is one
// command-line token; "@s" and "@z" stand for the two files' paths, "@none" for a missing one.
//
// Contract (what main() turns into exit 2 or 1 with a message): CLI::ParseError from
// parsing; usage_error, data_error or a quant::error from resolve_params; nothing else
// (no std::out_of_range, no bad_alloc, no UB in number conversion). Accepted parameters
// are the options' numbers: the grid is --bits / --unsigned / --narrow, a numeric --scale
// is float(strtod(text)) in every entry, a numeric --zero-point its integer value, and
// fake-quantizing x with them either works or throws a quant::error.
#include <cstdlib>
#include <string>
#include <vector>

#include <quant/uniform.hpp>

#include "../examples/tools/cli_common.hpp"
#include "fuzz_common.hpp"

namespace {

std::string npy_bytes(FuzzedDataProvider& in) {
  const bool f8 = in.ConsumeBool();
  const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 6);
  std::string header = "{'descr': '" + std::string(f8 ? "<f8" : "<f4") + "', 'fortran_order': False, 'shape': (" +
                       std::to_string(n) + ",), }";
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::string s = std::string("\x93NUMPY\x01\x00", 8);
  s += static_cast<char>(header.size() & 0xff);
  s += static_cast<char>(header.size() >> 8);
  s += header;
  for (std::size_t i = 0; i < n; ++i) {
    double v;
    switch (in.ConsumeIntegralInRange<int>(0, 4)) {
      case 0: v = in.ConsumeIntegralInRange<int>(-300, 300); break;
      case 1: v = in.ConsumeFloatingPointInRange<double>(-2.0, 2.0); break;
      case 2: v = static_cast<double>(fuzz::pick_scale(in)); break;
      default: {
        const std::uint64_t b = in.ConsumeIntegral<std::uint64_t>();
        std::memcpy(&v, &b, 8);
      }
    }
    if (f8) {
      s.append(reinterpret_cast<const char*>(&v), 8);
    } else {
      const float f = static_cast<float>(v);  // out-of-range doubles: inf is fine in a file
      s.append(reinterpret_cast<const char*>(&f), 4);
    }
  }
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string base = fuzz::scratch_path("cli");
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> lines;
  for (std::size_t b = 0;;) {
    const std::size_t e = text.find('\n', b);
    lines.push_back(text.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos || lines.size() > 24) break;
    b = e + 1;
  }
  FuzzedDataProvider in(reinterpret_cast<const std::uint8_t*>(lines[0].data()), lines[0].size());
  std::vector<std::size_t> shape(in.ConsumeIntegralInRange<std::size_t>(0, 3));
  for (auto& d : shape) d = in.ConsumeIntegralInRange<std::size_t>(1, 4);
  xt::xarray<float> x = xt::xarray<float>::from_shape(shape);
  const int style = in.ConsumeIntegralInRange<int>(0, 3);
  for (auto& v : x) {
    switch (style) {
      case 0: v = in.ConsumeFloatingPointInRange<float>(-3.0f, 3.0f); break;
      case 1: v = 0.0f; break;
      case 2: v = fuzz::pick_value(in, 0.1f, 0.0f, -128.0f, 127.0f); break;
      default: v = fuzz::float_of(in.ConsumeIntegral<std::uint32_t>());
    }
  }
  const std::string s_path = base + "-s.npy", z_path = base + "-z.npy";
  const std::string s_bytes = npy_bytes(in), z_bytes = npy_bytes(in);
  fuzz::write_file(s_path, reinterpret_cast<const std::uint8_t*>(s_bytes.data()), s_bytes.size());
  fuzz::write_file(z_path, reinterpret_cast<const std::uint8_t*>(z_bytes.data()), z_bytes.size());

  std::vector<std::string> args;  // CLI11 takes them in reverse order
  for (std::size_t i = lines.size(); i-- > 1;) {
    std::string t = lines[i];
    if (t == "@s") t = s_path;
    else if (t == "@z") t = z_path;
    else if (t == "@none") t = base + "-missing.npy";
    args.push_back(t);
  }
  std::string ctx;
  for (std::size_t i = args.size(); i-- > 0;) ctx += " " + args[i];
  fuzz::context() = "x " + std::to_string(x.size()) + " values, args:" + ctx;

  CLI::App app("fuzz");
  app.allow_extras(false);
  quant_cli::grid_options g;
  quant_cli::param_source ps;
  quant_cli::add_grid_options(&app, g);
  quant_cli::add_param_options(&app, ps);
  try {
    app.parse(args);
  } catch (const CLI::Error&) {
    return 0;
  }
  quant::qparams p;
  try {
    p = quant_cli::resolve_params(x, g, ps);
  } catch (const quant_cli::usage_error&) {
    return 0;
  } catch (const quant_cli::data_error&) {
    return 0;
  } catch (const quant::error&) {
    return 0;
  } catch (const std::exception& e) {
    fuzz::fail(std::string("resolve_params threw an undocumented exception: ") + e.what());
  }
  if (ps.params_json.empty()) fuzz::require(p.grid() == g.grid(), "the qparams' grid is not --bits/--unsigned/--narrow");
  double v = 0.0;
  if (!ps.scale.empty() && quant_cli::parse_number(ps.scale, v))
    for (float s : p.scales()) fuzz::require(fuzz::same_float(s, static_cast<float>(v)), "a scale is not float(--scale)");
  if (!ps.zero_point.empty() && quant_cli::parse_number(ps.zero_point, v))
    for (auto z : p.zero_points()) fuzz::require(static_cast<double>(z) == v, "a zero point is not --zero-point");
  try {
    xt::xarray<float> y = quant::eager::fake_quantize(x, p);
    (void)y;
  } catch (const quant::error&) {
  } catch (const std::exception& e) {
    fuzz::fail(std::string("fake_quantize with resolved parameters threw: ") + e.what());
  }
  return 0;
}
