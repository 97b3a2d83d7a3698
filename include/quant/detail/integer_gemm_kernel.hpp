// quant/detail/integer_gemm_kernel.hpp — the register-blocked dot-product tiles of the
// integer GEMM (integer_gemm.hpp): 16 output channels x up to 6 activation rows, the whole
// reduction length in registers, and a one-row x 32-channel form for batch-1 GEMV.
//
// Exactness (the caller checks K and the accumulator bound before running, so every int32
// partial sum fits; no instruction below ever saturates or wraps, and the SIMD tiles and the
// scalar tiles compute the same integers):
//
// int8 weights: weights and activations widened to int16, multiplied pairwise with
//   vpmaddwd (w0 x0 + w1 x1 in one int32 lane; exact for every int16 input except two
//   (-32768)^2 products, which int8 data cannot produce), then int32 additions.
//   vpmaddubsw (u8 x s8 pairs -> saturating int16) is NOT usable here:
//   255 * (-128) * 2 = -65280 does not fit int16.
// int4 weights: vpmaddubsw multiplies the stored nibbles n = w + 8 in [0, 15] (its unsigned
//   operand, used as stored: one mask or shift+mask per register, no subtraction) by int8
//   activations x in [-128, 127] (its signed operand). A pair is at most 2 * 15 * 128 = 3840
//   in magnitude, and 8 consecutive quads of taps summed in int16 lanes stay within
//   8 * 3840 = 30720 < 32767: nothing saturates. Every 8 quads the int16 lanes are widened
//   pairwise into int32 (vpmaddwd by 1). Since sum_k n x = sum_k w x + 8 sum_k x, the int32
//   accumulators of row j start at -8 sum_k x[j, k] (xsum8, computed once per row by the
//   caller), so the tile returns sum_k w x like the scalar tile. int32 additions wrap; the
//   final sum is exact (the caller's bound), so wrapped intermediate values do not matter.
//
// Inputs of one tile:
//   w  : one block of the packed weights (packed_weights.hpp), at step 0;
//   x  : activations, row j at x + j * ldx, K padded to the step with zeros: int16 for int8
//        weights, int8 for int4 weights (uint8 activations offset by -128, see integer_gemm.hpp);
//   xsum8: int4 weights only, 8 sum_k x[j, k] per row (ignored by the scalar tiles);
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

constexpr std::size_t mr = 16;     // channels per tile (= packed_weights::block)
constexpr std::size_t nr_max = 6;  // activation rows per tile
constexpr std::size_t int4_quads_per_drain = 8;  // int16 partial sums of int4 tiles: 8 * 3840 < 2^15

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

// Activation element type of the tiles for int8 (8) or int4 (4) weights.
template <int Bits>
using activation_t = typename std::conditional<Bits == 8, std::int16_t, std::int8_t>::type;
// Taps per step of the packed layout.
template <int Bits>
constexpr std::size_t taps_per_step = Bits == 8 ? 2 : 4;

// ---- tile activations ------------------------------------------------------------------------

// One row of K activations (uint8 or int8) -> the tiles' row of kp >= K elements, zero padded:
// int16 for int8 weights; int8 for int4 weights (uint8 x as x - 128). Returns 8 sum_k of the
// int4 row (|sum| <= 128 K, and 8 * 128 K fits int32 for every K integer_gemm_max_k allows),
// 0 for int8 weights. Plain stores into dst: a function of its own, so the loop bounds stay in
// registers (stores of int8 may alias anything the caller reaches through a reference).
template <int Bits, class Act>
inline std::int32_t tile_activations(const Act* src, std::size_t k, std::size_t kp, activation_t<Bits>* dst) noexcept {
  constexpr bool offset = Bits == 4 && !std::is_signed<Act>::value;  // uint8 -> int8: x - 128
  std::size_t i = 0;
  std::int32_t sum = 0;
#if defined(__AVX2__)
  __m256i acc = _mm256_setzero_si256();
  for (; i + 32 <= k; i += 32) {
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    if constexpr (Bits == 8) {
      const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
      const __m256i a = std::is_signed<Act>::value ? _mm256_cvtepi8_epi16(lo) : _mm256_cvtepu8_epi16(lo);
      const __m256i b = std::is_signed<Act>::value ? _mm256_cvtepi8_epi16(hi) : _mm256_cvtepu8_epi16(hi);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), a);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i + 16), b);
    } else {
      if constexpr (offset) v = _mm256_xor_si256(v, _mm256_set1_epi8(-128));  // x - 128 = x ^ 0x80
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), v);
      // sum of 32 int8: vpmaddubsw by 1 (|pair| <= 256) then vpmaddwd by 1, exact
      const __m256i pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), v);
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
    }
  }
  if constexpr (Bits == 4) {
    alignas(32) std::int32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
    for (std::int32_t l : lanes) sum += l;
  }
