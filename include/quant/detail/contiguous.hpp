// quant/detail/contiguous.hpp — getting a contiguous row-major float buffer out of any
// xtensor expression, without a copy when the expression already is one.
#pragma once

#include <cstddef>
#include <type_traits>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xexpression.hpp>
#include <xtensor/xlayout.hpp>

namespace quant {
namespace detail {

template <class E, class = void>
struct is_row_major_float_container : std::false_type {};
template <class E>
struct is_row_major_float_container<
    E, std::enable_if_t<std::is_same<typename E::temporary_type, E>::value &&
                        std::is_same<typename E::value_type, float>::value &&
                        E::static_layout == xt::layout_type::row_major>> : std::true_type {};

// Holds either a pointer into the caller's container or an evaluated copy.
template <class E, bool Direct = is_row_major_float_container<E>::value>
struct contiguous_floats;

template <class E>
struct contiguous_floats<E, true> {
  const E& e;
  explicit contiguous_floats(const E& x) : e(x) {}
  const float* data() const noexcept { return e.data(); }
  const auto& shape() const noexcept { return e.shape(); }
  std::size_t size() const noexcept { return e.size(); }
};

template <class E>
struct contiguous_floats<E, false> {
  xt::xarray<float, xt::layout_type::row_major> copy;
  explicit contiguous_floats(const E& x) : copy(xt::cast<float>(x)) {}
  const float* data() const noexcept { return copy.data(); }
  const auto& shape() const noexcept { return copy.shape(); }
  std::size_t size() const noexcept { return copy.size(); }
};

template <class E>
contiguous_floats<E> as_contiguous(const xt::xexpression<E>& x) {
  return contiguous_floats<E>(x.derived_cast());
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
