#ifndef PS_SERVER_SHARD_SNAPSHOT_H_
#define PS_SERVER_SHARD_SNAPSHOT_H_

#include "absl/status/status.h"
#include "common/theta_file.h"
#include "common/update_rule.h"

namespace ps::server {

// A shard's state as a checkpoint holds it is a common::ThetaFile;
// ParameterShard::Snapshot and ::Restore (server/shard_snapshot.cc) take
// and give it back.

// Closes the open sync round that `file` (a checkpoint) holds, as the shard
// would have: the rank-ordered, batch-weighted mean of its gradients applied
// with `update`, the version one higher. With no gradient, only the version
// moves. For a reshard whose old shards stopped one round apart, so that
// every key is restored at the same round.
absl::Status CloseSavedRound(const common::UpdateOptions& update,
                             common::ThetaFile& file);

}  // namespace ps::server

#endif  // PS_SERVER_SHARD_SNAPSHOT_H_
