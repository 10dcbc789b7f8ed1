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

  friend bool operator==(const PartitionPlan& a, const PartitionPlan& b) {
    return a.train_size == b.train_size && a.partitions == b.partitions &&
           a.epochs == b.epochs && a.seed == b.seed;
  }
  friend bool operator!=(const PartitionPlan& a, const PartitionPlan& b) {
    return !(a == b);
  }
};

// The most partition slots (epochs × partitions) a plan may have: the
// table's memory stays bounded whatever a request asks for.
inline constexpr uint64_t kMaxPartitionSlots = uint64_t{1} << 24;

// INVALID_ARGUMENT, naming the worker's flags, unless every partition of
// the plan holds at least one example and the table stays bounded.
absl::Status ValidatePartitionPlan(const PartitionPlan& plan);

// Partition `partition`'s examples: a contiguous range of the training
// set's indices, the same in every epoch. Worker and server both call it.
KeyRange PartitionExamples(const PartitionPlan& plan, uint32_t partition);

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
