// examples/common/integer_model.cpp — integer export, the integer runner, its exact simulation
// and the engine directory, declared in integer_model.hpp (the formulas: there).
#include "integer_model.hpp"

#include <unistd.h>

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

namespace integer_detail {
namespace {

[[noreturn]] void fail(const std::string& layer, const std::string& what) {
  throw integer_export_error("layer " + layer + ": " + what);
}

activation_grid activation_grid_of(const model_layer& l) {
  if (!l.input_encoding)
    fail(l.name, "no input_encodings: integer export needs an activation quantizer at every weight layer's input "
                 "(quant ptq with --act-bits <= 8)");
  const quant::qparams& p = l.input_encoding->params;
  if (p.granularity() != quant::granularity::per_tensor || p.size() != 1)
    fail(l.name, "input_encodings must be per tensor");
  if (p.grid().is_signed || p.grid().bits > 8)
    fail(l.name, "input_encodings on a " + std::string(p.grid().is_signed ? "signed " : "") +
                     std::to_string(p.grid().bits) + "-bit grid: integer execution takes unsigned grids of at most 8 bits");
  activation_grid g;
  g.scale = static_cast<double>(p.scale(0));
  g.zero_point = p.zero_point(0);
  g.qmin = p.qmin();
  g.qmax = p.qmax();
  g.bits = p.grid().bits;
  return g;
}

// Integer weights [out, K] and per-channel scales from the fake-quantized float weights.
void integer_weights(const model_layer& l, integer_op& op, weight_format format) {
  if (!l.weight_encoding) fail(l.name, "no weight_encodings: export needs the weight quantizer");
  const quant::qparams& p = l.weight_encoding->params;
  const std::size_t out = l.weight.shape()[0], k = l.weight.size() / out;
  if (!p.is_symmetric() || !p.grid().is_signed)
    fail(l.name, "weight_encodings are not symmetric on a signed grid (zero points must be 0): the integer GEMM "
                 "takes symmetric weights");
  if (p.granularity() == quant::granularity::per_group) fail(l.name, "per-group weight_encodings are not supported");
  if (p.granularity() == quant::granularity::per_channel && (p.axis() != 0 || p.size() != out))
    fail(l.name, "per-channel weight_encodings must be along axis 0 with one scale per output channel");
  const int bits = p.grid().bits;
  if (bits > 8) fail(l.name, "weight grid of " + std::to_string(bits) + " bits: integer execution takes at most 8");
  if (format == weight_format::int4 && bits > 4)
    fail(l.name, "weight grid of " + std::to_string(bits) + " bits does not fit --weight-format int4 (use int8)");
  op.weight_grid_bits = bits;
  op.weight_scales.resize(out);
  op.weights = xt::xtensor<std::int8_t, 2>::from_shape({out, k});
  const float* w = l.weight.data();
  for (std::size_t o = 0; o < out; ++o) {
    const float s = p.size() == 1 ? p.scale(0) : p.scale(o);
    op.weight_scales[o] = s;
    for (std::size_t j = 0; j < k; ++j) {
      const float v = w[o * k + j];
      const double q = std::nearbyint(static_cast<double>(v) / static_cast<double>(s));
      if (!(q >= p.qmin() && q <= p.qmax()) || static_cast<float>(q) * s != v)
        fail(l.name, "weight[" + std::to_string(o) + ", " + std::to_string(j) + "] = " + std::to_string(v) +
                         " is not on its grid (scale " + std::to_string(s) + ", [" + std::to_string(p.qmin()) +
                         ", " + std::to_string(p.qmax()) + "]): is this a bundle written by quant ptq?");
      op.weights(o, j) = static_cast<std::int8_t>(q);
    }
  }
}

void pack(integer_op& op, weight_format format) {
  if (op.kind == integer_op_kind::depthwise_conv2d) return;
  op.packed = format == weight_format::int4 ? quant::pack_weights_int4(op.weights) : quant::pack_weights(op.weights);
  // The GEMM's own checks, once here: its int32 (and int16) arithmetic is bounded for any
  // uint8 input, so it bounds K and |bias| + max|x - z| sum|w| over the whole uint8 range,
  // not the activation grid's. An engine the kernel would refuse at run time is refused
  // when it is made or loaded.
  try {
    quant::check_integer_gemm<std::uint8_t>(op.packed, op.input.zero_point, op.bias.data());
  } catch (const quant::error& e) {
    fail(op.name, e.what());
  }
}

std::int32_t relu6_top(const activation_grid& g) {
  return static_cast<std::int32_t>(
      std::min<double>(g.qmax, static_cast<double>(g.zero_point) + std::round(6.0 / g.scale)));
}

// Fills multipliers / rq (or output_scales) of a weight op from its input / output grids.
void finish_weight_op(integer_op& op, quant::requantization rounding) {
  const std::size_t out = op.weight_scales.size();
  if (op.logits) {
    op.output_scales.resize(out);
    for (std::size_t o = 0; o < out; ++o)
      op.output_scales[o] = op.input.scale * static_cast<double>(op.weight_scales[o]);
    return;
  }
  op.multipliers.resize(out);
  for (std::size_t o = 0; o < out; ++o)
    op.multipliers[o] =
        op.input.scale * static_cast<double>(op.weight_scales[o]) / (op.output.scale * static_cast<double>(op.acc_divisor));
  try {
    op.rq = quant::make_requantize_params(op.multipliers, quant::grid::int_unsigned(op.output.bits),
                                          op.output.zero_point, rounding, op.activation, op.output.scale);
  } catch (const std::exception& e) {
    fail(op.name, std::string("requantization: ") + e.what());
  }
  op.lo = op.rq.lo;
  op.hi = op.rq.hi;
  op.zero_point = op.output.zero_point;
}

// Bound of the int32 accumulator times the averaging areas over the activation grid, the
// range the depthwise loop's inputs and the window sums stay in (pack() adds the GEMM's
// own, wider bound for linear and conv ops).
void check_accumulator_bound(const integer_op& op) {
  const std::int64_t span = std::max(op.input.zero_point - op.input.qmin, op.input.qmax - op.input.zero_point);
  for (std::size_t c = 0; c < op.weights.shape()[0]; ++c) {
    std::int64_t a = std::llabs(op.bias[c]);
    for (std::size_t j = 0; j < op.weights.shape()[1]; ++j) a += span * std::abs(int(op.weights(c, j)));
    if (a > std::numeric_limits<std::int32_t>::max() / op.acc_divisor)  // acc_divisor >= 1; no int64 overflow
      fail(op.name, "channel " + std::to_string(c) + ": the accumulator (times the average-pool areas " +
                        std::to_string(op.acc_divisor) + ") could leave int32: |acc| <= " + std::to_string(a));
  }
}

// The op of layer i of the model on an input of shape `shape`: its name ("layers[i]" when the
// layer has none), input and output shapes; `shape` advances to the output shape.
integer_op op_of_layer(const model_layer& l, std::size_t i, std::vector<std::size_t>& shape) {
  integer_op op;
  op.name = l.name.empty() ? "layers[" + std::to_string(i) + "]" : l.name;
  op.in_shape = shape;
  op.out_shape = detail::layer_output_shape(l, shape, "<model>", "layers[" + std::to_string(i) + "]");
  shape = op.out_shape;
  return op;
}

// The window of a conv or pooling op: the kernel size, and the stride and padding of layer l.
void set_window(integer_op& op, std::size_t kernel_h, std::size_t kernel_w, const model_layer& l) {
  op.kernel_h = kernel_h;
  op.kernel_w = kernel_w;
  op.stride_h = l.stride_h;
  op.stride_w = l.stride_w;
  op.pad_h = l.pad_h;
  op.pad_w = l.pad_w;
}

}  // namespace
}  // namespace integer_detail

