#ifndef PS_COMMON_ERROR_INFO_H_
#define PS_COMMON_ERROR_INFO_H_

#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

// Why a call failed, for a program to act on: the reasons a status carries
// beside its message. On the wire they are google.rpc.ErrorInfo in the
// status details (common/rpc/convert.cc); callers compare reasons, never
// messages.
namespace ps::common {

// The domain of our reasons (ErrorInfo.domain).
inline constexpr char kErrorDomain[] = "ps.v1";

// The server no longer knows this worker's incarnation (lease expired,
// never registered, replaced, left): register again, then retry. Sent with
// FAILED_PRECONDITION and metadata {"shard": "<shard index>"}.
inline constexpr char kRegistrationRequired[] = "REGISTRATION_REQUIRED";

// A server's bound on waiting pulls (--max_parked_pulls, or the most one
// worker id may hold) is full: it passes as parked pulls end, so clients
// retry with backoff. Sent with RESOURCE_EXHAUSTED and metadata
// {"bound": "total" or "per_worker"}. A RESOURCE_EXHAUSTED without it is
// gRPC's own (a request larger than the server reads): retrying the same
// request cannot help.
inline constexpr char kTooManyParkedPulls[] = "TOO_MANY_PARKED_PULLS";

// This server is a backup replica of its shard (README, "Replicated
// shards"): send the call to the primary it names. Sent with
// FAILED_PRECONDITION and metadata {"primary": host:port, "term": n}.
inline constexpr char kNotPrimary[] = "NOT_PRIMARY";

// google.rpc.ErrorInfo's fields, without protobuf.
struct ErrorInfo {
  std::string reason;
  std::string domain = kErrorDomain;
  std::map<std::string, std::string> metadata;

  bool operator==(const ErrorInfo& other) const {
    return reason == other.reason && domain == other.domain &&
           metadata == other.metadata;
  }
};

// `status` (not OK) carrying `info`, replacing any ErrorInfo it had.
absl::Status WithErrorInfo(absl::Status status, const ErrorInfo& info);

// The ErrorInfo `status` carries; nullopt when it carries none.
std::optional<ErrorInfo> GetErrorInfo(const absl::Status& status);

// Whether `status` carries our domain's `reason`.
bool HasErrorReason(const absl::Status& status, absl::string_view reason);

// FAILED_PRECONDITION with reason kRegistrationRequired.
absl::Status RegistrationRequiredError(
    absl::string_view message,
    std::map<std::string, std::string> metadata = {});

}  // namespace ps::common

#endif  // PS_COMMON_ERROR_INFO_H_
