// quant/integer_gemm.hpp — int8 / int4 GEMM with exact int32 accumulation, for the
// fully-connected and (through im2col) convolution layers of an integer inference engine.
//
//   acc[n, o] = sum_k Wq[o, k] (xq[n, k] - z_x) + bias_q[o]                (int32, exact)
//   y[n, o]   = requantize(acc[n, o], channel o)          (integer_gemm; requantize.hpp)
// with
//   xq  [N, K]  activations, row-major, uint8 or int8, one zero point z_x on their grid
//               (a row is one sample of a linear layer or one im2col row of a convolution);
//   Wq  [out, K] symmetric int8 or 4-bit weights, one scale per output channel, packed once
//               by pack_weights / pack_weights_int4 (packed_weights.hpp);
//   bias_q [out] int32 (quantized with scale s_x s_w[o]), optional;
//   y   [N, out] row-major: the layout of the next layer's activations (and of im2col rows
//               turned back into an NHWC / [N*OH*OW, out] feature map).
// The zero point enters through the precomputed row sums (Jacob et al. 2018, eq. 7-8):
//   sum_k Wq (xq - z_x) = sum_k Wq xq - z_x sum_k Wq,
// so the kernels multiply the raw activations and the epilogue adds the per-channel
// constant bias_q[o] - z_x rowsum[o] before requantizing.
//
// Exactness and int32 safety (no saturation anywhere, identical results on every path and
// for any thread count): every partial sum of sum_k Wq xq is bounded by K max|xq| max|Wq|;
// the call throws quant::invalid_argument unless this is at most 2^31 - 1, i.e.
//   K <= integer_gemm_max_k<Act>(bits):   uint8 x int8 65 793, int8 x int8 131 071,
//                                         uint8 or int8 x int4 1 052 688
// (the int4 tiles take uint8 activations as int8 x - 128, with the zero point z_x - 128).
// Larger K is an error, not split: an engine that needs it splits the layer into partial
// GEMMs (int32-output form) and adds the partial sums in int64 itself. The full accumulator
// is bounded by |bias_q[o]| + max|xq - z_x| sum_k |Wq[o, k]|; the call throws unless this
// fits int32 for every channel, so the int32 result is the exact integer (the int64
// reference in quant::ref is the specification it is tested against).
//
// An engine that runs a layer many times prepares it once: integer_gemm_layer owns the
// packed weights, validates the zero point, bias and requantization parameters and keeps
// the epilogue constants and the requantization tables; each call then checks only strides
// and output type (same bits as integer_gemm; 1.3-1.45x faster on a 256 x 1152 GEMV).
//
// Paths: the AVX2 tiles (int8 weights: int16 widening + vpmaddwd; int4 weights: vpmaddubsw of
// the stored nibbles w + 8 by int8 activations, exact, with int16 partial sums over 8 quads of
// taps and the 8 sum_k x term removed per row; see
// detail/integer_gemm_kernel.hpp) for AVX2 and AVX-512 arch tags, scalar tiles otherwise
// (simd::scalar, QUANT_NO_SIMD); both read the same packed layout and compute the same
// integers. Work is split into fixed blocks of 48 rows x 64 channels (x all channels when
// there are at least 8 row blocks); each output element is computed by one block, so
// threads (quant::set_num_threads) never change a result.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "detail/integer_gemm_kernel.hpp"
#include "detail/parallel.hpp"
#include "error.hpp"
#include "packed_weights.hpp"
#include "requantize.hpp"
#include "simd/arch.hpp"

