#ifndef PS_COMMON_WORKER_RECORD_H_
#define PS_COMMON_WORKER_RECORD_H_

#include <cstdint>

#include "absl/strings/string_view.h"

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

// What a shard knows of one worker, enough for exactly-once pushes and
// resuming after a restore.
struct WorkerRecord {
  uint32_t worker_id = 0;
  uint64_t incarnation = 0;
  uint64_t last_seq = 0;
  uint64_t last_step = 0;
  uint64_t pushes = 0;
  uint64_t clock = 0;
  WorkerState state = WorkerState::kLive;
  bool finished = false;  // it left after its last step (state kLeft then)
};

}  // namespace ps::common

#endif  // PS_COMMON_WORKER_RECORD_H_
