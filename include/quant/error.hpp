// quant/error.hpp — the exception family every entry point throws.
//
// All quant exceptions derive from quant::error (catch that to catch any of them) and
// from the matching standard exception (so `catch (const std::invalid_argument&)` also
// works):
//   quant::invalid_argument : a parameter is out of its domain (bits, scale, axis, ...)
//   quant::domain_error     : the data itself is unusable (NaN/inf where rejected)
//   quant::length_error     : sizes or shapes do not match
// Messages have one shape: "quant::<function>: <argument> = <value>: <requirement>".
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace quant {

class error {
 public:
  virtual ~error() = default;
  virtual const char* what() const noexcept = 0;
};

class invalid_argument : public std::invalid_argument, public error {
 public:
  using std::invalid_argument::invalid_argument;
  const char* what() const noexcept override { return std::invalid_argument::what(); }
};

class domain_error : public std::domain_error, public error {
 public:
  using std::domain_error::domain_error;
  const char* what() const noexcept override { return std::domain_error::what(); }
};

class length_error : public std::length_error, public error {
 public:
  using std::length_error::length_error;
  const char* what() const noexcept override { return std::length_error::what(); }
};

namespace detail {

template <class T>
void append_value(std::ostringstream& os, const T& value) {
  os << value;
}
inline void append_value(std::ostringstream& os, signed char v) { os << static_cast<int>(v); }
inline void append_value(std::ostringstream& os, unsigned char v) { os << static_cast<unsigned>(v); }

// Builds "quant::fn: arg = value: requirement" and throws it as Error.
template <class Error, class T>
[[noreturn]] void fail(const char* function, const char* argument, const T& value,
                       const std::string& requirement) {
  std::ostringstream os;
  os.precision(9);
  os << "quant::" << function << ": " << argument << " = ";
  append_value(os, value);
  os << ": " << requirement;
  throw Error(os.str());
}

// A shape as "[a, b, c]" for messages.
template <class S>
std::string shape_string(const S& shape) {
  std::ostringstream os;
  os << '[';
  bool first = true;
  for (auto d : shape) {
    if (!first) os << ", ";
    os << d;
    first = false;
  }
  os << ']';
  return os.str();
}

}  // namespace detail
}  // namespace quant
