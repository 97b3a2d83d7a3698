// quant/adaround/fused_step.hpp — one AdaRound iteration's elementwise work over all of V
// in a single pass (the kernel behind adaround_variables::step; docs/adaround.md).
//
//   h, h'  from sig = sigmoid(V)          (kept between passes: one sigmoid per element and step)
//   dV    = grad s 1[qmin <= base + h <= qmax] h'(V) + lambda df_reg/dV,  base = floor(W/s) + z
//   V     <- Adam(V, dV)                  (optim.hpp; m, v in place)
//   sig   <- sigmoid(V_new),  w_soft <- s (clamp(base + h(V_new), qmin, qmax) - z)
//   returns f_reg = sum(1 - |2h - 1|^beta) at the old V (0 when lambda = 0, the warm-up)
//
// Packs whose h is binary before and after the step skip the gradient, the pow and the
// sigmoid (their values do not change), so the pass gets cheaper as h converges.
// Numerics: |2h-1|^beta = exp((beta - 1) log|2h-1|) |2h-1| (simd/exp_log.hpp), with
// |2h-1|^(beta-1) < e^-80 counted as 0 and Adam flushing its tiny moments, so that no
// subnormal float enters the pass (each costs a microcode assist on x86). Regularizer
// partials are per fixed chunk, summed in order: the same value for any thread count.
// No BLAS, no iostreams.
#pragma once

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "../detail/segments.hpp"
#include "../optim.hpp"
#include "../simd/arch.hpp"
#include "../simd/exp_log.hpp"
#include "rounding.hpp"

// On the per-chunk worker of the fused AdaRound pass: inline everything below it, xsimd's
// exp and log included (GCC otherwise calls them once per pack).
#if defined(__GNUC__) && !defined(__clang__)
#define QUANT_ADAROUND_FLATTEN __attribute__((flatten))
#else
#define QUANT_ADAROUND_FLATTEN
#endif

