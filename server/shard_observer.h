#ifndef PS_SERVER_SHARD_OBSERVER_H_
#define PS_SERVER_SHARD_OBSERVER_H_

#include <cstdint>

#include "absl/time/time.h"
#include "server/consistency_policy.h"

namespace ps::server {

// Events inside a ParameterShard that a snapshot cannot show, each with a
// value that belongs in a histogram (the metrics). Called under the shard's
// lock: an implementation only records, quickly, and never calls the shard.
class ShardObserver {
 public:
  virtual ~ShardObserver() = default;
  // Sync: a round closed `why`, after being open (able to close) `open_for`.
  virtual void RoundClosed(RoundClose why, absl::Duration open_for) = 0;
  // Async and SSP: a push was applied `staleness` versions after the θ it
  // was computed from (version − its base_version).
  virtual void PushApplied(uint64_t staleness) = 0;
};

}  // namespace ps::server

#endif  // PS_SERVER_SHARD_OBSERVER_H_
