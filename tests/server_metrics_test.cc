// ServerMetrics over a ParameterShard, without a network: the series that
// the shard's own events move (refused pulls, sync rounds, staleness).
#include "server/server_metrics.h"

#include <cstring>
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

// The value of shard 0's series `name{labels}` (labels after shard's,
// e.g. `bound="total"`); -1 when there is none.
double Shard0(const std::string& exposition, const std::string& name,
              const std::string& labels = "") {
  return Sample(exposition, name + "{shard=\"0\"" +
                                (labels.empty() ? "" : "," + labels) + "}");
}

class ServerMetricsTest : public ::testing::Test {
 protected:
  void Start(ShardOptions options) {
    options.max_workers = options.num_workers;
    options.clock = [this] { return now_; };
    shard_ = std::make_unique<ParameterShard>(options);
    metrics_ = std::make_unique<ServerMetrics>(shard_.get(), nullptr, 0);
    shard_->SetObserver(metrics_.get());
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

  // The shard's clock: moves only when a test says.
  absl::Time now_ = absl::UnixEpoch() + absl::Hours(1);
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
      Shard0(Render(), "ps_server_pulls_refused_total", "bound=\"total\""), 0);
  ASSERT_TRUE(Park(0, 1).ok());
  EXPECT_EQ(Park(0, 1).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(Park(1, 1).ok());
  EXPECT_EQ(Park(1, 1).code(), absl::StatusCode::kResourceExhausted);
  const std::string exposition = Render();
  EXPECT_EQ(
      Shard0(exposition, "ps_server_pulls_refused_total", "bound=\"total\""),
      1);
  EXPECT_EQ(Shard0(exposition, "ps_server_pulls_refused_total",
                   "bound=\"per_worker\""),
            1);
}

TEST_F(ServerMetricsTest, EachSyncRoundsDurationIsObservedByWhatClosedIt) {
  ShardOptions options;
  options.mode = ConsistencyMode::kSync;
  options.num_workers = 2;
  options.round_timeout = absl::Seconds(10);
  options.lease_timeout = absl::Hours(1);  // nobody heartbeats here
  Start(options);
  const std::string all_live =
      "ps_server_sync_round_duration_seconds_count{shard=\"0\","
      "closed_by=\"all_live\"}";
  EXPECT_EQ(Sample(Render(), all_live), 0);
  // Round 0: both push, 2 s after it opened.
  now_ += absl::Seconds(2);
  ASSERT_TRUE(Push(0, 1, 0).ok());
  ASSERT_TRUE(Push(1, 1, 0).ok());
  // Round 1: only worker 0 pushes; the timeout closes it 10 s later.
  ASSERT_TRUE(Push(0, 2, 1).ok());
  now_ += absl::Seconds(10);
  shard_->Tick(now_);
  ASSERT_EQ(shard_->Status().version, 2u);
  const std::string exposition = Render();
  EXPECT_EQ(Sample(exposition, all_live), 1);
  EXPECT_EQ(Shard0(exposition, "ps_server_sync_round_duration_seconds_sum",
                   "closed_by=\"all_live\""),
            2);
  EXPECT_EQ(Shard0(exposition, "ps_server_sync_round_duration_seconds_bucket",
                   "closed_by=\"all_live\",le=\"1\""),
            0);
  EXPECT_EQ(Shard0(exposition, "ps_server_sync_round_duration_seconds_bucket",
                   "closed_by=\"all_live\",le=\"2.5\""),
            1);
  EXPECT_EQ(Shard0(exposition, "ps_server_sync_round_duration_seconds_sum",
                   "closed_by=\"timeout\""),
            10);
  EXPECT_EQ(Shard0(exposition, "ps_server_sync_rounds_total",
                   "closed_by=\"timeout\""),
            1);
}

TEST_F(ServerMetricsTest, EachAppliedAsyncPushsStalenessIsObserved) {
  ShardOptions options;
  options.mode = ConsistencyMode::kAsync;
  options.num_workers = 1;
  Start(options);
  // Three pushes all computed from version 0: applied 0, 1 and 2 versions
  // late.
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    ASSERT_TRUE(Push(0, seq, /*base_version=*/0).ok());
  }
  const std::string exposition = Render();
  EXPECT_EQ(Shard0(exposition, "ps_server_push_staleness_versions_count"), 3);
  EXPECT_EQ(Shard0(exposition, "ps_server_push_staleness_versions_sum"), 3);
  EXPECT_EQ(Shard0(exposition, "ps_server_push_staleness_versions_bucket",
                   "le=\"0\""),
            1);
}

}  // namespace
}  // namespace ps::server

