#include "common/rpc/channel.h"

#include <utility>
#include <vector>

#include "common/rpc/fault_injection.h"
#include "common/rpc/security.h"
#include "grpc/support/log.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "spdlog/spdlog.h"

namespace ps::rpc {

std::shared_ptr<grpc::Channel> CreateChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Reconnect within a second of a server coming back instead of gRPC's
  // 120 s cap. A lost connection also asks the resolver for the address
  // again, and gRPC 1.51 holds that back 30 s after the last resolution:
  // the new connection then waited for it (6 s of a 2 s restart, measured).
  // Resolving soon also lets a pod's DNS name appear while workers wait.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1'000);
  args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, 500);
  if (FaultInjector* injector = InstalledFaultInjector()) {
    std::vector<
        std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
        interceptors;
    interceptors.push_back(MakeClientFaultInterceptorFactory(injector, target));
    return grpc::experimental::CreateCustomChannelWithInterceptors(
        target, ClientCredentials(), args, std::move(interceptors));
  }
  return grpc::CreateCustomChannel(target, ClientCredentials(), args);
}

void RouteGrpcLogsToSpdlog() {
  gpr_set_log_function([](gpr_log_func_args* args) {
    spdlog::debug("grpc {}:{}: {}", args->file, args->line, args->message);
  });
}

void ConfigureServerBuilder(grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  // Accept the clients' keepalive pings without calling them abusive.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5'000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // gRPC sets SO_REUSEPORT by default: a second server on a busy port then
  // starts cleanly and the kernel splits the clients between the two.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  if (FaultInjector* injector = InstalledFaultInjector()) {
    std::vector<
        std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        interceptors;
    interceptors.push_back(MakeServerFaultInterceptorFactory(injector));
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
}

}  // namespace ps::rpc
