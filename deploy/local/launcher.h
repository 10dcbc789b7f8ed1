#ifndef PS_DEPLOY_LOCAL_LAUNCHER_H_
#define PS_DEPLOY_LOCAL_LAUNCHER_H_

// Starting and stopping daemons on this machine: port files, logs, and the
// stop order every launcher (ps_local, ps_chaos, ps_bench, the process
// tests) shares. Their command lines come from daemon_flags.h.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/subprocess.h"
#include "deploy/local/daemon_flags.h"

namespace ps::launch {

// Waits until `process` wrote a port number to `port_file` (see ps_server's
// --port_file) and returns it; fails when the process ends first, at
// `give_up`, or when `interrupted` returns true.
absl::StatusOr<int> WaitForPortFile(
    const std::string& port_file, const std::string& name,
    const std::string& log, common::Subprocess& process, absl::Time give_up,
    const std::function<bool()>& interrupted = [] { return false; });

// The last `count` lines of a file, indented, for error messages.
std::string LastLines(const std::string& path, int count);

// A daemon to stop, as StopWorkersThenServers sees it.
struct StopTarget {
  std::string name;  // "server 1", "worker 0"
  bool is_worker = false;
  common::Subprocess* process = nullptr;
};

// What StopWorkersThenServers did.
struct StopReport {
  uint32_t workers_stopped = 0;  // running when the stop began
  uint32_t servers_stopped = 0;
  // One line per process that did not end cleanly: killed after the
  // grace period, or an exit status other than 0 (or, for a worker told
  // to stop, 128+SIGTERM).
  std::vector<std::string> problems;
};

// Stops every target still running: first the workers (SIGTERM: each
// finishes its step and leaves the job, which needs the servers up), then
// the servers (SIGTERM: they drain and checkpoint). Each group gets
// `grace` before SIGKILL.
StopReport StopWorkersThenServers(const std::vector<StopTarget>& targets,
                                  absl::Duration grace);

struct LocalClusterOptions {
  // Where ps_server and ps_worker are. Default: beside this executable
  std::string bin_dir;
  // Port files and one log per process go here; it must exist.
  std::string out_dir;
  // Default: 2 servers, 2 workers
  uint32_t num_servers = 2;
  uint32_t num_workers = 2;
  // ps_server processes per shard (--replicas): replica 0 of shard i is
  // "server i" (server-i.log), replica r > 0 "server i replica r"
  // (server-i-replica-r.log). Default: 1, not replicated
  uint32_t replicas = 1;
  // Each shard gets one more replica, index `replicas`, that holds no θ
  // and only votes (ps_server --replica_witness): with replicas = 2, a
  // failover that a network partition cannot split. Workers are not told
  // of it. Default: false
  bool replica_witness = false;
  // ps_server processes per shard, the witness included.
  uint32_t per_shard() const { return replicas + (replica_witness ? 1 : 0); }
  // Flags for every server; the cluster sets listen, port_file,
  // shard_index, num_shards, num_workers and the replica flags.
  ServerFlags server_flags;
  // Flags for every worker; the cluster sets servers, rank and num_workers.
  WorkerFlags worker_flags;
  // Programs that run instead of ps_worker for some ranks, given the
  // flags ps_worker would get. Default: none, every rank runs ps_worker
  std::vector<WorkerProgram> worker_programs;
  // Set in every worker's environment ("NAME=VALUE").
  std::vector<std::string> worker_env;
  // When > 0, server i serves Prometheus metrics on 127.0.0.1:(port + i)
  // and ps_worker rank r on 127.0.0.1:(port + num_servers + r) (other
  // worker programs get no such flag); replica k > 0 of server i on
  // 127.0.0.1:(port + num_servers + num_workers + (k-1)*num_servers + i).
  // Default: 0, no metrics endpoints
  int metrics_base_port = 0;
  // Servers not serving by then fail the start. Default: 30 s
  absl::Duration start_timeout = absl::Seconds(30);
};

// One process of the cluster.
struct ClusterProcess {
  std::string name;  // "server 1", "worker 0"
  std::string log;
  bool is_worker = false;
  common::Subprocess process;
};

// S servers and W workers on 127.0.0.1, as ps_local and ps_bench start them.
// Servers bind port 0 and report the port they got through a file, so there
// is no race for ports. Everything still running is killed on destruction.
class LocalCluster {
 public:
  explicit LocalCluster(LocalClusterOptions options);
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  // Starts the servers and waits until each serves. With replicas, replica
  // k of every shard starts once replicas 0 to k-1 serve, and is given
  // their addresses (replica 0's to join it; the others' for a failover);
  // its own entry and later ones are 127.0.0.1:0 (the port it binds).
  // `interrupted` is polled while waiting; when it returns true the start
  // fails.
  absl::Status StartServers(const std::function<bool()>& interrupted);

  // Starts the workers against the servers (after StartServers).
  absl::Status StartWorkers();

  // Workers that exited cleanly so far; an error naming the process (with
  // the end of its log) when any process ended otherwise.
  absl::StatusOr<uint32_t> PollWorkers();

  // StopWorkersThenServers over every process of the cluster.
  StopReport Stop(absl::Duration grace);

  // host:port of every shard's replica 0 (the primary until a failover),
  // in shard order: where workers are pointed.
  const std::vector<std::string>& addresses() const { return addresses_; }
  // host:port of every replica: [shard][replica].
  const std::vector<std::vector<std::string>>& replica_addresses() const {
    return replica_addresses_;
  }
  std::vector<ClusterProcess>& processes() { return processes_; }

 private:
  absl::Status Spawn(std::string name, bool is_worker,
                     const std::vector<std::string>& args,
                     const std::string& log,
                     const std::vector<std::string>& env = {});
  // Starts replica `replica` of every shard and waits until each serves.
  absl::Status StartReplicas(uint32_t replica, absl::Time give_up,
                             const std::function<bool()>& interrupted);
  // ps_worker's command line for `rank`, or its WorkerProgram's.
  std::vector<std::string> WorkerCommandLine(uint32_t rank) const;

  LocalClusterOptions options_;
  std::vector<ClusterProcess> processes_;
  std::vector<std::string> addresses_;
  std::vector<std::vector<std::string>> replica_addresses_;
};

}  // namespace ps::launch

#endif  // PS_DEPLOY_LOCAL_LAUNCHER_H_
