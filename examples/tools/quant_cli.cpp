// quant — command-line quantization of NumPy .npy files with the quant library.
//
//   quant fake-quant  -i x.npy -o y.npy  --bits 4 [--axis 0 | --group 32] (--scale S | --observer mse | --params p.json)
//   quant quantize    -i x.npy -o q.npy  ... [--scales-out s.npy] [--zero-points-out z.npy] [--encodings e.json]
//   quant calibrate   -i a.npy [-i b.npy ...] --observer mse --bits 8 [--axis 1] -o params.json
//   quant lsq-grad    --x x.npy --dy dy.npy --scale S [--zero-point B] --dx dx.npy [-o grads.json]
//   quant adaround    --weights W.npy --inputs X.npy [--quantized-inputs Xq.npy] --bits 4 --out-dir DIR
//   quant kurtosis    -i a.npy [-i b.npy ...] [--unbiased] [--target 1.8] [--format table|json] [-o k.json]
//   quant pq          --weights W.npy --d 8 --k 256 [--layout shared|per-subspace] [--int8-centroids] --out-dir DIR
//   quant gptq        -w W.npy -x X.npy --bits 4 [--group-size 32] [--act-order] [--damp 0.01] -o DIR
//   quant eval        --model DIR --input X.npy [--labels y.npy] [--logits-out L.npy]
//   quant ptq         --model DIR --calib X.npy [--eval X.npy --labels y.npy] -o OUT_DIR [--cle ...]
//   quant export      --model QUANTIZED_DIR -o ENGINE_DIR [--requantization fixed-point|float-scale] [--weight-format int8|int4]
//   quant run         --model ENGINE_DIR --input X.npy [--labels y.npy] [--logits-out L.npy] [--simulate exact]
//
// Exit status: 0 success, 1 bad data (unreadable/malformed .npy, NaN where rejected,
// shapes that do not fit), 2 usage errors (unknown options, missing or conflicting
// options, values out of range). Outputs are written under temporary names and renamed
// only once every output of the command is complete, so a failure leaves no partial file.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <quant/adaround.hpp>
#include <quant/kurtosis.hpp>
#include <quant/lsq.hpp>
#include <quant/observers.hpp>
#include <quant/pq.hpp>
#include <quant/qparams.hpp>
#include <quant/uniform.hpp>
#include <xtensor/xadapt.hpp>

#include "../common/openmp_wait_policy.hpp"
#include "cli_common.hpp"
#include "cmd_gptq.hpp"
#include "cmd_eval.hpp"
#include "cmd_ptq.hpp"
#include "cmd_export.hpp"
#include "cmd_run.hpp"

