#ifndef PS_COMMON_LR_SCHEDULE_H_
#define PS_COMMON_LR_SCHEDULE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ps::common {

// A learning-rate schedule: the factor by which the base learning rate is
// multiplied for update number `version` (0 for the first update a shard
// applies). A pure function of the version, so that sync runs stay
// reproducible and a shard restored from a checkpoint resumes its schedule
// where it was. Written as (the --lr_schedule syntax):
//   constant                  1
//   step:EVERY:GAMMA          GAMMA^⌊version/EVERY⌋
//   cosine:STEPS              ½·(1 + cos(π·min(version, STEPS)/STEPS)): from
//                             1 down to 0 at STEPS, and 0 after
//   linear_warmup:STEPS+S     (version+1)/STEPS · S(0) while version < STEPS,
//                             then S(version − STEPS): S starts after it
struct LrSchedule {
  enum class Kind { kConstant, kStep, kCosine };
  Kind kind = Kind::kConstant;
  uint64_t warmup_steps = 0;  // 0: no warm-up
  uint64_t every = 0;         // kStep
  double gamma = 1;           // kStep
  uint64_t steps = 0;         // kCosine
};

// INVALID_ARGUMENT quoting the string and saying what is wrong with it.
absl::StatusOr<LrSchedule> ParseLrSchedule(absl::string_view text);

// The schedule written back in ParseLrSchedule's syntax.
std::string LrScheduleString(const LrSchedule& schedule);

// The factor for update number `version`, in [0, 1] when gamma ≤ 1.
double LrFactor(const LrSchedule& schedule, uint64_t version);

}  // namespace ps::common

#endif  // PS_COMMON_LR_SCHEDULE_H_
