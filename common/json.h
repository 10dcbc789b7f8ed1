#ifndef PS_COMMON_JSON_H_
#define PS_COMMON_JSON_H_

// JSON through one library (nlohmann/json, Debian's nlohmann-json3-dev):
// the metrics lines workers write, and the files the tools write and read.
#include <optional>

#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace ps::common {

// Keeps fields in the order they were written, so output reads as before.
using Json = nlohmann::ordered_json;

// `value` rounded to `digits` decimals. JSON writes the shortest text that
// reads back exactly, so a rounded value prints with at most those digits
// (0.8307, not 0.83069999999999999).
double RoundTo(double value, int digits);

// The object `text` holds; an empty object when it is not a JSON object
// (a line still being written, say). Never throws.
Json ParseJsonObject(absl::string_view text);

// object[key] when it is a number; nullopt when missing or not a number.
std::optional<double> NumberField(const Json& object, absl::string_view key);

}  // namespace ps::common

#endif  // PS_COMMON_JSON_H_
