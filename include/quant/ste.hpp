// quant/ste.hpp — straight-through gradients of uniform fake-quantization
// (docs/numerics.md; Bengio et al. 2013, "Estimating or propagating gradients through
// stochastic neurons", and the clipped variant used by every QAT toolkit).
//
// Forward (uniform.hpp): y = (clamp(round(x * inv_s) + z, qmin, qmax) - z) * s.
// Backward, clipped STE (default):
//     dx = dy * 1[qmin <= round(x * inv_s) + z <= qmax]
// i.e. rounding is treated as the identity, and the clamp passes no gradient where it
// saturates. The grid value is tested *before* clamping, with the same rounding policy
// and the same float arithmetic as the forward, which is exactly PyTorch's cachemask
// (fake_quantize_per_tensor_affine_cachemask): an element whose forward output sits on
// a grid end only because it rounded there (x * inv_s = qmax + 0.4) still passes its
// gradient. The product dy * mask is a float multiply, as PyTorch's `dY * mask`: a
// negative dy outside the grid gives -0.0 and a NaN dy stays NaN.
// Identity STE (ste_mode::identity): dx = dy everywhere.
//
// Forms, as in uniform.hpp:
//  * lazy: `quant::ste_backward(x, dy, p)` is an xtensor expression over (x, dy); the
//    per-tensor overload (scale, zero point, grid) vectorizes under XTENSOR_USE_XSIMD,
//    the qparams overload broadcasts per-channel parameters.
//  * eager: `quant::eager::ste_backward` (per tensor / channel / group, any rounding
//    policy including stochastic with the forward's seed) and
//    `quant::eager::fake_quantize_with_mask`, which writes y and the uint8 mask in one
//    pass so a training step can keep the mask instead of x.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include <xtensor/xarray.hpp>
#include <xtensor/xfunction.hpp>
#include <xtensor/xtensor.hpp>

#include "detail/affine_body.hpp"
#include "detail/affine_run.hpp"
#include "detail/checks.hpp"
#include "detail/contiguous.hpp"
#include "detail/segments.hpp"
#include "error.hpp"
#include "qparams.hpp"
#include "rounding.hpp"
#include "simd/arch.hpp"
#include "uniform.hpp"

namespace quant {

enum class ste_mode {
  clipped,  // dx = dy * 1[qmin <= round(x / s) + z <= qmax]
  identity  // dx = dy
};

namespace detail {

// 1[qmin <= round(x * inv_s) + z <= qmax] as a mask (bool or batch_bool).
template <class P, class Rounder>
QUANT_ALWAYS_INLINE auto ste_inside(const P& x, const affine_pack<P>& a, Rounder&& rnd) noexcept {
  const P g = unclamped_grid(x, a, rnd);
  return (g >= a.qmin) & (g <= a.qmax);
}

template <class P, class Rounder>
QUANT_ALWAYS_INLINE P ste_body(const P& x, const P& dy, const affine_pack<P>& a, Rounder&& rnd,
                               bool clipped) noexcept {
  return clipped ? dy * simd::mask_to_one(ste_inside(x, a, rnd)) : dy;
}

}  // namespace detail

// ====================================================================================
// Lazy functors
// ====================================================================================

// (x, dy) -> dx with one (s, z); vectorizes under XTENSOR_USE_XSIMD.
template <class Round = round_half_to_even>
struct ste_backward_functor {
  float inv_scale, zero_point, qmin, qmax;
  bool clipped;

  template <class T, class D>
  float operator()(const T& x, const D& dy) const noexcept {
    return apply(static_cast<float>(x), static_cast<float>(dy));
  }
  template <class B, simd::enable_if_pack_of<B, float> = 0>
  B simd_apply(const B& x, const B& dy) const noexcept {
    return apply(x, dy);
  }

