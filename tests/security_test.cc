// TLS, client certificates and tokens, on real ps_server, ps_worker and
// psctl processes: the right credentials train, anything else is refused
// before it reaches θ, the worker table or the checkpoint directory.
#include <dirent.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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
    EXPECT_TRUE(test_support::WaitForPortFile(*server_, dir + "/port"))
        << ReadFile(dir + "/server.log");
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
