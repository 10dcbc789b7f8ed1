#include "tools/chaos/leftovers.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "tools/chaos/shell.h"

namespace ps::chaos {
namespace {

constexpr const char* kCgroupRoots[] = {"/sys/fs/cgroup/cpu",
                                        "/sys/fs/cgroup/cpu,cpuacct"};

enum class Kind { kNamespace, kLink, kCgroup, kForwardRule };

struct Resource {
  Kind kind;
  pid_t pid;
  std::string name;  // a namespace, a link, a cgroup directory, or a rule
                     // as iptables -S prints it ("-A FORWARD -i pcb1 …")
  std::string root;  // cgroups: the controller's root
};

// The pid in names we make: ps_chaos-<pid>-…, pcb<pid>, pc<pid>[sw]<n>.
bool PidOfNamespace(absl::string_view name, pid_t* pid) {
  if (!absl::ConsumePrefix(&name, "ps_chaos-")) return false;
  const size_t dash = name.find('-');
  return dash != absl::string_view::npos &&
         absl::SimpleAtoi(name.substr(0, dash), pid);
}

bool PidOfLink(absl::string_view name, pid_t* pid) {
  if (!absl::ConsumePrefix(&name, "pc")) return false;
  const bool bridge = absl::ConsumePrefix(&name, "b");
  const size_t end = name.find_first_not_of("0123456789");
  if (end == 0) return false;
  if (bridge ? end != absl::string_view::npos
             : (end == absl::string_view::npos ||
                (name[end] != 's' && name[end] != 'w'))) {
    return false;
  }
  return absl::SimpleAtoi(name.substr(0, end), pid);
}

std::vector<Resource> AllResources() {
  std::vector<Resource> found;
  if (absl::StatusOr<std::string> list = RunCommand({"ip", "netns", "list"});
      list.ok()) {
    for (absl::string_view line : absl::StrSplit(*list, '\n')) {
      const std::string name(line.substr(0, line.find(' ')));
      pid_t pid = 0;
      if (PidOfNamespace(name, &pid)) {
        found.push_back({Kind::kNamespace, pid, name, ""});
      }
    }
  }
  if (absl::StatusOr<std::string> list = RunCommand({"ip", "-o", "link"});
      list.ok()) {
    // "12: pc123w0@if11: <BROADCAST,…"
    for (absl::string_view line : absl::StrSplit(*list, '\n')) {
      std::vector<absl::string_view> fields = absl::StrSplit(line, ": ");
      if (fields.size() < 2) continue;
      const std::string name(fields[1].substr(0, fields[1].find('@')));
      pid_t pid = 0;
      if (PidOfLink(name, &pid)) found.push_back({Kind::kLink, pid, name, ""});
    }
  }
  if (absl::StatusOr<std::string> rules = RunCommand({"iptables", "-w", "-S"});
      rules.ok()) {
    for (absl::string_view line : absl::StrSplit(*rules, '\n')) {
      const size_t at = line.find("--comment ps_chaos-");
      pid_t pid = 0;
      if (at != absl::string_view::npos &&
          absl::SimpleAtoi(
              line.substr(at + 19, line.find(' ', at + 19) - (at + 19)),
              &pid)) {
        found.push_back({Kind::kForwardRule, pid, std::string(line), ""});
      }
    }
  }
  for (const char* root : kCgroupRoots) {
    DIR* dir = opendir(root);
    if (dir == nullptr) continue;
    while (dirent* entry = readdir(dir)) {
      absl::string_view name = entry->d_name;
      pid_t pid = 0;
      if (absl::ConsumePrefix(&name, "ps_chaos-") &&
          absl::SimpleAtoi(name, &pid)) {
        found.push_back(
            {Kind::kCgroup, pid, absl::StrCat(root, "/", entry->d_name), root});
      }
    }
    closedir(dir);
  }
  return found;
}

std::string Describe(const Resource& r) {
  switch (r.kind) {
    case Kind::kNamespace:
      return absl::StrCat("network namespace ", r.name);
    case Kind::kLink:
      return absl::StrCat("network link ", r.name);
    case Kind::kCgroup:
      return absl::StrCat("cgroup ", r.name);
    case Kind::kForwardRule:
      return absl::StrCat("iptables rule ", r.name);
  }
  return r.name;
}

bool Running(pid_t pid) { return kill(pid, 0) == 0 || errno == EPERM; }

}  // namespace

std::vector<std::string> ForwardRule(const std::string& bridge, pid_t pid) {
  return {"-i", bridge,    "-o",        bridge,
          "-m", "comment", "--comment", absl::StrCat("ps_chaos-", pid),
          "-j", "ACCEPT"};
}

void RemoveCgroupTree(const std::string& dir, const std::string& root) {
  if (DIR* d = opendir(dir.c_str())) {
    std::vector<std::string> children;
    while (dirent* entry = readdir(d)) {
      if (entry->d_type == DT_DIR && entry->d_name[0] != '.') {
        children.push_back(absl::StrCat(dir, "/", entry->d_name));
      }
    }
    closedir(d);
    for (const std::string& child : children) RemoveCgroupTree(child, root);
  }
  // A group with processes in it cannot be removed: hand them back.
  std::ifstream procs(dir + "/cgroup.procs");
  for (std::string pid; procs >> pid;) {
    std::ofstream back(root + "/cgroup.procs");
    back << pid << std::endl;
  }
  rmdir(dir.c_str());
}

std::vector<std::string> LeftAfterWaiting(
    const std::function<std::vector<std::string>()>& list,
    absl::Duration bound) {
  const absl::Time give_up = absl::Now() + bound;
  std::vector<std::string> left = list();
  while (!left.empty() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(100));
    left = list();
  }
  return left;
}

std::vector<std::string> ResourcesOf(pid_t pid) {
  std::vector<std::string> lines;
  for (const Resource& r : AllResources()) {
    if (r.pid == pid) lines.push_back(Describe(r));
  }
  return lines;
}

std::vector<std::string> CleanUpDeadRuns() {
  std::vector<std::string> report;
  std::vector<Resource> dead;
  for (Resource& r : AllResources()) {
    if (!Running(r.pid)) dead.push_back(std::move(r));
  }
  for (const Resource& r : dead) {
    switch (r.kind) {
      case Kind::kNamespace:
        (void)RunCommand({"ip", "netns", "delete", r.name});
        break;
      case Kind::kLink:
        // Gone already when its namespace took the pair with it.
        (void)RunCommand({"ip", "link", "delete", r.name});
        break;
      case Kind::kCgroup:
        RemoveCgroupTree(r.name, r.root);
        break;
      case Kind::kForwardRule: {
        // "-A CHAIN …" as iptables -S printed it, deleted as "-D CHAIN …".
        std::vector<std::string> command = {"iptables", "-w"};
        for (absl::string_view word :
             absl::StrSplit(r.name, ' ', absl::SkipEmpty())) {
          command.emplace_back(word == "-A" ? "-D" : word);
        }
        (void)RunCommand(command);
        break;
      }
    }
  }
  std::vector<std::string> still;
  for (const Resource& r : AllResources()) {
    if (!Running(r.pid)) still.push_back(Describe(r));
  }
  for (const Resource& r : dead) {
    const std::string line = Describe(r);
    const bool left =
        std::find(still.begin(), still.end(), line) != still.end();
    report.push_back(absl::StrCat(left ? "could not remove " : "removed ", line,
                                  " of ps_chaos run ", r.pid,
                                  ", which is no longer running"));
  }
  return report;
}

}  // namespace ps::chaos
