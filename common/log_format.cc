#include "common/log_format.h"

#include <chrono>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/cli.h"
#include "common/json.h"
#include "spdlog/spdlog.h"

namespace ps::common {
namespace {

class JsonLineFormatter final : public spdlog::formatter {
 public:
  explicit JsonLineFormatter(LogIdentity identity)
      : identity_(std::move(identity)) {}

  void format(const spdlog::details::log_msg& msg,
              spdlog::memory_buf_t& dest) override {
    Json line;
    line["time"] =
        absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromChrono(msg.time),
                         absl::UTCTimeZone());
    const spdlog::string_view_t level =
        spdlog::level::to_string_view(msg.level);
    line["level"] = std::string(level.data(), level.size());
    line["daemon"] = identity_.daemon;
    for (const auto& [key, value] : identity_.fields) line[key] = value;
    line["message"] = std::string(msg.payload.data(), msg.payload.size());
    // A log line must never throw: replace what is not UTF-8.
    const std::string text =
        line.dump(-1, ' ', false, Json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonLineFormatter>(identity_);
  }

 private:
  const LogIdentity identity_;
};

}  // namespace

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("'", name, "' is not a log format: text or json"));
}

std::unique_ptr<spdlog::formatter> MakeJsonLineFormatter(LogIdentity identity) {
  return std::make_unique<JsonLineFormatter>(std::move(identity));
}

void SetLogFormat(LogFormat format, LogIdentity identity) {
  if (format == LogFormat::kJson) {
    spdlog::set_formatter(MakeJsonLineFormatter(std::move(identity)));
  }
}

void SetLogFormatOrDie(absl::string_view name, LogIdentity identity) {
  absl::StatusOr<LogFormat> format = ParseLogFormat(name);
  DieIfError(format.status(), "--log_format");
  SetLogFormat(*format, std::move(identity));
}

}  // namespace ps::common
