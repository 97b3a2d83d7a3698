// examples/fashion_mnist/compression_methods.hpp — the MLP rows of KURE (quant/kurtosis.hpp)
// and of Quant-Noise + iPQ (quant/quant_noise.hpp, quant/pq.hpp).
//
// KURE (Shkolnik et al. 2020): a second MLP trained exactly like the FP32 one (same seed,
// epochs, batches, Adam schedule) with lambda * KURE added to the loss, lambda = 1.0, target
// kurtosis 1.8, on every layer but the first; cached next to the FP32 weights. Its rows are
// round-to-nearest of every layer with min-max symmetric scales, per tensor and per output
// channel, at W8/W6/W4/W3; each note gives the plain network's accuracy under the same
// quantizer. The "step x0.5-1.5" rows scale the W4 per-channel step sizes by 0.5, 0.75, 1,
// 1.25, 1.5 and report the worst accuracy (the note lists all five): the robustness to a
// mis-set step size that KURE is meant to buy.
//
// Quant-Noise + iPQ (Fan et al. 2020, Stock et al. 2020): the FP32 MLP is fine-tuned with
// proxy Quant-Noise (p = 0.1, blocks of 8 input features, a fresh mask every step), then
// product-quantized layer by layer (K = 256 centroids of d = 8 shared per layer): after each
// stage the quantized layers' centroids move by the average gradient of their subvectors
// and the float layers keep training (still with noise). The "iPQ" row runs the same
// stage-wise schedule from the plain FP32 network. Sizes count indices, centroids (float32
// or int8 with one scale per layer) and float32 biases against the float32 model.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <quant/kurtosis.hpp>
#include <quant/pq.hpp>
#include <quant/quant_noise.hpp>

#include "methods.hpp"

