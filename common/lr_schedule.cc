#include "common/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace ps::common {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr absl::string_view kSyntax =
    "constant, step:EVERY:GAMMA, cosine:STEPS or linear_warmup:STEPS+<one of "
    "the others>";

absl::Status Bad(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("bad learning-rate schedule '", text, "': ", why,
                   " (the schedules are ", kSyntax, ")"));
}

// A count of updates > 0, or an error naming `what`.
absl::StatusOr<uint64_t> ParseSteps(absl::string_view whole,
                                    absl::string_view what,
                                    absl::string_view digits) {
  uint64_t value = 0;
  if (!absl::SimpleAtoi(digits, &value) || value == 0 ||
      digits.find_first_not_of("0123456789") != absl::string_view::npos) {
    return Bad(whole, absl::StrCat(what, " must be a whole number > 0, got '",
                                   digits, "'"));
  }
  return value;
}

// Every schedule but the warm-up.
absl::StatusOr<LrSchedule> ParseBase(absl::string_view whole,
                                     absl::string_view text) {
  const std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  LrSchedule schedule;
  if (parts[0] == "constant" && parts.size() == 1) return schedule;
  if (parts[0] == "step" && parts.size() == 3) {
    schedule.kind = LrSchedule::Kind::kStep;
    absl::StatusOr<uint64_t> every = ParseSteps(whole, "EVERY", parts[1]);
    if (!every.ok()) return every.status();
    schedule.every = *every;
    if (!absl::SimpleAtod(parts[2], &schedule.gamma) ||
        !std::isfinite(schedule.gamma) || schedule.gamma <= 0) {
      return Bad(whole, absl::StrCat("GAMMA must be a finite number > 0, got '",
                                     parts[2], "'"));
    }
    return schedule;
  }
  if (parts[0] == "cosine" && parts.size() == 2) {
    schedule.kind = LrSchedule::Kind::kCosine;
    absl::StatusOr<uint64_t> steps = ParseSteps(whole, "STEPS", parts[1]);
    if (!steps.ok()) return steps.status();
    schedule.steps = *steps;
    return schedule;
  }
  if (parts[0] == "linear_warmup") {
    return Bad(whole,
               "linear_warmup takes one schedule after '+', not "
               "another warm-up");
  }
  return Bad(whole, absl::StrCat("cannot read '", text, "'"));
}

}  // namespace

absl::StatusOr<LrSchedule> ParseLrSchedule(absl::string_view text) {
  absl::string_view rest = text;
  if (!absl::ConsumePrefix(&rest, "linear_warmup:")) {
    return ParseBase(text, text);
  }
  const size_t plus = rest.find('+');
  if (plus == absl::string_view::npos) {
    return Bad(text,
               "linear_warmup:STEPS must be followed by '+' and the "
               "schedule after the warm-up");
  }
  absl::StatusOr<uint64_t> warmup =
      ParseSteps(text, "STEPS", rest.substr(0, plus));
  if (!warmup.ok()) return warmup.status();
  absl::StatusOr<LrSchedule> schedule = ParseBase(text, rest.substr(plus + 1));
  if (!schedule.ok()) return schedule.status();
  schedule->warmup_steps = *warmup;
  return schedule;
}

std::string LrScheduleString(const LrSchedule& s) {
  std::string base;
  switch (s.kind) {
    case LrSchedule::Kind::kConstant:
      base = "constant";
      break;
    case LrSchedule::Kind::kStep:
      base = absl::StrCat("step:", s.every, ":", s.gamma);
      break;
    case LrSchedule::Kind::kCosine:
      base = absl::StrCat("cosine:", s.steps);
      break;
  }
  if (s.warmup_steps == 0) return base;
  return absl::StrCat("linear_warmup:", s.warmup_steps, "+", base);
}

double LrFactor(const LrSchedule& s, uint64_t version) {
  double warmup = 1;
  if (version < s.warmup_steps) {
    warmup =
        static_cast<double>(version + 1) / static_cast<double>(s.warmup_steps);
    version = 0;
  } else {
    version -= s.warmup_steps;
  }
  switch (s.kind) {
    case LrSchedule::Kind::kConstant:
      return warmup;
    case LrSchedule::Kind::kStep:
      return warmup * std::pow(s.gamma, static_cast<double>(version / s.every));
    case LrSchedule::Kind::kCosine: {
      const double done = static_cast<double>(std::min(version, s.steps)) /
                          static_cast<double>(s.steps);
      return warmup * 0.5 * (1 + std::cos(kPi * done));
    }
  }
  return warmup;
}

}  // namespace ps::common
