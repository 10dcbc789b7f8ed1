#include "tools/chaos/scenario.h"

#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/cli.h"
#include "common/consistency_mode.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace ps::chaos {

std::string ProcessRef::ToString() const {
  std::string name =
      absl::StrCat(kind == Kind::kServer ? "server " : "worker ", index);
  if (primary()) {
    absl::StrAppend(&name, " primary");
  } else if (replica.has_value()) {
    absl::StrAppend(&name, " replica ", *replica);
  }
  return name;
}

std::string Trigger::ToString() const {
  return unit == Unit::kSeconds ? absl::StrCat(value, "s")
                                : absl::StrCat(value, " epoch");
}

std::string FaultEvent::ActionName() const {
  switch (action) {
    case Action::kKill:
      return "kill";
    case Action::kStop:
      return "stop";
    case Action::kCont:
      return "cont";
    case Action::kRestart:
      return "restart";
    case Action::kRpc:
      return "rpc";
    case Action::kNet:
      return "net";
    case Action::kCpu:
      return "cpu";
  }
  return "?";
}

std::string FaultEvent::Describe() const {
  std::vector<std::string> names;
  for (const ProcessRef& target : targets) names.push_back(target.ToString());
  std::string text = absl::StrCat(ActionName(), " ", absl::StrJoin(names, "+"));
  std::vector<std::string> details;
  if (action == Action::kRpc) details.push_back(rpc::FormatFaultSpec(rpc));
  if (action == Action::kNet) {
    if (loss > 0) details.push_back(absl::StrCat("loss ", 100 * loss, "%"));
    if (!rate.empty()) details.push_back(absl::StrCat("rate ", rate));
    if (latency > absl::ZeroDuration()) {
      details.push_back(
          absl::StrCat("latency ", absl::FormatDuration(latency)));
    }
    if (!partition.empty()) {
      std::vector<std::string> peers;
      for (const ProcessRef& peer : partition) peers.push_back(peer.ToString());
      details.push_back(absl::StrCat("cut from ", absl::StrJoin(peers, "+")));
    }
  }
  if (action == Action::kCpu) {
    details.push_back(absl::StrCat("cpu ", 100 * cpu, "%"));
  }
  if (duration) {
    details.push_back(absl::StrCat("for ", absl::FormatDuration(*duration)));
  }
  if (!details.empty())
    absl::StrAppend(&text, ": ", absl::StrJoin(details, ", "));
  return text;
}

bool Scenario::NeedsNetwork() const {
  for (const FaultEvent& fault : faults) {
    if (fault.action == FaultEvent::Action::kNet) return true;
  }
  return false;
}

bool Scenario::NeedsCgroups() const {
  for (const FaultEvent& fault : faults) {
    if (fault.action == FaultEvent::Action::kCpu) return true;
  }
  return false;
}

namespace {

// Checks one YAML document against our schema, stopping at the first
// problem, which it reports with the file and line.
class Parser {
 public:
  explicit Parser(std::string file_name) : file_(std::move(file_name)) {}

  absl::Status Error(const YAML::Node& node, absl::string_view problem) const {
    return Error(node.Mark().line, problem);
  }
  absl::Status Error(int zero_based_line, absl::string_view problem) const {
    return absl::InvalidArgumentError(
        absl::StrCat(file_, ":", zero_based_line + 1, ": ", problem));
  }

