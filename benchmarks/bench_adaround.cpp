// AdaRound iteration cost: one adaround_optimizer::step() on W [256, 1152] (a 3x3 conv
// with 128 input channels), a batch of 256 rows, against the same-run baseline of its two
// GEMMs alone (Y = X_b W^T, G = dY^T X_b). The target: iteration <= 1.25x GEMMs.
//
// iteration_vs_gemms interleaves the two: each benchmark iteration runs one optimizer
// step, then the two GEMMs alone on a fixed batch, timing each, and reports the medians
// and the median of the per-pair ratios (counter "ratio"). On a shared machine whose
// clock drifts by 30 % between runs, two separately timed benchmarks give ratios that
// wander by as much; interleaved pairs see the same conditions. Arguments: n (weights),
// quant's threads, BLAS threads (OpenBLAS's openblas_set_num_threads), and the pass:
//   0  adaround_optimizer::step() itself
//   1  the same step with the fused pass replaced by a loop that moves the same bytes
//      (reads floor(W/s)+z, G, V, sigmoid(V), m, v; writes V, sigmoid(V), m, v, W_soft)
//      and does no arithmetic worth the name: the memory floor of this data layout
//   2  the same step without any pass (sampling, gather, loss, GEMMs): the rest
// schedule_vs_gemms does the same over a whole default schedule (warm-up, then the
// annealed regularizer), the cost a user sees; fused_pass times the pass alone, in three
// phases of a schedule.
// n = out * in (weights) is the item count for all of them, so the ratio table's "copy"
// columns compare against moving the weights once.
#include <quant/adaround.hpp>
#include <quant/parallel.hpp>

#include <xtensor-blas/xlinalg.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <utility>
#include <vector>

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

using quant_bench::median;
using quant_bench::threads_for_run;

// The baseline: the two GEMMs of an iteration alone (a fixed batch, the same shapes and
// calls), and one interleaved pair: seconds of iteration() and of the GEMMs right after.
struct gemms_alone {
  const xt::xtensor<float, 2>& w;
  xt::xtensor<float, 2> xb, y, g;
  explicit gemms_alone(const problem& d)
      : w(d.w),
        xb(xt::view(d.x, xt::range(0, batch), xt::all())),
        y(xt::xtensor<float, 2>::from_shape({batch, out_ch})),
        g(xt::xtensor<float, 2>::from_shape({out_ch, in_ch})) {}
  void run() {
    quant::detail::gemm_nt(xb, w, y);
    quant::detail::gemm_tn(y, xb, g);
    benchmark::DoNotOptimize(g.data());
  }
  template <class Iteration>
  std::pair<double, double> timed_pair(Iteration&& iteration) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    iteration();
    const auto t1 = clock::now();
    run();
    const auto t2 = clock::now();
    return {std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(t2 - t1).count()};
  }
};

// The fused pass's memory traffic without its arithmetic (pass 1 above).
void traffic_only_pass(const float* base, const float* grad, float* V, float* sig, float* m, float* v, float* w_soft,
                       std::size_t n) {
  constexpr std::size_t piece = std::size_t(1) << 14;
  quant::parallel_for((n + piece - 1) / piece, n, [&](std::size_t t) {
    const std::size_t end = std::min(n, (t + 1) * piece);
    for (std::size_t i = t * piece; i < end; ++i) {
      const float g = grad[i], mm = m[i] + g, vv = v[i] + g * g, s = sig[i] + base[i];
      m[i] = mm;
      v[i] = vv;
      V[i] = V[i] - mm;
      sig[i] = s;
      w_soft[i] = s;
    }
  });
}

