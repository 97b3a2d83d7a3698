// quant/gptq.hpp — GPTQ: quantize a layer's weights column by column, pushing each column's
// rounding error onto the columns not yet quantized through the inverse Hessian of the
// layer's reconstruction loss (Frantar et al. 2022, "GPTQ: Accurate Post-Training
// Quantization for Generative Pre-trained Transformers", Algorithm 1; built on Optimal
// Brain Quantization, Frantar & Alistarh 2022, "Optimal Brain Compression"; docs/gptq.md).
//
//   loss        L(W_q) = (1/n) sum_r ||(W - W_q) x_r||^2, each output row o independently
//   Hessian     H = 2 X^T X / n   (hessian.hpp; conv layers through their im2col rows)
//   dead inputs H_ii = 0 (input i is 0 on every row): H_ii <- 1 and W[:, i] <- 0
//   dampening   H <- H + damp * mean(diag H) * I          (damp = 0.01 by default)
//   act order   optional: sweep the columns by decreasing H_ii (ties: lower index first),
//               results returned in the original column order
//   factor      U upper triangular with H^-1 = U^T U      (computed in double)
//   sweep       for each column j in sweep order, for every row o:
//                 q_oj = quantize(w_oj),  e_oj = (w_oj - dequantize(q_oj)) / U_jj,
//                 w_ok <- w_ok - e_oj U_jk  for all k after j
//   lazy batches columns in blocks of B (default 128): inside a block only the block's
//               columns are updated; after the block, W[:, end:] -= E U[block, end:] (one
//               GEMM, E [out, B] the block's e)
// This is the OBQ update w_k <- w_k - (w_j - q_j) [H_j^-1]_jk / [H_j^-1]_jj with H_j^-1 the
// inverse Hessian of the columns still free (row j of U / U_jj is row j of H_j^-1 / its
// diagonal); the Cholesky form computes all the H_j^-1 at once.
//
// Grid. Uniform affine, symmetric or asymmetric, any quant::grid, quantized as everywhere
// in quant: q = clamp(round_half_even(float(w) * (1/s)) + z, qmin, qmax), dequantized
// (q - z) * s in float. Scales and zero points:
//   per output channel (group_size = 0): one (s, z) per row of W, chosen before the sweep
//     by the observer (MSE search, range/mse.hpp, by default; or min-max) on the row;
//   per group (group_size = g): one (s, z) per row and per g consecutive input columns
//     (qparams::per_group along axis 1), either fixed before the sweep from the weights
//     GPTQ starts from (gptq_group_scales::fixed), or computed when the sweep reaches the
//     group's first column, from the group's current, error-compensated weights
//     (gptq_group_scales::at_group_start — the paper's choice; with act order "first" is
//     the first of the group's columns in sweep order, and the group keeps the original
//     column layout);
//   caller-provided qparams (per tensor, per channel along axis 0, or per group along
//     axis 1): used as they are.
//
// Numerics. The Hessian, its factorization and the sweep run in double; only the
// quantization of a weight happens in float (float(w), the library's affine map). U comes
// from one Cholesky factorization of the reversed H and one triangular inverse (LAPACK
// DPOTRF + DTRTRI): with J the exchange matrix, J H J = L L^T gives H = R R^T, R = J L J
// upper, so H^-1 = R^-T R^-1 and U = R^-1 = J L^-1 J — the same U as the
// Cholesky(H) -> inverse -> Cholesky sequence of the paper, with a third of the work and
// no explicitly formed inverse. If H + damp mean(diag H) I is not positive definite in
// double, quant::domain_error names the damp that was tried.
// Threads: rows are independent inside a block, so the in-block sweep runs over row tiles
// on quant's threads; BLAS (the lazy-batch GEMM, the SYRK of the Hessian, LAPACK) runs
// outside any parallel region. Like AdaRound, the call holds a detail::beside_blas scope
// (quant's loops on one thread while a multi-threaded OpenBLAS and spinning OpenMP workers
// would compete for the cores; see detail/parallel.hpp). Results are bit-identical for any quant thread count; with
// OpenBLAS they are also identical for 1 and 2 BLAS threads (its level-3 routines split the
// output into blocks, never the summation index; tested, and measured on a 256 x 1152 layer
// with 8192 rows).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include <xtensor-blas/xblas.hpp>
#include <xtensor-blas/xlapack.hpp>
#include <xtensor/xtensor.hpp>

