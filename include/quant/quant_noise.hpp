// quant/quant_noise.hpp — Quant-Noise: quantize a random subset of weight blocks during
// training (docs/qat.md; Fan et al. 2020, "Training with Quantization Noise for
// Extreme Model Compression", §4 and eq. 5-6).
//
//   blocks     W is cut into blocks b_kl of consecutive elements of one output row:
//                Linear [out, in]:            block_size input features (in % block_size == 0)
//                Conv [out, in, 1, 1]:        block_size input channels (in % block_size == 0)
//                Conv [out, in, kh, kw] (k>1): one block per (out, in) kernel of kh*kw weights
//              (fairseq's quant_noise layout). Block b covers flat elements
//              [b * B, (b + 1) * B) of the row-major weight.
//   selection  block b is noised iff u(seed, b) < p, u the counter-based uniform of
//              detail/counter_random.hpp: one Bernoulli(p) per block, the same mask for
//              any thread count. Use a new seed every forward (e.g. seed = base + step).
//   noise phi  proxy_noise:  phi(b) = 0 and the surviving blocks are scaled by 1/(1-p)
//                            (dropout of blocks; p < 1),
//              scalar_noise: phi(b) = fake_quantize(b) with the layer's qparams (the
//                            uniform.hpp quantizer, any granularity),
//              pq_noise:     phi(b) = each d-subvector of b replaced by its nearest
//                            centroid of a shared [K, d] codebook (B % d == 0).
//   backward   STE through phi on noised blocks (gradient passed unchanged), the exact
//              gradient elsewhere. For proxy noise phi = 0 is itself exact: noised blocks
//              get 0 and survivors 1/(1-p), as autograd gives through fairseq's
//              masked_fill + scale. For scalar and PQ noise the backward is the identity.
//   No noise at evaluation: simply use W.
//
// Public API
//   noise_blocks::linear(out, in, block_size), ::conv(out, in, kh, kw, block_size),
//   noise_blocks::for_shape(shape, block_size)          validated block layouts
//   quant_noise_options { p = 0.1, block_size = 8, seed = 0 }
//   xt::xtensor<uint8_t,1> quant_noise_mask(blocks, p, seed)   1 = noised block
//   quant_noise(W, options, proxy_noise{} | scalar_noise{qparams} | pq_noise{&centroids})
//       -> quant_noise_result { weights, mask, blocks, noised_blocks, noised_grad_scale,
//                               kept_grad_scale }
//   quant_noise_backward(grad_wrt_noised_weights, result) -> dL/dW (same shape)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "detail/contiguous.hpp"
#include "detail/counter_random.hpp"
#include "detail/nearest_centroid.hpp"
#include "detail/parallel.hpp"
#include "error.hpp"
#include "qparams.hpp"
#include "uniform.hpp"

namespace quant {

// How a weight tensor splits into Quant-Noise blocks: `rows` rows of `row_length`
// elements, each row cut into blocks of `block` consecutive elements.
struct noise_blocks {
  std::size_t rows = 0, row_length = 0, block = 1;

  std::size_t count() const noexcept { return rows * (row_length / block); }
  std::size_t elements() const noexcept { return rows * row_length; }

  // Linear weight [out, in]: blocks of block_size input features.
  static noise_blocks linear(std::size_t out, std::size_t in, std::size_t block_size) {
    const char* fn = "noise_blocks::linear";
    check_block(block_size, fn);
    if (in % block_size != 0)
      detail::fail<invalid_argument>(fn, "block_size", block_size,
                                     "must divide the input features in = " + std::to_string(in));
    return {out, in, block_size};
  }
  // Conv weight [out, in, kh, kw]: 1x1 kernels take blocks of block_size input channels,
  // larger kernels one block per (out, in) kernel (block_size is then unused).
  static noise_blocks conv(std::size_t out, std::size_t in, std::size_t kh, std::size_t kw, std::size_t block_size) {
    const char* fn = "noise_blocks::conv";
    if (kh == 0 || kw == 0) detail::fail<invalid_argument>(fn, "kernel", std::to_string(kh) + "x" + std::to_string(kw), "must be >= 1x1");
    if (kh == 1 && kw == 1) {
      check_block(block_size, fn);
      if (in % block_size != 0)
        detail::fail<invalid_argument>(fn, "block_size", block_size,
                                       "must divide the input channels in = " + std::to_string(in) + " of a 1x1 conv");
      return {out, in, block_size};
    }
    return {out, in * kh * kw, kh * kw};
  }
  // From a weight shape: 2-D = linear, 4-D = conv.
  template <class Shape>
  static noise_blocks for_shape(const Shape& s, std::size_t block_size) {
    if (s.size() == 2) return linear(s[0], s[1], block_size);
    if (s.size() == 4) return conv(s[0], s[1], s[2], s[3], block_size);
    detail::fail<invalid_argument>("noise_blocks::for_shape", "shape", detail::shape_string(s),
                                   "must be a Linear [out, in] or conv [out, in, kh, kw] weight");
  }

