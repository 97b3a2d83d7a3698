// examples/common/model_runner.hpp — forward pass of a model bundle (model_bundle.hpp) on a
// batch of samples [N, ...input_shape], float32, inference mode (BatchNorm with its running
// statistics).
//
// How each layer runs, per sample (NCHW planes stay contiguous throughout):
//   linear           one GEMM per chunk of samples: Z [n, out] = X [n, in] W^T (xtensor-blas)
//   conv2d groups 1  im2col (quant/im2col.hpp, [positions, in*kh*kw]) and one GEMM per sample,
//                    Z [out, positions] = W [out, K] cols^T, i.e. NCHW directly; a 1x1 stride-1
//                    unpadded conv skips im2col (Z = W X)
//   conv2d groups>1  direct loop (depthwise and grouped): each output plane accumulates
//                    w * (shifted input plane), taps in (c, ky, kx) order
//   batchnorm2d      y = x a + c with a = gamma / sqrt(var + eps), c = beta - mean a
//   pools            direct loops; avgpool divides by kh*kw (zero padding counted, PyTorch's
//                    default), global_avgpool by H*W
// Bias, a following batchnorm2d and a following relu/relu6 are applied in the GEMM's
// epilogue in the same order and arithmetic as the standalone layers, so fusion does not
// change a single bit. When a linear/conv2d layer has input_encodings, its input is
// fake-quantized with them first (quant::eager::fake_quantize, half to even, PyTorch
// numerics); weights are used as stored (a quantized bundle stores them fake-quantized).
//
// Threads: samples are cut into chunks of run_options::batch; chunks run in parallel on
// quant::num_threads() threads (quant::set_num_threads), each calling BLAS single-threaded
// (call use_single_threaded_blas() once; OpenBLAS's own threads would oversubscribe). A
// sample's result depends only on its chunk's size, not on the thread count. A hook
// (run_options::on_layer_input) makes the run serial so hooks see chunks in order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <quant/parallel.hpp>
#include <quant/im2col.hpp>
#include <quant/uniform.hpp>
#include <xtensor-blas/xblas.hpp>
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

#include "model_bundle.hpp"
#include "single_threaded_blas.hpp"

namespace examples {

// The im2col geometry of conv layer l on an input of shape [C, H, W].
quant::conv2d_shape conv_geometry(const model_layer& l, const std::vector<std::size_t>& in_shape);

// What a hook sees: the input of weight layer `layer` for `samples` samples, row-major
// [samples, sample_shape...] (after the layer's input quantizer when one is applied).
struct layer_input {
  std::size_t layer;
  const float* data;
  std::size_t samples;
  const std::vector<std::size_t>& sample_shape;
};

struct run_options {
  std::size_t batch = 256;       // samples per chunk
  bool apply_encodings = true;   // fake-quantize weight-layer inputs with their input_encodings
  std::function<void(const layer_input&)> on_layer_input;  // optional; makes the run serial
};

namespace detail {

// A row-major [r, c] view of p (what xt::blas::gemm takes without copying).
template <class T>
auto as_matrix(T* p, std::size_t r, std::size_t c) {
  T* q = p;
  return xt::adapt(std::move(q), r * c, xt::no_ownership(), std::array<std::size_t, 2>{r, c});
}

}  // namespace detail

// Runs layers [begin, end) of `m` on x [N, ...shape before layer `begin`]; returns
// [N, ...shape before layer `end`]. Throws std::length_error when x has the wrong shape.
xt::xarray<float> run_layers(const model& m, const xt::xarray<float>& x, std::size_t begin, std::size_t end,
                             const run_options& opt = {});

inline xt::xarray<float> run_model(const model& m, const xt::xarray<float>& x, const run_options& opt = {}) {
  return run_layers(m, x, 0, m.layers.size(), opt);
}

// Index of the largest logit per row of [N, classes] (first on ties).
std::vector<std::size_t> top1(const xt::xarray<float>& logits);

// Top-1 accuracy of logits [N, classes] against labels [N].
double top1_accuracy(const xt::xarray<float>& logits, const std::vector<std::int64_t>& labels);

}  // namespace examples
