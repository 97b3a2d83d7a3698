// quant/detail/nearest_centroid.hpp — the exhaustive L2 assignment step of k-means and PQ
// encoding for small subvector dimensions (no BLAS; kmeans.hpp adds a GEMM path for
// large d).
//
// argmin_k ||x - c_k||^2 = argmin_k (||c_k||^2 - 2 x.c_k) (||x||^2 is common to all k).
// The score of centroid k for point x is defined, bit for bit, as
//     s_0 = ||c_k||^2   (float, sum over j of c_kj * c_kj in order j = 0..d-1)
//     s_{j+1} = fma(x_j, -2 c_kj, s_j),   score = s_d
// and the winner is the first k with the smallest score (strict <). -2 c is exact, every
// step is one correctly rounded fma, so the SIMD kernel, its scalar instantiation and the
// plain loop in reference/kmeans.hpp agree exactly.
// The kernel puts points in the SIMD lanes (a tile of `lanes` points, transposed to
// [d][lanes]) and walks the centroids, broadcasting their coordinates: each lane scans
// the centroids in order, which is the reference's scan, and there is no cross-lane
// argmin. The loop is specialised at compile time for d = 4, 8, 9, 16 (the iPQ subvector
// sizes: 8 for linear layers, 4 or 9 for conv) and runs with a runtime d otherwise.
// Tails are padded with zero points whose results are dropped.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../simd/arch.hpp"
#include "parallel.hpp"

namespace quant {
namespace detail {

// Centroids as the assignment kernel reads them.
struct centroid_table {
  std::size_t k = 0, d = 0;
  std::vector<float> minus2c;  // [k][d], -2 * c
  std::vector<float> norms;    // [k], ||c_k||^2 in float, summed in order
  std::vector<float> index;    // [k], q as a float (exact below 2^24), broadcast by the kernel

  centroid_table() = default;
  centroid_table(const float* c, std::size_t k_, std::size_t d_) : k(k_), d(d_), minus2c(k_ * d_), norms(k_), index(k_) {
    for (std::size_t q = 0; q < k; ++q) {
      index[q] = static_cast<float>(q);
      float s = 0.0f;
      for (std::size_t j = 0; j < d; ++j) {
        const float v = c[q * d + j];
        s = s + v * v;
        minus2c[q * d + j] = -2.0f * v;
      }
      norms[q] = s;
    }
  }
};

// One correctly rounded a * b + c per lane. xsimd 8.1's fma is a multiply and an add
// when the compiler may not contract them (-ffp-contract=off), so the FMA instructions are
// named here; without FMA hardware each lane calls std::fma (exact, slow).
QUANT_ALWAYS_INLINE float fma_(float a, float b, float c) noexcept { return std::fma(a, b, c); }
template <class A>
QUANT_ALWAYS_INLINE xsimd::batch<float, A> fma_(const xsimd::batch<float, A>& a, const xsimd::batch<float, A>& b,
                                                const xsimd::batch<float, A>& c) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_base_of<xsimd::avx512f, A>::value) return _mm512_fmadd_ps(a, b, c);
#endif
#if defined(__FMA__)
  if constexpr (std::is_base_of<xsimd::avx, A>::value) return _mm256_fmadd_ps(a, b, c);
  if constexpr (std::is_base_of<xsimd::sse2, A>::value) return _mm_fmadd_ps(a, b, c);
#endif
  constexpr std::size_t L = xsimd::batch<float, A>::size;
  alignas(64) float va[L], vb[L], vc[L];
  a.store_aligned(va);
  b.store_aligned(vb);
  c.store_aligned(vc);
  for (std::size_t j = 0; j < L; ++j) va[j] = std::fma(va[j], vb[j], vc[j]);
  return xsimd::batch<float, A>::load_aligned(va);
}

