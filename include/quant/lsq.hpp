// quant/lsq.hpp — learned step size quantization: LSQ (Esser et al. 2020, "Learned Step
// Size Quantization", eq. 1-4) and LSQ+ (Bhalgat et al. 2020, "LSQ+: Improving low-bit
// quantization through learnable offsets and better initialization", eq. 2-6).
// Formulas, defaults and the PyTorch mode in detail: docs/qat.md.
//
// Forward (paper convention, lsq_convention::paper):
//     u     = (x - beta) * inv_s                 inv_s = 1/s in float, as every quantizer here
//     x_hat = round(clamp(u, qmin, qmax)) * s + beta        round = half to even
// LSQ is LSQ+ with beta = 0 (lsq_params::offset empty).
// Backward, straight through the rounding, per element, then summed over the elements
// that share a scale (one per tensor, or one per channel along an axis):
//     dx    = dy * 1[qmin <= u <= qmax]
//     ds    = dy * (round(u) - u)   inside,   dy * qmin below,   dy * qmax above
//     dbeta = 0                     inside,   dy                 outside
// ds and dbeta are multiplied by the gradient scale g = 1 / sqrt(N * qmax) (LSQ §2.2;
// on by default), N = elements per scale: the tensor or channel size for weights; pass
// N explicitly (features per sample) for activations, or switch scaling off.
//
// PyTorch convention (lsq_convention::pytorch): the arithmetic of
// torch._fake_quantize_learnable_per_tensor_affine / _per_channel_affine (1.13, CPU),
// whose "offset" is a float zero point z rounded to the grid:
//   forward  = fake_quantize(x, s, z_f) with z_f = clamp(round_half_even(z)) (bit-identical)
//   backward   xq = round(fma(x, inv_s, z_b)) (z added *before* rounding, one rounding),
//              inside = qmin <= xq <= qmax,  x_fq - x = fma(clamp(xq) - z_b, s, -x),
//              dx = dy * inside, ds = dy * (x_fq - x) * inv_s inside, dy * (qmin|qmax - z_b)
//              outside, dz = -dy * s outside, 0 inside; ds, dz times grad_factor = g.
//   z_b = z_f per channel; per tensor PyTorch's backward takes z_b = trunc(clamp(z + 0.5)),
//   which differs from z_f for negative or half-integer z: reproduced, not corrected.
// Reduced gradients match PyTorch's float32 sums within 1e-5 relative (ours are more
// accurate, see below); forward outputs and dx are bit-identical.
//
// The fused kernel (eager::lsq_backward / lsq_forward_backward) reads x and dy once,
// writes dx (and y), and reduces ds and dbeta in the same pass. Each fixed piece of
// the data (detail::affine_piece elements) sums its terms with compensated (Kahan) float
// accumulators per SIMD lane, folds the lanes (a fixed float reduction tree, then
// double), and the pieces are combined in double in piece order: results are
// bit-identical for any thread count, and the error of each sum stays below about
// 2^-21 * sum|terms| whatever N (a plain float sum of N terms can be off by N * 2^-24).
// A scalar build sums in another order and may differ from a SIMD build in the last bits
// of the reduced gradients only. Short per-channel runs (fewer than 256 elements per
// channel and row) are handled as rows carrying parameter tables, one accumulator per
// row position, so that folding does not dominate.
// NaN in x gives dx = 0 (as PyTorch) and a NaN scale gradient.
//
// Initialisation (§3): lsq_init_scale (LSQ: 2 mean|x| / sqrt(qmax)), lsq_plus_init_weights
// (max(|mu - 3 sigma|, |mu + 3 sigma|) / 2^(b-1)), lsq_plus_init_minmax and lsq_plus_init_mse
// (activations: (s, beta) from min/max, or minimising ||x - x_hat||^2), and clamp_scale to
// keep s >= eps after an optimiser step.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

#include "detail/affine_body.hpp"
#include "detail/affine_run.hpp"
#include "detail/checks.hpp"
#include "detail/contiguous.hpp"
#include "detail/golden_section.hpp"
#include "detail/parallel.hpp"
#include "detail/segments.hpp"
#include "error.hpp"
#include "qparams.hpp"
#include "rounding.hpp"
#include "simd/arch.hpp"
#include "uniform.hpp"

namespace quant {

enum class lsq_convention {
  paper,   // LSQ / LSQ+ as published: float offset beta, clamp in u then round
  pytorch  // torch._fake_quantize_learnable_per_*_affine: float zero point, rounded
};

// Parameters of an LSQ / LSQ+ quantizer. Plain value type: fill it, pass it; every entry
// point validates it against the input shape.
struct lsq_params {
  quant::grid grid{};
  std::vector<float> scale;                    // one per tensor, or one per channel; finite, > 0
  std::vector<float> offset;                   // empty => LSQ (beta = 0); else one per scale:
                                               //   paper: LSQ+ beta; pytorch: float zero point
  std::optional<std::ptrdiff_t> channel_axis;  // empty => per tensor; negative counts from the end
  bool gradient_scaling = true;                // multiply ds, dbeta by g = 1/sqrt(N * qmax)
  std::size_t elements_per_scale = 0;          // N; 0 => elements of the tensor per scale
  lsq_convention convention = lsq_convention::paper;

