// quant/reconstruction.hpp — BRECQ block reconstruction with QDrop (ALGORITHMS.md §5;
// Li et al. 2021, "BRECQ: Pushing the Limit of Post-Training Quantization by Block
// Reconstruction"; Wei et al. 2022, "QDrop: Randomly Dropping Quantization for Extremely
// Low-bit Post-Training Quantization").
//
// A block is a chain of layers, each  x_in -> [activation quantizer] -> W x + b -> f_a,
// Linear (W [out, in]) or Conv2d (W [out, C*KH*KW] over NCHW input, im2col.hpp).
// All AdaRound variables V of the block (adaround.hpp) are optimized jointly against the
// full-precision block output:
//   L = (1/B) sum_b sum_j F_bj (y_bj - y_hat_bj)^2  +  lambda sum_layers f_reg(V_l)
// (F = user-supplied Fisher diagonal, the squared task-loss gradients of the block output;
// F = 1 without it). The activation quantizers learn their step size jointly (LSQ, lsq.hpp,
// paper convention, beta = 0; Adam lr 4e-5 with cosine decay to 0; s >= FLT_EPSILON after
// each step).
// QDrop: during reconstruction each activation quantizer (the block input's included)
// returns, element by element, where(u < p, x_q, x), u ~ U[0,1) counter-based
// (detail::counter_uniform keyed by the seed, the iteration and the layer; element index
// = flat index in the mini-batch), so results are identical for any thread count. After
// reconstruction p = 1 (always quantized). p = 1 during reconstruction is plain BRECQ.
// Gradients: x_q branch through LSQ's straight-through backward (dx and ds), x branch
// identity; weights through dW_soft/dV (adaround.hpp); ReLU 1[pre > 0].
// Activations travel as row-major [samples, features] matrices; a conv layer's features
// are its C*H*W input in NCHW order (conv outputs come back as [samples, out*OH*OW]).
// Every GEMM goes through BLAS outside any parallel region.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <xtensor-blas/xlinalg.hpp>
#include <xtensor/xtensor.hpp>

#include "adaround.hpp"
#include "detail/counter_random.hpp"
#include "error.hpp"
#include "im2col.hpp"
#include "lsq.hpp"
#include "observers.hpp"
#include "optim.hpp"
#include "qparams.hpp"

namespace quant {

// One layer of a block.
struct block_layer {
  enum class kind { linear, conv2d };
  kind type = kind::linear;
  xt::xtensor<float, 2> weight;  // linear: [out, in]; conv2d: [out, C*KH*KW] (PyTorch weight.reshape(out, -1))
  xt::xtensor<float, 1> bias;    // [out], or empty for none
  conv2d_shape conv;             // conv2d: the input geometry (C, H, W, kernel, stride, padding, dilation)
  activation act = activation::relu;
  quant::qparams weight_qparams;                // AdaRound grid and scales (fixed), any granularity of `weight`
  std::optional<lsq_params> input_quantizer;    // per-tensor LSQ quantizer of this layer's input, or none

  std::size_t in_features() const {
    return type == kind::linear ? weight.shape()[1] : conv.image_size();
  }
  std::size_t out_features() const {
    return type == kind::linear ? weight.shape()[0] : weight.shape()[0] * conv.positions();
  }
};

// A per-tensor LSQ quantizer for activations `x` [samples, features] on grid g, its step
// size from the MSE range search (observers.hpp; asymmetric on unsigned grids so that
// non-negative data gets z = 0, symmetric on signed grids), gradient scale
// 1/sqrt(features * qmax) as LSQ prescribes for activations.
inline lsq_params activation_quantizer(const xt::xtensor<float, 2>& x, grid g) {
  const char* fn = "activation_quantizer";
  g.validate(fn);
  if (x.size() == 0) detail::fail<invalid_argument>(fn, "x.shape()", detail::shape_string(x.shape()), "must be non-empty");
  const qparams q = calibrate_mse(x, g, g.is_signed ? scheme::symmetric : scheme::asymmetric);
  lsq_params p;
  p.grid = g;
  p.scale = {q.scale()};
  p.elements_per_scale = x.shape()[1];
  return p;
}

struct block_options {
  std::size_t iterations = 20000;  // BRECQ / QDrop default
  std::size_t batch_size = 32;     // samples (rows of X) per iteration
  float lambda = 0.01f;
  float warmup = 0.2f;
  float beta_start = 20.f, beta_end = 2.f;
  adaround_options::schedule beta_schedule = adaround_options::schedule::linear;
  float learning_rate = 1e-3f;        // Adam on every V
  float scale_learning_rate = 4e-5f;  // Adam on the activation step sizes, cosine-decayed to 0
  bool learn_activation_scales = true;
  float qdrop_probability = 0.5f;  // p: keep the quantized value with probability p (1 = BRECQ, no drop)
  std::uint64_t seed = 0;          // mini-batches and QDrop masks
  std::function<void(const adaround_progress&)> progress;  // after every iteration (regularizer summed over layers)

