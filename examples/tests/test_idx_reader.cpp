// The IDX reader on files written here: a good gzip file and a plain one round-trip; a
// missing file, a bad magic, a truncated payload, a corrupt gzip stream, trailing bytes and
// out-of-range labels each give a clear error naming the file. A header that claims more data
// than the file holds fails with the reader's error before any large allocation (the test
// replaces the global operator new to record the largest single request).
#include <sys/stat.h>
#include <zlib.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <fstream>
#include <string>
#include <vector>

#include "../common/idx_reader.hpp"

namespace {
std::atomic<std::size_t> largest_allocation{0};
void record_allocation(std::size_t n) {
  std::size_t seen = largest_allocation.load();
  while (n > seen && !largest_allocation.compare_exchange_weak(seen, n)) {
  }
}
}  // namespace

// GCC defines __SANITIZE_ADDRESS__ under -fsanitize=address; clang 14 answers __has_feature.
#if defined(__SANITIZE_ADDRESS__)
#define QUANT_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QUANT_TEST_ASAN 1
#endif
#endif

#if defined(QUANT_TEST_ASAN)
// Under AddressSanitizer its allocator owns operator new; it reports every allocation to a hook.
extern "C" int __sanitizer_install_malloc_and_free_hooks(void (*)(const volatile void*, std::size_t),
                                                         void (*)(const volatile void*));
namespace {
void on_malloc(const volatile void*, std::size_t n) { record_allocation(n); }
void on_free(const volatile void*) {}
const int hooks_installed = __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
}  // namespace
#else
// The replacement pair below is malloc/free on both sides; GCC cannot see that through the
// inlined new/delete expressions and would warn about a mismatch.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
  record_allocation(n);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

namespace {

const std::string dir = TEST_TMP_DIR;

std::vector<unsigned char> be32(std::uint32_t v) {
  return {static_cast<unsigned char>(v >> 24), static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 8),
          static_cast<unsigned char>(v)};
}

std::vector<unsigned char> image_file(std::uint32_t magic, std::uint32_t n, std::uint32_t r, std::uint32_t c,
                                      std::size_t payload) {
  std::vector<unsigned char> b;
  for (auto v : {magic, n, r, c}) {
    auto x = be32(v);
    b.insert(b.end(), x.begin(), x.end());
  }
  for (std::size_t i = 0; i < payload; ++i) b.push_back(static_cast<unsigned char>(i * 7));
  return b;
}

