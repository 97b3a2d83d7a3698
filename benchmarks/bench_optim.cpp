// Optimizer step throughput over flat float buffers, at 1 and 2 threads:
//   adam_step      reads p, g, m, v and writes p, m, v (28 bytes per element)
//   sgd_step       plain SGD: reads p, g, writes p (12 bytes per element)
//   sgd_momentum   reads p, g, buf, writes p, buf (20 bytes per element)
// Every step includes the gradient's finiteness check. The gradients stay fixed; the
// parameters drift, which changes no timing (no subnormals: Adam flushes them).
// *_check_cost: the step with its check against the unchecked kernel (kernels::adam_update /
// sgd_update) on the same buffers, alternating in one loop (the order flips every
// iteration); the counter checked_over_unchecked is the ratio of their median times.
#include <quant/optim.hpp>

#include <chrono>

#include "bench_common.hpp"

namespace {

const bool baselines = quant_bench::register_copy_baselines();

void optim_sizes(benchmark::internal::Benchmark* b) {
  for (long n : {1L << 12, 1L << 16, 1L << 20, 1L << 24})
    for (long threads : {1L, 2L}) b->Args({n, threads});
}

template <class Optimizer, class Options>
void run_step(benchmark::State& state, const Options& options) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  std::vector<float> p = quant_bench::normal_data(n, 1);
  const std::vector<float> g = quant_bench::normal_data(n, 2, 1e-2f);
  Optimizer opt(n, options);
  for (auto _ : state) {
    opt.step(p.data(), g.data());
    benchmark::DoNotOptimize(p.data());
    benchmark::ClobberMemory();
  }
  quant_bench::items(state, n);
  quant::set_num_threads(0);
}

void adam_step(benchmark::State& state) { run_step<quant::adam>(state, quant::adam_options{}); }
void sgd_step(benchmark::State& state) { run_step<quant::sgd>(state, quant::sgd_options{}); }
void sgd_momentum(benchmark::State& state) {
  quant::sgd_options o;
  o.momentum = 0.9f;
  run_step<quant::sgd>(state, o);
}

template <class Checked, class Unchecked>
void paired(benchmark::State& state, std::size_t n, Checked&& checked, Unchecked&& unchecked) {
  using clock = std::chrono::steady_clock;
  std::vector<double> tc, tu;
  bool flip = false;
  for (auto _ : state) {
    const auto t0 = clock::now();
    flip ? checked() : unchecked();
    const auto t1 = clock::now();
    flip ? unchecked() : checked();
    const auto t2 = clock::now();
    (flip ? tc : tu).push_back(std::chrono::duration<double>(t1 - t0).count());
    (flip ? tu : tc).push_back(std::chrono::duration<double>(t2 - t1).count());
    flip = !flip;
    benchmark::ClobberMemory();
  }
  state.counters["checked_over_unchecked"] = quant_bench::median(tc) / quant_bench::median(tu);
  quant_bench::items(state, 2 * n);
}

void adam_check_cost(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  std::vector<float> p = quant_bench::normal_data(n, 1);
  const std::vector<float> g = quant_bench::normal_data(n, 2, 1e-2f);
  quant::adam opt(n);
  paired(
      state, n, [&] { opt.step(p.data(), g.data()); },
      [&] {
        quant::kernels::adam_update<>(p.data(), g.data(), opt.first_moment(), opt.second_moment(), n, opt.next_step());
      });
  quant::set_num_threads(0);
}

void sgd_check_cost(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  std::vector<float> p = quant_bench::normal_data(n, 1);
  const std::vector<float> g = quant_bench::normal_data(n, 2, 1e-2f);
  const quant::sgd_options o{};
  quant::sgd opt(n, o);
  paired(
      state, n, [&] { opt.step(p.data(), g.data()); },
      [&] { quant::kernels::sgd_update<>(p.data(), g.data(), nullptr, n, o, false); });
  quant::set_num_threads(0);
}

BENCHMARK(adam_step)->Apply(optim_sizes)->UseRealTime();
BENCHMARK(adam_check_cost)->Apply(optim_sizes)->UseRealTime();
BENCHMARK(sgd_check_cost)->Apply(optim_sizes)->UseRealTime();
BENCHMARK(sgd_step)->Apply(optim_sizes)->UseRealTime();
BENCHMARK(sgd_momentum)->Apply(optim_sizes)->UseRealTime();

}  // namespace