namespace quant {

// Largest K whose worst-case accumulation fits int32 for activations Act (uint8_t or
// int8_t) and weights of `weight_bits` (8 or 4): floor((2^31 - 1) / (max|x| max|w|)).
template <class Act>
constexpr std::size_t integer_gemm_max_k(int weight_bits) noexcept {
  static_assert(std::is_same<Act, std::uint8_t>::value || std::is_same<Act, std::int8_t>::value,
                "integer GEMM activations are uint8_t or int8_t");
  // |x - z| <= 255 for uint8 (and the int4 path keeps that limit for int8 activations too).
  const std::int64_t xabs = std::is_signed<Act>::value && weight_bits == 8 ? 128 : 255;
  const std::int64_t wabs = weight_bits == 8 ? 128 : 8;
  return static_cast<std::size_t>(std::int64_t(std::numeric_limits<std::int32_t>::max()) / (xabs * wabs));
}

namespace detail {
namespace igemm {

constexpr std::size_t rows_per_task = 48;  // multiple of nr_max
// Channels per task: 64 when there are few row blocks (GEMV, small N: the channels carry the
// parallelism), all of them otherwise (the activation block is then converted once).
inline std::size_t blocks_per_task(std::size_t row_blocks, std::size_t blocks) noexcept {
  return row_blocks >= 8 ? blocks : std::min<std::size_t>(blocks, 4);
}

// Checks shared by both entry points; returns the per-channel epilogue constants
// bias[o] - z_x rowsum[o] (mod 2^32: the final sum is exact, see the header comment),
// padded with zeros to whole blocks.
template <class Act>
std::vector<std::int32_t> epilogue_offsets(const packed_weights& w, int x_zero_point, const std::int32_t* bias,
                                           const char* fn) {
  if (w.bits != 8 && w.bits != 4) fail<invalid_argument>(fn, "w.bits", w.bits, "must be 8 or 4");
  if (w.out == 0 || w.k == 0 || w.row_sums.size() != w.out || w.abs_row_sums.size() != w.out ||
      w.bytes.size() != w.blocks() * w.block_bytes())
    fail<length_error>(fn, "w.bytes.size()", w.bytes.size(), "is not a packed_weights made by pack_weights");
  const int qmin = std::numeric_limits<Act>::min(), qmax = std::numeric_limits<Act>::max();
  if (x_zero_point < qmin || x_zero_point > qmax)
    fail<invalid_argument>(fn, "x_zero_point", x_zero_point,
                           "must lie on the activation grid [" + std::to_string(qmin) + ", " + std::to_string(qmax) +
                               "]");
  const std::size_t kmax = integer_gemm_max_k<Act>(w.bits);
  if (w.k > kmax)
    fail<invalid_argument>(fn, "w.k", w.k,
                           "the worst-case accumulation exceeds int32: at most " + std::to_string(kmax) +
                               " for these activation and weight types (split the reduction)");
  const std::int64_t span = std::max(x_zero_point - qmin, qmax - x_zero_point);  // max |x - z|
  const std::int64_t limit = std::numeric_limits<std::int32_t>::max();
  std::vector<std::int32_t> off(w.blocks() * packed_weights::block, 0);
  for (std::size_t o = 0; o < w.out; ++o) {
    const std::int64_t b = bias ? bias[o] : 0;
    const std::int64_t bound = (b < 0 ? -b : b) + span * w.abs_row_sums[o];
    if (bound > limit) {
      const std::string why = "|bias[" + std::to_string(o) + "]| + max|x - z_x| sum_k |w[" + std::to_string(o) +
                              ", k]| = " + std::to_string(bound) + " exceeds int32: the accumulator could overflow";
      if (b != 0) fail<invalid_argument>(fn, ("bias[" + std::to_string(o) + "]").c_str(), b, why);
      fail<invalid_argument>(fn, "x_zero_point", x_zero_point, why);
    }
    // the int4 tiles see uint8 activations as x - 128 (int8), so their zero point is z - 128
    const std::int64_t z_tile = std::int64_t(x_zero_point) - (!std::is_signed<Act>::value && w.bits == 4 ? 128 : 0);
    const std::int64_t c = b - z_tile * w.row_sums[o];
    off[o] = static_cast<std::int32_t>(static_cast<std::uint32_t>(static_cast<std::uint64_t>(c)));
  }
  return off;
}

// Wrapping int32 addition (the mathematical sum is known to fit).
QUANT_ALWAYS_INLINE std::int32_t add_wrap(std::int32_t a, std::int32_t b) noexcept {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(a) + static_cast<std::uint32_t>(b));
}

// Runs the tiles: ep(tile [nr][16] raw dots, first row, nr, first channel).
template <class Arch, int Bits, class Act, class Epilogue>
void run(const Act* x, std::size_t n, std::size_t ldx, const packed_weights& w, Epilogue&& ep) {
  if (n == 0) return;
  using xt_t = activation_t<Bits>;
  const std::size_t k = w.k, kp = w.k_padded(), steps = kp / taps_per_step<Bits>;
  const std::size_t row_blocks = (n + rows_per_task - 1) / rows_per_task;
  const std::size_t group = blocks_per_task(row_blocks, w.blocks());
  const std::size_t ch_groups = (w.blocks() + group - 1) / group;
  const std::size_t work = n * w.out * k / 16;  // parallel above ~1 M multiply-adds
  // locals: the epilogue's int8 / uint8 stores may alias anything reached through w
  const std::uint8_t* const wbytes = w.bytes.data();
  const std::size_t bb = w.block_bytes(), blocks = w.blocks();
  parallel_for(row_blocks * ch_groups, work, [&](std::size_t t) {
    const std::size_t rb = t / ch_groups, cg = t % ch_groups;
    const std::size_t n0 = rb * rows_per_task, rows = std::min(rows_per_task, n - n0);
    static thread_local std::vector<xt_t> xbuf;
    xbuf.resize(rows_per_task * kp);
    xt_t* xs = xbuf.data();
    std::int32_t xsum8[rows_per_task] = {};  // int4: 8 sum_k x[j, k] of the tile activations
    for (std::size_t j = 0; j < rows; ++j) xsum8[j] = tile_activations<Bits>(x + (n0 + j) * ldx, k, kp, xs + j * kp);
    const std::size_t b_begin = cg * group, b_end = std::min(blocks, (cg + 1) * group);
    if (rows == 1) {  // GEMV: two blocks per pass over the row
      alignas(32) std::int32_t ta[mr], tb[mr];
      std::size_t b = b_begin;
      for (; b + 2 <= b_end; b += 2) {
        const std::uint8_t* wb = wbytes + b * bb;
        dot_row_2blocks<Arch, Bits>(wb, wb + bb, xs, steps, xsum8[0], ta, tb);
        ep(static_cast<const std::int32_t*>(ta), n0, std::size_t(1), b * mr);
        ep(static_cast<const std::int32_t*>(tb), n0, std::size_t(1), (b + 1) * mr);
      }
      if (b < b_end) {
        dot_tile<Arch, Bits>(wbytes + b * bb, xs, kp, steps, 1, xsum8, ta);
        ep(static_cast<const std::int32_t*>(ta), n0, std::size_t(1), b * mr);
      }
      return;
    }
    for (std::size_t b = b_begin; b < b_end; ++b) {
      const std::uint8_t* wb = wbytes + b * bb;
      for (std::size_t j0 = 0; j0 < rows; j0 += nr_max) {
        const std::size_t nr = std::min(nr_max, rows - j0);
        alignas(32) std::int32_t tile[nr_max * mr];
        dot_tile<Arch, Bits>(wb, xs + j0 * kp, kp, steps, nr, xsum8 + j0, tile);
        ep(static_cast<const std::int32_t*>(tile), n0 + j0, nr, b * mr);
      }
    }
  });
}

template <class Arch, class Act, class Epilogue>
void run_any(const Act* x, std::size_t n, std::size_t ldx, const packed_weights& w, Epilogue&& ep) {
  if (w.bits == 8)
    run<Arch, 8>(x, n, ldx, w, ep);
  else
    run<Arch, 4>(x, n, ldx, w, ep);
}

inline void check_strides(std::size_t ldx, std::size_t k, std::size_t ldy, std::size_t out, const char* fn) {
  if (ldx < k) fail<length_error>(fn, "ldx", ldx, "must be >= K = " + std::to_string(k));
  if (ldy < out) fail<length_error>(fn, "ldy", ldy, "must be >= out = " + std::to_string(out));
}

}  // namespace igemm
}  // namespace detail

