// quant/packed_weights.hpp — int8 / int4 weights of a linear or convolution layer,
// rearranged once into the layout the integer GEMM kernels read (integer_gemm.hpp).
//
// Input: the symmetric integer weights Wq [out, K] row-major (one row per output channel,
// K = in_features, or C*KH*KW for a convolution in im2col order), either as int8 values or
// as 4-bit values. Output: a value type holding
//   * the packed bytes (layout below),
//   * per-channel row sums  sum_k Wq[o, k]  (the zero-point term of the GEMM:
//     sum_k Wq (x - z) = sum_k Wq x - z sum_k Wq, Jacob et al. 2018, eq. 7-8),
//   * per-channel absolute row sums  sum_k |Wq[o, k]|  (the bound that proves, before a
//     GEMM runs, that no accumulator can leave int32),
//   * out, K and the weight width (8 or 4 bits).
// Packing is exact and reversible: unpack_weights(pack_weights(w)) == w.
//
// Kernel layout (internal to quant: engines should keep the row-major source for export).
// Channels are grouped in blocks of 16 (the last block padded with zero rows); K is padded
// with zeros to a multiple of 2 (8-bit) or 4 (4-bit); each block is stored step by step:
//   8-bit: 32 bytes per pair of taps p: byte 16h + 2i + e = Wq[16b + 8h + i, 2p + e]
//          (h, e in {0,1}, i < 8): sign-extending 16 bytes to int16 gives 8 channels x 2
//          taps in the order a pairwise int16 multiply-add (vpmaddwd) consumes.
//   4-bit: 32 bytes per quad of taps q: byte 4i + e holds Wq[16b + i, 4q + e] + 8 in its LOW
//          nibble and Wq[16b + 8 + i, 4q + e] + 8 in its HIGH nibble (e < 4, i < 8; offset
//          binary: nibble 8 is 0): masking a nibble gives w + 8 in [0, 15] for 8 channels x
//          4 taps in the order of vpmaddubsw + vpmaddwd (the kernels remove the + 8).
//
// The 4-bit source format accepted by pack_weights_int4 is quant's export order
// (export.hpp): element 2j of the row-major [out, K] tensor in the low nibble of byte j.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "error.hpp"
#include "export.hpp"

namespace quant {

struct packed_weights {
  static constexpr std::size_t block = 16;  // channels per block

  std::size_t out = 0;  // output channels
  std::size_t k = 0;    // reduction length
  int bits = 8;         // 8 or 4
  std::vector<std::uint8_t> bytes;        // kernel layout (header comment)
  std::vector<std::int64_t> row_sums;     // [out]: sum_k Wq[o, k]
  std::vector<std::int64_t> abs_row_sums; // [out]: sum_k |Wq[o, k]|

