// quant/optim.hpp — the small first-order optimizers quant's own optimizers need
// (AdaRound's V, BRECQ/QDrop's V and activation step sizes), over flat float buffers.
//
// Adam (Kingma & Ba 2015, Algorithm 1), written in PyTorch's order of operations
// (torch.optim.Adam, amsgrad = false, L2 weight decay added to the gradient):
//     g   <- fma(weight_decay, p, g)
//     m   <- fma(beta1, m, (1 - beta1) * g)
//     v   <- fma(beta2, v, (1 - beta2) * (g * g))
//     p   <- fma(-lr / (1 - beta1^t), m / fma(sqrt(v), 1 / sqrt(1 - beta2^t), eps), p)
// Flush to zero, where torch keeps going: |g| < eps 2^-24 (after weight decay),
// |m| < (1 - beta1) eps 2^-24 and v < (eps 2^-24)^2 are set to 0. Such values move p by
// less than lr 2^-24 per step (eps dominates the denominator), but left alone they decay
// geometrically into subnormal floats, and every x86 instruction touching a subnormal
// takes a ~100-cycle microcode assist: AdaRound's saturated weights (g = 0 for thousands
// of iterations) made its regularized phase 2x slower than its warm-up before this rule.
// The bias corrections are computed once per step in double and rounded to float. The
// multiply-adds are fused (one rounding each): an FMA is one instruction where a multiply
// then an add are two, and spelling them makes the results independent of the caller's
// -ffp-contract setting (GCC fuses a * b + c on its own by default, or not at -O0 or with
// -ffp-contract=off, so unspelled code gives different bits under different flags).
// SGD (torch.optim.SGD): g <- g + weight_decay * p; with momentum mu the buffer starts as
// g and then follows b <- mu * b + (1 - dampening) * g; Nesterov uses g + mu * b, else b;
// p <- p - lr * g.
//
// Two ways in:
//  * `adam::step(params, grads)` / `sgd::step(...)`: one SIMD pass over the buffers.
//  * Fused use: `adam::next_step()` advances the step counter and returns an `adam_step`
//    whose `apply(p, g, m, v)` updates one pack (or one float) in registers, so a caller
//    that computes the gradient element by element (AdaRound's pass over V) updates the
//    parameters in the same pass, without writing the gradient to memory.
// Updates are elementwise and exact IEEE operations (+, *, /, sqrt, fma), so SIMD, scalar
// and the quant::ref loops agree bit for bit, for any thread count (on archs with FMA
// instructions; xsimd falls back to a * b + c on SIMD archs without them).
// Gradients must be finite: `step` throws quant::domain_error
// ("quant::adam::step: grads[i] = nan: must be finite", i the lowest offending index)
// before it writes anything, so parameters, moments, momentum buffer and step count are
// exactly as before the call (a caller can skip the step, as loss scaling does). The check
// is a SIMD pass over the gradient ahead of the update, in the same fixed pieces; the
// kernels:: functions and adam_step::apply do not check.
// `cosine_decay` is the closed form of PyTorch's CosineAnnealingLR (BRECQ's step-size
// schedule for LSQ activation quantizers).
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "detail/parallel.hpp"
#include "error.hpp"
#include "simd/arch.hpp"

namespace quant {

// ---- Adam ---------------------------------------------------------------------------
struct adam_options {
  float learning_rate = 1e-3f;  // AdaRound's V (docs/adaround.md); BRECQ uses 4e-5 for step sizes
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float epsilon = 1e-8f;
  float weight_decay = 0.0f;  // L2 added to the gradient (torch.optim.Adam, not AdamW)

  // Throws quant::invalid_argument naming `function` and the offending field.
  void validate(const char* function) const {
    if (!(std::isfinite(learning_rate) && learning_rate > 0.0f))
      detail::fail<invalid_argument>(function, "learning_rate", learning_rate, "must be finite and > 0");
    if (!(beta1 >= 0.0f && beta1 < 1.0f)) detail::fail<invalid_argument>(function, "beta1", beta1, "must be in [0, 1)");
    if (!(beta2 >= 0.0f && beta2 < 1.0f)) detail::fail<invalid_argument>(function, "beta2", beta2, "must be in [0, 1)");
    if (!(std::isfinite(epsilon) && epsilon > 0.0f))
      detail::fail<invalid_argument>(function, "epsilon", epsilon, "must be finite and > 0");
    if (!(std::isfinite(weight_decay) && weight_decay >= 0.0f))
      detail::fail<invalid_argument>(function, "weight_decay", weight_decay, "must be finite and >= 0");
  }
};

// The constants of one Adam step t (1-based). `apply` works on floats and xsimd batches.
struct adam_step {
  float step_size;     // lr / (1 - beta1^t)
  float inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^t)
  float beta1, one_minus_beta1, beta2, one_minus_beta2, epsilon, weight_decay;
  float g_floor, m_floor, v_floor;  // flush-to-zero thresholds (see the header comment)

