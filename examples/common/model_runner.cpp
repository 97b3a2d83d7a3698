// examples/common/model_runner.cpp — the float runner declared in model_runner.hpp (how each
// layer runs, fusion and threads: there).
#include "model_runner.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <quant/im2col.hpp>
#include <quant/parallel.hpp>
#include <quant/uniform.hpp>
#include <xtensor-blas/xblas.hpp>
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

namespace examples {

quant::conv2d_shape conv_geometry(const model_layer& l, const std::vector<std::size_t>& in_shape) {
  quant::conv2d_shape g;
  g.channels = in_shape[0];
  g.height = in_shape[1];
  g.width = in_shape[2];
  g.kernel_h = l.weight.shape()[2];
  g.kernel_w = l.weight.shape()[3];
  g.stride_h = l.stride_h;
  g.stride_w = l.stride_w;
  g.pad_h = l.pad_h;
  g.pad_w = l.pad_w;
  return g;
}

namespace detail {
namespace {

struct epilogue {
  const float* bias = nullptr;      // [C] or null
  const float* bn_scale = nullptr;  // [C] or null (a, c of a fused batchnorm2d)
  const float* bn_shift = nullptr;
  layer_type act = layer_type::flatten;  // relu, relu6, or anything else for none
};

// Applies the epilogue to `count` values of channel c starting at p.
void apply_epilogue(float* p, std::size_t count, std::size_t c, const epilogue& e) {
  if (e.bias) {
    const float b = e.bias[c];
#pragma omp simd
    for (std::size_t i = 0; i < count; ++i) p[i] = p[i] + b;
  }
  if (e.bn_scale) {
    const float a = e.bn_scale[c], s = e.bn_shift[c];
#pragma omp simd
    for (std::size_t i = 0; i < count; ++i) p[i] = p[i] * a + s;
  }
  if (e.act == layer_type::relu) {
#pragma omp simd
    for (std::size_t i = 0; i < count; ++i) p[i] = p[i] > 0.0f ? p[i] : 0.0f;
  } else if (e.act == layer_type::relu6) {
#pragma omp simd
    for (std::size_t i = 0; i < count; ++i) p[i] = p[i] > 0.0f ? (p[i] < 6.0f ? p[i] : 6.0f) : 0.0f;
  }
}

// Per-layer constants prepared once per run.
struct prepared_layer {
  std::vector<std::size_t> in_shape, out_shape;  // one sample
  xt::xtensor<float, 1> bn_scale, bn_shift;      // batchnorm2d: a, c
  quant::conv2d_shape geometry;                  // conv2d groups 1
  bool pointwise = false;                        // 1x1, stride 1, no padding, groups 1
};

std::vector<prepared_layer> prepare(const model& m) {
  std::vector<prepared_layer> out(m.layers.size());
  std::vector<std::size_t> shape = m.input_shape;
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const auto& l = m.layers[i];
    auto& p = out[i];
    p.in_shape = shape;
    p.out_shape = layer_output_shape(l, shape, "<model>", "layers[" + std::to_string(i) + "]");
    if (l.type == layer_type::batchnorm2d) {
      const std::size_t c = l.weight.size();
      p.bn_scale = xt::xtensor<float, 1>::from_shape({c});
      p.bn_shift = xt::xtensor<float, 1>::from_shape({c});
      for (std::size_t k = 0; k < c; ++k) {
        const float a = static_cast<float>(static_cast<double>(l.weight(k)) /
                                           std::sqrt(static_cast<double>(l.running_var(k)) + l.eps));
        p.bn_scale(k) = a;
        p.bn_shift(k) = (*l.bias)(k) - l.running_mean(k) * a;
      }
    }
    if (l.type == layer_type::conv2d && l.groups == 1) {
      p.geometry = conv_geometry(l, shape);
      const auto& g = p.geometry;
      p.pointwise = g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 &&
                    g.pad_w == 0;
    }
    shape = p.out_shape;
  }
  return out;
}

// Direct grouped convolution of one sample: x [C, H, W] -> y [O, OH, OW].
void grouped_conv(const float* x, float* y, const model_layer& l, const std::vector<std::size_t>& in,
                         const std::vector<std::size_t>& out) {
  const std::size_t C = in[0], H = in[1], W = in[2], O = out[0], OH = out[1], OW = out[2];
  const std::size_t cpg = C / l.groups, opg = O / l.groups;
  const std::size_t kh = l.weight.shape()[2], kw = l.weight.shape()[3];
  const std::size_t sh = l.stride_h, sw = l.stride_w;
  const std::ptrdiff_t ph = static_cast<std::ptrdiff_t>(l.pad_h), pw = static_cast<std::ptrdiff_t>(l.pad_w);
  const float* w = l.weight.data();
  for (std::size_t o = 0; o < O; ++o) {
    float* yp = y + o * OH * OW;
    std::fill(yp, yp + OH * OW, 0.0f);
    const std::size_t g = o / opg;
    for (std::size_t ci = 0; ci < cpg; ++ci) {
      const float* xp = x + (g * cpg + ci) * H * W;
      for (std::size_t ky = 0; ky < kh; ++ky)
        for (std::size_t kx = 0; kx < kw; ++kx) {
          const float wv = w[((o * cpg + ci) * kh + ky) * kw + kx];
          // output columns whose input column ox*sw + kx - pw lies in [0, W)
          const std::ptrdiff_t off_x = static_cast<std::ptrdiff_t>(kx) - pw;
          std::size_t ox0 = 0;
          if (off_x < 0) ox0 = static_cast<std::size_t>((-off_x + static_cast<std::ptrdiff_t>(sw) - 1) /
                                                        static_cast<std::ptrdiff_t>(sw));
          std::size_t ox1 = 0;  // exclusive
          if (static_cast<std::ptrdiff_t>(W) - 1 - off_x >= 0)
            ox1 = std::min<std::size_t>(OW, static_cast<std::size_t>((static_cast<std::ptrdiff_t>(W) - 1 - off_x) /
                                                                         static_cast<std::ptrdiff_t>(sw)) +
                                                1);
          if (ox0 >= ox1) continue;
          for (std::size_t oy = 0; oy < OH; ++oy) {
            const std::ptrdiff_t iy = static_cast<std::ptrdiff_t>(oy * sh + ky) - ph;
            if (iy < 0 || iy >= static_cast<std::ptrdiff_t>(H)) continue;
            const float* xr = xp + static_cast<std::size_t>(iy) * W;
            float* yr = yp + oy * OW;
            if (sw == 1) {
              const float* xs = xr + off_x;
#pragma omp simd
              for (std::size_t ox = ox0; ox < ox1; ++ox) yr[ox] += wv * xs[ox];
            } else {
              for (std::size_t ox = ox0; ox < ox1; ++ox)
                yr[ox] += wv * xr[static_cast<std::ptrdiff_t>(ox * sw) + off_x];
            }
          }
        }
    }
  }
}

void pool(const float* x, float* y, const model_layer& l, const std::vector<std::size_t>& in,
                 const std::vector<std::size_t>& out) {
  const std::size_t C = in[0], H = in[1], W = in[2], OH = out[1], OW = out[2];
  const bool is_max = l.type == layer_type::maxpool2d;
  const float inv_area = 1.0f / static_cast<float>(l.kernel_h * l.kernel_w);
  for (std::size_t c = 0; c < C; ++c) {
    const float* xp = x + c * H * W;
    float* yp = y + c * OH * OW;
    for (std::size_t oy = 0; oy < OH; ++oy)
      for (std::size_t ox = 0; ox < OW; ++ox) {
        float acc = is_max ? -INFINITY : 0.0f;
        for (std::size_t ky = 0; ky < l.kernel_h; ++ky) {
          const std::ptrdiff_t iy = static_cast<std::ptrdiff_t>(oy * l.stride_h + ky) - static_cast<std::ptrdiff_t>(l.pad_h);
          if (iy < 0 || iy >= static_cast<std::ptrdiff_t>(H)) continue;
          for (std::size_t kx = 0; kx < l.kernel_w; ++kx) {
            const std::ptrdiff_t ix =
                static_cast<std::ptrdiff_t>(ox * l.stride_w + kx) - static_cast<std::ptrdiff_t>(l.pad_w);
            if (ix < 0 || ix >= static_cast<std::ptrdiff_t>(W)) continue;
            const float v = xp[static_cast<std::size_t>(iy) * W + static_cast<std::size_t>(ix)];
            if (is_max)
              acc = (v > acc || std::isnan(v)) ? v : acc;
            else
              acc += v;
          }
        }
        yp[oy * OW + ox] = is_max ? acc : acc * inv_area;
      }
  }
}

// Runs layers [begin, end) on `n` samples in `cur` (resized as needed); returns the result
// in `cur`. `next` and `cols` are scratch.
void run_chunk(const model& m, const std::vector<prepared_layer>& prep, std::size_t begin, std::size_t end,
                      std::size_t n, std::vector<float>& cur, std::vector<float>& next, std::vector<float>& cols,
                      const run_options& opt) {
  std::size_t i = begin;
  while (i < end) {
    const auto& l = m.layers[i];
    const auto& p = prep[i];
    const std::size_t in_size = shape_size(p.in_shape), out_size = shape_size(p.out_shape);
    if (has_weights(l.type)) {
      if (opt.apply_encodings && l.input_encoding) {
        auto a = xt::adapt(cur.data(), n * in_size, xt::no_ownership(), std::array<std::size_t, 1>{n * in_size});
        xt::xtensor<float, 1> q = quant::eager::fake_quantize(a, l.input_encoding->params);
        std::copy(q.begin(), q.end(), cur.begin());
      }
      if (opt.on_layer_input) opt.on_layer_input(layer_input{i, cur.data(), n, p.in_shape});
      // fuse a following batchnorm2d and relu/relu6 into the epilogue
      epilogue e;
      e.bias = l.bias ? l.bias->data() : nullptr;
      std::size_t last = i;
      if (last + 1 < end && m.layers[last + 1].type == layer_type::batchnorm2d) {
        ++last;
        e.bn_scale = prep[last].bn_scale.data();
        e.bn_shift = prep[last].bn_shift.data();
      }
      if (last + 1 < end &&
          (m.layers[last + 1].type == layer_type::relu || m.layers[last + 1].type == layer_type::relu6)) {
        ++last;
        e.act = m.layers[last].type;
      }
      next.resize(n * out_size);
      if (l.type == layer_type::linear) {
        const std::size_t out = l.weight.shape()[0];
        auto X = as_matrix(cur.data(), n, in_size);
        auto W = as_matrix(l.weight.data(), out, in_size);
        auto Z = as_matrix(next.data(), n, out);
        xt::blas::gemm(X, W, Z, false, true, 1.0f, 0.0f);
        // epilogue per output feature is strided here: apply it row by row
        for (std::size_t s = 0; s < n; ++s) {
          float* z = next.data() + s * out;
          if (e.bias)
            for (std::size_t o = 0; o < out; ++o) z[o] = z[o] + e.bias[o];
          if (e.act == layer_type::relu)
            for (std::size_t o = 0; o < out; ++o) z[o] = z[o] > 0.0f ? z[o] : 0.0f;
          else if (e.act == layer_type::relu6)
            for (std::size_t o = 0; o < out; ++o) z[o] = z[o] > 0.0f ? (z[o] < 6.0f ? z[o] : 6.0f) : 0.0f;
        }
      } else if (l.groups == 1) {
        const auto& g = p.geometry;
        const std::size_t out = l.weight.shape()[0], P = g.positions(), K = g.patch_size();
        auto W = as_matrix(l.weight.data(), out, K);
        if (!p.pointwise) cols.resize(P * K);
        for (std::size_t s = 0; s < n; ++s) {
          const float* x = cur.data() + s * in_size;
          auto Z = as_matrix(next.data() + s * out_size, out, P);
          if (p.pointwise) {
            xt::blas::gemm(W, as_matrix(x, K, P), Z, false, false, 1.0f, 0.0f);
          } else {
            quant::kernels::im2col(x, cols.data(), g);
            xt::blas::gemm(W, as_matrix(cols.data(), P, K), Z, false, true, 1.0f, 0.0f);
          }
          for (std::size_t o = 0; o < out; ++o) apply_epilogue(next.data() + s * out_size + o * P, P, o, e);
        }
      } else {
        const std::size_t out = p.out_shape[0], P = p.out_shape[1] * p.out_shape[2];
        for (std::size_t s = 0; s < n; ++s) {
          grouped_conv(cur.data() + s * in_size, next.data() + s * out_size, l, p.in_shape, p.out_shape);
          for (std::size_t o = 0; o < out; ++o) apply_epilogue(next.data() + s * out_size + o * P, P, o, e);
        }
      }
      cur.swap(next);
      i = last + 1;
      continue;
    }
    switch (l.type) {
      case layer_type::batchnorm2d: {
        epilogue e;
        e.bn_scale = p.bn_scale.data();
        e.bn_shift = p.bn_shift.data();
        std::size_t last = i;
        if (last + 1 < end &&
            (m.layers[last + 1].type == layer_type::relu || m.layers[last + 1].type == layer_type::relu6)) {
          ++last;
          e.act = m.layers[last].type;
        }
        const std::size_t C = p.in_shape[0], P = p.in_shape[1] * p.in_shape[2];
        for (std::size_t s = 0; s < n; ++s)
          for (std::size_t c = 0; c < C; ++c) apply_epilogue(cur.data() + (s * C + c) * P, P, c, e);
        i = last + 1;
        continue;
      }
      case layer_type::relu:
      case layer_type::relu6: {
        epilogue e;
        e.act = l.type;
        apply_epilogue(cur.data(), n * in_size, 0, e);
        break;
      }
      case layer_type::maxpool2d:
      case layer_type::avgpool2d:
        next.resize(n * out_size);
        for (std::size_t s = 0; s < n; ++s) pool(cur.data() + s * in_size, next.data() + s * out_size, l, p.in_shape, p.out_shape);
        cur.swap(next);
        break;
      case layer_type::global_avgpool: {
        const std::size_t C = p.in_shape[0], P = p.in_shape[1] * p.in_shape[2];
        next.resize(n * C);
        for (std::size_t s = 0; s < n; ++s)
          for (std::size_t c = 0; c < C; ++c) {
            const float* x = cur.data() + (s * C + c) * P;
            float acc = 0.0f;
            for (std::size_t k = 0; k < P; ++k) acc += x[k];
            next[s * C + c] = acc / static_cast<float>(P);
          }
        cur.swap(next);
        break;
      }
      case layer_type::flatten: break;  // NCHW is already C order
      default: break;
    }
    ++i;
  }
}

}  // namespace
}  // namespace detail

