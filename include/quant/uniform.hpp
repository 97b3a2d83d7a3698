// quant/uniform.hpp — uniform affine quantize, dequantize and fake-quantize
// (docs/numerics.md; Jacob et al. 2018, Nagel et al. 2021).
//
//   quantize:      q     = clamp(round(x * inv_s) + z, qmin, qmax),  inv_s = 1/s in float
//   dequantize:    x_hat = (q - z) * s
//   fake-quantize: x_hat = dequantize(quantize(x))
// Default numerics are PyTorch's CPU kernels (see detail/affine_body.hpp): outputs are
// bit-identical to torch.fake_quantize_per_tensor_affine / _per_channel_affine for finite
// inputs. Rounding is a policy (rounding.hpp), the convention a second policy
// (pytorch_convention, or aimet_convention: clamp in float first).
//
// Two forms of each operation:
//  * lazy (namespace quant): an xtensor expression that composes with any other,
//    `quant::fake_quantize(w * a + b, p)` evaluates w * a + b element by element inside
//    the quantizer, no temporary. The per-tensor functor vectorizes when the application
//    defines XTENSOR_USE_XSIMD (about copy speed from 2^20 floats). Per-channel parameters
//    broadcast along the axis: xtensor 0.24 then walks every operand with a stepper,
//    ~15-40 ns per element here, two orders of magnitude behind the eager kernel.
//  * eager (namespace quant::eager): fused kernels over contiguous memory, SIMD through
//    xsimd whatever the xtensor configuration, threaded with OpenMP when available, and
//    the only form that offers per-group parameters and stochastic rounding.
// Why no lazy per-group: an xtensor functor sees values, never indices, so per-group
// parameters would have to arrive as operands broadcast to the full shape along every
// axis but the grouped one. xtensor 0.24's lazy xt::repeat does not compose with such
// broadcasts (its stepper rejects a fixed-rank shape), and a materialized expansion is
// three tensors the size of the input; either would also be the stepper path above. The
// lazy entry points therefore reject per-group parameters with quant::invalid_argument
// and point to quant::eager::.
// NaN: fake-quant passes it through; integer quantize rejects it (quant::domain_error).
#pragma once

#include <cstddef>
#include <atomic>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xfunction.hpp>
#include <xtensor/xtensor.hpp>

#include "detail/affine_body.hpp"
#include "detail/affine_run.hpp"
#include "detail/contiguous.hpp"
#include "detail/fresh_buffer.hpp"
#include "detail/segments.hpp"
#include "error.hpp"
#include "qparams.hpp"
#include "rounding.hpp"
#include "simd/arch.hpp"

namespace quant {

// ====================================================================================
// Lazy functors
// ====================================================================================
namespace detail {
template <class Round>
constexpr void require_deterministic() {
  static_assert(!Round::is_stochastic,
                "stochastic rounding needs element indices: use quant::eager::fake_quantize / quantize");
}
}  // namespace detail

// x -> fake_quantize(x) with one (s, z); vectorizes under XTENSOR_USE_XSIMD. Holds the
// clamp-first bounds lo = qmin - z, hi = qmax - z (detail/affine_run.hpp), so a pack costs
// loads of its four parameters and no arithmetic on them.
template <class Round = round_half_to_even, class Convention = pytorch_convention>
struct fake_quantize_functor {
  float scale, inv_scale, lo, hi;

  template <class T>
  float operator()(const T& x) const noexcept {
    return apply(static_cast<float>(x));
  }
  template <class B, simd::enable_if_pack_of<B, float> = 0>
  B simd_apply(const B& x) const noexcept {
    return apply(x);
  }