// The checks integer_gemm and integer_gemm_s32 run on their weights, activation zero point
// and bias (nullptr or out values), without running: K <= integer_gemm_max_k<Act> and the
// accumulator bound over the whole range of Act (every uint8 / int8 input byte, not only
// the activation grid's). Throws exactly what those calls would throw for the same
// arguments, from `function`: an engine checks each layer once, when it loads it.
template <class Act>
void check_integer_gemm(const packed_weights& w, int x_zero_point, const std::int32_t* bias,
                        const char* function = "integer_gemm") {
  (void)detail::igemm::epilogue_offsets<Act>(w, x_zero_point, bias, function);
}

// int32-output GEMM (no requantization): y[n, o] = acc[n, o] as in the header comment.
// x: n rows of K activations, row j at x + j * ldx; y: row j at y + j * ldy (>= out);
// bias: out values or nullptr. Unaligned pointers are fine. Throws quant::invalid_argument
// (zero point off the grid, K too large, an accumulator bound beyond int32) or
// quant::length_error (strides, malformed packed weights).
template <class Arch = simd::default_arch, class Act>
void integer_gemm_s32(const Act* x, std::size_t n, std::size_t ldx, int x_zero_point, const packed_weights& w,
                      const std::int32_t* bias, std::int32_t* y, std::size_t ldy) {
  const char* fn = "integer_gemm_s32";
  detail::igemm::check_strides(ldx, w.k, ldy, w.out, fn);
  const std::vector<std::int32_t> off = detail::igemm::epilogue_offsets<Act>(w, x_zero_point, bias, fn);
  const std::size_t out = w.out;
  detail::igemm::run_any<Arch>(x, n, ldx, w, [&](const std::int32_t* tile, std::size_t n0, std::size_t nr,
                                                 std::size_t o0) QUANT_INLINE_LAMBDA {
    const std::size_t valid = std::min(detail::igemm::mr, out - o0);
    for (std::size_t j = 0; j < nr; ++j) {
      std::int32_t* yr = y + (n0 + j) * ldy + o0;
      const std::int32_t* t = tile + j * detail::igemm::mr;
#if defined(__AVX2__)
      if constexpr (detail::igemm::uses_avx2<Arch>::value) {
        if (valid == detail::igemm::mr) {
          for (std::size_t h = 0; h < 2; ++h) {
            const __m256i a = _mm256_load_si256(reinterpret_cast<const __m256i*>(t + 8 * h));
            const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(off.data() + o0 + 8 * h));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(yr + 8 * h), _mm256_add_epi32(a, c));
          }
          continue;
        }
      }
#endif
      for (std::size_t c = 0; c < valid; ++c) yr[c] = detail::igemm::add_wrap(t[c], off[o0 + c]);
    }
  });
}

