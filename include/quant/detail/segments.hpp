// quant/detail/segments.hpp — how a per-tensor / per-channel / per-group parameter set
// lines up with a contiguous row-major tensor.
//
// The flat index e of a tensor decomposes as (o, c, i) with sizes (outer, C, inner)
// around the quantization axis. Kernels want long contiguous runs, so the plan cuts the
// tensor into equal-length segments that either share one parameter (a "scalar" run) or
// carry a parameter table parallel to the run (a "vector" run):
//   per tensor                     1 segment of n, scalar
//   per channel, inner >= 16       outer*C segments of inner, scalar parameter c
//   per channel, inner < 16        outer segments of C*inner, vector (table expanded to C*inner)
//   per group, inner == 1          n/g segments of g, scalar parameter k
//   per group, inner > 1           outer*C segments of inner, vector table row
// 16 is the widest pack (AVX-512 floats): a scalar run then fills at least one pack, and
// an expanded table stays below 16*C entries.
//
// Tables hold, per parameter, the scale s, the float reciprocal 1/s (PyTorch computes it
// once, in float), the zero point z and the bounds qmin - z, qmax - z of the clamp-first
// form (detail/affine_run.hpp) as floats. Up to
// `inline_params` parameters live inside the plan, so a per-tensor call, or a per-channel
// call with up to 256 channels, allocates nothing.
//
// Two drivers walk a plan:
//   for_each_chunk + for_each_run  fixed chunks of the flat index range (the unit of
//                                  threading), each walked as runs of one parameter row;
//                                  the elementwise kernels use these.
//   for_each_piece                 pieces that never straddle a segment, each with an
//                                  index, for kernels that keep one partial per piece.
// Chunk and piece boundaries depend on the plan only, never on the thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../config.hpp"
#include "../qparams.hpp"
#include "parallel.hpp"

namespace quant {
namespace detail {

struct segment_plan {
  enum class kind { per_tensor, channel_scalar, channel_vector, group_scalar, group_vector };
  kind k = kind::per_tensor;
  std::size_t n = 0, outer = 1, channels = 1, inner = 1, group = 1;
  std::size_t count = 0;   // segments
  std::size_t length = 0;  // elements per segment
  bool vector_params = false;

  static constexpr std::size_t inline_params = 256;
  static constexpr std::size_t table_count = 5;

  segment_plan() = default;
  segment_plan(const segment_plan& o) { *this = o; }
  segment_plan& operator=(const segment_plan& o) {
    if (this == &o) return *this;
    k = o.k, n = o.n, outer = o.outer, channels = o.channels, inner = o.inner, group = o.group;
    count = o.count, length = o.length, vector_params = o.vector_params, qmin = o.qmin, qmax = o.qmax;
    heap_ = o.heap_;
    params_ = o.params_;
    if (heap_.empty())
      for (std::size_t j = 0; j < table_count * params_; ++j) inline_[j] = o.inline_[j];
    return *this;
  }

  // Parameter tables (one entry per parameter, or per expanded position for channel_vector).
  const float* scale() const noexcept { return table(0); }
  const float* inv_scale() const noexcept { return table(1); }
  const float* zero_point() const noexcept { return table(2); }
  const float* lo() const noexcept { return table(3); }  // qmin - z
  const float* hi() const noexcept { return table(4); }  // qmax - z
  float qmin = 0.0f, qmax = 0.0f;                         // the grid
  std::size_t params() const noexcept { return params_; }

  std::size_t element_offset(std::size_t seg) const noexcept { return seg * length; }
  // Scalar runs: index into the tables. Vector runs: offset of the table row.
  std::size_t param_offset(std::size_t seg) const noexcept {
    switch (k) {
      case kind::per_tensor: return 0;
      case kind::channel_scalar: return seg % channels;
      case kind::channel_vector: return 0;
      case kind::group_scalar: return seg;
      case kind::group_vector: return ((seg / channels) * (channels / group) + (seg % channels) / group) * inner;
    }
    return 0;
  }

