// Training that never hangs: real ps_server and ps_worker processes on
// loopback, with workers killed, restarted and paused mid-run.
#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"

namespace ps {
namespace {

using ::testing::HasSubstr;

using test_support::Field;
using test_support::Job;

const std::vector<std::string> kWorkerFlags = {"--model=softmax", "--epochs=3",
                                               "--eval_every=0.1"};
constexpr double kLeaseSeconds = 1.0;
const std::vector<std::string> kSyncServer = {"--mode=sync",
                                              "--lease_timeout=1s"};

TEST(Faults, SyncTrainingRidesThroughAWorkerKilledWithSigkill) {
  Job healthy("healthy", kSyncServer, 3, kWorkerFlags);
  ASSERT_TRUE(healthy.Finishes(0) && healthy.Finishes(1) &&
              healthy.Finishes(2));

  Job job("sigkill", kSyncServer, 3, kWorkerFlags);
  ASSERT_TRUE(job.WaitForEpoch(0.9));  // about a third of the run
  const double killed_at = Field(job.Metrics().back(), "epoch");
  job.worker(2).Signal(SIGKILL);
  EXPECT_TRUE(job.Finishes(0)) << job.Log("worker-0");
  EXPECT_TRUE(job.Finishes(1)) << job.Log("worker-1");

  // The survivors stalled for at most the lease plus one round (rounds take
  // milliseconds; leases are checked every 100 ms), and the stall was seen.
  const double stall = job.LongestStepAfter(killed_at);
  EXPECT_LT(stall, kLeaseSeconds + 0.5);
  EXPECT_GT(stall, kLeaseSeconds * 0.5);
  EXPECT_NEAR(job.RecentAccuracy(5), healthy.RecentAccuracy(5), 0.005);
  EXPECT_NEAR(job.FinalAccuracy(), healthy.FinalAccuracy(), 0.015);
  EXPECT_THAT(job.Log("server"), HasSubstr("lease of worker 2"));
  EXPECT_EQ(job.Status().leases_expired(), 1u);
  std::cout << "stall " << stall << " s; final accuracy " << job.FinalAccuracy()
            << " vs " << healthy.FinalAccuracy() << " without the fault\n";
}

TEST(Faults, AKilledWorkerRestartedLaterRejoinsAndTheJobFinishes) {
  // The MLP makes the run long enough to outlast the absence (a lease).
  Job job("restart", kSyncServer, 3,
          {"--model=mlp", "--epochs=3", "--eval_every=0.1"});
  ASSERT_TRUE(job.WaitForEpoch(0.9));
  job.worker(2).Signal(SIGKILL);
  ASSERT_TRUE(job.worker(2).WaitFor(absl::Seconds(10)).has_value());
  // Away until its lease expired, so it comes back as a rejoining worker.
  ASSERT_TRUE(job.WaitUntilGone(2)) << job.Log("server");
  const uint64_t pushes_before = job.Status().workers(2).pushes();
  job.StartWorker(2);
  EXPECT_TRUE(job.Finishes(0));
  EXPECT_TRUE(job.Finishes(1));
  EXPECT_TRUE(job.Finishes(2)) << job.Log("worker-2");
  EXPECT_THAT(job.Log("server"), HasSubstr("worker 2 rejoined"));
  EXPECT_THAT(job.Log("worker-2"), HasSubstr("rejoined the job"));
  const ps::v1::StatusResponse status = job.Status();
  ASSERT_EQ(status.workers_size(), 3);
  // The old process and the new one (each may also have renewed a lease
  // it let expire under load).
  EXPECT_GE(status.workers(2).registrations(), 2u);
  // The new process trained (its pushes are counted afresh) and resumed
  // where the old one stopped rather than from step 0.
  EXPECT_GT(status.workers(2).pushes(), 0u);
  EXPECT_THAT(job.Log("worker-2"),
              ::testing::Not(HasSubstr("resuming at step 0")));
  EXPECT_GT(pushes_before, 0u);
}

TEST(Faults, ASigtermedWorkerLeavesAtOnceAndItsRestartResumesWhereItStopped) {
  // A lease long enough that, had the worker not left, the others would
  // visibly wait for its expiry.
  Job job("sigterm", {"--mode=sync", "--lease_timeout=60s"}, 3, kWorkerFlags);
  ASSERT_TRUE(job.WaitForEpoch(0.9));
  const double stopped_at = Field(job.Metrics().back(), "epoch");
  job.worker(2).Signal(SIGTERM);
  const std::optional<int> exit = job.worker(2).WaitFor(absl::Seconds(10));
  ASSERT_TRUE(exit.has_value()) << job.Log("worker-2");
  EXPECT_TRUE(WIFEXITED(*exit) && WEXITSTATUS(*exit) == 128 + SIGTERM)
      << "status " << *exit << ": " << job.Log("worker-2");
  EXPECT_THAT(job.Log("worker-2"), HasSubstr("left the job"));
  const ps::v1::StatusResponse stopped = job.Status();
  ASSERT_EQ(stopped.workers_size(), 3);
  EXPECT_EQ(stopped.workers(2).state(), ps::v1::WORKER_STATE_LEFT);
  EXPECT_GT(stopped.workers(2).pushes(), 0u);

  job.StartWorker(2);
  EXPECT_TRUE(job.Finishes(0));
  EXPECT_TRUE(job.Finishes(1));
  EXPECT_TRUE(job.Finishes(2)) << job.Log("worker-2");
  EXPECT_THAT(job.Log("worker-2"), HasSubstr("rejoined the job"));
  EXPECT_THAT(job.Log("worker-2"),
              ::testing::Not(HasSubstr("resuming at step 0")));
  EXPECT_LT(job.LongestStepAfter(stopped_at), 1.0) << job.Log("server");
  EXPECT_EQ(job.Status().leases_expired(), 0u);
}

// Stops rank 1 of two with `signal` a third into the run, starts it again a
// second later, and checks that both finish and rank 1 resumed where it
// stopped. A hang fails within the workers' 30 s retry budget.
void RestartRankOneMidRun(const std::string& name,
                          const std::vector<std::string>& server_flags,
                          int signal) {
  // The MLP keeps rank 0 busy until rank 1 is back.
  Job job(name, server_flags, 2,
          {"--model=mlp", "--epochs=2", "--eval_every=0.1",
           "--max_retry_time=30s"});
  ASSERT_TRUE(job.WaitForEpoch(0.6));
  job.worker(1).Signal(signal);
  ASSERT_TRUE(job.worker(1).WaitFor(absl::Seconds(10)).has_value());
  // Away until the server stopped counting it, as in the report.
  ASSERT_TRUE(job.WaitUntilGone(1)) << job.Log("server");
  job.StartWorker(1);
  EXPECT_TRUE(job.Finishes(0)) << job.Log("worker-0");
  EXPECT_TRUE(job.Finishes(1)) << job.Log("worker-1");
  EXPECT_THAT(job.Log("worker-1"), HasSubstr("rejoined the job"));
  EXPECT_THAT(job.Log("worker-1"),
              ::testing::Not(HasSubstr("resuming at step 0")));
}

TEST(Faults, SspRidesThroughAWorkerKilledAndRestarted) {
  RestartRankOneMidRun("ssp_kill",
                       {"--mode=ssp", "--staleness=2", "--lease_timeout=1s"},
                       SIGKILL);
}

TEST(Faults, SspRidesThroughAWorkerStoppedWithSigtermAndRestarted) {
  RestartRankOneMidRun("ssp_term",
                       {"--mode=ssp", "--staleness=2", "--lease_timeout=1s"},
                       SIGTERM);
}

TEST(Faults, AsyncRidesThroughAWorkerKilledAndRestarted) {
  RestartRankOneMidRun("async_kill", {"--mode=async", "--lease_timeout=1s"},
                       SIGKILL);
}

TEST(Faults, AWorkerRetryingADeadServerStillStopsWithinItsGracePeriod) {
  // Nothing listens on port 1: Register is retried for --max_retry_time.
  const std::string log =
      absl::StrCat(test_support::FreshDir("grace"), "/worker.log");
  absl::StatusOr<common::Subprocess> worker = common::Subprocess::Spawn(
      {absl::StrCat(test_support::BinDir(), "/ps_worker"),
       "--servers=127.0.0.1:1", "--max_retry_time=300s", "--stop_grace=1s"},
      log);
  ASSERT_TRUE(worker.ok()) << worker.status();
  // SIGTERM once it is deep in its retries (the third attempt is logged).
  ASSERT_TRUE(test_support::WaitUntil([&] {
    return test_support::ReadFile(log).find("attempt 3 failed") !=
           std::string::npos;
  })) << test_support::ReadFile(log);
  worker->Signal(SIGTERM);
  const std::optional<int> exit = worker->WaitFor(absl::Seconds(5));
  ASSERT_TRUE(exit.has_value()) << test_support::ReadFile(log);
  EXPECT_TRUE(WIFEXITED(*exit) && WEXITSTATUS(*exit) == 128 + SIGTERM)
      << "status " << *exit;
  EXPECT_THAT(test_support::ReadFile(log), HasSubstr("grace period"));
}

TEST(Faults, WithAQuorumAPausedWorkerHoldsNobodyBackAndItsLatePushesAreStale) {
  // The MLP keeps the other two busy for the whole pause: once one of them
  // finishes, a quorum of 2 needs the paused worker or its lease expiry.
  Job job("sigstop", {"--mode=sync", "--sync_quorum=2", "--lease_timeout=3s"},
          3, {"--model=mlp", "--epochs=3", "--eval_every=0.1"});
  ASSERT_TRUE(job.WaitForEpoch(0.3));
  job.worker(2).Signal(SIGSTOP);
  const double stopped_at = Field(job.Metrics().back(), "epoch");
  const uint64_t rounds_at_stop = job.Status().version();
  // The other two kept closing rounds while it was stopped.
  EXPECT_TRUE(test_support::WaitUntil([&] {
    return job.Status().version() > rounds_at_stop + 10;
  })) << job.Log("server");
  job.worker(2).Signal(SIGCONT);
  EXPECT_TRUE(job.Finishes(0));
  EXPECT_TRUE(job.Finishes(1));
  EXPECT_TRUE(job.Finishes(2)) << job.Log("worker-2");
  // Below the 3 s lease: the others never waited for the paused worker
  // (rounds take milliseconds; the margin is for a loaded machine).
  EXPECT_LT(job.LongestStepAfter(stopped_at), 2.5) << job.Log("server");
  const ps::v1::StatusResponse status = job.Status();
  EXPECT_GT(status.pushes_stale(), 0u);
  EXPECT_GT(status.rounds_closed_by_quorum(), 0u);
}

TEST(Faults, SspNeverLetsTheFastestWorkerReadMoreThanStalenessClocksAhead) {
  Job job("ssp", {"--mode=ssp", "--staleness=2", "--lease_timeout=30s"}, 2,
          {"--model=softmax", "--epochs=1", "--eval_every=0.25"});
  ASSERT_TRUE(job.WaitForEpoch(0.25));
  job.worker(1).Signal(SIGSTOP);
  // Rank 0 runs until it reaches the bound, where it parks.
  ps::v1::StatusResponse held;
  EXPECT_TRUE(test_support::WaitUntil([&] {
    held = job.Status();
    return held.workers_size() == 2 &&
           held.workers(0).clock() >= held.workers(1).clock() + 2 + 1;
  }));
  // Parked: a while later it is still there, not further ahead.
  const uint64_t parked_at = held.workers(0).clock();
  EXPECT_FALSE(test_support::WaitUntil(
      [&] { return job.Status().workers(0).clock() > parked_at; },
      absl::Seconds(1)));
  held = job.Status();
  ASSERT_EQ(held.workers_size(), 2);
  EXPECT_EQ(held.workers(0).clock(), held.workers(1).clock() + 2 + 1)
      << "rank 0 pushed its step at the bound, then parked";
  job.worker(1).Signal(SIGCONT);
  EXPECT_TRUE(job.Finishes(0));
  EXPECT_TRUE(job.Finishes(1));
  EXPECT_EQ(job.Status().max_read_clock_gap(), 2u);
}

// The number before `label` in a worker's "finished: …" summary line.
uint64_t SummaryCount(const std::string& log, const std::string& label) {
  const size_t line = log.find("finished: ");
  EXPECT_NE(line, std::string::npos) << log;
  const size_t at = log.find(label, line);
  EXPECT_NE(at, std::string::npos) << label << " missing in " << log;
  if (line == std::string::npos || at == std::string::npos) return 0;
  size_t start = log.rfind(' ', at - 2) + 1;
  return std::strtoull(log.c_str() + start, nullptr, 10);
}

// Replies lost after the server applied the push (a fifth of them): the
// retries are answered DUPLICATE, and the workers' summaries must still add
// up to what the server applied.
TEST(Faults, WorkersCountWhatTheServerDidWhenRepliesAreLost) {
  Job job("lost_replies",
          {"--mode=async",
           "--inject_faults=seed=5,side=server,error=UNAVAILABLE:0.2,"
           "methods=Push|PushPull"},
          2, {"--model=softmax", "--epochs=1", "--eval_every=0.5"});
  ASSERT_TRUE(job.Finishes(0)) << job.Log("worker-0");
  ASSERT_TRUE(job.Finishes(1)) << job.Log("worker-1");
  const ps::v1::StatusResponse status = job.Status();
  const uint64_t applied =
      SummaryCount(job.Log("worker-0"), "shard pushes applied") +
      SummaryCount(job.Log("worker-1"), "shard pushes applied");
  const uint64_t duplicate = SummaryCount(job.Log("worker-0"), "duplicate") +
                             SummaryCount(job.Log("worker-1"), "duplicate");
  std::cout << "server applied " << status.pushes_applied() << " and saw "
            << status.pushes_duplicate() << " duplicates; workers report "
            << applied << " applied, " << duplicate << " duplicate\n";
  ASSERT_GT(status.pushes_duplicate(), 0u) << "no reply was lost";
  EXPECT_EQ(applied, status.pushes_applied());
  EXPECT_EQ(duplicate, 0u);
}

}  // namespace
}  // namespace ps
