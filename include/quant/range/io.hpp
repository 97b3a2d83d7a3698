// quant/range/io.hpp — the small versioned text format observers save and load.
//
//   quant-observer <kind> <version>
//   <key> <count> <value> <value> ...        (one line per field, fixed order)
//   end
// Floats are written with max_digits10 significant digits (9 for float, 17 for double),
// which read back to the identical value; integers as decimal. A reader checks the kind, the version, every
// key and count, and throws quant::invalid_argument naming the loader on any mismatch. A
// count is checked against the values actually present, never allocated up front.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "../error.hpp"

namespace quant {
namespace detail {

constexpr int observer_format_version = 1;

inline void write_header(std::ostream& os, const char* kind) {
  os << "quant-observer " << kind << ' ' << observer_format_version << '\n';
}

template <class T>
void write_field(std::ostream& os, const char* key, const std::vector<T>& values) {
  os << key << ' ' << values.size();
  const auto old = os.precision(std::numeric_limits<T>::max_digits10 > 0 ? std::numeric_limits<T>::max_digits10 : 6);
  for (const auto& v : values) os << ' ' << v;
  os.precision(old);
  os << '\n';
}

template <class T>
void write_scalar(std::ostream& os, const char* key, const T& value) {
  write_field(os, key, std::vector<T>{value});
}

inline void write_axis(std::ostream& os, const std::optional<std::ptrdiff_t>& axis) {
  std::vector<long long> v;
  if (axis) v.push_back(static_cast<long long>(*axis));
  write_field(os, "axis", v);
}

inline void write_end(std::ostream& os) { os << "end\n"; }

struct observer_reader {
  std::istream& is;
  const char* function;

  [[noreturn]] void bad(const std::string& what, const std::string& requirement) const {
    fail<invalid_argument>(function, "stream", what, requirement);
  }

  void header(const char* kind) {
    std::string magic, k;
    int version = 0;
    if (!(is >> magic >> k >> version) || magic != "quant-observer") bad("header", "not a quant observer stream");
    if (k != kind) bad(k, std::string("expected a '") + kind + "' observer");
    if (version != observer_format_version)
      bad("version " + std::to_string(version), "unsupported format version (this build reads " +
                                                   std::to_string(observer_format_version) + ")");
  }

  template <class T>
  std::vector<T> field(const char* key, std::optional<std::size_t> expected_count = std::nullopt) {
    std::string k;
    std::size_t count = 0;
    if (!(is >> k >> count) || k != key) bad(k.empty() ? "<eof>" : k, std::string("expected field '") + key + "'");
    if (expected_count && count != *expected_count)
      bad(std::string(key) + " count " + std::to_string(count), "expected " + std::to_string(*expected_count));
    if (count > (std::size_t(1) << 40)) bad(std::string(key) + " count", "implausibly large");
    // The count is not trusted before the values are there: grow with what is read.
    std::vector<T> v;
    v.reserve(std::min<std::size_t>(count, 4096));
    for (std::size_t i = 0; i < count; ++i) {
      T x{};
      if (!(is >> x)) bad(key, "truncated or malformed value");
      v.push_back(x);
    }
    return v;
  }

  template <class T>
  T scalar(const char* key) {
    return field<T>(key, 1)[0];
  }

  std::optional<std::ptrdiff_t> axis() {
    const auto v = field<long long>("axis");
    if (v.size() > 1) bad("axis", "at most one axis");
    if (v.empty()) return std::nullopt;
    return static_cast<std::ptrdiff_t>(v[0]);
  }

  void end() {
    std::string k;
    if (!(is >> k) || k != "end") bad(k.empty() ? "<eof>" : k, "expected 'end'");
  }
};

}  // namespace detail
}  // namespace quant
