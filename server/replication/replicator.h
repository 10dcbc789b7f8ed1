#ifndef PS_SERVER_REPLICATION_REPLICATOR_H_
#define PS_SERVER_REPLICATION_REPLICATOR_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/client_context.h"
#include "ps/v1/replication.grpc.pb.h"
#include "server/parameter_shard.h"
#include "server/replication/replay_clock.h"
#include "server/replication/replica_options.h"
#include "server/replication/replication_log.h"

namespace ps::server {

// Why a replica refused a call (ErrorInfo reasons, domain ps.v1).
// NOT_PRIMARY, with FAILED_PRECONDITION and metadata {"primary": host:port,
// "term": n}: this replica is a backup; send workers' calls to the primary.
inline constexpr char kNotPrimary[] = "NOT_PRIMARY";
// STALE_TERM, with FAILED_PRECONDITION and metadata {"term": n}: the sender
// is from an older term than this replica's (a replaced primary).
inline constexpr char kStaleTerm[] = "STALE_TERM";
// REJOIN_REQUIRED, with FAILED_PRECONDITION: the backup missed changes;
// it must join again (and copy the state) to follow the primary.
inline constexpr char kRejoinRequired[] = "REJOIN_REQUIRED";

// One shard replica's part in replication (README, "Replicated shards"):
// the Replication service, and
//  - on the primary, the log of the shard's changes (the shard's journal),
//    one sender per joined backup, and the wait of each write until every
//    live backup applied it;
//  - on a backup, the join (copying the primary's state), the replay of
//    the primary's changes at the primary's times, and the refusal of
//    workers' calls with the primary's address.
// The primary is replica 0 for the whole term (no failover yet): term 1.
class Replicator final : public ps::v1::Replication::CallbackService {
 public:
  // `shard` and `clock` (the shard's clock) must outlive the replicator.
  Replicator(const ReplicaOptions& options, ParameterShard* shard,
             ReplayClock* clock);
  ~Replicator() override;

  // Primary: journals the shard's changes. Backup: joins the primary, in
  // the background, retrying until it did; it tells the primary its own
  // entry of the peers, with `bound_port` for a port 0 there.
  void Start(int bound_port);
  // Ends the waits, the senders and the join.
  void Stop();

  bool primary() const { return options_.primary(); }
  // OK on the primary; on a backup FAILED_PRECONDITION NOT_PRIMARY naming
  // the primary, for every call from a worker.
  absl::Status CheckPrimary() const;
  // Runs `done` once every live backup applied every change logged so far
  // (on the primary; at once elsewhere), with UNAVAILABLE when the server
  // stops first: the worker retries, and the retry is applied once.
  void WhenReplicated(ReplicationLog::Done done);
  // A backup that joined and follows the primary.
  bool joined() const;
  // Primary: the last change logged. Backup: the last change applied.
  uint64_t log_index() const;
  // Primary: times a backup was dropped for not answering.
  uint64_t backups_dropped() const { return log_.backups_dropped(); }

  // What Status and /metrics show of this replica (ps.v1.ReplicaState).
  struct State {
    uint32_t replica_index = 0;
    uint32_t replicas = 0;
    bool primary = false;
    bool joined = false;  // a backup that follows the primary
    uint64_t term = 0;
    // Times a new primary took over while this replica ran (0: no
    // failover yet).
    uint64_t failovers = 0;
    // Primary: bytes of Apply requests sent to backups, retries and
    // heartbeats included.
    uint64_t bytes_sent = 0;
    uint64_t backups_dropped = 0;
  };
  State state() const;

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context,
                                 const ps::v1::JoinRequest* request,
                                 ps::v1::JoinResponse* response) override;
  grpc::ServerUnaryReactor* Apply(grpc::CallbackServerContext* context,
                                  const ps::v1::ApplyRequest* request,
                                  ps::v1::ApplyResponse* response) override;
  grpc::ServerUnaryReactor* ReplicaStatus(
      grpc::CallbackServerContext* context,
      const ps::v1::ReplicaStatusRequest* request,
      ps::v1::ReplicaStatusResponse* response) override;

 private:
  // Primary: sends `replica`'s changes after `acked` until it is dropped,
  // joins again, or the replicator stops.
  void SendLoop(uint32_t replica, uint64_t generation, uint64_t acked,
                std::string address);
  // Backup: joins the primary, retrying until it did or the replicator
  // stops.
  void JoinLoop();
  absl::Status JoinOnce();
  absl::Status ApplyChanges(const ps::v1::ApplyRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);

  const ReplicaOptions options_;
  ParameterShard* const shard_;
  ReplayClock* const clock_;
  // No failover yet: every replica is in term 1.
  const uint64_t term_ = 1;
  // How the primary reaches this replica (set by Start).
  std::string own_address_;
  ReplicationLog log_;
  absl::Notification stop_;
  std::atomic<uint64_t> failovers_{0};
  std::atomic<uint64_t> bytes_sent_{0};

  absl::Mutex threads_mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(threads_mu_);
  // The Join in flight, which Stop cancels (it may wait for a large state).
  grpc::ClientContext* joining_ ABSL_GUARDED_BY(threads_mu_) = nullptr;

  // Backup: the replay of changes, one Apply at a time.
  mutable absl::Mutex apply_mu_;
  bool joined_ ABSL_GUARDED_BY(apply_mu_) = false;
  uint64_t applied_ ABSL_GUARDED_BY(apply_mu_) = 0;
};

}  // namespace ps::server

#endif  // PS_SERVER_REPLICATION_REPLICATOR_H_