integer_model make_integer_model(const model& m, quant::requantization rounding, weight_format format) {
  using namespace integer_detail;
  integer_model im;
  im.input_shape = m.input_shape;
  im.rounding = rounding;
  im.format = format;
  std::vector<std::size_t> weight_layers;
  for (std::size_t i = 0; i < m.layers.size(); ++i)
    if (has_weights(m.layers[i].type)) weight_layers.push_back(i);
  if (weight_layers.empty()) throw integer_export_error("the model has no linear or conv2d layer");
  im.input = activation_grid_of(m.layers[weight_layers.front()]);
  const std::size_t last_weight = weight_layers.back();
  std::vector<std::size_t> shape = m.input_shape;
  activation_grid current = im.input;  // the grid of the integers flowing at this point
  bool before_first = true;
  std::size_t next_weight = 0;  // index into weight_layers
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const model_layer& l = m.layers[i];
    integer_op op = op_of_layer(l, i, shape);
    op.zero_point = current.zero_point;
    op.lo = current.qmin;
    op.hi = current.qmax;
    const bool after_last = i > last_weight;
    switch (l.type) {
      case layer_type::linear:
      case layer_type::conv2d: {
        ++next_weight;
        before_first = false;
        op.input = activation_grid_of(l);
        if (l.type == layer_type::linear) {
          op.kind = integer_op_kind::linear;
        } else if (l.groups == 1) {
          op.kind = integer_op_kind::conv2d;
        } else if (l.is_depthwise(op.in_shape[0])) {
          op.kind = integer_op_kind::depthwise_conv2d;
        } else {
          fail(op.name, "grouped convolution (groups " + std::to_string(l.groups) +
                            ") that is not depthwise is not supported");
        }
        if (op.kind != integer_op_kind::linear) set_window(op, l.weight.shape()[2], l.weight.shape()[3], l);
        integer_weights(l, op, format);
        std::vector<float> b(op.weight_scales.size(), 0.0f);
        if (l.bias) std::copy(l.bias->begin(), l.bias->end(), b.begin());
        try {
          op.bias = quant::quantize_bias(b, op.input.scale, op.weight_scales);
        } catch (const std::exception& e) {
          fail(op.name, std::string("bias: ") + e.what());
        }
        if (i == last_weight) {
          op.logits = true;
        } else {
          const std::size_t nw = weight_layers[next_weight];
          op.output = activation_grid_of(m.layers[nw]);
          bool averaging = false;
          for (std::size_t j = i + 1; j < nw; ++j)
            averaging |= m.layers[j].type == layer_type::avgpool2d || m.layers[j].type == layer_type::global_avgpool;
          if (averaging) {  // the accumulator segment (integer_op::acc_ops)
            op.acc_shape = op.out_shape;
            for (std::size_t j = i + 1; j < nw; ++j) {
              const model_layer& a = m.layers[j];
              integer_op s = op_of_layer(a, j, shape);
              set_window(s, a.kernel_h, a.kernel_w, a);
              switch (a.type) {
                case layer_type::relu: s.kind = integer_op_kind::clamp; break;
                case layer_type::maxpool2d: s.kind = integer_op_kind::maxpool2d; break;
                case layer_type::avgpool2d:
                  s.kind = integer_op_kind::avgpool2d;
                  op.acc_divisor *= static_cast<std::int64_t>(a.kernel_h * a.kernel_w);
                  break;
                case layer_type::global_avgpool:
                  s.kind = integer_op_kind::global_avgpool;
                  op.acc_divisor *= static_cast<std::int64_t>(s.in_shape[1] * s.in_shape[2]);
                  break;
                case layer_type::flatten: s.kind = integer_op_kind::flatten; break;
                case layer_type::batchnorm2d: fail(s.name, "batchnorm2d is not folded (run quant ptq without --no-fold-bn)");
                default:
                  fail(s.name, std::string(to_string(a.type)) + " between a weight layer and an average pool is not "
                                                                "supported (only relu, max/avg pooling, flatten)");
              }
              op.acc_ops.push_back(std::move(s));
            }
            op.out_shape = shape;
            i = nw - 1;
          } else if (i + 1 < m.layers.size() &&
                     (m.layers[i + 1].type == layer_type::relu || m.layers[i + 1].type == layer_type::relu6)) {
            op.activation =
                m.layers[i + 1].type == layer_type::relu ? quant::fused_activation::relu : quant::fused_activation::relu6;
            ++i;  // folded
          }
          current = op.output;
        }
        finish_weight_op(op, rounding);
        check_accumulator_bound(op);
        pack(op, format);
        break;
      }
      case layer_type::batchnorm2d:
        fail(op.name, "batchnorm2d is not folded (run quant ptq without --no-fold-bn)");
      case layer_type::relu:
      case layer_type::relu6:
        if (after_last) fail(op.name, "only flatten may follow the last weight layer (its output is the logits)");
        if (before_first && l.type == layer_type::relu6)
          fail(op.name, "relu6 before the first weight layer is not supported");
        op.kind = integer_op_kind::clamp;
        op.lo = std::max(current.qmin, current.zero_point);
        op.hi = l.type == layer_type::relu6 ? relu6_top(current) : current.qmax;
        break;
      case layer_type::maxpool2d:
      case layer_type::avgpool2d:
        if (after_last) fail(op.name, "only flatten may follow the last weight layer (its output is the logits)");
        if (before_first && l.type == layer_type::avgpool2d)
          fail(op.name, "avgpool2d before the first weight layer does not commute with the input quantizer");
        op.kind = l.type == layer_type::maxpool2d ? integer_op_kind::maxpool2d : integer_op_kind::avgpool2d;
        set_window(op, l.kernel_h, l.kernel_w, l);
        break;
      case layer_type::global_avgpool:
        if (after_last) fail(op.name, "only flatten may follow the last weight layer (its output is the logits)");
        if (before_first)
          fail(op.name, "global_avgpool before the first weight layer does not commute with the input quantizer");
        op.kind = integer_op_kind::global_avgpool;
        break;
      case layer_type::flatten: op.kind = integer_op_kind::flatten; break;
    }
    im.ops.push_back(std::move(op));
  }
  return im;
}

