#ifndef PS_COMMON_THETA_FILE_H_
#define PS_COMMON_THETA_FILE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/consistency_mode.h"
#include "common/data_partition.h"
#include "common/key_range.h"
#include "common/table_spec.h"
#include "common/tensor_spec.h"
#include "common/update_rule.h"
#include "common/worker_record.h"

namespace ps::common {

// One table's rows of a sparse gradient: each id once, increasing.
struct TableRows {
  uint32_t table = 0;         // index in ThetaFile::tables
  std::vector<uint64_t> ids;  // increasing
  std::vector<float> rows;    // ids.size() × the table's dim
};

// A gradient a sync round holds but has not applied yet.
struct RoundGradient {
  uint32_t worker_id = 0;
  uint32_t batch_size = 0;
  std::vector<float> values;      // over `keys`
  std::vector<TableRows> tables;  // its sparse rows, by increasing table
};

// A sparse table's stored rows on a shard (or, in an export, on all shards),
// with what a restored shard needs to go on bit for bit: each row's
// optimizer state and its place in the eviction order. Initial values are
// not stored: they follow from the model seed, the table's index and the id.
struct SavedTable {
  TableSpec spec;
  // The state vectors its optimizer keeps (OptimizerStateNames), in that
  // order; empty in an export.
  std::vector<std::string> state_names;
  std::vector<uint64_t> ids;  // increasing
  // ids.size() × dim × (1 + state_names.size()) floats: per row, its θ,
  // then each state vector.
  std::vector<float> rows;
  // Per row, its place in the eviction order: 0 is the least recently
  // updated. Empty in an export.
  std::vector<uint64_t> recency;
  // The table's counters (created, evicted, refused) as Status shows them.
  uint64_t created = 0;
  uint64_t evicted = 0;
  uint64_t refused = 0;

  size_t stride() const { return size_t{spec.dim} * (1 + state_names.size()); }
};

// The settings that decide what a push does to θ, as the server that wrote
// a checkpoint ran with them: a restart with other ones must be deliberate.
struct RuleSettings {
  UpdateOptions update;
  uint32_t sync_quorum = 0;
  uint32_t staleness = 0;
};

// One self-describing file of θ: a shard's checkpoint (its key range plus
// the server state that must survive a restart) or a whole exported model
// (keys [0, D), no server state). One format for both, so an export is a
// checkpoint of one shard and either can seed a model. A file without
// tensors or tables holds only a shard's workers before its model is
// declared: what a joining backup is sent then.
struct ThetaFile {
  std::vector<TensorSpec> tensors;  // the whole model's declaration
  KeyRange keys;                    // the part of [0, D) held here
  uint32_t shard_index = 0;
  uint32_t num_shards = 1;
  std::optional<ConsistencyMode> mode;  // absent in an export
  uint64_t version = 0;
  uint64_t samples_applied = 0;
  std::vector<float> values;  // θ[keys]
  // The server's --optimizer (OptimizerSpecString) and --lr_schedule
  // (LrScheduleString) in a checkpoint; a tensor's own are in `tensors`.
  std::string optimizer = "sgd";
  std::string lr_schedule = "constant";
  // The optimizers' per-key state (common/optimizer.h), one vector per name
  // that any tensor's optimizer keeps ("velocity", "accumulator", "m", "v",
  // "z", "n", in that order), each over all of `keys`: 0 at the keys of
  // tensors whose optimizer keeps no such state (momentum and nesterov
  // share "velocity", adam and adamw "m" and "v"). Plain SGD has none. An
  // export carries none: a model, not a training run's state.
  std::vector<std::string> state_names;
  std::vector<std::vector<float>> state;  // each over `keys`
  std::vector<WorkerRecord> workers;
  std::vector<RoundGradient> round;  // sync: the open round
  // Absent in exports and in files written before format 2.
  std::optional<RuleSettings> rules;
  // Format 5: the model's sparse tables (declaration order) and the seed of
  // their rows' initial values.
  uint64_t model_seed = 0;
  std::vector<SavedTable> tables;
  // Format 6: shard 0's data partition table, once a worker leased one.
  std::optional<SavedPartitions> partitions;
};

// The bytes of a file: magic, header, float32 data, CRC-32 of all of it.
// Always format 6 ("PSTHETA6": format 5 and, at its end, the data partition
// table if the file has one); format 5 appended the model seed, the
// tables with their rows in id order, and the open round's sparse rows to
// format 4;
// format 4 appended each tensor's optimizer and schedule and the server's
// schedule to format 3, which wrote the mode and each worker's state as enum
// codes where format 2 had the mode's name and a live/finished byte.
// DecodeThetaFile reads formats 1 ("PSTHETA1", no rule settings) to 6.
std::string EncodeThetaFile(const ThetaFile& file);

// Checks magic, every length, the checksum, and that every value is finite:
// a truncated, padded or corrupted file, or one holding a NaN or infinity,
// is DATA_LOSS naming `source` and what is wrong.
absl::StatusOr<ThetaFile> DecodeThetaFile(absl::string_view bytes,
                                          absl::string_view source);

// Atomic and durable (see WriteFileAtomically).
absl::Status WriteThetaFile(const std::string& path, const ThetaFile& file);
absl::StatusOr<ThetaFile> ReadThetaFile(const std::string& path);

}  // namespace ps::common

#endif  // PS_COMMON_THETA_FILE_H_
