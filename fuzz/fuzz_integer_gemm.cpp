// fuzz_integer_gemm — include/quant/integer_gemm.hpp (with packed_weights.hpp, int8 and int4)
// against the int64 formula of quant::ref::integer_gemm_accumulators and the reference
// requantization, exactly.
//
// Each input decodes to: uint8 or int8 activations; 8- or 4-bit weights (packed from int8
// values, or for int4 also from export-format nibbles), values uniform, all at one extreme,
// or sparse; N = 0..70 rows (the GEMV path at N = 1, one and two 48-row blocks), K = 1..80
// (occasionally up to 400), out = 1..40 channels (whole and partial blocks of 16); the
// activation zero point anywhere on its grid; no bias, a small one, or one at the int32 ends
// (the call must refuse a bias whose accumulator bound leaves int32); row strides ldx >= K and
// ldy >= out; misaligned x and y (element offsets); the default arch and simd::scalar; a
// requantization per tensor or per channel, fixed_point or float_scale, into int8 or uint8;
// 1 or 2 threads (a large case now and then, past the parallel threshold).
//
// Checks: unpack_weights(pack) == the weights; integer_gemm_s32 == the int64 accumulators,
// element for element, on both arches and both thread counts, and it leaves the padding of y
// (columns out..ldy) untouched; integer_gemm == ref requantization of those accumulators;
// the call throws quant::invalid_argument exactly when |bias| + max|x - z| sum|w| exceeds
// int32 (computed here independently), and nothing else escapes.
#include <quant/integer_gemm.hpp>
#include <quant/packed_weights.hpp>
#include <quant/reference/integer_gemm.hpp>
#include <quant/reference/requantize.hpp>
#include <quant/requantize.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace {

std::int8_t pick_weight(FuzzedDataProvider& in, int style, int lo, int hi) {
  switch (style) {
    case 0: return static_cast<std::int8_t>(in.ConsumeIntegralInRange<int>(lo, hi));
    case 1: return static_cast<std::int8_t>(in.ConsumeBool() ? lo : hi);
    case 2: return static_cast<std::int8_t>(lo);
    default: return static_cast<std::int8_t>(in.ConsumeIntegralInRange<int>(0, 7) == 0 ? in.ConsumeIntegralInRange<int>(lo, hi) : 0);
  }
}

template <class Arch, class Act>
int gemm_s32(const Act* x, std::size_t n, std::size_t ldx, int z, const quant::packed_weights& w,
             const std::int32_t* bias, std::int32_t* y, std::size_t ldy) {
  try {
    quant::integer_gemm_s32<Arch>(x, n, ldx, z, w, bias, y, ldy);
    return 0;
  } catch (const quant::invalid_argument&) {
    return 1;
  } catch (const std::exception& e) {
    fuzz::fail(std::string("integer_gemm_s32 threw an undocumented exception: ") + e.what());
  }
}

