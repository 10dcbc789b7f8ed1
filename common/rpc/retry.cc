#include "common/rpc/retry.h"

#include <algorithm>

#include "spdlog/spdlog.h"

namespace ps::rpc {

bool IsRetryable(grpc::StatusCode code) {
  // Our clients never cancel their own calls, so CANCELLED comes from a
  // server shutting down under them (gRPC cancels calls still in flight).
  return code == grpc::StatusCode::UNAVAILABLE ||
         code == grpc::StatusCode::CANCELLED ||
         code == grpc::StatusCode::DEADLINE_EXCEEDED ||
         code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
         code == grpc::StatusCode::ABORTED;
}

grpc::Status CallWithRetry(
    const RetryPolicy& policy, const std::string& what,
    const std::function<grpc::Status(grpc::ClientContext&)>& attempt) {
  const absl::Time give_up = absl::Now() + policy.max_retry_time;
  absl::Duration backoff = policy.initial_backoff;
  for (int attempts = 1;; ++attempts) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + policy.rpc_deadline));
    grpc::Status status = attempt(context);
    if (status.ok() || !IsRetryable(status.error_code())) return status;
    if (absl::Now() + backoff > give_up) {
      spdlog::error("{} failed after {} attempts over {}: {}", what, attempts,
                    absl::FormatDuration(policy.max_retry_time),
                    status.error_message());
      return status;
    }
    // The first failures are routine (a peer still starting); say so once
    // they persist.
    if (attempts == 3 || attempts % 20 == 0) {
      spdlog::warn("{} attempt {} failed ({}); retrying", what, attempts,
                   status.error_message());
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, policy.max_backoff);
  }
}

}  // namespace ps::rpc
