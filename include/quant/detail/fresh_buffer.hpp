// quant/detail/fresh_buffer.hpp — huge pages for large freshly allocated outputs.
//
// The first write to each page of a new allocation is a page fault. At 2^24 floats (64 MiB,
// 16 384 pages of 4 KiB) the faults cost more than computing the output. On Linux, with
// transparent huge pages in "madvise" mode (/sys/kernel/mm/transparent_hugepage/enabled),
// madvise(MADV_HUGEPAGE) on a buffer before its first write lets the kernel back each
// aligned 2 MiB of it with one huge page: 512 times fewer faults. In "always" mode this is
// already the default, in "never" mode and on other systems the advice does nothing, and
// buffers below 4 MiB are left alone (at most one huge page would fit).
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace quant {
namespace detail {

constexpr std::size_t huge_page_advice_min_bytes = std::size_t(4) << 20;

// Advises huge pages for the whole pages inside [p, p + bytes), which must not have been
// written yet for the advice to matter. Never fails: an unsupported system or a refused
// advice leaves ordinary pages.
inline void advise_huge_pages(void* p, std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p == nullptr || bytes < huge_page_advice_min_bytes) return;
  static const long page_size = ::sysconf(_SC_PAGESIZE);
  if (page_size <= 0) return;
  const std::uintptr_t page = static_cast<std::uintptr_t>(page_size);
  const std::uintptr_t begin = (reinterpret_cast<std::uintptr_t>(p) + page - 1) / page * page;
  const std::uintptr_t end = (reinterpret_cast<std::uintptr_t>(p) + bytes) / page * page;
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace detail
}  // namespace quant
