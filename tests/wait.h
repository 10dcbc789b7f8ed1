#ifndef PS_TESTS_WAIT_H_
#define PS_TESTS_WAIT_H_

// How tests wait for something to happen: on the condition itself, with a
// deadline, never with a fixed sleep that is too short on a loaded machine
// and too long everywhere else.
#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ps::test_support {

// Polls `condition` (every 20 ms) until it holds or `timeout` passed;
// returns whether it held.
inline bool WaitUntil(const std::function<bool()>& condition,
                      absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time give_up = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() >= give_up) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

}  // namespace ps::test_support

#endif  // PS_TESTS_WAIT_H_
