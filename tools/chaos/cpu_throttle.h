#ifndef PS_TOOLS_CHAOS_CPU_THROTTLE_H_
#define PS_TOOLS_CHAOS_CPU_THROTTLE_H_

#include <sys/types.h>

#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace ps::chaos {

// Limits processes to a share of one CPU with the cgroup v1 cpu controller
// (cpu.cfs_quota_us over a 100 ms cpu.cfs_period_us), each in a group
// ROOT/ps_chaos-<pid>/<name> of its own.
class CpuThrottle {
 public:
  // `root`: the cpu controller's mount, e.g. /sys/fs/cgroup/cpu.
  explicit CpuThrottle(std::string root);
  ~CpuThrottle();

  // Puts `pid` (every thread of it) in group `name` and limits the group to
  // `share` of one CPU; share >= 1 lifts the limit.
  absl::Status Limit(const std::string& name, pid_t pid, double share);

  // Moves every process back to the root group and removes the groups;
  // returns what is still there, one line each. Idempotent.
  std::vector<std::string> Teardown();

 private:
  std::string root_;
  std::string dir_;  // ROOT/ps_chaos-<pid>
  bool created_ = false;
};

}  // namespace ps::chaos

#endif  // PS_TOOLS_CHAOS_CPU_THROTTLE_H_
