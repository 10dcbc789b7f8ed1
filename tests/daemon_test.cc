// The real binaries, started as processes exactly as a user starts them:
// ps_local on Fashion-MNIST, and the daemons' start-up checks.
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/cli.h"
#include "common/dataset.h"
#include "common/json.h"
#include "common/subprocess.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"

namespace ps {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using test_support::BinDir;
using test_support::ExitedWith;
using test_support::Field;
using test_support::FreshDir;
using test_support::Outcome;
using test_support::ReadFile;
using test_support::RunBinary;
using test_support::WaitUntil;

class LocalCluster : public ::testing::TestWithParam<std::string> {};

TEST_P(LocalCluster, TrainsFashionMnistAndWritesOneJsonLinePerEvaluation) {
  const std::string dir = FreshDir(absl::StrCat("local_", GetParam()));
  Outcome outcome =
      RunBinary({"ps_local", "--servers=2", "--workers=2",
                 absl::StrCat("--mode=", GetParam()), "--model=softmax",
                 "--epochs=1", "--eval_every=0.5", "--data_partitions=0",
                 absl::StrCat("--out_dir=", dir)},
                dir + "/ps_local.out");
  ASSERT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_THAT(outcome.output, HasSubstr("ps_local: done"));
  EXPECT_THAT(outcome.output, HasSubstr("test accuracy"));

  std::vector<std::string> lines =
      absl::StrSplit(ReadFile(dir + "/metrics.jsonl"), '\n', absl::SkipEmpty());
  // Evaluations at 0.5 epochs and the final one. Each worker trains its
  // own half (--data_partitions=0), so rank 0 reaches epoch 0.5 by its own
  // steps. With leased partitions rank 0 learns the epoch only from its
  // leases: starved of CPU while the other worker leases the rest, it can
  // see no lease past 0.5 before the end (once in a CI rehearsal, async).
  ASSERT_GE(lines.size(), 2u);
  double previous_time = -1;
  for (const std::string& line : lines) {
    for (const char* key : {"time_s", "epoch", "step", "test_accuracy",
                            "test_loss", "samples_per_s"}) {
      EXPECT_GE(Field(line, key), 0) << key;
    }
    EXPECT_GT(Field(line, "time_s"), previous_time);
    previous_time = Field(line, "time_s");
  }
  const std::string& last = lines.back();
  // Every example of the epoch was applied, the last batches short.
  EXPECT_EQ(Field(last, "epoch"), 1.0);
  EXPECT_EQ(Field(last, "samples"), 60000);
  EXPECT_GT(Field(last, "test_accuracy"), 0.75);
  EXPECT_GT(Field(last, "samples_per_s"), 0);
  EXPECT_THAT(last, HasSubstr(absl::StrCat("\"mode\":\"", GetParam(), "\"")));
  // Every process it started is gone: servers were stopped, logs closed.
  EXPECT_THAT(ReadFile(dir + "/server-0.log"), HasSubstr("stopped at version"));
  EXPECT_THAT(ReadFile(dir + "/server-1.log"), HasSubstr("stopped at version"));
}

INSTANTIATE_TEST_SUITE_P(Modes, LocalCluster,
                         ::testing::Values("sync", "async", "ssp"));

// "stopped at version V after N applied pushes" from a server's log.
std::string FinalState(const std::string& log) {
  const std::string text = ReadFile(log);
  const size_t at = text.find("stopped at version");
  if (at == std::string::npos) return "";
  return text.substr(at, text.find(" applied pushes", at) - at);
}

TEST(LocalClusterReplicas, EachShardsBackupJoinsItsPrimaryAndEndsAtItsVersion) {
  const std::string dir = FreshDir("local_replicas");
  Outcome outcome =
      RunBinary({"ps_local", "--servers=2", "--workers=2", "--replicas=2",
                 "--mode=sync", "--model=softmax", "--epochs=1",
                 "--eval_every=1", absl::StrCat("--out_dir=", dir)},
                dir + "/ps_local.out");
  ASSERT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_THAT(outcome.output, HasSubstr("ps_local: done"));
  EXPECT_THAT(outcome.output, HasSubstr("2 replicas per shard"));
  EXPECT_EQ(Field(ReadFile(dir + "/metrics.jsonl"), "samples"), 60000);
  for (int shard = 0; shard < 2; ++shard) {
    const std::string primary_log =
        absl::StrCat(dir, "/server-", shard, ".log");
    const std::string backup_log =
        absl::StrCat(dir, "/server-", shard, "-replica-1.log");
    // The backup joined replica 0 in the first term, and was never dropped.
    EXPECT_THAT(ReadFile(backup_log),
                HasSubstr("replica 1 joined primary 0 of term 1 at change"))
        << backup_log;
    EXPECT_THAT(ReadFile(primary_log), HasSubstr("replica 1 (127.0.0.1:"));
    EXPECT_THAT(ReadFile(primary_log), Not(HasSubstr("dropped replica")));
    // Every acknowledged push waited for the backup: it ends where the
    // primary does.
    EXPECT_THAT(FinalState(primary_log), HasSubstr("stopped at version"));
    EXPECT_EQ(FinalState(backup_log), FinalState(primary_log)) << backup_log;
  }
}

// With three replicas the shard elects its primaries, and ps_local gives its
// replicas a vote directory of their own, emptied for the new job.
TEST(LocalClusterReplicas,
     ThreeReplicasKeepTheirVotesInAFreshDirectoryOfTheJob) {
  const std::string dir = FreshDir("local_three_replicas");
  const std::string votes = dir + "/server-0-votes";
  std::filesystem::create_directories(votes);
  std::ofstream(votes + "/replica-1.vote") << "7 2\n";  // an old job's
  Outcome outcome =
      RunBinary({"ps_local", "--servers=1", "--workers=1", "--replicas=3",
                 "--mode=async", "--model=softmax", "--epochs=1",
                 "--eval_every=1", absl::StrCat("--out_dir=", dir)},
                dir + "/ps_local.out");
  ASSERT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_THAT(outcome.output, HasSubstr("3 replicas per shard"));
  EXPECT_TRUE(std::filesystem::is_directory(votes));
  EXPECT_FALSE(std::filesystem::exists(votes + "/replica-1.vote"));
  for (int replica = 1; replica <= 2; ++replica) {
    const std::string log =
        absl::StrCat(dir, "/server-0-replica-", replica, ".log");
    EXPECT_THAT(ReadFile(log),
                HasSubstr(absl::StrCat("replica ", replica,
                                       " joined primary 0 of term 1")))
        << log;
  }
}

// A witness (ps_local --replica_witness) joins each shard's primary as a
// third voter: it is sent no state, and holds none at the end, while the
// backup ends where the primary does.
TEST(LocalClusterReplicas,
     TwoReplicasAndAWitnessTrainAndTheWitnessHoldsNoTheta) {
  const std::string dir = FreshDir("local_witness");
  Outcome outcome = RunBinary(
      {"ps_local", "--servers=1", "--workers=1", "--replicas=2",
       "--replica_witness", "--mode=async", "--model=softmax", "--epochs=1",
       "--eval_every=1", absl::StrCat("--out_dir=", dir)},
      dir + "/ps_local.out");
  ASSERT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_THAT(outcome.output,
              HasSubstr("2 replicas per shard and a witness (replica 2)"));
  const std::string primary_log = dir + "/server-0.log";
  const std::string backup_log = dir + "/server-0-replica-1.log";
  const std::string witness_log = dir + "/server-0-replica-2.log";
  EXPECT_THAT(ReadFile(primary_log), HasSubstr("as a witness"));
  EXPECT_THAT(ReadFile(primary_log), Not(HasSubstr("dropped replica")));
  EXPECT_THAT(ReadFile(witness_log),
              HasSubstr("replica 2 joined primary 0 of term 1 at change"));
  EXPECT_THAT(ReadFile(witness_log), HasSubstr("(state of 0 bytes)"));
  EXPECT_THAT(FinalState(primary_log), HasSubstr("stopped at version"));
  EXPECT_EQ(FinalState(backup_log), FinalState(primary_log));
  EXPECT_EQ(FinalState(witness_log), "stopped at version 0 after 0");
}

TEST(LocalClusterFaults, AWorkerThatCannotStartFailsTheJobWithItsReason) {
  const std::string dir = FreshDir("bad_data");
  Outcome outcome = RunBinary(
      {"ps_local", "--servers=1", "--workers=2",
       "--data_dir=/nonexistent/fashion", absl::StrCat("--out_dir=", dir)},
      dir + "/ps_local.out", absl::Seconds(60));
  EXPECT_TRUE(ExitedWith(outcome, 1)) << outcome.output;
  EXPECT_THAT(outcome.output, HasSubstr("worker"));
  EXPECT_THAT(outcome.output, HasSubstr("/nonexistent/fashion"));
}

// A --worker_command that records what it was given (in RECORD) and then
// runs ps_worker; the script's path is quoted as a shell user would.
std::string RecordingWorker(const std::string& record) {
  return absl::StrCat("/bin/sh '", PS_SOURCE_DIR, "/tests/record_worker.sh' ",
                      record, " ", BinDir(), "/ps_worker");
}

// The job trains with rank 1 run by --worker_command and rank 0 by
// ps_worker, and the command gets ps_worker's flags and this build's
// python/ first on PYTHONPATH.
TEST(LocalClusterWorkerCommand, RanksOfARangeRunTheCommandAndTheJobTrains) {
  const std::string dir = FreshDir("worker_command_range");
  const std::string record = dir + "/record.txt";
  setenv("PYTHONPATH", "/inherited", 1);
  Outcome outcome = RunBinary(
      {"ps_local", "--servers=1", "--workers=2", "--epochs=1", "--eval_every=1",
       absl::StrCat("--out_dir=", dir),
       absl::StrCat("--worker_command=1-1:", RecordingWorker(record))},
      dir + "/ps_local.out");
  unsetenv("PYTHONPATH");
  ASSERT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_THAT(outcome.output, HasSubstr("ps_local: done"));
  const std::vector<std::string> runs =
      absl::StrSplit(ReadFile(record), '\n', absl::SkipEmpty());
  ASSERT_EQ(runs.size(), 1u) << ReadFile(record);
  const std::string build_python =
      std::filesystem::path(BinDir() + "/../python")
          .lexically_normal()
          .string();
  EXPECT_THAT(runs[0], HasSubstr(absl::StrCat("PYTHONPATH=", build_python,
                                              ":/inherited argv=")));
  EXPECT_THAT(runs[0], HasSubstr("--servers=127.0.0.1:"));
  EXPECT_THAT(runs[0], HasSubstr(" --rank=1 --num_workers=2 "));
  EXPECT_THAT(runs[0], HasSubstr(" --epochs=1 "));
}

// A worker program (pyps) is told every replica of a shard, as ps_worker
// is, so it follows the primary through a failover.
TEST(LocalClusterWorkerCommand, AReplicatedJobGivesTheCommandEveryReplica) {
  const std::string dir = FreshDir("worker_command_replicas");
  const std::string record = dir + "/record.txt";
  Outcome outcome = RunBinary(
      {"ps_local", "--servers=2", "--workers=1", "--replicas=2", "--epochs=1",
       "--eval_every=1", absl::StrCat("--out_dir=", dir),
       absl::StrCat("--worker_command=", RecordingWorker(record))},
      dir + "/ps_local.out");
  ASSERT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_THAT(ReadFile(record),
              ::testing::ContainsRegex(
                  "--servers=127\\.0\\.0\\.1:[0-9]+\\|127\\.0\\.0\\.1:[0-9]+,"
                  "127\\.0\\.0\\.1:[0-9]+\\|127\\.0\\.0\\.1:[0-9]+ "));
}

TEST(LocalClusterWorkerCommand, ACommandWithoutRanksRunsForEveryRank) {
  const std::string dir = FreshDir("worker_command_all");
  const std::string record = dir + "/record.txt";
  Outcome outcome =
      RunBinary({"ps_local", "--servers=1", "--workers=2", "--epochs=1",
                 "--eval_every=1", absl::StrCat("--out_dir=", dir),
                 absl::StrCat("--worker_command=", RecordingWorker(record))},
                dir + "/ps_local.out");
  ASSERT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
  const std::string runs = ReadFile(record);
  EXPECT_THAT(runs, HasSubstr(" --rank=0 "));
  EXPECT_THAT(runs, HasSubstr(" --rank=1 "));
}

TEST(LocalClusterWorkerCommand, BadRangesStopPsLocalAtStartUpWithOneLine) {
  const std::string dir = FreshDir("worker_command_bad");
  const struct {
    std::vector<std::string> flags;
    std::string says;
  } cases[] = {
      {{"--worker_command=0-1:true", "--worker_command=1-1:true"},
       "ranks 1-1 overlap ranks 0-1"},
      {{"--worker_command=true", "--worker_command=0-0:true"},
       "ranks 0-0 overlap ranks 0-1"},
      {{"--worker_command=1-2:true"}, "ranks 1-2 are not within 0-1"},
      {{"--worker_command=1-0:true"}, "ranks 1-0 are not within 0-1"},
      {{"--worker_command=python3 'unterminated"}, "an unterminated ' quote"},
      {{"--worker_command=0-1:"}, "no command"},
      {{"--worker_command=no_such_program_here --x"},
       "cannot find no_such_program_here"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv = {"ps_local", "--servers=1", "--workers=2",
                                     absl::StrCat("--out_dir=", dir)};
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    Outcome outcome = RunBinary(argv, dir + "/ps_local.out", absl::Seconds(30));
    EXPECT_TRUE(ExitedWith(outcome, 2)) << outcome.output;
    EXPECT_THAT(outcome.output, HasSubstr(c.says));
    EXPECT_EQ(std::count(outcome.output.begin(), outcome.output.end(), '\n'), 1)
        << outcome.output;
    EXPECT_THAT(outcome.output, Not(HasSubstr("server"))) << "nothing starts";
  }
}

// The pid of the process whose command line contains `needle`.
pid_t FindProcess(const std::string& needle) {
  DIR* proc = opendir("/proc");
  pid_t found = 0;
  while (dirent* entry = readdir(proc)) {
    const pid_t pid = std::atoi(entry->d_name);
    if (pid <= 0) continue;
    std::string cmdline = ReadFile(absl::StrCat("/proc/", pid, "/cmdline"));
    if (cmdline.find(needle) != std::string::npos) found = pid;
  }
  closedir(proc);
  return found;
}

TEST(LocalClusterFaults,
     AKilledServerMakesPsLocalNameItAndExitInsteadOfHanging) {
  const std::string dir = FreshDir("kill_server");
  std::vector<std::string> argv = {absl::StrCat(BinDir(), "/ps_local"),
                                   "--servers=2", "--workers=2", "--epochs=50",
                                   absl::StrCat("--out_dir=", dir)};
  auto process = common::Subprocess::Spawn(argv, dir + "/ps_local.out");
  ASSERT_TRUE(process.ok());
  // Wait until training is under way, then kill -9 server 1.
  ASSERT_TRUE(
      WaitUntil([&] { return !ReadFile(dir + "/metrics.jsonl").empty(); },
                absl::Seconds(120)));
  const pid_t server = FindProcess(absl::StrCat(dir, "/server-1.port"));
  ASSERT_GT(server, 0);
  ASSERT_EQ(kill(server, SIGKILL), 0);
  std::optional<int> status = process->WaitFor(absl::Seconds(60));
  ASSERT_TRUE(status.has_value()) << "ps_local hung after a server died";
  EXPECT_FALSE(common::ExitedCleanly(*status));
  const std::string output = ReadFile(dir + "/ps_local.out");
  EXPECT_THAT(output, HasSubstr("server 1 killed by signal 9"));
  // No process of this job is left behind.
  EXPECT_EQ(FindProcess(absl::StrCat(dir, "/server-0.port")), 0);
  EXPECT_EQ(FindProcess(absl::StrCat("--metrics_out=", dir)), 0);
}

TEST(LocalClusterFaults, CtrlCStopsEveryProcessAndFails) {
  const std::string dir = FreshDir("interrupt");
  std::vector<std::string> argv = {absl::StrCat(BinDir(), "/ps_local"),
                                   "--servers=2", "--workers=2", "--epochs=50",
                                   absl::StrCat("--out_dir=", dir)};
  auto process = common::Subprocess::Spawn(argv, dir + "/ps_local.out");
  ASSERT_TRUE(process.ok());
  ASSERT_TRUE(
      WaitUntil([&] { return !ReadFile(dir + "/metrics.jsonl").empty(); },
                absl::Seconds(120)));
  process->Signal(SIGINT);
  std::optional<int> status = process->WaitFor(absl::Seconds(30));
  ASSERT_TRUE(status.has_value()) << "ps_local did not stop on SIGINT";
  EXPECT_FALSE(common::ExitedCleanly(*status));
  EXPECT_THAT(ReadFile(dir + "/ps_local.out"), HasSubstr("interrupted"));
  EXPECT_EQ(FindProcess(absl::StrCat(dir, "/server-0.port")), 0);
  EXPECT_EQ(FindProcess(absl::StrCat(dir, "/server-1.port")), 0);
  EXPECT_EQ(FindProcess(absl::StrCat("--metrics_out=", dir)), 0);
}

TEST(Daemons, BadFlagsStopAtStartUpWithOneClearLine) {
  const std::string dir = FreshDir("flags");
  struct Case {
    std::vector<std::string> argv;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"ps_server", "--mode=bsp"}, "unknown mode 'bsp'"},
      {{"ps_server", "--mode=async", "--staleness=2"}, "staleness"},
      {{"ps_server", "--shard_index=2", "--num_shards=2"}, "shard_index 2"},
      {{"ps_server", "--lr=0"}, "learning rate"},
      {{"ps_server", "--optimizer=adamm"},
       "--optimizer: optimizer 'adamm': unknown optimizer"},
      {{"ps_server", "--optimizer=adam(beta1=2)"},
       "beta1 must be in [0, 1), got 2"},
      {{"ps_server", "--lr_schedule=cosine:0"},
       "--lr_schedule: bad learning-rate schedule 'cosine:0'"},
      {{"ps_server", "--clip_min=1", "--clip_max=0"},
       "box constraint is empty"},
      {{"ps_server", "--listen=not-an-address"}, "cannot listen"},
      {{"ps_server", "--metrics_listen=9100"},
       "--metrics_listen: '9100' has no port"},
      {{"ps_server", "--metrics_listen=localhost:http"}, "is not a number"},
      {{"ps_worker"}, "--servers is required"},
      {{"ps_worker", "--servers=127.0.0.1:1", "--model=cnn"}, "unknown model"},
      {{"ps_worker", "--servers=127.0.0.1:1", "--model=fm"},
       "--model=fm trains on sparse rows: give --data_format=libsvm"},
      {{"ps_worker", "--servers=127.0.0.1:1", "--model=mlp",
        "--data_format=libsvm"},
       "--data_format=libsvm is for the sparse models"},
      {{"ps_worker", "--servers=127.0.0.1:1", "--model=fm", "--fm_dim=0",
        "--data_format=libsvm"},
       "fm needs fm_dim >= 1"},
      {{"ps_worker", "--servers=127.0.0.1:1", "--model=logreg",
        "--data_format=libsvm", "--table_optimizer=ftrl(ftrl_beta=-1)"},
       "--table_optimizer: "},
      {{"ps_worker", "--servers=127.0.0.1:1", "--data_format=csv"},
       "--data_format: 'csv' is not idx or libsvm"},
      {{"ps_worker", "--servers=127.0.0.1:1", "--data_format=libsvm"},
       "needs --train=FILE and --test=FILE"},
      // The split by rank bounds the rank (leased partitions take any id the
      // servers accept: a joiner).
      {{"ps_worker", "--servers=127.0.0.1:1", "--rank=3", "--num_workers=2",
        "--data_partitions=0"},
       "--rank=3"},
      {{"ps_worker", "--servers=127.0.0.1:1", "--batch_size=0"},
       "--batch_size"},
      {{"ps_worker", "--servers=127.0.0.1:1", "--metrics_listen=0.0.0.0"},
       "--metrics_listen: '0.0.0.0' has no port"},
      {{"ps_local", "--mode=bsp"}, "not sync, ssp or async"},
      {{"ps_server", "--mode=async", "--sync_quorum=2"}, "sync_quorum"},
      {{"ps_server", "--lease_timeout=0s"}, "lease_timeout"},
      {{"ps_local", "--servers=0"}, "--servers must be"},
      {{"ps_local", "--replicas=0"}, "--replicas must be 1 to 8 (got 0"},
      {{"ps_local", "--replicas=9"}, "--replicas must be 1 to 8 (got 9"},
      {{"ps_local", "--replica_witness"},
       "--replica_witness needs --replicas of 2 or more"},
      {{"ps_server", "--replicas=2", "--replica_index=1",
        "--replica_peers=127.0.0.1:1,127.0.0.1:2", "--replica_witness"},
       "--replica_witness needs --replicas of 3 or more"},
      {{"ps_local", "--replicas=2", "--metrics_base_port=65531"},
       "leaves no room for 6 ports"},
      {{"ps_server", "--log_format=xml"}, "--log_format: 'xml' is not"},
      {{"ps_worker", "--servers=127.0.0.1:1", "--log_format=JSON"},
       "--log_format: 'JSON' is not"},
      {{"ps_local", "--metrics_base_port=65534"}, "leaves no room for 4 ports"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    Outcome outcome = RunBinary(
        cases[i].argv, absl::StrCat(dir, "/", i, ".out"), absl::Seconds(60));
    EXPECT_TRUE(ExitedWith(outcome, 2))
        << cases[i].argv[0] << " " << outcome.output;
    EXPECT_THAT(outcome.output, HasSubstr(cases[i].says));
    EXPECT_EQ(std::count(outcome.output.begin(), outcome.output.end(), '\n'), 1)
        << outcome.output;
  }
}

// Every line parses as an object that says which daemon and which place in
// the job wrote it: what a log pipeline (Loki, Fluent Bit) needs.
void ExpectJsonLines(const std::string& log, const std::string& daemon,
                     const std::string& place, int index) {
  const std::vector<std::string> lines =
      absl::StrSplit(log, '\n', absl::SkipEmpty());
  ASSERT_FALSE(lines.empty());
  for (const std::string& line : lines) {
    const common::Json object = common::ParseJsonObject(line);
    ASSERT_FALSE(object.empty()) << "not a JSON object: " << line;
    EXPECT_EQ(object.value("daemon", ""), daemon) << line;
    EXPECT_EQ(object.value(place, -1), index) << line;
    EXPECT_TRUE(object.contains("time") && object.contains("level") &&
                object.contains("message"))
        << line;
  }
}

TEST(Daemons, WithLogFormatJsonEveryLineOfServerAndWorkerIsAJsonObject) {
  const std::string dir = FreshDir("json_logs");
  absl::StatusOr<common::Subprocess> server = common::Subprocess::Spawn(
      {BinDir() + "/ps_server", "--listen=127.0.0.1:0",
       absl::StrCat("--port_file=", dir, "/port"), "--mode=async",
       "--shard_index=1", "--num_shards=2", "--log_format=json"},
      dir + "/server.log");
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(test_support::WaitForPortFile(*server, dir + "/port",
                                            dir + "/server.log"));
  server->Signal(SIGTERM);
  ASSERT_TRUE(server->WaitFor(absl::Seconds(30)).has_value());
  const std::string server_log = ReadFile(dir + "/server.log");
  EXPECT_THAT(server_log, HasSubstr("draining"));
  ExpectJsonLines(server_log, "ps_server", "shard", 1);

  // A worker's retries, its failure and gRPC's own lines, all as JSON.
  Outcome worker = RunBinary(
      {"ps_worker", "--servers=127.0.0.1:9", "--rank=1", "--num_workers=2",
       "--max_retry_time=1s", "--rpc_deadline=300ms", "--log_format=json"},
      dir + "/worker.log", absl::Seconds(60));
  EXPECT_FALSE(ExitedWith(worker, 0)) << worker.output;
  EXPECT_THAT(worker.output, HasSubstr("retrying"));
  ExpectJsonLines(worker.output, "ps_worker", "rank", 1);
}

TEST(Daemons, AWorkerFacingAnUnreachableServerGivesUpInTimeWithAClearLine) {
  const std::string dir = FreshDir("unreachable");
  // Port 9 (discard): nothing listens on it on these machines.
  const absl::Time start = absl::Now();
  Outcome outcome = RunBinary({"ps_worker", "--servers=127.0.0.1:9",
                               "--max_retry_time=2s", "--rpc_deadline=500ms"},
                              dir + "/worker.out", absl::Seconds(60));
  const absl::Duration took = absl::Now() - start;
  EXPECT_FALSE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_THAT(outcome.output, HasSubstr("127.0.0.1:9"));
  EXPECT_THAT(outcome.output, HasSubstr("failed after"));
  EXPECT_THAT(outcome.output, HasSubstr("retrying"));
  // Data loading (~1 s) plus the 2 s retry budget, not a hang.
  EXPECT_LT(took, absl::Seconds(20));
}

TEST(Daemons, AWorkerWaitsForAServerNameToResolveAndStartsSoonAfterItDoes) {
  // As in Kubernetes, where a pod's DNS name appears once it is scheduled:
  // the worker sees a private /etc/hosts (a mount namespace of its own)
  // that names the server only later.
  const std::string dir = FreshDir("late_name");
  const std::string hosts = dir + "/hosts";
  ASSERT_EQ(std::system(absl::StrCat("cp /etc/hosts '", hosts, "'").c_str()),
            0);
  absl::StatusOr<common::Subprocess> server = common::Subprocess::Spawn(
      {BinDir() + "/ps_server", "--listen=127.0.0.1:0",
       absl::StrCat("--port_file=", dir, "/port"), "--mode=async"},
      dir + "/server.log");
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(test_support::WaitForPortFile(*server, dir + "/port",
                                            dir + "/server.log"));
  absl::StatusOr<common::Subprocess> worker = common::Subprocess::Spawn(
      {"/usr/bin/unshare", "--user", "--map-root-user", "--mount", "/bin/sh",
       "-c",
       absl::StrCat("mount --bind '", hosts, "' /etc/hosts && exec '", BinDir(),
                    "/ps_worker' --servers=ps-late-server:",
                    ReadFile(dir + "/port"), " --epochs=1 --eval_every=1")},
      dir + "/worker.log");
  ASSERT_TRUE(worker.ok()) << worker.status();
  // Long enough unnamed for gRPC's own backoff to have grown (attempt 20
  // is logged about 15 s in).
  EXPECT_TRUE(WaitUntil(
      [&] {
        return ReadFile(dir + "/worker.log")
                   .find("Resolve ps-late-server attempt 20 failed") !=
               std::string::npos;
      },
      absl::Seconds(60)))
      << ReadFile(dir + "/worker.log");
  EXPECT_TRUE(worker->running()) << ReadFile(dir + "/worker.log");
  EXPECT_THAT(ReadFile(dir + "/worker.log"),
              HasSubstr("server name ps-late-server does not resolve yet"));
  EXPECT_THAT(ReadFile(dir + "/worker.log"),
              Not(HasSubstr("starting at step")));

  std::ofstream(hosts, std::ios::app) << "127.0.0.1 ps-late-server\n";
  const absl::Time named = absl::Now();
  WaitUntil([&] {
    return ReadFile(dir + "/worker.log").find("starting at step") !=
               std::string::npos ||
           !worker->running();
  });
  // Not a speed test: gRPC's own retries of the name were about 6.5 s apart
  // by now (1, 1.6, 2.6, 4.1, 6.5 s), ours are at most 1 s apart.
  EXPECT_LT(absl::Now() - named, absl::Seconds(3))
      << ReadFile(dir + "/worker.log");
  const std::optional<int> exit = worker->WaitFor(absl::Seconds(60));
  ASSERT_TRUE(exit.has_value());
  EXPECT_TRUE(common::ExitedCleanly(*exit)) << ReadFile(dir + "/worker.log");
}

// Copies Fashion-MNIST into `dir`, replacing one file with `contents`.
void CopyDataReplacing(const std::string& dir, const std::string& file,
                       const std::string& contents) {
  ASSERT_EQ(std::system(absl::StrCat("cp ", common::kDefaultFashionMnistDir,
                                     "/*.gz '", dir, "/'")
                            .c_str()),
            0);
  std::ofstream(absl::StrCat(dir, "/", file), std::ios::binary) << contents;
}

TEST(Daemons, CorruptDataStopsTheWorkerWithAClearLine) {
  const std::string real = ReadFile(absl::StrCat(
      common::kDefaultFashionMnistDir, "/t10k-labels-idx1-ubyte.gz"));
  ASSERT_GT(real.size(), 100u);
  // A gzip stream of a label file with an image file's magic number.
  std::string wrong_magic;
  {
    const std::string path = FreshDir("magic_src") + "/x.gz";
    gzFile out = gzopen(path.c_str(), "wb");
    const unsigned char header[8] = {0, 0, 8, 3, 0, 0, 0, 0};
    gzwrite(out, header, sizeof(header));
    gzclose(out);
    wrong_magic = ReadFile(path);
  }
  const std::vector<std::pair<std::string, std::string>> cases = {
      {real.substr(0, real.size() / 2), "t10k-labels-idx1-ubyte.gz"},
      {wrong_magic, "magic"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string dir = FreshDir(absl::StrCat("corrupt", i));
    CopyDataReplacing(dir, "t10k-labels-idx1-ubyte.gz", cases[i].first);
    Outcome outcome = RunBinary({"ps_worker", "--servers=127.0.0.1:1",
                                 absl::StrCat("--data_dir=", dir)},
                                dir + "/worker.out", absl::Seconds(60));
    EXPECT_TRUE(ExitedWith(outcome, 2)) << outcome.output;
    EXPECT_THAT(outcome.output, HasSubstr("cannot load the training data"));
    EXPECT_THAT(outcome.output, HasSubstr(cases[i].second));
    EXPECT_EQ(std::count(outcome.output.begin(), outcome.output.end(), '\n'), 1)
        << outcome.output;
  }
}

TEST(Daemons, ACorruptLibsvmLineStopsTheWorkerNamingFileAndLine) {
  const std::string dir = FreshDir("libsvm");
  const std::string good = "1 7:0.5 9\n0 12 7\n";
  ASSERT_TRUE(common::WriteFileAtomically(dir + "/good.libsvm", good).ok());
  ASSERT_TRUE(
      common::WriteFileAtomically(dir + "/bad.libsvm", good + "1 5:abc\n")
          .ok());
  struct Case {
    std::string train, test, says;
  };
  const std::vector<Case> cases = {
      {"bad.libsvm", "good.libsvm",
       "--train: '" + dir + "/bad.libsvm' line 3: "},
      {"good.libsvm", "bad.libsvm",
       "--test: '" + dir + "/bad.libsvm' line 3: "},
      {"missing.libsvm", "good.libsvm", dir + "/missing.libsvm"},
      // Good files load, and are checked against the flags (the default
      // 64 data partitions).
      {"good.libsvm", "good.libsvm",
       "--data_partitions=64 is more than the 2 training examples"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    Outcome outcome =
        RunBinary({"ps_worker", "--servers=127.0.0.1:1", "--data_format=libsvm",
                   absl::StrCat("--train=", dir, "/", cases[i].train),
                   absl::StrCat("--test=", dir, "/", cases[i].test)},
                  absl::StrCat(dir, "/", i, ".out"), absl::Seconds(60));
    EXPECT_TRUE(ExitedWith(outcome, 2)) << outcome.output;
    EXPECT_THAT(outcome.output, HasSubstr(cases[i].says));
    EXPECT_EQ(std::count(outcome.output.begin(), outcome.output.end(), '\n'), 1)
        << outcome.output;
  }
}

}  // namespace
}  // namespace ps
