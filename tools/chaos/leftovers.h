#ifndef PS_TOOLS_CHAOS_LEFTOVERS_H_
#define PS_TOOLS_CHAOS_LEFTOVERS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace ps::chaos {

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
