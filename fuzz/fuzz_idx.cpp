// fuzz_idx — examples/common/idx_reader.hpp on arbitrary bytes, as a plain file and (with
// -DFUZZ_IDX_GZIP) gzip-compressed so that the fuzzer explores the header and payload
// behind the decompressor. Contract: read_idx_images / read_idx_labels either throw
// examples::idx_error or return exactly the header's count of items with the file's bytes;
// no other exception (std::bad_alloc from a lying header was the first finding), no
// allocation much beyond the data present (libFuzzer's -rss_limit_mb / -malloc_limit_mb
// enforce it), no sanitizer report.
#include <zlib.h>

#include <cstring>

#include "../examples/common/idx_reader.hpp"
#include "fuzz_common.hpp"

namespace {
std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | p[3];
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = fuzz::scratch_path(
#if defined(FUZZ_IDX_GZIP)
      "idx-gz"
#else
      "idx"
#endif
  );
#if defined(FUZZ_IDX_GZIP)
  {
    gzFile f = gzopen(path.c_str(), "wb");
    if (!f) std::abort();
    if (size) gzwrite(f, data, static_cast<unsigned>(size));
    gzclose(f);
  }
  const bool plain = false;
#else
  fuzz::write_file(path, data, size);
  const bool plain = !(size >= 2 && data[0] == 0x1f && data[1] == 0x8b);
#endif
  try {
    const auto img = examples::read_idx_images(path);
    if (plain) {
      fuzz::require(size >= 16 && be32(data) == 0x803, "images accepted without the magic number");
      fuzz::require(img.count == be32(data + 4) && img.rows == be32(data + 8) && img.cols == be32(data + 12),
                    "image sizes differ from the header");
      fuzz::require(img.pixels.size() + 16 == size, "image payload size differs from the file");
      fuzz::require(std::memcmp(img.pixels.data(), data + 16, img.pixels.size()) == 0, "pixels differ from the file");
    } else {
      fuzz::require(img.pixels.size() == img.count * img.rows * img.cols, "pixel count differs from the header");
    }
  } catch (const examples::idx_error&) {
  }
  try {
    const auto lab = examples::read_idx_labels(path, 10);
    if (plain) {
      fuzz::require(size >= 8 && be32(data) == 0x801, "labels accepted without the magic number");
      fuzz::require(lab.labels.size() == be32(data + 4) && lab.labels.size() + 8 == size, "label count differs");
      fuzz::require(std::memcmp(lab.labels.data(), data + 8, lab.labels.size()) == 0, "labels differ from the file");
    }
    for (auto v : lab.labels) fuzz::require(v < 10, "a label out of range was accepted");
  } catch (const examples::idx_error&) {
  }
  return 0;
}
