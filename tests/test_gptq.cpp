// GPTQ and its Hessian accumulator against independent math: a plain double Hessian, and
// the Optimal Brain Quantization update written in its original OBS form (explicit H^-1 from
// Gauss-Jordan elimination, one column removed after each step), with no Cholesky factor
// and no lazy batches. Reconstruction errors are recomputed from the data.
#include <quant/adaround.hpp>
#include <quant/gptq.hpp>
#include <quant/hessian.hpp>
#include <quant/im2col.hpp>
#include <quant/observers.hpp>
#include <quant/uniform.hpp>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xview.hpp>

#include "test_helpers.hpp"

extern "C" void openblas_set_num_threads(int) __attribute__((weak));
extern "C" int openblas_get_num_threads(void) __attribute__((weak));

using namespace quant;
using quant_test::normal_matrix;

namespace {

using dmat = std::vector<std::vector<double>>;

// Correlated inputs X = Z A (latent dimension in/3) with per-column gains, so that H is far
// from diagonal and its diagonal spreads (act order then changes the sweep).
xt::xtensor<float, 2> correlated_inputs_with_gains(std::size_t rows, std::size_t in, std::uint32_t seed) {
  const std::size_t latent = std::max<std::size_t>(1, in / 3);
  const auto z = normal_matrix(rows, latent, seed);
  const auto a = normal_matrix(latent, in, seed + 1);
  xt::xtensor<float, 2> x = xt::zeros<float>({rows, in});
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t i = 0; i < in; ++i) {
      double acc = 0.0;
      for (std::size_t l = 0; l < latent; ++l) acc += double(z(r, l)) * a(l, i);
      x(r, i) = static_cast<float>(acc * (0.5 + double((i * 7) % 11) / 5.0) + 0.1 * z(r, i % latent));
    }
  return x;
}

// H = 2 X^T X / n, straight from the definition.
dmat plain_hessian(const xt::xtensor<float, 2>& x) {
  const std::size_t n = x.shape()[0], in = x.shape()[1];
  dmat h(in, std::vector<double>(in, 0.0));
  for (std::size_t i = 0; i < in; ++i)
    for (std::size_t j = 0; j < in; ++j) {
      double acc = 0.0;
      for (std::size_t r = 0; r < n; ++r) acc += double(x(r, i)) * double(x(r, j));
      h[i][j] = 2.0 * acc / double(n);
    }
  return h;
}

// Inverse by Gauss-Jordan elimination with partial pivoting.
dmat invert(dmat a) {
  const std::size_t n = a.size();
  dmat inv(n, std::vector<double>(n, 0.0));
  for (std::size_t i = 0; i < n; ++i) inv[i][i] = 1.0;
  for (std::size_t c = 0; c < n; ++c) {
    std::size_t p = c;
    for (std::size_t r = c + 1; r < n; ++r)
      if (std::abs(a[r][c]) > std::abs(a[p][c])) p = r;
    std::swap(a[p], a[c]);
    std::swap(inv[p], inv[c]);
    const double d = a[c][c];
    for (std::size_t k = 0; k < n; ++k) {
      a[c][k] /= d;
      inv[c][k] /= d;
    }
    for (std::size_t r = 0; r < n; ++r)
      if (r != c) {
        const double f = a[r][c];
        for (std::size_t k = 0; k < n; ++k) {
          a[r][k] -= f * a[c][k];
          inv[r][k] -= f * inv[c][k];
        }
      }
  }
  return inv;
}

struct sz {
  float s;
  float z;
};

// q = clamp(round_half_even(float(w) * (1/s)) + z, qmin, qmax) in float (the default FP
// environment rounds nearbyint half to even).
float quantize_ref(double w, sz p, grid g) {
  const float t = static_cast<float>(w) * (1.0f / p.s);
  const float q = std::nearbyint(t) + p.z;
  return std::min(std::max(q, float(g.qmin())), float(g.qmax()));
}

// Scales of a group of floats (the observer the reference is told to use).
using observer_fn = std::function<sz(const std::vector<float>&)>;

sz mse_observer_of(const std::vector<float>& v, grid g, scheme sch) {
  const auto p = calibrate_mse(xt::adapt(v, {v.size()}), g, sch);
  return {p.scale(), float(p.zero_point())};
}
sz minmax_observer_of(const std::vector<float>& v, grid g, scheme sch) {
  const auto p = calibrate_minmax(xt::adapt(v, {v.size()}), g, sch);
  return {p.scale(), float(p.zero_point())};
}

