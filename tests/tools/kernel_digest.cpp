// kernel_digest: runs every kernel whose result is documented as exact on fixed, seeded
// inputs (with NaN, +-inf, exact ties, subnormals, +-0 and huge values where the contract
// defines them), at 1 and at 2 threads, and prints one line per kernel:
//
//   <name> <FNV-1a 64 of the output bytes, 16 hex digits>
//
// Builds with other instruction sets (-march=native, -mavx2 -mfma, AVX-512) or without SIMD
// (QUANT_NO_SIMD) must print identical lines; scripts/compare-digests.sh diffs them.
// Results documented as exact only for a given build (reduced gradients and lane-summed
// errors whose summation order follows the SIMD width) are printed as comment lines
// ("# <name> <digest>"), which the comparison skips; they are still checked 1 vs 2 threads.
// Exit status: 0, or 1 if any kernel gives different bytes at 1 and 2 threads.
// Inputs are a few hundred thousand elements: above the threshold where loops go parallel
// (2^16 elements; 2^18 for requantization), with lengths that leave SIMD tails.
#include <quant/parallel.hpp>
#include <quant/export.hpp>
#include <quant/im2col.hpp>
#include <quant/integer_gemm.hpp>
#include <quant/integer_im2col.hpp>
#include <quant/kmeans.hpp>
#include <quant/kurtosis.hpp>
#include <quant/lsq.hpp>
#include <quant/observers.hpp>
#include <quant/packed_weights.hpp>
#include <quant/quant_noise.hpp>
#include <quant/requantize.hpp>
#include <quant/ste.hpp>
#include <quant/uniform.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xtensor.hpp>

namespace {

// ---- digest -----------------------------------------------------------------------------
struct fnv1a {
  std::uint64_t h = 0xcbf29ce484222325ull;
  void bytes(const void* p, std::size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) {
      h ^= b[i];
      h *= 0x100000001b3ull;
    }
  }
  template <class C>
  void container(const C& c) {
    using T = std::decay_t<decltype(*c.data())>;
    bytes(c.data(), c.size() * sizeof(T));
  }
  template <class T>
  void value(const T& v) {
    static_assert(std::is_trivially_copyable<T>::value, "plain values only");
    bytes(&v, sizeof(T));
  }
  void params(const quant::qparams& p) {
    container(p.scales());
    container(p.zero_points());
  }
};

// ---- seeded inputs ----------------------------------------------------------------------
struct splitmix64 {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // uniform in [-1, 1) with 24 random bits
  float symmetric() { return static_cast<float>(static_cast<std::int64_t>(next() >> 40) - (1 << 23)) * 0x1p-23f; }
};

constexpr float tensor_scale = 0.013f;  // the per-tensor scale; specials below are its ties

// Values spread over a few scales plus the special values every kernel must handle.
std::vector<float> make_floats(std::size_t n, std::uint64_t seed, bool with_nan) {
  splitmix64 r{seed};
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = r.symmetric() * (i % 3 == 0 ? 2.0f : 0.7f);
  const float inf = std::numeric_limits<float>::infinity();
  const float specials[] = {0.0f, -0.0f, inf, -inf, 1e-40f, -1e-40f, 0x1p-149f, 3e38f, -3e38f, 1e30f};
  for (std::size_t i = 0; i < n; i += 997) v[i] = specials[(i / 997) % 10];
  // exact ties of the per-tensor grid: (k + 1/2) / inv_s with inv_s = 1 / s in float
  const float inv = 1.0f / tensor_scale;
  for (std::size_t i = 13; i < n; i += 101) {
    const float k = static_cast<float>(static_cast<int>(i % 301) - 150) + 0.5f;
    v[i] = k / inv;
    if (v[i] * inv != k) v[i] = std::nextafter(v[i], 0.0f);  // keep it near the tie
  }
  if (with_nan)
    for (std::size_t i = 5; i < n; i += 1499) v[i] = std::numeric_limits<float>::quiet_NaN();
  // the last elements (SIMD tail) carry specials as well
  if (n > 8) {
    v[n - 1] = with_nan ? std::numeric_limits<float>::quiet_NaN() : 0.5f * tensor_scale;
    v[n - 2] = -inf;
    v[n - 3] = 1.5f * tensor_scale;
  }
  return v;
}