// xtensor form: x [N, K] (uint8 or int8) -> acc [N, out]; bias empty or [out].
template <class Arch = simd::default_arch, class Act>
xt::xtensor<std::int32_t, 2> integer_gemm_s32(const xt::xtensor<Act, 2>& x, int x_zero_point, const packed_weights& w,
                                              const xt::xtensor<std::int32_t, 1>& bias = {}) {
  const char* fn = "integer_gemm_s32";
  if (x.shape()[1] != w.k)
    detail::fail<length_error>(fn, "x.shape()", detail::shape_string(x.shape()),
                               "must be [N, K] with K = w.k = " + std::to_string(w.k));
  if (bias.size() != 0 && bias.size() != w.out)
    detail::fail<length_error>(fn, "bias.size()", bias.size(), "must be 0 or out = " + std::to_string(w.out));
  xt::xtensor<std::int32_t, 2> y = xt::xtensor<std::int32_t, 2>::from_shape({x.shape()[0], w.out});
  integer_gemm_s32<Arch>(x.data(), x.shape()[0], w.k, x_zero_point, w, bias.size() ? bias.data() : nullptr, y.data(),
                         w.out);
  return y;
}

namespace detail {
namespace igemm {

// The fused GEMM once its arguments are validated: offsets = epilogue_offsets(...), plan
// built from the requantization parameters and checked against out and Out.
template <class Arch, class Act, class Out>
void gemm_requantized(const Act* x, std::size_t n, std::size_t ldx, const packed_weights& w,
                      const std::int32_t* offsets, const kernels::requantize_plan& plan, Out* y, std::size_t ldy) {
  // The lanes of the requantization body: AVX2 wherever the GEMM tile is AVX2.
  using L = typename std::conditional<uses_avx2<Arch>::value, xsimd::avx2, simd::scalar>::type;
  constexpr std::size_t lanes = simd::lanes<std::int32_t, L>;
  const std::size_t out = w.out;
  const bool per_channel = plan.channels != 1;
  // Tables through a local view and the offsets through a local pointer: stores of int8 /
  // uint8 may alias anything, so members reached through references would be reloaded.
  const kernels::requantize_view view = kernels::view_of(plan);
  kernels::dispatch_rounding(plan, [&](auto rounding, auto left) {
    constexpr requantization R = decltype(rounding)::value;
    constexpr bool LS = decltype(left)::value;
    const kernels::requantize_lanes_t<L> tensor_lanes = kernels::broadcast_lanes<L>(view, 0);
    run_any<Arch>(x, n, ldx, w, [&](const std::int32_t* tile, std::size_t n0, std::size_t nr,
                                    std::size_t o0) QUANT_INLINE_LAMBDA {
      const kernels::requantize_view v = view;
      const std::int32_t* const off_tile = offsets + o0;
      const kernels::requantize_lanes_t<L> tl = tensor_lanes;
      Out* const y_tile = y + n0 * ldy + o0;
      const std::size_t valid = std::min(mr, out - o0);
      for (std::size_t j = 0; j < nr; ++j) {
        Out* yr = y_tile + j * ldy;
        const std::int32_t* t = tile + j * mr;
        std::size_t c = 0;
        if (valid == mr) {
          for (; c < mr; c += lanes) {
            simd::pack<std::int32_t, L> a;
            if constexpr (lanes == 1)
              a = add_wrap(t[c], off_tile[c]);
            else
              a = simd::load<L>(t + c) + simd::load<L>(off_tile + c);  // wrapping vpaddd
            const auto k = per_channel ? kernels::load_lanes<L>(v, o0 + c) : tl;
            kernels::store_narrow<Out, L>(yr + c, kernels::requantize_lanes<R, LS, L>(a, k));
          }
        }
        for (; c < valid; ++c) {  // channel tail
          const std::int32_t a = add_wrap(t[c], off_tile[c]);
          const auto k = kernels::broadcast_lanes<simd::scalar>(v, per_channel ? o0 + c : 0);
          kernels::store_narrow<Out, simd::scalar>(yr + c, kernels::requantize_lanes<R, LS, simd::scalar>(a, k));
        }
      }
    });
  });
}

inline void check_plan_channels(const kernels::requantize_plan& plan, std::size_t out, const char* fn) {
  if (plan.channels != 1 && plan.channels != out)
    fail<length_error>(fn, "rq.channels()", plan.channels, "must be 1 (per tensor) or out = " + std::to_string(out));
}

}  // namespace igemm
}  // namespace detail

