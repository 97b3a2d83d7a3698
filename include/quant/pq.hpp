// quant/pq.hpp — product quantization of weight matrices and iPQ fine-tuning
// (docs/pq.md; Jegou et al. 2011, Stock et al. 2020 "And the Bit Goes Down",
// Fan et al. 2020 §5).
//
//   subvectors  W [out, in] (conv [out, in, kh, kw] flattened to [out, in*kh*kw]) is cut
//               into contiguous chunks of d elements of each row: in % d == 0; subvector
//               (r, s) = W[r, s*d .. s*d+d).
//   layouts     pq_layout::shared (fairseq / iPQ): one codebook of K centroids for every
//               subvector of the layer; pq_layout::per_subspace (Faiss ProductQuantizer):
//               one codebook per column block s, trained on the `out` subvectors of that
//               block. Centroids are stored [S, K, d] (S = 1 shared, in/d per subspace).
//   training    k-means of kmeans.hpp (random-sample or k-means++ init, seeded).
//   encode      index = nearest centroid (exact L2 argmin); decode = centroid lookup.
//   storage     indices packed LSB-first in b = ceil(log2 K) bits each; centroids float32
//               or int8 with one symmetric scale per codebook (s = absmax / 127, round half
//               to even). Size = index bytes + centroid bytes (+ 4 bytes per int8 scale);
//               compression ratio = 4 * out * in / size.
//   iPQ         fine-tuning with assignments fixed: each centroid moves by the average
//               gradient of the subvectors assigned to it,
//                 c <- c - lr * (1/|J_c|) sum_{(r,s) in J_c} dL/dW[r, s*d .. s*d+d),
//               and layers are quantized stage by stage (ipq_stagewise), fine-tuning the
//               quantized stages' centroids while the rest still trains.
//
// Public API
//   pq_options { d = 8, k = 256, iterations = 20, seed = 0, init, layout = shared,
//                max_training_points = 0 }
//   pq_codebook pq_train(W, options)                     codebook [S, K, d]
//   xt::xtensor<uint32_t,2> pq_encode(W, codebook)       indices [out, in/d]
//   xt::xtensor<float,2> pq_decode(codebook, indices)    [out, in]
//   pq_layer_result pq_quantize_layer(W, options)         d, K, seed and the rest from options
//   pq_layer_result pq_quantize_layer(W, d, K, seed)      the other options at their defaults
//       -> { codebook, indices, decoded (shaped like W), size, mse, objective }
//   unsigned pq_index_bits(K); packed_indices pack_indices(indices, bits);
//   xt::xtensor<uint32_t,2> unpack_indices(packed, rows, cols)
//   int8_codebook quantize_centroids(codebook); pq_codebook dequantize_centroids(int8_codebook)
//   pq_size_report pq_size(rows, cols, codebook)
//   xt::xtensor<float,3> ipq_centroid_gradients(codebook, indices, grad_W)   average gradients
//   void ipq_update_centroids(codebook&, indices, grad_W, lr)
//   ipq_stagewise<W>: add_layer / quantize_stage / finetune_step / size
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

#include "detail/contiguous.hpp"
#include "error.hpp"
#include "kmeans.hpp"
#include "rounding.hpp"

