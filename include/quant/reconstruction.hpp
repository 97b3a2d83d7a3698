// quant/reconstruction.hpp — BRECQ block reconstruction with QDrop (docs/adaround.md;
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
// (detail::counter_uniform keyed by the seed, the iteration and the quantizer's index;
// element index = flat index in the mini-batch), so results are identical for any thread
// count. After reconstruction p = 1 (always quantized). p = 1 during reconstruction is
// plain BRECQ. Gradients: x_q branch through LSQ's straight-through backward (dx and ds),
// x branch identity; weights through dW_soft/dV (adaround.hpp); ReLU 1[pre > 0].
//
// Two ways in, one loop (detail::block_engine):
//  * reconstruct_block(layers, X, ...): a chain of block_layer (Linear / Conv2d with ReLU
//    or identity and optional input quantizers), forward and backward written here.
//    Activations travel as row-major [samples, features] matrices; a conv layer's
//    features are its C*H*W input in NCHW order (conv outputs come back as
//    [samples, out*OH*OW]).
//  * reconstruct_block(callbacks, weights, quantizers, X, ...): any block. The user's
//    forward/backward see a block_pass that hands out the weight of each layer (FP,
//    soft or hard-rounded), applies the activation quantizers (QDrop included) and
//    their backward, and receives dL/dW_soft; quant owns the AdaRound variables, the
//    regularizer and beta schedule, Adam, the QDrop masks, mini-batches and the loss.
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

#include <xtensor/xtensor.hpp>

#include "adaround.hpp"
#include "detail/blas_gemm.hpp"
#include "detail/checks.hpp"
#include "detail/counter_random.hpp"
#include "detail/row_sampling.hpp"
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

// Options of reconstruct_block (defaults: docs/adaround.md). The schedule fields (warmup,
// beta_start, beta_end, beta_schedule) come from adaround_schedule, as in adaround_options.
struct block_options : adaround_schedule {
  std::size_t iterations = 20000;  // BRECQ / QDrop default
  std::size_t batch_size = 32;     // samples (rows of X) per iteration
  float lambda = 0.01f;
  float learning_rate = 1e-3f;        // Adam on every V
  float scale_learning_rate = 4e-5f;  // Adam on the activation step sizes, cosine-decayed to 0
  bool learn_activation_scales = true;
  float qdrop_probability = 0.5f;  // p: keep the quantized value with probability p (1 = BRECQ, no drop)
  std::uint64_t seed = 0;          // mini-batches and QDrop masks
  std::function<void(const adaround_progress&)> progress;  // after every iteration (regularizer summed over layers)

  void validate(const char* function) const {
    detail::validate_adaround_loop(function, iterations, batch_size, lambda, *this, learning_rate);
    if (!(std::isfinite(scale_learning_rate) && scale_learning_rate > 0.0f))
      detail::fail<invalid_argument>(function, "scale_learning_rate", scale_learning_rate, "must be finite and > 0");
    if (!(qdrop_probability > 0.0f && qdrop_probability <= 1.0f))
      detail::fail<invalid_argument>(function, "qdrop_probability", qdrop_probability, "must be in (0, 1]");
  }
  using adaround_schedule::beta_at;
  using adaround_schedule::warmup_iterations;
  // The schedule over this->iterations.
  std::size_t warmup_iterations() const noexcept { return warmup_iterations(iterations); }
  float beta_at(std::size_t k) const noexcept { return beta_at(k, iterations); }

