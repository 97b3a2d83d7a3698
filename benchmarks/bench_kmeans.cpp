// k-means for PQ codebooks: the problem — a seeded 4096 x 1024 Gaussian weight
// matrix cut into d = 8 subvectors (all 524 288 of them), K = 256, 25 iterations,
// random-sample init, 1 thread. Reported: wall time per full run (init + 25 Lloyd rounds
// + final assignment) and the final MSE per weight as a counter. Target: <= 1.2 s.
// When Debian's libfaiss-dev is found at configure time, Faiss 1.7.3's Clustering runs
// the same problem side by side (all points: max_points_per_centroid raised to 2048).
// Also: the E-step alone for d = 4, 8, 9, 16 and the GEMM path for d = 64.
#include <quant/kmeans.hpp>

#include <cstdio>

#include "bench_common.hpp"

#if defined(QUANT_BENCH_HAVE_FAISS)
#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <omp.h>
#endif

namespace {

const std::vector<float>& weights_4096x1024() {
  static const std::vector<float> w = quant_bench::normal_data(4096 * 1024, 2024);
  return w;
}

void kmeans_pq_4096x1024_d8_k256(benchmark::State& state) {
  quant::set_num_threads(static_cast<int>(state.range(1)));
  const auto& w = weights_4096x1024();
  const std::size_t d = 8, n = w.size() / d;
  quant::kmeans_options opt;
  opt.k = 256;
  opt.iterations = 25;
  opt.seed = 1;
  double mse = 0;
  for (auto _ : state) {
    auto r = quant::kmeans(w.data(), n, d, opt);
    mse = r.mse();
    benchmark::DoNotOptimize(r.centroids.data());
  }
  state.counters["mse"] = mse;
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(w.size()));
  quant::set_num_threads(0);
}

#if defined(QUANT_BENCH_HAVE_FAISS)
void faiss_clustering_4096x1024_d8_k256(benchmark::State& state) {
  omp_set_num_threads(static_cast<int>(state.range(1)));
  const auto& w = weights_4096x1024();
  const std::size_t d = 8, n = w.size() / d;
  double mse = 0;
  for (auto _ : state) {
    faiss::ClusteringParameters cp;
    cp.niter = 25;
    cp.seed = 1;
    cp.max_points_per_centroid = 2048;  // train on all 524 288 points
    faiss::Clustering clus(d, 256, cp);
    faiss::IndexFlatL2 index(d);
    clus.train(n, w.data(), index);
    // final MSE: assign every point to the final centroids
    std::vector<float> dist(n);
    std::vector<faiss::Index::idx_t> lab(n);
    index.search(n, w.data(), 1, dist.data(), lab.data());
    double s = 0;
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t j = 0; j < d; ++j) {
        const double t = double(w[i * d + j]) - clus.centroids[lab[i] * d + j];
        s += t * t;
      }
    }
    mse = s / double(n * d);
  }
  state.counters["mse"] = mse;
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(w.size()));
}
BENCHMARK(faiss_clustering_4096x1024_d8_k256)->Args({4096L * 1024, 1})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
#endif

// One E-step over 2^19 points (n * d floats processed).
void kmeans_assign_step(benchmark::State& state) {
  const std::size_t d = static_cast<std::size_t>(state.range(1));
  const std::size_t n = (std::size_t(1) << 22) / d;
  quant::set_num_threads(1);
  const auto x = quant_bench::normal_data(n * d, 3);
  const auto c = quant_bench::normal_data(256 * d, 4);
  std::vector<std::uint32_t> idx(n);
  for (auto _ : state) {
    quant::detail::assign(x.data(), n, d, c.data(), 256, 32, idx.data());
    benchmark::DoNotOptimize(idx.data());
  }
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(n * d));
  quant::set_num_threads(0);
}

}  // namespace

BENCHMARK(kmeans_pq_4096x1024_d8_k256)->Args({4096L * 1024, 1})->Args({4096L * 1024, 2})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(2);
BENCHMARK(kmeans_assign_step)->ArgsProduct({{1L << 22}, {4, 8, 9, 16, 64}})->Unit(benchmark::kMillisecond)->UseRealTime();
