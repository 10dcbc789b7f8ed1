#ifndef PS_SERVER_SHARD_JOURNAL_H_
#define PS_SERVER_SHARD_JOURNAL_H_

#include <cstdint>
#include <variant>

#include "absl/time/time.h"
#include "common/data_partition.h"
#include "server/membership.h"
#include "server/shard_requests.h"

namespace ps::server {

// The calls that change a ParameterShard, with the arguments that decide
// what they do. Replayed in the order recorded, each at the time recorded,
// they change another shard of the same options exactly as they changed
// this one: that is how a backup replica follows its primary
// (server/replication/). Pulls are not here: they change no state that a
// checkpoint holds.
struct RegisterChange {
  uint32_t worker_id = 0;
  uint64_t incarnation = 0;
};
struct HeartbeatChange {
  uint32_t worker_id = 0;
  uint64_t incarnation = 0;
};
struct LeaveChange {
  uint32_t worker_id = 0;
  uint64_t incarnation = 0;
  LeaveReason reason = LeaveReason::kStopped;
};
struct LeasePartitionChange {
  uint32_t worker_id = 0;
  uint64_t incarnation = 0;
  common::PartitionPlan plan;
};
struct TickChange {};
struct RejectedPushChange {};

using ShardChange = std::variant<RegisterChange, HeartbeatChange, LeaveChange,
                                 InitArgs, PushArgs, LeasePartitionChange,
                                 TickChange, RejectedPushChange>;

// Told of every call that may change the shard, under the shard's lock, in
// the order the calls take effect, with the time the call uses as its
// clock. Must not block: the shard's lock is held.
class ShardJournal {
 public:
  virtual ~ShardJournal() = default;
  virtual void Record(absl::Time now, ShardChange change) = 0;
};

}  // namespace ps::server

#endif  // PS_SERVER_SHARD_JOURNAL_H_
