// common/log_format: the JSON lines a log pipeline reads from the daemons.
#include "common/log_format.h"

#include <chrono>
#include <string>

#include "common/json.h"
#include "gtest/gtest.h"
#include "spdlog/details/log_msg.h"

namespace ps::common {
namespace {

// The line the formatter writes for `message` at `level`, at 2026-12-03
// 14:50:01.123 UTC.
std::string Format(spdlog::level::level_enum level, std::string_view message) {
  std::unique_ptr<spdlog::formatter> formatter =
      MakeJsonLineFormatter({"ps_server", {{"shard", 2}}});
  spdlog::details::log_msg msg(
      "", level, spdlog::string_view_t(message.data(), message.size()));
  msg.time = std::chrono::system_clock::time_point(
      std::chrono::milliseconds(1796309401123));
  spdlog::memory_buf_t out;
  formatter->format(msg, out);
  return std::string(out.data(), out.size());
}

TEST(LogFormat, AJsonLineHoldsTimeLevelDaemonPlaceAndMessageInThatOrder) {
  EXPECT_EQ(Format(spdlog::level::warn, "shard 2 serving"),
            R"({"time":"2026-12-03T14:50:01.123Z","level":"warning",)"
            R"("daemon":"ps_server","shard":2,"message":"shard 2 serving"})"
            "\n");
}

TEST(LogFormat, QuotesNewlinesAndBrokenUtf8StayInsideOneParsableLine) {
  const std::string line =
      Format(spdlog::level::err, "bad \"file\"\nline 2 \xff\xfe end");
  ASSERT_EQ(line.find('\n'), line.size() - 1) << line;
  const Json parsed = ParseJsonObject(line);
  ASSERT_FALSE(parsed.empty()) << line;
  EXPECT_EQ(parsed["level"], "error");
  EXPECT_EQ(parsed["message"],
            "bad \"file\"\nline 2 \xEF\xBF\xBD\xEF\xBF\xBD end");
}

TEST(LogFormat, OnlyTextAndJsonAreFormats) {
  EXPECT_EQ(*ParseLogFormat("text"), LogFormat::kText);
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  const absl::StatusOr<LogFormat> xml = ParseLogFormat("xml");
  EXPECT_EQ(xml.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(xml.status().message(), "'xml' is not a log format: text or json");
}

}  // namespace
}  // namespace ps::common