namespace quant {

enum class pq_layout { shared, per_subspace };

struct pq_options {
  std::size_t d = 8;      // subvector dimension (8 for Linear, 4 or 9 for conv)
  std::size_t k = 256;    // centroids per codebook
  std::size_t iterations = 20;
  std::uint64_t seed = 0;
  kmeans_init init = kmeans_init::random_sample;
  pq_layout layout = pq_layout::shared;
  std::size_t max_training_points = 0;  // per codebook; 0 = all subvectors
};

struct pq_codebook {
  pq_layout layout = pq_layout::shared;
  std::size_t d = 0, k = 0;
  xt::xtensor<float, 3> centroids;  // [S, K, d]
  std::size_t subspaces() const noexcept { return centroids.shape()[0]; }
};

struct int8_codebook {
  pq_layout layout = pq_layout::shared;
  std::size_t d = 0, k = 0;
  xt::xtensor<std::int8_t, 3> values;  // [S, K, d]
  std::vector<float> scales;           // one per codebook: c = values * scale
};

struct packed_indices {
  unsigned bits = 0;       // per index
  std::size_t count = 0;   // indices stored
  std::vector<std::uint8_t> bytes;  // LSB-first bit stream, ceil(count * bits / 8) bytes
};

struct pq_size_report {
  std::size_t weights = 0;           // out * in
  std::size_t float32_bytes = 0;     // 4 * weights
  unsigned index_bits = 0;           // ceil(log2 K)
  std::size_t index_bytes = 0;       // ceil(subvectors * index_bits / 8)
  std::size_t centroid_bytes = 0;    // float32 centroids: 4 * S * K * d
  std::size_t centroid_bytes_int8 = 0;  // int8 centroids + one float scale per codebook
  std::size_t total_bytes() const noexcept { return index_bytes + centroid_bytes; }
  std::size_t total_bytes_int8() const noexcept { return index_bytes + centroid_bytes_int8; }
  double compression_ratio() const noexcept { return double(float32_bytes) / double(total_bytes()); }
  double compression_ratio_int8() const noexcept { return double(float32_bytes) / double(total_bytes_int8()); }
};

struct pq_layer_result {
  pq_codebook codebook;
  xt::xtensor<std::uint32_t, 2> indices;  // [out, in/d]
  xt::xarray<float> decoded;              // shaped like W
  pq_size_report size;
  double mse = 0.0;                       // mean over weights of (W - decoded)^2
  std::vector<std::vector<double>> objective;  // k-means objective per codebook per iteration
};

namespace detail {

struct pq_matrix {
  const float* data;
  std::size_t rows, cols;
};

template <class C>
pq_matrix pq_view(const C& in, std::size_t d, const char* fn) {
  const auto& s = in.shape();
  if (s.size() < 2)
    fail<invalid_argument>(fn, "W", shape_string(s), "must be a weight [out, in] or conv [out, in, kh, kw]");
  if (d == 0) fail<invalid_argument>(fn, "d", d, "must be >= 1");
  std::size_t cols = 1;
  for (std::size_t i = 1; i < s.size(); ++i) cols *= static_cast<std::size_t>(s[i]);
  const std::size_t rows = static_cast<std::size_t>(s[0]);
  if (rows == 0 || cols == 0) fail<invalid_argument>(fn, "W", shape_string(s), "must not be empty");
  if (cols % d != 0)
    fail<invalid_argument>(fn, "d", d, "must divide in (* kh * kw) = " + std::to_string(cols));
  return {in.data(), rows, cols};
}

inline void check_codebook(const pq_codebook& cb, std::size_t cols, const char* fn) {
  if (cb.d == 0 || cb.k == 0 || cb.centroids.shape()[1] != cb.k || cb.centroids.shape()[2] != cb.d)
    fail<invalid_argument>(fn, "codebook", shape_string(cb.centroids.shape()), "is not a valid [S, K, d] codebook");
  if (cols % cb.d != 0) fail<invalid_argument>(fn, "d", cb.d, "must divide in = " + std::to_string(cols));
  const std::size_t want = cb.layout == pq_layout::shared ? 1 : cols / cb.d;
  if (cb.subspaces() != want)
    fail<length_error>(fn, "codebook subspaces", cb.subspaces(), "must be " + std::to_string(want) + " for this layout and width");
}

// Subvectors of column block s, gathered [rows, d].
inline std::vector<float> gather_subspace(const pq_matrix& m, std::size_t d, std::size_t s) {
  std::vector<float> v(m.rows * d);
  for (std::size_t r = 0; r < m.rows; ++r)
    std::copy(m.data + r * m.cols + s * d, m.data + r * m.cols + (s + 1) * d, v.begin() + r * d);
  return v;
}

inline std::uint32_t* index_row(xt::xtensor<std::uint32_t, 2>& idx, std::size_t r) { return idx.data() + r * idx.shape()[1]; }

}  // namespace detail

inline unsigned pq_index_bits(std::size_t k) {
  if (k == 0) detail::fail<invalid_argument>("pq_index_bits", "k", k, "must be >= 1");
  unsigned b = 0;
  while ((std::size_t(1) << b) < k) ++b;
  return b;
}

namespace detail {

// Trains the codebook(s) of m; also returns the final assignments as [rows, cols/d]
// indices when `indices` is given (k-means ends with an exact E-step on all points).
inline pq_codebook pq_fit(const pq_matrix& m, const pq_options& opt, std::vector<std::vector<double>>* objective,
                          xt::xtensor<std::uint32_t, 2>* indices, const char* fn) {
  const std::size_t d = opt.d, per_row = m.cols / d;
  kmeans_options ko;
  ko.k = opt.k;
  ko.iterations = opt.iterations;
  ko.seed = opt.seed;
  ko.init = opt.init;
  ko.max_training_points = opt.max_training_points;
  pq_codebook cb;
  cb.layout = opt.layout;
  cb.d = d;
  cb.k = opt.k;
  if (indices) *indices = xt::xtensor<std::uint32_t, 2>::from_shape({m.rows, per_row});
  if (opt.layout == pq_layout::shared) {
    const std::size_t n = m.rows * per_row;
    if (n < opt.k)
      fail<invalid_argument>(fn, "subvectors", n, "fewer subvectors than centroids (k = " + std::to_string(opt.k) + ")");
    kmeans_result r = kmeans(m.data, n, d, ko);  // rows are contiguous: so are their subvectors
    cb.centroids = xt::xtensor<float, 3>::from_shape({1, opt.k, d});
    std::copy(r.centroids.begin(), r.centroids.end(), cb.centroids.begin());
    if (objective) objective->assign(1, r.objective);
    if (indices) std::copy(r.assignments.begin(), r.assignments.end(), indices->begin());
  } else {
    if (m.rows < opt.k)
      fail<invalid_argument>(fn, "rows", m.rows,
                             "fewer subvectors per subspace than centroids (k = " + std::to_string(opt.k) + ")");
    cb.centroids = xt::xtensor<float, 3>::from_shape({per_row, opt.k, d});
    if (objective) objective->assign(per_row, {});
    for (std::size_t s = 0; s < per_row; ++s) {
      const std::vector<float> sub = gather_subspace(m, d, s);
      ko.seed = opt.seed + s;
      kmeans_result r = kmeans(sub.data(), m.rows, d, ko);
      std::copy(r.centroids.begin(), r.centroids.end(), cb.centroids.begin() + s * opt.k * d);
      if (objective) (*objective)[s] = r.objective;
      if (indices)
        for (std::size_t row = 0; row < m.rows; ++row) (*indices)(row, s) = r.assignments(row);
    }
  }
  return cb;
}

}  // namespace detail

// Trains the codebook(s) of W (rows = W.shape()[0], the other dimensions flattened).
// `objective`, if given, receives the k-means objective per codebook per iteration.
template <class E>
pq_codebook pq_train(const xt::xexpression<E>& w, const pq_options& opt,
                     std::vector<std::vector<double>>* objective = nullptr) {
  const auto in = detail::as_contiguous(w);
  return detail::pq_fit(detail::pq_view(in, opt.d, "pq_train"), opt, objective, nullptr, "pq_train");
}

// Nearest-centroid index of every subvector: [out, in/d].
template <class E>
xt::xtensor<std::uint32_t, 2> pq_encode(const xt::xexpression<E>& w, const pq_codebook& cb) {
  const char* fn = "pq_encode";
  const auto in = detail::as_contiguous(w);
  const detail::pq_matrix m = detail::pq_view(in, cb.d, fn);
  detail::check_codebook(cb, m.cols, fn);
  detail::check_points(m.data, m.rows * m.cols / cb.d, cb.d, fn);
  const std::size_t d = cb.d, per_row = m.cols / d;
  xt::xtensor<std::uint32_t, 2> idx = xt::xtensor<std::uint32_t, 2>::from_shape({m.rows, per_row});
  if (cb.layout == pq_layout::shared) {
    detail::assign(m.data, m.rows * per_row, d, cb.centroids.data(), cb.k, 32, idx.data());
  } else {
    std::vector<std::uint32_t> col(m.rows);
    for (std::size_t s = 0; s < per_row; ++s) {
      const std::vector<float> sub = detail::gather_subspace(m, d, s);
      detail::assign(sub.data(), m.rows, d, cb.centroids.data() + s * cb.k * d, cb.k, 32, col.data());
      for (std::size_t r = 0; r < m.rows; ++r) idx(r, s) = col[r];
    }
  }
  return idx;
}

// Centroid lookup: [out, in] with in = indices.shape()[1] * d.
inline xt::xtensor<float, 2> pq_decode(const pq_codebook& cb, const xt::xtensor<std::uint32_t, 2>& idx) {
  const char* fn = "pq_decode";
  const std::size_t rows = idx.shape()[0], per_row = idx.shape()[1], d = cb.d;
  detail::check_codebook(cb, per_row * d, fn);
  xt::xtensor<float, 2> out = xt::xtensor<float, 2>::from_shape({rows, per_row * d});
  const bool shared = cb.layout == pq_layout::shared;
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t s = 0; s < per_row; ++s) {
      const std::uint32_t q = idx(r, s);
      if (q >= cb.k) detail::fail<invalid_argument>(fn, "index", q, "must be < k = " + std::to_string(cb.k));
      const float* c = cb.centroids.data() + ((shared ? 0 : s) * cb.k + q) * d;
      std::copy(c, c + d, out.data() + r * per_row * d + s * d);
    }
  return out;
}

