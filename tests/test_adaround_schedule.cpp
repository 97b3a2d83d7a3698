// adaround_schedule (adaround/schedule.hpp): warm-up and beta annealing against their
// closed forms, its checks, and that adaround_options and block_options use it unchanged.
#include <quant/adaround/schedule.hpp>
#include <quant/reconstruction.hpp>

#include <cmath>
#include <type_traits>

#include <catch2/catch.hpp>

using namespace quant;

namespace {
// beta(k) written from the formula (docs/adaround.md), in double.
double expected_beta(double start, double end, bool cosine, double k, double n, double warmup) {
  const double w = std::floor(warmup * n);
  if (k <= w) return start;
  const double t = (k - w) / (n - w);
  const double pi = std::acos(-1.0);
  return cosine ? end + (start - end) * (1.0 + std::cos(pi * t)) / 2.0 : end + (start - end) * (1.0 - t);
}
}  // namespace

TEST_CASE("adaround_schedule: warm-up and beta annealing", "[adaround][schedule]") {
  adaround_schedule s;
  SECTION("defaults: 20 % warm-up, beta 20 -> 2, linear") {
    CHECK(s.warmup == 0.2f);
    CHECK(s.beta_start == 20.0f);
    CHECK(s.beta_end == 2.0f);
    CHECK(s.beta_schedule == adaround_schedule::annealing::linear);
    CHECK(s.warmup_iterations(1000) == 200);
    CHECK(s.in_warmup(199, 1000));
    CHECK_FALSE(s.in_warmup(200, 1000));
  }
  for (const bool cosine : {false, true}) {
    DYNAMIC_SECTION((cosine ? "cosine" : "linear") << " annealing follows the closed form") {
      s.beta_schedule = cosine ? adaround_schedule::annealing::cosine : adaround_schedule::annealing::linear;
      s.warmup = 0.3f;
      s.beta_start = 16.0f;
      s.beta_end = 3.0f;
      const std::size_t n = 777;
      for (std::size_t k : {0, 1, 232, 233, 234, 400, 505, 776})
        CHECK(s.beta_at(k, n) == Approx(expected_beta(16.0, 3.0, cosine, static_cast<double>(k), n, 0.3f)).epsilon(1e-6));
      CHECK(s.beta_at(n, n) == Approx(3.0).epsilon(1e-6));  // t = 1 at the end
    }
  }
  SECTION("validate names the field") {
    s.validate("f");  // defaults are valid
    adaround_schedule bad = s;
    bad.warmup = 1.0f;
    CHECK_THROWS_WITH(bad.validate("f"), Catch::Contains("warmup"));
    bad = s;
    bad.beta_end = 0.5f;
    CHECK_THROWS_WITH(bad.validate("f"), Catch::Contains("beta_end"));
    bad = s;
    bad.beta_start = 1.5f;
    CHECK_THROWS_AS(bad.validate("f"), invalid_argument);
    CHECK_THROWS_WITH(bad.validate("f"), Catch::Contains("beta_start"));
    bad = s;
    bad.beta_start = NAN;
    CHECK_THROWS_AS(bad.validate("f"), invalid_argument);
  }
}

TEST_CASE("adaround_options and block_options are adaround_schedules", "[adaround][schedule]") {
  static_assert(std::is_base_of<adaround_schedule, adaround_options>::value, "");
  static_assert(std::is_base_of<adaround_schedule, block_options>::value, "");
  static_assert(std::is_same<adaround_options::schedule, adaround_schedule::annealing>::value, "");
  adaround_options a;
  block_options b;
  a.iterations = 1500;
  b.iterations = 1500;
  for (adaround_schedule* s : {static_cast<adaround_schedule*>(&a), static_cast<adaround_schedule*>(&b)}) {
    s->beta_schedule = adaround_schedule::annealing::cosine;
    s->warmup = 0.25f;
    s->beta_start = 12.0f;
  }
  SECTION("the member forms use the options' own iteration count") {
    for (std::size_t k : {0, 374, 375, 376, 900, 1499}) {
      CHECK(a.beta_at(k) == a.beta_at(k, 1500));
      CHECK(b.beta_at(k) == b.beta_at(k, 1500));
      CHECK(a.beta_at(k) == b.beta_at(k));
      CHECK(a.beta_at(k) == Approx(expected_beta(12.0, 2.0, true, static_cast<double>(k), 1500, 0.25f)).epsilon(1e-6));
    }
    CHECK(a.warmup_iterations() == 375);
    CHECK(b.warmup_iterations() == 375);
  }
  SECTION("both options reject a bad schedule with the same message") {
    a.beta_end = 13.0f;
    b.beta_end = 13.0f;
    std::string ma, mb;
    try {
      a.validate("f");
    } catch (const invalid_argument& e) {
      ma = e.what();
    }
    try {
      b.validate("f");
    } catch (const invalid_argument& e) {
      mb = e.what();
    }
    CHECK(ma.find("beta_start") != std::string::npos);
    CHECK(ma == mb);
  }
}
