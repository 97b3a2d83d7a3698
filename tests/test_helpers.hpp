// Shared test utilities: seeded data and bitwise comparison.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>

#include <catch2/catch.hpp>

#include <quant/parallel.hpp>

namespace quant_test {

// Sizes that hit empty input, a single element, pack size +-1 (for SSE..AVX-512) and a
// long odd length with a tail.
inline std::vector<std::size_t> edge_sizes() { return {0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 1003}; }

inline std::vector<float> normal_floats(std::size_t n, std::uint32_t seed, float stddev = 1.0f, float mean = 0.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// An r x c matrix of seeded N(0, sd^2) values.
inline xt::xtensor<float, 2> normal_matrix(std::size_t r, std::size_t c, std::uint32_t seed, float sd = 1.0f) {
  const auto v = normal_floats(r * c, seed, sd);
  xt::xtensor<float, 2> m = xt::xtensor<float, 2>::from_shape({r, c});
  std::copy(v.begin(), v.end(), m.begin());
  return m;
}

// Values that sit exactly on rounding ties of a grid with step `s` (k + 0.5) * s.
inline std::vector<float> tie_floats(std::size_t n, float s, int range) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = (static_cast<float>(static_cast<int>(i % (2 * range)) - range) + 0.5f) * s;
  return v;
}

// A pointer `offset` floats past the first 64-byte boundary in buf: a start misaligned by
// exactly offset * 4 bytes for every pack width up to AVX-512 (offset < 16). For n elements
// past the pointer, buf must hold n + 32 floats.
inline float* at_misalignment(std::vector<float>& buf, std::size_t offset) {
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(buf.data());
  const std::size_t lead = ((64 - a % 64) % 64) / sizeof(float);
  float* p = buf.data() + lead + offset;
  REQUIRE(reinterpret_cast<std::uintptr_t>(p) % 64 == offset * sizeof(float) % 64);
  return p;
}

// Call at the start of a 1-vs-2-thread comparison. With OpenMP: requires that
// set_num_threads(2) gives quant's parallel loops a team of two (then restores the default
// cap). A build whose CMake asked for OpenMP (QUANT_OPENMP=ON defines
// QUANT_TEST_EXPECT_OPENMP) but compiled without it fails: the comparison would be a serial
// run against itself. A build configured without OpenMP has no threads to compare and
// says so with a WARN, visible in the test output.
inline void require_two_threads() {
#if defined(_OPENMP)
  quant::set_num_threads(2);
  const int cap = quant::num_threads();
  std::vector<int> team(8, 0);
  quant::parallel_for(team.size(), quant::parallel_min_elements,
                              [&](std::size_t k) { team[k] = omp_get_num_threads(); });
  quant::set_num_threads(0);
  INFO("quant::num_threads() after set_num_threads(2): " << cap);
  REQUIRE(cap == 2);
  for (std::size_t k = 0; k < team.size(); ++k) {
    INFO("team size seen by piece " << k);
    REQUIRE(team[k] == 2);
  }
#elif defined(QUANT_TEST_EXPECT_OPENMP)
  FAIL("QUANT_OPENMP is ON but this test was compiled without OpenMP: a 1-vs-2-thread comparison would compare a "
       "serial run with itself");
#else
  WARN("built without OpenMP: this 1-vs-2-thread comparison runs serially and cannot catch threading bugs");
#endif
}

// Caps quant's threads at n for a scope and restores the default cap when it ends (also
// when a REQUIRE fails inside it).
struct thread_cap {
  explicit thread_cap(int n) { quant::set_num_threads(n); }
  ~thread_cap() { quant::set_num_threads(0); }
  thread_cap(const thread_cap&) = delete;
  thread_cap& operator=(const thread_cap&) = delete;
};

// f() run with quant's threads capped at n.
template <class F>
auto with_threads(int n, F&& f) {
  thread_cap cap(n);
  return f();
}

// n integers drawn uniformly from [lo, hi] with a fixed seed, converted to T.
template <class T>
std::vector<T> random_ints(std::size_t n, int lo, int hi, std::uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(d(g));
  return v;
}

inline std::uint32_t bits_of(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

// Exact equality that also treats NaN == NaN; reports the first mismatch.
template <class A, class B>
void require_bitwise_equal(const A& got, const B& want, std::size_t n, const std::string& what = "") {
  for (std::size_t i = 0; i < n; ++i) {
    const float g = static_cast<float>(got[i]), w = static_cast<float>(want[i]);
    const bool same = (std::isnan(g) && std::isnan(w)) || bits_of(g) == bits_of(w);
    if (!same) {
      INFO(what << " element " << i << ": got " << g << " want " << w);
      REQUIRE(same);
    }
  }
}

}  // namespace quant_test