void depthwise_conv_integer(const std::uint8_t* x, std::int32_t* acc, const integer_op& op) {
  const std::size_t C = op.in_shape[0], H = op.in_shape[1], W = op.in_shape[2];
  const std::size_t OH = op.out_shape[1], OW = op.out_shape[2], kh = op.kernel_h, kw = op.kernel_w;
  const std::int32_t z = op.input.zero_point;
  for (std::size_t c = 0; c < C; ++c) {
    const std::uint8_t* xp = x + c * H * W;
    const std::int8_t* w = op.weights.data() + c * kh * kw;
    for (std::size_t oy = 0; oy < OH; ++oy)
      for (std::size_t ox = 0; ox < OW; ++ox) {
        std::int32_t a = op.bias[c];
        for (std::size_t ky = 0; ky < kh; ++ky) {
          const std::ptrdiff_t iy = static_cast<std::ptrdiff_t>(oy * op.stride_h + ky) - static_cast<std::ptrdiff_t>(op.pad_h);
          if (iy < 0 || iy >= static_cast<std::ptrdiff_t>(H)) continue;
          for (std::size_t kx = 0; kx < kw; ++kx) {
            const std::ptrdiff_t ix =
                static_cast<std::ptrdiff_t>(ox * op.stride_w + kx) - static_cast<std::ptrdiff_t>(op.pad_w);
            if (ix < 0 || ix >= static_cast<std::ptrdiff_t>(W)) continue;
            a += static_cast<std::int32_t>(w[ky * kw + kx]) *
                 (static_cast<std::int32_t>(xp[static_cast<std::size_t>(iy) * W + static_cast<std::size_t>(ix)]) - z);
          }
        }
        acc[c * OH * OW + oy * OW + ox] = a;
      }
  }
}

