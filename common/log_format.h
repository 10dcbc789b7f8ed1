#ifndef PS_COMMON_LOG_FORMAT_H_
#define PS_COMMON_LOG_FORMAT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "spdlog/formatter.h"

// How daemons write their log lines (--log_format): text for a person at a
// terminal, or one JSON object a line for a log pipeline (Loki, Fluent Bit,
// Elasticsearch, Cloud Logging), which then needs no parsing rules.
namespace ps::common {

enum class LogFormat { kText, kJson };

// "text" or "json"; anything else is an error naming both.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);

// What every line of this process says besides its message: the daemon's
// name and its place in the job, e.g. {{"shard", 2}}.
struct LogIdentity {
  std::string daemon;
  std::vector<std::pair<std::string, int64_t>> fields;
};

// One JSON object a line:
// {"time":"2026-12-03T14:50:01.123Z","level":"info","daemon":"ps_server",
//  "shard":2,"message":"..."}. Time in UTC with milliseconds; a message
// that is not valid UTF-8 keeps its valid parts (U+FFFD for the rest).
std::unique_ptr<spdlog::formatter> MakeJsonLineFormatter(LogIdentity identity);

// Installs `format` on spdlog's default logger (and so on gRPC's lines,
// which are routed there). Text keeps InitProgram's pattern.
void SetLogFormat(LogFormat format, LogIdentity identity);

// --log_format=`name`, or Die with one line naming the flag.
void SetLogFormatOrDie(absl::string_view name, LogIdentity identity);

}  // namespace ps::common

#endif  // PS_COMMON_LOG_FORMAT_H_
