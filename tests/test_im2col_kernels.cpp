// kernels::im2col / kernels::col2im of one image against the index formula of
// quant/im2col.hpp, written out here element by element:
//   cols[oy * OW + ox, (c * KH + ky) * KW + kx] = x[c, oy*sh - ph + ky*dh, ox*sw - pw + kx*dw]
// inside the image, `pad` outside; col2im adds each patch's entries back onto those input
// elements, patches in (oy, ox) row-major order. Random geometries (strides, paddings wider
// than the kernel, dilation 1 and 2), float / double / uint8 elements, pointers one element
// into their buffers.
#include <quant/im2col.hpp>

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace {

using quant::conv2d_shape;

// A random geometry the kernels accept (conv2d_shape::validate passes).
conv2d_shape random_geometry(std::mt19937_64& rng) {
  auto pick = [&](std::size_t lo, std::size_t hi) { return std::uniform_int_distribution<std::size_t>(lo, hi)(rng); };
  for (;;) {
    conv2d_shape g;
    g.channels = pick(1, 3);
    g.height = pick(1, 9);
    g.width = pick(1, 9);
    g.kernel_h = pick(1, 4);
    g.kernel_w = pick(1, 4);
    g.stride_h = pick(1, 3);
    g.stride_w = pick(1, 3);
    g.pad_h = pick(0, 4);
    g.pad_w = pick(0, 4);
    g.dilation_h = pick(1, 2);
    g.dilation_w = pick(1, 2);
    if (g.height + 2 * g.pad_h >= g.dilation_h * (g.kernel_h - 1) + 1 &&
        g.width + 2 * g.pad_w >= g.dilation_w * (g.kernel_w - 1) + 1)
      return g;
  }
}

// The input element a tap reads, or -1 in the padding.
std::ptrdiff_t tap_source(const conv2d_shape& g, std::size_t oy, std::size_t ox, std::size_t c, std::size_t ky,
                          std::size_t kx) {
  const auto y = static_cast<std::ptrdiff_t>(oy * g.stride_h + ky * g.dilation_h) - static_cast<std::ptrdiff_t>(g.pad_h);
  const auto x = static_cast<std::ptrdiff_t>(ox * g.stride_w + kx * g.dilation_w) - static_cast<std::ptrdiff_t>(g.pad_w);
  if (y < 0 || x < 0 || y >= static_cast<std::ptrdiff_t>(g.height) || x >= static_cast<std::ptrdiff_t>(g.width))
    return -1;
  return static_cast<std::ptrdiff_t>((c * g.height + static_cast<std::size_t>(y)) * g.width) + x;
}

template <class T>
void check_geometry(const conv2d_shape& g, std::mt19937_64& rng, T pad) {
  const std::size_t P = g.positions(), K = g.patch_size(), n = g.image_size();
  std::vector<T> xbuf(n + 1), cbuf(P * K + 1), dbuf(P * K + 1), dxbuf(n + 1);
  T* x = xbuf.data() + 1;  // one element into each buffer: no alignment beyond the type's
  T* cols = cbuf.data() + 1;
  T* dcols = dbuf.data() + 1;
  T* dx = dxbuf.data() + 1;
  std::uniform_int_distribution<int> v(1, 200);
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<T>(v(rng)) / static_cast<T>(4);
  for (std::size_t i = 0; i < P * K; ++i) dcols[i] = static_cast<T>(v(rng)) / static_cast<T>(8);
  for (std::size_t i = 0; i < n; ++i) dx[i] = static_cast<T>(99);  // overwritten

  quant::kernels::im2col(static_cast<const T*>(x), cols, g, pad);
  quant::kernels::col2im(static_cast<const T*>(dcols), dx, g);

  std::vector<T> want_dx(n, T(0));
  std::size_t mismatches = 0;
  for (std::size_t oy = 0; oy < g.out_h(); ++oy)
    for (std::size_t ox = 0; ox < g.out_w(); ++ox)
      for (std::size_t c = 0; c < g.channels; ++c)
        for (std::size_t ky = 0; ky < g.kernel_h; ++ky)
          for (std::size_t kx = 0; kx < g.kernel_w; ++kx) {
            const std::size_t at = (oy * g.out_w() + ox) * K + (c * g.kernel_h + ky) * g.kernel_w + kx;
            const std::ptrdiff_t src = tap_source(g, oy, ox, c, ky, kx);
            mismatches += cols[at] != (src < 0 ? pad : x[src]);
            if (src >= 0) want_dx[static_cast<std::size_t>(src)] += dcols[at];
          }
  INFO("C " << g.channels << " H " << g.height << " W " << g.width << " K " << g.kernel_h << "x" << g.kernel_w
            << " stride " << g.stride_h << "," << g.stride_w << " pad " << g.pad_h << "," << g.pad_w << " dilation "
            << g.dilation_h << "," << g.dilation_w);
  CHECK(mismatches == 0);
  CHECK(std::vector<T>(dx, dx + n) == want_dx);  // same additions in the same order: equal bits
  CHECK(cbuf[0] == T(0));                        // nothing written before the buffers' starts
  CHECK(dxbuf[0] == T(0));
}

}  // namespace

TEST_CASE("kernels::im2col and col2im of one image equal the index formula", "[im2col]") {
  std::mt19937_64 rng(20261127);
  SECTION("float, zero padding") {
    for (int t = 0; t < 400; ++t) check_geometry<float>(random_geometry(rng), rng, 0.0f);
  }
  SECTION("double, padding -1.5") {
    for (int t = 0; t < 200; ++t) check_geometry<double>(random_geometry(rng), rng, -1.5);
  }
  SECTION("uint8, padding with a zero point of 7") {
    for (int t = 0; t < 200; ++t) check_geometry<std::uint8_t>(random_geometry(rng), rng, std::uint8_t{7});
  }
  SECTION("a channels-last 3x3 image read as one channel of W*C values (the demo's layout)") {
    for (std::size_t C : {1u, 3u, 16u}) {
      conv2d_shape g;
      g.height = 5;
      g.width = 4 * C;
      g.kernel_h = 3;
      g.kernel_w = 3 * C;
      g.stride_w = C;
      g.pad_h = 1;
      g.pad_w = C;
      CHECK(g.out_h() == 5);
      CHECK(g.out_w() == 4);
      check_geometry<float>(g, rng, 0.0f);
    }
  }
}