struct obq_result {
  std::vector<std::vector<float>> q;       // [out][in]
  std::vector<std::vector<sz>> params;     // [out][groups]
};

// Optimal Brain Quantization, OBS form. Columns are visited in `order`; after column c,
// every still-free column k gets w_k -= (w_c - dq_c) [H^-1]_ck / [H^-1]_cc, and c is removed
// from H^-1 (H^-1 <- H^-1 - H^-1[:, c] H^-1[c, :] / H^-1_cc on the free set). Dead inputs and
// dampening as specified. Scales: `fixed` per (row, group), or, when `dynamic` is set,
// observed on the group's current weights when its first column (in `order`) comes up.
obq_result obq_reference(const xt::xtensor<float, 2>& w_in, const xt::xtensor<float, 2>& x, grid g, double damp,
                         std::size_t group, const std::vector<std::vector<sz>>& fixed, const observer_fn& dynamic,
                         std::vector<std::size_t> order = {}) {
  const std::size_t out = w_in.shape()[0], in = w_in.shape()[1], groups = in / group;
  if (order.empty()) {
    order.resize(in);
    std::iota(order.begin(), order.end(), std::size_t(0));
  }
  dmat h = plain_hessian(x);
  std::vector<bool> dead(in, false);
  for (std::size_t i = 0; i < in; ++i)
    if (h[i][i] == 0.0) h[i][i] = 1.0, dead[i] = true;
  double mean = 0.0;
  for (std::size_t i = 0; i < in; ++i) mean += h[i][i];
  mean /= double(in);
  for (std::size_t i = 0; i < in; ++i) h[i][i] += damp * mean;
  dmat hinv = invert(h);
  dmat w(out, std::vector<double>(in));
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t i = 0; i < in; ++i) w[o][i] = dead[i] ? 0.0 : double(w_in(o, i));
  obq_result r;
  r.q.assign(out, std::vector<float>(in, 0.0f));
  r.params = fixed.empty() ? std::vector<std::vector<sz>>(out, std::vector<sz>(groups)) : fixed;
  std::vector<bool> free(in, true), group_seen(groups, false);
  for (std::size_t c : order) {
    const std::size_t k = c / group;
    if (dynamic && !group_seen[k]) {
      group_seen[k] = true;
      for (std::size_t o = 0; o < out; ++o) {
        std::vector<float> v(group);
        for (std::size_t t = 0; t < group; ++t) v[t] = static_cast<float>(w[o][k * group + t]);
        r.params[o][k] = dynamic(v);
      }
    }
    for (std::size_t o = 0; o < out; ++o) {
      const sz p = r.params[o][k];
      const float q = quantize_ref(w[o][c], p, g);
      const float dq = (q - p.z) * p.s;
      r.q[o][c] = q;
      const double coef = (w[o][c] - double(dq)) / hinv[c][c];
      for (std::size_t j = 0; j < in; ++j)
        if (free[j] && j != c) w[o][j] -= coef * hinv[c][j];
      w[o][c] = dq;
    }
    free[c] = false;
    const double d = hinv[c][c];
    for (std::size_t i = 0; i < in; ++i)
      for (std::size_t j = 0; j < in; ++j)
        if (free[i] && free[j]) hinv[i][j] -= hinv[i][c] * hinv[c][j] / d;
  }
  return r;
}

std::vector<std::vector<sz>> params_of(const qparams& p, std::size_t out, std::size_t groups) {
  std::vector<std::vector<sz>> r(out, std::vector<sz>(groups));
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t k = 0; k < groups; ++k) {
      const std::size_t i = p.granularity() == granularity::per_tensor ? 0 : o * groups + k;
      r[o][k] = {p.scale(i), float(p.zero_point(i))};
    }
  return r;
}

void require_same_integers(const xt::xtensor<std::int32_t, 2>& got, const std::vector<std::vector<float>>& want) {
  for (std::size_t o = 0; o < want.size(); ++o)
    for (std::size_t i = 0; i < want[o].size(); ++i)
      if (got(o, i) != static_cast<std::int32_t>(want[o][i])) {
        INFO("row " << o << " column " << i << ": got " << got(o, i) << " want " << want[o][i]);
        REQUIRE(got(o, i) == static_cast<std::int32_t>(want[o][i]));
      }
}

