#ifndef PS_SERVER_SHARD_REQUESTS_H_
#define PS_SERVER_SHARD_REQUESTS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/time/time.h"
#include "common/consistency_mode.h"
#include "common/key_range.h"
#include "common/table_spec.h"
#include "common/tensor_spec.h"
#include "server/partition_table.h"

namespace ps::server {

// What ParameterShard's calls take and answer: the service converts them
// from and to the wire (server/wire_messages.h).

using common::ConsistencyMode;

// One table's rows by key, as on the wire (ps.v1.SparseRows): keys as
// little-endian uint64 bytes, values as float32 bytes (empty in a pull).
struct SparseRows {
  std::string table;
  std::string keys;
  std::string values;
};

struct InitArgs {
  uint32_t worker_id = 0;
  uint32_t shard_index = 0;
  uint32_t num_shards = 0;
  std::vector<common::TensorSpec> tensors;
  absl::Cord values;  // float32 bytes of this shard's keys
  std::vector<common::TableSpec> tables;
  uint64_t model_seed = 0;  // seeds the tables' initial rows
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
  common::KeyRange keys;           // empty: the whole shard
  uint64_t clock = 0;              // SSP: the caller's clock
  std::vector<SparseRows> sparse;  // rows to read (keys only)
  // Answer with θ shared (PullResult::shared_theta) instead of copied into
  // `values`: a streamed pull, which sends it a chunk at a time.
  bool share_values = false;
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
  // With PullArgs::share_values, in place of `values`: the shard's whole
  // θ at this version, unchanged while held (updates copy it), with
  // `keys` starting at index shared_begin; read through
  // ParameterShard::ReadShared.
  std::shared_ptr<const std::vector<float>> shared_theta;
  uint64_t shared_begin = 0;
  // How long the pull was parked before this answer; zero if it was not.
  absl::Duration waited;
  std::vector<SparseRows> sparse;  // the rows asked for, in the order asked
};

// A data partition of one epoch (server/partition_table.h).
struct PartitionRef {
  uint32_t epoch = 0;
  uint32_t partition = 0;
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
  std::vector<SparseRows> sparse;  // gradient rows per table
  // Shard 0: the partition this push completes, if it does.
  std::optional<PartitionRef> completes;
};

enum class PushOutcome { kApplied, kAccepted, kDuplicate, kStale };

struct PushResult {
  PushOutcome outcome = PushOutcome::kApplied;
  uint64_t version = 0;
  // The push's `completes` named a partition this worker no longer holds:
  // the gradient counted, the completion was not recorded.
  bool completion_skipped = false;
};

// What LeasePartition answers: the grant and how many partitions (all
// epochs) are done.
struct PartitionLease {
  PartitionTable::Grant grant;
  uint64_t partitions_done = 0;
};
}  // namespace ps::server

#endif  // PS_SERVER_SHARD_REQUESTS_H_
