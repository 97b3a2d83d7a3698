// fuzz_uniform — differential harness for quant/uniform.hpp. From the fuzzer's bytes: a
// shape (0..4 dimensions), a layout (contiguous, a strided view with step 2 and an offset,
// or a transposed view), per-tensor / per-channel (any axis) / per-group parameters on a
// grid of 2..16 bits (signed / unsigned / narrow) with scales from every regime (ordinary,
// tiny, subnormal, huge) and zero points anywhere on the grid, one of the seven rounding
// policies (stochastic with a seed), the PyTorch or AIMET convention, and inputs with NaN,
// +-inf, ties and the grid ends. Then, bit for bit (NaN payloads aside):
//   eager::fake_quantize (new container, in place)        == ref::fake_quantize
//   kernels::fake_quantize, default arch and simd::scalar,
//     on misaligned input and output pointers             == ref::fake_quantize
//   lazy quant::fake_quantize (deterministic policies, per tensor / per channel) == ref
//   eager::quantize<Int> / kernels::quantize / lazy quantize == ref::quantize, for every Int
//     the grid fits (a grid that does not fit: quant::invalid_argument); NaN input:
//     eager throws quant::domain_error and the kernel counts the NaNs (documented)
//   eager::dequantize / lazy dequantize == (q - z) * s in float
// Lazy per-group and lazy stochastic are documented as unavailable (invalid_argument /
// compile-time), so they are checked to throw / not compared.
#include <quant/reference/uniform.hpp>
#include <quant/uniform.hpp>
#include <xtensor/xstrided_view.hpp>
#include <xtensor/xmanipulation.hpp>

#include "fuzz_common.hpp"

using namespace quant;

