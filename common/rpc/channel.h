#ifndef PS_COMMON_RPC_CHANNEL_H_
#define PS_COMMON_RPC_CHANNEL_H_

#include <memory>
#include <string>

#include "grpcpp/channel.h"
#include "grpcpp/server_builder.h"

namespace ps::rpc {

// Raised explicitly (gRPC's default is 4 MiB) so one shard's slice of a large
// model travels as one message: 512 MiB holds 128M float32 values.
inline constexpr int kMaxMessageBytes = 512 << 20;

// A channel to `target` ("host:port") with our message limits and keepalive
// pings, so a dead peer is noticed even while a call is parked; and with the
// process's fault injector, when one is installed (fault_injection.h).
std::shared_ptr<grpc::Channel> CreateChannel(const std::string& target);

// Sends gRPC's own log lines through spdlog at debug level: every gRPC
// failure reaches our code as a status, which we report with its context,
// so gRPC's line would only repeat it in another format.
void RouteGrpcLogsToSpdlog();

// Applies the same limits and keepalive policy (and fault injector) to a
// server, and refuses a port another server already listens on.
void ConfigureServerBuilder(grpc::ServerBuilder& builder);

}  // namespace ps::rpc

#endif  // PS_COMMON_RPC_CHANNEL_H_
