// A replicated shard's visibility on real processes: Status's ReplicaState
// on the primary and the backup, the bytes the primary sent to its backup,
// and psctl status's replica lines.
#include "tests/replica_status.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "deploy/local/launcher.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ps/v1/parameter_server.grpc.pb.h"
#include "tests/job.h"

namespace ps {
namespace {

using ::testing::HasSubstr;

ps::v1::StatusResponse StatusOf(const std::string& address) {
  return test_support::ShardStatus(address, absl::Seconds(5));
}

TEST(ReplicaStatus, StatusAndPsctlShowEachReplicasRoleTermAndLag) {
  const std::string dir = test_support::FreshDir("replica_status");
  launch::LocalClusterOptions options;
  options.bin_dir = test_support::BinDir();
  options.out_dir = dir;
  options.num_servers = 1;
  options.num_workers = 2;
  options.replicas = 2;
  options.server_flags.mode = "async";
  options.worker_flags.model = "softmax";
  options.worker_flags.epochs = 1;
  options.worker_flags.eval_every = 1;
  launch::LocalCluster cluster(options);
  ASSERT_TRUE(cluster.StartServers([] { return false; }).ok());
  const std::string primary = cluster.replica_addresses()[0][0];
  const std::string backup = cluster.replica_addresses()[0][1];
  ASSERT_TRUE(test_support::WaitUntil([&] {
    return StatusOf(backup).replica().role() == ps::v1::ReplicaState::BACKUP;
  }));
  ASSERT_TRUE(cluster.StartWorkers().ok());
  ASSERT_TRUE(test_support::WaitUntil(
      [&] {
        absl::StatusOr<uint32_t> done = cluster.PollWorkers();
        return !done.ok() || *done == 2;
      },
      absl::Seconds(240)));
  ASSERT_EQ(*cluster.PollWorkers(), 2u);

  const ps::v1::StatusResponse p = StatusOf(primary);
  ASSERT_TRUE(p.has_replica());
  EXPECT_EQ(p.replica().role(), ps::v1::ReplicaState::PRIMARY);
  EXPECT_EQ(p.replica().replica_index(), 0u);
  EXPECT_EQ(p.replica().replicas(), 2u);
  EXPECT_EQ(p.replica().term(), 1u);
  EXPECT_EQ(p.replica().failovers(), 0u);
  EXPECT_EQ(p.replica().backups_dropped(), 0u);
  ASSERT_GT(p.pushes_applied(), 0u);
  // Every applied push's gradient (the whole shard, 7850 float32) went to
  // the backup, at least once.
  EXPECT_GE(p.replica().replication_bytes_sent(),
            p.pushes_applied() * 7850 * sizeof(float));

  // Every push was acknowledged after the backup applied it: no lag.
  ASSERT_TRUE(test_support::WaitUntil(
      [&] { return StatusOf(backup).version() == p.version(); }));
  const ps::v1::StatusResponse b = StatusOf(backup);
  EXPECT_EQ(b.replica().role(), ps::v1::ReplicaState::BACKUP);
  EXPECT_EQ(b.replica().replica_index(), 1u);
  EXPECT_EQ(b.replica().term(), 1u);
  EXPECT_EQ(b.replica().replication_bytes_sent(), 0u);

  test_support::Outcome psctl = test_support::RunBinary(
      {"psctl", "status", absl::StrCat("--servers=", primary)},
      dir + "/psctl.out", absl::Seconds(60));
  ASSERT_TRUE(test_support::ExitedWith(psctl, 0)) << psctl.output;
  // (The bytes go on growing: the primary's heartbeats.)
  EXPECT_THAT(psctl.output,
              ::testing::ContainsRegex("  replica 0 of 2: primary, term 1, 0 "
                                       "failovers; [0-9]+ bytes sent to "
                                       "backups, 0 backups dropped\n"));
  EXPECT_THAT(psctl.output,
              HasSubstr(absl::StrCat("  replica 1 of 2 (", backup,
                                     "): backup, term 1, 0 failovers, 0 "
                                     "versions behind the primary")));
  // The backup asked alone: its role, without a primary to compare with.
  psctl = test_support::RunBinary(
      {"psctl", "status", absl::StrCat("--servers=", backup)},
      dir + "/psctl-backup.out", absl::Seconds(60));
  ASSERT_TRUE(test_support::ExitedWith(psctl, 0)) << psctl.output;
  EXPECT_THAT(psctl.output,
              HasSubstr("  replica 1 of 2: backup, term 1, 0 failovers\n"));
  EXPECT_TRUE(cluster.Stop(absl::Seconds(20)).problems.empty());
}

// Without replicas, Status has no ReplicaState and psctl no replica line.
TEST(ReplicaStatus, AnUnreplicatedServerHasNoReplicaState) {
  const std::string dir = test_support::FreshDir("replica_status_none");
  launch::LocalClusterOptions options;
  options.bin_dir = test_support::BinDir();
  options.out_dir = dir;
  options.num_servers = 1;
  launch::LocalCluster cluster(options);
  ASSERT_TRUE(cluster.StartServers([] { return false; }).ok());
  EXPECT_FALSE(StatusOf(cluster.addresses()[0]).has_replica());
  test_support::Outcome psctl = test_support::RunBinary(
      {"psctl", "status", absl::StrCat("--servers=", cluster.addresses()[0])},
      dir + "/psctl.out", absl::Seconds(60));
  ASSERT_TRUE(test_support::ExitedWith(psctl, 0)) << psctl.output;
  EXPECT_THAT(psctl.output, ::testing::Not(HasSubstr("replica")));
  EXPECT_TRUE(cluster.Stop(absl::Seconds(20)).problems.empty());
}

}  // namespace
}  // namespace ps