// mean over rows of ||(W - W_q) x||^2, in double from the data.
double reconstruction_error(const xt::xtensor<float, 2>& w, const xt::xtensor<float, 2>& wq,
                            const xt::xtensor<float, 2>& x) {
  const std::size_t n = x.shape()[0], out = w.shape()[0], in = w.shape()[1];
  double acc = 0.0;
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t o = 0; o < out; ++o) {
      double y = 0.0;
      for (std::size_t i = 0; i < in; ++i) y += (double(w(o, i)) - double(wq(o, i))) * double(x(r, i));
      acc += y * y;
    }
  return acc / double(n);
}

// Stable order by decreasing diagonal of the plain Hessian (dead inputs count as 1).
std::vector<std::size_t> act_order_of(const xt::xtensor<float, 2>& x) {
  const dmat h = plain_hessian(x);
  std::vector<double> d(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) d[i] = h[i][i] == 0.0 ? 1.0 : h[i][i];
  std::vector<std::size_t> order(h.size());
  std::iota(order.begin(), order.end(), std::size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return d[a] > d[b]; });
  return order;
}

template <class F>
void require_throws_naming(F&& f, const std::string& needle) {
  try {
    f();
  } catch (const std::exception& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find(needle) != std::string::npos);
    throw;
  }
}

}  // namespace

TEST_CASE("hessian_accumulator: H = 2 X^T X / n; merged random splits equal one pass; conv rows", "[gptq][hessian]") {
  const std::size_t n = 301, in = 37;
  const auto x = correlated_inputs_with_gains(n, in, 11);
  hessian_accumulator one(in);
  one.update(x);
  REQUIRE(one.rows() == n);
  const auto h = one.hessian();
  const dmat ref = plain_hessian(x);

  SECTION("H matches the definition (relative 1e-13) and is symmetric") {
    for (std::size_t i = 0; i < in; ++i)
      for (std::size_t j = 0; j < in; ++j) {
        REQUIRE(h(i, j) == h(j, i));
        REQUIRE(std::abs(h(i, j) - ref[i][j]) <= 1e-13 * std::max(1.0, std::abs(ref[i][j])) * 10);
      }
  }

  SECTION("random splits, accumulated separately and merged, equal one pass within the summation bound") {
    // |S_merged - S_one| <= 2 gamma_n sum_r |x_ri x_rj| (both are sums of the same exact products)
    std::mt19937 rng(5);
    for (int trial = 0; trial < 4; ++trial) {
      std::uniform_int_distribution<std::size_t> cut(0, n);
      std::size_t c1 = cut(rng), c2 = cut(rng);
      if (c1 > c2) std::swap(c1, c2);
      hessian_accumulator a(in), b(in), c(in);
      a.update(xt::view(x, xt::range(0, c1), xt::all()));
      b.update(xt::view(x, xt::range(c1, c2), xt::all()));
      c.update(xt::view(x, xt::range(c2, n), xt::all()));
      b.merge(c);
      a.merge(b);
      REQUIRE(a.rows() == n);
      const auto s1 = one.gram(), s2 = a.gram();
      const double u = std::ldexp(1.0, -53), gamma = double(n) * u / (1.0 - double(n) * u);
      for (std::size_t i = 0; i < in; ++i)
        for (std::size_t j = 0; j < in; ++j) {
          double abs_sum = 0.0;
          for (std::size_t r = 0; r < n; ++r) abs_sum += std::abs(double(x(r, i)) * double(x(r, j)));
          REQUIRE(std::abs(s1(i, j) - s2(i, j)) <= 2.0 * gamma * abs_sum);
        }
    }
  }

  SECTION("a conv batch adds its im2col rows") {
    conv2d_shape g;
    g.channels = 2, g.height = 5, g.width = 6, g.kernel_h = 3, g.kernel_w = 2, g.pad_h = 1, g.stride_w = 2;
    const auto flat = normal_matrix(3, g.image_size(), 4);
    xt::xtensor<float, 4> img = xt::xtensor<float, 4>::from_shape({3, g.channels, g.height, g.width});
    std::copy(flat.begin(), flat.end(), img.begin());
    hessian_accumulator conv(g.patch_size()), rows(g.patch_size());
    conv.update(img, g);
    const auto cols = im2col(img, g);
    REQUIRE(conv.rows() == 3 * g.positions());
    const dmat want = plain_hessian(cols);
    const auto got = conv.hessian();
    for (std::size_t i = 0; i < g.patch_size(); ++i)
      for (std::size_t j = 0; j < g.patch_size(); ++j)
        REQUIRE(std::abs(got(i, j) - want[i][j]) <= 1e-12 * std::max(1.0, std::abs(want[i][j])));
  }

  SECTION("misuse throws") {
    REQUIRE_THROWS_AS(hessian_accumulator(0), quant::invalid_argument);
    hessian_accumulator a(in), b(in + 1);
    REQUIRE_THROWS_AS(a.hessian(), quant::domain_error);
    REQUIRE_THROWS_AS(a.update(normal_matrix(4, in + 1, 1)), quant::length_error);
    auto bad = normal_matrix(4, in, 1);
    bad(2, 3) = std::nanf("");
    REQUIRE_THROWS_AS(a.update(bad), quant::domain_error);
    REQUIRE(a.rows() == 0);
    REQUIRE_THROWS_AS(a.merge(b), quant::length_error);
  }
}

