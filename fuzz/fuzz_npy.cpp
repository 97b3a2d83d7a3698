// fuzz_npy — examples/common/npy_io.hpp on arbitrary bytes.
// Contract: read_npy_info and load_npy_float either throw examples::npy_error or succeed;
// nothing else escapes (no std::bad_alloc from a header's shape, no xtensor exception, no
// sanitizer report). When they succeed: the file holds exactly size * itemsize data bytes
// after the header, the array's shape is the header's, and its values are the file's
// (float32 bit for bit, float64 rounded to float), in C order or transposed from Fortran
// order.
#include <cstring>

#include "../examples/common/npy_io.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = fuzz::scratch_path("npy");
  fuzz::write_file(path, data, size);
  examples::npy_info info;
  try {
    info = examples::read_npy_info(path);
  } catch (const examples::npy_error&) {
    return 0;
  }
  fuzz::require(info.data_offset + info.size * examples::npy_itemsize(info.dtype) == size,
                "read_npy_info accepted a file whose length is not header + shape");
  std::size_t prod = 1;
  for (auto d : info.shape) prod *= d;
  fuzz::require(prod == info.size, "npy_info.size is not the product of the shape");
  xt::xarray<float> a;
  try {
    a = examples::load_npy_float(path);
  } catch (const examples::npy_error&) {
    return 0;
  }
  fuzz::require(info.dtype == examples::npy_dtype::f4 || info.dtype == examples::npy_dtype::f8,
                "load_npy_float returned an array for a non-float dtype");
  fuzz::require(std::equal(a.shape().begin(), a.shape().end(), info.shape.begin(), info.shape.end()),
                "load_npy_float's shape differs from the validated header's");
  // Element e (row-major index) of the logical array sits at file position e (C order) or at
  // the column-major position of the same multi-index (Fortran order).
  const std::uint8_t* payload = data + info.data_offset;
  const std::size_t nd = info.shape.size();
  std::vector<std::size_t> idx(nd, 0);
  for (std::size_t e = 0; e < info.size; ++e) {
    std::size_t pos = 0;
    if (info.fortran_order) {
      std::size_t stride = 1;
      for (std::size_t d = 0; d < nd; ++d) pos += idx[d] * stride, stride *= info.shape[d];
    } else {
      pos = e;
    }
    float want;
    if (info.dtype == examples::npy_dtype::f4) {
      std::memcpy(&want, payload + 4 * pos, 4);
    } else {
      double v;
      std::memcpy(&v, payload + 8 * pos, 8);
      want = static_cast<float>(v);  // may be out of range: UBSan would flag the library's cast too
    }
    fuzz::require(fuzz::same_float(a.data()[e], want), "load_npy_float value differs at " + std::to_string(e));
    for (std::size_t d = nd; d-- > 0;) {
      if (++idx[d] < info.shape[d]) break;
      idx[d] = 0;
    }
  }
  return 0;
}
