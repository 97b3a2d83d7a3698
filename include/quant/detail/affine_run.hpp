// quant/detail/affine_run.hpp — the loops every eager affine kernel shares.
//
// Clamp before rounding. For a rounding r that is monotone and leaves integers alone (every
// policy in rounding.hpp; stochastic rounding too: floor(v) + {0,1} never crosses an
// integer bound it did not already cross) and integer bounds a = qmin - z, b = qmax - z:
//     clamp(r(v) + z, qmin, qmax) - z  ==  r(clamp(v, a, b))            (exactly, in float)
// because r(v) + z is an exact integer sum while |r(v)| < 2^24 and lands beyond the same
// bound otherwise. So fake-quant needs no add and no subtract of z:
//     x_hat = r(clamp(x * inv_s, qmin - z, qmax - z)) * s
// bit-identical to (clamp(r(x * inv_s) + z, qmin, qmax) - z) * s, NaN included (the
// clamp passes it). The rounded value is then bounded by 2^16, which lets round_bounded
// use one add/subtract of 1.5 * 2^23 with the rounding mode in the instruction (AVX-512
// embedded rounding: independent of MXCSR, like rounding.hpp's policies).
//
// affine_run walks one contiguous run of a segment plan: full SIMD packs first, then a
// scalar tail that runs the very same body on single floats (the bodies are exact, so the
// tail and the packs agree bit for bit). `op(i, a)` receives the position within the
// run and the parameters as affine_pack<P> with P a batch or a float; it loads, computes
// and stores by itself, so one driver serves STE and LSQ. bounded_run is the same loop
// for the clamp-first form (two packs per step, optional alignment for streaming stores);
// fake-quant and quantize use it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../rounding.hpp"
#include "../simd/arch.hpp"
#include "affine_body.hpp"
#include "segments.hpp"

namespace quant {
namespace detail {

// ---- the generic driver -------------------------------------------------------------
template <class Arch, class Op>
QUANT_ALWAYS_INLINE void affine_run(const segment_plan& plan, std::size_t len, std::size_t po, float qmin,
                                    float qmax, Op&& op) noexcept {
  using P = simd::pack<float, Arch>;
  constexpr std::size_t L = simd::lanes<float, Arch>;
  const float* s = plan.scale() + po;
  const float* inv = plan.inv_scale() + po;
  const float* z = plan.zero_point() + po;
  std::size_t i = 0;
  if (!plan.vector_params) {
    const affine_pack<P> a = make_affine_pack<P>(P(*s), P(*inv), P(*z), qmin, qmax);
    for (; i + L <= len; i += L) op(i, a);
    const affine_pack<float> t = make_affine_pack<float>(*s, *inv, *z, qmin, qmax);
    for (; i < len; ++i) op(i, t);
  } else {
    for (; i + L <= len; i += L)
      op(i, make_affine_pack<P>(simd::load<Arch>(s + i), simd::load<Arch>(inv + i), simd::load<Arch>(z + i), qmin,
                                qmax));
    for (; i < len; ++i) op(i, make_affine_pack<float>(s[i], inv[i], z[i], qmin, qmax));
  }
}

// Elements per piece handed to one thread by for_each_piece.
constexpr std::size_t affine_piece = std::size_t(1) << 14;

// ---- the clamp-first body -----------------------------------------------------------

// Parameters of the clamp-first form: lo = qmin - z, hi = qmax - z.
template <class P>
struct bounded_pack {
  P scale, inv_scale, lo, hi;
};

template <class P>
QUANT_ALWAYS_INLINE P clamp_nan(const P& x, const P& lo, const P& hi) noexcept {
  return simd::clamp_nan(x, lo, hi);
}

// Policies that can return -0 (floor(-0.0), ceil(-0.3), trunc(-0.3)); the others end in
// an addition of +0 or +-1, which gives +0. The reference adds z after rounding, which
// turns -0 into +0, so -0 must not survive the clamp-first form either.
template <class Round>
struct may_round_to_negative_zero : std::true_type {};
template <>
struct may_round_to_negative_zero<round_half_to_even> : std::false_type {};
template <>
struct may_round_to_negative_zero<round_half_away_from_zero> : std::false_type {};
template <>
struct may_round_to_negative_zero<round_half_up> : std::false_type {};
template <>
struct may_round_to_negative_zero<round_stochastic> : std::false_type {};

// round(c) for |c| <= 2^17 (a clamped grid value), never -0. Half-to-even on AVX-512:
// add and subtract 1.5 * 2^23 with round-to-nearest-even embedded in the add (exact for
// |c| < 2^22, +0 for -0.5 <= c <= 0, NaN passes).
template <class Round, class P, class Rounder>
QUANT_ALWAYS_INLINE P round_bounded(const P& c, Rounder&& rnd) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_same<Round, round_half_to_even>::value && simd::is_batch<P>::value) {
    if constexpr (std::is_base_of<xsimd::avx512f, simd::arch_of<P>>::value) {
      const __m512 magic = _mm512_set1_ps(12582912.0f);  // 1.5 * 2^23
      return _mm512_sub_ps(_mm512_add_round_ps(c, magic, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), magic);
    }
  }
#endif
  if constexpr (may_round_to_negative_zero<Round>::value)
    return rnd(c) + P(0.0f);
  else
    return rnd(c);
}

