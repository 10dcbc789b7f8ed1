#ifndef PS_SERVER_SERVER_METRICS_H_
#define PS_SERVER_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>

#include "absl/status/status.h"
#include "common/metrics/registry.h"
#include "server/checkpointer.h"
#include "server/parameter_shard.h"
#include "server/replication/replicator.h"
#include "server/shard_observer.h"

namespace ps::server {

// The methods of ps.v1.ParameterServer, as the metrics label them.
enum class RpcMethod {
  kRegister,
  kHeartbeat,
  kLeave,
  kInit,
  kPull,
  kPush,
  kPushPull,
  kStatus,
  kCheckpoint,
  kExportRows,
  kPushStream,
  kPullStream,
  kLeasePartition,
  kInitStream,
};
inline constexpr size_t kNumRpcMethods = 14;

// One call as the metrics see it: started when the method was entered.
struct RpcCall {
  RpcMethod method;
  std::chrono::steady_clock::time_point start;
  size_t request_bytes = 0;
};

// A server's Prometheus metrics. What the gRPC service sees (calls, their
// latency and bytes, push and pull outcomes, parked pulls) is counted as it
// happens; what the shard and the checkpointer know (version, workers,
// rounds, checkpoints) is read from their snapshots at scrape time; what a
// snapshot cannot hold (how long each round took, each applied push's
// staleness) the shard reports as it happens (ShardObserver). Every series
// carries shard="<index>". Thread-safe.
class ServerMetrics final : public ShardObserver {
 public:
  // `checkpointer` and `replicator` may be null (no replica series then);
  // all must outlive this object.
  ServerMetrics(const ParameterShard* shard, const Checkpointer* checkpointer,
                uint32_t shard_index, const Replicator* replicator = nullptr);

  const common::metrics::Registry& registry() const { return registry_; }

  static RpcCall StartCall(RpcMethod method, size_t request_bytes = 0) {
    return {method, std::chrono::steady_clock::now(), request_bytes};
  }
  // The call ended with `status`, answering `response_bytes`.
  void EndCall(const RpcCall& call, const absl::Status& status,
               size_t response_bytes = 0);
  // A push (of Push or PushPull) ended: `outcome` when it was taken, else
  // `status`.
  void CountPush(const absl::Status& status, PushOutcome outcome);
  // A pull (of Pull or PushPull) was answered with `status`.
  void CountPull(const absl::Status& status);
  void PullParked() { parked_pulls_->Add(1); }
  void ParkedPullEnded() { parked_pulls_->Add(-1); }
  void StreamOpened() { pushpull_streams_->Add(1); }
  void StreamClosed() { pushpull_streams_->Add(-1); }

  void RoundClosed(RoundClose why, absl::Duration open_for) override;
  void PushApplied(uint64_t staleness) override;

 private:
  // Reads the shard's and the checkpointer's snapshots into the series.
  void Scrape();
  // The series of `family` for `label`, looked up once per index.
  template <size_t N>
  static common::metrics::Counter& Cached(
      std::array<std::atomic<common::metrics::Counter*>, N>& cache,
      size_t index, common::metrics::Family<common::metrics::Counter>& family,
      const std::string& label);

  const ParameterShard* const shard_;
  const Checkpointer* const checkpointer_;
  const Replicator* const replicator_;
  common::metrics::Registry registry_;

  std::array<common::metrics::Histogram*, kNumRpcMethods> rpc_duration_;
  // Null for the typed methods.
  std::array<common::metrics::Counter*, kNumRpcMethods> received_bytes_{};
  std::array<common::metrics::Counter*, kNumRpcMethods> sent_bytes_{};
  common::metrics::Family<common::metrics::Counter>* pushes_;
  common::metrics::Family<common::metrics::Counter>* pulls_;
  // By push outcome, then by status code (for errors).
  std::array<std::atomic<common::metrics::Counter*>, 4 + 17> push_series_{};
  std::array<std::atomic<common::metrics::Counter*>, 17> pull_series_{};
  common::metrics::Gauge* parked_pulls_;
  common::metrics::Gauge* pushpull_streams_;

  // Set at scrape time.
  common::metrics::Gauge* version_;
  common::metrics::Gauge* initialized_;
  common::metrics::Gauge* keys_;
  common::metrics::Counter* samples_applied_;
  common::metrics::Gauge* live_workers_;
  common::metrics::Gauge* registered_workers_;
  common::metrics::Gauge* expected_workers_;
  common::metrics::Counter* leases_expired_;
  common::metrics::Family<common::metrics::Counter>* rounds_closed_;
  // By RoundClose: all_live, quorum, timeout.
  std::array<common::metrics::Histogram*, 3> round_duration_{};
  common::metrics::Histogram* push_staleness_;
  common::metrics::Gauge* round_gradients_;
  // Sparse tables, by table name.
  common::metrics::Family<common::metrics::Gauge>* table_rows_;
  common::metrics::Family<common::metrics::Gauge>* table_memory_bytes_;
  common::metrics::Family<common::metrics::Gauge>* table_memory_limit_bytes_;
  common::metrics::Family<common::metrics::Counter>* table_rows_created_;
  common::metrics::Family<common::metrics::Counter>* table_rows_evicted_;
  common::metrics::Family<common::metrics::Counter>* table_rows_refused_;
  common::metrics::Family<common::metrics::Gauge>* worker_staleness_;
  common::metrics::Gauge* max_read_clock_gap_;
  common::metrics::Counter* pulls_refused_over_total_;
  common::metrics::Counter* pulls_refused_over_worker_;
  // Without series until the first checkpoint: an age of 0 would lie.
  common::metrics::Family<common::metrics::Gauge>* checkpoint_age_;
  common::metrics::Family<common::metrics::Gauge>* checkpoint_duration_;
  common::metrics::Family<common::metrics::Gauge>* checkpoint_bytes_;
  common::metrics::Family<common::metrics::Gauge>* checkpoint_version_;
  // A replicated shard's replica (null without a replicator).
  common::metrics::Family<common::metrics::Gauge>* replica_role_ = nullptr;
  common::metrics::Gauge* replica_term_ = nullptr;
  common::metrics::Counter* replica_failovers_ = nullptr;
  common::metrics::Counter* replica_sent_bytes_ = nullptr;
};

}  // namespace ps::server

#endif  // PS_SERVER_SERVER_METRICS_H_
