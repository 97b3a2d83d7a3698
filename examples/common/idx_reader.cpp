// examples/common/idx_reader.cpp — the IDX reader declared in idx_reader.hpp (the format and
// the checks: there).
#include "idx_reader.hpp"

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace examples {

namespace detail {
namespace {

[[noreturn]] void idx_fail(const std::string& path, const std::string& what) {
  throw idx_error("IDX file " + path + ": " + what);
}

class gz_reader {
 public:
  explicit gz_reader(const std::string& path) : path_(path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) idx_fail(path, "cannot open (missing file?)");
    if (!S_ISREG(st.st_mode)) idx_fail(path, "not a regular file");
    file_size_ = static_cast<std::uint64_t>(st.st_size);
    file_ = gzopen(path.c_str(), "rb");
    if (!file_) idx_fail(path, "cannot open");
    gzbuffer(file_, 1 << 17);
  }
  ~gz_reader() {
    if (file_) gzclose(file_);
  }
  gz_reader(const gz_reader&) = delete;
  gz_reader& operator=(const gz_reader&) = delete;

  // Reads exactly n bytes or throws (what = the part of the file being read).
  // (already, total: bytes of the same item read before, and its full size, for the message)
  void read_exact(void* dst, std::size_t n, const char* what, std::size_t already = 0, std::size_t total = 0) {
    auto* p = static_cast<unsigned char*>(dst);
    if (total == 0) total = n;
    std::size_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
      const int got = gzread(file_, p + done, chunk);
      if (got < 0) stream_error();
      if (got == 0) {
        check_stream();
        idx_fail(path_, std::string("truncated while reading ") + what + ": expected " + std::to_string(total) +
                            " bytes, got " + std::to_string(already + done));
      }
      done += static_cast<std::size_t>(got);
    }
  }

  // Reads exactly n bytes into `out` (resized to n) or throws. The buffer grows with the data
  // read, in chunks of at most max(1 MiB, bytes read so far), so a header that lies about n
  // costs no more memory than the data that is really there. A plain (uncompressed) file
  // whose remaining length is not n fails before any allocation.
  void read_payload(std::vector<std::uint8_t>& out, std::size_t n, const char* what) {
    if (gzdirect(file_)) {
      const z_off_t pos = gztell(file_);
      const std::uint64_t left = pos >= 0 && static_cast<std::uint64_t>(pos) <= file_size_
                                     ? file_size_ - static_cast<std::uint64_t>(pos)
                                     : 0;
      if (left != n)
        idx_fail(path_, std::string("the header's sizes call for ") + std::to_string(n) + " bytes of " +
                            what + " but the file holds " + std::to_string(left) +
                            (left < n ? " (truncated file or wrong header)" : " (trailing data or wrong header)"));
    }
    out.clear();
    std::size_t done = 0;
    while (done < n) {
      const std::size_t chunk = std::min(n - done, std::max<std::size_t>(std::size_t(1) << 20, done));
      out.resize(done + chunk);
      read_exact(out.data() + done, chunk, what, done, n);
      done += chunk;
    }
  }

  std::uint32_t read_be32(const char* what) {
    unsigned char b[4];
    read_exact(b, 4, what);
    return (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) | b[3];
  }

  // After the payload: the stream must end here (trailing bytes mean a wrong header).
  void expect_end() {
    unsigned char extra;
    const int got = gzread(file_, &extra, 1);
    if (got < 0) stream_error();
    if (got > 0) idx_fail(path_, "unexpected trailing data after the last item (header sizes disagree with the file)");
    check_stream();
  }

 private:
  [[noreturn]] void stream_error() {
    int code = 0;
    const char* msg = gzerror(file_, &code);
    idx_fail(path_, std::string("corrupt gzip stream (") + (msg ? msg : "unknown zlib error") + ")");
  }
  // gzread reports a gzip stream cut short as end of file with Z_BUF_ERROR pending.
  void check_stream() {
    int code = 0;
    const char* msg = gzerror(file_, &code);
    if (code != Z_OK && code != Z_STREAM_END)
      idx_fail(path_, std::string("corrupt or truncated gzip stream (") + (msg ? msg : "zlib error") + ")");
  }

  std::string path_;
  std::uint64_t file_size_ = 0;
  gzFile file_ = nullptr;
};

}  // namespace
}  // namespace detail

