// STE backward throughput: dx = dy * 1[qmin <= round(x / s) + z <= qmax] (reads x and dy,
// writes dx: 12 bytes per element against a copy's 8), eager per tensor and per channel
// (C = 256 along axis 0 of [256, n/256]) at 1 and 2 threads, the lazy per-tensor
// expression, and the fused forward + mask. Outputs allocated once, outside the loop.
#include <quant/ste.hpp>

#include <xtensor/xnoalias.hpp>

#include "bench_common.hpp"

namespace {

const bool baselines = quant_bench::register_copy_baselines();
using quant_bench::normal_matrix;

constexpr std::size_t channels = 256;


quant::qparams params_for(bool per_channel) {
  if (!per_channel) return quant::qparams::per_tensor(quant::grid::int_signed(8), 0.02f, 0);
  std::vector<float> s(channels);
  std::vector<std::int32_t> z(channels);
  for (std::size_t c = 0; c < channels; ++c) {
    s[c] = 0.01f + 0.0001f * static_cast<float>(c);
    z[c] = static_cast<std::int32_t>(c % 7) - 3;
  }
  return quant::qparams::per_channel(quant::grid::int_signed(8), s, z, 0);
}

void ste_backward_eager(benchmark::State& state, bool per_channel) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  const std::size_t rows = per_channel ? channels : 1;
  auto x = normal_matrix(rows, n / rows, 1);
  auto dy = normal_matrix(rows, n / rows, 2);
  xt::xtensor<float, 2> dx = xt::zeros<float>({rows, n / rows});
  const auto p = params_for(per_channel);
  for (auto _ : state) {
    quant::eager::ste_backward(x, dy, p, dx);
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n));
  quant::set_num_threads(0);
}

void ste_backward_eager_per_tensor(benchmark::State& s) { ste_backward_eager(s, false); }
void ste_backward_eager_per_channel(benchmark::State& s) { ste_backward_eager(s, true); }

void ste_backward_lazy_per_tensor(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  auto x = normal_matrix(1, n, 1);
  auto dy = normal_matrix(1, n, 2);
  xt::xtensor<float, 2> dx = xt::zeros<float>({std::size_t(1), n});
  for (auto _ : state) {
    xt::noalias(dx) = quant::ste_backward(x, dy, 0.02f, 0, quant::grid::int_signed(8));
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n));
}

void fake_quantize_with_mask_alloc(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  auto x = normal_matrix(1, n, 1);
  const auto p = params_for(false);
  for (auto _ : state) {
    auto r = quant::eager::fake_quantize_with_mask(x, p);
    benchmark::DoNotOptimize(r.y.data());
    benchmark::DoNotOptimize(r.mask.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n));
  quant::set_num_threads(0);
}

}  // namespace

BENCHMARK(ste_backward_eager_per_tensor)->ArgsProduct({{1L << 12, 1L << 16, 1L << 20, 1L << 24}, {1, 2}})->UseRealTime();
BENCHMARK(ste_backward_eager_per_channel)->ArgsProduct({{1L << 12, 1L << 16, 1L << 20, 1L << 24}, {1, 2}})->UseRealTime();
BENCHMARK(ste_backward_lazy_per_tensor)->Apply(quant_bench::standard_sizes)->UseRealTime();
BENCHMARK(fake_quantize_with_mask_alloc)->ArgsProduct({{1L << 12, 1L << 16, 1L << 20, 1L << 24}, {1, 2}})->UseRealTime();
