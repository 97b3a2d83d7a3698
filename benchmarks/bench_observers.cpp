// Range-setting throughput: the min-max observer update (one fused min/max/finiteness
// pass) and the per-tensor MSE range search (calibrate_mse: ~120 evaluations of the fused
// Lp error kernel over the whole tensor). Items = tensor elements per call, so the MSE
// search's items/s is "tensors' worth of elements calibrated per second"; its
// per-evaluation rate (counter evals_per_s x n) is what compares with a copy.
#include <quant/observers.hpp>

#include <xtensor/xadapt.hpp>

#include "bench_common.hpp"

namespace {

const bool baselines = quant_bench::register_copy_baselines();

void minmax_observer_update(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  const std::vector<float> data = quant_bench::normal_data(n);
  const auto x = xt::adapt(data.data(), n, xt::no_ownership(), std::vector<std::size_t>{n});
  quant::minmax_observer obs;
  for (auto _ : state) {
    obs.update(x);
    benchmark::DoNotOptimize(obs.min().data());
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n));
  quant::set_num_threads(0);
}

void lp_error_kernel(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  const std::vector<float> data = quant_bench::normal_data(n);
  const quant::grid g = quant::grid::int_signed(8);
  double e = 0;
  for (auto _ : state) {
    e += quant::kernels::lp_error(data.data(), n, 0.02f, 0, g, 2.0f, 0.25f);
    benchmark::DoNotOptimize(e);
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n));
  quant::set_num_threads(0);
}

void mse_search_per_tensor(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  const std::vector<float> data = quant_bench::normal_data(n);
  const auto x = xt::adapt(data.data(), n, xt::no_ownership(), std::vector<std::size_t>{n});
  for (auto _ : state) {
    const quant::qparams p = quant::calibrate_mse(x, quant::grid::int_signed(8), quant::scheme::symmetric);
    benchmark::DoNotOptimize(p.scale());
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n));
  quant::set_num_threads(0);
}

}  // namespace

BENCHMARK(minmax_observer_update)
    ->ArgsProduct({{1L << 12, 1L << 16, 1L << 20, 1L << 24}, {1, 2}})
    ->UseRealTime();
BENCHMARK(lp_error_kernel)->ArgsProduct({{1L << 12, 1L << 16, 1L << 20, 1L << 24}, {1, 2}})->UseRealTime();
BENCHMARK(mse_search_per_tensor)
    ->ArgsProduct({{1L << 12, 1L << 16, 1L << 20, 1L << 24}, {1, 2}})
    ->UseRealTime();
