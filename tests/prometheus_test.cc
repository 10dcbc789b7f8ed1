// A real Prometheus (Debian's) scraping a ps_local job: the scrape config a
// user would write for its endpoints, then the HTTP API's answer about the
// training. Everything on 127.0.0.1, on ports free a moment before.
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json.h"
#include "common/subprocess.h"
#include "deploy/local/deploy_files.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"

namespace ps {
namespace {

using test_support::BinDir;
using test_support::FreshDir;
using test_support::ReadFile;
using test_support::WaitUntil;

constexpr int kServers = 2;
constexpr int kWorkers = 2;

std::string Targets(int first, int count) {
  std::vector<std::string> targets;
  for (int port = first; port < first + count; ++port) {
    targets.push_back(absl::StrCat("'127.0.0.1:", port, "'"));
  }
  return absl::StrCat("[", absl::StrJoin(targets, ", "), "]");
}

// The instant query's answer as shard → value; empty when Prometheus does
// not answer or has no such series (yet).
std::map<std::string, double> ValueByShard(int prometheus_port,
                                           const std::string& query) {
  httplib::Client client("127.0.0.1", prometheus_port);
  client.set_connection_timeout(5);
  client.set_read_timeout(10);
  httplib::Result answer = client.Get(
      "/api/v1/query", httplib::Params{{"query", query}}, httplib::Headers{});
  std::map<std::string, double> values;
  if (!answer || answer->status != 200) return values;
  const common::Json body = common::ParseJsonObject(answer->body);
  if (body.value("status", "") != "success") return values;
  for (const common::Json& series : body["data"]["result"]) {
    values[series["metric"].value("shard", "")] =
        std::stod(series["value"][1].get<std::string>());
  }
  return values;
}

bool EveryShardAbove(const std::map<std::string, double>& values,
                     double floor) {
  if (values.size() != kServers) return false;
  for (int shard = 0; shard < kServers; ++shard) {
    auto it = values.find(absl::StrCat(shard));
    if (it == values.end() || it->second <= floor) return false;
  }
  return true;
}

TEST(Prometheus, ScrapesAPsLocalJobAndSeesPushesOnEveryShard) {
  ASSERT_FALSE(common::FindExecutable("prometheus").empty())
      << "Debian's prometheus package is missing (tools/setup.sh installs it)";
  const std::string dir = FreshDir("prometheus");
  // One range, so Prometheus's port cannot be one the job will take.
  const int metrics_base = launch::FreeLoopbackPorts(kServers + kWorkers + 1);
  ASSERT_GT(metrics_base, 0) << "no free loopback ports";
  const int prometheus_port = metrics_base + kServers + kWorkers;

  // The scrape config deploy/README.md shows, with ps_local's endpoints.
  const std::string config = dir + "/prometheus.yml";
  std::ofstream(config) << "global:\n"
                        << "  scrape_interval: 500ms\n"
                        << "  scrape_timeout: 400ms\n"
                        << "scrape_configs:\n"
                        << "  - job_name: ps_server\n"
                        << "    static_configs:\n"
                        << "      - targets: "
                        << Targets(metrics_base, kServers) << "\n"
                        << "  - job_name: ps_worker\n"
                        << "    static_configs:\n"
                        << "      - targets: "
                        << Targets(metrics_base + kServers, kWorkers) << "\n";
  absl::StatusOr<common::Subprocess> prometheus = common::Subprocess::Spawn(
      {"prometheus", absl::StrCat("--config.file=", config),
       absl::StrCat("--storage.tsdb.path=", dir, "/tsdb"),
       absl::StrCat("--web.listen-address=127.0.0.1:", prometheus_port)},
      dir + "/prometheus.log");
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();
  ASSERT_TRUE(WaitUntil([&] {
    httplib::Client client("127.0.0.1", prometheus_port);
    client.set_connection_timeout(1);
    httplib::Result ready = client.Get("/-/ready");
    return (ready && ready->status == 200) || prometheus->Poll().has_value();
  }));
  ASSERT_FALSE(prometheus->Poll().has_value())
      << ReadFile(dir + "/prometheus.log");
  // Prometheus hands discovered targets to its scrapers only every 5 s:
  // train once every endpoint is a target, so no part of a short job goes
  // unscraped.
  ASSERT_TRUE(WaitUntil([&] {
    httplib::Client client("127.0.0.1", prometheus_port);
    client.set_connection_timeout(1);
    httplib::Result targets = client.Get("/api/v1/targets");
    if (!targets || targets->status != 200) return false;
    const common::Json body = common::ParseJsonObject(targets->body);
    return body.contains("data") &&
           body["data"]["activeTargets"].size() == kServers + kWorkers;
  })) << ReadFile(dir + "/prometheus.log");

  // Eight epochs (4 s on two loaded cores): several scrapes, 500 ms apart.
  absl::StatusOr<common::Subprocess> job = common::Subprocess::Spawn(
      {BinDir() + "/ps_local", absl::StrCat("--servers=", kServers),
       absl::StrCat("--workers=", kWorkers), "--mode=async", "--epochs=8",
       "--eval_every=1", absl::StrCat("--metrics_base_port=", metrics_base),
       absl::StrCat("--out_dir=", dir, "/job")},
      dir + "/ps_local.out");
  ASSERT_TRUE(job.ok()) << job.status();

  // While the job trains: the query the issue names, every shard non-zero.
  std::map<std::string, double> during;
  const bool seen_during = WaitUntil(
      [&] {
        during = ValueByShard(prometheus_port,
                              "ps_server_pushes_total{outcome=\"applied\"}");
        return EveryShardAbove(during, 0) || job->Poll().has_value();
      },
      absl::Seconds(60));
  const std::optional<int> finished = job->WaitFor(absl::Seconds(120));
  ASSERT_TRUE(finished.has_value()) << "ps_local did not finish";
  EXPECT_TRUE(common::ExitedCleanly(*finished))
      << ReadFile(dir + "/ps_local.out");
  EXPECT_TRUE(seen_during);
  EXPECT_TRUE(EveryShardAbove(during, 0))
      << "ps_server_pushes_total while training: " << during.size()
      << " shards; ps_local: " << ReadFile(dir + "/ps_local.out");

  // After training the servers are gone, and their series stale: the last
  // value each shard reported is in the range.
  const std::map<std::string, double> after = ValueByShard(
      prometheus_port,
      "max_over_time(ps_server_pushes_total{outcome=\"applied\"}[10m])");
  EXPECT_TRUE(EveryShardAbove(after, 0)) << after.size() << " shards";
  // ...and no less than what they reported while training.
  for (const auto& [shard, value] : during) {
    EXPECT_GE(after.count(shard) ? after.at(shard) : 0, value) << shard;
  }

  prometheus->Signal(SIGTERM);
  const std::optional<int> stopped = prometheus->WaitFor(absl::Seconds(30));
  EXPECT_TRUE(stopped.has_value() && common::ExitedCleanly(*stopped))
      << ReadFile(dir + "/prometheus.log");
  EXPECT_EQ(std::system(absl::StrCat("rm -rf '", dir, "'").c_str()), 0);
}

}  // namespace
}  // namespace ps