// GEMM with the requantization fused into the epilogue:
//   y[n, o] = requantize_one(acc[n, o], o, rq)   (requantize.hpp; per tensor or per channel)
// Out is int8_t or uint8_t (rq.lo / rq.hi must fit it). Same arguments and errors as
// integer_gemm_s32, plus quant::length_error naming "rq" when rq holds neither 1 nor out
// channels and requantize_plan's checks of rq. Every call validates its arguments and builds
// the requantization tables; a layer run many times is faster as an integer_gemm_layer.
template <class Arch = simd::default_arch, class Act, class Out>
void integer_gemm(const Act* x, std::size_t n, std::size_t ldx, int x_zero_point, const packed_weights& w,
                  const std::int32_t* bias, const requantize_params& rq, Out* y, std::size_t ldy) {
  static_assert(std::is_same<Out, std::int8_t>::value || std::is_same<Out, std::uint8_t>::value,
                "integer_gemm: Out must be int8_t or uint8_t (integer_gemm_s32 for int32)");
  const char* fn = "integer_gemm";
  detail::igemm::check_strides(ldx, w.k, ldy, w.out, fn);
  const std::vector<std::int32_t> off = detail::igemm::epilogue_offsets<Act>(w, x_zero_point, bias, fn);
  const kernels::requantize_plan plan(rq, fn);
  detail::igemm::check_plan_channels(plan, w.out, fn);
  kernels::check_output_range<Out>(rq, fn);
  detail::igemm::gemm_requantized<Arch>(x, n, ldx, w, off.data(), plan, y, ldy);
}

// A layer prepared once for many calls (an engine's operator object): it owns the packed
// weights and keeps what integer_gemm otherwise validates and builds on every call, namely
// the epilogue constants bias_q[o] - z_x rowsum[o] after the K and accumulator-bound checks,
// and the requantization tables. The constructor throws what integer_gemm would throw for
// the same weights, zero point, bias and parameters (naming the same arguments, from
// "integer_gemm_layer"); integer_gemm(x, n, ldx, layer, y, ldy) then checks only the
// strides and the output type, and gives the same bits as the unprepared call.
template <class Act>
class integer_gemm_layer {
  static_assert(std::is_same<Act, std::uint8_t>::value || std::is_same<Act, std::int8_t>::value,
                "integer GEMM activations are uint8_t or int8_t");

