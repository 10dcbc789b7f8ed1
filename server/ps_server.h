#ifndef PS_SERVER_PS_SERVER_H_
#define PS_SERVER_PS_SERVER_H_

#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/metrics/http_endpoint.h"
#include "common/rpc/security.h"
#include "grpcpp/server.h"
#include "server/checkpointer.h"
#include "server/parameter_service.h"
#include "server/parameter_shard.h"
#include "server/replication/replay_clock.h"
#include "server/replication/replica_options.h"
#include "server/replication/replicator.h"
#include "server/server_metrics.h"

namespace ps::server {

struct ServerOptions {
  ShardOptions shard;
  // Bind address, host:port; port 0 picks a free one. Default: 0.0.0.0:50051
  std::string listen = "0.0.0.0:50051";
  // Longest a pull may wait for its version, whatever the client's
  // deadline. Default: 60 s
  absl::Duration max_pull_wait = absl::Seconds(60);

  // Checkpoints go here; empty: none. The directory must exist.
  std::string checkpoint_dir;
  // Between periodic checkpoints (skipped while θ is unchanged). Default:
  // never, only on request and on Drain
  absl::Duration checkpoint_every = absl::InfiniteDuration();
  // Files kept per shard. Default: 3
  uint32_t checkpoint_keep = 3;
  // Start with no state when the directory holds checkpoints but none is
  // usable, instead of refusing to start. Default: false
  bool allow_fresh_start = false;
  // Restore a checkpoint written under other rules (mode, staleness,
  // quorum, update rule) instead of refusing to start. Default: false
  bool allow_config_change = false;
  // TLS, client certificates and the token. Default: plaintext, open
  rpc::ServerSecurity security;

  // This shard's replicas. Default: one, no replication
  ReplicaOptions replica;

  // Serve Prometheus metrics on GET /metrics here, "HOST:PORT"; port 0
  // picks a free one. Default: empty, no metrics endpoint
  std::string metrics_listen;
};

// A running parameter server: one shard, its gRPC service, gRPC's health
// service and reflection. Embeddable, so tests run real servers in-process.
class PsServer {
 public:
  static absl::StatusOr<std::unique_ptr<PsServer>> Start(
      const ServerOptions& options);
  ~PsServer();

  int port() const { return port_; }
  // The metrics endpoint's bound port; 0 without --metrics_listen.
  int metrics_port() const {
    return metrics_endpoint_ ? metrics_endpoint_->port() : 0;
  }
  const ServerMetrics& metrics() const { return *metrics_; }
  ParameterShard& shard() { return *shard_; }
  // Null unless the shard is replicated.
  const Replicator* replicator() const { return replicator_.get(); }
  // How others reach this server; Status reports it.
  void SetAdvertisedAddress(std::string address) {
    service_->SetAdvertisedAddress(std::move(address));
  }

  // Graceful shutdown, first half: pushes get UNAVAILABLE from now on, the
  // health check says NOT_SERVING, and the shard is checkpointed (when a
  // checkpoint directory is set) with every update applied so far.
  absl::Status Drain();

  // Stops taking calls, ends the parked ones, and waits at most `grace` for
  // calls in flight; the metrics endpoint stops first.
  void Shutdown(absl::Duration grace = absl::Seconds(2));

  // The version restored from a checkpoint at start, if any.
  std::optional<uint64_t> restored_version() const { return restored_version_; }

 private:
  PsServer() = default;

  absl::Status Restore(const ServerOptions& options);
  void CheckpointLoop(absl::Duration every);

  // A replicated shard's clock (the primary's times, on a backup); before
  // the shard, which reads it to the end.
  std::unique_ptr<ReplayClock> clock_;
  std::unique_ptr<ParameterShard> shard_;
  std::unique_ptr<Checkpointer> checkpointer_;
  // Before the service, whose parked pulls count in it to the end.
  std::unique_ptr<ServerMetrics> metrics_;
  // Before the service, which calls it to the end.
  std::unique_ptr<Replicator> replicator_;
  std::unique_ptr<ParameterService> service_;
  std::unique_ptr<common::metrics::MetricsEndpoint> metrics_endpoint_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
  std::optional<uint64_t> restored_version_;
  absl::Notification stop_checkpoints_;
  std::thread checkpoint_thread_;
};

}  // namespace ps::server

#endif  // PS_SERVER_PS_SERVER_H_
