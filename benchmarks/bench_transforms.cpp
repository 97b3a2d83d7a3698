// Data-free transforms: BN folding, one CLE step of a linear pair, empirical input-mean
// accumulation (im2col-like rows of 144 features) — single-threaded scalar loops, against the
// same-run copy baselines. n = elements of each weight tensor (or of the rows).
#include <quant/batchnorm_folding.hpp>
#include <quant/bias_correction.hpp>
#include <quant/equalization.hpp>

#include <cmath>

#include "bench_common.hpp"

namespace {

const bool baselines = quant_bench::register_copy_baselines();

xt::xarray<float> matrix(std::size_t rows, std::size_t cols, unsigned seed) {
  const auto m = quant_bench::normal_matrix(rows, cols, seed);
  return xt::xarray<float>(m);
}

void fold_batchnorm_linear(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0)), out = 256, in = n / out;
  const xt::xarray<float> w = matrix(out, in, 1);
  quant::batchnorm_params bn;
  bn.gamma = bn.beta = bn.running_mean = xt::xtensor<float, 1>(xt::ones<float>({out}));
  bn.running_var = xt::xtensor<float, 1>(xt::ones<float>({out})) * 0.5f;
  for (auto _ : state) {
    quant::folded_layer f = quant::fold_batchnorm(w, bn);
    benchmark::DoNotOptimize(f.weight.data());
  }
  quant_bench::items(state, n);
}

// One equalize_pair on [256, n/256] -> [n/256... ] weights: both tensors have n elements.
// The weights are restored outside the timed region (a second step would find S ~ 1).
void equalize_pair_linear(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0)), c = 256, k = n / c;
  quant::layer_weights a0{matrix(c, k, 2), xt::zeros<float>({c}), quant::layer_kind::linear, std::nullopt};
  quant::layer_weights b0{matrix(k, c, 3), xt::zeros<float>({k}), quant::layer_kind::linear, std::nullopt};
  for (std::size_t i = 0; i < c; ++i)
    for (std::size_t j = 0; j < k; ++j) a0.weight(i, j) *= std::pow(10.0f, static_cast<float>(i % 7) - 3.0f);
  quant::layer_weights a = a0, b = b0;
  for (auto _ : state) {
    state.PauseTiming();
    a.weight = a0.weight;
    b.weight = b0.weight;
    state.ResumeTiming();
    auto S = quant::equalize_pair(a, b);
    benchmark::DoNotOptimize(S.data());
  }
  quant_bench::items(state, 2 * n);
}

void input_mean_add(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0)), f = 144;
  const xt::xtensor<float, 2> rows = quant_bench::normal_matrix(n / f, f, 4);
  quant::input_mean_accumulator acc(f);
  for (auto _ : state) {
    acc.add(rows);
    benchmark::DoNotOptimize(acc.sums().data());
  }
  quant_bench::items(state, (n / f) * f);
}

}  // namespace

BENCHMARK(fold_batchnorm_linear)->Arg(1 << 16)->Arg(1 << 20);
BENCHMARK(equalize_pair_linear)->Arg(1 << 16)->Arg(1 << 20);
BENCHMARK(input_mean_add)->Arg(1 << 16)->Arg(1 << 20)->Arg(1 << 24);
