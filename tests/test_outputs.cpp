// Specification of the caller-provided outputs of the eager out-forms (fake_quantize,
// ste_backward, lsq_forward, lsq_backward, lsq_forward_backward): an output of another
// shape is resized; one whose type cannot take x's shape (a fixed rank or a fixed shape) is
// refused with quant::length_error before anything is written; an input that is a view into
// the output's storage is read before the resize frees it; the output may be the input.
// Expected values come from the scalar references (quant/reference).
#include <quant/lsq.hpp>
#include <quant/reference/lsq.hpp>
#include <quant/reference/uniform.hpp>
#include <quant/ste.hpp>
#include <quant/uniform.hpp>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xfixed.hpp>

#include "test_helpers.hpp"

using namespace quant;
using quant_test::require_bitwise_equal;

namespace {

const std::vector<std::size_t> x_shape{2, 3, 4};  // 24 elements, rank 3

// One out-form: writes op(x) into out for an x given as a pointer to 24 floats of x_shape.
// `out` is passed as each of the container types below.
struct out_form {
  std::string name;
  std::string argument;        // how the form's messages name its output
  std::vector<float> expected;  // from the scalar reference, for the values of x_values()
  // The same call for each container type (generic code, one instantiation per type).
  std::function<void(const float*, xt::xarray<float>&)> into_xarray;
  std::function<void(const float*, xt::xtensor<float, 3>&)> into_xtensor3;
  std::function<void(const float*, xt::xtensor<float, 2>&)> into_xtensor2;
  std::function<void(const float*, xt::xtensor_fixed<float, xt::xshape<2, 3, 5>>&)> into_fixed;
};

std::vector<float> x_values() { return quant_test::normal_floats(24, 71u, 0.4f); }
std::vector<float> dy_values() { return quant_test::normal_floats(24, 72u); }

auto x_of(const float* data) { return xt::adapt(data, 24, xt::no_ownership(), x_shape); }

template <class Call>
out_form make_form(std::string name, std::string argument, std::vector<float> expected, Call call) {
  return {std::move(name),
          std::move(argument),
          std::move(expected),
          [call](const float* x, xt::xarray<float>& out) { call(x_of(x), out); },
          [call](const float* x, xt::xtensor<float, 3>& out) { call(x_of(x), out); },
          [call](const float* x, xt::xtensor<float, 2>& out) { call(x_of(x), out); },
          [call](const float* x, xt::xtensor_fixed<float, xt::xshape<2, 3, 5>>& out) { call(x_of(x), out); }};
}

std::vector<out_form> out_forms() {
  const auto xv = x_values(), dyv = dy_values();
  const xt::xarray<float> dy = xt::adapt(dyv, x_shape);
  const qparams p = qparams::per_channel(grid{8, false}, {0.01f, 0.02f, 0.03f}, {0, 3, 200}, 1);
  lsq_params lp;
  lp.grid = grid{4, true};
  lp.scale = {0.05f};
  lp.offset = {0.1f};
  const auto fq = ref::fake_quantize(xv, x_shape, p);
  const auto mask = ref::ste_mask(xv, x_shape, p);
  std::vector<float> ste(24);
  for (std::size_t i = 0; i < 24; ++i) ste[i] = dyv[i] * mask[i];
  const auto lsq = ref::lsq(xv, dyv, x_shape, lp);

  std::vector<out_form> forms;
  forms.push_back(make_form("fake_quantize", "out.shape", fq,
                            [p](const auto& x, auto& out) { eager::fake_quantize(x, p, out); }));
  forms.push_back(make_form("ste_backward", "out.shape", ste,
                            [p, dy](const auto& x, auto& out) { eager::ste_backward(x, dy, p, out); }));
  forms.push_back(make_form("lsq_forward", "y.shape", lsq.y,
                            [lp](const auto& x, auto& out) { eager::lsq_forward(x, lp, out); }));
  forms.push_back(make_form("lsq_backward", "dx.shape", lsq.dx,
                            [lp, dy](const auto& x, auto& out) { eager::lsq_backward(x, dy, lp, out); }));
  forms.push_back(make_form("lsq_forward_backward", "y.shape", lsq.y, [lp, dy](const auto& x, auto& out) {
    xt::xarray<float> dx;
    eager::lsq_forward_backward(x, dy, lp, out, dx);
  }));
  forms.push_back(make_form("lsq_forward_backward", "dx.shape", lsq.dx, [lp, dy](const auto& x, auto& out) {
    xt::xarray<float> y;
    eager::lsq_forward_backward(x, dy, lp, y, out);
  }));
  return forms;
}

template <class C>
std::vector<std::size_t> shape_of(const C& c) {
  return {c.shape().begin(), c.shape().end()};
}

}  // namespace

TEST_CASE("Caller-provided outputs: resized when they can be, refused before any write when they cannot",
          "[outputs]") {
  const auto xv = x_values();
  for (const auto& form : out_forms()) {
    DYNAMIC_SECTION(form.name << " into " << form.argument) {
      SECTION("an xarray of another shape and rank is resized to x's shape") {
        xt::xarray<float> out = xt::zeros<float>({5});
        form.into_xarray(xv.data(), out);
        REQUIRE(shape_of(out) == x_shape);
        require_bitwise_equal(out.data(), form.expected, 24, form.name);
      }
      SECTION("an xtensor of x's rank and other extents is resized") {
        xt::xtensor<float, 3> out = xt::zeros<float>({1, 1, 7});
        form.into_xtensor3(xv.data(), out);
        REQUIRE(shape_of(out) == x_shape);
        require_bitwise_equal(out.data(), form.expected, 24, form.name);
      }
      SECTION("an xtensor of another rank is refused, its contents untouched") {
        xt::xtensor<float, 2> out = xt::xtensor<float, 2>::from_shape({2, 3});
        out.fill(-7.0f);
        REQUIRE_THROWS_AS(form.into_xtensor2(xv.data(), out), quant::length_error);
        REQUIRE_THROWS_WITH(form.into_xtensor2(xv.data(), out),
                            "quant::" + form.name + ": " + form.argument +
                                " = [2, 3]: has the fixed rank 2 of its type; x has shape [2, 3, 4]");
        CHECK(shape_of(out) == std::vector<std::size_t>{2, 3});
        CHECK(std::all_of(out.begin(), out.end(), [](float v) { return v == -7.0f; }));
      }
      SECTION("an xtensor_fixed of another shape is refused, its contents untouched") {
        xt::xtensor_fixed<float, xt::xshape<2, 3, 5>> out;
        out.fill(-7.0f);
        REQUIRE_THROWS_WITH(form.into_fixed(xv.data(), out),
                            "quant::" + form.name + ": " + form.argument +
                                " = [2, 3, 5]: is the fixed shape of its type; it must equal the shape of x, [2, 3, 4]");
        CHECK(std::all_of(out.begin(), out.end(), [](float v) { return v == -7.0f; }));
      }
      SECTION("x a view into the output's storage: read before the resize frees it") {
        xt::xarray<float> out = xt::zeros<float>({100});
        std::copy(xv.begin(), xv.end(), out.begin() + 10);
        form.into_xarray(out.data() + 10, out);
        REQUIRE(shape_of(out) == x_shape);
        require_bitwise_equal(out.data(), form.expected, 24, form.name);
      }
      SECTION("x is the output itself") {
        xt::xarray<float> out = xt::adapt(xv, x_shape);
        form.into_xarray(out.data(), out);
        require_bitwise_equal(out.data(), form.expected, 24, form.name);
      }
    }
  }
}