namespace examples {

// ---- KURE ----------------------------------------------------------------------------------

constexpr float kure_lambda = 1.0f;

// Kurtosis of the regularized layers (all but the first).
inline std::vector<double> regularized_kurtosis(const network& net) {
  std::vector<double> k;
  for (std::size_t l = 1; l < net.layers.size(); ++l) k.push_back(quant::kurtosis(net.layers[l].W));
  return k;
}

inline double mean_distance_to_uniform(const std::vector<double>& k) {
  double s = 0.0;
  for (double v : k) s += std::fabs(v - 1.8);
  return k.empty() ? 0.0 : s / static_cast<double>(k.size());
}

struct kure_model {
  network net;
  std::string how;  // "training 17.3 s" or "loaded"
};

// The KURE-trained twin of c.fp32, trained (or loaded from the cache) once per run.
inline const kure_model& kure_network(const model_context& c, const std::shared_ptr<std::unique_ptr<kure_model>>& memo) {
  if (*memo) return **memo;
  std::vector<layer_spec> specs;
  for (const auto& l : c.fp32.layers) specs.push_back(l.spec);
  auto m = std::make_unique<kure_model>();
  m->net = make_network(c.fp32.name + "-kure-lambda1", specs, c.train_cfg.seed);
  const std::string dir = c.cache_dir.empty() ? "" : c.cache_dir + "/" + cache_key(m->net, c.train_cfg);
  const auto t0 = std::chrono::steady_clock::now();
  if (!c.retrain && !dir.empty() && load_cached(m->net, dir)) {
    m->how = "loaded";
  } else {
    train(m->net, c.train, c.train_cfg, [](const network& n, gradients& g) {
      std::vector<const matrix*> w;
      std::vector<matrix*> dw;
      for (std::size_t l = 1; l < n.layers.size(); ++l) w.push_back(&n.layers[l].W), dw.push_back(&g.dW[l]);
      quant::kurtosis_loss_accumulate(w, dw, kure_lambda);
    });
    if (!dir.empty()) save_cached(m->net, dir);
    m->how = "training " + format_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  *memo = std::move(m);
  return **memo;
}

// Test accuracy with every layer's weights rounded to nearest on a symmetric b-bit grid,
// min-max scales per tensor or per output channel, multiplied by step_factor.
inline double rtn_accuracy(const network& net, const split_tensors& test, int bits, bool per_channel,
                           float step_factor = 1.0f) {
  network q = net;
  const quant::grid g = quant::grid::int_signed(bits);
  for (auto& l : q.layers) {
    const quant::qparams p0 = per_channel ? quant::calibrate_minmax(l.W, g, quant::scheme::symmetric, 0)
                                          : quant::calibrate_minmax(l.W, g, quant::scheme::symmetric);
    std::vector<float> s = p0.scales();
    for (auto& v : s) v *= step_factor;
    const quant::qparams p = per_channel ? quant::qparams::per_channel(g, s, p0.zero_points(), 0)
                                         : quant::qparams::per_tensor(g, s[0], p0.zero_points()[0]);
    l.W = quant::eager::fake_quantize(l.W, p);
  }
  return accuracy(q, test);
}

inline std::string percent(double a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100.0 * a);
  return buf;
}

inline result_row run_kure_fp32(const model_context& c, const std::shared_ptr<std::unique_ptr<kure_model>>& memo) {
  const kure_model& m = kure_network(c, memo);
  const std::vector<double> kp = regularized_kurtosis(c.fp32), kk = regularized_kurtosis(m.net);
  std::string note = "kurtosis L1..: plain";
  char buf[160];
  for (double v : kp) std::snprintf(buf, sizeof buf, " %.2f", v), note += buf;
  note += ", KURE";
  for (double v : kk) std::snprintf(buf, sizeof buf, " %.2f", v), note += buf;
  note += "; " + m.how;
  result_row r = make_row("KURE", "KURE", 32, 32, accuracy(m.net, c.test));
  r.note = note;
  if (!(mean_distance_to_uniform(kk) < mean_distance_to_uniform(kp))) {
    std::snprintf(buf, sizeof buf, "KURE kurtosis |K - 1.8| %.3f not below the plain network's %.3f",
                  mean_distance_to_uniform(kk), mean_distance_to_uniform(kp));
    r.check_failure = buf;
  }
  return r;
}

inline result_row run_kure_rtn(const model_context& c, const std::shared_ptr<std::unique_ptr<kure_model>>& memo, int bits,
                               bool per_channel) {
  const kure_model& m = kure_network(c, memo);
  const std::string name = std::string("KURE RTN ") + (per_channel ? "per-channel" : "per-tensor");
  const double plain = rtn_accuracy(c.fp32, c.test, bits, per_channel);
  result_row r = make_row(name, name, bits, 32, rtn_accuracy(m.net, c.test, bits, per_channel));
  char buf[64];
  std::snprintf(buf, sizeof buf, "plain %s (%+.2f)", percent(plain).c_str(), 100.0 * (r.accuracy - plain));
  r.note = buf;
  return r;
}

// W4 per-channel RTN with the step sizes scaled by 0.5 .. 1.5: the worst accuracy, all five
// in the note.
inline result_row run_step_spread(const model_context& c, const std::shared_ptr<std::unique_ptr<kure_model>>& memo,
                                  bool kure) {
  const network& net = kure ? kure_network(c, memo).net : c.fp32;
  double lo = 1.0, hi = 0.0;
  std::string note;
  for (float f : {0.5f, 0.75f, 1.0f, 1.25f, 1.5f}) {
    const double a = rtn_accuracy(net, c.test, 4, true, f);
    lo = std::min(lo, a), hi = std::max(hi, a);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%sx%.3g %.2f", note.empty() ? "" : ", ", f, 100.0 * a);
    note += buf;
  }
  const std::string name = kure ? "KURE step x0.5-1.5" : "RTN step x0.5-1.5";
  result_row r = make_row(name, name, 4, 32, lo);
  char buf[48];
  std::snprintf(buf, sizeof buf, "worst of 5; best %.2f%%: ", 100.0 * hi);
  r.note = buf + note;
  return r;
}

// ---- Quant-Noise + iPQ ---------------------------------------------------------------------

struct ipq_settings {
  float noise_p = 0.1f;
  std::size_t noise_block = 8;
  std::size_t d = 8, k = 256, kmeans_iterations = 20;
  std::size_t noise_steps = 936;  // Quant-Noise fine-tuning: 2 epochs of 128-image batches
  std::size_t stage_steps = 300;  // fine-tuning after each iPQ stage
  float lr = 5e-4f;               // Adam, float layers (cosine-decayed per phase)
  float centroid_lr = 0.5f;       // SGD on the average gradient of each centroid's subvectors
};

// Fine-tunes `net` for `steps` batches: Adam on biases and on the weights of layers iPQ has
// not quantized (those see proxy Quant-Noise when noise_p > 0), the average-gradient
// centroid step on the quantized ones.
inline void finetune(network& net, const split_tensors& train, std::size_t steps, const ipq_settings& s, float noise_p,
                     quant::ipq_stagewise<matrix>* ipq, std::uint64_t seed, const std::string& label) {
  const std::size_t n_layers = net.layers.size(), B = 128;
  std::vector<quant::adam> opt_w, opt_b;
  for (const auto& l : net.layers) {
    opt_w.emplace_back(l.W.size(), quant::adam_options{s.lr});
    opt_b.emplace_back(l.b.size(), quant::adam_options{s.lr});
  }
  auto quantized = [&](std::size_t l) { return ipq && ipq->at(l).quantized; };
  std::mt19937_64 rng(seed ^ 0x9e0153ULL);
  std::vector<std::size_t> idx(train.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  shuffle_indices(idx, rng);
  progress bar(label, steps);
  std::vector<std::uint8_t> labels(B);
  double running = 0.0;
  for (std::size_t t = 0, pos = 0; t < steps; ++t, pos += B) {
    if (pos + B > idx.size()) shuffle_indices(idx, rng), pos = 0;
    const float decay = quant::cosine_decay(1.0f, t, steps);
    // A fresh mask per step and layer; phases have distinct seeds, so no mask repeats.
    std::vector<quant::quant_noise_result<matrix>> noised(n_layers);
    forward_hooks h;
    for (std::size_t l = 0; l < n_layers; ++l) {
      if (noise_p > 0.0f && !quantized(l)) {
        noised[l] = quant::quant_noise(net.layers[l].W, {noise_p, s.noise_block, seed * 1000003 + t * n_layers + l},
                                       quant::proxy_noise{});
        h.weights.push_back(&noised[l].weights);
      } else {
        h.weights.push_back(nullptr);
      }
    }
    std::vector<layer_cache> cache;
    matrix xb = gather_rows(train.x, idx, pos, B);
    for (std::size_t i = 0; i < B; ++i) labels[i] = train.labels[idx[pos + i]];
    const matrix logits = forward(net, std::move(xb), &h, &cache);
    matrix dlogits;
    const double loss = softmax_cross_entropy(logits, labels.data(), dlogits);
    running = t == 0 ? loss : 0.98 * running + 0.02 * loss;
    gradients g = backward(net, cache, std::move(dlogits), &h);
    std::vector<const matrix*> centroid_grads(ipq ? ipq->layer_count() : 0, nullptr);
    for (std::size_t l = 0; l < n_layers; ++l) {
      opt_b[l].set_learning_rate(std::max(s.lr * decay, 1e-12f));
      opt_b[l].step(net.layers[l].b, g.db[l]);
      if (quantized(l)) {
        centroid_grads[l] = &g.dW[l];
        continue;
      }
      if (h.weights[l]) g.dW[l] = quant::quant_noise_backward(g.dW[l], noised[l]);
      opt_w[l].set_learning_rate(std::max(s.lr * decay, 1e-12f));
      opt_w[l].step(net.layers[l].W, g.dW[l]);
    }
    if (ipq) ipq->finetune_step(centroid_grads, s.centroid_lr * decay);
    char buf[48];
    std::snprintf(buf, sizeof buf, "loss %.4f", running);
    bar.update(t + 1, buf);
  }
}

struct ipq_outcome {
  double noise_fp_accuracy = 0.0;  // after Quant-Noise fine-tuning, float weights
  double first_stage_accuracy = 0.0;  // right after quantizing layer 0, before fine-tuning
  double accuracy = 0.0, accuracy_int8 = 0.0;
  std::size_t bytes = 0, bytes_int8 = 0, fp32_bytes = 0;
  double seconds = 0.0;
};

// Quant-Noise fine-tuning (with_noise) and stage-wise iPQ of every layer, first to last.
inline ipq_outcome run_ipq_pipeline(const model_context& c, bool with_noise) {
  const ipq_settings s;
  const auto t0 = std::chrono::steady_clock::now();
  ipq_outcome o;
  network net = c.fp32;
  const std::string tag = std::string(with_noise ? "QN+iPQ " : "iPQ ") + net.name;
  const float p = with_noise ? s.noise_p : 0.0f;
  if (with_noise) {
    finetune(net, c.train, s.noise_steps, s, p, nullptr, c.seed + 7001, tag + " noise");
    o.noise_fp_accuracy = accuracy(net, c.test);
  }
  quant::ipq_stagewise<matrix> ipq;
  std::size_t biases = 0, weights = 0;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    quant::pq_options po;
    po.d = s.d;
    po.k = s.k;
    po.iterations = s.kmeans_iterations;
    po.seed = c.seed + l;
    ipq.add_layer("layer " + std::to_string(l), net.layers[l].W, po, l);
    biases += net.layers[l].b.size();
    weights += net.layers[l].W.size();
  }
  for (std::size_t stage = 0; stage < ipq.stage_count(); ++stage) {
    ipq.quantize_stage(stage);
    if (stage == 0) o.first_stage_accuracy = accuracy(net, c.test);
    finetune(net, c.train, s.stage_steps, s, p, &ipq, c.seed + 7100 + stage, tag + " stage " + std::to_string(stage));
  }
  o.accuracy = accuracy(net, c.test);
  // The same codebooks with int8 centroids (one scale per layer), assignments unchanged.
  network q8 = net;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const auto& L = ipq.at(l);
    const xt::xtensor<float, 2> w = quant::pq_decode(quant::dequantize_centroids(quant::quantize_centroids(L.codebook)), L.indices);
    std::copy(w.begin(), w.end(), q8.layers[l].W.begin());
  }
  o.accuracy_int8 = accuracy(q8, c.test);
  const quant::pq_size_report z = ipq.size();
  o.bytes = z.total_bytes() + 4 * biases;
  o.bytes_int8 = z.total_bytes_int8() + 4 * biases;
  o.fp32_bytes = 4 * (weights + biases);
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return o;
}

