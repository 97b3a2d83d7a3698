// examples/common/ptq_pipeline.cpp — the PTQ pipeline declared in ptq_pipeline.hpp (its steps:
// there).
#include "ptq_pipeline.hpp"

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

namespace detail {
namespace {

class stopwatch {
 public:
  stopwatch() : t0_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

std::optional<quant::layer_kind> kind_of(const model_layer& l, const std::vector<std::size_t>& in_shape) {
  if (l.type == layer_type::linear) return quant::layer_kind::linear;
  if (l.type != layer_type::conv2d) return std::nullopt;
  if (l.groups == 1) return quant::layer_kind::conv2d;
  if (l.is_depthwise(in_shape[0])) return quant::layer_kind::depthwise_conv2d;
  return std::nullopt;  // grouped
}

// What lies between weight layers a < b: the activation, or nullopt when something other
// than ReLU / ReLU6 / pooling / flatten does (an unfolded BN).
struct link {
  std::optional<quant::activation_between> act;
  bool has_relu6 = false;
  bool has_maxpool = false;
};
link link_between(const model& m, std::size_t a, std::size_t b) {
  link r;
  r.act = quant::activation_between::identity;
  for (std::size_t k = a + 1; k < b; ++k) {
    switch (m.layers[k].type) {
      case layer_type::relu:
        if (*r.act == quant::activation_between::identity) r.act = quant::activation_between::relu;
        break;
      case layer_type::relu6:
        r.act = quant::activation_between::relu6;
        r.has_relu6 = true;
        break;
      case layer_type::maxpool2d: r.has_maxpool = true; break;
      case layer_type::avgpool2d:
      case layer_type::global_avgpool:
      case layer_type::flatten: break;
      default: r.act.reset(); return r;
    }
  }
  return r;
}

// Features of weight layer b's input per output channel of weight layer a (1 for convs).
std::size_t spatial_between(const model& m, std::size_t a, std::size_t b) {
  if (m.layers[b].type != layer_type::linear) return 1;
  return shape_size(m.shape_before(b)) / m.layers[a].weight.shape()[0];
}

std::vector<std::size_t> weight_layers(const model& m) {
  std::vector<std::size_t> w;
  for (std::size_t i = 0; i < m.layers.size(); ++i)
    if (has_weights(m.layers[i].type)) w.push_back(i);
  return w;
}

// The layer's input rows for a GEMM view: linear [n, F]; conv im2col [n*P, C*kh*kw].
xt::xtensor<float, 2> gemm_rows(const model_layer& l, const std::vector<std::size_t>& in_shape,
                                       const xt::xarray<float>& x, std::size_t samples) {
  const std::size_t n = std::min<std::size_t>(samples, x.shape()[0]);
  if (l.type == layer_type::linear) {
    const std::size_t F = in_shape[0];
    xt::xtensor<float, 2> rows = xt::xtensor<float, 2>::from_shape({n, F});
    std::copy(x.data(), x.data() + n * F, rows.data());
    return rows;
  }
  const quant::conv2d_shape g = conv_geometry(l, in_shape);
  xt::xtensor<float, 2> rows = xt::xtensor<float, 2>::from_shape({n * g.positions(), g.patch_size()});
  for (std::size_t s = 0; s < n; ++s)
    quant::kernels::im2col(x.data() + s * g.image_size(), rows.data() + s * g.positions() * g.patch_size(), g);
  return rows;
}

// Mean of the layer's input rows (linear: the features; conv: im2col rows). im2col is linear,
// so the mean of all samples' rows is the mean over positions of im2col(mean sample): the
// sample mean is summed in double, rounded once to float, and its P im2col rows go into
// the accumulator (P*K additions instead of N*P*K).
quant::input_mean_accumulator input_means(const model_layer& l, const std::vector<std::size_t>& in_shape,
                                                 const xt::xarray<float>& x) {
  const std::size_t N = x.shape()[0], F = shape_size(in_shape);
  std::vector<double> sum(F, 0.0);
  for (std::size_t s = 0; s < N; ++s) {
    const float* p = x.data() + s * F;
    for (std::size_t f = 0; f < F; ++f) sum[f] += static_cast<double>(p[f]);
  }
  std::vector<float> mean(F);
  for (std::size_t f = 0; f < F; ++f) mean[f] = static_cast<float>(sum[f] / static_cast<double>(N));
  if (l.type == layer_type::linear) {
    quant::input_mean_accumulator acc(F);
    acc.add(as_matrix(mean.data(), 1, F));
    return acc;
  }
  const quant::conv2d_shape g = conv_geometry(l, in_shape);
  quant::input_mean_accumulator acc(g.patch_size());
  std::vector<float> rows(g.positions() * g.patch_size());
  quant::kernels::im2col(mean.data(), rows.data(), g);
  acc.add(as_matrix(rows.data(), g.positions(), g.patch_size()));
  return acc;
}

xt::xarray<float> fake_quantized_input(const model_layer& l, const xt::xarray<float>& x) {
  if (!l.input_encoding) return x;
  return quant::eager::fake_quantize(x, l.input_encoding->params);
}

}  // namespace
}  // namespace detail

model fold_batchnorms(const model& m, std::vector<std::optional<quant::channel_gaussian>>* outputs) {
  model f;
  f.input_shape = m.input_shape;
  std::vector<std::optional<quant::channel_gaussian>> g;
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const auto& l = m.layers[i];
    if (has_weights(l.type) && i + 1 < m.layers.size() && m.layers[i + 1].type == layer_type::batchnorm2d) {
      const auto& bn = m.layers[i + 1];
      const quant::batchnorm_params p{xt::xtensor<float, 1>(bn.weight), *bn.bias, bn.running_mean, bn.running_var,
                                      bn.eps};
      quant::folded_layer fl = l.bias ? quant::fold_batchnorm(l.weight, *l.bias, p) : quant::fold_batchnorm(l.weight, p);
      model_layer nl = l;
      nl.weight = std::move(fl.weight);
      nl.bias = std::move(fl.bias);
      f.layers.push_back(std::move(nl));
      g.push_back(std::move(fl.output));
      ++i;
      continue;
    }
    f.layers.push_back(l);
    g.push_back(std::nullopt);
  }
  if (outputs) *outputs = std::move(g);
  return f;
}

