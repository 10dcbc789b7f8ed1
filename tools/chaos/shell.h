#ifndef PS_TOOLS_CHAOS_SHELL_H_
#define PS_TOOLS_CHAOS_SHELL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ps::chaos {

// Runs argv (argv[0] looked up in PATH) to completion with no shell in
// between, and returns what it printed on stdout and stderr. A non-zero
// exit is an error naming the command and quoting its output.
absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv);

// The path of `program` in PATH or the sbin directories (root's tools, which
// a user's PATH may lack); "" when there is none.
std::string FindProgram(const std::string& program);

}  // namespace ps::chaos

#endif  // PS_TOOLS_CHAOS_SHELL_H_