  bool has_offset() const noexcept { return !offset.empty(); }
};

// What the gradient entry points return: one type per form, each adding to the one before
// the tensors that form allocates (so code that consumes parameter gradients takes any):
//   lsq_param_gradients          lsq_backward(x, dy, p, dx), lsq_forward_backward(x, dy, p, y, dx)
//   lsq_gradients                lsq_backward(x, dy, p)
//   lsq_forward_backward_result  lsq_forward_backward(x, dy, p)

// Gradients w.r.t. the scales and offsets, summed per scale (g already applied).
struct lsq_param_gradients {
  std::vector<float> dscale;   // one per scale
  std::vector<float> doffset;  // one per scale; empty when lsq_params::offset is empty
};

// ... and w.r.t. x (shape of x).
struct lsq_gradients : lsq_param_gradients {
  xt::xarray<float> dx;
};

// ... and the forward output x_hat (shape of x).
struct lsq_forward_backward_result : lsq_gradients {
  xt::xarray<float> y;
};

// The gradient scale g = 1 / sqrt(N * qmax) that `p` applies for an input of n elements
// (1 when gradient_scaling is off).
inline double lsq_gradient_scale(const lsq_params& p, std::size_t n) {
  if (!p.gradient_scaling) return 1.0;
  const std::size_t per = p.scale.empty() ? 0 : n / p.scale.size();
  const std::size_t N = p.elements_per_scale ? p.elements_per_scale : per;
  if (N == 0) return 0.0;  // empty input: there is nothing to scale
  return 1.0 / std::sqrt(static_cast<double>(N) * static_cast<double>(p.grid.qmax()));
}

namespace detail {

// The zero points PyTorch uses in its learnable fake-quant (see header comment).
inline float torch_forward_zero_point(float z, float qmin, float qmax) noexcept {
  return std::min(std::max(round_half_to_even::apply(z), qmin), qmax);
}
inline float torch_backward_zero_point(float z, float qmin, float qmax, bool per_tensor) noexcept {
  if (!per_tensor) return torch_forward_zero_point(z, qmin, qmax);
  return std::trunc(std::min(std::max(z + 0.5f, qmin), qmax));
}

// The layout of a segment plan (detail/segments.hpp: runs sharing one parameter, or rows
// carrying a parameter table) with LSQ's own tables: scale, its float reciprocal and the
// offset (beta, or PyTorch's backward zero point), expanded along the row for vector runs.
struct lsq_plan {
  segment_plan seg;  // layout only
  std::size_t params = 1;
  float qmin = 0, qmax = 0;
  // PyTorch per tensor: forward zero point minus backward zero point (y uses z_f).
  float forward_shift = 0;
  std::vector<float> scale, inv_scale, offset;
  // PyTorch: the forward parameters as qparams (lsq_forward reuses the uniform kernel).
  std::optional<qparams> torch_forward;
};

constexpr std::size_t lsq_vector_inner = 256;

template <class Shape>
lsq_plan make_lsq_plan(const Shape& shape, const lsq_params& p, const char* function) {
  p.grid.validate(function);
  if (p.scale.empty()) fail<invalid_argument>(function, "scale.size()", 0, "must be >= 1");
  for (float v : p.scale) check_scale(v, function);
  if (!p.offset.empty() && p.offset.size() != p.scale.size())
    fail<length_error>(function, "offset.size()", p.offset.size(),
                       "must be 0 (LSQ) or equal scale.size() = " + std::to_string(p.scale.size()));
  for (float b : p.offset)
    if (!std::isfinite(b)) fail<invalid_argument>(function, "offset", b, "must be finite");
  if (!p.channel_axis && p.scale.size() != 1)
    fail<length_error>(function, "scale.size()", p.scale.size(), "must be 1 without a channel_axis");
  lsq_plan plan;
  plan.params = p.scale.size();
  plan.qmin = static_cast<float>(p.grid.qmin());
  plan.qmax = static_cast<float>(p.grid.qmax());
  // The layout (and the scale and shape validation) comes from an offset-free qparams. Its
  // zero points are unused; they only have to lie on the grid, which 0 does not when the
  // grid is unsigned and narrow ([1, 2^b - 1]).
  const std::int32_t layout_z = std::max<std::int32_t>(0, p.grid.qmin());
  const qparams layout =
      p.channel_axis
          ? qparams::per_channel(p.grid, p.scale, std::vector<std::int32_t>(p.scale.size(), layout_z), *p.channel_axis)
          : qparams::per_tensor(p.grid, p.scale[0], layout_z);
  plan.seg = make_segment_plan(shape, layout, function);
  const bool torch = p.convention == lsq_convention::pytorch;
  std::vector<float> off(plan.params, 0.0f);
  std::vector<std::int32_t> zf(plan.params, 0);
  for (std::size_t j = 0; j < plan.params; ++j) {
    // No offsets: offset 0, which PyTorch's zero-point rounding clamps onto the grid.
    const float o = p.offset.empty() ? 0.0f : p.offset[j];
    if (torch) {
      zf[j] = static_cast<std::int32_t>(torch_forward_zero_point(o, plan.qmin, plan.qmax));
      off[j] = torch_backward_zero_point(o, plan.qmin, plan.qmax, !p.channel_axis);
    } else {
      off[j] = o;
    }
  }
  if (torch) {
    plan.forward_shift = static_cast<float>(zf[0]) - off[0];  // nonzero only per tensor
    plan.torch_forward = p.channel_axis ? qparams::per_channel(p.grid, p.scale, zf, *p.channel_axis)
                                        : qparams::per_tensor(p.grid, p.scale[0], zf[0]);
  }
  // Short per-channel runs fold their accumulators more often than they add to them:
  // below lsq_vector_inner elements, and with several outer rows to share the fold, treat
  // each outer row of C * inner as one vector run (one accumulator per row position,
  // folded once per task), as long as a row fits a piece.
  if (plan.seg.k == segment_plan::kind::channel_scalar && plan.seg.inner < lsq_vector_inner &&
      plan.seg.outer > 1 && plan.seg.channels * plan.seg.inner <= affine_piece) {
    plan.seg.k = segment_plan::kind::channel_vector;
    plan.seg.vector_params = true;
    plan.seg.count = plan.seg.outer;
    plan.seg.length = plan.seg.channels * plan.seg.inner;
  }
  const std::size_t expand = plan.seg.vector_params ? plan.seg.inner : 1;
  plan.scale.resize(plan.params * expand);
  plan.inv_scale.resize(plan.params * expand);
  plan.offset.resize(plan.params * expand);
  for (std::size_t j = 0; j < plan.params; ++j)
    for (std::size_t r = 0; r < expand; ++r) {
      plan.scale[j * expand + r] = p.scale[j];
      plan.inv_scale[j * expand + r] = 1.0f / p.scale[j];  // in float, as PyTorch
      plan.offset[j * expand + r] = off[j];
    }
  return plan;
}

// One run of the plan from parameter offset po: full packs, then a scalar tail running
// the same body (as detail::affine_run, over LSQ's tables; the offset rides in
// affine_pack::zero_point).
template <class Arch, class Op>
QUANT_ALWAYS_INLINE void lsq_run(const lsq_plan& plan, std::size_t len, std::size_t po, Op&& op) noexcept {
  using P = simd::pack<float, Arch>;
  constexpr std::size_t L = simd::lanes<float, Arch>;
  const float* s = plan.scale.data() + po;
  const float* inv = plan.inv_scale.data() + po;
  const float* b = plan.offset.data() + po;
  const float qmin = plan.qmin, qmax = plan.qmax;
  std::size_t i = 0;
  if (!plan.seg.vector_params) {
    const affine_pack<P> a = make_affine_pack<P>(P(*s), P(*inv), P(*b), qmin, qmax);
    for (; i + L <= len; i += L) op(i, a);
    const affine_pack<float> t = make_affine_pack<float>(*s, *inv, *b, qmin, qmax);
    for (; i < len; ++i) op(i, t);
  } else {
    for (; i + L <= len; i += L)
      op(i, make_affine_pack<P>(simd::load<Arch>(s + i), simd::load<Arch>(inv + i), simd::load<Arch>(b + i), qmin,
                                qmax));
    for (; i < len; ++i) op(i, make_affine_pack<float>(s[i], inv[i], b[i], qmin, qmax));
  }
}

// Compensated (Kahan) sum, one per SIMD lane. The compensation recovers the low bits
// each float addition drops, so a piece's sum is accurate to ~2 ulp of sum|terms|.
template <class P>
struct kahan_sum {
  P sum = P(0.0f), comp = P(0.0f);
  QUANT_ALWAYS_INLINE void add(const P& v) noexcept {
    const P y = v - comp;
    const P t = sum + y;
    comp = (t - sum) - y;
    sum = t;
  }
  // The lanes summed in float by the pack's fixed reduction tree (log2(lanes) levels: an
  // error of at most ~4 ulp of the lanes' magnitudes), then in double.
  double total() const noexcept {
    return static_cast<double>(simd::reduce_add(sum)) - static_cast<double>(simd::reduce_add(comp));
  }
};

// a * b + c with one rounding on every target: simd::fma where it is an FMA instruction
// (or std::fma for scalars), lane by lane std::fma on SIMD archs without one.
template <class P>
QUANT_ALWAYS_INLINE P fused_multiply_add(const P& a, const P& b, const P& c) noexcept {
#if defined(__FMA__) || defined(__AVX512F__) || defined(__aarch64__)
  return simd::fma(a, b, c);
#else
  if constexpr (std::is_same<P, float>::value) {
    return std::fma(a, b, c);
  } else {
    using A = simd::arch_of<P>;
    constexpr std::size_t L = simd::lanes<float, A>;
    alignas(64) float va[L], vb[L], vc[L];
    simd::store(va, a);
    simd::store(vb, b);
    simd::store(vc, c);
    for (std::size_t k = 0; k < L; ++k) va[k] = std::fma(va[k], vb[k], vc[k]);
    return simd::load<A>(va);
  }
#endif
}

// Per-element LSQ body. Returns dx; sets y (when asked), the scale-gradient term and the
// offset term (dy outside the grid, 0 inside).
template <lsq_convention C, class P>
QUANT_ALWAYS_INLINE void lsq_element(const P& x, const P& dy, const affine_pack<P>& a, float forward_shift,
                                     P& y, P& dx, P& ds_term, P& out_term) noexcept {
  if constexpr (C == lsq_convention::paper) {
    const P beta = a.zero_point;
    const P u = (x - beta) * a.inv_scale;
    const auto inside = (u >= a.qmin) & (u <= a.qmax);
    const P q = round_half_to_even::apply(simd::clamp(u, a.qmin, a.qmax));
    y = q * a.scale + beta;
    dx = dy * simd::mask_to_one(inside);
    // inside: round(u) - u; below: qmin (= q); above: qmax (= q)
    ds_term = dy * (q - simd::select(inside, u, P(0.0f)));
    out_term = simd::select(inside, P(0.0f), dy);
  } else {
    const P z = a.zero_point;  // backward zero point
    // z + x * inv_s and x_fq - x = (q - z) s - x are each rounded once (fused), as
    // PyTorch's CPU kernel computes them.
    const P xq = round_half_to_even::apply(fused_multiply_add(x, a.inv_scale, z));
    const auto inside = (xq >= a.qmin) & (xq <= a.qmax);
    const P q = simd::clamp(xq, a.qmin, a.qmax);
    dx = dy * simd::mask_to_one(inside);
    const P q_minus_z = q - z;
    ds_term = simd::select(inside, (dy * fused_multiply_add(q_minus_z, a.scale, -x)) * a.inv_scale, dy * q_minus_z);
    out_term = simd::select(inside, P(0.0f), dy);
    // forward as fake_quantize with z_f = z + shift: round, add z_f, clamp, subtract
    const P zf = z + P(forward_shift);
    const P qf = simd::clamp(round_half_to_even::apply(x * a.inv_scale) + zf, a.qmin, a.qmax);
    y = (qf - zf) * a.scale;
  }
}

}  // namespace detail

// ====================================================================================
// Eager kernels (contiguous memory; Arch = xsimd arch or simd::scalar)
// ====================================================================================
namespace kernels {

// LSQ forward (paper convention; the PyTorch forward is kernels::fake_quantize).
template <class Arch = simd::default_arch>
void lsq_forward(const float* x, float* y, const detail::lsq_plan& plan) noexcept {
  const auto& seg = plan.seg;
  if (seg.count == 0 || seg.length == 0) return;
  constexpr std::size_t piece = detail::affine_piece;
  const std::size_t per_seg = (seg.length + piece - 1) / piece;
  detail::parallel_for(seg.count * per_seg, seg.n, [&](std::size_t t) {
    const std::size_t s_idx = t / per_seg, b = (t % per_seg) * piece;
    const std::size_t len = b + piece < seg.length ? piece : seg.length - b;
    const std::size_t e0 = seg.element_offset(s_idx) + b;
    const float* xs = x + e0;
    float* ys = y + e0;
    const std::size_t po = seg.vector_params ? b : seg.param_offset(s_idx);
    detail::lsq_run<Arch>(plan, len, po, [&](std::size_t i, const auto& a) {
      using P = std::decay_t<decltype(a.scale)>;
      using A = simd::arch_of<P>;
      const P u = (simd::load<A>(xs + i) - a.zero_point) * a.inv_scale;
      const P q = round_half_to_even::apply(simd::clamp(u, a.qmin, a.qmax));
      simd::store(ys + i, q * a.scale + a.zero_point);
    });
  });
}

}  // namespace kernels

namespace detail {

// One pack (or one float) of the fused pass: loads x and dy at i, stores dx (and y),
// adds the two gradient terms to the accumulators. A free always-inline function rather
// than a lambda, so that the accumulators stay in registers.
template <lsq_convention C, bool WantY, class P>
QUANT_ALWAYS_INLINE void lsq_step(const float* x, const float* dy, float* y, float* dx, std::size_t i,
                                  const affine_pack<P>& a, float shift, kahan_sum<P>& ds, kahan_sum<P>& out) noexcept {
  using A = simd::arch_of<P>;
  P yv, dxv, dsv, outv;
  lsq_element<C>(simd::load<A>(x + i), simd::load<A>(dy + i), a, shift, yv, dxv, dsv, outv);
  if constexpr (WantY) simd::store(y + i, yv);
  simd::store(dx + i, dxv);
  ds.add(dsv);
  out.add(outv);
}

// A run sharing one parameter: two accumulator sets alternate over the packs (two
// independent dependency chains), the tail has its own; all folded in a fixed order.
template <class Arch, lsq_convention C, bool WantY>
QUANT_ALWAYS_INLINE void lsq_scalar_run(const float* x, const float* dy, float* y, float* dx, std::size_t len,
                                        const lsq_plan& plan, std::size_t po, double& sum_ds,
                                        double& sum_out) noexcept {
  using P = simd::pack<float, Arch>;
  constexpr std::size_t L = simd::lanes<float, Arch>;
  const float s = plan.scale[po], inv = plan.inv_scale[po], b = plan.offset[po], shift = plan.forward_shift;
  const affine_pack<P> a = make_affine_pack<P>(P(s), P(inv), P(b), plan.qmin, plan.qmax);
  kahan_sum<P> ds0, ds1, out0, out1;
  std::size_t i = 0;
  for (; i + 2 * L <= len; i += 2 * L) {
    lsq_step<C, WantY>(x, dy, y, dx, i, a, shift, ds0, out0);
    lsq_step<C, WantY>(x, dy, y, dx, i + L, a, shift, ds1, out1);
  }
  if (i + L <= len) {
    lsq_step<C, WantY>(x, dy, y, dx, i, a, shift, ds0, out0);
    i += L;
  }
  const affine_pack<float> t = make_affine_pack<float>(s, inv, b, plan.qmin, plan.qmax);
  kahan_sum<float> ds_t, out_t;
  for (; i < len; ++i) lsq_step<C, WantY>(x, dy, y, dx, i, t, shift, ds_t, out_t);
  // merge the two chains lane by lane (compensated), then fold the lanes into double
  ds0.add(ds1.sum);
  ds0.add(-ds1.comp);
  out0.add(out1.sum);
  out0.add(-out1.comp);
  sum_ds = ds0.total() + ds_t.total();
  sum_out = out0.total() + out_t.total();
}

// One row of a vector run (parameter tables parallel to the row): the accumulators are
// arrays with one compensated sum per row position.
template <lsq_convention C, bool WantY, class P>
QUANT_ALWAYS_INLINE void lsq_vector_step(const float* x, const float* dy, float* y, float* dx, std::size_t i,
                                         const lsq_plan& plan, float* acc, std::size_t row) noexcept {
  using A = simd::arch_of<P>;
  const affine_pack<P> a =
      make_affine_pack<P>(simd::load<A>(plan.scale.data() + i), simd::load<A>(plan.inv_scale.data() + i),
                          simd::load<A>(plan.offset.data() + i), plan.qmin, plan.qmax);
  kahan_sum<P> ds{simd::load<A>(acc + i), simd::load<A>(acc + row + i)};
  kahan_sum<P> out{simd::load<A>(acc + 2 * row + i), simd::load<A>(acc + 3 * row + i)};
  lsq_step<C, WantY>(x, dy, y, dx, i, a, plan.forward_shift, ds, out);
  simd::store(acc + i, ds.sum);
  simd::store(acc + row + i, ds.comp);
  simd::store(acc + 2 * row + i, out.sum);
  simd::store(acc + 3 * row + i, out.comp);
}

template <class Arch, lsq_convention C, bool WantY>
void lsq_backward_impl(const float* x, const float* dy, float* y, float* dx, const lsq_plan& plan, double* sum_ds,
                       double* sum_out) {
  using PB = simd::pack<float, Arch>;
  constexpr std::size_t L = simd::lanes<float, Arch>;
  const auto& seg = plan.seg;
  for (std::size_t j = 0; j < plan.params; ++j) sum_ds[j] = sum_out[j] = 0.0;
  if (seg.count == 0 || seg.length == 0) return;
  constexpr std::size_t piece = affine_piece;

  if (!seg.vector_params) {
    // Runs sharing one parameter: each task is one piece of one run, partial sums in double.
    const std::size_t per_seg = (seg.length + piece - 1) / piece;
    const std::size_t tasks = seg.count * per_seg;
    std::vector<double> part(2 * tasks);
    parallel_for(tasks, seg.n, [&](std::size_t t) {
      const std::size_t s_idx = t / per_seg, b = (t % per_seg) * piece;
      const std::size_t len = b + piece < seg.length ? piece : seg.length - b;
      const std::size_t e0 = seg.element_offset(s_idx) + b;
      lsq_scalar_run<Arch, C, WantY>(x + e0, dy + e0, WantY ? y + e0 : nullptr, dx + e0, len, plan,
                                     seg.param_offset(s_idx), part[2 * t], part[2 * t + 1]);
    });
    for (std::size_t t = 0; t < tasks; ++t) {
      const std::size_t j = seg.param_offset(t / per_seg);
      sum_ds[j] += part[2 * t];
      sum_out[j] += part[2 * t + 1];
    }
    return;
  }

  // Per channel with short inner runs: a row of C * inner elements carries the parameter
  // tables. A task takes whole rows and keeps one compensated accumulator per row
  // position, folded into per-channel doubles at its end.
  const std::size_t row = seg.length, inner = seg.inner, channels = seg.channels;
  const std::size_t rows_per_task = row >= piece ? 1 : piece / row;
  const std::size_t tasks = (seg.count + rows_per_task - 1) / rows_per_task;
  std::vector<double> part(2 * tasks * channels);
  parallel_for(tasks, seg.n, [&](std::size_t t) {
    std::vector<float> acc(4 * row, 0.0f);  // ds sum, ds comp, out sum, out comp
    const std::size_t r0 = t * rows_per_task;
    const std::size_t r1 = std::min(seg.count, r0 + rows_per_task);
    for (std::size_t r = r0; r < r1; ++r) {
      const std::size_t e0 = seg.element_offset(r);
      const float* xs = x + e0;
      const float* gs = dy + e0;
      float* ys = WantY ? y + e0 : nullptr;
      float* dxs = dx + e0;
      std::size_t i = 0;
      for (; i + L <= row; i += L) lsq_vector_step<C, WantY, PB>(xs, gs, ys, dxs, i, plan, acc.data(), row);
      for (; i < row; ++i) lsq_vector_step<C, WantY, float>(xs, gs, ys, dxs, i, plan, acc.data(), row);
    }
    const float* a = acc.data();
    double* pd = part.data() + 2 * t * channels;
    for (std::size_t c = 0; c < channels; ++c) {
      double sd = 0.0, so = 0.0;
      std::size_t k = c * inner;
      const std::size_t end = k + inner;
      for (; k + L <= end; k += L) {
        sd += kahan_sum<PB>{simd::load<Arch>(a + k), simd::load<Arch>(a + row + k)}.total();
        so += kahan_sum<PB>{simd::load<Arch>(a + 2 * row + k), simd::load<Arch>(a + 3 * row + k)}.total();
      }
      for (; k < end; ++k) {
        sd += static_cast<double>(a[k]) - static_cast<double>(a[row + k]);
        so += static_cast<double>(a[2 * row + k]) - static_cast<double>(a[3 * row + k]);
      }
      pd[2 * c] = sd;
      pd[2 * c + 1] = so;
    }
  });
  for (std::size_t t = 0; t < tasks; ++t)
    for (std::size_t c = 0; c < channels; ++c) {
      sum_ds[c] += part[2 * (t * channels + c)];
      sum_out[c] += part[2 * (t * channels + c) + 1];
    }
}

}  // namespace detail

namespace kernels {

// The fused single pass: dx (and y when y != nullptr) per element; per parameter j,
// sum_ds[j] = sum of the scale-gradient terms and sum_out[j] = sum of dy outside the grid,
// both before the gradient scale. dx may alias dy.
template <class Arch = simd::default_arch, lsq_convention C = lsq_convention::paper>
void lsq_backward(const float* x, const float* dy, float* y, float* dx, const detail::lsq_plan& plan,
                  double* sum_ds, double* sum_out) {
  if (y)
    detail::lsq_backward_impl<Arch, C, true>(x, dy, y, dx, plan, sum_ds, sum_out);
  else
    detail::lsq_backward_impl<Arch, C, false>(x, dy, y, dx, plan, sum_ds, sum_out);
}

}  // namespace kernels

namespace detail {

template <class Arch>
void lsq_backward_dispatch(const float* x, const float* dy, float* y, float* dx, const lsq_plan& plan,
                           lsq_convention c, double* sum_ds, double* sum_out) {
  if (c == lsq_convention::paper)
    kernels::lsq_backward<Arch, lsq_convention::paper>(x, dy, y, dx, plan, sum_ds, sum_out);
  else
    kernels::lsq_backward<Arch, lsq_convention::pytorch>(x, dy, y, dx, plan, sum_ds, sum_out);
}

// Applies g (and PyTorch's -s for dz) to the raw sums.
inline lsq_param_gradients finish_lsq_gradients(const lsq_params& p, std::size_t n, const std::vector<double>& sum_ds,
                                                const std::vector<double>& sum_out) {
  const double g = lsq_gradient_scale(p, n);
  lsq_param_gradients r;
  r.dscale.resize(sum_ds.size());
  for (std::size_t j = 0; j < sum_ds.size(); ++j) r.dscale[j] = static_cast<float>(g * sum_ds[j]);
  if (p.has_offset()) {
    r.doffset.resize(sum_out.size());
    for (std::size_t j = 0; j < sum_out.size(); ++j) {
      const double f = p.convention == lsq_convention::pytorch ? -static_cast<double>(p.scale[j]) * g : g;
      r.doffset[j] = static_cast<float>(f * sum_out[j]);
    }
  }
  return r;
}

// y = LSQ forward of x (contiguous, `shape`); y may equal x.
template <class S>
void lsq_forward_into(const float* x, float* y, const S& shape, const lsq_plan& plan) {
  if (plan.torch_forward) {
    const auto seg = make_segment_plan(shape, *plan.torch_forward, "lsq_forward");
    kernels::fake_quantize(x, y, seg);
  } else {
    kernels::lsq_forward(x, y, plan);
  }
}

}  // namespace detail

// ====================================================================================
// Eager entry points
// ====================================================================================
namespace eager {

// LSQ / LSQ+ forward x_hat of x (any shape; per tensor or per channel along
// p.channel_axis). PyTorch convention: bit-identical to
// torch._fake_quantize_learnable_per_{tensor,channel}_affine.
template <class E>
xt::xarray<float> lsq_forward(const xt::xexpression<E>& x, const lsq_params& p) {
  const auto in = detail::as_contiguous(x);
  const auto plan = detail::make_lsq_plan(in.shape(), p, "lsq_forward");
  xt::xarray<float> y = xt::xarray<float>::from_shape(in.shape());
  detail::lsq_forward_into(in.data(), y.data(), in.shape(), plan);
  return y;
}

// The same forward into a caller-provided y, a row-major float container (resized if
// needed; may be x itself), as every out-form of the library.
template <class E, class O>
void lsq_forward(const xt::xexpression<E>& x, const lsq_params& p, O& y) {
  const char* fn = "lsq_forward";
  auto in = detail::as_contiguous(x);
  const auto plan = detail::make_lsq_plan(in.shape(), p, fn);
  detail::prepare_output(y, in.shape(), fn, "y.shape", in);
  detail::lsq_forward_into(in.data(), y.data(), in.shape(), plan);
}

// Fused backward into a caller-provided dx (resized if needed; may alias dy): reads x and
// dy once, writes dx, returns dscale (and doffset) summed per scale, times g.
template <class E, class D, class O>
lsq_param_gradients lsq_backward(const xt::xexpression<E>& x, const xt::xexpression<D>& dy, const lsq_params& p,
                                 O& dx) {
  const char* fn = "lsq_backward";
  auto in = detail::as_contiguous(x);
  auto g = detail::as_contiguous(dy);
  detail::check_same_shape(in.shape(), g.shape(), fn, "dy.shape");
  const auto plan = detail::make_lsq_plan(in.shape(), p, fn);
  detail::prepare_output(dx, in.shape(), fn, "dx.shape", in, g);
  std::vector<double> sds(plan.params), sout(plan.params);
  detail::lsq_backward_dispatch<simd::default_arch>(in.data(), g.data(), nullptr, dx.data(), plan, p.convention,
                                                    sds.data(), sout.data());
  return detail::finish_lsq_gradients(p, in.size(), sds, sout);
}

// Fused backward into new containers.
template <class E, class D>
lsq_gradients lsq_backward(const xt::xexpression<E>& x, const xt::xexpression<D>& dy, const lsq_params& p) {
  lsq_gradients r;
  static_cast<lsq_param_gradients&>(r) = lsq_backward(x, dy, p, r.dx);
  return r;
}

// Forward and backward in one pass (for callers that know dy when they run the
// quantizer, e.g. a layer-wise reconstruction loss): writes y and dx, returns the
// parameter gradients. y and dx are resized if needed.
template <class E, class D, class O1, class O2>
lsq_param_gradients lsq_forward_backward(const xt::xexpression<E>& x, const xt::xexpression<D>& dy,
                                         const lsq_params& p, O1& y, O2& dx) {
  const char* fn = "lsq_forward_backward";
  auto in = detail::as_contiguous(x);
  auto g = detail::as_contiguous(dy);
  detail::check_same_shape(in.shape(), g.shape(), fn, "dy.shape");
  const auto plan = detail::make_lsq_plan(in.shape(), p, fn);
  detail::prepare_output(y, in.shape(), fn, "y.shape", in, g);
  detail::prepare_output(dx, in.shape(), fn, "dx.shape", in, g);
  std::vector<double> sds(plan.params), sout(plan.params);
  detail::lsq_backward_dispatch<simd::default_arch>(in.data(), g.data(), y.data(), dx.data(), plan, p.convention,
                                                    sds.data(), sout.data());
  return detail::finish_lsq_gradients(p, in.size(), sds, sout);
}

template <class E, class D>
lsq_forward_backward_result lsq_forward_backward(const xt::xexpression<E>& x, const xt::xexpression<D>& dy,
                                                 const lsq_params& p) {
  lsq_forward_backward_result r;
  static_cast<lsq_param_gradients&>(r) = lsq_forward_backward(x, dy, p, r.y, r.dx);
  return r;
}

}  // namespace eager

// ====================================================================================
// Initialisation and the scale floor (docs/qat.md)
// ====================================================================================

// s = max(s, eps) for every scale (and the offsets are left alone). Call after each
// optimiser step: a step size must stay positive. NaN scales throw quant::domain_error
// (the training diverged; silently repairing it would hide that).
inline void clamp_scale(std::vector<float>& scale, float eps = FLT_EPSILON) {
  if (!(eps > 0.0f) || !std::isfinite(eps)) detail::fail<invalid_argument>("clamp_scale", "eps", eps, "must be finite and > 0");
  for (float& s : scale) {
    if (std::isnan(s)) detail::fail<domain_error>("clamp_scale", "scale", s, "is NaN");
    s = std::min(std::max(s, eps), FLT_MAX);
  }
}
inline void clamp_scale(lsq_params& p, float eps = FLT_EPSILON) { clamp_scale(p.scale, eps); }

namespace detail {

// Visits the data of x channel by channel: f(c, value) for each element (c = 0 without
// an axis). Rejects empty and non-finite data (a statistic of them is meaningless).
template <class F>
std::size_t for_each_channel_value(const float* x, const std::vector<std::size_t>& shape,
                                   std::optional<std::ptrdiff_t> axis, const char* function, F&& f) {
  std::size_t n = 1;
  for (auto d : shape) n *= d;
  if (n == 0) fail<invalid_argument>(function, "x.size()", 0, "must be >= 1");
  std::size_t channels = 1, inner = n;
  if (axis) {
    const std::size_t ax = wrap_axis(*axis, shape.size(), function);
    channels = shape[ax];
    inner = 1;
    for (std::size_t d = ax + 1; d < shape.size(); ++d) inner *= shape[d];
  }
  for (std::size_t e = 0; e < n; ++e) {
    if (!std::isfinite(x[e])) fail<domain_error>(function, "x", x[e], "must be finite");
    f((e / inner) % channels, x[e]);
  }
  return channels;
}

template <class E>
std::vector<std::size_t> shape_vector(const E& in) {
  return std::vector<std::size_t>(in.shape().begin(), in.shape().end());
}

}  // namespace detail

// LSQ init (Esser 2020 §2.1): s = 2 * mean(|x|) / sqrt(qmax), per tensor or per channel
// along `axis`; double accumulation, floored at FLT_EPSILON (an all-zero tensor still
// gets a valid scale).
template <class E>
std::vector<float> lsq_init_scale(const xt::xexpression<E>& x, grid g, std::optional<std::ptrdiff_t> axis = {}) {
  const char* fn = "lsq_init_scale";
  g.validate(fn);
  const auto in = detail::as_contiguous(x);
  const auto shape = detail::shape_vector(in);
  std::vector<double> sum, count;
  const std::size_t channels = detail::for_each_channel_value(in.data(), shape, axis, fn, [&](std::size_t c, float v) {
    if (c >= sum.size()) {
      sum.resize(c + 1, 0.0);
      count.resize(c + 1, 0.0);
    }
    sum[c] += std::fabs(static_cast<double>(v));
    count[c] += 1.0;
  });
  std::vector<float> s(channels, FLT_EPSILON);
  for (std::size_t c = 0; c < sum.size(); ++c)
    s[c] = std::max(static_cast<float>(2.0 * (sum[c] / count[c]) / std::sqrt(static_cast<double>(g.qmax()))),
                    FLT_EPSILON);
  return s;
}

// LSQ+ weight init (Bhalgat 2020 §3.3): s = max(|mu - 3 sigma|, |mu + 3 sigma|) / 2^(b-1)
// with the population mean and standard deviation (two passes in double), per tensor
// or per channel; floored at FLT_EPSILON. Weights use beta = 0.
template <class E>
std::vector<float> lsq_plus_init_weights(const xt::xexpression<E>& x, grid g,
                                         std::optional<std::ptrdiff_t> axis = {}) {
  const char* fn = "lsq_plus_init_weights";
  g.validate(fn);
  const auto in = detail::as_contiguous(x);
  const auto shape = detail::shape_vector(in);
  std::vector<double> sum, count, sq;
  const std::size_t channels = detail::for_each_channel_value(in.data(), shape, axis, fn, [&](std::size_t c, float v) {
    if (c >= sum.size()) {
      sum.resize(c + 1, 0.0);
      count.resize(c + 1, 0.0);
    }
    sum[c] += v;
    count[c] += 1.0;
  });
  sq.assign(channels, 0.0);
  detail::for_each_channel_value(in.data(), shape, axis, fn, [&](std::size_t c, float v) {
    const double d = v - sum[c] / count[c];
    sq[c] += d * d;
  });
  std::vector<float> s(channels);
  const double denom = std::ldexp(1.0, g.bits - 1);
  for (std::size_t c = 0; c < channels; ++c) {
    const double mu = sum[c] / count[c], sigma = std::sqrt(sq[c] / count[c]);
    s[c] = std::max(static_cast<float>(std::max(std::fabs(mu - 3 * sigma), std::fabs(mu + 3 * sigma)) / denom),
                    FLT_EPSILON);
  }
  return s;
}

struct lsq_scale_offset {
  float scale;
  float offset;  // beta
};

// LSQ+ activation init from the range (Bhalgat 2020 §3.3): s = (max - min) / (qmax - qmin),
// beta = min - qmin * s, so that the grid spans exactly [min, max]. s floored at FLT_EPSILON.
template <class E>
lsq_scale_offset lsq_plus_init_minmax(const xt::xexpression<E>& x, grid g) {
  const char* fn = "lsq_plus_init_minmax";
  g.validate(fn);
  const auto in = detail::as_contiguous(x);
  float lo = 0, hi = 0;
  bool first = true;
  detail::for_each_channel_value(in.data(), detail::shape_vector(in), {}, fn, [&](std::size_t, float v) {
    lo = first ? v : std::min(lo, v);
    hi = first ? v : std::max(hi, v);
    first = false;
  });
  const float s = std::max((hi - lo) / static_cast<float>(g.qmax() - g.qmin()), FLT_EPSILON);
  return {s, lo - static_cast<float>(g.qmin()) * s};
}

namespace detail {
// sum (x - x_hat)^2 in double for the paper-convention LSQ+ forward with (s, beta).
inline double lsq_squared_error(const float* x, std::size_t n, float s, float beta, float qmin, float qmax) {
  const float inv = 1.0f / s;
  double e = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const float u = (x[i] - beta) * inv;
    const float q = round_half_to_even::apply(std::min(std::max(u, qmin), qmax));
    const double d = static_cast<double>(x[i]) - static_cast<double>(q * s + beta);
    e += d * d;
  }
  return e;
}
}  // namespace detail

