// quant/reference/integer_gemm.hpp — quant::ref: the integer GEMM and the integer im2col
// written straight from their formulas, in int64, from the unpacked row-major weights.
// No packing, no row sums, no SIMD, no threads: the yardstick integer_gemm.hpp and
// integer_im2col.hpp are tested against.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../im2col.hpp"

namespace quant {
namespace ref {

// acc[n, o] = sum_k w[o, k] (x[n, k] - z_x) + bias[o], exactly (int64). x [N, K] and
// w [out, K] row-major; bias has out values or is null. Result [N, out] row-major.
template <class Act>
std::vector<std::int64_t> integer_gemm_accumulators(const Act* x, std::size_t n, std::size_t k, int x_zero_point,
                                                    const std::int8_t* w, std::size_t out, const std::int32_t* bias) {
  std::vector<std::int64_t> acc(n * out);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t o = 0; o < out; ++o) {
      std::int64_t s = bias ? bias[o] : 0;
      for (std::size_t j = 0; j < k; ++j)
        s += std::int64_t(w[o * k + j]) * (std::int64_t(x[i * k + j]) - std::int64_t(x_zero_point));
      acc[i * out + o] = s;
    }
  return acc;
}

// Integer im2col of one batch x [N, C, H, W] (layout of im2col.hpp), padding with `pad`
// (the activation zero point, whose real value is 0). Result [N*OH*OW, C*KH*KW].
template <class Int>
std::vector<Int> im2col(const Int* x, std::size_t n, const conv2d_shape& g, Int pad) {
  const std::size_t oh = g.out_h(), ow = g.out_w(), kk = g.patch_size();
  std::vector<Int> cols(n * oh * ow * kk);
  for (std::size_t b = 0; b < n; ++b)
    for (std::size_t oy = 0; oy < oh; ++oy)
      for (std::size_t ox = 0; ox < ow; ++ox)
        for (std::size_t c = 0; c < g.channels; ++c)
          for (std::size_t ky = 0; ky < g.kernel_h; ++ky)
            for (std::size_t kx = 0; kx < g.kernel_w; ++kx) {
              const long long y = (long long)(oy * g.stride_h + ky * g.dilation_h) - (long long)g.pad_h;
              const long long xx = (long long)(ox * g.stride_w + kx * g.dilation_w) - (long long)g.pad_w;
              const bool in = y >= 0 && y < (long long)g.height && xx >= 0 && xx < (long long)g.width;
              const std::size_t row = (b * oh + oy) * ow + ox, col = (c * g.kernel_h + ky) * g.kernel_w + kx;
              cols[row * kk + col] =
                  in ? x[((b * g.channels + c) * g.height + (std::size_t)y) * g.width + (std::size_t)xx] : pad;
            }
  return cols;
}

}  // namespace ref
}  // namespace quant
