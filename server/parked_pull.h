#ifndef PS_SERVER_PARKED_PULL_H_
#define PS_SERVER_PARKED_PULL_H_

#include <optional>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/parameter_shard.h"
#include "server/server_metrics.h"

namespace ps::server {

// The reactors' way into ParameterShard::Pull: runs `complete` exactly once
// with the pull's answer, now or later on the thread that ends its wait (a
// push, the expiry ticker, CancelPull with `ticket`), and counts the pull
// as parked in `metrics` until then (`complete` calls ParkedPullEnded).
template <typename Complete>
void StartParkedPull(ParameterShard& shard, ServerMetrics& metrics,
                     const PullArgs& args, absl::Time expires,
                     ParameterShard::PullTicket ticket, Complete complete) {
  metrics.PullParked();
  std::optional<absl::StatusOr<PullResult>> ready =
      shard.Pull(args, expires, ticket, complete);
  if (ready.has_value()) complete(std::move(*ready));
}

}  // namespace ps::server

#endif  // PS_SERVER_PARKED_PULL_H_
