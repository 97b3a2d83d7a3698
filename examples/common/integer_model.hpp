// examples/common/integer_model.hpp — a quantized model bundle (written by `quant ptq`) turned
// into an integer model an engine executes, its integer runner, and an exact simulation of it.
//
// Export (make_integer_model). For weight layer l with input quantizer (s_in, z_in) (its
// input_encodings: per tensor, unsigned grid of at most 8 bits), symmetric weight quantizer
// s_w[o] (per tensor or per output channel, signed grid of at most 8 bits, zero points 0) and
// the NEXT weight layer's input quantizer (s_out, z_out):
//   Wq[o, k]   = round(W[o, k] / s_w[o])     (the stored weights are fake-quantized; export
//                checks float(Wq) * s_w[o] == W bit for bit, so Wq is the integer they came from)
//   bias_q[o]  = round_half_even(b[o] / (s_in s_w[o]))                  (quant::quantize_bias)
//   acc[n, o]  = bias_q[o] + sum_k Wq[o, k] (xq[n, k] - z_in)            (int32, exact)
//   M[o]       = s_in s_w[o] / s_out                                      (double)
//   yq[n, o]   = requantize(acc[n, o]; M[o], z_out, [lo, hi])            (requantize.hpp)
// so every layer writes straight onto the grid the next weight layer reads. A relu / relu6
// right after the layer is folded into [lo, hi] (lo = max(qmin, z_out); relu6 also
// hi = min(qmax, z_out + round(6 / s_out))). Between two weight layers the integers then pass
// through
//   maxpool2d       integer max (quantization is monotone, so max commutes with it exactly;
//                   padded taps are skipped, as in the float runner)
//   relu, relu6     clamp to [max(qmin, z), ...] (not directly after a weight layer)
//   flatten         nothing (NCHW is already C order)
// Average pooling has no exact counterpart on an 8-bit grid (the mean of grid values is not
// on the grid, and the pre-pool values need not fit the next layer's range). So when an
// avgpool2d or global_avgpool lies between two weight layers, everything between them runs
// on the int32 accumulators (integer_op::acc_ops: relu as max(acc, 0), which is exact since
// acc = 0 is the real 0; max-pool as max; average pools as window SUMS, padded taps 0;
// flatten) and the sums are requantized once with
//   M'[o] = s_in s_w[o] / (s_out D),   D = product of the averaging areas (kh*kw, H*W),
// i.e. the division by the area is folded into the multiplier and rounded once, by the
// requantization itself. Export checks (|bias_q| + max|x - z| sum|Wq|) D < 2^31. relu6 in
// such a segment is an error (6 is not an integer number of accumulator units).
// Before the first weight layer only flatten, maxpool2d and relu are allowed (they commute
// with the input quantizer). The last weight layer is not requantized: its logits are
//   logit[n, o] = float( double(acc[n, o]) * (double(s_in) * double(s_w[o])) )
// (bias_q included); only flatten may follow it. A batchnorm2d left unfolded, a grouped
// (non-depthwise) convolution, an asymmetric or per-group weight grid, a weight or activation
// grid wider than 8 bits, a missing encoding, weights off their grid or a multiplier outside
// [2^-31, 2^30] make export throw integer_export_error naming the layer.
//
// Execution (run_integer_model). mode::integer: the float input is quantized once with the first
// weight layer's input quantizer (quant::quantize, round half to even), then everything is
// integer: linear through quant::integer_gemm (requantization fused), conv2d through the
// integer im2col (padded with z_in) and quant::integer_gemm, depthwise conv2d through a direct
// int32 loop (depthwise_conv_integer) and quant::requantize_channel_major, pools as above; the
// last layer through quant::integer_gemm_s32. mode::exact_simulation computes the same
// pipeline the way a fake-quant simulation does: activations as integer-valued doubles,
// convolutions as float im2col of (q - z) with zero padding (exact: |q - z| <= 255) and a
// double GEMM / GEMV through xtensor-blas (exact: every partial sum is an integer below
// 2^53), accumulator segments in double, then quant::requantize_one (the scalar
// specification of the requantization) on each accumulator.
// Both give the same integers and logits bit for bit; test_integer_model checks it.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <quant/parallel.hpp>
#include <quant/export.hpp>
#include <quant/im2col.hpp>
#include <quant/integer_gemm.hpp>
#include <quant/integer_im2col.hpp>
#include <quant/packed_weights.hpp>
#include <quant/requantize.hpp>
#include <quant/uniform.hpp>
#include <xtensor-blas/xblas.hpp>
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xtensor.hpp>