// Packs indices (each < 2^bits) LSB-first, `bits` per index (0..32).
template <class E>
packed_indices pack_indices(const xt::xexpression<E>& indices, unsigned bits) {
  const char* fn = "pack_indices";
  if (bits > 32) detail::fail<invalid_argument>(fn, "bits", bits, "must be <= 32");
  const auto& e = indices.derived_cast();
  packed_indices p;
  p.bits = bits;
  p.count = e.size();
  p.bytes.assign((p.count * bits + 7) / 8, 0);
  std::size_t pos = 0;
  for (auto it = e.begin(); it != e.end(); ++it, pos += bits) {
    const std::uint64_t v = static_cast<std::uint64_t>(*it);
    if (bits < 32 && (v >> bits) != 0)
      detail::fail<invalid_argument>(fn, "index", v, "does not fit in " + std::to_string(bits) + " bits");
    for (unsigned b = 0; b < bits; ++b)
      if ((v >> b) & 1u) p.bytes[(pos + b) >> 3] |= static_cast<std::uint8_t>(1u << ((pos + b) & 7));
  }
  return p;
}

// The indices of pack_indices, as a [rows, cols] matrix (rows * cols == p.count).
inline xt::xtensor<std::uint32_t, 2> unpack_indices(const packed_indices& p, std::size_t rows, std::size_t cols) {
  const char* fn = "unpack_indices";
  if (rows * cols != p.count)
    detail::fail<length_error>(fn, "rows * cols", rows * cols, "must equal the packed count " + std::to_string(p.count));
  if (p.bytes.size() != (p.count * p.bits + 7) / 8)
    detail::fail<length_error>(fn, "bytes.size()", p.bytes.size(), "does not match count and bits");
  xt::xtensor<std::uint32_t, 2> out = xt::xtensor<std::uint32_t, 2>::from_shape({rows, cols});
  std::size_t pos = 0;
  for (std::size_t i = 0; i < p.count; ++i, pos += p.bits) {
    std::uint32_t v = 0;
    for (unsigned b = 0; b < p.bits; ++b) v |= static_cast<std::uint32_t>((p.bytes[(pos + b) >> 3] >> ((pos + b) & 7)) & 1u) << b;
    out.data()[i] = v;
  }
  return out;
}