namespace {

struct problem {
  std::vector<std::size_t> shape;
  std::vector<float> x;  // row-major values of the logical tensor
  qparams p;
  int layout = 0;  // 0 contiguous, 1 strided view, 2 transposed view
  std::size_t strided_axis = 0;
  std::size_t off_in = 0, off_out = 0;  // misalignment of the raw-pointer kernel calls, in floats
  std::uint64_t seed = 0;
};

inline std::uint64_t round_seed(const round_stochastic& r) { return r.seed; }
template <class R>
std::uint64_t round_seed(const R&) {
  return 0;
}

template <class F>
void with_policy(int r, F&& f) {
  switch (r) {
    case 0: return f(round_half_to_even{}, rounding_mode::half_to_even);
    case 1: return f(round_half_away_from_zero{}, rounding_mode::half_away_from_zero);
    case 2: return f(round_half_up{}, rounding_mode::half_up);
    case 3: return f(round_floor{}, rounding_mode::floor);
    case 4: return f(round_ceil{}, rounding_mode::ceil);
    case 5: return f(round_toward_zero{}, rounding_mode::toward_zero);
    default: return f(round_stochastic{}, rounding_mode::stochastic);
  }
}

// The logical tensor as the expression the layout asks for; f(expr).
template <class F>
void with_layout(const problem& pr, F&& f) {
  const xt::xarray<float> dense = xt::adapt(pr.x, pr.shape);
  if (pr.layout == 1 && !pr.shape.empty()) {
    std::vector<std::size_t> bs = pr.shape;
    const std::size_t a = pr.strided_axis;
    bs[a] = 2 * pr.shape[a] + 1;
    xt::xarray<float> base = xt::xarray<float>::from_shape(bs);
    base.fill(-12345.0f);
    xt::xstrided_slice_vector sv(pr.shape.size(), xt::all());
    sv[a] = xt::range(1, static_cast<std::ptrdiff_t>(1 + 2 * pr.shape[a]), 2);
    auto v = xt::strided_view(base, sv);
    v = dense;
    return f(v);
  }
  if (pr.layout == 2 && pr.shape.size() >= 2) {
    xt::xarray<float> base = xt::transpose(dense);  // base^T == dense
    auto v = xt::transpose(base);
    return f(v);
  }
  return f(dense);
}

template <class Int>
bool fits(const grid& g) {
  return g.qmin() >= std::numeric_limits<Int>::min() && g.qmax() <= std::numeric_limits<Int>::max();
}

template <class Int, class Round, class Conv>
void check_quantize(const problem& pr, const Round& round, rounding_mode mode, bool any_nan) {
  const std::size_t n = pr.x.size();
  const std::string what = std::string("quantize<") + typeid(Int).name() + "> " + Round::name() + " " + Conv::name();
  if (!fits<Int>(pr.p.grid())) {
    bool threw = false;
    try {
      (void)eager::quantize<Int, Round, Conv>(xt::xarray<float>(xt::adapt(pr.x, pr.shape)), pr.p, round);
    } catch (const invalid_argument&) {
      threw = true;
    }
    fuzz::require(threw, what + ": a grid wider than the integer type was accepted");
    return;
  }
  if (any_nan) {
    bool threw = false;
    try {
      (void)eager::quantize<Int, Round, Conv>(xt::xarray<float>(xt::adapt(pr.x, pr.shape)), pr.p, round);
    } catch (const domain_error&) {
      threw = true;
    }
    fuzz::require(threw, what + ": NaN input did not throw quant::domain_error");
    return;
  }
  const auto want = ref::quantize(pr.x, pr.shape, pr.p, mode, Conv::clamp_input_first, round_seed(round));
  // (Views and the lazy form for int32 only: each instantiation is costly to compile.)
  auto check = [&](const auto& v) {
    const auto q = eager::quantize<Int, Round, Conv>(v, pr.p, round);
    fuzz::require_same_ints(q.data(), want, n, what + " eager");
    if constexpr (!Round::is_stochastic && std::is_same<Int, std::int32_t>::value) {
      if (pr.p.granularity() != granularity::per_group) {
        const xt::xarray<Int> ql = quant::quantize<Int, Round, Conv>(v, pr.p);
        fuzz::require_same_ints(ql.data(), want, n, what + " lazy");
      }
    }
  };
  if constexpr (std::is_same<Int, std::int32_t>::value)
    with_layout(pr, check);
  else
    check(xt::xarray<float>(xt::adapt(pr.x, pr.shape)));
  std::vector<float> in(n + 16);
  std::vector<Int> out(n + 16);
  std::copy(pr.x.begin(), pr.x.end(), in.begin() + pr.off_in);
  const auto plan = detail::make_segment_plan(pr.shape, pr.p, "fuzz");
  const auto nans =
      kernels::quantize<Int, simd::default_arch, Round, Conv>(in.data() + pr.off_in, out.data() + pr.off_out, plan, round);
  fuzz::require(nans == 0, what + " kernel counted " + std::to_string(nans) + " NaNs in NaN-free input");
  fuzz::require_same_ints(out.data() + pr.off_out, want, n, what + " kernel, misaligned");
}

template <class Round, class Conv>
void check_all(const problem& pr, const Round& round, rounding_mode mode) {
  const std::size_t n = pr.x.size();
  const std::string tag = std::string(Round::name()) + " " + Conv::name() + " layout " + std::to_string(pr.layout);
  const auto want = ref::fake_quantize(pr.x, pr.shape, pr.p, mode, Conv::clamp_input_first, round_seed(round));

  with_layout(pr, [&](const auto& v) {
    const auto y = eager::fake_quantize<Round, Conv>(v, pr.p, Round(round));  // (an rvalue: clang-14 finds the lvalue call ambiguous with the out-container overload)
    fuzz::require(y.size() == n, "eager fake_quantize size");
    fuzz::require_same_floats(y.data(), want, n, "eager fake_quantize " + tag);
    if constexpr (!Round::is_stochastic) {
      if (pr.p.granularity() != granularity::per_group) {
        const xt::xarray<float> yl = quant::fake_quantize<Round, Conv>(v, pr.p);
        fuzz::require_same_floats(yl.data(), want, n, "lazy fake_quantize " + tag);
        if (pr.p.granularity() == granularity::per_tensor) {
          const xt::xarray<float> yt = quant::fake_quantize<Round, Conv>(v, pr.p.scale(), pr.p.zero_point(), pr.p.grid());
          fuzz::require_same_floats(yt.data(), want, n, "lazy per-tensor fake_quantize " + tag);
        }
      } else {
        bool threw = false;
        try {
          (void)quant::fake_quantize<Round, Conv>(v, pr.p);
        } catch (const invalid_argument&) {
          threw = true;
        }
        fuzz::require(threw, "lazy fake_quantize accepted per-group parameters");
      }
    }
  });
  // In place.
  xt::xarray<float> inplace = xt::adapt(pr.x, pr.shape);
  eager::fake_quantize<Round, Conv>(inplace, pr.p, inplace, round);
  fuzz::require_same_floats(inplace.data(), want, n, "in-place eager fake_quantize " + tag);
  // Raw kernels on misaligned pointers, SIMD and scalar.
  std::vector<float> in(n + 16), out(n + 16, -1.0f);
  std::copy(pr.x.begin(), pr.x.end(), in.begin() + pr.off_in);
  const auto plan = detail::make_segment_plan(pr.shape, pr.p, "fuzz");
  kernels::fake_quantize<simd::default_arch, Round, Conv>(in.data() + pr.off_in, out.data() + pr.off_out, plan, round);
  fuzz::require_same_floats(out.data() + pr.off_out, want, n, "kernel fake_quantize, misaligned " + tag);
  kernels::fake_quantize<simd::scalar, Round, Conv>(in.data() + pr.off_in, out.data() + pr.off_out, plan, round);
  fuzz::require_same_floats(out.data() + pr.off_out, want, n, "scalar kernel fake_quantize " + tag);

  bool any_nan = false;
  for (float v : pr.x) any_nan = any_nan || v != v;
  check_quantize<std::int32_t, Round, Conv>(pr, round, mode, any_nan);
  check_quantize<std::int16_t, Round, Conv>(pr, round, mode, any_nan);
  check_quantize<std::int8_t, Round, Conv>(pr, round, mode, any_nan);
  check_quantize<std::uint8_t, Round, Conv>(pr, round, mode, any_nan);
  if (any_nan) {
    std::vector<float> in2(pr.x);
    std::vector<std::int32_t> q(n);
    std::size_t count = 0;
    for (float v : pr.x) count += v != v;
    const auto nans =
        kernels::quantize<std::int32_t, simd::default_arch, Round, Conv>(in2.data(), q.data(), plan, round);
    fuzz::require(nans == count, "kernel quantize NaN count " + std::to_string(nans) + ", NaN inputs " + std::to_string(count));
  }
}

void check_dequantize(const problem& pr, FuzzedDataProvider& in) {
  const std::size_t n = pr.x.size();
  std::vector<std::int32_t> q(n);
  for (auto& v : q) v = in.ConsumeIntegralInRange<std::int32_t>(pr.p.qmin(), pr.p.qmax());
  std::vector<float> want(n);
  for (std::size_t e = 0; e < n; ++e) {
    const std::size_t k = ref::param_index(pr.shape, pr.p, e);
    want[e] = (static_cast<float>(q[e]) - static_cast<float>(pr.p.zero_points()[k])) * pr.p.scales()[k];
  }
  const xt::xarray<std::int32_t> qa = xt::adapt(q, pr.shape);
  const auto y = eager::dequantize(qa, pr.p);
  fuzz::require_same_floats(y.data(), want, n, "eager dequantize");
  if (pr.p.granularity() != granularity::per_group) {
    const xt::xarray<float> yl = quant::dequantize(qa, pr.p);
    fuzz::require_same_floats(yl.data(), want, n, "lazy dequantize");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  problem pr;
  const std::size_t nd = in.ConsumeIntegralInRange<std::size_t>(0, 4);
  std::size_t n = 1;
  for (std::size_t d = 0; d < nd; ++d) {
    const std::size_t cap = std::max<std::size_t>(1, 600 / n);
    const std::size_t len = in.ConsumeIntegralInRange<std::size_t>(1, std::min<std::size_t>(cap, d + 1 == nd ? 70 : 9));
    pr.shape.push_back(len);
    n *= len;
  }
  grid g;
  g.bits = in.ConsumeIntegralInRange<int>(2, 16);
  g.is_signed = in.ConsumeBool();
  g.narrow = in.ConsumeBool();
  const int gran = nd == 0 ? 0 : in.ConsumeIntegralInRange<int>(0, 2);
  const std::size_t axis = nd == 0 ? 0 : in.ConsumeIntegralInRange<std::size_t>(0, nd - 1);
  std::size_t count = 1, group = 1;
  if (gran == 1) count = pr.shape[axis];
  if (gran == 2) {
    std::vector<std::size_t> divisors;
    for (std::size_t k = 1; k <= pr.shape[axis]; ++k)
      if (pr.shape[axis] % k == 0) divisors.push_back(k);
    group = divisors[in.ConsumeIntegralInRange<std::size_t>(0, divisors.size() - 1)];
    count = n / group;
  }
  std::vector<float> s(count);
  std::vector<std::int32_t> z(count);
  const bool one_scale = in.ConsumeBool();
  for (std::size_t k = 0; k < count; ++k) {
    s[k] = (one_scale && k > 0) ? s[0] : fuzz::pick_scale(in);
    z[k] = in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<std::int32_t>(g.qmin(), g.qmax());
    if (g.is_signed && g.narrow == false && z[k] == 0 && in.ConsumeBool()) z[k] = g.qmin();
    if (z[k] < g.qmin()) z[k] = g.qmin();
  }
  // Negative axes count from the end.
  const std::ptrdiff_t ax = in.ConsumeBool() ? static_cast<std::ptrdiff_t>(axis)
                                             : static_cast<std::ptrdiff_t>(axis) - static_cast<std::ptrdiff_t>(nd);
  try {
    pr.p = gran == 0 ? qparams::per_tensor(g, s[0], z[0])
           : gran == 1 ? qparams::per_channel(g, s, z, ax)
                       : qparams::per_group(g, s, z, ax, group);
  } catch (const invalid_argument&) {
    // The only invalid parameters generated: a scale whose reciprocal overflows float.
    bool tiny = false;
    for (float v : s) tiny = tiny || !std::isfinite(1.0f / v);
    fuzz::require(tiny, "valid qparams rejected");
    return 0;
  }
  pr.x.resize(n);
  for (std::size_t e = 0; e < n; ++e) {
    const std::size_t k = ref::param_index(pr.shape, pr.p, e);
    pr.x[e] = fuzz::pick_value(in, s[k], static_cast<float>(z[k]), static_cast<float>(g.qmin()), static_cast<float>(g.qmax()));
  }
  {
    std::string c = "shape [";
    for (auto d : pr.shape) c += std::to_string(d) + " ";
    c += "] bits " + std::to_string(g.bits) + (g.is_signed ? " signed" : " unsigned") + (g.narrow ? " narrow" : "") +
         " granularity " + std::to_string(gran) + " axis " + std::to_string(ax) + " group " + std::to_string(group) + " s/z:";
    for (std::size_t k = 0; k < count && k < 8; ++k) {
      char b[64];
      std::snprintf(b, sizeof b, " %a/%d", static_cast<double>(s[k]), z[k]);
      c += b;
    }
    c += " x:";
    for (std::size_t e = 0; e < n && e < 16; ++e) {
      char b[32];
      std::snprintf(b, sizeof b, " %a", static_cast<double>(pr.x[e]));
      c += b;
    }
    fuzz::context() = c;
  }
  pr.layout = in.ConsumeIntegralInRange<int>(0, 2);
  pr.strided_axis = nd == 0 ? 0 : in.ConsumeIntegralInRange<std::size_t>(0, nd - 1);
  pr.off_in = in.ConsumeIntegralInRange<std::size_t>(0, 15);
  pr.off_out = in.ConsumeIntegralInRange<std::size_t>(0, 15);
  pr.seed = in.ConsumeIntegral<std::uint64_t>();
  const int policy = in.ConsumeIntegralInRange<int>(0, 6);
  const bool aimet = in.ConsumeBool();
  with_policy(policy, [&](auto round, rounding_mode mode) {
    if constexpr (decltype(round)::is_stochastic) round.seed = pr.seed;
    if (aimet)
      check_all<decltype(round), aimet_convention>(pr, round, mode);
    else
      check_all<decltype(round), pytorch_convention>(pr, round, mode);
  });
  check_dequantize(pr, in);
  return 0;
}
