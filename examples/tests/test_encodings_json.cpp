// The encodings JSON reader of the examples (examples/common/encodings_json.hpp, behind
// `quant --params` and the model bundle) on documents whose numbers do not fit their fields.
// Found by fuzz_encodings_json: nlohmann's get<int>() casts a JSON float such as 1e30 to int
// (undefined behaviour, reported by UBSan) and wraps 4294967298 to 2, so "bits": 4294967298
// was read as a 2-bit grid; zero points 1.5 were truncated to 1.
#include "../common/encodings_json.hpp"

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <string>

namespace {

std::string error_of(const std::string& text) {
  try {
    const auto j = nlohmann::json::parse(text);
    const quant::qparams p = examples::encodings_from_json(j, "doc.json");
    return "accepted: bits " + std::to_string(p.grid().bits) + ", z " + std::to_string(p.zero_point());
  } catch (const examples::encodings_error& e) {
    return e.what();
  }
}

std::string doc(const std::string& bits, const std::string& scales, const std::string& zps,
                const std::string& extra = R"("granularity": "per_tensor")") {
  return R"({"bits": )" + bits + R"(, "signed": true, "scales": )" + scales + R"(, "zero_points": )" + zps + ", " +
         extra + "}";
}

}  // namespace

TEST_CASE("encodings JSON: numbers are range- and type-checked before conversion", "[examples][json]") {
  using Catch::Contains;
  CHECK_THAT(error_of(doc("8", "[0.5]", "[3]")), Contains("accepted: bits 8, z 3"));
  CHECK_THAT(error_of(doc("4294967298", "[0.5]", "[0]")), Contains("bits = 4294967298: out of range"));
  CHECK_THAT(error_of(doc("1e30", "[0.5]", "[0]")), Contains("bits = 1e+30: must be an integer"));
  CHECK_THAT(error_of(doc("8.0", "[0.5]", "[0]")), Contains("bits = 8.0: must be an integer"));
  CHECK_THAT(error_of(doc("-2147483649", "[0.5]", "[0]")), Contains("out of range"));
  CHECK_THAT(error_of(doc("8", "[0.5]", "[1.5]")), Contains("zero_points = 1.5: must be an integer"));
  CHECK_THAT(error_of(doc("8", "[0.5]", "[4294967296]")), Contains("zero_points = 4294967296: out of range"));
  CHECK_THAT(error_of(doc("8", "[1e300]", "[0]")), Contains("is not a finite float"));
  CHECK_THAT(error_of(doc("8", "[\"0.5\"]", "[0]")), Contains("is not a number"));
  CHECK_THAT(error_of(doc("8", "0.5", "[0]")), Contains("scales must be an array"));
  CHECK_THAT(error_of(doc("8", "[0.5, 0.25]", "[0, 1]", R"("granularity": "per_channel", "axis": 1e300)")),
             Contains("axis = 1e+300: must be an integer"));
  CHECK_THAT(error_of(doc("8", "[0.5, 0.25]", "[0, 1]", R"("granularity": "per_group", "axis": 0, "group_size": -2)")),
             Contains("group_size = -2: out of range"));
  CHECK_THAT(error_of(doc("8", "[0.5, 0.25]", "[0, 1]", R"("granularity": "per_group", "axis": -1, "group_size": 2)")),
             Contains("accepted"));
}
TEST_CASE("encodings JSON file: the whole file is one document", "[examples][json]") {
  // Found by fuzz_encodings_json: the reader used operator>>, which stops after the first
  // value, so a file with bytes after the document was accepted.
  using Catch::Contains;
  const std::string path = "test_encodings_json_trailing.json";
  const std::string good = doc("8", "[0.5]", "[3]");
  auto read_with = [&](const std::string& text) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
    try {
      const quant::qparams p = examples::encodings_from_file(path);
      std::remove(path.c_str());
      return "accepted: z " + std::to_string(p.zero_point());
    } catch (const examples::encodings_error& e) {
      std::remove(path.c_str());
      return std::string(e.what());
    }
  };
  SECTION("trailing whitespace is part of a document") { CHECK(read_with(good + " \n\t\r\n") == "accepted: z 3"); }
  SECTION("a second value, a stray brace or binary bytes after it are not") {
    CHECK_THAT(read_with(good + "{}"), Contains(path) && Contains("not a quant encodings file"));
    CHECK_THAT(read_with(good + "}"), Contains("not a quant encodings file"));
    CHECK_THAT(read_with(good + std::string("\xff\x00", 2)), Contains("not a quant encodings file"));
  }
}
