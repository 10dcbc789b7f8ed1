#ifndef PS_COMMON_CLI_H_
#define PS_COMMON_CLI_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

// What every daemon's main() does the same way.
namespace ps::common {

// Parses flags (absl), sets the log line format, tunes malloc (below) and
// turns off absl::Mutex's deadlock detection (below).
// Returns the positional arguments (a subcommand, say), rejecting more than
// `max_arguments`. Exits with one clear line and status 2 on any problem.
std::vector<std::string> InitProgram(int argc, char** argv,
                                     absl::string_view usage,
                                     size_t max_arguments = 0);

// Every value `name` was given by the command line and its flagfiles, in
// order, as InitProgram read them: absl keeps only the last, which is not
// enough for a flag that may be repeated.
std::vector<std::string> FlagValues(absl::string_view name);

// Keeps large blocks (messages, θ-sized buffers) in one heap that is never
// trimmed, so a freed block is reused by the next message of that size:
// glibc's default maps every block over 128 KiB to fresh pages (32 MiB once
// its threshold adapted; always for blocks a thread arena cannot hold), and
// faulting fresh pages in costs ~60x a memcpy of the same bytes.
void TuneMallocForLargeBuffers();

// Debian builds Abseil without NDEBUG, so every absl::Mutex lock (ours and
// gRPC's, which wraps absl::Mutex) ran the deadlock detector's global graph
// of lock order: a few per cent of a small call's server CPU, profiled.
// Tests keep it on: they do not call InitProgram.
void DisableMutexDeadlockDetection();

// Applies --log_level-style `log_level` ("trace" … "off") to spdlog.
void SetLogLevelOrDie(const std::string& log_level);

// Prints "<program>: <message>" to stderr and exits with status 2, the
// start-up failure every daemon reports the same way.
[[noreturn]] void Die(absl::string_view message);
void DieIfError(const absl::Status& status, absl::string_view context);

// The whole contents of `path`; nullopt when it cannot be opened (errno
// says why), so each caller words its own error.
std::optional<std::string> ReadWholeFile(const std::string& path);

// Writes `contents` to `path` atomically and durably: temp file, fsync,
// rename, fsync of the directory. A reader (or a machine that lost power)
// sees the old file or the whole new one, never half a file.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents);

// The ordinal a StatefulSet gives its pods: "ps-server-2" → 2. Errors when
// the name does not end in "-<digits>".
absl::StatusOr<uint32_t> OrdinalFromHostname(absl::string_view hostname);

// This machine's hostname (the pod name in Kubernetes).
std::string Hostname();

// Which of `count` slots this daemon fills: `flag_value` when >= 0 (named
// `flag_name` in errors); else the integer in the environment variable
// `env_name` (if not empty and set); else the hostname's ordinal when
// `use_hostname`; else 0 when count is 1. Checks the result is < count.
absl::StatusOr<uint32_t> ResolveIndex(int64_t flag_value,
                                      absl::string_view flag_name,
                                      uint32_t count,
                                      absl::string_view env_name,
                                      bool use_hostname);

}  // namespace ps::common

#endif  // PS_COMMON_CLI_H_
