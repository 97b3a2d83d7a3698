// quant/detail/bounded_integer.hpp — uniform integers in [0, n) from 64 random bits.
//
//   multiply_high(a, b) = floor(a b / 2^64)            (the high word of the 128-bit product)
//   uniform_below(bits, n) = multiply_high(bits, n)    in [0, n) for n >= 1
//
// uniform_below is Lemire's multiply-shift (D. Lemire, 2019, "Fast Random Integer Generation
// in an Interval"): for uniform 64-bit `bits` each value in [0, n) has probability within
// 2^-64 of 1/n. The result is a pure function of (bits, n), the same on every platform:
// compilers with a 128-bit integer type use it, others the exact 32-bit-limb product
// (multiply_high_portable, also used by the tests to check the fast form).
#pragma once

#include <cstdint>

namespace quant {
namespace detail {

// floor(a b / 2^64) with 64-bit arithmetic only: a = a1 2^32 + a0, b = b1 2^32 + b0.
constexpr std::uint64_t multiply_high_portable(std::uint64_t a, std::uint64_t b) noexcept {
  const std::uint64_t a0 = a & 0xffffffffu, a1 = a >> 32, b0 = b & 0xffffffffu, b1 = b >> 32;
  const std::uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
  // The middle column: the carry out of the low word plus both cross products' low halves
  // (< 3 * 2^32, no overflow).
  const std::uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
  return p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}

constexpr std::uint64_t multiply_high(std::uint64_t a, std::uint64_t b) noexcept {
#if defined(__SIZEOF_INT128__)
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#else
  return multiply_high_portable(a, b);
#endif
}

// A uniform integer in [0, n) from 64 uniform bits (n >= 1).
constexpr std::uint64_t uniform_below(std::uint64_t bits, std::uint64_t n) noexcept { return multiply_high(bits, n); }

}  // namespace detail
}  // namespace quant
