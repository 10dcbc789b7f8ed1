// libFuzzer target: ps_chaos's scenario YAML (tools/chaos/scenario). Any
// text gives a scenario or an error that names the file: never a crash, an
// exception out of yaml-cpp, or a hang.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/fuzz/fuzz_check.h"
#include "tools/chaos/scenario.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ps::chaos::Scenario> scenario =
      ps::chaos::ParseScenario(text, "fuzz.yaml");
  if (!scenario.ok() &&
      !absl::StartsWith(scenario.status().message(), "fuzz.yaml")) {
    ps::fuzz::Fail(absl::StrCat("an error that does not name the file: ",
                                scenario.status().ToString()));
  }
  return 0;
}
