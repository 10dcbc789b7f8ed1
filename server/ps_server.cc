#include "server/ps_server.h"

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "spdlog/spdlog.h"

namespace ps::server {

absl::StatusOr<std::unique_ptr<PsServer>> PsServer::Start(
    const ServerOptions& options) {
  if (absl::Status valid = ValidateShardOptions(options.shard); !valid.ok()) {
    return valid;
  }
  std::unique_ptr<PsServer> server(new PsServer);
  server->shard_ = std::make_unique<ParameterShard>(options.shard);
  server->service_ = std::make_unique<ParameterService>(server->shard_.get(),
                                                        options.max_pull_wait);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  rpc::ConfigureServerBuilder(builder);
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(),
                           &server->port_);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options.listen,
        ": the address is malformed, not local, or the port is in use"));
  }
  return server;
}

void PsServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
}

PsServer::~PsServer() {
  if (server_ != nullptr) Shutdown();
}

}  // namespace ps::server
