// LSQ / LSQ+ throughput: the fused backward (recomputes the forward, reads x and dy once,
// writes dx, reduces dscale and doffset: 12 bytes per element against a copy's 8), per
// tensor and per channel with C = 256 (weights: axis 0 of [256, n/256]; activations: the
// last axis of [n/256, 256]), at 1 and 2 threads; and the variant that writes y as well
// (16 bytes per element). Outputs are allocated once, outside the timed loop.
#include <quant/lsq.hpp>

#include "bench_common.hpp"

namespace {

const bool baselines = quant_bench::register_copy_baselines();
using quant_bench::normal_matrix;

constexpr std::size_t channels = 256;


// shape kind: 0 per tensor [1, n]; 1 per channel [256, n/256] axis 0; 2 per channel [n/256, 256] axis 1
quant::lsq_params params_for(int kind) {
  quant::lsq_params p;
  p.grid = quant::grid::int_unsigned(8);
  const std::size_t np = kind == 0 ? 1 : channels;
  for (std::size_t c = 0; c < np; ++c) {
    p.scale.push_back(0.01f + 0.0001f * static_cast<float>(c));
    p.offset.push_back(-1.0f + 0.001f * static_cast<float>(c));
  }
  if (kind == 1) p.channel_axis = 0;
  if (kind == 2) p.channel_axis = 1;
  return p;
}

template <bool WithY>
void run(benchmark::State& state, int kind, quant::lsq_convention conv) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  quant::set_num_threads(static_cast<int>(state.range(1)));
  const std::size_t rows = kind == 0 ? 1 : (kind == 1 ? channels : n / channels);
  const std::size_t cols = n / rows;
  auto x = normal_matrix(rows, cols, 1);
  auto dy = normal_matrix(rows, cols, 2);
  xt::xtensor<float, 2> dx = xt::zeros<float>({rows, cols});
  xt::xtensor<float, 2> y = xt::zeros<float>({rows, cols});
  auto p = params_for(kind);
  p.convention = conv;
  for (auto _ : state) {
    quant::lsq_param_gradients g;
    if constexpr (WithY)
      g = quant::eager::lsq_forward_backward(x, dy, p, y, dx);
    else
      g = quant::eager::lsq_backward(x, dy, p, dx);
    benchmark::DoNotOptimize(g.dscale.data());
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n));
  quant::set_num_threads(0);
}

void lsq_fwd_bwd_per_tensor(benchmark::State& s) { run<false>(s, 0, quant::lsq_convention::paper); }
void lsq_fwd_bwd_per_channel_axis0(benchmark::State& s) { run<false>(s, 1, quant::lsq_convention::paper); }
void lsq_fwd_bwd_per_channel_lastaxis(benchmark::State& s) { run<false>(s, 2, quant::lsq_convention::paper); }
void lsq_fwd_bwd_per_tensor_pytorch(benchmark::State& s) { run<false>(s, 0, quant::lsq_convention::pytorch); }
void lsq_fwd_bwd_per_tensor_with_y(benchmark::State& s) { run<true>(s, 0, quant::lsq_convention::paper); }

}  // namespace

#define QUANT_LSQ_BENCH(f) BENCHMARK(f)->ArgsProduct({{1L << 12, 1L << 16, 1L << 20, 1L << 24}, {1, 2}})->UseRealTime()
QUANT_LSQ_BENCH(lsq_fwd_bwd_per_tensor);
QUANT_LSQ_BENCH(lsq_fwd_bwd_per_channel_axis0);
QUANT_LSQ_BENCH(lsq_fwd_bwd_per_channel_lastaxis);
QUANT_LSQ_BENCH(lsq_fwd_bwd_per_tensor_pytorch);
QUANT_LSQ_BENCH(lsq_fwd_bwd_per_tensor_with_y);
