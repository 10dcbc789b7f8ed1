// Hostile requests against a real ps_server process: each must be answered
// with a clear error, cheaply, and leave the server serving.
#include <unistd.h>

#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/rpc/channel.h"
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
  const std::string status = ReadFile(absl::StrCat("/proc/", pid, "/status"));
  const size_t at = status.find("VmHWM:");
  if (at == std::string::npos) return -1;
  int64_t kib = 0;
  const size_t end = status.find("kB", at);
  if (!absl::SimpleAtoi(
          absl::StripAsciiWhitespace(status.substr(at + 6, end - at - 6)),
          &kib)) {
    return -1;
  }
  return kib * 1024;
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
    EXPECT_TRUE(WaitForPortFile(*process_, dir_ + "/port"))
        << ReadFile(dir_ + "/server.log");
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

}  // namespace
}  // namespace ps
