// fuzz/fuzz_common.hpp — what the libFuzzer harnesses share: a scratch file per process for
// the readers that take paths, float pickers that reach the special values (NaN, +-inf,
// subnormals, ties, values at the grid ends) far more often than uniform bits would, and a
// bitwise comparison that names the first differing element.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

namespace fuzz {

// A file name private to this process (libFuzzer's -fork/-jobs workers are processes).
inline std::string scratch_path(const char* tag) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir && *dir ? dir : "/tmp") + "/quant-fuzz-" + tag + "-" + std::to_string(::getpid());
}

inline void write_file(const std::string& path, const std::uint8_t* data, std::size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

// What the current input decoded to, printed with a finding (harnesses fill it in).
inline std::string& context() {
  static std::string c;
  return c;
}

// Aborts with a message: libFuzzer records the input as a crash.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "FUZZ FINDING: %s\n  input: %s\n", what.c_str(), context().c_str());
  std::fflush(stderr);
  std::abort();
}
inline void require(bool ok, const std::string& what) {
  if (!ok) fail(what);
}

inline std::uint32_t bits_of(float v) {
  std::uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}
inline float float_of(std::uint32_t b) {
  float v;
  std::memcpy(&v, &b, 4);
  return v;
}

// Same bits, or both NaN (NaN payloads are not part of any contract here).
inline bool same_float(float a, float b) { return bits_of(a) == bits_of(b) || (a != a && b != b); }

template <class A, class B>
void require_same_floats(const A& got, const B& want, std::size_t n, const std::string& what) {
  for (std::size_t i = 0; i < n; ++i)
    if (!same_float(static_cast<float>(got[i]), static_cast<float>(want[i]))) {
      char buf[160];
      std::snprintf(buf, sizeof buf, " differs at %zu of %zu: got %a (0x%08x), want %a (0x%08x)", i, n,
                    static_cast<double>(got[i]), bits_of(got[i]), static_cast<double>(want[i]), bits_of(want[i]));
      fail(what + buf);
    }
}

template <class A, class B>
void require_same_ints(const A& got, const B& want, std::size_t n, const std::string& what) {
  for (std::size_t i = 0; i < n; ++i)
    if (static_cast<long long>(got[i]) != static_cast<long long>(want[i]))
      fail(what + " differs at " + std::to_string(i) + ": got " + std::to_string(static_cast<long long>(got[i])) +
           ", want " + std::to_string(static_cast<long long>(want[i])));
}

// A positive finite scale from one of several regimes: ordinary, tiny (down to the smallest
// subnormal), huge (up to FLT_MAX), powers of two, or arbitrary bits.
inline float pick_scale(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 5)) {
    case 0: return std::ldexp(1.0f, in.ConsumeIntegralInRange<int>(-149, 127));
    case 1: return in.ConsumeFloatingPointInRange<float>(1e-4f, 10.0f);
    case 2: return float_of(in.ConsumeIntegralInRange<std::uint32_t>(1, 0x007fffffu));  // subnormal
    case 3: return float_of(in.ConsumeIntegralInRange<std::uint32_t>(0x7e000000u, 0x7f7fffffu));  // huge
    case 4: return in.ConsumeFloatingPointInRange<float>(0.001f, 0.1f);
    default: {
      float s = float_of(in.ConsumeIntegral<std::uint32_t>() & 0x7fffffffu);
      if (!(std::isfinite(s) && s > 0.0f)) s = 0.0625f;
      return s;
    }
  }
}

// An input value for a quantizer with scale s and zero point z on [qmin, qmax]: grid
// points, ties (k + 1/2) s, the values next to them, the grid ends and beyond, specials,
// arbitrary bits.
inline float pick_value(FuzzedDataProvider& in, float s, float z, float qmin, float qmax) {
  const float k = static_cast<float>(in.ConsumeIntegralInRange<int>(static_cast<int>(qmin) - 3, static_cast<int>(qmax) + 3));
  switch (in.ConsumeIntegralInRange<int>(0, 9)) {
    case 0: return (k - z) * s;
    case 1: return (k - z + 0.5f) * s;
    case 2: return std::nextafter((k - z + 0.5f) * s, 0.0f);
    case 3: return std::nextafter((k - z + 0.5f) * s, std::numeric_limits<float>::infinity());
    case 4: return (k + 0.5f) / (1.0f / s) - z * s;
    case 5: {
      static const float specials[] = {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                                       std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                                       0.0f, -0.0f, std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                                       std::numeric_limits<float>::denorm_min(), 0.5f, -0.5f, 1.5f, -2.5f};
      return specials[in.ConsumeIntegralInRange<std::size_t>(0, sizeof specials / sizeof specials[0] - 1)];
    }
    case 6: return float_of(in.ConsumeIntegral<std::uint32_t>());
    case 7: return in.ConsumeFloatingPointInRange<float>(-4.0f, 4.0f) * s * (qmax - qmin);
    default: return static_cast<float>(in.ConsumeIntegralInRange<int>(-70000, 70000)) * 0.5f * s;
  }
}

}  // namespace fuzz