// Buffer whose data start one float past an aligned address: kernels see a misaligned start.
struct misaligned {
  std::vector<float> storage;
  explicit misaligned(const std::vector<float>& v) : storage(v.size() + 1) {
    std::copy(v.begin(), v.end(), storage.begin() + 1);
  }
  float* data() { return storage.data() + 1; }
  std::size_t size() const { return storage.size() - 1; }
  template <std::size_t N>
  auto view(const std::array<std::size_t, N>& shape) {
    std::size_t count = 1;
    for (auto d : shape) count *= d;  // a leading part of the buffer
    return xt::adapt(data(), count, xt::no_ownership(), shape);
  }
};

std::vector<float> scales(std::size_t n, float base) {
  std::vector<float> s(n);
  for (std::size_t k = 0; k < n; ++k) s[k] = base * (1.0f + 0.37f * static_cast<float>(k % 7));
  return s;
}
std::vector<std::int32_t> zero_points(std::size_t n, quant::grid g) {
  std::vector<std::int32_t> z(n);
  const std::int32_t span = g.qmax() - g.qmin() + 1;
  for (std::size_t k = 0; k < n; ++k) z[k] = g.qmin() + static_cast<std::int32_t>((k * 5) % static_cast<std::size_t>(span));
  return z;
}

// ---- the registry ---------------------------------------------------------------------
struct entry {
  std::string name;
  bool across_builds;  // documented exact for every build, not only for any thread count
  std::function<void(fnv1a&)> run;
};

std::string hex(std::uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

template <class F>
void each_rounding(F&& f) {
  f(quant::round_half_to_even{}, "half_to_even");
  f(quant::round_half_away_from_zero{}, "half_away_from_zero");
  f(quant::round_half_up{}, "half_up");
  f(quant::round_floor{}, "floor");
  f(quant::round_ceil{}, "ceil");
  f(quant::round_toward_zero{}, "toward_zero");
  f(quant::round_stochastic{0x5eed1234abcdull}, "stochastic");
}

}  // namespace