// int8 centroids, one symmetric scale per codebook: s = max(absmax / 127, FLT_EPSILON),
// q = clamp(round_half_even(c * (1/s)), -127, 127).
inline int8_codebook quantize_centroids(const pq_codebook& cb) {
  int8_codebook q;
  q.layout = cb.layout;
  q.d = cb.d;
  q.k = cb.k;
  q.values = xt::xtensor<std::int8_t, 3>::from_shape(cb.centroids.shape());
  const std::size_t per = cb.k * cb.d;
  for (std::size_t s = 0; s < cb.subspaces(); ++s) {
    const float* c = cb.centroids.data() + s * per;
    float absmax = 0.0f;
    for (std::size_t i = 0; i < per; ++i) absmax = std::max(absmax, std::fabs(c[i]));
    const float scale = std::max(absmax / 127.0f, FLT_EPSILON);
    const float inv = 1.0f / scale;
    for (std::size_t i = 0; i < per; ++i) {
      const float v = round_half_to_even::apply(c[i] * inv);
      q.values.data()[s * per + i] = static_cast<std::int8_t>(std::min(127.0f, std::max(-127.0f, v)));
    }
    q.scales.push_back(scale);
  }
  return q;
}

inline pq_codebook dequantize_centroids(const int8_codebook& q) {
  pq_codebook cb;
  cb.layout = q.layout;
  cb.d = q.d;
  cb.k = q.k;
  cb.centroids = xt::xtensor<float, 3>::from_shape(q.values.shape());
  const std::size_t per = q.k * q.d;
  if (q.scales.size() != q.values.shape()[0])
    detail::fail<length_error>("dequantize_centroids", "scales.size()", q.scales.size(), "must equal the codebook count");
  for (std::size_t s = 0; s < q.scales.size(); ++s)
    for (std::size_t i = 0; i < per; ++i)
      cb.centroids.data()[s * per + i] = static_cast<float>(q.values.data()[s * per + i]) * q.scales[s];
  return cb;
}