// One tile: `count` (<= lanes) points starting at x (row-major [count][d]); writes their
// winners to idx. D = d at compile time, or 0 for a runtime d.
template <class Arch, std::size_t D>
QUANT_ALWAYS_INLINE void assign_tile(const float* x, std::size_t count, std::size_t d_runtime, const centroid_table& t,
                                     std::uint32_t* idx) noexcept {
  using P = simd::pack<float, Arch>;
  constexpr std::size_t L = simd::lanes<float, Arch>;
  constexpr std::size_t DMAX = D == 0 ? 64 : D;
  const std::size_t d = D == 0 ? d_runtime : D;
  alignas(64) float xt[DMAX * L];
  for (std::size_t j = 0; j < d; ++j)
    for (std::size_t l = 0; l < L; ++l) xt[j * L + l] = l < count ? x[l * d + j] : 0.0f;
  P xv[DMAX];
  for (std::size_t j = 0; j < d; ++j) xv[j] = simd::load<Arch>(xt + j * L);
  // Two buckets (even / odd centroids) so that the compare-and-keep chains of consecutive
  // centroids do not wait on each other; merged below with the first-minimum rule.
  const P inf(std::numeric_limits<float>::infinity());
  P best0 = inf, best1 = inf, k0(0.0f), k1(0.0f);
  const float* m2c = t.minus2c.data();
  const float* nrm = t.norms.data();
  const float* qf = t.index.data();
  std::size_t q = 0;
  for (; q + 2 <= t.k; q += 2) {
    P s0(nrm[q]), s1(nrm[q + 1]);
    const float* c0 = m2c + q * d;
    const float* c1 = c0 + d;
    for (std::size_t j = 0; j < d; ++j) {
      s0 = fma_(xv[j], P(c0[j]), s0);
      s1 = fma_(xv[j], P(c1[j]), s1);
    }
    const auto b0 = s0 < best0;
    best0 = simd::select(b0, s0, best0);
    k0 = simd::select(b0, P(qf[q]), k0);
    const auto b1 = s1 < best1;
    best1 = simd::select(b1, s1, best1);
    k1 = simd::select(b1, P(qf[q + 1]), k1);
  }
  if (q < t.k) {  // odd k: the last centroid has an even index
    P s0(nrm[q]);
    const float* c0 = m2c + q * d;
    for (std::size_t j = 0; j < d; ++j) s0 = fma_(xv[j], P(c0[j]), s0);
    const auto b0 = s0 < best0;
    best0 = simd::select(b0, s0, best0);
    k0 = simd::select(b0, P(qf[q]), k0);
  }
  const auto take1 = (best1 < best0) | ((best1 == best0) & (k1 < k0));
  const P best_k = simd::select(take1, k1, k0);
  alignas(64) float kk[L];
  simd::store(kk, best_k);
  for (std::size_t l = 0; l < count; ++l) idx[l] = static_cast<std::uint32_t>(kk[l]);
}

// Largest d the tiled kernel takes (its tile lives on the stack); above it a plain
// per-point loop computes the same scores.
constexpr std::size_t direct_assign_max_dim = 64;

// Points per parallel task (fixed: assignments never depend on the thread count anyway).
constexpr std::size_t assign_block = 1024;

// idx[i] = nearest centroid of point i (x row-major [n][d]); k < 2^24 (exact float index).
template <class Arch = simd::default_arch>
void nearest_centroids(const float* x, std::size_t n, const centroid_table& t, std::uint32_t* idx) {
  constexpr std::size_t L = simd::lanes<float, Arch>;
  const std::size_t d = t.d;
  auto run = [&](auto dconst) {
    constexpr std::size_t D = decltype(dconst)::value;
    const std::size_t blocks = (n + assign_block - 1) / assign_block;
    parallel_for(blocks, n * t.k * d / 16, [&](std::size_t b) {
      const std::size_t i0 = b * assign_block;
      const std::size_t i1 = i0 + assign_block < n ? i0 + assign_block : n;
      for (std::size_t i = i0; i < i1; i += L)
        assign_tile<Arch, D>(x + i * d, i + L <= i1 ? L : i1 - i, d, t, idx + i);
    });
  };
  if (d > direct_assign_max_dim) {  // same score chain, one point at a time
    parallel_for(n, n * t.k * d / 16, [&](std::size_t i) {
      const float* xi = x + i * d;
      float best = std::numeric_limits<float>::infinity();
      std::uint32_t bk = 0;
      for (std::size_t q = 0; q < t.k; ++q) {
        float s = t.norms[q];
        for (std::size_t j = 0; j < d; ++j) s = std::fma(xi[j], t.minus2c[q * d + j], s);
        if (s < best) {
          best = s;
          bk = static_cast<std::uint32_t>(q);
        }
      }
      idx[i] = bk;
    });
    return;
  }
  switch (d) {
    case 4: run(std::integral_constant<std::size_t, 4>{}); break;
    case 8: run(std::integral_constant<std::size_t, 8>{}); break;
    case 9: run(std::integral_constant<std::size_t, 9>{}); break;
    case 16: run(std::integral_constant<std::size_t, 16>{}); break;
    default: run(std::integral_constant<std::size_t, 0>{}); break;
  }
}

}  // namespace detail
}  // namespace quant
