#include "common/stop_signal.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace ps::common {
namespace {

// Only what a signal handler may touch: a lock-free atomic, and a pipe that
// wakes WaitForStopSignal.
std::atomic<int> received_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);
int wake_pipe[2] = {-1, -1};
unsigned grace_seconds = 0;  // 0: wait forever

void WriteStderr(const char* text) {
  ssize_t ignored = write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

void OnStopSignal(int signal) {
  int expected = 0;
  if (!received_signal.compare_exchange_strong(expected, signal)) {
    if (grace_seconds == 0) return;
    WriteStderr("second stop signal: exiting now\n");
    _exit(128 + expected);
  }
  const char byte = 1;
  ssize_t ignored = write(wake_pipe[1], &byte, 1);
  (void)ignored;
  if (grace_seconds > 0) alarm(grace_seconds);
}

void OnGraceOver(int) {
  WriteStderr(
      "did not stop within the grace period after the stop signal: "
      "exiting without finishing\n");
  _exit(128 + received_signal.load());
}

}  // namespace

void CatchStopSignals(absl::Duration grace) {
  if (pipe2(wake_pipe, O_CLOEXEC) != 0) {
    WriteStderr("cannot create the stop-signal pipe\n");
    std::exit(2);
  }
  if (grace < absl::InfiniteDuration()) {
    grace_seconds = static_cast<unsigned>(std::max<int64_t>(
        1, absl::ToInt64Seconds(absl::Ceil(grace, absl::Seconds(1)))));
  }
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  action.sa_handler = OnGraceOver;
  sigaction(SIGALRM, &action, nullptr);
}

int StopSignalReceived() { return received_signal.load(); }

int WaitForStopSignal() {
  char byte;
  while (read(wake_pipe[0], &byte, 1) < 0 && errno == EINTR) {
  }
  return received_signal.load();
}

}  // namespace ps::common
