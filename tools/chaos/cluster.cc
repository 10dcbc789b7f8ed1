#include "tools/chaos/cluster.h"

#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "deploy/local/daemon_flags.h"
#include "deploy/local/launcher.h"
#include "spdlog/spdlog.h"
#include "tools/chaos/replica_target.h"

namespace ps::chaos {
namespace {

constexpr int kNamespacePort = 50051;

}  // namespace

std::string ServerHost(uint32_t shard, uint32_t replica) {
  return replica == 0 ? absl::StrCat("s", shard)
                      : absl::StrCat("s", shard, "r", replica);
}

Cluster::Cluster(const Scenario& scenario, std::string out_dir,
                 std::string bin_dir, NetworkSandbox* sandbox, bool fault_files,
                 launch::JobSecurity security)
    : scenario_(scenario),
      out_dir_(std::move(out_dir)),
      bin_dir_(std::move(bin_dir)),
      sandbox_(sandbox),
      fault_files_(fault_files),
      security_(std::move(security)) {
  const ClusterSpec& c = scenario.cluster;
  for (uint32_t i = 0; i < c.servers; ++i) {
    for (uint32_t r = 0; r < c.per_shard(); ++r) {
      Daemon d;
      d.ref = {ProcessRef::Kind::kServer, i};
      if (c.per_shard() > 1) d.ref.replica = r;
      d.host = ServerHost(i, r);
      // Replica 0 keeps the names of an unreplicated cluster.
      d.log = r == 0 ? absl::StrCat(out_dir_, "/server-", i, ".log")
                     : absl::StrCat(out_dir_, "/server-", i, "-replica-", r,
                                    ".log");
      server_listen_.push_back(
          sandbox_ != nullptr
              ? absl::StrCat(sandbox_->Address(d.host), ":", kNamespacePort)
              : "127.0.0.1:0");
      daemons_.push_back(std::move(d));
    }
  }
  for (uint32_t i = 0; i < c.workers; ++i) {
    Daemon d;
    d.ref = {ProcessRef::Kind::kWorker, i};
    d.host = absl::StrCat("w", i);
    d.log = absl::StrCat(out_dir_, "/worker-", i, ".log");
    daemons_.push_back(std::move(d));
  }
  for (Daemon& d : daemons_) {
    if (fault_files_) {
      d.fault_file = absl::StrCat(out_dir_, "/faults/", d.host, ".spec");
    }
  }
  for (uint32_t i = 0; i < c.servers; ++i) {
    // Known once the server serves, without namespaces.
    server_addresses_.push_back(
        sandbox_ != nullptr ? server_listen_[i * c.per_shard()] : "");
  }
}

Cluster::~Cluster() { StopAll(absl::ZeroDuration()); }

size_t Cluster::DaemonIndex(const ProcessRef& ref) const {
  const ClusterSpec& c = scenario_.cluster;
  if (ref.kind == ProcessRef::Kind::kWorker) {
    return c.servers * c.per_shard() + ref.index;
  }
  // A primary is resolved (Resolve) before anything reaches a daemon.
  const uint32_t replica = ref.primary() ? 0 : ref.replica.value_or(0);
  return ref.index * c.per_shard() + replica;
}

Daemon& Cluster::daemon(const ProcessRef& ref) {
  return daemons_[DaemonIndex(ref)];
}

absl::StatusOr<ProcessRef> Cluster::Resolve(const ProcessRef& ref) const {
  if (!ref.primary()) return ref;
  const uint32_t replicas = scenario_.cluster.per_shard();
  const std::vector<std::string> addresses(
      server_listen_.begin() + ref.index * replicas,
      server_listen_.begin() + (ref.index + 1) * replicas);
  absl::StatusOr<uint32_t> primary =
      PickPrimary(AskReplicas(addresses, absl::Seconds(1)), ref.index);
  if (!primary.ok()) return primary.status();
  return ProcessRef{ref.kind, ref.index, *primary};
}

std::vector<std::vector<std::string>> Cluster::replica_addresses() const {
  const uint32_t replicas = scenario_.cluster.per_shard();
  std::vector<std::vector<std::string>> shards;
  for (uint32_t i = 0; i < scenario_.cluster.servers; ++i) {
    shards.emplace_back(server_listen_.begin() + i * replicas,
                        server_listen_.begin() + (i + 1) * replicas);
  }
  return shards;
}

std::string Cluster::AddressOf(const ProcessRef& ref) const {
  if (sandbox_ == nullptr) return "127.0.0.1";
  return sandbox_->Address(daemons_[DaemonIndex(ref)].host);
}

std::vector<std::string> Cluster::CommandLine(const Daemon& d) const {
  const ClusterSpec& c = scenario_.cluster;
  std::vector<std::string> argv;
  if (d.ref.kind == ProcessRef::Kind::kServer) {
    const uint32_t first = d.ref.index * c.per_shard();
    const uint32_t replica = d.ref.replica.value_or(0);
    launch::ServerFlags flags;
    flags.listen = server_listen_[first + replica];
    flags.port_file = absl::StrCat(out_dir_, "/", d.host, ".port");
    flags.shard_index = d.ref.index;
    flags.num_shards = c.servers;
    flags.num_workers = c.workers;
    flags.mode = c.mode;
    flags.lease_timeout = c.lease_timeout;
    flags.sync_quorum = c.sync_quorum;
    if (c.per_shard() > 1) {
      // Every replica's address as far as known (a port 0 until that
      // replica served once).
      flags.replicas = c.per_shard();
      flags.replica_index = replica;
      flags.replica_witness = replica >= c.replicas;
      flags.replica_peers.assign(
          server_listen_.begin() + first,
          server_listen_.begin() + first + c.per_shard());
    }
    if (c.checkpoint_every < absl::InfiniteDuration()) {
      // Replicas of a shard write the same file names: one directory each.
      flags.checkpoint_dir =
          replica == 0
              ? absl::StrCat(out_dir_, "/checkpoints")
              : absl::StrCat(out_dir_, "/checkpoints/replica-", replica);
      flags.checkpoint_every = c.checkpoint_every;
    }
    flags.security = security_;
    flags.extra = c.server_flags;
    if (!d.fault_file.empty()) flags.inject_faults = "@" + d.fault_file;
    argv = launch::ServerCommand(bin_dir_, flags);
  } else {
    launch::WorkerFlags flags;
    // Every replica of a shard (`a0|a1`): a worker follows the primary
    // through a failover.
    // A witness never leads: workers are not told of it.
    for (const std::vector<std::string>& shard : replica_addresses()) {
      flags.servers.push_back(
          absl::StrJoin(shard.begin(), shard.begin() + c.replicas, "|"));
    }
    flags.rank = d.ref.index;
    flags.num_workers = c.workers;
    flags.model = c.model;
    flags.epochs = c.epochs;
    flags.batch_size = c.batch_size;
    flags.seed = c.seed;
    flags.eval_every = c.eval_every;
    flags.rpc_deadline = c.rpc_deadline;
    flags.max_retry_time = c.max_retry_time;
    if (d.ref.index == 0) {
      flags.metrics_out = absl::StrCat(out_dir_, "/metrics.jsonl");
    }
    flags.security = security_;
    flags.extra = c.worker_flags;
    if (!d.fault_file.empty()) flags.inject_faults = "@" + d.fault_file;
    argv = launch::WorkerCommand(bin_dir_, flags);
  }
  return sandbox_ != nullptr ? sandbox_->Wrap(d.host, argv) : argv;
}

absl::Status Cluster::Spawn(Daemon& d) {
  const std::vector<std::string> argv = CommandLine(d);
  {
    std::ofstream log(d.log, std::ios::app);
    log << "==== ps_chaos: start " << d.starts + 1 << " of " << d.ref.ToString()
        << ": " << absl::StrJoin(argv, " ") << "\n";
  }
  absl::StatusOr<common::Subprocess> process =
      common::Subprocess::Spawn(argv, d.log);
  if (!process.ok()) return process.status();
  d.process = std::make_unique<common::Subprocess>(std::move(*process));
  d.stopped = false;
  d.killed = false;
  d.exit_status.reset();
  ++d.starts;
  return absl::OkStatus();
}

absl::Status Cluster::Start(const std::function<bool()>& interrupted) {
  // A run starts from nothing: an earlier run's checkpoints would be
  // restored, and its logs would mix with these.
  std::error_code ignored;
  std::filesystem::remove_all(out_dir_ + "/checkpoints", ignored);
  if (scenario_.cluster.checkpoint_every < absl::InfiniteDuration()) {
    std::filesystem::create_directory(out_dir_ + "/checkpoints", ignored);
  }
  for (const Daemon& d : daemons_) {
    std::ofstream truncate(d.log, std::ios::trunc);
  }
  const ClusterSpec& c = scenario_.cluster;
  for (uint32_t r = 1; r < c.per_shard(); ++r) {
    if (c.checkpoint_every < absl::InfiniteDuration()) {
      std::filesystem::create_directory(
          absl::StrCat(out_dir_, "/checkpoints/replica-", r), ignored);
    }
  }
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  // Replica r of every shard once replicas 0 to r-1 serve: it joins
  // replica 0 and is given the others' addresses.
  for (uint32_t r = 0; r < c.per_shard(); ++r) {
    for (uint32_t i = 0; i < c.servers; ++i) {
      Daemon& d = daemons_[i * c.per_shard() + r];
      std::remove(absl::StrCat(out_dir_, "/", d.host, ".port").c_str());
      if (absl::Status s = Spawn(d); !s.ok()) return s;
    }
    for (uint32_t i = 0; i < c.servers; ++i) {
      const uint32_t at = i * c.per_shard() + r;
      Daemon& d = daemons_[at];
      absl::StatusOr<int> port = launch::WaitForPortFile(
          absl::StrCat(out_dir_, "/", d.host, ".port"), d.ref.ToString(), d.log,
          *d.process, give_up, interrupted);
      if (!port.ok()) return port.status();
      if (sandbox_ == nullptr) {
        // Restarts bind the same port, so the workers find it again.
        server_listen_[at] = absl::StrCat("127.0.0.1:", *port);
        if (r == 0) server_addresses_[i] = server_listen_[at];
      }
    }
  }
  for (size_t i = c.servers * c.per_shard(); i < daemons_.size(); ++i) {
    if (absl::Status s = Spawn(daemons_[i]); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Cluster::Signal(const ProcessRef& ref, int signal) {
  Daemon& d = daemon(ref);
  if (!d.running()) {
    return absl::FailedPreconditionError(
        absl::StrCat(ref.ToString(), " is not running"));
  }
  d.process->Signal(signal);
  if (signal == SIGKILL) {
    d.killed = true;
    d.exit_status = d.process->WaitFor(absl::Seconds(10));
  }
  d.stopped = signal == SIGSTOP;
  return absl::OkStatus();
}

absl::Status Cluster::Kill(const ProcessRef& ref) {
  return Signal(ref, SIGKILL);
}
absl::Status Cluster::Stop(const ProcessRef& ref) {
  return Signal(ref, SIGSTOP);
}
absl::Status Cluster::Cont(const ProcessRef& ref) {
  return Signal(ref, SIGCONT);
}

absl::Status Cluster::Restart(const ProcessRef& ref) {
  Daemon& d = daemon(ref);
  if (d.running()) {
    if (absl::Status killed = Kill(ref); !killed.ok()) return killed;
  }
  return Spawn(d);
}

std::vector<std::string> Cluster::Reap() {
  std::vector<std::string> ended;
  for (Daemon& d : daemons_) {
    if (d.process == nullptr || d.exit_status) continue;
    if (std::optional<int> status = d.process->Poll()) {
      d.exit_status = status;
      if (!d.killed) {
        ended.push_back(absl::StrCat(d.ref.ToString(), " ",
                                     common::DescribeWaitStatus(*status)));
      }
    }
  }
  return ended;
}

bool Cluster::AnyWorkerRunning() const {
  for (const Daemon& d : daemons_) {
    if (d.ref.kind == ProcessRef::Kind::kWorker && d.running()) return true;
  }
  return false;
}

void Cluster::StopAll(absl::Duration grace) {
  for (Daemon& d : daemons_) {
    if (d.running() && d.stopped) {
      d.process->Signal(SIGCONT);
      d.stopped = false;
    }
  }
  // Workers first, so the servers' last checkpoint has every update.
  std::vector<launch::StopTarget> targets;
  for (Daemon& d : daemons_) {
    if (!d.running()) continue;
    targets.push_back({d.ref.ToString(),
                       d.ref.kind == ProcessRef::Kind::kWorker,
                       d.process.get()});
  }
  launch::StopWorkersThenServers(targets, grace);
  for (Daemon& d : daemons_) {
    if (d.process != nullptr && !d.exit_status) {
      d.exit_status = d.process->Poll();
    }
  }
}

}  // namespace ps::chaos
