#ifndef PS_TESTS_WAIT_H_
#define PS_TESTS_WAIT_H_

// How tests wait for something to happen: on the condition itself, with a
// deadline, never with a fixed sleep that is too short on a loaded machine
// and too long everywhere else.
#include <signal.h>
#include <sys/types.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

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

// Whether every thread of `pid` is stopped (state T in /proc: SIGSTOP took
// hold), and false once the process is gone.
inline bool AllThreadsStopped(pid_t pid) {
  std::error_code error;
  std::filesystem::directory_iterator tasks(
      "/proc/" + std::to_string(pid) + "/task", error);
  if (error) return false;
  bool any = false;
  for (const std::filesystem::directory_entry& task : tasks) {
    std::ifstream stat(task.path() / "stat");
    std::string line;
    std::getline(stat, line);
    // "tid (comm) S ...": the state follows the last ')'.
    const size_t paren = line.rfind(')');
    if (paren == std::string::npos || paren + 2 >= line.size()) return false;
    if (line[paren + 2] != 'T') return false;
    any = true;
  }
  return any;
}

// SIGSTOP, then waits until it took hold: kill() returns before the target
// has stopped, and a thread can still answer a request meanwhile (seen: a
// backup acknowledged a write sent after its SIGSTOP). False if it did not
// stop within `timeout`.
inline bool StopProcess(pid_t pid, absl::Duration timeout = absl::Seconds(10)) {
  if (kill(pid, SIGSTOP) != 0) return false;
  return WaitUntil([pid] { return AllThreadsStopped(pid); }, timeout);
}

}  // namespace ps::test_support

#endif  // PS_TESTS_WAIT_H_
