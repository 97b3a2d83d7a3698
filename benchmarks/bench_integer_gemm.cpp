// Integer GEMM (integer_gemm.hpp) against OpenBLAS sgemm / sgemv and, when Debian's
// libdnnl-dev is installed, oneDNN's u8 x s8 -> s32 matmul, in one run, 1 and 2 threads.
//
// Shapes (layer [out x K] times N activation rows): [256 x 1152] x N = 1, 16, 256, 3136 (a
// 3x3 conv with 128 input channels; N = 3136 is a 56 x 56 feature map) and [4096 x 4096] x
// N = 1, 64. Arguments of every GEMM row: out, K, N, threads. Items = 2 out K N operations,
// so the "Gelem/s" column of the closing table reads as GOP/s (GFLOP/s for sgemm); the
// counters x_sgemm / x_dnnl are this row's throughput over the same-shape, same-thread
// sgemm / sgemv / oneDNN row of the same run (those run first), x_read (N = 1) the weight
// bytes per second over the read-only pass below (the fraction of the memory floor reached).
//
//   int8_requant : uint8 activations (zero point 3), int8 weights, int32 bias, fixed-point
//                  per-channel requantization with ReLU fused, uint8 output
//   int8_s32     : the same without requantization (int32 output, bias and zero point in)
//   int4_requant : as int8_requant with packed int4 weights (unpacked in registers)
//   *_prepared   : the same through an integer_gemm_layer built once outside the timing (an
//                  engine's operator object: no per-call validation or requantization
//                  tables), N = 1 only, where that per-call work is visible
//   sgemm        : cblas_sgemm, float, Y = X W^T (the float layer)
//   sgemv        : cblas_sgemv (N = 1 only: what a float engine calls for batch 1)
//   dnnl_s32     : oneDNN matmul u8 x s8 -> s32, no zero point, no bias, weights reordered
//                  once outside the timing (its fastest int8 configuration). Its counter
//                  `wrong` is the fraction of outputs that differ from the exact sum: on a
//                  machine without VNNI oneDNN's int16 pair sums saturate (quant's kernels
//                  are exact), so x_dnnl compares with a faster, inexact kernel.
//   weights_read : a read-only pass over the packed weight bytes (argument: bytes, threads),
//                  the memory floor of a batch-1 GEMV.
// Outputs are allocated once outside the timed loop. The int8 weights of 4096 x 4096
// (16 MiB) fit this machine's 32 MiB L3, the float ones (64 MiB) do not.
#include <quant/integer_gemm.hpp>
#include <quant/parallel.hpp>

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#if defined(QUANT_BENCH_HAVE_DNNL)
#include <oneapi/dnnl/dnnl.hpp>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "bench_common.hpp"

// OpenBLAS's thread knob, weak: with another BLAS behind cblas.h the rows still build and run
// (with that BLAS's own threading).
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace {

using shape_key = std::tuple<long, long, long, long>;  // out, K, N, threads
std::map<shape_key, double>& sgemm_rate() {
  static std::map<shape_key, double> m;
  return m;
}
std::map<shape_key, double>& sgemv_rate() {
  static std::map<shape_key, double> m;
  return m;
}
std::map<shape_key, double>& dnnl_rate() {
  static std::map<shape_key, double> m;
  return m;
}
std::map<std::pair<long, long>, double>& read_rate() {  // (bytes, threads) -> bytes/s
  static std::map<std::pair<long, long>, double> m;
  return m;
}

struct args {
  std::size_t out, k, n;
  int threads;
  explicit args(const benchmark::State& s)
      : out(std::size_t(s.range(0))), k(std::size_t(s.range(1))), n(std::size_t(s.range(2))), threads(int(s.range(3))) {}
  shape_key key() const { return {long(out), long(k), long(n), long(threads)}; }
  double ops() const { return 2.0 * double(out) * double(k) * double(n); }
};

void set_threads(int t) {
  quant::set_num_threads(t);
  if (openblas_set_num_threads) openblas_set_num_threads(t);
#if defined(_OPENMP)
  omp_set_num_threads(t);  // oneDNN (OpenMP runtime) reads it
#endif
}

template <class T>
std::vector<T> uniform_ints(std::size_t n, int lo, int hi, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(d(g));
  return v;
}

// Items (= ops) for the table, GOP/s from the timed loop, ratios to the same-run baselines.
double finish(benchmark::State& state, const args& a, double secs, bool baseline = false) {
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(a.ops()));
  const double rate = secs > 0 ? a.ops() * double(state.iterations()) / secs : 0.0;
  state.counters["GOP/s"] = rate * 1e-9;
  auto ratio = [&](const char* name, const std::map<shape_key, double>& rates) {
    auto it = rates.find(a.key());
    if (it != rates.end() && it->second > 0) state.counters[name] = rate / it->second;
  };
  if (!baseline) {
    ratio("x_sgemm", sgemm_rate());
    ratio("x_sgemv", sgemv_rate());
    ratio("x_dnnl", dnnl_rate());
  }
  return rate;
}

