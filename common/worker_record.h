#ifndef PS_COMMON_WORKER_RECORD_H_
#define PS_COMMON_WORKER_RECORD_H_

#include <cstdint>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace ps::common {

// Where a worker id stands with a shard. Membership, checkpoints and the
// wire (ps.v1.WorkerState, common/rpc/convert.h) share it.
enum class WorkerState {
  kLive,     // registered, lease running: counts toward rounds
  kExpired,  // its lease ran out
  kLeft,     // it said it was done (finished, stopped, or failed to start)
};

// "live", "expired", "left": the words of logs and psctl.
absl::string_view WorkerStateName(WorkerState state);

// What a shard knows of one worker id: the one shape membership, the
// shard's Status, checkpoints (the fields up to `late`) and the wire
// (rpc::ToProto) share.
struct WorkerRecord {
  uint32_t worker_id = 0;
  uint64_t incarnation = 0;
  // Exactly-once bookkeeping of this incarnation's pushes.
  uint64_t last_seq = 0;
  uint64_t last_step = 0;
  uint64_t pushes = 0;
  // Steps this worker id completed, across its processes: its last
  // accepted step + 1. The SSP clock, and where a restart resumes.
  uint64_t clock = 0;
  WorkerState state = WorkerState::kLive;
  // Left after its last step; cleared when a new incarnation registers.
  bool finished = false;
  // Live but waiting for a data partition (LeaveReason::kIdle): counts
  // toward no round until its next push. Checkpointed, so that a shard
  // restored (or a backup joined) while a worker waits does not wait for it.
  bool idle = false;
  // Sync: its push came after its round closed here, so the open round
  // does not wait for it (SyncRound::MarkLate). Checkpointed, so that a
  // backup that joins mid-round closes that round as its primary does.
  bool late = false;

  // Kept by a running shard only, not in checkpoints:
  bool registered = false;
  uint32_t registrations = 0;
  // This incarnation is the first the shard saw of the id (not restored,
  // not a restart): a start that fails is then forgotten altogether.
  bool first_seen = false;
  absl::Time lease_expires = absl::UnixEpoch();
  absl::Time last_heartbeat = absl::UnixEpoch();
};

}  // namespace ps::common

#endif  // PS_COMMON_WORKER_RECORD_H_
