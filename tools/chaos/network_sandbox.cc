#include "tools/chaos/network_sandbox.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <thread>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "spdlog/spdlog.h"
#include "tools/chaos/leftovers.h"
#include "tools/chaos/shell.h"

namespace ps::chaos {
namespace {

constexpr char kLockPath[] = "/run/lock/ps_chaos.lock";

// The documentation ranges of RFC 5737, in order of preference. Some
// machines use TEST-NET-1 for real (a VM's uplink, say): a range that
// overlaps any address or route of the machine is never taken.
constexpr const char* kSubnets[] = {"192.0.2", "198.51.100", "203.0.113"};

// An IPv4 network from "a.b.c.d/len" or "a.b.c.d" (a /32).
bool ParseNetwork(absl::string_view text, uint32_t* base, int* length) {
  const std::pair<absl::string_view, absl::string_view> parts =
      absl::StrSplit(text, absl::MaxSplits('/', 1));
  *length = 32;
  if (!parts.second.empty() && !absl::SimpleAtoi(parts.second, length)) {
    return false;
  }
  std::vector<absl::string_view> octets = absl::StrSplit(parts.first, '.');
  if (octets.size() != 4 || *length < 0 || *length > 32) return false;
  *base = 0;
  for (absl::string_view octet : octets) {
    uint32_t value = 0;
    if (!absl::SimpleAtoi(octet, &value) || value > 255) return false;
    *base = (*base << 8) | value;
  }
  return true;
}

bool Overlaps(uint32_t a, int a_length, uint32_t b, int b_length) {
  const int shorter = std::min(a_length, b_length);
  const uint32_t mask = shorter == 0 ? 0 : ~uint32_t{0} << (32 - shorter);
  return (a & mask) == (b & mask);
}

// The first documentation range no address or route of this machine
// touches, e.g. "198.51.100"; empty when every one is taken.
std::string FreeSubnet() {
  std::vector<std::pair<uint32_t, int>> used;
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"ip", "-o", "-4", "addr"},
        std::vector<std::string>{"ip", "-4", "route"}}) {
    absl::StatusOr<std::string> out = RunCommand(command);
    if (!out.ok()) continue;
    for (absl::string_view word :
         absl::StrSplit(*out, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
      uint32_t base = 0;
      int length = 0;
      if (ParseNetwork(word, &base, &length)) used.push_back({base, length});
    }
  }
  for (const char* subnet : kSubnets) {
    uint32_t base = 0;
    int length = 0;
    ParseNetwork(absl::StrCat(subnet, ".0/24"), &base, &length);
    bool taken = false;
    for (const auto& [other, other_length] : used) {
      taken = taken || Overlaps(base, 24, other, other_length);
    }
    if (!taken) return subnet;
  }
  return "";
}

// tc wants a burst of at least rate/HZ; 20 ms of traffic (at least 16 KiB)
// keeps a capped link smooth without letting bursts through.
std::string Burst(const std::string& rate) {
  const size_t digits = rate.find_first_not_of("0123456789.");
  double value = 0;
  if (!absl::SimpleAtod(rate.substr(0, digits), &value)) value = 1;
  const std::string unit = rate.substr(digits);
  double bits = value;
  if (unit.rfind("k", 0) == 0) bits *= 1e3;
  if (unit.rfind("m", 0) == 0) bits *= 1e6;
  if (unit.rfind("g", 0) == 0) bits *= 1e9;
  if (unit.find("bps") != std::string::npos) bits *= 8;  // tc: bps = bytes/s
  const double bytes = std::max(16384.0, bits / 8 * 0.02);
  return absl::StrCat(static_cast<int64_t>(bytes), "b");
}

