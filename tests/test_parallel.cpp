// quant::parallel_for's contract (every piece once; serial and in order below the
// threshold), the thread knob, and: threads never change results: eager fake-quant and
// quantize give the same bits with 1 and 2 threads (and without a cap), per tensor, per
// channel and per group, at sizes above the parallel threshold, including lengths that are
// not a multiple of the chunk size.
#include <quant/parallel.hpp>  // first: the public header compiles on its own

#include <quant/detail/parallel.hpp>  // beside_blas, parallel_reduce
#include <quant/reference/uniform.hpp>
#include <quant/uniform.hpp>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

#include <xtensor/xadapt.hpp>

#include "test_helpers.hpp"

using namespace quant;
using quant_test::require_bitwise_equal;
using quant_test::thread_cap;
using quant_test::with_threads;

namespace {


std::vector<float> scales(std::size_t n, float base) {
  std::vector<float> s(n);
  for (std::size_t k = 0; k < n; ++k) s[k] = base * (1.0f + 0.13f * static_cast<float>(k % 11));
  return s;
}
std::vector<std::int32_t> zero_points(std::size_t n, int spread) {
  std::vector<std::int32_t> z(n);
  for (std::size_t k = 0; k < n; ++k) z[k] = static_cast<std::int32_t>(k % (2 * spread + 1)) - spread;
  return z;
}

// Every qparams layout the segment plan distinguishes, on a [rows, cols] tensor.
std::vector<std::pair<std::string, qparams>> layouts(std::size_t rows, std::size_t cols) {
  const grid g = grid::int_signed(8);
  return {
      {"per tensor", qparams::per_tensor(g, 0.03f, 2)},
      {"per channel axis 0 (scalar runs)", qparams::per_channel(g, scales(rows, 0.02f), zero_points(rows, 3), 0)},
      {"per channel axis 1 (vector runs)", qparams::per_channel(g, scales(cols, 0.02f), zero_points(cols, 3), -1)},
      {"per group along axis 1 (scalar runs)",
       qparams::per_group(g, scales(rows * cols / 16, 0.01f), zero_points(rows * cols / 16, 2), 1, 16)},
      {"per group along axis 0 (vector runs)",
       qparams::per_group(g, scales(rows * cols / 4, 0.01f), zero_points(rows * cols / 4, 2), 0, 4)},
  };
}

}  // namespace

TEST_CASE("the thread cap is one knob", "[parallel]") {
  thread_cap cap(1);
  CHECK(num_threads() == 1);
  set_num_threads(2);
#if defined(_OPENMP)
  CHECK(num_threads() == 2);
#else
  CHECK(num_threads() == 1);
#endif
  set_num_threads(-3);  // negative = default
  CHECK(num_threads() >= 1);
}

TEST_CASE("parallel_for calls every piece exactly once", "[parallel]") {
  for (int threads : {1, 2}) {
    DYNAMIC_SECTION(threads << " thread(s)") {
      thread_cap cap(threads);
      SECTION("no pieces: f is never called") {
        int calls = 0;
        parallel_for(0, parallel_min_elements, [&](std::size_t) { ++calls; });
        CHECK(calls == 0);
      }
      SECTION("enough work to go parallel: each of 1000 pieces once") {
        std::vector<std::atomic<int>> runs(1000);
        for (auto& r : runs) r = 0;
        parallel_for(runs.size(), parallel_min_elements, [&](std::size_t t) { ++runs[t]; });
        for (std::size_t t = 0; t < runs.size(); ++t) {
          INFO("piece " << t);
          REQUIRE(runs[t] == 1);
        }
      }
      SECTION("below parallel_min_elements: serially, in order 0, 1, ..., on the calling thread") {
        std::vector<std::size_t> order;
        const auto caller = std::this_thread::get_id();
        bool same_thread = true;
        parallel_for(100, parallel_min_elements - 1, [&](std::size_t t) {
          order.push_back(t);  // unsynchronized on purpose: a second thread would be a race
          same_thread = same_thread && std::this_thread::get_id() == caller;
        });
        std::vector<std::size_t> want(100);
        for (std::size_t t = 0; t < want.size(); ++t) want[t] = t;
        CHECK(order == want);
        CHECK(same_thread);
      }
    }
  }
}