namespace integer_detail {
namespace {

quant::conv2d_shape conv_geometry(const integer_op& op, std::size_t channels) {
  quant::conv2d_shape g;
  g.channels = channels;
  g.height = op.in_shape[1];
  g.width = op.in_shape[2];
  g.kernel_h = op.kernel_h;
  g.kernel_w = op.kernel_w;
  g.stride_h = op.stride_h;
  g.stride_w = op.stride_w;
  g.pad_h = op.pad_h;
  g.pad_w = op.pad_w;
  return g;
}

// Max-pool over one sample [C, H, W] (uint8 or double holding integers): the largest
// valid tap (padded taps skipped, as in the float runner).
template <class T>
void maxpool_sample(const T* x, T* y, const integer_op& op) {
  const std::size_t C = op.in_shape[0], H = op.in_shape[1], W = op.in_shape[2];
  const std::size_t OH = op.out_shape[1], OW = op.out_shape[2];
  if (op.kernel_h == 2 && op.kernel_w == 2 && op.stride_h == 2 && op.stride_w == 2 && op.pad_h == 0 && op.pad_w == 0) {
    for (std::size_t c = 0; c < C; ++c)  // the common 2x2 / 2 window: no bounds to check
      for (std::size_t oy = 0; oy < OH; ++oy) {
        const T* r0 = x + (c * H + 2 * oy) * W;
        const T* r1 = r0 + W;
        T* out = y + (c * OH + oy) * OW;
        for (std::size_t ox = 0; ox < OW; ++ox)
          out[ox] = std::max(std::max(r0[2 * ox], r0[2 * ox + 1]), std::max(r1[2 * ox], r1[2 * ox + 1]));
      }
    return;
  }
  for (std::size_t c = 0; c < C; ++c)
    for (std::size_t oy = 0; oy < OH; ++oy)
      for (std::size_t ox = 0; ox < OW; ++ox) {
        T m = 0;
        for (std::size_t ky = 0; ky < op.kernel_h; ++ky) {
          const std::ptrdiff_t iy = static_cast<std::ptrdiff_t>(oy * op.stride_h + ky) - static_cast<std::ptrdiff_t>(op.pad_h);
          if (iy < 0 || iy >= static_cast<std::ptrdiff_t>(H)) continue;
          for (std::size_t kx = 0; kx < op.kernel_w; ++kx) {
            const std::ptrdiff_t ix =
                static_cast<std::ptrdiff_t>(ox * op.stride_w + kx) - static_cast<std::ptrdiff_t>(op.pad_w);
            if (ix < 0 || ix >= static_cast<std::ptrdiff_t>(W)) continue;
            m = std::max(m, x[(c * H + static_cast<std::size_t>(iy)) * W + static_cast<std::size_t>(ix)]);  // values >= 0
          }
        }
        y[(c * OH + oy) * OW + ox] = m;
      }
}

// rows [P, out] (one sample of the GEMM's NHWC output) -> planes [out, P], in 16 x 16 tiles.
template <class T>
void rows_to_planes(const T* src, T* dst, std::size_t P, std::size_t out) {
  constexpr std::size_t B = 16;
  for (std::size_t p0 = 0; p0 < P; p0 += B)
    for (std::size_t o0 = 0; o0 < out; o0 += B) {
      const std::size_t p1 = std::min(P, p0 + B), o1 = std::min(out, o0 + B);
      for (std::size_t o = o0; o < o1; ++o)
        for (std::size_t p = p0; p < p1; ++p) dst[o * P + p] = src[p * out + o];
    }
}

// One op of an accumulator segment on one sample (integer_op::acc_ops): relu as max(v, 0),
// max-pool as max over the valid taps, average pools as window sums (padded taps 0),
// flatten as a copy. T is int32_t (sums bounded at export) or double holding integers.
template <class T>
void accumulator_op_sample(const T* x, T* y, const integer_op& op) {
  const std::size_t size = shape_size(op.in_shape);
  if (op.kind == integer_op_kind::clamp) {
    for (std::size_t i = 0; i < size; ++i) y[i] = x[i] > T(0) ? x[i] : T(0);
    return;
  }
  if (op.kind == integer_op_kind::flatten) {
    std::copy(x, x + size, y);
    return;
  }
  const std::size_t C = op.in_shape[0], H = op.in_shape[1], W = op.in_shape[2];
  if (op.kind == integer_op_kind::global_avgpool) {
    for (std::size_t c = 0; c < C; ++c) {
      T sum = 0;
      for (std::size_t k = 0; k < H * W; ++k) sum += x[c * H * W + k];
      y[c] = sum;
    }
    return;
  }
  const std::size_t OH = op.out_shape[1], OW = op.out_shape[2];
  const bool is_max = op.kind == integer_op_kind::maxpool2d;
  for (std::size_t c = 0; c < C; ++c)
    for (std::size_t oy = 0; oy < OH; ++oy)
      for (std::size_t ox = 0; ox < OW; ++ox) {
        T acc = 0;
        bool first = true;
        for (std::size_t ky = 0; ky < op.kernel_h; ++ky) {
          const std::ptrdiff_t iy = static_cast<std::ptrdiff_t>(oy * op.stride_h + ky) - static_cast<std::ptrdiff_t>(op.pad_h);
          if (iy < 0 || iy >= static_cast<std::ptrdiff_t>(H)) continue;
          for (std::size_t kx = 0; kx < op.kernel_w; ++kx) {
            const std::ptrdiff_t ix =
                static_cast<std::ptrdiff_t>(ox * op.stride_w + kx) - static_cast<std::ptrdiff_t>(op.pad_w);
            if (ix < 0 || ix >= static_cast<std::ptrdiff_t>(W)) continue;
            const T v = x[(c * H + static_cast<std::size_t>(iy)) * W + static_cast<std::size_t>(ix)];
            if (is_max) {
              acc = first || v > acc ? v : acc;
              first = false;
            } else {
              acc += v;
            }
          }
        }
        y[(c * OH + oy) * OW + ox] = acc;
      }
}

// One chunk of n samples in `cur` (uint8 or double holding integers), op by op.
struct chunk_state {
  std::vector<std::uint8_t> q, qn;
  std::vector<double> d, dn;
  std::vector<std::int32_t> acc;
};

void run_chunk_integer(const integer_model& im, std::size_t n, chunk_state& st, float* logits,
                              const std::function<void(std::size_t, const std::uint8_t*)>& record) {
  for (std::size_t oi = 0; oi < im.ops.size(); ++oi) {
    const integer_op& op = im.ops[oi];
    const std::size_t in_size = shape_size(op.in_shape), out_size = shape_size(op.out_shape);
    switch (op.kind) {
      case integer_op_kind::linear:
      case integer_op_kind::conv2d:
      case integer_op_kind::depthwise_conv2d: {
        const std::size_t out = op.weights.shape()[0], K = op.weights.shape()[1];
        const bool fused = !op.logits && op.acc_ops.empty();  // requantization in the GEMM epilogue
        const std::size_t acc_size = op.acc_ops.empty() ? out_size : shape_size(op.acc_shape);
        const std::size_t P = acc_size / out;
        st.acc.resize(n * acc_size);  // int32 NCHW (unless fused)
        if (op.kind == integer_op_kind::depthwise_conv2d) {
          if (fused) st.qn.resize(n * out_size);
          quant::parallel_for(n, n * acc_size * op.kernel_h * op.kernel_w, [&](std::size_t s) {
            std::int32_t* a = st.acc.data() + s * acc_size;
            depthwise_conv_integer(st.q.data() + s * in_size, a, op);
            if (fused) quant::requantize_channel_major(a, out, P, op.rq, st.qn.data() + s * out_size);
          });
        } else {
          const std::uint8_t* rows = st.q.data();
          std::size_t nrows = n;
          std::vector<std::uint8_t> cols;
          if (op.kind == integer_op_kind::conv2d) {
            const quant::conv2d_shape g = conv_geometry(op, op.in_shape[0]);
            nrows = n * P;
            cols.resize(nrows * K);
            quant::parallel_for(n, n * P * K, [&](std::size_t s) {
              quant::kernels::im2col(st.q.data() + s * in_size, cols.data() + s * P * K, g,
                                     static_cast<std::uint8_t>(op.input.zero_point));
            });
            rows = cols.data();
          }
          if (fused) {
            st.qn.resize(n * out_size);
            if (P == 1) {
              quant::integer_gemm(rows, nrows, K, op.input.zero_point, op.packed, op.bias.data(), op.rq, st.qn.data(),
                                  out);
            } else {
              std::vector<std::uint8_t> nhwc(nrows * out);
              quant::integer_gemm(rows, nrows, K, op.input.zero_point, op.packed, op.bias.data(), op.rq, nhwc.data(),
                                  out);
              quant::parallel_for(n, n * out_size, [&](std::size_t s) {
                rows_to_planes(nhwc.data() + s * P * out, st.qn.data() + s * out_size, P, out);
              });
            }
          } else {
            std::vector<std::int32_t> nhwc(nrows * out);
            quant::integer_gemm_s32(rows, nrows, K, op.input.zero_point, op.packed, op.bias.data(), nhwc.data(), out);
            quant::parallel_for(n, n * acc_size, [&](std::size_t s) {
              rows_to_planes(nhwc.data() + s * P * out, st.acc.data() + s * acc_size, P, out);
            });
          }
        }
        if (op.logits) {  // logit = acc s_in s_w[o], NCHW
          for (std::size_t s = 0; s < n; ++s)
            for (std::size_t i = 0; i < out_size; ++i)
              logits[s * out_size + i] =
                  static_cast<float>(static_cast<double>(st.acc[s * acc_size + i]) * op.output_scales[i / P]);
          return;
        }
        if (!fused) {  // the accumulator segment, then one requantization of the sums
          st.qn.resize(n * out_size);
          quant::parallel_for(n, n * acc_size, [&](std::size_t s) {
            thread_local std::vector<std::int32_t> a, b;
            a.assign(st.acc.begin() + static_cast<std::ptrdiff_t>(s * acc_size),
                     st.acc.begin() + static_cast<std::ptrdiff_t>((s + 1) * acc_size));
            for (const integer_op& seg : op.acc_ops) {
              b.resize(shape_size(seg.out_shape));
              accumulator_op_sample(a.data(), b.data(), seg);
              a.swap(b);
            }
            quant::requantize_channel_major(a.data(), out, out_size / out, op.rq, st.qn.data() + s * out_size);
          });
        }
        st.q.swap(st.qn);
        break;
      }
      case integer_op_kind::maxpool2d:
        st.qn.resize(n * out_size);
        quant::parallel_for(n, n * in_size, [&](std::size_t s) {
          maxpool_sample(st.q.data() + s * in_size, st.qn.data() + s * out_size, op);
        });
        st.q.swap(st.qn);
        break;
      case integer_op_kind::clamp:
        for (auto& v : st.q) v = static_cast<std::uint8_t>(std::min<std::int32_t>(std::max<std::int32_t>(v, op.lo), op.hi));
        break;
      default: break;  // flatten; average pools live in accumulator segments only
    }
    if (record) record(oi, st.q.data());
  }
}

// The same pipeline over integer-valued doubles (header comment).
void run_chunk_exact(const integer_model& im, std::size_t n, chunk_state& st, float* logits,
                            const std::function<void(std::size_t, const std::uint8_t*)>& record) {
  std::vector<std::uint8_t> rec;
  for (std::size_t oi = 0; oi < im.ops.size(); ++oi) {
    const integer_op& op = im.ops[oi];
    const std::size_t in_size = shape_size(op.in_shape), out_size = shape_size(op.out_shape);
    if (is_weight_op(op.kind)) {
      const std::size_t out = op.weights.shape()[0], K = op.weights.shape()[1];
      const double z = op.input.zero_point;
      // W as doubles, and the rows of (q - z) as a float-runner im2col would build them
      xt::xtensor<double, 2> Wd = xt::cast<double>(op.weights);
      std::size_t P = 1, groups = 1;
      if (op.kind != integer_op_kind::linear) {
        const auto& shp = op.acc_ops.empty() ? op.out_shape : op.acc_shape;
        P = shp[1] * shp[2];
      }
      if (op.kind == integer_op_kind::depthwise_conv2d) groups = op.in_shape[0];
      // acc(s, o, p) for every sample
      std::vector<double> acc(n * out * P);
      if (op.kind == integer_op_kind::linear) {
        xt::xtensor<double, 2> X = xt::xtensor<double, 2>::from_shape({n, K});
        for (std::size_t i = 0; i < n * K; ++i) X.data()[i] = st.d[i] - z;
        xt::xtensor<double, 2> Z = xt::xtensor<double, 2>::from_shape({n, out});
        xt::blas::gemm(X, Wd, Z, false, true, 1.0, 0.0);
        for (std::size_t s = 0; s < n; ++s)
          for (std::size_t o = 0; o < out; ++o) acc[s * out + o] = Z(s, o) + op.bias[o];
      }
      for (std::size_t s = 0; s < n && op.kind != integer_op_kind::linear; ++s) {
        const double* x = st.d.data() + s * in_size;
        const std::size_t chans = op.in_shape[0] / groups, H = op.in_shape[1], W = op.in_shape[2];
        const quant::conv2d_shape g = conv_geometry(op, chans);
        for (std::size_t gi = 0; gi < groups; ++gi) {
          std::vector<float> plane(chans * H * W), cols(P * g.patch_size());
          for (std::size_t i = 0; i < plane.size(); ++i) plane[i] = static_cast<float>(x[gi * chans * H * W + i] - z);
          quant::kernels::im2col(plane.data(), cols.data(), g);  // zero padding = the real value 0
          xt::xtensor<double, 2> C = xt::xtensor<double, 2>::from_shape({P, g.patch_size()});
          std::copy(cols.begin(), cols.end(), C.begin());
          if (groups == 1) {
            xt::xtensor<double, 2> Z = xt::xtensor<double, 2>::from_shape({out, P});
            xt::blas::gemm(Wd, C, Z, false, true, 1.0, 0.0);
            for (std::size_t o = 0; o < out; ++o)
              for (std::size_t p = 0; p < P; ++p) acc[(s * out + o) * P + p] = Z(o, p) + op.bias[o];
          } else {
            xt::xtensor<double, 1> wv = xt::xtensor<double, 1>::from_shape({K});
            for (std::size_t k = 0; k < K; ++k) wv(k) = Wd(gi, k);
            xt::xtensor<double, 1> Z = xt::zeros<double>({P});
            xt::blas::gemv(C, wv, Z, false, 1.0, 0.0);
            for (std::size_t p = 0; p < P; ++p) acc[(s * out + gi) * P + p] = Z(p) + op.bias[gi];
          }
        }
      }
      if (op.logits) {
        for (std::size_t s = 0; s < n; ++s)
          for (std::size_t o = 0; o < out; ++o)
            for (std::size_t p = 0; p < P; ++p)
              logits[s * out_size + o * P + p] = static_cast<float>(acc[(s * out + o) * P + p] * op.output_scales[o]);
        return;
      }
      st.dn.resize(n * out_size);
      const std::size_t acc_size = out * P, per_channel = out_size / out;
      for (std::size_t s = 0; s < n; ++s) {
        std::vector<double> a(acc.begin() + static_cast<std::ptrdiff_t>(s * acc_size),
                              acc.begin() + static_cast<std::ptrdiff_t>((s + 1) * acc_size)), b;
        for (const integer_op& seg : op.acc_ops) {  // relu / pools on the accumulators, in double
          b.resize(shape_size(seg.out_shape));
          accumulator_op_sample(a.data(), b.data(), seg);
          a.swap(b);
        }
        for (std::size_t i = 0; i < out_size; ++i) {
          const double v = a[i];
          if (!(v == std::floor(v) && std::fabs(v) < 2147483648.0))
            throw std::logic_error("exact simulation: accumulator " + std::to_string(v) + " of layer " + op.name +
                                   " is not an int32 integer");
          st.dn[s * out_size + i] = quant::requantize_one(static_cast<std::int32_t>(v), i / per_channel, op.rq);
        }
      }
      st.d.swap(st.dn);
    } else {
      switch (op.kind) {
        case integer_op_kind::maxpool2d:
          st.dn.resize(n * out_size);
          for (std::size_t s = 0; s < n; ++s) maxpool_sample(st.d.data() + s * in_size, st.dn.data() + s * out_size, op);
          st.d.swap(st.dn);
          break;
        case integer_op_kind::clamp:
          for (auto& v : st.d) v = std::min<double>(std::max<double>(v, op.lo), op.hi);
          break;
        default: break;
      }
    }
    if (record) {
      rec.resize(n * out_size);
      for (std::size_t i = 0; i < rec.size(); ++i) rec[i] = static_cast<std::uint8_t>(st.d[i]);
      record(oi, rec.data());
    }
  }
}

}  // namespace
}  // namespace integer_detail