TEST_CASE("gptq_layer equals the OBQ update from H^-1, blocked or not", "[gptq]") {
  const std::size_t out = 12, in = 40, n = 160;
  const auto w = normal_matrix(out, in, 21, 0.5f);
  const auto x = correlated_inputs_with_gains(n, in, 22);
  const grid g = GENERATE(grid::int_signed(3), grid::int_unsigned(4));
  const scheme sch = g.is_signed ? scheme::symmetric : scheme::asymmetric;
  const qparams qp = calibrate_mse(w, g, sch, 0);
  const auto want = obq_reference(w, x, g, 0.01, in, params_of(qp, out, 1), nullptr);
  INFO("bits " << g.bits);

  SECTION("fixed qparams, block sizes 1, 4, 7 (ragged), 40 and 128") {
    for (std::size_t b : {1u, 4u, 7u, 40u, 128u}) {
      INFO("block " << b);
      gptq_options opt;
      opt.block_size = b;
      const auto r = gptq_layer(w, x, qp, opt);
      require_same_integers(r.integer_weights, want.q);
      // the float weights are the dequantized integers, bit for bit
      const xt::xtensor<float, 2> dq = eager::dequantize(r.integer_weights, qp);
      quant_test::require_bitwise_equal(r.weights.data(), dq.data(), dq.size(), "weights");
    }
  }

  SECTION("observer-chosen per-channel scales are the MSE search on each row") {
    gptq_options opt;
    opt.grid = g;
    opt.scheme = sch;
    const auto r = gptq_layer(w, x, opt);
    REQUIRE(r.qparams.granularity() == granularity::per_channel);
    REQUIRE(r.qparams.axis() == 0);
    quant_test::require_bitwise_equal(r.qparams.scales().data(), qp.scales().data(), out, "scales");
    REQUIRE(r.qparams.zero_points() == qp.zero_points());
    require_same_integers(r.integer_weights, want.q);
  }

  SECTION("blocked and unblocked runs give the same integers and nearly the same report") {
    gptq_options a, b;
    a.block_size = 1;
    b.block_size = 16;
    const auto ra = gptq_layer(w, x, qp, a), rb = gptq_layer(w, x, qp, b);
    REQUIRE(ra.integer_weights == rb.integer_weights);
    REQUIRE(ra.report.gptq_error == rb.report.gptq_error);  // same integers, same error formula
  }
}

TEST_CASE("gptq_layer: reconstruction error on the calibration data is below round-to-nearest's", "[gptq]") {
  const std::size_t out = 24, in = 64, n = 256;
  const auto w = normal_matrix(out, in, 31, 0.3f);
  const auto x = correlated_inputs_with_gains(n, in, 32);
  for (int bits : {2, 3, 4}) {
    gptq_options opt;
    opt.grid = grid::int_signed(bits);
    const auto r = gptq_layer(w, x, opt);
    const xt::xtensor<float, 2> w_rtn = eager::fake_quantize(w, r.qparams);
    const double e_rtn = reconstruction_error(w, w_rtn, x), e_gptq = reconstruction_error(w, r.weights, x);
    INFO("bits " << bits << ": RTN " << e_rtn << ", GPTQ " << e_gptq);
    CHECK(e_gptq < 0.8 * e_rtn);
    // the report's errors are the same quantities (computed from the Gram matrix)
    CHECK(std::abs(r.report.rtn_error - e_rtn) <= 1e-9 * e_rtn);
    CHECK(std::abs(r.report.gptq_error - e_gptq) <= 1e-9 * e_gptq);
    const auto q_rtn = eager::quantize<std::int32_t>(w, r.qparams);
    std::size_t flipped = 0;
    for (std::size_t i = 0; i < q_rtn.size(); ++i) flipped += q_rtn.data()[i] != r.integer_weights.data()[i];
    CHECK(r.report.flipped_fraction == double(flipped) / double(out * in));
    CHECK(r.report.flipped_fraction > 0.0);
    CHECK(r.report.seconds > 0.0);
    CHECK(r.report.dead_inputs == 0);
  }
}

