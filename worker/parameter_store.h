#ifndef PS_WORKER_PARAMETER_STORE_H_
#define PS_WORKER_PARAMETER_STORE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/data_partition.h"
#include "common/table_spec.h"
#include "common/tensor_spec.h"
#include "ps/v1/parameter_server.pb.h"

namespace ps::worker {

// What the servers told a worker when it declared the model.
struct ClusterInfo {
  ps::v1::ConsistencyMode mode = ps::v1::MODE_UNSPECIFIED;  // on all shards
  uint32_t expected_workers = 0;  // the same on all shards
  uint64_t version = 0;           // lowest shard version
};

// What the servers said before this worker registered.
struct JobSurvey {
  // Every worker the servers expect (ids 0 to expected_workers-1) left
  // after its last step, on every shard: the job is complete.
  bool complete = false;
  uint32_t expected_workers = 0;  // shard 0's
  uint64_t version = 0;           // lowest shard version
};

struct PullInfo {
  uint64_t version = 0;          // lowest shard version
  uint64_t samples_applied = 0;  // as counted by shard 0
  // The longest any shard held this pull before answering (its sync round
  // or the SSP staleness bound): the part of the call spent waiting, as
  // the shards are asked in parallel.
  double waited_seconds = 0;
};

// What the servers did with this worker's pushes, one count per shard push
// (a push sent again after a lost reply counts once, as what its first
// arrival did).
struct PushCounts {
  // Applied, or held for the open sync round; also a push answered
  // DUPLICATE after it was sent more than once: the server took an earlier
  // attempt whose reply was lost.
  uint64_t applied_or_accepted = 0;
  uint64_t stale = 0;         // dropped: the sync round had closed
  uint64_t duplicate = 0;     // the server had it before this call sent it
  uint64_t reregistered = 0;  // a lease had expired meanwhile
  // Completions shard 0 did not record: the partition had gone to another
  // worker (PushResponse.completion_skipped).
  uint64_t completions_skipped = 0;
  // Push and PushPull calls, and the bytes of their requests to every
  // shard (one attempt each): what a step costs on the wire going out.
  uint64_t pushes = 0;
  uint64_t push_request_bytes = 0;
};

// One sparse table's rows for a batch: the ids a batch touches (each once,
// in any order) and their rows, ids.size() × dim floats in the order of
// `ids`: the rows pulled, or the mean gradient rows to push.
struct SparseBatch {
  uint32_t table = 0;  // index in the declaration's tables
  std::vector<uint64_t> ids;
  std::vector<float> values;
};

// What a worker's training loop needs from the servers: the job's θ,
// its membership, and the rules of the servers' consistency mode. The
// store, which hears the mode in every answer, alone decides what a pull
// waits for; the trainer says only which step it is at. ParameterClient is
// the store over gRPC; tests drive the trainer with an in-memory one.
class ParameterStore {
 public:
  virtual ~ParameterStore() = default;

  // Before registering: whether the job is complete already, and fails when
  // this worker cannot train against these servers (see ParameterClient).
  virtual absl::StatusOr<JobSurvey> Survey() = 0;
  // Joins the job; returns the step to resume at (0 for a new worker).
  virtual absl::StatusOr<uint64_t> Register() = 0;
  // Declares the model with `initial` θ (the first declaration wins).
  virtual absl::StatusOr<ClusterInfo> Init(
      const std::vector<common::TensorSpec>& tensors,
      absl::Span<const float> initial) = 0;
  // Fills `theta` with θ to compute step `step` (the worker's steps so far)
  // from, waiting as the mode requires: sync, for the round after the last
  // one pulled (the round open at Init, first); SSP, until every live
  // worker is within the staleness bound of `step`; async, not at all.
  virtual absl::StatusOr<PullInfo> Pull(uint64_t step,
                                        absl::Span<float> theta) = 0;
  // Sends step `step`'s mean gradient of `batch_size` examples.
  virtual absl::Status Push(uint64_t step, uint32_t batch_size,
                            absl::Span<const float> gradient) = 0;
  // Push(step, …), then Pull(step + 1, theta), in one round trip.
  virtual absl::StatusOr<PullInfo> PushPull(uint64_t step, uint32_t batch_size,
                                            absl::Span<const float> gradient,
                                            absl::Span<float> theta) = 0;
  // After a Push (not a PushPull): θ once that push is in it as far as the
  // mode promises: sync, the round it completed; otherwise, the servers' θ
  // now (no staleness wait: the others may have finished long ago).
  virtual absl::StatusOr<PullInfo> PullFinal(absl::Span<float> theta) = 0;
  // Leaves the job, saying why (a finished worker is recorded as such).
  virtual absl::Status Leave(
      ps::v1::LeaveRequest::Reason reason = ps::v1::LeaveRequest::STOPPED) = 0;
  // Waits, at most `timeout`, until workers 0 to `num_workers`-1 have all
  // registered and none is live any more.
  virtual absl::Status WaitForOtherWorkers(uint32_t num_workers,
                                           absl::Duration timeout) = 0;