template <class Act>
void run(FuzzedDataProvider& in) {
  const int bits = in.ConsumeBool() ? 8 : 4;
  const bool big = in.ConsumeIntegralInRange<int>(0, 63) == 63;
  const std::size_t n = big ? in.ConsumeIntegralInRange<std::size_t>(96, 150) : in.ConsumeIntegralInRange<std::size_t>(0, 70);
  const std::size_t k = big ? in.ConsumeIntegralInRange<std::size_t>(200, 300)
                            : (in.ConsumeIntegralInRange<int>(0, 15) == 0 ? in.ConsumeIntegralInRange<std::size_t>(1, 400)
                                                                           : in.ConsumeIntegralInRange<std::size_t>(1, 80));
  const std::size_t out = big ? in.ConsumeIntegralInRange<std::size_t>(64, 100) : in.ConsumeIntegralInRange<std::size_t>(1, 40);
  const int wlo = bits == 8 ? -128 : -8, whi = bits == 8 ? 127 : 7;
  const int wstyle = in.ConsumeIntegralInRange<int>(0, 3);
  std::vector<std::int8_t> w(out * k);
  for (auto& v : w) v = pick_weight(in, wstyle, wlo, whi);

  quant::packed_weights pw;
  if (bits == 8) {
    pw = quant::pack_weights(w.data(), out, k);
  } else if (in.ConsumeBool()) {
    pw = quant::pack_weights_int4(w.data(), out, k);
  } else {  // export-format nibbles: element 2j low, 2j + 1 high, two's complement
    std::vector<std::uint8_t> nib((out * k + 1) / 2, 0);
    for (std::size_t i = 0; i < w.size(); ++i) nib[i / 2] |= static_cast<std::uint8_t>((w[i] & 0xF) << (4 * (i % 2)));
    pw = quant::pack_weights_int4(nib, out, k);
  }
  const auto back = quant::unpack_weights(pw);
  fuzz::require_same_ints(back.data(), w.data(), w.size(), "unpack_weights(pack_weights(w))");

  constexpr int amin = std::numeric_limits<Act>::min(), amax = std::numeric_limits<Act>::max();
  const int xstyle = in.ConsumeIntegralInRange<int>(0, 3);
  const std::size_t ldx = k + (in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<std::size_t>(1, 9));
  const std::size_t xoff = in.ConsumeIntegralInRange<std::size_t>(0, 31);
  std::vector<Act> xbuf(xoff + n * ldx + 1);
  Act* x = xbuf.data() + xoff;
  std::vector<Act> xd(n * k);  // dense copy for the reference
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < k; ++j) {
      int v;
      switch (xstyle) {
        case 0: v = in.ConsumeIntegralInRange<int>(amin, amax); break;
        case 1: v = in.ConsumeBool() ? amin : amax; break;
        case 2: v = amax; break;
        default: v = amin + in.ConsumeIntegralInRange<int>(0, 3);
      }
      x[i * ldx + j] = xd[i * k + j] = static_cast<Act>(v);
    }
  for (std::size_t i = 0; i < n; ++i)  // stride padding: junk the kernels must not read into the result
    for (std::size_t j = k; j < ldx; ++j) x[i * ldx + j] = static_cast<Act>(0x5a);
  const int z = in.ConsumeBool() ? in.ConsumeIntegralInRange<int>(amin, amax) : (in.ConsumeBool() ? amin : amax);

  std::vector<std::int32_t> bias;
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: break;
    case 1:
      bias.resize(out);
      for (auto& b : bias) b = in.ConsumeIntegralInRange<std::int32_t>(-100000, 100000);
      break;
    case 2:
      bias.resize(out);
      for (auto& b : bias) b = in.ConsumeIntegral<std::int32_t>();
      break;
    default:
      bias.resize(out);
      for (auto& b : bias) b = in.ConsumeBool() ? std::numeric_limits<std::int32_t>::max() - in.ConsumeIntegralInRange<std::int32_t>(0, 1 << 20)
                                                : std::numeric_limits<std::int32_t>::min() + in.ConsumeIntegralInRange<std::int32_t>(0, 1 << 20);
  }
  const std::int32_t* bp = bias.empty() ? nullptr : bias.data();

  fuzz::context() = std::string(std::is_signed<Act>::value ? "int8" : "uint8") + " x int" + std::to_string(bits) +
                    " n=" + std::to_string(n) + " k=" + std::to_string(k) + " out=" + std::to_string(out) +
                    " z=" + std::to_string(z) + " ldx=" + std::to_string(ldx) + " bias=" + (bp ? "yes" : "no");

  // Whether the call must refuse: K beyond the documented maximum, or the accumulator bound.
  bool refuse = k > quant::integer_gemm_max_k<Act>(bits);
  const std::int64_t span = std::max<std::int64_t>(z - amin, amax - z);
  for (std::size_t o = 0; o < out; ++o) {
    std::int64_t a = 0;
    for (std::size_t j = 0; j < k; ++j) a += w[o * k + j] < 0 ? -std::int64_t(w[o * k + j]) : w[o * k + j];
    const std::int64_t b = bp ? bp[o] : 0;
    refuse = refuse || (b < 0 ? -b : b) + span * a > std::numeric_limits<std::int32_t>::max();
  }
  const auto want = quant::ref::integer_gemm_accumulators(xd.data(), n, k, z, w.data(), out, bp);

  const std::size_t ldy = out + (in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<std::size_t>(1, 9));
  const std::size_t yoff = in.ConsumeIntegralInRange<std::size_t>(0, 15);
  constexpr std::int32_t sentinel = 0x7eadbeef;
  auto check_s32 = [&](auto arch, int threads) {
    using Arch = decltype(arch);
    quant::set_num_threads(threads);
    std::vector<std::int32_t> ybuf(yoff + n * ldy + 1, sentinel);
    std::int32_t* y = ybuf.data() + yoff;
    const int r = gemm_s32<Arch>(x, n, ldx, z, pw, bp, y, ldy);
    fuzz::require(r == (refuse ? 1 : 0), std::string("integer_gemm_s32 ") + (r ? "refused" : "accepted") +
                                             (refuse ? " a call whose bound leaves int32" : " a call whose bound fits int32") +
                                             " (" + Arch::name() + ")");
    if (r) return;
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t o = 0; o < out; ++o)
        if (std::int64_t(y[i * ldy + o]) != want[i * out + o])
          fuzz::fail(std::string("integer_gemm_s32 (") + Arch::name() + ", " + std::to_string(threads) +
                     " threads) differs at [" + std::to_string(i) + ", " + std::to_string(o) + "]: got " +
                     std::to_string(y[i * ldy + o]) + ", want " + std::to_string(want[i * out + o]));
      for (std::size_t o = out; o < ldy; ++o)
        fuzz::require(y[i * ldy + o] == sentinel, "integer_gemm_s32 wrote into the row padding of y");
    }
    for (std::size_t i = 0; i < yoff; ++i) fuzz::require(ybuf[i] == sentinel, "integer_gemm_s32 wrote before y");
    fuzz::require(ybuf.back() == sentinel, "integer_gemm_s32 wrote past y");
  };
  check_s32(quant::simd::default_arch{}, 1);
  check_s32(quant::simd::scalar{}, 1);
  if (big) check_s32(quant::simd::default_arch{}, 2);
  if (refuse) {
    quant::set_num_threads(0);
    return;
  }

  // Fused requantization.
  const bool fixed = in.ConsumeBool();
  const bool per_channel = in.ConsumeBool();
  const bool uout = in.ConsumeBool();
  const quant::grid g{8, !uout, false};
  std::vector<double> m(per_channel ? out : 1);
  for (auto& v : m)
    v = in.ConsumeBool() ? std::ldexp(in.ConsumeFloatingPointInRange<double>(0.5, 1.0), in.ConsumeIntegralInRange<int>(-30, 2))
                         : std::ldexp(1.0, in.ConsumeIntegralInRange<int>(-31, 30));
  const std::int32_t zy = in.ConsumeIntegralInRange<std::int32_t>(g.qmin(), g.qmax());
  const auto act = static_cast<quant::fused_activation>(in.ConsumeIntegralInRange<int>(0, 2));
  const quant::requantize_params rq = quant::make_requantize_params(
      m, g, zy, fixed ? quant::requantization::fixed_point : quant::requantization::float_scale, act,
      in.ConsumeFloatingPointInRange<double>(0.001, 1.0));
  fuzz::context() += std::string(fixed ? " fixed_point" : " float_scale") + (per_channel ? " per_channel" : " per_tensor");
  auto check_q = [&](auto arch, auto out_type, int threads) {
    using Arch = decltype(arch);
    using Out = decltype(out_type);
    quant::set_num_threads(threads);
    std::vector<Out> ybuf(yoff + n * ldy + 1, Out(0x33));
    Out* y = ybuf.data() + yoff;
    try {
      quant::integer_gemm<Arch>(x, n, ldx, z, pw, bp, rq, y, ldy);
    } catch (const std::exception& e) {
      fuzz::fail(std::string("integer_gemm threw on valid arguments: ") + e.what());
    }
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t o = 0; o < out; ++o) {
        const std::size_t c = per_channel ? o : 0;
        const std::int64_t a = want[i * out + o];
        const std::int32_t wq = fixed ? quant::ref::requantize_fixed_point(static_cast<std::int32_t>(a), rq.fixed[c],
                                                                           rq.zero_point, rq.lo, rq.hi)
                                      : quant::ref::requantize_float_scale(static_cast<std::int32_t>(a), rq.scale[c],
                                                                           rq.zero_point, rq.lo, rq.hi);
        if (std::int32_t(y[i * ldy + o]) != wq)
          fuzz::fail(std::string("integer_gemm (") + Arch::name() + ", " + std::to_string(threads) +
                     " threads) differs at [" + std::to_string(i) + ", " + std::to_string(o) + "]: got " +
                     std::to_string(int(y[i * ldy + o])) + ", want " + std::to_string(wq) + " (acc " +
                     std::to_string(a) + ")");
      }
      for (std::size_t o = out; o < ldy; ++o)
        fuzz::require(y[i * ldy + o] == Out(0x33), "integer_gemm wrote into the row padding of y");
    }
  };
  if (uout) {
    check_q(quant::simd::default_arch{}, std::uint8_t{}, 1);
    check_q(quant::simd::scalar{}, std::uint8_t{}, 1);
    if (big) check_q(quant::simd::default_arch{}, std::uint8_t{}, 2);
  } else {
    check_q(quant::simd::default_arch{}, std::int8_t{}, 1);
    check_q(quant::simd::scalar{}, std::int8_t{}, 1);
    if (big) check_q(quant::simd::default_arch{}, std::int8_t{}, 2);
  }
  quant::set_num_threads(0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  if (in.ConsumeBool())
    run<std::uint8_t>(in);
  else
    run<std::int8_t>(in);
  return 0;
}
