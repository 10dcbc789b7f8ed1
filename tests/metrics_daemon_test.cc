// /metrics of real ps_server and ps_worker processes: what promtool accepts
// and what the counters say after training, and --metrics_listen's checks.
#include <httplib.h>
#include <signal.h>

#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
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
using ::testing::MatchesRegex;

// The port a daemon started with --metrics_listen=127.0.0.1:0 bound, from
// its log line "metrics on port N"; -1 when that line is not there within
// 60 s. Port 0, not a port found free beforehand: another test's process
// can take such a port before the daemon binds it.
int MetricsPort(const std::string& log) {
  int port = -1;
  test_support::WaitUntil(
      [&] {
        const std::string text = ReadFile(log);
        const size_t at = text.find("metrics on port ");
        return at != std::string::npos &&
               absl::SimpleAtoi(
                   text.substr(at + 16, text.find(' ', at + 16) - at - 16),
                   &port);
      },
      absl::Seconds(60));
  EXPECT_GT(port, 0) << "no \"metrics on port\" line in " << log;
  return port;
}

// GET /metrics from 127.0.0.1:port; nullopt when nothing answers (yet).
std::optional<std::string> TryScrape(int port) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(10);
  client.set_read_timeout(10);
  httplib::Result result = client.Get("/metrics");
  if (!result || result->status != 200) return std::nullopt;
  return result->body;
}

// As TryScrape, failing the test when nothing answers.
std::string Scrape(int port) {
  std::optional<std::string> body = TryScrape(port);
  EXPECT_TRUE(body.has_value()) << "GET 127.0.0.1:" << port << "/metrics";
  return body.value_or("");
}

// promtool's verdict on an exposition: its output, empty when it has
// nothing to say (valid, and no lint problem).
std::string PromtoolCheck(const std::string& dir, const std::string& name,
                          const std::string& exposition) {
  const std::string path = absl::StrCat(dir, "/", name, ".prom");
  std::ofstream(path) << exposition;
  Outcome outcome;
  absl::StatusOr<common::Subprocess> promtool = common::Subprocess::Spawn(
      {"/bin/sh", "-c", absl::StrCat("promtool check metrics < '", path, "'")},
      path + ".out");
  EXPECT_TRUE(promtool.ok()) << promtool.status();
  if (!promtool.ok()) return "cannot run promtool";
  std::optional<int> status = promtool->WaitFor(absl::Seconds(60));
  EXPECT_TRUE(status.has_value() && common::ExitedCleanly(*status))
      << ReadFile(path + ".out");
  return ReadFile(path + ".out");
}

// The value of the sample line starting with `series` (name and labels as
// rendered); -1 when there is none.
double Sample(const std::string& exposition, const std::string& series) {
  const size_t at = exposition.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(exposition.substr(at + series.size() + 2));
}

