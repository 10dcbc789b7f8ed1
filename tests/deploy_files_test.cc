// deploy/local/deploy_files: how deploy_launch_test reads the deploy files
// and maps their addresses to loopback.
#include "deploy/local/deploy_files.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::launch {
namespace {

using ::testing::StartsWith;

TEST(DeployFiles, AFlagIsReadFromItsFlagfilesThenTheArgsTheLastWinning) {
  Container c;
  c.argv = {"/usr/local/bin/ps_server", "--flagfile=/etc/ps/server.flags",
            "--lr=0.5"};
  c.files["/etc/ps/server.flags"] = "--lr=0.1\n--mode=sync\n";
  EXPECT_EQ(Program(c), "ps_server");
  EXPECT_EQ(FlagValue(c, "lr"), "0.5");
  EXPECT_EQ(FlagValue(c, "mode"), "sync");
  EXPECT_EQ(FlagValue(c, "num_shards"), "");
}

TEST(DeployFiles,
     EveryNameOfAServerMapsToOneLoopbackPortAndStrangersAreRefused) {
  DeployJob job;
  Container server;
  server.dns_names = {"ps-server-0.ps-server", "ps-server-0"};
  job.servers.push_back(server);
  LoopbackNetwork network(job);
  absl::StatusOr<std::string> outside =
      network.Rewrite("--servers=ps-server-0.ps-server:50051", -1);
  ASSERT_TRUE(outside.ok()) << outside.status();
  EXPECT_THAT(*outside, StartsWith("--servers=127.0.0.1:"));
  // The server itself listens where the others reach it.
  absl::StatusOr<std::string> inside =
      network.Rewrite("--listen=0.0.0.0:50051", 0);
  ASSERT_TRUE(inside.ok()) << inside.status();
  EXPECT_EQ(inside->substr(inside->find(':')),
            outside->substr(outside->find(':')));
  EXPECT_FALSE(network.Rewrite("--servers=elsewhere:50051", -1).ok());
}

TEST(DeployFiles, TheComposeFileDefinesTwoServersAndTwoWorkers) {
  absl::StatusOr<DeployJob> job = ComposeJob(
      absl::StrCat(PS_SOURCE_DIR, "/deploy/compose/docker-compose.yml"));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->servers.size(), 2u);
  EXPECT_EQ(job->workers.size(), 2u);
  EXPECT_EQ(FlagValue(job->servers[0], "num_shards"), "2");
}

}  // namespace
}  // namespace ps::launch