#include "model_bundle.hpp"
#include "npy_io.hpp"

namespace examples {

// A bundle that cannot become an integer model; the message names the layer.
struct integer_export_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An activation quantizer: per tensor, on an unsigned grid of at most 8 bits.
struct activation_grid {
  double scale = 1.0;
  std::int32_t zero_point = 0;
  std::int32_t qmin = 0, qmax = 255;
  int bits = 8;
};

enum class integer_op_kind { linear, conv2d, depthwise_conv2d, maxpool2d, avgpool2d, global_avgpool, flatten, clamp };

inline const char* to_string(integer_op_kind k) noexcept {
  switch (k) {
    case integer_op_kind::linear: return "linear";
    case integer_op_kind::conv2d: return "conv2d";
    case integer_op_kind::depthwise_conv2d: return "depthwise_conv2d";
    case integer_op_kind::maxpool2d: return "maxpool2d";
    case integer_op_kind::avgpool2d: return "avgpool2d";
    case integer_op_kind::global_avgpool: return "global_avgpool";
    case integer_op_kind::flatten: return "flatten";
    case integer_op_kind::clamp: return "clamp";
  }
  return "?";
}

inline bool is_weight_op(integer_op_kind k) noexcept {
  return k == integer_op_kind::linear || k == integer_op_kind::conv2d || k == integer_op_kind::depthwise_conv2d;
}

struct integer_op {
  integer_op_kind kind = integer_op_kind::flatten;
  std::string name;                               // the bundle layer it comes from
  std::vector<std::size_t> in_shape, out_shape;  // one sample
  // pools and convolutions
  std::size_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  // weight ops
  xt::xtensor<std::int8_t, 2> weights;  // [out, K]: linear [out, in]; conv [out, C*kh*kw]; depthwise [C, kh*kw]
  int weight_grid_bits = 8;             // bits of the weight quantizer's grid
  std::vector<float> weight_scales;     // [out]
  std::vector<std::int32_t> bias;       // [out], int32 with scale s_in s_w[o]
  activation_grid input;                // the layer's input quantizer
  bool logits = false;                  // the last weight layer: int32 accumulators dequantized
  std::vector<double> output_scales;    // logits: s_in s_w[o]
  // requantizing weight ops (not logits)
  activation_grid output;               // the next weight layer's input quantizer
  quant::fused_activation activation = quant::fused_activation::none;
  std::vector<double> multipliers;      // M[o] = s_in s_w[o] / s_out
  quant::requantize_params rq;          // lo / hi with the activation folded in
  quant::packed_weights packed;         // kernel layout (linear, conv2d)
  // Accumulator segment: when an avgpool2d / global_avgpool lies between this layer and the
  // next weight layer, every layer in between runs on the int32 accumulators (relu as
  // max(acc, 0), max-pool as max, average pools as window SUMS with padded taps 0, flatten
  // as nothing) and the sums are requantized once with M[o] / D, D the product of the
  // averaging areas. acc_shape is the accumulator's shape (one sample).
  std::vector<integer_op> acc_ops;
  std::vector<std::size_t> acc_shape;
  std::int64_t acc_divisor = 1;
  // clamp (standalone relu / relu6) and the bounds of everything after a requantization
  std::int32_t lo = 0, hi = 255;
  std::int32_t zero_point = 0;  // pools and clamp: the grid their integers live on
};

enum class weight_format { int8, int4 };

struct integer_model {
  std::vector<std::size_t> input_shape;
  activation_grid input;  // the first weight layer's input quantizer
  quant::requantization rounding = quant::requantization::fixed_point;
  weight_format format = weight_format::int8;
  std::vector<integer_op> ops;
  std::vector<std::size_t> output_shape() const { return ops.back().out_shape; }
};

// The integer model of a quantized bundle (header comment). Throws integer_export_error.
integer_model make_integer_model(const model& m, quant::requantization rounding = quant::requantization::fixed_point,
                                 weight_format format = weight_format::int8);

// ---- execution ---------------------------------------------------------------------------------

enum class integer_mode { integer, exact_simulation };

struct integer_run_result {
  xt::xarray<float> logits;  // [N, ...output shape]
  // When recorded: the output of every op except the last weight layer and what follows
  // it, [N, ...out_shape] on its grid (uint8).
  std::vector<xt::xarray<std::uint8_t>> activations;
  std::vector<std::size_t> activation_ops;  // op index of each entry of `activations`
};

// Direct depthwise convolution of one sample: x [C, H, W] (uint8, zero point z) ->
// acc [C, OH*OW] int32 = bias[c] + sum_{ky,kx} w[c, ky*kw + kx] (x[c, iy, ix] - z), padded taps 0.
void depthwise_conv_integer(const std::uint8_t* x, std::int32_t* acc, const integer_op& op);

// Number of ops whose outputs are recorded: those before the last weight op.
std::size_t recorded_ops(const integer_model& im);

// Runs the integer model on x [N, ...input_shape] (float); `batch` samples per chunk.
// record: also return every recorded op's output. Throws std::length_error for a wrong shape.
integer_run_result run_integer_model(const integer_model& im, const xt::xarray<float>& x,
                                     integer_mode mode = integer_mode::integer, bool record = false,
                                     std::size_t batch = 256);

// ---- the engine directory ----------------------------------------------------------------------
//
// ENGINE_DIR/engine.json (docs/integer_execution.md, "Integer model bundle") and one
// <name>.weights.npy per weight layer: int8 [out, K] (weight_format int8) or uint8
// [(out*K + 1) / 2] (int4: quant's nibble order, element 2j in the low nibble of byte j,
// two's-complement nibbles).

nlohmann::ordered_json grid_json(const activation_grid& g);

// A JSON integer in [lo, hi] as T; std::invalid_argument naming `what` otherwise. (nlohmann's
// get<int>() casts a float such as 1e30 unchecked, which is undefined behaviour.)
template <class T>
T json_int(const nlohmann::json& v, const std::string& what, std::int64_t lo, std::int64_t hi) {
  const bool ok = v.is_number_unsigned() ? v.get<std::uint64_t>() <= static_cast<std::uint64_t>(hi)
                                         : v.is_number_integer() && v.get<std::int64_t>() >= lo && v.get<std::int64_t>() <= hi;
  if (!ok)
    throw std::invalid_argument(what + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                "], got " + v.dump());
  return static_cast<T>(v.get<std::int64_t>());
}
template <class T>
std::vector<T> json_ints(const nlohmann::json& v, const std::string& what, std::int64_t lo, std::int64_t hi) {
  if (!v.is_array()) throw std::invalid_argument(what + " must be an array of integers, got " + v.dump());
  std::vector<T> out;
  for (const auto& e : v) out.push_back(json_int<T>(e, what, lo, hi));
  return out;
}
constexpr std::int64_t json_int32_min = std::numeric_limits<std::int32_t>::min();
constexpr std::int64_t json_int32_max = std::numeric_limits<std::int32_t>::max();
constexpr std::int64_t max_json_size = std::int64_t(1) << 24;    // a shape entry
constexpr std::int64_t max_json_window = std::int64_t(1) << 20;  // kernel, stride, padding (as model.json)
// A shape: 1..4 entries, each in [1, 2^24].
std::vector<std::size_t> json_shape(const nlohmann::json& v, const std::string& what);

activation_grid grid_from_json(const nlohmann::json& j);

// Reads a window op's "kernel", "stride" and "padding" ([h, w] each) into op when present;
// kernel and stride must be >= 1 (the message starts with `context`).
void window_from_json(const nlohmann::json& j, integer_op& op, const std::string& context);

// The shape op computes from op.in_shape (weight ops: from the weights [out, K] too), or
// std::invalid_argument when the op does not fit its input: what the runner relies on, so an
// engine.json whose shapes disagree with its ops is refused instead of read out of bounds.
std::vector<std::size_t> op_output_shape(const integer_op& op);

inline const char* activation_name(quant::fused_activation a) {
  return a == quant::fused_activation::relu ? "relu" : a == quant::fused_activation::relu6 ? "relu6" : "none";
}

inline std::string weights_file(const integer_op& op) { return op.name + ".weights.npy"; }

nlohmann::ordered_json integer_model_json(const integer_model& im);

// Writes ENGINE_DIR atomically (model_bundle.hpp's temporary-directory rename).
void save_integer_model(const integer_model& im, const std::string& dir);

// Reads ENGINE_DIR back (the runner needs nothing else). Throws bundle_error naming the
// file and the field.
integer_model load_integer_model(const std::string& dir);

}  // namespace examples
