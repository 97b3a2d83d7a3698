// quant/detail/integer_gemm_kernel.hpp — the register-blocked dot-product tile of the
// integer GEMM (integer_gemm.hpp): 16 output channels x up to 6 activation rows, the
// whole reduction length in registers.
//
// Exactness: weights and activations are widened to int16 and multiplied pairwise with
// int16 x int16 -> int32 multiply-adds (vpmaddwd: w0 x0 + w1 x1 in one int32 lane, exact
// for any int16 inputs except the pair (-32768)^2 twice, which int8 data cannot produce).
// Accumulation is plain int32 addition; the caller guarantees (checks before running) that
// every partial sum stays within int32, so no instruction ever saturates or wraps and the
// SIMD tile and the scalar tile compute the same integers. vpmaddubsw (u8 x s8 -> saturating
// int16) is not used: 255 * (-128) * 2 = -65280 does not fit int16.
//
// Inputs of one tile:
//   w  : one block of the packed weights (packed_weights.hpp), at k-pair step 0;
//   x  : int16 activations, row j at x + j * ldx, K padded to even with zeros;
//   out: int32 [nr][16] raw dot products sum_k Wq[o, k] x[j, k] (no zero point, no bias).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../simd/arch.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace quant {
namespace detail {
namespace igemm {

constexpr std::size_t mr = 16;      // channels per tile (= packed_weights::block)
constexpr std::size_t nr_max = 6;   // activation rows per tile

// The tile an arch tag runs: the AVX2 one for AVX2 and every AVX-512 tag (those imply
// AVX2 on x86), the scalar one for simd::scalar and older SIMD tags.
template <class Arch>
struct uses_avx2
    : std::integral_constant<bool,
#if defined(__AVX2__)
                             std::is_base_of<xsimd::avx2, Arch>::value || std::is_base_of<xsimd::avx512f, Arch>::value
#else
                             false
#endif
                             > {
};

// Weight (c, e) of k-pair step p in a packed block (c < 16, e in {0, 1}).
template <int Bits>
QUANT_ALWAYS_INLINE int packed_weight(const std::uint8_t* w, std::size_t p, std::size_t c, std::size_t e) noexcept {
  if constexpr (Bits == 8) {
    return static_cast<std::int8_t>(w[p * 32 + 16 * (c / 8) + 2 * (c % 8) + e]);
  } else {
    const int nib = (w[p * 16 + 2 * (c % 8) + e] >> (4 * (c / 8))) & 0xF;
    return nib >= 8 ? nib - 16 : nib;
  }
}

template <int Bits>
void dot_tile_scalar(const std::uint8_t* w, const std::int16_t* x, std::size_t ldx, std::size_t kpairs,
                     std::size_t nr, std::int32_t* out) noexcept {
  std::int32_t acc[nr_max][mr] = {};
  for (std::size_t p = 0; p < kpairs; ++p)
    for (std::size_t c = 0; c < mr; ++c) {
      const std::int32_t w0 = packed_weight<Bits>(w, p, c, 0), w1 = packed_weight<Bits>(w, p, c, 1);
      for (std::size_t j = 0; j < nr; ++j) acc[j][c] += w0 * x[j * ldx + 2 * p] + w1 * x[j * ldx + 2 * p + 1];
    }
  for (std::size_t j = 0; j < nr; ++j)
    for (std::size_t c = 0; c < mr; ++c) out[j * mr + c] = acc[j][c];
}

#if defined(__AVX2__)
QUANT_ALWAYS_INLINE __m256i broadcast_pair(const std::int16_t* x) noexcept {
  std::int32_t v;
  std::memcpy(&v, x, sizeof v);  // (x[0], x[1]) as one int32: vpbroadcastd from memory
  return _mm256_set1_epi32(v);
}

// Accumulators are named variables, not an array: GCC keeps an array of __m256i partly on
// the stack and hoists all broadcasts ahead of the multiplies (20 live registers for 16),
// while named ones give the 12 accumulators + 2 weights + 1 broadcast the tile needs.
#define QUANT_IGEMM_ROW(j, lo, hi)                                   \
  if constexpr (NR > j) {                                            \
    const __m256i b = broadcast_pair(x + j * ldx + 2 * p);           \
    lo = _mm256_add_epi32(lo, _mm256_madd_epi16(w0, b));             \
    hi = _mm256_add_epi32(hi, _mm256_madd_epi16(w1, b));             \
  }
#define QUANT_IGEMM_STORE(j, lo, hi)                                                  \
  if constexpr (NR > j) {                                                             \
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j * mr), lo);                \
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j * mr + 8), hi);           \
  }

