// examples/fashion_mnist/trainer.hpp — data preparation, seeded training with Adam, the
// FP32 weight cache, and test accuracy.
#pragma once

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <quant/optim.hpp>
#include <xtensor/xarray.hpp>

#include "../common/idx_reader.hpp"
#include "../common/npy_io.hpp"
#include "../common/progress.hpp"
#include "network.hpp"

namespace examples {

// Fashion-MNIST normalisation (training-set mean and standard deviation of the pixels/255).
constexpr float fmnist_mean = 0.2860f;
constexpr float fmnist_std = 0.3530f;

struct split_tensors {
  matrix x;                          // [n, 784], normalised
  std::vector<std::uint8_t> labels;  // [n]
  std::size_t size() const { return labels.size(); }
};

inline split_tensors to_tensors(const dataset_split& s) {
  split_tensors t;
  const std::size_t n = s.images.count, d = s.images.rows * s.images.cols;
  t.x = matrix::from_shape({n, d});
  const float inv = 1.0f / fmnist_std;
  for (std::size_t i = 0; i < n * d; ++i)
    t.x.data()[i] = (static_cast<float>(s.images.pixels[i]) * (1.0f / 255.0f) - fmnist_mean) * inv;
  t.labels = s.labels.labels;
  return t;
}

// The same split as model bundles take it (bundle_export.hpp): images [n, 1, 28, 28], labels int64.
struct nchw_split {
  xt::xarray<float> x;
  std::vector<std::int64_t> labels;
};

inline nchw_split to_nchw(const split_tensors& s) {
  nchw_split out;
  out.x = xt::xarray<float>::from_shape({s.size(), 1, 28, 28});
  std::copy(s.x.begin(), s.x.end(), out.x.begin());
  out.labels.assign(s.labels.begin(), s.labels.end());
  return out;
}

// Rows idx[first .. first+count) of x, as a batch.
inline matrix gather_rows(const matrix& x, const std::vector<std::size_t>& idx, std::size_t first, std::size_t count) {
  const std::size_t d = x.shape()[1];
  matrix out = matrix::from_shape({count, d});
  for (std::size_t i = 0; i < count; ++i)
    std::copy(x.data() + idx[first + i] * d, x.data() + (idx[first + i] + 1) * d, out.data() + i * d);
  return out;
}

// Fisher-Yates with a 64-bit Mersenne twister; the index is drawn by 128-bit
// multiply-shift so the permutation is the same with any standard library.
inline void shuffle_indices(std::vector<std::size_t>& idx, std::mt19937_64& rng) {
  for (std::size_t i = idx.size(); i > 1; --i) {
    const unsigned __int128 m = static_cast<unsigned __int128>(rng()) * i;
    std::swap(idx[i - 1], idx[static_cast<std::size_t>(m >> 64)]);
  }
}

struct train_config {
  std::size_t epochs = 8;
  std::size_t batch = 128;
  float learning_rate = 2e-3f;  // cosine-decayed to 0 over the run
  std::uint64_t seed = 1;
};

// Adds a regularizer's gradient to the task gradients of a step (e.g. KURE); may be empty.
using gradient_hook = std::function<void(const network&, gradients&)>;

// The seeded minibatch schedule the trainers share: cfg.epochs passes over train_set in a
// fresh shuffle each (the last partial batch dropped), the learning rate cosine-decayed over
// all steps, a progress bar titled `title` showing a running loss. step(lr, batch, labels)
// runs one optimisation step on the batch's rows and labels and returns its loss.
template <class Step>
void run_minibatches(const std::string& title, const split_tensors& train_set, const train_config& cfg,
                     Step&& step) {
  std::mt19937_64 rng(cfg.seed ^ 0x5eedf00dULL);
  std::vector<std::size_t> idx(train_set.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  const std::size_t steps_per_epoch = train_set.size() / cfg.batch;
  const std::size_t total = cfg.epochs * steps_per_epoch;
  progress bar(title, total);
  std::size_t t = 0;
  double running = 0.0;
  std::vector<std::uint8_t> labels(cfg.batch);
  for (std::size_t e = 0; e < cfg.epochs; ++e) {
    shuffle_indices(idx, rng);
    for (std::size_t s = 0; s < steps_per_epoch; ++s, ++t) {
      const float lr = quant::cosine_decay(cfg.learning_rate, t, total);
      matrix xb = gather_rows(train_set.x, idx, s * cfg.batch, cfg.batch);
      for (std::size_t i = 0; i < cfg.batch; ++i) labels[i] = train_set.labels[idx[s * cfg.batch + i]];
      const double loss = step(lr, std::move(xb), labels.data());
      running = t == 0 ? loss : 0.98 * running + 0.02 * loss;
      char buf[64];
      std::snprintf(buf, sizeof buf, "epoch %zu/%zu  loss %.4f", e + 1, cfg.epochs, running);
      bar.update(t + 1, buf);
    }
  }
}

// Adam on all weights and biases, softmax cross-entropy, cosine learning-rate decay.
inline void train(network& net, const split_tensors& train_set, const train_config& cfg,
                  const gradient_hook& regularizer = {}) {
  std::vector<quant::adam> opt_w, opt_b;
  quant::adam_options ao;
  ao.learning_rate = cfg.learning_rate;
  for (auto& l : net.layers) {
    opt_w.emplace_back(l.W.size(), ao);
    opt_b.emplace_back(l.b.size(), ao);
  }
  run_minibatches("train " + net.name, train_set, cfg, [&](float lr, matrix xb, const std::uint8_t* labels) {
    std::vector<layer_cache> cache;
    matrix logits = forward(net, std::move(xb), nullptr, &cache);
    matrix dlogits;
    const double loss = softmax_cross_entropy(logits, labels, dlogits);
    gradients g = backward(net, cache, std::move(dlogits));
    if (regularizer) regularizer(net, g);
    for (std::size_t l = 0; l < net.layers.size(); ++l) {
      opt_w[l].set_learning_rate(lr);
      opt_b[l].set_learning_rate(lr);
      opt_w[l].step(net.layers[l].W, g.dW[l]);
      opt_b[l].step(net.layers[l].b, g.db[l]);
    }
    return loss;
  });
}

// Argmax accuracy on a split, in batches of 1000.
inline double accuracy(const network& net, const split_tensors& s, const forward_hooks* hooks = nullptr) {
  std::size_t correct = 0;
  const std::size_t B = 1000;
  for (std::size_t first = 0; first < s.size(); first += B) {
    const std::size_t n = std::min(B, s.size() - first);
    matrix xb = matrix::from_shape({n, s.x.shape()[1]});
    std::copy(s.x.data() + first * s.x.shape()[1], s.x.data() + (first + n) * s.x.shape()[1], xb.data());
    matrix logits = forward(net, std::move(xb), hooks);
    for (std::size_t i = 0; i < n; ++i) {
      std::size_t best = 0;
      for (std::size_t j = 1; j < logits.shape()[1]; ++j)
        if (logits(i, j) > logits(i, best)) best = j;
      correct += best == s.labels[first + i];
    }
  }
  return static_cast<double>(correct) / static_cast<double>(s.size());
}

// ---- the FP32 cache: <dir>/<key>/W<i>.npy, b<i>.npy ----------------------------------

inline std::string cache_key(const network& net, const train_config& cfg) {
  return "fmnist-" + net.name + "-e" + std::to_string(cfg.epochs) + "-b" + std::to_string(cfg.batch) + "-s" +
         std::to_string(cfg.seed) + "-v1";
}

inline bool load_cached(network& net, const std::string& dir) {
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const std::string w = dir + "/W" + std::to_string(l) + ".npy", b = dir + "/b" + std::to_string(l) + ".npy";
    struct stat st {};
    if (::stat(w.c_str(), &st) != 0 || ::stat(b.c_str(), &st) != 0) return false;
    try {
      xt::xarray<float> W = load_npy_float(w), B = load_npy_float(b);
      if (W.dimension() != 2 || W.shape()[0] != net.layers[l].W.shape()[0] || W.shape()[1] != net.layers[l].W.shape()[1] ||
          B.dimension() != 1 || B.shape()[0] != net.layers[l].b.shape()[0]) {
        std::fprintf(stderr, "cache %s: shapes do not match the network, retraining\n", dir.c_str());
        return false;
      }
      std::copy(W.begin(), W.end(), net.layers[l].W.begin());
      std::copy(B.begin(), B.end(), net.layers[l].b.begin());
    } catch (const npy_error& e) {
      std::fprintf(stderr, "cache: %s, retraining\n", e.what());
      return false;
    }
  }
  return true;
}

inline void save_cached(const network& net, const std::string& dir) {
  ::mkdir(dir.c_str(), 0755);
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    save_npy(dir + "/W" + std::to_string(l) + ".npy", net.layers[l].W);
    save_npy(dir + "/b" + std::to_string(l) + ".npy", net.layers[l].b);
  }
}

}  // namespace examples
