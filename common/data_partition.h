#ifndef PS_COMMON_DATA_PARTITION_H_
#define PS_COMMON_DATA_PARTITION_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/key_range.h"

namespace ps::common {

// How a job cuts its training set into partitions that workers lease from
// shard 0 (server/partition_table.h). Declared by the first worker that
// leases; a worker that disagrees is refused, as a model declaration is.
struct PartitionPlan {
  // Examples in the training set.
  uint64_t train_size = 0;
  // Partitions per epoch (ps_worker --data_partitions).
  uint32_t partitions = 0;
  // Passes over the training set.
  uint32_t epochs = 0;
  // Seeds each epoch's order of the partitions.
  uint64_t seed = 0;
  // k-fold cross-validation (ps_worker --kfold, --fold): partition p is in
  // fold p mod kfold, and fold `fold`'s partitions are held out: never
  // leased, never trained, the worker's validation set. 0: no folds.
  uint32_t kfold = 0;
  uint32_t fold = 0;

  friend bool operator==(const PartitionPlan& a, const PartitionPlan& b) {
    return a.train_size == b.train_size && a.partitions == b.partitions &&
           a.epochs == b.epochs && a.seed == b.seed && a.kfold == b.kfold &&
           a.fold == b.fold;
  }
  friend bool operator!=(const PartitionPlan& a, const PartitionPlan& b) {
    return !(a == b);
  }
};

// The most partition slots (epochs × partitions) a plan may have: the
// table's memory stays bounded whatever a request asks for.
inline constexpr uint64_t kMaxPartitionSlots = uint64_t{1} << 24;

// INVALID_ARGUMENT, naming the worker's flags, unless every partition of
// the plan holds at least one example, the table stays bounded, and a
// k-fold plan has K >= 2 folds of at least one partition, I < K.
absl::Status ValidatePartitionPlan(const PartitionPlan& plan);

// Partition `partition`'s examples: a contiguous range of the training
// set's indices, the same in every epoch. Worker and server both call it.
KeyRange PartitionExamples(const PartitionPlan& plan, uint32_t partition);

// Whether `partition` is in the held-out fold. Folds are fixed for the
// whole job (a fold that changed per epoch would train on its own
// validation examples) and interleaved (fold p mod K, not a contiguous
// block of partitions), so each fold samples the whole training file.
bool HeldOut(const PartitionPlan& plan, uint32_t partition);

// Partitions that are leased and trained in each epoch: all of them but
// the held-out fold's. The job's epochs done are the partitions done over
// this.
uint32_t TrainablePartitions(const PartitionPlan& plan);

// The held-out fold's examples, partition by partition in order; empty
// without folds.
std::vector<KeyRange> HeldOutExamples(const PartitionPlan& plan);

// Where one (epoch, partition) stands.
enum class PartitionState : uint8_t {
  kFree = 0,    // nobody holds it
  kLeased = 1,  // held by (worker_id, incarnation)
  kDone = 2,    // its completion was acknowledged: never leased again
};

// "free", "leased", "done".
absl::string_view PartitionStateName(PartitionState state);

struct PartitionRecord {
  PartitionState state = PartitionState::kFree;
  // The holder while leased; the worker that completed it once done.
  uint32_t worker_id = 0;
  uint64_t incarnation = 0;

  friend bool operator==(const PartitionRecord& a, const PartitionRecord& b) {
    return a.state == b.state && a.worker_id == b.worker_id &&
           a.incarnation == b.incarnation;
  }
};

// A partition table as shard 0's checkpoint holds it.
struct SavedPartitions {
  PartitionPlan plan;
  // epochs × partitions, epoch-major: record of (e, p) at e·partitions + p.
  std::vector<PartitionRecord> records;
};

}  // namespace ps::common

#endif  // PS_COMMON_DATA_PARTITION_H_