 public:
  // bias: empty or out values.
  integer_gemm_layer(packed_weights w, int x_zero_point, std::vector<std::int32_t> bias, const requantize_params& rq)
      : w_(std::move(w)), z_(x_zero_point), bias_(std::move(bias)), rq_(rq), plan_(rq, "integer_gemm_layer") {
    const char* fn = "integer_gemm_layer";
    if (!bias_.empty() && bias_.size() != w_.out)
      detail::fail<length_error>(fn, "bias.size()", bias_.size(), "must be 0 or out = " + std::to_string(w_.out));
    offsets_ = detail::igemm::epilogue_offsets<Act>(w_, z_, bias_.empty() ? nullptr : bias_.data(), fn);
    detail::igemm::check_plan_channels(plan_, w_.out, fn);
  }

  const packed_weights& weights() const noexcept { return w_; }
  int x_zero_point() const noexcept { return z_; }
  const std::vector<std::int32_t>& bias() const noexcept { return bias_; }
  const requantize_params& requantization_params() const noexcept { return rq_; }

  // The run itself (see integer_gemm below).
  template <class Arch, class Out>
  void run(const Act* x, std::size_t n, std::size_t ldx, Out* y, std::size_t ldy) const {
    static_assert(std::is_same<Out, std::int8_t>::value || std::is_same<Out, std::uint8_t>::value,
                  "integer_gemm: Out must be int8_t or uint8_t");
    const char* fn = "integer_gemm";
    detail::igemm::check_strides(ldx, w_.k, ldy, w_.out, fn);
    kernels::check_output_range<Out>(rq_, fn);
    detail::igemm::gemm_requantized<Arch>(x, n, ldx, w_, offsets_.data(), plan_, y, ldy);
  }

 private:
  packed_weights w_;
  int z_;
  std::vector<std::int32_t> bias_;
  requantize_params rq_;
  kernels::requantize_plan plan_;
  std::vector<std::int32_t> offsets_;
};

// The prepared form: x n rows of K activations (row j at x + j * ldx), y row j at y + j * ldy.
template <class Arch = simd::default_arch, class Act, class Out>
void integer_gemm(const Act* x, std::size_t n, std::size_t ldx, const integer_gemm_layer<Act>& layer, Out* y,
                  std::size_t ldy) {
  layer.template run<Arch>(x, n, ldx, y, ldy);
}

namespace detail {
namespace igemm {

// The xtensor forms' one body: bias = bias_size values at bias (0: none).
template <class Out, class Arch, class Act>
xt::xtensor<Out, 2> integer_gemm_tensor(const xt::xtensor<Act, 2>& x, int x_zero_point, const packed_weights& w,
                                        const std::int32_t* bias, std::size_t bias_size, const requantize_params& rq) {
  const char* fn = "integer_gemm";
  if (x.shape()[1] != w.k)
    fail<length_error>(fn, "x.shape()", shape_string(x.shape()), "must be [N, K] with K = w.k = " + std::to_string(w.k));
  if (bias_size != 0 && bias_size != w.out)
    fail<length_error>(fn, "bias.size()", bias_size, "must be 0 or out = " + std::to_string(w.out));
  xt::xtensor<Out, 2> y = xt::xtensor<Out, 2>::from_shape({x.shape()[0], w.out});
  integer_gemm<Arch>(x.data(), x.shape()[0], w.k, x_zero_point, w, bias_size ? bias : nullptr, rq, y.data(), w.out);
  return y;
}

}  // namespace igemm
}  // namespace detail

// xtensor form: x [N, K] -> y [N, out] of Out (int8_t or uint8_t); bias empty or [out].
template <class Out, class Arch = simd::default_arch, class Act>
xt::xtensor<Out, 2> integer_gemm(const xt::xtensor<Act, 2>& x, int x_zero_point, const packed_weights& w,
                                 const xt::xtensor<std::int32_t, 1>& bias, const requantize_params& rq) {
  return detail::igemm::integer_gemm_tensor<Out, Arch>(x, x_zero_point, w, bias.data(), bias.size(), rq);
}

// The same with the bias as quantize_bias returns it (std::vector, empty or [out]; the
// allocator is deduced so that a `{}` bias still means the overload above).
template <class Out, class Arch = simd::default_arch, class Act, class Allocator>
xt::xtensor<Out, 2> integer_gemm(const xt::xtensor<Act, 2>& x, int x_zero_point, const packed_weights& w,
                                 const std::vector<std::int32_t, Allocator>& bias, const requantize_params& rq) {
  return detail::igemm::integer_gemm_tensor<Out, Arch>(x, x_zero_point, w, bias.data(), bias.size(), rq);
}

}  // namespace quant
