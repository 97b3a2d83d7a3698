// quant/parallel.hpp — quant's thread count and its deterministic parallel loop
// (docs/threading.md).
//
//   parallel_for(count, work, f):  f(0), f(1), ..., f(count - 1), each piece once, on up to
//                                  num_threads() threads when work >= parallel_min_elements
//
// Contract of parallel_for:
//  * Pieces. f(t) is called for every t in [0, count), in any order and possibly at the same
//    time on different threads: pieces must write disjoint memory. Which thread runs a piece
//    is unspecified (dynamic schedule), so a piece's result must depend only on t; then the
//    loop's result is the same for any thread count. `work` (the elements the whole loop
//    touches) only decides whether threads are worth it: below parallel_min_elements, with
//    count <= 1, num_threads() == 1, inside an enclosing OpenMP parallel region (OpenMP does
//    not nest by default) or without OpenMP, the pieces run serially in order 0, 1, ...
//  * Exceptions. If pieces throw, parallel_for rethrows, on the calling thread after every
//    thread has joined, the exception of the lowest-numbered piece that threw: the one the
//    serial loop would throw, with its type and message. Every piece below it has run to
//    completion; pieces above it may or may not have run (what they write is unspecified).
//    No exception ever leaves an OpenMP region (that would call std::terminate).
//  * Threads. Threads come from OpenMP when the translation unit is compiled with -fopenmp;
//    otherwise every loop is serial. set_num_threads(n) caps the threads of every quant loop,
//    process-wide: n = 1 serial, n > 1 at most n, n <= 0 OpenMP's default (OMP_NUM_THREADS,
//    else the number of cores). num_threads() is what a loop started now on this thread would
//    use (1 without OpenMP, and 1 while an algorithm that alternates its passes with a
//    threaded BLAS holds the cores for it, see docs/threading.md).
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace quant {

// Work (elements) from which a loop runs on several threads: below it a thread costs more
// than it saves.
constexpr std::size_t parallel_min_elements = std::size_t(1) << 16;

namespace detail {
inline int& thread_limit() noexcept {
  static int limit = 0;
  return limit;
}
// Cap set on this thread by a detail::beside_blas scope (0 = none).
inline int& beside_blas_cap() noexcept {
  thread_local int cap = 0;
  return cap;
}
}  // namespace detail

// Caps the threads of quant's loops: 1 = serial, n > 1 = at most n, n <= 0 = OpenMP's default.
inline void set_num_threads(int n) noexcept { detail::thread_limit() = n < 0 ? 0 : n; }

// Threads a quant loop started now on this thread would use (1 without OpenMP).
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

// Calls f(t) for t in [0, count): see the contract at the top of this header.
template <class F>
void parallel_for(std::size_t count, std::size_t work, F&& f) {
#if defined(_OPENMP)
  const int threads = num_threads();
  if (threads > 1 && count > 1 && work >= parallel_min_elements) {
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
  (void)work;
  for (std::size_t t = 0; t < count; ++t) f(t);
}

}  // namespace quant
