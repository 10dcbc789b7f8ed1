#ifndef PS_SERVER_PARAMETER_SHARD_H_
#define PS_SERVER_PARAMETER_SHARD_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/consistency_mode.h"
#include "common/key_range.h"
#include "common/tensor_spec.h"
#include "common/theta_file.h"
#include "common/update_rule.h"
#include "server/membership.h"
#include "server/sync_round.h"

namespace ps::server {

// The mode's enum lives in common: checkpoints and the wire share it.
using common::ConsistencyMode;
using common::ConsistencyModeName;
using common::ParseConsistencyMode;

struct ShardOptions {
  // Which contiguous part of the key space this server owns. Default: 0 of 1
  uint32_t shard_index = 0;
  uint32_t num_shards = 1;
  // Workers that must register before the first sync round may close.
  // Default: 1
  uint32_t num_workers = 1;
  // Worker ids accepted: [0, max(num_workers, max_workers)), so workers can
  // join a running job. Default: 256
  uint32_t max_workers = 256;
  // Default: kSync
  ConsistencyMode mode = ConsistencyMode::kSync;
  // A worker that has not heartbeaten for this long stops counting toward
  // rounds and SSP bounds. Default: 5 s
  absl::Duration lease_timeout = absl::Seconds(5);
  // Sync: close a round with the first k gradients (backup workers);
  // 0 waits for every live worker. Default: 0
  uint32_t sync_quorum = 0;
  // Sync: close a round this long after it opened (or after `num_workers`
  // registered, if later) with what arrived, if anything did. Default: never
  absl::Duration round_timeout = absl::InfiniteDuration();
  // SSP: the staleness bound s. Default: 0
  uint32_t staleness = 0;
  // The regularized update. Default: plain SGD, α = 0.1
  common::UpdateOptions update;
  // The most keys this shard holds, whatever a request or checkpoint
  // declares: θ alone is 4 bytes a key, sync keeps a θ-sized slot per
  // worker on top. Default: 2^26 (256 MiB of θ)
  uint64_t max_keys_per_shard = uint64_t{1} << 26;
  // Where the shard reads the time (leases, round timeouts, heartbeat
  // ages). Default: the real clock
  common::Clock clock = common::RealClock();
};

absl::Status ValidateShardOptions(const ShardOptions& options);

// Empty when `saved` was written under the rules `options` set (mode,
// staleness, quorum, update rule); otherwise one line listing each change,
// "mode async → sync, lr 0.1 → 1", for a refusal at start-up.
std::string DescribeRuleChange(const common::ThetaFile& saved,
                               const ShardOptions& options);

struct InitArgs {
  uint32_t worker_id = 0;
  uint32_t shard_index = 0;
  uint32_t num_shards = 0;
  std::vector<common::TensorSpec> tensors;
  absl::Cord values;  // float32 bytes of this shard's keys
};

struct InitResult {
  bool created = false;
  uint64_t version = 0;
  common::KeyRange keys;
  ConsistencyMode mode = ConsistencyMode::kSync;
  uint32_t expected_workers = 0;
};

struct PullArgs {
  uint32_t worker_id = 0;
  uint64_t min_version = 0;
  common::KeyRange keys;  // empty: the whole shard
  uint64_t clock = 0;     // SSP: the caller's clock
};

struct RegisterResult {
  bool rejoined = false;
  uint64_t resume_step = 0;
  uint64_t version = 0;
  absl::Duration lease_timeout;
};

struct PullResult {
  uint64_t version = 0;
  uint64_t samples_applied = 0;
  ConsistencyMode mode =
      ConsistencyMode::kSync;  // the shard's, told to workers
  common::KeyRange keys;
  std::string values;  // float32 bytes
};

struct PushArgs {
  uint32_t worker_id = 0;
  uint64_t incarnation = 0;
  uint64_t seq = 0;
  uint64_t step = 0;
  uint64_t base_version = 0;
  uint32_t batch_size = 0;
  common::KeyRange keys;
  // float32 bytes, as they arrived (in pieces: the request's slices)
  absl::Cord gradient;
};

enum class PushOutcome { kApplied, kAccepted, kDuplicate, kStale };

struct PushResult {
  PushOutcome outcome = PushOutcome::kApplied;
  uint64_t version = 0;
};

struct ShardStatus {
  ShardOptions options;
  bool initialized = false;
  common::KeyRange keys;
  std::vector<common::TensorSpec> tensors;
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
};

// Closes the open sync round that `file` (a checkpoint) holds, as the shard
// would have: the rank-ordered, batch-weighted mean of its gradients applied
// with `update`, the version one higher. With no gradient, only the version
// moves. For a reshard whose old shards stopped one round apart, so that
// every key is restored at the same round.
absl::Status CloseSavedRound(const common::UpdateOptions& update,
                             common::ThetaFile& file);

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

