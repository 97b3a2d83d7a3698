// quant/detail/parallel.hpp — the one thread knob and deterministic loops.
//
// Eager kernels split work into fixed-size pieces whose boundaries depend only on the
// problem size, never on the thread count. Elementwise work is then trivially identical
// for any thread count; reductions compute one partial per piece and combine the partials
// serially in piece order, so sums are bit-identical for 1, 2 or 64 threads.
// Threads come from OpenMP when the user compiles with it (-fopenmp); otherwise every loop
// is serial. quant::set_num_threads(n) caps them (0 = OpenMP's default). BLAS is never
// called inside these loops (OpenBLAS + OpenMP oversubscribe a small machine).
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

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <exception>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(__GNUC__) && defined(__ELF__)
// OpenBLAS's run-time queries, when the program links OpenBLAS (null otherwise).
extern "C" int openblas_get_num_threads(void) __attribute__((weak));
extern "C" int openblas_get_parallel(void) __attribute__((weak));
#endif

namespace quant {

namespace detail {
inline int& thread_limit() noexcept {
  static int limit = 0;
  return limit;
}
// Cap set by a beside_blas scope on this thread (0 = none).
inline int& beside_blas_cap() noexcept {
  thread_local int cap = 0;
  return cap;
}
// Pieces below this size are not worth a thread.
constexpr std::size_t parallel_min_elements = std::size_t(1) << 16;
}  // namespace detail

// Caps the threads of quant's eager kernels (0 = OpenMP default, 1 = serial).
inline void set_num_threads(int n) noexcept { detail::thread_limit() = n < 0 ? 0 : n; }

// Threads an eager kernel would use now (1 without OpenMP).
inline int num_threads() noexcept {
#if defined(_OPENMP)
  const int limit = detail::thread_limit();
  const int threads = limit > 0 ? limit : omp_get_max_threads();
  const int cap = detail::beside_blas_cap();
  return cap > 0 && cap < threads ? cap : threads;
#else
  return 1;
#endif
}

namespace detail {

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

// Calls f(t) for t in [0, count). Parallel only when total_elements is large enough.
// An exception thrown by f reaches the caller as the serial loop would throw it: the one
// of the lowest piece that throws (an exception must not leave an OpenMP region, where it
// would call std::terminate, so pieces catch it and the loop rethrows it after the join).
// Pieces above a failed one may be skipped; what they would have written is unspecified.
template <class F>
void parallel_for(std::size_t count, std::size_t total_elements, F&& f) {
#if defined(_OPENMP)
  const int threads = num_threads();
  if (threads > 1 && count > 1 && total_elements >= parallel_min_elements) {
    const long long n = static_cast<long long>(count);
    std::atomic<std::size_t> first_failed{count};  // lowest piece that threw so far
    std::exception_ptr error;                       // its exception (written under the lock)
    // dynamic: a thread that starts late (the machine is busy) takes fewer pieces instead
    // of holding the others at the barrier; results do not depend on who runs a piece.
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (long long t = 0; t < n; ++t) {
      const std::size_t piece = static_cast<std::size_t>(t);
      if (piece > first_failed.load(std::memory_order_relaxed)) continue;
      try {
        f(piece);
      } catch (...) {
#pragma omp critical(quant_parallel_for_error)
        if (piece < first_failed.load(std::memory_order_relaxed)) {
          first_failed.store(piece, std::memory_order_relaxed);
          error = std::current_exception();
        }
      }
    }
    if (error) std::rethrow_exception(error);
    return;
  }
#endif
  (void)total_elements;
  for (std::size_t t = 0; t < count; ++t) f(t);
}

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
