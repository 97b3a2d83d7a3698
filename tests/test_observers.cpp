#include <quant/observers.hpp>
#include <quant/reference/observers.hpp>

#include <algorithm>
#include <random>
#include <sstream>
#include <tuple>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xview.hpp>

#include "test_helpers.hpp"

using namespace quant;

namespace {

xt::xarray<float> normal_tensor(std::vector<std::size_t> shape, std::uint32_t seed, float stddev = 1.0f) {
  std::size_t n = 1;
  for (auto d : shape) n *= d;
  return xt::adapt(quant_test::normal_floats(n, seed, stddev), shape);
}

// Channel c of x along axis as a flat contiguous tensor.
xt::xarray<float> channel_slice(const xt::xarray<float>& x, std::size_t axis, std::size_t c) {
  xt::xstrided_slice_vector sv(x.dimension(), xt::all());
  sv[axis] = c;
  xt::xarray<float> s = xt::strided_view(x, sv);
  return xt::flatten(s);
}

template <class Calibrate>
void check_per_channel_equals_slices(Calibrate&& calibrate, grid g, scheme s) {
  const xt::xarray<float> x = normal_tensor({3, 5, 70}, 7, 2.0f) + xt::arange<float>(0, 70) * 0.01f;
  for (std::ptrdiff_t axis : {0, 1, 2, -1, -3}) {
    const qparams pc = calibrate(x, g, s, axis);
    const std::size_t ax = static_cast<std::size_t>(axis < 0 ? axis + 3 : axis);
    REQUIRE(pc.size() == x.shape()[ax]);
    REQUIRE(pc.axis() == axis);
    for (std::size_t c = 0; c < pc.size(); ++c) {
      const qparams pt = calibrate(channel_slice(x, ax, c), g, s, std::nullopt);
      INFO("axis " << axis << " channel " << c);
      CHECK(quant_test::bits_of(pc.scale(c)) == quant_test::bits_of(pt.scale()));
      CHECK(pc.zero_point(c) == pt.zero_point());
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------
// min-max
// ---------------------------------------------------------------------------------------
TEST_CASE("min-max of known data: range, zero inclusion and PyTorch qparams", "[observers][minmax]") {
  const xt::xarray<float> x = {-1.0f, 2.0f, 0.5f, 3.0f};
  minmax_observer obs;
  obs.update(x);
  CHECK(obs.min()[0] == -1.0f);
  CHECK(obs.max()[0] == 3.0f);
  const qparams p = obs.compute(grid::int_signed(8), scheme::asymmetric);
  const float s = 4.0f / 255.0f;
  CHECK(p.scale() == s);
  CHECK(p.zero_point() == -128 - static_cast<int>(std::nearbyint(-1.0f / s)));  // -128 + 64
  const qparams ps = obs.compute(grid::int_signed(8), scheme::symmetric);
  CHECK(ps.scale() == 3.0f / 127.5f);
  CHECK(ps.zero_point() == 0);
  CHECK(obs.compute(grid::int_signed(8), scheme::symmetric, symmetric_scale_convention::aimet).scale() ==
        3.0f / 127.0f);
  // positive-only data: the range is widened to include 0
  const xt::xarray<float> pos = {1.0f, 2.0f};
  const qparams pu = calibrate_minmax(pos, grid::int_unsigned(8), scheme::asymmetric);
  CHECK(pu.scale() == 2.0f / 255.0f);
  CHECK(pu.zero_point() == 0);
  // all zeros: FLT_EPSILON scale
  const xt::xarray<float> zeros = xt::zeros<float>({17});
  CHECK(calibrate_minmax(zeros, grid::int_signed(8), scheme::symmetric).scale() == FLT_EPSILON);
}

TEST_CASE("min-max streaming, merge of two halves and save/load", "[observers][minmax]") {
  const xt::xarray<float> x = normal_tensor({8, 33}, 3);
  for (std::optional<std::ptrdiff_t> axis : {std::optional<std::ptrdiff_t>{}, std::optional<std::ptrdiff_t>{-1}}) {
    minmax_observer all(axis), a(axis), b(axis), streamed(axis);
    all.update(x);
    a.update(xt::view(x, xt::range(0, 5), xt::all()));
    b.update(xt::view(x, xt::range(5, 8), xt::all()));
    for (std::size_t r = 0; r < 8; ++r) streamed.update(xt::view(x, xt::range(r, r + 1), xt::all()));
    minmax_observer merged = a;
    merged.merge(b);
    CHECK(merged == all);
    CHECK(streamed == all);
    minmax_observer empty(axis);
    empty.merge(all);
    CHECK(empty == all);
    std::stringstream ss;
    all.save(ss);
    minmax_observer loaded;
    loaded.load(ss);
    CHECK(loaded == all);
    CHECK(loaded.compute(grid::int_signed(4), scheme::asymmetric).scales() ==
          all.compute(grid::int_signed(4), scheme::asymmetric).scales());
  }
}

TEST_CASE("min-max kernel: SIMD and scalar agree with the reference on edge sizes", "[observers][minmax]") {
  for (std::size_t n : quant_test::edge_sizes()) {
    if (n == 0) continue;
    for (std::size_t off : {0, 1, 3}) {
      auto base = quant_test::normal_floats(n + off, static_cast<std::uint32_t>(n * 7 + off));
      const float* x = base.data() + off;
      const ref::range want = ref::min_max(x, n);
      const auto got = detail::min_max_run<simd::default_arch>(x, n);
      const auto sc = detail::min_max_run<simd::scalar>(x, n);
      CHECK(got.min == want.min);
      CHECK(got.max == want.max);
      CHECK(sc.min == want.min);
      CHECK(sc.max == want.max);
      CHECK(got.finite);
      base[off + n / 2] = std::numeric_limits<float>::infinity();
      CHECK_FALSE(detail::min_max_run<simd::default_arch>(x, n).finite);
      base[off + n / 2] = std::numeric_limits<float>::quiet_NaN();
      CHECK_FALSE(detail::min_max_run<simd::default_arch>(x, n).finite);
      CHECK_FALSE(detail::min_max_run<simd::scalar>(x, n).finite);
    }
  }
}

TEST_CASE("per-channel min-max equals per-tensor min-max slice by slice", "[observers][minmax]") {
  auto cal = [](const auto& x, grid g, scheme s, std::optional<std::ptrdiff_t> axis) {
    return calibrate_minmax(x, g, s, axis);
  };
  check_per_channel_equals_slices(cal, grid::int_signed(8), scheme::asymmetric);
  check_per_channel_equals_slices(cal, grid::int_unsigned(4), scheme::symmetric);
  // short inner runs (channel axis last, C*inner < 64) take the row-folding path
  const xt::xarray<float> x = normal_tensor({50, 3}, 11);
  const qparams p = calibrate_minmax(x, grid::int_signed(8), scheme::asymmetric, 1);
  for (std::size_t c = 0; c < 3; ++c) {
    const qparams t = calibrate_minmax(channel_slice(x, 1, c), grid::int_signed(8), scheme::asymmetric);
    CHECK(p.scale(c) == t.scale());
    CHECK(p.zero_point(c) == t.zero_point());
  }
}

TEST_CASE("moving-average min-max follows the recurrence by hand", "[observers][minmax]") {
  moving_average_minmax_observer obs(0.25f);
  obs.update(xt::xarray<float>{-2.0f, 4.0f});  // initialises: [-2, 4]
  CHECK(obs.min()[0] == -2.0f);
  CHECK(obs.max()[0] == 4.0f);
  obs.update(xt::xarray<float>{-6.0f, 0.0f});  // m = -2 + 0.25 (-6 + 2) = -3, M = 4 + 0.25 (0 - 4) = 3
  CHECK(obs.min()[0] == -3.0f);
  CHECK(obs.max()[0] == 3.0f);
  obs.update(xt::xarray<float>{1.0f, 7.0f});  // m = -3 + 0.25 * 4 = -2, M = 3 + 0.25 * 4 = 4
  CHECK(obs.min()[0] == -2.0f);
  CHECK(obs.max()[0] == 4.0f);
  CHECK(obs.batches() == 3);
  // default constant 0.01, per channel, against the (1 - c) m + c b form in double
  moving_average_minmax_observer pc(0.01f, 0);
  double m0 = 0, m1 = 0;
  for (int t = 0; t < 50; ++t) {
    const xt::xarray<float> b = normal_tensor({2, 16}, 100 + t);
    pc.update(b);
    const double b0 = xt::amin(xt::view(b, 0, xt::all()))(), b1 = xt::amin(xt::view(b, 1, xt::all()))();
    m0 = t == 0 ? b0 : 0.99 * m0 + 0.01 * b0;
    m1 = t == 0 ? b1 : 0.99 * m1 + 0.01 * b1;
  }
  CHECK(pc.min()[0] == Approx(m0).epsilon(1e-5));
  CHECK(pc.min()[1] == Approx(m1).epsilon(1e-5));
}

TEST_CASE("moving-average merge is the batch-weighted mean; save/load round trip", "[observers][minmax]") {
  moving_average_minmax_observer a(0.5f), b(0.5f), e(0.5f);
  a.update(xt::xarray<float>{-1.0f, 1.0f});  // [-1, 1], 1 batch
  b.update(xt::xarray<float>{-4.0f, 2.0f});
  b.update(xt::xarray<float>{-4.0f, 8.0f});  // [-4, 5], 2 batches
  moving_average_minmax_observer m = a;
  m.merge(b);
  CHECK(m.min()[0] == -3.0f);                           // (1 * -1 + 2 * -4) / 3
  CHECK(m.max()[0] == Approx(11.0f / 3.0f).epsilon(1e-7));  // (1 * 1 + 2 * 5) / 3
  CHECK(m.batches() == 3);
  e.merge(a);
  CHECK(e == a);
  moving_average_minmax_observer other_c(0.1f);
  CHECK_THROWS_AS(a.merge(other_c), quant::invalid_argument);
  std::stringstream ss;
  m.save(ss);
  moving_average_minmax_observer l;
  l.load(ss);
  CHECK(l == m);
  CHECK_THROWS_AS(moving_average_minmax_observer(0.0f), quant::invalid_argument);
  CHECK_THROWS_AS(moving_average_minmax_observer(1.5f), quant::invalid_argument);
}

TEST_CASE("observers reject bad input with the documented exceptions", "[observers][errors]") {
  const xt::xarray<float> empty = xt::zeros<float>({0});
  const xt::xarray<float> with_nan = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  const xt::xarray<float> with_inf = {1.0f, -std::numeric_limits<float>::infinity()};
  const grid g = grid::int_signed(8);
  auto message_of = [](auto&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK_THROWS_AS(calibrate_minmax(empty, g, scheme::symmetric), quant::domain_error);
  CHECK_THROWS_AS(calibrate_minmax(with_nan, g, scheme::symmetric), quant::domain_error);
  CHECK_THROWS_AS(calibrate_minmax(with_inf, g, scheme::symmetric), quant::domain_error);
  CHECK_THROWS_AS(calibrate_mse(empty, g, scheme::symmetric), quant::domain_error);
  CHECK_THROWS_AS(calibrate_mse(with_nan, g, scheme::symmetric), quant::domain_error);
  CHECK_THROWS_AS(calibrate_mse(with_inf, g, scheme::symmetric), quant::domain_error);
  CHECK(message_of([&] { calibrate_minmax(with_nan, g, scheme::symmetric); }).rfind("quant::calibrate_minmax:", 0) == 0);
  CHECK(message_of([&] { calibrate_mse(empty, g, scheme::symmetric); }).rfind("quant::calibrate_mse:", 0) == 0);
  const xt::xarray<float> x = normal_tensor({4, 5}, 1);
  CHECK_THROWS_AS(calibrate_minmax(x, g, scheme::symmetric, 2), quant::invalid_argument);
  CHECK_THROWS_AS(calibrate_minmax(x, g, scheme::symmetric, -3), quant::invalid_argument);
  CHECK_THROWS_AS(calibrate_mse(x, g, scheme::symmetric, 5), quant::invalid_argument);
  CHECK_THROWS_AS(calibrate_minmax(x, grid::int_signed(1), scheme::symmetric), quant::invalid_argument);
  mse_options bad;
  bad.p = 0.0f;
  CHECK_THROWS_AS(calibrate_mse(x, g, scheme::symmetric, std::nullopt, bad), quant::invalid_argument);
  bad.p = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(calibrate_mse(x, g, scheme::symmetric, std::nullopt, bad), quant::invalid_argument);
  bad = {};
  bad.candidates = 0;
  CHECK_THROWS_AS(calibrate_mse(x, g, scheme::symmetric, std::nullopt, bad), quant::invalid_argument);
  bad = {};
  bad.rounding = rounding_mode::stochastic;
  CHECK_THROWS_AS(calibrate_mse(x, g, scheme::symmetric, std::nullopt, bad), quant::invalid_argument);
  // observers: empty compute, channel-count change, NaN in a later batch, mismatched merge
  minmax_observer o(0);
  CHECK_THROWS_AS(o.compute(g, scheme::symmetric), quant::domain_error);
  CHECK_THROWS_AS(o.update(empty), quant::domain_error);
  o.update(x);
  CHECK_THROWS_AS(o.update(normal_tensor({3, 5}, 2)), quant::length_error);
  xt::xarray<float> later = normal_tensor({4, 2}, 3);
  later(2, 1) = std::nanf("");
  CHECK_THROWS_AS(o.update(later), quant::domain_error);
  minmax_observer per_tensor;
  CHECK_THROWS_AS(o.merge(per_tensor), quant::invalid_argument);
  std::stringstream garbage("quant-observer histogram 1\n");
  CHECK_THROWS_AS(o.load(garbage), quant::invalid_argument);
  std::stringstream future("quant-observer minmax 99\n");
  CHECK_THROWS_AS(o.load(future), quant::invalid_argument);
}

// ---------------------------------------------------------------------------------------
// MSE / Lp
// ---------------------------------------------------------------------------------------
TEST_CASE("fused Lp error kernel matches the scalar kernel and the double reference", "[observers][mse]") {
  const grid g = grid::int_signed(8);
  for (float p : {2.0f, 2.4f, 1.0f}) {
    for (std::size_t n : quant_test::edge_sizes()) {
      for (std::size_t off : {0, 1, 3}) {
        auto base = quant_test::normal_floats(n + off, static_cast<std::uint32_t>(n + 31 * off), 3.0f);
        std::vector<float> x(base.begin() + off, base.end());
        const float s = 0.021f;
        const std::int32_t z = 5;
        const double want = ref::lp_error(x, s, z, g, p, 0.25);
        const double simd = kernels::lp_error<simd::default_arch>(base.data() + off, n, s, z, g, p, 0.25f);
        const double scal = kernels::lp_error<simd::scalar>(base.data() + off, n, s, z, g, p, 0.25f);
        INFO("p " << p << " n " << n << " off " << off);
        CHECK(simd == Approx(want).epsilon(1e-5).margin(1e-30));
        CHECK(scal == Approx(want).epsilon(1e-5).margin(1e-30));
      }
    }
  }
  // AIMET convention + half-away rounding go through the same body
  const auto x = quant_test::normal_floats(1003, 5);
  const double want = ref::lp_error(x, 0.01f, 0, g, 2.0, 1.0, rounding_mode::half_away_from_zero, true);
  const double got = kernels::lp_error<simd::default_arch, round_half_away_from_zero, aimet_convention>(
      x.data(), x.size(), 0.01f, 0, g, 2.0f);
  CHECK(got == Approx(want).epsilon(1e-5));
}

TEST_CASE("Lp error and MSE search are identical for 1 and 2 threads", "[observers][mse][threads]") {
  quant_test::require_two_threads();  // fails if "2 threads" would be a serial run
  const std::size_t n = (std::size_t(1) << 17) + 123;
  const auto x = quant_test::normal_floats(n, 9);
  const grid g = grid::int_signed(6);
  set_num_threads(1);
  const double e1 = kernels::lp_error(x.data(), n, 0.05f, 0, g, 2.4f);
  const qparams q1 = calibrate_mse(xt::adapt(x, std::vector<std::size_t>{n}), g, scheme::symmetric);
  const qparams c1 = calibrate_mse(xt::adapt(x, std::vector<std::size_t>{n / 64, 64}), g, scheme::asymmetric, 1);
  set_num_threads(2);
  const double e2 = kernels::lp_error(x.data(), n, 0.05f, 0, g, 2.4f);
  const qparams q2 = calibrate_mse(xt::adapt(x, std::vector<std::size_t>{n}), g, scheme::symmetric);
  const qparams c2 = calibrate_mse(xt::adapt(x, std::vector<std::size_t>{n / 64, 64}), g, scheme::asymmetric, 1);
  set_num_threads(0);
  CHECK(quant_test::bits_of(static_cast<float>(e1)) == quant_test::bits_of(static_cast<float>(e2)));
  CHECK(e1 == e2);
  CHECK(q1.scale() == q2.scale());
  CHECK(c1.scales() == c2.scales());
  CHECK(c1.zero_points() == c2.zero_points());
}

namespace {

// Dense scalar search in double: the best error over 20001 alphas in (0, 1].
double dense_best_error(const std::vector<float>& x, grid g, scheme s, double p) {
  const ref::range r = ref::min_max(x.data(), x.size());
  const float lo = std::min(r.min, 0.0f), hi = std::max(r.max, 0.0f);
  double best = std::numeric_limits<double>::infinity();
  for (int k = 1; k <= 20000; ++k) {
    const float a = static_cast<float>(k / 20000.0);
    const scale_zero_point sz = scale_from_range(g, a * lo, a * hi, s);
    best = std::min(best, ref::lp_error(x, sz.scale, sz.zero_point, g, p));
  }
  return best;
}

}  // namespace

TEST_CASE("MSE search reaches the dense brute-force optimum", "[observers][mse][long]") {
  // a Laplace-like tensor with outliers: the optimum clips well inside absmax
  std::vector<float> x = quant_test::normal_floats(2000, 21);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = x[i] * x[i] * x[i];
  for (const auto& [g, s, p] : {std::tuple<grid, scheme, float>{grid::int_signed(4), scheme::symmetric, 2.0f},
                                {grid::int_unsigned(4), scheme::asymmetric, 2.0f},
                                {grid::int_signed(3), scheme::symmetric, 2.4f}}) {
    mse_options opt;
    opt.p = p;
    const qparams q = calibrate_mse(xt::adapt(x, std::vector<std::size_t>{x.size()}), g, s, std::nullopt, opt);
    const double got = ref::lp_error(x, q.scale(), q.zero_point(), g, p);
    const double dense = dense_best_error(x, g, s, p);
    const qparams mm = calibrate_minmax(xt::adapt(x, std::vector<std::size_t>{x.size()}), g, s);
    const double minmax_err = ref::lp_error(x, mm.scale(), mm.zero_point(), g, p);
    INFO("bits " << g.bits << " p " << p << " got " << got << " dense " << dense << " minmax " << minmax_err);
    CHECK(got <= dense * (1.0 + 2e-3));
    CHECK(got < 0.8 * minmax_err);  // clipping pays off on heavy tails
  }
}

TEST_CASE("per-channel MSE equals per-tensor MSE slice by slice", "[observers][mse]") {
  auto cal = [](const auto& x, grid g, scheme s, std::optional<std::ptrdiff_t> axis) {
    return calibrate_mse(x, g, s, axis);
  };
  check_per_channel_equals_slices(cal, grid::int_signed(4), scheme::symmetric);
  check_per_channel_equals_slices(cal, grid::int_unsigned(8), scheme::asymmetric);
}

TEST_CASE("MSE observer: streaming equals one-shot, merge, save/load", "[observers][mse]") {
  const xt::xarray<float> x = normal_tensor({6, 40}, 8);
  const grid g = grid::int_signed(4);
  mse_observer a(1), b(1);
  a.update(xt::view(x, xt::range(0, 2), xt::all()));
  b.update(xt::view(x, xt::range(2, 6), xt::all()));
  a.merge(b);
  const qparams got = a.compute(g, scheme::asymmetric);
  const qparams want = calibrate_mse(x, g, scheme::asymmetric, 1);
  CHECK(got.scales() == want.scales());
  CHECK(got.zero_points() == want.zero_points());
  std::stringstream ss;
  a.save(ss);
  mse_observer l;
  l.load(ss);
  CHECK(l.values() == a.values());
  CHECK(l.compute(g, scheme::asymmetric).scales() == want.scales());
  // all-zero data: FLT_EPSILON scale
  CHECK(calibrate_mse(xt::xarray<float>(xt::zeros<float>({9})), g, scheme::symmetric).scale() == FLT_EPSILON);
}

// ---------------------------------------------------------------------------------------
// percentile
// ---------------------------------------------------------------------------------------
TEST_CASE("percentile of 0..N-1 with linear interpolation", "[observers][percentile]") {
  const std::size_t N = 1001;
  xt::xarray<float> x = xt::arange<float>(0.0f, static_cast<float>(N));
  // shuffle deterministically so the order does not help
  std::vector<float> v(x.begin(), x.end());
  std::mt19937 rng(4);
  std::shuffle(v.begin(), v.end(), rng);
  for (double p : {99.0, 99.99, 75.0, 100.0}) {
    percentile_observer obs(p);
    obs.update(xt::adapt(v, std::vector<std::size_t>{N}));
    const auto r = obs.ranges()[0];
    // P_q(0..N-1) = q / 100 * (N - 1) exactly
    CHECK(r.first == static_cast<float>((100.0 - p) / 100.0 * (N - 1)));
    CHECK(r.second == static_cast<float>(p / 100.0 * (N - 1)));
    CHECK(r.second == static_cast<float>(ref::percentile(v, p)));
  }
  // shifted so that the range is [0, hi]: scale from the clipped range
  percentile_observer obs(99.0);
  obs.update(xt::adapt(v, std::vector<std::size_t>{N}));
  const qparams q = obs.compute(grid::int_unsigned(8), scheme::asymmetric);
  CHECK(q.scale() == static_cast<float>(0.99 * 1000) / 255.0f);
  // default p, merge == whole, per channel == slices, save/load
  const xt::xarray<float> t = normal_tensor({4, 300}, 12);
  percentile_observer a(99.9, 0), b(99.9, 0), all(99.9, 0);
  a.update(xt::view(t, xt::all(), xt::range(0, 100)));
  b.update(xt::view(t, xt::all(), xt::range(100, 300)));
  all.update(t);
  a.merge(b);
  const qparams pa = a.compute(grid::int_signed(8), scheme::asymmetric);
  const qparams pall = all.compute(grid::int_signed(8), scheme::asymmetric);
  CHECK(pa.scales() == pall.scales());
  CHECK(pa.zero_points() == pall.zero_points());
  for (std::size_t c = 0; c < 4; ++c) {
    percentile_observer one(99.9);
    one.update(channel_slice(t, 0, c));
    CHECK(one.compute(grid::int_signed(8), scheme::asymmetric).scale() == pall.scale(c));
  }
  std::stringstream ss;
  all.save(ss);
  percentile_observer l;
  l.load(ss);
  CHECK(l.percentile() == 99.9);
  CHECK(l.values() == all.values());
  CHECK_THROWS_AS(percentile_observer(50.0), quant::invalid_argument);
  CHECK_THROWS_AS(percentile_observer(100.5), quant::invalid_argument);
  CHECK_THROWS_AS(percentile_observer(std::nan("")), quant::invalid_argument);
  percentile_observer e;
  CHECK_THROWS_AS(e.update(xt::xarray<float>{1.0f, std::nanf("")}), quant::domain_error);
  CHECK_THROWS_AS(e.compute(grid::int_signed(8), scheme::symmetric), quant::domain_error);
}

// ---------------------------------------------------------------------------------------
// histogram (PyTorch HistogramObserver) and SQNR (AIMET tf_enhanced)
// ---------------------------------------------------------------------------------------
TEST_CASE("lattice histogram equals the direct computation; two halves == whole, any order",
          "[observers][histogram]") {
  std::vector<float> x = quant_test::normal_floats(5000, 77, 2.0f);
  x[17] = 40.0f;  // an outlier that widens the range in a later batch
  const auto want = ref::make_lattice_histogram(x, 2048);
  const auto adapt = [](const float* p, std::size_t n) { return xt::adapt(p, n, xt::no_ownership(), std::vector<std::size_t>{n}); };
  histogram_observer all, a, b, streamed, reversed;
  all.update(adapt(x.data(), x.size()));
  a.update(adapt(x.data(), 2500));
  b.update(adapt(x.data() + 2500, 2500));
  for (std::size_t i = 0; i < x.size(); i += 700) streamed.update(adapt(x.data() + i, std::min<std::size_t>(700, x.size() - i)));
  for (std::size_t i = x.size(); i > 0;) {
    const std::size_t len = std::min<std::size_t>(333, i);
    i -= len;
    reversed.update(adapt(x.data() + i, len));
  }
  const auto& h = all.histogram();
  CHECK(h.exponent() == want.exponent);
  CHECK(h.origin() == want.origin);
  CHECK(h.counts() == want.counts);
  CHECK(h.total() == x.size());
  CHECK(h.occupied() > 1024);
  CHECK(h.occupied() <= 2048);
  histogram_observer m = a;
  m.merge(b);
  CHECK(m == all);
  CHECK(streamed == all);
  CHECK(reversed == all);
  std::stringstream ss;
  all.save(ss);
  histogram_observer l;
  l.load(ss);
  CHECK(l == all);
  // a tampered stream is rejected
  std::string text = ss.str();
  text.replace(text.find("exponent 1 "), 12, "exponent 1 9");
  std::stringstream bad(text);
  CHECK_THROWS_AS(l.load(bad), quant::invalid_argument);
}

TEST_CASE("histogram L2 error: closed form vs piecewise integration", "[observers][histogram]") {
  std::vector<double> hist(300);
  std::mt19937 rng(3);
  for (auto& v : hist) v = static_cast<double>(rng() % 50);
  for (std::size_t dst : {4u, 16u, 256u}) {
    for (auto [s, e] : {std::pair<std::size_t, std::size_t>{0, 299}, {10, 200}, {150, 151}, {37, 290}}) {
      const double got = detail::histogram_l2_error(hist, 0.125, s, e, dst);
      const double want = ref::histogram_l2_error(hist, 0.125, s, e, dst);
      INFO("dst " << dst << " [" << s << ", " << e << "]");
      CHECK(got == Approx(want).epsilon(1e-9));
    }
  }
}

TEST_CASE("histogram observer: PyTorch L2 search against a direct scalar computation", "[observers][histogram]") {
  std::vector<float> x = quant_test::normal_floats(20000, 5);
  for (std::size_t i = 0; i < 20; ++i) x[i * 997] = 12.0f + static_cast<float>(i);  // far outliers
  histogram_observer obs;
  obs.update(xt::adapt(x, std::vector<std::size_t>{x.size()}));
  const auto rh = ref::make_lattice_histogram(x, 2048);
  const double w = std::ldexp(1.0, rh.exponent);
  const ref::range mm = ref::min_max(x.data(), x.size());
  const std::size_t occ = static_cast<std::size_t>(std::floor(mm.max / w) - static_cast<double>(rh.origin)) + 1;
  std::vector<double> hist(rh.counts.begin(), rh.counts.begin() + static_cast<std::ptrdiff_t>(occ));
  // the search, transliterated with the reference error: grow the clipped quantile from
  // the side that frees more bins, stop when the error grows
  double csum_total = 0;
  std::vector<double> csum(occ);
  for (std::size_t i = 0; i < occ; ++i) csum[i] = (csum_total += hist[i]);
  double alpha = 0, beta = 1, best = std::numeric_limits<double>::infinity();
  std::size_t sb = 0, eb = occ - 1;
  while (alpha < beta) {
    const double na = alpha + 1e-5, nb = beta - 1e-5;
    std::size_t l = sb, r = eb;
    while (l < eb && csum[l] < na * csum_total) ++l;
    while (r > sb && csum[r] > nb * csum_total) --r;
    std::size_t ns = sb, ne = eb;
    if (l - sb > eb - r) {
      ns = l;
      alpha = na;
    } else {
      ne = r;
      beta = nb;
    }
    if (ns == sb && ne == eb) continue;
    const double err = ref::histogram_l2_error(hist, w, ns, ne, 256);
    if (err > best) break;
    best = err;
    sb = ns;
    eb = ne;
  }
  const float lo = std::max(static_cast<float>((static_cast<double>(rh.origin) + sb) * w), mm.min);
  const float hi = std::min(static_cast<float>((static_cast<double>(rh.origin) + eb + 1) * w), mm.max);
  const auto r = obs.ranges(256)[0];
  CHECK(r.first == lo);
  CHECK(r.second == hi);
  CHECK(hi < mm.max);  // the top outliers are clipped (the search stops at its first local minimum)
  const qparams q = obs.compute(grid::int_unsigned(8), scheme::asymmetric);
  const scale_zero_point sz = scale_from_range(grid::int_unsigned(8), lo, hi, scheme::asymmetric);
  CHECK(q.scale() == sz.scale);
  CHECK(q.zero_point() == sz.zero_point);
  // L2 error of the histogram at the chosen range beats min-max's
  const double at_minmax = ref::histogram_l2_error(hist, w, 0, occ - 1, 256);
  CHECK(best < at_minmax);
  // constant tensor: the range is the value itself
  histogram_observer c;
  c.update(xt::xarray<float>(xt::ones<float>({10}) * 0.5f));
  CHECK(c.ranges(256)[0] == std::make_pair(0.5f, 0.5f));
}

TEST_CASE("histogram and SQNR observers: per channel equals per tensor slice by slice", "[observers][histogram]") {
  const xt::xarray<float> x = normal_tensor({3, 4, 80}, 19);
  for (std::ptrdiff_t axis : {0, 1, -1}) {
    histogram_observer hp(axis);
    sqnr_observer sp(axis);
    hp.update(x);
    sp.update(x);
    const std::size_t ax = static_cast<std::size_t>(axis < 0 ? axis + 3 : axis);
    const qparams hq = hp.compute(grid::int_signed(8), scheme::asymmetric);
    const qparams sq = sp.compute(grid::int_signed(8), scheme::asymmetric);
    for (std::size_t c = 0; c < x.shape()[ax]; ++c) {
      histogram_observer ht;
      sqnr_observer st;
      ht.update(channel_slice(x, ax, c));
      st.update(channel_slice(x, ax, c));
      CHECK(hp.histogram(c) == ht.histogram());
      CHECK(hq.scale(c) == ht.compute(grid::int_signed(8), scheme::asymmetric).scale());
      CHECK(sq.scale(c) == st.compute(grid::int_signed(8), scheme::asymmetric).scale());
      CHECK(sq.zero_point(c) == st.compute(grid::int_signed(8), scheme::asymmetric).zero_point());
    }
  }
}

TEST_CASE("SQNR observer: AIMET cost, gamma, candidates, merge and save/load", "[observers][sqnr]") {
  std::vector<float> x = quant_test::normal_floats(30000, 8);
  for (std::size_t i = 0; i < 30; ++i) x[i * 991] = -15.0f - static_cast<float>(i % 7);
  const auto xa = xt::adapt(x, std::vector<std::size_t>{x.size()});
  sqnr_observer obs;
  obs.update(xa);
  const auto& h = obs.histogram();
  const double w = h.bin_width();
  const std::vector<double> hist = detail::occupied_counts(h);
  const double first_mid = (static_cast<double>(h.origin()) + 0.5) * w;
  const grid g = grid::int_signed(8);
  const double steps = 255.0;
  // direct cost of a (delta, offset) pair: sum over bin midpoints, clipped terms x gamma
  auto cost = [&](double delta, double offset, double gamma) {
    double sum = 0;
    for (std::size_t i = 0; i < hist.size(); ++i) {
      const double m = first_mid + w * i;
      double q = std::nearbyint(m / delta - offset);
      const bool clip = q < 0 || q > steps;
      q = std::min(std::max(q, 0.0), steps);
      const double e = ((q + offset) * delta - m) * ((q + offset) * delta - m) * hist[i];
      sum += clip ? gamma * e : e;
    }
    return sum;
  };
  const qparams q = obs.compute(g, scheme::symmetric);
  CHECK(q.zero_point() == 0);  // offset -128 on int8
  // the winner is the best of AIMET's 101 symmetric deltas k/100 * 2 absmax / 255
  const double absmax = std::max(-static_cast<double>(h.min()), static_cast<double>(h.max()));
  double best = std::numeric_limits<double>::infinity(), best_delta = 0;
  for (int k = 1; k <= 101; ++k) {
    const double d = 2 * absmax / steps * k / 100.0;
    const double c = cost(d, -128, 3.0);
    if (c < best) best = c, best_delta = d;
  }
  CHECK(q.scale() == static_cast<float>(best_delta));
  // and close to a dense search over delta
  double dense = std::numeric_limits<double>::infinity();
  for (int k = 1; k <= 5000; ++k) dense = std::min(dense, cost(2 * absmax / steps * k / 4000.0, -128, 3.0));
  CHECK(best <= dense * 1.05);
  CHECK(q.scale() < static_cast<float>(absmax / 127.5));  // clips the outliers
  // a larger gamma penalises clipping more: the range does not shrink
  sqnr_options strong;
  strong.gamma = 50.0f;
  sqnr_observer s2(std::nullopt, strong);
  s2.update(xa);
  CHECK(s2.compute(g, scheme::symmetric).scale() >= q.scale());
  // asymmetric: zero point on the grid, scale positive, cost no worse than min-max's range
  const qparams qa = obs.compute(g, scheme::asymmetric);
  CHECK(qa.zero_point() >= g.qmin());
  CHECK(qa.zero_point() <= g.qmax());
  const double delta_mm = (static_cast<double>(h.max()) - std::min(static_cast<double>(h.min()), 0.0)) / steps;
  CHECK(cost(qa.scale(), g.qmin() - qa.zero_point(), 3.0) <=
        cost(delta_mm, std::nearbyint(static_cast<double>(h.min()) / delta_mm), 3.0));
  // merge and save/load
  sqnr_observer a, b;
  a.update(xt::adapt(x.data(), 10000, xt::no_ownership(), std::vector<std::size_t>{10000}));
  b.update(xt::adapt(x.data() + 10000, 20000, xt::no_ownership(), std::vector<std::size_t>{20000}));
  a.merge(b);
  CHECK(a == obs);
  CHECK(a.compute(g, scheme::asymmetric).scale() == qa.scale());
  std::stringstream ss;
  obs.save(ss);
  sqnr_observer l;
  l.load(ss);
  CHECK(l == obs);
  sqnr_options bad;
  bad.gamma = -1.0f;
  CHECK_THROWS_AS(sqnr_observer(std::nullopt, bad), quant::invalid_argument);
  CHECK_THROWS_AS(histogram_observer(std::nullopt, 1), quant::invalid_argument);
  histogram_observer e;
  CHECK(e.empty());
  CHECK_THROWS_AS(e.update(xt::xarray<float>{std::numeric_limits<float>::infinity()}), quant::domain_error);
  CHECK_THROWS_AS(e.compute(g, scheme::symmetric), quant::domain_error);
}

TEST_CASE("load: a count larger than the values present fails as truncated, without allocating the count",
          "[observers][io]") {
  // 2^40 floats (4 TiB) announced, one value present. The reader used to size the vector
  // from the count before reading (std::bad_alloc, or an ASan abort) instead of failing on
  // the missing values.
  const std::string huge = std::to_string(std::uint64_t(1) << 40);
  SECTION("min-max") {
    std::istringstream s("quant-observer minmax 1\naxis 0\nmin " + huge + " 1.5\n");
    minmax_observer o;
    CHECK_THROWS_WITH(o.load(s), Catch::Contains("truncated or malformed value"));
  }
  SECTION("MSE samples") {
    std::istringstream s("quant-observer mse 1\naxis 0\ncounts 1 " + huge + "\nvalues " + huge + " 1 2\n");
    mse_observer o;
    CHECK_THROWS_AS(o.load(s), quant::invalid_argument);
  }
  SECTION("histogram counts") {
    std::istringstream s("quant-observer histogram 1\naxis 0\nbins 1 2048\nchannels 1 1\nbins 1 2048\ntotal 1 1\n"
                         "range 2 0 1\nexponent 1 -11\norigin 1 0\ncounts 2048 1 0\n");
    histogram_observer o;
    CHECK_THROWS_WITH(o.load(s), Catch::Contains("truncated or malformed value"));
  }
}
