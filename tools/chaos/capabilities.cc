#include "tools/chaos/capabilities.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "tools/chaos/network_sandbox.h"
#include "tools/chaos/shell.h"

namespace ps::chaos {
namespace {

std::string Why(const absl::StatusOr<std::string>& result) {
  return std::string(result.status().message());
}

void ProbeCgroup(Capabilities& caps) {
  // cgroup v1 mounts the cpu controller on its own (or with cpuacct).
  for (const char* root :
       {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"}) {
    if (access(absl::StrCat(root, "/cpu.cfs_quota_us").c_str(), F_OK) != 0) {
      continue;
    }
    const std::string probe = absl::StrCat(root, "/ps_chaos-probe-", getpid());
    if (mkdir(probe.c_str(), 0755) != 0) {
      caps.missing.push_back(
          absl::StrCat("cgroup cpu: cannot create a group under ", root,
                       " (not root?): CPU throttling is not available"));
      return;
    }
    std::ofstream quota(probe + "/cpu.cfs_quota_us");
    quota << 50000 << std::endl;
    caps.cgroup_cpu = static_cast<bool>(quota);
    quota.close();
    rmdir(probe.c_str());
    caps.cgroup_cpu_root = root;
    if (!caps.cgroup_cpu) {
      caps.missing.push_back("cgroup cpu: cpu.cfs_quota_us is not writable");
    }
    return;
  }
  caps.missing.push_back(
      "cgroup cpu: no cgroup v1 cpu controller mounted at /sys/fs/cgroup/cpu "
      "(cgroup v2 only?): CPU throttling is not available");
}

}  // namespace

Capabilities ProbeCapabilities() {
  Capabilities caps;
  const std::string ns = absl::StrCat("ps_chaos-probe-", getpid());
  if (auto added = RunCommand({"ip", "netns", "add", ns}); !added.ok()) {
    caps.missing.push_back(
        absl::StrCat("network namespaces: ", Why(added),
                     ": network faults fall back to in-process injection"));
  } else {
    caps.netns = true;
    auto in_ns = [&](std::vector<std::string> argv) {
      argv.insert(argv.begin(), {"ip", "netns", "exec", ns});
      return RunCommand(argv);
    };
    if (auto tbf =
            in_ns({"tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate",
                   "1mbit", "burst", "32kbit", "latency", "50ms"});
        tbf.ok()) {
      caps.tc_tbf = true;
    } else {
      caps.missing.push_back(absl::StrCat(
          "tc tbf: ", Why(tbf), ": bandwidth caps are not available"));
    }
    if (auto nft = in_ns({"nft", "add", "table", "inet", "ps_chaos_probe"});
        nft.ok()) {
      caps.nft = true;
    } else if (auto ipt = in_ns({"iptables", "-A", "OUTPUT", "-m", "statistic",
                                 "--mode", "random", "--probability", "0.5",
                                 "-j", "ACCEPT"});
               ipt.ok()) {
      caps.iptables = true;
    } else {
      caps.missing.push_back(absl::StrCat(
          "nft and iptables: ", Why(nft), "; ", Why(ipt),
          ": packet loss and partitions fall back to in-process injection"));
    }
    // Deleting the namespace deletes its qdiscs and rules with it.
    if (auto deleted = RunCommand({"ip", "netns", "delete", ns});
        !deleted.ok()) {
      caps.missing.push_back(
          absl::StrCat("could not delete the probe "
                       "namespace ",
                       ns, ": ", Why(deleted)));
    }
  }
  if (caps.netns) {
    // Two throw-away namespaces on a bridge, and a connection between them.
    absl::StatusOr<std::unique_ptr<NetworkSandbox>> probe =
        NetworkSandbox::Create({"s0", "w0"}, caps.nft);
    caps.bridge_traffic = probe.ok();
    if (!probe.ok()) {
      caps.missing.push_back(
          absl::StrCat("bridged traffic: ", probe.status().message(),
                       ": network faults fall back to in-process injection"));
    }
  }
  ProbeCgroup(caps);
  return caps;
}

}  // namespace ps::chaos