#include "detail/checks.hpp"
#include "detail/parallel.hpp"
#include "error.hpp"
#include "hessian.hpp"
#include "qparams.hpp"
#include "range/mse.hpp"
#include "rounding.hpp"
#include "uniform.hpp"

namespace quant {

// How scales are chosen from weights (per channel, per group, fixed or at group start).
enum class gptq_observer {
  mse,     // Lp / MSE range search (range/mse.hpp, options in gptq_options::mse)
  minmax,  // min and max of the values
};

// When per-group scales are chosen.
enum class gptq_group_scales {
  fixed,           // before the sweep, from the weights GPTQ starts from ("static groups")
  at_group_start,  // when the sweep reaches the group's first column, from its current weights
};

struct gptq_options {
  quant::grid grid = quant::grid::int_signed(4);
  quant::scheme scheme = quant::scheme::symmetric;
  symmetric_scale_convention scale_convention = symmetric_scale_convention::pytorch;
  gptq_observer observer = gptq_observer::mse;
  mse_options mse{};           // the MSE search (its scale_convention is replaced by the one above)
  std::size_t group_size = 0;  // 0: one scale per output channel; g: groups of g input columns
  gptq_group_scales group_scales = gptq_group_scales::fixed;
  bool act_order = false;      // sweep by decreasing H_ii
  double damp = 0.01;          // dampening, relative to mean(diag H)
  std::size_t block_size = 128;  // columns per lazy batch (1: no batching)