// Runs `fn` on a thread of its own inside network namespace `ns`: setns
// moves only the calling thread, and sockets stay in the namespace they
// were made in. The thread goes back before it ends: a thread still
// ending after join would keep the namespace (and its veth) alive past
// Teardown.
absl::Status InNamespace(const std::string& ns,
                         const std::function<absl::Status()>& fn) {
  absl::Status result;
  std::thread thread([&] {
    const int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    const std::string path = absl::StrCat("/var/run/netns/", ns);
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (home < 0 || fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      result = absl::UnavailableError(absl::StrCat(
          "cannot enter network namespace ", ns, ": ", std::strerror(errno)));
    } else {
      result = fn();
      if (setns(home, CLONE_NEWNET) != 0 && result.ok()) {
        result = absl::InternalError(absl::StrCat(
            "cannot leave network namespace ", ns, ": ", std::strerror(errno)));
      }
    }
    if (fd >= 0) close(fd);
    if (home >= 0) close(home);
  });
  thread.join();
  return result;
}

sockaddr_in SocketAddress(const std::string& address, uint16_t port) {
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, address.c_str(), &a.sin_addr);
  return a;
}

}  // namespace

absl::Status NetworkSandbox::CheckTraffic(const std::string& from,
                                          const std::string& to,
                                          absl::Duration timeout) const {
  const std::string to_address = Address(to);
  int listener = -1;
  uint16_t port = 0;
  absl::Status listening = InNamespace(Namespace(to), [&]() -> absl::Status {
    listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = SocketAddress(to_address, 0);
    socklen_t length = sizeof(a);
    if (listener < 0 ||
        bind(listener, reinterpret_cast<sockaddr*>(&a), length) != 0 ||
        listen(listener, 4) != 0 ||
        getsockname(listener, reinterpret_cast<sockaddr*>(&a), &length) != 0) {
      return absl::UnavailableError(absl::StrCat(
          "cannot listen on ", to_address, ": ", std::strerror(errno)));
    }
    port = ntohs(a.sin_port);
    return absl::OkStatus();
  });
  absl::Status connected = listening;
  if (listening.ok()) {
    connected = InNamespace(Namespace(from), [&]() -> absl::Status {
      const int fd =
          socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) return absl::UnavailableError(std::strerror(errno));
      sockaddr_in a = SocketAddress(to_address, port);
      int error = 0;
      if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        error = errno;
        if (error == EINPROGRESS) {
          pollfd waiting = {fd, POLLOUT, 0};
          const int ready =
              poll(&waiting, 1,
                   static_cast<int>(absl::ToInt64Milliseconds(timeout)));
          socklen_t length = sizeof(error);
          error = ETIMEDOUT;
          if (ready == 1) getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
        }
      }
      close(fd);
      if (error == 0) return absl::OkStatus();
      return absl::UnavailableError(std::strerror(error));
    });
  }
  if (listener >= 0) close(listener);
  if (!listening.ok()) return listening;
  if (connected.ok()) return absl::OkStatus();
  std::string why = "a firewall rule of this machine drops them";
  std::ifstream bridge_nf("/proc/sys/net/bridge/bridge-nf-call-iptables");
  if (int on = 0; bridge_nf >> on && on == 1) {
    why =
        "net.bridge.bridge-nf-call-iptables is 1, so bridged packets pass "
        "through the host's iptables FORWARD chain, whose policy Docker "
        "sets to DROP; allow the bridge there, or run the scenario with "
        "network: loopback";
  }
  return absl::FailedPreconditionError(
      absl::StrCat("packets do not cross the sandbox's bridge ", bridge_,
                   ": a TCP "
                   "connection from ",
                   from, " (", Address(from), ") to ", to, " (", to_address,
                   ") failed within ", absl::FormatDuration(timeout), " (",
                   connected.message(), "): ", why));
}

