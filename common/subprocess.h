#ifndef PS_COMMON_SUBPROCESS_H_
#define PS_COMMON_SUBPROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ps::common {

// A child process started by the local launcher or a test. The child gets
// its own process group (so a terminal's Ctrl-C reaches only the launcher,
// which then stops children in order) and dies with its parent, so nothing
// outlives a launcher that was killed.
class Subprocess {
 public:
  // Runs argv[0] (a path, or a name without '/' looked up in $PATH) with
  // stdout and stderr appended to `log_path`, or inherited when it is
  // empty. `env` ("NAME=VALUE") is set on top of this process's
  // environment. Returns once the child has exec'd (or failed to: it then
  // exits with status 127).
  static absl::StatusOr<Subprocess> Spawn(
      const std::vector<std::string>& argv, const std::string& log_path,
      const std::vector<std::string>& env = {});

  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  // Kills a child still running: a forgotten child must not leak.
  ~Subprocess();

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !wait_status_; }

  // The wait status once the child ended; nullopt while it runs. Non-blocking.
  std::optional<int> Poll();

  // The child's peak resident set as last seen: its VmHWM, read on every
  // Poll and before Stop signals it (so growth in its last moments may be
  // missed); nullopt if it was never seen running. Not wait4's ru_maxrss:
  // that also counts the parent's pages the fork copied before exec, which
  // made a small server launched by a large benchmark look large.
  std::optional<int64_t> peak_rss_bytes() const { return peak_rss_bytes_; }

  void Signal(int signal);

  // Sends SIGTERM, waits up to `grace`, then SIGKILL. Returns the wait status.
  int Stop(absl::Duration grace);

  // Waits up to `timeout` for the child to end by itself.
  std::optional<int> WaitFor(absl::Duration timeout);

 private:
  Subprocess() = default;

  // Reaps the child with waitpid (blocking or not).
  bool Reap(bool block);
  // Reads the running child's VmHWM into peak_rss_bytes_.
  void SamplePeakRss();

  pid_t pid_ = -1;
  std::optional<int> wait_status_;
  std::optional<int64_t> peak_rss_bytes_;
};

// "exited with status 1", "killed by signal 9 (Killed)".
std::string DescribeWaitStatus(int wait_status);
bool ExitedCleanly(int wait_status);

// The file `name` runs: itself when it holds a '/', else the first
// executable of that name in $PATH (as a shell finds it); empty when that
// is no executable.
std::string FindExecutable(const std::string& name);

// The directory holding the running executable, to find sibling binaries.
std::string ExecutableDir();

}  // namespace ps::common

#endif  // PS_COMMON_SUBPROCESS_H_