  static adam_step make(const adam_options& o, std::size_t t) noexcept {
    const double bc1 = 1.0 - std::pow(static_cast<double>(o.beta1), static_cast<double>(t));
    const double bc2 = 1.0 - std::pow(static_cast<double>(o.beta2), static_cast<double>(t));
    const float tiny = o.epsilon * 0x1p-24f;  // eps 2^-24
    return {static_cast<float>(static_cast<double>(o.learning_rate) / bc1),
            static_cast<float>(1.0 / std::sqrt(bc2)),
            o.beta1,
            1.0f - o.beta1,
            o.beta2,
            1.0f - o.beta2,
            o.epsilon,
            o.weight_decay,
            tiny,
            (1.0f - o.beta1) * tiny,
            tiny * tiny};
  }

  // Updates the moments m, v in place and returns the new parameter.
  template <class P>
  QUANT_ALWAYS_INLINE P apply(const P& p, P g, P& m, P& v) const noexcept {
    // Spelled as FMAs (simd::fma), so results do not depend on -ffp-contract.
    g = simd::fma(P(weight_decay), p, g);
    g = simd::select(simd::abs(g) < P(g_floor), P(0.0f), g);
    m = simd::fma(P(beta1), m, P(one_minus_beta1) * g);
    m = simd::select(simd::abs(m) < P(m_floor), P(0.0f), m);
    v = simd::fma(P(beta2), v, P(one_minus_beta2) * (g * g));
    v = simd::select(v < P(v_floor), P(0.0f), v);
    const P denom = simd::fma(detail_sqrt(v), P(inv_sqrt_bc2), P(epsilon));
    return simd::fma(-P(step_size), m / denom, p);
  }

 private:
  static QUANT_ALWAYS_INLINE float detail_sqrt(float x) noexcept { return std::sqrt(x); }
  // GCC 12's _mm512_sqrt_ps passes _mm512_undefined_ps() as the unused merge source and
  // then warns about it; the value is never read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
  template <class T, class A>
  static QUANT_ALWAYS_INLINE xsimd::batch<T, A> detail_sqrt(const xsimd::batch<T, A>& x) noexcept {
    return xsimd::sqrt(x);
  }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
};

namespace detail {
// Elements per thread piece of the optimizer passes (fixed: results never depend on threads).
constexpr std::size_t optim_piece = std::size_t(1) << 14;

// True when a lane of v is NaN.
QUANT_ALWAYS_INLINE bool any_nan(float v) noexcept { return v != v; }
template <class A>
QUANT_ALWAYS_INLINE bool any_nan(const xsimd::batch<float, A>& v) noexcept {
  return xsimd::any(xsimd::isnan(v));
}
// Accumulates flags that are +-0 or NaN: NaN in either gives NaN. Packs use a bitwise OR
// (one cycle of latency per pack where an add takes three or four), one float an add.
QUANT_ALWAYS_INLINE float merge_nan(float a, float b) noexcept { return a + b; }
template <class A>
QUANT_ALWAYS_INLINE xsimd::batch<float, A> merge_nan(const xsimd::batch<float, A>& a,
                                                     const xsimd::batch<float, A>& b) noexcept {
  return a | b;
}

// Index of the first NaN or +-inf in x[0, n), or n when every element is finite. One pass
// in the optimizers' fixed pieces: x * 0 is +-0 for finite x and NaN otherwise, so merging
// x * 0 over a piece flags it; only a flagged piece is rescanned (scalar) for its first
// offending index, and the lowest one is returned for any thread count.
template <class Arch>
std::size_t first_not_finite(const float* x, std::size_t n) {
  const std::size_t pieces = (n + optim_piece - 1) / optim_piece;
  std::atomic<std::size_t> first{n};
  parallel_for(pieces, n, [&](std::size_t k) {
    using P = simd::pack<float, Arch>;
    constexpr std::size_t L = simd::lanes<float, Arch>;
    const std::size_t b = k * optim_piece;
    const std::size_t e = b + optim_piece < n ? b + optim_piece : n;
    P acc(0.0f);
    float tail = 0.0f;
    std::size_t i = b;
    for (; i + L <= e; i += L) acc = merge_nan(acc, simd::load<Arch>(x + i) * P(0.0f));
    for (; i < e; ++i) tail = tail + x[i] * 0.0f;
    if (!any_nan(acc) && !any_nan(tail)) return;
    std::size_t j = b;
    while (std::isfinite(x[j])) ++j;
    std::size_t seen = first.load(std::memory_order_relaxed);
    while (j < seen && !first.compare_exchange_weak(seen, j, std::memory_order_relaxed)) {
    }
  });
  return first.load(std::memory_order_relaxed);
}

// Throws quant::domain_error "quant::<function>: <argument>[i] = <x[i]>: must be finite" at
// the first non-finite element of x[0, n).
inline void require_finite_gradient(const float* x, std::size_t n, const char* function, const char* argument) {
  const std::size_t i = first_not_finite<simd::default_arch>(x, n);
  if (i != n)
    fail<domain_error>(function, (std::string(argument) + "[" + std::to_string(i) + "]").c_str(), x[i],
                       "must be finite");
}

template <class P>
struct pack_tag {
  using type = P;
};

// body(i, pack_tag<P>) over [0, n) in fixed pieces: packs, then a scalar tail running the
// same body.
template <class Arch, class Body>
void elementwise_pieces(std::size_t n, Body&& body) {
  const std::size_t pieces = (n + optim_piece - 1) / optim_piece;
  parallel_for(pieces, n, [&](std::size_t k) {
    using P = simd::pack<float, Arch>;
    constexpr std::size_t L = simd::lanes<float, Arch>;
    const std::size_t b = k * optim_piece;
    const std::size_t e = b + optim_piece < n ? b + optim_piece : n;
    std::size_t i = b;
    for (; i + L <= e; i += L) body(i, pack_tag<P>{});
    for (; i < e; ++i) body(i, pack_tag<float>{});
  });
}
}  // namespace detail