  // Data partitions (ps_worker --data_partitions): the next partition this
  // worker trains, from shard 0's table, the first lease declaring `plan`
  // (see ps.v1.LeasePartitionRequest). A granted range is checked against
  // common::PartitionExamples. Stores without partitions answer
  // UNIMPLEMENTED.
  virtual absl::StatusOr<ps::v1::LeasePartitionResponse> LeasePartition(
      const common::PartitionPlan& plan);
  // The next push (Push, PushPull or their sparse forms) reports `done` to
  // shard 0 as completed by it, retried with it, and is then forgotten.
  virtual void CompleteWithNextPush(const ps::v1::PartitionDone& done);
  // Partitions done over all epochs, as shard 0 says now (its Status).
  virtual absl::StatusOr<uint64_t> PartitionsDone();
  // Tells every shard this worker has no partition to train for now
  // (LeaveRequest.IDLE): it stays in the job, its heartbeats go on, and no
  // round waits for it until its next push.
  virtual absl::Status Idle();

  // A model with sparse tables (see ParameterClient): the same calls with
  // the batch's rows beside θ. Stores without tables answer UNIMPLEMENTED.
  virtual absl::StatusOr<ClusterInfo> InitSparse(
      const std::vector<common::TensorSpec>& tensors,
      const std::vector<common::TableSpec>& tables, uint64_t model_seed,
      absl::Span<const float> initial);
  // Pull(step, theta), and fills each batch's values with its ids' rows.
  virtual absl::StatusOr<PullInfo> PullSparse(uint64_t step,
                                              absl::Span<float> theta,
                                              std::vector<SparseBatch>& rows);
  // Push(step, …) with each batch's values as its ids' gradient rows: one
  // update with the dense gradient, all or nothing, exactly once.
  virtual absl::Status PushSparse(uint64_t step, uint32_t batch_size,
                                  absl::Span<const float> gradient,
                                  const std::vector<SparseBatch>& gradients);
  // PushSparse(step, …), then PullSparse(step + 1, theta, rows), in one
  // round trip.
  virtual absl::StatusOr<PullInfo> PushPullSparse(
      uint64_t step, uint32_t batch_size, absl::Span<const float> gradient,
      const std::vector<SparseBatch>& gradients, absl::Span<float> theta,
      std::vector<SparseBatch>& rows);
  // PullFinal(theta), and fills each batch's values with its ids' rows.
  virtual absl::StatusOr<PullInfo> PullFinalSparse(
      absl::Span<float> theta, std::vector<SparseBatch>& rows);
  // The rows each shard's tables hold now, in shard order (the servers'
  // Status). Stores without tables answer UNIMPLEMENTED.
  virtual absl::StatusOr<std::vector<uint64_t>> RowsPerShard();

  virtual const PushCounts& push_counts() const = 0;
  // The servers' mode as the latest answer said it (MODE_UNSPECIFIED
  // before any answer).
  virtual ps::v1::ConsistencyMode mode() const = 0;
  virtual size_t num_shards() const = 0;
};

inline absl::StatusOr<ps::v1::LeasePartitionResponse>
ParameterStore::LeasePartition(const common::PartitionPlan&) {
  return absl::UnimplementedError("this parameter store has no partitions");
}
inline absl::Status ParameterStore::Idle() {
  return absl::UnimplementedError("this parameter store has no partitions");
}
inline void ParameterStore::CompleteWithNextPush(const ps::v1::PartitionDone&) {
}
inline absl::StatusOr<uint64_t> ParameterStore::PartitionsDone() {
  return absl::UnimplementedError("this parameter store has no partitions");
}

inline absl::StatusOr<ClusterInfo> ParameterStore::InitSparse(
    const std::vector<common::TensorSpec>&,
    const std::vector<common::TableSpec>&, uint64_t, absl::Span<const float>) {
  return absl::UnimplementedError("this parameter store has no sparse tables");
}
inline absl::StatusOr<PullInfo> ParameterStore::PullSparse(
    uint64_t, absl::Span<float>, std::vector<SparseBatch>&) {
  return absl::UnimplementedError("this parameter store has no sparse tables");
}
inline absl::Status ParameterStore::PushSparse(
    uint64_t, uint32_t, absl::Span<const float>,
    const std::vector<SparseBatch>&) {
  return absl::UnimplementedError("this parameter store has no sparse tables");
}
inline absl::StatusOr<PullInfo> ParameterStore::PushPullSparse(
    uint64_t, uint32_t, absl::Span<const float>,
    const std::vector<SparseBatch>&, absl::Span<float>,
    std::vector<SparseBatch>&) {
  return absl::UnimplementedError("this parameter store has no sparse tables");
}
inline absl::StatusOr<PullInfo> ParameterStore::PullFinalSparse(
    absl::Span<float>, std::vector<SparseBatch>&) {
  return absl::UnimplementedError("this parameter store has no sparse tables");
}
inline absl::StatusOr<std::vector<uint64_t>> ParameterStore::RowsPerShard() {
  return absl::UnimplementedError("this parameter store has no sparse tables");
}

}  // namespace ps::worker

#endif  // PS_WORKER_PARAMETER_STORE_H_
