// quant/config.hpp — version and the few macros every header shares.
//
// QUANT_NO_SIMD: define it to make every eager kernel take its scalar path (the
// "scalar build"). Without it, kernels use the best xsimd architecture the compiler
// flags enable (xsimd::default_arch); with no SIMD flags on x86-64 that is SSE2.
// quant never defines XTENSOR_USE_XSIMD: that macro changes xtensor's allocator and
// must be chosen once by the application (defining it in a library is an ODR hazard).
#pragma once

#define QUANT_VERSION_MAJOR 0
#define QUANT_VERSION_MINOR 1
#define QUANT_VERSION_PATCH 0

#if defined(__GNUC__) || defined(__clang__)
#define QUANT_ALWAYS_INLINE inline __attribute__((always_inline))
#define QUANT_RESTRICT __restrict__
// After a lambda's parameter list: kernels pass their bodies as lambdas, which GCC
// otherwise may leave as a call per run of a few elements.
#define QUANT_INLINE_LAMBDA __attribute__((always_inline))
#else
#define QUANT_ALWAYS_INLINE inline
#define QUANT_RESTRICT
#define QUANT_INLINE_LAMBDA
#endif

namespace quant {
struct version_info {
  int major, minor, patch;
};
constexpr version_info version{QUANT_VERSION_MAJOR, QUANT_VERSION_MINOR, QUANT_VERSION_PATCH};
}  // namespace quant
