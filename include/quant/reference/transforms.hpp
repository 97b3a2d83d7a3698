// quant/reference/transforms.hpp — quant::ref: the data-free transforms (batch-norm folding,
// cross-layer equalization, high-bias absorption, bias correction; Nagel et al. 2019) as
// plain double loops straight from the formulas, with no intermediate rounding to float.
//
// A weight is held as W[o][c][t]: output o, input channel c, tap t (the elements of input
// channel c that output o reads):
//   linear [out, in]                 -> [out][in][1], or [out][C][spatial] after a C-order flatten
//   conv2d [out, C, kh, kw]          -> [out][C][kh*kw]
//   depthwise [C, 1, kh, kw]         -> [C][1][kh*kw]; output c reads input channel c only
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace quant {
namespace ref {

using weight3 = std::vector<std::vector<std::vector<double>>>;

// Input channel that element (o, j) of a weight3 belongs to.
inline std::size_t input_channel(std::size_t o, std::size_t j, bool depthwise) { return depthwise ? o : j; }

// W[o] *= gamma_o / sqrt(var_o + eps); b_o = beta_o + (b_o - mean_o) gamma_o / sqrt(var_o + eps).
inline void fold_batchnorm(weight3& w, std::vector<double>& b, const std::vector<double>& gamma,
                           const std::vector<double>& beta, const std::vector<double>& mean,
                           const std::vector<double>& var, double eps) {
  for (std::size_t o = 0; o < w.size(); ++o) {
    const double f = gamma[o] / std::sqrt(var[o] + eps);
    for (auto& c : w[o])
      for (auto& v : c) v *= f;
    b[o] = beta[o] + (b[o] - mean[o]) * f;
  }
}

// r_o = max |W[o, ...]|.
inline std::vector<double> output_ranges(const weight3& w) {
  std::vector<double> r(w.size(), 0.0);
  for (std::size_t o = 0; o < w.size(); ++o)
    for (const auto& c : w[o])
      for (double v : c) r[o] = std::max(r[o], std::fabs(v));
  return r;
}

// r_c = max |W[:, c, ...]| over the outputs reading input channel c.
inline std::vector<double> input_ranges(const weight3& w, std::size_t channels, bool depthwise) {
  std::vector<double> r(channels, 0.0);
  for (std::size_t o = 0; o < w.size(); ++o)
    for (std::size_t j = 0; j < w[o].size(); ++j)
      for (double v : w[o][j]) {
        const std::size_t c = input_channel(o, j, depthwise);
        r[c] = std::max(r[c], std::fabs(v));
      }
  return r;
}

// One CLE step: S_i = sqrt(r1_i / r2_i) (1 where a range is 0); W1[i] /= S_i, b1_i /= S_i,
// mean_i /= S_i, std_i /= S_i (when given), W2[:, i] *= S_i. Returns S.
inline std::vector<double> equalize_pair(weight3& w1, std::vector<double>& b1, std::vector<double>* mean,
                                         std::vector<double>* stdev, weight3& w2, bool second_depthwise) {
  const std::size_t C = w1.size();
  const std::vector<double> r1 = output_ranges(w1), r2 = input_ranges(w2, C, second_depthwise);
  std::vector<double> S(C, 1.0);
  for (std::size_t i = 0; i < C; ++i)
    if (r1[i] > 0 && r2[i] > 0) S[i] = std::sqrt(r1[i] / r2[i]);
  for (std::size_t i = 0; i < C; ++i) {
    for (auto& c : w1[i])
      for (auto& v : c) v /= S[i];
    b1[i] /= S[i];
    if (mean) (*mean)[i] /= S[i];
    if (stdev) (*stdev)[i] /= S[i];
  }
  for (std::size_t o = 0; o < w2.size(); ++o)
    for (std::size_t j = 0; j < w2[o].size(); ++j)
      for (auto& v : w2[o][j]) v *= S[input_channel(o, j, second_depthwise)];
  return S;
}

// c_i = max(0, mean_i - sigmas std_i); b1 -= c, mean -= c, b2[o] += sum over the elements of W2[o]
// of W2[o, c, t] * c_c. Returns c.
inline std::vector<double> absorb_high_bias(std::vector<double>& b1, std::vector<double>& mean,
                                            const std::vector<double>& stdev, const weight3& w2,
                                            std::vector<double>& b2, bool second_depthwise, double sigmas = 3.0) {
  std::vector<double> c(b1.size());
  for (std::size_t i = 0; i < c.size(); ++i) c[i] = std::max(0.0, mean[i] - sigmas * stdev[i]);
  for (std::size_t o = 0; o < w2.size(); ++o)
    for (std::size_t j = 0; j < w2[o].size(); ++j)
      for (double v : w2[o][j]) b2[o] += v * c[input_channel(o, j, second_depthwise)];
  for (std::size_t i = 0; i < c.size(); ++i) {
    b1[i] -= c[i];
    mean[i] -= c[i];
  }
  return c;
}

// Standard normal cdf and pdf.
inline double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }
inline double normal_pdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2.0 * 3.14159265358979323846); }

// E[ReLU(x)], x ~ N(mu, sigma^2) = mu (1 - Phi(-mu/sigma)) + sigma phi(-mu/sigma); max(mu, 0) at sigma = 0.
inline double expected_relu(double mu, double sigma) {
  if (sigma == 0) return std::max(mu, 0.0);
  return mu * (1.0 - normal_cdf(-mu / sigma)) + sigma * normal_pdf(-mu / sigma);
}

// delta[o] = sum over the elements of W[o] of (W_q - W)[o, c, t] * e_c.
inline std::vector<double> bias_correction(const weight3& w, const weight3& wq, const std::vector<double>& e,
                                           bool depthwise) {
  std::vector<double> d(w.size(), 0.0);
  for (std::size_t o = 0; o < w.size(); ++o)
    for (std::size_t j = 0; j < w[o].size(); ++j)
      for (std::size_t t = 0; t < w[o][j].size(); ++t)
        d[o] += (wq[o][j][t] - w[o][j][t]) * e[input_channel(o, j, depthwise)];
  return d;
}

}  // namespace ref
}  // namespace quant
