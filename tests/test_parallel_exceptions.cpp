// Failure inside a threaded loop: an exception thrown by a piece of quant::parallel_for or
// detail::parallel_reduce (validation failing in one piece, an allocation failing in a
// worker) reaches the caller with its own type and message, for 1 and 2 threads, and it is
// the exception the serial loop would throw (the lowest failing piece). Without the
// capture in parallel.hpp an exception leaving an OpenMP region calls std::terminate.
// The ASan build of this file checks that nothing leaks on these paths.
#include <quant/detail/parallel.hpp>  // parallel_reduce
#include <quant/error.hpp>
#include <quant/parallel.hpp>
#include <quant/uniform.hpp>

#include <atomic>
#include <new>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <xtensor/xtensor.hpp>

#include "test_helpers.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace quant;
using quant_test::thread_cap;

namespace {

constexpr std::size_t pieces = 96;
const std::size_t large = parallel_min_elements;  // enough work to go parallel

// The message detail::fail builds for piece k (written out, not taken from the library).
std::string message_of_piece(std::size_t k) {
  return "quant::test_kernel: piece = " + std::to_string(k) + ": fails on purpose";
}

}  // namespace

TEST_CASE("an exception thrown in a parallel piece reaches the caller with its type and message",
          "[parallel][errors]") {
  for (int threads : {1, 2}) {
    DYNAMIC_SECTION(threads << " thread(s)") {
      thread_cap cap(threads);
      std::vector<std::atomic<int>> runs(pieces);
      for (auto& r : runs) r = 0;
      std::atomic<int> widest_team{0};
      auto body = [&](std::size_t k) {
#if defined(_OPENMP)
        int team = omp_get_num_threads();
        int seen = widest_team.load();
        while (team > seen && !widest_team.compare_exchange_weak(seen, team)) {
        }
#endif
        ++runs[k];
        if (k == 23 || k == 61 || k == 62)
          detail::fail<domain_error>("test_kernel", "piece", k, "fails on purpose");
      };

      SECTION("as quant::domain_error, the lowest failing piece's, after every piece below it ran once") {
        bool caught = false;
        try {
          parallel_for(pieces, large, body);
        } catch (const domain_error& e) {
          caught = true;
          CHECK(std::string(e.what()) == message_of_piece(23));
        }
        CHECK(caught);
        for (std::size_t k = 0; k <= 23; ++k) {
          INFO("piece " << k);
          CHECK(runs[k] == 1);
        }
        for (std::size_t k = 24; k < pieces; ++k) CHECK(runs[k] <= 1);
#if defined(_OPENMP)
        CHECK(widest_team.load() == threads);  // the 2-thread run really had a team of two
#endif
      }

      SECTION("catchable as quant::error and as the standard exception") {
        CHECK_THROWS_AS(parallel_for(pieces, large, body), quant::error);
        CHECK_THROWS_AS(parallel_for(pieces, large, body), std::domain_error);
      }

      SECTION("quant::invalid_argument and quant::length_error keep their types") {
        CHECK_THROWS_AS(parallel_for(pieces, large,
                                     [](std::size_t k) {
                                       if (k == 50) detail::fail<invalid_argument>("f", "bits", 1, "x");
                                     }),
                        invalid_argument);
        CHECK_THROWS_AS(parallel_for(pieces, large,
                                     [](std::size_t k) {
                                       if (k % 7 == 3) detail::fail<length_error>("f", "shape", k, "x");
                                     }),
                        length_error);
      }

      SECTION("an allocation failure in a piece arrives as std::bad_alloc") {
        CHECK_THROWS_AS(parallel_for(pieces, large,
                                     [](std::size_t k) {
                                       if (k == pieces - 1) throw std::bad_alloc();
                                     }),
                        std::bad_alloc);
      }

      SECTION("when every piece throws, piece 0's exception arrives") {
        CHECK_THROWS_WITH(parallel_for(pieces, large,
                                       [](std::size_t k) {
                                         detail::fail<domain_error>("test_kernel", "piece", k,
                                                                    "fails on purpose");
                                       }),
                          message_of_piece(0));
      }

      SECTION("a failing partial of parallel_reduce reaches the caller") {
        const std::size_t n = 40 * large, piece = large / 4;
        auto partial = [&](std::size_t b, std::size_t e) -> double {
          if (b / piece == 77) detail::fail<domain_error>("test_kernel", "piece", b / piece, "fails on purpose");
          return static_cast<double>(e - b);
        };
        CHECK_THROWS_WITH(detail::parallel_reduce(n, piece, 0.0, partial, [](double a, double b) { return a + b; }),
                          message_of_piece(77));
      }

      SECTION("the next parallel loop after a failure runs every piece") {
        CHECK_THROWS_AS(parallel_for(pieces, large, body), domain_error);
        std::vector<int> after(pieces, 0);
        parallel_for(pieces, large, [&](std::size_t k) { after[k] += 1; });
        for (std::size_t k = 0; k < pieces; ++k) CHECK(after[k] == 1);
        // and a real kernel still gives its result (NaN rejected after its threaded pass)
        xt::xtensor<float, 1> x = xt::zeros<float>({std::size_t(1) << 18});
        x(200000) = std::numeric_limits<float>::quiet_NaN();
        const auto p = qparams::per_tensor(grid::int_signed(8), 0.1f, 0);
        CHECK_THROWS_AS(eager::quantize<std::int8_t>(x, p), domain_error);
        x(200000) = 1.25f;
        const auto q = eager::quantize<std::int8_t>(x, p);
        CHECK(q(200000) == 12);  // 1.25 * 10 = 12.5 -> 12 (half to even)
        CHECK(q(0) == 0);
      }
    }
  }
}