TEST_CASE("parallel_reduce combines fixed pieces in order for any thread count", "[parallel]") {
  const std::size_t n = (std::size_t(1) << 17) + 77;
  const auto x = quant_test::normal_floats(n, 3);
  auto sum = [&] {
    return detail::parallel_reduce(
        n, 4096, 0.0f,
        [&](std::size_t b, std::size_t e) {
          float s = 0.0f;
          for (std::size_t i = b; i < e; ++i) s += x[i];
          return s;
        },
        [](float a, float b) { return a + b; });
  };
  // Independent expectation: the same pieces, summed serially in order.
  float want = 0.0f;
  for (std::size_t b = 0; b < n; b += 4096) {
    float s = 0.0f;
    for (std::size_t i = b; i < std::min(n, b + 4096); ++i) s += x[i];
    want += s;
  }
  const float one = with_threads(1, sum), two = with_threads(2, sum);
  CHECK(quant_test::bits_of(one) == quant_test::bits_of(want));
  CHECK(quant_test::bits_of(two) == quant_test::bits_of(want));
}

TEST_CASE("eager fake-quant is bit-identical for 1 and 2 threads", "[parallel][uniform]") {
  // rows * cols is above parallel_min_elements and not a multiple of the chunk.
  const std::size_t rows = 48, cols = 2064;
  REQUIRE(rows * cols > parallel_min_elements);
  REQUIRE(rows * cols % detail::chunk_elements != 0);
  const auto x = quant_test::normal_floats(rows * cols, 11, 3.0f);
  const xt::xtensor<float, 2> xa = xt::adapt(x, std::array<std::size_t, 2>{rows, cols});
  for (const auto& [name, params] : layouts(rows, cols)) {
    const qparams& p = params;  // captured below: C++17 lambdas cannot capture a structured binding
    INFO(name);
    auto run = [&] { return eager::fake_quantize(xa, p); };
    const auto y1 = with_threads(1, run);
    const auto y2 = with_threads(2, run);
    const auto y0 = with_threads(0, run);
    require_bitwise_equal(y2, y1, x.size(), name + ": 2 threads vs 1");
    require_bitwise_equal(y0, y1, x.size(), name + ": default vs 1");
    require_bitwise_equal(y1, ref::fake_quantize(x, {rows, cols}, p), x.size(), name + ": vs reference");
    // stochastic rounding draws by element index, so threads cannot change it either
    auto srun = [&] { return eager::fake_quantize(xa, p, round_stochastic{99}); };
    require_bitwise_equal(with_threads(2, srun), with_threads(1, srun), x.size(), name + ": stochastic");
  }
}

TEST_CASE("eager quantize is bit-identical for 1 and 2 threads", "[parallel][uniform]") {
  const std::size_t rows = 40, cols = 4112;
  REQUIRE(rows * cols > parallel_min_elements);
  const auto x = quant_test::normal_floats(rows * cols, 12, 3.0f);
  const xt::xtensor<float, 2> xa = xt::adapt(x, std::array<std::size_t, 2>{rows, cols});
  for (const auto& [name, params] : layouts(rows, cols)) {
    const qparams& p = params;  // captured below: C++17 lambdas cannot capture a structured binding
    INFO(name);
    auto run = [&] { return eager::quantize<std::int8_t>(xa, p); };
    const auto q1 = with_threads(1, run);
    const auto q2 = with_threads(2, run);
    REQUIRE(q1.size() == x.size());
    const auto want = ref::quantize(x, {rows, cols}, p);
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (q1.flat(i) != q2.flat(i) || q1.flat(i) != want[i]) {
        INFO("element " << i << ": 1 thread " << int(q1.flat(i)) << ", 2 threads " << int(q2.flat(i))
                        << ", reference " << want[i]);
        REQUIRE(false);
      }
    }
  }
  // NaN anywhere in a threaded call is counted and rejected, whatever the threads
  xt::xtensor<float, 2> with_nan = xa;
  with_nan(rows - 1, cols - 1) = std::nanf("");
  const qparams p = qparams::per_tensor(grid::int_signed(8), 0.1f);
  for (int t : {1, 2}) {
    thread_cap cap(t);
    CHECK_THROWS_WITH(eager::quantize<std::int8_t>(with_nan, p), Catch::Contains("1 NaN values"));
  }
}

