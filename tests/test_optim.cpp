#include <quant/optim.hpp>
#include <quant/reference/optim.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <type_traits>
#include <vector>

#include "test_helpers.hpp"

using namespace quant;
using quant_test::require_bitwise_equal;

TEST_CASE("Adam kernels match the reference loop bit for bit (SIMD, scalar, any size)", "[optim]") {
  adam_options o;
  o.learning_rate = 0.01f;
  o.weight_decay = 0.1f;
  for (std::size_t n : quant_test::edge_sizes()) {
    for (std::size_t offset = 0; offset < 16; ++offset) {
      // Parameters and gradients inside their buffers, offset floats past a 64-byte boundary.
      auto p0 = quant_test::normal_floats(n + 32, 3 + static_cast<std::uint32_t>(n));
      float* p = quant_test::at_misalignment(p0, offset);
      std::vector<float> ps(p, p + n), pr(p, p + n), mr(n, 0.0f), vr(n, 0.0f), ms(n, 0.0f), vs(n, 0.0f);
      adam opt(n, o);
      for (std::size_t t = 1; t <= 3; ++t) {
        auto g0 = quant_test::normal_floats(n + 32, 100 + static_cast<std::uint32_t>(t), 2.0f);
        const float* g = quant_test::at_misalignment(g0, (offset + 2) % 16);
        opt.step(p, g);
        kernels::adam_update<simd::scalar>(ps.data(), g, ms.data(), vs.data(), n, adam_step::make(o, t));
        ref::adam_step(pr, std::vector<float>(g, g + n), mr, vr, t, o);
      }
      CHECK(opt.steps() == 3);
      require_bitwise_equal(p, pr, n, "adam simd n=" + std::to_string(n));
      require_bitwise_equal(ps, pr, n, "adam scalar n=" + std::to_string(n));
      require_bitwise_equal(opt.first_moment(), mr, n, "first moment");
      require_bitwise_equal(opt.second_moment(), vr, n, "second moment");
    }
  }
}

TEST_CASE("Adam flushes moments that decay towards subnormals, SIMD and reference alike", "[optim]") {
  // One real gradient, then zeros for 1500 steps (a saturated AdaRound weight): m decays by
  // beta1 per step and would pass through the subnormal range around step 700; the flush
  // rule sets it to 0 once below (1 - beta1) eps 2^-24. Gradients below eps 2^-24 count
  // as 0, larger ones as themselves.
  adam_options o;
  const std::size_t n = 37;
  const float tiny = o.epsilon * 0x1p-24f;
  std::vector<float> g0(n);
  for (std::size_t i = 0; i < n; ++i) g0[i] = (i % 3 == 0 ? 1e-3f : i % 3 == 1 ? 0.5f * tiny : 2.0f * tiny) * (i % 2 ? 1 : -1);
  std::vector<float> p(n, 0.25f), pr = p, mr(n, 0.0f), vr(n, 0.0f);
  adam opt(n, o);
  const std::vector<float> zero(n, 0.0f);
  std::size_t subnormal = 0;
  for (std::size_t t = 1; t <= 1500; ++t) {
    const auto& g = t == 1 ? g0 : zero;
    opt.step(p.data(), g.data());
    ref::adam_step(pr, g, mr, vr, t, o);
    for (std::size_t i = 0; i < n; ++i) {
      subnormal += std::fpclassify(opt.first_moment()[i]) == FP_SUBNORMAL;
      subnormal += std::fpclassify(opt.second_moment()[i]) == FP_SUBNORMAL;
    }
    if (t == 1)
      for (std::size_t i = 0; i < n; ++i) {
        INFO("i = " << i << ", g = " << g0[i]);
        if (i % 3 == 1)
          CHECK(opt.first_moment()[i] == 0.0f);  // |g| < eps 2^-24: no update at all
        else
          CHECK(opt.first_moment()[i] == (1.0f - o.beta1) * g0[i]);
      }
  }
  CHECK(subnormal == 0);
  require_bitwise_equal(p, pr, n, "adam simd vs reference");
  require_bitwise_equal(opt.first_moment(), mr, n, "first moment");
  require_bitwise_equal(opt.second_moment(), vr, n, "second moment");
  for (std::size_t i = 0; i < n; ++i) CHECK(opt.first_moment()[i] == 0.0f);  // 0.9^1500 m_1: flushed long ago
}