namespace quant {

// |V| from which h(V) is exactly 0 or 1 and h'(V) = 0: the clamp of h starts at
// |V| = log(11) = 2.3979 (sigmoid = 1/12 or 11/12); at 2.4 the stretched sigmoid is already
// 1.9e-4 beyond the clamp, a thousand times any float rounding of it, so the shortcut
// below never changes a result.
constexpr float adaround_saturated_v = 2.4f;

namespace kernels {

// What one fused pass needs besides the buffers.
struct adaround_step_constants {
  adam_step adam;
  float lambda = 0.0f;  // regularizer weight (0: warm-up, the regularizer is skipped)
  float beta = 2.0f;    // regularizer exponent at this iteration
};

}  // namespace kernels

namespace detail {

template <class T, class A>
QUANT_ALWAYS_INLINE bool any_of(const xsimd::batch_bool<T, A>& m) noexcept {
  return xsimd::any(m);
}
QUANT_ALWAYS_INLINE bool any_of(bool m) noexcept { return m; }
template <class T, class A>
QUANT_ALWAYS_INLINE bool all_of(const xsimd::batch_bool<T, A>& m) noexcept {
  return xsimd::all(m);
}
QUANT_ALWAYS_INLINE bool all_of(bool m) noexcept { return m; }

// The per-element state of the fused pass.
struct adaround_buffers {
  const float* base;  // floor(W/s) + z
  const float* grad;  // dL_rec/dW_soft
  float* V;
  float* sig;     // sigmoid(V) (or its limit 0 / 1 where |V| >= adaround_saturated_v)
  float* m;       // Adam moments
  float* v;
  float* w_soft;  // s (clamp(base + h(V), qmin, qmax) - z)
};

// sigmoid(V) and the soft weight for one pack (the init, and the end of every step).
template <class P>
QUANT_ALWAYS_INLINE void adaround_store_soft(const adaround_buffers& f, std::size_t e, const P& vn, const P& s,
                                             const P& z, float qmin, float qmax) noexcept {
  using A = simd::arch_of<P>;
  const P sn = sigmoid(vn);
  simd::store(f.sig + e, sn);
  const P hn = simd::clamp(stretched(sn), P(0.0f), P(1.0f));
  simd::store(f.w_soft + e, (simd::clamp(simd::load<A>(f.base + e) + hn, P(qmin), P(qmax)) - z) * s);
}

// The fused step in three stages over a block of a run (formulas:
// kernels::adaround_fused_step): the gradient into a small L1 buffer, Adam, then the
// next sigmoid and soft weight. Each stage is a short loop whose packs are independent,
// so the out-of-order core overlaps the long latencies (exp, log, sqrt and three
// divisions per pack) across packs instead of waiting on one pack's chain.

// dL/dV of one pack into g; returns the regularizer terms (0 where h is binary or
// lambda = 0).
template <class P>
QUANT_ALWAYS_INLINE P adaround_gradient_pack(const adaround_buffers& f, std::size_t e, float* g_out, const P& s,
                                             float qmin, float qmax, const kernels::adaround_step_constants& c,
                                             bool regularize) noexcept {
  using A = simd::arch_of<P>;
  const P sg = simd::load<A>(f.sig + e);
  const P u = stretched(sg);
  const auto inside = (u > P(0.0f)) & (u < P(1.0f));
  P g(0.0f), term(0.0f);
  // Where h is 0 or 1, h' = 0: the reconstruction gradient, the regularizer term
  // 1 - |2h-1|^beta and its gradient are all exactly 0 (late in the schedule, most packs).
  if (any_of(inside)) {
    const P h = simd::clamp(u, P(0.0f), P(1.0f));
    const P hp = stretched_grad(inside, sg);
    const P q = simd::load<A>(f.base + e) + h;
    g = simd::select((q >= P(qmin)) & (q <= P(qmax)), simd::load<A>(f.grad + e) * s, P(0.0f)) * hp;
    if (regularize) {
      const P t = simd::fma(P(2.0f), h, P(-1.0f));
      const P at = simd::abs(t);
      // |t|^(beta-1), taken as 0 below e^-80 (also for t = 0): exp would return a subnormal
      // there (and 0 below e^-104), and subnormals cost a microcode assist per instruction.
      const P arg = P(c.beta - 1.0f) * simd::log(simd::select(at > P(0.0f), at, P(1.0f)));
      const auto normal = (at > P(0.0f)) & (arg > P(-80.0f));
      const P pw = simd::select(normal, simd::exp(simd::select(normal, arg, P(0.0f))), P(0.0f));
      term = simd::fma(-pw, at, P(1.0f));  // 1 - |t|^beta
      g = simd::fma(P(-2.0f * c.beta * c.lambda) * simd::select(t < P(0.0f), -pw, pw), hp, g);
    }
  }
  simd::store(g_out, g);
  return term;
}

template <class P>
QUANT_ALWAYS_INLINE void adaround_adam_pack(const adaround_buffers& f, std::size_t e, const float* g,
                                            const adam_step& adam) noexcept {
  using A = simd::arch_of<P>;
  P mm = simd::load<A>(f.m + e), vs = simd::load<A>(f.v + e);
  const P vn = adam.apply(simd::load<A>(f.V + e), simd::load<A>(g), mm, vs);
  simd::store(f.m + e, mm);
  simd::store(f.v + e, vs);
  simd::store(f.V + e, vn);
}

// sig and w_soft for the new V (sig still holds the old one on entry).
template <class P>
QUANT_ALWAYS_INLINE void adaround_next_soft_pack(const adaround_buffers& f, std::size_t e, const P& s, const P& z,
                                                 float qmin, float qmax) noexcept {
  using A = simd::arch_of<P>;
  const P vn = simd::load<A>(f.V + e);
  if (any_of(!(simd::abs(vn) >= P(adaround_saturated_v)))) {  // (NaN takes this path too)
    adaround_store_soft(f, e, vn, s, z, qmin, qmax);
    return;
  }
  // h(V_new) is binary: no sigmoid. If h(V_old) was the same, sig and w_soft stay as they are.
  const P u = stretched(simd::load<A>(f.sig + e));
  const P hn = simd::select(vn > P(0.0f), P(1.0f), P(0.0f));
  if (all_of(((u <= P(0.0f)) | (u >= P(1.0f))) & (simd::clamp(u, P(0.0f), P(1.0f)) == hn))) return;
  simd::store(f.sig + e, hn);  // the limit of sigmoid: the same h, and h' = 0
  simd::store(f.w_soft + e, (simd::clamp(simd::load<A>(f.base + e) + hn, P(qmin), P(qmax)) - z) * s);
}

// body(e, s, z) over the elements [begin, end) of `plan`: SIMD packs (s, z as packs of
// the same width, broadcast or loaded from the parameter table), then a scalar tail per
// run running the same body on floats.
template <class Arch, class Body>
QUANT_ALWAYS_INLINE void for_each_param_pack(const segment_plan& plan, std::size_t begin, std::size_t end,
                                             Body&& body) {
  using PB = simd::pack<float, Arch>;
  constexpr std::size_t L = simd::lanes<float, Arch>;
  const float* scale = plan.scale();
  const float* zero = plan.zero_point();
  const bool vec = plan.vector_params;
  for_each_run(plan, begin, end, [&](std::size_t e, std::size_t len, std::size_t po) QUANT_INLINE_LAMBDA {
    const float* sp = scale + po;
    const float* zp = zero + po;
    std::size_t k = 0;
    if (vec) {
      for (; k + L <= len; k += L) body(e + k, simd::load<Arch>(sp + k), simd::load<Arch>(zp + k));
      for (; k < len; ++k) body(e + k, sp[k], zp[k]);
    } else {
      const PB s = simd::broadcast<Arch>(*sp), z = simd::broadcast<Arch>(*zp);
      for (; k + L <= len; k += L) body(e + k, s, z);
      for (; k < len; ++k) body(e + k, *sp, *zp);
    }
  });
}

}  // namespace detail

namespace kernels {

// sig = sigmoid(V) and w_soft = s (clamp(base + h(V), qmin, qmax) - z) for every element:
// the state adaround_fused_step expects on its first call.
template <class Arch = simd::default_arch>
void adaround_soft_weights(const detail::segment_plan& plan, float qmin, float qmax, const float* QUANT_RESTRICT base,
                           const float* QUANT_RESTRICT V, float* QUANT_RESTRICT sig,
                           float* QUANT_RESTRICT w_soft) noexcept {
  const detail::adaround_buffers f{base, nullptr, nullptr, sig, nullptr, nullptr, w_soft};
  detail::for_each_chunk(plan, [&](std::size_t b, std::size_t e) QUANT_ADAROUND_FLATTEN {
    detail::for_each_param_pack<Arch>(plan, b, e, [&](std::size_t i, const auto& s, const auto& z) QUANT_INLINE_LAMBDA {
      using P = std::decay_t<decltype(s)>;
      detail::adaround_store_soft(f, i, simd::load<simd::arch_of<P>>(V + i), s, z, qmin, qmax);
    });
  });
}

// One AdaRound iteration's elementwise work, for every element, in one pass:
//   h, h'  from sig = sigmoid(V)                    (kept from the previous pass: one
//                                                    sigmoid per element per iteration)
//   dV    = grad * s * 1[qmin <= base + h <= qmax] * h'(V) + lambda * df_reg/dV
//   V     <- Adam(V, dV)                             (m, v updated in place)
//   sig   <- sigmoid(V_new),  w_soft <- s (clamp(base + h(V_new), qmin, qmax) - z)
// with base = floor(W/s) + z and grad = dL_rec/dW_soft at the current V. Returns
// f_reg = sum(1 - |2h - 1|^beta) at the old V (0 when lambda = 0: warm-up skips the pow).
// Entry state: sig and w_soft as left by adaround_soft_weights or the previous call.
// |2h-1|^beta is |2h-1|^(beta-1) (one exp(log)) times |2h-1|. Packs where h is binary
// before and after the step skip the gradient, the pow and the sigmoid and leave sig and
// w_soft unwritten (their values are unchanged), so the pass gets cheaper as h converges.
// Regularizer partials are per fixed chunk (detail::chunk_elements), combined in order:
// the same value for any thread count. `partials`: detail::chunk_count(plan) doubles of
// scratch, or nullptr (then allocated here).
template <class Arch = simd::default_arch>
double adaround_fused_step(const detail::segment_plan& plan, float qmin, float qmax, const float* QUANT_RESTRICT base,
                           const float* QUANT_RESTRICT grad, float* QUANT_RESTRICT V, float* QUANT_RESTRICT sig,
                           float* QUANT_RESTRICT m, float* QUANT_RESTRICT v, float* QUANT_RESTRICT w_soft,
                           const adaround_step_constants& c, double* partials = nullptr) {
  const bool regularize = c.lambda > 0.0f;
  const std::size_t chunks = detail::chunk_count(plan);
  std::vector<double> own;
  if (!partials) {
    own.resize(chunks);
    partials = own.data();
  }
  const detail::adaround_buffers buffers{base, grad, V, sig, m, v, w_soft};
  detail::for_each_chunk(plan, [&](std::size_t b, std::size_t e) QUANT_ADAROUND_FLATTEN {
    // Local copies: the stores through the buffers cannot then alias the pointers and
    // constants, which stay in registers instead of being reloaded for every pack.
    const detail::adaround_buffers f = buffers;
    const adaround_step_constants k = c;
    const float* scale = plan.scale();
    const float* zero = plan.zero_point();
    const bool vec = plan.vector_params;
    using PB = simd::pack<float, Arch>;
    constexpr std::size_t L = simd::lanes<float, Arch>;
    constexpr std::size_t block = 256;
    alignas(64) float g[block];
    PB acc(0.0f);
    float acc_tail = 0.0f;
    detail::for_each_run(plan, b, e, [&](std::size_t r0, std::size_t len, std::size_t po) QUANT_INLINE_LAMBDA {
      for (std::size_t b0 = 0; b0 < len; b0 += block) {
        const std::size_t n = std::min(block, len - b0), e0 = r0 + b0;
        const float* sp = scale + po + (vec ? b0 : 0);
        const float* zp = zero + po + (vec ? b0 : 0);
        const PB sb = simd::broadcast<Arch>(*sp), zb = simd::broadcast<Arch>(*zp);
        const std::size_t packed = n - n % L;
        std::size_t i = 0;
        for (; i < packed; i += L)
          acc = acc + detail::adaround_gradient_pack(f, e0 + i, g + i, vec ? simd::load<Arch>(sp + i) : sb, qmin, qmax,
                                                     k, regularize);
        for (; i < n; ++i)
          acc_tail += detail::adaround_gradient_pack(f, e0 + i, g + i, vec ? sp[i] : *sp, qmin, qmax, k, regularize);
        for (i = 0; i < packed; i += L) detail::adaround_adam_pack<PB>(f, e0 + i, g + i, k.adam);
        for (; i < n; ++i) detail::adaround_adam_pack<float>(f, e0 + i, g + i, k.adam);
        for (i = 0; i < packed; i += L)
          detail::adaround_next_soft_pack(f, e0 + i, vec ? simd::load<Arch>(sp + i) : sb,
                                          vec ? simd::load<Arch>(zp + i) : zb, qmin, qmax);
        for (; i < n; ++i) detail::adaround_next_soft_pack(f, e0 + i, vec ? sp[i] : *sp, vec ? zp[i] : *zp, qmin, qmax);
      }
    });
    partials[b / detail::chunk_elements] = static_cast<double>(simd::reduce_add(acc)) + static_cast<double>(acc_tail);
  });
  double total = 0.0;
  for (std::size_t t = 0; t < chunks; ++t) total += partials[t];
  return regularize ? total : 0.0;
}

}  // namespace kernels

}  // namespace quant
