// fuzz_kmeans — the k-means E-step (detail/nearest_centroid.hpp through kmeans_assign)
// against quant::ref::kmeans_assign. From the fuzzer's bytes: n points of dimension d
// (1..40, through the specialised d = 4, 8, 9, 16 loops and the generic one), k centroids,
// coordinates with ties (duplicate centroids, points equidistant from two centroids) and
// wide magnitudes. Then:
//   kmeans_assign with the SIMD kernel (gemm_min_dim above d) == ref::kmeans_assign exactly
//   (the documented definition: first smallest score of fma-accumulated ||c||^2 - 2 x.c);
//   the GEMM path (gemm_min_dim = 1, documented as not bit-exact) picks a centroid whose
//   exact squared distance is within 1e-5 * (||x||^2 + ||c||^2 max) of the best one;
//   non-finite points or centroids throw quant::domain_error.
#include <quant/kmeans.hpp>
#include <quant/reference/kmeans.hpp>

#include "fuzz_common.hpp"

using namespace quant;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const std::size_t d = in.ConsumeIntegralInRange<std::size_t>(1, 40);
  const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(1, 64);
  const std::size_t k = in.ConsumeIntegralInRange<std::size_t>(1, 40);
  const float scale = std::ldexp(1.0f, in.ConsumeIntegralInRange<int>(-40, 40));
  auto coord = [&]() {
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
      case 0: return 0.0f;
      case 1: return static_cast<float>(in.ConsumeIntegralInRange<int>(-4, 4)) * scale;
      case 2: return std::numeric_limits<float>::quiet_NaN();
      default: return in.ConsumeFloatingPointInRange<float>(-1.0f, 1.0f) * scale;
    }
  };
  std::vector<float> c(k * d), x(n * d);
  for (auto& v : c) v = coord();
  for (std::size_t q = 1; q < k; ++q)  // duplicate centroids: the first must win
    if (in.ConsumeIntegralInRange<int>(0, 7) == 0) std::copy(c.begin(), c.begin() + d, c.begin() + q * d);
  for (auto& v : x) v = coord();
  bool finite = true;
  for (float v : c) finite = finite && std::isfinite(v);
  for (float v : x) finite = finite && std::isfinite(v);
  xt::xtensor<float, 2> C = xt::adapt(c, std::vector<std::size_t>{k, d});
  xt::xtensor<float, 2> X = xt::adapt(x, std::vector<std::size_t>{n, d});
  xt::xtensor<std::uint32_t, 1> got;
  try {
    got = kmeans_assign(X, C, d + 1);
  } catch (const domain_error&) {
    fuzz::require(!finite, "finite data rejected");
    return 0;
  }
  fuzz::require(finite, "NaN data accepted");
  // Overflow of ||c||^2 (inf scores) is part of the definition; the reference computes it the same way.
  const auto want = ref::kmeans_assign(x, d, c);
  fuzz::require_same_ints(got.data(), want, n, "kmeans_assign (SIMD E-step) d=" + std::to_string(d));
  const auto g = kmeans_assign(X, C, 1);
  for (std::size_t i = 0; i < n; ++i) {
    double best = std::numeric_limits<double>::infinity(), norm = 0.0;
    auto dist = [&](std::size_t q) {
      double s = 0.0;
      for (std::size_t j = 0; j < d; ++j) {
        const double t = static_cast<double>(x[i * d + j]) - c[q * d + j];
        s += t * t;
      }
      return s;
    };
    for (std::size_t q = 0; q < k; ++q) {
      best = std::min(best, dist(q));
      double cn = 0.0;
      for (std::size_t j = 0; j < d; ++j) cn += static_cast<double>(c[q * d + j]) * c[q * d + j];
      norm = std::max(norm, cn);
    }
    double xn = 0.0;
    for (std::size_t j = 0; j < d; ++j) xn += static_cast<double>(x[i * d + j]) * x[i * d + j];
    if (std::isfinite(xn + norm))
      fuzz::require(dist(g[i]) <= best + 1e-5 * (xn + norm) + 1e-300, "GEMM E-step picked a far centroid for point " + std::to_string(i));
  }
  return 0;
}
