#ifndef PS_SERVER_PARKED_PULL_H_
#define PS_SERVER_PARKED_PULL_H_

#include <memory>
#include <optional>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/parameter_shard.h"
#include "server/replication/replicator.h"
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

// Runs `answer` with a pull's `result`; on a replicated shard (`replicator`
// not null) only once every live backup holds the changes θ was read
// after, so that a worker that saw a round close finds it closed on
// whichever replica takes over.
template <typename Answer>
void AnswerWhenReplicated(Replicator* replicator,
                          absl::StatusOr<PullResult> result, Answer answer) {
  if (replicator == nullptr || !result.ok()) {
    answer(std::move(result));
    return;
  }
  auto held = std::make_shared<PullResult>(*std::move(result));
  replicator->WhenReplicated(
      [held, answer = std::move(answer)](absl::Status replicated) mutable {
        if (replicated.ok()) {
          answer(std::move(*held));
        } else {
          answer(std::move(replicated));
        }
      });
}

}  // namespace ps::server

#endif  // PS_SERVER_PARKED_PULL_H_
