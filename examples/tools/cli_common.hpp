// examples/tools/cli_common.hpp — what every subcommand of the `quant` tool shares: the two
// error kinds (usage -> exit 2, data -> exit 1), atomic output sets, .npy loading (arrays,
// matrices, a layer's W and X), the grid, observer and parameter options, encodings JSON, and
// the `command` interface.
//
// A subcommand is a class deriving from quant_cli::command: add_to() registers it and its
// options on the CLI11 app (beside the code that uses them), run() executes it after parsing
// and returns the exit status. main() in quant_cli.cpp lists the commands.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <quant/observers.hpp>
#include <quant/qparams.hpp>
#include <quant/rounding.hpp>
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

#include "../common/encodings_json.hpp"
#include "../common/npy_io.hpp"

namespace quant_cli {

using json = nlohmann::ordered_json;

// A subcommand of the tool: registers itself, then runs if it was the one parsed.
class command {
 public:
  virtual ~command() = default;
  // Adds the subcommand and its options to `app`; returns the subcommand.
  virtual CLI::App* add_to(CLI::App& app) = 0;
  // Runs it; returns the exit status. Throws usage_error (exit 2), quant::invalid_argument
  // (exit 2), or data_error / other exceptions (exit 1); main() maps them.
  virtual int run() = 0;
};

// ---- errors and outputs ------------------------------------------------------------------

struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct data_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Collects every output of a command and publishes them together: each file goes to a
// temporary name first; commit() renames them all. The destructor removes leftovers.
class output_set {
 public:
  ~output_set() {
    for (const auto& f : files_) std::remove(f.tmp.c_str());
  }
  template <class E>
  void npy(const std::string& path, const xt::xexpression<E>& e) {
    add(path, xt::dump_npy(e));
  }
  void text(const std::string& path, const std::string& s) { add(path, s); }
  void commit() {
    for (const auto& f : files_)
      if (std::rename(f.tmp.c_str(), f.path.c_str()) != 0)
        throw data_error("cannot rename " + f.tmp + " to " + f.path);
    files_.clear();
  }

 private:
  struct file {
    std::string path, tmp;
  };
  void add(const std::string& path, const std::string& bytes) {
    for (const auto& f : files_)
      if (f.path == path) throw usage_error("two outputs are named " + path);
    const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
    files_.push_back({path, tmp});
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw data_error("cannot create " + tmp + " (does the directory exist?)");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) throw data_error("cannot write " + tmp + " (disk full?)");
  }
  std::vector<file> files_;
};

inline xt::xarray<float> load_float(const std::string& path) {
  try {
    return examples::load_npy_float(path);
  } catch (const examples::npy_error& e) {
    throw data_error(e.what());
  }
}

inline std::string json_text(const json& j) { return j.dump(2) + "\n"; }

inline std::vector<std::size_t> shape_of(const xt::xarray<float>& x) { return {x.shape().begin(), x.shape().end()}; }

// A 2-D array [rows, columns] from a .npy file; data_error naming the file otherwise.
inline xt::xtensor<float, 2> load_matrix(const std::string& path) {
  const xt::xarray<float> a = load_float(path);
  if (a.dimension() != 2)
    throw data_error(path + " must be a 2-D array, got shape " + examples::shape_text(shape_of(a)));
  return a;
}

// A layer's weights W [out, in] and calibration inputs X [samples, in] from their files.
struct layer_data {
  xt::xtensor<float, 2> W, X;
};
inline layer_data load_layer_data(const std::string& weights, const std::string& inputs) {
  layer_data d{load_matrix(weights), load_matrix(inputs)};
  if (d.X.shape()[1] != d.W.shape()[1])
    throw data_error("inputs have " + std::to_string(d.X.shape()[1]) + " columns but the weights have " +
                     std::to_string(d.W.shape()[1]) + " inputs (W is [out, in], X is [samples, in])");
  return d;
}

// ---- shared quantizer options -------------------------------------------------------------

struct grid_options {
  int bits = 8;
  bool is_unsigned = false;
  bool narrow = false;
  std::string scheme = "symmetric";
  quant::grid grid() const { return {bits, !is_unsigned, narrow}; }
  quant::scheme sch() const { return scheme == "symmetric" ? quant::scheme::symmetric : quant::scheme::asymmetric; }
};

// Which grid flags a subcommand takes: lsq-grad has no --scheme (its offset is given).
enum class grid_flags { with_scheme, without_scheme };