TEST_CASE("simd::fma rounds once for floats and packs", "[optim][simd]") {
  // (1 + 2^-23)^2 = 1 + 2^-22 + 2^-46: fused, minus (1 + 2^-22) leaves 2^-46; a multiply
  // then an add would round the product to 1 + 2^-22 first and give 0.
  const float a = 1.0f + 0x1p-23f, c = -(1.0f + 0x1p-22f);
  CHECK(simd::fma(a, a, c) == 0x1p-46f);
#if !defined(QUANT_NO_SIMD)
  using B = xsimd::batch<float, simd::default_arch>;
  alignas(64) float out[B::size];
  simd::fma(B(a), B(a), B(c)).store_aligned(out);
  for (float r : out) CHECK(r == 0x1p-46f);
#endif
}

TEST_CASE("Adam first step moves each parameter by lr against the gradient sign", "[optim]") {
  // t = 1: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps).
  std::vector<float> p = {1.0f, -2.0f, 0.5f, 3.0f};
  const std::vector<float> g = {0.3f, -7.0f, 1e-3f, -0.2f};
  adam opt(p.size(), adam_options{0.1f});
  const std::vector<float> p0 = p;
  opt.step(p, g);
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double want = p0[i] - 0.1 * g[i] / (std::fabs(g[i]) + 1e-8);
    CHECK(p[i] == Approx(want).epsilon(1e-6));
  }
}

TEST_CASE("Adam minimizes a badly scaled quadratic", "[optim]") {
  // f(p) = sum c_i (p_i - t_i)^2 with curvatures over 4 decades: Adam's per-coordinate
  // normalization reaches every target.
  const std::size_t n = 37;
  std::vector<float> p(n, 0.0f), c(n), target(n), g(n);
  for (std::size_t i = 0; i < n; ++i) {
    c[i] = std::pow(10.0f, static_cast<float>(i % 5) - 2.0f);
    target[i] = std::sin(static_cast<float>(i));
  }
  adam opt(n, adam_options{0.05f});
  for (int it = 0; it < 3000; ++it) {
    for (std::size_t i = 0; i < n; ++i) g[i] = 2.0f * c[i] * (p[i] - target[i]);
    opt.step(p, g);
    if (it == 2000) opt.set_learning_rate(0.005f);
  }
  for (std::size_t i = 0; i < n; ++i) CHECK(p[i] == Approx(target[i]).margin(2e-2));
}

TEST_CASE("SGD with and without momentum matches the reference and the closed form", "[optim]") {
  for (const sgd_options o : {sgd_options{0.1f}, sgd_options{0.1f, 0.9f}, sgd_options{0.1f, 0.9f, 0.0f, true, 0.01f},
                              sgd_options{0.05f, 0.5f, 0.5f, false, 0.0f}}) {
    for (std::size_t n : quant_test::edge_sizes()) {
      auto p = quant_test::normal_floats(n, 9);
      std::vector<float> pr = p, buf(n, 0.0f);
      sgd opt(n, o);
      for (std::size_t t = 0; t < 3; ++t) {
        auto g = quant_test::normal_floats(n, 50 + static_cast<std::uint32_t>(t));
        opt.step(p, g);
        ref::sgd_step(pr, g, buf, t == 0, o);
      }
      require_bitwise_equal(p, pr, n, "sgd n=" + std::to_string(n));
    }
  }
  // Plain SGD on f = p^2/2 from p = 1 with lr 0.1: p_k = 0.9^k.
  std::vector<float> p = {1.0f}, g(1);
  sgd opt(1, sgd_options{0.1f});
  for (int k = 0; k < 10; ++k) {
    g[0] = p[0];
    opt.step(p, g);
  }
  CHECK(p[0] == Approx(std::pow(0.9, 10)).epsilon(1e-6));
}