  using PullDone = std::function<void(absl::StatusOr<PullResult>)>;
  using PullTicket = uint64_t;

  // A fresh ticket for Pull: taken before parking, so the caller knows it
  // before `done` can possibly run.
  PullTicket NewPullTicket();

  // θ[keys] at once when the version reached min_version (or the error, for
  // a bad request). Otherwise, with an empty `done`, returns nullopt without
  // parking (a caller that answers at once when it can); else parks `done`
  // under `ticket` and returns nullopt; `done` later runs on the thread whose
  // push advances the version, or with DEADLINE_EXCEEDED at `expires` (see
  // ExpirePulls), or with CANCELLED.
  std::optional<absl::StatusOr<PullResult>> Pull(const PullArgs& args,
                                                 absl::Time expires,
                                                 PullTicket ticket,
                                                 PullDone done);

  // Ends a parked pull with CANCELLED; false when it already ended.
  bool CancelPull(PullTicket ticket);

  // Ends every parked pull with UNAVAILABLE (the server is going away), so
  // clients retry instead of taking the shutdown for a cancellation; pulls
  // that would park from now on get UNAVAILABLE too.
  void EndParkedPulls();

  // Time passes: ends parked pulls that expired, expires leases, closes a
  // sync round whose timeout ran out or whose missing workers expired.
  void Tick(absl::Time now);
  // The shard's clock's time now (ShardOptions::clock).
  absl::Time Now() const { return options_.clock(); }

  absl::StatusOr<PushResult> Push(const PushArgs& args);

  ShardStatus Status() const;
  // Fixed for the server's life; every answer tells workers (they follow a
  // server restarted in another mode).
  ConsistencyMode mode() const { return options_.mode; }

  // Everything a restart must get back, as of one instant: θ, version,
  // the workers' bookkeeping and, in sync mode, the open round's gradients.
  // FAILED_PRECONDITION before the model is declared.
  absl::StatusOr<common::ThetaFile> Snapshot() const;

  // Takes the state of a checkpoint before serving. `saved` must cover
  // exactly this shard's keys of its model; an open round is restored only
  // when it came from this same shard layout.
  absl::Status Restore(common::ThetaFile saved);

  // Graceful shutdown: from now on pushes and leaves get UNAVAILABLE (the
  // worker retries later, against the restarted server) and no round
  // closes, so the version stays what the final checkpoint holds; pulls are
  // still served.
  void StopTakingPushes();

 private:
  struct ParkedPull {
    PullArgs args;
    absl::Time expires;
    PullDone done;
  };
  using Completion = std::pair<PullDone, absl::StatusOr<PullResult>>;

