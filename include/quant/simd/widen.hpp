// quant/simd/widen.hpp — loading floats straight into double packs.
//
// Reductions that accumulate in double (kurtosis moments) read float data: a pack of
// `lanes<double, Arch>` floats is widened to one double pack. xsimd 8.1 converts
// float -> double element by element through memory; the x86 instructions below
// (cvtps2pd) do it in one step. Exact: every float is a double.
#pragma once

#include <type_traits>

#include "arch.hpp"

namespace quant {
namespace simd {

template <class Arch>
QUANT_ALWAYS_INLINE pack<double, Arch> load_widen(const float* p) noexcept {
  if constexpr (std::is_same<Arch, scalar>::value) {
    return static_cast<double>(*p);
  } else {
#if defined(__AVX512F__)
    if constexpr (std::is_base_of<xsimd::avx512f, Arch>::value) return _mm512_cvtps_pd(_mm256_loadu_ps(p));
#endif
#if defined(__AVX__)
    if constexpr (std::is_base_of<xsimd::avx, Arch>::value) return _mm256_cvtps_pd(_mm_loadu_ps(p));
#endif
#if defined(__SSE2__)
    if constexpr (std::is_base_of<xsimd::sse2, Arch>::value)
      return _mm_cvtps_pd(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#endif
    constexpr std::size_t L = lanes<double, Arch>;
    alignas(64) double buf[L];
    for (std::size_t j = 0; j < L; ++j) buf[j] = static_cast<double>(p[j]);
    return xsimd::batch<double, Arch>::load_aligned(buf);
  }
}

}  // namespace simd
}  // namespace quant
