#ifndef PS_SERVER_SHARD_SNAPSHOT_H_
#define PS_SERVER_SHARD_SNAPSHOT_H_

#include "absl/status/status.h"
#include "common/lr_schedule.h"
#include "common/optimizer.h"
#include "common/theta_file.h"
#include "common/update_rule.h"

namespace ps::server {

// A shard's state as a checkpoint holds it is a common::ThetaFile;
// ParameterShard::Snapshot and ::Restore (server/shard_snapshot.cc) take
// and give it back.

// DATA_LOSS unless `file` holds one keys-sized vector per state name.
absl::Status CheckStateSizes(const common::ThetaFile& file);

// Closes the open sync round that `file` (a checkpoint) holds, as the shard
// would have: the rank-ordered, batch-weighted mean of its gradients applied
// with `update` and the optimizers (`optimizer` and `lr_schedule` for the
// tensors that name none) to θ and the file's optimizer state, the version
// one higher. With no gradient, only the version moves. For a reshard whose
// old shards stopped one round apart, so that every key is restored at the
// same round.
absl::Status CloseSavedRound(const common::UpdateOptions& update,
                             const common::OptimizerOptions& optimizer,
                             const common::LrSchedule& lr_schedule,
                             common::ThetaFile& file);

}  // namespace ps::server

#endif  // PS_SERVER_SHARD_SNAPSHOT_H_