// Bytes of a PQ-compressed [rows, cols] layer against float32.
inline pq_size_report pq_size(std::size_t rows, std::size_t cols, const pq_codebook& cb) {
  detail::check_codebook(cb, cols, "pq_size");
  pq_size_report r;
  r.weights = rows * cols;
  r.float32_bytes = 4 * r.weights;
  r.index_bits = pq_index_bits(cb.k);
  r.index_bytes = (r.weights / cb.d * r.index_bits + 7) / 8;
  r.centroid_bytes = 4 * cb.subspaces() * cb.k * cb.d;
  r.centroid_bytes_int8 = cb.subspaces() * cb.k * cb.d + 4 * cb.subspaces();
  return r;
}

// Train, encode and decode one layer: the one-call form for tools and demos. The options
// are used as given (d, k and seed included; nothing is overwritten). Throws
// quant::invalid_argument when they do not fit W (d must divide the row length, k must not
// exceed the subvectors a codebook is trained on), quant::domain_error for non-finite W.
template <class E>
pq_layer_result pq_quantize_layer(const xt::xexpression<E>& w, const pq_options& opt) {
  const char* fn = "pq_quantize_layer";
  const auto in = detail::as_contiguous(w);
  const detail::pq_matrix m = detail::pq_view(in, opt.d, fn);
  pq_layer_result r;
  r.codebook = detail::pq_fit(m, opt, &r.objective, &r.indices, fn);
  const xt::xtensor<float, 2> dec = pq_decode(r.codebook, r.indices);
  r.decoded = xt::xarray<float>::from_shape(in.shape());
  std::copy(dec.begin(), dec.end(), r.decoded.begin());
  double s = 0.0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const double t = static_cast<double>(in.data()[i]) - static_cast<double>(dec.data()[i]);
    s += t * t;
  }
  r.mse = s / static_cast<double>(in.size());
  r.size = pq_size(m.rows, m.cols, r.codebook);
  return r;
}

// The same with subvector dimension d, k centroids per codebook and the k-means seed, the
// other options at their pq_options defaults.
template <class E>
pq_layer_result pq_quantize_layer(const xt::xexpression<E>& w, std::size_t d, std::size_t k, std::uint64_t seed) {
  pq_options opt;
  opt.d = d;
  opt.k = k;
  opt.seed = seed;
  return pq_quantize_layer(w, opt);
}

// The earlier form, deprecated: d, k and seed used to overwrite the options' fields. Now
// they must agree with them (quant::invalid_argument naming options.d / options.k /
// options.seed and both values otherwise); pass the options alone instead.
template <class E>
[[deprecated("set d, k and seed in the options and call pq_quantize_layer(W, options)")]] pq_layer_result
pq_quantize_layer(const xt::xexpression<E>& w, std::size_t d, std::size_t k, std::uint64_t seed,
                  const pq_options& opt) {
  const char* fn = "pq_quantize_layer";
  if (opt.d != d)
    detail::fail<invalid_argument>(fn, "options.d", opt.d, "differs from the argument d = " + std::to_string(d));
  if (opt.k != k)
    detail::fail<invalid_argument>(fn, "options.k", opt.k, "differs from the argument k = " + std::to_string(k));
  if (opt.seed != seed)
    detail::fail<invalid_argument>(fn, "options.seed", opt.seed,
                                   "differs from the argument seed = " + std::to_string(seed));
  return pq_quantize_layer(w, opt);
}

