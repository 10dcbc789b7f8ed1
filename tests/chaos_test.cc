// ps_chaos end to end: a worker killed in sync mode, with in-process RPC
// faults on another, on loopback; the assertions read summary.json.
#include <sys/stat.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/cli.h"
#include "common/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"

namespace ps {
namespace {

using test_support::Field;
using test_support::FreshDir;
using test_support::ReadFile;
using test_support::RunBinary;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr double kLeaseSeconds = 1;

// ps_chaos runs `scenario` (outputs in `out`, its log in `dir`): the run's
// summary.json once it exited 0 and the training completed, else a test
// failure and "".
std::string RunToCompletion(const std::string& scenario, const std::string& out,
                            const std::string& dir) {
  test_support::Outcome run =
      RunBinary({"ps_chaos", "run", scenario, "--out", out, "--quiet"},
                dir + "/ps_chaos.log", absl::Minutes(4));
  if (!test_support::ExitedWith(run, 0)) {
    ADD_FAILURE() << run.output;
    return "";
  }
  const std::string text = ReadFile(out + "/summary.json");
  if (!common::ParseJsonObject(text).value("completed", false)) {
    ADD_FAILURE() << "training did not complete: " << text;
    return "";
  }
  return text;
}

TEST(Chaos, SyncTrainingRidesThroughAKilledWorkerAndTheSummarySaysHow) {
  const std::string dir = FreshDir("chaos");
  const std::string scenario = dir + "/worker_kill.yaml";
  ASSERT_TRUE(common::WriteFileAtomically(scenario,
                                          "cluster:\n"
                                          "  servers: 1\n"
                                          "  workers: 3\n"
                                          "  mode: sync\n"
                                          "  epochs: 2\n"
                                          "  eval_every: 0.2\n"
                                          "  lease_timeout: 1s\n"
                                          "  network: loopback\n"
                                          "poll_every: 100ms\n"
                                          "timeout: 3m\n"
                                          "faults:\n"
                                          "  - at: 0.2 epoch\n"
                                          "    rpc: worker 1\n"
                                          "    error: UNAVAILABLE:0.05\n"
                                          "    methods: [Push, Pull]\n"
                                          "    side: client\n"
                                          "  - at: 0.6 epoch\n"
                                          "    kill: worker 2\n")
                  .ok());
  const std::string out = dir + "/out";
  const std::string text = RunToCompletion(scenario, out, dir);
  ASSERT_FALSE(text.empty());
  const common::Json summary = common::ParseJsonObject(text);
  EXPECT_GT(Field(text, "final_accuracy"), 0.7) << text;
  // Evaluated every 0.2 epoch: the last half epoch holds two or three.
  EXPECT_GT(Field(text, "end_accuracy"), 0.7) << text;
  EXPECT_GE(summary.value("end_accuracy_evaluations", 0), 2) << text;
  EXPECT_EQ(summary.at("teardown").value("clean", false), true) << text;

  // The kill (the second fault) was detected through the lease, and the
  // stall it caused lasted about one lease: bounded, not a hang.
  ASSERT_EQ(summary.at("faults").size(), 2u) << text;
  const common::Json& kill = summary.at("faults")[1];
  ASSERT_EQ(kill.value("what", ""), "kill worker 2") << text;
  EXPECT_EQ(kill.value("applied", false), true);
  const double detect = common::NumberField(kill, "detect_s").value_or(-1);
  const double stall = common::NumberField(kill, "stall_s").value_or(-1);
  EXPECT_GT(detect, 0.5 * kLeaseSeconds) << text;
  EXPECT_LT(detect, kLeaseSeconds + 3) << text;
  EXPECT_GT(stall, 0.5 * kLeaseSeconds) << text;
  EXPECT_LT(stall, kLeaseSeconds + 3) << text;
  EXPECT_EQ(kill.value("stall_open", true), false);

  // The in-process faults reached worker 1's gRPC layer, which retried.
  EXPECT_THAT(ReadFile(out + "/worker-1.log"),
              HasSubstr("fault injection from"));
  EXPECT_THAT(ReadFile(out + "/worker-0.log"),
              Not(HasSubstr("fault injection from")));

  // The timeline has the header, rows, and both fault events.
  const std::string csv = ReadFile(out + "/timeline.csv");
  EXPECT_THAT(csv, HasSubstr("time_s,epoch,test_accuracy,samples_per_s,"
                             "live_workers,version_s0,event\n"));
  EXPECT_THAT(csv, HasSubstr("\"kill worker 2\""));
  EXPECT_THAT(csv, HasSubstr("\"rpc worker 1: seed=1,error=UNAVAILABLE:0.05"));
  struct stat png;
  EXPECT_EQ(stat((out + "/timeline.png").c_str(), &png), 0)
      << "gnuplot (tools/setup.sh installs it) drew no plot";
}

// Replicas per shard, and a fault on "server 0 primary" resolved when it
// fires: stopping the primary for a second makes the backup take over in
// term 2; the old primary, continued, steps down and follows it; training
// finishes.
TEST(Chaos, AReplicatedClusterStartsEveryReplicaAndFaultsFindThePrimary) {
  const std::string dir = FreshDir("chaos_replicas");
  const std::string scenario = dir + "/replicated.yaml";
  ASSERT_TRUE(common::WriteFileAtomically(scenario,
                                          "cluster:\n"
                                          "  servers: 1\n"
                                          "  replicas: 2\n"
                                          "  workers: 2\n"
                                          "  mode: async\n"
                                          "  epochs: 8\n"
                                          "  eval_every: 0.5\n"
                                          "  network: loopback\n"
                                          "poll_every: 100ms\n"
                                          "timeout: 3m\n"
                                          "faults:\n"
                                          "  - at: 0.2 epoch\n"
                                          "    stop: server 0 primary\n"
                                          "    for: 1s\n")
                  .ok());
  const std::string out = dir + "/out";
  const std::string text = RunToCompletion(scenario, out, dir);
  ASSERT_FALSE(text.empty());
  const common::Json summary = common::ParseJsonObject(text);
  ASSERT_EQ(summary.at("faults").size(), 1u) << text;
  const common::Json& stop = summary.at("faults")[0];
  EXPECT_EQ(stop.value("what", ""), "stop server 0 primary: for 1s") << text;
  EXPECT_EQ(stop.value("applied", false), true) << text;
  EXPECT_THAT(stop.at("notes").dump(),
              HasSubstr("server 0 primary was server 0 replica 0"))
      << text;

  // The backup joined replica 0, took over when it went silent, and the
  // old primary follows the new one. (8 epochs: with 3 the job once ended
  // on the new primary while the old one was still stopped.)
  const std::string backup_log = ReadFile(out + "/server-0-replica-1.log");
  EXPECT_THAT(backup_log,
              HasSubstr("replica 1 joined primary 0 of term 1 at change"));
  EXPECT_THAT(backup_log, HasSubstr("takes over as the primary of term 2"));
  EXPECT_THAT(ReadFile(out + "/server-0.log"),
              HasSubstr("replica 0 joined primary 1 of term 2 at change"));
}

// replica_witness: each shard gets a third ps_server, replica 2, started
// with --replica_witness and not given to the workers. The primary killed
// for good, the backup takes over with the witness's vote, the witness
// follows it, and training finishes.
TEST(Chaos, AWitnessIsStartedNotGivenToWorkersAndElectsTheBackup) {
  const std::string dir = FreshDir("chaos_witness");
  const std::string scenario = dir + "/witness.yaml";
  ASSERT_TRUE(common::WriteFileAtomically(scenario,
                                          "cluster:\n"
                                          "  servers: 1\n"
                                          "  replicas: 2\n"
                                          "  replica_witness: true\n"
                                          "  workers: 2\n"
                                          "  mode: async\n"
                                          "  epochs: 8\n"
                                          "  eval_every: 0.5\n"
                                          "  network: loopback\n"
                                          "poll_every: 100ms\n"
                                          "timeout: 3m\n"
                                          "faults:\n"
                                          "  - at: 0.2 epoch\n"
                                          "    kill: server 0 primary\n")
                  .ok());
  const std::string out = dir + "/out";
  ASSERT_FALSE(RunToCompletion(scenario, out, dir).empty());

  const std::string witness_log = ReadFile(out + "/server-0-replica-2.log");
  EXPECT_THAT(witness_log, HasSubstr("--replicas=3 --replica_index=2"));
  EXPECT_THAT(witness_log, HasSubstr("--replica_witness=true"));
  EXPECT_THAT(witness_log,
              HasSubstr("replica 2 joined primary 0 of term 1 at change"));
  EXPECT_THAT(witness_log,
              HasSubstr("replica 2 joined primary 1 of term 2 at change"));
  EXPECT_THAT(ReadFile(out + "/server-0-replica-1.log"),
              HasSubstr("takes over as the primary of term 2"));
  // The workers' --servers name the two replicas, not the witness.
  const std::string worker_log = ReadFile(out + "/worker-0.log");
  const size_t servers = worker_log.find("--servers=");
  ASSERT_NE(servers, std::string::npos) << worker_log.substr(0, 500);
  const std::string listed =
      worker_log.substr(servers, worker_log.find(' ', servers) - servers);
  EXPECT_EQ(std::count(listed.begin(), listed.end(), '|'), 1) << listed;
}

TEST(Chaos, ABadScenarioIsRejectedBeforeAnythingStarts) {
  const std::string dir = FreshDir("chaos_bad");
  const std::string scenario = dir + "/bad.yaml";
  ASSERT_TRUE(common::WriteFileAtomically(
                  scenario,
                  "cluster:\n  workers: 2\nfaults:\n  - at: 1s\n"
                  "    kill: worker 2\n")
                  .ok());
  test_support::Outcome run =
      RunBinary({"ps_chaos", "run", scenario, "--out", dir + "/out"},
                dir + "/ps_chaos.log", absl::Seconds(30));
  EXPECT_TRUE(test_support::ExitedWith(run, 2)) << run.output;
  EXPECT_THAT(run.output, HasSubstr("bad.yaml:5: worker 2 does not exist"));
  struct stat out;
  EXPECT_NE(stat((dir + "/out/server-0.log").c_str(), &out), 0)
      << "nothing may start";
}

}  // namespace
}  // namespace ps