TEST(MetricsDaemons, ServerExpositionPassesPromtoolAndCountsATrainingRun) {
  test_support::Job job(
      "metrics_server", {"--mode=async", "--metrics_listen=127.0.0.1:0"},
      /*workers=*/1,
      {"--model=softmax", "--epochs=1", "--batch_size=1000", "--eval_every=1"});
  ASSERT_TRUE(job.Finishes(0)) << ReadFile(job.dir() + "/worker-0.log");
  const int server_metrics = MetricsPort(job.dir() + "/server.log");

  const std::string exposition = Scrape(server_metrics);
  EXPECT_EQ(PromtoolCheck(job.dir(), "server", exposition), "");
  // 64 data partitions of 937 or 938 examples, each one batch (of at most
  // 1000): 64 steps, each one push.
  EXPECT_EQ(Sample(exposition,
                   "ps_server_pushes_total{shard=\"0\",outcome=\"applied\"}"),
            64);
  EXPECT_EQ(Sample(exposition, "ps_server_samples_applied_total{shard=\"0\"}"),
            60000);
  EXPECT_GT(
      Sample(exposition, "ps_server_pulls_total{shard=\"0\",outcome=\"ok\"}"),
      0);
  EXPECT_EQ(Sample(exposition, "ps_server_version{shard=\"0\"}"), 64);
  EXPECT_GT(
      Sample(exposition,
             "ps_server_received_bytes_total{shard=\"0\",method=\"Push\"}") +
          Sample(exposition,
                 "ps_server_received_bytes_total{shard=\"0\","
                 "method=\"PushPull\"}"),
      64 * 7850 * 4);
  EXPECT_GT(Sample(exposition,
                   "ps_server_rpc_duration_seconds_count{shard=\"0\","
                   "method=\"Register\"}"),
            0);
  EXPECT_EQ(Sample(exposition, "ps_server_parked_pulls{shard=\"0\"}"), 0);
  // Every applied push's staleness is observed (one worker: each push is
  // computed from the θ its previous one made, or the one before).
  EXPECT_EQ(Sample(exposition,
                   "ps_server_push_staleness_versions_count{shard=\"0\"}"),
            64);
  // Series that other modes or overload move exist from the start.
  EXPECT_EQ(Sample(exposition,
                   "ps_server_sync_round_duration_seconds_count{shard=\"0\","
                   "closed_by=\"all_live\"}"),
            0);
  EXPECT_EQ(Sample(exposition,
                   "ps_server_pulls_refused_total{shard=\"0\","
                   "bound=\"total\"}"),
            0);

  // SIGTERM stops the server and its endpoint with it.
  const std::optional<int> stopped = [&]() -> std::optional<int> {
    job.server().Signal(SIGTERM);
    return job.server().WaitFor(absl::Seconds(30));
  }();
  ASSERT_TRUE(stopped.has_value());
  EXPECT_TRUE(common::ExitedCleanly(*stopped));
  httplib::Client after("127.0.0.1", server_metrics);
  after.set_connection_timeout(5);
  EXPECT_FALSE(after.Get("/metrics"));
}

TEST(MetricsDaemons,
     WorkerExpositionPassesPromtoolAndCountsStepsWhileTraining) {
  test_support::Job job(
      // Faults, so the worker retries.
      "metrics_worker",
      {"--mode=sync", "--inject_faults=seed=7,error=UNAVAILABLE:0.2"},
      /*workers=*/1,
      {"--model=softmax", "--epochs=20", "--batch_size=64",
       "--metrics_listen=127.0.0.1:0"});
  const int worker_metrics = MetricsPort(job.dir() + "/worker-0.log");
  const std::string steps = "ps_worker_steps_total{rank=\"0\"}";
  const std::string retries =
      "ps_worker_rpc_retries_total{rank=\"0\",code=\"unavailable\"}";
  std::string exposition;
  ASSERT_TRUE(test_support::WaitUntil(
      [&] {
        exposition = TryScrape(worker_metrics).value_or("");
        return Sample(exposition, steps) >= 10 &&
               Sample(exposition, retries) > 0;
      },
      absl::Seconds(60)))
      << exposition << ReadFile(job.dir() + "/worker-0.log");
  EXPECT_EQ(PromtoolCheck(job.dir(), "worker", exposition), "");
  const double taken = Sample(exposition, steps);
  const double samples =
      Sample(exposition, "ps_worker_samples_total{rank=\"0\"}");
  // A partition's 937 or 938 examples in 15 even batches: 62 or 63 each.
  EXPECT_GE(samples, 62 * taken);
  EXPECT_LE(samples, 63 * (taken + 1));
  EXPECT_GE(Sample(exposition,
                   "ps_worker_pushes_total{rank=\"0\",outcome=\"applied\"}"),
            taken - 1);
  EXPECT_GE(Sample(exposition, "ps_worker_pulls_total{rank=\"0\"}"), taken);
  for (const char* phase : {"compute", "push_pull", "wait", "other"}) {
    EXPECT_GE(Sample(exposition,
                     absl::StrCat("ps_worker_step_phase_seconds_count{rank="
                                  "\"0\",phase=\"",
                                  phase, "\"}")),
              taken)
        << phase;
  }
  EXPECT_GT(Sample(exposition,
                   "ps_worker_step_phase_seconds_sum{rank=\"0\","
                   "phase=\"compute\"}"),
            0);

  // SIGTERM: the worker leaves the job and its endpoint closes with it.
  job.worker(0).Signal(SIGTERM);
  ASSERT_TRUE(job.worker(0).WaitFor(absl::Seconds(30)).has_value());
  httplib::Client after("127.0.0.1", worker_metrics);
  after.set_connection_timeout(5);
  EXPECT_FALSE(after.Get("/metrics"));
}

