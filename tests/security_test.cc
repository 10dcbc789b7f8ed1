// TLS, client certificates and tokens, on real ps_server, ps_worker and
// psctl processes: the right credentials train, anything else is refused
// before it reaches θ, the worker table or the checkpoint directory.
#include <dirent.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/cli.h"
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
using test_support::FreshDir;
using test_support::Outcome;
using test_support::ReadFile;
using test_support::RunBinary;

class Security : public ::testing::Test {
 protected:
  // Certificates made now, for this run only (tests/make_certs.sh).
  static void SetUpTestSuite() {
    certs_ = new std::string(FreshDir("certs"));
    ASSERT_EQ(std::system(absl::StrCat(PS_SOURCE_DIR, "/tests/make_certs.sh '",
                                       *certs_, "'")
                              .c_str()),
              0);
  }
  static void TearDownTestSuite() { delete certs_; }

  static std::string Cert(const std::string& file) {
    return absl::StrCat(*certs_, "/", file);
  }

  // A ps_server with `flags` on a free port of 127.0.0.1; its address.
  std::string StartServer(const std::string& dir,
                          std::vector<std::string> flags) {
    std::vector<std::string> argv = {BinDir() + "/ps_server",
                                     "--listen=127.0.0.1:0",
                                     absl::StrCat("--port_file=", dir, "/port"),
                                     "--mode=async", "--num_workers=1"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    absl::StatusOr<common::Subprocess> server =
        common::Subprocess::Spawn(argv, dir + "/server.log");
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return "";
    server_.emplace(std::move(*server));
    EXPECT_TRUE(test_support::WaitForPortFile(*server_, dir + "/port",
                                              dir + "/server.log"));
    return absl::StrCat("127.0.0.1:", ReadFile(dir + "/port"));
  }

  void TearDown() override {
    if (server_) server_->Stop(absl::Seconds(10));
  }

  static std::string* certs_;
  std::optional<common::Subprocess> server_;
};

std::string* Security::certs_ = nullptr;

// psctl status without the heartbeat ages, which move on by themselves.
std::string Counters(const std::string& status) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    absl::StrAppend(&out, line.substr(0, line.find(", last heartbeat")), "\n");
  }
  return out;
}

