// Public entry points that validate their arguments throw the documented quant exception
// with a message "quant::<function>: <argument> = <value>: <requirement>" naming the
// argument and its value (error.hpp): AdaRound's init / integer weights / variables, the
// block-reconstruction activation quantizer and forward, the LSQ+ initialisers, iPQ's
// centroid updates, int8 centroid dequantization and SGD.
#include <quant/lsq.hpp>
#include <quant/optim.hpp>
#include <quant/pq.hpp>
#include <quant/reconstruction.hpp>
#include <quant/adaround.hpp>

#include <xtensor/xadapt.hpp>

#include "test_helpers.hpp"

using namespace quant;
using Catch::Contains;

namespace {
xt::xtensor<float, 2> matrix(std::size_t r, std::size_t c, std::uint32_t seed) { return quant_test::normal_matrix(r, c, seed, 0.5f); }
}  // namespace

TEST_CASE("AdaRound entry points reject bad weights, shapes and parameters", "[adaround][errors]") {
  const auto W = matrix(4, 6, 1);
  const qparams p = qparams::per_tensor(grid::int_signed(4), 0.1f);
  const qparams per_row = qparams::per_channel(grid::int_signed(4), {0.1f, 0.1f, 0.1f, 0.1f}, 0);
  const qparams three_rows = qparams::per_channel(grid::int_signed(4), {0.1f, 0.1f, 0.1f}, 0);
  auto bad_W = W;
  bad_W(2, 3) = std::nanf("");
  SECTION("adaround_init") {
    CHECK_NOTHROW(eager::adaround_init(W, per_row));
    CHECK_THROWS_AS(eager::adaround_init(bad_W, p), quant::domain_error);
    CHECK_THROWS_WITH(eager::adaround_init(bad_W, p), Contains("quant::adaround_init: W = nan") && Contains("element 15"));
    CHECK_THROWS_AS(eager::adaround_init(W, three_rows), quant::length_error);
    CHECK_THROWS_WITH(eager::adaround_init(W, three_rows), Contains("adaround_init"));
  }
  SECTION("adaround_init_from_integers") {
    const xt::xtensor<std::int32_t, 2> q = xt::zeros<std::int32_t>({4, 6});
    const xt::xtensor<std::int32_t, 2> q_t = xt::zeros<std::int32_t>({6, 4});
    CHECK_NOTHROW(eager::adaround_init_from_integers(W, q, p));
    CHECK_THROWS_AS(eager::adaround_init_from_integers(W, q_t, p), quant::length_error);
    CHECK_THROWS_WITH(eager::adaround_init_from_integers(W, q_t, p), Contains("q.shape() = [6, 4]"));
    CHECK_THROWS_WITH(eager::adaround_init_from_integers(W, q, p, 0.5f), Contains("margin = 0.5"));
    CHECK_THROWS_AS(eager::adaround_init_from_integers(W, q, p, 0.0f), quant::invalid_argument);
  }
  SECTION("adaround_integer_weights") {
    const auto V = eager::adaround_init(W, p);
    const xt::xtensor<float, 2> V_t = xt::zeros<float>({6, 4});
    CHECK_NOTHROW(eager::adaround_integer_weights(W, V, p));
    CHECK_THROWS_AS(eager::adaround_integer_weights(W, V_t, p), quant::length_error);
    CHECK_THROWS_WITH(eager::adaround_integer_weights(W, V_t, p),
                      Contains("quant::adaround_integer_weights: V.shape() = [6, 4]") && Contains("[4, 6]"));
    CHECK_THROWS_AS(eager::adaround_integer_weights(W, V, three_rows), quant::length_error);
  }
  SECTION("adaround_variables") {
    CHECK_NOTHROW(adaround_variables(W, p));
    CHECK_THROWS_AS(adaround_variables(bad_W, p), quant::domain_error);
    CHECK_THROWS_WITH(adaround_variables(bad_W, p), Contains("quant::adaround_variables: W = nan"));
    CHECK_THROWS_AS(adaround_variables(W, three_rows), quant::length_error);
    CHECK_THROWS_AS(adaround_variables(W, p, -1.0f), quant::invalid_argument);
    CHECK_THROWS_WITH(adaround_variables(W, p, -1.0f), Contains("learning_rate = -1"));
    CHECK_THROWS_AS(adaround_variables(xt::xarray<float>(xt::zeros<float>({4, 6, 1})), p), quant::invalid_argument);
    CHECK_THROWS_WITH(adaround_variables(xt::xarray<float>(xt::zeros<float>({4, 6, 1})), p),
                      Contains("quant::adaround_variables: W.shape() = [4, 6, 1]"));
    adaround_variables vars(W, p);
    CHECK_THROWS_WITH(vars.set_v(xt::zeros<float>({4, 5})), Contains("set_v: V.shape() = [4, 5]"));
    CHECK_THROWS_WITH(vars.set_v(xt::xarray<float>(xt::zeros<float>({4, 6, 1}))),
                      Contains("quant::adaround_variables::set_v: V.shape() = [4, 6, 1]"));
    xt::xtensor<float, 2> V = xt::zeros<float>({4, 6});
    V(0, 0) = INFINITY;
    CHECK_THROWS_AS(vars.set_v(V), quant::domain_error);
    CHECK_THROWS_WITH(vars.set_v(V), Contains("V = inf"));
  }
}

