#ifndef PS_SERVER_PARAMETER_SHARD_H_
#define PS_SERVER_PARAMETER_SHARD_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/key_range.h"
#include "common/tensor_spec.h"
#include "common/theta_file.h"
#include "common/worker_record.h"
#include "server/consistency_policy.h"
#include "server/dense_slice.h"
#include "server/membership.h"
#include "server/partition_table.h"
#include "server/pull_wait_list.h"
#include "server/shard_counters.h"
#include "server/shard_journal.h"
#include "server/shard_observer.h"
#include "server/shard_options.h"
#include "server/shard_requests.h"
#include "server/shard_snapshot.h"
#include "server/sparse_tables.h"
#include "server/sync_round.h"

namespace ps::server {

struct ShardStatus {
  ShardOptions options;
  bool initialized = false;
  common::KeyRange keys;
  std::vector<common::TensorSpec> tensors;
  std::vector<TableStatus> tables;
  uint64_t version = 0;
  uint64_t samples_applied = 0;
  uint64_t pushes_applied = 0;
  uint64_t pushes_duplicate = 0;
  uint64_t pushes_stale = 0;
  uint64_t pushes_rejected = 0;
  uint32_t round_gradients = 0;
  std::vector<common::WorkerRecord> workers;  // registered ones, by id
  // When the status was taken, and the fastest live worker's clock then:
  // what a worker's heartbeat age and staleness are measured against.
  absl::Time taken_at;
  uint64_t fastest_live_clock = 0;
  absl::Duration SinceHeartbeat(const common::WorkerRecord& w) const {
    return taken_at - w.last_heartbeat;
  }
  // Clocks behind the fastest live worker.
  uint64_t Staleness(const common::WorkerRecord& w) const {
    return fastest_live_clock > w.clock ? fastest_live_clock - w.clock : 0;
  }
  uint32_t live_workers = 0;
  uint64_t rounds_closed_all_live = 0;
  uint64_t rounds_closed_by_quorum = 0;
  uint64_t rounds_closed_by_timeout = 0;
  uint64_t leases_expired = 0;
  // SSP: the largest (reader's clock − slowest live clock) a pull was
  // answered with; never above the staleness bound.
  uint64_t max_read_clock_gap = 0;
  // Pulls refused because the parked pulls' bounds were reached: the
  // server's (--max_parked_pulls) or one worker id's.
  uint64_t pulls_refused_over_total = 0;
  uint64_t pulls_refused_over_worker = 0;
  // Shard 0, once a worker leased a partition: the plan, and partitions
  // done per epoch.
  std::optional<common::PartitionPlan> partition_plan;
  std::vector<uint32_t> partitions_done_per_epoch;
  uint64_t partitions_done = 0;
};

// One shard of θ and the rules that change it. Plain C++: the gRPC service
// validates nothing itself; everything a request can get wrong is checked
// here, before θ is touched. Thread-safe.
class ParameterShard {
 public:
  explicit ParameterShard(ShardOptions options);

  ParameterShard(const ParameterShard&) = delete;
  ParameterShard& operator=(const ParameterShard&) = delete;

  // Starts or renews a worker's lease (see Membership::Register).
  absl::StatusOr<RegisterResult> Register(uint32_t worker_id,
                                          uint64_t incarnation);
  absl::StatusOr<uint64_t> Heartbeat(uint32_t worker_id, uint64_t incarnation);
  // The worker is done (see LeaveReason); it stops counting toward rounds
  // at once. UNAVAILABLE while draining (see StopTakingPushes).
  absl::Status Leave(uint32_t worker_id, uint64_t incarnation,
                     LeaveReason reason = LeaveReason::kStopped);

  // Declares the model; the first declaration's values win.
  absl::StatusOr<InitResult> Init(const InitArgs& args);
  // The keys an Init of `args` gives this shard, after every check Init
  // makes before it reads the values (addressing, worker id, the specs,
  // the shard's size): a streamed Init stages exactly this many values.
  absl::StatusOr<common::KeyRange> InitKeys(const InitArgs& args) const;

  using PullDone = PullWaitList::Done;
  using PullTicket = PullWaitList::Ticket;

  // A fresh ticket for Pull: taken before parking, so the caller knows it
  // before `done` can possibly run.
  PullTicket NewPullTicket();

