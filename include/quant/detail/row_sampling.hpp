// quant/detail/row_sampling.hpp — seeded mini-batches of calibration rows.
//
//   counter_bits64(seed, i)         64 uniform bits for counter i of a stream (two lanes of
//                                   detail/counter_random.hpp's hash: 2i and 2i + 1)
//   counter_index(seed, i, n)       uniform_below(counter_bits64(seed, i), n), in [0, n)
//   sample_rows(perm, B, seed, d)   draw d: B distinct rows into perm[0, B) by a partial
//                                   Fisher-Yates shuffle continued from draw d - 1
//   gather_rows(src, rows, B, dst)  dst[j, :] = src[rows[j], :]
//
// Every draw is a pure function of (seed, draw index, the previous permutation), so
// mini-batches are the same for any thread count. Used by the AdaRound layer optimizer and
// block reconstruction.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "bounded_integer.hpp"
#include "counter_random.hpp"
#include "parallel.hpp"

namespace quant {
namespace detail {

// 64 uniform bits for counter `index` of a stream (two lanes of the counter hash).
inline std::uint64_t counter_bits64(std::uint64_t seed, std::uint64_t index) noexcept {
  auto bits32 = [seed](std::uint64_t i) {
    const counter_key key = counter_key::make(seed, i);
    return static_cast<std::uint64_t>(mix32(mix32(static_cast<std::uint32_t>(i) ^ key.k1) ^ key.k2));
  };
  return (bits32(2 * index) << 32) | bits32(2 * index + 1);
}

// A uniform integer in [0, n) (multiply-high: bias below 2^-64 * n).
inline std::size_t counter_index(std::uint64_t seed, std::uint64_t index, std::size_t n) noexcept {
  return static_cast<std::size_t>(uniform_below(counter_bits64(seed, index), n));
}

// Draws `batch` distinct rows of [0, perm.size()) into perm[0, batch): a partial
// Fisher-Yates shuffle continued from the previous draw (each draw is a uniform subset).
inline void sample_rows(std::vector<std::size_t>& perm, std::size_t batch, std::uint64_t seed,
                        std::uint64_t draw) noexcept {
  const std::size_t n = perm.size();
  for (std::size_t j = 0; j < batch; ++j) {
    const std::size_t r = j + counter_index(seed, draw * batch + j, n - j);
    std::swap(perm[j], perm[r]);
  }
}

// dst[j, :] = src[rows[j], :] (dst preallocated with `count` rows; a copy, so threading
// it over fixed row blocks changes nothing but the time).
inline void gather_rows(const xt::xtensor<float, 2>& src, const std::size_t* rows, std::size_t count,
                        xt::xtensor<float, 2>& dst) {
  const std::size_t w = src.shape()[1];
  constexpr std::size_t block = 16;
  parallel_for((count + block - 1) / block, count * w, [&](std::size_t t) {
    const std::size_t end = std::min(count, (t + 1) * block);
    for (std::size_t j = t * block; j < end; ++j) std::copy_n(src.data() + rows[j] * w, w, dst.data() + j * w);
  });
}

}  // namespace detail
}  // namespace quant