TEST_CASE("gptq_layer: act order sweeps by decreasing H_ii and restores the column order", "[gptq]") {
  const std::size_t out = 10, in = 36, n = 144;
  const auto w = normal_matrix(out, in, 41, 0.5f);
  const auto x = correlated_inputs_with_gains(n, in, 42);
  const grid g = grid::int_signed(3);
  const qparams qp = calibrate_mse(w, g, scheme::symmetric, 0);
  const auto order = act_order_of(x);
  std::vector<std::size_t> identity(in);
  std::iota(identity.begin(), identity.end(), std::size_t(0));
  REQUIRE(order != identity);
  gptq_options opt;
  opt.act_order = true;
  opt.block_size = 8;
  const auto r = gptq_layer(w, x, qp, opt);
  REQUIRE(r.column_order == order);

  SECTION("equals GPTQ without act order on columns permuted by hand, permuted back") {
    xt::xtensor<float, 2> wp = w, xp = x;
    for (std::size_t j = 0; j < in; ++j) {
      xt::view(wp, xt::all(), j) = xt::view(w, xt::all(), order[j]);
      xt::view(xp, xt::all(), j) = xt::view(x, xt::all(), order[j]);
    }
    gptq_options plain;
    plain.block_size = 8;
    const auto rp = gptq_layer(wp, xp, qp, plain);
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t j = 0; j < in; ++j) REQUIRE(r.integer_weights(o, order[j]) == rp.integer_weights(o, j));
  }

  SECTION("equals the OBQ reference visiting the columns in that order") {
    const auto want = obq_reference(w, x, g, 0.01, in, params_of(qp, out, 1), nullptr, order);
    require_same_integers(r.integer_weights, want.q);
  }
}

TEST_CASE("gptq_layer: dead inputs get H_ii = 1 and zero weights", "[gptq]") {
  const std::size_t out = 8, in = 24, n = 96;
  const auto w = normal_matrix(out, in, 51, 0.5f);
  auto x = correlated_inputs_with_gains(n, in, 52);
  for (std::size_t r = 0; r < n; ++r) x(r, 3) = x(r, 17) = 0.0f;
  const grid g = grid::int_unsigned(3);
  const qparams qp = calibrate_minmax(w, g, scheme::asymmetric, 0);
  const auto r = gptq_layer(w, x, qp);
  REQUIRE(r.report.dead_inputs == 2);
  for (std::size_t o = 0; o < out; ++o) {
    REQUIRE(r.integer_weights(o, 3) == qp.zero_point(o));  // quantize(0) = z
    REQUIRE(r.integer_weights(o, 17) == qp.zero_point(o));
    REQUIRE(r.weights(o, 3) == 0.0f);
  }
  const auto want = obq_reference(w, x, g, 0.01, in, params_of(qp, out, 1), nullptr);
  require_same_integers(r.integer_weights, want.q);
  const auto all_dead = gptq_layer(w, xt::xtensor<float, 2>(xt::zeros<float>({std::size_t(4), in})), qp);
  REQUIRE(all_dead.report.dead_inputs == in);
  REQUIRE(all_dead.report.gptq_error == 0.0);
}

