// Training that never hangs: real ps_server and ps_worker processes on
// loopback, with workers killed, restarted and paused mid-run.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/rpc/channel.h"
#include "common/subprocess.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ps/v1/parameter_server.grpc.pb.h"

namespace ps {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

double Field(const std::string& json, const std::string& key) {
  const std::string needle = absl::StrCat("\"", key, "\":");
  const size_t at = json.find(needle);
  if (at == std::string::npos) return -1;
  return std::strtod(json.c_str() + at + needle.size(), nullptr);
}

// One server and W workers started as processes, as a user would start them.
class Job {
 public:
  Job(const std::string& name, std::vector<std::string> server_flags,
      uint32_t workers, std::vector<std::string> worker_flags)
      : dir_(absl::StrCat(::testing::TempDir(), "/ps_fault_", name, "_",
                          getpid())),
        bin_(std::getenv("PS_BIN_DIR") ? std::getenv("PS_BIN_DIR")
                                       : "build/bin"),
        num_workers_(workers),
        worker_flags_(std::move(worker_flags)) {
    EXPECT_EQ(std::system(absl::StrCat("rm -rf '", dir_, "' && mkdir -p '",
                                       dir_, "'")
                              .c_str()),
              0);
    std::vector<std::string> argv = {
        absl::StrCat(bin_, "/ps_server"), "--listen=127.0.0.1:0",
        absl::StrCat("--port_file=", dir_, "/port"),
        absl::StrCat("--num_workers=", workers)};
    argv.insert(argv.end(), server_flags.begin(), server_flags.end());
    auto server = common::Subprocess::Spawn(argv, dir_ + "/server.log");
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = std::make_unique<common::Subprocess>(std::move(*server));
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (ReadFile(dir_ + "/port").empty() && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    address_ = absl::StrCat("127.0.0.1:", ReadFile(dir_ + "/port"));
    for (uint32_t rank = 0; rank < workers; ++rank) StartWorker(rank);
  }

  void StartWorker(uint32_t rank) {
    std::vector<std::string> argv = {
        absl::StrCat(bin_, "/ps_worker"), absl::StrCat("--servers=", address_),
        absl::StrCat("--rank=", rank),
        absl::StrCat("--num_workers=", num_workers_),
        absl::StrCat("--metrics_out=", dir_, "/metrics.jsonl")};
    argv.insert(argv.end(), worker_flags_.begin(), worker_flags_.end());
    auto worker = common::Subprocess::Spawn(
        argv, absl::StrCat(dir_, "/worker-", rank, ".log"));
    EXPECT_TRUE(worker.ok()) << worker.status();
    if (workers_.size() <= rank) workers_.resize(rank + 1);
    workers_[rank] = std::make_unique<common::Subprocess>(std::move(*worker));
  }

  common::Subprocess& worker(uint32_t rank) { return *workers_[rank]; }

  // Rank 0's evaluations so far.
  std::vector<std::string> Metrics() const {
    return absl::StrSplit(ReadFile(dir_ + "/metrics.jsonl"), '\n',
                          absl::SkipEmpty());
  }

  // Waits until rank 0 has evaluated at or past `epoch`.
  bool WaitForEpoch(double epoch) const {
    const absl::Time give_up = absl::Now() + absl::Seconds(120);
    while (absl::Now() < give_up) {
      std::vector<std::string> lines = Metrics();
      if (!lines.empty() && Field(lines.back(), "epoch") >= epoch) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  // Whether `rank` ended by itself with status 0 within the time allowed.
  bool Finishes(uint32_t rank) {
    std::optional<int> status = workers_[rank]->WaitFor(absl::Seconds(180));
    return status.has_value() && common::ExitedCleanly(*status);
  }

  // The longest step in the evaluation intervals that end after `epoch`
  // (the first interval also holds the wait for every worker to start).
  double LongestStepAfter(double epoch) const {
    double longest = 0;
    for (const std::string& line : Metrics()) {
      if (Field(line, "epoch") > epoch) {
        longest = std::max(longest, Field(line, "max_step_s"));
      }
    }
    return longest;
  }

  double FinalAccuracy() const {
    std::vector<std::string> lines = Metrics();
    return lines.empty() ? -1 : Field(lines.back(), "test_accuracy");
  }

  // The mean of the last `n` evaluations: steadier than the last alone,
  // which swings by about half a point between evaluations.
  double RecentAccuracy(size_t n) const {
    std::vector<std::string> lines = Metrics();
    double sum = 0;
    size_t count = 0;
    for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size();
         ++i, ++count) {
      sum += Field(lines[i], "test_accuracy");
    }
    return count ? sum / count : -1;
  }

  ps::v1::StatusResponse Status() const {
    auto stub = ps::v1::ParameterServer::NewStub(rpc::CreateChannel(address_));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    ps::v1::StatusResponse status;
    EXPECT_TRUE(stub->Status(&context, ps::v1::StatusRequest(), &status).ok());
    return status;
  }

  std::string Log(const std::string& name) const {
    return ReadFile(absl::StrCat(dir_, "/", name, ".log"));
  }

 private:
  std::string dir_;
  std::string bin_;
  std::string address_;
  uint32_t num_workers_;
  std::vector<std::string> worker_flags_;
  std::unique_ptr<common::Subprocess> server_;
  std::vector<std::unique_ptr<common::Subprocess>> workers_;
};

const std::vector<std::string> kWorkerFlags = {"--model=softmax", "--epochs=3",
                                               "--eval_every=0.1"};
constexpr double kLeaseSeconds = 1.0;
const std::vector<std::string> kSyncServer = {"--mode=sync",
                                              "--lease_timeout=1s"};

TEST(Faults, SyncTrainingRidesThroughAWorkerKilledWithSigkill) {
  Job healthy("healthy", kSyncServer, 3, kWorkerFlags);
  ASSERT_TRUE(healthy.Finishes(0) && healthy.Finishes(1) && healthy.Finishes(2));

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
  std::cout << "stall " << stall << " s; final accuracy "
            << job.FinalAccuracy() << " vs " << healthy.FinalAccuracy()
            << " without the fault\n";
}

TEST(Faults, AKilledWorkerRestartedLaterRejoinsAndTheJobFinishes) {
  // The MLP makes the run long enough to outlast the 3 s of absence.
  Job job("restart", kSyncServer, 3,
          {"--model=mlp", "--epochs=3", "--eval_every=0.1"});
  ASSERT_TRUE(job.WaitForEpoch(0.9));
  job.worker(2).Signal(SIGKILL);
  ASSERT_TRUE(job.worker(2).WaitFor(absl::Seconds(10)).has_value());
  absl::SleepFor(absl::Seconds(3));
  const uint64_t pushes_before = job.Status().workers(2).pushes();
  job.StartWorker(2);
  EXPECT_TRUE(job.Finishes(0));
  EXPECT_TRUE(job.Finishes(1));
  EXPECT_TRUE(job.Finishes(2)) << job.Log("worker-2");
  EXPECT_THAT(job.Log("server"), HasSubstr("worker 2 rejoined"));
  EXPECT_THAT(job.Log("worker-2"), HasSubstr("rejoined the job"));
  const ps::v1::StatusResponse status = job.Status();
  ASSERT_EQ(status.workers_size(), 3);
  EXPECT_EQ(status.workers(2).registrations(), 2u);
  // The new process trained (its pushes are counted afresh) and resumed
  // where the old one stopped rather than from step 0.
  EXPECT_GT(status.workers(2).pushes(), 0u);
  EXPECT_THAT(job.Log("worker-2"), ::testing::Not(HasSubstr("resuming at step 0")));
  EXPECT_GT(pushes_before, 0u);
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
  absl::SleepFor(absl::Seconds(5));
  // The other two kept closing rounds while it was stopped.
  EXPECT_GT(job.Status().version(), rounds_at_stop + 10);
  job.worker(2).Signal(SIGCONT);
  EXPECT_TRUE(job.Finishes(0));
  EXPECT_TRUE(job.Finishes(1));
  EXPECT_TRUE(job.Finishes(2)) << job.Log("worker-2");
  EXPECT_LT(job.LongestStepAfter(stopped_at), 1.0) << job.Log("server");
  const ps::v1::StatusResponse status = job.Status();
  EXPECT_GT(status.pushes_stale(), 0u);
  EXPECT_GT(status.rounds_closed_by_quorum(), 0u);
}

TEST(Faults, SspNeverLetsTheFastestWorkerReadMoreThanStalenessClocksAhead) {
  Job job("ssp", {"--mode=ssp", "--staleness=2", "--lease_timeout=30s"}, 2,
          {"--model=softmax", "--epochs=1", "--eval_every=0.25"});
  ASSERT_TRUE(job.WaitForEpoch(0.25));
  job.worker(1).Signal(SIGSTOP);
  absl::SleepFor(absl::Seconds(2));
  // Rank 0 is held at most 2 clocks ahead of the paused worker.
  const ps::v1::StatusResponse held = job.Status();
  ASSERT_EQ(held.workers_size(), 2);
  EXPECT_EQ(held.workers(0).clock(), held.workers(1).clock() + 2 + 1)
      << "rank 0 pushed its step at the bound, then parked";
  job.worker(1).Signal(SIGCONT);
  EXPECT_TRUE(job.Finishes(0));
  EXPECT_TRUE(job.Finishes(1));
  EXPECT_EQ(job.Status().max_read_clock_gap(), 2u);
}

}  // namespace
}  // namespace ps