TEST_CASE("Optimizer updates do not depend on the thread count", "[optim]") {
  quant_test::require_two_threads();  // fails if "2 threads" would be a serial run
  const std::size_t n = (std::size_t(1) << 17) + 13;  // several pieces, odd tail
  auto g = quant_test::normal_floats(n, 1);
  std::vector<float> a = quant_test::normal_floats(n, 2), b = a;
  set_num_threads(1);
  adam o1(n);
  o1.step(a, g);
  set_num_threads(2);
  adam o2(n);
  o2.step(b, g);
  set_num_threads(0);
  require_bitwise_equal(a, b, n, "1 vs 2 threads");
}

TEST_CASE("cosine_decay follows the closed form", "[optim]") {
  CHECK(cosine_decay(1.0f, 0, 100) == 1.0f);
  CHECK(cosine_decay(1.0f, 50, 100) == Approx(0.5f));
  CHECK(cosine_decay(1.0f, 25, 100, 0.2f) == Approx(0.2 + 0.8 * 0.5 * (1.0 + std::cos(M_PI / 4))));
  CHECK(cosine_decay(1.0f, 100, 100) == 0.0f);
}

TEST_CASE("Optimizer options are validated", "[optim]") {
  CHECK_THROWS_AS(adam(4, adam_options{0.0f}), quant::invalid_argument);
  CHECK_THROWS_AS(adam(4, adam_options{-1.0f}), quant::invalid_argument);
  CHECK_THROWS_AS(adam(4, adam_options{1e-3f, 1.0f}), quant::invalid_argument);
  CHECK_THROWS_AS(adam(4, adam_options{1e-3f, 0.9f, -0.1f}), quant::invalid_argument);
  CHECK_THROWS_AS(adam(4, adam_options{1e-3f, 0.9f, 0.999f, 0.0f}), quant::invalid_argument);
  CHECK_THROWS_AS(adam(4, adam_options{NAN}), quant::invalid_argument);
  CHECK_THROWS_AS(sgd(4, sgd_options{0.1f, 0.0f, 0.0f, true}), quant::invalid_argument);
  CHECK_THROWS_AS(sgd(4, sgd_options{0.1f, 1.5f}), quant::invalid_argument);
  adam a(4);
  std::vector<float> p(4), g(3);
  CHECK_THROWS_AS(a.step(p, g), quant::length_error);
  CHECK_THROWS_AS(a.set_learning_rate(-1.0f), quant::invalid_argument);
  CHECK_THROWS_WITH(adam(4, adam_options{0.0f}), Catch::Contains("quant::adam: learning_rate = 0"));
}

namespace {

// The optimizers' state after a step that threw must be the state before it, bit for bit.
struct optim_state {
  std::vector<float> p, m, v;
  std::size_t steps;
};

template <class Optimizer>
optim_state state_of(const Optimizer& opt, const float* p, std::size_t n) {
  optim_state s{std::vector<float>(p, p + n), {}, {}, opt.steps()};
  if constexpr (std::is_same<Optimizer, adam>::value) {
    s.m.assign(opt.first_moment(), opt.first_moment() + n);
    s.v.assign(opt.second_moment(), opt.second_moment() + n);
  }
  return s;
}

void require_same_state(const optim_state& a, const optim_state& b, std::size_t n) {
  CHECK(a.steps == b.steps);
  require_bitwise_equal(a.p, b.p, n, "parameters");
  require_bitwise_equal(a.m, b.m, a.m.size(), "first moment");
  require_bitwise_equal(a.v, b.v, a.v.size(), "second moment");
}

// One optimizer (of `make()`) takes a finite step, then a step whose gradient holds `bad`
// at each index of `at` (it must throw naming the lowest one and change nothing), then a
// finite step; a twin that never saw the bad step must end bit for bit where it does.
template <class Make>
void check_rejects_gradient(Make make, const char* function, std::size_t n, const std::vector<std::size_t>& at,
                            float bad, int threads) {
  quant_test::thread_cap cap(threads);
  auto pbuf = quant_test::normal_floats(n + 32, 7), gbuf = quant_test::normal_floats(n + 32, 8, 0.5f);
  float* p = quant_test::at_misalignment(pbuf, 1);  // misaligned by 4 bytes
  const float* g = quant_test::at_misalignment(gbuf, 3);
  std::vector<float> twin_p(p, p + n);
  auto opt = make(n), twin = make(n);
  opt.step(p, g);
  twin.step(twin_p.data(), g);
  const optim_state before = state_of(opt, p, n);

  std::vector<float> gb(g, g + n);
  for (std::size_t i : at) gb[i] = bad;
  const std::size_t first = *std::min_element(at.begin(), at.end());
  std::ostringstream want;
  want << "quant::" << function << ": grads[" << first << "] = " << bad << ": must be finite";
  INFO("n = " << n << ", bad = " << bad << ", threads = " << threads << ", first bad index " << first);
  const float* bad_g = gb.data();
  CHECK_THROWS_AS(opt.step(p, bad_g), quant::domain_error);
  CHECK_THROWS_WITH(opt.step(p, bad_g), want.str());
  require_same_state(state_of(opt, p, n), before, n);

  opt.step(p, g);
  twin.step(twin_p.data(), g);
  require_same_state(state_of(opt, p, n), state_of(twin, twin_p.data(), n), n);
}

}  // namespace