 private:
  template <class P>
  QUANT_ALWAYS_INLINE P apply(const P& x, const P& dy) const noexcept {
    // the scale itself never enters the mask; only its float reciprocal does
    const auto a = detail::make_affine_pack<P>(P(1.0f), P(inv_scale), P(zero_point), qmin, qmax);
    return detail::ste_body(x, dy, a, detail::plain_rounder<Round>{}, clipped);
  }
};

// (x, dy, inv_s, z) -> dx: per-channel parameters arrive as broadcast operands.
template <class Round = round_half_to_even>
struct ste_backward_channel_functor {
  float qmin, qmax;
  bool clipped;
  template <class T, class D>
  float operator()(const T& x, const D& dy, float inv_s, float z) const noexcept {
    const auto a = detail::make_affine_pack<float>(1.0f, inv_s, z, qmin, qmax);
    return detail::ste_body(static_cast<float>(x), static_cast<float>(dy), a, detail::plain_rounder<Round>{},
                            clipped);
  }
};

// ====================================================================================
// Lazy entry points
// ====================================================================================

// Lazy STE backward with one scale and zero point (validated here). x and dy must have
// the same shape (no broadcasting: a gradient has the shape of its input).
template <class Round = round_half_to_even, class E, class D>
auto ste_backward(E&& x, D&& dy, float scale, std::int32_t zero_point, grid g,
                  ste_mode mode = ste_mode::clipped) {
  detail::require_deterministic<Round>();
  const qparams p = qparams::per_tensor(g, scale, zero_point);  // validates
  detail::check_same_shape(x.shape(), dy.shape(), "ste_backward", "dy.shape");
  using F = ste_backward_functor<Round>;
  return xt::xfunction<F, xt::const_xclosure_t<E>, xt::const_xclosure_t<D>>(
      F{1.0f / scale, static_cast<float>(zero_point), static_cast<float>(p.qmin()), static_cast<float>(p.qmax()),
        mode == ste_mode::clipped},
      std::forward<E>(x), std::forward<D>(dy));
}

// Lazy STE backward with per-tensor or per-channel qparams (parameters broadcast).
template <class Round = round_half_to_even, class E, class D>
auto ste_backward(E&& x, D&& dy, const qparams& p, ste_mode mode = ste_mode::clipped) {
  detail::require_deterministic<Round>();
  const char* fn = "ste_backward";
  const std::size_t ndim = x.dimension();
  detail::check_same_shape(x.shape(), dy.shape(), fn, "dy.shape");
  detail::check_channel_count(x, p, ndim, fn);
  auto ops = detail::make_channel_operands(p, ndim, fn);
  using F = ste_backward_channel_functor<Round>;
  return xt::xfunction<F, xt::const_xclosure_t<E>, xt::const_xclosure_t<D>, xt::xarray<float>, xt::xarray<float>>(
      F{static_cast<float>(p.qmin()), static_cast<float>(p.qmax()), mode == ste_mode::clipped}, std::forward<E>(x),
      std::forward<D>(dy), std::move(ops.inv_scale), std::move(ops.zero_point));
}

// ====================================================================================
// Eager kernels (contiguous memory; Arch = xsimd arch or simd::scalar)
// ====================================================================================
namespace kernels {

// dx = dy * mask(x) over a whole plan (dx may alias dy). `round` must be the forward's
// policy (with its seed for stochastic rounding: element indices are flat indices).
template <class Arch = simd::default_arch, class Round = round_half_to_even>
void ste_backward(const float* x, const float* dy, float* dx, const detail::segment_plan& plan, float qmin,
                  float qmax, ste_mode mode = ste_mode::clipped, const Round& round = {}) noexcept {
  if (mode == ste_mode::identity) {
    if (dx == dy) return;
    detail::for_each_piece(plan, detail::affine_piece, [&](std::size_t, std::size_t e0, std::size_t len,
                                                           std::size_t) {
      std::memcpy(dx + e0, dy + e0, len * sizeof(float));
    });
    return;
  }
  detail::for_each_piece(plan, detail::affine_piece, [&](std::size_t, std::size_t e0, std::size_t len,
                                                         std::size_t po) {
    const float* xs = x + e0;
    const float* ds = dy + e0;
    float* out = dx + e0;
    detail::affine_run<Arch>(plan, len, po, qmin, qmax, [&](std::size_t i, const auto& a) {
      using P = std::decay_t<decltype(a.scale)>;
      using A = simd::arch_of<P>;
      const detail::indexed_rounder<A, Round> rnd{round, e0 + i};
      simd::store(out + i, detail::ste_body(simd::load<A>(xs + i), simd::load<A>(ds + i), a, rnd, true));
    });
  });
}

// y = fake_quantize(x) and mask = 1[qmin <= round(x * inv_s) + z <= qmax] (0/1 bytes)
// in one pass: PyTorch's fake_quantize_per_*_affine_cachemask.
template <class Arch = simd::default_arch, class Round = round_half_to_even>
void fake_quantize_with_mask(const float* x, float* y, std::uint8_t* mask, const detail::segment_plan& plan,
                             float qmin, float qmax, const Round& round = {}) noexcept {
  detail::for_each_piece(plan, detail::affine_piece, [&](std::size_t, std::size_t e0, std::size_t len,
                                                         std::size_t po) {
    const float* xs = x + e0;
    float* ys = y + e0;
    std::uint8_t* ms = mask + e0;
    detail::affine_run<Arch>(plan, len, po, qmin, qmax, [&](std::size_t i, const auto& a) {
      using P = std::decay_t<decltype(a.scale)>;
      using A = simd::arch_of<P>;
      constexpr std::size_t L = simd::lanes<float, A>;
      const detail::indexed_rounder<A, Round> rnd{round, e0 + i};
      // one rounding serves both outputs (stochastic rounding must not draw twice)
      const P g = detail::unclamped_grid(simd::load<A>(xs + i), a, rnd);
      const auto inside = (g >= a.qmin) & (g <= a.qmax);
      simd::store(ys + i, detail::from_grid(simd::clamp(g, a.qmin, a.qmax), a));
      alignas(64) float m[L];
      simd::store(m, simd::mask_to_one(inside));
      for (std::size_t j = 0; j < L; ++j) ms[i + j] = static_cast<std::uint8_t>(m[j] != 0.0f);
    });
  });
}

}  // namespace kernels

// ====================================================================================
// Eager entry points over xtensor expressions
// ====================================================================================
namespace eager {

// dx = STE backward of fake_quantize(x, p) given dy, into a new container.
// Per-tensor, per-channel or per-group parameters; x and dy of the same shape.
template <class Round = round_half_to_even, class E, class D>
auto ste_backward(const xt::xexpression<E>& x, const xt::xexpression<D>& dy, const qparams& p,
                  ste_mode mode = ste_mode::clipped, const Round& round = {}) {
  const char* fn = "ste_backward";
  const auto in = detail::as_contiguous(x);
  const auto g = detail::as_contiguous(dy);
  detail::check_same_shape(in.shape(), g.shape(), fn, "dy.shape");
  const auto plan = detail::make_segment_plan(in.shape(), p, fn);
  using R = detail::result_container_t<D, float>;
  R out = R::from_shape(in.shape());
  kernels::ste_backward<simd::default_arch, Round>(in.data(), g.data(), out.data(), plan,
                                                   static_cast<float>(p.qmin()), static_cast<float>(p.qmax()), mode,
                                                   round);
  return out;
}

// Same, into a caller-provided row-major float container (resized if needed; may alias dy;
// quant::length_error naming out.shape if its type has a fixed rank or shape other than x's).
// Only such a container is an `out` (SFINAE: an lvalue ste_mode selects the overload above).
template <class Round = round_half_to_even, class E, class D, class O,
          std::enable_if_t<detail::is_row_major_float_container<O>::value, int> = 0>
void ste_backward(const xt::xexpression<E>& x, const xt::xexpression<D>& dy, const qparams& p, O& out,
                  ste_mode mode = ste_mode::clipped, const Round& round = {}) {
  const char* fn = "ste_backward";
  auto in = detail::as_contiguous(x);
  auto g = detail::as_contiguous(dy);
  detail::check_same_shape(in.shape(), g.shape(), fn, "dy.shape");
  const auto plan = detail::make_segment_plan(in.shape(), p, fn);
  detail::prepare_output(out, in.shape(), fn, "out.shape", in, g);
  kernels::ste_backward<simd::default_arch, Round>(in.data(), g.data(), out.data(), plan,
                                                   static_cast<float>(p.qmin()), static_cast<float>(p.qmax()), mode,
                                                   round);
}

// Forward output and the clipped-STE mask of fake_quantize(x, p).
template <class Y>
struct fake_quantize_mask_result {
  Y y;                                                      // fake_quantize(x, p)
  xt::xarray<std::uint8_t, xt::layout_type::row_major> mask;  // 1 where the gradient passes
};

// y and mask in one pass (PyTorch's fake_quantize_per_*_affine_cachemask); backward is
// then dx = dy * mask.
template <class Round = round_half_to_even, class E>
auto fake_quantize_with_mask(const xt::xexpression<E>& x, const qparams& p, const Round& round = {}) {
  const char* fn = "fake_quantize_with_mask";
  const auto in = detail::as_contiguous(x);
  const auto plan = detail::make_segment_plan(in.shape(), p, fn);
  using R = detail::result_container_t<E, float>;
  fake_quantize_mask_result<R> r{R::from_shape(in.shape()),
                                 xt::xarray<std::uint8_t, xt::layout_type::row_major>::from_shape(in.shape())};
  kernels::fake_quantize_with_mask<simd::default_arch, Round>(in.data(), r.y.data(), r.mask.data(), plan,
                                                              static_cast<float>(p.qmin()),
                                                              static_cast<float>(p.qmax()), round);
  return r;
}

}  // namespace eager
}  // namespace quant
