// libFuzzer target: the LIBSVM reader (common/libsvm). Any text gives a
// clean error or a well-formed data set: CSR offsets that rise to the end,
// labels 0 or 1, values finite.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/libsvm.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using ps::fuzz::Fail;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ps::common::SparseDataset> parsed =
      ps::common::ParseLibsvm(text, "fuzz.svm");
  if (!parsed.ok()) {
    if (parsed.status().message().empty()) Fail("an error without a message");
    return 0;
  }
  const ps::common::SparseDataset& d = *parsed;
  if (d.offsets.size() != d.labels.size() + 1 || d.offsets.front() != 0 ||
      d.offsets.back() != d.ids.size()) {
    Fail("offsets do not cover the ids");
  }
  for (size_t r = 0; r + 1 < d.offsets.size(); ++r) {
    if (d.offsets[r] > d.offsets[r + 1]) Fail("offsets go back");
  }
  if (!d.values.empty() && d.values.size() != d.ids.size()) {
    Fail("values do not match ids");
  }
  for (float v : d.values) {
    if (!std::isfinite(v)) Fail("a value is not finite");
  }
  for (int32_t label : d.labels) {
    if (label != 0 && label != 1) Fail("a label is not 0 or 1");
  }
  return 0;
}