 private:
  static void check_block(std::size_t b, const char* fn) {
    if (b == 0) detail::fail<invalid_argument>(fn, "block_size", b, "must be >= 1");
  }
};

struct quant_noise_options {
  float p = 0.1f;               // probability that a block is noised (0.05 .. 0.2 typical)
  std::size_t block_size = 8;   // Linear / 1x1 conv block length
  std::uint64_t seed = 0;       // change it every forward
};

struct proxy_noise {};
struct scalar_noise {
  qparams params;  // the layer's quantizer (per tensor, per channel or per group)
};
struct pq_noise {
  const xt::xtensor<float, 2>* centroids = nullptr;  // [K, d] shared codebook, block % d == 0
};

template <class C>
struct quant_noise_result {
  C weights;                        // noised weights, shaped like W
  xt::xtensor<std::uint8_t, 1> mask;  // per block, 1 = noised
  noise_blocks blocks;
  std::size_t noised_blocks = 0;
  float noised_grad_scale = 1.0f;  // dL/dW = scale * dL/dW_noised on noised blocks
  float kept_grad_scale = 1.0f;    // ... and on the other blocks
};

// One Bernoulli(p) per block: mask[b] = u(seed, b) < p.
inline xt::xtensor<std::uint8_t, 1> quant_noise_mask(const noise_blocks& blocks, float p, std::uint64_t seed) {
  if (!(p >= 0.0f && p <= 1.0f)) detail::fail<invalid_argument>("quant_noise_mask", "p", p, "must be in [0, 1]");
  const std::size_t nb = blocks.count();
  xt::xtensor<std::uint8_t, 1> m = xt::xtensor<std::uint8_t, 1>::from_shape({nb});
  std::uint8_t* md = m.data();
  detail::parallel_for((nb + 4095) / 4096, nb, [&](std::size_t t) {
    const std::size_t b1 = std::min(nb, (t + 1) * 4096);
    for (std::size_t b = t * 4096; b < b1; ++b) md[b] = detail::counter_uniform(seed, b) < p ? 1 : 0;
  });
  return m;
}

namespace detail {

template <class E, class F>
auto quant_noise_apply(const xt::xexpression<E>& w, const quant_noise_options& opt, bool proxy, const char* fn,
                       F&& fill_noised) {
  if (!(opt.p >= 0.0f && opt.p <= 1.0f)) fail<invalid_argument>(fn, "p", opt.p, "must be in [0, 1]");
  if (proxy && !(opt.p < 1.0f)) fail<invalid_argument>(fn, "p", opt.p, "must be < 1 for proxy noise (survivors scale by 1/(1-p))");
  const auto in = as_contiguous(w);
  const noise_blocks blocks = noise_blocks::for_shape(in.shape(), opt.block_size);
  using R = result_container_t<E, float>;
  quant_noise_result<R> r;
  r.blocks = blocks;
  r.mask = quant_noise_mask(blocks, opt.p, opt.seed);
  r.weights = R::from_shape(in.shape());
  const std::size_t B = blocks.block, nb = blocks.count();
  const float* x = in.data();
  float* y = r.weights.data();
  const std::uint8_t* m = r.mask.data();
  for (std::size_t b = 0; b < nb; ++b) r.noised_blocks += m[b];
  if (proxy) {
    const float keep = 1.0f / (1.0f - opt.p);
    r.noised_grad_scale = 0.0f;
    r.kept_grad_scale = keep;
    parallel_for(nb, in.size(), [&](std::size_t b) {
      const float s = m[b] ? 0.0f : keep;
      for (std::size_t e = b * B; e < (b + 1) * B; ++e) y[e] = m[b] ? 0.0f : x[e] * s;
    });
    return r;
  }
  std::copy(x, x + in.size(), y);
  fill_noised(in, blocks, m, y);
  return r;
}

}  // namespace detail

// Proxy noise: noised blocks are zeroed, the others scaled by 1/(1-p).
template <class E>
auto quant_noise(const xt::xexpression<E>& w, const quant_noise_options& opt, const proxy_noise&) {
  return detail::quant_noise_apply(w, opt, true, "quant_noise", [](auto&&...) {});
}

// Scalar noise: noised blocks are fake-quantized with `noise.params`.
template <class E>
auto quant_noise(const xt::xexpression<E>& w, const quant_noise_options& opt, const scalar_noise& noise) {
  const char* fn = "quant_noise";
  return detail::quant_noise_apply(w, opt, false, fn, [&](const auto& in, const noise_blocks& blocks,
                                                          const std::uint8_t* m, float* y) {
    const auto plan = detail::make_segment_plan(in.shape(), noise.params, fn);
    std::vector<float> fq(in.size());
    kernels::fake_quantize(in.data(), fq.data(), plan);
    const std::size_t B = blocks.block;
    for (std::size_t b = 0; b < blocks.count(); ++b)
      if (m[b]) std::copy(fq.begin() + b * B, fq.begin() + (b + 1) * B, y + b * B);
  });
}

// PQ noise: each d-subvector of a noised block becomes its nearest centroid.
template <class E>
auto quant_noise(const xt::xexpression<E>& w, const quant_noise_options& opt, const pq_noise& noise) {
  const char* fn = "quant_noise";
  if (noise.centroids == nullptr) detail::fail<invalid_argument>(fn, "centroids", "null", "pq_noise needs a codebook");
  const auto& c = *noise.centroids;
  const std::size_t K = c.shape()[0], d = c.shape()[1];
  if (K == 0 || d == 0) detail::fail<invalid_argument>(fn, "centroids", detail::shape_string(c.shape()), "must be a non-empty [K, d] codebook");
  for (float v : c)
    if (!std::isfinite(v)) detail::fail<domain_error>(fn, "centroids", v, "must be finite");
  return detail::quant_noise_apply(w, opt, false, fn, [&](const auto&, const noise_blocks& blocks,
                                                          const std::uint8_t* m, float* y) {
    const std::size_t B = blocks.block;
    if (B % d != 0)
      detail::fail<invalid_argument>(fn, "block", B, "must be a multiple of the subvector dimension d = " + std::to_string(d));
    // Gather the noised blocks, assign their subvectors, scatter the centroids back.
    std::vector<std::size_t> sel;
    for (std::size_t b = 0; b < blocks.count(); ++b)
      if (m[b]) sel.push_back(b);
    std::vector<float> g(sel.size() * B);
    for (std::size_t s = 0; s < sel.size(); ++s) std::copy(y + sel[s] * B, y + (sel[s] + 1) * B, g.begin() + s * B);
    for (float v : g)
      if (!std::isfinite(v)) detail::fail<domain_error>(fn, "w", v, "PQ noise needs finite weights");
    const detail::centroid_table table(c.data(), K, d);
    std::vector<std::uint32_t> idx(g.size() / d);
    detail::nearest_centroids(g.data(), idx.size(), table, idx.data());
    for (std::size_t s = 0; s < sel.size(); ++s)
      for (std::size_t q = 0; q < B / d; ++q)
        std::copy(c.data() + idx[s * (B / d) + q] * d, c.data() + (idx[s * (B / d) + q] + 1) * d, y + sel[s] * B + q * d);
  });
}

// dL/dW from dL/dW_noised: noised blocks * noised_grad_scale, others * kept_grad_scale.
template <class E, class C>
auto quant_noise_backward(const xt::xexpression<E>& grad, const quant_noise_result<C>& fwd) {
  const char* fn = "quant_noise_backward";
  const auto g = detail::as_contiguous(grad);
  if (g.size() != fwd.blocks.elements())
    detail::fail<length_error>(fn, "grad", detail::shape_string(g.shape()),
                               "must have the " + std::to_string(fwd.blocks.elements()) + " elements of the weight");
  if (fwd.mask.size() != fwd.blocks.count())
    detail::fail<length_error>(fn, "mask.size()", fwd.mask.size(), "must equal the block count " + std::to_string(fwd.blocks.count()));
  using R = detail::result_container_t<E, float>;
  R out = R::from_shape(g.shape());
  const std::size_t B = fwd.blocks.block;
  const float* gi = g.data();
  float* go = out.data();
  const std::uint8_t* m = fwd.mask.data();
  detail::parallel_for(fwd.blocks.count(), g.size(), [&](std::size_t b) {
    const float s = m[b] ? fwd.noised_grad_scale : fwd.kept_grad_scale;
    for (std::size_t e = b * B; e < (b + 1) * B; ++e) go[e] = s == 0.0f ? 0.0f : gi[e] * s;
  });
  return out;
}

}  // namespace quant