TEST_CASE("block reconstruction: activation_quantizer and block_forward validate", "[reconstruction][errors]") {
  SECTION("activation_quantizer") {
    const auto x = matrix(8, 5, 2);
    CHECK_NOTHROW(activation_quantizer(x, grid::int_unsigned(8)));
    const xt::xtensor<float, 2> empty = xt::zeros<float>({0, 5});
    CHECK_THROWS_AS(activation_quantizer(empty, grid::int_unsigned(8)), quant::invalid_argument);
    CHECK_THROWS_WITH(activation_quantizer(empty, grid::int_unsigned(8)),
                      Contains("quant::activation_quantizer: x.shape() = [0, 5]"));
    CHECK_THROWS_WITH(activation_quantizer(x, grid::int_unsigned(17)), Contains("bits = 17"));
    auto bad = x;
    bad(3, 1) = std::nanf("");
    CHECK_THROWS_AS(activation_quantizer(bad, grid::int_unsigned(8)), quant::domain_error);
  }
  SECTION("block_forward") {
    block_layer a;
    a.weight = matrix(3, 5, 3);
    a.bias = xt::zeros<float>({3});
    a.weight_qparams = qparams::per_tensor(grid::int_signed(4), 0.1f);
    block_layer b;
    b.weight = matrix(2, 3, 4);
    b.weight_qparams = qparams::per_tensor(grid::int_signed(4), 0.1f);
    const auto x = matrix(7, 5, 5);
    CHECK_NOTHROW(block_forward({a, b}, x, false));
    CHECK_THROWS_WITH(block_forward({}, x, false), Contains("quant::block_forward: layers.size() = 0"));
    CHECK_THROWS_AS(block_forward({a, b}, matrix(7, 4, 6), false), quant::length_error);
    CHECK_THROWS_WITH(block_forward({a, b}, matrix(7, 4, 6), false), Contains("x.shape() = [7, 4]"));
    CHECK_THROWS_WITH(block_forward({b, a}, matrix(7, 3, 6), false),
                      Contains("in_features = 5") && Contains("layer 1"));
    block_layer bad_bias = a;
    bad_bias.bias = xt::zeros<float>({2});
    CHECK_THROWS_AS(block_forward({bad_bias}, x, false), quant::length_error);
    CHECK_THROWS_WITH(block_forward({bad_bias}, x, false), Contains("bias.size() = 2") && Contains("layer 0"));
    block_layer nan_weight = a;
    nan_weight.weight(1, 1) = std::nanf("");
    CHECK_THROWS_AS(block_forward({nan_weight}, x, false), quant::domain_error);
    CHECK_THROWS_WITH(block_forward({nan_weight}, x, false), Contains("weight = nan"));
    block_layer per_channel_input = a;
    lsq_params q;
    q.grid = grid::int_unsigned(8);
    q.scale = {0.1f, 0.2f};
    q.channel_axis = 1;
    per_channel_input.input_quantizer = q;
    CHECK_THROWS_AS(block_forward({per_channel_input}, x, true), quant::invalid_argument);
    CHECK_THROWS_WITH(block_forward({per_channel_input}, x, true), Contains("input_quantizer"));
    block_layer zero_scale = a;
    lsq_params z;
    z.grid = grid::int_unsigned(8);
    z.scale = {0.0f};
    zero_scale.input_quantizer = z;
    CHECK_THROWS_WITH(block_forward({zero_scale}, x, true), Contains("scale = 0"));
  }
}

TEST_CASE("LSQ+ initialisers reject empty, non-finite input and bad grids", "[lsq][errors]") {
  const xt::xarray<float> x = {0.5f, -1.0f, 2.0f, 0.25f};
  const xt::xarray<float> nan_x = {0.5f, std::nanf(""), 2.0f, 0.25f};
  const xt::xarray<float> empty = xt::zeros<float>({0});
  const grid g = grid::int_unsigned(4);
  CHECK_NOTHROW(lsq_plus_init_weights(x, grid::int_signed(4)));
  CHECK_THROWS_AS(lsq_plus_init_weights(nan_x, grid::int_signed(4)), quant::domain_error);
  CHECK_THROWS_WITH(lsq_plus_init_weights(nan_x, grid::int_signed(4)),
                    Contains("quant::lsq_plus_init_weights: x = nan"));
  CHECK_THROWS_WITH(lsq_plus_init_weights(empty, grid::int_signed(4)), Contains("x.size() = 0"));
  CHECK_THROWS_WITH(lsq_plus_init_weights(x, grid::int_signed(1)), Contains("lsq_plus_init_weights: bits = 1"));
  const xt::xarray<float> m = xt::zeros<float>({2, 3});
  CHECK_THROWS_WITH(lsq_plus_init_weights(m, grid::int_signed(4), 2), Contains("axis = 2"));
  CHECK_THROWS_AS(lsq_plus_init_minmax(nan_x, g), quant::domain_error);
  CHECK_THROWS_WITH(lsq_plus_init_minmax(nan_x, g), Contains("quant::lsq_plus_init_minmax: x = nan"));
  CHECK_THROWS_WITH(lsq_plus_init_minmax(x, grid::int_unsigned(0)), Contains("bits = 0"));
  CHECK_THROWS_AS(lsq_plus_init_mse(empty, g), quant::invalid_argument);
  CHECK_THROWS_AS(lsq_plus_init_mse(nan_x, g), quant::domain_error);
  CHECK_THROWS_WITH(lsq_plus_init_mse(x, g, -1), Contains("quant::lsq_plus_init_mse: refinements = -1"));
}