std::size_t recorded_ops(const integer_model& im) {
  for (std::size_t i = 0; i < im.ops.size(); ++i)
    if (im.ops[i].logits) return i;
  return im.ops.size();
}

integer_run_result run_integer_model(const integer_model& im, const xt::xarray<float>& x, integer_mode mode,
                                     bool record, std::size_t batch) {
  const std::vector<std::size_t> got(x.shape().begin(), x.shape().end());
  if (got.size() != im.input_shape.size() + 1 || !std::equal(im.input_shape.begin(), im.input_shape.end(), got.begin() + 1))
    throw std::length_error("model input has shape " + shape_text(got) + ", expected [N, " +
                            shape_text(im.input_shape).substr(1));
  const std::size_t N = got[0], in_size = shape_size(im.input_shape);
  const std::vector<std::size_t> out_shape = im.output_shape();
  const std::size_t out_size = shape_size(out_shape);
  integer_run_result r;
  std::vector<std::size_t> ls{N};
  ls.insert(ls.end(), out_shape.begin(), out_shape.end());
  r.logits = xt::xarray<float>::from_shape(ls);
  const std::size_t nrec = record ? recorded_ops(im) : 0;
  for (std::size_t i = 0; i < nrec; ++i) {
    std::vector<std::size_t> s{N};
    s.insert(s.end(), im.ops[i].out_shape.begin(), im.ops[i].out_shape.end());
    r.activations.push_back(xt::xarray<std::uint8_t>::from_shape(s));
    r.activation_ops.push_back(i);
  }
  const quant::qparams in_q = quant::qparams::per_tensor(quant::grid::int_unsigned(im.input.bits),
                                                         static_cast<float>(im.input.scale), im.input.zero_point);
  batch = std::max<std::size_t>(1, batch);
  const std::size_t chunks = (N + batch - 1) / batch;
  auto chunk = [&](std::size_t t) {
    const std::size_t b = t * batch, n = std::min(batch, N - b);
    integer_detail::chunk_state st;
    auto xin = xt::adapt(x.data() + b * in_size, n * in_size, xt::no_ownership(), std::array<std::size_t, 1>{n * in_size});
    xt::xtensor<std::uint8_t, 1> q = quant::quantize<std::uint8_t>(xin, in_q);
    std::function<void(std::size_t, const std::uint8_t*)> rec;
    if (record)
      rec = [&](std::size_t oi, const std::uint8_t* data) {
        if (oi >= nrec) return;
        const std::size_t sz = shape_size(im.ops[oi].out_shape);
        std::copy(data, data + n * sz, r.activations[oi].data() + b * sz);
      };
    if (mode == integer_mode::integer) {
      st.q.assign(q.begin(), q.end());
      integer_detail::run_chunk_integer(im, n, st, r.logits.data() + b * out_size, rec);
    } else {
      st.d.assign(q.begin(), q.end());
      integer_detail::run_chunk_exact(im, n, st, r.logits.data() + b * out_size, rec);
    }
  };
  // Chunks in parallel (the kernels then run serially inside each; with one chunk they are
  // threaded themselves). Results do not depend on the thread count either way.
  quant::parallel_for(chunks, std::size_t(1) << 20, chunk);
  return r;
}

