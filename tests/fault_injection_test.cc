// The in-process fault injector: its spec, its seeded decisions, and its
// interceptors on real gRPC calls to a real server on loopback.
#include "common/rpc/fault_injection.h"

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/cli.h"
#include "common/rpc/channel.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "ps/v1/parameter_server.grpc.pb.h"
#include "server/ps_server.h"
#include "tests/wait.h"

namespace ps {
namespace {

using rpc::FaultDecision;
using rpc::FaultSpec;
using ::testing::HasSubstr;

TEST(FaultSpec, ParsesEveryKeyAndFormatsBackToTheSameSpec) {
  absl::StatusOr<FaultSpec> spec = rpc::ParseFaultSpec(
      "seed=7, delay=5ms..50ms, drop=0.01, error=ABORTED:5%, "
      "methods=Push|Pull, side=client");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->seed, 7u);
  EXPECT_EQ(spec->delay_min, absl::Milliseconds(5));
  EXPECT_EQ(spec->delay_max, absl::Milliseconds(50));
  EXPECT_DOUBLE_EQ(spec->drop_probability, 0.01);
  EXPECT_DOUBLE_EQ(spec->error_probability, 0.05);
  EXPECT_EQ(spec->error_code, grpc::StatusCode::ABORTED);
  EXPECT_EQ(spec->methods, (std::vector<std::string>{"Push", "Pull"}));
  EXPECT_TRUE(spec->client);
  EXPECT_FALSE(spec->server);
  absl::StatusOr<FaultSpec> again =
      rpc::ParseFaultSpec(rpc::FormatFaultSpec(*spec));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(rpc::FormatFaultSpec(*again), rpc::FormatFaultSpec(*spec));
  EXPECT_FALSE(rpc::ParseFaultSpec("")->active());
}

TEST(FaultSpec, RejectsWhatItDoesNotUnderstandSayingWhat) {
  for (const auto& [text, says] :
       std::vector<std::pair<std::string, std::string>>{
           {"dorp=0.1", "unknown key 'dorp'"},
           {"drop=1.5", "not a probability"},
           {"error=NOPE:0.1", "not a gRPC status code"},
           {"delay=50ms..5ms", "upper bound is below the lower"},
           {"delay=soon", "not a duration"},
           {"side=left", "not client, server or both"},
           {"drop=0.6,error=0.6", "more than 1"}}) {
    absl::StatusOr<FaultSpec> spec = rpc::ParseFaultSpec(text);
    ASSERT_FALSE(spec.ok()) << text;
    EXPECT_THAT(std::string(spec.status().message()), HasSubstr(says)) << text;
  }
}

std::vector<FaultDecision> Decisions(const FaultSpec& spec, int n) {
  std::vector<FaultDecision> decisions;
  for (int i = 0; i < n; ++i) {
    decisions.push_back(rpc::DecideFault(spec, "127.0.0.1:1", "Push", i));
  }
  return decisions;
}

TEST(DecideFault, TheSameSeedInjectsTheSameFaultsAndAnotherSeedOthers) {
  FaultSpec spec = *rpc::ParseFaultSpec(
      "seed=3,delay=1ms..9ms,drop=0.1,error=UNAVAILABLE:0.2");
  const std::vector<FaultDecision> first = Decisions(spec, 2000);
  EXPECT_EQ(Decisions(spec, 2000), first);
  spec.seed = 4;
  EXPECT_NE(Decisions(spec, 2000), first);

  // The fractions are the probabilities asked for, and delays stay inside
  // the range.
  int drops = 0, errors = 0;
  for (const FaultDecision& d : first) {
    drops += d.kind == FaultDecision::Kind::kDrop;
    errors += d.kind == FaultDecision::Kind::kError;
    EXPECT_GE(d.delay, absl::Milliseconds(1));
    EXPECT_LE(d.delay, absl::Milliseconds(9));
  }
  EXPECT_NEAR(drops / 2000.0, 0.1, 0.03);
  EXPECT_NEAR(errors / 2000.0, 0.2, 0.04);
}

TEST(DecideFault, EachStreamAndMethodHasItsOwnSequence) {
  const FaultSpec spec = *rpc::ParseFaultSpec("seed=1,error=0.5");
  std::vector<bool> push, pull, other_server;
  for (int i = 0; i < 200; ++i) {
    push.push_back(rpc::DecideFault(spec, "a:1", "Push", i).kind ==
                   FaultDecision::Kind::kError);
    pull.push_back(rpc::DecideFault(spec, "a:1", "Pull", i).kind ==
                   FaultDecision::Kind::kError);
    other_server.push_back(rpc::DecideFault(spec, "b:1", "Push", i).kind ==
                           FaultDecision::Kind::kError);
  }
  EXPECT_NE(push, pull);
  EXPECT_NE(push, other_server);
}

std::unique_ptr<server::PsServer> StartServer() {
  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<server::PsServer>> server =
      server::PsServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

// A stub whose channel to `target` has only our client interceptor.
std::unique_ptr<ps::v1::ParameterServer::Stub> StubThrough(
    rpc::FaultInjector* injector, const std::string& target) {
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(
      rpc::MakeClientFaultInterceptorFactory(injector, target));
  return ps::v1::ParameterServer::NewStub(
      grpc::experimental::CreateCustomChannelWithInterceptors(
          target, grpc::InsecureChannelCredentials(), grpc::ChannelArguments(),
          std::move(interceptors)));
}

// Which of `calls` Status calls through a client interceptor with `spec`
// failed, and with what; `counted` of them must be ones the spec applies to.
std::vector<std::string> Outcomes(int port, const std::string& spec, int calls,
                                  int counted) {
  absl::StatusOr<std::unique_ptr<rpc::FaultInjector>> injector =
      rpc::FaultInjector::Create(spec);
  EXPECT_TRUE(injector.ok()) << injector.status();
  const std::string target = absl::StrCat("127.0.0.1:", port);
  auto stub = StubThrough(injector->get(), target);
  std::vector<std::string> outcomes;
  for (int i = 0; i < calls; ++i) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    ps::v1::StatusResponse response;
    const grpc::Status status =
        stub->Status(&context, ps::v1::StatusRequest(), &response);
    outcomes.push_back(status.ok() ? "ok"
                                   : absl::StrCat(status.error_code(), " ",
                                                  status.error_message()));
  }
  EXPECT_EQ((*injector)->counts().calls, static_cast<uint64_t>(counted));
  return outcomes;
}

TEST(ClientFaultInterceptor, FailsTheSameCallsForTheSameSeedOverRealGrpc) {
  std::unique_ptr<server::PsServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  const std::vector<std::string> first =
      Outcomes(server->port(), "seed=11,error=ABORTED:0.3", 120, 120);
  EXPECT_EQ(Outcomes(server->port(), "seed=11,error=ABORTED:0.3", 120, 120),
            first);
  EXPECT_NE(Outcomes(server->port(), "seed=12,error=ABORTED:0.3", 120, 120),
            first);
  int failed = 0;
  for (const std::string& outcome : first) {
    if (outcome == "ok") continue;
    ++failed;
    EXPECT_EQ(outcome, absl::StrCat(static_cast<int>(grpc::StatusCode::ABORTED),
                                    " injected fault: ABORTED"));
  }
  EXPECT_GT(failed, 10);
  EXPECT_LT(failed, 70);
  // Calls of other methods are left alone.
  for (const std::string& outcome :
       Outcomes(server->port(), "seed=11,error=1,methods=Push", 20, 0)) {
    EXPECT_EQ(outcome, "ok");
  }
}

TEST(ClientFaultInterceptor, ADroppedCallWaitsOutItsDeadline) {
  std::unique_ptr<server::PsServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::unique_ptr<rpc::FaultInjector>> injector =
      rpc::FaultInjector::Create("drop=1");
  ASSERT_TRUE(injector.ok());
  const std::string target = absl::StrCat("127.0.0.1:", server->port());
  auto stub = StubThrough(injector->get(), target);
  grpc::ClientContext context;
  const absl::Time start = absl::Now();
  context.set_deadline(absl::ToChronoTime(start + absl::Milliseconds(300)));
  ps::v1::StatusResponse response;
  const grpc::Status status =
      stub->Status(&context, ps::v1::StatusRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(250));
}

// Waits until the installed injector decides `kind` for a server's
// Register (it re-reads its file at most every 100 ms, on a call); asks on
// a stream of its own, so the server's own sequence is untouched.
bool InjectsIntoRegister(rpc::FaultDecision::Kind kind) {
  return test_support::WaitUntil([kind] {
    return rpc::InstalledFaultInjector()
               ->Next(rpc::FaultInjector::Side::kServer, "probe",
                      "/ps.v1.ParameterServer/Register")
               .kind == kind;
  });
}

// The one test here that installs the process-wide injector (from a file, so
// the spec can change while the server runs): the server's replies fail
// after the work was done.
TEST(ServerFaultInterceptor, FailsTheReplyAfterTheWorkIsDoneAndFollowsItsFile) {
  const std::string file =
      absl::StrCat(::testing::TempDir(), "/faults_", getpid(), ".spec");
  ASSERT_TRUE(common::WriteFileAtomically(file, "").ok());
  ASSERT_TRUE(rpc::InstallFaultInjection("@" + file).ok());
  EXPECT_FALSE(rpc::InstallFaultInjection("@" + file).ok())
      << "a second injector must be refused";
  std::unique_ptr<server::PsServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  auto stub = ps::v1::ParameterServer::NewStub(
      rpc::CreateChannel(absl::StrCat("127.0.0.1:", server->port())));
  auto call_register = [&](uint32_t worker) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    ps::v1::RegisterRequest request;
    request.set_worker_id(worker);
    request.set_incarnation(1);
    ps::v1::RegisterResponse response;
    return stub->Register(&context, request, &response);
  };
  EXPECT_TRUE(call_register(0).ok());

  ASSERT_TRUE(common::WriteFileAtomically(
                  file, "side=server,error=UNAVAILABLE:1,methods=Register")
                  .ok());
  ASSERT_TRUE(InjectsIntoRegister(rpc::FaultDecision::Kind::kError));
  const grpc::Status failed = call_register(1);
  EXPECT_EQ(failed.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(failed.error_message(), HasSubstr("injected fault"));
  // Yet the server registered the worker: only the reply was lost.
  EXPECT_EQ(server->shard().Status().workers.size(), 2u);

  ASSERT_TRUE(common::WriteFileAtomically(file, "").ok());
  ASSERT_TRUE(InjectsIntoRegister(rpc::FaultDecision::Kind::kNone));
  EXPECT_TRUE(call_register(2).ok());
  std::remove(file.c_str());
}

}  // namespace
}  // namespace ps
