#include "bench/echo_server.h"

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace ps::bench {

grpc::ServerUnaryReactor* EchoService::Echo(
    grpc::CallbackServerContext* context,
    const ps::bench::v1::EchoMessage* request,
    ps::bench::v1::EchoMessage* response) {
  // One copy, as any service that answers with bytes it was sent makes.
  *response->mutable_payload() = request->payload();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

absl::StatusOr<EchoServer> StartEchoServer(
    const std::string& listen, const rpc::ServerSecurity& security) {
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      rpc::MakeServerCredentials(security);
  if (!credentials.ok()) return credentials.status();
  EchoServer echo;
  echo.service = std::make_unique<EchoService>();
  grpc::ServerBuilder builder;
  rpc::ConfigureServerBuilder(builder);
  builder.AddListeningPort(listen, *credentials, &echo.port);
  builder.RegisterService(echo.service.get());
  echo.server = builder.BuildAndStart();
  if (echo.server == nullptr || echo.port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen));
  }
  return echo;
}

}  // namespace ps::bench
