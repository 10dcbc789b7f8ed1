// The Prometheus registry and its text exposition (format 0.0.4), and the
// HTTP endpoint that serves it.
#include <httplib.h>

#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/metrics/http_endpoint.h"
#include "common/metrics/registry.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::common::metrics {
namespace {

using ::testing::HasSubstr;

TEST(MetricsRegistry, RendersCounterWithHelpTypeAndConstantLabels) {
  Registry registry(Labels{{"shard", "3"}});
  Family<Counter>& pushes =
      registry.AddCounter("ps_pushes_total", "Pushes by outcome.", {"outcome"});
  pushes.WithLabels({"applied"}).Increment(5);
  pushes.WithLabels({"stale"}).Increment();
  EXPECT_EQ(registry.Render(),
            "# HELP ps_pushes_total Pushes by outcome.\n"
            "# TYPE ps_pushes_total counter\n"
            "ps_pushes_total{shard=\"3\",outcome=\"applied\"} 5\n"
            "ps_pushes_total{shard=\"3\",outcome=\"stale\"} 1\n");
}

TEST(MetricsRegistry, RendersGaugeWithoutLabelsAsABareName) {
  Registry registry;
  Gauge& version =
      registry.AddGauge("ps_version", "θ's version.").WithLabels({});
  version.Set(42);
  version.Add(-0.5);
  EXPECT_EQ(registry.Render(),
            "# HELP ps_version θ's version.\n"
            "# TYPE ps_version gauge\n"
            "ps_version 41.5\n");
}

TEST(MetricsRegistry, RendersHistogramBucketsCumulativeWithInfSumAndCount) {
  Registry registry(Labels{{"shard", "0"}});
  Histogram& latency = registry
                           .AddHistogram("ps_rpc_duration_seconds", "Latency.",
                                         {0.001, 0.01}, {"method"})
                           .WithLabels({"Push"});
  latency.Observe(0.0005);
  latency.Observe(0.001);  // le is inclusive
  latency.Observe(0.005);
  latency.Observe(3);
  EXPECT_EQ(registry.Render(),
            "# HELP ps_rpc_duration_seconds Latency.\n"
            "# TYPE ps_rpc_duration_seconds histogram\n"
            "ps_rpc_duration_seconds_bucket{shard=\"0\",method=\"Push\",le=\"0."
            "001\"} 2\n"
            "ps_rpc_duration_seconds_bucket{shard=\"0\",method=\"Push\",le=\"0."
            "01\"} 3\n"
            "ps_rpc_duration_seconds_bucket{shard=\"0\",method=\"Push\",le=\"+"
            "Inf\"} 4\n"
            "ps_rpc_duration_seconds_sum{shard=\"0\",method=\"Push\"} 3.0065\n"
            "ps_rpc_duration_seconds_count{shard=\"0\",method=\"Push\"} 4\n");
}

TEST(MetricsRegistry, EscapesHelpAndLabelValues) {
  Registry registry;
  registry.AddGauge("ps_g", "back\\slash and\nnewline \"quoted\"", {"path"})
      .WithLabels({"a\"b\\c\nd"})
      .Set(1);
  EXPECT_EQ(registry.Render(),
            "# HELP ps_g back\\\\slash and\\nnewline \"quoted\"\n"
            "# TYPE ps_g gauge\n"
            "ps_g{path=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST(MetricsRegistry, FormatsValuesExactlyAndSpecialValuesByName) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(123456789012), "123456789012");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(1e-7), "1e-07");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
}

TEST(MetricsRegistry, ScrapeHookSetsSeriesBeforeRendering) {
  Registry registry;
  Counter& applied =
      registry.AddCounter("ps_applied_total", "Applied.").WithLabels({});
  double source = 7;
  registry.AddScrapeHook([&] { applied.SetTotal(source); });
  EXPECT_THAT(registry.Render(), HasSubstr("ps_applied_total 7\n"));
  source = 9;
  EXPECT_THAT(registry.Render(), HasSubstr("ps_applied_total 9\n"));
}

TEST(MetricsRegistry, CountsEveryIncrementFromManyThreads) {
  Registry registry;
  Counter& counter = registry.AddCounter("ps_c_total", "C.").WithLabels({});
  Histogram& histogram =
      registry.AddHistogram("ps_h_seconds", "H.", {0.5}).WithLabels({});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        counter.Increment(0.5);
        histogram.Observe(1);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(counter.Value(), 20000);
  const Histogram::Snapshot snapshot = histogram.Read();
  EXPECT_EQ(snapshot.cumulative_counts.back(), 40000u);
  EXPECT_EQ(snapshot.sum, 40000);
}

TEST(MetricsRegistryDeathTest, RefusesACounterNotEndingInTotal) {
  Registry registry;
  EXPECT_DEATH(registry.AddCounter("ps_pushes", "Pushes."), "_total");
}

TEST(ListenAddress, ParsesHostPortAndRefusesTheRestWithAReason) {
  absl::StatusOr<HostPort> parsed = ParseListenAddress("127.0.0.1:9100");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->host, "127.0.0.1");
  EXPECT_EQ(parsed->port, 9100);
  EXPECT_EQ(ParseListenAddress("[::1]:0")->host, "::1");
  EXPECT_THAT(ParseListenAddress("9100").status().message(),
              HasSubstr("no port"));
  EXPECT_THAT(ParseListenAddress(":9100").status().message(),
              HasSubstr("no host"));
  EXPECT_THAT(ParseListenAddress("localhost:http").status().message(),
              HasSubstr("not a number"));
  EXPECT_THAT(ParseListenAddress("localhost:70000").status().message(),
              HasSubstr("not a number"));
}

TEST(MetricsEndpoint, ServesTheRegistryOnAFreePortAndStopsWhenDestroyed) {
  Registry registry;
  registry.AddGauge("ps_up", "Up.").WithLabels({}).Set(1);
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
      MetricsEndpoint::Start("127.0.0.1:0", &registry);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const int port = (*endpoint)->port();
  ASSERT_GT(port, 0);
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(10);
  client.set_read_timeout(10);
  httplib::Result scraped = client.Get("/metrics");
  ASSERT_TRUE(scraped) << httplib::to_string(scraped.error());
  EXPECT_EQ(scraped->status, 200);
  EXPECT_EQ(scraped->get_header_value("Content-Type"),
            "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_THAT(scraped->body, HasSubstr("ps_up 1\n"));

  // The port is taken while it serves.
  EXPECT_THAT(
      MetricsEndpoint::Start(absl::StrCat("127.0.0.1:", port), &registry)
          .status()
          .message(),
      HasSubstr("in use"));
  endpoint->reset();
  httplib::Client after("127.0.0.1", port);
  after.set_connection_timeout(10);
  EXPECT_FALSE(after.Get("/metrics"));
}

}  // namespace
}  // namespace ps::common::metrics
