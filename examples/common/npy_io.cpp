// examples/common/npy_io.cpp — the .npy checks and readers declared in npy_io.hpp (the file
// format and what is checked: there).
#include "npy_io.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

namespace examples {

namespace detail {
namespace {

// A tiny parser for the header's Python dict literal: {'key': value, ...}
struct npy_header_parser {
  const std::string& s;
  const std::string& path;
  std::size_t i = 0;

  void skip_ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n')) ++i;
  }
  bool eat(char c) {
    skip_ws();
    if (i < s.size() && s[i] == c) return ++i, true;
    return false;
  }
  void expect(char c, const char* where) {
    if (!eat(c)) npy_fail(path, std::string("malformed .npy header: expected '") + c + "' " + where);
  }
  std::string quoted() {
    skip_ws();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) npy_fail(path, "malformed .npy header: expected a quoted string");
    const char q = s[i++];
    const std::size_t b = i;
    while (i < s.size() && s[i] != q) ++i;
    if (i >= s.size()) npy_fail(path, "malformed .npy header: unterminated string");
    return s.substr(b, i++ - b);
  }
  std::string word() {
    skip_ws();
    const std::size_t b = i;
    while (i < s.size() && std::isalpha(static_cast<unsigned char>(s[i]))) ++i;
    return s.substr(b, i - b);
  }
  std::size_t integer() {
    skip_ws();
    if (i >= s.size() || !std::isdigit(static_cast<unsigned char>(s[i])))
      npy_fail(path, "malformed .npy header: shape entries must be non-negative integers");
    std::size_t v = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      const std::size_t d = static_cast<std::size_t>(s[i++] - '0');
      if (v > (std::numeric_limits<std::size_t>::max() - d) / 10) npy_fail(path, "shape entry too large");
      v = v * 10 + d;
    }
    if (i < s.size() && s[i] == 'L') ++i;  // Python 2 long suffix
    return v;
  }
};

npy_dtype parse_descr(const std::string& d, const std::string& path) {
  static const npy_dtype all[] = {npy_dtype::f4, npy_dtype::f8, npy_dtype::i1, npy_dtype::u1, npy_dtype::i2,
                                  npy_dtype::u2, npy_dtype::i4, npy_dtype::u4, npy_dtype::i8, npy_dtype::u8};
  for (npy_dtype t : all) {
    const std::string name = npy_descr(t);
    if (d == name) return t;
    if (npy_itemsize(t) == 1 && (d == "<" + name.substr(1) || d == ">" + name.substr(1))) return t;
  }
  if (!d.empty() && d[0] == '>') npy_fail(path, "unsupported dtype '" + d + "' (big-endian; save it little-endian)");
  npy_fail(path, "unsupported dtype '" + d + "' (supported: float32, float64, int8/16/32/64, uint8/16/32/64)");
}

}  // namespace
}  // namespace detail

