// Data partitions through a crash: real ps_server and ps_worker processes
// on loopback leasing partitions from the server, one worker killed with
// SIGKILL mid-run; the server's partition table shows every partition of
// every epoch done, and the survivors reach the accuracy of a run without
// the fault. A worker paused past its lease finishes when resumed.
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"

namespace ps {
namespace {

using ::testing::AllOf;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

using test_support::Field;
using test_support::Job;
using test_support::WaitUntil;

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
// timing orders the pushes), so the difference of two runs does too: pairs
// 1.10 and 1.18 pp apart were seen on a loaded machine with a 1 pp bound.
// What this test proves exactly is the partition table's count above; the
// accuracy says the kill cost no learning beyond async's own noise.
double AccuracyTolerance(const std::string& mode) {
  return mode == "sync" ? 0.005 : 0.015;
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
  // The mean of the last evaluations: steadier than the last alone. Sync
  // holds the bound both ways; an async run that ends better than
  // its healthy pair lost nothing (1.55 pp better was seen at load).
  if (mode == "sync") {
    EXPECT_NEAR(job.RecentAccuracy(5), healthy.RecentAccuracy(5),
                AccuracyTolerance(mode));
  } else {
    EXPECT_GE(job.RecentAccuracy(5),
              healthy.RecentAccuracy(5) - AccuracyTolerance(mode));
  }
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

// The partition `worker` holds as shard 0's log tells (its last lease not
// followed by its completion): "E/P", or nullopt.
std::optional<std::string> HeldPartition(const std::string& log,
                                         uint32_t worker) {
  const std::regex event(absl::StrCat("worker ", worker,
                                      " (leased|completed) partition "
                                      "([0-9]+) of epoch ([0-9]+)"));
  std::optional<std::string> held;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), event);
       it != std::sregex_iterator(); ++it) {
    const std::smatch& m = *it;
    if (m[1] == "leased") {
      held = absl::StrCat(m[3].str(), "/", m[2].str());
    } else {
      held.reset();
    }
  }
  return held;
}

// Whether a worker other than `worker` leased partition `held` ("E/P").
bool TakenByAnother(const std::string& log, uint32_t worker,
                    const std::string& held) {
  const std::vector<std::string> ep = absl::StrSplit(held, '/');
  const std::regex taken(absl::StrCat("worker ([0-9]+) leased partition ",
                                      ep[1], " of epoch ", ep[0], " "));
  for (auto it = std::sregex_iterator(log.begin(), log.end(), taken);
       it != std::sregex_iterator(); ++it) {
    if ((*it)[1] != absl::StrCat(worker)) return true;
  }
  return false;
}

// A worker paused (SIGSTOP) mid-partition until its lease expired and
// another worker took its partition, then resumed: its pushes count, the
// completion of the partition it no longer holds is skipped (not a
// failure), it leases on and finishes; the table counts every partition
// once.
TEST(PartitionFaults, AWorkerPausedPastItsLeaseFinishesWhenResumed) {
  const std::vector<std::string> server = {"--mode=async",
                                           "--lease_timeout=1s"};
  // Ten epochs, and the pause waits for worker 2's first lease: on a
  // loaded machine it started 1.2 s after the others, which had finished
  // two epochs by then (CI, 5 Dec 2026).
  constexpr int kEpochs = 10;
  Job job("partitions_sigstop", server, 3,
          {"--model=softmax", absl::StrCat("--epochs=", kEpochs),
           "--eval_every=0.1", "--data_partitions=30"});
  ASSERT_TRUE(
      WaitUntil([&] { return HeldPartition(job.Log("server"), 2).has_value(); },
                absl::Seconds(60)))
      << "worker 2 never leased a partition:\n"
      << job.Log("server");
  // Paused mid-partition: between a completion and the next lease it
  // holds nothing, so resume and pause again. The log is read once its
  // lease expired: a push it sent just before the pause is in by then.
  std::optional<std::string> held;
  for (int attempt = 0; attempt < 5 && !held.has_value(); ++attempt) {
    job.worker(2).Signal(SIGSTOP);
    ASSERT_TRUE(job.WaitUntilGone(2));
    held = HeldPartition(job.Log("server"), 2);
    if (!held.has_value()) {
      job.worker(2).Signal(SIGCONT);
      ASSERT_TRUE(WaitUntil(
          [&] { return HeldPartition(job.Log("server"), 2).has_value(); }));
    }
  }
  ASSERT_TRUE(held.has_value()) << job.Log("server");
  EXPECT_TRUE(
      WaitUntil([&] { return TakenByAnother(job.Log("server"), 2, *held); },
                absl::Seconds(60)))
      << "nobody took partition " << *held;
  job.worker(2).Signal(SIGCONT);

  EXPECT_TRUE(job.Finishes(0)) << job.Log("worker-0");
  EXPECT_TRUE(job.Finishes(1)) << job.Log("worker-1");
  EXPECT_TRUE(job.Finishes(2)) << job.Log("worker-2");
  EXPECT_THAT(DonePerEpoch(job), AllOf(SizeIs(kEpochs), Each(kPartitions)));
  EXPECT_THAT(job.Log("server"), HasSubstr("its completion is not recorded"));
  EXPECT_THAT(job.Log("worker-2"), HasSubstr("no longer this worker's"));
  EXPECT_THAT(job.Log("worker-2"), HasSubstr("1 completions skipped"));
}