int main() {
  using namespace quant;
  constexpr std::size_t rows = 257, cols = 1031;  // 264 967 floats, odd lengths (tails)
  const std::size_t n = rows * cols;
  const std::array<std::size_t, 2> shape{rows, cols};
  misaligned x_nan(make_floats(n, 1, true));    // fake-quant, STE: NaN defined
  misaligned x_fin(make_floats(n, 2, false));   // integer quantize: NaN rejected, inf saturates
  misaligned dy(make_floats(n, 3, false));
  const xt::xtensor<float, 2> dy_t = dy.view(std::array<std::size_t, 2>{257, 1031});  // results follow dy's type
  std::vector<float> finite(n);                 // observers, LSQ: finite data only
  {
    splitmix64 r{4};
    for (auto& v : finite) v = r.symmetric() * 1.7f + 0.2f;
  }
  misaligned x_obs(finite);

  const grid u8 = grid::int_unsigned(8), s4 = grid::int_signed(4), s8n = grid::int_signed(8, true);
  const grid s8 = grid::int_signed(8);
  struct layout {
    std::string name;
    qparams p;
  };
  const std::vector<layout> layouts = {
      {"tensor_u8", qparams::per_tensor(u8, tensor_scale, 131)},
      {"channel0_s4", qparams::per_channel(s4, scales(rows, 0.11f), zero_points(rows, s4), 0)},
      {"channel1_s8n", qparams::per_channel(s8n, scales(cols, 0.009f), zero_points(cols, s8n), -1)},
      {"group1x1031_u8", qparams::per_group(u8, scales(rows, 0.02f), zero_points(rows, u8), 1, cols)},
      {"group0x257_s4", qparams::per_group(s4, scales(cols, 0.2f), zero_points(cols, s4), 0, rows)},
  };
  // per group with groups of 32 along the rows: [64, 1024]
  const std::array<std::size_t, 2> gshape{256, 1024};
  const qparams g32 = qparams::per_group(s4, scales(256 * 32, 0.15f), zero_points(256 * 32, s4), 1, 32);

  std::vector<entry> entries;
  auto add = [&](std::string name, bool across, std::function<void(fnv1a&)> f) {
    entries.push_back({std::move(name), across, std::move(f)});
  };

  // ---- uniform: fake-quantize, quantize, dequantize ----------------------------------
  for (const auto& l : layouts) {
    each_rounding([&](auto round, const char* rname) {
      using R = decltype(round);
      add("fake_quantize/" + l.name + "/" + rname + "/pytorch", true, [&, round, l](fnv1a& h) {
        h.container(eager::fake_quantize<R, pytorch_convention>(x_nan.view(shape), l.p, round));
      });
      add("fake_quantize/" + l.name + "/" + rname + "/aimet", true, [&, round, l](fnv1a& h) {
        h.container(eager::fake_quantize<R, aimet_convention>(x_nan.view(shape), l.p, round));
      });
      add("quantize/" + l.name + "/" + rname + "/pytorch", true, [&, round, l](fnv1a& h) {
        if (l.p.grid().is_signed)
          h.container(eager::quantize<std::int8_t, R, pytorch_convention>(x_fin.view(shape), l.p, round));
        else
          h.container(eager::quantize<std::uint8_t, R, pytorch_convention>(x_fin.view(shape), l.p, round));
      });
      add("quantize/" + l.name + "/" + rname + "/aimet", true, [&, round, l](fnv1a& h) {
        h.container(eager::quantize<std::int16_t, R, aimet_convention>(x_fin.view(shape), l.p, round));
      });
      add("ste_backward/" + l.name + "/" + rname + "/clipped", true, [&, round, l](fnv1a& h) {
        h.container(eager::ste_backward<R>(x_nan.view(shape), dy_t, l.p, ste_mode::clipped, round));
      });
      add("fake_quantize_with_mask/" + l.name + "/" + rname, true, [&, round, l](fnv1a& h) {
        // (its result takes the input's container type: an owning tensor here)
        const xt::xtensor<float, 2> x = x_nan.view(shape);
        const auto r = eager::fake_quantize_with_mask<R>(x, l.p, round);
        h.container(r.y);
        h.container(r.mask);
      });
    });
    add("dequantize/" + l.name, true, [&, l](fnv1a& h) {
      const auto q = eager::quantize<std::int16_t>(x_fin.view(shape), l.p);
      h.container(eager::dequantize(q, l.p));
    });
    add("ste_backward/" + l.name + "/identity", true, [&, l](fnv1a& h) {
      h.container(eager::ste_backward(x_nan.view(shape), dy_t, l.p, ste_mode::identity));
    });
  }
  add("fake_quantize/group32_s4", true, [&](fnv1a& h) { h.container(eager::fake_quantize(x_nan.view(gshape), g32)); });
  add("quantize/group32_s4", true,
      [&](fnv1a& h) { h.container(eager::quantize<std::int8_t>(x_fin.view(gshape), g32)); });
  add("lazy_fake_quantize/tensor_u8", true, [&](fnv1a& h) {
    xt::xtensor<float, 2> y = fake_quantize(x_nan.view(shape), layouts[0].p);
    h.container(y);
  });
  add("lazy_fake_quantize/channel1_s8n", true, [&](fnv1a& h) {
    xt::xtensor<float, 2> y = fake_quantize(x_nan.view(shape), layouts[2].p);
    h.container(y);
  });
  add("lazy_quantize/channel0_s4", true, [&](fnv1a& h) {
    xt::xtensor<std::int8_t, 2> q = quantize<std::int8_t>(x_fin.view(shape), layouts[1].p);
    h.container(q);
  });

  // ---- integer export -----------------------------------------------------------------
  add("export_int/channel0_s4", true, [&](fnv1a& h) {
    const auto t = eager::export_int<std::int8_t>(x_fin.view(shape), layouts[1].p);
    h.container(t.values);
    h.params(t.params);
  });
  add("export_int4/channel0_s4", true, [&](fnv1a& h) {
    const auto t = eager::export_int4(x_fin.view(shape), layouts[1].p);
    h.container(t.bytes);
    h.container(unpack(t));
  });
  add("export_int4/group0x257_s4/stochastic", true, [&](fnv1a& h) {
    h.container(eager::export_int4(x_fin.view(shape), layouts[4].p, round_stochastic{99}).bytes);
  });

  // ---- LSQ / LSQ+ -----------------------------------------------------------------------
  for (int variant = 0; variant < 6; ++variant) {
    lsq_params p;
    p.grid = variant % 2 ? u8 : s4;
    const bool per_channel = variant >= 2;
    if (per_channel) {
      p.channel_axis = variant >= 4 ? std::optional<std::ptrdiff_t>(-1) : std::optional<std::ptrdiff_t>(0);
      const std::size_t c = variant >= 4 ? cols : rows;
      p.scale = scales(c, 0.05f);
      if (variant % 2) p.offset = std::vector<float>(c, -0.3f);
    } else {
      p.scale = {0.07f};
      if (variant % 2) p.offset = {-0.45f};
    }
    p.convention = variant == 3 ? lsq_convention::pytorch : lsq_convention::paper;
    if (p.convention == lsq_convention::pytorch) p.offset.assign(p.scale.size(), 3.5f);
    const std::string name = "lsq/" + std::to_string(variant) + (per_channel ? "/channel" : "/tensor") +
                             (p.has_offset() ? "/plus" : "") +
                             (p.convention == lsq_convention::pytorch ? "/pytorch" : "/paper");
    add(name + "/forward", true, [&, p](fnv1a& h) { h.container(eager::lsq_forward(x_obs.view(shape), p)); });
    add(name + "/y_dx", true, [&, p](fnv1a& h) {
      const auto r = eager::lsq_forward_backward(x_obs.view(shape), dy.view(shape), p);
      h.container(r.y);
      h.container(r.dx);
    });
    // documented: a scalar build sums the reduced gradients in another order
    add(name + "/dscale_doffset", false, [&, p](fnv1a& h) {
      const auto r = eager::lsq_forward_backward(x_obs.view(shape), dy.view(shape), p);
      h.container(r.dscale);
      h.container(r.doffset);
    });
  }
  add("lsq_init_scale/channel0", true,
      [&](fnv1a& h) { h.container(lsq_init_scale(x_obs.view(shape), s4, std::ptrdiff_t(0))); });
  add("lsq_plus_init_weights/channel1", true,
      [&](fnv1a& h) { h.container(lsq_plus_init_weights(x_obs.view(shape), s4, std::ptrdiff_t(1))); });
  add("lsq_plus_init_minmax", true, [&](fnv1a& h) {
    const auto r = lsq_plus_init_minmax(x_obs.view(shape), u8);
    h.value(r.scale);
    h.value(r.offset);
  });

  // ---- observers ------------------------------------------------------------------------
  for (int axis : {-9, 0, 1}) {
    const std::optional<std::ptrdiff_t> ax = axis == -9 ? std::nullopt : std::optional<std::ptrdiff_t>(axis);
    const std::string an = axis == -9 ? "tensor" : "axis" + std::to_string(axis);
    add("minmax_observer/" + an, true, [&, ax](fnv1a& h) {
      minmax_observer o(ax);
      o.update(x_obs.view(shape));
      h.params(o.compute(u8, scheme::asymmetric));
      h.params(o.compute(s8, scheme::symmetric, symmetric_scale_convention::aimet));
    });
    add("moving_average_minmax_observer/" + an, true, [&, ax](fnv1a& h) {
      moving_average_minmax_observer o(0.01f, ax);
      o.update(x_obs.view(shape));
      o.update(x_obs.view(shape) * 0.5f - 0.25f);
      h.params(o.compute(u8, scheme::asymmetric));
    });
    // (2048 bins per tensor; 128 per channel keep the per-channel searches short)
    add("histogram_observer/" + an, true, [&, ax](fnv1a& h) {
      histogram_observer o(ax, ax ? 128 : 2048);
      o.update(x_obs.view(shape));
      h.params(o.compute(u8, scheme::asymmetric));
      h.params(o.compute(s8, scheme::symmetric));
    });
    add("sqnr_observer/" + an, true, [&, ax](fnv1a& h) {
      sqnr_options opt;
      opt.bins = ax ? 128 : 2048;
      sqnr_observer o(ax, opt);
      o.update(x_obs.view(shape));
      h.params(o.compute(u8, scheme::asymmetric));
    });
    add("percentile_observer/" + an, true, [&, ax](fnv1a& h) {
      percentile_observer o(99.9, ax);
      o.update(x_obs.view(shape));
      h.params(o.compute(u8, scheme::asymmetric));
    });
    // The error is summed in float lanes inside each piece: the same for any thread
    // count, but the lane count follows the build's SIMD width.
    add("calibrate_mse/" + an, false,
        [&, ax](fnv1a& h) { h.params(calibrate_mse(x_obs.view(shape), s4, scheme::symmetric, ax)); });
  }

  // ---- requantization, integer GEMM, im2col ---------------------------------------------
  splitmix64 ir{7};
  constexpr std::size_t gn = 67, gk = 515, gout = 131;  // tails in every dimension
  xt::xtensor<std::uint8_t, 2> xu = xt::xtensor<std::uint8_t, 2>::from_shape({gn, gk});
  xt::xtensor<std::int8_t, 2> xs = xt::xtensor<std::int8_t, 2>::from_shape({gn, gk});
  xt::xtensor<std::int8_t, 2> w8 = xt::xtensor<std::int8_t, 2>::from_shape({gout, gk});
  xt::xtensor<std::int8_t, 2> w4 = xt::xtensor<std::int8_t, 2>::from_shape({gout, gk});
  for (auto& v : xu) v = static_cast<std::uint8_t>(ir.next() & 255);
  for (auto& v : xs) v = static_cast<std::int8_t>(ir.next() & 255);
  for (auto& v : w8) v = static_cast<std::int8_t>(static_cast<int>(ir.next() % 255) - 127);
  for (auto& v : w4) v = static_cast<std::int8_t>(static_cast<int>(ir.next() % 16) - 8);
  w8(0, 0) = -128;  // the full int8 range is allowed
  xt::xtensor<std::int32_t, 1> bias = xt::xtensor<std::int32_t, 1>::from_shape({gout});
  for (auto& v : bias) v = static_cast<std::int32_t>(ir.next() % 200001) - 100000;
  std::vector<double> mult(gout);
  for (std::size_t o = 0; o < gout; ++o) mult[o] = 1.0 / (3000.0 + 977.0 * static_cast<double>(o % 13));
  const std::size_t acc_n = 2004 * gout;  // 2004 rows of 131 channels: >= 2^18, parallel
  std::vector<std::int32_t> acc(acc_n);
  for (auto& v : acc) v = static_cast<std::int32_t>(ir.next());
  for (std::size_t i = 0; i < acc_n; i += 1009) acc[i] = (i & 1) ? std::numeric_limits<std::int32_t>::min()
                                                                 : std::numeric_limits<std::int32_t>::max();
  for (auto r : {requantization::fixed_point, requantization::float_scale}) {
    const std::string rn = r == requantization::fixed_point ? "fixed_point" : "float_scale";
    for (bool per_channel : {false, true}) {
      const std::vector<double> m = per_channel ? std::vector<double>(mult.begin(), mult.end())
                                                : std::vector<double>{1.0 / 4099.0};
      const std::string pn = per_channel ? "/channel" : "/tensor";
      add("requantize/" + rn + pn + "/int8_relu", true, [&, r, m](fnv1a& h) {
        const auto p = make_requantize_params(m, s8, -5, r, fused_activation::relu);
        h.container(requantize<std::int8_t>(acc, gout, p));
      });
      add("requantize/" + rn + pn + "/uint8_relu6", true, [&, r, m](fnv1a& h) {
        const auto p = make_requantize_params(m, u8, 17, r, fused_activation::relu6, 0.031);
        h.container(requantize<std::uint8_t>(acc, gout, p));
      });
      add("requantize_channel_major/" + rn + pn, true, [&, r, m](fnv1a& h) {
        const auto p = make_requantize_params(m, u8, 128, r);
        std::vector<std::uint8_t> out(acc_n);
        requantize_channel_major(acc.data(), gout, acc_n / gout, p, out.data());
        h.container(out);
      });
      add("integer_gemm/int8/" + rn + pn, true, [&, r, m](fnv1a& h) {
        const auto p = make_requantize_params(m, u8, 3, r);
        h.container(integer_gemm<std::uint8_t>(xu, 119, pack_weights(w8), bias, p));
        const auto q = make_requantize_params(m, s8, -1, r, fused_activation::relu);
        h.container(integer_gemm<std::int8_t>(xs, -3, pack_weights(w8), bias, q));
      });
      add("integer_gemm/int4/" + rn + pn, true, [&, r, m](fnv1a& h) {
        const auto p = make_requantize_params(m, u8, 250, r);
        h.container(integer_gemm<std::uint8_t>(xu, 0, pack_weights_int4(w4), bias, p));
      });
    }
  }
  add("integer_gemm_s32/int8", true, [&](fnv1a& h) {
    h.container(integer_gemm_s32(xu, 128, pack_weights(w8), bias));
    h.container(integer_gemm_s32(xs, 0, pack_weights(w8)));
  });
  add("integer_gemm_s32/int4", true, [&](fnv1a& h) {
    h.container(integer_gemm_s32(xu, 7, pack_weights_int4(w4), bias));
    h.container(integer_gemm_s32(xs, -2, pack_weights_int4(w4)));
  });
  add("pack_weights", true, [&](fnv1a& h) {
    const auto p8 = pack_weights(w8), p4 = pack_weights_int4(w4);
    h.container(p8.bytes);
    h.container(p8.row_sums);
    h.container(p4.bytes);
    h.container(p4.abs_row_sums);
  });
  add("quantize_bias", true, [&](fnv1a& h) {
    std::vector<float> b(gout);
    for (std::size_t o = 0; o < gout; ++o) b[o] = finite[o] * 3.0f;
    h.container(quantize_bias(b, 0.0123, scales(gout, 0.004f)));
  });

  conv2d_shape cg;
  cg.channels = 3, cg.height = 61, cg.width = 59, cg.kernel_h = 3, cg.kernel_w = 5;
  cg.stride_h = 2, cg.stride_w = 1, cg.pad_h = 1, cg.pad_w = 2, cg.dilation_h = 1, cg.dilation_w = 2;
  const std::size_t images = 9;
  add("im2col/float", true, [&](fnv1a& h) {
    xt::xtensor<float, 4> img = xt::xtensor<float, 4>::from_shape({images, cg.channels, cg.height, cg.width});
    std::copy(finite.begin(), finite.begin() + static_cast<std::ptrdiff_t>(img.size()), img.begin());
    const auto c = im2col(img, cg);
    h.container(c);
    h.container(col2im(c, cg));
  });
  add("im2col/uint8", true, [&](fnv1a& h) {
    xt::xtensor<std::uint8_t, 4> img =
        xt::xtensor<std::uint8_t, 4>::from_shape({images, cg.channels, cg.height, cg.width});
    splitmix64 rr{11};
    for (auto& v : img) v = static_cast<std::uint8_t>(rr.next());
    h.container(im2col(img, cg, 77));
  });

  // ---- k-means E-step (SIMD path: d < gemm_min_dim), Quant-Noise mask, kurtosis ---------
  for (std::size_t d : {1, 4, 9, 24}) {
    add("kmeans_assign/d" + std::to_string(d), true, [&, d](fnv1a& h) {
      const std::size_t pts = n / d, k = 37;
      auto points = xt::adapt(finite.data(), pts * d, xt::no_ownership(), std::array<std::size_t, 2>{pts, d});
      xt::xtensor<float, 2> c = xt::xtensor<float, 2>::from_shape({k, d});
      std::copy(finite.end() - static_cast<std::ptrdiff_t>(k * d), finite.end(), c.begin());
      c(3, 0) = c(4, 0);  // near-duplicates: ties go to the lower index
      h.container(kmeans_assign(points, c));
    });
  }
  add("quant_noise_mask", true, [&](fnv1a& h) {
    h.container(quant_noise_mask(noise_blocks::linear(1024, 1024, 4), 0.3f, 1234567));
  });
  add("central_moments", false, [&](fnv1a& h) {
    const moments m = central_moments(x_obs.view(shape));
    h.value(m.mean);
    h.value(m.m2);
    h.value(m.m3);
    h.value(m.m4);
  });

  // ---- run at 1 and 2 threads ----------------------------------------------------------
  int mismatches = 0;
  for (const auto& e : entries) {
    std::uint64_t d[2];
    for (int t = 0; t < 2; ++t) {
      quant::set_num_threads(t + 1);
      fnv1a h;
      e.run(h);
      d[t] = h.h;
    }
    if (d[0] != d[1]) {
      std::fprintf(stderr, "kernel_digest: %s differs between 1 and 2 threads (%s vs %s)\n", e.name.c_str(),
                   hex(d[0]).c_str(), hex(d[1]).c_str());
      ++mismatches;
    }
    std::printf("%s%s %s\n", e.across_builds ? "" : "# ", e.name.c_str(), hex(d[0]).c_str());
  }
  quant::set_num_threads(0);
  return mismatches ? 1 : 0;
}