TEST_CASE("Optimizers refuse a NaN or infinite gradient and leave their state unchanged", "[optim]") {
  constexpr std::size_t L = simd::lanes<float, simd::default_arch>;
  const std::size_t piece = detail::optim_piece;
  auto make_adam = [](std::size_t n) {
    adam_options o;
    o.learning_rate = 0.01f;
    o.weight_decay = 0.1f;
    return adam(n, o);
  };
  auto make_sgd = [](std::size_t n) { return sgd(n, sgd_options{0.1f}); };
  auto make_sgd_momentum = [](std::size_t n) { return sgd(n, sgd_options{0.1f, 0.9f, 0.0f, true, 0.01f}); };
  // One piece (serial): an index inside the vector body, the last element of the scalar
  // tail (n = 1003 leaves one for every pack width), the first element.
  const std::size_t small = 1003;
  REQUIRE((L == 1 || small % L != 0));  // (the scalar build has no tail)
  // Several pieces at 2 threads: an index in piece 5, one in the last piece's tail, and two
  // bad values of which the lower must be named whichever thread finds its piece first.
  const std::size_t large = 8 * piece + 13;
  const std::vector<std::vector<std::size_t>> small_at = {{2 * L + 1}, {small - 1}, {0}};
  const std::vector<std::vector<std::size_t>> large_at = {
      {5 * piece + 3}, {large - 1}, {6 * piece + 9, 2 * piece + 17}, {7 * piece, large - 2}};
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    for (const auto& at : small_at) {
      check_rejects_gradient(make_adam, "adam::step", small, at, bad, 1);
      check_rejects_gradient(make_sgd, "sgd::step", small, at, bad, 1);
      check_rejects_gradient(make_sgd_momentum, "sgd::step", small, at, bad, 1);
    }
    quant_test::require_two_threads();
    for (const auto& at : large_at) {
      check_rejects_gradient(make_adam, "adam::step", large, at, bad, 2);
      check_rejects_gradient(make_sgd, "sgd::step", large, at, bad, 2);
      check_rejects_gradient(make_sgd_momentum, "sgd::step", large, at, bad, 2);
    }
  }
}

TEST_CASE("first_not_finite: SIMD and scalar find the same first index at any position", "[optim]") {
  const std::size_t piece = detail::optim_piece;
  for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(17), std::size_t(1003), 3 * piece + 5}) {
    auto buf = quant_test::normal_floats(n + 32, 11, 1e30f);  // large finite values: x * 0 stays 0
    float* x = quant_test::at_misalignment(buf, 5);
    CHECK(detail::first_not_finite<simd::default_arch>(x, n) == n);
    CHECK(detail::first_not_finite<simd::scalar>(x, n) == n);
    for (std::size_t i = 0; i < n; i += 1 + i / 3) {
      const float keep = x[i];
      for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()}) {
        x[i] = bad;
        INFO("n = " << n << ", i = " << i << ", x[i] = " << bad);
        CHECK(detail::first_not_finite<simd::scalar>(x, n) == i);
        CHECK(quant_test::with_threads(1, [&] { return detail::first_not_finite<simd::default_arch>(x, n); }) == i);
        CHECK(quant_test::with_threads(2, [&] { return detail::first_not_finite<simd::default_arch>(x, n); }) == i);
      }
      x[i] = keep;
    }
  }
}
