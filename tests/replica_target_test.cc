// Which replica a "server I primary" fault hits: PickPrimary's rule, and
// the answers of real replicas started by LocalCluster with --replicas.
#include "tools/chaos/replica_target.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "deploy/local/launcher.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"

namespace ps::chaos {
namespace {

using ::testing::HasSubstr;

TEST(PickPrimary, IsTheReplicaThatSaysItIsPrimary) {
  EXPECT_EQ(*PickPrimary({{true, false, 1}, {true, true, 1}}, 0), 1u);
  EXPECT_EQ(*PickPrimary({{true, true, 1}, {false, false, 0}}, 0), 0u);
}

// An old primary that has not heard of its replacement still says primary,
// in its older term.
TEST(PickPrimary, TheNewestTermWinsOverAReplacedPrimary) {
  EXPECT_EQ(
      *PickPrimary({{true, true, 1}, {true, true, 2}, {true, false, 2}}, 3),
      1u);
}

TEST(PickPrimary, NoPrimaryIsUnavailableNamingTheShard) {
  absl::StatusOr<uint32_t> none =
      PickPrimary({{true, false, 1}, {false, true, 9}}, 4);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(none.status().message()),
              HasSubstr("no replica of server 4 says it is the primary (1 of "
                        "2 answered ReplicaStatus)"));
}

TEST(AskReplicas, RealReplicasSayWhoIsPrimaryAndADeadOneDoesNotAnswer) {
  const std::string dir = test_support::FreshDir("replica_target");
  launch::LocalClusterOptions options;
  options.bin_dir = test_support::BinDir();
  options.out_dir = dir;
  options.num_servers = 2;
  options.num_workers = 1;
  options.replicas = 2;
  launch::LocalCluster cluster(options);
  ASSERT_TRUE(cluster.StartServers([] { return false; }).ok());
  ASSERT_EQ(cluster.replica_addresses().size(), 2u);
  for (uint32_t shard = 0; shard < 2; ++shard) {
    const std::vector<std::string>& replicas =
        cluster.replica_addresses()[shard];
    ASSERT_EQ(replicas.size(), 2u);
    EXPECT_EQ(cluster.addresses()[shard], replicas[0]);
    const std::vector<ReplicaView> views =
        AskReplicas(replicas, absl::Seconds(5));
    EXPECT_TRUE(views[0].answered && views[0].primary);
    EXPECT_TRUE(views[1].answered && !views[1].primary);
    EXPECT_EQ(views[0].term, 1u);
    EXPECT_EQ(*PickPrimary(views, shard), 0u);
  }
  // Shard 1's backup killed: only its primary answers, and is still found.
  for (launch::ClusterProcess& p : cluster.processes()) {
    if (p.name == "server 1 replica 1") p.process.Stop(absl::ZeroDuration());
  }
  const std::vector<ReplicaView> views =
      AskReplicas(cluster.replica_addresses()[1], absl::Seconds(2));
  EXPECT_TRUE(views[0].answered);
  EXPECT_FALSE(views[1].answered);
  EXPECT_EQ(*PickPrimary(views, 1), 0u);
  for (const std::string& problem : cluster.Stop(absl::Seconds(10)).problems) {
    EXPECT_THAT(problem, HasSubstr("server 1 replica 1")) << "the one killed";
  }
}

}  // namespace
}  // namespace ps::chaos
