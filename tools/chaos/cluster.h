#ifndef PS_TOOLS_CHAOS_CLUSTER_H_
#define PS_TOOLS_CHAOS_CLUSTER_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/subprocess.h"
#include "deploy/local/daemon_flags.h"
#include "tools/chaos/network_sandbox.h"
#include "tools/chaos/scenario.h"

namespace ps::chaos {

// One ps_server or ps_worker of an experiment, started, signalled and
// restarted as an operator would.
struct Daemon {
  ProcessRef ref;
  std::string host;        // "s0", "w2": its namespace and file names
  std::string log;         // OUT/server-0.log; restarts append to it
  std::string fault_file;  // its --inject_faults=@FILE, or empty
  std::unique_ptr<common::Subprocess> process;
  bool stopped = false;  // SIGSTOP sent, no SIGCONT yet
  bool killed = false;   // ended by the runner (kill or restart)
  int starts = 0;
  std::optional<int> exit_status;  // of the last process, once it ended

  bool running() const { return process != nullptr && process->running(); }
};

// The host name of a server replica: its namespace and file names ("s1";
// "s1r2" for replica 2).
std::string ServerHost(uint32_t shard, uint32_t replica);

// The servers and workers of a scenario: on 127.0.0.1 with ports the
// servers pick, or each in its namespace of `sandbox` on port 50051.
class Cluster {
 public:
  // `fault_files`: give every daemon --inject_faults=@OUT/faults/HOST.spec
  // (written by the runner) so faults can reach its gRPC layer at run time.
  // `security`: the job's credentials, each daemon given its side.
  Cluster(const Scenario& scenario, std::string out_dir, std::string bin_dir,
          NetworkSandbox* sandbox, bool fault_files,
          launch::JobSecurity security = {});
  ~Cluster();

  // Starts the servers, waits until each serves, then starts the workers.
  // `interrupted` is polled while waiting.
  absl::Status Start(const std::function<bool()>& interrupted);

  std::vector<Daemon>& daemons() { return daemons_; }
  // The daemon of a resolved ref (not "server I primary": see Resolve).
  Daemon& daemon(const ProcessRef& ref);
  // host:port of every shard's replica 0 (the only one without replicas),
  // in shard order: where workers are pointed.
  const std::vector<std::string>& server_addresses() const {
    return server_addresses_;
  }
  // host:port of every replica of each shard, in shard and replica order.
  std::vector<std::vector<std::string>> replica_addresses() const;
  std::string AddressOf(const ProcessRef& ref) const;
  // "server I primary" as the replica that is the shard's primary now (asked
  // of the replicas); any other ref as it is.
  absl::StatusOr<ProcessRef> Resolve(const ProcessRef& ref) const;

  absl::Status Kill(const ProcessRef& ref);
  absl::Status Stop(const ProcessRef& ref);
  absl::Status Cont(const ProcessRef& ref);
  // Kills it if it runs, then starts it again with the same flags and
  // address (a server restores its last checkpoint, a worker rejoins).
  absl::Status Restart(const ProcessRef& ref);

  // Collects the exit status of daemons that ended; returns one line per
  // daemon that ended by itself since the last call ("worker 1 exited
  // with status 0").
  std::vector<std::string> Reap();
  bool AnyWorkerRunning() const;

  // Continues stopped daemons, ends the workers, then SIGTERMs the servers
  // (they drain and checkpoint) and waits up to `grace` each.
  void StopAll(absl::Duration grace);

 private:
  size_t DaemonIndex(const ProcessRef& ref) const;
  absl::Status Spawn(Daemon& daemon);
  // Sends `signal` to a running daemon; SIGKILL also waits for it to end.
  absl::Status Signal(const ProcessRef& ref, int signal);
  std::vector<std::string> CommandLine(const Daemon& daemon) const;

  const Scenario& scenario_;
  std::string out_dir_;
  std::string bin_dir_;
  NetworkSandbox* sandbox_;
  bool fault_files_;
  launch::JobSecurity security_;
  // Servers first (shard by shard, each shard's replicas in order), then
  // workers.
  std::vector<Daemon> daemons_;
  std::vector<std::string> server_addresses_;
  // --listen of each server replica, as daemons_ orders them.
  std::vector<std::string> server_listen_;
};

}  // namespace ps::chaos

#endif  // PS_TOOLS_CHAOS_CLUSTER_H_