std::vector<std::string> Files(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* listing = opendir(dir.c_str())) {
    while (dirent* entry = readdir(listing)) names.push_back(entry->d_name);
    closedir(listing);
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST_F(Security, OnlyTheTokenOverTlsReachesThetaTheWorkersAndCheckpoints) {
  const std::string dir = FreshDir("token");
  const std::string checkpoints = dir + "/checkpoints";
  ASSERT_EQ(std::system(absl::StrCat("mkdir -p '", checkpoints, "'").c_str()),
            0);
  const std::string address =
      StartServer(dir, {"--tls_cert=" + Cert("server.crt"),
                        "--tls_key=" + Cert("server.key"),
                        "--auth_token_file=" + Cert("token"),
                        "--checkpoint_dir=" + checkpoints});
  const std::string ca = "--tls_ca=" + Cert("ca.crt");
  const std::string token = "--auth_token_file=" + Cert("token");

  Outcome trained = RunBinary({"ps_worker", "--servers=" + address, ca, token,
                               "--epochs=1", "--eval_every=1"},
                              dir + "/worker.log");
  ASSERT_TRUE(ExitedWith(trained, 0)) << trained.output;
  ASSERT_TRUE(ExitedWith(RunBinary({"psctl", "export", "--servers=" + address,
                                    ca, token, "--out=" + dir + "/before"},
                                   dir + "/export.log"),
                         0));
  const std::vector<std::string> saved = Files(checkpoints);
  const std::string status_before =
      Counters(RunBinary({"psctl", "status", "--servers=" + address, ca, token},
                         dir + "/status.log")
                   .output);
  ASSERT_THAT(status_before, HasSubstr("applied"));

  struct Attempt {
    std::vector<std::string> argv;
    std::string says;
  };
  const std::vector<Attempt> refused = {
      {{"ps_worker", "--servers=" + address, ca, "--epochs=1"},
       "needs a token"},
      {{"ps_worker", "--servers=" + address, ca,
        "--auth_token_file=" + Cert("wrong_token"), "--epochs=1"},
       "token does not match"},
      {{"psctl", "checkpoint", "--servers=" + address, ca,
        "--auth_token_file=" + Cert("wrong_token")},
       "token does not match"},
      {{"psctl", "export", "--servers=" + address, ca,
        "--out=" + dir + "/stolen"},
       "needs a token"},
      // Plaintext to a TLS port: no handshake, nothing read.
      {{"psctl", "status", "--servers=" + address, "--timeout=2s"}, address},
  };
  for (size_t i = 0; i < refused.size(); ++i) {
    Outcome outcome =
        RunBinary(refused[i].argv, absl::StrCat(dir, "/refused", i, ".log"),
                  absl::Seconds(120));
    EXPECT_FALSE(ExitedWith(outcome, 0)) << outcome.output;
    EXPECT_THAT(outcome.output, HasSubstr(refused[i].says)) << i;
  }

  // Nothing changed: θ byte for byte, the counters, the checkpoints.
  ASSERT_TRUE(ExitedWith(RunBinary({"psctl", "export", "--servers=" + address,
                                    ca, token, "--out=" + dir + "/after"},
                                   dir + "/export2.log"),
                         0));
  EXPECT_EQ(ReadFile(dir + "/before"), ReadFile(dir + "/after"));
  EXPECT_EQ(Files(checkpoints), saved);
  EXPECT_EQ(
      Counters(RunBinary({"psctl", "status", "--servers=" + address, ca, token},
                         dir + "/status2.log")
                   .output),
      status_before);
  EXPECT_FALSE(std::ifstream(dir + "/stolen").good());
  // Health checks (Kubernetes, load balancers) need no token.
  Outcome health = RunBinary({"psctl", "health", "--servers=" + address, ca},
                             dir + "/health.log");
  EXPECT_TRUE(ExitedWith(health, 0)) << health.output;
  EXPECT_THAT(health.output, HasSubstr("SERVING"));
}

TEST_F(Security, MutualTlsAdmitsOnlyClientsWithACertificateFromItsCa) {
  const std::string dir = FreshDir("mtls");
  const std::string address =
      StartServer(dir, {"--tls_cert=" + Cert("server.crt"),
                        "--tls_key=" + Cert("server.key"),
                        "--tls_client_ca=" + Cert("ca.crt")});
  const std::string ca = "--tls_ca=" + Cert("ca.crt");
  Outcome admitted = RunBinary(
      {"psctl", "status", "--servers=" + address, ca,
       "--tls_cert=" + Cert("client.crt"), "--tls_key=" + Cert("client.key")},
      dir + "/admitted.log");
  EXPECT_TRUE(ExitedWith(admitted, 0)) << admitted.output;
  EXPECT_THAT(admitted.output, HasSubstr("async version 0"));

  const std::vector<std::vector<std::string>> strangers = {
      {"psctl", "status", "--servers=" + address, ca, "--timeout=2s"},
      {"psctl", "status", "--servers=" + address, ca, "--timeout=2s",
       "--tls_cert=" + Cert("stranger.crt"),
       "--tls_key=" + Cert("stranger.key")},
      {"ps_worker", "--servers=" + address, ca, "--max_retry_time=2s",
       "--rpc_deadline=1s", "--tls_cert=" + Cert("stranger.crt"),
       "--tls_key=" + Cert("stranger.key")},
  };
  for (size_t i = 0; i < strangers.size(); ++i) {
    Outcome outcome =
        RunBinary(strangers[i], absl::StrCat(dir, "/stranger", i, ".log"),
                  absl::Seconds(120));
    EXPECT_FALSE(ExitedWith(outcome, 0)) << outcome.output;
    EXPECT_THAT(outcome.output, Not(HasSubstr("async version")));
  }
  // The worker never registered.
  EXPECT_THAT(RunBinary({"psctl", "status", "--servers=" + address, ca,
                         "--tls_cert=" + Cert("client.crt"),
                         "--tls_key=" + Cert("client.key")},
                        dir + "/after.log")
                  .output,
              HasSubstr("0 live workers"));
}

// The flags every launcher (ps_local, ps_chaos, ps_bench) takes: the job's
// credentials, the clients' side and the servers' certificate.
std::vector<std::string> JobCredentials(const std::string& certs) {
  return {absl::StrCat("--tls_ca=", certs, "/ca.crt"),
          absl::StrCat("--tls_cert=", certs, "/client.crt"),
          absl::StrCat("--tls_key=", certs, "/client.key"),
          absl::StrCat("--auth_token_file=", certs, "/token"),
          absl::StrCat("--server_tls_cert=", certs, "/server.crt"),
          absl::StrCat("--server_tls_key=", certs, "/server.key")};
}

// "NAME exit=STATUS" lines of tests/stranger_then_worker.sh, by name.
std::map<std::string, int> ExitStatuses(const std::string& record) {
  std::map<std::string, int> statuses;
  for (absl::string_view line :
       absl::StrSplit(ReadFile(record), '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> parts = absl::StrSplit(line, " exit=");
    int status = -1;
    EXPECT_TRUE(absl::SimpleAtoi(parts.second, &status)) << line;
    statuses[parts.first] = status;
  }
  return statuses;
}

// ps_local gives every daemon its side of the job's credentials: the job
// trains over mutual TLS with a token, and while it runs its servers turn
// away a caller that lacks any one of them.
TEST_F(Security, PsLocalTrainsOverMutualTlsWithATokenAndNothingLessGetsIn) {
  const std::string dir = FreshDir("ps_local_mtls");
  const std::string record = dir + "/strangers.txt";
  std::vector<std::string> argv = {
      "ps_local", "--servers=2", "--workers=2", "--mode=async", "--epochs=1",
      "--eval_every=1", "--out_dir=" + dir,
      // Rank 1 first knocks as strangers would, then trains.
      absl::StrCat("--worker_command=1-1:/bin/sh '", PS_SOURCE_DIR,
                   "/tests/stranger_then_worker.sh' '", record, "' '", BinDir(),
                   "/psctl' '", *certs_, "' '", BinDir(), "/ps_worker'")};
  for (std::string& flag : JobCredentials(*certs_)) argv.push_back(flag);
  Outcome outcome = RunBinary(argv, dir + "/ps_local.out");
  ASSERT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_THAT(outcome.output, HasSubstr("ps_local: done"));
  std::vector<std::string> lines =
      absl::StrSplit(ReadFile(dir + "/metrics.jsonl"), '\n', absl::SkipEmpty());
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(test_support::Field(lines.back(), "samples"), 60000);
  EXPECT_GT(test_support::Field(lines.back(), "test_accuracy"), 0.7);

  const std::map<std::string, int> statuses = ExitStatuses(record);
  // With every credential the same call gets through: the refusals below
  // are the servers', not a broken probe.
  EXPECT_EQ(statuses, (std::map<std::string, int>{{"all", 0},
                                                  {"no_client_cert", 1},
                                                  {"no_token", 1},
                                                  {"plaintext", 1},
                                                  {"stranger_cert", 1},
                                                  {"wrong_token", 1}}))
      << ReadFile(record);
  EXPECT_THAT(ReadFile(record + ".all"), HasSubstr("async version"));
  EXPECT_THAT(ReadFile(record + ".no_token"), HasSubstr("needs a token"));
  EXPECT_THAT(ReadFile(record + ".wrong_token"),
              HasSubstr("token does not match"));
  for (const char* refused : {"plaintext", "no_client_cert", "stranger_cert"}) {
    EXPECT_THAT(ReadFile(record + "." + refused), Not(HasSubstr("version")))
        << refused;
  }
}

// ps_bench's servers and its echo (the limit it measures against) speak
// TLS and check the token when given the job's credentials.
TEST_F(Security, PsBenchTransfersOverMutualTlsWithAToken) {
  const std::string dir = FreshDir("ps_bench_mtls");
  std::vector<std::string> argv = {
      "ps_bench",         "transfer",    "--sizes=1K",
      "--duration=100ms", "--min_ops=2", "--rounds=1",
      "--ops=pushpull",   "--json=-",    "--out_dir=" + dir};
  for (std::string& flag : JobCredentials(*certs_)) argv.push_back(flag);
  Outcome outcome = RunBinary(argv, dir + "/ps_bench.out", absl::Seconds(120));
  ASSERT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_THAT(outcome.output, HasSubstr("\"op\":\"echo\""));
  EXPECT_THAT(outcome.output, HasSubstr("\"op\":\"pushpull\""));
}

// ps_chaos gives its daemons their side of the job's credentials and polls
// the servers' Status over mutual TLS with the token itself.
TEST_F(Security, PsChaosRunsAScenarioOverMutualTlsWithAToken) {
  const std::string dir = FreshDir("ps_chaos_mtls");
  const std::string scenario = dir + "/plain.yaml";
  ASSERT_TRUE(common::WriteFileAtomically(scenario,
                                          "cluster:\n"
                                          "  servers: 1\n"
                                          "  workers: 2\n"
                                          "  mode: async\n"
                                          "  epochs: 1\n"
                                          "  eval_every: 0.5\n"
                                          "  network: loopback\n"
                                          "poll_every: 100ms\n"
                                          "timeout: 3m\n")
                  .ok());
  std::vector<std::string> argv = {"ps_chaos", "run",        scenario,
                                   "--out",    dir + "/out", "--quiet"};
  for (std::string& flag : JobCredentials(*certs_)) argv.push_back(flag);
  Outcome outcome = RunBinary(argv, dir + "/ps_chaos.out", absl::Minutes(4));
  ASSERT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_THAT(outcome.output, HasSubstr("training completed"));
  // Each daemon's log starts with the command line ps_chaos gave it.
  const std::string server_log = ReadFile(dir + "/out/server-0.log");
  EXPECT_THAT(server_log, HasSubstr("--tls_cert=" + Cert("server.crt")));
  EXPECT_THAT(server_log, HasSubstr("--tls_client_ca=" + Cert("ca.crt")));
  EXPECT_THAT(server_log, HasSubstr("--auth_token_file=" + Cert("token")));
  for (const char* worker : {"worker-0.log", "worker-1.log"}) {
    const std::string log = ReadFile(absl::StrCat(dir, "/out/", worker));
    EXPECT_THAT(log, HasSubstr("--tls_cert=" + Cert("client.crt"))) << worker;
    EXPECT_THAT(log, HasSubstr("--auth_token_file=" + Cert("token"))) << worker;
  }
  // Its own Status polls got through (the server refuses anything without
  // the client certificate): the timeline saw θ's version move.
  bool saw_updates = false;
  for (absl::string_view row :
       absl::StrSplit(ReadFile(dir + "/out/timeline.csv"), '\n')) {
    // time_s,epoch,test_accuracy,samples_per_s,live_workers,version_s0,…
    const std::vector<absl::string_view> cells = absl::StrSplit(row, ',');
    uint64_t version = 0;
    saw_updates =
        saw_updates || (cells.size() > 5 &&
                        absl::SimpleAtoi(cells[5], &version) && version > 0);
  }
  EXPECT_TRUE(saw_updates) << ReadFile(dir + "/out/timeline.csv");
}

TEST_F(Security, BadTlsFlagsStopAtStartUpWithOneClearLine) {
  const std::string dir = FreshDir("tls_flags");
  ASSERT_EQ(
      std::system(absl::StrCat("printf '\\n' > '", dir, "/empty'").c_str()), 0);
  struct Case {
    std::vector<std::string> argv;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"ps_server", "--auth_token_file=" + Cert("token")}, "need TLS"},
      {{"ps_server", "--tls_client_ca=" + Cert("ca.crt")}, "need TLS"},
      {{"ps_server", "--tls_cert=" + Cert("server.crt")}, "go together"},
      {{"ps_server", "--tls_cert=" + dir + "/missing.crt",
        "--tls_key=" + Cert("server.key")},
       "--tls_cert=" + dir + "/missing.crt: cannot read"},
      {{"ps_server", "--tls_cert=" + Cert("token"),
        "--tls_key=" + Cert("server.key")},
       "not a PEM file"},
      {{"ps_server", "--tls_cert=" + Cert("server.crt"),
        "--tls_key=" + Cert("server.key"),
        "--auth_token_file=" + dir + "/empty"},
       "holds no token"},
      {{"ps_worker", "--servers=127.0.0.1:1",
        "--auth_token_file=" + Cert("token")},
       "need TLS"},
      {{"psctl", "status", "--servers=127.0.0.1:1",
        "--tls_ca=" + dir + "/missing.crt"},
       "cannot read"},
      // Launchers: TLS on one side only would leave the workers unable to
      // reach a server.
      {{"ps_local", "--out_dir=" + dir + "/local",
        "--tls_ca=" + Cert("ca.crt")},
       "--tls_ca and --server_tls_cert go together"},
      {{"ps_bench", "train", "--out_dir=" + dir + "/bench",
        "--server_tls_cert=" + Cert("server.crt"),
        "--server_tls_key=" + Cert("server.key")},
       "--tls_ca and --server_tls_cert go together"},
      {{"ps_chaos", "run",
        absl::StrCat(PS_SOURCE_DIR, "/deploy/experiments/straggler_sync.yaml"),
        "--out=" + dir + "/chaos", "--tls_ca=" + Cert("ca.crt"),
        "--server_tls_cert=" + Cert("server.crt")},
       "--server_tls_cert and --server_tls_key go together"},
      {{"ps_local", "--out_dir=" + dir + "/local", "--tls_ca=" + Cert("ca.crt"),
        "--server_tls_cert=" + dir + "/missing.crt",
        "--server_tls_key=" + Cert("server.key")},
       "the servers' credentials (--server_tls_cert, --server_tls_key): "
       "--tls_cert=" +
           dir + "/missing.crt: cannot read"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    Outcome outcome = RunBinary(
        cases[i].argv, absl::StrCat(dir, "/", i, ".out"), absl::Seconds(60));
    EXPECT_TRUE(ExitedWith(outcome, 2)) << i << ": " << outcome.output;
    EXPECT_THAT(outcome.output, HasSubstr(cases[i].says)) << i;
    EXPECT_EQ(std::count(outcome.output.begin(), outcome.output.end(), '\n'), 1)
        << outcome.output;
  }
}

}  // namespace
}  // namespace ps
