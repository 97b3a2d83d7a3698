// quant/detail/parallel.hpp — internals of quant's loops: the BLAS-aware thread cap and
// the deterministic reduction. The public part (set_num_threads, num_threads, parallel_for
// and its contract) is quant/parallel.hpp.
//
// Deterministic reduction: a reduction computes one partial per fixed piece (boundaries
// depend only on the problem size, never on the thread count) and combines the partials
// serially in piece order, so sums are bit-identical for 1, 2 or 64 threads.
// BLAS is never called inside quant's parallel loops.
//
// Beside a threaded BLAS: algorithms that alternate their own passes with BLAS calls
// (AdaRound, block reconstruction, k-means on its GEMM path) hold a detail::beside_blas
// scope, which runs quant's loops on one thread while OpenMP's idle workers spin
// (libgomp's default wait policy: each worker keeps spinning for a while after every
// parallel region, longer than a layer's GEMM) and a pthreads OpenBLAS runs several
// threads of its own; otherwise both libraries' threads compete for the same cores.
// With OMP_WAIT_POLICY=passive (or GOMP_SPINCOUNT=0), a single-threaded or OpenMP
// OpenBLAS, or another BLAS, the scope changes nothing. See docs/threading.md.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <vector>

#include "../parallel.hpp"

#if defined(__GNUC__) && defined(__ELF__)
// OpenBLAS's run-time queries, when the program links OpenBLAS (null otherwise).
extern "C" int openblas_get_num_threads(void) __attribute__((weak));
extern "C" int openblas_get_parallel(void) __attribute__((weak));
#endif

namespace quant {
namespace detail {

// The library's own loops call these by their detail:: names.
using quant::parallel_for;
using quant::parallel_min_elements;

// True unless the environment libgomp read at start-up makes its idle workers sleep at
// once: OMP_WAIT_POLICY=passive (any case) or GOMP_SPINCOUNT=0.
inline bool openmp_workers_spin() noexcept {
  static const bool spin = [] {
    if (const char* p = std::getenv("OMP_WAIT_POLICY")) {
      const char* want = "passive";
      std::size_t i = 0;
      while (p[i] && want[i] && (p[i] | 0x20) == want[i]) ++i;
      if (want[i] == '\0' && p[i] == '\0') return false;
    }
    if (const char* c = std::getenv("GOMP_SPINCOUNT")) {
      char* end = nullptr;
      if (std::strtoull(c, &end, 10) == 0 && end != c) return false;
    }
    return true;
  }();
  return spin;
}

// Threads of a pthreads OpenBLAS (a pool of its own, beside OpenMP's); 1 for an OpenMP or
// sequential OpenBLAS, another BLAS, or none.
inline int blas_pthreads() noexcept {
#if defined(__GNUC__) && defined(__ELF__)
  if (&::openblas_get_parallel != nullptr && &::openblas_get_num_threads != nullptr && ::openblas_get_parallel() == 1)
    return ::openblas_get_num_threads();
#endif
  return 1;
}

// Held by an algorithm that alternates quant's loops with BLAS calls: while it lives, this
// thread's quant loops run serially if OpenMP's workers would spin beside a threaded
// pthreads BLAS (see the header comment). Results do not change: they are identical for
// any thread count.
class beside_blas {
 public:
  beside_blas() noexcept : saved_(beside_blas_cap()) {
    if (openmp_workers_spin() && blas_pthreads() > 1) beside_blas_cap() = 1;
  }
  ~beside_blas() { beside_blas_cap() = saved_; }
  beside_blas(const beside_blas&) = delete;
  beside_blas& operator=(const beside_blas&) = delete;

 private:
  int saved_;
};

// Deterministic reduction: partial(piece_begin, piece_end) over fixed pieces of
// `piece` elements, combined left to right with combine(acc, partial).
template <class T, class Partial, class Combine>
T parallel_reduce(std::size_t n, std::size_t piece, T init, Partial&& partial, Combine&& combine) {
  if (n == 0) return init;
  const std::size_t pieces = (n + piece - 1) / piece;
  std::vector<T> parts(pieces, init);
  parallel_for(pieces, n, [&](std::size_t k) {
    const std::size_t b = k * piece;
    const std::size_t e = b + piece < n ? b + piece : n;
    parts[k] = partial(b, e);
  });
  T acc = init;
  for (auto& p : parts) acc = combine(acc, p);
  return acc;
}

}  // namespace detail
}  // namespace quant