#endif
  for (; i < k; ++i) {
    const int v = offset ? int(src[i]) - 128 : int(src[i]);
    dst[i] = static_cast<activation_t<Bits>>(v);
    sum += v;
  }
  for (; i < kp; ++i) dst[i] = 0;
  return Bits == 4 ? 8 * sum : 0;
}

// ---- scalar tiles: the same layout, plain int32 arithmetic -----------------------------------

// Weight of channel c (< 16), tap t of the block's padded K.
template <int Bits>
QUANT_ALWAYS_INLINE std::int32_t packed_weight(const std::uint8_t* w, std::size_t c, std::size_t t) noexcept {
  if constexpr (Bits == 8) {
    return static_cast<std::int8_t>(w[(t / 2) * 32 + 16 * (c / 8) + 2 * (c % 8) + t % 2]);
  } else {
    return ((w[(t / 4) * 32 + 4 * (c % 8) + t % 4] >> (4 * (c / 8))) & 0xF) - 8;
  }
}

template <int Bits>
void dot_tile_scalar(const std::uint8_t* w, const activation_t<Bits>* x, std::size_t ldx, std::size_t steps,
                     std::size_t nr, std::int32_t* out) noexcept {
  std::int32_t acc[nr_max][mr] = {};
  const std::size_t taps = steps * taps_per_step<Bits>;
  for (std::size_t t = 0; t < taps; ++t)
    for (std::size_t c = 0; c < mr; ++c) {
      const std::int32_t wt = packed_weight<Bits>(w, c, t);
      for (std::size_t j = 0; j < nr; ++j) acc[j][c] += wt * std::int32_t(x[j * ldx + t]);
    }
  for (std::size_t j = 0; j < nr; ++j)
    for (std::size_t c = 0; c < mr; ++c) out[j * mr + c] = acc[j][c];
}

#if defined(__AVX2__)
// ---- AVX2 ---------------------------------------------------------------------------------

// Four consecutive bytes (two int16 or four uint8 activations) in every 32-bit lane.
template <class T>
QUANT_ALWAYS_INLINE __m256i broadcast_step(const T* x) noexcept {
  std::int32_t v;
  std::memcpy(&v, x, sizeof v);  // vpbroadcastd from memory
  return _mm256_set1_epi32(v);
}

// int8 weights of one pair of taps: channels 0-7 (w0) and 8-15 (w1) as int16.
QUANT_ALWAYS_INLINE void load_int8_pair(const std::uint8_t* w, std::size_t p, __m256i& w0, __m256i& w1) noexcept {
  w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 32 * p)));
  w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 32 * p + 16)));
}

// int4 weights of one quad of taps: channels 0-7 (w0, low nibbles) and 8-15 (w1, high
// nibbles) as the stored nibbles n = w + 8 in [0, 15] (offset binary).
QUANT_ALWAYS_INLINE void load_int4_quad(const std::uint8_t* w, std::size_t q, __m256i& w0, __m256i& w1) noexcept {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * q));
  const __m256i nib = _mm256_set1_epi8(0x0F);
  w0 = _mm256_and_si256(v, nib);
  w1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
}

// -8 sum_k x[j, k] in every lane (wrapping negation; the caller's xsum8 fits int32).
QUANT_ALWAYS_INLINE __m256i int4_start(std::int32_t xsum8) noexcept {
  return _mm256_set1_epi32(static_cast<std::int32_t>(0u - static_cast<std::uint32_t>(xsum8)));
}

// Accumulators are named variables, not an array: GCC keeps an array of __m256i partly on
// the stack and hoists all broadcasts ahead of the multiplies (20 live registers for 16),
// while named ones give the 12 accumulators + 2 weights + 1 broadcast the tile needs.
#define QUANT_IGEMM_ROWS(ROW) ROW(0, l0, h0) ROW(1, l1, h1) ROW(2, l2, h2) ROW(3, l3, h3) ROW(4, l4, h4) ROW(5, l5, h5)
#define QUANT_IGEMM_ZERO                                                                                      \
  __m256i l0 = _mm256_setzero_si256(), h0 = l0, l1 = l0, h1 = l0, l2 = l0, h2 = l0, l3 = l0, h3 = l0, l4 = l0, \
          h4 = l0, l5 = l0, h5 = l0;

