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
// the fields and their types and throws examples::encodings_error naming the file. Numbers
// are checked before any conversion: integers (bits, zero points, axis, group size) must be
// JSON integers within the target type's range (nlohmann's get<int>() would cast 1e30 or
// 4294967298 silently or with undefined behaviour), scales finite numbers within float range.
#pragma once

#include <cstddef>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
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

// The encodings document of `p` (the layout above); `shape` is the quantized tensor's shape.
nlohmann::ordered_json encodings_json(const quant::qparams& p, quant::scheme s, const std::vector<std::size_t>& shape,
                                      const std::string& rounding);

// The parameters of an encodings document; `where` names it in errors (usually the path).
quant::qparams encodings_from_json(const nlohmann::json& j, const std::string& where);

// The parameters of the encodings file `path`.
quant::qparams encodings_from_file(const std::string& path);

}  // namespace examples
