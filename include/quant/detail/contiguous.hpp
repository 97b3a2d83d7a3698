// quant/detail/contiguous.hpp — getting a contiguous row-major float buffer out of any
// xtensor expression, without a copy when the expression already is one.
//
// Read in place: float containers, adaptors (xt::adapt over a vector or a pointer) and
// views with a data interface (xt::view with leading ranges/integers and trailing
// xt::all(), strided views, reshape views) whose layout is row-major at run time.
// Copied (once, into a row-major float buffer): everything else — lazy expressions,
// other value types, column-major or strided data.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xexpression.hpp>
#include <xtensor/xlayout.hpp>
#include <xtensor/xnoalias.hpp>
#include <xtensor/xshape.hpp>
#include <xtensor/xtensor.hpp>

#include "../error.hpp"

namespace quant {
namespace detail {

template <class E, class = void>
struct is_row_major_float_container : std::false_type {};
template <class E>
struct is_row_major_float_container<
    E, std::enable_if_t<std::is_same<typename E::temporary_type, E>::value &&
                        std::is_same<typename E::value_type, float>::value &&
                        E::static_layout == xt::layout_type::row_major>> : std::true_type {};

// Float storage that may be read in place: data(), data_offset() and a run-time layout.
template <class E, class = void>
struct has_float_storage : std::false_type {};
template <class E>
struct has_float_storage<E, xt::void_t<decltype(std::declval<const E&>().data()),
                                       decltype(std::declval<const E&>().data_offset()),
                                       decltype(std::declval<const E&>().layout())>>
    : std::is_same<std::remove_cv_t<typename E::value_type>, float> {};

// A row-major float view of x: a pointer into x where its storage already is one,
// otherwise into a private copy. Lives no longer than x.
template <class E>
class contiguous_floats {
 public:
  explicit contiguous_floats(const E& x) : e_(x) {
    if constexpr (has_float_storage<E>::value) {
      if (x.size() == 0 || x.layout() == xt::layout_type::row_major) {
        ptr_ = x.data() + x.data_offset();
        return;
      }
    }
    materialize();
  }
  contiguous_floats(const contiguous_floats&) = delete;
  contiguous_floats& operator=(const contiguous_floats&) = delete;

  const float* data() const noexcept { return ptr_; }
  const auto& shape() const noexcept { return e_.shape(); }
  std::size_t size() const noexcept { return static_cast<std::size_t>(e_.size()); }
  bool is_copy() const noexcept { return !copy_.empty(); }

  // Reads from a private copy from now on (before the caller frees or moves x's storage).
  void detach() {
    if (!is_copy()) materialize();
  }

  // An elementwise kernel may run in place (y == x) but not over a shifted overlap: a
  // pack stored to y could overwrite input it has not read yet. Copy in that case.
  void separate_from(const float* y, std::size_t n) {
    if (is_copy() || ptr_ == y || n == 0) return;
    const auto a = reinterpret_cast<std::uintptr_t>(ptr_), b = reinterpret_cast<std::uintptr_t>(y);
    const std::uintptr_t bytes = size() * sizeof(float), out_bytes = n * sizeof(float);
    if (a < b + out_bytes && b < a + bytes) materialize();
  }

 private:
  void materialize() {
    const std::size_t n = size();
    copy_.resize(n ? n : 1);
    std::vector<std::size_t> shape(e_.shape().begin(), e_.shape().end());
    auto dst = xt::adapt(copy_.data(), n, xt::no_ownership(), shape);
    xt::noalias(dst) = xt::cast<float>(e_);
    ptr_ = copy_.data();
  }

  const E& e_;
  const float* ptr_ = nullptr;
  std::vector<float> copy_;
};

template <class E>
contiguous_floats<E> as_contiguous(const xt::xexpression<E>& x) {
  return contiguous_floats<E>(x.derived_cast());
}

// Readies a caller-provided output container for an elementwise kernel that reads
// `inputs` (contiguous_floats) and writes `shape`: when out's shape differs it is resized,
// the inputs first copied (one may be a view into out's storage, which resizing frees);
// otherwise an input overlapping out at a shift is copied (separate_from). Throws
// quant::length_error naming `argument`, before anything is written, when out's type cannot
// take `shape`: a fixed rank other than shape's (xt::xtensor<float, N>; xtensor's resize
// would write past its shape array) or a fixed shape (xt::xtensor_fixed; its resize does
// nothing).
template <class O, class S, class... Inputs>
void prepare_output(O& out, const S& shape, const char* function, const char* argument, Inputs&... inputs) {
  static_assert(is_row_major_float_container<O>::value, "outputs must be row-major float containers");
  if (std::equal(shape.begin(), shape.end(), out.shape().begin(), out.shape().end())) {
    (inputs.separate_from(out.data(), out.size()), ...);
    return;
  }
  using out_shape = typename O::shape_type;
  constexpr std::ptrdiff_t rank = xt::static_dimension<out_shape>::value;
  if (xt::detail::is_fixed<out_shape>::value)
    fail<length_error>(function, argument, shape_string(out.shape()),
                       "is the fixed shape of its type; it must equal the shape of x, " + shape_string(shape));
  if (rank >= 0 && static_cast<std::size_t>(rank) != shape.size())
    fail<length_error>(function, argument, shape_string(out.shape()),
                       "has the fixed rank " + std::to_string(rank) + " of its type; x has shape " + shape_string(shape));
  (inputs.detach(), ...);
  out.resize(shape);
}

// The container an eager function returns for input E and element type T: the same kind
// of container as the input when it is one (xtensor<float, N> -> xtensor<T, N>),
// xarray<T> otherwise.
template <class E, class T, class = void>
struct result_container {
  using type = xt::xarray<T, xt::layout_type::row_major>;
};
template <class C, std::size_t N, xt::layout_type L, class Tag, class T>
struct result_container<xt::xtensor_container<C, N, L, Tag>, T, void> {
  using type = xt::xtensor<T, N, xt::layout_type::row_major>;
};
template <class E, class T>
using result_container_t = typename result_container<E, T>::type;

}  // namespace detail
}  // namespace quant
