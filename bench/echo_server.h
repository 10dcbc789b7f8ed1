#ifndef PS_BENCH_ECHO_SERVER_H_
#define PS_BENCH_ECHO_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/rpc/security.h"
#include "grpcpp/server.h"
#include "ps/bench/v1/echo.grpc.pb.h"

namespace ps::bench {

// The cheapest gRPC calls that move a push's, a pull's and a PushPull's
// bytes, with the parameter server's channel settings: what our calls are
// measured against.
class EchoService final : public ps::bench::v1::Echo::CallbackService {
 public:
  using EchoMessage = ps::bench::v1::EchoMessage;
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const EchoMessage* request,
                                 EchoMessage* response) override;
  grpc::ServerUnaryReactor* Sink(grpc::CallbackServerContext* context,
                                 const EchoMessage* request,
                                 ps::bench::v1::SinkReply* response) override;
  grpc::ServerUnaryReactor* Source(grpc::CallbackServerContext* context,
                                   const ps::bench::v1::SourceRequest* request,
                                   EchoMessage* response) override;
  grpc::ServerBidiReactor<EchoMessage, EchoMessage>* EchoStream(
      grpc::CallbackServerContext* context) override;
};

// A running echo server on `listen` (port 0: a free one).
struct EchoServer {
  std::unique_ptr<EchoService> service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};
// With `security`'s credentials and token check (default: plaintext).
absl::StatusOr<EchoServer> StartEchoServer(
    const std::string& listen, const rpc::ServerSecurity& security = {});

}  // namespace ps::bench

#endif  // PS_BENCH_ECHO_SERVER_H_