// The rate of a baseline's last run (Google Benchmark's last run of a row is the one it
// reports).
void record(std::map<shape_key, double>& rates, const args& a, double rate) { rates[a.key()] = rate; }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---- quant --------------------------------------------------------------------------------
template <int Bits, bool Requant, bool Prepared = false>
void quant_gemm(benchmark::State& state) {
  const args a(state);
  set_threads(a.threads);
  const auto x = uniform_ints<std::uint8_t>(a.n * a.k, 0, 255, 1);
  const auto w = uniform_ints<std::int8_t>(a.out * a.k, Bits == 8 ? -127 : -8, Bits == 8 ? 127 : 7, 2);
  const auto bias = uniform_ints<std::int32_t>(a.out, -5000, 5000, 3);
  const quant::packed_weights pw =
      Bits == 8 ? quant::pack_weights(w.data(), a.out, a.k) : quant::pack_weights_int4(w.data(), a.out, a.k);
  std::vector<double> m(a.out);
  for (std::size_t o = 0; o < a.out; ++o) m[o] = 2e-5 * (1.0 + double(o % 7) / 7.0);
  const auto rq = quant::make_requantize_params(m, quant::grid::int_unsigned(8), 10, quant::requantization::fixed_point,
                                                quant::fused_activation::relu);
  std::vector<std::uint8_t> y8(a.n * a.out);
  std::vector<std::int32_t> y32(a.n * a.out);
  std::optional<quant::integer_gemm_layer<std::uint8_t>> layer;
  if (Prepared) layer.emplace(pw, 3, bias, rq);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    if constexpr (Prepared)
      quant::integer_gemm(x.data(), a.n, a.k, *layer, y8.data(), a.out);
    else if constexpr (Requant)
      quant::integer_gemm(x.data(), a.n, a.k, 3, pw, bias.data(), rq, y8.data(), a.out);
    else
      quant::integer_gemm_s32(x.data(), a.n, a.k, 3, pw, bias.data(), y32.data(), a.out);
    benchmark::DoNotOptimize(y8.data());
    benchmark::DoNotOptimize(y32.data());
    benchmark::ClobberMemory();
  }
  const double secs = seconds_since(t0);
  finish(state, a, secs);
  if (a.n == 1) {
    auto it = read_rate().find({long(pw.bytes.size()), long(a.threads)});
    if (it != read_rate().end() && secs > 0)
      state.counters["x_read"] = double(pw.bytes.size()) * double(state.iterations()) / secs / it->second;
  }
  set_threads(0);
}

// ---- OpenBLAS -----------------------------------------------------------------------------
void sgemm(benchmark::State& state) {
  const args a(state);
  set_threads(a.threads);
  const auto x = quant_bench::normal_data(a.n * a.k, 1);
  const auto w = quant_bench::normal_data(a.out * a.k, 2);
  std::vector<float> y(a.n * a.out);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(a.n), int(a.out), int(a.k), 1.0f, x.data(), int(a.k),
                w.data(), int(a.k), 0.0f, y.data(), int(a.out));
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  record(sgemm_rate(), a, finish(state, a, seconds_since(t0), true));
  set_threads(0);
}