template <int Bits, std::size_t NR>
QUANT_ALWAYS_INLINE void dot_tile_avx2(const std::uint8_t* w, const std::int16_t* x, std::size_t ldx,
                                       std::size_t kpairs, std::int32_t* out) noexcept {
  static_assert(NR >= 1 && NR <= nr_max, "1..6 rows");
  // channels 0-7 (l) and 8-15 (h) of rows 0..5
  __m256i l0 = _mm256_setzero_si256(), h0 = l0, l1 = l0, h1 = l0, l2 = l0, h2 = l0, l3 = l0, h3 = l0, l4 = l0,
          h4 = l0, l5 = l0, h5 = l0;
  for (std::size_t p = 0; p < kpairs; ++p) {
    __m256i w0, w1;
    if constexpr (Bits == 8) {
      w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 32 * p)));
      w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 32 * p + 16)));
    } else {
      const __m256i t = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * p)));
      w0 = _mm256_srai_epi16(_mm256_slli_epi16(t, 12), 12);  // low nibbles, sign-extended
      w1 = _mm256_srai_epi16(t, 4);                          // high nibbles, sign-extended
    }
    QUANT_IGEMM_ROW(0, l0, h0)
    QUANT_IGEMM_ROW(1, l1, h1)
    QUANT_IGEMM_ROW(2, l2, h2)
    QUANT_IGEMM_ROW(3, l3, h3)
    QUANT_IGEMM_ROW(4, l4, h4)
    QUANT_IGEMM_ROW(5, l5, h5)
  }
  QUANT_IGEMM_STORE(0, l0, h0)
  QUANT_IGEMM_STORE(1, l1, h1)
  QUANT_IGEMM_STORE(2, l2, h2)
  QUANT_IGEMM_STORE(3, l3, h3)
  QUANT_IGEMM_STORE(4, l4, h4)
  QUANT_IGEMM_STORE(5, l5, h5)
}
#undef QUANT_IGEMM_ROW
#undef QUANT_IGEMM_STORE

// One activation row against two blocks (32 channels): the batch-1 GEMV, where the weight
// bytes are the whole cost; two blocks give two independent weight streams in flight.
template <int Bits>
QUANT_ALWAYS_INLINE void dot_row_2blocks_avx2(const std::uint8_t* wa, const std::uint8_t* wb, const std::int16_t* x,
                                              std::size_t kpairs, std::int32_t* out_a, std::int32_t* out_b) noexcept {
  __m256i la = _mm256_setzero_si256(), ha = la, lb = la, hb = la;
  auto widen = [](const std::uint8_t* w, std::size_t p, __m256i& w0, __m256i& w1) QUANT_INLINE_LAMBDA {
    if constexpr (Bits == 8) {
      w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 32 * p)));
      w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 32 * p + 16)));
    } else {
      const __m256i t = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * p)));
      w0 = _mm256_srai_epi16(_mm256_slli_epi16(t, 12), 12);
      w1 = _mm256_srai_epi16(t, 4);
    }
  };
  for (std::size_t p = 0; p < kpairs; ++p) {
    const __m256i b = broadcast_pair(x + 2 * p);
    __m256i a0, a1, b0, b1;
    widen(wa, p, a0, a1);
    widen(wb, p, b0, b1);
    la = _mm256_add_epi32(la, _mm256_madd_epi16(a0, b));
    ha = _mm256_add_epi32(ha, _mm256_madd_epi16(a1, b));
    lb = _mm256_add_epi32(lb, _mm256_madd_epi16(b0, b));
    hb = _mm256_add_epi32(hb, _mm256_madd_epi16(b1, b));
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_a), la);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_a + 8), ha);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_b), lb);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_b + 8), hb);
}

template <int Bits>
inline void dot_tile_avx2_any(const std::uint8_t* w, const std::int16_t* x, std::size_t ldx, std::size_t kpairs,
                              std::size_t nr, std::int32_t* out) noexcept {
  switch (nr) {
    case 6: dot_tile_avx2<Bits, 6>(w, x, ldx, kpairs, out); break;
    case 5: dot_tile_avx2<Bits, 5>(w, x, ldx, kpairs, out); break;
    case 4: dot_tile_avx2<Bits, 4>(w, x, ldx, kpairs, out); break;
    case 3: dot_tile_avx2<Bits, 3>(w, x, ldx, kpairs, out); break;
    case 2: dot_tile_avx2<Bits, 2>(w, x, ldx, kpairs, out); break;
    default: dot_tile_avx2<Bits, 1>(w, x, ldx, kpairs, out); break;
  }
}
#endif

// out[j][c] = sum_k Wq[c, k] x[j, k] for one block and nr (1..6) rows.
template <class Arch, int Bits>
QUANT_ALWAYS_INLINE void dot_tile(const std::uint8_t* w, const std::int16_t* x, std::size_t ldx, std::size_t kpairs,
                                  std::size_t nr, std::int32_t* out) noexcept {
#if defined(__AVX2__)
  if constexpr (uses_avx2<Arch>::value) {
    dot_tile_avx2_any<Bits>(w, x, ldx, kpairs, nr, out);
    return;
  }
#endif
  dot_tile_scalar<Bits>(w, x, ldx, kpairs, nr, out);
}

// One row against two blocks: out_a / out_b [16] each (the scalar path runs two tiles).
template <class Arch, int Bits>
QUANT_ALWAYS_INLINE void dot_row_2blocks(const std::uint8_t* wa, const std::uint8_t* wb, const std::int16_t* x,
                                         std::size_t kpairs, std::int32_t* out_a, std::int32_t* out_b) noexcept {
#if defined(__AVX2__)
  if constexpr (uses_avx2<Arch>::value) {
    dot_row_2blocks_avx2<Bits>(wa, wb, x, kpairs, out_a, out_b);
    return;
  }
#endif
  dot_tile_scalar<Bits>(wa, x, 0, kpairs, 1, out_a);
  dot_tile_scalar<Bits>(wb, x, 0, kpairs, 1, out_b);
}

}  // namespace igemm
}  // namespace detail
}  // namespace quant