  void validate(const char* function) const {
    adaround_options a;
    a.iterations = iterations;
    a.batch_size = batch_size;
    a.lambda = lambda;
    a.warmup = warmup;
    a.beta_start = beta_start;
    a.beta_end = beta_end;
    a.learning_rate = learning_rate;
    a.validate(function);
    if (!(std::isfinite(scale_learning_rate) && scale_learning_rate > 0.0f))
      detail::fail<invalid_argument>(function, "scale_learning_rate", scale_learning_rate, "must be finite and > 0");
    if (!(qdrop_probability > 0.0f && qdrop_probability <= 1.0f))
      detail::fail<invalid_argument>(function, "qdrop_probability", qdrop_probability, "must be in (0, 1]");
  }
  adaround_options as_adaround() const {
    adaround_options a;
    a.iterations = iterations;
    a.warmup = warmup;
    a.beta_start = beta_start;
    a.beta_end = beta_end;
    a.beta_schedule = beta_schedule;
    return a;
  }
};

struct block_report {
  double initial_error = 0.0;  // block output error, round-to-nearest weights + initial quantizers (p = 1)
  double final_error = 0.0;    // after reconstruction (hard rounding, learned step sizes, p = 1)
  std::vector<double> flipped_fraction, non_binary_fraction;  // per layer
  std::size_t iterations = 0;
};

struct block_result {
  // The quantized block: weights replaced by the hard-rounded fake-quantized weights,
  // input quantizers by the learned ones. Run it with block_forward(layers, x, true).
  std::vector<block_layer> layers;
  std::vector<xt::xtensor<std::int32_t, 2>> integer_weights;  // per layer
  block_report report;
};

namespace detail {

inline void check_block(const std::vector<block_layer>& layers, const char* fn) {
  if (layers.empty()) fail<invalid_argument>(fn, "layers.size()", 0, "a block needs at least one layer");
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const block_layer& L = layers[l];
    const std::string at = "layer " + std::to_string(l) + ": ";
    if (L.weight.size() == 0)
      fail<invalid_argument>(fn, "weight.shape()", shape_string(L.weight.shape()), at + "must be non-empty");
    if (L.type == block_layer::kind::conv2d) {
      L.conv.validate(fn);
      if (L.weight.shape()[1] != L.conv.patch_size())
        fail<length_error>(fn, "weight.shape()", shape_string(L.weight.shape()),
                           at + "conv weight must be [out, C*KH*KW = " + std::to_string(L.conv.patch_size()) + "]");
    }
    if (L.bias.size() != 0 && L.bias.size() != L.weight.shape()[0])
      fail<length_error>(fn, "bias.size()", L.bias.size(), at + "must be 0 or " + std::to_string(L.weight.shape()[0]));
    L.weight_qparams.check_shape(L.weight.shape(), fn);
    require_finite(L.weight.data(), L.weight.size(), fn, "weight");
    require_finite(L.bias.data(), L.bias.size(), fn, "bias");
    if (L.input_quantizer) {
      const lsq_params& q = *L.input_quantizer;
      q.grid.validate(fn);
      if (q.scale.size() != 1 || q.channel_axis || q.has_offset() || q.convention != lsq_convention::paper)
        fail<invalid_argument>(fn, "input_quantizer", "per-channel/offset/pytorch",
                               at + "block quantizers are per-tensor LSQ (paper convention, no offset)");
      check_scale(q.scale[0], fn);
    }
    if (l > 0 && layers[l - 1].out_features() != L.in_features())
      fail<length_error>(fn, "in_features", L.in_features(),
                         at + "must equal the previous layer's out_features = " +
                             std::to_string(layers[l - 1].out_features()));
  }
}

// pre-activation of one layer for rows x [B, in_features] with weight w: [B, out_features].
// For conv layers `cols` receives the im2col matrix [B*P, K] (kept for the backward pass).
inline void layer_preactivation(const block_layer& L, const xt::xtensor<float, 2>& w, const xt::xtensor<float, 2>& x,
                                xt::xtensor<float, 2>& cols, xt::xtensor<float, 2>& pre) {
  const std::size_t B = x.shape()[0], out = w.shape()[0];
  if (L.type == block_layer::kind::linear) {
    pre.resize({B, out});
    gemm_nt(x, w, pre);
    if (L.bias.size())
      for (std::size_t b = 0; b < B; ++b)
        for (std::size_t o = 0; o < out; ++o) pre(b, o) += L.bias(o);
    return;
  }
  const conv2d_shape& g = L.conv;
  const std::size_t P = g.positions(), K = g.patch_size();
  cols.resize({B * P, K});
  for (std::size_t b = 0; b < B; ++b) kernels::im2col(x.data() + b * g.image_size(), cols.data() + b * P * K, g);
  xt::xtensor<float, 2> rows = xt::xtensor<float, 2>::from_shape({B * P, out});
  gemm_nt(cols, w, rows);
  pre.resize({B, out * P});
  for (std::size_t b = 0; b < B; ++b) kernels::rows_to_planes(rows.data() + b * P * out, pre.data() + b * out * P, P, out);
  if (L.bias.size())
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t o = 0; o < out; ++o)
        for (std::size_t p = 0; p < P; ++p) pre(b, o * P + p) += L.bias(o);
}

