// What a new user meets first, with the real binaries as processes: a port
// already in use, a second run of a finished job, a worker started with the
// servers in the wrong order, psctl against a dead server, Ctrl-C on
// ps_local.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/json.h"
#include "common/rpc/channel.h"
#include "common/subprocess.h"
#include "common/theta_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ps/v1/parameter_server.grpc.pb.h"
#include "tests/job.h"

namespace ps {
namespace {

using test_support::BinDir;
using test_support::ExitedWith;
using test_support::FreshDir;
using test_support::Outcome;
using test_support::ReadFile;
using test_support::RunBinary;
using ::testing::HasSubstr;
using ::testing::Not;

// S servers of one job as processes, each on a port of its own.
class Servers {
 public:
  Servers(const std::string& dir, uint32_t count,
          std::vector<std::string> flags)
      : dir_(dir),
        flags_(std::move(flags)),
        processes_(count),
        addresses_(count) {
    for (uint32_t i = 0; i < count; ++i) Start(i, "127.0.0.1:0");
  }

  // Starts shard i (again) on `listen`; waits until it serves.
  void Start(uint32_t i, const std::string& listen) {
    const std::string port_file = absl::StrCat(dir_, "/server-", i, ".port");
    std::remove(port_file.c_str());
    std::vector<std::string> argv = {
        BinDir() + "/ps_server", absl::StrCat("--listen=", listen),
        absl::StrCat("--port_file=", port_file),
        absl::StrCat("--shard_index=", i),
        absl::StrCat("--num_shards=", processes_.size())};
    argv.insert(argv.end(), flags_.begin(), flags_.end());
    auto process = common::Subprocess::Spawn(
        argv, absl::StrCat(dir_, "/server-", i, ".log"));
    ASSERT_TRUE(process.ok()) << process.status();
    processes_[i] = std::make_unique<common::Subprocess>(std::move(*process));
    ASSERT_TRUE(test_support::WaitForPortFile(
        *processes_[i], port_file, absl::StrCat(dir_, "/server-", i, ".log")));
    addresses_[i] = absl::StrCat("127.0.0.1:", ReadFile(port_file));
  }

  // SIGTERM: the server drains, checkpoints and exits 0.
  void Stop(uint32_t i) {
    EXPECT_TRUE(common::ExitedCleanly(processes_[i]->Stop(absl::Seconds(30))));
  }

  const std::string& address(uint32_t i) const { return addresses_[i]; }
  std::string list() const { return absl::StrJoin(addresses_, ","); }

  ps::v1::StatusResponse Status(uint32_t i) const {
    auto stub =
        ps::v1::ParameterServer::NewStub(rpc::CreateChannel(addresses_[i]));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    ps::v1::StatusResponse status;
    EXPECT_TRUE(stub->Status(&context, ps::v1::StatusRequest(), &status).ok());
    return status;
  }

