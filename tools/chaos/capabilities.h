#ifndef PS_TOOLS_CHAOS_CAPABILITIES_H_
#define PS_TOOLS_CHAOS_CAPABILITIES_H_

#include <string>
#include <vector>

namespace ps::chaos {

// What the operating system lets ps_chaos do here. Each is checked by doing
// it once (a throw-away namespace, qdisc, nft table and cgroup), not by
// looking at the user id: a container may be root and still lack them.
struct Capabilities {
  bool netns = false;  // ip netns add/exec, veth pairs, a bridge
  // Packets cross a bridge between two namespaces (a host firewall can
  // drop bridged traffic: Docker's FORWARD policy).
  bool bridge_traffic = false;
  bool tc_tbf = false;          // tc qdisc tbf (bandwidth caps)
  bool nft = false;             // nft tables in a namespace (loss, partitions)
  bool iptables = false;        // iptables with the statistic match, if no nft
  bool cgroup_cpu = false;      // cgroup v1 cpu controller, cfs quota writable
  std::string cgroup_cpu_root;  // e.g. /sys/fs/cgroup/cpu
  // One sentence per missing capability, saying why.
  std::vector<std::string> missing;

  bool network() const { return netns && bridge_traffic && (nft || iptables); }
};

// Probes every capability; leaves nothing behind (the probe's own
// namespace and cgroup are removed whatever happens).
Capabilities ProbeCapabilities();

}  // namespace ps::chaos

#endif  // PS_TOOLS_CHAOS_CAPABILITIES_H_