  absl::StatusOr<common::KeyRange> ResolvePullKeys(
      const common::KeyRange& requested) const
      ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  PullResult Read(const PullArgs& args) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::Status ValidatePush(const PushArgs& args) const
      ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  // OK when this shard may hold `keys`; checked before θ is allocated.
  absl::Status CheckShardSize(const common::KeyRange& keys) const;
  // Holds `theta` for `keys` of the model `tensors`, with an empty round
  // (sync) opened at `now`: the one way Init and Restore take a model.
  void DeclareModel(std::vector<common::TensorSpec> tensors,
                    common::KeyRange keys, std::vector<float> theta,
                    absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Applies `gradient` to the whole shard and advances the version.
  void ApplyGradient(absl::Span<const float> gradient, uint64_t samples)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // ApplyGradient from a push's float32 bytes (already validated), without
  // a θ-sized copy unless the rule has a ball (which needs whole segments).
  void ApplyGradientBytes(const absl::Cord& bytes, uint64_t samples)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Index and value of the gradient's first NaN or infinity, if any, read
  // a chunk at a time; else sets *largest to its largest magnitude.
  std::optional<std::pair<size_t, float>> FindNonFiniteGradient(
      const absl::Cord& bytes, double* largest)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Whether an update by a gradient no larger than `largest` in magnitude
  // surely leaves θ finite, judged from theta_bound_ alone (no pass over
  // θ); false means "run FindNonFiniteResult".
  bool SurelyFinite(double largest) const ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  // Keeps theta_bound_ an upper bound on max|θ| after an applied update by
  // a gradient of magnitude at most `largest`; `exact` recomputes it.
  void BoundAfterUpdate(double largest, bool exact)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Where applying a gradient to the whole shard would leave θ non-finite:
  // the first such key (shard offset) and the value it would get. `read`
  // fills the gradient's next floats in key order. Runs the update on
  // copies, a cache-sized piece at a time (a whole segment when the rule
  // has a ball), so θ is untouched and the verdict is exactly the apply's.
  std::optional<std::pair<size_t, float>> FindNonFiniteResult(
      const std::function<void(absl::Span<float>)>& read)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Closes the open sync round if a rule says so; true when it did.
  bool MaybeCloseRound(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Whether a pull may be answered now (version and SSP bound).
  bool Satisfied(const PullArgs& args) const ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  // Removes the parked pulls that can be answered now.
  std::vector<Completion> TakeSatisfiedPulls()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const ShardOptions options_;
  std::atomic<bool> taking_pushes_{true};
  bool parking_pulls_ ABSL_GUARDED_BY(mutex_) = true;

  mutable absl::Mutex mutex_;
  bool initialized_ ABSL_GUARDED_BY(mutex_) = false;
  std::vector<common::TensorSpec> tensors_ ABSL_GUARDED_BY(mutex_);
  common::KeyRange keys_ ABSL_GUARDED_BY(mutex_);
  std::vector<common::TensorSegment> segments_ ABSL_GUARDED_BY(mutex_);
  std::vector<float> theta_ ABSL_GUARDED_BY(mutex_);
  // Sync: closed rounds. Async: applied pushes.
  uint64_t version_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t samples_applied_ ABSL_GUARDED_BY(mutex_) = 0;
  std::optional<SyncRound> round_ ABSL_GUARDED_BY(mutex_);
  absl::Time round_opened_ ABSL_GUARDED_BY(mutex_);
  // The sync round's mean; in async, a segment's gradient when the rule has
  // a ball.
  std::vector<float> scratch_ ABSL_GUARDED_BY(mutex_);
  // A piece of an async gradient on its way from the request into θ: small
  // enough to stay in cache.
  static constexpr size_t kApplyChunkFloats = 4096;
  std::vector<float> chunk_ ABSL_GUARDED_BY(mutex_);
  // An upper bound on max|θ| (exact after a declaration or a full check):
  // lets most updates skip FindNonFiniteResult's second pass over θ.
  double theta_bound_ ABSL_GUARDED_BY(mutex_) = 0;
  // FindNonFiniteResult's copies of a piece of the gradient and of θ.
  std::vector<float> trial_gradient_ ABSL_GUARDED_BY(mutex_);
  std::vector<float> trial_theta_ ABSL_GUARDED_BY(mutex_);
  Membership members_ ABSL_GUARDED_BY(mutex_);
  uint64_t pushes_applied_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t pushes_duplicate_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t pushes_stale_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t pushes_rejected_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t rounds_closed_all_live_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t rounds_closed_by_quorum_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t rounds_closed_by_timeout_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t max_read_clock_gap_ ABSL_GUARDED_BY(mutex_) = 0;
  std::atomic<PullTicket> next_ticket_{1};
  absl::flat_hash_map<PullTicket, ParkedPull> parked_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace ps::server

#endif  // PS_SERVER_PARAMETER_SHARD_H_
