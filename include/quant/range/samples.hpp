// quant/range/samples.hpp — the exact sample store behind the percentile and MSE
// observers: every observed value, channel-major (channel c's values contiguous, in
// arrival order). Exact statistics need the data itself; memory is 4 bytes per observed
// value, so for long calibration runs prefer the histogram observers (bounded state).
// merge() appends the other store's values channel by channel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "common.hpp"
#include "io.hpp"

namespace quant {
namespace detail {

struct sample_store {
  observer_channels ch;
  std::vector<std::vector<float>> values;  // [channel][sample]
  std::vector<min_max_result> range;       // per channel, of all values

  template <class Shape>
  void append(const float* x, const Shape& shape, const char* function) {
    const channel_layout l = ch.bind(shape, function);
    const auto r = channel_min_max(x, l, function);  // validates finiteness before storing
    ch.commit(l);
    if (values.empty()) {
      values.resize(l.channels);
      range.assign(l.channels, min_max_result{});
    }
    const std::size_t m = l.per_channel_size();
    for (std::size_t c = 0; c < l.channels; ++c) {
      values[c].reserve(values[c].size() + m);
      range[c] = combine(range[c], r[c]);
    }
    for (std::size_t o = 0; o < l.outer; ++o)
      for (std::size_t c = 0; c < l.channels; ++c) {
        const float* src = x + (o * l.channels + c) * l.inner;
        values[c].insert(values[c].end(), src, src + l.inner);
      }
  }

  void merge(const sample_store& other, const char* function) {
    ch.check_merge(other.ch, function);
    if (other.values.empty()) return;
    if (values.empty()) {
      *this = other;
      return;
    }
    for (std::size_t c = 0; c < values.size(); ++c) {
      values[c].insert(values[c].end(), other.values[c].begin(), other.values[c].end());
      range[c] = combine(range[c], other.range[c]);
    }
  }

  void save(std::ostream& os) const {
    write_axis(os, ch.axis);
    std::vector<std::uint64_t> counts;
    for (const auto& v : values) counts.push_back(v.size());
    write_field(os, "counts", counts);
    for (const auto& v : values) write_field(os, "values", v);
  }

  void load(observer_reader& r) {
    sample_store s;
    s.ch.axis = r.axis();
    const auto counts = r.field<std::uint64_t>("counts");
    if (!s.ch.axis && counts.size() > 1) r.bad("counts", "a per-tensor observer has one channel");
    for (auto n : counts) {
      if (n == 0) r.bad("counts", "every channel holds at least one value");
      s.values.push_back(r.field<float>("values", static_cast<std::size_t>(n)));
      min_max_result mm = min_max_run<simd::scalar>(s.values.back().data(), s.values.back().size());
      if (!mm.finite) r.bad("values", "must be finite");
      mm.min += 0.0f;
      mm.max += 0.0f;
      s.range.push_back(mm);
    }
    s.ch.channels = counts.size();
    *this = std::move(s);
  }

  void clear() {
    ch.channels = 0;
    values.clear();
    range.clear();
  }
};

}  // namespace detail
}  // namespace quant
