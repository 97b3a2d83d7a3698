// AdaRound iteration cost: one adaround_optimizer::step() on W [256, 1152] (a 3x3 conv
// with 128 input channels), a batch of 256 rows, against the same-run baseline of its two
// GEMMs alone (Y = X_b W^T, G = dY^T X_b). The target: iteration <= 1.25x GEMMs.
// Also the fused pass over V alone (fresh V with the regularizer on, warm-up, late). n = out * in (weights) is the item count for all of
// them, so the ratio table's "copy" columns compare against moving the weights once.
// Threads: OpenBLAS uses its own pool for the GEMMs; quant's pass uses set_num_threads(t).
#include <quant/adaround.hpp>

#include <xtensor-blas/xlinalg.hpp>

#include "bench_common.hpp"

namespace {

constexpr std::size_t out_ch = 256, in_ch = 1152, batch = 256, samples = 4096;
constexpr long n_weights = static_cast<long>(out_ch * in_ch);

void sizes(benchmark::internal::Benchmark* b) { b->Arg(n_weights); }
const bool baselines = quant_bench::register_copy_baselines(sizes);

xt::xtensor<float, 2> matrix(std::size_t r, std::size_t c, unsigned seed, float sd) {
  auto v = quant_bench::normal_data(r * c, seed, sd);
  xt::xtensor<float, 2> m = xt::xtensor<float, 2>::from_shape({r, c});
  std::copy(v.begin(), v.end(), m.begin());
  return m;
}

struct problem {
  xt::xtensor<float, 2> w = matrix(out_ch, in_ch, 1, 0.03f);
  xt::xtensor<float, 2> x = matrix(samples, in_ch, 2, 1.0f);
  quant::qparams p = quant::qparams::per_channel(quant::grid::int_signed(4), std::vector<float>(out_ch, 0.01f), 0);
};
const problem& data() {
  static const problem pr;
  return pr;
}

quant::adaround_options options() {
  quant::adaround_options o;
  o.iterations = 1u << 30;  // never ends inside the benchmark
  o.warmup = 0.0f;          // regularizer on: the more expensive phase
  o.batch_size = batch;
  return o;
}

void adaround_iteration(benchmark::State& state) {
  quant::set_num_threads(static_cast<int>(state.range(1)));
  const auto& d = data();
  quant::adaround_optimizer opt(d.w, d.x, d.p, options());
  opt.step();
  for (auto _ : state) {
    opt.step();
    benchmark::DoNotOptimize(opt.soft_weights().data());
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * n_weights);
  quant::set_num_threads(0);
}

void two_gemms(benchmark::State& state) {
  const auto& d = data();
  xt::xtensor<float, 2> xb = xt::view(d.x, xt::range(0, batch), xt::all());
  xt::xtensor<float, 2> y = xt::xtensor<float, 2>::from_shape({batch, out_ch});
  xt::xtensor<float, 2> g = xt::xtensor<float, 2>::from_shape({out_ch, in_ch});
  for (auto _ : state) {
    xt::blas::gemm(xb, d.w, y, false, true);
    xt::blas::gemm(y, xb, g, true, false);
    benchmark::DoNotOptimize(g.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * n_weights);
}

// The fused pass alone, in three phases of a schedule (range(2)):
//   0  regularizer on, V fresh from the init (h spread over (0, 1)): the most expensive
//   1  warm-up (regularizer off)
//   2  late: 98 % of the weights, at random, with h already binary (|V| > 2.4)
void fused_pass(benchmark::State& state) {
  quant::set_num_threads(static_cast<int>(state.range(1)));
  const int phase = static_cast<int>(state.range(2));
  const auto& d = data();
  const auto plan = quant::detail::make_segment_plan(d.w.shape(), d.p, "bench");
  xt::xtensor<float, 2> v = quant::adaround_init(d.w, d.p);
  if (phase == 2) {
    const auto u = quant_bench::normal_data(v.size(), 4, 1.0f);
    for (std::size_t i = 0; i < v.size(); ++i)
      if (std::fabs(u[i]) < 2.33f) v.data()[i] = u[i] > 0.0f ? 2.5f + u[i] : -2.5f + u[i];  // P(|u| < 2.33) = 0.98
  }
  xt::xtensor<float, 2> base = xt::floor(d.w * 100.0f);
  const auto grad = matrix(out_ch, in_ch, 3, 1e-3f);
  xt::xtensor<float, 2> ws = xt::zeros<float>(d.w.shape()), sig = ws;
  std::vector<float> m(d.w.size(), 0.0f), s2(d.w.size(), 0.0f);
  std::vector<double> partials(quant::detail::chunk_count(plan));
  quant::kernels::adaround_soft_weights<>(plan, -8.0f, 7.0f, base.data(), v.data(), sig.data(), ws.data());
  quant::kernels::adaround_step_constants c;
  c.adam = quant::adam_step::make(quant::adam_options{}, 10);
  c.lambda = phase == 1 ? 0.0f : 0.01f;
  c.beta = 10.0f;
  for (auto _ : state) {
    benchmark::DoNotOptimize(quant::kernels::adaround_fused_step<>(plan, -8.0f, 7.0f, base.data(), grad.data(),
                                                                  v.data(), sig.data(), m.data(), s2.data(),
                                                                  ws.data(), c, partials.data()));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * n_weights);
  quant::set_num_threads(0);
}

}  // namespace

BENCHMARK(two_gemms)->Arg(n_weights)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(adaround_iteration)->Args({n_weights, 1})->Args({n_weights, 2})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(fused_pass)
    ->ArgsProduct({{n_weights}, {1, 2}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