nlohmann::ordered_json grid_json(const activation_grid& g) {
  nlohmann::ordered_json j;
  j["scale"] = g.scale;
  j["zero_point"] = g.zero_point;
  j["qmin"] = g.qmin;
  j["qmax"] = g.qmax;
  j["bits"] = g.bits;
  return j;
}

std::vector<std::size_t> json_shape(const nlohmann::json& v, const std::string& what) {
  std::vector<std::size_t> s = json_ints<std::size_t>(v, what, 1, max_json_size);
  if (s.empty() || s.size() > 4) throw std::invalid_argument(what + " must have 1 to 4 entries, got " + v.dump());
  return s;
}

activation_grid grid_from_json(const nlohmann::json& j) {
  activation_grid g;
  g.scale = j.at("scale").get<double>();
  g.zero_point = json_int<std::int32_t>(j.at("zero_point"), "zero_point", json_int32_min, json_int32_max);
  g.qmin = json_int<std::int32_t>(j.at("qmin"), "qmin", json_int32_min, json_int32_max);
  g.qmax = json_int<std::int32_t>(j.at("qmax"), "qmax", json_int32_min, json_int32_max);
  g.bits = json_int<int>(j.at("bits"), "bits", 0, 64);
  if (!(std::isfinite(g.scale) && g.scale > 0) || g.bits < 2 || g.bits > 8 || g.qmin != 0 ||
      g.qmax != (1 << g.bits) - 1 || g.zero_point < g.qmin || g.zero_point > g.qmax)
    throw std::invalid_argument("activation grid " + j.dump() + " is invalid (unsigned, 2..8 bits, scale > 0)");
  return g;
}

void window_from_json(const nlohmann::json& j, integer_op& op, const std::string& context) {
  if (!j.contains("kernel")) return;
  auto pair = [&](const char* key) {
    const auto v = json_ints<std::size_t>(j.at(key), context + key, 0, max_json_window);
    if (v.size() != 2) throw std::invalid_argument(context + key + " must be [h, w], got " + j.at(key).dump());
    return v;
  };
  const auto k = pair("kernel"), s = pair("stride"), p = pair("padding");
  op.kernel_h = k[0];
  op.kernel_w = k[1];
  op.stride_h = s[0];
  op.stride_w = s[1];
  op.pad_h = p[0];
  op.pad_w = p[1];
  if (!op.kernel_h || !op.kernel_w || !op.stride_h || !op.stride_w)
    throw std::invalid_argument(context + "kernel and stride must be >= 1");
}

std::vector<std::size_t> op_output_shape(const integer_op& op) {
  const std::vector<std::size_t>& in = op.in_shape;
  const std::size_t out = op.weights.shape()[0], K = op.weights.shape()[1];
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument(std::string(to_string(op.kind)) + " '" + op.name + "': " + what);
  };
  auto window = [&](std::size_t channels) -> std::vector<std::size_t> {
    need(in.size() == 3, "needs a [C, H, W] input, got " + shape_text(in));
    need(op.kernel_h >= 1 && op.kernel_w >= 1 && op.stride_h >= 1 && op.stride_w >= 1, "kernel and stride must be >= 1");
    need(in[1] + 2 * op.pad_h >= op.kernel_h && in[2] + 2 * op.pad_w >= op.kernel_w,
         "the kernel does not fit the padded " + std::to_string(in[1]) + "x" + std::to_string(in[2]) + " input");
    return {channels, (in[1] + 2 * op.pad_h - op.kernel_h) / op.stride_h + 1,
            (in[2] + 2 * op.pad_w - op.kernel_w) / op.stride_w + 1};
  };
  switch (op.kind) {
    case integer_op_kind::linear:
      need(in.size() == 1 && in[0] == K, "weights [" + std::to_string(out) + ", " + std::to_string(K) +
                                             "] do not fit the input " + shape_text(in));
      return {out};
    case integer_op_kind::conv2d:
      need(in.size() == 3 && K == in[0] * op.kernel_h * op.kernel_w,
           "weights [" + std::to_string(out) + ", " + std::to_string(K) + "] are not [out, C*kh*kw] for the input " +
               shape_text(in));
      return window(out);
    case integer_op_kind::depthwise_conv2d:
      need(in.size() == 3 && out == in[0] && K == op.kernel_h * op.kernel_w,
           "weights [" + std::to_string(out) + ", " + std::to_string(K) + "] are not [C, kh*kw] for the input " +
               shape_text(in));
      return window(out);
    case integer_op_kind::maxpool2d:
    case integer_op_kind::avgpool2d: return window(in.empty() ? 0 : in[0]);
    case integer_op_kind::global_avgpool:
      need(in.size() == 3, "needs a [C, H, W] input, got " + shape_text(in));
      return {in[0], 1, 1};
    case integer_op_kind::flatten: return {shape_size(in)};
    case integer_op_kind::clamp: return in;
  }
  need(false, "unknown op");
  return {};
}

nlohmann::ordered_json integer_model_json(const integer_model& im) {
  nlohmann::ordered_json j;
  j["format"] = "quant-integer-model";
  j["version"] = 1;
  j["requantization"] = quant::to_string(im.rounding);
  j["weight_format"] = im.format == weight_format::int8 ? "int8" : "int4";
  j["input_shape"] = im.input_shape;
  j["input"] = grid_json(im.input);
  j["output_shape"] = im.output_shape();
  nlohmann::ordered_json ops = nlohmann::ordered_json::array();
  for (const auto& op : im.ops) {
    nlohmann::ordered_json o;
    o["type"] = to_string(op.kind);
    o["name"] = op.name;
    o["input_shape"] = op.in_shape;
    o["output_shape"] = op.out_shape;
    if (op.kind != integer_op_kind::linear && op.kind != integer_op_kind::flatten && op.kind != integer_op_kind::clamp &&
        op.kind != integer_op_kind::global_avgpool) {
      o["kernel"] = {op.kernel_h, op.kernel_w};
      o["stride"] = {op.stride_h, op.stride_w};
      o["padding"] = {op.pad_h, op.pad_w};
    }
    if (is_weight_op(op.kind)) {
      o["weights"] = weights_file(op);
      o["weights_shape"] = {op.weights.shape()[0], op.weights.shape()[1]};
      o["weight_grid_bits"] = op.weight_grid_bits;
      o["weight_scales"] = op.weight_scales;
      o["bias"] = op.bias;
      o["input"] = grid_json(op.input);
      if (op.logits) {
        o["output"] = "logits";
        o["output_scales"] = op.output_scales;
      } else {
        o["output"] = grid_json(op.output);
        o["activation"] = activation_name(op.activation);
        o["multipliers"] = op.multipliers;
        std::vector<std::int32_t> q31, shift;
        for (const auto& f : op.rq.fixed) {
          q31.push_back(f.q31);
          shift.push_back(f.shift);
        }
        o["fixed_point_multipliers"] = q31;
        o["shifts"] = shift;
        o["float_multipliers"] = op.rq.scale;
        o["clamp"] = {op.rq.lo, op.rq.hi};
        if (!op.acc_ops.empty()) {
          o["accumulator_shape"] = op.acc_shape;
          o["accumulator_divisor"] = op.acc_divisor;
          nlohmann::ordered_json seg = nlohmann::ordered_json::array();
          for (const auto& a : op.acc_ops) {
            nlohmann::ordered_json sj;
            sj["type"] = a.kind == integer_op_kind::clamp ? "relu" : to_string(a.kind);
            sj["name"] = a.name;
            sj["input_shape"] = a.in_shape;
            sj["output_shape"] = a.out_shape;
            if (a.kind == integer_op_kind::maxpool2d || a.kind == integer_op_kind::avgpool2d) {
              sj["kernel"] = {a.kernel_h, a.kernel_w};
              sj["stride"] = {a.stride_h, a.stride_w};
              sj["padding"] = {a.pad_h, a.pad_w};
            }
            seg.push_back(sj);
          }
          o["accumulator_ops"] = seg;
        }
      }
    } else if (op.kind == integer_op_kind::clamp) {
      o["zero_point"] = op.zero_point;
      o["clamp"] = {op.lo, op.hi};
    } else if (op.kind != integer_op_kind::flatten) {
      o["zero_point"] = op.zero_point;
      if (op.kind != integer_op_kind::maxpool2d) o["rounding"] = "half_away_from_zero";
    }
    ops.push_back(o);
  }
  j["ops"] = ops;
  return j;
}

