// fuzz_encodings_json — the encodings JSON reader (examples/common/encodings_json.hpp,
// behind `quant --params` and the model bundle) on arbitrary bytes. Contract: it throws
// examples::encodings_error or returns qparams whose grid, scales, zero points, axis and group
// size are exactly the document's numbers; no other exception, no UB (a JSON number
// outside the target type's range must not be cast: UBSan's float-cast-overflow), no
// sanitizer report.
#include <nlohmann/json.hpp>

#include "../examples/common/encodings_json.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = fuzz::scratch_path("json");
  fuzz::write_file(path, data, size);
  quant::qparams p;
  try {
    p = examples::encodings_from_file(path);
  } catch (const examples::encodings_error&) {
    return 0;
  }
  // Accepted: the document parses, and its numbers are what the qparams hold.
  const auto j = nlohmann::json::parse(data, data + size);
  fuzz::require(j.at("bits").is_number_integer() && j.at("bits").get<long long>() == p.grid().bits, "bits differ");
  fuzz::require(j.at("signed").get<bool>() == p.grid().is_signed, "signed differs");
  const auto& s = j.at("scales");
  const auto& z = j.at("zero_points");
  fuzz::require(s.is_array() && z.is_array() && s.size() == p.size() && z.size() == p.size(), "counts differ");
  for (std::size_t i = 0; i < p.size(); ++i) {
    fuzz::require(s[i].is_number() && static_cast<double>(p.scales()[i]) == static_cast<double>(static_cast<float>(s[i].get<double>())),
                  "scale " + std::to_string(i) + " differs");
    fuzz::require(z[i].is_number_integer() && z[i].get<long long>() == p.zero_points()[i],
                  "zero point " + std::to_string(i) + " differs");
  }
  if (p.granularity() != quant::granularity::per_tensor)
    fuzz::require(j.at("axis").is_number_integer() && j.at("axis").get<long long>() == p.axis(), "axis differs");
  if (p.granularity() == quant::granularity::per_group)
    fuzz::require(j.at("group_size").is_number_unsigned() && j.at("group_size").get<unsigned long long>() == p.group_size(),
                  "group_size differs");
  return 0;
}
