#ifndef PS_TOOLS_CHAOS_SCENARIO_H_
#define PS_TOOLS_CHAOS_SCENARIO_H_

// A fault-tolerance experiment as a user writes it (YAML): the cluster, and a
// timeline of faults. Parsed and checked completely before anything starts;
// every error names the line. deploy/experiments/README.md documents the
// format with examples.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/fault_injection.h"

namespace ps::chaos {

// One daemon of the job: "server 0", "worker 2"; with replicas, "server 1
// replica 0" or "server 1 primary".
struct ProcessRef {
  enum class Kind { kServer, kWorker };
  // `replica` of a shard's primary: whichever replica answers ReplicaStatus
  // as the primary when the fault fires (it moves with a failover).
  static constexpr uint32_t kPrimary = UINT32_MAX;
  ProcessRef() = default;
  ProcessRef(Kind k, uint32_t i, std::optional<uint32_t> r = std::nullopt)
      : kind(k), index(i), replica(r) {}

  Kind kind = Kind::kWorker;
  uint32_t index = 0;
  // A server of a replicated cluster: the replica, or kPrimary. Unset for
  // workers and for servers of a cluster without replicas.
  std::optional<uint32_t> replica;

  bool primary() const { return replica == kPrimary; }
  std::string ToString() const;
  bool operator==(const ProcessRef& other) const {
    return kind == other.kind && index == other.index &&
           replica == other.replica;
  }
};

struct ClusterSpec {
  // Default: 2 servers, 2 workers
  uint32_t servers = 2;
  uint32_t workers = 2;
  // ps_server processes per server shard (ps_server --replicas): targets
  // then name "server I primary" or "server I replica K". Default: 1
  uint32_t replicas = 1;
  // With replicas >= 2, each shard gets one more process, replica number
  // `replicas`: a witness (ps_server --replica_witness) that holds no θ and
  // only votes. Workers are not told of it. Default: false
  bool replica_witness = false;
  // ps_server processes per shard, the witness included.
  uint32_t per_shard() const { return replicas + (replica_witness ? 1 : 0); }
  // sync, ssp or async. Default: sync
  std::string mode = "sync";
  // softmax or mlp. Default: softmax
  std::string model = "softmax";
  // Default: 3
  uint32_t epochs = 3;
  // Per worker. Default: 64
  uint32_t batch_size = 64;
  // Seeds θ and the shuffles (not the injected faults). Default: 1
  uint64_t seed = 1;
  // Rank 0 evaluates every this fraction of an epoch. Default: 0.1
  double eval_every = 0.1;
  // Servers' --lease_timeout. Default: 2 s
  absl::Duration lease_timeout = absl::Seconds(2);
  // Servers' --sync_quorum (backup workers); 0: every live worker.
  uint32_t sync_quorum = 0;
  // Servers checkpoint this often into DIR/checkpoints; infinite: no
  // checkpoints (a killed server then restarts with a fresh model).
  absl::Duration checkpoint_every = absl::InfiniteDuration();
  // Workers' --rpc_deadline and --max_retry_time. Default: 5 s, 120 s
  absl::Duration rpc_deadline = absl::Seconds(5);
  absl::Duration max_retry_time = absl::Seconds(120);
  // Where the daemons run: every one in its own network namespace on a
  // private bridge (root), or all on 127.0.0.1. kAuto picks namespaces when
  // a fault needs them and the machine allows it. Default: kAuto
  enum class Network { kAuto, kLoopback, kNamespaces };
  Network network = Network::kAuto;
  // Passed as they are to every server / worker.
  std::vector<std::string> server_flags;
  std::vector<std::string> worker_flags;
};

// When a fault starts: a time since training started, or a training
// progress (epochs of examples applied, as the servers count them).
struct Trigger {
  enum class Unit { kSeconds, kEpoch };
  Unit unit = Unit::kSeconds;
  double value = 0;
  std::string ToString() const;  // "12s", "0.9 epoch"
};

struct FaultEvent {
  enum class Action { kKill, kStop, kCont, kRestart, kRpc, kNet, kCpu };
  int line = 0;  // in the scenario file, 1-based
  Trigger at;
  Action action = Action::kKill;
  std::vector<ProcessRef> targets;
  // Undo after this long: stop → cont, kill → restart, rpc/net/cpu → off.
  std::optional<absl::Duration> duration;

  // kRpc: what the targets' gRPC layer injects.
  rpc::FaultSpec rpc;
  // kNet: packet loss probability on every packet to and from a target;
  // bandwidth cap (tc rate, "10mbit"); peers the targets are cut off from;
  // latency (no netem on our kernel: injected in-process as an RPC delay).
  double loss = 0;
  std::string rate;
  std::vector<ProcessRef> partition;
  absl::Duration latency = absl::ZeroDuration();
  // kCpu: the share of one CPU a target may use, (0, 1].
  double cpu = 1;

  std::string ActionName() const;
  // One line for timelines and logs: "kill worker 2", "net worker 1: loss 5%".
  std::string Describe() const;
};

struct Scenario {
  std::string name;  // Default: the file name without .yaml
  std::string description;
  ClusterSpec cluster;
  // How often the runner asks every server for its Status. Default: 200 ms
  absl::Duration poll_every = absl::Milliseconds(200);
  // The whole run fails after this long. Default: 10 min
  absl::Duration timeout = absl::Minutes(10);
  std::vector<FaultEvent> faults;

  // Whether a fault needs the operating system's network (namespaces, tc,
  // nft) or cgroups.
  bool NeedsNetwork() const;
  bool NeedsCgroups() const;
};

// Parses and validates a scenario. `file_name` prefixes every error:
// "worker_crash.yaml:12: worker 3 does not exist (the cluster has 3
// workers, 0 to 2)".
absl::StatusOr<Scenario> ParseScenario(const std::string& text,
                                       const std::string& file_name);
absl::StatusOr<Scenario> LoadScenario(const std::string& path);

}  // namespace ps::chaos

#endif  // PS_TOOLS_CHAOS_SCENARIO_H_
