// examples/common/progress.hpp — one progress line with an ETA for long loops.
//
// On a terminal the line is redrawn in place (\r) at most 5 times a second; when stderr is
// a file or a pipe (ctest, CI logs) a full line is printed at every 10 % instead, so logs
// stay short but still show the ETA.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace examples {

class progress {
 public:
  using clock = std::chrono::steady_clock;

  progress(std::string label, std::size_t total, bool enabled = true)
      : label_(std::move(label)), total_(total ? total : 1), enabled_(enabled), tty_(isatty(STDERR_FILENO) != 0),
        start_(clock::now()), last_(start_) {}

  // Reports `done` of `total` steps; `detail` is appended (e.g. the current loss).
  void update(std::size_t done, const std::string& detail = {}) {
    if (!enabled_) return;
    const auto now = clock::now();
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const int decile = static_cast<int>(10 * done / total_);
    const bool finished = done >= total_;
    if (tty_) {
      if (!finished && std::chrono::duration<double>(now - last_).count() < 0.2) return;
    } else if (!finished && decile == last_decile_) {
      return;
    }
    last_ = now;
    last_decile_ = decile;
    const double eta = done ? elapsed * static_cast<double>(total_ - std::min(done, total_)) / static_cast<double>(done) : 0.0;
    std::fprintf(stderr, "%s  [%s] %3d%%  %.1fs elapsed  ETA %.1fs  %s%s", tty_ ? "\r\033[K" : "", label_.c_str(),
                 static_cast<int>(100 * std::min(done, total_) / total_), elapsed, eta, detail.c_str(),
                 tty_ ? "" : "\n");
    if (tty_ && finished) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

  double seconds() const { return std::chrono::duration<double>(clock::now() - start_).count(); }

 private:
  std::string label_;
  std::size_t total_;
  bool enabled_, tty_;
  clock::time_point start_, last_;
  int last_decile_ = -1;
};

}  // namespace examples
