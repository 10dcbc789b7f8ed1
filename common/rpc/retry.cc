#include "common/rpc/retry.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/error_info.h"
#include "common/rpc/convert.h"
#include "spdlog/spdlog.h"

namespace ps::rpc {

bool IsRetryable(const grpc::Status& status) {
  const grpc::StatusCode code = status.error_code();
  if (code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
    return common::HasErrorReason(FromGrpcStatus(status),
                                  common::kTooManyParkedPulls);
  }
  // Our clients never cancel their own calls, so CANCELLED comes from a
  // server shutting down under them (gRPC cancels calls still in flight).
  return code == grpc::StatusCode::UNAVAILABLE ||
         code == grpc::StatusCode::CANCELLED ||
         code == grpc::StatusCode::DEADLINE_EXCEEDED ||
         code == grpc::StatusCode::ABORTED;
}

grpc::Status CallWithRetry(
    const RetryPolicy& policy, const std::string& what,
    const std::function<grpc::Status(grpc::ClientContext&)>& attempt) {
  const absl::Time start = absl::Now();
  const absl::Time give_up = start + policy.max_retry_time;
  absl::Duration backoff = policy.initial_backoff;
  for (int attempts = 1;; ++attempts) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + policy.rpc_deadline));
    grpc::Status status = attempt(context);
    if (status.ok() || !IsRetryable(status)) return status;
    if (absl::Now() + backoff > give_up) {
      // The time it took, which one long attempt can make more than
      // max_retry_time.
      spdlog::error("{} failed after {} attempt{} in {}: {}", what, attempts,
                    attempts == 1 ? "" : "s",
                    absl::FormatDuration(absl::Trunc(absl::Now() - start,
                                                     absl::Milliseconds(100))),
                    status.error_message());
      return status;
    }
    // The first failures are routine (a peer still starting); say so once
    // they persist.
    if (attempts == 3 || attempts % 20 == 0) {
      spdlog::warn("{} attempt {} failed ({}); retrying", what, attempts,
                   status.error_message());
    }
    if (policy.on_retry) policy.on_retry(status.error_code());
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, policy.max_backoff);
  }
}

grpc::Status WaitUntilResolvable(const RetryPolicy& policy,
                                 const std::string& target) {
  std::string host = target.substr(0, target.rfind(':'));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return CallWithRetry(
      policy, absl::StrCat("Resolve ", host), [&](grpc::ClientContext&) {
        addrinfo hints = {};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* found = nullptr;
        const int error = getaddrinfo(host.c_str(), nullptr, &hints, &found);
        if (error == 0) {
          freeaddrinfo(found);
          return grpc::Status::OK;
        }
        return grpc::Status(
            grpc::StatusCode::UNAVAILABLE,
            absl::StrCat("server name ", host,
                         " does not resolve yet: ", gai_strerror(error)));
      });
}

}  // namespace ps::rpc
