// PushPull on a long-lived stream (ClientOptions::pushpull_stream): the
// same θ as unary calls, a fall-back that applies a push once, and servers
// that stop without waiting for open streams.

#include <algorithm>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/ps_server.h"
#include "tests/loopback_cluster.h"
#include "worker/parameter_client.h"

namespace ps {
namespace {

using test_support::ClientFor;
using test_support::Cluster;
using test_support::StartCluster;

// The open streams shard `shard` of `cluster` reports.
std::string StreamsGauge(const Cluster& cluster, uint32_t shard) {
  const std::string exposition =
      cluster.servers[shard]->metrics().registry().Render();
  const std::string name =
      absl::StrCat("ps_server_pushpull_streams{shard=\"", shard, "\"} ");
  const size_t at = exposition.find(name);
  if (at == std::string::npos) return "absent";
  return exposition.substr(at + name.size(),
                           exposition.find('\n', at) - at - name.size());
}

struct StepsRun {
  std::vector<float> theta;
  worker::PushCounts counts;
  std::string streams_while_training;
  // The longest wait a shard reported: one worker closes each sync round
  // itself, so none of its pulls was held.
  double longest_wait_seconds = 0;
};

// 20 sync steps of one worker on two shards, with or without streams.
StepsRun TwentySteps(bool streams) {
  Cluster cluster = StartCluster(2, 1, server::ConsistencyMode::kSync);
  worker::ClientOptions options = ClientFor(cluster, 0);
  options.pushpull_stream = streams;
  auto client = worker::ParameterClient::Connect(options);
  EXPECT_TRUE(client.ok()) << client.status();
  StepsRun run;
  if (!client.ok()) return run;
  EXPECT_TRUE((*client)->Register().ok());
  run.theta.assign(37, 0.25f);
  EXPECT_TRUE((*client)->Init({{"w", {37}, false}}, run.theta).ok());
  std::vector<float> gradient(run.theta.size());
  for (uint64_t step = 0; step < 20; ++step) {
    for (size_t k = 0; k < gradient.size(); ++k) {
      gradient[k] =
          std::sin(0.1f * static_cast<float>(k + step)) + run.theta[k];
    }
    absl::StatusOr<worker::PullInfo> pulled =
        (*client)->PushPull(step, 8, gradient, absl::MakeSpan(run.theta));
    EXPECT_TRUE(pulled.ok()) << pulled.status();
    if (pulled.ok()) {
      run.longest_wait_seconds =
          std::max(run.longest_wait_seconds, pulled->waited_seconds);
    }
  }
  run.counts = (*client)->push_counts();
  run.streams_while_training =
      StreamsGauge(cluster, 0) + "," + StreamsGauge(cluster, 1);
  return run;
}

TEST(PushPullStream, TrainsTheSameThetaAsUnaryCalls) {
  const StepsRun unary = TwentySteps(false);
  const StepsRun streamed = TwentySteps(true);
  EXPECT_EQ(unary.streams_while_training, "0,0");
  // Each shard's stream is open while the worker trains: the steps went
  // on them.
  EXPECT_EQ(streamed.streams_while_training, "1,1");
  ASSERT_EQ(unary.theta.size(), streamed.theta.size());
  for (size_t k = 0; k < unary.theta.size(); ++k) {
    EXPECT_EQ(unary.theta[k], streamed.theta[k]) << "key " << k;
  }
  EXPECT_EQ(streamed.counts.applied_or_accepted, 40u);
  EXPECT_EQ(streamed.counts.duplicate, 0u);
  EXPECT_EQ(streamed.counts.applied_or_accepted,
            unary.counts.applied_or_accepted);
  // Answered at once on either path: no wait reported.
  EXPECT_EQ(unary.longest_wait_seconds, 0);
  EXPECT_EQ(streamed.longest_wait_seconds, 0);
}

// A stream's answer that comes too late: the push it carried was taken,
// and the unary calls that follow carry the same seq. The shard counts
// them as duplicates; the worker counts its push once, as applied.
TEST(PushPullStream, ALateStreamFallsBackToUnaryCallsAndThePushCountsOnce) {
  Cluster cluster = StartCluster(1, 2, server::ConsistencyMode::kSync);
  worker::ClientOptions late_options = ClientFor(cluster, 0);
  late_options.retry.rpc_deadline = absl::Milliseconds(200);
  auto late = worker::ParameterClient::Connect(late_options);
  auto other = worker::ParameterClient::Connect(ClientFor(cluster, 1));
  ASSERT_TRUE(late.ok() && other.ok());
  ASSERT_TRUE((*late)->Register().ok());
  ASSERT_TRUE((*other)->Register().ok());
  std::vector<float> theta = {0, 0};
  ASSERT_TRUE((*late)->Init({{"w", {2}, false}}, theta).ok());
  std::vector<float> other_theta = theta;
  ASSERT_TRUE((*other)->Init({{"w", {2}, false}}, other_theta).ok());
  // As a worker starts: θ first, so the step's pull asks for round 1.
  ASSERT_TRUE((*late)->Pull(0, absl::MakeSpan(theta)).ok());
  ASSERT_TRUE((*other)->Pull(0, absl::MakeSpan(other_theta)).ok());

  // The round waits for the other worker: the late one's stream, and then
  // a few of its unary attempts, end at their 200 ms deadline.
  absl::StatusOr<worker::PullInfo> late_step;
  std::thread stepping([&] {
    late_step = (*late)->PushPull(0, 4, {1, 1}, absl::MakeSpan(theta));
  });
  absl::SleepFor(absl::Seconds(1));
  ASSERT_TRUE(
      (*other)->PushPull(0, 4, {3, 3}, absl::MakeSpan(other_theta)).ok());
  stepping.join();
  ASSERT_TRUE(late_step.ok()) << late_step.status();

  const server::ShardStatus status = cluster.servers[0]->shard().Status();
  EXPECT_EQ(status.version, 1u);
  EXPECT_EQ(status.pushes_applied, 2u);
  EXPECT_GE(status.pushes_duplicate, 1u);
  EXPECT_EQ((*late)->push_counts().applied_or_accepted, 1u);
  EXPECT_EQ((*late)->push_counts().duplicate, 0u);
  EXPECT_EQ(theta, other_theta);
}

// A server stopping ends the streams open on it first: without that, its
// shutdown would wait out the whole grace for them.
TEST(PushPullStream, AStoppingServerDoesNotWaitForOpenStreams) {
  Cluster cluster = StartCluster(1, 1, server::ConsistencyMode::kAsync);
  auto client = worker::ParameterClient::Connect(ClientFor(cluster, 0));
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Register().ok());
  std::vector<float> theta = {0, 0};
  ASSERT_TRUE((*client)->Init({{"w", {2}, false}}, theta).ok());
  ASSERT_TRUE((*client)->PushPull(0, 4, {1, 1}, absl::MakeSpan(theta)).ok());
  ASSERT_EQ(StreamsGauge(cluster, 0), "1");

  const absl::Time start = absl::Now();
  cluster.servers[0]->Shutdown(absl::Seconds(60));
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

}  // namespace
}  // namespace ps
