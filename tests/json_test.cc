// common/json: how our metrics lines and summaries are written and read.
#include "common/json.h"

#include "gtest/gtest.h"

namespace ps::common {
namespace {

TEST(Json, ARoundedFigurePrintsWithAtMostItsDigitsInTheOrderWritten) {
  const Json line = {{"test_accuracy", RoundTo(0.83069999, 4)},
                     {"epoch", RoundTo(5, 4)},
                     {"step", 2345}};
  EXPECT_EQ(line.dump(), R"({"test_accuracy":0.8307,"epoch":5.0,"step":2345})");
}

TEST(Json, AHalfWrittenLineOrAStringFieldReadsAsNoNumber) {
  EXPECT_TRUE(ParseJsonObject(R"({"epoch":1.5,"mode":"sync")").empty());
  EXPECT_TRUE(ParseJsonObject("[1, 2]").empty());
  const Json line = ParseJsonObject(R"({"epoch":1.5,"mode":"sync"})");
  EXPECT_EQ(NumberField(line, "epoch"), 1.5);
  EXPECT_EQ(NumberField(line, "mode"), std::nullopt);
  EXPECT_EQ(NumberField(line, "step"), std::nullopt);
}

}  // namespace
}  // namespace ps::common