 private:
  template <class P>
  QUANT_ALWAYS_INLINE P apply(const P& x) const noexcept {
    const detail::bounded_pack<P> a{P(scale), P(inv_scale), P(lo), P(hi)};
    return detail::fake_quant_value<Round, Convention>(x, a, detail::plain_rounder<Round>{});
  }
};

// (x, s, inv_s, z) -> fake_quantize(x): parameters arrive as broadcast operands.
template <class Round = round_half_to_even, class Convention = pytorch_convention>
struct fake_quantize_channel_functor {
  float qmin, qmax;
  template <class T>
  float operator()(const T& x, float s, float inv_s, float z) const noexcept {
    const detail::bounded_pack<float> a{s, inv_s, qmin - z, qmax - z};
    return detail::fake_quant_value<Round, Convention>(static_cast<float>(x), a, detail::plain_rounder<Round>{});
  }
};

// x -> integer q of type Int. Throws quant::domain_error on NaN (no integer represents it).
template <class Int, class Round = round_half_to_even, class Convention = pytorch_convention>
struct quantize_functor {
  float scale, inv_scale, zero_point, qmin, qmax;
  template <class T>
  Int operator()(const T& x) const {
    const float v = static_cast<float>(x);
    if (v != v) detail::fail<domain_error>("quantize", "x", v, "NaN has no integer representation");
    const auto a = detail::make_affine_pack<float>(scale, inv_scale, zero_point, qmin, qmax);
    return static_cast<Int>(detail::to_grid<Convention>(v, a, detail::plain_rounder<Round>{}));
  }
};

template <class Int, class Round = round_half_to_even, class Convention = pytorch_convention>
struct quantize_channel_functor {
  float qmin, qmax;
  template <class T>
  Int operator()(const T& x, float s, float inv_s, float z) const {
    const float v = static_cast<float>(x);
    if (v != v) detail::fail<domain_error>("quantize", "x", v, "NaN has no integer representation");
    const auto a = detail::make_affine_pack<float>(s, inv_s, z, qmin, qmax);
    return static_cast<Int>(detail::to_grid<Convention>(v, a, detail::plain_rounder<Round>{}));
  }
};

// q -> (q - z) * s
struct dequantize_functor {
  float scale, zero_point;
  template <class T>
  float operator()(const T& q) const noexcept {
    return (static_cast<float>(q) - zero_point) * scale;
  }
};
struct dequantize_channel_functor {
  template <class T>
  float operator()(const T& q, float s, float z) const noexcept {
    return (static_cast<float>(q) - z) * s;
  }
};

namespace detail {

// Broadcastable parameter tensors for per-channel lazy expressions: shape [C, 1, ..., 1]
// with ndim - axis - 1 trailing ones (per tensor: shape [] ).
struct channel_operands {
  xt::xarray<float> scale, inv_scale, zero_point;
};

inline channel_operands make_channel_operands(const qparams& p, std::size_t ndim, const char* function) {
  if (p.granularity() == granularity::per_group)
    fail<invalid_argument>(function, "granularity", "per_group",
                           "lazy expressions take per-tensor or per-channel parameters (see uniform.hpp); use "
                           "quant::eager:: for per-group");
  std::vector<std::size_t> shape;
  if (p.granularity() == granularity::per_channel) {
    const std::size_t ax = wrap_axis(p.axis(), ndim, function);
    shape.assign(ndim - ax, 1);
    shape[0] = p.size();
  }
  channel_operands ops{xt::xarray<float>::from_shape(shape), xt::xarray<float>::from_shape(shape),
                       xt::xarray<float>::from_shape(shape)};
  for (std::size_t c = 0; c < p.size(); ++c) {
    ops.scale.flat(c) = p.scales()[c];
    ops.inv_scale.flat(c) = 1.0f / p.scales()[c];
    ops.zero_point.flat(c) = static_cast<float>(p.zero_points()[c]);
  }
  return ops;
}

template <class E>
void check_channel_count(const E& e, const qparams& p, std::size_t ndim, const char* function) {
  if (p.granularity() == granularity::per_channel) {
    const std::size_t ax = wrap_axis(p.axis(), ndim, function);
    if (static_cast<std::size_t>(e.shape()[ax]) != p.size())
      fail<length_error>(function, "shape", shape_string(e.shape()),
                         "axis " + std::to_string(ax) + " has " + std::to_string(e.shape()[ax]) + " channels but " +
                             std::to_string(p.size()) + " scales were given");
  }
}

template <class Int>
void check_integer_type(const grid& g, const char* function) {
  if (g.qmin() < static_cast<std::int64_t>(std::numeric_limits<Int>::min()) ||
      g.qmax() > static_cast<std::int64_t>(std::numeric_limits<Int>::max()))
    fail<invalid_argument>(function, "bits", g.bits,
                           std::string("grid [") + std::to_string(g.qmin()) + ", " + std::to_string(g.qmax()) +
                               "] does not fit the output integer type");
}

}  // namespace detail

// ====================================================================================
// Lazy entry points
// ====================================================================================

// Lazy fake-quant with one scale and zero point (validated here).
template <class Round = round_half_to_even, class Convention = pytorch_convention, class E>
auto fake_quantize(E&& e, float scale, std::int32_t zero_point, grid g) {
  detail::require_deterministic<Round>();
  const qparams p = qparams::per_tensor(g, scale, zero_point);  // validates
  using F = fake_quantize_functor<Round, Convention>;
  return xt::xfunction<F, xt::const_xclosure_t<E>>(
      F{scale, 1.0f / scale, static_cast<float>(p.qmin() - zero_point), static_cast<float>(p.qmax() - zero_point)},
      std::forward<E>(e));
}

// Lazy fake-quant with per-tensor or per-channel qparams (parameters broadcast).
template <class Round = round_half_to_even, class Convention = pytorch_convention, class E>
auto fake_quantize(E&& e, const qparams& p) {
  detail::require_deterministic<Round>();
  const char* fn = "fake_quantize";
  const std::size_t ndim = e.dimension();
  detail::check_channel_count(e, p, ndim, fn);
  auto ops = detail::make_channel_operands(p, ndim, fn);
  using F = fake_quantize_channel_functor<Round, Convention>;
  return xt::xfunction<F, xt::const_xclosure_t<E>, xt::xarray<float>, xt::xarray<float>, xt::xarray<float>>(
      F{static_cast<float>(p.qmin()), static_cast<float>(p.qmax())}, std::forward<E>(e), std::move(ops.scale),
      std::move(ops.inv_scale), std::move(ops.zero_point));
}

// Lazy integer quantize (Int = int8_t, uint8_t, int16_t, int32_t, ... wide enough for the grid).
template <class Int, class Round = round_half_to_even, class Convention = pytorch_convention, class E>
auto quantize(E&& e, const qparams& p) {
  detail::require_deterministic<Round>();
  const char* fn = "quantize";
  detail::check_integer_type<Int>(p.grid(), fn);
  const std::size_t ndim = e.dimension();
  detail::check_channel_count(e, p, ndim, fn);
  auto ops = detail::make_channel_operands(p, ndim, fn);
  using F = quantize_channel_functor<Int, Round, Convention>;
  return xt::xfunction<F, xt::const_xclosure_t<E>, xt::xarray<float>, xt::xarray<float>, xt::xarray<float>>(
      F{static_cast<float>(p.qmin()), static_cast<float>(p.qmax())}, std::forward<E>(e), std::move(ops.scale),
      std::move(ops.inv_scale), std::move(ops.zero_point));
}

// Lazy dequantize of integer (or float-held integer) values.
template <class E>
auto dequantize(E&& q, const qparams& p) {
  const char* fn = "dequantize";
  const std::size_t ndim = q.dimension();
  detail::check_channel_count(q, p, ndim, fn);
  auto ops = detail::make_channel_operands(p, ndim, fn);
  return xt::xfunction<dequantize_channel_functor, xt::const_xclosure_t<E>, xt::xarray<float>, xt::xarray<float>>(
      dequantize_channel_functor{}, std::forward<E>(q), std::move(ops.scale), std::move(ops.zero_point));
}

// ====================================================================================
// Eager kernels (contiguous memory; Arch = xsimd arch or simd::scalar)
// ====================================================================================
namespace kernels {

// y = fake_quantize(x) over a whole plan (its tables carry the parameters and the grid);
// y may equal x (in place). `round` carries the seed for stochastic rounding; element
// indices are flat tensor indices.
template <class Arch = simd::default_arch, class Round = round_half_to_even, class Convention = pytorch_convention>
void fake_quantize(const float* x, float* y, const detail::segment_plan& plan, const Round& round = {}) noexcept {
  const detail::bounded_tables tables = detail::bounded_tables_of(plan);
  auto chunk = [&](auto stream, std::size_t begin, std::size_t end) {
    constexpr bool Stream = decltype(stream)::value;
    detail::for_each_run(plan, begin, end, [&](std::size_t e0, std::size_t len, std::size_t po) QUANT_INLINE_LAMBDA {
      const float* xs = x + e0;
      float* ys = y + e0;
      detail::bounded_run<Arch, Stream>(
          tables, len, po,
          [&](std::size_t i, const auto& a) QUANT_INLINE_LAMBDA {
            using P = std::decay_t<decltype(a.scale)>;
            using A = simd::arch_of<P>;
            const P v = detail::fake_quant_value<Round, Convention>(simd::load<A>(xs + i), a,
                                                                    detail::indexed_rounder<A, Round>{round, e0 + i});
            if constexpr (Stream && detail::can_stream<P>::value) {
              detail::prefetch_ahead(xs + i);
              detail::stream_store(ys + i, v);
            } else
              simd::store(ys + i, v);
          },
          ys);
    });
    if constexpr (Stream) detail::stream_fence();
  };
  if constexpr (detail::can_stream<simd::pack<float, Arch>>::value) {
    if (detail::use_streaming_stores<Arch>(plan.n)) {
      detail::for_each_chunk(plan, [&](std::size_t b, std::size_t e) { chunk(std::true_type{}, b, e); });
      return;
    }
  }
  detail::for_each_chunk(plan, [&](std::size_t b, std::size_t e) { chunk(std::false_type{}, b, e); });
}

// q = quantize(x) into integers. Returns the number of NaN inputs met (their q is
// unspecified; the callers throw).
template <class Int, class Arch = simd::default_arch, class Round = round_half_to_even,
          class Convention = pytorch_convention>
std::size_t quantize(const float* x, Int* q, const detail::segment_plan& plan, const Round& round = {}) noexcept {
  std::atomic<std::size_t> nan_total{0};  // an integer count: any order of additions is exact
  const detail::bounded_tables tables = detail::bounded_tables_of(plan);
  detail::for_each_chunk(plan, [&](std::size_t begin, std::size_t end) {
    std::size_t nans = 0;
    detail::for_each_run(plan, begin, end, [&](std::size_t e0, std::size_t len, std::size_t po) QUANT_INLINE_LAMBDA {
      const float* xs = x + e0;
      Int* qs = q + e0;
      detail::bounded_run<Arch>(tables, len, po, [&](std::size_t i, const auto& a) QUANT_INLINE_LAMBDA {
        using P = std::decay_t<decltype(a.scale)>;
        using A = simd::arch_of<P>;
        constexpr std::size_t L = simd::lanes<float, A>;
        const P c = detail::centered_grid<Round, Convention>(simd::load<A>(xs + i), a,
                                                               detail::indexed_rounder<A, Round>{round, e0 + i});
        const P g = c + (P(plan.qmin) - a.lo);  // + z (lo = qmin - z): exact small integers
        if constexpr (L == 1) {
          const bool nan = g != g;
          nans += nan;
          qs[i] = static_cast<Int>(nan ? 0.0f : g);
        } else {
          alignas(64) float buf[L];
          simd::store(buf, g);
          if (xsimd::any(xsimd::isnan(g)))  // (xsimd's != is an ordered compare)
            for (std::size_t j = 0; j < L; ++j)
              if (buf[j] != buf[j]) ++nans, buf[j] = 0.0f;
          for (std::size_t j = 0; j < L; ++j) qs[i + j] = static_cast<Int>(buf[j]);
        }
      });
    });
    if (nans) nan_total += nans;
  });
  return nan_total.load();
}

// x_hat = (q - z) * s from integers.
template <class Int, class Arch = simd::default_arch>
void dequantize(const Int* q, float* y, const detail::segment_plan& plan) noexcept {
  detail::for_each_chunk(plan, [&](std::size_t begin, std::size_t end) {
    detail::for_each_run(plan, begin, end, [&](std::size_t e0, std::size_t len, std::size_t po) QUANT_INLINE_LAMBDA {
      const float* s = plan.scale() + po;
      const float* z = plan.zero_point() + po;
      if (plan.vector_params) {
        for (std::size_t i = 0; i < len; ++i) y[e0 + i] = (static_cast<float>(q[e0 + i]) - z[i]) * s[i];
      } else {
        const float sv = s[0], zv = z[0];
        for (std::size_t i = 0; i < len; ++i) y[e0 + i] = (static_cast<float>(q[e0 + i]) - zv) * sv;
      }
    });
  });
}

}  // namespace kernels

// ====================================================================================
// Eager entry points over xtensor expressions
// ====================================================================================
namespace eager {

// fake_quantize(x) into a new container (same container kind as x when x is a float
// container). Per-tensor, per-channel or per-group parameters.
template <class Round = round_half_to_even, class Convention = pytorch_convention, class E>
auto fake_quantize(const xt::xexpression<E>& x, const qparams& p, const Round& round = {}) {
  const auto in = detail::as_contiguous(x);
  const auto plan = detail::make_segment_plan(in.shape(), p, "fake_quantize");
  using R = detail::result_container_t<E, float>;
  R out = R::from_shape(in.shape());
  detail::advise_huge_pages(out.data(), out.size() * sizeof(float));  // before the first write
  kernels::fake_quantize<simd::default_arch, Round, Convention>(in.data(), out.data(), plan, round);
  return out;
}

// fake_quantize(x) into a caller-provided container (resized if needed; may alias x).
// quant::length_error naming out.shape if out's type cannot take x's shape (a fixed rank or
// shape of its own), before anything is written.
// Only a row-major float container is an `out` (SFINAE, not a static_assert: a rounding
// policy passed as an lvalue must select the overload above).
template <class Round = round_half_to_even, class Convention = pytorch_convention, class E, class O,
          std::enable_if_t<detail::is_row_major_float_container<O>::value, int> = 0>
void fake_quantize(const xt::xexpression<E>& x, const qparams& p, O& out, const Round& round = {}) {
  auto in = detail::as_contiguous(x);
  const auto plan = detail::make_segment_plan(in.shape(), p, "fake_quantize");
  detail::prepare_output(out, in.shape(), "fake_quantize", "out.shape", in);
  kernels::fake_quantize<simd::default_arch, Round, Convention>(in.data(), out.data(), plan, round);
}

// Integer quantize into a new container of Int. Throws quant::domain_error on NaN input.
template <class Int, class Round = round_half_to_even, class Convention = pytorch_convention, class E>
auto quantize(const xt::xexpression<E>& x, const qparams& p, const Round& round = {}) {
  const char* fn = "quantize";
  detail::check_integer_type<Int>(p.grid(), fn);
  const auto in = detail::as_contiguous(x);
  const auto plan = detail::make_segment_plan(in.shape(), p, fn);
  using R = detail::result_container_t<E, Int>;
  R out = R::from_shape(in.shape());
  const std::size_t nans =
      kernels::quantize<Int, simd::default_arch, Round, Convention>(in.data(), out.data(), plan, round);
  if (nans) detail::fail<domain_error>(fn, "x", std::to_string(nans) + " NaN values", "NaN has no integer representation");
  return out;
}

// Dequantize integers (any integer container) to float.
template <class E>
auto dequantize(const xt::xexpression<E>& q, const qparams& p) {
  const auto& qe = q.derived_cast();
  using Int = typename E::value_type;
  const auto plan = detail::make_segment_plan(qe.shape(), p, "dequantize");
  xt::xarray<Int> qc = qe;  // contiguous row-major copy when needed is cheap next to the float output
  xt::xarray<float> out = xt::xarray<float>::from_shape(qe.shape());
  kernels::dequantize<Int>(qc.data(), out.data(), plan);
  return out;
}

}  // namespace eager
}  // namespace quant
