// quant/export.hpp — integer export: the grid values q of a tensor together with the
// scales and zero points that give them meaning (x_hat = (q - z) * s, docs/numerics.md),
// as an inference engine consumes them.
//
//   quantized_tensor<Int>  int8 / uint8 (or int16 / int32) values + qparams
//   packed_int4            4-bit values two per byte + qparams + shape
//
// int4 packing (the layout of this library; state it when handing data to an engine):
//   * element 2k goes to the LOW nibble (bits 0-3) of byte k, element 2k+1 to the HIGH
//     nibble (bits 4-7) — little-endian nibble order, as in GGML's Q4 and ONNX INT4;
//   * signed grids store the value in 4-bit two's complement (-8 -> 0x8, -1 -> 0xF);
//     unsigned grids store it as is (0..15);
//   * an odd element count leaves the high nibble of the last byte 0.
// Element order is the row-major flat order of the tensor. Packing requires a grid of at
// most 4 bits and values on it; unpack(pack(q)) == q exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>

#include "detail/contiguous.hpp"
#include "error.hpp"
#include "qparams.hpp"
#include "uniform.hpp"

namespace quant {

// Integer grid values with their parameters.
template <class Int>
struct quantized_tensor {
  xt::xarray<Int, xt::layout_type::row_major> values;  // q, row-major
  qparams params;
};

// 4-bit grid values, two per byte (see the header comment for the layout).
struct packed_int4 {
  std::vector<std::uint8_t> bytes;  // (size() + 1) / 2
  std::vector<std::size_t> shape;
  qparams params;
  std::size_t size() const noexcept {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

namespace detail {
inline void check_int4_grid(const grid& g, const char* function) {
  g.validate(function);
  if (g.bits > 4) fail<invalid_argument>(function, "bits", g.bits, "int4 packing needs a grid of at most 4 bits");
}
}  // namespace detail

// Packs n grid values of `g` (at most 4 bits) into (n + 1) / 2 bytes. Throws
// quant::invalid_argument for a wider grid or a value off the grid.
inline std::vector<std::uint8_t> pack_int4(const std::int8_t* q, std::size_t n, grid g) {
  const char* fn = "pack_int4";
  detail::check_int4_grid(g, fn);
  std::vector<std::uint8_t> out((n + 1) / 2, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const int v = q[i];
    if (v < g.qmin() || v > g.qmax())
      detail::fail<invalid_argument>(fn, ("q[" + std::to_string(i) + "]").c_str(), v,
                                     "must lie on the grid [" + std::to_string(g.qmin()) + ", " +
                                         std::to_string(g.qmax()) + "]");
    const std::uint8_t nib = static_cast<std::uint8_t>(v & 0xF);  // two's complement for negatives
    out[i / 2] |= static_cast<std::uint8_t>((i % 2) ? nib << 4 : nib);
  }
  return out;
}

inline std::vector<std::uint8_t> pack_int4(const std::vector<std::int8_t>& q, grid g) {
  return pack_int4(q.data(), q.size(), g);
}

// Unpacks n values from `bytes` ((n + 1) / 2 of them): signed grids sign-extend the nibble.
inline std::vector<std::int8_t> unpack_int4(const std::uint8_t* bytes, std::size_t n, bool is_signed) {
  std::vector<std::int8_t> q(n);
  for (std::size_t i = 0; i < n; ++i) {
    const int nib = (i % 2) ? (bytes[i / 2] >> 4) : (bytes[i / 2] & 0xF);
    q[i] = static_cast<std::int8_t>(is_signed && nib >= 8 ? nib - 16 : nib);
  }
  return q;
}

inline std::vector<std::int8_t> unpack_int4(const std::vector<std::uint8_t>& bytes, std::size_t n, bool is_signed) {
  if (bytes.size() != (n + 1) / 2)
    detail::fail<length_error>("unpack_int4", "bytes.size()", bytes.size(),
                               "must be (n + 1) / 2 = " + std::to_string((n + 1) / 2) + " for n = " + std::to_string(n));
  return unpack_int4(bytes.data(), n, is_signed);
}

// The grid values of a packed tensor, shaped.
inline xt::xarray<std::int8_t> unpack(const packed_int4& t) {
  const std::size_t n = t.size();
  const auto q = unpack_int4(t.bytes, n, t.params.grid().is_signed);
  xt::xarray<std::int8_t> out = xt::xarray<std::int8_t>::from_shape(t.shape);
  std::copy(q.begin(), q.end(), out.begin());
  return out;
}

// x_hat = (q - z) * s of an exported tensor.
template <class Int>
xt::xarray<float> dequantize(const quantized_tensor<Int>& t) {
  return eager::dequantize(t.values, t.params);
}
inline xt::xarray<float> dequantize(const packed_int4& t) { return eager::dequantize(unpack(t), t.params); }

namespace eager {

// Quantizes x with p into Int (int8_t, uint8_t, int16_t, int32_t: must hold the grid) and
// keeps p beside the values. Throws as eager::quantize (NaN input, grid too wide for Int).
template <class Int, class Round = round_half_to_even, class E>
quantized_tensor<Int> export_int(const xt::xexpression<E>& x, const qparams& p, const Round& round = {}) {
  quantized_tensor<Int> t{xt::xarray<Int, xt::layout_type::row_major>(quantize<Int, Round>(x, p, round)), p};
  return t;
}

// Quantizes x with p (a grid of at most 4 bits) and packs the values two per byte.
template <class Round = round_half_to_even, class E>
packed_int4 export_int4(const xt::xexpression<E>& x, const qparams& p, const Round& round = {}) {
  detail::check_int4_grid(p.grid(), "export_int4");
  const xt::xarray<std::int8_t, xt::layout_type::row_major> q = quantize<std::int8_t, Round>(x, p, round);
  packed_int4 t{pack_int4(q.data(), q.size(), p.grid()), std::vector<std::size_t>(q.shape().begin(), q.shape().end()),
                p};
  return t;
}

}  // namespace eager
}  // namespace quant
