// quant/detail/parallel.hpp — the one thread knob and deterministic loops.
//
// Eager kernels split work into fixed-size pieces whose boundaries depend only on the
// problem size, never on the thread count. Elementwise work is then trivially identical
// for any thread count; reductions compute one partial per piece and combine the partials
// serially in piece order, so sums are bit-identical for 1, 2 or 64 threads.
// Threads come from OpenMP when the user compiles with it (-fopenmp); otherwise every loop
// is serial. quant::set_num_threads(n) caps them (0 = OpenMP's default). BLAS is never
// called inside these loops (OpenBLAS + OpenMP oversubscribe a small machine).
#pragma once

#include <cstddef>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace quant {

namespace detail {
inline int& thread_limit() noexcept {
  static int limit = 0;
  return limit;
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
  return limit > 0 ? limit : omp_get_max_threads();
#else
  return 1;
#endif
}

namespace detail {

// Calls f(t) for t in [0, count). Parallel only when total_elements is large enough.
template <class F>
void parallel_for(std::size_t count, std::size_t total_elements, F&& f) {
#if defined(_OPENMP)
  const int threads = num_threads();
  if (threads > 1 && count > 1 && total_elements >= parallel_min_elements) {
    const long long n = static_cast<long long>(count);
    // dynamic: a thread that starts late (the machine is busy) takes fewer pieces instead
    // of holding the others at the barrier; results do not depend on who runs a piece.
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (long long t = 0; t < n; ++t) f(static_cast<std::size_t>(t));
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
