// GPTQ on W [256, 1152] (a 3x3 conv with 128 input channels) with 8192 calibration rows.
//
// gptq_vs_hessian_cholesky: each benchmark iteration runs one whole gptq_layer(W, X) call
// (Hessian included; 4-bit symmetric, MSE per-channel scales, block 128) and then, right
// after, the unavoidable core alone: the Hessian accumulation as the library does it
// (float rows to double, DSYRK) plus one Cholesky factorization (DPOTRF) of H. Counter
// "ratio" is the median of the per-pair ratios (pairs see the same machine load); the
// issue's target is <= 1.5. Arguments: n (weights), quant's threads, BLAS threads.
// gptq_only / hessian_cholesky_only: the two sides timed separately (medians of plain runs).
// adaround_2000: one adaround_layer run of 2000 iterations (default options otherwise:
// batch 32, warm-up 20 %) on the same layer, for the "GPTQ is far faster" comparison.
// rounding_quality: RTN, GPTQ, AdaRound and AdaRound started from GPTQ's rounding
// (adaround_init_from_integers, default margin, default warm-up) on a layer with correlated
// inputs, AdaRound with the argument's iteration count; counters are mean output errors
// ||(W - W_q) x||^2 on held-out rows divided by RTN's (lower is better), the fraction of
// GPTQ's integers AdaRound cannot represent (beyond floor(W/s) + {0, 1}) and both times.
#include <quant/adaround.hpp>
#include <quant/gptq.hpp>
#include <quant/hessian.hpp>
#include <quant/observers.hpp>

#include <xtensor-blas/xblas.hpp>
#include <xtensor-blas/xlapack.hpp>

#include <algorithm>
#include <chrono>
#include <vector>

#include "bench_common.hpp"