std::string write_gz(const std::string& name, const std::vector<unsigned char>& bytes) {
  ::mkdir(dir.c_str(), 0755);
  const std::string p = dir + "/" + name;
  gzFile f = gzopen(p.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
  return p;
}

std::string write_raw(const std::string& name, const std::vector<unsigned char>& bytes) {
  ::mkdir(dir.c_str(), 0755);
  const std::string p = dir + "/" + name;
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return p;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("IDX images round-trip through gzip and plain files") {
  const auto bytes = image_file(0x803, 3, 2, 5, 30);
  for (const std::string& p : {write_gz("img.gz", bytes), write_raw("img.raw", bytes)}) {
    const auto img = examples::read_idx_images(p);
    CHECK(img.count == 3);
    CHECK(img.rows == 2);
    CHECK(img.cols == 5);
    REQUIRE(img.pixels.size() == 30);
    for (std::size_t i = 0; i < 30; ++i) CHECK(img.pixels[i] == static_cast<unsigned char>(i * 7));
  }
}

TEST_CASE("IDX labels are read and range-checked") {
  std::vector<unsigned char> b = be32(0x801);
  auto n = be32(4);
  b.insert(b.end(), n.begin(), n.end());
  for (unsigned char v : {0, 9, 3, 1}) b.push_back(v);
  const auto lab = examples::read_idx_labels(write_gz("lab.gz", b));
  CHECK(lab.labels == std::vector<std::uint8_t>{0, 9, 3, 1});
  b.back() = 10;
  const std::string p = write_gz("lab_bad.gz", b);
  CHECK_THAT(error_of([&] { examples::read_idx_labels(p); }), Catch::Contains("label 10 at index 3"));
}

TEST_CASE("IDX errors name the file and the problem") {
  using Catch::Contains;
  CHECK_THAT(error_of([] { examples::read_idx_images(dir + "/does-not-exist.gz"); }), Contains("missing file"));
  const std::string magic = write_gz("magic.gz", image_file(0x801, 1, 2, 2, 4));
  CHECK_THAT(error_of([&] { examples::read_idx_images(magic); }), Contains("bad magic number 0x00000801"));
  CHECK_THAT(error_of([&] { examples::read_idx_images(magic); }), Contains(magic));
  const std::string trunc = write_gz("trunc.gz", image_file(0x803, 3, 2, 5, 29));
  CHECK_THAT(error_of([&] { examples::read_idx_images(trunc); }), Contains("truncated while reading the pixel data"));
  const std::string extra = write_gz("extra.gz", image_file(0x803, 3, 2, 5, 31));
  CHECK_THAT(error_of([&] { examples::read_idx_images(extra); }), Contains("trailing data"));
  const std::string zero = write_gz("zero.gz", image_file(0x803, 3, 0, 5, 0));
  CHECK_THAT(error_of([&] { examples::read_idx_images(zero); }), Contains("implausible image size"));

  // A gzip file cut in the middle of its deflate stream, and one with a damaged body.
  std::vector<unsigned char> big = image_file(0x803, 100, 28, 28, 100 * 784);
  const std::string whole = write_gz("whole.gz", big);
  std::ifstream in(whole, std::ios::binary);
  std::vector<unsigned char> gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(gz.size() > 100);
  std::vector<unsigned char> cut(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2));
  const std::string cut_path = write_raw("cut.gz", cut);
  CHECK_THAT(error_of([&] { examples::read_idx_images(cut_path); }), Contains("truncated"));
  std::vector<unsigned char> bad = gz;
  for (std::size_t i = 20; i < 60; ++i) bad[i] ^= 0xA5;
  const std::string bad_path = write_raw("bad.gz", bad);
  CHECK_THAT(error_of([&] { examples::read_idx_images(bad_path); }), Contains("gzip"));
}

TEST_CASE("load_fashion_mnist explains a missing directory") {
  CHECK_THAT(error_of([] { examples::load_fashion_mnist(dir + "/nowhere"); }), Catch::Contains("--data DIR"));
}

TEST_CASE("A header claiming more data than the file holds fails before allocating it") {
  using Catch::Contains;
  // 19 bytes found by fuzzing: magic 0x803, then 131072 x 41 x 3856 images (20.7 GB of
  // pixels), then 3 bytes of data. Before the fix the reader allocated and zeroed the 20.7 GB.
  const std::vector<unsigned char> lying = {0x00, 0x00, 0x08, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
                                            0x00, 0x29, 0x00, 0x00, 0x0f, 0x10, 0x0e, 0xee, 0x11};
  const std::size_t claimed = std::size_t(131072) * 41 * 3856;
  {  // the recorder sees allocations (replaced operator new, or the ASan hook)
    largest_allocation = 0;
    const std::vector<char> five_mib(std::size_t(5) << 20);
    REQUIRE(largest_allocation.load() >= five_mib.size());
  }
  SECTION("uncompressed: rejected from the file size, before any pixel buffer exists") {
    const std::string p = write_raw("lying.raw", lying);
    largest_allocation = 0;
    std::string msg;
    try {
      examples::read_idx_images(p);
    } catch (const examples::idx_error& e) {
      msg = e.what();
    }
    CHECK_THAT(msg, Contains(std::to_string(claimed) + " bytes of the pixel data but the file holds 3"));
    CHECK_THAT(msg, Contains("truncated"));
    CHECK(largest_allocation.load() < (std::size_t(1) << 20));
  }
  SECTION("gzip: read in growing chunks, fails as truncated after at most a MiB") {
    const std::string p = write_gz("lying.gz", lying);
    largest_allocation = 0;
    std::string msg;
    try {
      examples::read_idx_images(p);
    } catch (const examples::idx_error& e) {
      msg = e.what();
    }
    CHECK_THAT(msg, Contains("truncated while reading the pixel data: expected " + std::to_string(claimed) +
                             " bytes, got 3"));
    CHECK(largest_allocation.load() <= (std::size_t(1) << 20) + 4096);
  }
  SECTION("labels: a count of 2^26 with 2 bytes of labels, plain and gzip") {
    std::vector<unsigned char> b = be32(0x801);
    auto n = be32(1u << 26);
    b.insert(b.end(), n.begin(), n.end());
    b.push_back(1);
    b.push_back(2);
    for (const std::string& p : {write_raw("lying_lab.raw", b), write_gz("lying_lab.gz", b)}) {
      largest_allocation = 0;
      CHECK_THROWS_AS(examples::read_idx_labels(p), examples::idx_error);
      CHECK(largest_allocation.load() <= (std::size_t(1) << 20) + 4096);
    }
  }
  SECTION("a payload larger than one chunk still reads back exactly (gzip and plain)") {
    // 3 x 1000 x 1000 = 3 MB: crosses the 1 MiB first chunk and one doubling.
    const auto bytes = image_file(0x803, 3, 1000, 1000, 3000000);
    for (const std::string& p : {write_gz("big.gz", bytes), write_raw("big.raw", bytes)}) {
      const auto img = examples::read_idx_images(p);
      REQUIRE(img.pixels.size() == 3000000);
      bool same = true;
      for (std::size_t i = 0; i < img.pixels.size(); ++i) same = same && img.pixels[i] == static_cast<unsigned char>(i * 7);
      CHECK(same);
    }
    const auto cut = image_file(0x803, 3, 1000, 1000, 2999999);
    CHECK_THAT(error_of([&] { examples::read_idx_images(write_gz("big_cut.gz", cut)); }),
               Contains("expected 3000000 bytes, got 2999999"));
    CHECK_THAT(error_of([&] { examples::read_idx_images(write_raw("big_cut.raw", cut)); }),
               Contains("but the file holds 2999999"));
  }
}
