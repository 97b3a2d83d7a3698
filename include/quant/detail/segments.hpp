// quant/detail/segments.hpp — how a per-tensor / per-channel / per-group parameter set
// lines up with a contiguous row-major tensor.
//
// The flat index e of a tensor decomposes as (o, c, i) with sizes (outer, C, inner)
// around the quantization axis. Kernels want long contiguous runs, so the plan cuts the
// tensor into equal-length segments that either share one parameter (a "scalar" run) or
// carry a parameter table parallel to the run (a "vector" run):
//   per tensor                 1 segment of n, scalar
//   per channel, inner >= 64   outer*C segments of inner, scalar parameter c
//   per channel, inner < 64    outer segments of C*inner, vector (table expanded to C*inner)
//   per group, inner == 1      n/g segments of g, scalar parameter k
//   per group, inner > 1       outer*C segments of inner, vector table row
// Long segments are split into pieces of at most `piece` elements for threading.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

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

  // Parameter tables, one entry per parameter (or per expanded position for channel_vector).
  std::vector<float> scale, inv_scale, zero_point;

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
};

constexpr std::size_t channel_vector_threshold = 64;

template <class Shape>
segment_plan make_segment_plan(const Shape& shape, const qparams& p, const char* function) {
  segment_plan plan;
  const std::size_t axis = p.check_shape(shape, function);
  std::size_t n = 1;
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  plan.n = n;
  const std::size_t np = p.size();
  auto fill_tables = [&](std::size_t expand) {
    plan.scale.resize(np * expand);
    plan.inv_scale.resize(np * expand);
    plan.zero_point.resize(np * expand);
    for (std::size_t j = 0; j < np; ++j) {
      // PyTorch: inv_scale = 1.0f / scale, computed once in float (ALGORITHMS.md §1).
      const float s = p.scales()[j];
      const float inv = 1.0f / s;
      const float z = static_cast<float>(p.zero_points()[j]);
      for (std::size_t r = 0; r < expand; ++r) {
        plan.scale[j * expand + r] = s;
        plan.inv_scale[j * expand + r] = inv;
        plan.zero_point[j * expand + r] = z;
      }
    }
  };
  if (p.granularity() == granularity::per_tensor || shape.size() == 0) {
    plan.k = segment_plan::kind::per_tensor;
    plan.count = n ? 1 : 0;
    plan.length = n;
    fill_tables(1);
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
      fill_tables(1);
    } else {
      plan.k = segment_plan::kind::channel_vector;
      plan.vector_params = true;
      plan.count = outer;
      plan.length = plan.channels * inner;
      fill_tables(inner);
    }
  } else {
    plan.group = p.group_size();
    fill_tables(1);
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

// Number of pieces for_each_piece cuts the plan into.
inline std::size_t piece_count(const segment_plan& plan, std::size_t piece) noexcept {
  if (plan.count == 0 || plan.length == 0) return 0;
  return plan.count * ((plan.length + piece - 1) / piece);
}

// Runs body(piece_index, elem_begin, len, param_offset) over the plan, splitting long
// segments into pieces of at most `piece` elements, in parallel when large. Piece
// boundaries depend on the plan only (never on the thread count).
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