TEST_CASE("iPQ centroid updates and int8 centroid dequantization validate", "[pq][errors]") {
  pq_codebook cb;
  cb.layout = pq_layout::shared;
  cb.d = 2;
  cb.k = 3;
  cb.centroids = xt::zeros<float>({1, 3, 2});
  xt::xtensor<std::uint32_t, 2> idx = {{0, 1}, {2, 0}};  // a [2, 4] layer, two subvectors per row
  const xt::xtensor<float, 2> grad = xt::ones<float>({2, 4});
  CHECK_NOTHROW(ipq_update_centroids(cb, idx, grad, 0.1f));
  CHECK_THROWS_AS(ipq_update_centroids(cb, idx, grad, std::nanf("")), quant::invalid_argument);
  CHECK_THROWS_WITH(ipq_update_centroids(cb, idx, grad, INFINITY), Contains("quant::ipq_update_centroids: lr = inf"));
  const xt::xtensor<float, 2> short_grad = xt::ones<float>({2, 3});
  CHECK_THROWS_AS(ipq_update_centroids(cb, idx, short_grad, 0.1f), quant::length_error);
  CHECK_THROWS_WITH(ipq_centroid_gradients(cb, idx, short_grad), Contains("grad = [2, 3]"));
  auto bad_idx = idx;
  bad_idx(1, 1) = 3;  // == k
  CHECK_THROWS_AS(ipq_update_centroids(cb, bad_idx, grad, 0.1f), quant::invalid_argument);
  CHECK_THROWS_WITH(ipq_centroid_gradients(cb, bad_idx, grad), Contains("index = 3") && Contains("k = 3"));
  pq_codebook wrong_d = cb;
  wrong_d.d = 3;
  CHECK_THROWS_WITH(ipq_centroid_gradients(wrong_d, idx, grad), Contains("codebook = [1, 3, 2]"));
  SECTION("dequantize_centroids") {
    int8_codebook q = quantize_centroids(cb);
    CHECK_NOTHROW(dequantize_centroids(q));
    q.scales.push_back(0.5f);
    CHECK_THROWS_AS(dequantize_centroids(q), quant::length_error);
    CHECK_THROWS_WITH(dequantize_centroids(q), Contains("quant::dequantize_centroids: scales.size() = 2"));
  }
}

TEST_CASE("SGD rejects bad options, learning rates and sizes", "[optim][errors]") {
  auto make = [](auto edit) {
    sgd_options o;
    edit(o);
    return sgd(4, o);
  };
  CHECK_NOTHROW(make([](sgd_options&) {}));
  CHECK_THROWS_WITH(make([](sgd_options& o) { o.learning_rate = 0.0f; }), Contains("quant::sgd: learning_rate = 0"));
  CHECK_THROWS_AS(make([](sgd_options& o) { o.learning_rate = std::nanf(""); }), quant::invalid_argument);
  CHECK_THROWS_WITH(make([](sgd_options& o) { o.momentum = 1.0f; }), Contains("momentum = 1"));
  CHECK_THROWS_WITH(make([](sgd_options& o) { o.dampening = -0.5f; }), Contains("dampening = -0.5"));
  CHECK_THROWS_WITH(make([](sgd_options& o) { o.nesterov = true; }), Contains("nesterov = true"));
  CHECK_THROWS_WITH(make([](sgd_options& o) { o.weight_decay = -1.0f; }), Contains("weight_decay = -1"));
  sgd opt(4);
  CHECK_THROWS_WITH(opt.set_learning_rate(-0.1f), Contains("quant::sgd::set_learning_rate: lr = -0.1"));
  CHECK_THROWS_AS(opt.set_learning_rate(INFINITY), quant::invalid_argument);
  std::vector<float> params(3, 1.0f), grads(3, 1.0f);
  CHECK_THROWS_AS(opt.step(params, grads), quant::length_error);
  CHECK_THROWS_WITH(opt.step(params, grads), Contains("quant::sgd::step: params.size() = 3"));
  CHECK(opt.steps() == 0);
}