  // Throws quant::invalid_argument naming `function` and the field.
  void validate(const char* function) const {
    grid.validate(function);
    mse.validate(function);
    if (!(std::isfinite(damp) && damp >= 0.0))
      detail::fail<invalid_argument>(function, "damp", damp, "must be finite and >= 0");
    if (block_size == 0) detail::fail<invalid_argument>(function, "block_size", block_size, "must be >= 1");
  }
};

struct gptq_report {
  // Mean over the calibration rows of ||(W - W_q) x||^2, from the Hessian's Gram matrix
  // (= (1/n) sum_o (w_o - w_q,o)^T S (w_o - w_q,o)): round-to-nearest with the same qparams,
  // and GPTQ.
  double rtn_error = 0.0;
  double gptq_error = 0.0;
  double flipped_fraction = 0.0;  // integers that differ from round-to-nearest (dead inputs' included)
  std::size_t dead_inputs = 0;    // inputs with H_ii = 0
  double damp = 0.0;              // what was added to the diagonal: damp * mean(diag H)
  double seconds = 0.0;           // the whole call (with the Hessian when X was given)
};

struct gptq_result {
  xt::xtensor<std::int32_t, 2> integer_weights;  // [out, in], original column order
  quant::qparams qparams;                        // per channel (axis 0) or per group (axis 1)
  xt::xtensor<float, 2> weights;                 // fake-quantized: s (q - z)
  gptq_report report;
  std::vector<std::size_t> column_order;         // the sweep order (identity without act order)
};

namespace detail {

struct gptq_param {
  float scale, inv_scale, zero_point;
};

inline gptq_param gptq_param_of(scale_zero_point sz) noexcept {
  return {sz.scale, 1.0f / sz.scale, static_cast<float>(sz.zero_point)};
}

// The observer of gptq_options on n >= 1 finite floats (serial).
inline scale_zero_point gptq_observe(const float* x, std::size_t n, const gptq_options& opt) {
  float lo = x[0], hi = x[0];
  for (std::size_t i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  if (opt.observer == gptq_observer::minmax) return scale_from_range(opt.grid, lo, hi, opt.scheme, opt.scale_convention);
  mse_options m = opt.mse;
  m.scale_convention = opt.scale_convention;
  return lp_search(x, n, lo, hi, opt.grid, opt.scheme, m).params;
}

// U, upper triangular with H^-1 = U^T U, for symmetric positive definite H [n, n]
// (row-major, double). Returns false when H is not positive definite.
inline bool gptq_inverse_cholesky_upper(const xt::xtensor<double, 2>& h, xt::xtensor<double, 2>& u) {
  const std::size_t n = h.shape()[0];
  // G = J H J; symmetric, so the row-major buffer is G in column-major order too.
  std::vector<double> g(n * n);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) g[i * n + j] = h(n - 1 - i, n - 1 - j);
  const auto bn = static_cast<xt::blas_index_t>(n);
  if (cxxlapack::potrf<xt::blas_index_t>('L', bn, g.data(), bn) != 0) return false;  // G = L L^T
  if (cxxlapack::trtri<xt::blas_index_t>('L', 'N', bn, g.data(), bn) != 0) return false;  // L^-1
  // U = J L^-1 J: U(i, j) = L^-1(n-1-i, n-1-j), column-major (a, b) at g[b * n + a].
  u = xt::zeros<double>({n, n});
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i; j < n; ++j) u(i, j) = g[(n - 1 - j) * n + (n - 1 - i)];
  return true;
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The scale / zero-point table the sweep reads: row o, group k at params[o * groups + k].
struct gptq_layout {
  std::size_t out = 0, in = 0, group = 0, groups = 1;  // group: columns per group (in when per channel)
  bool dynamic = false;
  std::vector<gptq_param> params;
};

inline gptq_layout gptq_layout_from_qparams(const qparams& p, std::size_t out, std::size_t in, const char* fn) {
  const std::vector<std::size_t> shape{out, in};
  const std::size_t ax = p.check_shape(shape, fn);
  gptq_layout l;
  l.out = out, l.in = in;
  auto at = [&](std::size_t i) { return gptq_param_of({p.scale(i), p.zero_point(i)}); };
  switch (p.granularity()) {
    case granularity::per_tensor:
      l.group = in;
      l.params.assign(out, at(0));
      break;
    case granularity::per_channel:
      if (ax != 0)
        fail<invalid_argument>(fn, "weight_qparams.axis()", p.axis(),
                               "per-channel weight scales must be along axis 0 (output channels)");
      l.group = in;
      for (std::size_t o = 0; o < out; ++o) l.params.push_back(at(o));
      break;
    case granularity::per_group:
      if (ax != 1)
        fail<invalid_argument>(fn, "weight_qparams.axis()", p.axis(),
                               "per-group weight scales must be along axis 1 (input columns)");
      l.group = p.group_size();
      l.groups = in / l.group;
      for (std::size_t i = 0; i < out * l.groups; ++i) l.params.push_back(at(i));
      break;
  }
  return l;
}

inline qparams gptq_qparams_of(const gptq_layout& l, grid g) {
  std::vector<float> s(l.params.size());
  std::vector<std::int32_t> z(l.params.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    s[i] = l.params[i].scale;
    z[i] = static_cast<std::int32_t>(l.params[i].zero_point);
  }
  if (l.groups == 1) return qparams::per_channel(g, std::move(s), std::move(z), 0);
  return qparams::per_group(g, std::move(s), std::move(z), 1, l.group);
}

inline gptq_result gptq_run(const xt::xtensor<float, 2>& W, const hessian_accumulator& acc, const gptq_options& opt,
                            const qparams* user_qp, std::chrono::steady_clock::time_point t0) {
  const char* fn = "gptq_layer";
  const beside_blas blas_scope;  // the sweep alternates with BLAS: quant's loops beside its threads
  opt.validate(fn);
  const std::size_t out = W.shape()[0], in = W.shape()[1];
  if (out == 0 || in == 0) fail<invalid_argument>(fn, "W.shape()", shape_string(W.shape()), "must be non-empty");
  require_finite(W.data(), W.size(), fn, "W");
  if (acc.inputs() != in)
    fail<length_error>(fn, "hessian.inputs()", acc.inputs(), "must equal W.shape()[1] = " + std::to_string(in));
  if (acc.empty()) fail<invalid_argument>(fn, "hessian.rows()", 0, "calibration data must have at least one row");

  // ---- scale layout -------------------------------------------------------------------
  gptq_layout lay;
  if (user_qp) {
    if (opt.group_size != 0)
      fail<invalid_argument>(fn, "group_size", opt.group_size, "must be 0 when weight_qparams are given");
    if (opt.group_scales != gptq_group_scales::fixed)
      fail<invalid_argument>(fn, "group_scales", "at_group_start", "given weight_qparams are fixed");
    lay = gptq_layout_from_qparams(*user_qp, out, in, fn);
  } else {
    lay.out = out, lay.in = in;
    if (opt.group_size != 0) {
      if (opt.group_size > in || in % opt.group_size != 0)
        fail<invalid_argument>(fn, "group_size", opt.group_size,
                               "must divide the " + std::to_string(in) + " input columns");
      lay.group = opt.group_size;
      lay.groups = in / opt.group_size;
      lay.dynamic = opt.group_scales == gptq_group_scales::at_group_start;
    } else {
      lay.group = in;
    }
    lay.params.resize(out * lay.groups);
  }
  const qparams* rtn_qp = user_qp;  // set below for observer-chosen scales

  // ---- Hessian: dead inputs, dampening, order ---------------------------------------
  const xt::xtensor<double, 2> S = acc.gram();
  const double n_rows = static_cast<double>(acc.rows());
  xt::xtensor<double, 2> H = S * (2.0 / n_rows);
  std::vector<char> dead(in, 0);
  std::size_t dead_count = 0;
  for (std::size_t i = 0; i < in; ++i)
    if (H(i, i) == 0.0) {
      H(i, i) = 1.0;
      dead[i] = 1;
      ++dead_count;
    }
  double diag_sum = 0.0;
  for (std::size_t i = 0; i < in; ++i) diag_sum += H(i, i);
  const double damp_abs = opt.damp * (diag_sum / static_cast<double>(in));

  std::vector<std::size_t> order(in);
  std::iota(order.begin(), order.end(), std::size_t(0));
  if (opt.act_order)
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return H(a, a) > H(b, b); });
  std::vector<std::size_t> pos(in);
  for (std::size_t j = 0; j < in; ++j) pos[order[j]] = j;