void sgemv(benchmark::State& state) {  // N = 1
  const args a(state);
  set_threads(a.threads);
  const auto x = quant_bench::normal_data(a.k, 1);
  const auto w = quant_bench::normal_data(a.out * a.k, 2);
  std::vector<float> y(a.out);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, int(a.out), int(a.k), 1.0f, w.data(), int(a.k), x.data(), 1, 0.0f,
                y.data(), 1);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double rate = finish(state, a, seconds_since(t0), true);
  record(sgemv_rate(), a, rate);
  auto it = sgemm_rate().find(a.key());
  if (it != sgemm_rate().end() && it->second > 0) state.counters["x_sgemm"] = rate / it->second;
  set_threads(0);
}

// ---- the memory floor: read every weight byte once ------------------------------------------
void weights_read(benchmark::State& state) {
  const std::size_t bytes = std::size_t(state.range(0));
  const int threads = int(state.range(1));
  quant::set_num_threads(threads);
  const auto v = uniform_ints<std::uint8_t>(bytes, 0, 255, 4);
  const std::size_t piece = std::size_t(1) << 16, pieces = (bytes + piece - 1) / piece;
  std::vector<std::uint64_t> part(pieces);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    quant::parallel_for(pieces, bytes, [&](std::size_t t) {
      const std::uint8_t* p = v.data() + t * piece;
      const std::size_t len = std::min(piece, bytes - t * piece);
#if defined(__AVX2__)
      __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
      std::size_t i = 0;
      for (; i + 128 <= len; i += 128) {
        s0 = _mm256_xor_si256(s0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
        s1 = _mm256_xor_si256(s1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
        s2 = _mm256_xor_si256(s2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
        s3 = _mm256_xor_si256(s3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
      }
      const __m256i s = _mm256_xor_si256(_mm256_xor_si256(s0, s1), _mm256_xor_si256(s2, s3));
      std::uint64_t r = std::uint64_t(_mm256_extract_epi64(s, 0) ^ _mm256_extract_epi64(s, 1) ^
                                      _mm256_extract_epi64(s, 2) ^ _mm256_extract_epi64(s, 3));
      for (; i < len; ++i) r ^= p[i];
#else
      std::uint64_t r = 0;
      for (std::size_t i = 0; i < len; ++i) r ^= p[i];
#endif
      part[t] = r;
    });
    benchmark::DoNotOptimize(part.data());
    benchmark::ClobberMemory();
  }
  const double secs = seconds_since(t0);
  state.SetItemsProcessed(static_cast<long>(state.iterations()) * static_cast<long>(bytes));
  state.SetBytesProcessed(static_cast<long>(state.iterations()) * static_cast<long>(bytes));
  read_rate()[{long(bytes), long(threads)}] = double(bytes) * double(state.iterations()) / secs;
  quant::set_num_threads(0);
}

// ---- oneDNN ---------------------------------------------------------------------------------
#if defined(QUANT_BENCH_HAVE_DNNL)
void dnnl_s32(benchmark::State& state) {
  const args a(state);
  set_threads(a.threads);
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  const dnnl::memory::dim N = dnnl::memory::dim(a.n), K = dnnl::memory::dim(a.k), O = dnnl::memory::dim(a.out);
  const dnnl::memory::desc src_md({N, K}, dt::u8, tag::ab);
  const dnnl::memory::desc wei_any({K, O}, dt::s8, tag::any);
  const dnnl::memory::desc dst_md({N, O}, dt::s32, tag::ab);
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, wei_any, dst_md), eng);
  auto x = uniform_ints<std::uint8_t>(a.n * a.k, 0, 255, 1);
  auto w = uniform_ints<std::int8_t>(a.out * a.k, -127, 127, 2);  // [out, K] = W^T of [K, out] in "ba"
  dnnl::memory src_m(src_md, eng, x.data());
  dnnl::memory wei_user(dnnl::memory::desc({K, O}, dt::s8, tag::ba), eng, w.data());
  dnnl::memory wei_m(pd.weights_desc(), eng);
  dnnl::reorder(wei_user, wei_m).execute(s, wei_user, wei_m);
  std::vector<std::int32_t> y(a.n * a.out);
  dnnl::memory dst_m(dst_md, eng, y.data());
  dnnl::matmul mm(pd);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    mm.execute(s, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, wei_m}, {DNNL_ARG_DST, dst_m}});
    s.wait();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double rate = finish(state, a, seconds_since(t0), true);
  record(dnnl_rate(), a, rate);
  // wrong: the fraction of oneDNN's int32 outputs (first 8 activation rows) that differ from
  // the exact sum of u8 x s8 products. Without VNNI, oneDNN 2.6 multiplies with vpmaddubsw,
  // whose int16 pair sums saturate at 32767: on these uniform operands nearly every output
  // is wrong, so its rows are a speed reference, not an exact int8 GEMM.
  std::size_t wrong = 0, checked = 0;
  for (std::size_t n = 0; n < std::min<std::size_t>(a.n, 8); ++n)
    for (std::size_t o = 0; o < a.out; ++o, ++checked) {
      std::int64_t exact = 0;
      for (std::size_t k = 0; k < a.k; ++k) exact += std::int64_t(x[n * a.k + k]) * w[o * a.k + k];
      wrong += exact != y[n * a.out + o];
    }
  state.counters["wrong"] = double(wrong) / double(checked);
  auto it = sgemm_rate().find(a.key());
  if (it != sgemm_rate().end() && it->second > 0) state.counters["x_sgemm"] = rate / it->second;
  set_threads(0);
}
#endif

