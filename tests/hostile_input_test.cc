// Hostile requests against a real ps_server process: each must be answered
// with a clear error, cheaply, and leave the server serving.
#include <unistd.h>

#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/error_info.h"
#include "common/rpc/channel.h"
#include "common/rpc/convert.h"
#include "common/rpc/retry.h"
#include "common/subprocess.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ps/v1/parameter_server.grpc.pb.h"
#include "tests/job.h"

namespace ps {
namespace {

using test_support::BinDir;
using test_support::FreshDir;
using test_support::ReadFile;
using test_support::WaitForPortFile;
using ::testing::HasSubstr;

// The process's peak resident set (VmHWM), in bytes; -1 when unreadable.
int64_t PeakRssBytes(pid_t pid) {
  return test_support::ProcStatusBytes(pid, "VmHWM");
}

// One ps_server process on a free loopback port.
class Server {
 public:
  Server(const std::string& name, std::vector<std::string> flags)
      : dir_(FreshDir(name)) {
    std::vector<std::string> argv = {
        absl::StrCat(BinDir(), "/ps_server"), "--listen=127.0.0.1:0",
        absl::StrCat("--port_file=", dir_, "/port"), "--mode=async"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    auto process = common::Subprocess::Spawn(argv, dir_ + "/server.log");
    EXPECT_TRUE(process.ok()) << process.status();
    process_ = std::make_unique<common::Subprocess>(std::move(*process));
    EXPECT_TRUE(
        WaitForPortFile(*process_, dir_ + "/port", dir_ + "/server.log"));
    stub_ = ps::v1::ParameterServer::NewStub(rpc::CreateChannel(
        absl::StrCat("127.0.0.1:", ReadFile(dir_ + "/port"))));
  }
  ~Server() { process_->Stop(absl::Seconds(5)); }

  ps::v1::ParameterServer::Stub& stub() { return *stub_; }
  pid_t pid() const { return process_->pid(); }
  std::string log() const { return ReadFile(dir_ + "/server.log"); }

 private:
  std::string dir_;
  std::unique_ptr<common::Subprocess> process_;
  std::unique_ptr<ps::v1::ParameterServer::Stub> stub_;
};

// An Init declaring one tensor of `elements` keys and carrying no values:
// about 30 bytes on the wire.
grpc::Status HostileInit(ps::v1::ParameterServer::Stub& stub, int64_t elements,
                         absl::Duration* took) {
  ps::v1::InitRequest request;
  request.set_num_shards(1);
  ps::v1::TensorSpec* tensor = request.add_tensors();
  tensor->set_name("w");
  tensor->add_shape(elements);
  EXPECT_LT(request.ByteSizeLong(), 40u);
  ps::v1::InitResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  const absl::Time start = absl::Now();
  const grpc::Status status = stub.Init(&context, request, &response);
  *took = absl::Now() - start;
  return status;
}

// Even with the key cap raised out of the way, a declared shape must cost
// nothing until values of its size arrived.
TEST(HostileInput, AHugeShapeWithoutValuesIsRefusedBeforeAnyAllocation) {
  Server server("hostile_init", {"--max_keys_per_shard=4294967296"});
  const int64_t before = PeakRssBytes(server.pid());
  ASSERT_GT(before, 0);
  absl::Duration took;
  const grpc::Status status =
      HostileInit(server.stub(), int64_t{1} << 30, &took);
  const int64_t after = PeakRssBytes(server.pid());
  std::cout << "Init of shape [2^30] without values: " << status.error_code()
            << " '" << status.error_message() << "' in "
            << absl::FormatDuration(took) << "; server peak RSS "
            << before / (1 << 20) << " MiB before, " << after / (1 << 20)
            << " MiB after\n";
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("carries 0 floats"));
  EXPECT_LT(after - before, int64_t{64} << 20);
  EXPECT_LT(took, absl::Seconds(5));
}

TEST(HostileInput, AShapeAboveTheKeyCapIsRefusedWithTheFlagNamed) {
  Server server("hostile_init_cap", {});
  absl::Duration took;
  const grpc::Status status =
      HostileInit(server.stub(), int64_t{1} << 40, &took);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("--max_keys_per_shard"));
  EXPECT_LT(PeakRssBytes(server.pid()), int64_t{256} << 20);
  // Still serving.
  ps::v1::StatusResponse answer;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  EXPECT_TRUE(
      server.stub().Status(&context, ps::v1::StatusRequest(), &answer).ok());
  EXPECT_FALSE(answer.initialized());
}

TEST(HostileInput, ASecondServerOnTheSameCheckpointsRefusesToStart) {
  const std::string checkpoints = FreshDir("two_servers_checkpoints");
  Server first("two_servers", {absl::StrCat("--checkpoint_dir=", checkpoints)});
  test_support::Outcome second =
      test_support::RunBinary({"ps_server", "--listen=127.0.0.1:0",
                               absl::StrCat("--checkpoint_dir=", checkpoints)},
                              checkpoints + "/second.log", absl::Seconds(60));
  EXPECT_TRUE(test_support::ExitedWith(second, 2)) << second.output;
  EXPECT_THAT(second.output, HasSubstr("in use by another server"));
  EXPECT_THAT(second.output, HasSubstr(absl::StrCat("pid ", first.pid())));
}

// A request larger than any the server accepts (a shard's θ and its
// fields) is refused by gRPC from its length prefix, before it is read.
TEST(HostileInput, ARequestLargerThanTheShardCouldHoldIsRefusedUnread) {
  // 1024 keys: requests up to 4 KiB of values and 1 MiB of fields.
  Server server("hostile_large_push", {"--max_keys_per_shard=1024"});
  ps::v1::PushRequest push;
  push.set_seq(1);
  push.set_batch_size(1);
  push.mutable_gradient()->assign(size_t{8} << 20, '\0');
  ps::v1::PushResponse answer;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  const grpc::Status status = server.stub().Push(&context, push, &answer);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("larger than max"));
  EXPECT_LT(PeakRssBytes(server.pid()), int64_t{256} << 20);
  // Clients give up on it at once: sending it again cannot help.
  int retries = 0;
  rpc::RetryPolicy policy;
  policy.max_retry_time = absl::Seconds(10);
  policy.on_retry = [&](grpc::StatusCode) { ++retries; };
  const absl::Time start = absl::Now();
  const grpc::Status retried =
      rpc::CallWithRetry(policy, "Push", [&](grpc::ClientContext& attempt) {
        return server.stub().Push(&attempt, push, &answer);
      });
  EXPECT_EQ(retried.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(retries, 0);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // A request within the limit is read and judged on its content.
  push.mutable_gradient()->assign(16, '\0');
  grpc::ClientContext small;
  small.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  EXPECT_EQ(server.stub().Push(&small, push, &answer).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST(HostileInput, PullsBeyondMaxParkedPullsAreRefusedAndTheParkedOneStays) {
  Server server("hostile_parked",
                {"--mode=sync", "--num_workers=2", "--max_parked_pulls=1"});
  ps::v1::RegisterRequest hello;
  hello.set_incarnation(1);
  ps::v1::RegisterResponse registered;
  grpc::ClientContext register_context;
  ASSERT_TRUE(
      server.stub().Register(&register_context, hello, &registered).ok());
  ps::v1::InitRequest init;
  init.set_num_shards(1);
  ps::v1::TensorSpec* tensor = init.add_tensors();
  tensor->set_name("w");
  tensor->add_shape(2);
  init.mutable_values()->assign(2 * sizeof(float), '\0');
  ps::v1::InitResponse declared;
  grpc::ClientContext init_context;
  ASSERT_TRUE(server.stub().Init(&init_context, init, &declared).ok());

  // Two pulls for round 1, which cannot close (no gradient comes): the
  // first to arrive parks, the other is refused at once.
  absl::Mutex mutex;
  std::vector<grpc::Status> ended(2);
  std::vector<bool> done(2, false);
  std::vector<grpc::ClientContext> contexts(2);
  std::vector<std::thread> pullers;
  for (uint32_t worker = 0; worker < 2; ++worker) {
    contexts[worker].set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    pullers.emplace_back([&, worker] {
      ps::v1::PullRequest pull;
      pull.set_worker_id(worker);
      pull.set_min_version(1);
      ps::v1::PullResponse pulled;
      grpc::Status status =
          server.stub().Pull(&contexts[worker], pull, &pulled);
      absl::MutexLock lock(&mutex);
      ended[worker] = status;
      done[worker] = true;
    });
  }
  int refused = -1;
  {
    absl::MutexLock lock(&mutex);
    auto one_ended = [&] { return done[0] || done[1]; };
    ASSERT_TRUE(
        mutex.AwaitWithTimeout(absl::Condition(&one_ended), absl::Seconds(30)))
        << "both pulls parked";
    refused = done[0] ? 0 : 1;
    EXPECT_FALSE(done[1 - refused]) << "both pulls ended";
    EXPECT_EQ(ended[refused].error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << ended[refused].error_message();
    EXPECT_THAT(ended[refused].error_message(),
                HasSubstr("--max_parked_pulls=1"));
    // The bound passes as parked pulls end: clients retry it.
    EXPECT_TRUE(common::HasErrorReason(rpc::FromGrpcStatus(ended[refused]),
                                       common::kTooManyParkedPulls));
    EXPECT_TRUE(rpc::IsRetryable(ended[refused]));
  }
  // The parked pull still waits, until its caller gives up.
  contexts[1 - refused].TryCancel();
  for (std::thread& puller : pullers) puller.join();
  EXPECT_EQ(ended[1 - refused].error_code(), grpc::StatusCode::CANCELLED);
  ps::v1::StatusResponse status;
  grpc::ClientContext status_context;
  ASSERT_TRUE(server.stub()
                  .Status(&status_context, ps::v1::StatusRequest(), &status)
                  .ok());
  EXPECT_EQ(status.version(), 0u);
}

TEST(HostileInput, MaxParkedPullsOfZeroStopsTheServerAtStartUp) {
  const std::string dir = FreshDir("parked_zero");
  test_support::Outcome outcome = test_support::RunBinary(
      {"ps_server", "--listen=127.0.0.1:0", "--max_parked_pulls=0"},
      dir + "/server.log", absl::Seconds(60));
  EXPECT_TRUE(test_support::ExitedWith(outcome, 2)) << outcome.output;
  EXPECT_THAT(outcome.output, HasSubstr("max_parked_pulls must be at least 1"));
}

}  // namespace
}  // namespace ps