  // The weights GPTQ starts from (dead inputs' columns zeroed), in double.
  xt::xtensor<double, 2> W0 = xt::xtensor<double, 2>::from_shape({out, in});
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t i = 0; i < in; ++i) W0(o, i) = dead[i] ? 0.0 : static_cast<double>(W(o, i));

  // Fixed scales from the starting weights (the same observer call as at_group_start).
  if (!user_qp && !lay.dynamic) {
    parallel_for(out, out * in * 8, [&](std::size_t o) {
      std::vector<float> v(lay.group);
      for (std::size_t k = 0; k < lay.groups; ++k) {
        for (std::size_t c = 0; c < lay.group; ++c) v[c] = static_cast<float>(W0(o, k * lay.group + c));
        lay.params[o * lay.groups + k] = gptq_param_of(gptq_observe(v.data(), lay.group, opt));
      }
    });
  }

  // Permuted, dampened H and its inverse Cholesky factor.
  xt::xtensor<double, 2> Hp = xt::xtensor<double, 2>::from_shape({in, in});
  for (std::size_t i = 0; i < in; ++i)
    for (std::size_t j = 0; j < in; ++j) Hp(i, j) = H(order[i], order[j]);
  for (std::size_t i = 0; i < in; ++i) Hp(i, i) += damp_abs;
  xt::xtensor<double, 2> U;
  if (!gptq_inverse_cholesky_upper(Hp, U))
    fail<domain_error>(fn, "damp", opt.damp,
                       "H + damp * mean(diag H) * I (damp * mean = " + std::to_string(damp_abs) +
                           ") is not positive definite; raise damp");

  // ---- the sweep ---------------------------------------------------------------------
  xt::xtensor<double, 2> Wp = xt::xtensor<double, 2>::from_shape({out, in});
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t j = 0; j < in; ++j) Wp(o, j) = W0(o, order[j]);
  xt::xtensor<std::int32_t, 2> Qp = xt::xtensor<std::int32_t, 2>::from_shape({out, in});
  // at_group_start: is sweep position j the first column of its group in sweep order?
  std::vector<char> starts(in, 0);
  if (lay.dynamic) {
    std::vector<char> seen(lay.groups, 0);
    for (std::size_t j = 0; j < in; ++j) {
      const std::size_t k = order[j] / lay.group;
      if (!seen[k]) starts[j] = seen[k] = 1;
    }
  }
  const std::size_t B = std::min(opt.block_size, in);
  xt::xtensor<double, 2> E = xt::xtensor<double, 2>::from_shape({out, B});
  const float qmin = static_cast<float>(opt.grid.qmin()), qmax = static_cast<float>(opt.grid.qmax());
  const float gq_min = user_qp ? static_cast<float>(user_qp->qmin()) : qmin;
  const float gq_max = user_qp ? static_cast<float>(user_qp->qmax()) : qmax;
  constexpr std::size_t tile = 8;
  const std::size_t tiles = (out + tile - 1) / tile;
  for (std::size_t b0 = 0; b0 < in; b0 += B) {
    const std::size_t b1 = std::min(b0 + B, in), bw = b1 - b0;
    parallel_for(tiles, out * bw * bw / 2 + out * bw, [&](std::size_t t) {
      std::vector<float> vals(lay.dynamic ? lay.group : 0);
      const std::size_t o_end = std::min(out, (t + 1) * tile);
      for (std::size_t o = t * tile; o < o_end; ++o) {
        double* w = &Wp(o, 0);
        double* e = &E(o, 0);
        for (std::size_t j = b0; j < b1; ++j) {
          const std::size_t col = order[j], k = col / lay.group;
          if (lay.dynamic && starts[j]) {
            // the group's current weights: in-block columns are up to date, later ones
            // still owe this block's updates from columns b0..j-1
            for (std::size_t c = 0; c < lay.group; ++c) {
              const std::size_t p = pos[k * lay.group + c];
              double v = w[p];
              if (p >= b1)
                for (std::size_t jj = b0; jj < j; ++jj) v -= e[jj - b0] * U(jj, p);
              vals[c] = static_cast<float>(v);
            }
            lay.params[o * lay.groups + k] = gptq_param_of(gptq_observe(vals.data(), lay.group, opt));
          }
          const gptq_param& pr = lay.params[o * lay.groups + k];
          const float x = static_cast<float>(w[j]);
          const float q = std::min(std::max(round_half_to_even::apply(x * pr.inv_scale) + pr.zero_point, gq_min), gq_max);
          const float dq = (q - pr.zero_point) * pr.scale;
          Qp(o, j) = static_cast<std::int32_t>(q);
          const double err = (w[j] - static_cast<double>(dq)) / U(j, j);
          e[j - b0] = err;
          const double* u = &U(j, 0);
          for (std::size_t c = j + 1; c < b1; ++c) w[c] -= err * u[c];
        }
      }
    });
    if (b1 < in) {  // W[:, b1:] -= E[:, :bw] U[b0:b1, b1:]
      const auto bi = [](std::size_t v) { return static_cast<xt::blas_index_t>(v); };
      cxxblas::gemm<xt::blas_index_t>(cxxblas::StorageOrder::RowMajor, cxxblas::Transpose::NoTrans,
                                      cxxblas::Transpose::NoTrans, bi(out), bi(in - b1), bi(bw), -1.0, E.data(),
                                      bi(B), &U(b0, b1), bi(in), 1.0, &Wp(0, b1), bi(in));
    }
  }

  // ---- results in the original column order --------------------------------------------
  gptq_result r;
  r.column_order = order;
  r.integer_weights = xt::xtensor<std::int32_t, 2>::from_shape({out, in});
  r.weights = xt::xtensor<float, 2>::from_shape({out, in});
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t j = 0; j < in; ++j) r.integer_weights(o, order[j]) = Qp(o, j);
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t i = 0; i < in; ++i) {
      const gptq_param& pr = lay.params[o * lay.groups + i / lay.group];
      r.weights(o, i) = (static_cast<float>(r.integer_weights(o, i)) - pr.zero_point) * pr.scale;
    }
  r.qparams = user_qp ? *user_qp : gptq_qparams_of(lay, opt.grid);
  if (!rtn_qp) rtn_qp = &r.qparams;

  // Report: RTN with the same qparams; errors (1/n) sum_o d_o^T S d_o for both, one GEMM.
  const auto q_rtn = eager::quantize<std::int32_t>(W, *rtn_qp);
  const auto w_rtn = eager::dequantize(q_rtn, *rtn_qp);
  std::size_t flipped = 0;
  for (std::size_t i = 0; i < q_rtn.size(); ++i) flipped += q_rtn.data()[i] != r.integer_weights.data()[i];
  xt::xtensor<double, 2> D = xt::xtensor<double, 2>::from_shape({2 * out, in});
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t i = 0; i < in; ++i) {
      D(o, i) = static_cast<double>(W(o, i)) - static_cast<double>(w_rtn(o, i));
      D(out + o, i) = static_cast<double>(W(o, i)) - static_cast<double>(r.weights(o, i));
    }
  xt::xtensor<double, 2> DS = xt::xtensor<double, 2>::from_shape({2 * out, in});
  xt::blas::gemm(D, S, DS);
  double err_rtn = 0.0, err_gptq = 0.0;
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t i = 0; i < in; ++i) {
      err_rtn += D(o, i) * DS(o, i);
      err_gptq += D(out + o, i) * DS(out + o, i);
    }
  r.report.rtn_error = err_rtn / n_rows;
  r.report.gptq_error = err_gptq / n_rows;
  r.report.flipped_fraction = static_cast<double>(flipped) / static_cast<double>(out * in);
  r.report.dead_inputs = dead_count;
  r.report.damp = damp_abs;
  r.report.seconds = seconds_since(t0);
  return r;
}

