// quant/detail/affine_body.hpp — the affine map written once for scalars and batches.
//
// PyTorch convention (default, docs/numerics.md): q = clamp(round(x * inv_s) + z, qmin, qmax),
// x_hat = (q - z) * s. Multiplying by the float reciprocal (never dividing) and adding the
// integer z after rounding is what makes outputs bit-identical to
// torch.fake_quantize_per_tensor_affine: there q - z is an integer below 2^17 and s a float,
// so PyTorch's double product rounded to float equals our float product.
// Where PyTorch casts round(x*inv_s)+z to int64 and |x/s| >= 2^63 (undefined behaviour
// there) we saturate to the grid end. NaN passes through fake-quant as NaN (comparison
// clamps), +-inf saturate.
// AIMET convention: x is first clamped in float to [(qmin - z) s, (qmax - z) s], then
// rounded (pair it with round_half_away_from_zero for AIMET's C++ core).
#pragma once

#include <cstdint>

#include "../rounding.hpp"
#include "../simd/arch.hpp"
#include "counter_random.hpp"

namespace quant {

struct pytorch_convention {
  static constexpr const char* name() { return "pytorch"; }
  static constexpr bool clamp_input_first = false;
};
struct aimet_convention {
  static constexpr const char* name() { return "aimet"; }
  static constexpr bool clamp_input_first = true;
};

namespace detail {

template <class P>
struct affine_pack {
  P scale, inv_scale, zero_point, qmin, qmax;
};

template <class P>
QUANT_ALWAYS_INLINE affine_pack<P> make_affine_pack(const P& s, const P& inv, const P& z, float qmin,
                                                    float qmax) noexcept {
  return {s, inv, z, P(qmin), P(qmax)};
}

// round(x * inv_s) + z, clamped to the grid, as a float; `rnd` applies the rounding policy.
template <class Convention, class P, class Rounder>
QUANT_ALWAYS_INLINE P to_grid(const P& x, const affine_pack<P>& a, Rounder&& rnd) noexcept {
  if constexpr (Convention::clamp_input_first) {
    const P lo = (a.qmin - a.zero_point) * a.scale;
    const P hi = (a.qmax - a.zero_point) * a.scale;
    return simd::clamp(rnd(simd::clamp(x, lo, hi) * a.inv_scale) + a.zero_point, a.qmin, a.qmax);
  } else {
    return simd::clamp(rnd(x * a.inv_scale) + a.zero_point, a.qmin, a.qmax);
  }
}

// Unclamped grid value round(x * inv_s) + z (for STE masks).
template <class P, class Rounder>
QUANT_ALWAYS_INLINE P unclamped_grid(const P& x, const affine_pack<P>& a, Rounder&& rnd) noexcept {
  return rnd(x * a.inv_scale) + a.zero_point;
}

template <class P>
QUANT_ALWAYS_INLINE P from_grid(const P& q, const affine_pack<P>& a) noexcept {
  return (q - a.zero_point) * a.scale;
}

// A rounding functor for deterministic policies.
template <class Round>
struct plain_rounder {
  template <class P>
  QUANT_ALWAYS_INLINE P operator()(const P& v) const noexcept {
    return Round::apply(v);
  }
};

// Element-indexed rounding: deterministic policies ignore the index; stochastic ones
// draw u(seed, index) (counter-based, docs/numerics.md).
template <class Arch, class Round>
struct indexed_rounder {
  const Round& policy;
  std::uint64_t index;  // flat index of the first lane
  template <class P>
  QUANT_ALWAYS_INLINE P operator()(const P& v) const noexcept {
    if constexpr (Round::is_stochastic) {
      const std::uint32_t lo = static_cast<std::uint32_t>(index);
      constexpr std::size_t L = simd::lanes<float, Arch>;
      if constexpr (L == 1) {
        return Round::apply(v, P(counter_uniform(policy.seed, index)));
      } else {
        if (lo <= 0xffffffffu - (L - 1)) {
          return Round::apply(v, counter_uniform_pack<Arch>(counter_key::make(policy.seed, index), lo));
        }
        alignas(64) float u[L];  // the lanes straddle a 2^32 block: draw one by one
        for (std::size_t j = 0; j < L; ++j) u[j] = counter_uniform(policy.seed, index + j);
        return Round::apply(v, P::load_aligned(u));
      }
    } else {
      return Round::apply(v);
    }
  }
};

}  // namespace detail
}  // namespace quant
