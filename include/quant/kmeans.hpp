// quant/kmeans.hpp — k-means (Lloyd) for product-quantization codebooks
// (docs/pq.md; Lloyd 1982, Arthur & Vassilvitskii 2007 for k-means++,
// Jegou et al. 2011 and Stock et al. 2020 for the PQ / iPQ use).
//
//   init      random_sample: k distinct points drawn uniformly (seeded);
//             kmeans_plus_plus: first centre uniform, then each next centre drawn with
//             probability proportional to D(x)^2, the squared distance to the nearest
//             centre chosen so far.
//   sampling  max_training_points > 0 trains on a seeded sample of that many points
//             (Faiss's max_points_per_centroid idea); the final assignment covers all points.
//   E-step    exhaustive L2 argmin through ||c||^2 - 2 x.c: the exact SIMD kernel of
//             detail/nearest_centroid.hpp (specialised for d = 4, 8, 9, 16), or for
//             d >= gemm_min_dim a BLAS GEMM X C^T per chunk of points (called outside any
//             parallel region; the argmin after it is parallel).
//   M-step    c_k = mean of its points, summed in double.
//   empty     an empty cluster takes half of the most populated one (lowest index on
//             ties): c_new = c_big + delta, c_big -= delta, delta_j = +-eps * |c_big,j|
//             (eps absolute where c_big,j = 0), signs alternating with j; eps = 1e-6.
//   objective sum over points of ||x - c_assigned||^2 (computed exactly in double),
//             recorded at every E-step; non-increasing up to rounding and splits.
// Determinism: the seed fixes everything. E-step assignments are per point; M-step and
// objective sums use fixed pieces combined in order; so results are bit-identical for
// any thread count (the GEMM path inherits the BLAS's own determinism).
//
// Public API
//   kmeans_options { k = 256, iterations = 20, seed = 0, init = random_sample,
//                    max_training_points = 0, empty_split_eps = 1e-6, gemm_min_dim = 32,
//                    initial_centroids = std::nullopt }
//   kmeans_result kmeans(points [n, d], options)
//       -> { centroids [k, d], assignments [n], objective (per iteration),
//            final_objective, empty_splits, mse() = final_objective / (n d) }
//   kmeans_result kmeans(const float* x, n, d, options)                 raw buffer form
//   xt::xtensor<uint32_t,1> kmeans_assign(points, centroids, gemm_min_dim = 32)   E-step
//   kmeans_update_result kmeans_update(points, assignments, k, eps)   M-step + splits
//   xt::xtensor<float,2> kmeans_initial_centroids(points, k, init, seed)
// Errors: quant::invalid_argument for k = 0, d = 0, fewer points than centroids, bad
// options; quant::domain_error for NaN/inf points; quant::length_error for mismatched shapes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xtensor.hpp>

#if !defined(QUANT_NO_BLAS)
#include <xtensor-blas/xblas.hpp>
#endif

#include "detail/bounded_integer.hpp"
#include "detail/contiguous.hpp"
#include "detail/nearest_centroid.hpp"
#include "detail/parallel.hpp"
#include "error.hpp"