 private:
  std::string dir_;
  std::vector<std::string> flags_;
  std::vector<std::unique_ptr<common::Subprocess>> processes_;
  std::vector<std::string> addresses_;
};

std::unique_ptr<common::Subprocess> StartWorker(
    const std::string& log, const std::string& servers, uint32_t rank,
    const std::vector<std::string>& flags) {
  std::vector<std::string> argv = {BinDir() + "/ps_worker",
                                   absl::StrCat("--servers=", servers),
                                   absl::StrCat("--rank=", rank)};
  argv.insert(argv.end(), flags.begin(), flags.end());
  auto process = common::Subprocess::Spawn(argv, log);
  EXPECT_TRUE(process.ok()) << process.status();
  if (!process.ok()) return nullptr;
  return std::make_unique<common::Subprocess>(std::move(*process));
}

bool FinishesCleanly(common::Subprocess& worker) {
  const std::optional<int> status = worker.WaitFor(absl::Seconds(180));
  return status.has_value() && common::ExitedCleanly(*status);
}

TEST(FirstContact, ASecondServerOnABusyPortFailsAtStartUp) {
  const std::string dir = FreshDir("busy_port");
  Servers first(dir, 1, {});
  // The same port, as two servers left at the default --listen would be.
  Outcome second =
      RunBinary({"ps_server", absl::StrCat("--listen=", first.address(0)),
                 "--shard_index=1", "--num_shards=2"},
                dir + "/second.out", absl::Seconds(30));
  EXPECT_TRUE(ExitedWith(second, 2)) << second.output;
  EXPECT_THAT(second.output, HasSubstr("the port is in use"));
  EXPECT_EQ(std::count(second.output.begin(), second.output.end(), '\n'), 1)
      << second.output;
  // The first server still answers as itself.
  EXPECT_EQ(first.Status(0).shard_index(), 0u);
}

TEST(FirstContact, ARerunOfAFinishedJobExitsAtOnceWithoutTraining) {
  const std::string dir = FreshDir("finished_job");
  const std::string checkpoints = dir + "/checkpoints";
  ASSERT_EQ(std::system(absl::StrCat("mkdir -p '", checkpoints, "'").c_str()),
            0);
  Servers servers(dir, 2,
                  {"--num_workers=2", "--mode=sync",
                   absl::StrCat("--checkpoint_dir=", checkpoints)});
  // Bounded retries: before the fix a rerun hung in its final pull.
  const std::vector<std::string> flags = {"--num_workers=2", "--epochs=1",
                                          "--eval_every=1", "--rpc_deadline=2s",
                                          "--max_retry_time=5s"};
  auto rank0 = StartWorker(dir + "/worker-0.log", servers.list(), 0, flags);
  auto rank1 = StartWorker(dir + "/worker-1.log", servers.list(), 1, flags);
  ASSERT_TRUE(FinishesCleanly(*rank0)) << ReadFile(dir + "/worker-0.log");
  ASSERT_TRUE(FinishesCleanly(*rank1)) << ReadFile(dir + "/worker-1.log");
  const uint64_t version = servers.Status(0).version();
  const ps::v1::StatusResponse done = servers.Status(1);
  EXPECT_EQ(done.workers_size(), 2);
  std::vector<uint64_t> incarnations(2);
  for (const ps::v1::WorkerStatus& w : done.workers()) {
    EXPECT_TRUE(w.finished()) << "worker " << w.worker_id();
    incarnations[w.worker_id() % 2] = w.incarnation();
  }

  auto rerun = [&](const std::string& name) {
    const absl::Time start = absl::Now();
    Outcome outcome = RunBinary(
        {"ps_worker", absl::StrCat("--servers=", servers.list()), "--rank=0",
         flags[0], flags[1], flags[2], flags[3], flags[4]},
        absl::StrCat(dir, "/", name, ".out"), absl::Seconds(60));
    EXPECT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
    EXPECT_THAT(outcome.output,
                HasSubstr("the job is already complete: workers 0 to 1 "
                          "finished all their epochs"));
    EXPECT_THAT(outcome.output, Not(HasSubstr("steps of")));
    // Loading the data set is most of it.
    EXPECT_LT(absl::Now() - start, absl::Seconds(15));
    // It did not register (a new incarnation would), so it trained nothing.
    for (uint32_t i = 0; i < 2; ++i) {
      const ps::v1::StatusResponse status = servers.Status(i);
      EXPECT_EQ(status.version(), version);
      ASSERT_EQ(status.workers_size(), 2);
      for (const ps::v1::WorkerStatus& w : status.workers()) {
        EXPECT_TRUE(w.finished()) << "worker " << w.worker_id();
        EXPECT_EQ(w.incarnation(), incarnations[w.worker_id()]);
      }
    }
  };
  rerun("rerun");
  // The finished job survives a restart of its servers (their checkpoints).
  for (uint32_t i = 0; i < 2; ++i) {
    servers.Stop(i);
    servers.Start(i, servers.address(i));
  }
  rerun("rerun_after_restart");
}

TEST(FirstContact, AWorkerWithTheServersOutOfOrderNeverCountsAsAMember) {
  const std::string dir = FreshDir("wrong_order");
  Servers servers(dir, 2,
                  {"--num_workers=2", "--mode=sync", "--lease_timeout=2s"});
  const std::vector<std::string> flags = {"--num_workers=2", "--epochs=1",
                                          "--eval_every=1"};
  Outcome wrong = RunBinary(
      {"ps_worker",
       absl::StrCat("--servers=", servers.address(1), ",", servers.address(0)),
       "--rank=0", flags[0], flags[1]},
      dir + "/wrong.out", absl::Seconds(60));
  EXPECT_TRUE(ExitedWith(wrong, 2)) << wrong.output;
  EXPECT_THAT(wrong.output, HasSubstr("list the servers in shard order"));
  EXPECT_EQ(std::count(wrong.output.begin(), wrong.output.end(), '\n'), 1)
      << wrong.output;
  Outcome short_list =
      RunBinary({"ps_worker", absl::StrCat("--servers=", servers.address(0)),
                 "--rank=0", flags[0], flags[1]},
                dir + "/short.out", absl::Seconds(60));
  EXPECT_TRUE(ExitedWith(short_list, 2)) << short_list.output;
  EXPECT_THAT(short_list.output,
              HasSubstr("--servers lists 1 server but " + servers.address(0) +
                        " is shard 0 of 2"));
  for (uint32_t i = 0; i < 2; ++i) {
    EXPECT_EQ(servers.Status(i).workers_size(), 0);
  }

  // The next, correct run: rank 1 first, alone until rank 0 registers. A
  // member left over from the failed start (its lease expired by now)
  // would let rank 1's rounds close without rank 0: more rounds than steps.
  auto wait_for =
      [&](const std::function<bool(const ps::v1::StatusResponse&)>& condition) {
        test_support::WaitUntil([&] { return condition(servers.Status(0)); },
                                absl::Seconds(60));
      };
  wait_for(
      [](const ps::v1::StatusResponse& s) { return s.live_workers() == 0; });
  auto rank1 = StartWorker(dir + "/worker-1.log", servers.list(), 1, flags);
  // Until rank 1's first gradient is held for the round, or applied.
  wait_for([](const ps::v1::StatusResponse& s) {
    return s.round_gradients() > 0 || s.version() > 0;
  });
  auto rank0 = StartWorker(dir + "/worker-0.log", servers.list(), 0, flags);
  ASSERT_TRUE(FinishesCleanly(*rank0)) << ReadFile(dir + "/worker-0.log");
  ASSERT_TRUE(FinishesCleanly(*rank1)) << ReadFile(dir + "/worker-1.log");
  // 64 data partitions, 32 per worker fault-free (slot k to worker k mod 2),
  // each 15 batches of at most 64: 480 steps per worker, one round each.
  for (uint32_t i = 0; i < 2; ++i) {
    const ps::v1::StatusResponse status = servers.Status(i);
    EXPECT_EQ(status.version(), 480u) << "shard " << i;
    EXPECT_EQ(status.rounds_closed_all_live(), 480u) << "shard " << i;
  }
}

// A whole-model file (as psctl export writes) of these tensors, all zeros.
std::string ModelFile(const std::string& path,
                      std::vector<common::TensorSpec> tensors) {
  common::ThetaFile file;
  file.tensors = std::move(tensors);
  file.values.assign(common::NumKeys(file.tensors), 0.0f);
  file.keys = {0, file.values.size()};
  EXPECT_TRUE(common::WriteThetaFile(path, file).ok());
  return path;
}

TEST(FirstContact,
     InitFromTakesTheModelFromTheFileAndStatesAMismatchRightWayRound) {
  const std::string dir = FreshDir("init_from");
  const std::string softmax = ModelFile(
      dir + "/softmax.theta",
      {{"softmax/weights", {784, 10}, false}, {"softmax/bias", {10}, true}});
  const std::string mlp =
      ModelFile(dir + "/mlp.theta", {{"mlp/fc1/weights", {784, 128}, false},
                                     {"mlp/fc1/bias", {128}, true},
                                     {"mlp/fc2/weights", {128, 10}, false},
                                     {"mlp/fc2/bias", {10}, true}});
  const std::string other =
      ModelFile(dir + "/other.theta", {{"other/w", {3}, false}});

  // No --model: the file's.
  Outcome taken = RunBinary(
      {"ps_worker", "--evaluate_only", absl::StrCat("--init_from=", mlp)},
      dir + "/taken.out", absl::Seconds(60));
  EXPECT_TRUE(ExitedWith(taken, 0)) << taken.output;
  // Untrained θ: every class scores alike, so one in ten is right.
  const common::Json evaluation =
      common::ParseJsonObject(taken.output.substr(taken.output.rfind('{')));
  EXPECT_EQ(common::NumberField(evaluation, "test_accuracy"), 0.1)
      << taken.output;
  EXPECT_EQ(common::NumberField(evaluation, "examples"), 10000) << taken.output;

  // The file holds softmax; mlp was asked for.
  Outcome mismatch = RunBinary({"ps_worker", "--evaluate_only", "--model=mlp",
                                absl::StrCat("--init_from=", softmax)},
                               dir + "/mismatch.out", absl::Seconds(60));
  EXPECT_TRUE(ExitedWith(mismatch, 2)) << mismatch.output;
  EXPECT_THAT(mismatch.output,
              HasSubstr("holds another model than --model=mlp: tensor #0 is "
                        "declared as softmax/weights[784,10] but requested as "
                        "mlp/fc1/weights[784,128]"));

  Outcome unknown = RunBinary(
      {"ps_worker", "--evaluate_only", absl::StrCat("--init_from=", other)},
      dir + "/unknown.out", absl::Seconds(60));
  EXPECT_TRUE(ExitedWith(unknown, 2)) << unknown.output;
  EXPECT_THAT(unknown.output,
              HasSubstr("--model is not given and --init_from=" + other +
                        " does not hold a model it knows: its tensors "
                        "(other/w[3]) are those of neither softmax nor mlp"));
  EXPECT_EQ(std::count(unknown.output.begin(), unknown.output.end(), '\n'), 1)
      << unknown.output;
}

TEST(FirstContact, PsctlStatusAsksEveryServerAtOnce) {
  const std::string dir = FreshDir("psctl_parallel");
  Servers live(dir, 1, {});
  // Nothing listens on ports 1 and 9 here: each is refused until --timeout.
  const absl::Time start = absl::Now();
  Outcome outcome = RunBinary(
      {"psctl", "status", "--timeout=4s",
       absl::StrCat("--servers=", live.address(0), ",127.0.0.1:1,127.0.0.1:9")},
      dir + "/psctl.out", absl::Seconds(60));
  const absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(ExitedWith(outcome, 1)) << outcome.output;
  EXPECT_THAT(outcome.output, HasSubstr(live.address(0) + " (advertised"));
  EXPECT_THAT(outcome.output, HasSubstr("psctl: 127.0.0.1:1:"));
  EXPECT_THAT(outcome.output, HasSubstr("psctl: 127.0.0.1:9:"));
  // One after another, the two dead servers alone take 2 x 4 s.
  EXPECT_LT(took, absl::Seconds(6));
}

// The mode and the workers' states travel as enums; psctl prints the words.
TEST(FirstContact, PsctlStatusPrintsTheModeAndWorkerStatesInWords) {
  const std::string dir = FreshDir("psctl_words");
  Servers servers(dir, 1, {"--mode=async"});
  auto stub =
      ps::v1::ParameterServer::NewStub(rpc::CreateChannel(servers.address(0)));
  ps::v1::RegisterRequest request;
  request.set_worker_id(0);
  request.set_incarnation(5);
  ps::v1::RegisterResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  ASSERT_TRUE(stub->Register(&context, request, &response).ok());
  EXPECT_EQ(servers.Status(0).mode(), ps::v1::MODE_ASYNC);
  ASSERT_EQ(servers.Status(0).workers_size(), 1);
  EXPECT_EQ(servers.Status(0).workers(0).state(), ps::v1::WORKER_STATE_LIVE);

  Outcome outcome =
      RunBinary({"psctl", "status", absl::StrCat("--servers=", servers.list())},
                dir + "/psctl.out", absl::Seconds(60));
  EXPECT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_THAT(outcome.output, HasSubstr(") async version 0,"));
  EXPECT_THAT(outcome.output, HasSubstr("  worker 0: live, incarnation 5,"));
}

std::vector<std::string> Lines(const std::string& path) {
  return absl::StrSplit(ReadFile(path), '\n', absl::SkipEmpty());
}

TEST(FirstContact,
     ARestartedRankZeroCountsOnlyTheExamplesAppliedSinceItStarted) {
  const std::string dir = FreshDir("restart_rate");
  Servers servers(dir, 2, {"--num_workers=2", "--mode=sync"});
  const std::string metrics = dir + "/metrics.jsonl";
  const std::vector<std::string> flags = {
      "--num_workers=2", "--epochs=2", "--eval_every=0.25",
      absl::StrCat("--metrics_out=", metrics)};
  auto rank0 = StartWorker(dir + "/worker-0.log", servers.list(), 0, flags);
  auto rank1 = StartWorker(dir + "/worker-1.log", servers.list(), 1, flags);
  test_support::WaitUntil(
      [&] {
        return !Lines(metrics).empty() &&
               test_support::Field(Lines(metrics).back(), "epoch") >= 0.5;
      },
      absl::Seconds(120));
  rank0->Signal(SIGTERM);
  ASSERT_TRUE(rank0->WaitFor(absl::Seconds(30)).has_value());
  const size_t before = Lines(metrics).size();
  ASSERT_GT(before, 0u);
  const double applied_before =
      test_support::Field(Lines(metrics).back(), "samples");
  rank0 = StartWorker(dir + "/worker-0-again.log", servers.list(), 0, flags);
  ASSERT_TRUE(FinishesCleanly(*rank0)) << ReadFile(dir + "/worker-0-again.log");
  ASSERT_TRUE(FinishesCleanly(*rank1)) << ReadFile(dir + "/worker-1.log");

  const std::vector<std::string> lines = Lines(metrics);
  ASSERT_GT(lines.size(), before);
  for (size_t i = before; i < lines.size(); ++i) {
    // Rate × time is what the new process saw applied: at most what was
    // applied after the old one's last line (plus rounding of both).
    const double rate = test_support::Field(lines[i], "samples_per_s");
    const double time = test_support::Field(lines[i], "time_s");
    const double applied = test_support::Field(lines[i], "samples");
    EXPECT_LE(rate * time, applied - applied_before + 200) << lines[i];
  }
  // One line says it rejoined, not one per shard.
  const std::string log = ReadFile(dir + "/worker-0-again.log");
  size_t rejoined = 0;
  for (size_t at = log.find("rejoined the job"); at != std::string::npos;
       at = log.find("rejoined the job", at + 1)) {
    ++rejoined;
  }
  EXPECT_EQ(rejoined, 1u) << log;
}

// Rank 0 stopped, the other trained the whole job and left, and rank 0
// started again: it finds nothing left to train and evaluates the final θ
// at once. (Its final pull asked for the round after the one it joined at,
// which never came, and failed after 2 minutes: seen in a CI rehearsal,
// where rank 1 finished the job before rank 0 was back.)
TEST(FirstContact,
     ARestartedRankZeroThatFindsTheJobDoneEvaluatesTheFinalTheta) {
  const std::string dir = FreshDir("restart_after_done");
  Servers servers(dir, 2, {"--num_workers=2", "--mode=sync"});
  const std::string metrics = dir + "/metrics.jsonl";
  const std::vector<std::string> flags = {
      "--num_workers=2", "--epochs=1", "--eval_every=1",
      absl::StrCat("--metrics_out=", metrics)};
  auto rank0 = StartWorker(dir + "/worker-0.log", servers.list(), 0, flags);
  auto rank1 = StartWorker(dir + "/worker-1.log", servers.list(), 1, flags);
  ASSERT_TRUE(test_support::WaitUntil(
      [&] {
        return absl::StrContains(ReadFile(dir + "/worker-0.log"),
                                 "starting at step");
      },
      absl::Seconds(60)))
      << ReadFile(dir + "/worker-0.log");
  rank0->Signal(SIGTERM);
  ASSERT_TRUE(rank0->WaitFor(absl::Seconds(30)).has_value());
  ASSERT_TRUE(FinishesCleanly(*rank1)) << ReadFile(dir + "/worker-1.log");
  rank0 = StartWorker(dir + "/worker-0-again.log", servers.list(), 0, flags);
  ASSERT_TRUE(FinishesCleanly(*rank0)) << ReadFile(dir + "/worker-0-again.log");
  EXPECT_THAT(ReadFile(dir + "/worker-0-again.log"),
              HasSubstr("the job is done"));
  const std::vector<std::string> lines = Lines(metrics);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(test_support::Field(lines.back(), "epoch"), 1.0) << lines.back();
  EXPECT_GT(test_support::Field(lines.back(), "test_accuracy"), 0.5)
      << lines.back();
}

TEST(FirstContact, StartUpErrorsExitTwoWithOneLineAndDurationsAskForAUnit) {
  const std::string dir = FreshDir("start_up_errors");
  const std::string flagfile = dir + "/worker.flags";
  std::ofstream(flagfile) << "# a job file\n--num_workers=2\n--epochs=two\n";
  struct Case {
    std::vector<std::string> argv;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"ps_server", "--lease_timeout=5"},
       "--lease_timeout=5 needs a unit, as in 500ms, 30s or 2m"},
      {{"ps_server", "--no_such_flag=1"},
       "Unknown command line flag 'no_such_flag'"},
      {{"ps_worker", absl::StrCat("--flagfile=", flagfile)}, "--epochs=two"},
      {{"psctl", "status", "--servers=127.0.0.1:1", "--timeout", "3"},
       "--timeout=3 needs a unit"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    Outcome outcome = RunBinary(
        cases[i].argv, absl::StrCat(dir, "/", i, ".out"), absl::Seconds(30));
    EXPECT_TRUE(ExitedWith(outcome, 2)) << outcome.output;
    EXPECT_THAT(outcome.output, HasSubstr(cases[i].says));
    EXPECT_EQ(std::count(outcome.output.begin(), outcome.output.end(), '\n'), 1)
        << outcome.output;
  }
}

TEST(FirstContact,
     AWorkerSaysHowLongItTriedAndWarnsOfAnAttemptLongerThanItsRetries) {
  const std::string dir = FreshDir("long_attempt");
  // A port that accepts connections and never speaks: an attempt lasts its
  // whole deadline.
  test_support::LoopbackListener listener;
  Outcome outcome = RunBinary(
      {"ps_worker", absl::StrCat("--servers=127.0.0.1:", listener.port()),
       "--rpc_deadline=3s", "--max_retry_time=1s"},
      dir + "/worker.out", absl::Seconds(60));
  EXPECT_FALSE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_THAT(
      outcome.output,
      HasSubstr("--rpc_deadline=3s is longer than --max_retry_time=1s"));
  EXPECT_THAT(outcome.output, HasSubstr("failed after 1 attempt in 3"));
}

TEST(FirstContact, CtrlCOnPsLocalStopsTheWorkersFirstAndSaysWhatHappened) {
  const std::string dir = FreshDir("ctrl_c");
  auto process = common::Subprocess::Spawn(
      {BinDir() + "/ps_local", "--servers=2", "--workers=2", "--epochs=50",
       absl::StrCat("--out_dir=", dir)},
      dir + "/ps_local.out");
  ASSERT_TRUE(process.ok()) << process.status();
  test_support::WaitUntil(
      [&] { return !ReadFile(dir + "/metrics.jsonl").empty(); },
      absl::Seconds(120));
  process->Signal(SIGINT);
  std::optional<int> status = process->WaitFor(absl::Seconds(60));
  ASSERT_TRUE(status.has_value()) << "ps_local did not stop on SIGINT";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1);
  const std::string output = ReadFile(dir + "/ps_local.out");
  EXPECT_THAT(output, HasSubstr("interrupted by Interrupt"));
  EXPECT_THAT(output, HasSubstr("stopped 2 running workers, then 2 running "
                                "servers; every process has ended cleanly"));
  for (int i = 0; i < 2; ++i) {
    // Each worker left the job while the servers still served it...
    const std::string server =
        ReadFile(absl::StrCat(dir, "/server-", i, ".log"));
    const size_t draining = server.find("draining");
    ASSERT_NE(draining, std::string::npos) << server;
    EXPECT_LT(server.find("worker 0 left"), draining) << server;
    EXPECT_LT(server.find("worker 1 left"), draining) << server;
    // ...and never found them gone.
    const std::string worker =
        ReadFile(absl::StrCat(dir, "/worker-", i, ".log"));
    EXPECT_THAT(worker, HasSubstr("left the job")) << worker;
    EXPECT_THAT(worker, Not(HasSubstr("retrying"))) << worker;
  }
}

}  // namespace
}  // namespace ps
