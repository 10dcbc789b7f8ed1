// ps_server: owns one shard of θ and applies the regularized update to it.
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/cli.h"
#include "common/log_format.h"
#include "common/lr_schedule.h"
#include "common/metrics/http_endpoint.h"
#include "common/optimizer.h"
#include "common/rpc/channel.h"
#include "common/rpc/fault_injection.h"
#include "common/stop_signal.h"
#include "server/ps_server.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051",
          "Address to bind, host:port; port 0 picks a free port.");
ABSL_FLAG(std::string, port_file, "",
          "If set, the bound port is written here once the server serves.");
ABSL_FLAG(std::string, advertise, "",
          "host:port others use to reach this server (a DNS name in "
          "Kubernetes); reported by Status. Default: hostname and bound port.");
ABSL_FLAG(int32_t, shard_index, -1,
          "This server's shard, 0-based. Default: 0 with one shard, else the "
          "hostname's ordinal suffix (StatefulSet pod ps-server-2 → 2).");
ABSL_FLAG(uint32_t, num_shards, 1, "Number of server shards in the job.");
ABSL_FLAG(uint32_t, num_workers, 1,
          "Workers that must register before the first sync round closes; "
          "after that, rounds wait for the live workers.");
ABSL_FLAG(uint32_t, max_workers, 256,
          "Worker ids accepted are 0 to max(num_workers, max_workers)-1, so "
          "workers can join a running job.");
ABSL_FLAG(std::string, mode, "sync", "Consistency mode: sync, async or ssp.");
ABSL_FLAG(absl::Duration, lease_timeout, absl::Seconds(5),
          "A worker silent for this long stops counting toward rounds.");
ABSL_FLAG(uint32_t, sync_quorum, 0,
          "Sync: close a round with the first k gradients (backup workers); "
          "0 waits for every live worker.");
ABSL_FLAG(absl::Duration, round_timeout, absl::InfiniteDuration(),
          "Sync: close a round this long after it opened with what arrived "
          "(counted from when --num_workers had registered, if later).");
ABSL_FLAG(uint32_t, staleness, 0,
          "SSP: a worker at clock c reads once every live worker reached "
          "c - staleness.");
ABSL_FLAG(float, lr, 0.1f, "Learning rate α.");
ABSL_FLAG(std::string, optimizer, "sgd",
          "Optimizer of every dense tensor that declares none: NAME or "
          "NAME(KEY=VALUE,...), e.g. adam(beta1=0.9,beta2=0.999,epsilon=1e-8); "
          "sgd, momentum, nesterov, adagrad, adam, adamw, ftrl (README).");
ABSL_FLAG(std::string, lr_schedule, "constant",
          "Learning-rate schedule, a function of the shard's version: "
          "constant, step:EVERY:GAMMA, cosine:STEPS, or "
          "linear_warmup:STEPS+<one of those>.");
ABSL_FLAG(float, l2, 1e-4f, "L2 weight decay λ₂ (skips exempt tensors).");
ABSL_FLAG(float, l1, 0.0f,
          "L1 strength λ₁, an exact proximal soft-threshold step.");
ABSL_FLAG(float, clip_min, -std::numeric_limits<float>::infinity(),
          "Box constraint: lower bound on every parameter.");
ABSL_FLAG(float, clip_max, std::numeric_limits<float>::infinity(),
          "Box constraint: upper bound on every parameter.");
ABSL_FLAG(bool, nonnegative, false, "Constrain every parameter to be >= 0.");
ABSL_FLAG(float, max_norm, std::numeric_limits<float>::infinity(),
          "L2-ball constraint radius, per tensor slice held by this shard.");
ABSL_FLAG(float, penalty_beta, 0.0f,
          "If > 0, enforce the constraints as the penalty β·∇C instead of "
          "projecting onto them.");
ABSL_FLAG(uint64_t, max_keys_per_shard, uint64_t{1} << 26,
          "The most keys this shard holds (4 bytes each of θ, plus a θ-sized "
          "slot per worker in sync mode): an Init or checkpoint declaring "
          "more is refused before anything is allocated. Default 2^26 "
          "(256 MiB of θ).");
ABSL_FLAG(uint64_t, table_memory_limit, uint64_t{256} << 20,
          "Bytes this shard's sparse tables hold together (rows, optimizer "
          "state, index): each table gets a share in proportion to its row's "
          "bytes; past it the least recently updated rows are evicted. "
          "Default 256 MiB.");