TEST(MetricsDaemons, TableSeriesOfASparseJobPassPromtoolAndAddUp) {
  const std::string data = FreshDir("metrics_tables_data");
  const Outcome generated =
      RunBinary({"ps_datagen", "ctr", "--rows=2000", "--ids=2600", "--seed=3",
                 "--out=" + data},
                data + "/datagen.out", absl::Seconds(60));
  ASSERT_TRUE(ExitedWith(generated, 0)) << generated.output;
  // A limit of a few hundred rows, so that the job evicts.
  constexpr int kLimit = 32 << 10;
  test_support::Job job(
      "metrics_tables",
      {"--mode=async", absl::StrCat("--table_memory_limit=", kLimit),
       "--metrics_listen=127.0.0.1:0"},
      /*workers=*/1,
      {"--model=logreg", "--data_format=libsvm",
       "--train=" + data + "/train.libsvm", "--test=" + data + "/test.libsvm",
       "--epochs=1", "--batch_size=32", "--eval_every=1"});
  ASSERT_TRUE(job.Finishes(0)) << ReadFile(job.dir() + "/worker-0.log");

  const std::string exposition = Scrape(MetricsPort(job.dir() + "/server.log"));
  EXPECT_EQ(PromtoolCheck(job.dir(), "server_tables", exposition), "");
  const auto table = [&](const std::string& name) {
    return Sample(exposition,
                  absl::StrCat(name, "{shard=\"0\",table=\"weights\"}"));
  };
  const double rows = table("ps_server_table_rows");
  const double created = table("ps_server_table_rows_created_total");
  const double evicted = table("ps_server_table_rows_evicted_total");
  EXPECT_GT(rows, 0);
  EXPECT_GT(evicted, 0);
  EXPECT_EQ(created, rows + evicted);
  EXPECT_EQ(table("ps_server_table_rows_refused_total"), 0);
  EXPECT_EQ(table("ps_server_table_memory_limit_bytes"), kLimit);
  EXPECT_GT(table("ps_server_table_memory_bytes"), 0);
  EXPECT_LE(table("ps_server_table_memory_bytes"), kLimit);
}

TEST(MetricsDaemons, AMetricsPortInUseStopsTheServerAtStartUpWithOneLine) {
  const std::string dir = FreshDir("metrics_in_use");
  // A listener of our own holds the port.
  const test_support::LoopbackListener holder;
  const int port = holder.port();
  Outcome outcome =
      RunBinary({"ps_server", "--listen=127.0.0.1:0",
                 absl::StrCat("--metrics_listen=127.0.0.1:", port)},
                dir + "/server.out", absl::Seconds(60));
  EXPECT_TRUE(ExitedWith(outcome, 2)) << outcome.output;
  EXPECT_THAT(outcome.output,
              HasSubstr(absl::StrCat("--metrics_listen: cannot listen on "
                                     "127.0.0.1:",
                                     port)));
  EXPECT_EQ(std::count(outcome.output.begin(), outcome.output.end(), '\n'), 1)
      << outcome.output;
}

}  // namespace
}  // namespace ps