  // θ[keys] at once when the version reached min_version (or the error, for
  // a bad request, OUT_OF_RANGE for one waiting could never answer, and
  // RESOURCE_EXHAUSTED when the parked pulls' bounds are reached). Otherwise,
  // with an empty `done`, returns nullopt without parking (a caller that
  // answers at once when it can); else parks `done` under `ticket` and returns
  // nullopt; `done` later runs on the thread whose push advances the version,
  // or with DEADLINE_EXCEEDED at `expires` (see ExpirePulls), or with
  // CANCELLED.
  std::optional<absl::StatusOr<PullResult>> Pull(const PullArgs& args,
                                                 absl::Time expires,
                                                 PullTicket ticket,
                                                 PullDone done);

  // Replaces `out` with floats [offset, offset + n) of a pull's keys, read
  // from its shared θ (PullArgs::share_values) under the shard's lock,
  // which every update of θ holds. The range must lie inside the pull's.
  void ReadShared(const PullResult& pulled, uint64_t offset, uint64_t n,
                  std::string* out) const ABSL_LOCKS_EXCLUDED(mutex_);

  // Ends a parked pull with CANCELLED; false when it already ended.
  bool CancelPull(PullTicket ticket);

  // Ends every parked pull with UNAVAILABLE (the server is going away), so
  // clients retry instead of taking the shutdown for a cancellation; pulls
  // that would park from now on get UNAVAILABLE too.
  void EndParkedPulls();
  // Answers every parked pull with `why` now, and parks pulls again later:
  // a primary that steps down sends its waiting workers to the new one.
  void AnswerParkedPulls(const absl::Status& why);

  // Time passes: ends parked pulls that expired, expires leases, closes a
  // sync round whose timeout ran out or whose missing workers expired.
  void Tick(absl::Time now);
  // The shard's clock's time now (ShardOptions::clock).
  absl::Time Now() const { return options_.clock(); }

  // Validated, then (new, not a retry) applied or held for the round; a
  // push that completes a partition marks it done with it (shard 0).
  absl::StatusOr<PushResult> Push(const PushArgs& args);
  // Counts a push refused before it reached Push (its compressed gradient
  // did not decode) among the rejected, as Push counts those it refuses.
  void CountRejectedPush();

  // The data partition (worker_id, incarnation) trains next, from shard 0's
  // table (PartitionTable::Lease); the first lease declares `plan`.
  // FAILED_PRECONDITION on other shards; REGISTRATION_REQUIRED unless the
  // worker is live here.
  absl::StatusOr<PartitionLease> LeasePartition(
      uint32_t worker_id, uint64_t incarnation,
      const common::PartitionPlan& plan);

  ShardStatus Status() const;
  // The dense keys this shard owns; empty before Init. Cheap (no copy of
  // the status), for the service's decoding of compressed pushes.
  common::KeyRange keys() const;
  // SparseTables::Dump of the shard's tables (empty before Init).
  std::string DumpTables() const;
  // Tells `observer` (null: nobody) of rounds closed and pushes applied
  // from now on; it must outlive the shard or be replaced first.
  void SetObserver(ShardObserver* observer);
  // The longest Pull request read: a few numbers, and sparse keys once
  // the model has tables.
  uint64_t max_pull_request_bytes() const {
    return has_tables_.load() ? kMaxSparsePullRequestBytes
                              : kMaxPullRequestBytes;
  }
  // Fixed for the server's life; every answer tells workers (they follow a
  // server restarted in another mode).
  ConsistencyMode mode() const { return options_.mode; }

  // Tells `journal` (null: nobody) of every change from now on, in order
  // (see ShardJournal); it must outlive the shard or be replaced first.
  void SetJournal(ShardJournal* journal);

  // Everything a restart must get back, as of one instant: θ, version,
  // the workers' bookkeeping and, in sync mode, the open round's gradients.
  // Before the model is declared the state is the workers alone (a file
  // without tensors), or FAILED_PRECONDITION while none has registered.
  // `at_instant` (if set) runs at that instant, under the shard's lock:
  // where a backup joins the journal's stream of changes.
  absl::StatusOr<common::ThetaFile> Snapshot(
      const std::function<void()>& at_instant = nullptr) const;