template <std::size_t NR>
QUANT_ALWAYS_INLINE void dot_tile_int8_avx2(const std::uint8_t* w, const std::int16_t* x, std::size_t ldx,
                                            std::size_t kpairs, std::int32_t* out) noexcept {
  static_assert(NR >= 1 && NR <= nr_max, "1..6 rows");
  QUANT_IGEMM_ZERO
  for (std::size_t p = 0; p < kpairs; ++p) {
    __m256i w0, w1;
    load_int8_pair(w, p, w0, w1);
#define QUANT_IGEMM_ROW(j, lo, hi)                             \
  if constexpr (NR > j) {                                      \
    const __m256i b = broadcast_step(x + j * ldx + 2 * p);     \
    lo = _mm256_add_epi32(lo, _mm256_madd_epi16(w0, b));       \
    hi = _mm256_add_epi32(hi, _mm256_madd_epi16(w1, b));       \
  }
    QUANT_IGEMM_ROWS(QUANT_IGEMM_ROW)
#undef QUANT_IGEMM_ROW
  }
#define QUANT_IGEMM_STORE(j, lo, hi)                                         \
  if constexpr (NR > j) {                                                    \
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j * mr), lo);       \
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j * mr + 8), hi);   \
  }
  QUANT_IGEMM_ROWS(QUANT_IGEMM_STORE)
#undef QUANT_IGEMM_STORE
}

template <std::size_t NR>
QUANT_ALWAYS_INLINE void dot_tile_int4_avx2(const std::uint8_t* w, const std::int8_t* x, std::size_t ldx,
                                            std::size_t kquads, const std::int32_t* xsum8,
                                            std::int32_t* out) noexcept {
  static_assert(NR >= 1 && NR <= nr_max, "1..6 rows");
  const __m256i ones = _mm256_set1_epi16(1);
  for (std::size_t j = 0; j < NR; ++j) {
    const __m256i start = int4_start(xsum8[j]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j * mr), start);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j * mr + 8), start);
  }
  QUANT_IGEMM_ZERO  // int16 partial sums, widened into out every 8 quads
  for (std::size_t q = 0; q < kquads; ++q) {
    __m256i w0, w1;
    load_int4_quad(w, q, w0, w1);
#define QUANT_IGEMM_ROW(j, lo, hi)                               \
  if constexpr (NR > j) {                                        \
    const __m256i b = broadcast_step(x + j * ldx + 4 * q);       \
    lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(w0, b));      \
    hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(w1, b));      \
  }
    QUANT_IGEMM_ROWS(QUANT_IGEMM_ROW)
#undef QUANT_IGEMM_ROW
    if ((q + 1) % int4_quads_per_drain == 0 || q + 1 == kquads) {
#define QUANT_IGEMM_DRAIN(j, lo, hi)                                                                        \
  if constexpr (NR > j) {                                                                                   \
    __m256i* o = reinterpret_cast<__m256i*>(out + j * mr);                                                  \
    _mm256_storeu_si256(o, _mm256_add_epi32(_mm256_loadu_si256(o), _mm256_madd_epi16(lo, ones)));          \
    _mm256_storeu_si256(o + 1, _mm256_add_epi32(_mm256_loadu_si256(o + 1), _mm256_madd_epi16(hi, ones)));  \
    lo = hi = _mm256_setzero_si256();                                                                       \
  }
      QUANT_IGEMM_ROWS(QUANT_IGEMM_DRAIN)
#undef QUANT_IGEMM_DRAIN
    }
  }
}
#undef QUANT_IGEMM_ROWS
#undef QUANT_IGEMM_ZERO

template <int Bits>
inline void dot_tile_avx2(const std::uint8_t* w, const activation_t<Bits>* x, std::size_t ldx, std::size_t steps,
                          std::size_t nr, const std::int32_t* xsum8, std::int32_t* out) noexcept {
#define QUANT_IGEMM_CASE(n)                                \
  case n:                                                  \
    if constexpr (Bits == 8)                               \
      dot_tile_int8_avx2<n>(w, x, ldx, steps, out);        \
    else                                                   \
      dot_tile_int4_avx2<n>(w, x, ldx, steps, xsum8, out); \
    break;
  switch (nr) {
    QUANT_IGEMM_CASE(6)
    QUANT_IGEMM_CASE(5)
    QUANT_IGEMM_CASE(4)
    QUANT_IGEMM_CASE(3)
    QUANT_IGEMM_CASE(2)
    default:
      QUANT_IGEMM_CASE(1)
  }
#undef QUANT_IGEMM_CASE
}

