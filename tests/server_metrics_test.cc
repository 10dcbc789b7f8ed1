// ServerMetrics over a ParameterShard, without a network: the series that
// the shard's own events move.
#include "server/server_metrics.h"

#include <string>
#include <vector>

#include "common/float_bytes.h"
#include "gtest/gtest.h"
#include "server/parameter_shard.h"

namespace ps::server {
namespace {

constexpr uint64_t kIncarnation = 1;

// The value of the sample line starting with `series` (name and labels as
// rendered); -1 when there is none.
double Sample(const std::string& exposition, const std::string& series) {
  const size_t at = exposition.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(exposition.substr(at + series.size() + 2));
}

class ServerMetricsTest : public ::testing::Test {
 protected:
  void Start(ShardOptions options) {
    options.max_workers = options.num_workers;
    shard_ = std::make_unique<ParameterShard>(options);
    metrics_ = std::make_unique<ServerMetrics>(shard_.get(), nullptr, 0);
    for (uint32_t id = 0; id < options.num_workers; ++id) {
      ASSERT_TRUE(shard_->Register(id, kIncarnation).ok());
    }
    InitArgs init;
    init.tensors = {{"w", {2}, false}};
    init.num_shards = 1;
    std::string zeros;
    common::FloatsToBytes({0, 0}, &zeros);
    init.values = zeros;
    ASSERT_TRUE(shard_->Init(init).ok());
  }

  absl::StatusOr<PushResult> Push(uint32_t worker, uint64_t seq,
                                  uint64_t base_version) {
    PushArgs args;
    args.worker_id = worker;
    args.incarnation = kIncarnation;
    args.seq = seq;
    args.step = seq - 1;
    args.base_version = base_version;
    args.batch_size = 1;
    args.keys = {0, 2};
    std::string ones;
    common::FloatsToBytes({1, 1}, &ones);
    args.gradient = ones;
    return shard_->Push(args);
  }

  // A pull for `min_version` that parks, or its immediate answer's status.
  absl::Status Park(uint32_t worker, uint64_t min_version) {
    PullArgs args;
    args.worker_id = worker;
    args.min_version = min_version;
    auto now =
        shard_->Pull(args, absl::InfiniteFuture(), shard_->NewPullTicket(),
                     [](absl::StatusOr<PullResult>) {});
    return now.has_value() ? now->status() : absl::OkStatus();
  }

  std::string Render() const { return metrics_->registry().Render(); }

  std::unique_ptr<ParameterShard> shard_;
  std::unique_ptr<ServerMetrics> metrics_;
};

TEST_F(ServerMetricsTest, RefusedPullsAreCountedByTheBoundTheyHit) {
  ShardOptions options;
  options.mode = ConsistencyMode::kSync;
  options.num_workers = 2;
  options.max_parked_pulls = 2;
  options.max_parked_pulls_per_worker = 1;
  Start(options);
  EXPECT_EQ(
      Sample(Render(),
             "ps_server_pulls_refused_total{shard=\"0\",bound=\"total\"}"),
      0);
  ASSERT_TRUE(Park(0, 1).ok());
  EXPECT_EQ(Park(0, 1).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(Park(1, 1).ok());
  EXPECT_EQ(Park(1, 1).code(), absl::StatusCode::kResourceExhausted);
  const std::string exposition = Render();
  EXPECT_EQ(
      Sample(exposition,
             "ps_server_pulls_refused_total{shard=\"0\",bound=\"total\"}"),
      1);
  EXPECT_EQ(Sample(exposition,
                   "ps_server_pulls_refused_total{shard=\"0\","
                   "bound=\"per_worker\"}"),
            1);
}

}  // namespace
}  // namespace ps::server