namespace {

constexpr std::size_t out_ch = 256, in_ch = 1152, samples = 8192;
constexpr long n_weights = static_cast<long>(out_ch * in_ch);

void sizes(benchmark::internal::Benchmark* b) { b->Arg(n_weights); }
const bool baselines = quant_bench::register_copy_baselines(sizes);

struct problem {
  xt::xtensor<float, 2> w = quant_bench::normal_matrix(out_ch, in_ch, 1) * 0.03f;
  xt::xtensor<float, 2> x = quant_bench::normal_matrix(samples, in_ch, 2);
};
const problem& data() {
  static const problem pr;
  return pr;
}

using quant_bench::median;
using quant_bench::threads_for_run;

double seconds_of(const std::chrono::steady_clock::time_point& t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The Hessian as gptq_layer accumulates it, then one Cholesky of it.
void hessian_and_cholesky(const xt::xtensor<float, 2>& x) {
  quant::hessian_accumulator acc(in_ch);
  acc.update(x);
  xt::xtensor<double, 2> h = acc.hessian();
  const auto n = static_cast<xt::blas_index_t>(in_ch);
  benchmark::DoNotOptimize(cxxlapack::potrf<xt::blas_index_t>('L', n, h.data(), n));
  benchmark::DoNotOptimize(h.data());
}

void gptq_vs_hessian_cholesky(benchmark::State& state) {
  threads_for_run t(state);
  const auto& d = data();
  std::vector<double> g, c, ratio;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = quant::gptq_layer(d.w, d.x);
    benchmark::DoNotOptimize(r.weights.data());
    const double tg = seconds_of(t0);
    t0 = std::chrono::steady_clock::now();
    hessian_and_cholesky(d.x);
    const double tc = seconds_of(t0);
    state.SetIterationTime(tg);
    g.push_back(tg);
    c.push_back(tc);
    ratio.push_back(tg / tc);
  }
  state.counters["gptq_ms"] = 1e3 * median(g);
  state.counters["hessian_chol_ms"] = 1e3 * median(c);
  state.counters["ratio"] = median(ratio);
  quant_bench::items(state, static_cast<std::size_t>(n_weights));
}

void gptq_only(benchmark::State& state) {
  threads_for_run t(state);
  const auto& d = data();
  for (auto _ : state) {
    auto r = quant::gptq_layer(d.w, d.x);
    benchmark::DoNotOptimize(r.weights.data());
  }
  quant_bench::items(state, static_cast<std::size_t>(n_weights));
}

void hessian_cholesky_only(benchmark::State& state) {
  threads_for_run t(state);
  const auto& d = data();
  for (auto _ : state) hessian_and_cholesky(d.x);
  quant_bench::items(state, static_cast<std::size_t>(n_weights));
}

void adaround_2000(benchmark::State& state) {
  threads_for_run t(state);
  const auto& d = data();
  const auto qp = quant::calibrate_mse(d.w, quant::grid::int_signed(4), quant::scheme::symmetric, 0);
  quant::adaround_options opt;
  opt.iterations = 2000;
  for (auto _ : state) {
    auto r = quant::adaround_layer(d.w, d.x, qp, opt);
    benchmark::DoNotOptimize(r.weights.data());
  }
  quant_bench::items(state, static_cast<std::size_t>(n_weights));
}

// Correlated, non-negative inputs relu(Z A), latent dimension in/4.
xt::xtensor<float, 2> correlated(std::size_t rows, unsigned seed) {
  const std::size_t latent = in_ch / 4;
  const xt::xtensor<float, 2> z = quant_bench::normal_matrix(rows, latent, seed);
  const xt::xtensor<float, 2> a = quant_bench::normal_matrix(latent, in_ch, 7) * (1.0f / std::sqrt(float(latent)));
  xt::xtensor<float, 2> x = xt::xtensor<float, 2>::from_shape({rows, in_ch});
  xt::blas::gemm(z, a, x);
  for (auto& v : x) v = v > 0.0f ? v : 0.0f;
  return x;
}

double output_error(const xt::xtensor<float, 2>& w, const xt::xtensor<float, 2>& wq, const xt::xtensor<float, 2>& x) {
  const xt::xtensor<float, 2> dw = w - wq;
  xt::xtensor<float, 2> y = xt::xtensor<float, 2>::from_shape({x.shape()[0], w.shape()[0]});
  xt::blas::gemm(x, dw, y, false, true);
  double acc = 0.0;
  for (float v : y) acc += double(v) * v;
  return acc / double(x.shape()[0]);
}

void rounding_quality(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(1));
  const auto iterations = static_cast<std::size_t>(state.range(2));
  const auto& d = data();
  const xt::xtensor<float, 2> x = correlated(samples, 3), held_out = correlated(2048, 4);
  const auto qp = quant::calibrate_mse(d.w, quant::grid::int_signed(bits), quant::scheme::symmetric, 0);
  for (auto _ : state) {
    const double rtn = output_error(d.w, quant::eager::fake_quantize(d.w, qp), held_out);
    auto t0 = std::chrono::steady_clock::now();
    const auto gq = quant::gptq_layer(d.w, x, qp);
    const double t_gptq = seconds_of(t0);
    quant::adaround_options opt;
    opt.iterations = iterations;
    t0 = std::chrono::steady_clock::now();
    const auto ada = quant::adaround_layer(d.w, x, qp, opt);
    const double t_ada = seconds_of(t0);
    opt.initial_v = quant::eager::adaround_init_from_integers(d.w, gq.integer_weights, qp);
    const auto both = quant::adaround_layer(d.w, x, qp, opt);
    state.counters["gptq"] = output_error(d.w, gq.weights, held_out) / rtn;
    state.counters["adaround"] = output_error(d.w, ada.weights, held_out) / rtn;
    state.counters["gptq_adaround"] = output_error(d.w, both.weights, held_out) / rtn;
    // GPTQ integers AdaRound cannot reach (beyond floor(W/s) + {0, 1} on the grid)
    std::size_t unreachable = 0;
    const float qmin = float(qp.qmin()), qmax = float(qp.qmax());
    for (std::size_t o = 0; o < out_ch; ++o)
      for (std::size_t i = 0; i < in_ch; ++i) {
        const float base = std::floor(d.w(o, i) * (1.0f / qp.scale(o))), q = float(gq.integer_weights(o, i));
        if (q != std::clamp(base, qmin, qmax) && q != std::clamp(base + 1.0f, qmin, qmax)) ++unreachable;
      }
    state.counters["unreachable"] = double(unreachable) / double(out_ch * in_ch);
    state.counters["gptq_s"] = t_gptq;
    state.counters["adaround_s"] = t_ada;
  }
  quant_bench::items(state, static_cast<std::size_t>(n_weights));
}

}  // namespace

BENCHMARK(gptq_vs_hessian_cholesky)
    ->ArgNames({"n", "quant_threads", "blas_threads"})
    ->Args({n_weights, 1, 1})
    ->Args({n_weights, 2, 2})
    ->Iterations(5)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(gptq_only)->ArgNames({"n", "quant_threads", "blas_threads"})->Args({n_weights, 1, 1})->Unit(benchmark::kMillisecond);
BENCHMARK(hessian_cholesky_only)
    ->ArgNames({"n", "quant_threads", "blas_threads"})
    ->Args({n_weights, 1, 1})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(adaround_2000)
    ->ArgNames({"n", "quant_threads", "blas_threads"})
    ->Args({n_weights, 1, 1})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(rounding_quality)
    ->ArgNames({"n", "bits", "iterations"})
    ->ArgsProduct({{n_weights}, {2, 3}, {2000, 10000}})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