  [[deprecated("block_options is an adaround_schedule: use its beta_at(k) / warmup_iterations()")]]
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

// ====================================================================================
// Custom blocks: the user supplies forward/backward, quant owns everything else
// ====================================================================================

// One weight tensor of a custom block that AdaRound rounds: W [out, in] as the user's
// GEMMs consume it (conv: [out, C*KH*KW]) and its grid/scales (any granularity, fixed).
struct block_weight {
  xt::xtensor<float, 2> weight;
  quant::qparams weight_qparams;
};

class block_pass;

// A user-defined block (BRECQ with your own layers). quant calls
//   forward(pass, x, y)  x [rows, in_features] -> y [rows, out_features] (resize y as
//                        needed). Use pass.weight(l) as the weight of layer l (the FP
//                        weight, the soft weight or the hard-rounded weight, depending on
//                        the pass) and run every activation through
//                        pass.quantize(j, a) where quantizer j sits (a no-op in the
//                        full-precision pass). Rows may be a mini-batch or all
//                        calibration rows.
//   backward(pass, dy)   after a reconstruction forward on the same pass, with
//                        dy = dL/dy [rows, out_features]: write dL/dW_soft of every layer
//                        into pass.weight_gradient(l) (zeroed before the call) and, going
//                        backwards, call pass.quantize_backward(j, d) on the gradient
//                        that reaches the output of each quantizer j used in the forward
//                        (it turns d into dL/d input of the quantizer and accumulates
//                        dL/d step size).
// quant owns the AdaRound variables, the regularizer and its beta schedule, Adam (V and
// the step sizes), the QDrop masks, mini-batches and the (Fisher-weighted) loss.
struct block_callbacks {
  std::function<void(block_pass&, const xt::xtensor<float, 2>&, xt::xtensor<float, 2>&)> forward;
  std::function<void(block_pass&, const xt::xtensor<float, 2>&)> backward;
};

// What reconstruct_block returns for a custom block.
struct block_reconstruction {
  std::vector<xt::xtensor<std::int32_t, 2>> integer_weights;  // per weight, on its grid
  std::vector<xt::xtensor<float, 2>> weights;                 // fake-quantized s (q - z)
  std::vector<lsq_params> activation_quantizers;              // with the learned step sizes
  block_report report;
};

namespace detail {
struct block_engine;
}

// The view of one forward (and backward) that quant hands to the callbacks.
class block_pass {
 public:
  enum class stage {
    full_precision,  // FP weights, quantizers off: the targets
    reconstruction,  // soft weights, quantizers with QDrop (probability p of keeping x_q)
    quantized        // RTN or hard-rounded weights, quantizers always on (p = 1): the reports
  };

  stage mode() const noexcept { return stage_; }
  bool quantize_activations() const noexcept { return stage_ != stage::full_precision; }
  std::size_t iteration() const noexcept { return k_; }  // 0-based, reconstruction passes
  std::size_t layers() const noexcept { return weights_.size(); }
  std::size_t quantizers() const noexcept { return quantizers_->size(); }

  // The weight of layer l to use in this pass.
  const xt::xtensor<float, 2>& weight(std::size_t l) const {
    check_index(l, layers(), "weight", "l");
    return *weights_[l];
  }
  // dL/dW_soft of layer l (shaped like the weight, zero on entry to backward).
  xt::xtensor<float, 2>& weight_gradient(std::size_t l) {
    if (stage_ != stage::reconstruction)
      detail::fail<invalid_argument>("block_pass::weight_gradient", "mode", "not reconstruction",
                                     "gradients exist only in reconstruction passes");
    check_index(l, layers(), "weight_gradient", "l");
    return (*grads_)[l];
  }

  // Activation quantizer j on `a` in place (per-tensor LSQ). Reconstruction passes keep
  // the quantized value element by element with probability p (QDrop) and remember what
  // quantize_backward needs; each quantizer may be used once per pass.
  void quantize(std::size_t j, xt::xtensor<float, 2>& a);
  // d = dL/d(output of quantizer j) -> dL/d(input), in place; adds dL/ds_j to the step
  // size's gradient.
  void quantize_backward(std::size_t j, xt::xtensor<float, 2>& d);

 private:
  friend struct detail::block_engine;
  void check_index(std::size_t i, std::size_t n, const char* fn, const char* arg) const {
    if (i >= n)
      detail::fail<length_error>((std::string("block_pass::") + fn).c_str(), arg, i,
                                 "must be < " + std::to_string(n));
  }