ABSL_FLAG(uint32_t, min_count_to_create, 1,
          "A table row is created at the update that brings its id's "
          "sightings to this count; until then the id reads as its initial "
          "value. Default 1 (every row at its first update).");
ABSL_FLAG(absl::Duration, max_pull_wait, absl::Seconds(60),
          "Longest a pull may wait for its version, e.g. 60s.");
ABSL_FLAG(uint32_t, max_parked_pulls, 1024,
          "Most pulls waiting at once (sync rounds, SSP staleness); more get "
          "RESOURCE_EXHAUSTED. One worker id may hold at most 4 of them.");
ABSL_FLAG(std::string, checkpoint_dir, "",
          "Directory (must exist) for this shard's checkpoints; restored from "
          "at start. Empty: no checkpoints.");
ABSL_FLAG(absl::Duration, checkpoint_every, absl::InfiniteDuration(),
          "Checkpoint this often (when θ changed), e.g. 30s; also on SIGTERM "
          "and on request (psctl checkpoint).");
ABSL_FLAG(uint32_t, checkpoint_keep, 3, "Checkpoint files kept per shard.");
ABSL_FLAG(bool, allow_fresh_start, false,
          "Start with a fresh model when --checkpoint_dir holds checkpoints "
          "but none is usable, instead of refusing to start.");
ABSL_FLAG(bool, allow_config_change, false,
          "Restore a checkpoint written under other settings (--mode, "
          "--staleness, --sync_quorum, --lr, --l2, --l1, the constraints, "
          "--optimizer, --lr_schedule) "
          "instead of refusing to start; running workers follow the new "
          "mode.");
ABSL_FLAG(std::string, inject_faults, "",
          "Experiments only: inject RPC faults, e.g. "
          "'seed=7,delay=1ms..5ms,drop=0.01,error=UNAVAILABLE:0.05', or "
          "'@FILE' holding such a spec, re-read when it changes "
          "(common/rpc/fault_injection.h). Empty: none, at no cost.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of this server: serve TLS only. Empty: "
          "plaintext.");
ABSL_FLAG(std::string, tls_key, "", "The private key of --tls_cert (PEM).");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM file of the CA whose certificates clients must show (mutual "
          "TLS); a client without one fails the handshake.");
ABSL_FLAG(std::string, auth_token_file, "",
          "A file holding the token every call but health checks must carry "
          "(authorization: Bearer …); needs --tls_cert.");
ABSL_FLAG(std::string, metrics_listen, "",
          "Serve Prometheus metrics on GET /metrics at this HOST:PORT (port 0 "
          "picks a free one, logged). Empty: no metrics endpoint.");
ABSL_FLAG(uint32_t, replicas, 1,
          "Replicas of this shard (separate ps_server processes); 1: not "
          "replicated. Replica 0 is the primary, the others are backups "
          "that apply every change before the primary acknowledges it.");
ABSL_FLAG(uint32_t, replica_index, 0,
          "This server's place among its shard's --replicas (0: primary).");
ABSL_FLAG(std::vector<std::string>, replica_peers, {},
          "host:port of each of the shard's --replicas, in order, this one "
          "included (a port 0 in its own entry: the port it binds).");
ABSL_FLAG(absl::Duration, failover_timeout, absl::Milliseconds(300),
          "A backup that hears nothing from its shard's primary for this "
          "long holds an election and may take over (between the replicas' "
          "100ms heartbeat and the 1s after which a primary drops a silent "
          "backup).");
ABSL_FLAG(std::string, replica_state_dir, "",
          "An existing directory where this replica keeps the vote it gave "
          "in its shard's elections (--replicas of 3 or more), fsynced "
          "before it answers, so it never votes twice in a term even across "
          "a restart. Empty: it gives votes only once this process has "
          "followed or led a primary.");
ABSL_FLAG(bool, replica_witness, false,
          "This replica is a witness: it holds no θ and is sent no "
          "changes, only which are committed; it votes in the shard's "
          "elections and never leads. The third replica of a two-replica "
          "shard (--replicas=3, --replica_index 1 or 2) that makes its "
          "failover safe under a network partition.");
ABSL_FLAG(std::string, log_level, "info",
          "trace, debug, info, warn, error, critical or off.");
ABSL_FLAG(std::string, log_format, "text",
          "text (a line for a person) or json (one object a line: time, "
          "level, daemon, shard, message; for log pipelines).");