namespace kernels {
// p, m, v updated in place from g (all of length n).
template <class Arch = simd::default_arch>
void adam_update(float* QUANT_RESTRICT p, const float* QUANT_RESTRICT g, float* QUANT_RESTRICT m,
                 float* QUANT_RESTRICT v, std::size_t n, const adam_step& c) noexcept {
  detail::elementwise_pieces<Arch>(n, [&](std::size_t i, auto tag) {
    using P = typename decltype(tag)::type;
    using A = simd::arch_of<P>;
    P mi = simd::load<A>(m + i), vi = simd::load<A>(v + i);
    const P np = c.apply(simd::load<A>(p + i), simd::load<A>(g + i), mi, vi);
    simd::store(m + i, mi);
    simd::store(v + i, vi);
    simd::store(p + i, np);
  });
}
}  // namespace kernels

// Adam over a flat buffer of n parameters; owns the two moment buffers.
class adam {
 public:
  explicit adam(std::size_t n, adam_options options = {}) : options_(options), m_(n, 0.0f), v_(n, 0.0f) {
    options_.validate("adam");
  }

  std::size_t size() const noexcept { return m_.size(); }
  std::size_t steps() const noexcept { return t_; }
  const adam_options& options() const noexcept { return options_; }
  // For schedules (e.g. cosine_decay); the moments are kept.
  // lr = 0 is allowed here (a schedule may end there), not at construction.
  void set_learning_rate(float lr) {
    if (!(std::isfinite(lr) && lr >= 0.0f))
      detail::fail<invalid_argument>("adam::set_learning_rate", "lr", lr, "must be finite and >= 0");
    options_.learning_rate = lr;
  }

  // Advances the step counter and returns the constants of the new step, for fused loops
  // that call adam_step::apply themselves on first_moment()/second_moment().
  adam_step next_step() noexcept { return adam_step::make(options_, ++t_); }

  // One step over all parameters: params[i] updated from grads[i]. Throws
  // quant::domain_error for a non-finite gradient, before anything is written.
  void step(float* params, const float* grads) {
    detail::require_finite_gradient(grads, m_.size(), "adam::step", "grads");
    const adam_step c = next_step();
    kernels::adam_update<>(params, grads, m_.data(), v_.data(), m_.size(), c);
  }
  // Same over containers (sizes checked).
  template <class Params, class Grads>
  void step(Params& params, const Grads& grads) {
    if (params.size() != size() || grads.size() != size())
      detail::fail<length_error>("adam::step", "params.size()", params.size(),
                                 "params and grads must both have the optimizer's size " + std::to_string(size()) +
                                     " (grads.size() = " + std::to_string(grads.size()) + ")");
    step(params.data(), grads.data());
  }

  float* first_moment() noexcept { return m_.data(); }
  float* second_moment() noexcept { return v_.data(); }
  const float* first_moment() const noexcept { return m_.data(); }
  const float* second_moment() const noexcept { return v_.data(); }

  // Forgets the moments and the step count.
  void reset() noexcept {
    std::fill(m_.begin(), m_.end(), 0.0f);
    std::fill(v_.begin(), v_.end(), 0.0f);
    t_ = 0;
  }