namespace {

using namespace quant_cli;

// ---- subcommands -----------------------------------------------------------------------------

struct fq_cmd {
  std::string input, output;
  grid_options grid;
  param_source params;
  std::string encodings;
};

int run_fake_quant(const fq_cmd& c) {
  const xt::xarray<float> x = load_float(c.input);
  const quant::qparams p = resolve_params(x, c.grid, c.params);
  output_set out;
  with_rounding(c.params, [&](auto round) {
    xt::xarray<float> y;
    quant::eager::fake_quantize<decltype(round)>(x, p, y, round);
    out.npy(c.output, y);
    return 0;
  });
  if (!c.encodings.empty()) out.text(c.encodings, json_text(qparams_json(p, c.grid.sch(), shape_of(x), c.params.rounding)));
  out.commit();
  return 0;
}

struct quantize_cmd : fq_cmd {
  std::string dtype = "auto";
  std::string scales_out, zero_points_out;
};

std::string auto_dtype(const quant::grid& g) {
  if (g.qmin() >= -128 && g.qmax() <= 127) return "int8";
  if (g.qmin() >= 0 && g.qmax() <= 255) return "uint8";
  if (g.qmin() >= -32768 && g.qmax() <= 32767) return "int16";
  return "int32";
}

int run_quantize(const quantize_cmd& c) {
  const xt::xarray<float> x = load_float(c.input);
  const quant::qparams p = resolve_params(x, c.grid, c.params);
  const std::string dtype = c.dtype == "auto" ? auto_dtype(p.grid()) : c.dtype;
  output_set out;
  with_rounding(c.params, [&](auto round) {
    using R = decltype(round);
    if (dtype == "int8") out.npy(c.output, quant::eager::quantize<std::int8_t, R>(x, p, round));
    else if (dtype == "uint8") out.npy(c.output, quant::eager::quantize<std::uint8_t, R>(x, p, round));
    else if (dtype == "int16") out.npy(c.output, quant::eager::quantize<std::int16_t, R>(x, p, round));
    else if (dtype == "int32") out.npy(c.output, quant::eager::quantize<std::int32_t, R>(x, p, round));
    else {  // float32 holding the integers (exact up to 2^24)
      const xt::xarray<std::int32_t> q = quant::eager::quantize<std::int32_t, R>(x, p, round);
      out.npy(c.output, xt::xarray<float>(xt::cast<float>(q)));
    }
    return 0;
  });
  if (!c.scales_out.empty()) out.npy(c.scales_out, to_array(p.scales()));
  if (!c.zero_points_out.empty()) out.npy(c.zero_points_out, to_array(p.zero_points()));
  json j = qparams_json(p, c.grid.sch(), shape_of(x), c.params.rounding);
  j["dtype"] = dtype;
  if (!c.encodings.empty()) out.text(c.encodings, json_text(j));
  out.commit();
  return 0;
}

struct calibrate_cmd {
  std::vector<std::string> inputs;
  std::string output, scales_out, zero_points_out;
  grid_options grid;
  std::optional<std::ptrdiff_t> axis;
  std::string observer = "minmax";
};

int run_calibrate(const calibrate_cmd& c) {
  std::optional<quant::minmax_observer> mm;
  std::optional<quant::mse_observer> ms;
  if (c.observer == "mse") ms.emplace(c.axis);
  else mm.emplace(c.axis);
  std::vector<std::size_t> shape;
  for (const auto& path : c.inputs) {
    const xt::xarray<float> x = load_float(path);
    if (c.axis && x.dimension() == 0) throw data_error(path + ": --axis given but the array is a scalar");
    try {
      if (ms) ms->update(x);
      else mm->update(x);
    } catch (const quant::error& e) {
      throw data_error(path + ": " + e.what());
    }
    shape = shape_of(x);
  }
  const quant::qparams p = ms ? ms->compute(c.grid.grid(), c.grid.sch()) : mm->compute(c.grid.grid(), c.grid.sch());
  json j = qparams_json(p, c.grid.sch(), shape, "half_to_even");
  j.erase("shape");
  j.erase("rounding");
  j["observer"] = c.observer;
  j["inputs"] = c.inputs;
  output_set out;
  out.text(c.output, json_text(j));
  if (!c.scales_out.empty()) out.npy(c.scales_out, to_array(p.scales()));
  if (!c.zero_points_out.empty()) out.npy(c.zero_points_out, to_array(p.zero_points()));
  out.commit();
  return 0;
}

struct lsq_cmd {
  std::string x, dy, scale, zero_point, dx_out, json_out, dscale_out, dzero_point_out;
  grid_options grid;
  std::optional<std::ptrdiff_t> axis;
  bool no_gradient_scaling = false;
  std::size_t elements_per_scale = 0;
  std::string convention = "paper";
};

int run_lsq_grad(const lsq_cmd& c) {
  const xt::xarray<float> x = load_float(c.x), dy = load_float(c.dy);
  if (x.shape() != dy.shape())
    throw data_error("x " + quant::detail::shape_string(x.shape()) + " and dy " +
                     quant::detail::shape_string(dy.shape()) + " have different shapes");
  quant::lsq_params p;
  p.grid = c.grid.grid();
  p.scale = numbers_or_npy(c.scale, "--scale");
  if (!c.zero_point.empty()) {
    p.offset = numbers_or_npy(c.zero_point, "--zero-point");
    if (p.offset.size() == 1 && p.scale.size() > 1) p.offset.assign(p.scale.size(), p.offset[0]);
  }
  p.channel_axis = c.axis;
  p.gradient_scaling = !c.no_gradient_scaling;
  p.elements_per_scale = c.elements_per_scale;
  p.convention = c.convention == "pytorch" ? quant::lsq_convention::pytorch : quant::lsq_convention::paper;
  xt::xarray<float> dx;
  const quant::lsq_param_gradients g = quant::eager::lsq_backward(x, dy, p, dx);
  output_set out;
  out.npy(c.dx_out, dx);
  if (!c.dscale_out.empty()) out.npy(c.dscale_out, to_array(g.dscale));
  if (!c.dzero_point_out.empty()) {
    if (g.doffset.empty()) throw usage_error("--dzero-point-out needs --zero-point (LSQ+)");
    out.npy(c.dzero_point_out, to_array(g.doffset));
  }
  if (!c.json_out.empty()) {
    json j;
    j["convention"] = c.convention;
    j["bits"] = p.grid.bits;
    j["signed"] = p.grid.is_signed;
    j["gradient_scale"] = quant::lsq_gradient_scale(p, x.size());
    j["dscale"] = g.dscale;
    if (!g.doffset.empty()) j["dzero_point"] = g.doffset;
    out.text(c.json_out, json_text(j));
  }
  out.commit();
  return 0;
}

struct adaround_cmd {
  std::string weights, inputs, quantized_inputs, bias, out_dir;
  grid_options grid;
  std::string observer = "mse";
  std::size_t iterations = 2000, batch = 32;
  float lambda = 0.01f, learning_rate = 1e-3f;
  std::uint64_t seed = 0;
  bool relu = false, quiet = false;
};

xt::xtensor<float, 2> as_matrix(const xt::xarray<float>& a, const std::string& name) {
  if (a.dimension() != 2)
    throw data_error(name + " must be a 2-D array, got shape " + quant::detail::shape_string(a.shape()));
  return a;
}

int run_adaround(const adaround_cmd& c) {
  const xt::xtensor<float, 2> W = as_matrix(load_float(c.weights), c.weights);
  const xt::xtensor<float, 2> X = as_matrix(load_float(c.inputs), c.inputs);
  if (X.shape()[1] != W.shape()[1])
    throw data_error("inputs have " + std::to_string(X.shape()[1]) + " columns but the weights have " +
                     std::to_string(W.shape()[1]) + " inputs (W is [out, in], X is [samples, in])");
  std::optional<xt::xtensor<float, 2>> Xq;
  if (!c.quantized_inputs.empty()) {
    Xq = as_matrix(load_float(c.quantized_inputs), c.quantized_inputs);
    if (Xq->shape() != X.shape()) throw data_error("--quantized-inputs must have the shape of --inputs");
  }
  std::optional<xt::xtensor<float, 1>> b;
  if (!c.bias.empty()) {
    const xt::xarray<float> a = load_float(c.bias);
    if (a.dimension() != 1 || a.shape()[0] != W.shape()[0])
      throw data_error("--bias must be a 1-D array of " + std::to_string(W.shape()[0]) + " values");
    b = a;
  }
  const quant::qparams wq = c.observer == "mse" ? quant::calibrate_mse(W, c.grid.grid(), c.grid.sch(), 0)
                                                : quant::calibrate_minmax(W, c.grid.grid(), c.grid.sch(), 0);
  quant::adaround_options o;
  o.iterations = c.iterations;
  o.batch_size = c.batch;
  o.lambda = c.lambda;
  o.learning_rate = c.learning_rate;
  o.seed = c.seed;
  o.act = c.relu ? quant::activation::relu : quant::activation::identity;
  if (!c.quiet) o.progress = quant::adaround_progress_printer(std::cerr, "adaround", isatty(STDERR_FILENO) != 0);
  const quant::adaround_result r =
      quant::adaround_layer(W, X, wq, o, Xq ? &*Xq : nullptr, b ? &*b : nullptr);
  output_set out;
  const std::string d = c.out_dir + "/";
  out.npy(d + "integer_weights.npy", r.integer_weights);
  out.npy(d + "scales.npy", to_array(r.qparams.scales()));
  out.npy(d + "zero_points.npy", to_array(r.qparams.zero_points()));
  out.npy(d + "weights.npy", r.weights);
  json j = qparams_json(r.qparams, c.grid.sch(), {W.shape()[0], W.shape()[1]}, "adaround");
  j["observer"] = c.observer;
  j["iterations"] = r.report.iterations;
  j["seed"] = c.seed;
  j["activation"] = c.relu ? "relu" : "identity";
  j["reconstruction_error"] = {{"round_to_nearest", r.report.rtn_error},
                               {"adaround", r.report.adaround_error},
                               {"ratio", r.report.rtn_error > 0 ? r.report.adaround_error / r.report.rtn_error : 1.0}};
  j["flipped_fraction"] = r.report.flipped_fraction;
  j["non_binary_fraction"] = r.report.non_binary_fraction;
  out.text(d + "report.json", json_text(j));
  out.commit();
  std::printf("adaround: reconstruction error %.6g (round-to-nearest %.6g), %.2f%% of weights flipped\n",
              r.report.adaround_error, r.report.rtn_error, 100.0 * r.report.flipped_fraction);
  return 0;
}

// ---- kurtosis ---------------------------------------------------------------------------------

struct kurtosis_cmd {
  std::vector<std::string> inputs;
  std::string output, format = "table";
  bool unbiased = false;
  double target = 1.8;
};

// One row per file: the kurtosis (population m4 / m2^2, or with the unbiased variance), and
// the file's KURE term (K - K_T)^2 / T, T = number of files, so the terms sum to the KURE
// loss of the files taken as the layers of one model. A constant array has no kurtosis: it
// is reported as constant with a term of 0, as the library's KURE loss does.
int run_kurtosis(const kurtosis_cmd& c) {
  const auto v = c.unbiased ? quant::variance_estimator::unbiased : quant::variance_estimator::population;
  const double T = static_cast<double>(c.inputs.size());
  json files = json::array();
  double loss = 0.0;
  for (const auto& path : c.inputs) {
    const xt::xarray<float> x = load_float(path);
    quant::moments m;
    double k = 0.0;
    try {
      m = quant::central_moments(x);
      k = quant::kurtosis(x, v);
    } catch (const quant::error& e) {
      throw data_error(path + ": " + e.what());
    }
    const bool constant = !(m.m2 > 0.0);
    const double term = constant ? 0.0 : (k - c.target) * (k - c.target) / T;
    loss += term;
    json f;
    f["file"] = path;
    f["shape"] = shape_of(x);
    f["elements"] = x.size();
    f["mean"] = m.mean;
    f["std"] = std::sqrt(m.m2);  // population
    f["constant"] = constant;
    if (constant) f["kurtosis"] = nullptr;
    else f["kurtosis"] = k;
    f["kure_term"] = term;
    files.push_back(f);
  }
  json j;
  j["variance"] = c.unbiased ? "unbiased" : "population";
  j["target"] = c.target;
  j["files"] = files;
  j["kure_loss"] = loss;
  if (c.format == "json") {
    std::cout << json_text(j);
  } else {
    std::printf("%-40s %14s %12s %12s  %s\n", "file", "elements", "kurtosis", "KURE term", "");
    for (const auto& f : files) {
      std::string name = f["file"].get<std::string>();
      if (name.size() > 40) name = "..." + name.substr(name.size() - 37);
      if (f["constant"].get<bool>())
        std::printf("%-40s %14zu %12s %12.6g  constant (no kurtosis)\n", name.c_str(), f["elements"].get<std::size_t>(),
                    "-", 0.0);
      else
        std::printf("%-40s %14zu %12.6f %12.6g\n", name.c_str(), f["elements"].get<std::size_t>(),
                    f["kurtosis"].get<double>(), f["kure_term"].get<double>());
    }
    std::printf("KURE loss (target %.4g, %s variance): %.6g\n", c.target, c.unbiased ? "unbiased" : "population", loss);
  }
  if (!c.output.empty()) {
    output_set out;
    out.text(c.output, json_text(j));
    out.commit();
  }
  return 0;
}

// ---- pq ---------------------------------------------------------------------------------------

struct pq_cmd {
  std::string weights, out_dir, layout = "shared", init = "random", indices_format = "npy";
  std::size_t d = 8, k = 256, iterations = 20, max_training_points = 0;
  std::uint64_t seed = 0;
  bool int8_centroids = false;
};

json pq_size_json(std::size_t index_bytes, std::size_t centroid_bytes, std::size_t float32_bytes) {
  return {{"centroid_bytes", centroid_bytes},
          {"total_bytes", index_bytes + centroid_bytes},
          {"compression_ratio", double(float32_bytes) / double(index_bytes + centroid_bytes)}};
}

// Trains the codebook(s) of one weight array, encodes and decodes it. With --int8-centroids
// the centroids are stored as int8 with one scale per codebook, the assignments of the float
// codebook are kept (they are not re-encoded) and decoded.npy holds the int8 centroids' values.
int run_pq(const pq_cmd& c) {
  const xt::xarray<float> W = load_float(c.weights);
  if (W.dimension() < 2)
    throw data_error(c.weights + ": shape " + quant::detail::shape_string(W.shape()) +
                     " is not a weight matrix [out, in] or conv weight [out, in, kh, kw]");
  const std::size_t rows = W.shape()[0], cols = rows == 0 ? 0 : W.size() / rows;
  if (W.size() == 0) throw data_error(c.weights + ": the array is empty");
  if (cols % c.d != 0)
    throw data_error("--d " + std::to_string(c.d) + " does not divide the row length " + std::to_string(cols) +
                     " of " + c.weights + " (in * kh * kw of a conv weight)");
  const bool shared = c.layout == "shared";
  const std::size_t per_codebook = shared ? rows * (cols / c.d) : rows;
  if (per_codebook < c.k)
    throw data_error("--k " + std::to_string(c.k) + " is larger than the " + std::to_string(per_codebook) +
                     " subvectors each codebook is trained on" + (shared ? "" : " (one per row in per-subspace layout)"));
  quant::pq_options o;
  o.iterations = c.iterations;
  o.init = c.init == "kmeans++" ? quant::kmeans_init::kmeans_plus_plus : quant::kmeans_init::random_sample;
  o.layout = shared ? quant::pq_layout::shared : quant::pq_layout::per_subspace;
  o.max_training_points = c.max_training_points;
  quant::pq_layer_result r;
  try {
    r = quant::pq_quantize_layer(W, c.d, c.k, c.seed, o);
  } catch (const quant::domain_error& e) {
    throw data_error(c.weights + ": " + e.what());
  }
  const quant::packed_indices packed = quant::pack_indices(r.indices, quant::pq_index_bits(c.k));

  json j;
  j["format"] = "quant-pq";
  j["version"] = 1;
  j["weights"] = c.weights;
  j["shape"] = shape_of(W);
  j["rows"] = rows;
  j["row_length"] = cols;
  j["d"] = c.d;
  j["k"] = c.k;
  j["layout"] = c.layout;
  j["init"] = c.init;
  j["seed"] = c.seed;
  j["iterations"] = c.iterations;
  j["subvectors"] = rows * (cols / c.d);
  j["codebooks"] = r.codebook.subspaces();
  j["index_bits"] = packed.bits;
  j["indices"] = {{"file", c.indices_format == "bin" ? "indices.bin" : "indices.npy"},
                  {"count", packed.count},
                  {"shape", {rows, cols / c.d}},
                  {"packing", "LSB-first bit stream, index_bits per index, row-major [rows, row_length / d]"}};
  j["centroids"] = c.int8_centroids ? "int8" : "float32";
  j["mse"] = r.mse;  // of the stored centroids: replaced below for int8
  j["mse_float_centroids"] = r.mse;

  output_set out;
  const std::string dir = c.out_dir + "/";
  xt::xarray<float> decoded = r.decoded;
  double mse = r.mse;
  if (c.int8_centroids) {
    const quant::int8_codebook q = quant::quantize_centroids(r.codebook);
    const xt::xtensor<float, 2> dq = quant::pq_decode(quant::dequantize_centroids(q), r.indices);
    std::copy(dq.begin(), dq.end(), decoded.begin());
    double s = 0.0;
    for (std::size_t i = 0; i < W.size(); ++i) {
      const double t = static_cast<double>(W.data()[i]) - static_cast<double>(decoded.data()[i]);
      s += t * t;
    }
    mse = s / static_cast<double>(W.size());
    j["mse_int8_centroids"] = mse;
    out.npy(dir + "centroids.npy", q.values);
    out.npy(dir + "centroid_scales.npy", to_array(q.scales));
  } else {
    out.npy(dir + "centroids.npy", r.codebook.centroids);
  }
  j["mse"] = mse;
  if (c.indices_format == "bin") {
    out.text(dir + "indices.bin", std::string(packed.bytes.begin(), packed.bytes.end()));
  } else {
    out.npy(dir + "indices.npy", xt::adapt(packed.bytes, std::vector<std::size_t>{packed.bytes.size()}));
  }
  out.npy(dir + "decoded.npy", decoded);
  const quant::pq_size_report& z = r.size;
  json size;
  size["weights"] = z.weights;
  size["float32_bytes"] = z.float32_bytes;
  size["index_bytes"] = z.index_bytes;
  const std::size_t cb = c.int8_centroids ? z.centroid_bytes_int8 : z.centroid_bytes;
  size["centroid_bytes"] = cb;
  size["total_bytes"] = z.index_bytes + cb;
  size["compression_ratio"] = double(z.float32_bytes) / double(z.index_bytes + cb);
  size["float_centroids"] = pq_size_json(z.index_bytes, z.centroid_bytes, z.float32_bytes);
  size["int8_centroids"] = pq_size_json(z.index_bytes, z.centroid_bytes_int8, z.float32_bytes);
  j["size"] = size;
  j["kmeans_objective"] = r.objective;  // per codebook, per iteration (sum of squared distances)
  out.text(dir + "report.json", json_text(j));
  out.commit();
  std::printf("pq: %zu subvectors of %zu -> %zu x %zu centroids (%s), %u-bit indices, MSE %.6g, %zu -> %zu bytes (x%.2f)\n",
              rows * (cols / c.d), c.d, r.codebook.subspaces(), c.k, c.int8_centroids ? "int8" : "float32", packed.bits,
              mse, z.float32_bytes, z.index_bytes + cb, double(z.float32_bytes) / double(z.index_bytes + cb));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  examples::use_passive_openmp_waits(argv);
  CLI::App app{"quant: quantize NumPy .npy files (float32/float64 in) with the quant library.\n"
               "Exit status: 0 success, 1 bad data, 2 usage error."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::to_string(quant::version.major) + "." + std::to_string(quant::version.minor) +
                                        "." + std::to_string(quant::version.patch));

  fq_cmd fq;
  auto* fq_app = app.add_subcommand("fake-quant", "fake-quantize (quantize + dequantize) a float array");
  fq_app->add_option("-i,--input", fq.input, "input .npy (float32 or float64)")->required();
  fq_app->add_option("-o,--output", fq.output, "output .npy (float32)")->required();
  add_grid_options(fq_app, fq.grid);
  add_param_options(fq_app, fq.params);
  fq_app->add_option("--encodings", fq.encodings, "also write the parameters used as JSON");

  quantize_cmd qz;
  auto* qz_app = app.add_subcommand("quantize", "quantize a float array to integers, with scales/zero points and JSON");
  qz_app->add_option("-i,--input", qz.input, "input .npy (float32 or float64)")->required();
  qz_app->add_option("-o,--output", qz.output, "output .npy of integers")->required();
  add_grid_options(qz_app, qz.grid);
  add_param_options(qz_app, qz.params);
  qz_app->add_option("--dtype", qz.dtype, "output type: auto (smallest that fits), int8, uint8, int16, int32, float32")
      ->check(CLI::IsMember({"auto", "int8", "uint8", "int16", "int32", "float32"}))
      ->capture_default_str();
  qz_app->add_option("--scales-out", qz.scales_out, "write the scales (.npy, float32)");
  qz_app->add_option("--zero-points-out", qz.zero_points_out, "write the zero points (.npy, int32)");
  qz_app->add_option("--encodings", qz.encodings, "write bits, scheme, axis, scales and zero points as JSON");

  calibrate_cmd cal;
  auto* cal_app = app.add_subcommand("calibrate", "run an observer over one or more arrays and write the parameters");
  cal_app->add_option("-i,--input", cal.inputs, "input .npy files (same shape except along the batch)")->required();
  cal_app->add_option("-o,--output", cal.output, "output JSON (usable as `--params` of fake-quant/quantize)")
      ->required();
  add_grid_options(cal_app, cal.grid);
  cal_app->add_option("--axis", cal.axis, "per-channel axis (default: per tensor)");
  cal_app->add_option("--observer", cal.observer, "minmax or mse")
      ->check(CLI::IsMember({"minmax", "mse"}))
      ->capture_default_str();
  cal_app->add_option("--scales-out", cal.scales_out, "also write the scales as .npy");
  cal_app->add_option("--zero-points-out", cal.zero_points_out, "also write the zero points as .npy");

  lsq_cmd lsq;
  auto* lsq_app = app.add_subcommand("lsq-grad", "LSQ / LSQ+ backward: dx, dscale (and d zero point) from x, dy");
  lsq_app->add_option("--x", lsq.x, "input x (.npy)")->required();
  lsq_app->add_option("--dy", lsq.dy, "upstream gradient dL/dx_hat (.npy, same shape)")->required();
  lsq_app->add_option("--scale", lsq.scale, "step size: a number or a .npy with one per channel")->required();
  lsq_app->add_option("--zero-point", lsq.zero_point,
                      "LSQ+ offset (paper) or float zero point (pytorch): number or .npy; omit for LSQ");
  lsq_app->add_option("--dx", lsq.dx_out, "output dL/dx (.npy)")->required();
  lsq_app->add_option("-o,--output", lsq.json_out, "write dscale / dzero_point as JSON");
  lsq_app->add_option("--dscale-out", lsq.dscale_out, "write dscale as .npy");
  lsq_app->add_option("--dzero-point-out", lsq.dzero_point_out, "write d zero point as .npy");
  lsq_app->add_option("--bits,-b", lsq.grid.bits, "bit width")->check(CLI::Range(2, 16))->capture_default_str();
  lsq_app->add_flag("--unsigned", lsq.grid.is_unsigned, "unsigned grid");
  lsq_app->add_flag("--narrow", lsq.grid.narrow, "narrow range");
  lsq_app->add_option("--axis", lsq.axis, "per-channel axis (default: per tensor)");
  lsq_app->add_flag("--no-gradient-scaling", lsq.no_gradient_scaling, "do not multiply by g = 1/sqrt(N qmax)");
  lsq_app->add_option("--elements-per-scale", lsq.elements_per_scale, "N of the gradient scale (default: all)");
  lsq_app->add_option("--convention", lsq.convention, "paper (LSQ/LSQ+) or pytorch (_fake_quantize_learnable_*)")
      ->check(CLI::IsMember({"paper", "pytorch"}))
      ->capture_default_str();

  adaround_cmd ar;
  auto* ar_app = app.add_subcommand("adaround", "AdaRound one layer: learn up/down rounding of W [out, in]");
  ar_app->add_option("--weights,-w", ar.weights, "W [out, in] (.npy)")->required();
  ar_app->add_option("--inputs,-x", ar.inputs, "calibration inputs X [samples, in] in the FP model (.npy)")->required();
  ar_app->add_option("--quantized-inputs", ar.quantized_inputs, "the same inputs in the quantized model (.npy)");
  ar_app->add_option("--bias", ar.bias, "bias [out] (.npy)");
  ar_app->add_option("--out-dir,-o", ar.out_dir,
                     "writes integer_weights.npy, scales.npy, zero_points.npy, weights.npy, report.json")
      ->required()
      ->check(CLI::ExistingDirectory);
  add_grid_options(ar_app, ar.grid);
  ar_app->add_option("--observer", ar.observer, "per-channel scales from minmax or mse")
      ->check(CLI::IsMember({"minmax", "mse"}))
      ->capture_default_str();
  ar_app->add_option("--iterations", ar.iterations, "optimisation steps")
      ->check(CLI::Range(std::size_t(1), std::size_t(10000000)))
      ->capture_default_str();
  ar_app->add_option("--batch", ar.batch, "rows of X per step")->check(CLI::PositiveNumber)->capture_default_str();
  ar_app->add_option("--lambda", ar.lambda, "regularizer weight")->check(CLI::NonNegativeNumber)->capture_default_str();
  ar_app->add_option("--lr", ar.learning_rate, "Adam learning rate")->check(CLI::PositiveNumber)->capture_default_str();
  ar_app->add_option("--seed", ar.seed, "mini-batch sampling seed")->capture_default_str();
  ar_app->add_flag("--relu", ar.relu, "the layer is followed by a ReLU (reconstruct after it)");
  ar_app->add_flag("--quiet,-q", ar.quiet, "no progress line");

  kurtosis_cmd ku;
  auto* ku_app = app.add_subcommand("kurtosis", "kurtosis of each array and its KURE term (K - target)^2 / files");
  ku_app->add_option("-i,--input", ku.inputs, "input .npy files (float32 or float64), e.g. one per layer")->required();
  ku_app->add_flag("--unbiased", ku.unbiased, "use the unbiased variance (torch.std, as the KURE reference code)");
  ku_app->add_option("--target", ku.target, "KURE target kurtosis (1.8: uniform)")->capture_default_str();
  ku_app->add_option("--format", ku.format, "stdout format: table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  ku_app->add_option("-o,--output", ku.output, "also write the JSON report to this file");

  pq_cmd pq;
  auto* pq_app = app.add_subcommand("pq", "product-quantize a weight array: k-means codebook, packed indices, decoded weights");
  pq_app->add_option("--weights,-w", pq.weights, "W [out, in] or conv [out, in, kh, kw] (.npy); rows are cut into d-chunks")
      ->required();
  pq_app->add_option("--out-dir,-o", pq.out_dir,
                     "writes centroids.npy [S, K, d] (+ centroid_scales.npy with --int8-centroids), indices.npy "
                     "(packed bytes, uint8) or indices.bin, decoded.npy, report.json")
      ->required()
      ->check(CLI::ExistingDirectory);
  pq_app->add_option("--d", pq.d, "subvector dimension")->check(CLI::Range(std::size_t(1), std::size_t(4096)))->capture_default_str();
  pq_app->add_option("--k", pq.k, "centroids per codebook")->check(CLI::Range(std::size_t(1), std::size_t(65536)))->capture_default_str();
  pq_app->add_option("--iterations", pq.iterations, "k-means iterations")
      ->check(CLI::Range(std::size_t(1), std::size_t(100000)))
      ->capture_default_str();
  pq_app->add_option("--seed", pq.seed, "k-means seed")->capture_default_str();
  pq_app->add_option("--layout", pq.layout, "shared (iPQ: one codebook per layer) or per-subspace (Faiss)")
      ->check(CLI::IsMember({"shared", "per-subspace"}))
      ->capture_default_str();
  pq_app->add_option("--init", pq.init, "k-means initialisation: random or kmeans++")
      ->check(CLI::IsMember({"random", "kmeans++"}))
      ->capture_default_str();
  pq_app->add_option("--max-training-points", pq.max_training_points, "train each codebook on a seeded sample (0: all)")
      ->capture_default_str();
  pq_app->add_flag("--int8-centroids", pq.int8_centroids, "store int8 centroids with one scale per codebook");
  pq_app->add_option("--indices-format", pq.indices_format, "packed indices as npy (uint8 bytes) or bin (raw bytes)")
      ->check(CLI::IsMember({"npy", "bin"}))
      ->capture_default_str();

  // Subcommands written as quant_cli::command classes (one header each): register them here.
  std::vector<std::unique_ptr<quant_cli::command>> commands;
  commands.push_back(std::make_unique<quant_cli::gptq_command>());
  commands.push_back(std::make_unique<quant_cli::eval_command>());
  commands.push_back(std::make_unique<quant_cli::ptq_command>());
  commands.push_back(std::make_unique<quant_cli::export_command>());
  commands.push_back(std::make_unique<quant_cli::run_command>());
  std::vector<CLI::App*> command_apps;
  for (auto& c : commands) command_apps.push_back(c->add_to(app));

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints the message
    return 2;
  }

  try {
    if (fq_app->parsed()) return run_fake_quant(fq);
    if (qz_app->parsed()) return run_quantize(qz);
    if (cal_app->parsed()) return run_calibrate(cal);
    if (lsq_app->parsed()) return run_lsq_grad(lsq);
    if (ar_app->parsed()) return run_adaround(ar);
    if (ku_app->parsed()) return run_kurtosis(ku);
    if (pq_app->parsed()) return run_pq(pq);
    for (std::size_t i = 0; i < commands.size(); ++i)
      if (command_apps[i]->parsed()) return commands[i]->run();
  } catch (const usage_error& e) {
    std::fprintf(stderr, "quant: %s\nRun with --help for more information.\n", e.what());
    return 2;
  } catch (const quant::invalid_argument& e) {
    std::fprintf(stderr, "quant: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {  // data errors, quant::domain_error / length_error, I/O
    std::fprintf(stderr, "quant: %s\n", e.what());
    return 1;
  }
  return 2;
}