npy_info read_npy_info(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) detail::npy_fail(path, "cannot open file");
  f.seekg(0, std::ios::end);
  const std::streamoff file_size = f.tellg();
  f.seekg(0);
  char pre[10];
  if (file_size < 10 || !f.read(pre, 10)) detail::npy_fail(path, "not a .npy file (too short for the magic string)");
  if (std::string(pre, 6) != "\x93NUMPY") detail::npy_fail(path, "not a .npy file (bad magic string)");
  const unsigned major = static_cast<unsigned char>(pre[6]), minor = static_cast<unsigned char>(pre[7]);
  std::size_t header_len = 0, prefix = 0;
  if (major == 1 && minor == 0) {
    header_len = static_cast<unsigned char>(pre[8]) | (static_cast<std::size_t>(static_cast<unsigned char>(pre[9])) << 8);
    prefix = 10;
  } else if (major == 2 && minor == 0) {
    char more[2];
    if (!f.read(more, 2)) detail::npy_fail(path, "truncated .npy header");
    header_len = static_cast<unsigned char>(pre[8]) | (std::size_t(static_cast<unsigned char>(pre[9])) << 8) |
                 (std::size_t(static_cast<unsigned char>(more[0])) << 16) |
                 (std::size_t(static_cast<unsigned char>(more[1])) << 24);
    prefix = 12;
  } else {
    detail::npy_fail(path, "unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor));
  }
  if (static_cast<std::streamoff>(prefix + header_len) > file_size) detail::npy_fail(path, "truncated .npy header");
  std::string header(header_len, '\0');
  if (!f.read(&header[0], static_cast<std::streamsize>(header_len))) detail::npy_fail(path, "truncated .npy header");
  if (header.empty() || header.back() != '\n') detail::npy_fail(path, "malformed .npy header (no terminating newline)");

  npy_info info;
  bool have_descr = false, have_fortran = false, have_shape = false;
  detail::npy_header_parser p{header, path};
  p.expect('{', "at the start of the header");
  while (!p.eat('}')) {
    const std::string key = p.quoted();
    p.expect(':', "after a key");
    // xnpy reads the first occurrence of each key and the rest of the header after it, so a
    // repeated key would make the two parsers see different shapes.
    if ((key == "descr" && have_descr) || (key == "fortran_order" && have_fortran) || (key == "shape" && have_shape))
      detail::npy_fail(path, "malformed .npy header: key '" + key + "' appears twice");
    if (key == "descr") {
      info.dtype = detail::parse_descr(p.quoted(), path);
      have_descr = true;
    } else if (key == "fortran_order") {
      const std::string w = p.word();
      if (w != "True" && w != "False") detail::npy_fail(path, "malformed .npy header: fortran_order = '" + w + "'");
      info.fortran_order = (w == "True");
      have_fortran = true;
    } else if (key == "shape") {
      p.expect('(', "to open the shape");
      while (!p.eat(')')) {
        info.shape.push_back(p.integer());
        if (!p.eat(',')) {
          p.expect(')', "to close the shape");
          break;
        }
      }
      have_shape = true;
    } else {
      detail::npy_fail(path, "malformed .npy header: unexpected key '" + key + "' (structured dtypes are not supported)");
    }
    if (!p.eat(',')) {
      p.expect('}', "at the end of the header");
      break;
    }
  }
  if (!have_descr || !have_fortran || !have_shape)
    detail::npy_fail(path, "malformed .npy header: needs 'descr', 'fortran_order' and 'shape'");
  info.size = 1;
  for (std::size_t d : info.shape) {
    if (d != 0 && info.size > std::numeric_limits<std::size_t>::max() / 16 / d)
      detail::npy_fail(path, "shape too large");
    info.size *= d;
  }
  info.data_offset = prefix + header_len;
  const std::size_t expected = info.size * npy_itemsize(info.dtype);
  const std::size_t actual = static_cast<std::size_t>(file_size) - info.data_offset;
  if (actual < expected)
    detail::npy_fail(path, "truncated data: the shape needs " + std::to_string(expected) + " bytes, the file holds " +
                               std::to_string(actual));
  if (actual > expected)
    detail::npy_fail(path, std::to_string(actual - expected) + " unexpected bytes after the data");
  return info;
}

namespace detail {
namespace {
template <class T>
xt::xarray<float> load_npy_as_float(const std::string& path, const std::vector<std::size_t>& expected_shape) {
  // Validated above, so xnpy reads exactly what the header says. Dynamic layout: a
  // Fortran-order file becomes a column-major adaptor, and the assignment copies it into
  // a row-major array.
  auto a = xt::load_npy<T>(path);
  if (!std::equal(a.shape().begin(), a.shape().end(), expected_shape.begin(), expected_shape.end()))
    npy_fail(path, "xtensor's .npy reader and the header check disagree about the shape (malformed header)");
  xt::xarray<float> out = xt::cast<float>(a);
  return out;
}
}  // namespace
}  // namespace detail

xt::xarray<float> load_npy_float(const std::string& path, npy_info* info_out) {
  const npy_info info = read_npy_info(path);
  if (info_out) *info_out = info;
  try {
    switch (info.dtype) {
      case npy_dtype::f4: return detail::load_npy_as_float<float>(path, info.shape);
      case npy_dtype::f8: return detail::load_npy_as_float<double>(path, info.shape);
      default:
        detail::npy_fail(path, std::string("dtype ") + npy_descr(info.dtype) + " is not a float type (float32 or float64 expected)");
    }
  } catch (const npy_error&) {
    throw;
  } catch (const std::exception& e) {
    detail::npy_fail(path, std::string("cannot read: ") + e.what());
  }
}

}  // namespace examples
