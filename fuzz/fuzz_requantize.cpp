// fuzz_requantize — include/quant/requantize.hpp against its scalar reference (quant::ref,
// include/quant/reference/requantize.hpp), bit for bit.
//
// Each input decodes to: a convention (fixed_point / float_scale); per-tensor or per-channel
// parameters (1..40 channels), either from make_requantize_params (multipliers over
// [2^-31, 2^30] including both ends, powers of two, values next to 1/2 and 1, and out-of-range
// ones; 2..8-bit signed / unsigned / narrow output grids, zero points anywhere on them, none /
// relu / relu6) or written directly (q31 over [2^30, 2^31) with its corners, shifts over
// [-31, 30], float scales from tiny to FLT_MAX, arbitrary zero points and clamp bounds, which
// the plan may reject); an output type (int8, uint8, int32); accumulators that are arbitrary
// bits, INT32_MIN / INT32_MAX, small integers, or the accumulators next to a rounding tie of
// M acc; misaligned accumulator and output pointers (element offsets 0..7 into a buffer); and
// a row / column count (occasionally past requantize_parallel_min, where threads engage).
//
// Checks: make_fixed_point_multiplier gives q31 in [2^30, 2^31) and |q31 2^(-31-shift) - M| <=
// 2^-32 2^-shift; requantize (AVX2 where built), requantize_with<simd::scalar>,
// requantize_channel_major (both arches), requantize_one and the std::vector form all equal
// ref::requantize_fixed_point / ref::requantize_float_scale element by element; 1 and 2
// threads give the same bytes; invalid parameters throw quant::invalid_argument /
// quant::length_error (every entry point alike), nothing else. quantize_bias equals
// ref::quantize_bias, or throws invalid_argument exactly when the reference leaves int32.
#include <quant/reference/requantize.hpp>
#include <quant/requantize.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

using quant::requantization;

double pick_multiplier(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 7)) {
    case 0: return quant::fixed_point_multiplier_min;
    case 1: return quant::fixed_point_multiplier_max;
    case 2: return std::ldexp(1.0, in.ConsumeIntegralInRange<int>(-33, 31));  // incl. just outside
    case 3: return std::nextafter(0.5, in.ConsumeBool() ? 0.0 : 1.0);
    case 4: return std::nextafter(1.0, in.ConsumeBool() ? 0.0 : 2.0);
    case 5: return in.ConsumeFloatingPointInRange<double>(1e-5, 1.0);
    case 6: return std::ldexp(in.ConsumeFloatingPointInRange<double>(0.5, 1.0), in.ConsumeIntegralInRange<int>(-31, 31));
    default: {
      double v;
      const std::uint64_t b = in.ConsumeIntegral<std::uint64_t>();
      std::memcpy(&v, &b, 8);
      return v;  // anything, NaN and negative included: make_fixed_point_multiplier must refuse
    }
  }
}

std::int32_t pick_acc(FuzzedDataProvider& in, const quant::requantize_params& p, std::size_t c) {
  constexpr std::int32_t imin = std::numeric_limits<std::int32_t>::min(), imax = std::numeric_limits<std::int32_t>::max();
  switch (in.ConsumeIntegralInRange<int>(0, 6)) {
    case 0: return in.ConsumeBool() ? imin : imax;
    case 1: return in.ConsumeIntegralInRange<std::int32_t>(-300, 300);
    case 2: return in.ConsumeIntegralInRange<std::int32_t>(-(1 << 20), 1 << 20);
    case 3:
    case 4: {  // next to a tie of M acc: acc = (k + 1/2) / M, rounded, +-1
      double m = 1.0;
      if (p.rounding == requantization::fixed_point && !p.fixed.empty())
        m = p.fixed[c % p.fixed.size()].real();
      else if (!p.scale.empty())
        m = p.scale[c % p.scale.size()];
      if (!(m > 0.0) || !std::isfinite(m)) return 0;
      const double k = in.ConsumeIntegralInRange<int>(-300, 300) + 0.5;
      const double a = std::round(k / m) + in.ConsumeIntegralInRange<int>(-1, 1);
      if (!(a >= imin && a <= imax)) return in.ConsumeIntegral<std::int32_t>();
      return static_cast<std::int32_t>(a);
    }
    default: return in.ConsumeIntegral<std::int32_t>();
  }
}

