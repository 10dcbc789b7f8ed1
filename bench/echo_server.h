#ifndef PS_BENCH_ECHO_SERVER_H_
#define PS_BENCH_ECHO_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/rpc/security.h"
#include "grpcpp/server.h"
#include "ps/bench/v1/echo.grpc.pb.h"

namespace ps::bench {

// Returns every request's payload unchanged: the cheapest unary round trip
// of those bytes, with the parameter server's channel settings.
class EchoService final : public ps::bench::v1::Echo::CallbackService {
 public:
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const ps::bench::v1::EchoMessage* request,
                                 ps::bench::v1::EchoMessage* response) override;
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