namespace ps::server {
namespace {

TEST(ServerMetricsTables, RowsMemoryAndRowCountsAreSeriesPerTable) {
  ShardOptions options;
  options.mode = ConsistencyMode::kAsync;
  options.table_memory_limit = 64 << 10;
  ParameterShard shard(options);
  ServerMetrics metrics(&shard, nullptr, 0);
  ASSERT_TRUE(shard.Register(0, kIncarnation).ok());
  InitArgs init;
  init.num_shards = 1;
  init.tables = {{"emb", 4, "zeros", "", ""}};
  ASSERT_TRUE(shard.Init(init).ok());
  const uint64_t capacity = shard.Status().tables[0].capacity_rows;
  std::vector<uint64_t> ids(2 * capacity);
  for (uint64_t i = 0; i < ids.size(); ++i) ids[i] = i;
  std::string keys(ids.size() * 8, '\0');
  std::memcpy(keys.data(), ids.data(), keys.size());
  std::string rows;
  common::FloatsToBytes(std::vector<float>(ids.size() * 4, 1.0f), &rows);
  PushArgs push;
  push.incarnation = kIncarnation;
  push.seq = 1;
  push.batch_size = 1;
  push.sparse = {{"emb", keys, rows}};
  ASSERT_TRUE(shard.Push(push).ok());

  const std::string exposition = metrics.registry().Render();
  const TableStatus table = shard.Status().tables[0];
  EXPECT_EQ(Shard0(exposition, "ps_server_table_rows", "table=\"emb\""),
            static_cast<double>(capacity));
  EXPECT_EQ(Shard0(exposition, "ps_server_table_memory_bytes", "table=\"emb\""),
            static_cast<double>(table.memory_bytes));
  EXPECT_EQ(
      Shard0(exposition, "ps_server_table_memory_limit_bytes", "table=\"emb\""),
      64 << 10);
  EXPECT_EQ(
      Shard0(exposition, "ps_server_table_rows_created_total", "table=\"emb\""),
      static_cast<double>(ids.size()));
  EXPECT_EQ(
      Shard0(exposition, "ps_server_table_rows_evicted_total", "table=\"emb\""),
      static_cast<double>(capacity));
  EXPECT_EQ(
      Shard0(exposition, "ps_server_table_rows_refused_total", "table=\"emb\""),
      0);
}

}  // namespace
}  // namespace ps::server

namespace ps::server {
namespace {

// A replicated shard's replica has the replica series; an unreplicated
// shard has none (its exposition is as before).
TEST(ServerMetricsReplicas, AReplicaShowsItsRoleTermAndCounters) {
  ShardOptions options;
  options.num_workers = 1;
  options.max_workers = 1;
  ParameterShard shard(options);
  ReplayClock clock;
  ReplicaOptions replica;
  replica.peers = {"127.0.0.1:1", "127.0.0.1:2"};
  Replicator primary(replica, &shard, &clock);
  const std::string replicated =
      ServerMetrics(&shard, nullptr, 0, &primary).registry().Render();
  EXPECT_EQ(Shard0(replicated, "ps_replica_role", "role=\"primary\""), 1);
  EXPECT_EQ(Shard0(replicated, "ps_replica_role", "role=\"backup\""), 0);
  EXPECT_EQ(Shard0(replicated, "ps_replica_role", "role=\"joining\""), 0);
  EXPECT_EQ(Shard0(replicated, "ps_replica_term"), 1);
  EXPECT_EQ(Shard0(replicated, "ps_replica_failovers_total"), 0);
  EXPECT_EQ(Shard0(replicated, "ps_replica_sent_bytes_total"), 0);

  replica.replica_index = 1;
  Replicator backup(replica, &shard, &clock);  // not started: joining
  const std::string joining =
      ServerMetrics(&shard, nullptr, 0, &backup).registry().Render();
  EXPECT_EQ(Shard0(joining, "ps_replica_role", "role=\"primary\""), 0);
  EXPECT_EQ(Shard0(joining, "ps_replica_role", "role=\"joining\""), 1);

  const std::string alone =
      ServerMetrics(&shard, nullptr, 0).registry().Render();
  EXPECT_EQ(alone.find("ps_replica_"), std::string::npos) << alone;
}

}  // namespace
}  // namespace ps::server