// Average gradient of the subvectors assigned to each centroid, [S, K, d] (zero for
// centroids with no subvector). grad has W's shape (or any shape of out * in elements
// with out = indices.shape()[0]). A NaN or +-inf in grad throws quant::domain_error
// naming grad[i] (i its flat row-major index, the first one found).
namespace detail {
// ipq_centroid_gradients for the entry point `fn`, whose gradient argument is named `arg`.
template <class E>
xt::xtensor<float, 3> ipq_centroid_gradients(const pq_codebook& cb, const xt::xtensor<std::uint32_t, 2>& idx,
                                             const xt::xexpression<E>& grad, const char* fn, const std::string& arg) {
  const auto g = detail::as_contiguous(grad);
  const std::size_t rows = idx.shape()[0], per_row = idx.shape()[1], d = cb.d;
  detail::check_codebook(cb, per_row * d, fn);
  if (g.size() != rows * per_row * d)
    detail::fail<length_error>(fn, arg.c_str(), detail::shape_string(g.shape()),
                               "must have the " + std::to_string(rows * per_row * d) + " elements of the layer");
  const std::size_t S = cb.subspaces(), K = cb.k;
  std::vector<double> sum(S * K * d, 0.0);
  std::vector<std::size_t> cnt(S * K, 0);
  const bool shared = cb.layout == pq_layout::shared;
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t s = 0; s < per_row; ++s) {
      const std::uint32_t q = idx(r, s);
      if (q >= K) detail::fail<invalid_argument>(fn, "index", q, "must be < k = " + std::to_string(K));
      const std::size_t slot = (shared ? 0 : s) * K + q;
      ++cnt[slot];
      const float* gs = g.data() + r * per_row * d + s * d;
      bool finite = true;
      for (std::size_t j = 0; j < d; ++j) {
        finite &= std::isfinite(gs[j]);
        sum[slot * d + j] += static_cast<double>(gs[j]);
      }
      if (!finite) {
        const std::size_t i0 = r * per_row * d + s * d;
        std::size_t j = 0;
        while (std::isfinite(gs[j])) ++j;
        detail::fail<domain_error>(fn, (arg + "[" + std::to_string(i0 + j) + "]").c_str(), gs[j], "must be finite");
      }
    }
  xt::xtensor<float, 3> out = xt::xtensor<float, 3>::from_shape({S, K, d});
  for (std::size_t slot = 0; slot < S * K; ++slot)
    for (std::size_t j = 0; j < d; ++j)
      out.data()[slot * d + j] = cnt[slot] ? static_cast<float>(sum[slot * d + j] / static_cast<double>(cnt[slot])) : 0.0f;
  return out;
}
}  // namespace detail

template <class E>
xt::xtensor<float, 3> ipq_centroid_gradients(const pq_codebook& cb, const xt::xtensor<std::uint32_t, 2>& idx,
                                             const xt::xexpression<E>& grad) {
  return detail::ipq_centroid_gradients(cb, idx, grad, "ipq_centroid_gradients", "grad");
}

// One SGD step of iPQ fine-tuning: c <- c - lr * average gradient. Throws before the
// codebook is touched (non-finite lr or grad, bad indices): the codebook is then unchanged.
template <class E>
void ipq_update_centroids(pq_codebook& cb, const xt::xtensor<std::uint32_t, 2>& idx, const xt::xexpression<E>& grad,
                          float lr) {
  if (!std::isfinite(lr)) detail::fail<invalid_argument>("ipq_update_centroids", "lr", lr, "must be finite");
  const xt::xtensor<float, 3> g = detail::ipq_centroid_gradients(cb, idx, grad, "ipq_update_centroids", "grad");
  for (std::size_t i = 0; i < g.size(); ++i) cb.centroids.data()[i] -= lr * g.data()[i];
}