// The grid flags --bits/-b, --unsigned, --narrow (and --scheme), for every subcommand.
inline void add_grid_options(CLI::App* c, grid_options& g, grid_flags which = grid_flags::with_scheme) {
  c->add_option("--bits,-b", g.bits, "bit width of the integer grid")->check(CLI::Range(2, 16))->capture_default_str();
  c->add_flag("--unsigned", g.is_unsigned, "unsigned grid [0, 2^b - 1] (default: signed)");
  c->add_flag("--narrow", g.narrow, "narrow range: drop the lowest grid value");
  if (which == grid_flags::with_scheme)
    c->add_option("--scheme", g.scheme, "symmetric (zero point 0) or asymmetric")
        ->check(CLI::IsMember({"symmetric", "asymmetric"}))
        ->capture_default_str();
}

// An observer choice (minmax or mse) named `name`; `observer` holds the default (empty: none).
inline void add_observer_option(CLI::App* c, std::string& observer, const std::string& help,
                                const std::string& name = "--observer") {
  c->add_option(name, observer, help)->check(CLI::IsMember({"minmax", "mse"}))->capture_default_str();
}

// The qparams the named observer (minmax or mse) gives for x: per tensor, or per channel along `axis`.
template <class E>
quant::qparams observe(const E& x, const grid_options& g, const std::string& observer,
                       std::optional<std::ptrdiff_t> axis) {
  return observer == "mse" ? quant::calibrate_mse(x, g.grid(), g.sch(), axis)
                           : quant::calibrate_minmax(x, g.grid(), g.sch(), axis);
}

struct param_source {
  std::optional<std::ptrdiff_t> axis;
  std::size_t group = 0;
  std::string scale, zero_point;  // a number or a .npy file
  std::string observer;           // minmax | mse
  std::string params_json;        // from `quant calibrate` / `quant quantize --encodings`
  std::string rounding = "half_to_even";
  std::uint64_t seed = 0;
};

inline void add_param_options(CLI::App* c, param_source& p) {
  c->add_option("--axis", p.axis, "per-channel (or per-group) axis; negative counts from the end");
  c->add_option("--group", p.group, "per-group: blocks of this many consecutive elements along --axis")
      ->check(CLI::PositiveNumber);
  c->add_option("--scale", p.scale, "explicit scale: a number, or a .npy file with one scale per channel/group");
  c->add_option("--zero-point", p.zero_point, "explicit zero point(s): a number or a .npy file (default 0)");
  add_observer_option(c, p.observer, "derive the parameters from the data: minmax or mse");
  c->add_option("--params", p.params_json, "parameters from a JSON file written by `quant calibrate`");
  c->add_option("--rounding", p.rounding,
                "half_to_even, half_away_from_zero, half_up, floor, ceil, toward_zero or stochastic")
      ->check(CLI::IsMember({"half_to_even", "half_away_from_zero", "half_up", "floor", "ceil", "toward_zero",
                             "stochastic"}))
      ->capture_default_str();
  c->add_option("--seed", p.seed, "seed of stochastic rounding")->capture_default_str();
}

// The options fake-quant and quantize share: the input and output arrays, the grid and the
// source of the parameters.
struct array_quantizer_options {
  std::string input, output;
  grid_options grid;
  param_source params;

  void add_to(CLI::App* c, const std::string& output_help) {
    c->add_option("-i,--input", input, "input .npy (float32 or float64)")->required();
    c->add_option("-o,--output", output, output_help)->required();
    add_grid_options(c, grid);
    add_param_options(c, params);
  }
};

inline bool parse_number(const std::string& s, double& v) {
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return !s.empty() && end && *end == '\0';
}

inline std::vector<float> numbers_or_npy(const std::string& arg, const char* what) {
  double v = 0.0;
  if (parse_number(arg, v)) return {static_cast<float>(v)};
  struct stat st {};
  if (::stat(arg.c_str(), &st) != 0)
    throw usage_error(std::string(what) + " '" + arg + "' is neither a number nor an existing .npy file");
  const xt::xarray<float> a = load_float(arg);
  return std::vector<float>(a.begin(), a.end());
}

inline std::vector<std::int32_t> zero_points_from(const std::vector<float>& z, const char* what) {
  std::vector<std::int32_t> out;
  for (float v : z) {
    if (!(std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 2147483648.0f))
      throw usage_error(std::string(what) + " must be integers (got " + std::to_string(v) + ")");
    out.push_back(static_cast<std::int32_t>(v));
  }
  return out;
}

inline std::string granularity_name(quant::granularity g) { return examples::granularity_name(g); }

inline json qparams_json(const quant::qparams& p, quant::scheme s, const std::vector<std::size_t>& shape,
                         const std::string& rounding) {
  return examples::encodings_json(p, s, shape, rounding);
}

