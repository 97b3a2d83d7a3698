// quant/reference/lsq.hpp — quant::ref for LSQ / LSQ+ (docs/qat.md): plain loops
// over flat row-major buffers, two of them.
//
//  * ref::lsq — the float arithmetic of the eager kernels, element by element (bit-exact
//    y and dx), rounding through std::nearbyint; parameter gradients summed in double in
//    element order, together with g * sum|term| so tests can bound the kernels'
//    compensated sums.
//  * ref::lsq_exact — the formulas in double (u = (x - beta) / s with a true division),
//    the yardstick for finite-difference checks and for the float kernels away from
//    rounding boundaries.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../lsq.hpp"

namespace quant {
namespace ref {

// Index of the scale element e uses (0 per tensor).
inline std::size_t lsq_param_index(const std::vector<std::size_t>& shape, const lsq_params& p, std::size_t e) {
  if (!p.channel_axis) return 0;
  const std::size_t ax = detail::wrap_axis(*p.channel_axis, shape.size(), "ref::lsq");
  std::size_t inner = 1;
  for (std::size_t d = ax + 1; d < shape.size(); ++d) inner *= shape[d];
  return (e / inner) % shape[ax];
}

inline float lsq_clamp(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

struct lsq_reference {
  std::vector<float> y, dx;
  std::vector<double> dscale, doffset;          // g applied; doffset empty without offsets
  std::vector<double> dscale_abs, doffset_abs;  // g * sum |term|: scale of the rounding error
};

inline lsq_reference lsq(const std::vector<float>& x, const std::vector<float>& dy,
                         const std::vector<std::size_t>& shape, const lsq_params& p) {
  const std::size_t np = p.scale.size();
  const float qmin = static_cast<float>(p.grid.qmin()), qmax = static_cast<float>(p.grid.qmax());
  const bool torch = p.convention == lsq_convention::pytorch;
  lsq_reference r;
  r.y.resize(x.size());
  r.dx.resize(x.size());
  std::vector<double> sds(np, 0.0), sout(np, 0.0), ads(np, 0.0), aout(np, 0.0);
  for (std::size_t e = 0; e < x.size(); ++e) {
    const std::size_t j = lsq_param_index(shape, p, e);
    const float s = p.scale[j], inv = 1.0f / s;
    const float off = p.offset.empty() ? 0.0f : p.offset[j];
    float ds_term = 0.0f, out_term = 0.0f;
    if (!torch) {
      const float u = (x[e] - off) * inv;
      const bool inside = u >= qmin && u <= qmax;
      const float q = std::nearbyint(lsq_clamp(u, qmin, qmax));
      r.y[e] = q * s + off;
      r.dx[e] = dy[e] * (inside ? 1.0f : 0.0f);
      ds_term = inside ? dy[e] * (q - u) : dy[e] * q;
      out_term = inside ? 0.0f : dy[e];
    } else {
      const float zf = lsq_clamp(std::nearbyint(off), qmin, qmax);
      const float zb = p.channel_axis ? zf : std::trunc(lsq_clamp(off + 0.5f, qmin, qmax));
      const float qf = lsq_clamp(std::nearbyint(x[e] * inv) + zf, qmin, qmax);
      r.y[e] = (qf - zf) * s;
      const float xq = std::nearbyint(std::fma(x[e], inv, zb));  // one rounding, as PyTorch
      const bool inside = xq >= qmin && xq <= qmax;
      const float q = lsq_clamp(xq, qmin, qmax);
      r.dx[e] = dy[e] * (inside ? 1.0f : 0.0f);
      ds_term = inside ? (dy[e] * std::fma(q - zb, s, -x[e])) * inv : dy[e] * (q - zb);
      out_term = inside ? 0.0f : dy[e];
    }
    sds[j] += ds_term;
    ads[j] += std::fabs(ds_term);
    sout[j] += out_term;
    aout[j] += std::fabs(out_term);
  }
  const double g = lsq_gradient_scale(p, x.size());
  r.dscale.resize(np);
  r.dscale_abs.resize(np);
  for (std::size_t j = 0; j < np; ++j) {
    r.dscale[j] = g * sds[j];
    r.dscale_abs[j] = g * ads[j];
  }
  if (!p.offset.empty()) {
    r.doffset.resize(np);
    r.doffset_abs.resize(np);
    for (std::size_t j = 0; j < np; ++j) {
      const double f = torch ? -static_cast<double>(p.scale[j]) * g : g;
      r.doffset[j] = f * sout[j];
      r.doffset_abs[j] = std::fabs(f) * aout[j];
    }
  }
  return r;
}

struct lsq_exact_result {
  std::vector<double> y, dx, dscale, doffset;  // doffset has one entry per scale, zeros for LSQ
};

// The formulas of docs/qat.md in double (true division, no float reciprocal).
// Paper: u = (x - beta) / s; PyTorch: xq = round(z_b + x / s), offsets as zero points
// rounded as in lsq.hpp.
inline lsq_exact_result lsq_exact(const std::vector<double>& x, const std::vector<double>& dy,
                                  const std::vector<std::size_t>& shape, const lsq_params& p,
                                  const std::vector<double>& scale, const std::vector<double>& offset) {
  const std::size_t np = scale.size();
  const double qmin = p.grid.qmin(), qmax = p.grid.qmax();
  const bool torch = p.convention == lsq_convention::pytorch;
  lsq_exact_result r;
  r.y.resize(x.size());
  r.dx.resize(x.size());
  r.dscale.assign(np, 0.0);
  r.doffset.assign(np, 0.0);
  auto clamp = [](double v, double lo, double hi) { return v < lo ? lo : (v > hi ? hi : v); };
  for (std::size_t e = 0; e < x.size(); ++e) {
    const std::size_t j = lsq_param_index(shape, p, e);
    const double s = scale[j], off = offset.empty() ? 0.0 : offset[j];
    if (!torch) {
      const double u = (x[e] - off) / s;
      const bool inside = u >= qmin && u <= qmax;
      const double q = std::nearbyint(clamp(u, qmin, qmax));
      r.y[e] = q * s + off;
      r.dx[e] = inside ? dy[e] : 0.0;
      r.dscale[j] += dy[e] * (inside ? q - u : q);
      r.doffset[j] += inside ? 0.0 : dy[e];
    } else {
      const double zf = clamp(std::nearbyint(off), qmin, qmax);
      const double zb = p.channel_axis ? zf : std::trunc(clamp(off + 0.5, qmin, qmax));
      r.y[e] = (clamp(std::nearbyint(x[e] / s) + zf, qmin, qmax) - zf) * s;
      const double xq = std::nearbyint(zb + x[e] / s);
      const bool inside = xq >= qmin && xq <= qmax;
      const double q = clamp(xq, qmin, qmax);
      r.dx[e] = inside ? dy[e] : 0.0;
      r.dscale[j] += inside ? dy[e] * ((q - zb) * s - x[e]) / s : dy[e] * (q - zb);
      r.doffset[j] += inside ? 0.0 : -dy[e] * s;
    }
  }
  const double g = lsq_gradient_scale(p, x.size());
  for (std::size_t j = 0; j < np; ++j) {
    r.dscale[j] *= g;
    r.doffset[j] *= g;
  }
  return r;
}

}  // namespace ref
}  // namespace quant
