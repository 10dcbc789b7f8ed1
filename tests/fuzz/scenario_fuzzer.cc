// libFuzzer target: ps_chaos's scenario YAML (tools/chaos/scenario). Any
// text gives a scenario or an error that names the file: never a crash, an
// exception out of yaml-cpp, or a hang.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "tools/chaos/scenario.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ps::chaos::Scenario> scenario =
      ps::chaos::ParseScenario(text, "fuzz.yaml");
  if (!scenario.ok() &&
      !absl::StartsWith(scenario.status().message(), "fuzz.yaml")) {
    std::fprintf(stderr,
                 "scenario_fuzzer: an error that does not name the "
                 "file: %s\n",
                 scenario.status().ToString().c_str());
    std::abort();
  }
  return 0;
}
