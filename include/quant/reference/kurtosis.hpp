// quant/reference/kurtosis.hpp — quant::ref: kurtosis, the KURE loss and its gradient
// (docs/qat.md) as plain two-pass double loops: the mean first, then the central
// moments. A different route from the one-pass shifted sums of kurtosis.hpp, so the
// tests compare two independent computations.
#pragma once

#include <cstddef>
#include <vector>

namespace quant {
namespace ref {

struct kurtosis_moments {
  double mean = 0, m2 = 0, m3 = 0, m4 = 0;
};

inline kurtosis_moments central_moments(const std::vector<double>& x) {
  kurtosis_moments m;
  const double n = static_cast<double>(x.size());
  for (double v : x) m.mean += v;
  m.mean /= n;
  for (double v : x) {
    const double y = v - m.mean;
    m.m2 += y * y;
    m.m3 += y * y * y;
    m.m4 += y * y * y * y;
  }
  m.m2 /= n;
  m.m3 /= n;
  m.m4 /= n;
  return m;
}

// K = m4 / m2^2, times ((N-1)/N)^2 with the unbiased variance; 0 when m2 == 0.
inline double kurtosis(const std::vector<double>& x, bool unbiased = false) {
  const kurtosis_moments m = central_moments(x);
  if (m.m2 == 0.0) return 0.0;
  const double n = static_cast<double>(x.size());
  const double c = unbiased ? ((n - 1) / n) * ((n - 1) / n) : 1.0;
  return c * m.m4 / (m.m2 * m.m2);
}

// dK/dw_j = (4/N) ((w_j-mu)^3 - m3) / m2^2 - (4 m4 / (N m2^3)) (w_j - mu), times the
// unbiased factor; all zeros when m2 == 0.
inline std::vector<double> kurtosis_gradient(const std::vector<double>& x, bool unbiased = false) {
  const kurtosis_moments m = central_moments(x);
  std::vector<double> g(x.size(), 0.0);
  if (m.m2 == 0.0) return g;
  const double n = static_cast<double>(x.size());
  const double c = unbiased ? ((n - 1) / n) * ((n - 1) / n) : 1.0;
  for (std::size_t j = 0; j < x.size(); ++j) {
    const double y = x[j] - m.mean;
    g[j] = c * ((4.0 / n) * (y * y * y - m.m3) / (m.m2 * m.m2) - (4.0 * m.m4 / (n * m.m2 * m.m2 * m.m2)) * y);
  }
  return g;
}

// KURE loss (1/T) sum (K_i - target)^2.
inline double kure_loss(const std::vector<std::vector<double>>& ws, double target = 1.8, bool unbiased = false) {
  double l = 0;
  for (const auto& w : ws) {
    const kurtosis_moments m = central_moments(w);
    if (m.m2 == 0.0) continue;
    const double k = kurtosis(w, unbiased);
    l += (k - target) * (k - target);
  }
  return l / static_cast<double>(ws.size());
}

}  // namespace ref
}  // namespace quant
