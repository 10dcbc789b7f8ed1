// The stop-signal handlers, each case in a child process of its own: the
// handlers are process-wide.
#include "common/stop_signal.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

#include "gtest/gtest.h"

namespace ps::common {
namespace {

// Runs `body` in a forked child and returns its wait status.
int InChild(const std::function<int()>& body) {
  const pid_t child = fork();
  if (child == 0) _exit(body());
  int status = 0;
  waitpid(child, &status, 0);
  return status;
}

TEST(StopSignal, IsRecordedNotFatalAndWakesTheWaiter) {
  const int status = InChild([] {
    CatchStopSignals();
    if (StopSignalReceived() != 0) return 1;
    raise(SIGTERM);
    return WaitForStopSignal() == SIGTERM && StopSignalReceived() == SIGTERM
               ? 0
               : 2;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(StopSignal, WithoutAGracePeriodASecondSignalIsIgnored) {
  // A supervisor (ps_local, ps_chaos) must finish stopping its children.
  const int status = InChild([] {
    CatchStopSignals();
    raise(SIGINT);
    raise(SIGTERM);
    return StopSignalReceived() == SIGINT ? 0 : 1;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(StopSignal, WithAGracePeriodASecondSignalExitsAtOnce) {
  const int status = InChild([] {
    CatchStopSignals(absl::Seconds(30));
    raise(SIGTERM);
    raise(SIGTERM);
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
}

TEST(StopSignal, WithAGracePeriodAStuckProcessExitsWhenItRunsOut) {
  const int status = InChild([] {
    CatchStopSignals(absl::Seconds(1));
    raise(SIGTERM);
    pause();  // stuck; SIGALRM ends it
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
}

}  // namespace
}  // namespace ps::common