  // K rounded up to the kernel's step: 2 taps (8-bit) or 4 taps (4-bit).
  std::size_t k_padded() const noexcept {
    const std::size_t step = bits == 8 ? 2 : 4;
    return (k + step - 1) / step * step;
  }
  std::size_t blocks() const noexcept { return (out + block - 1) / block; }
  // Bytes of one block of 16 channels.
  std::size_t block_bytes() const noexcept { return block * k_padded() * static_cast<std::size_t>(bits) / 8; }
  // Largest |Wq| the width allows: 128 (int8) or 8 (int4).
  std::int64_t max_abs_weight() const noexcept { return bits == 8 ? 128 : 8; }
};

namespace detail {

inline void check_weight_shape(std::size_t out, std::size_t k, const char* fn) {
  if (out == 0) fail<length_error>(fn, "out", out, "must be >= 1");
  if (k == 0) fail<length_error>(fn, "k", k, "must be >= 1");
}

// Byte offset and nibble (0 low, 1 high; -1 for a whole byte) of Wq[o, j] in the layout.
struct packed_position {
  std::size_t byte;
  int nibble;
};
inline packed_position packed_position_of(const packed_weights& p, std::size_t o, std::size_t j) noexcept {
  const std::size_t b = o / packed_weights::block, c = o % packed_weights::block;
  if (p.bits == 8) return {b * p.block_bytes() + (j / 2) * 32 + 16 * (c / 8) + 2 * (c % 8) + j % 2, -1};
  return {b * p.block_bytes() + (j / 4) * 32 + 4 * (c % 8) + j % 4, static_cast<int>(c / 8)};
}

inline packed_weights pack_weights_from_values(const std::int8_t* w, std::size_t out, std::size_t k, int bits,
                                               const char* fn) {
  check_weight_shape(out, k, fn);
  packed_weights p;
  p.out = out;
  p.k = k;
  p.bits = bits;
  p.bytes.assign(p.blocks() * p.block_bytes(), bits == 8 ? 0 : 0x88);  // padding holds 0
  p.row_sums.assign(out, 0);
  p.abs_row_sums.assign(out, 0);
  const int lo = bits == 8 ? -128 : -8, hi = bits == 8 ? 127 : 7;
  for (std::size_t o = 0; o < out; ++o) {
    std::int64_t s = 0, a = 0;
    for (std::size_t j = 0; j < k; ++j) {
      const int v = w[o * k + j];
      if (v < lo || v > hi)
        fail<invalid_argument>(fn, ("w[" + std::to_string(o) + ", " + std::to_string(j) + "]").c_str(), v,
                               "must lie in [" + std::to_string(lo) + ", " + std::to_string(hi) + "] for " +
                                   std::to_string(bits) + "-bit weights");
      s += v;
      a += v < 0 ? -v : v;
      const packed_position pos = packed_position_of(p, o, j);
      if (pos.nibble < 0)
        p.bytes[pos.byte] = static_cast<std::uint8_t>(v);
      else  // offset binary: v + 8 in [0, 15]
        p.bytes[pos.byte] = static_cast<std::uint8_t>((p.bytes[pos.byte] & (0xF0 >> (4 * pos.nibble))) |
                                                      ((v + 8) << (4 * pos.nibble)));
    }
    p.row_sums[o] = s;
    p.abs_row_sums[o] = a;
  }
  return p;
}

}  // namespace detail

// Packs int8 weights Wq [out, K] (row-major, any int8 value) for the integer GEMM.
// Throws quant::length_error for out == 0 or K == 0.
inline packed_weights pack_weights(const std::int8_t* w, std::size_t out, std::size_t k) {
  return detail::pack_weights_from_values(w, out, k, 8, "pack_weights");
}
inline packed_weights pack_weights(const xt::xtensor<std::int8_t, 2>& w) {
  return pack_weights(w.data(), w.shape()[0], w.shape()[1]);
}

// Packs 4-bit weights given as int8 values in [-8, 7] (quant::invalid_argument otherwise).
inline packed_weights pack_weights_int4(const std::int8_t* w, std::size_t out, std::size_t k) {
  return detail::pack_weights_from_values(w, out, k, 4, "pack_weights_int4");
}
inline packed_weights pack_weights_int4(const xt::xtensor<std::int8_t, 2>& w) {
  return pack_weights_int4(w.data(), w.shape()[0], w.shape()[1]);
}

// Packs 4-bit weights in quant's export format (export.hpp): `nibbles` holds the out*K
// signed values of the row-major [out, K] tensor two per byte, element 2j in the low
// nibble of byte j. Throws quant::length_error when nibbles.size() != (out*K + 1) / 2.
inline packed_weights pack_weights_int4(const std::vector<std::uint8_t>& nibbles, std::size_t out, std::size_t k) {
  const char* fn = "pack_weights_int4";
  detail::check_weight_shape(out, k, fn);
  if (nibbles.size() != (out * k + 1) / 2)
    detail::fail<length_error>(fn, "nibbles.size()", nibbles.size(),
                               "must be (out * k + 1) / 2 = " + std::to_string((out * k + 1) / 2));
  const std::vector<std::int8_t> v = unpack_int4(nibbles.data(), out * k, true);
  return detail::pack_weights_from_values(v.data(), out, k, 4, fn);
}

// An exported packed_int4 tensor of shape [out, K] on a signed grid.
inline packed_weights pack_weights_int4(const packed_int4& t) {
  const char* fn = "pack_weights_int4";
  if (t.shape.size() != 2)
    detail::fail<length_error>(fn, "t.shape", detail::shape_string(t.shape), "must be [out, K]");
  if (!t.params.grid().is_signed)
    detail::fail<invalid_argument>(fn, "t.params.grid().is_signed", "false",
                                   "integer GEMM weights are symmetric (signed grid)");
  return pack_weights_int4(t.bytes, t.shape[0], t.shape[1]);
}

// The weights back as int8 values [out, K] (the inverse of packing).
inline xt::xtensor<std::int8_t, 2> unpack_weights(const packed_weights& p) {
  xt::xtensor<std::int8_t, 2> w = xt::xtensor<std::int8_t, 2>::from_shape({p.out, p.k});
  for (std::size_t o = 0; o < p.out; ++o)
    for (std::size_t j = 0; j < p.k; ++j) {
      const detail::packed_position pos = detail::packed_position_of(p, o, j);
      const std::uint8_t byte = p.bytes[pos.byte];
      int v;
      if (pos.nibble < 0) {
        v = static_cast<std::int8_t>(byte);
      } else {
        v = ((byte >> (4 * pos.nibble)) & 0xF) - 8;
      }
      w(o, j) = static_cast<std::int8_t>(v);
    }
  return w;
}

}  // namespace quant