  // Every key of `map` must be in `known`, once.
  absl::Status CheckKeys(const YAML::Node& map, absl::string_view what,
                         const std::vector<std::string>& known) const {
    if (!map.IsMap())
      return Error(map, absl::StrCat(what, " must be a mapping"));
    std::set<std::string> seen;
    for (const auto& kv : map) {
      const std::string key = kv.first.Scalar();
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        return Error(kv.first,
                     absl::StrCat("unknown key '", key, "' in ", what,
                                  "; known: ", absl::StrJoin(known, ", ")));
      }
      if (!seen.insert(key).second) {
        return Error(kv.first,
                     absl::StrCat("key '", key, "' given twice in ", what));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> String(const YAML::Node& node,
                                     absl::string_view key) const {
    if (!node.IsScalar()) {
      return Error(node, absl::StrCat(key, " must be a single value"));
    }
    return node.Scalar();
  }

  absl::StatusOr<uint64_t> Unsigned(const YAML::Node& node,
                                    absl::string_view key, uint64_t low,
                                    uint64_t high) const {
    uint64_t value = 0;
    if (!node.IsScalar() || !absl::SimpleAtoi(node.Scalar(), &value) ||
        value < low || value > high) {
      return Error(
          node, absl::StrCat(key, " must be a whole number from ", low, " to ",
                             high, ", not '", node.Scalar(), "'"));
    }
    return value;
  }

  absl::StatusOr<double> Number(const YAML::Node& node, absl::string_view key,
                                double low, double high) const {
    double value = 0;
    if (!node.IsScalar() || !absl::SimpleAtod(node.Scalar(), &value) ||
        !(value > low) || value > high) {
      return Error(node, absl::StrCat(key, " must be a number in (", low, ", ",
                                      high, "], not '", node.Scalar(), "'"));
    }
    return value;
  }

  // "5%" or "0.05".
  absl::StatusOr<double> Fraction(const YAML::Node& node,
                                  absl::string_view key) const {
    const std::string scalar = node.IsScalar() ? node.Scalar() : "";
    absl::string_view text = scalar;
    const bool percent = absl::ConsumeSuffix(&text, "%");
    double value = 0;
    if (!absl::SimpleAtod(text, &value) || !(value >= 0) ||
        value > (percent ? 100 : 1)) {
      return Error(node, absl::StrCat(key,
                                      " must be a fraction like 0.05 or "
                                      "a percentage like 5%, not '",
                                      node.Scalar(), "'"));
    }
    return percent ? value / 100 : value;
  }

  absl::StatusOr<absl::Duration> Duration(const YAML::Node& node,
                                          absl::string_view key) const {
    absl::Duration value;
    if (!node.IsScalar() || !absl::ParseDuration(node.Scalar(), &value) ||
        value <= absl::ZeroDuration()) {
      return Error(node, absl::StrCat(key,
                                      " must be a duration like 500ms, "
                                      "10s or 2m, not '",
                                      node.Scalar(), "'"));
    }
    return value;
  }

  absl::StatusOr<std::vector<std::string>> Strings(
      const YAML::Node& node, absl::string_view key) const {
    std::vector<std::string> values;
    if (node.IsScalar()) {
      values = absl::StrSplit(node.Scalar(), ' ', absl::SkipEmpty());
      return values;
    }
    if (!node.IsSequence()) {
      return Error(node, absl::StrCat(key, " must be a list of flags"));
    }
    for (const YAML::Node& item : node) {
      if (!item.IsScalar()) {
        return Error(item, absl::StrCat(key, " must be a list of flags"));
      }
      values.push_back(item.Scalar());
    }
    return values;
  }

  // "worker 2", "server 0", "workers", "servers", "all", or a list of
  // these (a YAML sequence or comma-separated). With replicas a server is
  // "server 1 primary" or "server 1 replica 0"; "servers" and "all" are
  // every replica.
  absl::StatusOr<std::vector<ProcessRef>> Targets(
      const YAML::Node& node, absl::string_view key,
      const ClusterSpec& cluster) const {
    std::vector<std::string> words;
    if (node.IsScalar()) {
      for (absl::string_view part : absl::StrSplit(node.Scalar(), ',')) {
        words.emplace_back(absl::StripAsciiWhitespace(part));
      }
    } else if (node.IsSequence()) {
      for (const YAML::Node& item : node) {
        if (!item.IsScalar()) {
          return Error(item, absl::StrCat("each item of ", key,
                                          " must be one process name like "
                                          "'worker 2', not a list or a "
                                          "mapping"));
        }
        words.push_back(item.Scalar());
      }
    }
    if (words.empty()) {
      return Error(node, absl::StrCat(key,
                                      " must name processes: 'worker 2', "
                                      "'server 0', 'workers', 'servers', 'all' "
                                      "or a list of these"));
    }
    const bool replicated = cluster.per_shard() > 1;
    std::vector<ProcessRef> targets;
    auto add = [&](ProcessRef ref) {
      if (std::find(targets.begin(), targets.end(), ref) == targets.end()) {
        targets.push_back(ref);
      }
    };
    for (const std::string& word : words) {
      const std::string w = absl::AsciiStrToLower(word);
      if (w == "workers" || w == "all") {
        for (uint32_t i = 0; i < cluster.workers; ++i) {
          add({ProcessRef::Kind::kWorker, i});
        }
      }
      if (w == "servers" || w == "all") {
        for (uint32_t i = 0; i < cluster.servers; ++i) {
          if (!replicated) add({ProcessRef::Kind::kServer, i});
          for (uint32_t r = 0; replicated && r < cluster.per_shard(); ++r) {
            add({ProcessRef::Kind::kServer, i, r});
          }
        }
      }
      if (w == "workers" || w == "servers" || w == "all") continue;
      const std::vector<absl::string_view> parts =
          absl::StrSplit(w, ' ', absl::SkipEmpty());
      uint32_t index = 0;
      if (parts.size() < 2 || (parts[0] != "worker" && parts[0] != "server") ||
          !absl::SimpleAtoi(parts[1], &index)) {
        return Error(node, absl::StrCat("'", word, "' in ", key,
                                        " is not a process: say 'worker 2', "
                                        "'server 0', 'workers', 'servers' or "
                                        "'all'"));
      }
      const bool is_server = parts[0] == "server";
      const uint32_t count = is_server ? cluster.servers : cluster.workers;
      if (index >= count) {
        return Error(
            node, absl::StrCat(word, " does not exist: the cluster has ", count,
                               is_server ? " servers" : " workers", " (0 to ",
                               count - 1, ")"));
      }
      ProcessRef ref{
          is_server ? ProcessRef::Kind::kServer : ProcessRef::Kind::kWorker,
          index};
      const absl::StatusOr<std::optional<uint32_t>> replica =
          Replica(node, key, word, parts, cluster);
      if (!replica.ok()) return replica.status();
      ref.replica = *replica;
      add(ref);
    }
    return targets;
  }

  // The replica part of a target's words ("server 1 primary", "server 1
  // replica 0"): required for a server of a replicated cluster (a shard is
  // then several processes), refused anywhere else.
  absl::StatusOr<std::optional<uint32_t>> Replica(
      const YAML::Node& node, absl::string_view key, const std::string& word,
      const std::vector<absl::string_view>& parts,
      const ClusterSpec& cluster) const {
    const bool is_server = parts[0] == "server";
    const bool replicated = is_server && cluster.replicas > 1;
    if (parts.size() == 2) {
      if (!replicated) return std::nullopt;
      return Error(node,
                   absl::StrCat("'", word, "' in ", key, " is one of ",
                                cluster.replicas, " replicas: say '", word,
                                " primary' or '", word, " replica K'"));
    }
    if (!replicated) {
      return Error(node,
                   absl::StrCat("'", word, "' in ", key, " names a replica, ",
                                is_server ? "but the cluster has no replicas "
                                            "(cluster key replicas)"
                                          : "but workers have none"));
    }
    uint32_t replica = 0;
    if (parts.size() == 3 && parts[2] == "primary") {
      return ProcessRef::kPrimary;
    }
    if (parts.size() != 4 || parts[2] != "replica" ||
        !absl::SimpleAtoi(parts[3], &replica)) {
      return Error(
          node, absl::StrCat("'", word, "' in ", key,
                             " is not a process: say 'server ", parts[1],
                             " primary' or 'server ", parts[1], " replica K'"));
    }
    if (replica >= cluster.per_shard()) {
      return Error(node, absl::StrCat(word, " does not exist: each server has ",
                                      cluster.per_shard(), " replicas (0 to ",
                                      cluster.per_shard() - 1, ")"));
    }
    return replica;
  }

  // "12s", "2m", "0.9 epoch", "epoch 0.9", "1.5 epochs".
  absl::StatusOr<Trigger> At(const YAML::Node& node) const {
    const std::string text =
        node.IsScalar() ? absl::AsciiStrToLower(node.Scalar()) : "";
    Trigger trigger;
    absl::string_view rest = text;
    if (absl::ConsumePrefix(&rest, "epoch") ||
        absl::ConsumeSuffix(&rest, "epochs") ||
        absl::ConsumeSuffix(&rest, "epoch")) {
      trigger.unit = Trigger::Unit::kEpoch;
      // inf would never be reached and NaN never compares: both never fire.
      if (absl::SimpleAtod(absl::StripAsciiWhitespace(rest), &trigger.value) &&
          std::isfinite(trigger.value) && trigger.value >= 0) {
        return trigger;
      }
    } else if (absl::Duration d; absl::ParseDuration(text, &d) &&
                                 d >= absl::ZeroDuration() &&
                                 d < absl::InfiniteDuration()) {
      trigger.value = absl::ToDoubleSeconds(d);
      return trigger;
    }
    return Error(node, absl::StrCat("at: '", node.Scalar(),
                                    "' is neither a time since training "
                                    "started (12s, 1.5m) nor a progress "
                                    "(0.9 epoch)"));
  }

  absl::StatusOr<ClusterSpec> Cluster(const YAML::Node& node) const {
    ClusterSpec c;
    if (!node) return c;
    if (absl::Status s = CheckKeys(
            node, "cluster",
            {"servers", "workers", "replicas", "replica_witness", "mode",
             "model", "epochs", "batch_size", "seed", "eval_every",
             "lease_timeout", "sync_quorum", "checkpoint_every", "rpc_deadline",
             "max_retry_time", "network", "server_flags", "worker_flags"});
        !s.ok()) {
      return s;
    }
    for (const auto& kv : node) {
      const std::string key = kv.first.Scalar();
      const YAML::Node& v = kv.second;
      absl::Status s;
      auto take = [&s](auto result, auto& field) {
        if (result.ok()) {
          field = *result;
        } else {
          s = result.status();
        }
      };
      if (key == "servers") take(Unsigned(v, key, 1, 16), c.servers);
      if (key == "workers") take(Unsigned(v, key, 1, 64), c.workers);
      if (key == "replicas") take(Unsigned(v, key, 1, 8), c.replicas);
      if (key == "replica_witness" &&
          (!v.IsScalar() ||
           !absl::SimpleAtob(v.Scalar(), &c.replica_witness))) {
        return Error(v, absl::StrCat("replica_witness must be true or false, "
                                     "not '",
                                     v.Scalar(), "'"));
      }
      if (key == "epochs") take(Unsigned(v, key, 1, 1000), c.epochs);
      if (key == "batch_size") take(Unsigned(v, key, 1, 1 << 16), c.batch_size);
      if (key == "seed") take(Unsigned(v, key, 0, UINT64_MAX), c.seed);
      if (key == "sync_quorum") take(Unsigned(v, key, 0, 64), c.sync_quorum);
      if (key == "eval_every") take(Number(v, key, 0, 1000), c.eval_every);
      if (key == "lease_timeout") take(Duration(v, key), c.lease_timeout);
      if (key == "checkpoint_every") take(Duration(v, key), c.checkpoint_every);
      if (key == "rpc_deadline") take(Duration(v, key), c.rpc_deadline);
      if (key == "max_retry_time") take(Duration(v, key), c.max_retry_time);
      if (key == "server_flags") take(Strings(v, key), c.server_flags);
      if (key == "worker_flags") take(Strings(v, key), c.worker_flags);
      if (key == "mode" || key == "model" || key == "network") {
        absl::StatusOr<std::string> text = String(v, key);
        if (!text.ok()) return text.status();
        if (key == "mode") {
          if (!common::ParseConsistencyMode(*text).ok()) {
            return Error(v, absl::StrCat("mode '", *text,
                                         "' is not sync, ssp or async"));
          }
          c.mode = *text;
        } else if (key == "model") {
          if (*text != "softmax" && *text != "mlp") {
            return Error(
                v, absl::StrCat("model '", *text, "' is not softmax or mlp"));
          }
          c.model = *text;
        } else {
          static const std::map<std::string, ClusterSpec::Network> kNetworks = {
              {"auto", ClusterSpec::Network::kAuto},
              {"loopback", ClusterSpec::Network::kLoopback},
              {"namespaces", ClusterSpec::Network::kNamespaces}};
          auto it = kNetworks.find(*text);
          if (it == kNetworks.end()) {
            return Error(v, absl::StrCat("network '", *text,
                                         "' is not auto, "
                                         "loopback or namespaces"));
          }
          c.network = it->second;
        }
      }
      if (!s.ok()) return s;
    }
    if (c.replica_witness && c.replicas < 2) {
      return Error(node["replica_witness"],
                   "replica_witness needs replicas of 2 or more (it votes "
                   "between replicas that hold θ)");
    }
    if (c.sync_quorum > c.workers) {
      return Error(node["sync_quorum"],
                   absl::StrCat("sync_quorum ", c.sync_quorum,
                                " is more than the ", c.workers, " workers"));
    }
    if (c.eval_every > c.epochs) {
      return Error(node["eval_every"], "eval_every is longer than the run");
    }
    return c;
  }

  absl::StatusOr<FaultEvent> Fault(const YAML::Node& node,
                                   const ClusterSpec& cluster) const {
    static const std::vector<std::string> kActions = {
        "kill", "stop", "cont", "restart", "rpc", "net", "cpu"};
    static const std::map<std::string, std::string> kParameterAction = {
        {"delay", "rpc"},   {"drop", "rpc"}, {"error", "rpc"},
        {"methods", "rpc"}, {"side", "rpc"}, {"seed", "rpc"},
        {"loss", "net"},    {"rate", "net"}, {"partition", "net"},
        {"latency", "net"}, {"quota", "cpu"}};
    std::vector<std::string> known = {"at", "for"};
    known.insert(known.end(), kActions.begin(), kActions.end());
    for (const auto& [parameter, action] : kParameterAction) {
      known.push_back(parameter);
    }
    if (absl::Status s = CheckKeys(node, "a fault", known); !s.ok()) return s;

    FaultEvent fault;
    fault.line = node.Mark().line + 1;
    std::string action;
    for (const std::string& name : kActions) {
      if (!node[name]) continue;
      if (!action.empty()) {
        return Error(node, absl::StrCat("a fault has one action; this one has "
                                        "both '",
                                        action, "' and '", name, "'"));
      }
      action = name;
    }
    if (action.empty()) {
      return Error(node, absl::StrCat("a fault needs one action: ",
                                      absl::StrJoin(kActions, ", "),
                                      " (with the processes it hits)"));
    }
    fault.action = static_cast<FaultEvent::Action>(
        std::find(kActions.begin(), kActions.end(), action) - kActions.begin());
    absl::StatusOr<std::vector<ProcessRef>> targets =
        Targets(node[action], action, cluster);
    if (!targets.ok()) return targets.status();
    fault.targets = *targets;
    for (const ProcessRef& target : fault.targets) {
      if (fault.action == FaultEvent::Action::kCont && target.primary()) {
        return Error(
            node[action],
            absl::StrCat("cont continues a stopped process, which "
                         "answers no ReplicaStatus: name its replica "
                         "('",
                         ProcessRef{target.kind, target.index, 0}.ToString(),
                         "'), not ", target.ToString()));
      }
    }
    if (!node["at"]) return Error(node, "a fault needs 'at': 12s or 0.9 epoch");
    absl::StatusOr<Trigger> at = At(node["at"]);
    if (!at.ok()) return at.status();
    fault.at = *at;
    if (fault.at.unit == Trigger::Unit::kEpoch &&
        fault.at.value > cluster.epochs) {
      return Error(
          node["at"],
          absl::StrCat("at ", fault.at.ToString(), " is after the run's ",
                       cluster.epochs, " epochs: the fault would never fire"));
    }
    for (const auto& kv : node) {
      auto it = kParameterAction.find(kv.first.Scalar());
      if (it != kParameterAction.end() && it->second != action) {
        return Error(kv.first,
                     absl::StrCat("'", it->first, "' is a setting of ",
                                  it->second, " faults, not of ", action));
      }
    }
    if (node["for"]) {
      if (action == "cont" || action == "restart") {
        return Error(node["for"],
                     absl::StrCat("'for' does not apply to ", action));
      }
      absl::StatusOr<absl::Duration> d = Duration(node["for"], "for");
      if (!d.ok()) return d.status();
      fault.duration = *d;
    }

    if (action == "rpc") {
      // The same keys as --inject_faults, checked by the same parser.
      std::vector<std::string> items;
      for (const char* key : {"seed", "delay", "drop", "error", "side"}) {
        if (node[key]) {
          if (!node[key].IsScalar()) {
            return Error(node[key], absl::StrCat(key, " must be one value"));
          }
          items.push_back(absl::StrCat(key, "=", node[key].Scalar()));
        }
      }
      if (node["methods"]) {
        absl::StatusOr<std::vector<std::string>> methods =
            Strings(node["methods"], "methods");
        if (!methods.ok()) return methods.status();
        items.push_back(absl::StrCat("methods=", absl::StrJoin(*methods, "|")));
      }
      absl::StatusOr<rpc::FaultSpec> spec =
          rpc::ParseFaultSpec(absl::StrJoin(items, ","));
      if (!spec.ok()) return Error(node, spec.status().message());
      if (!spec->active()) {
        return Error(node, "an rpc fault needs delay, drop or error");
      }
      fault.rpc = *spec;
    }
    if (action == "net") {
      if (node["loss"]) {
        absl::StatusOr<double> loss = Fraction(node["loss"], "loss");
        if (!loss.ok()) return loss.status();
        fault.loss = *loss;
      }
      if (node["rate"]) {
        absl::StatusOr<std::string> rate = String(node["rate"], "rate");
        if (!rate.ok()) return rate.status();
        // tc's units: a number then bit, kbit, mbit, gbit (or bps forms).
        const std::string r = absl::AsciiStrToLower(*rate);
        const size_t digits = r.find_first_not_of("0123456789.");
        static const std::set<std::string> kUnits = {
            "bit", "kbit", "mbit", "gbit", "bps", "kbps", "mbps", "gbps"};
        if (digits == 0 || digits == std::string::npos ||
            !kUnits.count(r.substr(digits))) {
          return Error(
              node["rate"],
              absl::StrCat("rate '", *rate,
                           "' is not a bandwidth like 10mbit or 500kbit"));
        }
        fault.rate = r;
      }
      if (node["latency"]) {
        absl::StatusOr<absl::Duration> latency =
            Duration(node["latency"], "latency");
        if (!latency.ok()) return latency.status();
        fault.latency = *latency;
      }
      if (node["partition"]) {
        absl::StatusOr<std::vector<ProcessRef>> peers =
            Targets(node["partition"], "partition", cluster);
        if (!peers.ok()) return peers.status();
        for (const ProcessRef& peer : *peers) {
          if (peer.primary()) {
            return Error(
                node["partition"],
                absl::StrCat("partition peers are fixed for the "
                             "fault's length: name a replica ('",
                             ProcessRef{peer.kind, peer.index, 0}.ToString(),
                             "'), not ", peer.ToString()));
          }
          if (std::find(fault.targets.begin(), fault.targets.end(), peer) ==
              fault.targets.end()) {
            fault.partition.push_back(peer);
          }
        }
        if (fault.partition.empty()) {
          return Error(node["partition"],
                       "a partition needs a peer that is "
                       "not itself a target");
        }
      }
      if (fault.loss == 0 && fault.rate.empty() && fault.partition.empty() &&
          fault.latency == absl::ZeroDuration()) {
        return Error(node,
                     "a net fault needs loss, rate, latency or "
                     "partition");
      }
    }
    if (action == "cpu") {
      if (!node["quota"]) {
        return Error(node,
                     "a cpu fault needs quota: the share of one CPU, "
                     "like 20%");
      }
      absl::StatusOr<double> quota = Fraction(node["quota"], "quota");
      if (!quota.ok()) return quota.status();
      if (*quota < 0.01) {
        return Error(node["quota"], "quota must be at least 1%");
      }
      fault.cpu = *quota;
    }
    return fault;
  }

  absl::StatusOr<Scenario> Document(const YAML::Node& root) const {
    if (!root || root.IsNull()) return Error(0, "the scenario is empty");
    if (absl::Status s = CheckKeys(root, "the scenario",
                                   {"name", "description", "cluster",
                                    "poll_every", "timeout", "faults"});
        !s.ok()) {
      return s;
    }
    Scenario scenario;
    if (root["name"]) {
      absl::StatusOr<std::string> name = String(root["name"], "name");
      if (!name.ok()) return name.status();
      scenario.name = *name;
    }
    if (root["description"]) {
      absl::StatusOr<std::string> text =
          String(root["description"], "description");
      if (!text.ok()) return text.status();
      scenario.description = *text;
    }
    absl::StatusOr<ClusterSpec> cluster = Cluster(root["cluster"]);
    if (!cluster.ok()) return cluster.status();
    scenario.cluster = *cluster;
    if (root["poll_every"]) {
      absl::StatusOr<absl::Duration> d =
          Duration(root["poll_every"], "poll_every");
      if (!d.ok()) return d.status();
      scenario.poll_every = *d;
    }
    if (root["timeout"]) {
      absl::StatusOr<absl::Duration> d = Duration(root["timeout"], "timeout");
      if (!d.ok()) return d.status();
      scenario.timeout = *d;
    }
    const YAML::Node faults = root["faults"];
    if (faults && !faults.IsNull()) {
      if (!faults.IsSequence()) {
        return Error(faults, "faults must be a list ('- at: ...' items)");
      }
      std::map<Trigger::Unit, const FaultEvent*> previous;
      std::vector<FaultEvent> events;
      events.reserve(faults.size());
      for (const YAML::Node& item : faults) {
        absl::StatusOr<FaultEvent> fault = Fault(item, scenario.cluster);
        if (!fault.ok()) return fault.status();
        events.push_back(*fault);
        const FaultEvent& event = events.back();
        auto it = previous.find(event.at.unit);
        if (it != previous.end() && event.at.value < it->second->at.value) {
          return Error(item["at"],
                       absl::StrCat("at ", event.at.ToString(),
                                    " comes before ", it->second->at.ToString(),
                                    " of the fault on line ", it->second->line,
                                    ": list faults in the order they happen"));
        }
        previous[event.at.unit] = &event;
      }
      scenario.faults = std::move(events);
    }
    if (scenario.NeedsNetwork() &&
        scenario.cluster.network == ClusterSpec::Network::kLoopback) {
      for (const FaultEvent& fault : scenario.faults) {
        if (fault.action == FaultEvent::Action::kNet &&
            (fault.loss > 0 || !fault.rate.empty())) {
          return Error(fault.line - 1,
                       "loss and rate need network: auto or "
                       "namespaces (loopback has no link of "
                       "its own to shape)");
        }
      }
    }
    return scenario;
  }

 private:
  std::string file_;
};

// Where each document of a YAML text starts, for the first `most` of them.
// Not YAML::LoadAll: on a stray flow token (",n") yaml-cpp 0.7 yields empty
// documents that all start at that token, forever.
class DocumentStarts : public YAML::EventHandler {
 public:
  static std::vector<YAML::Mark> Find(const std::string& text, size_t most) {
    std::istringstream in(text);
    YAML::Parser parser(in);
    DocumentStarts starts;
    while (starts.marks_.size() < most && parser.HandleNextDocument(starts)) {
    }
    return starts.marks_;
  }

  void OnDocumentStart(const YAML::Mark& mark) override {
    marks_.push_back(mark);
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

 private:
  std::vector<YAML::Mark> marks_;
};

}  // namespace

absl::StatusOr<Scenario> ParseScenario(const std::string& text,
                                       const std::string& file_name) {
  Parser parser(file_name);
  YAML::Node root;
  // yaml-cpp reports syntax errors by exception; they stop here.
  try {
    // Every document, not just the first: a second one would otherwise be
    // ignored without a word, faults and all. Three, to tell a second
    // document from yaml-cpp stuck on a token (the same start twice).
    const std::vector<YAML::Mark> starts = DocumentStarts::Find(text, 3);
    for (size_t i = 1; i < starts.size(); ++i) {
      if (starts[i].pos == starts[i - 1].pos) {
        return parser.Error(starts[i].line,
                            "not valid YAML: cannot parse what starts here "
                            "(a stray ',', ']' or '}'?)");
      }
    }
    if (starts.size() > 1) {
      return parser.Error(
          starts[1].line,
          "the file holds a second YAML document (after '---'); a scenario "
          "is one document: remove the marker or move its faults up");
    }
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return parser.Error(e.mark.line, absl::StrCat("not valid YAML: ", e.msg));
  }
  absl::StatusOr<Scenario> scenario;
  try {
    scenario = parser.Document(root);
  } catch (const YAML::Exception& e) {
    return parser.Error(e.mark.line, e.msg);
  }
  if (scenario.ok() && scenario->name.empty()) {
    std::string name = file_name;
    if (size_t slash = name.rfind('/'); slash != std::string::npos) {
      name = name.substr(slash + 1);
    }
    scenario->name = std::string(absl::StripSuffix(name, ".yaml"));
  }
  return scenario;
}

absl::StatusOr<Scenario> LoadScenario(const std::string& path) {
  const std::optional<std::string> text = common::ReadWholeFile(path);
  if (!text) {
    return absl::NotFoundError(absl::StrCat("cannot read scenario ", path));
  }
  return ParseScenario(*text, path);
}

}  // namespace ps::chaos
