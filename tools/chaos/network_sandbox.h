#ifndef PS_TOOLS_CHAOS_NETWORK_SANDBOX_H_
#define PS_TOOLS_CHAOS_NETWORK_SANDBOX_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ps::chaos {

// Faults on one host's link, all at once (the union of the faults active on
// it): what Apply makes true.
struct LinkFaults {
  // Each packet the host sends, and each it receives, is dropped with this
  // probability (so a packet between two lossy hosts crosses two lossy
  // links). Default: 0
  double loss = 0;
  // tc rate ("10mbit"), both directions; empty: no cap.
  std::string rate;
  // Addresses the host can neither send to nor receive from.
  std::vector<std::string> cut_from;

  bool empty() const { return loss == 0 && rate.empty() && cut_from.empty(); }
};

// Every daemon of a run in a network namespace of its own, joined by one
// private bridge, with addresses from a documentation range (RFC 5737:
// TEST-NET-1 192.0.2.0/24, or TEST-NET-2 or -3 when the machine itself uses
// the first, as some VMs do for their uplink) that exist only inside this
// sandbox. The runner reaches the daemons through the bridge's own address,
// .1 of that range. Faults are nft (or
// iptables) rules and tc tbf qdiscs inside a host's namespace and on its
// end of the bridge. The machine's own firewall gets one rule, removed at
// teardown: ACCEPT for frames that stay on our bridge (AllowForwarding).
//
// Names carry the runner's pid (namespaces ps_chaos-<pid>-w0, links
// pcb<pid> and pc<pid>w0), so leftovers of a run that was killed can be
// told apart and removed (leftovers.h). One sandbox at a time holds
// the subnet: a second run waits for no one, it fails saying so.
class NetworkSandbox {
 public:
  // `hosts`: short names, "s0" … for servers, "s0r1" … for their replicas
  // and "w0" … for workers; a server sN gets .(10+N) of the range, a
  // worker wN .(100+N), replica K ≥ 1 of server N .(164+16(K−1)+N), so
  // 90 replicas beyond the first at most.
  static absl::StatusOr<std::unique_ptr<NetworkSandbox>> Create(
      const std::vector<std::string>& hosts, bool use_nft);
  ~NetworkSandbox();

  std::string Address(const std::string& host) const;
  // The /24 in use, e.g. "198.51.100".
  const std::string& subnet() const { return subnet_; }
  // argv run inside `host`'s namespace (ip netns exec keeps the pid).
  std::vector<std::string> Wrap(const std::string& host,
                                std::vector<std::string> argv) const;
  // OK when a TCP connection from `from`'s namespace to `to`'s address
  // crosses the bridge within `timeout`. A namespace can be made and still
  // pass nothing: a host whose firewall filters bridged packets (Docker
  // sets the FORWARD policy to DROP, and br_netfilter sends bridged IPv4
  // through it) drops everything between two daemons. FAILED_PRECONDITION
  // saying so otherwise. Create checks the last host against the first.
  absl::Status CheckTraffic(const std::string& from, const std::string& to,
                            absl::Duration timeout = absl::Seconds(2)) const;

  // Replaces the faults on `host`'s link by `faults`.
  absl::Status Apply(const std::string& host, const LinkFaults& faults);

  // Removes every namespace, link, qdisc and rule; returns what is still
  // there afterwards, one line each (empty: clean). Idempotent.
  std::vector<std::string> Teardown();

 private:
  NetworkSandbox() = default;
  // Adds the ACCEPT rule for our bridge to DOCKER-USER (or FORWARD).
  absl::Status AllowForwarding();
  std::string Namespace(const std::string& host) const;
  std::string HostLink(const std::string& host) const;

  pid_t pid_ = 0;
  bool use_nft_ = true;
  int lock_fd_ = -1;
  bool torn_down_ = false;
  std::string bridge_;
  std::string forward_chain_;  // where AllowForwarding put its rule, or ""
  std::string subnet_;
  std::map<std::string, std::string> addresses_;  // host → address
};

}  // namespace ps::chaos

#endif  // PS_TOOLS_CHAOS_NETWORK_SANDBOX_H_