TEST_CASE("gptq_layer: per-group scales, fixed before the sweep or chosen at each group's start", "[gptq]") {
  const std::size_t out = 6, in = 48, n = 192, group = 8;
  const auto w = normal_matrix(out, in, 61, 0.5f);
  const auto x = correlated_inputs_with_gains(n, in, 62);
  const grid g = grid::int_signed(3);
  gptq_options opt;
  opt.grid = g;
  opt.group_size = group;
  opt.block_size = 20;  // groups start inside blocks and straddle block ends

  SECTION("fixed: each group's scales are the MSE search on its slice of W") {
    const auto r = gptq_layer(w, x, opt);
    REQUIRE(r.qparams.granularity() == granularity::per_group);
    REQUIRE(r.qparams.group_size() == group);
    for (std::size_t k = 0; k < in / group; ++k) {
      const xt::xtensor<float, 2> slice = xt::view(w, xt::all(), xt::range(k * group, (k + 1) * group));
      const auto want = calibrate_mse(slice, g, scheme::symmetric, 0);
      for (std::size_t o = 0; o < out; ++o) REQUIRE(r.qparams.scale(o * (in / group) + k) == want.scale(o));
    }
    const auto ref = obq_reference(w, x, g, 0.01, group, params_of(r.qparams, out, in / group), nullptr);
    require_same_integers(r.integer_weights, ref.q);
  }

  SECTION("at group start: scales from the error-compensated weights, as the OBQ reference observes them") {
    for (auto obs : {gptq_observer::mse, gptq_observer::minmax})
      for (bool act : {false, true}) {
        INFO("observer " << int(obs) << " act order " << act);
        opt.group_scales = gptq_group_scales::at_group_start;
        opt.observer = obs;
        opt.act_order = act;
        opt.scheme = act ? scheme::asymmetric : scheme::symmetric;
        const scheme sch = opt.scheme;
        const observer_fn f = [&](const std::vector<float>& v) {
          return obs == gptq_observer::mse ? mse_observer_of(v, g, sch) : minmax_observer_of(v, g, sch);
        };
        const auto r = gptq_layer(w, x, opt);
        const auto ref = obq_reference(w, x, g, 0.01, group, {}, f, act ? act_order_of(x) : std::vector<std::size_t>{});
        require_same_integers(r.integer_weights, ref.q);
        for (std::size_t o = 0; o < out; ++o)
          for (std::size_t k = 0; k < in / group; ++k) {
            REQUIRE(r.qparams.scale(o * (in / group) + k) == ref.params[o][k].s);
            REQUIRE(float(r.qparams.zero_point(o * (in / group) + k)) == ref.params[o][k].z);
          }
        // they differ from the fixed ones (the weights moved before each group started)
        gptq_options fixed = opt;
        fixed.group_scales = gptq_group_scales::fixed;
        CHECK(gptq_layer(w, x, fixed).qparams.scales() != r.qparams.scales());
      }
  }
}

TEST_CASE("gptq_layer: the same result for any thread count", "[gptq]") {
  quant_test::require_two_threads();  // fails if "2 threads" would be a serial run
  const std::size_t out = 96, in = 160, n = 640;
  const auto w = normal_matrix(out, in, 71, 0.5f);
  const auto x = correlated_inputs_with_gains(n, in, 72);
  gptq_options opt;
  opt.grid = grid::int_signed(3);
  opt.group_size = 32;
  opt.group_scales = gptq_group_scales::at_group_start;
  opt.act_order = true;
  opt.block_size = 48;
  auto run = [&](int quant_threads, int blas_threads) {
    set_num_threads(quant_threads);
    if (openblas_set_num_threads) openblas_set_num_threads(blas_threads);
    auto r = gptq_layer(w, x, opt);
    set_num_threads(0);
    return r;
  };
  const int blas_before = openblas_get_num_threads ? openblas_get_num_threads() : 1;
  const auto a = run(1, 1), b = run(2, 1), c = run(2, 2), d = run(1, 2);
  if (openblas_set_num_threads) openblas_set_num_threads(blas_before);
  for (const auto* other : {&b, &c, &d}) {
    REQUIRE(other->integer_weights == a.integer_weights);
    REQUIRE(other->qparams.scales() == a.qparams.scales());
    REQUIRE(other->report.gptq_error == a.report.gptq_error);
  }
  if (!openblas_set_num_threads) WARN("not OpenBLAS: only quant's thread count was varied");
}

