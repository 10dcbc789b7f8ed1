#include "common/worker_record.h"

namespace ps::common {

absl::string_view WorkerStateName(WorkerState state) {
  switch (state) {
    case WorkerState::kLive:
      return "live";
    case WorkerState::kExpired:
      return "expired";
    case WorkerState::kLeft:
      return "left";
  }
  return "unknown";
}

}  // namespace ps::common
