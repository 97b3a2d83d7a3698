// Fake-quant throughput: eager kernel (per tensor; per channel with C = 256 along axis 0 of
// [256, n/256] and along the last axis of [n/256, 256]) at 1 and 2 threads, and the lazy
// expression (per tensor: vectorized functor; per channel: broadcast parameters).
// Inputs and outputs are xtensor containers allocated outside the timed loop, except in
// benchmarks named "_alloc", which return a fresh container each iteration (their same-run
// baseline: alloc_memcpy).
#include <cstring>

#include <quant/uniform.hpp>

#include <xtensor/xnoalias.hpp>

#include "bench_common.hpp"

namespace {

const bool baselines = quant_bench::register_copy_baselines();

using quant_bench::items;

xt::xtensor<float, 2> normal_matrix(std::size_t rows, std::size_t cols) {
  const auto v = quant_bench::normal_data(rows * cols);
  xt::xtensor<float, 2> x = xt::xtensor<float, 2>::from_shape({rows, cols});
  std::copy(v.begin(), v.end(), x.begin());
  return x;
}

quant::qparams channel_params(std::size_t channels, std::ptrdiff_t axis) {
  std::vector<float> s(channels);
  std::vector<std::int32_t> z(channels);
  for (std::size_t c = 0; c < channels; ++c) {
    s[c] = 0.01f + 0.0001f * static_cast<float>(c);
    z[c] = static_cast<std::int32_t>(c % 7) - 3;
  }
  return quant::qparams::per_channel(quant::grid::int_signed(8), s, z, axis);
}

const quant::qparams per_tensor = quant::qparams::per_tensor(quant::grid::int_signed(8), 0.02f, 0);
constexpr std::size_t channels = 256;

void fake_quant_eager_per_tensor(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  auto x = normal_matrix(1, n);
  xt::xtensor<float, 2> y = xt::zeros<float>({std::size_t(1), n});
  for (auto _ : state) {
    quant::eager::fake_quantize(x, per_tensor, y);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  items(state, n);
  quant::set_num_threads(0);
}

void fake_quant_eager_per_tensor_alloc(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  auto x = normal_matrix(1, n);
  for (auto _ : state) {
    auto y = quant::eager::fake_quantize(x, per_tensor);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  items(state, n);
  quant::set_num_threads(0);
}

// Same-run baseline for the "_alloc" rows: a fresh container each iteration, filled by
// memcpy (what any function returning a new tensor of n floats at least costs).
void alloc_memcpy(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  auto x = normal_matrix(1, n);
  for (auto _ : state) {
    auto y = xt::xtensor<float, 2>::from_shape({std::size_t(1), n});
    std::memcpy(y.data(), x.data(), n * sizeof(float));
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  items(state, n);
}

// axis 0 of [256, n/256]: one scale per long row (scalar runs).
void fake_quant_eager_per_channel_axis0(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  auto x = normal_matrix(channels, n / channels);
  xt::xtensor<float, 2> y = xt::zeros_like(x);
  const auto p = channel_params(channels, 0);
  for (auto _ : state) {
    quant::eager::fake_quantize(x, p, y);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  items(state, n);
  quant::set_num_threads(0);
}

// last axis of [n/256, 256]: the scale changes every element (vector runs).
void fake_quant_eager_per_channel_last(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  auto x = normal_matrix(n / channels, channels);
  xt::xtensor<float, 2> y = xt::zeros_like(x);
  const auto p = channel_params(channels, -1);
  for (auto _ : state) {
    quant::eager::fake_quantize(x, p, y);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  items(state, n);
  quant::set_num_threads(0);
}

// y = fake_quantize(x, s, z, grid): the per-tensor functor, vectorized by xtensor.
void fake_quant_lazy_per_tensor(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  xt::xtensor<float, 1> x = xt::flatten(normal_matrix(1, n));
  xt::xtensor<float, 1> y = xt::zeros<float>({n});
  for (auto _ : state) {
    xt::noalias(y) = quant::fake_quantize(x, 0.02f, 0, quant::grid::int_signed(8));
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  items(state, n);
}

void fake_quant_lazy_per_tensor_alloc(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  xt::xtensor<float, 1> x = xt::flatten(normal_matrix(1, n));
  for (auto _ : state) {
    xt::xtensor<float, 1> y = quant::fake_quantize(x, 0.02f, 0, quant::grid::int_signed(8));
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  items(state, n);
}

// Per-channel parameters broadcast as [C, 1] operands: xtensor's stepper loop (scalar).
void fake_quant_lazy_per_channel_axis0(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  auto x = normal_matrix(channels, n / channels);
  xt::xtensor<float, 2> y = xt::zeros_like(x);
  const auto p = channel_params(channels, 0);
  for (auto _ : state) {
    xt::noalias(y) = quant::fake_quantize(x, p);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  items(state, n);
}

void sizes_and_threads(benchmark::internal::Benchmark* b) {
  for (long threads : {1L, 2L})
    for (long n : {1L << 12, 1L << 16, 1L << 20, 1L << 24}) b->Args({n, threads});
}

}  // namespace

BENCHMARK(fake_quant_eager_per_tensor)->Apply(sizes_and_threads)->UseRealTime();
BENCHMARK(fake_quant_eager_per_channel_axis0)->Apply(sizes_and_threads)->UseRealTime();
BENCHMARK(fake_quant_eager_per_channel_last)->Apply(sizes_and_threads)->UseRealTime();
BENCHMARK(alloc_memcpy)->Arg(1L << 20)->Arg(1L << 24)->UseRealTime();
BENCHMARK(fake_quant_eager_per_tensor_alloc)->Args({1L << 20, 1})->Args({1L << 24, 1})->UseRealTime();
BENCHMARK(fake_quant_lazy_per_tensor)->Apply(quant_bench::standard_sizes)->UseRealTime();
BENCHMARK(fake_quant_lazy_per_tensor_alloc)->Args({1L << 20})->Args({1L << 24})->UseRealTime();
BENCHMARK(fake_quant_lazy_per_channel_axis0)->Apply(quant_bench::standard_sizes)->UseRealTime();