  stage stage_ = stage::full_precision;
  std::size_t k_ = 0;
  std::uint64_t seed_ = 0;
  float p_ = 1.0f;
  std::vector<const xt::xtensor<float, 2>*> weights_;
  std::vector<xt::xtensor<float, 2>>* grads_ = nullptr;
  const std::vector<lsq_params>* quantizers_ = nullptr;
  // per quantizer: input of the last forward, QDrop keep mask, used flag, dL/ds
  std::vector<xt::xtensor<float, 2>> inputs_;
  std::vector<std::vector<float>> keep_;
  std::vector<char> used_;
  std::vector<float> dscale_;
};

inline void block_pass::quantize(std::size_t j, xt::xtensor<float, 2>& a) {
  const char* fn = "block_pass::quantize";
  check_index(j, quantizers(), "quantize", "j");
  if (stage_ == stage::full_precision) return;
  if (used_[j]) detail::fail<invalid_argument>(fn, "j", j, "each quantizer may be used once per pass");
  used_[j] = 1;
  const xt::xarray<float> q = eager::lsq_forward(a, (*quantizers_)[j]);
  if (stage_ == stage::quantized || p_ >= 1.0f) {
    if (stage_ == stage::reconstruction) {
      inputs_[j] = a;
      keep_[j].assign(a.size(), 1.0f);
    }
    std::copy(q.begin(), q.end(), a.begin());
    return;
  }
  inputs_[j] = a;
  keep_[j].resize(a.size());
  const std::uint64_t stream = detail::counter_bits64(seed_ ^ 0x51d7c0a3e2b4f968ull, k_ * quantizers() + j);
  for (std::size_t i = 0; i < a.size(); ++i) {
    const bool kq = detail::counter_uniform(stream, i) < p_;
    keep_[j][i] = kq ? 1.0f : 0.0f;
    if (kq) a.data()[i] = q.data()[i];
  }
}

inline void block_pass::quantize_backward(std::size_t j, xt::xtensor<float, 2>& d) {
  const char* fn = "block_pass::quantize_backward";
  check_index(j, quantizers(), "quantize_backward", "j");
  if (stage_ != stage::reconstruction || !used_[j])
    detail::fail<invalid_argument>(fn, "j", j, "needs a reconstruction forward that used this quantizer");
  if (d.size() != inputs_[j].size())
    detail::fail<length_error>(fn, "d.shape()", detail::shape_string(d.shape()),
                               "must equal the quantizer's input shape " + detail::shape_string(inputs_[j].shape()));
  // x_q branch through LSQ's straight-through backward, the kept-FP branch as identity
  xt::xtensor<float, 2> dq = d;
  for (std::size_t i = 0; i < dq.size(); ++i) {
    dq.data()[i] *= keep_[j][i];
    d.data()[i] *= 1.0f - keep_[j][i];
  }
  xt::xtensor<float, 2> dxq;
  const lsq_param_gradients pg = eager::lsq_backward(inputs_[j], dq, (*quantizers_)[j], dxq);
  for (std::size_t i = 0; i < d.size(); ++i) d.data()[i] += dxq.data()[i];
  dscale_[j] += pg.dscale[0];
}

namespace detail {

inline void check_block_quantizer(const lsq_params& q, const char* fn, const std::string& at) {
  q.grid.validate(fn);
  if (q.scale.size() != 1 || q.channel_axis || q.has_offset() || q.convention != lsq_convention::paper)
    fail<invalid_argument>(fn, "input_quantizer", "per-channel/offset/pytorch",
                           at + "block quantizers are per-tensor LSQ (paper convention, no offset)");
  check_scale(q.scale[0], fn);
}

// The reconstruction loop shared by custom and built-in blocks.
struct block_engine {
  static void begin(block_pass& pass, block_pass::stage s, const std::vector<const xt::xtensor<float, 2>*>& w) {
    pass.stage_ = s;
    pass.weights_ = w;
    std::fill(pass.used_.begin(), pass.used_.end(), 0);
    std::fill(pass.dscale_.begin(), pass.dscale_.end(), 0.0f);
  }

  static void forward(const block_callbacks& cb, block_pass& pass, const xt::xtensor<float, 2>& x,
                      xt::xtensor<float, 2>& y, const char* fn) {
    cb.forward(pass, x, y);
    if (y.shape()[0] != x.shape()[0])
      fail<length_error>(fn, "forward: y.shape()", shape_string(y.shape()),
                         "must have one row per input row (" + std::to_string(x.shape()[0]) + ")");
  }

