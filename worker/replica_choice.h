#ifndef PS_WORKER_REPLICA_CHOICE_H_
#define PS_WORKER_REPLICA_CHOICE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "grpcpp/support/status.h"

namespace ps::worker {

// Which replica of a shard a worker's next attempt goes to, after an
// attempt on replica `tried` answered `status` (README, "Replicated
// shards": how workers find the primary). Pure, so the rule is tested
// without servers.
struct ReplicaChoice {
  // The replica for the next attempt.
  uint32_t next = 0;
  // True: `next` is the primary a backup named; try it at once.
  bool redirected = false;
  // True: a backup names the replica that did not answer; it is taking
  // over or will. Ask it again soon.
  bool awaiting_failover = false;
  // What the caller's retry loop sees for this attempt.
  grpc::Status status;
};

// - A backup's NOT_PRIMARY naming another listed replica: go there at once,
//   unless that replica was the last one found unreachable
//   (`unreachable`): the backup has not noticed its primary died yet, so
//   stay, and retry it after the usual backoff (UNAVAILABLE) while it
//   takes over. A backup naming no primary: the same while a replica was
//   found unreachable lately (`unreachable` set: a failover is under way),
//   else the next replica (this one may be cut off from a primary that
//   lives).
// - A failure that may pass (rpc::IsRetryable: a dead or stopped server):
//   the next replica in the list.
// - Anything else, or a shard with one replica: unchanged.
ReplicaChoice ChooseReplica(const std::vector<std::string>& replicas,
                            uint32_t tried, std::optional<uint32_t> unreachable,
                            const grpc::Status& status);

}  // namespace ps::worker

#endif  // PS_WORKER_REPLICA_CHOICE_H_
