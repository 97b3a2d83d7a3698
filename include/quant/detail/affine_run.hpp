// quant/detail/affine_run.hpp — the loop every eager affine kernel shares.
//
// affine_run walks one contiguous piece of a segment plan: full SIMD packs first, then a
// scalar tail that runs the very same body on single floats (the bodies are exact, so the
// tail and the packs agree bit for bit). `op(i, a)` receives the position within the
// piece and the parameters as affine_pack<P> with P a batch or a float; it loads, computes
// and stores by itself, so one driver serves fake-quant, quantize, STE and LSQ.
#pragma once

#include <cstddef>

#include "../simd/arch.hpp"
#include "affine_body.hpp"
#include "segments.hpp"

namespace quant {
namespace detail {

template <class Arch, class Op>
QUANT_ALWAYS_INLINE void affine_run(const segment_plan& plan, std::size_t len, std::size_t po, float qmin,
                                    float qmax, Op&& op) noexcept {
  using P = simd::pack<float, Arch>;
  constexpr std::size_t L = simd::lanes<float, Arch>;
  const float* s = plan.scale.data() + po;
  const float* inv = plan.inv_scale.data() + po;
  const float* z = plan.zero_point.data() + po;
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

// Elements per piece handed to one thread (fixed, so results never depend on threads).
constexpr std::size_t affine_piece = std::size_t(1) << 14;

}  // namespace detail
}  // namespace quant
