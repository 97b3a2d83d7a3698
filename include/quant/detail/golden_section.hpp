// quant/detail/golden_section.hpp — golden-section search for a unimodal 1-D error.
//
// Used to refine clipping ranges (MSE observer, LSQ+ initialisation) after a coarse grid:
// each step keeps the bracket side with the lower value and reuses one interior point,
// so `evaluations` calls of f shrink [a, b] by 0.618^(evaluations - 2). f records the
// best point itself (callers also keep the grid's best, so refinement never loses).
#pragma once

#include <cstddef>

namespace quant {
namespace detail {

// Calls f at max(evaluations, 2) points inside [a, b]; does nothing unless b > a.
template <class F>
void golden_section_search(F&& f, double a, double b, std::size_t evaluations) {
  if (!(b > a)) return;
  const double r = 0.6180339887498949;  // 1 / golden ratio
  double c = b - r * (b - a), d = a + r * (b - a);
  double fc = f(c), fd = f(d);
  for (std::size_t it = 2; it < evaluations; ++it) {
    if (fc <= fd) {
      b = d;
      d = c;
      fd = fc;
      c = b - r * (b - a);
      fc = f(c);
    } else {
      a = c;
      c = d;
      fc = fd;
      d = a + r * (b - a);
      fd = f(d);
    }
  }
}

}  // namespace detail
}  // namespace quant