// LSQ+ activation init minimising ||x - x_hat||^2 over (s, beta) (Bhalgat 2020 §3.3):
// starting from the min-max solution, a coarse search over clipped ranges
// [min + a (max - min), max - b (max - min)], a, b in {0, 0.05, ..., 0.45}, then
// `refinements` rounds of golden-section search on s (beta fixed) and on beta (s fixed).
// Deterministic; never worse than lsq_plus_init_minmax on x.
template <class E>
lsq_scale_offset lsq_plus_init_mse(const xt::xexpression<E>& x, grid g, int refinements = 3) {
  const char* fn = "lsq_plus_init_mse";
  const lsq_scale_offset mm = lsq_plus_init_minmax(x, g);  // validates x and g
  if (refinements < 0) detail::fail<invalid_argument>(fn, "refinements", refinements, "must be >= 0");
  const auto in = detail::as_contiguous(x);
  const float* d = in.data();
  const std::size_t n = in.size();
  const float qmin = static_cast<float>(g.qmin()), qmax = static_cast<float>(g.qmax());
  const float lo = mm.offset + qmin * mm.scale;  // = min
  const float width = mm.scale * (qmax - qmin);
  lsq_scale_offset best = mm;
  double best_err = detail::lsq_squared_error(d, n, mm.scale, mm.offset, qmin, qmax);
  auto consider = [&](float s, float beta) {
    if (!(s >= FLT_EPSILON) || !std::isfinite(beta)) return;
    const double e = detail::lsq_squared_error(d, n, s, beta, qmin, qmax);
    if (e < best_err) {
      best_err = e;
      best = {s, beta};
    }
  };
  for (int a = 0; a < 10; ++a)
    for (int b = 0; b < 10; ++b) {
      const float l = lo + 0.05f * static_cast<float>(a) * width;
      const float h = lo + width - 0.05f * static_cast<float>(b) * width;
      const float s = (h - l) / (qmax - qmin);
      consider(s, l - qmin * s);
    }
  // golden-section on one coordinate, the other fixed; keeps the best point seen
  auto golden = [&](auto&& point, double a, double b) {
    detail::golden_section_search(
        [&](double t) {
          const lsq_scale_offset p = point(t);
          if (!(p.scale >= FLT_EPSILON)) return std::numeric_limits<double>::infinity();
          const double v = detail::lsq_squared_error(d, n, p.scale, p.offset, qmin, qmax);
          consider(p.scale, p.offset);
          return v;
        },
        a, b, 42);
  };
  for (int round = 0; round < refinements; ++round) {
    const lsq_scale_offset at = best;
    golden([&](double s) { return lsq_scale_offset{static_cast<float>(s), at.offset}; }, 0.5 * at.scale,
           1.5 * at.scale);
    const lsq_scale_offset at2 = best;
    golden([&](double beta) { return lsq_scale_offset{at2.scale, static_cast<float>(beta)}; },
           at2.offset - 2.0 * at2.scale, at2.offset + 2.0 * at2.scale);
  }
  return best;
}

}  // namespace quant