TEST_CASE("gptq_layer: a conv layer through its im2col rows", "[gptq]") {
  conv2d_shape g;
  g.channels = 3, g.height = 8, g.width = 8, g.kernel_h = 3, g.kernel_w = 3, g.pad_h = g.pad_w = 1;
  const auto flat = normal_matrix(4, g.image_size(), 81);
  xt::xtensor<float, 4> img = xt::xtensor<float, 4>::from_shape({4, g.channels, g.height, g.width});
  std::copy(flat.begin(), flat.end(), img.begin());
  const auto w = normal_matrix(5, g.patch_size(), 82, 0.3f);
  hessian_accumulator acc(g.patch_size());
  acc.update(xt::view(img, xt::range(0, 2), xt::all(), xt::all(), xt::all()), g);
  hessian_accumulator second(g.patch_size());
  second.update(xt::view(img, xt::range(2, 4), xt::all(), xt::all(), xt::all()), g);
  acc.merge(second);
  const auto cols = im2col(img, g);
  const qparams qp = calibrate_mse(w, grid::int_signed(3), scheme::symmetric, 0);
  const auto r = gptq_layer(w, acc, qp);
  const auto want = obq_reference(w, cols, grid::int_signed(3), 0.01, g.patch_size(), params_of(qp, 5, 1), nullptr);
  require_same_integers(r.integer_weights, want.q);
  CHECK(reconstruction_error(w, r.weights, cols) < reconstruction_error(w, eager::fake_quantize(w, qp), cols));
}

TEST_CASE("gptq_layer: H not positive definite after dampening is a domain_error naming damp", "[gptq]") {
  // rows (2, 2) and (0, 0): H = [[4, 4], [4, 4]], exactly singular; its Cholesky meets a
  // zero pivot (4 - 2 * 2) in double.
  xt::xtensor<float, 2> x = {{2.0f, 2.0f}, {0.0f, 0.0f}};
  xt::xtensor<float, 2> w = {{0.3f, -0.7f}, {1.1f, 0.2f}};
  gptq_options opt;
  opt.damp = 0.0;
  REQUIRE_THROWS_AS(require_throws_naming([&] { gptq_layer(w, x, opt); }, "damp = 0"), quant::domain_error);
  opt.damp = 0.01;
  REQUIRE_NOTHROW(gptq_layer(w, x, opt));
}

TEST_CASE("gptq_layer: every validation path throws the right quant exception", "[gptq]") {
  const auto w = normal_matrix(4, 8, 91);
  const auto x = normal_matrix(16, 8, 92);
  auto with = [&](auto change) {
    gptq_options o;
    change(o);
    return o;
  };
  REQUIRE_THROWS_AS(gptq_layer(w, x, with([](gptq_options& o) { o.grid.bits = 1; })), quant::invalid_argument);
  REQUIRE_THROWS_AS(gptq_layer(w, x, with([](gptq_options& o) { o.damp = -0.1; })), quant::invalid_argument);
  REQUIRE_THROWS_AS(gptq_layer(w, x, with([](gptq_options& o) { o.damp = std::nan(""); })), quant::invalid_argument);
  REQUIRE_THROWS_AS(gptq_layer(w, x, with([](gptq_options& o) { o.block_size = 0; })), quant::invalid_argument);
  REQUIRE_THROWS_AS(gptq_layer(w, x, with([](gptq_options& o) { o.group_size = 3; })), quant::invalid_argument);
  REQUIRE_THROWS_AS(gptq_layer(w, x, with([](gptq_options& o) { o.group_size = 16; })), quant::invalid_argument);
  REQUIRE_THROWS_AS(gptq_layer(w, x, with([](gptq_options& o) { o.mse.candidates = 0; })), quant::invalid_argument);
  REQUIRE_THROWS_AS(gptq_layer(xt::xtensor<float, 2>::from_shape({0, 8}), x), quant::invalid_argument);
  REQUIRE_THROWS_AS(gptq_layer(w, xt::xtensor<float, 2>::from_shape({0, 8})), quant::invalid_argument);
  REQUIRE_THROWS_AS(gptq_layer(w, normal_matrix(16, 9, 1)), quant::length_error);
  auto bad = w;
  bad(1, 1) = std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_AS(gptq_layer(bad, x), quant::domain_error);
  auto bad_x = x;
  bad_x(3, 2) = std::nanf("");
  REQUIRE_THROWS_AS(gptq_layer(w, bad_x), quant::domain_error);
  hessian_accumulator empty(8), wrong(9);
  REQUIRE_THROWS_AS(gptq_layer(w, empty), quant::invalid_argument);
  REQUIRE_THROWS_AS(gptq_layer(w, wrong), quant::length_error);
  // caller qparams: wrong channel count, wrong axis, group options alongside
  const grid g = grid::int_signed(4);
  REQUIRE_THROWS_AS(gptq_layer(w, x, qparams::per_channel(g, std::vector<float>(5, 0.1f), 0)), quant::length_error);
  REQUIRE_THROWS_AS(gptq_layer(w, x, qparams::per_channel(g, std::vector<float>(8, 0.1f), 1)), quant::invalid_argument);
  REQUIRE_THROWS_AS(gptq_layer(w, x, qparams::per_group(g, std::vector<float>(16, 0.1f), std::vector<std::int32_t>(16, 0), 0, 2)),
                    quant::invalid_argument);
  const qparams ok = qparams::per_tensor(g, 0.1f);
  REQUIRE_NOTHROW(gptq_layer(w, x, ok));
  REQUIRE_THROWS_AS(gptq_layer(w, x, ok, with([](gptq_options& o) { o.group_size = 4; })), quant::invalid_argument);
  REQUIRE_THROWS_AS(gptq_layer(w, x, ok, with([](gptq_options& o) { o.group_scales = gptq_group_scales::at_group_start; })),
                    quant::invalid_argument);
  // messages name the function and the argument
  REQUIRE_THROWS_WITH(gptq_layer(w, x, with([](gptq_options& o) { o.block_size = 0; })),
                      Catch::Contains("quant::gptq_layer: block_size = 0"));
}

