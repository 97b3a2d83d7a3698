// fuzz_lsq — differential harness for quant/lsq.hpp against quant::ref::lsq. From the
// fuzzer's bytes: a shape (1..3 dimensions), LSQ or LSQ+ parameters (per tensor or per
// channel on any axis, offsets or none, paper or PyTorch convention, gradient scaling on
// or off, an explicit N or not) on a 2..16-bit grid, inputs with ties, grid ends, NaN and
// +-inf, and upstream gradients. Then:
//   y and dx of eager::lsq_forward, lsq_backward and lsq_forward_backward, and of the
//   simd::scalar instantiation of the fused kernel == ref::lsq, bit for bit (NaN payloads
//   aside);
//   dscale / doffset within the documented bound of the compensated sums:
//   |got - want| <= 8 * 2^-24 * g * sum|terms| + 2^-23 |want| (NaN where the reference is NaN).
#include <quant/lsq.hpp>
#include <quant/reference/lsq.hpp>

#include "fuzz_common.hpp"

using namespace quant;

namespace {

void require_sum_close(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& abs,
                       const std::string& what) {
  fuzz::require(got.size() == want.size(), what + ": count");
  for (std::size_t j = 0; j < got.size(); ++j) {
    if (want[j] != want[j]) {
      fuzz::require(got[j] != got[j], what + ": reference NaN, kernel " + std::to_string(got[j]));
      continue;
    }
    const double tol = 8.0 * std::ldexp(abs[j], -24) + std::ldexp(std::fabs(want[j]), -23) + 1e-30;
    if (!(std::fabs(static_cast<double>(got[j]) - want[j]) <= tol)) {
      char buf[200];
      std::snprintf(buf, sizeof buf, " [%zu]: got %.9g want %.17g tol %.3g", j, static_cast<double>(got[j]), want[j], tol);
      fuzz::fail(what + buf);
    }
  }
}

float lsq_scale(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 2)) {
    case 0: return std::ldexp(1.0f, in.ConsumeIntegralInRange<int>(-30, 30));
    case 1: return in.ConsumeFloatingPointInRange<float>(1e-4f, 10.0f);
    default: return in.ConsumeFloatingPointInRange<float>(0.001f, 0.1f);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const std::size_t nd = in.ConsumeIntegralInRange<std::size_t>(1, 3);
  std::vector<std::size_t> shape;
  std::size_t n = 1;
  for (std::size_t d = 0; d < nd; ++d) {
    shape.push_back(in.ConsumeIntegralInRange<std::size_t>(1, d + 1 == nd ? 300 : 8));
    n *= shape.back();
  }
  lsq_params p;
  p.grid.bits = in.ConsumeIntegralInRange<int>(2, 16);
  p.grid.is_signed = in.ConsumeBool();
  p.grid.narrow = in.ConsumeBool();
  p.convention = in.ConsumeBool() ? lsq_convention::pytorch : lsq_convention::paper;
  p.gradient_scaling = in.ConsumeBool();
  if (in.ConsumeBool()) p.elements_per_scale = in.ConsumeIntegralInRange<std::size_t>(1, 1000);
  std::size_t count = 1;
  if (in.ConsumeBool()) {
    const std::size_t ax = in.ConsumeIntegralInRange<std::size_t>(0, nd - 1);
    p.channel_axis = in.ConsumeBool() ? static_cast<std::ptrdiff_t>(ax) : static_cast<std::ptrdiff_t>(ax) - static_cast<std::ptrdiff_t>(nd);
    count = shape[ax];
  }
  const bool with_offset = in.ConsumeBool();
  const float qmin = static_cast<float>(p.grid.qmin()), qmax = static_cast<float>(p.grid.qmax());
  for (std::size_t k = 0; k < count; ++k) {
    p.scale.push_back(lsq_scale(in));
    if (with_offset) {
      // paper: a real offset beta; pytorch: a float zero point (half-integers and values off
      // the grid reach PyTorch's two different roundings of it).
      if (p.convention == lsq_convention::paper)
        p.offset.push_back(in.ConsumeFloatingPointInRange<float>(-4.0f, 4.0f) * p.scale.back() * (qmax - qmin));
      else
        p.offset.push_back(static_cast<float>(in.ConsumeIntegralInRange<int>(static_cast<int>(qmin) - 4, static_cast<int>(qmax) + 4)) +
                           (in.ConsumeBool() ? 0.5f : in.ConsumeFloatingPointInRange<float>(-1.0f, 1.0f)));
    }
  }
  std::vector<float> x(n), dy(n);
  for (std::size_t e = 0; e < n; ++e) {
    const std::size_t j = ref::lsq_param_index(shape, p, e);
    const float s = p.scale[j];
    const float off = p.offset.empty() ? 0.0f : p.offset[j];
    const float zf = p.convention == lsq_convention::pytorch ? std::nearbyint(off) : 0.0f;
    float v = fuzz::pick_value(in, s, zf, qmin, qmax);
    if (p.convention == lsq_convention::paper && std::isfinite(v) && in.ConsumeBool()) v += off;
    x[e] = v;
    dy[e] = in.ConsumeBool() ? in.ConsumeFloatingPointInRange<float>(-4.0f, 4.0f)
                             : static_cast<float>(in.ConsumeIntegralInRange<int>(-8, 8)) * 0.25f;
  }
  const auto want = ref::lsq(x, dy, shape, p);
  const auto xa = xt::adapt(x, shape);
  const auto da = xt::adapt(dy, shape);
  const std::string tag = std::string(p.convention == lsq_convention::paper ? "paper" : "pytorch") +
                          (p.offset.empty() ? " LSQ" : " LSQ+") + (p.channel_axis ? " per-channel" : " per-tensor");
  const auto yf = eager::lsq_forward(xa, p);
  fuzz::require_same_floats(yf.data(), want.y, n, tag + " lsq_forward y");
  const auto r = eager::lsq_forward_backward(xa, da, p);
  fuzz::require_same_floats(r.y.data(), want.y, n, tag + " fused y");
  fuzz::require_same_floats(r.dx.data(), want.dx, n, tag + " fused dx");
  require_sum_close(r.dscale, want.dscale, want.dscale_abs, tag + " fused dscale");
  fuzz::require(r.doffset.size() == want.doffset.size(), tag + " doffset count");
  if (!want.doffset.empty()) require_sum_close(r.doffset, want.doffset, want.doffset_abs, tag + " fused doffset");
  const auto b = eager::lsq_backward(xa, da, p);
  fuzz::require_same_floats(b.dx.data(), want.dx, n, tag + " lsq_backward dx");
  require_sum_close(b.dscale, want.dscale, want.dscale_abs, tag + " lsq_backward dscale");
  const auto plan = detail::make_lsq_plan(shape, p, "fuzz");
  std::vector<float> ys(n), dxs(n);
  std::vector<double> sds(p.scale.size()), sout(p.scale.size());
  detail::lsq_backward_dispatch<simd::scalar>(x.data(), dy.data(), ys.data(), dxs.data(), plan, p.convention, sds.data(),
                                              sout.data());
  fuzz::require_same_floats(ys, want.y, n, tag + " scalar y");
  fuzz::require_same_floats(dxs, want.dx, n, tag + " scalar dx");
  const auto fin = detail::finish_lsq_gradients(p, n, sds, sout);
  require_sum_close(fin.dscale, want.dscale, want.dscale_abs, tag + " scalar dscale");
  return 0;
}
