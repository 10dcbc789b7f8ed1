#ifndef PS_TOOLS_CHAOS_LEFTOVERS_H_
#define PS_TOOLS_CHAOS_LEFTOVERS_H_

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace ps::chaos {

// How long teardown waits for the kernel to finish deleting what it was
// asked to delete: a deleted namespace, and the veth pair it holds, are
// freed on a kernel work queue, which a loaded machine runs seconds late.
inline constexpr absl::Duration kKernelCleanupBound = absl::Seconds(10);

// Calls `list` (what is left, one line each) until it returns nothing or
// `bound` has passed, and returns its last answer: only what outlived the
// bound is left behind.
std::vector<std::string> LeftAfterWaiting(
    const std::function<std::vector<std::string>()>& list,
    absl::Duration bound = kKernelCleanupBound);

// The iptables rule (after "-I CHAIN") that lets frames cross the sandbox
// bridge of run `pid`; its comment ps_chaos-<pid> tells whose it is.
std::vector<std::string> ForwardRule(const std::string& bridge, pid_t pid);

// What a ps_chaos run with this pid has in the kernel: network namespaces
// ps_chaos-<pid>-*, links pcb<pid> and pc<pid>*, cgroups ps_chaos-<pid>,
// iptables rules commented ps_chaos-<pid>.
// One line each ("network namespace ps_chaos-123-w0"); empty when none.
std::vector<std::string> ResourcesOf(pid_t pid);

// Removes the resources of ps_chaos runs that are no longer running (a run
// killed with SIGKILL cannot clean up). Returns one line per thing removed
// or, prefixed "could not remove", left.
std::vector<std::string> CleanUpDeadRuns();

// Moves every process of cgroup `dir` (and its children) to the
// controller's root group and removes the directories.
void RemoveCgroupTree(const std::string& dir, const std::string& root);

}  // namespace ps::chaos

#endif  // PS_TOOLS_CHAOS_LEFTOVERS_H_
