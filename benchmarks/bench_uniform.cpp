// Fake-quant throughput: eager kernel (per tensor, per channel C=256), lazy expression.
#include <quant/uniform.hpp>

#include <xtensor/xadapt.hpp>

#include "bench_common.hpp"

namespace {

const bool baselines = quant_bench::register_copy_baselines();

void fake_quant_eager_per_tensor(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  auto x = xt::adapt(quant_bench::normal_data(n), std::vector<std::size_t>{n});
  xt::xtensor<float, 1> y = xt::zeros<float>({n});
  const auto p = quant::qparams::per_tensor(quant::grid::int_signed(8), 0.02f, 0);
  for (auto _ : state) {
    quant::eager::fake_quantize(x, p, y);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n));
  quant::set_num_threads(0);
}

}  // namespace

BENCHMARK(fake_quant_eager_per_tensor)
    ->ArgsProduct({{1L << 12, 1L << 16, 1L << 20, 1L << 24}, {1, 2}})
    ->UseRealTime();
