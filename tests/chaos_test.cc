// ps_chaos end to end: a worker killed in sync mode, with in-process RPC
// faults on another, on loopback; the assertions read summary.json.
#include <sys/stat.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/cli.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"

namespace ps {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using test_support::Field;
using test_support::FreshDir;
using test_support::ReadFile;
using test_support::RunBinary;

constexpr double kLeaseSeconds = 1;

// The text after the first "key": in `json`, up to the next comma or brace.
std::string Value(const std::string& json, const std::string& key) {
  const std::string needle = absl::StrCat("\"", key, "\": ");
  const size_t at = json.find(needle);
  if (at == std::string::npos) return "";
  const size_t begin = at + needle.size();
  return json.substr(begin, json.find_first_of(",}", begin) - begin);
}

// A number, or -1 for null or anything else.
double Number(const std::string& text) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  return end != text.c_str() ? value : -1;
}

TEST(Chaos, SyncTrainingRidesThroughAKilledWorkerAndTheSummarySaysHow) {
  const std::string dir = FreshDir("chaos");
  const std::string scenario = dir + "/worker_kill.yaml";
  ASSERT_TRUE(common::WriteFileAtomically(
                  scenario,
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
  test_support::Outcome run = RunBinary(
      {"ps_chaos", "run", scenario, "--out", out, "--quiet"},
      dir + "/ps_chaos.log", absl::Minutes(4));
  ASSERT_TRUE(test_support::ExitedWith(run, 0)) << run.output;

  const std::string summary = ReadFile(out + "/summary.json");
  ASSERT_THAT(summary, HasSubstr("\"completed\": true")) << summary;
  EXPECT_GT(Field(summary, "final_accuracy"), 0.7) << summary;
  EXPECT_THAT(summary, HasSubstr("\"teardown\": {\"clean\": true")) << summary;

  // The kill (the second fault) was detected through the lease, and the
  // stall it caused lasted about one lease: bounded, not a hang.
  const size_t kill = summary.find("\"what\": \"kill worker 2\"");
  ASSERT_NE(kill, std::string::npos) << summary;
  const std::string kill_part = summary.substr(kill);
  EXPECT_EQ(Value(kill_part, "applied"), "true");
  const double detect = Number(Value(kill_part, "detect_s"));
  const double stall = Number(Value(kill_part, "stall_s"));
  EXPECT_GT(detect, 0.5 * kLeaseSeconds) << summary;
  EXPECT_LT(detect, kLeaseSeconds + 3) << summary;
  EXPECT_GT(stall, 0.5 * kLeaseSeconds) << summary;
  EXPECT_LT(stall, kLeaseSeconds + 3) << summary;
  EXPECT_EQ(Value(kill_part, "stall_open"), "false");

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
