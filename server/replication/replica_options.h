#ifndef PS_SERVER_REPLICATION_REPLICA_OPTIONS_H_
#define PS_SERVER_REPLICATION_REPLICA_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace ps::server {

// One shard's replicas (README, "Replicated shards"): ps_server's
// --replicas, --replica_index and --replica_peers.
struct ReplicaOptions {
  // The shard's replicas, this one included, as host:port in a fixed order:
  // replica 0 is the primary. Fewer than two: no replication. Default: none
  std::vector<std::string> peers;
  // This server's place in `peers`. Default: 0
  uint32_t replica_index = 0;
  // Longest an Apply (a batch of changes) may take, and the pause between
  // a backup's retries. Default: 500 ms
  absl::Duration rpc_deadline = absl::Milliseconds(500);
  // A backup that acknowledged nothing for this long while changes waited
  // is dropped from the replicas a write waits for. Default: 1 s
  absl::Duration drop_after = absl::Seconds(1);
  // Longest a Join (the state's transfer) may take. Default: 30 s
  absl::Duration join_deadline = absl::Seconds(30);
  // An idle backup is sent an empty Apply this often, so it knows its
  // primary lives. Default: 100 ms
  absl::Duration heartbeat_every = absl::Milliseconds(100);

  // A backup that heard nothing from its primary for this long (no Apply,
  // no heartbeat) holds an election (README, "Replicated shards"). Longer
  // than heartbeat_every, shorter than drop_after. Default: 300 ms
  absl::Duration failover_timeout = absl::Milliseconds(300);
  // A directory where this replica keeps the vote it gave (VoteStore), so
  // that it never votes twice in a term, even across a restart. Empty: a
  // replica gives no vote until this process has followed a primary
  // (README, "Elections"). Default: none
  std::string state_dir;
  // A witness (README, "A witness for two replicas"): a replica that holds
  // no θ, is told only which changes are committed, votes, and never
  // stands for election. Not replica 0; three replicas or more.
  // Default: false
  bool witness = false;

  bool replicated() const { return peers.size() >= 2; }
};

// INVALID_ARGUMENT naming the flag when the options cannot work.
absl::Status ValidateReplicaOptions(const ReplicaOptions& options);

}  // namespace ps::server

#endif  // PS_SERVER_REPLICATION_REPLICA_OPTIONS_H_
