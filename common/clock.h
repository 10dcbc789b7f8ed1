#ifndef PS_COMMON_CLOCK_H_
#define PS_COMMON_CLOCK_H_

#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ps::common {

// Where a component reads the time: the real clock in the daemons, one a
// test moves by hand, so leases, round timeouts and heartbeat ages can be
// tested without waiting.
using Clock = std::function<absl::Time()>;

inline Clock RealClock() {
  return [] { return absl::Now(); };
}

}  // namespace ps::common

#endif  // PS_COMMON_CLOCK_H_
