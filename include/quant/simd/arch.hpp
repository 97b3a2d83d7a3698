// quant/simd/arch.hpp — architecture tags and the one-body-for-scalar-and-SIMD shim.
//
// Eager kernels are templated on an architecture tag `Arch`: either an xsimd 8.1 arch
// (xsimd::avx512bw, xsimd::avx2, ...) or quant::simd::scalar. `simd::pack<T, Arch>` is
// `xsimd::batch<T, Arch>` for the former and plain `T` for the latter, so one kernel body
// serves both and the scalar instantiation is the reference the SIMD one is tested
// against. The free functions below (load, store, select, trunc, ...) are overloaded for
// scalars and batches so that bodies never spell out which one they hold.
// Selection is static: simd::default_arch comes from compiler flags (or QUANT_NO_SIMD).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "../config.hpp"

namespace quant {
namespace simd {

// Tag for the scalar path: one lane, plain C++ arithmetic.
struct scalar {
  static constexpr const char* name() { return "scalar"; }
};

#if defined(QUANT_NO_SIMD)
using default_arch = scalar;
#else
using default_arch = xsimd::default_arch;
#endif

template <class T, class Arch>
struct pack_traits {
  using type = xsimd::batch<T, Arch>;
  using mask = xsimd::batch_bool<T, Arch>;
  static constexpr std::size_t size = type::size;
};

template <class T>
struct pack_traits<T, scalar> {
  using type = T;
  using mask = bool;
  static constexpr std::size_t size = 1;
};

template <class T, class Arch>
using pack = typename pack_traits<T, Arch>::type;
template <class T, class Arch>
using mask = typename pack_traits<T, Arch>::mask;
template <class T, class Arch>
constexpr std::size_t lanes = pack_traits<T, Arch>::size;

// The arch tag of a pack type (float -> scalar, batch<T, A> -> A).
template <class P>
struct arch_of_t {
  using type = scalar;
};
template <class T, class A>
struct arch_of_t<xsimd::batch<T, A>> {
  using type = A;
};
template <class P>
using arch_of = typename arch_of_t<P>::type;

template <class T>
struct is_batch : std::false_type {};
template <class T, class A>
struct is_batch<xsimd::batch<T, A>> : std::true_type {};

// Guard of a functor's simd_apply: enabled for packs whose value type is one of T...
//   template <class B, simd::enable_if_pack_of<B, float> = 0> B simd_apply(const B&) const;
template <class B, class... T>
using enable_if_pack_of = std::enable_if_t<(std::is_same<typename B::value_type, T>::value || ...), int>;

// ---- loads and stores -------------------------------------------------------------
template <class Arch, class T>
QUANT_ALWAYS_INLINE pack<T, Arch> load(const T* p) noexcept {
  if constexpr (std::is_same<Arch, scalar>::value)
    return *p;
  else
    return xsimd::batch<T, Arch>::load_unaligned(p);
}

template <class T>
QUANT_ALWAYS_INLINE void store(T* p, T v) noexcept {
  *p = v;
}
template <class T, class A>
QUANT_ALWAYS_INLINE void store(T* p, const xsimd::batch<T, A>& v) noexcept {
  v.store_unaligned(p);
}

template <class Arch, class T>
QUANT_ALWAYS_INLINE pack<T, Arch> broadcast(T v) noexcept {
  if constexpr (std::is_same<Arch, scalar>::value)
    return v;
  else
    return xsimd::batch<T, Arch>(v);
}

// ---- elementwise helpers with one spelling for scalars and batches ------------------
QUANT_ALWAYS_INLINE float select(bool c, float a, float b) noexcept { return c ? a : b; }
QUANT_ALWAYS_INLINE double select(bool c, double a, double b) noexcept { return c ? a : b; }
template <class T, class A>
QUANT_ALWAYS_INLINE xsimd::batch<T, A> select(const xsimd::batch_bool<T, A>& c,
                                              const xsimd::batch<T, A>& a,
                                              const xsimd::batch<T, A>& b) noexcept {
  return xsimd::select(c, a, b);
}

// a * b + c rounded once, whatever -ffp-contract says: kernels that want FMAs spell them,
// so their results do not depend on the compiler's contraction flags. Batches use the FMA
// instruction: xsimd 8.1 has it for FMA3 archs but not for AVX-512, where its fma is the
// generic a * b + c (two roundings under -ffp-contract=off, one otherwise), hence the
// intrinsics below. On SIMD archs without FMA instructions xsimd's a * b + c remains.
QUANT_ALWAYS_INLINE float fma(float a, float b, float c) noexcept { return std::fma(a, b, c); }
QUANT_ALWAYS_INLINE double fma(double a, double b, double c) noexcept { return std::fma(a, b, c); }
template <class T, class A>
QUANT_ALWAYS_INLINE xsimd::batch<T, A> fma(const xsimd::batch<T, A>& a, const xsimd::batch<T, A>& b,
                                           const xsimd::batch<T, A>& c) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
    if constexpr (std::is_same<T, float>::value) return _mm512_fmadd_ps(a, b, c);
    if constexpr (std::is_same<T, double>::value) return _mm512_fmadd_pd(a, b, c);
  }
#endif
  return xsimd::fma(a, b, c);
}