// One pipeline run per variant, shared by its float- and int8-centroid rows.
using ipq_memo = std::shared_ptr<std::map<bool, ipq_outcome>>;

inline result_row run_ipq_row(const model_context& c, const ipq_memo& memo, bool with_noise, bool int8_centroids) {
  if (!memo->count(with_noise)) (*memo)[with_noise] = run_ipq_pipeline(c, with_noise);
  const ipq_outcome& o = memo->at(with_noise);
  const std::string name = std::string(with_noise ? "QN+iPQ" : "iPQ") + (int8_centroids ? " int8 c." : "");
  // W "1": one 8-bit index per 8 weights.
  result_row r = make_row(name, name, 1, 32, int8_centroids ? o.accuracy_int8 : o.accuracy);
  const std::size_t bytes = int8_centroids ? o.bytes_int8 : o.bytes;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%.1f KB (FP32 %.1f KB), x%.1f", bytes / 1024.0, o.fp32_bytes / 1024.0,
                double(o.fp32_bytes) / double(bytes));
  r.note = buf;
  if (!int8_centroids) {
    std::snprintf(buf, sizeof buf, "; after stage 0 %.2f%%", 100.0 * o.first_stage_accuracy);
    r.note += buf;
    if (with_noise) {
      std::snprintf(buf, sizeof buf, "; QN float %.2f%%", 100.0 * o.noise_fp_accuracy);
      r.note += buf;
    }
    std::snprintf(buf, sizeof buf, "; pipeline %.1f s", o.seconds);
    r.note += buf;
  } else if (std::fabs(o.accuracy_int8 - o.accuracy) > 0.01) {
    std::snprintf(buf, sizeof buf, "%s: int8 centroids %.2f%% vs float %.2f%% differ by more than 1 point", name.c_str(),
                  100.0 * o.accuracy_int8, 100.0 * o.accuracy);
    r.check_failure = buf;
  }
  return r;
}

