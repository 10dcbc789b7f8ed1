#include "deploy/local/launcher.h"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace ps::launch {

using common::DescribeWaitStatus;
using common::ExecutableDir;
using common::ExitedCleanly;
using common::Subprocess;

std::string LastLines(const std::string& path, int count) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  const size_t from =
      lines.size() > static_cast<size_t>(count) ? lines.size() - count : 0;
  std::string out;
  for (size_t i = from; i < lines.size(); ++i) {
    absl::StrAppend(&out, "    ", lines[i], "\n");
  }
  return out;
}

absl::StatusOr<int> WaitForPortFile(const std::string& port_file,
                                    const std::string& name,
                                    const std::string& log, Subprocess& process,
                                    absl::Time give_up,
                                    const std::function<bool()>& interrupted) {
  while (true) {
    std::ifstream in(port_file);
    int port = 0;
    if (in >> port && port > 0) return port;
    if (std::optional<int> status = process.Poll()) {
      return absl::UnavailableError(absl::StrCat(
          name, " ", DescribeWaitStatus(*status), " before serving; its log ",
          log, " ends:\n", LastLines(log, 10)));
    }
    if (interrupted()) return absl::CancelledError("interrupted");
    if (absl::Now() > give_up) {
      return absl::DeadlineExceededError(
          absl::StrCat(name, " did not start serving in time"));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

LocalCluster::LocalCluster(LocalClusterOptions options)
    : options_(std::move(options)) {
  if (options_.bin_dir.empty()) options_.bin_dir = ExecutableDir();
}

absl::Status LocalCluster::Spawn(std::string name, bool is_worker,
                                 const std::vector<std::string>& args,
                                 const std::string& log,
                                 const std::vector<std::string>& env) {
  std::remove(log.c_str());
  absl::StatusOr<Subprocess> process = Subprocess::Spawn(args, log, env);
  if (!process.ok()) return process.status();
  processes_.push_back({std::move(name), log, is_worker, std::move(*process)});
  return absl::OkStatus();
}

absl::Status LocalCluster::StartServers(
    const std::function<bool()>& interrupted) {
  const absl::Time give_up = absl::Now() + options_.start_timeout;
  replica_addresses_.assign(options_.num_servers, {});
  for (uint32_t replica = 0; replica < options_.per_shard(); ++replica) {
    if (absl::Status s = StartReplicas(replica, give_up, interrupted);
        !s.ok()) {
      return s;
    }
  }
  addresses_.clear();
  for (const std::vector<std::string>& shard : replica_addresses_) {
    addresses_.push_back(shard[0]);
  }
  return absl::OkStatus();
}

absl::Status LocalCluster::StartReplicas(
    uint32_t replica, absl::Time give_up,
    const std::function<bool()>& interrupted) {
  const std::string& dir = options_.out_dir;
  const uint32_t servers = options_.num_servers;
  // Replica 0 keeps the names of an unreplicated job.
  const std::string file_suffix =
      replica == 0 ? "" : absl::StrCat("-replica-", replica);
  const std::string name_suffix =
      replica == 0 ? "" : absl::StrCat(" replica ", replica);
  std::vector<std::string> port_files;
  const size_t first = processes_.size();
  for (uint32_t i = 0; i < servers; ++i) {
    const std::string port_file =
        absl::StrCat(dir, "/server-", i, file_suffix, ".port");
    std::remove(port_file.c_str());
    port_files.push_back(port_file);
    ServerFlags flags = options_.server_flags;
    flags.listen = "127.0.0.1:0";
    flags.port_file = port_file;
    flags.shard_index = i;
    flags.num_shards = servers;
    flags.num_workers = options_.num_workers;
    const uint32_t per_shard = options_.per_shard();
    if (per_shard > 1) {
      flags.replicas = per_shard;
      flags.replica_index = replica;
      flags.replica_peers = replica_addresses_[i];
      flags.replica_peers.resize(per_shard, "127.0.0.1:0");
      flags.replica_witness = replica >= options_.replicas;
    }
    if (per_shard >= 3) {
      // Elections: each shard's votes outlive a replica's restart. A
      // fresh job, fresh votes: an old job's terms mean nothing here.
      flags.replica_state_dir = absl::StrCat(dir, "/server-", i, "-votes");
      if (replica == 0) {
        std::error_code error;
        std::filesystem::remove_all(flags.replica_state_dir, error);
        std::filesystem::create_directories(flags.replica_state_dir, error);
        if (error) {
          return absl::InternalError(absl::StrCat("cannot create ",
                                                  flags.replica_state_dir, ": ",
                                                  error.message()));
        }
      }
    }
    if (options_.metrics_base_port > 0) {
      const uint32_t offset = replica == 0 ? i
                                           : servers + options_.num_workers +
                                                 (replica - 1) * servers + i;
      flags.metrics_listen =
          absl::StrCat("127.0.0.1:", options_.metrics_base_port + offset);
    }
    const std::vector<std::string> args =
        ServerCommand(options_.bin_dir, flags);
    if (absl::Status s =
            Spawn(absl::StrCat("server ", i, name_suffix), false, args,
                  absl::StrCat(dir, "/server-", i, file_suffix, ".log"));
        !s.ok()) {
      return s;
    }
  }

  for (uint32_t i = 0; i < servers; ++i) {
    ClusterProcess& server = processes_[first + i];
    absl::StatusOr<int> port =
        WaitForPortFile(port_files[i], server.name, server.log, server.process,
                        give_up, interrupted);
    if (!port.ok()) return port.status();
    replica_addresses_[i].push_back(absl::StrCat("127.0.0.1:", *port));
  }
  return absl::OkStatus();
}

std::vector<std::string> LocalCluster::WorkerCommandLine(uint32_t rank) const {
  WorkerFlags flags = options_.worker_flags;
  // Every worker program (ps_worker, pyps) is given every replica of a
  // shard (`a0|a1`) and follows the primary through a failover.
  // A witness never leads: workers are not told of it.
  for (const std::vector<std::string>& shard : replica_addresses_) {
    flags.servers.push_back(absl::StrJoin(
        shard.begin(),
        shard.begin() + std::min<size_t>(shard.size(), options_.replicas),
        "|"));
  }
  flags.rank = rank;
  flags.num_workers = options_.num_workers;
  if (options_.metrics_base_port > 0) {
    flags.metrics_listen = absl::StrCat(
        "127.0.0.1:", options_.metrics_base_port + options_.num_servers + rank);
  }
  for (const WorkerProgram& program : options_.worker_programs) {
    if (rank < program.first_rank || rank > program.last_rank) continue;
    flags.metrics_listen.clear();  // a flag only ps_worker knows
    std::vector<std::string> argv = program.command;
    for (std::string& arg : WorkerArgs(flags)) argv.push_back(std::move(arg));
    return argv;
  }
  return WorkerCommand(options_.bin_dir, flags);
}

absl::Status LocalCluster::StartWorkers() {
  for (uint32_t rank = 0; rank < options_.num_workers; ++rank) {
    if (absl::Status s =
            Spawn(absl::StrCat("worker ", rank), true, WorkerCommandLine(rank),
                  absl::StrCat(options_.out_dir, "/worker-", rank, ".log"),
                  options_.worker_env);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> LocalCluster::PollWorkers() {
  uint32_t done = 0;
  for (ClusterProcess& p : processes_) {
    const std::optional<int> status = p.process.Poll();
    if (!status) continue;
    if (p.is_worker && ExitedCleanly(*status)) {
      ++done;
      continue;
    }
    return absl::AbortedError(
        absl::StrCat(p.name, " ", DescribeWaitStatus(*status), "; its log ",
                     p.log, " ends:\n", LastLines(p.log, 10)));
  }
  return done;
}

StopReport StopWorkersThenServers(const std::vector<StopTarget>& targets,
                                  absl::Duration grace) {
  StopReport report;
  for (const bool workers : {true, false}) {
    std::vector<const StopTarget*> stopping;
    for (const StopTarget& t : targets) {
      if (t.is_worker != workers || !t.process->running()) continue;
      // One signal each: a second SIGTERM makes a worker exit at once,
      // without leaving the job.
      t.process->Signal(SIGTERM);
      stopping.push_back(&t);
    }
    (workers ? report.workers_stopped : report.servers_stopped) =
        static_cast<uint32_t>(stopping.size());
    const absl::Time give_up = absl::Now() + grace;
    for (const StopTarget& t : targets) {
      if (t.is_worker != workers) continue;
      const bool asked =
          std::find(stopping.begin(), stopping.end(), &t) != stopping.end();
      if (asked && !t.process->WaitFor(give_up - absl::Now())) {
        t.process->Stop(absl::ZeroDuration());
        report.problems.push_back(absl::StrCat(t.name, " did not stop within ",
                                               absl::FormatDuration(grace),
                                               " of SIGTERM: killed"));
        continue;
      }
      const int status = t.process->Poll().value_or(0);
      const bool stopped_as_asked = asked && t.is_worker && WIFEXITED(status) &&
                                    WEXITSTATUS(status) == 128 + SIGTERM;
      if (!ExitedCleanly(status) && !stopped_as_asked) {
        report.problems.push_back(
            absl::StrCat(t.name, " ", DescribeWaitStatus(status)));
      }
    }
  }
  return report;
}

StopReport LocalCluster::Stop(absl::Duration grace) {
  std::vector<StopTarget> targets;
  for (ClusterProcess& p : processes_) {
    targets.push_back({p.name, p.is_worker, &p.process});
  }
  return StopWorkersThenServers(targets, grace);
}

}  // namespace ps::launch
