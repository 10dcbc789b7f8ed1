#ifndef PS_COMMON_RPC_RETRY_H_
#define PS_COMMON_RPC_RETRY_H_

#include <functional>
#include <string>

#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"

namespace ps::rpc {

// Every client call has a deadline and is retried with exponential backoff
// while the failure may be passing (UNAVAILABLE, DEADLINE_EXCEEDED,
// ABORTED, CANCELLED, and RESOURCE_EXHAUSTED from a server's bound on
// waiting pulls); a caller never waits longer than max_retry_time in all.
struct RetryPolicy {
  // Deadline of one attempt. Default: 30 s
  absl::Duration rpc_deadline = absl::Seconds(30);
  // Give up when the next attempt would start after this. Default: 120 s
  absl::Duration max_retry_time = absl::Seconds(120);
  // First pause between attempts, doubled each time. Default: 50 ms
  absl::Duration initial_backoff = absl::Milliseconds(50);
  // Longest pause between attempts: bounds how long a worker idles after
  // its server is back. Default: 1 s
  absl::Duration max_backoff = absl::Seconds(1);
  // Told of every failed attempt that will be retried, with its code (a
  // worker's retry counter). Default: none
  std::function<void(grpc::StatusCode)> on_retry;
};

// Whether `status` may pass by retrying. RESOURCE_EXHAUSTED only with
// reason kTooManyParkedPulls (common/error_info.h): without it gRPC refused
// a request larger than the server reads, which no retry changes.
bool IsRetryable(const grpc::Status& status);

// Runs `attempt` with a fresh ClientContext (deadline set) until it succeeds,
// fails for good, or the policy runs out. `what` names the call in logs.
grpc::Status CallWithRetry(
    const RetryPolicy& policy, const std::string& what,
    const std::function<grpc::Status(grpc::ClientContext&)>& attempt);

// Waits, under the same policy, until the host of `target` ("host:port" or
// "[v6]:port") resolves. gRPC retries a name that does not resolve yet (a
// pod not scheduled yet, a container still starting) after a backoff that
// grows to 2 minutes, so a channel made too early kept a worker idle long
// after the name appeared (7 s after a 15 s wait, measured).
grpc::Status WaitUntilResolvable(const RetryPolicy& policy,
                                 const std::string& target);

}  // namespace ps::rpc

#endif  // PS_COMMON_RPC_RETRY_H_