inline hessian_accumulator gptq_hessian_of(const xt::xtensor<float, 2>& W, const xt::xtensor<float, 2>& X) {
  const char* fn = "gptq_layer";
  const std::size_t in = W.shape()[1];
  if (in == 0 || W.shape()[0] == 0)
    fail<invalid_argument>(fn, "W.shape()", shape_string(W.shape()), "must be non-empty");
  if (X.shape()[1] != in)
    fail<length_error>(fn, "X.shape()", shape_string(X.shape()),
                       "must be [samples, " + std::to_string(in) + "] for W of shape " + shape_string(W.shape()));
  if (X.shape()[0] == 0)
    fail<invalid_argument>(fn, "X.shape()", shape_string(X.shape()), "calibration data must have at least one row");
  require_finite(X.data(), X.size(), fn, "X");
  hessian_accumulator acc(in);
  acc.update(X);
  return acc;
}

}  // namespace detail

// GPTQ for one layer from its Hessian accumulator: W [out, in] (conv: [out, C*KH*KW]),
// scales chosen by the options' observer (per output channel, or per group of
// options.group_size input columns). Throws quant::invalid_argument (options, empty W or
// accumulator, a group size that does not divide in), quant::length_error (shapes),
// quant::domain_error (non-finite W; H not positive definite after dampening).
inline gptq_result gptq_layer(const xt::xtensor<float, 2>& W, const hessian_accumulator& hessian,
                              const gptq_options& options = {}) {
  return detail::gptq_run(W, hessian, options, nullptr, std::chrono::steady_clock::now());
}
// The same with the caller's fixed qparams (per tensor, per channel along axis 0, per group
// along axis 1); options.grid / scheme / observer / group fields are not used.
inline gptq_result gptq_layer(const xt::xtensor<float, 2>& W, const hessian_accumulator& hessian,
                              const qparams& weight_qparams, const gptq_options& options = {}) {
  return detail::gptq_run(W, hessian, options, &weight_qparams, std::chrono::steady_clock::now());
}
// From the calibration inputs X [samples, in] (a Linear layer's inputs or a conv layer's
// im2col rows); report.seconds includes the Hessian. Also throws quant::domain_error for
// non-finite X.
inline gptq_result gptq_layer(const xt::xtensor<float, 2>& W, const xt::xtensor<float, 2>& X,
                              const gptq_options& options = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  options.validate("gptq_layer");
  return detail::gptq_run(W, detail::gptq_hessian_of(W, X), options, nullptr, t0);
}
inline gptq_result gptq_layer(const xt::xtensor<float, 2>& W, const xt::xtensor<float, 2>& X,
                              const qparams& weight_qparams, const gptq_options& options = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  options.validate("gptq_layer");
  return detail::gptq_run(W, detail::gptq_hessian_of(W, X), options, &weight_qparams, t0);
}

}  // namespace quant
