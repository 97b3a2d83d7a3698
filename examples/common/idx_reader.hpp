// examples/common/idx_reader.hpp — reads MNIST-style IDX files (optionally gzip-compressed).
//
// IDX layout (LeCun's MNIST page): a big-endian 32-bit magic 0x000008DD where 0x08 says
// "unsigned byte" and DD is the number of dimensions, then DD big-endian 32-bit sizes, then
// the data in row-major order. Fashion-MNIST ships images as 0x00000803 [n, 28, 28] and
// labels as 0x00000801 [n]. zlib's gzread reads both gzip and plain files, so a file
// unpacked by hand works too.
//
// Every failure throws examples::idx_error (a std::runtime_error) naming the file and what is
// wrong with it: missing, not gzip / corrupt stream, bad magic, implausible sizes, truncated
// data, trailing bytes, labels out of range.
//
// The sizes in the header are not trusted before the data is seen: an uncompressed file must
// be exactly as long as its header says (checked against the file size before anything is
// allocated), and the payload is read in chunks into a buffer that grows with the data that
// actually arrives (at most 2x the bytes read so far), so a gzip file whose header claims
// gigabytes it does not hold fails with "truncated" after allocating about what it holds.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace examples {

struct idx_images {
  std::size_t count = 0, rows = 0, cols = 0;
  std::vector<std::uint8_t> pixels;  // count * rows * cols, row-major
};

struct idx_labels {
  std::vector<std::uint8_t> labels;
};

struct idx_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Images: magic 0x00000803, [count, rows, cols] unsigned bytes.
idx_images read_idx_images(const std::string& path);

// Labels: magic 0x00000801, [count] unsigned bytes, each < num_classes.
idx_labels read_idx_labels(const std::string& path, unsigned num_classes = 10);

struct dataset_split {
  idx_images images;
  idx_labels labels;
};

struct fashion_mnist {
  dataset_split train, test;
};

// Loads `<dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` (the .gz name first).
fashion_mnist load_fashion_mnist(const std::string& dir);

}  // namespace examples
