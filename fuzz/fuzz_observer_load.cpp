// fuzz_observer_load — the observers' saved-state reader (quant/range/io.hpp) on arbitrary
// text. Contract: load() throws a quant exception (quant::error) or succeeds; no other
// exception (std::bad_alloc from a count the stream does not hold), no sanitizer report.
// A stream that loads saves to text that loads back to the same observer and the same text.
#include <quant/observers.hpp>
#include <sstream>

#include "fuzz_common.hpp"

namespace {
template <class Obs>
void try_load(const std::string& text, Obs fresh) {
  std::istringstream is(text);
  try {
    fresh.load(is);
  } catch (const quant::error&) {
    return;
  }
  std::ostringstream os;
  fresh.save(os);
  Obs again;
  std::istringstream is2(os.str());
  again.load(is2);
  std::ostringstream os2;
  again.save(os2);
  fuzz::require(os.str() == os2.str(), "save -> load -> save is not a fixed point");
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try_load(text, quant::minmax_observer());
  try_load(text, quant::moving_average_minmax_observer());
  try_load(text, quant::histogram_observer());
  try_load(text, quant::sqnr_observer());
  try_load(text, quant::mse_observer());
  try_load(text, quant::percentile_observer());
  return 0;
}
