// quant/adaround/progress_printer.hpp — a terminal progress line for AdaRound and block
// reconstruction (an adaround_options::progress / block_options::progress callback).
//
//   "adaround [ 4200/10000]  42%  loss 1.234e-02  reg 3.210e+02  beta 14.20  2.1 s, ETA 2.9 s"
//
// The only header of the AdaRound family that includes the iostreams.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>

#include "schedule.hpp"

namespace quant {

// A progress callback that redraws one terminal line:
//   "adaround [ 4200/10000]  42%  loss 1.234e-02  reg 3.210e+02  beta 14.20  2.1 s, ETA 2.9 s"
// with '\r' (no newline until the last iteration) when `carriage_return`, else one line
// per update. Redraws at most every `min_interval_seconds` (and always at the end).
// Copyable, so it fits in adaround_options::progress.
class adaround_progress_printer {
 public:
  explicit adaround_progress_printer(std::ostream& os, std::string label = "adaround", bool carriage_return = true,
                                     double min_interval_seconds = 0.1)
      : os_(&os), label_(std::move(label)), cr_(carriage_return), interval_(min_interval_seconds) {}

  void operator()(const adaround_progress& p) {
    const auto now = clock::now();
    if (p.iteration <= 1 || !started_) {
      start_ = now;
      started_ = true;
      last_draw_ = now - std::chrono::hours(1);
    }
    const bool last = p.iteration >= p.iterations;
    const double since = std::chrono::duration<double>(now - last_draw_).count();
    if (!last && since < interval_) return;
    last_draw_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double eta = p.iteration ? elapsed / static_cast<double>(p.iteration) *
                                         static_cast<double>(p.iterations - std::min(p.iterations, p.iteration))
                                   : 0.0;
    const int width = static_cast<int>(std::to_string(p.iterations).size());
    std::ostringstream line;
    line << label_ << " [" << std::setw(width) << p.iteration << '/' << p.iterations << "] " << std::setw(3)
         << (p.iterations ? 100 * p.iteration / p.iterations : 100) << "%  loss " << std::scientific
         << std::setprecision(3) << p.reconstruction_loss << "  reg " << p.regularizer << std::fixed
         << std::setprecision(2) << "  beta " << p.beta << (p.warmup ? " (warm-up)" : "           ") << "  "
         << format_seconds(elapsed) << ", ETA " << format_seconds(eta);
    if (cr_)
      *os_ << '\r' << line.str() << (last ? "\n" : "") << std::flush;
    else
      *os_ << line.str() << '\n' << std::flush;
  }

  static std::string format_seconds(double s) {
    std::ostringstream o;
    if (s < 60.0) {
      o << std::fixed << std::setprecision(1) << s << " s";
    } else {
      const long t = static_cast<long>(s + 0.5);
      o << t / 3600 << ':' << std::setw(2) << std::setfill('0') << (t / 60) % 60 << ':' << std::setw(2) << t % 60;
    }
    return o.str();
  }

 private:
  using clock = std::chrono::steady_clock;
  std::ostream* os_;
  std::string label_;
  bool cr_;
  double interval_;
  bool started_ = false;
  clock::time_point start_, last_draw_;
};

}  // namespace quant
