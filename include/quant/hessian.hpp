// quant/hessian.hpp — the Hessian of a linear layer's reconstruction loss, accumulated over
// calibration batches (the input GPTQ needs; Frantar et al. 2022, "GPTQ"; docs/gptq.md).
//
//   layer loss   L(W_q) = (1/n) sum_r ||(W - W_q) x_r||^2,   x_r = row r of X [n, in]
//   Hessian      H = d^2 L / dw_o^2 = 2 X^T X / n   (the same [in, in] matrix for every
//                output row o of W [out, in])
// A conv layer is the same thing on its im2col rows (im2col.hpp): one row per output
// position, one column per filter weight, so W [out, C*KH*KW] and H [C*KH*KW, C*KH*KW].
//
// Streaming and merging. The accumulator keeps the Gram matrix S = sum_r x_r x_r^T in
// double and the row count n; H = 2 S / n is formed on request. Each float product
// x_ri x_rj is exact in double (24 + 24 significant bits < 53), so the only rounding is
// in the sums: two accumulators over two shards, merged, give the accumulator over all
// rows up to the order of those double additions (|difference| <= 2 gamma_n sum_r |x_ri x_rj|,
// gamma_n = n u / (1 - n u), u = 2^-53; exactly equal when the products' partial sums are).
// A keep-the-mean update (H <- H m/(m+k) + 2 X_b^T X_b/(m+k)) would round once more per
// batch; keeping the sum avoids that.
//
// Computation: rows are converted to double in chunks and added with one BLAS DSYRK per
// chunk (upper triangle; the lower one is filled when H is read). BLAS is called outside
// any of quant's parallel regions. OpenBLAS splits a SYRK over output blocks, never over
// the row (summation) index, so S does not depend on its thread count either (tested).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <xtensor-blas/xblas.hpp>
#include <xtensor/xtensor.hpp>

#include "config.hpp"
#include "detail/checks.hpp"
#include "detail/contiguous.hpp"
#include "error.hpp"
#include "im2col.hpp"

namespace quant {

class hessian_accumulator {
 public:
  hessian_accumulator() = default;
  // An empty accumulator for layers with `inputs` input features (columns of X).
  // Throws quant::invalid_argument for inputs == 0.
  explicit hessian_accumulator(std::size_t inputs) : in_(inputs) {
    if (inputs == 0) detail::fail<invalid_argument>("hessian_accumulator", "inputs", inputs, "must be >= 1");
    gram_ = xt::zeros<double>({inputs, inputs});
  }

  // Adds the rows of x [rows, inputs] (a Linear layer's input batch or an im2col matrix).
  // Throws quant::length_error on a column count other than inputs(), quant::domain_error
  // on NaN / inf (nothing is added then).
  template <class E>
  void update(const xt::xexpression<E>& x) {
    const char* fn = "hessian_accumulator::update";
    const auto in = detail::as_contiguous(x);
    if (in.shape().size() != 2 || static_cast<std::size_t>(in.shape()[1]) != in_)
      detail::fail<length_error>(fn, "x.shape()", detail::shape_string(in.shape()),
                                 "must be [rows, " + std::to_string(in_) + "]");
    const std::size_t rows = static_cast<std::size_t>(in.shape()[0]);
    const float* p = in.data();
    detail::require_finite(p, rows * in_, fn, "x");
    add_rows(p, rows);
  }

  // Adds the im2col rows of an NCHW batch x [N, C, H, W] for a conv layer of geometry g.
  void update(const xt::xtensor<float, 4>& x, const conv2d_shape& g) { update(im2col(x, g)); }

  // Adds everything `other` has seen. Throws quant::length_error when the input counts differ.
  void merge(const hessian_accumulator& other) {
    if (other.in_ != in_)
      detail::fail<length_error>("hessian_accumulator::merge", "other.inputs()", other.in_,
                                 "must equal inputs() = " + std::to_string(in_));
    gram_ += other.gram_;
    rows_ += other.rows_;
  }

  std::size_t inputs() const noexcept { return in_; }
  std::uint64_t rows() const noexcept { return rows_; }
  bool empty() const noexcept { return rows_ == 0; }
  void reset() {
    gram_.fill(0.0);
    rows_ = 0;
  }

  // S = sum_r x_r x_r^T, symmetric [inputs, inputs].
  xt::xtensor<double, 2> gram() const {
    xt::xtensor<double, 2> s = gram_;
    symmetrize_upper(s);
    return s;
  }
  // H = 2 S / n. Throws quant::domain_error before any row was added.
  xt::xtensor<double, 2> hessian() const {
    if (rows_ == 0)
      detail::fail<domain_error>("hessian_accumulator::hessian", "rows()", 0, "no calibration rows were added");
    xt::xtensor<double, 2> h = gram();
    const double f = 2.0 / static_cast<double>(rows_);
    for (auto& v : h) v *= f;
    return h;
  }

  // Copies the upper triangle of a square row-major matrix onto its lower one.
  static void symmetrize_upper(xt::xtensor<double, 2>& m) noexcept {
    const std::size_t n = m.shape()[0];
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < i; ++j) m(i, j) = m(j, i);
  }

 private:
  // S += X^T X for rows of a row-major float matrix, through double chunks.
  void add_rows(const float* x, std::size_t rows) {
    constexpr std::size_t chunk = 512;
    std::vector<double> buf(std::min(rows, chunk) * in_);
    for (std::size_t r0 = 0; r0 < rows; r0 += chunk) {
      const std::size_t m = std::min(chunk, rows - r0);
      std::copy(x + r0 * in_, x + (r0 + m) * in_, buf.begin());
      // row-major S (upper) += buf^T buf, buf [m, in]
      cxxblas::syrk<xt::blas_index_t>(cxxblas::StorageOrder::RowMajor, cxxblas::StorageUpLo::Upper,
                                      cxxblas::Transpose::Trans, static_cast<xt::blas_index_t>(in_),
                                      static_cast<xt::blas_index_t>(m), 1.0, buf.data(),
                                      static_cast<xt::blas_index_t>(in_), 1.0, gram_.data(),
                                      static_cast<xt::blas_index_t>(in_));
    }
    rows_ += rows;
  }

  std::size_t in_ = 0;
  std::uint64_t rows_ = 0;
  xt::xtensor<double, 2> gram_;  // upper triangle valid, lower triangle zero
};

}  // namespace quant