  // Sizes the tables for `np` parameters; returns their base (s, 1/s, z, lo, hi at
  // multiples of np).
  float* reserve_tables(std::size_t np) {
    params_ = np;
    if (np <= inline_params) {
      heap_.clear();
      return inline_;
    }
    heap_.assign(table_count * np, 0.0f);
    return heap_.data();
  }

 private:
  const float* table(std::size_t t) const noexcept {
    return (heap_.empty() ? inline_ : heap_.data()) + t * params_;
  }
  std::size_t params_ = 0;
  std::vector<float> heap_;
  float inline_[table_count * inline_params];
};

constexpr std::size_t channel_vector_threshold = 16;

// Fills the tables from p, each parameter repeated `expand` times. Plain loops over
// arrays so the compiler vectorizes them (the reciprocal is an exact IEEE division).
inline void fill_segment_tables(segment_plan& plan, const qparams& p, std::size_t expand) {
  const std::size_t np = p.size();
  const std::size_t m = np * expand;
  float* base = plan.reserve_tables(m);
  float* s = base;
  float* inv = base + m;
  float* z = base + 2 * m;
  float* lo = base + 3 * m;
  float* hi = base + 4 * m;
  const float* ps = p.scales().data();
  const std::int32_t* pz = p.zero_points().data();
  const float qmin = static_cast<float>(p.qmin()), qmax = static_cast<float>(p.qmax());
  plan.qmin = qmin;
  plan.qmax = qmax;
  if (expand == 1) {
    for (std::size_t j = 0; j < np; ++j) s[j] = ps[j];
    for (std::size_t j = 0; j < np; ++j) inv[j] = 1.0f / s[j];  // PyTorch: 1.0f / scale, in float
    for (std::size_t j = 0; j < np; ++j) z[j] = static_cast<float>(pz[j]);
  } else {
    for (std::size_t j = 0; j < np; ++j) {
      const float sj = ps[j], ij = 1.0f / ps[j], zj = static_cast<float>(pz[j]);
      for (std::size_t r = 0; r < expand; ++r) {
        s[j * expand + r] = sj;
        inv[j * expand + r] = ij;
        z[j * expand + r] = zj;
      }
    }
  }
  for (std::size_t j = 0; j < m; ++j) lo[j] = qmin - z[j];  // exact: small integers
  for (std::size_t j = 0; j < m; ++j) hi[j] = qmax - z[j];
}

template <class Shape>
segment_plan make_segment_plan(const Shape& shape, const qparams& p, const char* function) {
  segment_plan plan;
  const std::size_t axis = p.check_shape(shape, function);
  std::size_t n = 1;
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  plan.n = n;
  if (p.granularity() == granularity::per_tensor || shape.size() == 0) {
    plan.k = segment_plan::kind::per_tensor;
    plan.count = n ? 1 : 0;
    plan.length = n;
    fill_segment_tables(plan, p, 1);
    return plan;
  }
  std::size_t outer = 1, inner = 1;
  for (std::size_t d = 0; d < axis; ++d) outer *= static_cast<std::size_t>(shape[d]);
  for (std::size_t d = axis + 1; d < shape.size(); ++d) inner *= static_cast<std::size_t>(shape[d]);
  plan.outer = outer;
  plan.channels = static_cast<std::size_t>(shape[axis]);
  plan.inner = inner;
  if (p.granularity() == granularity::per_channel) {
    if (inner >= channel_vector_threshold) {
      plan.k = segment_plan::kind::channel_scalar;
      plan.count = outer * plan.channels;
      plan.length = inner;
      fill_segment_tables(plan, p, 1);
    } else {
      plan.k = segment_plan::kind::channel_vector;
      plan.vector_params = true;
      plan.count = outer;
      plan.length = plan.channels * inner;
      fill_segment_tables(plan, p, inner);
    }
  } else {
    plan.group = p.group_size();
    fill_segment_tables(plan, p, 1);
    if (inner == 1) {
      plan.k = segment_plan::kind::group_scalar;
      plan.count = n / plan.group;
      plan.length = plan.group;
    } else {
      plan.k = segment_plan::kind::group_vector;
      plan.vector_params = true;
      plan.count = outer * plan.channels;
      plan.length = inner;
    }
  }
  if (n == 0) plan.count = 0;
  return plan;
}

// ---- chunks and runs ----------------------------------------------------------------

// Elements per chunk handed to one thread: 64 KiB of floats in, 64 KiB out.
constexpr std::size_t chunk_elements = std::size_t(1) << 14;

inline std::size_t chunk_count(const segment_plan& plan) noexcept {
  return (plan.n + chunk_elements - 1) / chunk_elements;
}

// Calls chunk(begin, end) over [0, n) in chunks of chunk_elements, in parallel when large.
template <class Chunk>
void for_each_chunk(const segment_plan& plan, Chunk&& chunk) {
  const std::size_t n = plan.n;
  if (n == 0 || plan.count == 0) return;
  parallel_for(chunk_count(plan), n, [&](std::size_t t) {
    const std::size_t b = t * chunk_elements;
    chunk(b, b + chunk_elements < n ? b + chunk_elements : n);
  });
}

// Calls run(elem_begin, len, param_offset) for the runs of [begin, end): maximal stretches
// inside one segment. A cursor steps over segments (no division per run), and `run` has a
// single call site, so a kernel body is inlined once per table mode, not once per kind.
template <class Run>
QUANT_ALWAYS_INLINE void for_each_run(const segment_plan& plan, std::size_t begin, std::size_t end, Run&& run) {
  using kind = segment_plan::kind;
  if (begin >= end) return;
  const kind k = plan.k;
  const std::size_t L = plan.length, C = plan.channels, g = plan.group, inner = plan.inner;
  std::size_t seg = begin / L, off = begin - seg * L;
  std::size_t c = seg % C;                           // channel of the segment
  std::size_t row = (seg / C) * (C / g) + c / g;     // group_vector: parameter row
  std::size_t in_group = c % g;
  while (begin < end) {
    const std::size_t len = (L - off < end - begin) ? L - off : end - begin;
    std::size_t po = 0;
    switch (k) {
      case kind::per_tensor: po = 0; break;
      case kind::channel_scalar: po = c; break;
      case kind::channel_vector: po = off; break;  // one expanded table row per segment
      case kind::group_scalar: po = seg; break;
      case kind::group_vector: po = row * inner + off; break;
    }
    run(begin, len, po);
    begin += len;
    off = 0;
    ++seg;
    if (++c == C) c = 0;
    if (++in_group == g) in_group = 0, ++row;  // the next group, or the next outer row's first
  }
}

// ---- pieces (one index each, for per-piece partials) ---------------------------------

// Number of pieces for_each_piece cuts the plan into.
inline std::size_t piece_count(const segment_plan& plan, std::size_t piece) noexcept {
  if (plan.count == 0 || plan.length == 0) return 0;
  return plan.count * ((plan.length + piece - 1) / piece);
}

// Runs body(piece_index, elem_begin, len, param_offset) over the plan, splitting long
// segments into pieces of at most `piece` elements, in parallel when large.
template <class Body>
void for_each_piece(const segment_plan& plan, std::size_t piece, Body&& body) {
  const std::size_t tasks = piece_count(plan, piece);
  if (tasks == 0) return;
  const std::size_t per_seg = (plan.length + piece - 1) / piece;
  parallel_for(tasks, plan.n, [&](std::size_t t) {
    const std::size_t seg = t / per_seg, part = t % per_seg;
    const std::size_t b = part * piece;
    const std::size_t len = (b + piece < plan.length ? piece : plan.length - b);
    const std::size_t po = plan.param_offset(seg) + (plan.vector_params ? b : 0);
    body(t, plan.element_offset(seg) + b, len, po);
  });
}

}  // namespace detail
}  // namespace quant