void save_integer_model(const integer_model& im, const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path target(dir);
  const fs::path tmp = target.string() + ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    detail::write_text_file((tmp / "engine.json").string(), integer_model_json(im).dump(2) + "\n");
    for (const auto& op : im.ops) {
      if (!is_weight_op(op.kind)) continue;
      const std::string path = (tmp / weights_file(op)).string();
      if (im.format == weight_format::int8) {
        detail::write_npy_file(path, op.weights);
      } else {
        const std::vector<std::uint8_t> b =
            quant::pack_int4(op.weights.data(), op.weights.size(), quant::grid::int_signed(4));
        detail::write_npy_file(path, xt::adapt(b, std::vector<std::size_t>{b.size()}));
      }
    }
    // replace an existing engine directory (never anything else)
    if (fs::exists(target)) {
      if (!fs::is_directory(target) || (!fs::is_empty(target) && !fs::exists(target / "engine.json")))
        throw bundle_error(target.string(), "", "exists and is not an engine directory (no engine.json): refusing to replace it");
      const fs::path old = target.string() + ".old-" + std::to_string(::getpid());
      fs::rename(target, old);
      fs::rename(tmp, target);
      fs::remove_all(old);
    } else {
      fs::rename(tmp, target);
    }
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

integer_model load_integer_model(const std::string& dir) {
  const std::string file = dir + "/engine.json";
  std::ifstream in(file);
  if (!in) throw bundle_error(file, "", "cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);  // the whole file: trailing bytes after the document are an error
  } catch (const std::exception& e) {
    throw bundle_error(file, "", std::string("not valid JSON: ") + e.what());
  }
  integer_model im;
  std::string field;
  try {
    field = "format";
    if (j.at("format").get<std::string>() != "quant-integer-model" || !j.at("version").is_number_integer() ||
        j.at("version").get<std::int64_t>() != 1)
      throw std::invalid_argument("expected format quant-integer-model, version 1");
    field = "requantization";
    const std::string r = j.at("requantization").get<std::string>();
    if (r != "fixed_point" && r != "float_scale") throw std::invalid_argument("must be fixed_point or float_scale");
    im.rounding = r == "fixed_point" ? quant::requantization::fixed_point : quant::requantization::float_scale;
    field = "weight_format";
    const std::string wf = j.at("weight_format").get<std::string>();
    if (wf != "int8" && wf != "int4") throw std::invalid_argument("must be int8 or int4");
    im.format = wf == "int8" ? weight_format::int8 : weight_format::int4;
    field = "input_shape";
    im.input_shape = json_shape(j.at("input_shape"), "input_shape");
    field = "input";
    im.input = grid_from_json(j.at("input"));
    // the runner quantizes the input with it: a scale that float cannot hold is refused here
    (void)quant::qparams::per_tensor(quant::grid::int_unsigned(im.input.bits), static_cast<float>(im.input.scale),
                                     im.input.zero_point);
    const auto& ops = j.at("ops");
    if (!ops.is_array() || ops.empty()) throw std::invalid_argument("ops must be a non-empty array");
    std::vector<std::size_t> shape = im.input_shape;
    for (std::size_t i = 0; i < ops.size(); ++i) {
      field = "ops[" + std::to_string(i) + "]";
      const auto& o = ops[i];
      integer_op op;
      const std::string t = o.at("type").get<std::string>();
      bool known = false;
      for (auto k : {integer_op_kind::linear, integer_op_kind::conv2d, integer_op_kind::depthwise_conv2d,
                     integer_op_kind::maxpool2d, integer_op_kind::avgpool2d, integer_op_kind::global_avgpool,
                     integer_op_kind::flatten, integer_op_kind::clamp})
        if (t == to_string(k)) {
          op.kind = k;
          known = true;
        }
      if (!known) throw std::invalid_argument("unknown type '" + t + "'");
      op.name = o.at("name").get<std::string>();
      op.in_shape = json_shape(o.at("input_shape"), "input_shape");
      op.out_shape = json_shape(o.at("output_shape"), "output_shape");
      if (op.in_shape != shape) throw std::invalid_argument("input_shape does not chain with the previous op");
      if (op.kind == integer_op_kind::avgpool2d || op.kind == integer_op_kind::global_avgpool)
        throw std::invalid_argument("average pools appear only in a weight op's accumulator_ops");
      shape = op.out_shape;
      window_from_json(o, op, "");
      if (is_weight_op(op.kind)) {
        const auto ws = json_ints<std::size_t>(o.at("weights_shape"), "weights_shape", 1, max_json_size);
        if (ws.size() != 2) throw std::invalid_argument("weights_shape must be [out, K]");
        const std::string wname = o.at("weights").get<std::string>();
        if (wname.empty() || wname.find('/') != std::string::npos || wname == "." || wname == "..")
          throw std::invalid_argument("weights: '" + wname + "' must be a plain file name inside the engine directory");
        const std::string wpath = dir + "/" + wname;
        op.weight_grid_bits = json_int<int>(o.at("weight_grid_bits"), "weight_grid_bits", 2, 8);
        try {
          // The file's header against its size and the declared shape before anything is allocated.
          const npy_info info = read_npy_info(wpath);
          const bool int8 = im.format == weight_format::int8;
          if (info.dtype != (int8 ? npy_dtype::i1 : npy_dtype::u1))
            throw std::invalid_argument(std::string("weights: dtype ") + npy_descr(info.dtype) + ", expected " +
                                        (int8 ? "|i1 (int8)" : "|u1 (packed int4)"));
          if (info.size != (int8 ? ws[0] * ws[1] : (ws[0] * ws[1] + 1) / 2))
            throw std::invalid_argument(int8 ? "weights: wrong element count" : "weights: wrong byte count");
          op.weights = xt::xtensor<std::int8_t, 2>::from_shape({ws[0], ws[1]});
          if (int8) {
            const auto a = xt::load_npy<std::int8_t>(wpath);
            if (a.size() != op.weights.size()) throw std::invalid_argument("weights: wrong element count");
            std::copy(a.begin(), a.end(), op.weights.begin());
          } else {
            const auto a = xt::load_npy<std::uint8_t>(wpath);
            if (a.size() != (op.weights.size() + 1) / 2) throw std::invalid_argument("weights: wrong byte count");
            const std::vector<std::uint8_t> bytes(a.begin(), a.end());
            const auto v = quant::unpack_int4(bytes, op.weights.size(), true);
            std::copy(v.begin(), v.end(), op.weights.begin());
          }
        } catch (const std::invalid_argument&) {
          throw;
        } catch (const std::exception& e) {
          throw bundle_error(wpath, field + ".weights", e.what());
        }
        op.weight_scales = o.at("weight_scales").get<std::vector<float>>();
        op.bias = json_ints<std::int32_t>(o.at("bias"), "bias", json_int32_min, json_int32_max);
        op.input = grid_from_json(o.at("input"));
        if (op.weight_scales.size() != ws[0] || op.bias.size() != ws[0])
          throw std::invalid_argument("weight_scales and bias need one entry per output channel");
        if (o.at("output").is_string()) {
          op.logits = true;
          op.output_scales = o.at("output_scales").get<std::vector<double>>();
          if (op.output_scales.size() != ws[0]) throw std::invalid_argument("output_scales: one per output channel");
        } else {
          op.output = grid_from_json(o.at("output"));
          const std::string a = o.at("activation").get<std::string>();
          op.activation = a == "relu" ? quant::fused_activation::relu
                          : a == "relu6" ? quant::fused_activation::relu6
                                         : quant::fused_activation::none;
          if (o.contains("accumulator_ops")) {
            op.acc_shape = json_shape(o.at("accumulator_shape"), "accumulator_shape");
            if (op.acc_shape != op_output_shape(op))
              throw std::invalid_argument("accumulator_shape is not the shape the op computes");
            std::vector<std::size_t> sh = op.acc_shape;
            std::int64_t divisor = 1;
            for (const auto& sj : o.at("accumulator_ops")) {
              integer_op a;
              const std::string st = sj.at("type").get<std::string>();
              a.kind = st == "relu"             ? integer_op_kind::clamp
                       : st == "maxpool2d"      ? integer_op_kind::maxpool2d
                       : st == "avgpool2d"      ? integer_op_kind::avgpool2d
                       : st == "global_avgpool" ? integer_op_kind::global_avgpool
                       : st == "flatten"        ? integer_op_kind::flatten
                                                : throw std::invalid_argument("accumulator_ops: unknown type '" + st + "'");
              a.name = sj.at("name").get<std::string>();
              a.in_shape = json_shape(sj.at("input_shape"), "accumulator_ops: input_shape");
              a.out_shape = json_shape(sj.at("output_shape"), "accumulator_ops: output_shape");
              if (a.in_shape != sh) throw std::invalid_argument("accumulator_ops: shapes do not chain");
              sh = a.out_shape;
              window_from_json(sj, a, "accumulator_ops: ");
              if (a.out_shape != op_output_shape(a))
                throw std::invalid_argument("accumulator_ops: output_shape is not the shape the op computes");
              std::size_t area = 1;
              if (a.kind == integer_op_kind::avgpool2d) area = a.kernel_h * a.kernel_w;
              if (a.kind == integer_op_kind::global_avgpool) area = a.in_shape.at(1) * a.in_shape.at(2);
              // beyond 2^31 the accumulator bound fails anyway; checked before the product overflows
              if (area > (std::size_t(1) << 31) / static_cast<std::size_t>(divisor))
                throw std::invalid_argument("accumulator_ops: the averaging areas exceed 2^31");
              divisor *= static_cast<std::int64_t>(area);
              op.acc_ops.push_back(std::move(a));
            }
            if (sh != op.out_shape) throw std::invalid_argument("accumulator_ops do not end at output_shape");
            if (divisor != json_int<std::int64_t>(o.at("accumulator_divisor"), "accumulator_divisor", 1, std::int64_t(1) << 31))
              throw std::invalid_argument("accumulator_divisor is not the product of the averaging areas");
            op.acc_divisor = divisor;
          }
          // the fixed-point and float multipliers are derived from M again (and must agree)
          const auto stored = o.at("multipliers").get<std::vector<double>>();
          integer_detail::finish_weight_op(op, im.rounding);
          if (stored != op.multipliers)
            throw std::invalid_argument("multipliers differ from input.scale * weight_scales / output.scale");
          const auto clamp = json_ints<std::int32_t>(o.at("clamp"), "clamp", json_int32_min, json_int32_max);
          if (clamp.size() != 2 || clamp[0] != op.rq.lo || clamp[1] != op.rq.hi)
            throw std::invalid_argument("clamp does not match the activation");
        }
        integer_detail::check_accumulator_bound(op);
        integer_detail::pack(op, im.format);
      } else if (op.kind != integer_op_kind::flatten) {
        op.zero_point = json_int<std::int32_t>(o.at("zero_point"), "zero_point", 0, 255);
        if (op.kind == integer_op_kind::clamp) {
          const auto c = json_ints<std::int32_t>(o.at("clamp"), "clamp", 0, 255);
          if (c.size() != 2 || c[0] > c[1]) throw std::invalid_argument("clamp must be [lo, hi] with 0 <= lo <= hi <= 255");
          op.lo = c[0];
          op.hi = c[1];
        }
      }
      if (op.acc_ops.empty() && op.out_shape != op_output_shape(op))
        throw std::invalid_argument("output_shape " + shape_text(op.out_shape) + " is not the shape the op computes, " +
                                    shape_text(op_output_shape(op)));
      im.ops.push_back(std::move(op));
    }
    // The runner stops at the op that outputs the logits: it must exist, and only flatten may follow it.
    field = "ops";
    std::size_t logits_at = 0;
    while (logits_at < im.ops.size() && !im.ops[logits_at].logits) ++logits_at;
    if (logits_at == im.ops.size()) throw std::invalid_argument("no op outputs \"logits\" (the last weight op must)");
    for (std::size_t i = logits_at + 1; i < im.ops.size(); ++i)
      if (im.ops[i].kind != integer_op_kind::flatten)
        throw std::invalid_argument("only flatten may follow the op that outputs the logits (ops[" + std::to_string(i) + "])");
  } catch (const bundle_error&) {
    throw;
  } catch (const std::exception& e) {
    throw bundle_error(file, field, e.what());
  }
  return im;
}

}  // namespace examples
