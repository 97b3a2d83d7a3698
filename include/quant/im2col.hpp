// quant/im2col.hpp — NCHW convolution as a matrix product, for AdaRound and block
// reconstruction of conv layers (docs/adaround.md: W is [out, in*kh*kw], x is the
// im2col matrix; the algorithm is unchanged).
//
// Layout: one row per output position, one column per weight of a filter:
//   cols[(n * OH + oy) * OW + ox, (c * KH + ky) * KW + kx] = x[n, c, oy*sh - ph + ky*dh, ox*sw - pw + kx*dw]
// (zero outside the image). The column order (c, ky, kx) is PyTorch's
// `weight.reshape(out, -1)`, so with W2 = weight.reshape(out, -1) the convolution output
// is cols * W2^T of shape [N*OH*OW, out] (rows_to_nchw turns it into [N, out, OH, OW]).
// col2im is the adjoint (sums the gradient of overlapping patches back onto the input).
// Output size: OH = (H + 2 ph - dh (KH - 1) - 1) / sh + 1 (floor), same for OW.
// groups = 1 only.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>

#include <xtensor/xtensor.hpp>

#include "config.hpp"
#include "detail/parallel.hpp"
#include "error.hpp"

namespace quant {

// The geometry of one 2-D convolution over a [C, H, W] image.
struct conv2d_shape {
  std::size_t channels = 1, height = 1, width = 1;
  std::size_t kernel_h = 1, kernel_w = 1;
  std::size_t stride_h = 1, stride_w = 1;
  std::size_t pad_h = 0, pad_w = 0;
  std::size_t dilation_h = 1, dilation_w = 1;

  std::size_t out_h() const noexcept { return (height + 2 * pad_h - dilation_h * (kernel_h - 1) - 1) / stride_h + 1; }
  std::size_t out_w() const noexcept { return (width + 2 * pad_w - dilation_w * (kernel_w - 1) - 1) / stride_w + 1; }
  std::size_t positions() const noexcept { return out_h() * out_w(); }        // rows per image
  std::size_t patch_size() const noexcept { return channels * kernel_h * kernel_w; }  // columns
  std::size_t image_size() const noexcept { return channels * height * width; }

