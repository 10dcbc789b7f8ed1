#ifndef PS_SERVER_PS_SERVER_H_
#define PS_SERVER_PS_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "server/parameter_service.h"
#include "server/parameter_shard.h"

namespace ps::server {

struct ServerOptions {
  ShardOptions shard;
  // Bind address, host:port; port 0 picks a free one. Default: 0.0.0.0:50051
  std::string listen = "0.0.0.0:50051";
  // Longest a pull may wait for its version, whatever the client's
  // deadline. Default: 60 s
  absl::Duration max_pull_wait = absl::Seconds(60);
};

// A running parameter server: one shard, its gRPC service, gRPC's health
// service and reflection. Embeddable, so tests run real servers in-process.
class PsServer {
 public:
  static absl::StatusOr<std::unique_ptr<PsServer>> Start(
      const ServerOptions& options);
  ~PsServer();

  int port() const { return port_; }
  ParameterShard& shard() { return *shard_; }
  // How others reach this server; Status reports it.
  void SetAdvertisedAddress(std::string address) {
    service_->SetAdvertisedAddress(std::move(address));
  }

  // Stops taking calls, ends the parked ones, and waits at most `grace` for
  // calls in flight.
  void Shutdown(absl::Duration grace = absl::Seconds(2));

 private:
  PsServer() = default;

  std::unique_ptr<ParameterShard> shard_;
  std::unique_ptr<ParameterService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace ps::server

#endif  // PS_SERVER_PS_SERVER_H_
