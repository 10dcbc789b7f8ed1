#ifndef PS_SERVER_REPLICATION_SHARD_CHANGE_WIRE_H_
#define PS_SERVER_REPLICATION_SHARD_CHANGE_WIRE_H_

#include "absl/status/statusor.h"
#include "ps/v1/replication.pb.h"
#include "server/parameter_shard.h"
#include "server/replication/replication_log.h"
#include "server/shard_journal.h"

namespace ps::server {

// A logged change as the primary sends it (ps.v1.ShardChange).
void ToProto(const ReplicationLog::Entry& entry, ps::v1::ShardChange* proto);

// The change a ps.v1.ShardChange carries; INVALID_ARGUMENT when it carries
// none (a newer primary's kind of change).
absl::StatusOr<ShardChange> ShardChangeFromProto(
    const ps::v1::ShardChange& proto);

// Makes on `shard` the call `change` records. Its answer is not needed: the
// primary's call got the same one, and the worker saw it there.
void Replay(ParameterShard& shard, const ShardChange& change);

}  // namespace ps::server

#endif  // PS_SERVER_REPLICATION_SHARD_CHANGE_WIRE_H_