namespace quant {

enum class kmeans_init { random_sample, kmeans_plus_plus };

struct kmeans_options {
  std::size_t k = 256;
  std::size_t iterations = 20;            // Lloyd rounds (E-step + M-step); 15-20 usual
  std::uint64_t seed = 0;
  kmeans_init init = kmeans_init::random_sample;
  std::size_t max_training_points = 0;    // 0 = train on all points
  float empty_split_eps = 1e-6f;
  std::size_t gemm_min_dim = 32;          // d at or above which the E-step uses GEMM
  std::optional<xt::xtensor<float, 2>> initial_centroids;  // [k, d] (a copy); overrides init when set
};

struct kmeans_result {
  xt::xtensor<float, 2> centroids;             // [k, d]
  xt::xtensor<std::uint32_t, 1> assignments;   // [n], nearest of the final centroids
  std::vector<double> objective;               // SSE of each iteration's E-step (training points)
  double final_objective = 0.0;                // SSE of all points to the final centroids
  std::size_t empty_splits = 0;                // clusters re-seeded by splitting
  std::size_t n = 0, d = 0;
  double mse() const noexcept { return n != 0 && d != 0 ? final_objective / static_cast<double>(n * d) : 0.0; }
};

struct kmeans_update_result {
  xt::xtensor<float, 2> centroids;  // [k, d]
  std::vector<std::size_t> counts;  // points per cluster after splits (split counts halved)
  std::size_t empty_splits = 0;
};

namespace detail {

// A 64-bit generator with a standardised output sequence (std::mt19937_64), and
// bounded integers / unit doubles derived from its bits only (the std distributions
// differ between standard libraries).
struct kmeans_rng {
  std::mt19937_64 g;
  explicit kmeans_rng(std::uint64_t seed) : g(seed ^ 0x6b6d65616e73ULL) {}
  std::size_t below(std::size_t n) {  // uniform in [0, n), Lemire's multiply-shift
    return static_cast<std::size_t>(uniform_below(g(), n));
  }
  double unit() { return static_cast<double>(g() >> 11) * (1.0 / 9007199254740992.0); }
};

inline void check_points(const float* x, std::size_t n, std::size_t d, const char* fn, const char* argument = "points",
                         const char* row = "point") {
  if (d == 0) fail<invalid_argument>(fn, "d", d, "subvector dimension must be >= 1");
  const std::size_t total = n * d;
  const std::size_t bad = parallel_reduce(
      total, std::size_t(1) << 16, std::size_t(0),
      [x](std::size_t b, std::size_t e) {
        std::size_t c = 0;
        for (std::size_t i = b; i < e; ++i) c += !std::isfinite(x[i]);
        return c;
      },
      [](std::size_t a, std::size_t b) { return a + b; });
  if (bad) {
    std::size_t i = 0;
    while (std::isfinite(x[i])) ++i;
    fail<domain_error>(fn, argument, x[i], std::to_string(bad) + " NaN/inf values (first at " + row + " " +
                                               std::to_string(i / d) + "): k-means needs finite data");
  }
}

// E-step through GEMM: scores = ||c||^2 - 2 X C^T, chunk by chunk.
inline void assign_gemm(const float* x, std::size_t n, std::size_t d, const float* c, std::size_t k,
                        std::uint32_t* idx) {
#if defined(QUANT_NO_BLAS)
  const centroid_table t(c, k, d);
  nearest_centroids(x, n, t, idx);
#else
  std::vector<float> norms(k);
  for (std::size_t q = 0; q < k; ++q) {
    float s = 0.0f;
    for (std::size_t j = 0; j < d; ++j) s = s + c[q * d + j] * c[q * d + j];
    norms[q] = s;
  }
  const std::size_t chunk = std::max<std::size_t>(256, std::min<std::size_t>(8192, (std::size_t(1) << 22) / k));
  const auto C = xt::adapt(c, k * d, xt::no_ownership(), std::vector<std::size_t>{k, d});
  xt::xtensor<float, 2> G;
  const beside_blas blas_scope;  // quant's loops beside BLAS threads (docs/threading.md)
  for (std::size_t i0 = 0; i0 < n; i0 += chunk) {
    const std::size_t m = std::min(chunk, n - i0);
    const auto X = xt::adapt(x + i0 * d, m * d, xt::no_ownership(), std::vector<std::size_t>{m, d});
    G.resize({m, k});
    xt::blas::gemm(X, C, G, false, true, -2.0f, 0.0f);  // serial call: never inside a parallel region
    const float* g = G.data();
    parallel_for((m + 255) / 256, m * k, [&](std::size_t b) {
      const std::size_t r1 = std::min(m, (b + 1) * 256);
      for (std::size_t r = b * 256; r < r1; ++r) {
        float best = std::numeric_limits<float>::infinity();
        std::uint32_t bk = 0;
        for (std::size_t q = 0; q < k; ++q) {
          const float s = norms[q] + g[r * k + q];
          if (s < best) best = s, bk = static_cast<std::uint32_t>(q);
        }
        idx[i0 + r] = bk;
      }
    });
  }
#endif
}

inline void assign(const float* x, std::size_t n, std::size_t d, const float* c, std::size_t k,
                   std::size_t gemm_min_dim, std::uint32_t* idx) {
  if (d >= gemm_min_dim) {
    assign_gemm(x, n, d, c, k, idx);
  } else {
    const centroid_table t(c, k, d);
    nearest_centroids(x, n, t, idx);
  }
}

constexpr std::size_t kmeans_piece = std::size_t(1) << 14;

// Sum of exact squared distances to the assigned centroids (double, fixed pieces).
inline double assigned_sse(const float* x, std::size_t n, std::size_t d, const float* c, const std::uint32_t* idx) {
  return parallel_reduce(
      n, kmeans_piece, 0.0,
      [&](std::size_t b, std::size_t e) {
        double s = 0.0;
        for (std::size_t i = b; i < e; ++i) {
          const float* xi = x + i * d;
          const float* ci = c + static_cast<std::size_t>(idx[i]) * d;
          for (std::size_t j = 0; j < d; ++j) {
            const double t = static_cast<double>(xi[j]) - static_cast<double>(ci[j]);
            s += t * t;
          }
        }
        return s;
      },
      [](double a, double b) { return a + b; });
}

// M-step: means in double over fixed pieces, then deterministic splits of empty clusters.
// If sse != nullptr, the same pass also sums the squared distances to the centroids
// the assignments were made with (the iteration's objective).
inline std::size_t update_centroids(const float* x, std::size_t n, std::size_t d, const std::uint32_t* idx,
                                    std::size_t k, float eps, float* c, std::vector<std::size_t>& counts,
                                    double* sse = nullptr) {
  const std::size_t pieces = (n + kmeans_piece - 1) / kmeans_piece;
  std::vector<double> sums(pieces * k * d, 0.0);
  std::vector<std::size_t> cnt(pieces * k, 0);
  std::vector<double> part_sse(pieces, 0.0);
  parallel_for(pieces, n * d, [&](std::size_t p) {
    double* s = sums.data() + p * k * d;
    std::size_t* ct = cnt.data() + p * k;
    const std::size_t e = std::min(n, (p + 1) * kmeans_piece);
    double err = 0.0;
    for (std::size_t i = p * kmeans_piece; i < e; ++i) {
      const std::size_t q = idx[i];
      ++ct[q];
      double* sq = s + q * d;
      const float* xi = x + i * d;
      const float* cq = c + q * d;
      for (std::size_t j = 0; j < d; ++j) {
        const double v = static_cast<double>(xi[j]);
        const double t = v - static_cast<double>(cq[j]);
        sq[j] += v;
        err += t * t;
      }
    }
    part_sse[p] = err;
  });
  if (sse != nullptr) {
    double total = 0.0;
    for (double v : part_sse) total += v;
    *sse = total;
  }
  counts.assign(k, 0);
  std::vector<double> total(k * d, 0.0);
  for (std::size_t p = 0; p < pieces; ++p) {
    for (std::size_t q = 0; q < k; ++q) counts[q] += cnt[p * k + q];
    for (std::size_t t = 0; t < k * d; ++t) total[t] += sums[p * k * d + t];
  }
  for (std::size_t q = 0; q < k; ++q) {
    if (counts[q] == 0) continue;
    const double inv = static_cast<double>(counts[q]);
    for (std::size_t j = 0; j < d; ++j) c[q * d + j] = static_cast<float>(total[q * d + j] / inv);
  }
  std::size_t splits = 0;
  for (std::size_t q = 0; q < k; ++q) {
    if (counts[q] != 0) continue;
    std::size_t big = 0;
    for (std::size_t r = 1; r < k; ++r)
      if (counts[r] > counts[big]) big = r;
    for (std::size_t j = 0; j < d; ++j) {
      const float v = c[big * d + j];
      const float mag = v != 0.0f ? std::fabs(v) : 1.0f;
      const float delta = (j % 2 == 0 ? eps : -eps) * mag;
      c[q * d + j] = v + delta;
      c[big * d + j] = v - delta;
    }
    counts[q] = counts[big] / 2;
    counts[big] -= counts[q];
    ++splits;
  }
  return splits;
}

inline void init_random_sample(const float* x, std::size_t n, std::size_t d, std::size_t k, std::uint64_t seed,
                               float* c) {
  kmeans_rng rng(seed);
  std::vector<std::size_t> perm(n);
  for (std::size_t i = 0; i < n; ++i) perm[i] = i;
  for (std::size_t i = 0; i < k; ++i) {  // partial Fisher-Yates
    const std::size_t j = i + rng.below(n - i);
    std::swap(perm[i], perm[j]);
    std::copy(x + perm[i] * d, x + (perm[i] + 1) * d, c + i * d);
  }
}

inline void init_kmeans_pp(const float* x, std::size_t n, std::size_t d, std::size_t k, std::uint64_t seed,
                           float* c) {
  kmeans_rng rng(seed);
  std::vector<double> mind(n, std::numeric_limits<double>::infinity());
  std::size_t pick = rng.below(n);
  const std::size_t pieces = (n + kmeans_piece - 1) / kmeans_piece;
  std::vector<double> part(pieces);
  for (std::size_t q = 0; q < k; ++q) {
    std::copy(x + pick * d, x + (pick + 1) * d, c + q * d);
    if (q + 1 == k) break;
    const float* cq = c + q * d;
    parallel_for(pieces, n * d, [&](std::size_t p) {
      const std::size_t e = std::min(n, (p + 1) * kmeans_piece);
      double s = 0.0;
      for (std::size_t i = p * kmeans_piece; i < e; ++i) {
        double dd = 0.0;
        for (std::size_t j = 0; j < d; ++j) {
          const double t = static_cast<double>(x[i * d + j]) - static_cast<double>(cq[j]);
          dd += t * t;
        }
        if (dd < mind[i]) mind[i] = dd;
        s += mind[i];
      }
      part[p] = s;
    });
    double total = 0.0;
    for (double v : part) total += v;
    if (!(total > 0.0)) {  // every point sits on a centre already
      pick = rng.below(n);
      continue;
    }
    double r = rng.unit() * total;
    std::size_t p = 0;
    while (p + 1 < pieces && r >= part[p]) r -= part[p++];
    const std::size_t e = std::min(n, (p + 1) * kmeans_piece);
    std::size_t i = p * kmeans_piece;
    std::size_t last_positive = i;
    for (; i < e; ++i) {
      if (mind[i] > 0.0) last_positive = i;
      if (r < mind[i]) break;
      r -= mind[i];
    }
    pick = i < e ? i : last_positive;  // rounding may run past the end: take the last candidate
  }
}

inline void check_k(std::size_t n, std::size_t k, const char* fn) {
  if (k == 0) fail<invalid_argument>(fn, "k", k, "must be >= 1");
  if (k >= (std::size_t(1) << 24)) fail<invalid_argument>(fn, "k", k, "must be < 2^24");
  if (n < k)
    fail<invalid_argument>(fn, "points", n, "fewer points than centroids (k = " + std::to_string(k) + ")");
}

}  // namespace detail

// k-means on n points of dimension d stored row-major in x.
inline kmeans_result kmeans(const float* x, std::size_t n, std::size_t d, const kmeans_options& opt) {
  const char* fn = "kmeans";
  detail::check_points(x, n, d, fn);
  const std::size_t k = opt.k;
  detail::check_k(n, k, fn);
  if (opt.max_training_points != 0 && opt.max_training_points < k)
    detail::fail<invalid_argument>(fn, "max_training_points", opt.max_training_points,
                                   "must be 0 (all points) or >= k = " + std::to_string(k));
  if (!(opt.empty_split_eps > 0.0f && opt.empty_split_eps < 0.5f))
    detail::fail<invalid_argument>(fn, "empty_split_eps", opt.empty_split_eps, "must be in (0, 0.5)");
  if (opt.initial_centroids) {
    const auto& ic = *opt.initial_centroids;
    if (ic.shape()[0] != k || ic.shape()[1] != d)
      detail::fail<length_error>(fn, "initial_centroids", detail::shape_string(ic.shape()),
                                 "must be [k, d] = [" + std::to_string(k) + ", " + std::to_string(d) + "]");
    detail::check_points(ic.data(), k, d, fn, "initial_centroids", "centroid");
  }

  // Training set: all points, or a seeded sample (indices sorted for locality).
  std::vector<float> sample;
  const float* tx = x;
  std::size_t tn = n;
  if (opt.max_training_points != 0 && opt.max_training_points < n) {
    detail::kmeans_rng rng(opt.seed ^ 0x73616d706c65ULL);
    std::vector<std::size_t> perm(n);
    for (std::size_t i = 0; i < n; ++i) perm[i] = i;
    tn = opt.max_training_points;
    for (std::size_t i = 0; i < tn; ++i) std::swap(perm[i], perm[i + rng.below(n - i)]);
    perm.resize(tn);
    std::sort(perm.begin(), perm.end());
    sample.resize(tn * d);
    for (std::size_t i = 0; i < tn; ++i) std::copy(x + perm[i] * d, x + (perm[i] + 1) * d, sample.begin() + i * d);
    tx = sample.data();
  }

  kmeans_result r;
  r.n = n;
  r.d = d;
  r.centroids = xt::xtensor<float, 2>::from_shape({k, d});
  float* c = r.centroids.data();
  if (opt.initial_centroids)
    std::copy(opt.initial_centroids->data(), opt.initial_centroids->data() + k * d, c);
  else if (opt.init == kmeans_init::kmeans_plus_plus)
    detail::init_kmeans_pp(tx, tn, d, k, opt.seed, c);
  else
    detail::init_random_sample(tx, tn, d, k, opt.seed, c);

  std::vector<std::uint32_t> tidx(tn);
  std::vector<std::size_t> counts;
  r.objective.reserve(opt.iterations);
  for (std::size_t it = 0; it < opt.iterations; ++it) {
    detail::assign(tx, tn, d, c, k, opt.gemm_min_dim, tidx.data());
    double sse = 0.0;
    r.empty_splits += detail::update_centroids(tx, tn, d, tidx.data(), k, opt.empty_split_eps, c, counts, &sse);
    r.objective.push_back(sse);
  }
  r.assignments = xt::xtensor<std::uint32_t, 1>::from_shape({n});
  detail::assign(x, n, d, c, k, opt.gemm_min_dim, r.assignments.data());
  r.final_objective = detail::assigned_sse(x, n, d, c, r.assignments.data());
  return r;
}

// k-means on the rows of a [n, d] float expression.
template <class E>
kmeans_result kmeans(const xt::xexpression<E>& points, const kmeans_options& opt) {
  const auto in = detail::as_contiguous(points);
  if (in.shape().size() != 2)
    detail::fail<invalid_argument>("kmeans", "points", detail::shape_string(in.shape()), "must be a [n, d] matrix");
  return kmeans(in.data(), in.shape()[0], in.shape()[1], opt);
}

// E-step alone: the nearest centroid of every row of `points` [n, d].
template <class E>
xt::xtensor<std::uint32_t, 1> kmeans_assign(const xt::xexpression<E>& points, const xt::xtensor<float, 2>& centroids,
                                            std::size_t gemm_min_dim = 32) {
  const char* fn = "kmeans_assign";
  const auto in = detail::as_contiguous(points);
  if (in.shape().size() != 2) detail::fail<invalid_argument>(fn, "points", detail::shape_string(in.shape()), "must be a [n, d] matrix");
  const std::size_t n = in.shape()[0], d = in.shape()[1], k = centroids.shape()[0];
  if (centroids.shape()[1] != d)
    detail::fail<length_error>(fn, "centroids", detail::shape_string(centroids.shape()), "must have d = " + std::to_string(d) + " columns");
  if (k == 0) detail::fail<invalid_argument>(fn, "k", k, "must be >= 1");
  detail::check_points(in.data(), n, d, fn);
  detail::check_points(centroids.data(), k, d, fn, "centroids", "centroid");
  xt::xtensor<std::uint32_t, 1> idx = xt::xtensor<std::uint32_t, 1>::from_shape({n});
  detail::assign(in.data(), n, d, centroids.data(), k, gemm_min_dim, idx.data());
  return idx;
}

// M-step alone (with empty-cluster splits) from `centroids` (used for empty clusters'
// neighbours and kept where a cluster is empty before the split).
template <class E>
kmeans_update_result kmeans_update(const xt::xexpression<E>& points, const xt::xtensor<std::uint32_t, 1>& assignments,
                                   const xt::xtensor<float, 2>& centroids, float eps = 1e-6f) {
  const char* fn = "kmeans_update";
  const auto in = detail::as_contiguous(points);
  if (in.shape().size() != 2) detail::fail<invalid_argument>(fn, "points", detail::shape_string(in.shape()), "must be a [n, d] matrix");
  const std::size_t n = in.shape()[0], d = in.shape()[1], k = centroids.shape()[0];
  if (assignments.size() != n) detail::fail<length_error>(fn, "assignments.size()", assignments.size(), "must equal n = " + std::to_string(n));
  if (centroids.shape()[1] != d) detail::fail<length_error>(fn, "centroids", detail::shape_string(centroids.shape()), "must have d columns");
  detail::check_k(n, k, fn);
  for (auto a : assignments)
    if (a >= k) detail::fail<invalid_argument>(fn, "assignment", a, "must be < k = " + std::to_string(k));
  detail::check_points(in.data(), n, d, fn);
  detail::check_points(centroids.data(), k, d, fn, "centroids", "centroid");
  kmeans_update_result r;
  r.centroids = centroids;
  r.empty_splits = detail::update_centroids(in.data(), n, d, assignments.data(), k, eps, r.centroids.data(), r.counts);
  return r;
}

// The initial centroids kmeans() starts from for (k, init, seed).
template <class E>
xt::xtensor<float, 2> kmeans_initial_centroids(const xt::xexpression<E>& points, std::size_t k, kmeans_init init,
                                               std::uint64_t seed) {
  const char* fn = "kmeans_initial_centroids";
  const auto in = detail::as_contiguous(points);
  if (in.shape().size() != 2) detail::fail<invalid_argument>(fn, "points", detail::shape_string(in.shape()), "must be a [n, d] matrix");
  const std::size_t n = in.shape()[0], d = in.shape()[1];
  detail::check_points(in.data(), n, d, fn);
  detail::check_k(n, k, fn);
  xt::xtensor<float, 2> c = xt::xtensor<float, 2>::from_shape({k, d});
  if (init == kmeans_init::kmeans_plus_plus)
    detail::init_kmeans_pp(in.data(), n, d, k, seed, c.data());
  else
    detail::init_random_sample(in.data(), n, d, k, seed, c.data());
  return c;
}

}  // namespace quant