idx_images read_idx_images(const std::string& path) {
  detail::gz_reader in(path);
  const std::uint32_t magic = in.read_be32("the magic number");
  if (magic != 0x00000803u) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", magic);
    detail::idx_fail(path, std::string("bad magic number ") + buf +
                               " (expected 0x00000803: unsigned bytes, 3 dimensions — is this an image file?)");
  }
  idx_images img;
  img.count = in.read_be32("the image count");
  img.rows = in.read_be32("the row count");
  img.cols = in.read_be32("the column count");
  if (img.rows == 0 || img.cols == 0 || img.rows > 4096 || img.cols > 4096)
    detail::idx_fail(path, "implausible image size " + std::to_string(img.rows) + "x" + std::to_string(img.cols));
  if (img.count == 0 || img.count > (std::size_t(1) << 26))
    detail::idx_fail(path, "implausible image count " + std::to_string(img.count));
  in.read_payload(img.pixels, img.count * img.rows * img.cols, "the pixel data");
  in.expect_end();
  return img;
}

idx_labels read_idx_labels(const std::string& path, unsigned num_classes) {
  detail::gz_reader in(path);
  const std::uint32_t magic = in.read_be32("the magic number");
  if (magic != 0x00000801u) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", magic);
    detail::idx_fail(path, std::string("bad magic number ") + buf +
                               " (expected 0x00000801: unsigned bytes, 1 dimension — is this a label file?)");
  }
  const std::size_t count = in.read_be32("the label count");
  if (count == 0 || count > (std::size_t(1) << 26)) detail::idx_fail(path, "implausible label count " + std::to_string(count));
  idx_labels lab;
  in.read_payload(lab.labels, count, "the labels");
  in.expect_end();
  for (std::size_t i = 0; i < count; ++i)
    if (lab.labels[i] >= num_classes)
      detail::idx_fail(path, "label " + std::to_string(lab.labels[i]) + " at index " + std::to_string(i) +
                                 " is not a class in 0.." + std::to_string(num_classes - 1));
  return lab;
}

fashion_mnist load_fashion_mnist(const std::string& dir) {
  auto pick = [&](const std::string& stem) {
    const std::string gz = dir + "/" + stem + ".gz";
    struct stat st {};
    if (::stat(gz.c_str(), &st) == 0) return gz;
    const std::string raw = dir + "/" + stem;
    if (::stat(raw.c_str(), &st) == 0) return raw;
    throw std::runtime_error("Fashion-MNIST: neither " + gz + " nor " + raw +
                             " exists (install Debian's dataset-fashion-mnist or pass --data DIR)");
  };
  fashion_mnist d;
  const char* split_names[2] = {"train", "t10k"};
  dataset_split* splits[2] = {&d.train, &d.test};
  for (int s = 0; s < 2; ++s) {
    const std::string ip = pick(std::string(split_names[s]) + "-images-idx3-ubyte");
    const std::string lp = pick(std::string(split_names[s]) + "-labels-idx1-ubyte");
    splits[s]->images = read_idx_images(ip);
    splits[s]->labels = read_idx_labels(lp);
    if (splits[s]->images.count != splits[s]->labels.labels.size())
      throw std::runtime_error("Fashion-MNIST: " + ip + " holds " + std::to_string(splits[s]->images.count) +
                               " images but " + lp + " holds " + std::to_string(splits[s]->labels.labels.size()) +
                               " labels");
  }
  return d;
}

}  // namespace examples
