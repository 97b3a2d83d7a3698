// quant/detail/counter_random.hpp — counter-based uniform numbers.
//
// u(seed, i) in [0, 1) is a pure function of the seed and the element index i, so a
// random primitive gives the same result whatever the thread count, chunking or SIMD
// width: each element draws "its own" number. The mixer is a 32-bit integer hash
// (xor-shift-multiply rounds with the constants of Wellons' "lowbias32", a public
// well-tested choice); the 64-bit index is split into a per-2^32-block key and a lane
// counter. 24 random bits give every float in {k * 2^-24} with equal probability.
#pragma once

#include <cstdint>

#include "../simd/arch.hpp"

namespace quant {
namespace detail {

template <class U>
QUANT_ALWAYS_INLINE U mix32(U x) noexcept {
  x ^= (x >> 16);
  x *= U(0x21f0aaadu);
  x ^= (x >> 15);
  x *= U(0x735a2d97u);
  x ^= (x >> 15);
  return x;
}

// Keys of the block of 2^32 indices that contains `index`.
struct counter_key {
  std::uint32_t k1, k2;
  static counter_key make(std::uint64_t seed, std::uint64_t index) noexcept {
    const std::uint32_t hi = static_cast<std::uint32_t>(index >> 32);
    const std::uint32_t s_lo = static_cast<std::uint32_t>(seed);
    const std::uint32_t s_hi = static_cast<std::uint32_t>(seed >> 32);
    const std::uint32_t k1 = mix32(s_lo ^ mix32(s_hi + 0x9e3779b9u * (hi + 1u)));
    const std::uint32_t k2 = mix32(k1 + 0x85ebca6bu);
    return {k1, k2};
  }
};

// Scalar: the uniform number of element `index`.
inline float counter_uniform(std::uint64_t seed, std::uint64_t index) noexcept {
  const counter_key key = counter_key::make(seed, index);
  const std::uint32_t lo = static_cast<std::uint32_t>(index);
  const std::uint32_t h = mix32(mix32(lo ^ key.k1) ^ key.k2);
  return static_cast<float>(static_cast<std::int32_t>(h >> 8)) * (1.0f / 16777216.0f);
}

// A pack of uniforms for indices first, first+1, ... (first..first+lanes-1 must stay in
// one 2^32 block; kernels split their loops at block boundaries).
template <class Arch>
QUANT_ALWAYS_INLINE simd::pack<float, Arch> counter_uniform_pack(const counter_key& key,
                                                                 std::uint32_t first_lo) noexcept {
  if constexpr (std::is_same<Arch, simd::scalar>::value) {
    const std::uint32_t h = mix32(mix32(first_lo ^ key.k1) ^ key.k2);
    return static_cast<float>(static_cast<std::int32_t>(h >> 8)) * (1.0f / 16777216.0f);
  } else {
    using ubatch = xsimd::batch<std::uint32_t, Arch>;
    using ibatch = xsimd::batch<std::int32_t, Arch>;
    alignas(64) std::uint32_t idx[ubatch::size];
    for (std::size_t j = 0; j < ubatch::size; ++j) idx[j] = first_lo + static_cast<std::uint32_t>(j);
    ubatch lo = ubatch::load_aligned(idx);
    ubatch h = mix32(mix32(lo ^ ubatch(key.k1)) ^ ubatch(key.k2));
    ibatch top = xsimd::bitwise_cast<ibatch>(h >> 8);
    return xsimd::batch_cast<float>(top) * xsimd::batch<float, Arch>(1.0f / 16777216.0f);
  }
}

}  // namespace detail
}  // namespace quant