inline quant::qparams qparams_from_json(const std::string& path) {
  try {
    return examples::encodings_from_file(path);
  } catch (const examples::encodings_error& e) {
    throw data_error(e.what());
  }
}

// Per-group observer: only along the last axis, where the groups of a row-major tensor are
// the rows of an [n / g, g] view.
inline quant::qparams observe_groups(const xt::xarray<float>& x, const grid_options& go, const param_source& ps,
                              std::size_t axis) {
  if (axis + 1 != x.dimension())
    throw usage_error("--observer with --group needs the last axis (--axis -1)");
  if (x.shape()[axis] % ps.group != 0)
    throw data_error("--group " + std::to_string(ps.group) + " does not divide axis " + std::to_string(axis) +
                     " of size " + std::to_string(x.shape()[axis]));
  const std::size_t rows = x.size() / ps.group;
  auto view = xt::adapt(x.data(), x.size(), xt::no_ownership(), std::vector<std::size_t>{rows, ps.group});
  xt::xtensor<float, 2> blocks = view;
  const quant::qparams per_row = observe(blocks, go, ps.observer, 0);
  return quant::qparams::per_group(go.grid(), per_row.scales(), per_row.zero_points(), *ps.axis, ps.group);
}

// The qparams of fake-quant / quantize from exactly one source.
inline quant::qparams resolve_params(const xt::xarray<float>& x, const grid_options& go, const param_source& ps) {
  const int sources = !ps.scale.empty() + !ps.observer.empty() + !ps.params_json.empty();
  if (sources != 1) throw usage_error("give exactly one of --scale, --observer, --params");
  if (!ps.zero_point.empty() && ps.scale.empty()) throw usage_error("--zero-point goes with --scale");
  if (ps.group && !ps.axis) throw usage_error("--group needs --axis (e.g. --axis -1)");
  if (!ps.params_json.empty()) return qparams_from_json(ps.params_json);
  std::size_t axis = 0;
  if (ps.axis) {
    if (x.dimension() == 0) throw data_error("--axis given but the input is a scalar");
    const auto nd = static_cast<std::ptrdiff_t>(x.dimension());
    if (*ps.axis < -nd || *ps.axis >= nd)
      throw usage_error("--axis " + std::to_string(*ps.axis) + " is out of range for an array of " +
                        std::to_string(nd) + " dimensions");
    axis = static_cast<std::size_t>(*ps.axis < 0 ? *ps.axis + nd : *ps.axis);
  }
  if (!ps.observer.empty()) {
    if (ps.group) return observe_groups(x, go, ps, axis);
    return observe(x, go, ps.observer, ps.axis);
  }
  const std::vector<float> s = numbers_or_npy(ps.scale, "--scale");
  std::vector<std::int32_t> z(s.size(), 0);
  if (!ps.zero_point.empty()) {
    z = zero_points_from(numbers_or_npy(ps.zero_point, "--zero-point"), "--zero-point");
    if (z.size() == 1 && s.size() > 1) z.assign(s.size(), z[0]);
  }
  if (go.sch() == quant::scheme::symmetric)
    for (auto v : z)
      if (v != 0) throw usage_error("--scheme symmetric needs zero points of 0 (use --scheme asymmetric)");
  if (ps.group) return quant::qparams::per_group(go.grid(), s, z, *ps.axis, ps.group);
  if (ps.axis) return quant::qparams::per_channel(go.grid(), s, z, *ps.axis);
  if (s.size() != 1 || z.size() != 1) throw usage_error("per-tensor quantization takes one scale and one zero point");
  return quant::qparams::per_tensor(go.grid(), s[0], z[0]);
}

// Runs f(Round{...}) with the rounding policy named on the command line.
template <class F>
auto with_rounding(const param_source& ps, F&& f) {
  if (ps.rounding == "half_away_from_zero") return f(quant::round_half_away_from_zero{});
  if (ps.rounding == "half_up") return f(quant::round_half_up{});
  if (ps.rounding == "floor") return f(quant::round_floor{});
  if (ps.rounding == "ceil") return f(quant::round_ceil{});
  if (ps.rounding == "toward_zero") return f(quant::round_toward_zero{});
  if (ps.rounding == "stochastic") return f(quant::round_stochastic{ps.seed});
  return f(quant::round_half_to_even{});
}

inline xt::xarray<float> to_array(const std::vector<float>& v) {
  return xt::adapt(v, std::vector<std::size_t>{v.size()});
}
inline xt::xarray<std::int32_t> to_array(const std::vector<std::int32_t>& v) {
  return xt::adapt(v, std::vector<std::size_t>{v.size()});
}

}  // namespace quant_cli