void iteration_vs_gemms(benchmark::State& state) {
  const threads_for_run threads(state);
  if (!threads.ok) return;
  const int pass = static_cast<int>(state.range(3));
  const auto& d = data();
  const std::size_t n = d.w.size();
  quant::adaround_optimizer opt(d.w, d.x, d.p, options());
  // Passes 1 and 2: the calls adaround_optimizer::step makes, with the pass swapped.
  std::vector<std::size_t> perm(samples);
  for (std::size_t i = 0; i < samples; ++i) perm[i] = i;
  xt::xtensor<float, 2> target = xt::xtensor<float, 2>::from_shape({samples, out_ch});
  quant::detail::gemm_nt(d.x, d.w, target);
  xt::xtensor<float, 2> xb = xt::xtensor<float, 2>::from_shape({batch, in_ch});
  xt::xtensor<float, 2> yb = xt::xtensor<float, 2>::from_shape({batch, out_ch});
  xt::xtensor<float, 2> w_soft = d.w, grad = xt::zeros<float>(d.w.shape());
  std::vector<float> base(n, 1.0f), V(n, 0.5f), sig(n, 0.5f), m(n, 0.0f), v(n, 0.0f), bias(out_ch, 0.0f);
  std::uint64_t draw = 0;
  auto step_pieces = [&] {
    quant::detail::sample_rows(perm, batch, 0, draw++);
    quant::detail::gather_rows(d.x, perm.data(), batch, xb);
    quant::detail::gemm_nt(xb, w_soft, yb);
    double loss = 0.0;
    for (std::size_t j = 0; j < batch; ++j)
      loss += quant::detail::layer_loss_row<>(yb.data() + j * out_ch, target.data() + perm[j] * out_ch, bias.data(),
                                              yb.shape()[1], quant::activation::identity, 2.0f / batch);
    quant::detail::gemm_tn(yb, xb, grad);
    if (pass == 1) traffic_only_pass(base.data(), grad.data(), V.data(), sig.data(), m.data(), v.data(), w_soft.data(), n);
    benchmark::DoNotOptimize(loss);
  };
  gemms_alone baseline(d);
  auto iteration = [&] { pass == 0 ? opt.step() : step_pieces(); };
  for (int warm = 0; warm < 5; ++warm) baseline.timed_pair(iteration);
  std::vector<double> t_iter, t_gemm, ratio;
  for (auto _ : state) {
    const auto [a, b] = baseline.timed_pair(iteration);
    t_iter.push_back(a);
    t_gemm.push_back(b);
    ratio.push_back(a / b);
    state.SetIterationTime(a);
  }
  state.counters["iteration_ms"] = median(t_iter) * 1e3;
  state.counters["gemms_ms"] = median(t_gemm) * 1e3;
  state.counters["ratio"] = median(ratio);
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * n_weights);
}

// A whole default schedule (2000 iterations: 20 % warm-up, then beta 20 -> 2), each
// iteration followed by the two GEMMs alone as in iteration_vs_gemms. One benchmark
// iteration is the whole run; counters: median ratio in the warm-up, median ratio in the
// regularized phase, and the ratio of the summed times (what the whole run costs).
void schedule_vs_gemms(benchmark::State& state) {
  const threads_for_run threads(state);
  if (!threads.ok) return;
  const auto& d = data();
  gemms_alone baseline(d);
  std::vector<double> warm, regularized;
  double sum_iter = 0.0, sum_gemm = 0.0;
  for (auto _ : state) {
    quant::adaround_options o;
    o.iterations = 2000;
    o.batch_size = batch;
    quant::adaround_optimizer opt(d.w, d.x, d.p, o);
    while (!opt.done()) {
      const bool in_warmup = opt.iteration() < o.warmup_iterations();
      const auto [a, b] = baseline.timed_pair([&] { opt.step(); });
      (in_warmup ? warm : regularized).push_back(a / b);
      sum_iter += a;
      sum_gemm += b;
    }
    state.SetIterationTime(sum_iter);
    benchmark::DoNotOptimize(opt.result().report.non_binary_fraction);
  }
  state.counters["ratio_warmup"] = median(warm);
  state.counters["ratio_regularized"] = median(regularized);
  state.counters["ratio_total"] = sum_iter / sum_gemm;
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * 2000 * n_weights);
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
  xt::xtensor<float, 2> v = quant::eager::adaround_init(d.w, d.p);
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

// (quant threads, BLAS threads): one core for everything; quant's pass on two cores with
// BLAS on one; both on two cores; 0, 0 = the defaults, what a user gets without setting
// anything. With both on two cores, quant's loops run on one thread while OpenMP's idle
// workers would spin beside OpenBLAS's (detail::beside_blas; docs/threading.md).
BENCHMARK(iteration_vs_gemms)
    ->ArgNames({"n", "quant_threads", "blas_threads", "pass"})
    ->Args({n_weights, 1, 1, 0})
    ->Args({n_weights, 1, 1, 1})
    ->Args({n_weights, 1, 1, 2})
    ->Args({n_weights, 2, 1, 0})
    ->Args({n_weights, 2, 1, 1})
    ->Args({n_weights, 1, 2, 0})
    ->Args({n_weights, 2, 2, 0})
    ->Args({n_weights, 0, 0, 0})  // the defaults: nothing set (quant and OpenBLAS choose)
    ->Iterations(300)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(schedule_vs_gemms)
    ->ArgNames({"n", "quant_threads", "blas_threads"})
    ->Args({n_weights, 1, 1})
    ->Args({n_weights, 2, 1})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(fused_pass)
    ->ArgsProduct({{n_weights}, {1, 2}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