// Stage-by-stage iPQ (Stock et al. 2020 §3.3): register the layers with their stage,
// quantize one stage at a time; between stages, train as usual and call finetune_step
// with the layers' gradients: quantized layers move their centroids by the average
// gradient and have their weights re-decoded; the other layers are left to the caller's
// optimizer. Weights are the caller's containers (xt::xtensor<float, 2> by default),
// referenced, not copied: they must outlive this object.
template <class W = xt::xtensor<float, 2>>
class ipq_stagewise {
 public:
  struct layer {
    std::string name;
    W* weight = nullptr;
    pq_options options;
    std::size_t stage = 0;
    bool quantized = false;
    pq_codebook codebook;
    xt::xtensor<std::uint32_t, 2> indices;
    double mse = 0.0;  // at quantization time
  };

  std::size_t add_layer(std::string name, W& weight, const pq_options& opt, std::size_t stage) {
    layer l;
    l.name = std::move(name);
    l.weight = &weight;
    l.options = opt;
    l.stage = stage;
    layers_.push_back(std::move(l));
    return layers_.size() - 1;
  }

  std::size_t layer_count() const noexcept { return layers_.size(); }
  std::size_t stage_count() const noexcept {
    std::size_t s = 0;
    for (const auto& l : layers_) s = std::max(s, l.stage + 1);
    return s;
  }
  const layer& at(std::size_t i) const { return layers_.at(i); }

  // k-means on every layer of `stage` (current weights), weights := decoded.
  // Returns the per-layer MSE in layer order (only the stage's layers).
  std::vector<double> quantize_stage(std::size_t stage) {
    std::vector<double> mses;
    for (auto& l : layers_) {
      if (l.stage != stage) continue;
      pq_layer_result r = pq_quantize_layer(*l.weight, l.options);
      l.codebook = std::move(r.codebook);
      l.indices = std::move(r.indices);
      l.mse = r.mse;
      l.quantized = true;
      std::copy(r.decoded.begin(), r.decoded.end(), l.weight->begin());
      mses.push_back(r.mse);
    }
    return mses;
  }

  // grads[i] = dL/dW of layer i (nullptr to skip). Quantized layers: centroid step and
  // re-decode; returns how many layers were updated. Every gradient is checked before any
  // layer moves: on an exception (e.g. quant::domain_error naming grads[i][j] for a NaN or
  // inf) no codebook and no weight has changed.
  std::size_t finetune_step(const std::vector<const W*>& grads, float lr) {
    const char* fn = "ipq_stagewise::finetune_step";
    if (grads.size() != layers_.size())
      detail::fail<length_error>(fn, "grads.size()", grads.size(),
                                 "must equal the layer count " + std::to_string(layers_.size()));
    if (!std::isfinite(lr)) detail::fail<invalid_argument>(fn, "lr", lr, "must be finite");
    std::vector<xt::xtensor<float, 3>> steps(layers_.size());
    for (std::size_t i = 0; i < layers_.size(); ++i)
      if (layers_[i].quantized && grads[i] != nullptr)
        steps[i] = detail::ipq_centroid_gradients(layers_[i].codebook, layers_[i].indices, *grads[i], fn,
                                                  "grads[" + std::to_string(i) + "]");
    std::size_t updated = 0;
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      layer& l = layers_[i];
      if (!l.quantized || grads[i] == nullptr) continue;
      const xt::xtensor<float, 3>& g = steps[i];
      for (std::size_t j = 0; j < g.size(); ++j) l.codebook.centroids.data()[j] -= lr * g.data()[j];
      const xt::xtensor<float, 2> dec = pq_decode(l.codebook, l.indices);
      std::copy(dec.begin(), dec.end(), l.weight->begin());
      ++updated;
    }
    return updated;
  }

  // Size of the quantized layers (float32 bytes of the others are not included).
  pq_size_report size() const {
    pq_size_report t;
    for (const auto& l : layers_) {
      if (!l.quantized) continue;
      const pq_size_report r = pq_size(l.indices.shape()[0], l.indices.shape()[1] * l.codebook.d, l.codebook);
      t.weights += r.weights;
      t.float32_bytes += r.float32_bytes;
      t.index_bits = std::max(t.index_bits, r.index_bits);
      t.index_bytes += r.index_bytes;
      t.centroid_bytes += r.centroid_bytes;
      t.centroid_bytes_int8 += r.centroid_bytes_int8;
    }
    return t;
  }

 private:
  std::vector<layer> layers_;
};

}  // namespace quant