  static double error(const xt::xtensor<float, 2>& y, const xt::xtensor<float, 2>& t, const char* fn) {
    if (y.shape()[1] != t.shape()[1])
      fail<length_error>(fn, "forward: y.shape()", shape_string(y.shape()),
                         "the block's output width changed from " + std::to_string(t.shape()[1]));
    double acc = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) {
      const double d = static_cast<double>(y.data()[i]) - t.data()[i];
      acc += d * d;
    }
    return acc / static_cast<double>(y.shape()[0]);
  }

  static block_reconstruction run(const block_callbacks& cb, const std::vector<block_weight>& weights,
                                  const std::vector<lsq_params>& quantizers, const xt::xtensor<float, 2>& X,
                                  const block_options& opt, const xt::xtensor<float, 2>* X_hat,
                                  const xt::xtensor<float, 2>* fisher, const char* fn) {
    opt.validate(fn);
    if (!cb.forward || !cb.backward)
      fail<invalid_argument>(fn, "callbacks", "empty", "forward and backward must both be set");
    if (weights.empty()) fail<invalid_argument>(fn, "weights.size()", 0, "a block needs at least one weight");
    for (std::size_t l = 0; l < weights.size(); ++l) {
      if (weights[l].weight.size() == 0)
        fail<invalid_argument>(fn, "weight.shape()", shape_string(weights[l].weight.shape()),
                               "weight " + std::to_string(l) + ": must be non-empty");
    }
    for (std::size_t j = 0; j < quantizers.size(); ++j)
      check_block_quantizer(quantizers[j], fn, "quantizer " + std::to_string(j) + ": ");
    const std::size_t samples = X.shape()[0], nl = weights.size(), nq = quantizers.size();
    if (samples == 0 || X.shape()[1] == 0)
      fail<invalid_argument>(fn, "X.shape()", shape_string(X.shape()), "calibration data must be non-empty");
    if (X_hat && (X_hat->shape()[0] != samples || X_hat->shape()[1] != X.shape()[1]))
      fail<length_error>(fn, "X_hat.shape()", shape_string(X_hat->shape()),
                         "must equal X.shape() = " + shape_string(X.shape()));
    if (opt.batch_size > samples)
      fail<invalid_argument>(fn, "batch_size", opt.batch_size,
                             "exceeds the " + std::to_string(samples) + " calibration rows");
    require_finite(X.data(), X.size(), fn, "X");
    if (X_hat) require_finite(X_hat->data(), X_hat->size(), fn, "X_hat");
    const xt::xtensor<float, 2>& xq_in = X_hat ? *X_hat : X;

    std::vector<adaround_variables> vars;
    vars.reserve(nl);
    for (const block_weight& w : weights)
      vars.push_back(adaround_variables_access::make(w.weight, w.weight_qparams, opt.learning_rate, fn));
    std::vector<lsq_params> q = quantizers;
    std::vector<xt::xtensor<float, 2>> grads(nl);
    for (std::size_t l = 0; l < nl; ++l) grads[l] = xt::zeros<float>(weights[l].weight.shape());

    block_pass pass;
    pass.seed_ = opt.seed;
    pass.p_ = opt.qdrop_probability;
    pass.grads_ = &grads;
    pass.quantizers_ = &q;
    pass.inputs_.resize(nq);
    pass.keep_.resize(nq);
    pass.used_.assign(nq, 0);
    pass.dscale_.assign(nq, 0.0f);
    std::vector<const xt::xtensor<float, 2>*> w_fp(nl), w_soft(nl), w_q(nl);
    for (std::size_t l = 0; l < nl; ++l) {
      w_fp[l] = &weights[l].weight;
      w_soft[l] = &vars[l].soft_weights();
    }

    // FP targets for all rows, then the error before: RTN weights, initial quantizers.
    xt::xtensor<float, 2> target, y;
    begin(pass, block_pass::stage::full_precision, w_fp);
    forward(cb, pass, X, target, fn);
    require_finite(target.data(), target.size(), fn, "forward(X) (the FP targets)");
    const std::size_t out_f = target.shape()[1];
    if (fisher) {
      if (fisher->shape()[0] != samples || fisher->shape()[1] != out_f)
        fail<length_error>(fn, "fisher.shape()", shape_string(fisher->shape()),
                           "must be [" + std::to_string(samples) + ", " + std::to_string(out_f) + "]");
      require_finite(fisher->data(), fisher->size(), fn, "fisher");
    }
    block_reconstruction result;
    {
      std::vector<xt::xtensor<float, 2>> rtn(nl);
      for (std::size_t l = 0; l < nl; ++l) {
        rtn[l] = eager::fake_quantize(weights[l].weight, weights[l].weight_qparams);
        w_q[l] = &rtn[l];
      }
      begin(pass, block_pass::stage::quantized, w_q);
      forward(cb, pass, xq_in, y, fn);
      result.report.initial_error = error(y, target, fn);
    }

    const std::size_t B = opt.batch_size;
    std::vector<std::size_t> perm(samples);
    for (std::size_t i = 0; i < samples; ++i) perm[i] = i;
    std::vector<adam> s_opt;
    for (std::size_t j = 0; j < nq; ++j) s_opt.emplace_back(1, adam_options{opt.scale_learning_rate});
    xt::xtensor<float, 2> xb = xt::xtensor<float, 2>::from_shape({B, X.shape()[1]});
    xt::xtensor<float, 2> tb = xt::xtensor<float, 2>::from_shape({B, out_f});
    xt::xtensor<float, 2> fb = xt::xtensor<float, 2>::from_shape({B, out_f});
    xt::xtensor<float, 2> dy = xt::xtensor<float, 2>::from_shape({B, out_f});

    const beside_blas blas_scope;  // quant's loops beside BLAS threads (docs/threading.md)
    for (std::size_t k = 0; k < opt.iterations; ++k) {
      sample_rows(perm, B, opt.seed, k);
      gather_rows(xq_in, perm.data(), B, xb);
      gather_rows(target, perm.data(), B, tb);
      if (fisher) gather_rows(*fisher, perm.data(), B, fb);
      begin(pass, block_pass::stage::reconstruction, w_soft);
      pass.k_ = k;
      forward(cb, pass, xb, y, fn);
      if (y.shape()[1] != out_f) error(y, target, fn);  // throws: the width changed
      // loss L = (1/B) sum F (y - t)^2 and dL/dy
      double loss = 0.0;
      const float two_over_b = 2.0f / static_cast<float>(B);
      for (std::size_t i = 0; i < y.size(); ++i) {
        const float diff = y.data()[i] - tb.data()[i];
        const float f = fisher ? fb.data()[i] : 1.0f;
        loss += static_cast<double>(f) * diff * diff;
        dy.data()[i] = two_over_b * f * diff;
      }
      for (auto& g : grads) std::fill(g.begin(), g.end(), 0.0f);
      cb.backward(pass, dy);
      // updates: step sizes (cosine-decayed Adam), then every layer's V
      const float lr_s = cosine_decay(opt.scale_learning_rate, k, opt.iterations);
      if (opt.learn_activation_scales && lr_s > 0.0f)
        for (std::size_t j = 0; j < nq; ++j) {
          if (!pass.used_[j]) continue;
          s_opt[j].set_learning_rate(lr_s);
          s_opt[j].step(q[j].scale.data(), &pass.dscale_[j]);
          clamp_scale(q[j]);
        }
      const bool warm = k < opt.warmup_iterations();
      const float beta = opt.beta_at(k);
      double reg = 0.0;
      for (std::size_t l = 0; l < nl; ++l) {
        std::copy(grads[l].begin(), grads[l].end(), vars[l].gradient().begin());
        reg += vars[l].step(warm ? 0.0f : opt.lambda, beta);
      }
      if (opt.progress)
        opt.progress(adaround_progress{k + 1, opt.iterations, loss / static_cast<double>(B), reg, beta, warm});
    }

    // Hard rounding, learned quantizers, report.
    for (std::size_t l = 0; l < nl; ++l) {
      result.report.flipped_fraction.push_back(vars[l].flipped_fraction());
      result.report.non_binary_fraction.push_back(vars[l].non_binary_fraction());
      result.weights.push_back(vars[l].hard_weights());
      result.integer_weights.push_back(vars[l].integer_weights());
    }
    for (std::size_t l = 0; l < nl; ++l) w_q[l] = &result.weights[l];
    result.activation_quantizers = q;
    begin(pass, block_pass::stage::quantized, w_q);
    forward(cb, pass, xq_in, y, fn);
    result.report.final_error = error(y, target, fn);
    result.report.iterations = opt.iterations;
    return result;
  }
};

}  // namespace detail