std::string params_text(const quant::requantize_params& p) {
  std::string s = std::string(quant::to_string(p.rounding)) + " z=" + std::to_string(p.zero_point) + " lo=" +
                  std::to_string(p.lo) + " hi=" + std::to_string(p.hi) + " channels=" + std::to_string(p.channels());
  char buf[96];
  for (std::size_t c = 0; c < std::min<std::size_t>(p.channels(), 4); ++c) {
    if (p.rounding == requantization::fixed_point)
      std::snprintf(buf, sizeof buf, " (q31=%d shift=%d)", p.fixed[c].q31, p.fixed[c].shift);
    else
      std::snprintf(buf, sizeof buf, " (scale=%a)", static_cast<double>(p.scale[c]));
    s += buf;
  }
  return s;
}

std::int32_t want_one(std::int32_t acc, std::size_t c, const quant::requantize_params& p) {
  const std::size_t k = p.channels() == 1 ? 0 : c;
  return p.rounding == requantization::fixed_point
             ? quant::ref::requantize_fixed_point(acc, p.fixed[k], p.zero_point, p.lo, p.hi)
             : quant::ref::requantize_float_scale(acc, p.scale[k], p.zero_point, p.lo, p.hi);
}

// Calls f(); returns 0 when it returned, 1 for quant::invalid_argument, 2 for
// quant::length_error; any other exception is a finding.
template <class F>
int outcome(F&& f, const char* what) {
  try {
    f();
    return 0;
  } catch (const quant::invalid_argument&) {
    return 1;
  } catch (const quant::length_error&) {
    return 2;
  } catch (const std::exception& e) {
    fuzz::fail(std::string(what) + " threw an undocumented exception: " + e.what());
  }
}

template <class Out>
void check(FuzzedDataProvider& in, const quant::requantize_params& p, std::size_t channels) {
  const bool big = in.ConsumeIntegralInRange<int>(0, 127) == 127;
  const std::size_t rows = big ? (quant::kernels::requantize_parallel_min + channels - 1) / channels +
                                     in.ConsumeIntegralInRange<std::size_t>(0, 3)
                               : in.ConsumeIntegralInRange<std::size_t>(0, 24);
  const std::size_t n = rows * channels;
  const std::size_t acc_off = in.ConsumeIntegralInRange<std::size_t>(0, 7);
  const std::size_t out_off = in.ConsumeIntegralInRange<std::size_t>(0, 7);
  std::vector<std::int32_t> acc_buf(n + acc_off);
  std::int32_t* acc = acc_buf.data() + acc_off;
  // small inputs draw every accumulator; large ones draw a prefix and repeat it with a stride
  const std::size_t drawn = std::min<std::size_t>(n, 4096);
  for (std::size_t i = 0; i < drawn; ++i) acc[i] = pick_acc(in, p, i % channels);
  for (std::size_t i = drawn; i < n; ++i) acc[i] = acc[(i * 7919) % drawn] ^ static_cast<std::int32_t>(i);
  fuzz::context() = params_text(p) + " rows=" + std::to_string(rows) + " channels=" + std::to_string(channels) +
                    " out=" + std::to_string(sizeof(Out)) + (std::is_signed<Out>::value ? "s" : "u");

  // The reference, and whether the parameters are valid for the kernels: the plan's checks
  // (spelled out independently) and the output type's range.
  bool valid = p.channels() >= 1 && p.lo <= p.hi && (p.channels() == 1 || p.channels() == channels);
  if (valid) {
    const std::int64_t lz = std::int64_t(p.lo) - p.zero_point, hz = std::int64_t(p.hi) - p.zero_point;
    valid = std::max(-lz, hz) <= (std::int64_t(1) << 24) && p.lo >= std::numeric_limits<Out>::min() &&
            p.hi <= std::numeric_limits<Out>::max();
    for (std::size_t c = 0; valid && c < p.channels(); ++c) {
      if (p.rounding == requantization::fixed_point)
        valid = p.fixed[c].q31 >= (1 << 30) && p.fixed[c].shift >= -31 && p.fixed[c].shift <= 30;
      else
        valid = std::isfinite(p.scale[c]) && p.scale[c] > 0.0f;
    }
  }

  std::vector<Out> out_buf(n + out_off), out2_buf(n + out_off);
  Out* out = out_buf.data() + out_off;
  Out* out2 = out2_buf.data() + out_off;
  auto require_ref = [&](const Out* got, bool channel_major, const char* what) {
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t c = channel_major ? i / rows : i % channels;
      const std::int32_t want = want_one(acc[i], c, p);
      if (static_cast<std::int64_t>(got[i]) != want)
        fuzz::fail(std::string(what) + " differs from quant::ref at " + std::to_string(i) + " (acc " +
                   std::to_string(acc[i]) + ", channel " + std::to_string(c) + "): got " +
                   std::to_string(static_cast<std::int64_t>(got[i])) + ", want " + std::to_string(want));
    }
  };

  quant::set_num_threads(1);
  const int r1 = outcome([&] { quant::requantize(acc, rows, channels, p, out); }, "requantize");
  const int r2 = outcome([&] { quant::kernels::requantize_with<quant::simd::scalar>(acc, rows, channels, p, out2); },
                         "requantize_with<scalar>");
  fuzz::require(r1 == r2, "requantize and its scalar path disagree on throwing: " + std::to_string(r1) + " vs " +
                              std::to_string(r2));
  if (n == 0) return;  // an empty block may return before the plan is checked against it
  fuzz::require((r1 == 0) == valid, "requantize " + std::string(r1 ? "threw" : "accepted") +
                                        (valid ? " valid" : " invalid") + " parameters (outcome " +
                                        std::to_string(r1) + ")");
  if (!valid) return;
  require_ref(out, false, "requantize");
  require_ref(out2, false, "requantize_with<scalar>");
  for (std::size_t i = 0; i < n; ++i) {
    const std::int32_t one = quant::requantize_one(acc[i], i % channels, p);
    if (one != want_one(acc[i], i % channels, p))
      fuzz::fail("requantize_one differs from quant::ref at " + std::to_string(i));
  }
  if (big) {
    quant::set_num_threads(2);
    std::vector<Out> t2(n);
    quant::requantize(acc, rows, channels, p, t2.data());
    fuzz::require_same_ints(t2.data(), out, n, "requantize at 2 threads vs 1");
  }
  // channel-major: the same accumulators read as [channels, rows]
  quant::set_num_threads(in.ConsumeBool() ? 2 : 1);
  quant::requantize_channel_major(acc, channels, rows, p, out);
  require_ref(out, true, "requantize_channel_major");
  quant::kernels::requantize_channel_major_with<quant::simd::scalar>(acc, channels, rows, p, out2);
  require_ref(out2, true, "requantize_channel_major_with<scalar>");
  if (!big) {
    const std::vector<Out> v = quant::requantize<Out>(std::vector<std::int32_t>(acc, acc + n), channels, p);
    require_ref(v.data(), false, "requantize(std::vector)");
  }
  quant::set_num_threads(0);
}