inline void apply_activation(activation act, const xt::xtensor<float, 2>& pre, xt::xtensor<float, 2>& y) {
  y.resize(pre.shape());
  for (std::size_t i = 0; i < pre.size(); ++i) {
    const float v = pre.data()[i];
    y.data()[i] = (act == activation::relu && !(v > 0.0f)) ? 0.0f : v;
  }
}

}  // namespace detail

// Runs a block on x [samples, in_features]: with quantize_activations, every input
// quantizer is applied (p = 1); weights are used as stored. Returns [samples, out_features].
inline xt::xtensor<float, 2> block_forward(const std::vector<block_layer>& layers, const xt::xtensor<float, 2>& x,
                                           bool quantize_activations) {
  const char* fn = "block_forward";
  detail::check_block(layers, fn);
  if (x.shape()[1] != layers.front().in_features())
    detail::fail<length_error>(fn, "x.shape()", detail::shape_string(x.shape()),
                               "must be [samples, " + std::to_string(layers.front().in_features()) + "]");
  xt::xtensor<float, 2> a = x, cols, pre;
  for (const block_layer& L : layers) {
    if (quantize_activations && L.input_quantizer) {
      xt::xarray<float> q = eager::lsq_forward(a, *L.input_quantizer);
      std::copy(q.begin(), q.end(), a.begin());
    }
    detail::layer_preactivation(L, L.weight, a, cols, pre);
    detail::apply_activation(L.act, pre, a);
  }
  return a;
}

namespace detail {
inline double block_error(const xt::xtensor<float, 2>& y, const xt::xtensor<float, 2>& target) {
  double acc = 0.0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    const double d = static_cast<double>(y.data()[i]) - target.data()[i];
    acc += d * d;
  }
  return acc / static_cast<double>(y.shape()[0]);
}
}  // namespace detail

