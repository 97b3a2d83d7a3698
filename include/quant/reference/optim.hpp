// quant/reference/optim.hpp — quant::ref: Adam and SGD steps as plain float loops in the
// order of operations documented in optim.hpp. Tests hold the SIMD kernels to these bit
// for bit (every operation is an exact IEEE one; Adam's multiply-adds are fused, as
// std::fma here).
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
  const float tiny = o.epsilon * 0x1p-24f;
  for (std::size_t i = 0; i < p.size(); ++i) {
    float gi = std::fma(o.weight_decay, p[i], g[i]);
    if (std::fabs(gi) < tiny) gi = 0.0f;
    m[i] = std::fma(o.beta1, m[i], (1.0f - o.beta1) * gi);
    if (std::fabs(m[i]) < (1.0f - o.beta1) * tiny) m[i] = 0.0f;
    v[i] = std::fma(o.beta2, v[i], (1.0f - o.beta2) * (gi * gi));
    if (v[i] < tiny * tiny) v[i] = 0.0f;
    const float denom = std::fma(std::sqrt(v[i]), inv_sqrt_bc2, o.epsilon);
    p[i] = std::fma(-step_size, m[i] / denom, p[i]);
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
