// Shared pieces of quant's benchmarks.
//
// Naming convention (bench_main.cpp relies on it): every benchmark's first argument is the
// element count n, and it calls state.SetItemsProcessed(iterations * n). The baselines
// `copy_memcpy/<n>` and `copy_loop/<n>` (registered by quant_bench::register_copy_baselines)
// move the same n floats; the closing table divides each benchmark's items/s by theirs.
// Outputs are caller-provided (allocated once outside the timed loop) unless a
// benchmark's name says "_alloc".
#pragma once

#include <benchmark/benchmark.h>

#include <quant/parallel.hpp>

#include <xtensor/xtensor.hpp>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <random>
#include <vector>

// OpenBLAS's thread knobs, if the BLAS linked is OpenBLAS (weak: null otherwise).
extern "C" void openblas_set_num_threads(int) __attribute__((weak));
extern "C" int openblas_get_num_threads(void) __attribute__((weak));

namespace quant_bench {

inline std::vector<float> normal_data(std::size_t n, unsigned seed = 42, float stddev = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Items (elements) per iteration, the unit of the ratio table.
inline void items(benchmark::State& state, std::size_t n) {
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n));
}

// A rows x cols matrix of seeded N(0, 1) values.
inline xt::xtensor<float, 2> normal_matrix(std::size_t rows, std::size_t cols, unsigned seed) {
  const auto v = normal_data(rows * cols, seed);
  xt::xtensor<float, 2> x = xt::xtensor<float, 2>::from_shape({rows, cols});
  std::copy(v.begin(), v.end(), x.begin());
  return x;
}

// The sizes the issues ask for: 2^12, 2^16, 2^20, 2^24 floats.
inline void standard_sizes(benchmark::internal::Benchmark* b) {
  for (long n : {1L << 12, 1L << 16, 1L << 20, 1L << 24}) b->Arg(n);
}

inline void copy_memcpy(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  std::vector<float> src = normal_data(n), dst(n);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), n * sizeof(float));
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n));
  state.SetBytesProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n * 2 * sizeof(float)));
}

inline void copy_loop(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  std::vector<float> src = normal_data(n), dst(n);
  for (auto _ : state) {
    const float* s = src.data();
    float* d = dst.data();
    for (std::size_t i = 0; i < n; ++i) d[i] = s[i];
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n));
  state.SetBytesProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n * 2 * sizeof(float)));
}

// Registers both copy baselines over the given sizes; call once per benchmark file
// (static registration: `static const bool reg = quant_bench::register_copy_baselines();`).
// The baselines warm up for 0.2 s first: without it, copy_memcpy of 2^16 floats measured
// 0.2-1.4 Gelem/s on this machine (136 us of CPU per 256 KiB copy, the fresh buffers still
// faulting in) instead of 5.9-9.7, and every ratio to it came out 5-40x too high.
inline bool register_copy_baselines(void (*sizes)(benchmark::internal::Benchmark*) = standard_sizes) {
  benchmark::RegisterBenchmark("copy_memcpy", copy_memcpy)->Apply(sizes)->UseRealTime()->MinWarmUpTime(0.2);
  benchmark::RegisterBenchmark("copy_loop", copy_loop)->Apply(sizes)->UseRealTime()->MinWarmUpTime(0.2);
  return true;
}

// quant's threads from state.range(1), OpenBLAS's from state.range(2), for one benchmark;
// both restored afterwards. 0 leaves a library at its default (quant: OpenMP's default;
// OpenBLAS: what it chose at start-up): the configuration a user gets without setting
// anything. `ok` is false (and the run skipped) if the BLAS is not OpenBLAS and another BLAS
// thread count than 1 (or 0) is asked for.
struct threads_for_run {
  bool ok = true;
  int blas_before = 1;
  explicit threads_for_run(benchmark::State& state) {
    const int blas = static_cast<int>(state.range(2));
    if (blas == 0) {
      blas_before = openblas_get_num_threads ? openblas_get_num_threads() : 1;
    } else if (!(openblas_set_num_threads && openblas_get_num_threads)) {
      ok = blas == 1;
      if (!ok) state.SkipWithError("setting the BLAS thread count needs OpenBLAS");
    } else {
      blas_before = openblas_get_num_threads();
      openblas_set_num_threads(blas);
    }
    quant::set_num_threads(static_cast<int>(state.range(1)));
  }
  ~threads_for_run() {
    quant::set_num_threads(0);
    if (openblas_set_num_threads) openblas_set_num_threads(blas_before);
  }
  threads_for_run(const threads_for_run&) = delete;
  threads_for_run& operator=(const threads_for_run&) = delete;
};

// The median (the upper one for an even count; 0 for none).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace quant_bench
