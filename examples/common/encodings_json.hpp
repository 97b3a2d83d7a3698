// examples/common/encodings_json.hpp — quantizer parameters (quant::qparams) as the
// "quant-encodings" JSON document shared by `quant quantize --encodings`, `quant calibrate`
// and the model bundle:
//
//   {"format": "quant-encodings", "version": 1, "bits": 8, "signed": true, "narrow": false,
//    "qmin": -128, "qmax": 127, "scheme": "symmetric", "granularity": "per_channel",
//    "axis": 0, "rounding": "half_to_even", "shape": [16, 1, 3, 3],
//    "scales": [...], "zero_points": [...]}
//
// `axis` is present for per_channel / per_group, `group_size` for per_group. Reading checks
// the fields and their types and throws examples::encodings_error naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <quant/error.hpp>
#include <quant/qparams.hpp>

namespace examples {

struct encodings_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline const char* granularity_name(quant::granularity g) {
  switch (g) {
    case quant::granularity::per_tensor: return "per_tensor";
    case quant::granularity::per_channel: return "per_channel";
    case quant::granularity::per_group: return "per_group";
  }
  return "?";
}

inline nlohmann::ordered_json encodings_json(const quant::qparams& p, quant::scheme s,
                                             const std::vector<std::size_t>& shape, const std::string& rounding) {
  nlohmann::ordered_json j;
  j["format"] = "quant-encodings";
  j["version"] = 1;
  j["bits"] = p.grid().bits;
  j["signed"] = p.grid().is_signed;
  j["narrow"] = p.grid().narrow;
  j["qmin"] = p.qmin();
  j["qmax"] = p.qmax();
  j["scheme"] = s == quant::scheme::symmetric ? "symmetric" : "asymmetric";
  j["granularity"] = granularity_name(p.granularity());
  if (p.granularity() != quant::granularity::per_tensor) j["axis"] = p.axis();
  if (p.granularity() == quant::granularity::per_group) j["group_size"] = p.group_size();
  j["rounding"] = rounding;
  j["shape"] = shape;
  j["scales"] = p.scales();
  j["zero_points"] = p.zero_points();
  return j;
}

// The parameters of an encodings document; `where` names it in errors (usually the path).
inline quant::qparams encodings_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    const quant::grid g{j.at("bits").get<int>(), j.at("signed").get<bool>(), j.value("narrow", false)};
    const auto s = j.at("scales").get<std::vector<float>>();
    const auto z = j.at("zero_points").get<std::vector<std::int32_t>>();
    const std::string gran = j.at("granularity").get<std::string>();
    if (gran == "per_tensor") {
      if (s.size() != 1 || z.size() != 1) throw encodings_error(where + ": per_tensor needs one scale and one zero point");
      return quant::qparams::per_tensor(g, s[0], z[0]);
    }
    if (gran == "per_channel") return quant::qparams::per_channel(g, s, z, j.at("axis").get<std::ptrdiff_t>());
    if (gran == "per_group")
      return quant::qparams::per_group(g, s, z, j.at("axis").get<std::ptrdiff_t>(), j.at("group_size").get<std::size_t>());
    throw encodings_error(where + ": unknown granularity '" + gran + "'");
  } catch (const nlohmann::json::exception& e) {
    throw encodings_error(where + ": not a quant encodings file (" + e.what() + ")");
  } catch (const quant::error& e) {
    throw encodings_error(where + ": " + e.what());
  }
}

inline quant::qparams encodings_from_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw encodings_error(path + ": cannot open");
  nlohmann::json j;
  try {
    f >> j;
  } catch (const nlohmann::json::exception& e) {
    throw encodings_error(path + ": not a quant encodings file (" + e.what() + ")");
  }
  return encodings_from_json(j, path);
}

}  // namespace examples