  void validate(const char* function) const {
    auto positive = [&](std::size_t v, const char* name) {
      if (v == 0) detail::fail<invalid_argument>(function, name, v, "must be >= 1");
    };
    positive(channels, "channels");
    positive(height, "height");
    positive(width, "width");
    positive(kernel_h, "kernel_h");
    positive(kernel_w, "kernel_w");
    positive(stride_h, "stride_h");
    positive(stride_w, "stride_w");
    positive(dilation_h, "dilation_h");
    positive(dilation_w, "dilation_w");
    if (height + 2 * pad_h < dilation_h * (kernel_h - 1) + 1)
      detail::fail<invalid_argument>(function, "kernel_h", kernel_h,
                                     "the dilated kernel is taller than the padded image (" +
                                         std::to_string(height + 2 * pad_h) + ")");
    if (width + 2 * pad_w < dilation_w * (kernel_w - 1) + 1)
      detail::fail<invalid_argument>(function, "kernel_w", kernel_w,
                                     "the dilated kernel is wider than the padded image (" +
                                         std::to_string(width + 2 * pad_w) + ")");
  }
};

namespace detail {
// The kernel columns kx in [begin, end) whose taps fall inside a row of `width` values when
// tap 0 reads column x0 (dilation 1): the contiguous stretch the kernels copy in one go.
struct tap_range {
  std::ptrdiff_t begin, end;
};
inline tap_range taps_inside(std::ptrdiff_t x0, std::size_t kernel_w, std::size_t width) noexcept {
  const auto kw = static_cast<std::ptrdiff_t>(kernel_w), w = static_cast<std::ptrdiff_t>(width);
  const std::ptrdiff_t begin = std::min(kw, std::max<std::ptrdiff_t>(0, -x0));
  return {begin, std::max(begin, std::min(kw, w - x0))};
}
}  // namespace detail

namespace kernels {

// One image x [C, H, W] -> cols [OH*OW, C*KH*KW] (row-major); taps in the padding are `pad`.
// Any element type (float, double, the integer types of integer_im2col.hpp): values are copied.
template <class T>
void im2col(const T* QUANT_RESTRICT x, T* QUANT_RESTRICT cols, const conv2d_shape& g, T pad = T(0)) noexcept {
  const std::size_t oh = g.out_h(), ow = g.out_w(), k = g.patch_size();
  for (std::size_t oy = 0; oy < oh; ++oy)
    for (std::size_t ox = 0; ox < ow; ++ox) {
      T* row = cols + (oy * ow + ox) * k;
      // signed arithmetic: padding makes the first taps negative
      const std::ptrdiff_t x0 = static_cast<std::ptrdiff_t>(ox * g.stride_w) - static_cast<std::ptrdiff_t>(g.pad_w);
      const detail::tap_range inside = detail::taps_inside(x0, g.kernel_w, g.width);
      for (std::size_t c = 0; c < g.channels; ++c)
        for (std::size_t ky = 0; ky < g.kernel_h; ++ky) {
          const std::ptrdiff_t y = static_cast<std::ptrdiff_t>(oy * g.stride_h + ky * g.dilation_h) -
                                   static_cast<std::ptrdiff_t>(g.pad_h);
          if (y < 0 || y >= static_cast<std::ptrdiff_t>(g.height)) {
            row = std::fill_n(row, g.kernel_w, pad);
            continue;
          }
          const T* xrow = x + (c * g.height + static_cast<std::size_t>(y)) * g.width;
          if (g.dilation_w == 1) {
            row = std::fill_n(row, inside.begin, pad);
            if (inside.end > inside.begin) row = std::copy(xrow + x0 + inside.begin, xrow + x0 + inside.end, row);
            row = std::fill_n(row, static_cast<std::ptrdiff_t>(g.kernel_w) - inside.end, pad);
            continue;
          }
          for (std::size_t kx = 0; kx < g.kernel_w; ++kx) {
            const std::ptrdiff_t xx = x0 + static_cast<std::ptrdiff_t>(kx * g.dilation_w);
            *row++ = xx >= 0 && xx < static_cast<std::ptrdiff_t>(g.width) ? xrow[xx] : pad;
          }
        }
    }
}

// Adjoint of im2col for one image: dx [C, H, W] = sum over patches of dcols (dx overwritten;
// each element's contributions are added in patch order, (oy, ox) row-major).
template <class T>
void col2im(const T* QUANT_RESTRICT dcols, T* QUANT_RESTRICT dx, const conv2d_shape& g) noexcept {
  const std::size_t oh = g.out_h(), ow = g.out_w();
  for (std::size_t i = 0; i < g.image_size(); ++i) dx[i] = T(0);
  for (std::size_t oy = 0; oy < oh; ++oy)
    for (std::size_t ox = 0; ox < ow; ++ox) {
      const T* row = dcols + (oy * ow + ox) * g.patch_size();
      const std::ptrdiff_t x0 = static_cast<std::ptrdiff_t>(ox * g.stride_w) - static_cast<std::ptrdiff_t>(g.pad_w);
      const detail::tap_range inside = detail::taps_inside(x0, g.kernel_w, g.width);
      for (std::size_t c = 0; c < g.channels; ++c)
        for (std::size_t ky = 0; ky < g.kernel_h; ++ky, row += g.kernel_w) {
          const std::ptrdiff_t y = static_cast<std::ptrdiff_t>(oy * g.stride_h + ky * g.dilation_h) -
                                   static_cast<std::ptrdiff_t>(g.pad_h);
          if (y < 0 || y >= static_cast<std::ptrdiff_t>(g.height)) continue;
          T* dxrow = dx + (c * g.height + static_cast<std::size_t>(y)) * g.width;
          if (g.dilation_w == 1) {
            for (std::ptrdiff_t kx = inside.begin; kx < inside.end; ++kx) dxrow[x0 + kx] += row[kx];
            continue;
          }
          for (std::size_t kx = 0; kx < g.kernel_w; ++kx) {
            const std::ptrdiff_t xx = x0 + static_cast<std::ptrdiff_t>(kx * g.dilation_w);
            if (xx >= 0 && xx < static_cast<std::ptrdiff_t>(g.width)) dxrow[xx] += row[kx];
          }
        }
    }
}

// rows [P, C] (P = OH*OW positions of one image, C channels) <-> planes [C, P].
inline void rows_to_planes(const float* QUANT_RESTRICT rows, float* QUANT_RESTRICT planes, std::size_t positions,
                           std::size_t channels) noexcept {
  for (std::size_t p = 0; p < positions; ++p)
    for (std::size_t c = 0; c < channels; ++c) planes[c * positions + p] = rows[p * channels + c];
}
inline void planes_to_rows(const float* QUANT_RESTRICT planes, float* QUANT_RESTRICT rows, std::size_t positions,
                           std::size_t channels) noexcept {
  for (std::size_t p = 0; p < positions; ++p)
    for (std::size_t c = 0; c < channels; ++c) rows[p * channels + c] = planes[c * positions + p];
}

}  // namespace kernels

namespace detail {
inline conv2d_shape conv_shape_for(const xt::xtensor<float, 4>& x, conv2d_shape g, const char* function) {
  if (x.shape()[1] != g.channels || x.shape()[2] != g.height || x.shape()[3] != g.width)
    fail<length_error>(function, "x.shape()", shape_string(x.shape()),
                       "must be [N, " + std::to_string(g.channels) + ", " + std::to_string(g.height) + ", " +
                           std::to_string(g.width) + "] (the conv2d_shape)");
  return g;
}
}  // namespace detail

// NCHW batch x [N, C, H, W] -> im2col matrix [N*OH*OW, C*KH*KW] (layout above).
// Throws quant::invalid_argument for a bad geometry, quant::length_error when x does not match it.
inline xt::xtensor<float, 2> im2col(const xt::xtensor<float, 4>& x, const conv2d_shape& g) {
  const char* fn = "im2col";
  g.validate(fn);
  detail::conv_shape_for(x, g, fn);
  const std::size_t n = x.shape()[0], rows = g.positions(), k = g.patch_size();
  xt::xtensor<float, 2> cols = xt::xtensor<float, 2>::from_shape({n * rows, k});
  detail::parallel_for(n, n * rows * k, [&](std::size_t i) {
    kernels::im2col(x.data() + i * g.image_size(), cols.data() + i * rows * k, g);
  });
  return cols;
}

// The adjoint: dcols [N*OH*OW, C*KH*KW] -> dx [N, C, H, W].
inline xt::xtensor<float, 4> col2im(const xt::xtensor<float, 2>& dcols, const conv2d_shape& g) {
  const char* fn = "col2im";
  g.validate(fn);
  const std::size_t rows = g.positions(), k = g.patch_size();
  if (dcols.shape()[1] != k || dcols.shape()[0] % rows != 0)
    detail::fail<length_error>(fn, "dcols.shape()", detail::shape_string(dcols.shape()),
                               "must be [N*" + std::to_string(rows) + ", " + std::to_string(k) + "]");
  const std::size_t n = dcols.shape()[0] / rows;
  xt::xtensor<float, 4> dx = xt::xtensor<float, 4>::from_shape({n, g.channels, g.height, g.width});
  detail::parallel_for(n, n * rows * k, [&](std::size_t i) {
    kernels::col2im(dcols.data() + i * rows * k, dx.data() + i * g.image_size(), g);
  });
  return dx;
}

// Conv output as rows [N*P, C] (the GEMM result) -> NCHW [N, C, OH, OW].
inline xt::xtensor<float, 4> rows_to_nchw(const xt::xtensor<float, 2>& rows, std::size_t out_h, std::size_t out_w) {
  const std::size_t p = out_h * out_w, c = rows.shape()[1];
  if (p == 0 || rows.shape()[0] % p != 0)
    detail::fail<length_error>("rows_to_nchw", "rows.shape()", detail::shape_string(rows.shape()),
                               "first dimension must be a multiple of out_h*out_w = " + std::to_string(p));
  const std::size_t n = rows.shape()[0] / p;
  xt::xtensor<float, 4> out = xt::xtensor<float, 4>::from_shape({n, c, out_h, out_w});
  for (std::size_t i = 0; i < n; ++i) kernels::rows_to_planes(rows.data() + i * p * c, out.data() + i * p * c, p, c);
  return out;
}

}  // namespace quant
