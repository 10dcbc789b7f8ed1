#include "common/json.h"

#include <cmath>
#include <string>

namespace ps::common {

double RoundTo(double value, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(value * scale) / scale;
}

Json ParseJsonObject(absl::string_view text) {
  Json parsed = Json::parse(text.begin(), text.end(), /*cb=*/nullptr,
                            /*allow_exceptions=*/false);
  return parsed.is_object() ? parsed : Json::object();
}

std::optional<double> NumberField(const Json& object, absl::string_view key) {
  if (!object.is_object()) return std::nullopt;
  auto found = object.find(std::string(key));
  if (found == object.end() || !found->is_number()) return std::nullopt;
  return found->get<double>();
}

}  // namespace ps::common