// BRECQ + QDrop reconstruction of a custom block (see block_callbacks): `weights` are the
// tensors AdaRound rounds (the callbacks see them as pass.weight(l)), `activation_quantizers`
// the per-tensor LSQ quantizers the callbacks apply with pass.quantize(j, ...) (their step
// sizes are learned). X [samples, in_features] the block input in the FP model, X_hat in
// the quantized model (nullptr: X), fisher [samples, out_features] squared output
// gradients (nullptr: unweighted). The targets and both reported errors run the forward
// over all calibration rows at once. Throws quant::invalid_argument / length_error /
// domain_error for bad options, shapes, empty callbacks or non-finite data.
inline block_reconstruction reconstruct_block(const block_callbacks& block, const std::vector<block_weight>& weights,
                                              const std::vector<lsq_params>& activation_quantizers,
                                              const xt::xtensor<float, 2>& X, const block_options& opt = {},
                                              const xt::xtensor<float, 2>* X_hat = nullptr,
                                              const xt::xtensor<float, 2>* fisher = nullptr) {
  return detail::block_engine::run(block, weights, activation_quantizers, X, opt, X_hat, fisher, "reconstruct_block");
}

// ====================================================================================
// Built-in Linear / Conv2d + ReLU blocks, through the same machinery
// ====================================================================================
namespace detail {

// The callbacks of a chain of block_layer (forward and backward with im2col for conv
// layers). Buffers live here, sized on first use.
class layer_block {
 public:
  explicit layer_block(const std::vector<block_layer>& layers) : layers_(&layers), n_(layers.size()) {
    qidx_.assign(n_, npos);
    for (std::size_t l = 0, j = 0; l < n_; ++l)
      if (layers[l].input_quantizer) qidx_[l] = j++;
    x_in_.resize(n_);
    pre_.resize(n_);
    cols_.resize(n_);
    a_.resize(n_ + 1);
  }
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  std::vector<lsq_params> quantizers() const {
    std::vector<lsq_params> q;
    for (const block_layer& L : *layers_)
      if (L.input_quantizer) q.push_back(*L.input_quantizer);
    return q;
  }
  std::vector<block_weight> weights() const {
    std::vector<block_weight> w;
    for (const block_layer& L : *layers_) w.push_back(block_weight{L.weight, L.weight_qparams});
    return w;
  }
  block_callbacks callbacks() {
    block_callbacks cb;
    cb.forward = [this](block_pass& p, const xt::xtensor<float, 2>& x, xt::xtensor<float, 2>& y) { forward(p, x, y); };
    cb.backward = [this](block_pass& p, const xt::xtensor<float, 2>& dy) { backward(p, dy); };
    return cb;
  }