// ---- registry lines --------------------------------------------------------------------

inline void add_compression_rows(std::vector<row_def>& rows) {
  auto kure = std::make_shared<std::unique_ptr<kure_model>>();
  rows.push_back({"mlp", "KURE FP32", [kure](const model_context& c) { return run_kure_fp32(c, kure); }});
  for (bool per_channel : {false, true})
    for (int b : {8, 6, 4, 3})
      rows.push_back({"mlp", wa_label(per_channel ? "KURE RTN per-channel" : "KURE RTN per-tensor", b, 32),
                      [kure, b, per_channel](const model_context& c) { return run_kure_rtn(c, kure, b, per_channel); },
                      per_channel && b == 4});
  for (bool k : {false, true})
    rows.push_back({"mlp", k ? "KURE step x0.5-1.5 W4" : "RTN step x0.5-1.5 W4",
                    [kure, k](const model_context& c) { return run_step_spread(c, kure, k); }, false});
  auto ipq = std::make_shared<std::map<bool, ipq_outcome>>();
  for (bool noise : {false, true})
    for (bool int8c : {false, true})
      rows.push_back({"mlp", std::string(noise ? "QN+iPQ" : "iPQ") + (int8c ? " int8" : ""),
                      [ipq, noise, int8c](const model_context& c) { return run_ipq_row(c, ipq, noise, int8c); }, false});
}

}  // namespace examples