// The grid value minus z: r(clamp(x * inv_s, qmin - z, qmax - z)) (see the top of the file).
template <class Round, class Convention, class P, class Rounder>
QUANT_ALWAYS_INLINE P centered_grid(P x, const bounded_pack<P>& a, Rounder&& rnd) noexcept {
  if constexpr (Convention::clamp_input_first) x = clamp_nan(x, a.lo * a.scale, a.hi * a.scale);
  return round_bounded<Round>(clamp_nan(x * a.inv_scale, a.lo, a.hi), rnd);
}

template <class Round, class Convention, class P, class Rounder>
QUANT_ALWAYS_INLINE P fake_quant_value(const P& x, const bounded_pack<P>& a, Rounder&& rnd) noexcept {
  return centered_grid<Round, Convention>(x, a, rnd) * a.scale;
}

// ---- streaming stores ---------------------------------------------------------------
// Outputs far larger than the caches go around them (as glibc's memcpy does): no read
// for ownership, no eviction of the input. Only for 64-byte-aligned AVX-512 stores.
constexpr std::size_t streaming_min_bytes = std::size_t(16) << 20;

template <class P>
struct can_stream : std::false_type {};
#if defined(__AVX512F__)
template <class A>
struct can_stream<xsimd::batch<float, A>> : std::is_base_of<xsimd::avx512f, A> {};
#endif

template <class P>
QUANT_ALWAYS_INLINE void stream_store(float* p, const P& v) noexcept {
#if defined(__AVX512F__)
  if constexpr (can_stream<P>::value) {
    _mm512_stream_ps(p, v);
    return;
  }
#endif
  simd::store(p, v);
}

// With streaming stores the input is read once from DRAM: ask for it 2 KiB ahead (glibc's
// large memcpy prefetches its source too; measured +15-20% at 2^24 floats here).
constexpr std::size_t streaming_prefetch_bytes = 2048;
QUANT_ALWAYS_INLINE void prefetch_ahead(const float* p) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(reinterpret_cast<const char*>(p) + streaming_prefetch_bytes, 0, 3);
#else
  (void)p;
#endif
}

inline void stream_fence() noexcept {
#if defined(__AVX512F__)
  _mm_sfence();
#endif
}

template <class Arch>
inline bool use_streaming_stores(std::size_t n) noexcept {
  return can_stream<simd::pack<float, Arch>>::value && n * sizeof(float) >= streaming_min_bytes;
}

// The clamp-first tables of a plan, read once per chunk (not per run).
struct bounded_tables {
  const float *s, *inv, *lo, *hi;
  bool vector_params;
};
inline bounded_tables bounded_tables_of(const segment_plan& plan) noexcept {
  return {plan.scale(), plan.inv_scale(), plan.lo(), plan.hi(), plan.vector_params};
}

// Walks one run with the clamp-first parameters: op(i, a) for packs (two per step), then
// for single floats; P and float bodies are the same code. VectorParams: the tables s,
// inv, lo, hi are parallel to the run; else their first entries hold for all of it.
// Align: single floats first until align_to + i is pack-aligned (streaming stores).
template <class Arch, bool VectorParams, bool Align = false, class Op>
QUANT_ALWAYS_INLINE void bounded_run(std::size_t len, const float* s, const float* inv, const float* lo,
                                     const float* hi, Op&& op, const float* align_to = nullptr) noexcept {
  using P = simd::pack<float, Arch>;
  constexpr std::size_t L = simd::lanes<float, Arch>;
  auto one = [&](std::size_t i) QUANT_INLINE_LAMBDA {
    const std::size_t k = VectorParams ? i : 0;
    op(i, bounded_pack<float>{s[k], inv[k], lo[k], hi[k]});
  };
  std::size_t i = 0;
  if constexpr (Align)
    while (i < len && (reinterpret_cast<std::uintptr_t>(align_to + i) % (L * sizeof(float))) != 0) one(i++);
  if constexpr (VectorParams) {
    auto pack_at = [&](std::size_t j) QUANT_INLINE_LAMBDA {
      op(j, bounded_pack<P>{simd::load<Arch>(s + j), simd::load<Arch>(inv + j), simd::load<Arch>(lo + j),
                            simd::load<Arch>(hi + j)});
    };
    for (; i + 2 * L <= len; i += 2 * L) pack_at(i), pack_at(i + L);
    for (; i + L <= len; i += L) pack_at(i);
  } else {
    const bounded_pack<P> a{P(*s), P(*inv), P(*lo), P(*hi)};
    for (; i + 2 * L <= len; i += 2 * L) op(i, a), op(i + L, a);
    for (; i + L <= len; i += L) op(i, a);
  }
  for (; i < len; ++i) one(i);
}

// bounded_run over one run of a plan's tables (parameter offset po), choosing the mode.
template <class Arch, bool Align = false, class Op>
QUANT_ALWAYS_INLINE void bounded_run(const bounded_tables& t, std::size_t len, std::size_t po, Op&& op,
                                     const float* align_to = nullptr) noexcept {
  if (t.vector_params)
    bounded_run<Arch, true, Align>(len, t.s + po, t.inv + po, t.lo + po, t.hi + po, op, align_to);
  else
    bounded_run<Arch, false, Align>(len, t.s + po, t.inv + po, t.lo + po, t.hi + po, op, align_to);
}

}  // namespace detail
}  // namespace quant