int main(int argc, char** argv) {
  using ps::common::Die;
  ps::common::InitProgram(
      argc, argv,
      "ps_server --shard_index=I --num_shards=S --num_workers=W "
      "[--listen=host:port] [--mode=sync|async|ssp] [--lr=...]");
  ps::common::SetLogLevelOrDie(absl::GetFlag(FLAGS_log_level));
  ps::server::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.shard.num_shards = absl::GetFlag(FLAGS_num_shards);
  absl::StatusOr<uint32_t> shard_index = ps::common::ResolveIndex(
      absl::GetFlag(FLAGS_shard_index), "shard_index", options.shard.num_shards,
      /*env_name=*/"", /*use_hostname=*/true);
  ps::common::DieIfError(shard_index.status(), "cannot tell the shard index");
  options.shard.shard_index = *shard_index;
  // Before anything logs, so every line has the chosen format.
  ps::common::SetLogFormatOrDie(absl::GetFlag(FLAGS_log_format),
                                {"ps_server", {{"shard", *shard_index}}});
  ps::rpc::RouteGrpcLogsToSpdlog();
  ps::common::DieIfError(
      ps::rpc::InstallFaultInjection(absl::GetFlag(FLAGS_inject_faults)),
      "--inject_faults");

  options.shard.num_workers = absl::GetFlag(FLAGS_num_workers);
  options.shard.max_workers = absl::GetFlag(FLAGS_max_workers);
  options.shard.lease_timeout = absl::GetFlag(FLAGS_lease_timeout);
  options.shard.sync_quorum = absl::GetFlag(FLAGS_sync_quorum);
  options.shard.round_timeout = absl::GetFlag(FLAGS_round_timeout);
  options.shard.staleness = absl::GetFlag(FLAGS_staleness);
  options.shard.max_keys_per_shard = absl::GetFlag(FLAGS_max_keys_per_shard);
  options.shard.max_parked_pulls = absl::GetFlag(FLAGS_max_parked_pulls);
  options.shard.table_memory_limit = absl::GetFlag(FLAGS_table_memory_limit);
  options.shard.min_count_to_create = absl::GetFlag(FLAGS_min_count_to_create);
  absl::StatusOr<ps::server::ConsistencyMode> mode =
      ps::server::ParseConsistencyMode(absl::GetFlag(FLAGS_mode));
  ps::common::DieIfError(mode.status(), "--mode");
  options.shard.mode = *mode;
  ps::common::UpdateOptions& update = options.shard.update;
  update.learning_rate = absl::GetFlag(FLAGS_lr);
  update.l2 = absl::GetFlag(FLAGS_l2);
  update.l1 = absl::GetFlag(FLAGS_l1);
  update.clip_min = absl::GetFlag(FLAGS_clip_min);
  update.clip_max = absl::GetFlag(FLAGS_clip_max);
  update.nonnegative = absl::GetFlag(FLAGS_nonnegative);
  update.max_norm = absl::GetFlag(FLAGS_max_norm);
  update.penalty_beta = absl::GetFlag(FLAGS_penalty_beta);
  absl::StatusOr<ps::common::OptimizerOptions> optimizer =
      ps::common::ParseOptimizerSpec(absl::GetFlag(FLAGS_optimizer));
  ps::common::DieIfError(optimizer.status(), "--optimizer");
  options.shard.optimizer = *optimizer;
  absl::StatusOr<ps::common::LrSchedule> lr_schedule =
      ps::common::ParseLrSchedule(absl::GetFlag(FLAGS_lr_schedule));
  ps::common::DieIfError(lr_schedule.status(), "--lr_schedule");
  options.shard.lr_schedule = *lr_schedule;
  options.max_pull_wait = absl::GetFlag(FLAGS_max_pull_wait);
  options.checkpoint_dir = absl::GetFlag(FLAGS_checkpoint_dir);
  options.checkpoint_every = absl::GetFlag(FLAGS_checkpoint_every);
  options.checkpoint_keep = absl::GetFlag(FLAGS_checkpoint_keep);
  options.allow_fresh_start = absl::GetFlag(FLAGS_allow_fresh_start);
  options.allow_config_change = absl::GetFlag(FLAGS_allow_config_change);
  options.security = {
      absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
      absl::GetFlag(FLAGS_tls_client_ca), absl::GetFlag(FLAGS_auth_token_file)};
  const uint32_t replicas = absl::GetFlag(FLAGS_replicas);
  options.replica.peers = absl::GetFlag(FLAGS_replica_peers);
  options.replica.replica_index = absl::GetFlag(FLAGS_replica_index);
  options.replica.failover_timeout = absl::GetFlag(FLAGS_failover_timeout);
  options.replica.state_dir = absl::GetFlag(FLAGS_replica_state_dir);
  options.replica.witness = absl::GetFlag(FLAGS_replica_witness);
  if (replicas == 0) Die("--replicas must be at least 1");
  if (replicas > 1 && options.replica.peers.size() != replicas) {
    Die(absl::StrCat("--replicas=", replicas, " needs --replica_peers with ",
                     replicas, " addresses (one per replica, in order); got ",
                     options.replica.peers.size()));
  }
  if (replicas == 1 && !options.replica.peers.empty()) {
    Die("--replica_peers needs --replicas set to how many it lists");
  }
  ps::common::DieIfError(ps::server::ValidateReplicaOptions(options.replica),
                         "invalid replica flags");
  if (options.replica.witness && !options.checkpoint_dir.empty()) {
    // A flagfile shared with the shard's other replicas names one; a
    // witness must neither restore θ from it nor write one.
    spdlog::warn("--replica_witness holds no θ: --checkpoint_dir={} ignored",
                 options.checkpoint_dir);
    options.checkpoint_dir.clear();
    options.checkpoint_every = absl::InfiniteDuration();
  }
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!options.metrics_listen.empty()) {
    ps::common::DieIfError(
        ps::common::metrics::ParseListenAddress(options.metrics_listen)
            .status(),
        "--metrics_listen");
  }
  if (options.checkpoint_every <= absl::ZeroDuration()) {
    Die("--checkpoint_every must be > 0");
  }
  if (options.checkpoint_dir.empty() &&
      options.checkpoint_every < absl::InfiniteDuration()) {
    Die("--checkpoint_every needs --checkpoint_dir");
  }
  if (options.max_pull_wait <= absl::ZeroDuration()) {
    Die("--max_pull_wait must be > 0");
  }
  ps::common::DieIfError(ps::server::ValidateShardOptions(options.shard),
                         "invalid options");

  ps::common::CatchStopSignals();

  absl::StatusOr<std::unique_ptr<ps::server::PsServer>> server =
      ps::server::PsServer::Start(options);
  ps::common::DieIfError(server.status(), "cannot start");
  std::string advertise = absl::GetFlag(FLAGS_advertise);
  if (advertise.empty()) {
    advertise = absl::StrCat(ps::common::Hostname(), ":", (*server)->port());
  }
  (*server)->SetAdvertisedAddress(advertise);
  spdlog::info(
      "shard {}/{} serving on port {} as {} (mode {}, {} workers, "
      "lr {}, l2 {}, l1 {}, optimizer {}, lr_schedule {})",
      options.shard.shard_index, options.shard.num_shards, (*server)->port(),
      advertise, absl::GetFlag(FLAGS_mode), options.shard.num_workers,
      update.learning_rate, update.l2, update.l1,
      ps::common::OptimizerSpecString(options.shard.optimizer),
      ps::common::LrScheduleString(options.shard.lr_schedule));
  if ((*server)->metrics_port() != 0) {
    spdlog::info("metrics on port {} (GET /metrics)",
                 (*server)->metrics_port());
  }
  if (const std::string port_file = absl::GetFlag(FLAGS_port_file);
      !port_file.empty()) {
    ps::common::DieIfError(ps::common::WriteFileAtomically(
                               port_file, absl::StrCat((*server)->port())),
                           "--port_file");
  }

  const int signal = ps::common::WaitForStopSignal();
  spdlog::info("received {}; draining", strsignal(signal));
  const absl::Status drained = (*server)->Drain();
  if (!drained.ok()) {
    spdlog::error("final checkpoint failed: {}", drained.ToString());
  }
  (*server)->Shutdown();
  const ps::server::ShardStatus status = (*server)->shard().Status();
  spdlog::info(
      "stopped at version {} after {} applied pushes ({} stale, "
      "{} duplicate, {} rejected)",
      status.version, status.pushes_applied, status.pushes_stale,
      status.pushes_duplicate, status.pushes_rejected);
  return drained.ok() ? 0 : 1;
}
