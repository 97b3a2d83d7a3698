// KURE throughput: the one-pass moments alone, and loss + gradient (moments pass + fused
// gradient pass) into a caller-provided gradient, against the same-run copy baselines.
// The target: loss + gradient >= 0.5x memcpy at 2^20 elements.
#include <quant/kurtosis.hpp>

#include <xtensor/xadapt.hpp>

#include "bench_common.hpp"

namespace {

const bool baselines = quant_bench::register_copy_baselines();

void kurtosis_moments(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  const std::vector<float> x = quant_bench::normal_data(n);
  for (auto _ : state) {
    auto m = quant::kernels::central_moments(x.data(), n);
    benchmark::DoNotOptimize(m);
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n));
  quant::set_num_threads(0);
}

void kurtosis_loss_grad(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  xt::xtensor<float, 1> w = xt::adapt(quant_bench::normal_data(n), std::vector<std::size_t>{n});
  xt::xtensor<float, 1> g = xt::zeros<float>({n});
  const std::vector<const xt::xtensor<float, 1>*> ws{&w};
  const std::vector<xt::xtensor<float, 1>*> gs{&g};
  for (auto _ : state) {
    auto r = quant::kurtosis_loss_into(ws, gs);
    benchmark::DoNotOptimize(r.loss);
    benchmark::DoNotOptimize(g.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n));
  quant::set_num_threads(0);
}

}  // namespace

BENCHMARK(kurtosis_moments)->ArgsProduct({{1L << 12, 1L << 16, 1L << 20, 1L << 24}, {1, 2}})->UseRealTime();
BENCHMARK(kurtosis_loss_grad)->ArgsProduct({{1L << 12, 1L << 16, 1L << 20, 1L << 24}, {1, 2}})->UseRealTime();
