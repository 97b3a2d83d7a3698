// quant/detail/checks.hpp — argument checks shared by the eager entry points.
//
//   check_same_shape(a, b, function, argument)   shape b must equal shape a (the shape of x)
//   require_finite(x, n, function, argument)     x[0, n) must hold no inf / NaN
//
// Both throw through detail::fail (error.hpp): quant::length_error /
// quant::domain_error naming the function, the argument and the offending value.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>

#include "../error.hpp"

namespace quant {
namespace detail {

// Throws quant::length_error when shape b differs from shape a (b is the argument named).
template <class A, class B>
void check_same_shape(const A& a, const B& b, const char* function, const char* argument) {
  if (!std::equal(a.begin(), a.end(), b.begin(), b.end()))
    fail<length_error>(function, argument, shape_string(b), "must equal the shape of x, " + shape_string(a));
}

// Throws quant::domain_error at the first element of x[0, n) that is not finite.
inline void require_finite(const float* x, std::size_t n, const char* function, const char* argument) {
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]))
      fail<domain_error>(function, argument, x[i], "must be finite (element " + std::to_string(i) + ")");
}

}  // namespace detail
}  // namespace quant