// trunc/floor/ceil: exact operations whose SIMD forms use an explicit rounding
// immediate (never the MXCSR mode), so results do not depend on the FP environment.
QUANT_ALWAYS_INLINE float trunc(float x) noexcept { return std::trunc(x); }
QUANT_ALWAYS_INLINE float floor(float x) noexcept { return std::floor(x); }
QUANT_ALWAYS_INLINE float ceil(float x) noexcept { return std::ceil(x); }
QUANT_ALWAYS_INLINE float abs(float x) noexcept { return std::fabs(x); }
QUANT_ALWAYS_INLINE double trunc(double x) noexcept { return std::trunc(x); }
QUANT_ALWAYS_INLINE double floor(double x) noexcept { return std::floor(x); }
QUANT_ALWAYS_INLINE double ceil(double x) noexcept { return std::ceil(x); }
QUANT_ALWAYS_INLINE double abs(double x) noexcept { return std::fabs(x); }
template <class T, class A>
QUANT_ALWAYS_INLINE xsimd::batch<T, A> trunc(const xsimd::batch<T, A>& x) noexcept {
  return xsimd::trunc(x);
}
template <class T, class A>
QUANT_ALWAYS_INLINE xsimd::batch<T, A> floor(const xsimd::batch<T, A>& x) noexcept {
  return xsimd::floor(x);
}
template <class T, class A>
QUANT_ALWAYS_INLINE xsimd::batch<T, A> ceil(const xsimd::batch<T, A>& x) noexcept {
  return xsimd::ceil(x);
}
template <class T, class A>
QUANT_ALWAYS_INLINE xsimd::batch<T, A> abs(const xsimd::batch<T, A>& x) noexcept {
  return xsimd::abs(x);
}

// Clamp to [lo, hi] with comparisons, so that NaN passes through unchanged (std::fmin
// and the min/max instructions would silently replace it by a bound).
template <class P, class S>
QUANT_ALWAYS_INLINE P clamp(const P& x, const S& lo, const S& hi) noexcept {
  return quant::simd::select(x < P(lo), P(lo), quant::simd::select(x > P(hi), P(hi), x));
}

// ---- x86 forms: same results, fewer instructions ------------------------------------
// Each is held to the generic form by tests/test_affine_run.cpp (bit for bit, NaN included).
//
// clamp_nan: clamp(x, lo, hi) as max then min with the bound as the FIRST operand: the
// SSE/AVX min/max return their second operand when either is NaN or both are zeros, so NaN
// and the sign of a zero pass exactly as in simd::clamp above (2 instructions, not 4).
// nearest_even: round to nearest, ties to even, the mode given in the instruction's
// immediate (_MM_FROUND_NO_EXC | _MM_FROUND_TO_NEAREST_INT, never MXCSR), plus +0.0f
// so that -0.3 gives +0 exactly like the trunc-based round_half_to_even.
template <class P>
struct has_native_x86 : std::false_type {};

// Generic forms (what the x86 overloads below replace). nearest_even has none: callers
// use it only where has_native_x86<P> holds.
template <class P>
QUANT_ALWAYS_INLINE P clamp_nan(const P& x, const P& lo, const P& hi) noexcept {
  return clamp(x, lo, hi);
}
template <class P>
P nearest_even(const P& x) noexcept;

#if defined(__SSE4_1__)
template <class A>
struct has_native_x86<xsimd::batch<float, A>>
    : std::integral_constant<bool, std::is_base_of<xsimd::sse4_1, A>::value || std::is_base_of<xsimd::avx, A>::value ||
                                       std::is_base_of<xsimd::avx512f, A>::value> {};

template <class A>
QUANT_ALWAYS_INLINE xsimd::batch<float, A> clamp_nan(const xsimd::batch<float, A>& x, const xsimd::batch<float, A>& lo,
                                                     const xsimd::batch<float, A>& hi) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {  // maskz forms: GCC 12 warns on the plain ones
    constexpr __mmask16 all = 0xFFFF;
    return _mm512_maskz_min_ps(all, hi, _mm512_maskz_max_ps(all, lo, x));
  } else
#endif
#if defined(__AVX__)
  if constexpr (std::is_base_of<xsimd::avx, A>::value) {
    return _mm256_min_ps(hi, _mm256_max_ps(lo, x));
  } else
#endif
  if constexpr (std::is_base_of<xsimd::sse2, A>::value) {
    return _mm_min_ps(hi, _mm_max_ps(lo, x));
  } else {
    return clamp(x, lo, hi);
  }
}

template <class A>
QUANT_ALWAYS_INLINE xsimd::batch<float, A> nearest_even(const xsimd::batch<float, A>& x) noexcept {
  static_assert(has_native_x86<xsimd::batch<float, A>>::value, "nearest_even: no exact native form for this arch");
  constexpr int mode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
#if defined(__AVX512F__)
  if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
    return _mm512_add_ps(_mm512_roundscale_ps(x, mode), _mm512_setzero_ps());
  } else
#endif
#if defined(__AVX__)
  if constexpr (std::is_base_of<xsimd::avx, A>::value) {
    return _mm256_add_ps(_mm256_round_ps(x, mode), _mm256_setzero_ps());
  } else
#endif
  {
    return _mm_add_ps(_mm_round_ps(x, mode), _mm_setzero_ps());
  }
}
#endif

// Horizontal sum of a pack (scalar: identity).
QUANT_ALWAYS_INLINE float reduce_add(float x) noexcept { return x; }
QUANT_ALWAYS_INLINE double reduce_add(double x) noexcept { return x; }
template <class T, class A>
QUANT_ALWAYS_INLINE T reduce_add(const xsimd::batch<T, A>& x) noexcept {
  return xsimd::hadd(x);
}

// Boolean mask to 0/1 in the value type.
QUANT_ALWAYS_INLINE float mask_to_one(bool m) noexcept { return m ? 1.0f : 0.0f; }
template <class T, class A>
QUANT_ALWAYS_INLINE xsimd::batch<T, A> mask_to_one(const xsimd::batch_bool<T, A>& m) noexcept {
  return xsimd::select(m, xsimd::batch<T, A>(T(1)), xsimd::batch<T, A>(T(0)));
}

}  // namespace simd
}  // namespace quant