absl::StatusOr<std::unique_ptr<NetworkSandbox>> NetworkSandbox::Create(
    const std::vector<std::string>& hosts, bool use_nft) {
  std::unique_ptr<NetworkSandbox> sandbox(new NetworkSandbox);
  sandbox->pid_ = getpid();
  sandbox->use_nft_ = use_nft;
  sandbox->lock_fd_ = open(kLockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (sandbox->lock_fd_ < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot open ", kLockPath, ": ", std::strerror(errno)));
  }
  if (flock(sandbox->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    std::ifstream holder(kLockPath);
    std::string pid;
    holder >> pid;
    close(sandbox->lock_fd_);
    sandbox->lock_fd_ = -1;
    return absl::UnavailableError(
        absl::StrCat("another ps_chaos run (pid ", pid,
                     ") holds the network sandbox; "
                     "run one namespaced scenario at a time"));
  }
  (void)!ftruncate(sandbox->lock_fd_, 0);
  const std::string pid_text = absl::StrCat(sandbox->pid_, "\n");
  (void)!write(sandbox->lock_fd_, pid_text.data(), pid_text.size());
  // A run killed earlier may have left its bridge, which holds our subnet.
  for (const std::string& line : CleanUpDeadRuns()) {
    spdlog::warn("ps_chaos: {}", line);
  }

  const std::string subnet = FreeSubnet();
  if (subnet.empty()) {
    return absl::UnavailableError(
        "every documentation range (192.0.2.0/24, 198.51.100.0/24, "
        "203.0.113.0/24) is in use on this machine: no private subnet for "
        "the network sandbox");
  }
  sandbox->subnet_ = subnet;
  sandbox->bridge_ = absl::StrCat("pcb", sandbox->pid_);
  std::vector<std::vector<std::string>> commands = {
      {"ip", "link", "add", sandbox->bridge_, "type", "bridge"},
      {"ip", "addr", "add", absl::StrCat(subnet, ".1/24"), "dev",
       sandbox->bridge_},
      {"ip", "link", "set", sandbox->bridge_, "up"}};
  for (const std::string& host : hosts) {
    const int base = host[0] == 's' ? 10 : 100;
    // "s3r1": replica 1 of server 3.
    const std::vector<std::string> parts = absl::StrSplit(host.substr(1), 'r');
    int index = 0;
    int replica = 0;
    if (!absl::SimpleAtoi(parts[0], &index) || index < 0 || index > 99 ||
        parts.size() > 2 || (parts.size() == 2 && host[0] != 's') ||
        (parts.size() == 2 &&
         (!absl::SimpleAtoi(parts[1], &replica) || replica < 1 || index > 15 ||
          164 + 16 * (replica - 1) + index > 254))) {
      return absl::InvalidArgumentError(absl::StrCat("bad host name ", host));
    }
    const int host_byte =
        replica == 0 ? base + index : 164 + 16 * (replica - 1) + index;
    const std::string address = absl::StrCat(subnet, ".", host_byte);
    sandbox->addresses_[host] = address;
    const std::string ns = sandbox->Namespace(host);
    const std::string link = sandbox->HostLink(host);
    const std::string peer = link + "p";
    for (std::vector<std::string> command :
         std::vector<std::vector<std::string>>{
             {"ip", "netns", "add", ns},
             {"ip", "link", "add", link, "type", "veth", "peer", "name", peer},
             {"ip", "link", "set", peer, "netns", ns},
             {"ip", "link", "set", link, "master", sandbox->bridge_, "up"},
             {"ip", "-n", ns, "link", "set", peer, "name", "eth0"},
             {"ip", "-n", ns, "addr", "add", address + "/24", "dev", "eth0"},
             {"ip", "-n", ns, "link", "set", "eth0", "up"},
             {"ip", "-n", ns, "link", "set", "lo", "up"}}) {
      commands.push_back(std::move(command));
    }
  }
  for (const std::vector<std::string>& command : commands) {
    if (absl::StatusOr<std::string> done = RunCommand(command); !done.ok()) {
      const std::vector<std::string> left = sandbox->Teardown();
      return absl::UnavailableError(absl::StrCat(
          "cannot build the network sandbox: ", done.status().message(),
          left.empty()
              ? ""
              : absl::StrCat("; left behind: ", absl::StrJoin(left, "; "))));
    }
  }
  if (absl::Status allowed = sandbox->AllowForwarding(); !allowed.ok()) {
    const std::vector<std::string> left = sandbox->Teardown();
    return absl::UnavailableError(absl::StrCat(
        "cannot let traffic cross the sandbox bridge: ", allowed.message(),
        left.empty()
            ? ""
            : absl::StrCat("; left behind: ", absl::StrJoin(left, "; "))));
  }
  // Fail now, not after the workers' retries ran out.
  if (hosts.size() >= 2) {
    if (absl::Status crosses =
            sandbox->CheckTraffic(hosts.back(), hosts.front());
        !crosses.ok()) {
      sandbox->Teardown();
      return crosses;
    }
  }
  spdlog::info("network sandbox: bridge {} ({}.1/24), {} namespaces",
               sandbox->bridge_, subnet, hosts.size());
  return sandbox;
}

absl::Status NetworkSandbox::AllowForwarding() {
  // Frames between two namespaces cross our bridge. Once dockerd has run,
  // br_netfilter hands them to iptables (bridge-nf-call-iptables=1) and
  // FORWARD's policy is DROP: without this rule no worker reaches a server.
  // DOCKER-USER is where Docker wants such rules (FORWARD jumps to it
  // first); without Docker, FORWARD itself.
  if (FindProgram("iptables").empty()) return absl::OkStatus();
  const std::string chain =
      RunCommand({"iptables", "-w", "-n", "-L", "DOCKER-USER"}).ok()
          ? "DOCKER-USER"
          : "FORWARD";
  std::vector<std::string> rule = ForwardRule(bridge_, pid_);
  rule.insert(rule.begin(), {"iptables", "-w", "-I", chain});
  if (absl::StatusOr<std::string> added = RunCommand(rule); !added.ok()) {
    return added.status();
  }
  forward_chain_ = chain;
  return absl::OkStatus();
}

NetworkSandbox::~NetworkSandbox() {
  for (const std::string& line : Teardown()) {
    spdlog::error("ps_chaos: left behind: {}", line);
  }
}

std::string NetworkSandbox::Namespace(const std::string& host) const {
  return absl::StrCat("ps_chaos-", pid_, "-", host);
}

std::string NetworkSandbox::HostLink(const std::string& host) const {
  return absl::StrCat("pc", pid_, host);
}

std::string NetworkSandbox::Address(const std::string& host) const {
  auto it = addresses_.find(host);
  return it == addresses_.end() ? "" : it->second;
}

std::vector<std::string> NetworkSandbox::Wrap(
    const std::string& host, std::vector<std::string> argv) const {
  argv.insert(argv.begin(),
              {FindProgram("ip"), "netns", "exec", Namespace(host)});
  return argv;
}

absl::Status NetworkSandbox::Apply(const std::string& host,
                                   const LinkFaults& faults) {
  const std::string ns = Namespace(host);
  std::vector<std::vector<std::string>> commands;
  if (use_nft_) {
    // Replaced atomically: declaring the table first makes the delete
    // succeed whether or not it existed.
    std::string script = "table inet ps_chaos\ndelete table inet ps_chaos\n";
    if (!faults.empty() && (faults.loss > 0 || !faults.cut_from.empty())) {
      const std::string peers = absl::StrJoin(faults.cut_from, ", ");
      const int per_million = static_cast<int>(std::lround(faults.loss * 1e6));
      absl::StrAppend(&script, "table inet ps_chaos {\n");
      for (const auto& [chain, hook, lo, peer_field] :
           {std::tuple{"in", "input", "iifname", "saddr"},
            std::tuple{"out", "output", "oifname", "daddr"}}) {
        absl::StrAppend(&script, "  chain ", chain, " {\n    type filter hook ",
                        hook, " priority 0; policy accept;\n    ", lo,
                        " \"lo\" accept\n");
        if (!faults.cut_from.empty()) {
          absl::StrAppend(&script, "    ip ", peer_field, " { ", peers,
                          " } drop\n");
        }
        if (per_million > 0) {
          absl::StrAppend(&script, "    numgen random mod 1000000 < ",
                          per_million, " drop\n");
        }
        absl::StrAppend(&script, "  }\n");
      }
      absl::StrAppend(&script, "}\n");
    }
    const std::string path =
        absl::StrCat("/tmp/ps_chaos-", pid_, "-", host, ".nft");
    {
      std::ofstream out(path);
      out << script;
      if (!out) return absl::UnavailableError("cannot write " + path);
    }
    absl::StatusOr<std::string> done =
        RunCommand({"ip", "netns", "exec", ns, "nft", "-f", path});
    std::remove(path.c_str());
    if (!done.ok()) return done.status();
  } else {
    commands.push_back({"ip", "netns", "exec", ns, "iptables", "-F", "INPUT"});
    commands.push_back({"ip", "netns", "exec", ns, "iptables", "-F", "OUTPUT"});
    for (const std::string& peer : faults.cut_from) {
      commands.push_back({"ip", "netns", "exec", ns, "iptables", "-A", "INPUT",
                          "-s", peer, "-j", "DROP"});
      commands.push_back({"ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT",
                          "-d", peer, "-j", "DROP"});
    }
    if (faults.loss > 0) {
      for (const char* chain : {"INPUT", "OUTPUT"}) {
        commands.push_back({"ip", "netns", "exec", ns, "iptables", "-A", chain,
                            "!", chain[0] == 'I' ? "-i" : "-o", "lo", "-m",
                            "statistic", "--mode", "random", "--probability",
                            absl::StrCat(faults.loss), "-j", "DROP"});
      }
    }
  }
  // The cap shapes what leaves the namespace (eth0) and what leaves the
  // bridge towards it (the host end of the veth).
  for (const std::vector<std::string>& device :
       {std::vector<std::string>{"ip", "netns", "exec", ns, "tc", "qdisc"},
        std::vector<std::string>{"tc", "qdisc"}}) {
    const std::string dev = device.size() > 2 ? "eth0" : HostLink(host);
    std::vector<std::string> command = device;
    if (faults.rate.empty()) {
      // Nothing to delete is fine: tc fails when no root qdisc of ours.
      command.insert(command.end(), {"del", "dev", dev, "root"});
      (void)RunCommand(command);
      continue;
    }
    command.insert(command.end(),
                   {"replace", "dev", dev, "root", "tbf", "rate", faults.rate,
                    "burst", Burst(faults.rate), "latency", "100ms"});
    commands.push_back(std::move(command));
  }
  for (const std::vector<std::string>& command : commands) {
    if (absl::StatusOr<std::string> done = RunCommand(command); !done.ok()) {
      return done.status();
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> NetworkSandbox::Teardown() {
  if (torn_down_) return {};
  torn_down_ = true;
  // A namespace takes its end of the veth, its rules and qdiscs with it;
  // the host end goes with the pair.
  for (const auto& [host, address] : addresses_) {
    (void)RunCommand({"ip", "netns", "delete", Namespace(host)});
  }
  if (!bridge_.empty()) (void)RunCommand({"ip", "link", "delete", bridge_});
  if (!forward_chain_.empty()) {
    std::vector<std::string> rule = ForwardRule(bridge_, pid_);
    rule.insert(rule.begin(), {"iptables", "-w", "-D", forward_chain_});
    (void)RunCommand(rule);
  }
  // Our cgroups are the throttle's to remove, not ours to report.
  auto ours_left = [this] {
    std::vector<std::string> left = ResourcesOf(pid_);
    left.erase(std::remove_if(left.begin(), left.end(),
                              [](const std::string& line) {
                                return line.rfind("cgroup", 0) == 0;
                              }),
               left.end());
    return left;
  };
  // The kernel frees a deleted namespace, and the veth it holds, on a work
  // queue of its own: give it time before calling anything left.
  std::vector<std::string> left = LeftAfterWaiting(ours_left);
  if (lock_fd_ >= 0) {
    flock(lock_fd_, LOCK_UN);
    close(lock_fd_);
    lock_fd_ = -1;
  }
  return left;
}

}  // namespace ps::chaos
