#include "common/lr_schedule.h"

#include <cmath>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::common {
namespace {

using ::testing::HasSubstr;

LrSchedule Parsed(const std::string& text) {
  absl::StatusOr<LrSchedule> schedule = ParseLrSchedule(text);
  EXPECT_TRUE(schedule.ok()) << schedule.status();
  return schedule.value_or(LrSchedule());
}

TEST(LrSchedule, ConstantIsOneForever) {
  const LrSchedule s = Parsed("constant");
  EXPECT_EQ(LrFactor(s, 0), 1.0);
  EXPECT_EQ(LrFactor(s, 123456789), 1.0);
}

TEST(LrSchedule, StepMultipliesByGammaEveryNUpdates) {
  const LrSchedule s = Parsed("step:100:0.5");
  EXPECT_EQ(LrFactor(s, 0), 1.0);
  EXPECT_EQ(LrFactor(s, 99), 1.0);
  EXPECT_EQ(LrFactor(s, 100), 0.5);
  EXPECT_EQ(LrFactor(s, 250), 0.25);
}

TEST(LrSchedule, CosineFallsFromOneToZeroAndStays) {
  const LrSchedule s = Parsed("cosine:1000");
  EXPECT_DOUBLE_EQ(LrFactor(s, 0), 1.0);
  EXPECT_DOUBLE_EQ(LrFactor(s, 250), 0.5 * (1 + std::cos(M_PI / 4)));
  EXPECT_NEAR(LrFactor(s, 500), 0.5, 1e-15);
  EXPECT_NEAR(LrFactor(s, 1000), 0.0, 1e-15);
  EXPECT_NEAR(LrFactor(s, 5000), 0.0, 1e-15);
}

TEST(LrSchedule, WarmupRampsLinearlyThenStartsTheInnerSchedule) {
  const LrSchedule s = Parsed("linear_warmup:4+step:10:0.1");
  EXPECT_DOUBLE_EQ(LrFactor(s, 0), 0.25);
  EXPECT_DOUBLE_EQ(LrFactor(s, 1), 0.5);
  EXPECT_DOUBLE_EQ(LrFactor(s, 3), 1.0);
  EXPECT_DOUBLE_EQ(LrFactor(s, 4), 1.0);   // the inner schedule's update 0
  EXPECT_DOUBLE_EQ(LrFactor(s, 13), 1.0);  // … and its 9
  EXPECT_DOUBLE_EQ(LrFactor(s, 14), 0.1);  // … and its 10
  const LrSchedule cosine = Parsed("linear_warmup:2+cosine:10");
  EXPECT_DOUBLE_EQ(LrFactor(cosine, 0), 0.5);
  EXPECT_DOUBLE_EQ(LrFactor(cosine, 1), 1.0);  // the cosine has not begun
  EXPECT_NEAR(LrFactor(cosine, 7), 0.5, 1e-15);
}

TEST(LrSchedule, APureFunctionOfTheVersionSoARestoreResumesIt) {
  // A shard restored at version 57 computes exactly what it would have.
  const LrSchedule s = Parsed("linear_warmup:10+cosine:100");
  const LrSchedule again = Parsed(LrScheduleString(s));
  for (uint64_t v : {0, 9, 10, 57, 109, 110, 1000}) {
    EXPECT_EQ(LrFactor(s, v), LrFactor(again, v)) << v;
  }
}

TEST(LrSchedule, WritesItselfBackInItsOwnSyntax) {
  for (const char* text :
       {"constant", "step:100:0.5", "cosine:20000",
        "linear_warmup:500+constant", "linear_warmup:3+step:7:0.9"}) {
    EXPECT_EQ(LrScheduleString(Parsed(text)), text);
  }
}

TEST(LrSchedule, BadStringsAreRejectedSayingWhy) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "cannot read ''"},
      {"linear", "cannot read 'linear'"},
      {"constant:1", "cannot read 'constant:1'"},
      {"step:100", "cannot read 'step:100'"},
      {"step:0:0.5", "EVERY must be a whole number > 0, got '0'"},
      {"step:-5:0.5", "EVERY must be a whole number > 0, got '-5'"},
      {"step:10:zero", "GAMMA must be a finite number > 0, got 'zero'"},
      {"step:10:-1", "GAMMA must be a finite number > 0, got '-1'"},
      {"step:10:nan", "GAMMA must be a finite number > 0, got 'nan'"},
      {"cosine:1.5", "STEPS must be a whole number > 0, got '1.5'"},
      {"cosine:", "STEPS must be a whole number > 0, got ''"},
      {"linear_warmup:100", "linear_warmup:STEPS must be followed by '+'"},
      {"linear_warmup:x+constant", "STEPS must be a whole number > 0, got 'x'"},
      {"linear_warmup:5+linear_warmup:5+constant",
       "linear_warmup takes one schedule after '+', not another"},
      {"linear_warmup:5+cosine", "cannot read 'cosine'"},
  };
  for (const auto& [text, why] : cases) {
    const absl::StatusOr<LrSchedule> s = ParseLrSchedule(text);
    ASSERT_FALSE(s.ok()) << text;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.status().message()),
                HasSubstr(absl::StrCat("bad learning-rate schedule '", text,
                                       "': ", why)));
    EXPECT_THAT(std::string(s.status().message()),
                HasSubstr("the schedules are constant"));
  }
}

}  // namespace
}  // namespace ps::common
