#ifndef PS_COMMON_CLI_H_
#define PS_COMMON_CLI_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

// What every daemon's main() does the same way.
namespace ps::common {

// Parses flags (absl), rejects stray positional arguments, and applies
// --log_level-style `log_level` ("trace" … "off") to spdlog. Exits with one
// clear line and status 2 on any problem.
void InitProgram(int argc, char** argv, absl::string_view usage);
void SetLogLevelOrDie(const std::string& log_level);

// Prints "<program>: <message>" to stderr and exits with status 2, the
// start-up failure every daemon reports the same way.
[[noreturn]] void Die(absl::string_view message);
void DieIfError(const absl::Status& status, absl::string_view context);

// Writes `contents` to `path` atomically (temp file, then rename), so a
// reader never sees half a file.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents);

}  // namespace ps::common

#endif  // PS_COMMON_CLI_H_
