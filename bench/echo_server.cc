#include "bench/echo_server.h"

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace ps::bench {

namespace {

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context,
                                 const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

// Each message read is written back, one at a time, until the client
// closes its side.
class StreamEcho final
    : public grpc::ServerBidiReactor<EchoService::EchoMessage,
                                     EchoService::EchoMessage> {
 public:
  StreamEcho() { StartRead(&in_); }
  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    *out_.mutable_payload() = in_.payload();
    StartWrite(&out_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "the stream broke while answering"));
      return;
    }
    StartRead(&in_);
  }
  void OnDone() override { delete this; }

 private:
  EchoService::EchoMessage in_;
  EchoService::EchoMessage out_;
};

}  // namespace

grpc::ServerUnaryReactor* EchoService::Echo(
    grpc::CallbackServerContext* context, const EchoMessage* request,
    EchoMessage* response) {
  // One copy, as any service that answers with bytes it was sent makes.
  *response->mutable_payload() = request->payload();
  return Answer(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* EchoService::Sink(
    grpc::CallbackServerContext* context, const EchoMessage*,
    ps::bench::v1::SinkReply*) {
  return Answer(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* EchoService::Source(
    grpc::CallbackServerContext* context,
    const ps::bench::v1::SourceRequest* request, EchoMessage* response) {
  if (request->bytes() > static_cast<uint64_t>(rpc::kMaxMessageBytes)) {
    return Answer(context,
                  grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               absl::StrCat("Source of ", request->bytes(),
                                            " bytes: at most ",
                                            rpc::kMaxMessageBytes, " fit")));
  }
  // One pass over the bytes, as a server answering with its own values
  // (a pull's copy of θ) makes.
  response->mutable_payload()->assign(request->bytes(), '\0');
  return Answer(context, grpc::Status::OK);
}

grpc::ServerBidiReactor<EchoService::EchoMessage, EchoService::EchoMessage>*
EchoService::EchoStream(grpc::CallbackServerContext*) {
  return new StreamEcho;
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
