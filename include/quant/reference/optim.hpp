// quant/reference/optim.hpp — quant::ref: Adam and SGD steps as plain float loops in the
// order of operations documented in optim.hpp. Tests hold the SIMD kernels to these bit
// for bit (every operation is an exact IEEE one).
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "../optim.hpp"

namespace quant {
namespace ref {

// Step t (1-based) of Adam over vectors of equal length.
inline void adam_step(std::vector<float>& p, const std::vector<float>& g, std::vector<float>& m, std::vector<float>& v,
                      std::size_t t, const adam_options& o) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(o.beta1), static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(static_cast<double>(o.beta2), static_cast<double>(t));
  const float step_size = static_cast<float>(static_cast<double>(o.learning_rate) / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  for (std::size_t i = 0; i < p.size(); ++i) {
    const float gi = g[i] + o.weight_decay * p[i];
    m[i] = o.beta1 * m[i] + (1.0f - o.beta1) * gi;
    v[i] = o.beta2 * v[i] + (1.0f - o.beta2) * (gi * gi);
    const float denom = std::sqrt(v[i]) * inv_sqrt_bc2 + o.epsilon;
    p[i] = p[i] - step_size * (m[i] / denom);
  }
}

// One SGD step; `first` as in torch (the momentum buffer starts as the gradient).
inline void sgd_step(std::vector<float>& p, const std::vector<float>& g, std::vector<float>& buf, bool first,
                     const sgd_options& o) {
  for (std::size_t i = 0; i < p.size(); ++i) {
    float gi = g[i] + o.weight_decay * p[i];
    if (o.momentum != 0.0f) {
      buf[i] = first ? gi : o.momentum * buf[i] + (1.0f - o.dampening) * gi;
      gi = o.nesterov ? gi + o.momentum * buf[i] : buf[i];
    }
    p[i] = p[i] - o.learning_rate * gi;
  }
}

}  // namespace ref
}  // namespace quant