 private:
  adam_options options_;
  std::vector<float> m_, v_;
  std::size_t t_ = 0;
};

// ---- SGD ----------------------------------------------------------------------------
struct sgd_options {
  float learning_rate = 1e-2f;
  float momentum = 0.0f;
  float dampening = 0.0f;
  bool nesterov = false;
  float weight_decay = 0.0f;

  void validate(const char* function) const {
    if (!(std::isfinite(learning_rate) && learning_rate > 0.0f))
      detail::fail<invalid_argument>(function, "learning_rate", learning_rate, "must be finite and > 0");
    if (!(momentum >= 0.0f && momentum < 1.0f))
      detail::fail<invalid_argument>(function, "momentum", momentum, "must be in [0, 1)");
    if (!(dampening >= 0.0f && dampening <= 1.0f))
      detail::fail<invalid_argument>(function, "dampening", dampening, "must be in [0, 1]");
    if (nesterov && (momentum == 0.0f || dampening != 0.0f))
      detail::fail<invalid_argument>(function, "nesterov", "true", "needs momentum > 0 and dampening = 0");
    if (!(std::isfinite(weight_decay) && weight_decay >= 0.0f))
      detail::fail<invalid_argument>(function, "weight_decay", weight_decay, "must be finite and >= 0");
  }
};

namespace kernels {
// first: true on the first step (the momentum buffer then starts as g, as in PyTorch).
template <class Arch = simd::default_arch>
void sgd_update(float* QUANT_RESTRICT p, const float* QUANT_RESTRICT g, float* QUANT_RESTRICT buf, std::size_t n,
                const sgd_options& o, bool first) noexcept {
  detail::elementwise_pieces<Arch>(n, [&](std::size_t i, auto tag) {
    using P = typename decltype(tag)::type;
    using A = simd::arch_of<P>;
    const P pi = simd::load<A>(p + i);
    P gi = simd::load<A>(g + i) + P(o.weight_decay) * pi;
    if (o.momentum != 0.0f) {
      const P b = first ? gi : P(o.momentum) * simd::load<A>(buf + i) + P(1.0f - o.dampening) * gi;
      simd::store(buf + i, b);
      gi = o.nesterov ? gi + P(o.momentum) * b : b;
    }
    simd::store(p + i, pi - P(o.learning_rate) * gi);
  });
}
}  // namespace kernels

class sgd {
 public:
  explicit sgd(std::size_t n, sgd_options options = {})
      : options_(options), buf_(options.momentum != 0.0f ? n : 0, 0.0f), n_(n) {
    options_.validate("sgd");
  }
  std::size_t size() const noexcept { return n_; }
  std::size_t steps() const noexcept { return t_; }
  const sgd_options& options() const noexcept { return options_; }
  void set_learning_rate(float lr) {
    if (!(std::isfinite(lr) && lr >= 0.0f))
      detail::fail<invalid_argument>("sgd::set_learning_rate", "lr", lr, "must be finite and >= 0");
    options_.learning_rate = lr;
  }
  // Throws quant::domain_error for a non-finite gradient, before anything is written.
  void step(float* params, const float* grads) {
    detail::require_finite_gradient(grads, n_, "sgd::step", "grads");
    kernels::sgd_update<>(params, grads, buf_.data(), n_, options_, t_ == 0);
    ++t_;
  }
  template <class Params, class Grads>
  void step(Params& params, const Grads& grads) {
    if (params.size() != size() || grads.size() != size())
      detail::fail<length_error>("sgd::step", "params.size()", params.size(),
                                 "params and grads must both have the optimizer's size " + std::to_string(size()) +
                                     " (grads.size() = " + std::to_string(grads.size()) + ")");
    step(params.data(), grads.data());
  }

 private:
  sgd_options options_;
  std::vector<float> buf_;
  std::size_t n_;
  std::size_t t_ = 0;
};

// ---- schedules ------------------------------------------------------------------------
// Cosine annealing from lr0 at t = 0 to lr_min at t = t_max (PyTorch CosineAnnealingLR,
// closed form): lr_min + (lr0 - lr_min) * (1 + cos(pi * t / t_max)) / 2.
inline float cosine_decay(float lr0, std::size_t t, std::size_t t_max, float lr_min = 0.0f) noexcept {
  if (t_max == 0 || t >= t_max) return lr_min;
  const double c = std::cos(3.14159265358979323846 * static_cast<double>(t) / static_cast<double>(t_max));
  return static_cast<float>(lr_min + (static_cast<double>(lr0) - lr_min) * 0.5 * (1.0 + c));
}

}  // namespace quant
