// fuzz_observers — observers merged in random splits against one pass. The data (rows of a
// 2-D or 3-D tensor, per tensor or with a channel axis other than the batch axis 0) is cut
// along axis 0 at random points; for minmax_observer, histogram_observer and
// sqnr_observer (documented as exact: the state is a function of the multiset of values),
//   one update over everything == updates part by part == one observer per part, merged
//   in a random order
// as observer state (operator==, and the saved text byte for byte) and as computed
// qparams (bit for bit) for a random grid and scheme; save -> load gives the same state.
// Data with NaN or +-inf must throw quant::domain_error and leave nothing half-updated.
#include <quant/observers.hpp>
#include <sstream>
#include <xtensor/xview.hpp>

#include "fuzz_common.hpp"

using namespace quant;

namespace {

template <class Obs>
std::string saved(const Obs& o) {
  std::ostringstream os;
  o.save(os);
  return os.str();
}

bool same_params(const qparams& a, const qparams& b) {
  if (a.size() != b.size() || a.zero_points() != b.zero_points()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (fuzz::bits_of(a.scales()[i]) != fuzz::bits_of(b.scales()[i])) return false;
  return true;
}

template <class Obs, class Make>
void check_observer(const char* name, Make make, const xt::xarray<float>& x, const std::vector<std::size_t>& cuts,
                    const std::vector<std::size_t>& merge_order, bool finite, grid g, scheme sch) {
  const std::string tag = name;
  Obs whole = make();
  try {
    whole.update(x);
  } catch (const domain_error&) {
    fuzz::require(!finite, tag + ": finite data threw domain_error");
    fuzz::require(whole.empty(), tag + ": a rejected update left state behind");
    return;
  }
  fuzz::require(finite, tag + ": NaN/inf data was accepted");
  Obs sequential = make();
  std::vector<Obs> parts;
  for (std::size_t k = 0; k + 1 < cuts.size(); ++k) {
    const auto part = xt::view(x, xt::range(cuts[k], cuts[k + 1]));
    sequential.update(part);
    parts.push_back(make());
    parts.back().update(part);
  }
  fuzz::require(sequential == whole, tag + ": updates part by part differ from one update");
  fuzz::require(saved(sequential) == saved(whole), tag + ": saved state differs (sequential)");
  // Merge in the given order: parts[order[0]] absorbs the others one by one.
  Obs merged = make();
  for (std::size_t k : merge_order) merged.merge(parts[k]);
  fuzz::require(merged == whole, tag + ": merged parts differ from one pass");
  fuzz::require(saved(merged) == saved(whole), tag + ": saved state differs (merged)");
  Obs loaded = make();
  std::istringstream is(saved(whole));
  loaded.load(is);
  fuzz::require(loaded == whole && saved(loaded) == saved(whole), tag + ": save -> load changed the state");
  const qparams a = whole.compute(g, sch), b = merged.compute(g, sch);
  fuzz::require(same_params(a, b), tag + ": compute() differs between merged and one pass");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const std::size_t nd = in.ConsumeIntegralInRange<std::size_t>(2, 3);
  std::vector<std::size_t> shape;
  shape.push_back(in.ConsumeIntegralInRange<std::size_t>(1, 40));
  for (std::size_t d = 1; d < nd; ++d) shape.push_back(in.ConsumeIntegralInRange<std::size_t>(1, 8));
  std::size_t n = 1;
  for (auto v : shape) n *= v;
  std::optional<std::ptrdiff_t> axis;
  if (in.ConsumeBool()) axis = in.ConsumeBool() ? -1 : static_cast<std::ptrdiff_t>(in.ConsumeIntegralInRange<std::size_t>(1, nd - 1));
  std::vector<float> v(n);
  const float spread = std::ldexp(1.0f, in.ConsumeIntegralInRange<int>(-100, 100));
  bool finite = true;
  for (auto& e : v) {
    switch (in.ConsumeIntegralInRange<int>(0, 15)) {
      case 0: e = fuzz::float_of(in.ConsumeIntegral<std::uint32_t>()); break;
      case 1: e = 0.0f; break;
      case 2: e = -0.0f; break;
      default: e = in.ConsumeFloatingPointInRange<float>(-1.0f, 1.0f) * spread; break;
    }
    finite = finite && std::isfinite(e);
  }
  const xt::xarray<float> x = xt::adapt(v, shape);
  // Cut points along axis 0 (parts are non-empty: an empty update is an error of its own).
  std::vector<std::size_t> cuts = {0};
  while (cuts.back() < shape[0]) cuts.push_back(in.ConsumeIntegralInRange<std::size_t>(cuts.back() + 1, shape[0]));
  std::vector<std::size_t> order(cuts.size() - 1);
  for (std::size_t k = 0; k < order.size(); ++k) order[k] = k;
  for (std::size_t k = order.size(); k > 1; --k) std::swap(order[k - 1], order[in.ConsumeIntegralInRange<std::size_t>(0, k - 1)]);
  grid g;
  g.bits = in.ConsumeIntegralInRange<int>(2, 16);
  g.is_signed = in.ConsumeBool();
  g.narrow = in.ConsumeBool();
  const scheme sch = in.ConsumeBool() ? scheme::symmetric : scheme::asymmetric;
  const std::size_t bins = in.ConsumeIntegralInRange<std::size_t>(2, 300);
  check_observer<minmax_observer>("minmax", [&] { return minmax_observer(axis); }, x, cuts, order, finite, g, sch);
  check_observer<histogram_observer>("histogram", [&] { return histogram_observer(axis, bins); }, x, cuts, order, finite, g, sch);
  sqnr_options so;
  so.bins = bins;
  check_observer<sqnr_observer>("sqnr", [&] { return sqnr_observer(axis, so); }, x, cuts, order, finite, g, sch);
  return 0;
}
