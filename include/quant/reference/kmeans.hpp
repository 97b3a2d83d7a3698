// quant/reference/kmeans.hpp — quant::ref: one k-means E-step and M-step as plain loops
// (docs/pq.md), the yardstick for kmeans.hpp on small problems.
//
// E-step: the score of centroid k is ||c_k||^2 (float, summed in order) followed by one
// std::fma(x_j, -2 c_kj, s) per coordinate; the first smallest score wins. This is the
// definition detail/nearest_centroid.hpp implements with SIMD, so assignments agree
// exactly. M-step: per-cluster sums in double in point order, mean rounded to float;
// empty clusters split from the most populated one as kmeans.hpp documents.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace quant {
namespace ref {

inline std::vector<std::uint32_t> kmeans_assign(const std::vector<float>& x, std::size_t d,
                                                const std::vector<float>& c) {
  const std::size_t n = x.size() / d, k = c.size() / d;
  std::vector<std::uint32_t> idx(n);
  for (std::size_t i = 0; i < n; ++i) {
    float best = std::numeric_limits<float>::infinity();
    std::uint32_t arg = 0;
    for (std::size_t q = 0; q < k; ++q) {
      float norm = 0.0f;
      for (std::size_t j = 0; j < d; ++j) norm = norm + c[q * d + j] * c[q * d + j];
      float s = norm;
      for (std::size_t j = 0; j < d; ++j) s = std::fma(x[i * d + j], -2.0f * c[q * d + j], s);
      if (s < best) {
        best = s;
        arg = static_cast<std::uint32_t>(q);
      }
    }
    idx[i] = arg;
  }
  return idx;
}

// Returns the new centroids; `splits` counts empty clusters re-seeded.
inline std::vector<float> kmeans_update(const std::vector<float>& x, std::size_t d, const std::vector<std::uint32_t>& idx,
                                        std::vector<float> c, float eps, std::size_t* splits = nullptr) {
  const std::size_t n = idx.size(), k = c.size() / d;
  std::vector<double> sum(k * d, 0.0);
  std::vector<std::size_t> cnt(k, 0);
  for (std::size_t i = 0; i < n; ++i) {
    ++cnt[idx[i]];
    for (std::size_t j = 0; j < d; ++j) sum[idx[i] * d + j] += x[i * d + j];
  }
  for (std::size_t q = 0; q < k; ++q)
    if (cnt[q])
      for (std::size_t j = 0; j < d; ++j) c[q * d + j] = static_cast<float>(sum[q * d + j] / static_cast<double>(cnt[q]));
  std::size_t s = 0;
  for (std::size_t q = 0; q < k; ++q) {
    if (cnt[q]) continue;
    std::size_t big = 0;
    for (std::size_t r = 0; r < k; ++r)
      if (cnt[r] > cnt[big]) big = r;
    for (std::size_t j = 0; j < d; ++j) {
      const float v = c[big * d + j];
      const float delta = (j % 2 == 0 ? eps : -eps) * (v == 0.0f ? 1.0f : std::fabs(v));
      c[q * d + j] = v + delta;
      c[big * d + j] = v - delta;
    }
    cnt[q] = cnt[big] / 2;
    cnt[big] -= cnt[q];
    ++s;
  }
  if (splits) *splits = s;
  return c;
}

// Sum of squared distances of every point to its assigned centroid, in double.
inline double kmeans_sse(const std::vector<float>& x, std::size_t d, const std::vector<float>& c,
                         const std::vector<std::uint32_t>& idx) {
  double s = 0;
  for (std::size_t i = 0; i < idx.size(); ++i)
    for (std::size_t j = 0; j < d; ++j) {
      const double t = static_cast<double>(x[i * d + j]) - c[idx[i] * d + j];
      s += t * t;
    }
  return s;
}

}  // namespace ref
}  // namespace quant
