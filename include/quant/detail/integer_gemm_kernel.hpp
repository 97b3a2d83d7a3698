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

template <int Bits, std::size_t NR>
QUANT_ALWAYS_INLINE void dot_tile_avx2(const std::uint8_t* w, const std::int16_t* x, std::size_t ldx,
                                       std::size_t kpairs, std::int32_t* out) noexcept {
  __m256i lo[NR], hi[NR];  // channels 0-7 and 8-15 of each row
  for (std::size_t j = 0; j < NR; ++j) lo[j] = hi[j] = _mm256_setzero_si256();
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
    for (std::size_t j = 0; j < NR; ++j) {
      const __m256i b = broadcast_pair(x + j * ldx + 2 * p);
      lo[j] = _mm256_add_epi32(lo[j], _mm256_madd_epi16(w0, b));
      hi[j] = _mm256_add_epi32(hi[j], _mm256_madd_epi16(w1, b));
    }
  }
  for (std::size_t j = 0; j < NR; ++j) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j * mr), lo[j]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j * mr + 8), hi[j]);
  }
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

}  // namespace igemm
}  // namespace detail
}  // namespace quant
