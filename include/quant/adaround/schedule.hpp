// quant/adaround/schedule.hpp — the regularizer schedule of an AdaRound training loop
// (layer, block or custom; docs/adaround.md) and what such a loop reports per iteration.
//
// With n = iterations and w = floor(warmup n) warm-up iterations, at 0-based iteration k:
//   lambda(k) = 0 for k < w (the regularizer is off), lambda after
//   beta(k)   = beta_start for k <= w, then with t = (k - w) / (n - w):
//     linear:  beta_end + (beta_start - beta_end) (1 - t)              (BRECQ, QDrop)
//     cosine:  beta_end + (beta_start - beta_end) (1 + cos(pi t)) / 2  (AIMET)
// Requirements: warmup in [0, 1), beta_start >= beta_end >= 1, both finite.
// adaround_options and block_options (reconstruction.hpp) are adaround_schedules: their
// warmup / beta_start / beta_end / beta_schedule fields are this type's.
#pragma once

#include <cmath>
#include <cstddef>
#include <string>

#include "../error.hpp"

namespace quant {

struct adaround_schedule {
  enum class annealing { linear, cosine };
  using schedule = annealing;  // the enum's name as adaround_options::schedule

  float warmup = 0.2f;                      // fraction of iterations without the regularizer, in [0, 1)
  float beta_start = 20.f, beta_end = 2.f;  // beta_start >= beta_end >= 1
  annealing beta_schedule = annealing::linear;  // linear: BRECQ/QDrop; cosine: AIMET

  // Throws quant::invalid_argument naming `function` and the field.
  void validate(const char* function) const {
    if (!(warmup >= 0.0f && warmup < 1.0f))
      detail::fail<invalid_argument>(function, "warmup", warmup, "must be in [0, 1)");
    if (!(std::isfinite(beta_end) && beta_end >= 1.0f))
      detail::fail<invalid_argument>(function, "beta_end", beta_end, "must be finite and >= 1");
    if (!(std::isfinite(beta_start) && beta_start >= beta_end))
      detail::fail<invalid_argument>(function, "beta_start", beta_start,
                                     "must be finite and >= beta_end = " + std::to_string(beta_end));
  }

  // Iterations (0-based k < warmup_iterations(n)) that run without the regularizer.
  std::size_t warmup_iterations(std::size_t iterations) const noexcept {
    return static_cast<std::size_t>(static_cast<double>(warmup) * static_cast<double>(iterations));
  }
  bool in_warmup(std::size_t k, std::size_t iterations) const noexcept { return k < warmup_iterations(iterations); }
  // beta at 0-based iteration k of `iterations`: beta_start through warm-up, then annealed to beta_end.
  float beta_at(std::size_t k, std::size_t iterations) const noexcept {
    const std::size_t w = warmup_iterations(iterations);
    if (k <= w || iterations <= w) return beta_start;
    const double rel = static_cast<double>(k - w) / static_cast<double>(iterations - w);
    const double span = static_cast<double>(beta_start) - beta_end;
    if (beta_schedule == annealing::cosine)
      return static_cast<float>(beta_end + 0.5 * span * (1.0 + std::cos(3.14159265358979323846 * rel)));
    return static_cast<float>(beta_end + span * (1.0 - rel));
  }
};

// What a progress callback receives after each iteration.
struct adaround_progress {
  std::size_t iteration = 0;    // iterations done (1-based)
  std::size_t iterations = 0;   // total
  double reconstruction_loss = 0.0;  // this mini-batch: mean over rows of the summed squared output error
  double regularizer = 0.0;     // f_reg = sum(1 - |2h-1|^beta) at the V the step started from (0 in warm-up)
  float beta = 0.0f;            // the regularizer exponent of this iteration
  bool warmup = false;          // true while the regularizer is off
};

}  // namespace quant
