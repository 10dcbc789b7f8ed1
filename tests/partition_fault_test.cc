// Data partitions through a crash: real ps_server and ps_worker processes
// on loopback leasing partitions from the server, one worker killed with
// SIGKILL mid-run; the server's partition table shows every partition of
// every epoch done, and the survivors reach the accuracy of a run without
// the fault.
#include <signal.h>

#include <iostream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"

namespace ps {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using test_support::Field;
using test_support::Job;

constexpr uint32_t kPartitions = 30;
const std::vector<std::string> kWorkerFlags = {"--model=softmax", "--epochs=3",
                                               "--eval_every=0.1",
                                               "--data_partitions=30"};

// Partitions done per epoch, as the server's table says.
std::vector<uint32_t> DonePerEpoch(const Job& job) {
  const ps::v1::StatusResponse status = job.Status();
  return {status.partitions().done_per_epoch().begin(),
          status.partitions().done_per_epoch().end()};
}

// How far the faulted run's accuracy may lie from the healthy one's. Sync
// holds the 0.5 pp. An async run's own accuracy moves by about
// 0.8 pp from one fault-free run to the next (0.8168 to 0.8247 seen, as
// timing orders the pushes), so one pair of async runs cannot hold 0.5 pp.
double AccuracyTolerance(const std::string& mode) {
  return mode == "sync" ? 0.005 : 0.01;
}

void KillOneOfThreeMidRun(const std::string& mode) {
  // A smaller step than the default 0.1: softmax's test accuracy then
  // swings less between evaluations, so two runs compare.
  const std::vector<std::string> server = {"--mode=" + mode,
                                           "--lease_timeout=1s", "--lr=0.05"};
  Job healthy("partitions_healthy_" + mode, server, 3, kWorkerFlags);
  ASSERT_TRUE(healthy.Finishes(0) && healthy.Finishes(1) &&
              healthy.Finishes(2));
  EXPECT_THAT(DonePerEpoch(healthy),
              ElementsAre(kPartitions, kPartitions, kPartitions));

  Job job("partitions_sigkill_" + mode, server, 3, kWorkerFlags);
  ASSERT_TRUE(job.WaitForEpoch(1.5));
  const double killed_at = Field(job.Metrics().back(), "epoch");
  job.worker(2).Signal(SIGKILL);
  EXPECT_TRUE(job.Finishes(0)) << job.Log("worker-0");
  EXPECT_TRUE(job.Finishes(1)) << job.Log("worker-1");

  // Every partition of every epoch done once: the dead worker's went to
  // the others once its lease expired, and none was done twice (a done
  // partition is never leased again).
  EXPECT_THAT(DonePerEpoch(job),
              ElementsAre(kPartitions, kPartitions, kPartitions));
  EXPECT_THAT(job.Log("server"), HasSubstr("lease of worker 2"));
  const double final_epoch = Field(job.Metrics().back(), "epoch");
  EXPECT_EQ(final_epoch, 3.0);
  // The mean of the last evaluations: steadier than the last alone.
  EXPECT_NEAR(job.RecentAccuracy(5), healthy.RecentAccuracy(5),
              AccuracyTolerance(mode));
  std::cout << mode << ": killed at epoch " << killed_at
            << "; accuracy (mean of the last 5 evaluations) "
            << job.RecentAccuracy(5) << " vs " << healthy.RecentAccuracy(5)
            << " without the fault; final " << job.FinalAccuracy() << " vs "
            << healthy.FinalAccuracy() << "\n";
}

TEST(PartitionFaults, SyncTrainsEveryPartitionOnceThroughAWorkerKilled) {
  KillOneOfThreeMidRun("sync");
}

TEST(PartitionFaults, AsyncTrainsEveryPartitionOnceThroughAWorkerKilled) {
  KillOneOfThreeMidRun("async");
}

}  // namespace
}  // namespace ps
