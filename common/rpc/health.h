#ifndef PS_COMMON_RPC_HEALTH_H_
#define PS_COMMON_RPC_HEALTH_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace ps::rpc {

// Asks `target`'s standard gRPC health service (grpc.health.v1.Health/Check,
// whole server) once. OK when it answers SERVING; UNAVAILABLE naming the
// target and what it answered (or why it did not) otherwise.
absl::Status CheckServing(const std::string& target, absl::Duration deadline);

}  // namespace ps::rpc

#endif  // PS_COMMON_RPC_HEALTH_H_