TEST_CASE("adaround_init_from_integers: AdaRound starts from GPTQ's rounding", "[gptq][adaround]") {
  const std::size_t out = 16, in = 48, n = 192;
  const auto w = normal_matrix(out, in, 101, 0.5f);
  const auto x = correlated_inputs_with_gains(n, in, 102);
  const grid g = grid::int_signed(2);
  const qparams qp = calibrate_mse(w, g, scheme::symmetric, 0);
  const auto r = gptq_layer(w, x, qp);
  const float margin = 0.2f;
  const xt::xtensor<float, 2> v = eager::adaround_init_from_integers(w, r.integer_weights, qp, margin);
  const xt::xtensor<float, 2> v0 = eager::adaround_init(w, qp);

  SECTION("hard rounding reproduces every reachable integer; h starts at margin or 1 - margin") {
    const auto hard = eager::adaround_integer_weights(w, v, qp);
    std::size_t reachable = 0, unreachable = 0;
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t i = 0; i < in; ++i) {
        const float s = qp.scale(o), inv = 1.0f / s;
        const float base = std::floor(w(o, i) * inv);
        auto clampq = [&](float q) { return std::min(std::max(q, float(g.qmin())), float(g.qmax())); };
        const float lo = clampq(base), hi = clampq(base + 1.0f), want = float(r.integer_weights(o, i));
        if (lo == want || hi == want) {
          ++reachable;
          REQUIRE(hard(o, i) == r.integer_weights(o, i));
          if (lo != hi) {
            const double h = std::clamp(1.2 / (1.0 + std::exp(-double(v(o, i)))) - 0.1, 0.0, 1.0);
            REQUIRE(std::abs(h - (hi == want ? 1.0 - margin : margin)) < 1e-6);
          } else {
            REQUIRE(v(o, i) == v0(o, i));
          }
        } else {
          ++unreachable;  // GPTQ moved it by more than one step: the nearer end
          REQUIRE(hard(o, i) == (want > hi ? hi : lo));
        }
      }
    REQUIRE(reachable + unreachable == out * in);
    REQUIRE(unreachable < out * in / 4);
  }

  SECTION("the layer optimizer starts from it (options.initial_v) and validates it") {
    adaround_options opt;
    opt.iterations = 1;
    opt.initial_v = v;
    adaround_optimizer a(w, x, qp, opt);
    REQUIRE(a.v() == v);
    opt.initial_v = xt::zeros<float>({out, in + 1});
    REQUIRE_THROWS_AS(adaround_optimizer(w, x, qp, opt), quant::length_error);
    opt.initial_v = v;
    opt.initial_v(0, 0) = std::nanf("");
    REQUIRE_THROWS_AS(adaround_optimizer(w, x, qp, opt), quant::domain_error);
    REQUIRE_THROWS_AS(eager::adaround_init_from_integers(w, r.integer_weights, qp, 0.5f), quant::invalid_argument);
    REQUIRE_THROWS_AS(eager::adaround_init_from_integers(w, xt::xtensor<std::int32_t, 2>::from_shape({out, 2}), qp),
                      quant::length_error);
  }
}
