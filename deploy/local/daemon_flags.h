#ifndef PS_DEPLOY_LOCAL_DAEMON_FLAGS_H_
#define PS_DEPLOY_LOCAL_DAEMON_FLAGS_H_

// The one place that spells the command lines of ps_server and ps_worker
// for the programs that start them (ps_local, ps_chaos, ps_bench and the
// process tests). A field left unset is left off the command line, so the
// daemon's own default applies.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/rpc/security_options.h"

namespace ps::launch {

// The credentials of a job a launcher starts; all empty: plaintext and no
// token. One CA signs the servers' certificate and, for mutual TLS, the
// clients' (a local job's own CA), so servers check clients against it.
struct JobSecurity {
  // Every client's: the workers' and the launcher's own calls. tls_ca set:
  // TLS, the servers checked against it; tls_cert and tls_key: mutual TLS;
  // auth_token_file: the job's token, which the servers check too.
  rpc::ClientSecurity client;
  std::string server_tls_cert;  // with server_tls_key: every server's
  std::string server_tls_key;
};

// The CA the servers of `job` check client certificates against: the job's
// CA when the clients have certificates; empty (none asked for) otherwise.
std::string ServersClientCa(const JobSecurity& job);

// The flags of ps_server that launchers set.
struct ServerFlags {
  // 127.0.0.1:0 lets the server pick a free port and write it to port_file.
  std::string listen;
  std::string port_file;
  std::optional<uint32_t> shard_index;
  std::optional<uint32_t> num_shards;
  std::optional<uint32_t> num_workers;
  std::string mode;  // sync, ssp or async
  std::string lr;    // as the user typed them: passed on verbatim
  std::string l2;
  std::string l1;
  std::optional<absl::Duration> lease_timeout;
  std::optional<uint32_t> sync_quorum;
  std::string checkpoint_dir;
  std::optional<absl::Duration> checkpoint_every;
  std::string metrics_listen;  // HOST:PORT of /metrics
  std::string log_level;
  // --replicas --replica_index --replica_peers: one replica of a shard that
  // has `replicas` of them (unset: not replicated).
  std::optional<uint32_t> replicas;
  std::optional<uint32_t> replica_index;
  std::vector<std::string> replica_peers;
  // --replica_state_dir: where a replica of R >= 3 keeps its election vote
  // across restarts (one directory per shard).
  std::string replica_state_dir;
  // --replica_witness: this replica holds no θ and only votes.
  bool replica_witness = false;
  // --tls_cert --tls_key, and --tls_client_ca (the job's CA) when clients
  // have certificates, and --auth_token_file.
  JobSecurity security;
  // Passed verbatim after the flags above, so they win (absl: last wins).
  std::vector<std::string> extra;
  // --inject_faults=VALUE, last of all: the fault file of an experiment
  // beats anything the scenario passes.
  std::string inject_faults;
};

// The flags of ps_worker that launchers set.
struct WorkerFlags {
  std::vector<std::string> servers;  // host:port in shard order
  std::optional<uint32_t> rank;
  std::optional<uint32_t> num_workers;
  // Partitions per epoch leased from shard 0 (0: split by rank).
  std::optional<uint32_t> data_partitions;
  // k-fold cross-validation: the folds and the one held out.
  std::optional<uint32_t> kfold;
  std::optional<uint32_t> fold;
  std::string model;
  std::optional<uint32_t> epochs;
  std::optional<uint32_t> batch_size;
  std::optional<uint64_t> seed;
  std::optional<double> eval_every;
  std::string compression;  // none, fp16, bf16, topk:RATIO; empty: unset
  std::string data_dir;
  // The sparse models' LIBSVM files (--data_format=libsvm --train --test).
  std::string data_format;
  std::string train;
  std::string test;
  std::optional<absl::Duration> rpc_deadline;
  std::optional<absl::Duration> max_retry_time;
  std::optional<uint64_t> max_message_bytes;
  std::string metrics_out;
  std::string metrics_listen;  // HOST:PORT of /metrics (Prometheus)
  std::string log_level;
  // --tls_ca --tls_cert --tls_key --auth_token_file: the client's side.
  JobSecurity security;
  // Passed verbatim after the flags above, so they win (absl: last wins).
  std::vector<std::string> extra;
  std::string inject_faults;  // as for ServerFlags
};

// A program that runs instead of ps_worker for ranks first_rank to
// last_rank (ps_local's --worker_command), given the flags ps_worker would
// get after its own arguments.
struct WorkerProgram {
  uint32_t first_rank = 0;
  uint32_t last_rank = 0;
  std::vector<std::string> command;
};

// Reads --worker_command values: "CMD" for every rank, "R1-R2:CMD" (or
// "R:CMD") for those ranks. An error names the value that is empty, badly
// quoted, outside ranks 0 to num_workers-1 or overlapping another.
absl::StatusOr<std::vector<WorkerProgram>> ParseWorkerPrograms(
    const std::vector<std::string>& values, uint32_t num_workers);

// Splits a command into words as a POSIX shell does (blanks separate;
// '...', "..." and backslash quote), without running one: no variables,
// globs or redirections.
absl::StatusOr<std::vector<std::string>> SplitCommandLine(
    absl::string_view command);

// The arguments alone (no program), in a fixed order.
std::vector<std::string> ServerArgs(const ServerFlags& flags);
std::vector<std::string> WorkerArgs(const WorkerFlags& flags);

// BIN_DIR/ps_server or BIN_DIR/ps_worker followed by the arguments.
std::vector<std::string> ServerCommand(const std::string& bin_dir,
                                       const ServerFlags& flags);
std::vector<std::string> WorkerCommand(const std::string& bin_dir,
                                       const WorkerFlags& flags);

}  // namespace ps::launch

#endif  // PS_DEPLOY_LOCAL_DAEMON_FLAGS_H_
