#ifndef PS_TOOLS_CHAOS_REPLICA_TARGET_H_
#define PS_TOOLS_CHAOS_REPLICA_TARGET_H_

// Which replica of a shard is its primary right now, for a fault that
// targets "server I primary": asked of the replicas themselves
// (ps.v1.Replication/ReplicaStatus) when the fault fires, so it stays right
// after a failover moved the primary.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ps::chaos {

// What one replica said of itself; `answered` false when it did not answer
// (killed, stopped, cut off).
struct ReplicaView {
  bool answered = false;
  bool primary = false;
  uint64_t term = 0;
};

// The replica that says it is the primary in the newest term (an old
// primary that has not heard of its replacement says so in an older term);
// UNAVAILABLE naming `shard` when none does.
absl::StatusOr<uint32_t> PickPrimary(const std::vector<ReplicaView>& replicas,
                                     uint32_t shard);

// Asks each replica (host:port, in replica order) for its ReplicaStatus at
// once, each within `deadline`.
std::vector<ReplicaView> AskReplicas(const std::vector<std::string>& addresses,
                                     absl::Duration deadline);

}  // namespace ps::chaos

#endif  // PS_TOOLS_CHAOS_REPLICA_TARGET_H_