xt::xarray<float> run_layers(const model& m, const xt::xarray<float>& x, std::size_t begin, std::size_t end,
                             const run_options& opt) {
  if (begin > end || end > m.layers.size())
    throw std::out_of_range("run_layers: layer range [" + std::to_string(begin) + ", " + std::to_string(end) +
                            ") outside the model's " + std::to_string(m.layers.size()) + " layers");
  const auto prep = detail::prepare(m);
  const std::vector<std::size_t> in_shape = begin < prep.size() ? prep[begin].in_shape : m.output_shape();
  const std::vector<std::size_t> out_shape = end < prep.size() ? prep[end].in_shape : m.output_shape();
  const std::vector<std::size_t> got(x.shape().begin(), x.shape().end());
  if (got.size() != in_shape.size() + 1 || !std::equal(in_shape.begin(), in_shape.end(), got.begin() + 1))
    throw std::length_error("model input has shape " + shape_text(got) + ", expected [N, " +
                            shape_text(in_shape).substr(1));
  const std::size_t N = got[0], in_size = shape_size(in_shape), out_size = shape_size(out_shape);
  std::vector<std::size_t> result_shape{N};
  result_shape.insert(result_shape.end(), out_shape.begin(), out_shape.end());
  xt::xarray<float> y = xt::xarray<float>::from_shape(result_shape);
  const std::size_t batch = std::max<std::size_t>(1, opt.batch);
  const std::size_t chunks = (N + batch - 1) / batch;
  auto chunk = [&](std::size_t t) {
    const std::size_t b = t * batch, n = std::min(batch, N - b);
    std::vector<float> cur(x.data() + b * in_size, x.data() + (b + n) * in_size), next, cols;
    detail::run_chunk(m, prep, begin, end, n, cur, next, cols, opt);
    std::copy(cur.begin(), cur.begin() + static_cast<std::ptrdiff_t>(n * out_size), y.data() + b * out_size);
  };
  if (opt.on_layer_input) {
    for (std::size_t t = 0; t < chunks; ++t) chunk(t);
  } else {
    quant::parallel_for(chunks, std::size_t(1) << 20, chunk);
  }
  return y;
}

std::vector<std::size_t> top1(const xt::xarray<float>& logits) {
  const std::size_t n = logits.shape()[0], k = logits.size() / std::max<std::size_t>(n, 1);
  std::vector<std::size_t> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const float* r = logits.data() + i * k;
    out[i] = static_cast<std::size_t>(std::max_element(r, r + k) - r);
  }
  return out;
}

// Top-1 accuracy of logits [N, classes] against labels [N].
double top1_accuracy(const xt::xarray<float>& logits, const std::vector<std::int64_t>& labels) {
  const auto pred = top1(logits);
  if (pred.size() != labels.size())
    throw std::length_error("top1_accuracy: " + std::to_string(pred.size()) + " predictions, " +
                            std::to_string(labels.size()) + " labels");
  std::size_t ok = 0;
  for (std::size_t i = 0; i < pred.size(); ++i) ok += static_cast<std::int64_t>(pred[i]) == labels[i];
  return pred.empty() ? 0.0 : static_cast<double>(ok) / static_cast<double>(pred.size());
}

}  // namespace examples