  void forward(block_pass& pass, const xt::xtensor<float, 2>& x, xt::xtensor<float, 2>& y) {
    const std::vector<block_layer>& layers = *layers_;
    for (std::size_t l = 0; l < n_; ++l) {
      x_in_[l] = l == 0 ? x : a_[l];
      if (qidx_[l] != npos) pass.quantize(qidx_[l], x_in_[l]);
      layer_preactivation(layers[l], pass.weight(l), x_in_[l], cols_[l], pre_[l]);
      apply_activation(layers[l].act, pre_[l], l + 1 == n_ ? y : a_[l + 1]);
    }
  }

  void backward(block_pass& pass, const xt::xtensor<float, 2>& dy) {
    const std::vector<block_layer>& layers = *layers_;
    d_ = dy;
    const std::size_t B = dy.shape()[0];
    for (std::size_t li = n_; li-- > 0;) {
      const block_layer& L = layers[li];
      for (std::size_t i = 0; i < d_.size(); ++i)
        if (L.act == activation::relu && !(pre_[li].data()[i] > 0.0f)) d_.data()[i] = 0.0f;
      const std::size_t out = L.weight.shape()[0];
      const bool need_dx = li > 0 || qidx_[li] != npos;
      const xt::xtensor<float, 2>& w = pass.weight(li);
      if (L.type == block_layer::kind::linear) {
        gemm_tn(d_, x_in_[li], pass.weight_gradient(li));
        if (need_dx) {
          dx_.resize({B, L.weight.shape()[1]});
          gemm_nn(d_, w, dx_);
        }
      } else {
        const conv2d_shape& g = L.conv;
        const std::size_t P = g.positions(), K = g.patch_size();
        drows_.resize({B * P, out});
        for (std::size_t b = 0; b < B; ++b)
          kernels::planes_to_rows(d_.data() + b * out * P, drows_.data() + b * P * out, P, out);
        gemm_tn(drows_, cols_[li], pass.weight_gradient(li));
        if (need_dx) {
          dcols_.resize({B * P, K});
          gemm_nn(drows_, w, dcols_);
          dx_.resize({B, g.image_size()});
          for (std::size_t b = 0; b < B; ++b)
            kernels::col2im(dcols_.data() + b * P * K, dx_.data() + b * g.image_size(), g);
        }
      }
      if (qidx_[li] != npos) pass.quantize_backward(qidx_[li], dx_);
      if (li > 0) std::swap(d_, dx_);
    }
  }

