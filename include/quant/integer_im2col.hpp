// quant/integer_im2col.hpp — im2col for quantized (uint8 / int8) activations: a
// convolution becomes one integer GEMM (integer_gemm.hpp) over the rows it produces.
//
//   cols[(n * OH + oy) * OW + ox, (c * KH + ky) * KW + kx]
//       = xq[n, c, oy*sh - ph + ky*dh, ox*sw - pw + kx*dw]     inside the image,
//       = z_x                                                   in the padding,
// the layout of the float im2col (im2col.hpp), with the padding set to the activation zero
// point: the integer z_x represents the real value 0, so sum_k Wq (cols - z_x) over a
// padded tap adds exactly 0, as zero padding does in the float convolution. With Wq the
// weights reshaped to [out, C*KH*KW] (PyTorch's weight.reshape(out, -1)), the integer GEMM
// over cols gives the convolution as [N*OH*OW, out] rows (NHWC order).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include <xtensor/xtensor.hpp>

#include "detail/parallel.hpp"
#include "error.hpp"
#include "im2col.hpp"

namespace quant {

// xq [N, C, H, W] (uint8 or int8) -> cols [N*OH*OW, C*KH*KW], padded with zero_point.
// Throws quant::invalid_argument for a bad geometry or a zero point outside Int's range,
// quant::length_error when xq does not match the geometry.
template <class Int>
xt::xtensor<Int, 2> im2col(const xt::xtensor<Int, 4>& x, const conv2d_shape& g, int zero_point) {
  static_assert(std::is_same<Int, std::uint8_t>::value || std::is_same<Int, std::int8_t>::value,
                "integer im2col takes uint8_t or int8_t activations");
  const char* fn = "im2col";
  g.validate(fn);
  if (zero_point < std::numeric_limits<Int>::min() || zero_point > std::numeric_limits<Int>::max())
    detail::fail<invalid_argument>(fn, "zero_point", zero_point,
                                   "must lie on the activation grid [" +
                                       std::to_string(int(std::numeric_limits<Int>::min())) + ", " +
                                       std::to_string(int(std::numeric_limits<Int>::max())) + "]");
  if (x.shape()[1] != g.channels || x.shape()[2] != g.height || x.shape()[3] != g.width)
    detail::fail<length_error>(fn, "x.shape()", detail::shape_string(x.shape()),
                               "must be [N, " + std::to_string(g.channels) + ", " + std::to_string(g.height) + ", " +
                                   std::to_string(g.width) + "] (the conv2d_shape)");
  const std::size_t n = x.shape()[0], rows = g.positions(), k = g.patch_size();
  xt::xtensor<Int, 2> cols = xt::xtensor<Int, 2>::from_shape({n * rows, k});
  const Int pad = static_cast<Int>(zero_point);
  detail::parallel_for(n, n * rows * k, [&](std::size_t i) {
    kernels::im2col(x.data() + i * g.image_size(), cols.data() + i * rows * k, g, pad);
  });
  return cols;
}

}  // namespace quant
