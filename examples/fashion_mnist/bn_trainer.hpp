// examples/fashion_mnist/bn_trainer.hpp — training and the FP32 cache of the batch-norm
// network (bn_network.hpp), alongside trainer.hpp's for the others. (Inference runs on the
// exported bundle: bundle_export.hpp and the bundle runner.)
//
// Training: Adam on every weight, every bias of a layer without BN, and every BN gamma and
// beta; softmax cross-entropy; cosine learning-rate decay; BN in training mode (batch
// statistics) with PyTorch's running averages (momentum 0.1) kept for inference.
#pragma once

#include <sys/stat.h>

#include <cstdio>
#include <string>
#include <vector>

#include <quant/optim.hpp>

#include "../common/npy_io.hpp"
#include "../common/progress.hpp"
#include "bn_network.hpp"
#include "trainer.hpp"

namespace examples {

inline void train_bn(bn_network& net, const split_tensors& train_set, const train_config& cfg) {
  quant::adam_options ao;
  ao.learning_rate = cfg.learning_rate;
  struct slot {
    xt::xtensor<float, 1>* param;  // null: the layer's W
    std::size_t layer;
    int what;  // 0 W, 1 b, 2 gamma, 3 beta
    quant::adam opt;
  };
  std::vector<slot> slots;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    auto& L = net.layers[l];
    slots.push_back({nullptr, l, 0, quant::adam(L.W.size(), ao)});
    if (L.spec.batchnorm) {
      slots.push_back({&L.gamma, l, 2, quant::adam(L.gamma.size(), ao)});
      slots.push_back({&L.beta, l, 3, quant::adam(L.beta.size(), ao)});
    } else {
      slots.push_back({&L.b, l, 1, quant::adam(L.b.size(), ao)});
    }
  }
  run_minibatches("train " + net.name, train_set, cfg, [&](float lr, matrix xb, const std::uint8_t* labels) {
    std::vector<bn_layer_cache<float>> cache;
    const matrix logits = bn_forward(net, std::move(xb), true, &cache);
    matrix dlogits;
    const double loss = softmax_cross_entropy(logits, labels, dlogits);
    const bn_gradients<float> g = bn_backward(net, cache, std::move(dlogits));
    update_running_statistics(net, cache);
    for (auto& sl : slots) {
      sl.opt.set_learning_rate(lr);
      switch (sl.what) {
        case 0: sl.opt.step(net.layers[sl.layer].W, g.dW[sl.layer]); break;
        case 1: sl.opt.step(*sl.param, g.db[sl.layer]); break;
        case 2: sl.opt.step(*sl.param, g.dgamma[sl.layer]); break;
        default: sl.opt.step(*sl.param, g.dbeta[sl.layer]); break;
      }
    }
    return loss;
  });
}

// ---- the FP32 cache: <dir>/<key>/{W,b,gamma,beta,mean,var}<i>.npy --------------------------

inline std::string bn_cache_key(const bn_network& net, const train_config& cfg) {
  char lr[32];
  std::snprintf(lr, sizeof lr, "%g", static_cast<double>(cfg.learning_rate));
  return "fmnist-" + net.name + "-e" + std::to_string(cfg.epochs) + "-b" + std::to_string(cfg.batch) + "-lr" + lr +
         "-s" + std::to_string(cfg.seed) + "-v1";
}

namespace bn_cache_detail {
template <class Tensor>
bool load_into(Tensor& t, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  const xt::xarray<float> a = load_npy_float(path);
  if (a.dimension() != t.dimension() || !std::equal(a.shape().begin(), a.shape().end(), t.shape().begin())) {
    std::fprintf(stderr, "cache %s: shape does not match the network, retraining\n", path.c_str());
    return false;
  }
  std::copy(a.begin(), a.end(), t.begin());
  return true;
}
}  // namespace bn_cache_detail

inline bool load_cached_bn(bn_network& net, const std::string& dir) {
  bn_network loaded = net;
  try {
    for (std::size_t l = 0; l < loaded.layers.size(); ++l) {
      auto& L = loaded.layers[l];
      const std::string i = std::to_string(l);
      if (!bn_cache_detail::load_into(L.W, dir + "/W" + i + ".npy") || !bn_cache_detail::load_into(L.b, dir + "/b" + i + ".npy"))
        return false;
      if (L.spec.batchnorm &&
          !(bn_cache_detail::load_into(L.gamma, dir + "/gamma" + i + ".npy") &&
            bn_cache_detail::load_into(L.beta, dir + "/beta" + i + ".npy") &&
            bn_cache_detail::load_into(L.running_mean, dir + "/mean" + i + ".npy") &&
            bn_cache_detail::load_into(L.running_var, dir + "/var" + i + ".npy")))
        return false;
    }
  } catch (const npy_error& e) {
    std::fprintf(stderr, "cache: %s, retraining\n", e.what());
    return false;
  }
  net = std::move(loaded);
  return true;
}

inline void save_cached_bn(const bn_network& net, const std::string& dir) {
  ::mkdir(dir.c_str(), 0755);
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const auto& L = net.layers[l];
    const std::string i = std::to_string(l);
    save_npy(dir + "/W" + i + ".npy", L.W);
    save_npy(dir + "/b" + i + ".npy", L.b);
    if (L.spec.batchnorm) {
      save_npy(dir + "/gamma" + i + ".npy", L.gamma);
      save_npy(dir + "/beta" + i + ".npy", L.beta);
      save_npy(dir + "/mean" + i + ".npy", L.running_mean);
      save_npy(dir + "/var" + i + ".npy", L.running_var);
    }
  }
}

}  // namespace examples
