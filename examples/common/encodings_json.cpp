// examples/common/encodings_json.cpp — the encodings JSON writer and readers declared in
// encodings_json.hpp (the document and the checks: there).
#include "encodings_json.hpp"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <quant/error.hpp>
#include <quant/qparams.hpp>

namespace examples {

nlohmann::ordered_json encodings_json(const quant::qparams& p, quant::scheme s, const std::vector<std::size_t>& shape,
                                      const std::string& rounding) {
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

namespace detail {
namespace {

// A JSON integer within T's range, or encodings_error naming the field and the value.
template <class T>
T json_integer(const nlohmann::json& v, const std::string& field, const std::string& where) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u <= static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return static_cast<T>(u);
  } else if (v.is_number_integer()) {
    const auto i = v.get<std::int64_t>();
    if (i >= static_cast<std::int64_t>(std::numeric_limits<T>::min()) &&
        (i < 0 || static_cast<std::uint64_t>(i) <= static_cast<std::uint64_t>(std::numeric_limits<T>::max())))
      return static_cast<T>(i);
  } else {
    throw encodings_error(where + ": " + field + " = " + v.dump() + ": must be an integer");
  }
  throw encodings_error(where + ": " + field + " = " + v.dump() + ": out of range");
}

const nlohmann::json& json_array(const nlohmann::json& j, const char* field, const std::string& where) {
  const auto& a = j.at(field);
  if (!a.is_array()) throw encodings_error(where + ": " + field + " must be an array");
  return a;
}

}  // namespace
}  // namespace detail

quant::qparams encodings_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    const quant::grid g{detail::json_integer<int>(j.at("bits"), "bits", where), j.at("signed").get<bool>(),
                        j.value("narrow", false)};
    std::vector<float> s;
    for (const auto& v : detail::json_array(j, "scales", where)) {
      if (!v.is_number()) throw encodings_error(where + ": scales: " + v.dump() + " is not a number");
      const double d = v.get<double>();
      if (!(std::fabs(d) <= FLT_MAX))
        throw encodings_error(where + ": scales: " + v.dump() + " is not a finite float");
      s.push_back(static_cast<float>(d));
    }
    std::vector<std::int32_t> z;
    for (const auto& v : detail::json_array(j, "zero_points", where))
      z.push_back(detail::json_integer<std::int32_t>(v, "zero_points", where));
    const std::string gran = j.at("granularity").get<std::string>();
    if (gran == "per_tensor") {
      if (s.size() != 1 || z.size() != 1) throw encodings_error(where + ": per_tensor needs one scale and one zero point");
      return quant::qparams::per_tensor(g, s[0], z[0]);
    }
    if (gran == "per_channel")
      return quant::qparams::per_channel(g, s, z, detail::json_integer<std::ptrdiff_t>(j.at("axis"), "axis", where));
    if (gran == "per_group")
      return quant::qparams::per_group(g, s, z, detail::json_integer<std::ptrdiff_t>(j.at("axis"), "axis", where),
                                       detail::json_integer<std::size_t>(j.at("group_size"), "group_size", where));
    throw encodings_error(where + ": unknown granularity '" + gran + "'");
  } catch (const nlohmann::json::exception& e) {
    throw encodings_error(where + ": not a quant encodings file (" + e.what() + ")");
  } catch (const quant::error& e) {
    throw encodings_error(where + ": " + e.what());
  }
}

quant::qparams encodings_from_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw encodings_error(path + ": cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);  // the whole file: trailing bytes after the document are an error
  } catch (const nlohmann::json::exception& e) {
    throw encodings_error(path + ": not a quant encodings file (" + e.what() + ")");
  }
  return encodings_from_json(j, path);
}

}  // namespace examples