// BRECQ + QDrop reconstruction of one block.
// X: the block input in the full-precision model [samples, in_features]; X_hat: in the
// quantized model (nullptr: X); fisher: [samples, out_features] squared output gradients
// (nullptr: unweighted). Returns the quantized block and a report (errors on the
// calibration data, X_hat input). Throws quant::invalid_argument / length_error /
// domain_error for bad options, shapes or non-finite data.
inline block_result reconstruct_block(const std::vector<block_layer>& layers, const xt::xtensor<float, 2>& X,
                                      const block_options& opt = {}, const xt::xtensor<float, 2>* X_hat = nullptr,
                                      const xt::xtensor<float, 2>* fisher = nullptr) {
  const char* fn = "reconstruct_block";
  opt.validate(fn);
  detail::check_block(layers, fn);
  const std::size_t samples = X.shape()[0], nl = layers.size();
  if (samples == 0) detail::fail<invalid_argument>(fn, "X.shape()", detail::shape_string(X.shape()), "calibration data must have at least one row");
  if (X.shape()[1] != layers.front().in_features())
    detail::fail<length_error>(fn, "X.shape()", detail::shape_string(X.shape()),
                               "must be [samples, " + std::to_string(layers.front().in_features()) + "]");
  if (X_hat && (X_hat->shape()[0] != samples || X_hat->shape()[1] != X.shape()[1]))
    detail::fail<length_error>(fn, "X_hat.shape()", detail::shape_string(X_hat->shape()),
                               "must equal X.shape() = " + detail::shape_string(X.shape()));
  if (opt.batch_size > samples)
    detail::fail<invalid_argument>(fn, "batch_size", opt.batch_size,
                                   "exceeds the " + std::to_string(samples) + " calibration rows");
  detail::require_finite(X.data(), X.size(), fn, "X");
  if (X_hat) detail::require_finite(X_hat->data(), X_hat->size(), fn, "X_hat");
  const xt::xtensor<float, 2>& xq_in = X_hat ? *X_hat : X;

  // FP targets for all rows.
  const xt::xtensor<float, 2> target = block_forward(layers, X, false);
  const std::size_t out_f = target.shape()[1];
  if (fisher) {
    if (fisher->shape()[0] != samples || fisher->shape()[1] != out_f)
      detail::fail<length_error>(fn, "fisher.shape()", detail::shape_string(fisher->shape()),
                                 "must be [" + std::to_string(samples) + ", " + std::to_string(out_f) + "]");
    detail::require_finite(fisher->data(), fisher->size(), fn, "fisher");
  }

  // Per-layer AdaRound state: V, the soft weight, dL/dW_soft, Adam.
  std::vector<block_layer> work = layers;
  std::vector<adaround_variables> vars;
  vars.reserve(nl);
  for (std::size_t l = 0; l < nl; ++l)
    vars.emplace_back(layers[l].weight, layers[l].weight_qparams, opt.learning_rate, fn);
  std::vector<adam> s_opt;
  for (std::size_t l = 0; l < nl; ++l) s_opt.emplace_back(1, adam_options{opt.scale_learning_rate});

  // Error before: round-to-nearest weights, initial quantizers.
  block_result result;
  {
    std::vector<block_layer> rtn = layers;
    for (auto& L : rtn) L.weight = eager::fake_quantize(L.weight, L.weight_qparams);
    result.report.initial_error = detail::block_error(block_forward(rtn, xq_in, true), target);
  }

  const adaround_options sched = opt.as_adaround();
  const std::size_t B = opt.batch_size;
  std::vector<std::size_t> perm(samples);
  for (std::size_t i = 0; i < samples; ++i) perm[i] = i;
  std::vector<xt::xtensor<float, 2>> a(nl + 1), x_in(nl), pre(nl), cols(nl);
  std::vector<std::vector<float>> keep(nl);  // 1 where the quantized value was kept
  xt::xtensor<float, 2> d, dx, tb = xt::xtensor<float, 2>::from_shape({B, out_f});
  xt::xtensor<float, 2> fb = xt::xtensor<float, 2>::from_shape({B, out_f});
  a[0] = xt::xtensor<float, 2>::from_shape({B, X.shape()[1]});

  for (std::size_t k = 0; k < opt.iterations; ++k) {
    detail::sample_rows(perm, B, opt.seed, k);
    detail::gather_rows(xq_in, perm.data(), B, a[0]);
    detail::gather_rows(target, perm.data(), B, tb);
    if (fisher) detail::gather_rows(*fisher, perm.data(), B, fb);
    // forward with QDrop
    for (std::size_t l = 0; l < nl; ++l) {
      const block_layer& L = work[l];
      x_in[l] = a[l];
      if (L.input_quantizer) {
        const xt::xarray<float> q = eager::lsq_forward(a[l], *L.input_quantizer);
        keep[l].resize(a[l].size());
        const std::uint64_t stream = detail::counter_bits64(opt.seed ^ 0x51d7c0a3e2b4f968ull, k * nl + l);
        for (std::size_t i = 0; i < a[l].size(); ++i) {
          const bool kq = opt.qdrop_probability >= 1.0f || detail::counter_uniform(stream, i) < opt.qdrop_probability;
          keep[l][i] = kq ? 1.0f : 0.0f;
          if (kq) x_in[l].data()[i] = q.data()[i];
        }
      }
      detail::layer_preactivation(L, vars[l].soft_weights(), x_in[l], cols[l], pre[l]);
      detail::apply_activation(L.act, pre[l], a[l + 1]);
    }
    // loss and dL/dy
    const xt::xtensor<float, 2>& y = a[nl];
    d.resize(y.shape());
    double loss = 0.0;
    const float two_over_b = 2.0f / static_cast<float>(B);
    for (std::size_t i = 0; i < y.size(); ++i) {
      const float diff = y.data()[i] - tb.data()[i];
      const float f = fisher ? fb.data()[i] : 1.0f;
      loss += static_cast<double>(f) * diff * diff;
      d.data()[i] = two_over_b * f * diff;
    }
    // backward
    const bool warm = k < sched.warmup_iterations();
    const float beta = sched.beta_at(k);
    double reg = 0.0;
    const float lr_s = cosine_decay(opt.scale_learning_rate, k, opt.iterations);
    for (std::size_t li = nl; li-- > 0;) {
      block_layer& L = work[li];
      for (std::size_t i = 0; i < d.size(); ++i)
        if (L.act == activation::relu && !(pre[li].data()[i] > 0.0f)) d.data()[i] = 0.0f;
      const std::size_t out = L.weight.shape()[0];
      const bool need_dx = li > 0 || L.input_quantizer.has_value();
      if (L.type == block_layer::kind::linear) {
        detail::gemm_tn(d, x_in[li], vars[li].gradient());
        if (need_dx) {
          dx.resize({B, L.weight.shape()[1]});
          xt::blas::gemm(d, vars[li].soft_weights(), dx);
        }
      } else {
        const conv2d_shape& g = L.conv;
        const std::size_t P = g.positions(), K = g.patch_size();
        xt::xtensor<float, 2> drows = xt::xtensor<float, 2>::from_shape({B * P, out});
        for (std::size_t b = 0; b < B; ++b)
          kernels::planes_to_rows(d.data() + b * out * P, drows.data() + b * P * out, P, out);
        detail::gemm_tn(drows, cols[li], vars[li].gradient());
        if (need_dx) {
          xt::xtensor<float, 2> dcols = xt::xtensor<float, 2>::from_shape({B * P, K});
          xt::blas::gemm(drows, vars[li].soft_weights(), dcols);
          dx.resize({B, g.image_size()});
          for (std::size_t b = 0; b < B; ++b) kernels::col2im(dcols.data() + b * P * K, dx.data() + b * g.image_size(), g);
        }
      }
      // activation quantizer: split dx between the quantized and the kept-FP elements
      if (L.input_quantizer) {
        xt::xtensor<float, 2> dq = dx;
        for (std::size_t i = 0; i < dq.size(); ++i) {
          dq.data()[i] *= keep[li][i];
          dx.data()[i] *= 1.0f - keep[li][i];
        }
        xt::xtensor<float, 2> dxq;
        const lsq_param_gradients pg = eager::lsq_backward(a[li], dq, *L.input_quantizer, dxq);
        for (std::size_t i = 0; i < dx.size(); ++i) dx.data()[i] += dxq.data()[i];
        if (opt.learn_activation_scales && lr_s > 0.0f) {
          s_opt[li].set_learning_rate(lr_s);
          s_opt[li].step(L.input_quantizer->scale.data(), pg.dscale.data());
          clamp_scale(*L.input_quantizer);
        }
      }
      // AdaRound step for this layer
      reg += vars[li].step(warm ? 0.0f : opt.lambda, beta);
      if (li > 0) std::swap(d, dx);
    }
    if (opt.progress)
      opt.progress(adaround_progress{k + 1, opt.iterations, loss / static_cast<double>(B), warm ? 0.0 : reg, beta, warm});
  }

  // Hard rounding, report.
  result.layers = work;
  for (std::size_t l = 0; l < nl; ++l) {
    result.report.flipped_fraction.push_back(vars[l].flipped_fraction());
    result.report.non_binary_fraction.push_back(vars[l].non_binary_fraction());
    result.layers[l].weight = vars[l].hard_weights();
    result.integer_weights.push_back(vars[l].integer_weights());
  }
  result.report.final_error = detail::block_error(block_forward(result.layers, xq_in, true), target);
  result.report.iterations = opt.iterations;
  return result;
}

}  // namespace quant
