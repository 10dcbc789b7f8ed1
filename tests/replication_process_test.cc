// A replicated shard as real processes: two ps_server processes (primary
// and backup, started with --replicas) and two ps_worker processes that
// train Fashion-MNIST softmax against the primary.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ps/v1/replication.grpc.pb.h"
#include "tests/job.h"
#include "tests/replica_status.h"

namespace ps {
namespace {

using test_support::BinDir;
using test_support::CheckpointBytes;
using test_support::FreshDir;
using test_support::ReadFile;

common::Subprocess StartServer(const std::string& dir, const std::string& name,
                               const std::string& mode,
                               const std::string& peers, uint32_t index) {
  std::vector<std::string> argv = {
      BinDir() + "/ps_server",
      "--listen=127.0.0.1:0",
      absl::StrCat("--port_file=", dir, "/", name, ".port"),
      absl::StrCat("--checkpoint_dir=", dir, "/", name),
      "--num_workers=2",
      absl::StrCat("--mode=", mode),
      "--replicas=2",
      absl::StrCat("--replica_index=", index),
      absl::StrCat("--replica_peers=", peers)};
  std::filesystem::create_directories(absl::StrCat(dir, "/", name));
  auto server =
      common::Subprocess::Spawn(argv, absl::StrCat(dir, "/", name, ".log"));
  EXPECT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE(test_support::WaitForPortFile(
      *server, absl::StrCat(dir, "/", name, ".port"),
      absl::StrCat(dir, "/", name, ".log")));
  return std::move(*server);
}

ps::v1::ReplicaStatusResponse ReplicaStatus(const std::string& address) {
  std::optional<ps::v1::ReplicaStatusResponse> status =
      test_support::ReplicaStatus(address);
  EXPECT_TRUE(status.has_value()) << address << " does not answer";
  return status.value_or(ps::v1::ReplicaStatusResponse());
}

class ReplicatedProcesses : public ::testing::TestWithParam<std::string> {};

TEST_P(ReplicatedProcesses, TheBackupEndsWithThePrimarysStateByteForByte) {
  const std::string dir = FreshDir(absl::StrCat("replicated_", GetParam()));
  common::Subprocess primary =
      StartServer(dir, "primary", GetParam(), "127.0.0.1:0,127.0.0.1:0", 0);
  const std::string primary_address =
      absl::StrCat("127.0.0.1:", ReadFile(dir + "/primary.port"));
  common::Subprocess backup =
      StartServer(dir, "backup", GetParam(),
                  absl::StrCat(primary_address, ",127.0.0.1:0"), 1);
  const std::string backup_address =
      absl::StrCat("127.0.0.1:", ReadFile(dir + "/backup.port"));
  ASSERT_TRUE(test_support::WaitUntil(
      [&] { return ReplicaStatus(backup_address).role() == ps::v1::BACKUP; }));

  std::vector<common::Subprocess> workers;
  for (uint32_t rank = 0; rank < 2; ++rank) {
    launch::WorkerFlags flags;
    flags.servers = {primary_address};
    flags.rank = rank;
    flags.num_workers = 2;
    flags.extra = {"--model=softmax", "--epochs=1"};
    auto worker =
        common::Subprocess::Spawn(launch::WorkerCommand(BinDir(), flags),
                                  absl::StrCat(dir, "/worker-", rank, ".log"));
    ASSERT_TRUE(worker.ok()) << worker.status();
    workers.push_back(std::move(*worker));
  }
  for (common::Subprocess& worker : workers) {
    EXPECT_EQ(worker.WaitFor(absl::Seconds(240)), 0)
        << "a worker failed; see " << dir;
  }

  const ps::v1::ReplicaStatusResponse done = ReplicaStatus(primary_address);
  EXPECT_EQ(done.role(), ps::v1::PRIMARY);
  EXPECT_GT(done.version(), 0u);
  EXPECT_EQ(done.backups_dropped(), 0u);
  ASSERT_TRUE(test_support::WaitUntil([&] {
    return ReplicaStatus(backup_address).log_index() >= done.log_index();
  }));
  EXPECT_EQ(ReplicaStatus(backup_address).version(), done.version());
  const std::string primary_state = CheckpointBytes(primary_address);
  ASSERT_FALSE(primary_state.empty());
  EXPECT_TRUE(CheckpointBytes(backup_address) == primary_state)
      << "the backup's checkpoint differs from the primary's; see " << dir;
  EXPECT_EQ(primary.Stop(absl::Seconds(10)), 0);
  EXPECT_EQ(backup.Stop(absl::Seconds(10)), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, ReplicatedProcesses,
                         ::testing::Values("sync", "async"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace ps