void shapes(benchmark::internal::Benchmark* b) {
  for (long t : {1L, 2L}) {
    for (long n : {1L, 16L, 256L, 3136L}) b->Args({256, 1152, n, t});
    for (long n : {1L, 64L}) b->Args({4096, 4096, n, t});
  }
  b->ArgNames({"out", "K", "N", "threads"});
}
void gemv_shapes(benchmark::internal::Benchmark* b) {
  for (long t : {1L, 2L}) {
    b->Args({256, 1152, 1, t});
    b->Args({4096, 4096, 1, t});
  }
  b->ArgNames({"out", "K", "N", "threads"});
}
void read_sizes(benchmark::internal::Benchmark* b) {
  // packed weight bytes of the N = 1 shapes: int8 and int4, 256 x 1152 and 4096 x 4096
  for (long t : {1L, 2L})
    for (long bytes : {256L * 1152, 256L * 1152 / 2, 4096L * 4096, 4096L * 4096 / 2}) b->Args({bytes, t});
  b->ArgNames({"bytes", "threads"});
}

// Registration order = run order: the baselines first, so the quant rows find their rates.
const bool registered = [] {
  benchmark::RegisterBenchmark("sgemm", sgemm)->Apply(shapes)->UseRealTime();
  benchmark::RegisterBenchmark("sgemv", sgemv)->Apply(gemv_shapes)->UseRealTime();
#if defined(QUANT_BENCH_HAVE_DNNL)
  benchmark::RegisterBenchmark("dnnl_s32", dnnl_s32)->Apply(shapes)->UseRealTime();
#endif
  benchmark::RegisterBenchmark("weights_read", weights_read)->Apply(read_sizes)->UseRealTime();
  benchmark::RegisterBenchmark("int8_s32", quant_gemm<8, false>)->Apply(shapes)->UseRealTime();
  benchmark::RegisterBenchmark("int8_requant", quant_gemm<8, true>)->Apply(shapes)->UseRealTime();
  benchmark::RegisterBenchmark("int4_requant", quant_gemm<4, true>)->Apply(shapes)->UseRealTime();
  benchmark::RegisterBenchmark("int8_requant_prepared", quant_gemm<8, true, true>)->Apply(gemv_shapes)->UseRealTime();
  benchmark::RegisterBenchmark("int4_requant_prepared", quant_gemm<4, true, true>)->Apply(gemv_shapes)->UseRealTime();
  return true;
}();

}  // namespace