 private:
  const std::vector<block_layer>* layers_;
  std::size_t n_;
  std::vector<std::size_t> qidx_;  // layer -> quantizer index (npos: none)
  std::vector<xt::xtensor<float, 2>> x_in_, pre_, cols_, a_;
  xt::xtensor<float, 2> d_, dx_, drows_, dcols_;
};

}  // namespace detail

// BRECQ + QDrop reconstruction of a chain of Linear / Conv2d layers (block_layer).
// X: the block input in the full-precision model [samples, in_features]; X_hat: in the
// quantized model (nullptr: X); fisher: [samples, out_features] squared output gradients
// (nullptr: unweighted). Returns the quantized block and a report (errors on the
// calibration data, X_hat input). The same loop as the custom-block overload, with
// quant's own forward/backward. Throws quant::invalid_argument / length_error /
// domain_error for bad options, shapes or non-finite data.
inline block_result reconstruct_block(const std::vector<block_layer>& layers, const xt::xtensor<float, 2>& X,
                                      const block_options& opt = {}, const xt::xtensor<float, 2>* X_hat = nullptr,
                                      const xt::xtensor<float, 2>* fisher = nullptr) {
  const char* fn = "reconstruct_block";
  opt.validate(fn);
  detail::check_block(layers, fn);
  if (X.shape()[0] > 0 && X.shape()[1] != layers.front().in_features())
    detail::fail<length_error>(fn, "X.shape()", detail::shape_string(X.shape()),
                               "must be [samples, " + std::to_string(layers.front().in_features()) + "]");
  detail::layer_block block(layers);
  block_reconstruction r =
      detail::block_engine::run(block.callbacks(), block.weights(), block.quantizers(), X, opt, X_hat, fisher, fn);
  block_result result;
  result.layers = layers;
  for (std::size_t l = 0, j = 0; l < layers.size(); ++l) {
    result.layers[l].weight = std::move(r.weights[l]);
    if (result.layers[l].input_quantizer) *result.layers[l].input_quantizer = r.activation_quantizers[j++];
  }
  result.integer_weights = std::move(r.integer_weights);
  result.report = std::move(r.report);
  return result;
}

}  // namespace quant
