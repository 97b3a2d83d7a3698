// Requantization of int32 accumulators to int8: 2^16, 2^20, 2^24 values as a row-major block
// [n / 256, 256], per channel (256 multipliers) and per tensor, fixed-point and float-scale
// rounding, 1 and 2 threads, the AVX2 kernel and the scalar body, beside memcpy of the same
// n int32 (copy_memcpy/<n> moves n 4-byte values: the int32 input's bytes).
#include <quant/requantize.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include "bench_common.hpp"

namespace {

void sizes(benchmark::internal::Benchmark* b) {
  for (long n : {1L << 16, 1L << 20, 1L << 24}) b->Arg(n);
}

const bool baselines = quant_bench::register_copy_baselines(sizes);

constexpr std::size_t channels = 256;

// Accumulators of a typical int8 layer: |acc| mostly below 2^17.
std::vector<std::int32_t> accumulators(std::size_t n) {
  std::mt19937 g(7);
  std::normal_distribution<float> d(0.0f, 20000.0f);
  std::vector<std::int32_t> v(n);
  for (auto& x : v) x = static_cast<std::int32_t>(d(g));
  return v;
}

quant::requantize_params params(bool per_channel, quant::requantization r) {
  std::vector<double> m(per_channel ? channels : 1);
  for (std::size_t c = 0; c < m.size(); ++c) m[c] = 0.0005 * (1.0 + 0.01 * static_cast<double>(c));
  return quant::make_requantize_params(m, quant::grid::int_signed(8), -3, r, quant::fused_activation::relu);
}

template <class Arch>
void requantize_bench(benchmark::State& state, bool per_channel, quant::requantization r) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  const auto acc = accumulators(n);
  std::vector<std::int8_t> out(n);
  const auto p = params(per_channel, r);
  for (auto _ : state) {
    quant::kernels::requantize_with<Arch>(acc.data(), n / channels, channels, p, out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  quant_bench::items(state, n);
  state.SetBytesProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n * 5));
  quant::set_num_threads(0);
}

void args(benchmark::internal::Benchmark* b) {
  for (long n : {1L << 16, 1L << 20, 1L << 24})
    for (long t : {1L, 2L}) b->Args({n, t});
  b->UseRealTime();
}
void args_one_thread(benchmark::internal::Benchmark* b) {
  for (long n : {1L << 16, 1L << 20, 1L << 24}) b->Args({n, 1});
  b->UseRealTime();
}

using quant::requantization;
using vec = quant::kernels::requantize_arch;
using scalar = quant::simd::scalar;

void requantize_vec(benchmark::State& state, bool per_channel, requantization r) {
  requantize_bench<vec>(state, per_channel, r);
}
void requantize_scalar(benchmark::State& state, bool per_channel, requantization r) {
  requantize_bench<scalar>(state, per_channel, r);
}

BENCHMARK_CAPTURE(requantize_vec, fixed_point_per_channel, true, requantization::fixed_point)->Apply(args);
BENCHMARK_CAPTURE(requantize_vec, fixed_point_per_tensor, false, requantization::fixed_point)->Apply(args);
BENCHMARK_CAPTURE(requantize_vec, float_scale_per_channel, true, requantization::float_scale)->Apply(args);
BENCHMARK_CAPTURE(requantize_vec, float_scale_per_tensor, false, requantization::float_scale)->Apply(args);
BENCHMARK_CAPTURE(requantize_scalar, fixed_point_per_channel, true, requantization::fixed_point)->Apply(args_one_thread);
BENCHMARK_CAPTURE(requantize_scalar, float_scale_per_channel, true, requantization::float_scale)->Apply(args_one_thread);

}  // namespace
