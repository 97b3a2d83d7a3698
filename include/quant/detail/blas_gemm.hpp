// quant/detail/blas_gemm.hpp — the two row-major float GEMMs of the reconstruction loops,
// through BLAS (xtensor-blas), into preallocated outputs:
//
//   gemm_nt(A, B, C):  C = A B^T   (A [m, k], B [n, k], C [m, n])   forward: rows x weights^T
//   gemm_tn(A, B, C):  C = A^T B   (A [k, m], B [k, n], C [m, n])   weight gradient: dY^T X
//   gemm_nn(A, B, C):  C = A B     (A [m, k], B [k, n], C [m, n])   input gradient: dY W
//
// The only header of the AdaRound family that includes xtensor-blas. Callers run them
// outside any OpenMP parallel region (docs/threading.md).
#pragma once

#include <xtensor-blas/xlinalg.hpp>
#include <xtensor/xtensor.hpp>

namespace quant {
namespace detail {

// C = A B^T (A [m, k], B [n, k]) through BLAS, into the preallocated C.
inline void gemm_nt(const xt::xtensor<float, 2>& a, const xt::xtensor<float, 2>& b, xt::xtensor<float, 2>& c) {
  xt::blas::gemm(a, b, c, false, true);
}
// C = A^T B (A [k, m], B [k, n]).
inline void gemm_tn(const xt::xtensor<float, 2>& a, const xt::xtensor<float, 2>& b, xt::xtensor<float, 2>& c) {
  xt::blas::gemm(a, b, c, true, false);
}
// C = A B (A [m, k], B [k, n]).
inline void gemm_nn(const xt::xtensor<float, 2>& a, const xt::xtensor<float, 2>& b, xt::xtensor<float, 2>& c) {
  xt::blas::gemm(a, b, c, false, false);
}

}  // namespace detail
}  // namespace quant