// Sync: a worker with no partition free waits in the job, idle (no round
// waits for it), rather than leaving; when the last holder dies, the idle
// worker is still there to take its partition. Worker 0 owns two of the
// three partitions, worker 1 one: worker 1 goes idle while worker 0
// trains its second, which is then killed.
TEST(PartitionFaults, AnIdleWorkerTakesThePartitionsOfOneThatDiesLater) {
  Job job("partitions_idle", {"--mode=sync", "--lease_timeout=1s"}, 2,
          {"--model=softmax", "--epochs=1", "--eval_every=1", "--batch_size=8",
           "--data_partitions=3"});
  ASSERT_TRUE(WaitUntil(
      [&] {
        return job.Log("server").find("worker 1 waits for a data partition") !=
               std::string::npos;
      },
      absl::Seconds(120)))
      << job.Log("server");
  job.worker(0).Signal(SIGKILL);
  const std::optional<std::string> held = HeldPartition(job.Log("server"), 0);
  ASSERT_TRUE(held.has_value()) << "worker 0 finished before it was killed";
  EXPECT_TRUE(job.Finishes(1)) << job.Log("worker-1");
  EXPECT_TRUE(TakenByAnother(job.Log("server"), 0, *held)) << job.Log("server");
  EXPECT_THAT(DonePerEpoch(job), ElementsAre(3u));
}

// The time of day, in seconds, of the first log line holding `what`
// ("2026-12-04T19:14:14.123 I ps_server …"); nullopt when none does.
std::optional<double> LogTime(const std::string& log, const std::string& what) {
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (line.find(what) == absl::string_view::npos) continue;
    int hours = 0, minutes = 0;
    double seconds = 0;
    const std::string text(line);
    if (std::sscanf(text.c_str(), "%*d-%*d-%*dT%d:%d:%lf", &hours, &minutes,
                    &seconds) != 3) {
      return std::nullopt;
    }
    return hours * 3600.0 + minutes * 60 + seconds;
  }
  return std::nullopt;
}

// A 4th worker, a new rank beyond --num_workers=3, joins a running sync job
// at epoch 1: it is accepted (partitions on), takes a partition within one
// lease period of registering, and every partition is trained once.
TEST(PartitionJoin, AFourthWorkerTakesAPartitionWithinOneLeasePeriod) {
  const absl::Duration lease = absl::Seconds(2);
  // Batches of 16 and 4 epochs: the job still runs when the joiner has
  // started, on a loaded machine too.
  Job job("partitions_join",
          {"--mode=sync", "--lease_timeout=2s", "--max_workers=4"}, 3,
          {"--model=softmax", "--epochs=4", "--eval_every=0.1",
           "--batch_size=16", "--data_partitions=30"});
  ASSERT_TRUE(job.WaitForEpoch(1.0));
  job.StartWorker(3);
  ASSERT_TRUE(WaitUntil(
      [&] {
        return job.Log("server").find("worker 3 leased partition") !=
               std::string::npos;
      },
      absl::Seconds(60)))
      << job.Log("worker-3");
  const std::string log = job.Log("server");
  const std::optional<double> joined = LogTime(log, "worker 3 registered");
  const std::optional<double> leased =
      LogTime(log, "worker 3 leased partition");
  ASSERT_TRUE(joined.has_value() && leased.has_value()) << log;
  EXPECT_LT(*leased - *joined, absl::ToDoubleSeconds(lease));
  for (uint32_t rank = 0; rank < 4; ++rank) {
    EXPECT_TRUE(job.Finishes(rank)) << job.Log(absl::StrCat("worker-", rank));
  }
  EXPECT_THAT(DonePerEpoch(job),
              ElementsAre(kPartitions, kPartitions, kPartitions, kPartitions));
  EXPECT_THAT(job.Log("server"), HasSubstr("worker 3 completed partition"));
  std::cout << "worker 3 took its first partition "
            << absl::StrFormat("%.3f", *leased - *joined)
            << " s after registering\n";
}

}  // namespace
}  // namespace ps
