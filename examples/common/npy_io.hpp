// examples/common/npy_io.hpp — NumPy .npy files in and out, validated before xtensor sees them.
//
// xtensor 0.24's xnpy reads versions 1.0/2.0, any '<f4'-style typestring and Fortran order
// (as a column-major adaptor), but it trusts the file: a short file is read past its end
// without an error, a huge shape is allocated as given, a typestring that does not match
// the requested type throws only after the whole file has been read. So every file is
// checked here first — magic, version, header length, the header dictionary (descr,
// fortran_order, shape, nothing else), a supported little-endian dtype, shape overflow, and
// that the data is exactly as long as the shape says — and only a file that passes is handed
// to xt::load_npy. Fortran-order arrays are accepted and copied to row-major.
// Writing goes through xt::dump_npy into memory, then to `<path>.tmp-<pid>` and a rename, so
// a failure never leaves a partial file under the final name.
//
// Failures throw examples::npy_error with the path and the reason.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

namespace examples {

struct npy_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class npy_dtype { f4, f8, i1, u1, i2, u2, i4, u4, i8, u8 };

inline const char* npy_descr(npy_dtype t) {
  switch (t) {
    case npy_dtype::f4: return "<f4";
    case npy_dtype::f8: return "<f8";
    case npy_dtype::i1: return "|i1";
    case npy_dtype::u1: return "|u1";
    case npy_dtype::i2: return "<i2";
    case npy_dtype::u2: return "<u2";
    case npy_dtype::i4: return "<i4";
    case npy_dtype::u4: return "<u4";
    case npy_dtype::i8: return "<i8";
    case npy_dtype::u8: return "<u8";
  }
  return "?";
}

inline std::size_t npy_itemsize(npy_dtype t) {
  switch (t) {
    case npy_dtype::f4: case npy_dtype::i4: case npy_dtype::u4: return 4;
    case npy_dtype::f8: case npy_dtype::i8: case npy_dtype::u8: return 8;
    case npy_dtype::i1: case npy_dtype::u1: return 1;
    case npy_dtype::i2: case npy_dtype::u2: return 2;
  }
  return 0;
}

struct npy_info {
  npy_dtype dtype = npy_dtype::f4;
  bool fortran_order = false;
  std::vector<std::size_t> shape;
  std::size_t size = 1;         // element count
  std::size_t data_offset = 0;  // bytes before the data
};

// A shape as "[a, b, c]" for messages.
inline std::string shape_text(const std::vector<std::size_t>& s) {
  std::string t = "[";
  for (std::size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

namespace detail {

[[noreturn]] inline void npy_fail(const std::string& path, const std::string& what) {
  throw npy_error(path + ": " + what);
}

}  // namespace detail

// Reads and checks the header of `path`; the data length must match the shape exactly.
npy_info read_npy_info(const std::string& path);

// A float32 or float64 .npy file as a row-major float array (float64 rounded to float).
xt::xarray<float> load_npy_float(const std::string& path, npy_info* info_out = nullptr);

// Writes `e` as .npy atomically (temporary name + rename).
template <class E>
void save_npy(const std::string& path, const xt::xexpression<E>& e) {
  const std::string bytes = xt::dump_npy(e);
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) detail::npy_fail(path, "cannot create " + tmp);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.flush();
    if (!f) {
      f.close();
      std::remove(tmp.c_str());
      detail::npy_fail(path, "write failed (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    detail::npy_fail(path, "cannot rename the temporary file into place");
  }
}

}  // namespace examples