#if defined(__GNUC__) && defined(__ELF__)
extern "C" void openblas_set_num_threads(int) __attribute__((weak));
#endif
// A plain CBLAS call, so that the test links the BLAS that quant::blas names (with
// --as-needed an unused BLAS would not be loaded, and the scope would have nothing to see).
extern "C" float cblas_sdot(int n, const float* x, int incx, const float* y, int incy);

TEST_CASE("beside a threaded pthreads BLAS, quant's loops run serially only while OpenMP workers spin",
          "[parallel][blas]") {
  // The rule of detail::beside_blas (docs/threading.md), restated from the environment and
  // OpenBLAS's own answers.
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const char* spincount = std::getenv("GOMP_SPINCOUNT");
  const bool passive = (policy && (std::string(policy) == "passive" || std::string(policy) == "PASSIVE")) ||
                       (spincount && std::string(spincount) == "0");
  const float v[3] = {1.0f, 2.0f, 3.0f};
  REQUIRE(cblas_sdot(3, v, 1, v, 1) == 14.0f);
  thread_cap cap(2);
  const int outside = num_threads();
#if defined(__GNUC__) && defined(__ELF__)
  if (&openblas_set_num_threads != nullptr) openblas_set_num_threads(2);
#endif
  const bool threaded_blas = detail::blas_pthreads() > 1;
  SECTION("the scope caps this thread and restores the cap when it ends") {
    {
      const detail::beside_blas scope;
      CHECK(num_threads() == (!passive && threaded_blas ? 1 : outside));
      {
        const detail::beside_blas nested;
        CHECK(num_threads() == (!passive && threaded_blas ? 1 : outside));
      }
      CHECK(num_threads() == (!passive && threaded_blas ? 1 : outside));
    }
    CHECK(num_threads() == outside);
  }
  SECTION("other threads keep their thread count") {
    const detail::beside_blas scope;
    int seen = -1;
    std::thread t([&] { seen = num_threads(); });
    t.join();
    CHECK(seen == outside);
  }
  SECTION("results inside the scope are the serial results") {
    const std::size_t n = (std::size_t(1) << 17) + 5;
    const auto x = quant_test::normal_floats(n, 11);
    xt::xarray<float> xa = xt::adapt(x, std::vector<std::size_t>{n});
    const qparams p = qparams::per_tensor(grid::int_signed(4), 0.07f, 1);
    const xt::xarray<float> serial = with_threads(1, [&] { return xt::xarray<float>(eager::fake_quantize(xa, p)); });
    set_num_threads(2);
    const detail::beside_blas scope;
    const xt::xarray<float> inside = eager::fake_quantize(xa, p);
    require_bitwise_equal(inside, serial, n, "fake_quantize inside beside_blas");
  }
}

TEST_CASE("an OpenMP build runs the pieces in a team of two; a build without OpenMP says its thread tests are trivial",
          "[parallel]") {
#if defined(QUANT_TEST_EXPECT_OPENMP) && !defined(_OPENMP)
  FAIL("QUANT_OPENMP is ON but this file was compiled without OpenMP: every 1-vs-2-thread test here would compare "
       "a serial run with itself");
#endif
#if defined(_OPENMP)
  thread_cap cap(2);
  std::vector<int> team(64, 0);
  parallel_for(team.size(), parallel_min_elements, [&](std::size_t k) { team[k] = omp_get_num_threads(); });
  for (std::size_t k = 0; k < team.size(); ++k) {
    INFO("piece " << k);
    CHECK(team[k] == 2);
  }
  set_num_threads(1);
  parallel_for(team.size(), parallel_min_elements, [&](std::size_t k) { team[k] = omp_get_num_threads(); });
  CHECK(team[0] == 1);
#else
  WARN("built without OpenMP (QUANT_OPENMP=OFF): the 1-vs-2-thread tests run serially and cannot catch threading bugs");
  CHECK(num_threads() == 1);
#endif
}