ptq_result run_ptq(const model& input, const xt::xarray<float>& calib, const ptq_options& opt,
                   const xt::xarray<float>* eval_x, const std::vector<std::int64_t>* eval_labels) {
  opt.validate();
  validate_model(input);
  if ((eval_x == nullptr) != (eval_labels == nullptr))
    throw std::invalid_argument("run_ptq: give both eval inputs and labels, or neither");
  auto say = [&](const std::string& s) {
    if (opt.progress) opt.progress(s);
  };
  ptq_result res;
  ptq_report& rep = res.report;
  rep.calibration_samples = calib.shape().empty() ? 0 : calib.shape()[0];
  if (rep.calibration_samples == 0) throw std::invalid_argument("run_ptq: no calibration samples");
  run_options ro;
  ro.batch = opt.batch;
  ro.apply_encodings = true;

  if (eval_x) {
    detail::stopwatch t;
    say("evaluating the float model on " + std::to_string(eval_x->shape()[0]) + " samples");
    rep.float_accuracy = top1_accuracy(run_model(input, *eval_x, ro), *eval_labels);
    rep.add_time("float evaluation", t.seconds());
  }

  // 1. BN folding
  std::vector<std::optional<quant::channel_gaussian>> gauss;
  model m;
  {
    detail::stopwatch t;
    if (opt.fold_bn) {
      m = fold_batchnorms(input, &gauss);
      say("folded " + std::to_string(input.layers.size() - m.layers.size()) + " batch norms");
    } else {
      m = input;
      gauss.assign(m.layers.size(), std::nullopt);
    }
    for (auto& l : m.layers) l.input_encoding.reset(), l.weight_encoding.reset();
    rep.add_time("bn folding", t.seconds());
  }
  const std::vector<std::size_t> wl = detail::weight_layers(m);
  std::vector<ptq_layer_report> lrep(wl.size());
  for (std::size_t k = 0; k < wl.size(); ++k) {
    const auto& l = m.layers[wl[k]];
    lrep[k].index = wl[k];
    lrep[k].name = l.name.empty() ? std::string(to_string(l.type)) + std::to_string(wl[k]) : l.name;
    const auto kind = detail::kind_of(l, m.shape_before(wl[k]));
    lrep[k].kind = kind ? quant::to_string(*kind) : "grouped_conv2d";
    lrep[k].spread_folded = lrep[k].spread_equalized = quant::channel_range_spread(l.weight);
  }

  // 2-3. CLE chains and bias absorption
  if (opt.cle) {
    detail::stopwatch t;
    std::vector<std::vector<std::size_t>> chains;  // indices into wl
    std::vector<std::size_t> cur;
    for (std::size_t k = 0; k < wl.size(); ++k) {
      const bool usable = detail::kind_of(m.layers[wl[k]], m.shape_before(wl[k])).has_value();
      if (!usable) {
        if (cur.size() >= 2) chains.push_back(cur);
        cur.clear();
        rep.notes.push_back("CLE: " + lrep[k].name + " is a grouped conv; it ends the chain");
        continue;
      }
      if (!cur.empty()) {
        const detail::link lk = detail::link_between(m, wl[cur.back()], wl[k]);
        if (!lk.act || lk.has_relu6) {
          if (cur.size() >= 2) chains.push_back(cur);
          cur.clear();
          rep.notes.push_back(std::string("CLE: ") + (lk.has_relu6 ? "ReLU6" : "an unfolded batch norm") +
                              " before " + lrep[k].name + " ends the chain (not scale-equivariant)");
        }
      }
      cur.push_back(k);
    }
    if (cur.size() >= 2) chains.push_back(cur);
    std::vector<quant::layer_weights> lw(wl.size());
    for (std::size_t k = 0; k < wl.size(); ++k) {
      const auto& l = m.layers[wl[k]];
      const auto kind = detail::kind_of(l, m.shape_before(wl[k]));
      lw[k].weight = l.weight;
      lw[k].bias = l.bias ? *l.bias : xt::xtensor<float, 1>(xt::zeros<float>({l.weight.shape()[0]}));
      lw[k].kind = kind ? *kind : quant::layer_kind::conv2d;
      lw[k].output = gauss[wl[k]];
    }
    for (const auto& ch : chains) {
      std::vector<quant::layer_weights*> ptrs;
      std::vector<quant::activation_between> acts;
      std::vector<std::size_t> spatial;
      for (std::size_t j = 0; j < ch.size(); ++j) {
        ptrs.push_back(&lw[ch[j]]);
        if (j + 1 < ch.size()) {
          acts.push_back(*detail::link_between(m, wl[ch[j]], wl[ch[j + 1]]).act);
          spatial.push_back(detail::spatial_between(m, wl[ch[j]], wl[ch[j + 1]]));
        }
      }
      const quant::equalization_report er = quant::equalize_chain(ptrs, acts, spatial, opt.cle_options);
      rep.cle_sweeps = std::max(rep.cle_sweeps, er.sweeps);
      rep.cle_converged = rep.cle_converged && er.converged;
      ++rep.cle_chains;
      std::string names;
      for (auto k : ch) names += (names.empty() ? "" : " -> ") + lrep[k].name;
      say("CLE chain " + names + ": " + std::to_string(er.sweeps) + " sweeps");
    }
    rep.add_time("cle", t.seconds());
    if (opt.bias_absorption) {
      detail::stopwatch ta;
      std::size_t absorbed = 0;
      for (const auto& ch : chains)
        for (std::size_t j = 0; j + 1 < ch.size(); ++j) {
          auto& a = lw[ch[j]];
          if (!a.output) {
            rep.notes.push_back("bias absorption: " + lrep[ch[j]].name + " has no BN statistics; skipped");
            continue;
          }
          const auto act = *detail::link_between(m, wl[ch[j]], wl[ch[j + 1]]).act;
          const auto c = quant::absorb_high_bias(a, lw[ch[j + 1]], act, detail::spatial_between(m, wl[ch[j]], wl[ch[j + 1]]),
                                                 opt.absorption_sigmas);
          for (float v : c) absorbed += v > 0.0f;
        }
      say("bias absorption: " + std::to_string(absorbed) + " channels shifted");
      rep.add_time("bias absorption", ta.seconds());
    }
    for (std::size_t k = 0; k < wl.size(); ++k) {
      auto& l = m.layers[wl[k]];
      l.weight = lw[k].weight;
      if (l.bias || xt::any(xt::not_equal(lw[k].bias, 0.0f))) l.bias = lw[k].bias;
      gauss[wl[k]] = lw[k].output;
      lrep[k].spread_equalized = quant::channel_range_spread(l.weight);
    }
  }

  // 4. layer by layer on calibration data through the model quantized so far
  const model float_model = m;  // folded (+ equalized): AdaRound's reference
  const bool need_float_inputs = opt.rounding != weight_rounding::nearest;
  xt::xarray<float> acts = calib, float_acts;
  if (need_float_inputs) float_acts = calib;
  std::size_t at = 0;  // acts hold the input of layer `at` (before its input quantizer)
  const quant::grid wgrid{opt.weight_bits, true, false};
  for (std::size_t k = 0; k < wl.size(); ++k) {
    const std::size_t i = wl[k];
    auto& l = m.layers[i];
    const std::vector<std::size_t> in_shape = m.shape_before(i);
    {
      detail::stopwatch t;
      acts = run_layers(m, acts, at, i, ro);
      if (need_float_inputs) float_acts = run_layers(float_model, float_acts, at, i, ro);
      at = i;
      rep.add_time("calibration forward", t.seconds());
    }
    // a. activation quantizer
    if (opt.act_bits != 32) {
      detail::stopwatch t;
      const quant::grid agrid{opt.act_bits, false, false};
      const quant::qparams p = opt.act_observer == range_method::mse
                                   ? quant::calibrate_mse(acts, agrid, quant::scheme::asymmetric)
                                   : quant::calibrate_minmax(acts, agrid, quant::scheme::asymmetric);
      l.input_encoding = encoding{p, quant::scheme::asymmetric, "half_to_even"};
      lrep[k].input_scale = p.scale();
      lrep[k].input_zero_point = p.zero_point();
      rep.add_time("activation calibration", t.seconds());
    }
    // b. weights
    {
      detail::stopwatch t;
      const std::size_t out = l.weight.shape()[0], K = l.weight.size() / out;
      const std::optional<std::ptrdiff_t> axis = opt.per_channel ? std::optional<std::ptrdiff_t>(0) : std::nullopt;
      const quant::qparams wp = opt.weight_observer == range_method::mse
                                    ? quant::calibrate_mse(l.weight, wgrid, quant::scheme::symmetric, axis)
                                    : quant::calibrate_minmax(l.weight, wgrid, quant::scheme::symmetric, axis);
      const xt::xarray<float> w_float = l.weight;
      const auto kind = detail::kind_of(l, in_shape);
      const bool gemm_layer = kind && *kind != quant::layer_kind::depthwise_conv2d;
      lrep[k].rounding = "nearest";
      if (opt.rounding != weight_rounding::nearest && gemm_layer) {
        const std::size_t samples = std::min(opt.adaround_samples, acts.shape()[0]);
        const xt::xtensor<float, 2> W2 = detail::as_matrix(w_float.data(), out, K);
        const xt::xtensor<float, 2> Xf = detail::gemm_rows(l, in_shape, float_acts, samples);
        const xt::xtensor<float, 2> Xq = detail::gemm_rows(l, in_shape, detail::fake_quantized_input(l, acts), samples);
        if (opt.rounding == weight_rounding::adaround) {
          quant::adaround_options ao = opt.adaround;
          const std::size_t rows_per_sample = Xf.shape()[0] / samples;
          ao.batch_size = std::min(Xf.shape()[0], opt.adaround.batch_size * rows_per_sample);
          const std::size_t next = i + 1;
          const bool relu_after = next < m.layers.size() && m.layers[next].type == layer_type::relu;
          ao.act = relu_after ? quant::activation::relu : quant::activation::identity;
          say("AdaRound " + lrep[k].name + ": " + std::to_string(ao.iterations) + " iterations on " +
              std::to_string(Xf.shape()[0]) + " rows");
          const xt::xtensor<float, 1> b =
              l.bias ? *l.bias : xt::xtensor<float, 1>(xt::zeros<float>({out}));
          const quant::adaround_result r = quant::adaround_layer(W2, Xf, wp, ao, &Xq, &b);
          std::copy(r.weights.begin(), r.weights.end(), l.weight.begin());
          lrep[k].rounding = "adaround";
          lrep[k].adaround_rtn_error = r.report.rtn_error;
          lrep[k].adaround_error = r.report.adaround_error;
        } else if (opt.rounding == weight_rounding::gptq) {
          // GPTQ on the rows the layer sees in the model quantized so far, with the observer's
          // qparams (the scales stay what the observer chose; only the rounding changes).
          say("GPTQ " + lrep[k].name + " on " + std::to_string(Xq.shape()[0]) + " rows");
          const quant::gptq_result r = quant::gptq_layer(W2, Xq, wp);
          std::copy(r.weights.begin(), r.weights.end(), l.weight.begin());
          lrep[k].rounding = "gptq";
          lrep[k].gptq_rtn_error = r.report.rtn_error;
          lrep[k].gptq_error = r.report.gptq_error;
        } else {
          const xt::xtensor<float, 2> Wq = opt.custom_rounding(weight_rounding_context{i, W2, wp, Xf, Xq});
          if (Wq.size() != W2.size()) throw std::length_error("custom_rounding returned a weight of the wrong size");
          std::copy(Wq.begin(), Wq.end(), l.weight.begin());
          lrep[k].rounding = "custom";
        }
      } else {
        if (opt.rounding != weight_rounding::nearest)
          rep.notes.push_back(lrep[k].name + ": " + lrep[k].kind + " is not one GEMM; rounded to nearest");
        l.weight = quant::eager::fake_quantize(w_float, wp);
      }
      l.weight_encoding = encoding{wp, quant::scheme::symmetric, "half_to_even"};
      rep.add_time(opt.rounding == weight_rounding::nearest ? "weight quantization" : "weight quantization (" +
                       std::string(to_string(opt.rounding)) + ")",
                   t.seconds());
      // c. bias correction
      if (opt.bias_correction != bias_correction_mode::none) {
        detail::stopwatch tb;
        std::optional<xt::xtensor<float, 1>> delta;
        if (!kind) {
          lrep[k].bias_correction = "skipped: grouped conv";
        } else if (opt.bias_correction == bias_correction_mode::empirical) {
          const quant::input_mean_accumulator acc =
              detail::input_means(l, in_shape, detail::fake_quantized_input(l, acts));
          delta = quant::empirical_bias_correction(w_float, l.weight, acc, *kind);
          lrep[k].bias_correction = "empirical";
        } else {
          if (k == 0 || !gauss[wl[k - 1]]) {
            lrep[k].bias_correction = "skipped: no BN statistics before this layer";
          } else {
            const detail::link lk = detail::link_between(m, wl[k - 1], i);
            if (!lk.act) {
              lrep[k].bias_correction = "skipped: an unfolded batch norm before this layer";
            } else {
              delta = quant::analytic_bias_correction(w_float, l.weight, *gauss[wl[k - 1]], *lk.act, *kind,
                                                      detail::spatial_between(m, wl[k - 1], i));
              lrep[k].bias_correction = lk.has_maxpool ? "analytic (estimate: max pooling before)" : "analytic";
            }
          }
        }
        if (delta) {
          xt::xtensor<float, 1> b = l.bias ? *l.bias : xt::xtensor<float, 1>(xt::zeros<float>({out}));
          for (std::size_t o = 0; o < out; ++o) {
            b(o) = b(o) - (*delta)(o);
            lrep[k].max_abs_bias_delta = std::max(lrep[k].max_abs_bias_delta, std::fabs(double((*delta)(o))));
          }
          l.bias = b;
        }
        rep.add_time("bias correction", tb.seconds());
      }
    }
    say("quantized " + lrep[k].name + " (" + std::to_string(k + 1) + "/" + std::to_string(wl.size()) + ")");
  }
  rep.layers = std::move(lrep);
  validate_model(m);
  if (eval_x) {
    detail::stopwatch t;
    say("evaluating the quantized model on " + std::to_string(eval_x->shape()[0]) + " samples");
    rep.accuracy = top1_accuracy(run_model(m, *eval_x, ro), *eval_labels);
    rep.eval_samples = eval_x->shape()[0];
    rep.add_time("quantized evaluation", t.seconds());
  }
  res.quantized = std::move(m);
  return res;
}

