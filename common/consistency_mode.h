#ifndef PS_COMMON_CONSISTENCY_MODE_H_
#define PS_COMMON_CONSISTENCY_MODE_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ps::common {

// How a shard applies pushes. Servers, checkpoints and the wire
// (ps.v1.ConsistencyMode, common/rpc/convert.h) share it.
enum class ConsistencyMode {
  // Bulk-synchronous: a round closes when every expected worker has pushed;
  // the update uses the rank-ordered, batch-weighted mean.
  kSync,
  // Every push is applied as it arrives.
  kAsync,
  // Stale synchronous parallel: pushes apply as they arrive; a worker at
  // clock c may read only once every live worker reached c − staleness.
  kSsp,
};

// "sync", "async", "ssp": the words of --mode, logs and psctl.
absl::StatusOr<ConsistencyMode> ParseConsistencyMode(absl::string_view name);
absl::string_view ConsistencyModeName(ConsistencyMode mode);

}  // namespace ps::common

#endif  // PS_COMMON_CONSISTENCY_MODE_H_