void check_bias(FuzzedDataProvider& in) {
  const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(1, 8);
  std::vector<float> bias(n), ws(in.ConsumeBool() ? 1 : n);
  for (auto& b : bias)
    b = in.ConsumeBool() ? in.ConsumeFloatingPointInRange<float>(-100.0f, 100.0f)
                         : fuzz::float_of(in.ConsumeIntegral<std::uint32_t>() & 0x7f7fffffu) * (in.ConsumeBool() ? -1.f : 1.f);
  for (auto& s : ws) s = fuzz::pick_scale(in);
  const double is = fuzz::pick_scale(in);
  fuzz::context() = "quantize_bias n=" + std::to_string(n);
  std::vector<std::int32_t> got;
  bool threw = false;
  try {
    got = quant::quantize_bias(bias, is, ws);
  } catch (const quant::invalid_argument&) {
    threw = true;
  }
  // The reference in double; it is in int32 range or the library must have refused.
  bool fits = true;
  std::vector<double> want(n);
  for (std::size_t o = 0; o < n; ++o) {
    const double s = is * static_cast<double>(ws[ws.size() == 1 ? 0 : o]);
    want[o] = std::nearbyint(static_cast<double>(bias[o]) / s);
    fits = fits && want[o] >= -2147483648.0 && want[o] <= 2147483647.0;
  }
  fuzz::require(threw == !fits, std::string("quantize_bias ") + (threw ? "threw" : "accepted") +
                                    " a bias that " + (fits ? "fits" : "does not fit") + " int32");
  if (!threw)
    for (std::size_t o = 0; o < n; ++o)
      fuzz::require(static_cast<double>(got[o]) == want[o],
                    "quantize_bias differs from round_half_even(b / (s_in s_w)) at " + std::to_string(o));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const int mode = in.ConsumeIntegralInRange<int>(0, 9);
  if (mode == 9) {
    check_bias(in);
    return 0;
  }
  const requantization rounding = in.ConsumeBool() ? requantization::fixed_point : requantization::float_scale;
  const std::size_t channels = in.ConsumeIntegralInRange<std::size_t>(1, 40);
  const bool per_channel = in.ConsumeBool();
  const int out_type = in.ConsumeIntegralInRange<int>(0, 2);
  quant::requantize_params p;
  if (mode < 6) {  // from make_requantize_params
    const quant::grid g{in.ConsumeIntegralInRange<int>(2, 8), in.ConsumeBool(), in.ConsumeBool()};
    std::vector<double> m(per_channel ? channels : 1);
    for (auto& v : m) v = pick_multiplier(in);
    const std::int32_t z = in.ConsumeIntegralInRange<std::int32_t>(g.qmin() - 1, g.qmax() + 1);
    const auto act = static_cast<quant::fused_activation>(in.ConsumeIntegralInRange<int>(0, 2));
    const double out_scale = in.ConsumeBool() ? fuzz::pick_scale(in) : in.ConsumeFloatingPointInRange<double>(-1.0, 1.0);
    fuzz::context() = "make_requantize_params";
    bool all_valid = z >= g.qmin() && z <= g.qmax() &&
                     (act != quant::fused_activation::relu6 || (std::isfinite(out_scale) && out_scale > 0.0));
    for (double v : m) all_valid = all_valid && std::isfinite(v) && v >= quant::fixed_point_multiplier_min &&
                                   v <= quant::fixed_point_multiplier_max;
    try {
      p = quant::make_requantize_params(m, g, z, rounding, act, out_scale);
    } catch (const quant::invalid_argument&) {
      fuzz::require(!all_valid, "make_requantize_params refused valid arguments");
      return 0;
    }
    fuzz::require(all_valid, "make_requantize_params accepted invalid arguments");
    for (std::size_t c = 0; c < m.size(); ++c) {
      const auto f = p.fixed[c];
      fuzz::require(f.q31 >= (1 << 30), "q31 below 2^30");
      fuzz::require(std::fabs(f.real() - m[c]) <= std::ldexp(1.0, -32 - f.shift),
                    "fixed-point multiplier further than 2^-32 2^-shift from M");
      fuzz::require(p.scale[c] == static_cast<float>(m[c]), "float multiplier is not float(M)");
    }
    fuzz::require(p.lo >= g.qmin() && p.hi <= g.qmax() && p.lo <= p.hi, "clamp outside the grid");
  } else {  // written directly: the plan must validate them
    p.rounding = rounding;
    const std::size_t count = per_channel ? channels : 1;
    for (std::size_t c = 0; c < count; ++c) {
      quant::fixed_point_multiplier f;
      switch (in.ConsumeIntegralInRange<int>(0, 3)) {
        case 0: f.q31 = 1 << 30; break;
        case 1: f.q31 = std::numeric_limits<std::int32_t>::max(); break;
        case 2: f.q31 = in.ConsumeIntegral<std::int32_t>(); break;  // may be invalid
        default: f.q31 = in.ConsumeIntegralInRange<std::int32_t>(1 << 30, std::numeric_limits<std::int32_t>::max());
      }
      f.shift = in.ConsumeIntegralInRange<int>(-33, 32);
      p.fixed.push_back(f);
      p.scale.push_back(in.ConsumeBool() ? fuzz::pick_scale(in) : fuzz::float_of(in.ConsumeIntegral<std::uint32_t>()));
    }
    if (in.ConsumeIntegralInRange<int>(0, 15) == 0) {  // a mismatched table
      if (rounding == requantization::fixed_point) p.fixed.clear(); else p.scale.clear();
    }
    p.zero_point = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::int32_t>(-300, 300) : in.ConsumeIntegral<std::int32_t>();
    p.lo = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::int32_t>(-300, 300) : in.ConsumeIntegral<std::int32_t>();
    p.hi = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::int32_t>(-300, 300) : in.ConsumeIntegral<std::int32_t>();
  }
  if (out_type == 0)
    check<std::int8_t>(in, p, channels);
  else if (out_type == 1)
    check<std::uint8_t>(in, p, channels);
  else
    check<std::int32_t>(in, p, channels);
  return 0;
}