nlohmann::ordered_json ptq_report_json(const ptq_report& r, const ptq_options& o) {
  nlohmann::ordered_json j;
  j["format"] = "quant-ptq-report";
  j["version"] = 1;
  nlohmann::ordered_json oj;
  oj["fold_bn"] = o.fold_bn;
  oj["cle"] = o.cle;
  oj["bias_absorption"] = o.bias_absorption;
  oj["weight_bits"] = o.weight_bits;
  oj["weight_granularity"] = o.per_channel ? "per-channel" : "per-tensor";
  oj["weight_observer"] = to_string(o.weight_observer);
  oj["rounding"] = to_string(o.rounding);
  if (o.rounding == weight_rounding::adaround) oj["iterations"] = o.adaround.iterations;
  oj["bias_correction"] = to_string(o.bias_correction);
  oj["act_bits"] = o.act_bits;
  oj["act_observer"] = to_string(o.act_observer);
  oj["batch"] = o.batch;
  j["options"] = oj;
  j["calibration_samples"] = r.calibration_samples;
  if (r.accuracy) {
    j["eval_samples"] = r.eval_samples;
    j["float_accuracy"] = *r.float_accuracy;
    j["accuracy"] = *r.accuracy;
  }
  nlohmann::ordered_json st = nlohmann::ordered_json::object();
  for (const auto& [n, s] : r.stage_seconds) st[n] = s;
  j["stage_seconds"] = st;
  j["total_seconds"] = r.total_seconds();
  if (o.cle) {
    j["cle"] = {{"chains", r.cle_chains}, {"max_sweeps", r.cle_sweeps}, {"converged", r.cle_converged}};
  }
  j["layers"] = nlohmann::ordered_json::array();
  for (const auto& l : r.layers) {
    nlohmann::ordered_json lj;
    lj["index"] = l.index;
    lj["name"] = l.name;
    lj["kind"] = l.kind;
    lj["range_spread_folded"] = l.spread_folded;
    lj["range_spread_after_cle"] = l.spread_equalized;
    lj["rounding"] = l.rounding;
    if (l.adaround_error) {
      lj["adaround_rtn_error"] = *l.adaround_rtn_error;
      lj["adaround_error"] = *l.adaround_error;
    }
    if (l.gptq_error) {
      lj["gptq_rtn_error"] = *l.gptq_rtn_error;
      lj["gptq_error"] = *l.gptq_error;
    }
    lj["bias_correction"] = l.bias_correction;
    lj["max_abs_bias_delta"] = l.max_abs_bias_delta;
    if (l.input_scale) {
      lj["input_scale"] = *l.input_scale;
      lj["input_zero_point"] = *l.input_zero_point;
    }
    j["layers"].push_back(lj);
  }
  j["notes"] = r.notes;
  return j;
}

}  // namespace examples