// One activation row against two blocks (32 channels): the batch-1 GEMV, where the weight
// bytes are the whole cost; two blocks give two independent weight streams in flight.
template <int Bits>
QUANT_ALWAYS_INLINE void dot_row_2blocks_avx2(const std::uint8_t* wa, const std::uint8_t* wb,
                                              const activation_t<Bits>* x, std::size_t steps, std::int32_t xsum8,
                                              std::int32_t* out_a, std::int32_t* out_b) noexcept {
  __m256i la = _mm256_setzero_si256();
  if constexpr (Bits == 4) la = int4_start(xsum8);
  __m256i ha = la, lb = la, hb = la;
  if constexpr (Bits == 8) {
    for (std::size_t p = 0; p < steps; ++p) {
      const __m256i b = broadcast_step(x + 2 * p);
      __m256i a0, a1, b0, b1;
      load_int8_pair(wa, p, a0, a1);
      load_int8_pair(wb, p, b0, b1);
      la = _mm256_add_epi32(la, _mm256_madd_epi16(a0, b));
      ha = _mm256_add_epi32(ha, _mm256_madd_epi16(a1, b));
      lb = _mm256_add_epi32(lb, _mm256_madd_epi16(b0, b));
      hb = _mm256_add_epi32(hb, _mm256_madd_epi16(b1, b));
    }
  } else {
    const __m256i ones = _mm256_set1_epi16(1);
    for (std::size_t q0 = 0; q0 < steps; q0 += int4_quads_per_drain) {
      const std::size_t q1 = q0 + int4_quads_per_drain < steps ? q0 + int4_quads_per_drain : steps;
      __m256i sla = _mm256_setzero_si256(), sha = sla, slb = sla, shb = sla;
      for (std::size_t q = q0; q < q1; ++q) {
        const __m256i b = broadcast_step(x + 4 * q);
        __m256i a0, a1, b0, b1;
        load_int4_quad(wa, q, a0, a1);
        load_int4_quad(wb, q, b0, b1);
        sla = _mm256_add_epi16(sla, _mm256_maddubs_epi16(a0, b));
        sha = _mm256_add_epi16(sha, _mm256_maddubs_epi16(a1, b));
        slb = _mm256_add_epi16(slb, _mm256_maddubs_epi16(b0, b));
        shb = _mm256_add_epi16(shb, _mm256_maddubs_epi16(b1, b));
      }
      la = _mm256_add_epi32(la, _mm256_madd_epi16(sla, ones));
      ha = _mm256_add_epi32(ha, _mm256_madd_epi16(sha, ones));
      lb = _mm256_add_epi32(lb, _mm256_madd_epi16(slb, ones));
      hb = _mm256_add_epi32(hb, _mm256_madd_epi16(shb, ones));
    }
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_a), la);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_a + 8), ha);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_b), lb);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_b + 8), hb);
}
#endif

// ---- dispatch on the arch tag -----------------------------------------------------------------

// out[j][c] = sum_k Wq[c, k] x[j, k] for one block and nr (1..6) rows; steps = padded K / step;
// xsum8[j] = 8 sum_k x[j, k] for int4 weights (may be null for int8).
template <class Arch, int Bits>
QUANT_ALWAYS_INLINE void dot_tile(const std::uint8_t* w, const activation_t<Bits>* x, std::size_t ldx,
                                  std::size_t steps, std::size_t nr, const std::int32_t* xsum8,
                                  std::int32_t* out) noexcept {
#if defined(__AVX2__)
  if constexpr (uses_avx2<Arch>::value) {
    dot_tile_avx2<Bits>(w, x, ldx, steps, nr, xsum8, out);
    return;
  }
#endif
  (void)xsum8;  // the scalar tiles compute sum_k w x directly
  dot_tile_scalar<Bits>(w, x, ldx, steps, nr, out);
}

// One row against two blocks: out_a / out_b [16] each (the scalar path runs two tiles).
template <class Arch, int Bits>
QUANT_ALWAYS_INLINE void dot_row_2blocks(const std::uint8_t* wa, const std::uint8_t* wb, const activation_t<Bits>* x,
                                         std::size_t steps, std::int32_t xsum8, std::int32_t* out_a,
                                         std::int32_t* out_b) noexcept {
#if defined(__AVX2__)
  if constexpr (uses_avx2<Arch>::value) {
    dot_row_2blocks_avx2<Bits>(wa, wb, x, steps, xsum8, out_a, out_b);
    return;
  }
#endif
  (void)xsum8;
  dot_tile_scalar<Bits>(wa, x, 0, steps, 1, out_a);
  dot_tile_scalar<Bits>(wb, x, 0, steps, 1, out_b);
}

}  // namespace igemm
}  // namespace detail
}  // namespace quant