  // Takes the state of a checkpoint before serving. `saved` must cover
  // exactly this shard's keys of its model; an open round is restored only
  // when it came from this same shard layout. A state without tensors
  // (Snapshot before Init) replaces the workers of a shard without a model.
  absl::Status Restore(common::ThetaFile saved);

  // A page of table `name`'s stored rows (SparseTables::ExportRows), with
  // the version it was read at. FAILED_PRECONDITION before the model is
  // declared.
  struct ExportedRows {
    SparseTables::RowPage page;
    uint64_t version = 0;
    uint64_t model_seed = 0;
  };
  absl::StatusOr<ExportedRows> ExportRows(const std::string& name,
                                          std::optional<uint64_t> after,
                                          size_t max_rows) const;

  // Graceful shutdown: from now on pushes and leaves get UNAVAILABLE (the
  // worker retries later, against the restarted server) and no round
  // closes, so the version stays what the final checkpoint holds; pulls are
  // still served.
  void StopTakingPushes();

 private:
  using Completion = std::pair<PullDone, absl::StatusOr<PullResult>>;

  // Restore of a state taken before Init: the workers alone.
  absl::Status RestoreWorkers(const std::vector<common::WorkerRecord>& workers)
      ABSL_LOCKS_EXCLUDED(mutex_);

  absl::StatusOr<common::KeyRange> ResolvePullKeys(
      const common::KeyRange& requested) const
      ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  PullResult Read(const PullArgs& args) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::Status ValidatePush(const PushArgs& args) const
      ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  // A validated, new push (not a retry): sync files it into the open round,
  // async and SSP apply it at once. An error rejects it and changes nothing.
  // `sparse` is the push's table rows, checked (SparseTables::ParsePush).
  absl::StatusOr<PushResult> PushToRound(const PushArgs& args,
                                         SparseGradient sparse,
                                         common::WorkerRecord& worker,
                                         absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::StatusOr<PushResult> PushAtOnce(const PushArgs& args,
                                        const SparseGradient& sparse,
                                        common::WorkerRecord& worker)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // OK when this shard may hold `keys`; checked before θ is allocated.
  absl::Status CheckShardSize(const common::KeyRange& keys) const;
  // Holds `theta` for `keys` of the model `tensors`, with an empty round
  // (sync) opened at `now`: the one way Init and Restore take a model.
  void DeclareModel(std::vector<common::TensorSpec> tensors,
                    common::KeyRange keys, std::vector<float> theta,
                    absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Closes the open sync round if the policy says so; true when it did.
  bool MaybeCloseRound(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Tells the journal, if any, of a change taking effect at `now`.
  void Record(absl::Time now, ShardChange change)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Removes the parked pulls that can be answered now, with their answers.
  std::vector<Completion> TakeSatisfiedPulls()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const ShardOptions options_;
  const ConsistencyPolicy policy_;
  std::atomic<bool> taking_pushes_{true};
  std::atomic<bool> has_tables_{false};
  std::atomic<PullTicket> next_ticket_{1};

  mutable absl::Mutex mutex_;
  bool initialized_ ABSL_GUARDED_BY(mutex_) = false;
  std::vector<common::TensorSpec> tensors_ ABSL_GUARDED_BY(mutex_);
  DenseSlice dense_ ABSL_GUARDED_BY(mutex_);
  SparseTables tables_ ABSL_GUARDED_BY(mutex_);
  // Sync: closed rounds. Async: applied pushes.
  uint64_t version_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t samples_applied_ ABSL_GUARDED_BY(mutex_) = 0;
  // Sync only: the open round, when it opened, and its mean's buffer.
  std::optional<SyncRound> round_ ABSL_GUARDED_BY(mutex_);
  absl::Time round_opened_ ABSL_GUARDED_BY(mutex_);
  std::vector<float> round_mean_ ABSL_GUARDED_BY(mutex_);
  Membership members_ ABSL_GUARDED_BY(mutex_);
  PullWaitList parked_ ABSL_GUARDED_BY(mutex_);
  ShardCounters counters_ ABSL_GUARDED_BY(mutex_);
  ShardObserver* observer_ ABSL_GUARDED_BY(mutex_) = nullptr;
  ShardJournal* journal_ ABSL_GUARDED_BY(mutex_) = nullptr;
  // Shard 0 only: which worker trains which data partition.
  PartitionTable partitions_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace ps::server

#endif  // PS_SERVER_PARAMETER_SHARD_H_
