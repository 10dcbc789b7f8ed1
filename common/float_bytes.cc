#include "common/float_bytes.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ps::common {

void FloatsToBytes(absl::Span<const float> values, std::string* out) {
  out->resize(values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(out->data(), values.data(), out->size());
}

absl::Status BytesToFloats(absl::string_view bytes, absl::Span<float> out,
                           absl::string_view what) {
  if (bytes.size() % sizeof(float) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has ", bytes.size(),
                     " bytes, which is not a whole number of float32 values"));
  }
  if (bytes.size() / sizeof(float) != out.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " carries ", bytes.size() / sizeof(float),
                     " floats but ", out.size(), " are expected"));
  }
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return absl::OkStatus();
}

std::optional<size_t> FindNonFinite(absl::Span<const float> values) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) return i;
  }
  return std::nullopt;
}

}  // namespace ps::common
