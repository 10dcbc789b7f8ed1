// Sparse tables through real servers on loopback, in one process: the
// protocol round trip, sync reproducibility across shard counts, and
// exactly-once under injected faults, driven by the C++ client.
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/key_range.h"
#include "common/rpc/channel.h"
#include "common/rpc/fault_injection.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/embedding_table.h"
#include "server/ps_server.h"
#include "tests/loopback_cluster.h"
#include "worker/parameter_client.h"

namespace ps {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kSeed = 11;
constexpr float kLearningRate = 0.25f;

using test_support::ClientFor;
using test_support::Cluster;

Cluster StartCluster(uint32_t shards, uint32_t workers,
                     server::ConsistencyMode mode) {
  common::UpdateOptions update;
  update.learning_rate = kLearningRate;
  return test_support::StartCluster(
      shards, workers, mode, update, absl::Seconds(5),
      [](server::ShardOptions& o) { o.table_memory_limit = 8 << 20; });
}

std::unique_ptr<worker::ParameterClient> Connect(const Cluster& cluster,
                                                 uint32_t worker) {
  worker::ClientOptions options = ClientFor(cluster, worker);
  options.retry.max_retry_time = absl::Seconds(60);
  options.retry.initial_backoff = absl::Milliseconds(5);
  auto client = worker::ParameterClient::Connect(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return std::move(*client);
}

// A bias and two tables, the second one adagrad.
const std::vector<common::TensorSpec> kTensors = {{"bias", {1}, true}};
const std::vector<common::TableSpec> kTables = {
    {"emb", 4, "normal(0.1)", "", ""}, {"lin", 1, "zeros", "adagrad", ""}};

absl::Status Declare(worker::ParameterClient& client) {
  if (absl::StatusOr<uint64_t> r = client.Register(); !r.ok()) {
    return r.status();
  }
  return client.InitSparse(kTensors, kTables, kSeed, std::vector<float>{0.0f})
      .status();
}

std::vector<float> InitialRows(const std::vector<uint64_t>& ids) {
  server::EmbeddingTableOptions o;
  o.dim = 4;
  o.initializer = {server::RowInitializer::Kind::kNormal, 0.1f};
  o.model_seed = kSeed;
  o.table_index = 0;
  auto table = server::EmbeddingTable::Create(o);
  EXPECT_TRUE(table.ok());
  std::vector<float> out(ids.size() * 4);
  (*table)->Lookup(ids, absl::MakeSpan(out));
  return out;
}

uint64_t TableRows(const Cluster& cluster, size_t table) {
  uint64_t rows = 0;
  for (const auto& server : cluster.servers) {
    rows += server->shard().Status().tables.at(table).rows;
  }
  return rows;
}

TEST(SparseCluster, RowsRoundTripThroughThreeServersInTheCallersOrder) {
  Cluster cluster = StartCluster(3, 2, server::ConsistencyMode::kAsync);
  auto first = Connect(cluster, 0);
  auto second = Connect(cluster, 1);
  ASSERT_TRUE(Declare(*first).ok());
  ASSERT_TRUE(Declare(*second).ok());
  const std::vector<uint64_t> ids = {900, 3, 77777777777, 12, 5, 1ull << 63};
  std::vector<float> theta(1);
  std::vector<worker::SparseBatch> rows = {{0, ids, {}}};
  ASSERT_TRUE(first->PullSparse(0, absl::MakeSpan(theta), rows).ok());
  EXPECT_EQ(rows[0].values, InitialRows(ids));
  EXPECT_EQ(TableRows(cluster, 0), 0u) << "a pull creates no row";

  // The same rows in another order, from another worker.
  std::vector<uint64_t> reversed(ids.rbegin(), ids.rend());
  std::vector<worker::SparseBatch> other = {{0, reversed, {}}};
  ASSERT_TRUE(second->PullSparse(0, absl::MakeSpan(theta), other).ok());
  EXPECT_EQ(other[0].values, InitialRows(reversed));

  std::vector<float> gradient(ids.size() * 4);
  for (size_t i = 0; i < gradient.size(); ++i) gradient[i] = 0.5f + i;
  std::vector<worker::SparseBatch> push = {{0, ids, gradient},
                                           {1, {3, 12}, {2.0f, -1.0f}}};
  ASSERT_TRUE(first->PushSparse(0, 1, std::vector<float>{0.0f}, push).ok());
  EXPECT_EQ(TableRows(cluster, 0), ids.size());
  EXPECT_EQ(TableRows(cluster, 1), 2u);
  ASSERT_TRUE(second->PullSparse(0, absl::MakeSpan(theta), other).ok());
  const std::vector<float> initial = InitialRows(reversed);
  for (size_t r = 0; r < reversed.size(); ++r) {
    const size_t pushed_at = ids.size() - 1 - r;
    for (size_t j = 0; j < 4; ++j) {
      EXPECT_EQ(
          other[0].values[r * 4 + j],
          initial[r * 4 + j] - kLearningRate * gradient[pushed_at * 4 + j]);
    }
  }
  // Sizes that do not match the declaration are refused before sending.
  std::vector<worker::SparseBatch> wrong = {{0, ids, {1.0f}}};
  EXPECT_EQ(first->PushSparse(1, 1, std::vector<float>{0.0f}, wrong).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<worker::SparseBatch> undeclared = {{2, ids, {}}};
  EXPECT_EQ(
      first->PullSparse(0, absl::MakeSpan(theta), undeclared).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(SparseCluster, ABadPushOnTheWireIsRefusedAndChangesNoRow) {
  Cluster cluster = StartCluster(1, 1, server::ConsistencyMode::kAsync);
  auto client = Connect(cluster, 0);
  ASSERT_TRUE(Declare(*client).ok());
  auto stub = ps::v1::ParameterServer::NewStub(
      rpc::CreateChannel(cluster.addresses[0]));
  ps::v1::PushRequest request;
  request.set_worker_id(0);
  request.set_incarnation(client->incarnation());
  request.set_seq(1);
  request.set_batch_size(1);
  request.set_key_begin(0);
  request.set_key_end(1);
  request.set_gradient(std::string(4, '\0'));
  ps::v1::SparseRows* rows = request.add_sparse();
  rows->set_table("emb");
  rows->set_keys(std::string(7, '\1'));
  rows->set_values(std::string(16, '\0'));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  ps::v1::PushResponse response;
  const grpc::Status status = stub->Push(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("not a multiple of 8"));
  EXPECT_EQ(TableRows(cluster, 0), 0u);
  EXPECT_EQ(cluster.servers[0]->shard().Status().version, 0u);
}

// Two workers train `steps` sync steps against `shards` servers, each
// touching its own mix of ids; returns every id's row as worker 0 (which
// touches all of them) pulled it with its last step.
std::vector<float> TrainSync(uint32_t shards, const std::vector<uint64_t>& ids,
                             int steps) {
  Cluster cluster = StartCluster(shards, 2, server::ConsistencyMode::kSync);
  std::vector<std::unique_ptr<worker::ParameterClient>> clients;
  for (uint32_t w = 0; w < 2; ++w) {
    clients.push_back(Connect(cluster, w));
    EXPECT_TRUE(Declare(*clients[w]).ok());
  }
  std::vector<float> final_rows;
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      worker::ParameterClient& client = *clients[w];
      std::vector<float> theta(1);
      std::vector<uint64_t> mine;
      for (size_t i = 0; i < ids.size(); ++i) {
        if (w == 0 || i % 3 != 0) mine.push_back(ids[i]);
      }
      std::vector<worker::SparseBatch> rows = {{0, mine, {}}};
      ASSERT_TRUE(client.PullSparse(0, absl::MakeSpan(theta), rows).ok());
      for (int step = 0; step < steps; ++step) {
        // A gradient that depends on the rows pulled: any disagreement
        // between runs compounds.
        std::vector<worker::SparseBatch> gradient = rows;
        for (size_t k = 0; k < gradient[0].values.size(); ++k) {
          float& g = gradient[0].values[k];
          g = 0.3f * g + 0.01f * static_cast<float>(k % 7) - 0.02f * w;
        }
        absl::StatusOr<worker::PullInfo> pulled =
            client.PushPullSparse(step, 2 + w, std::vector<float>{0.1f},
                                  gradient, absl::MakeSpan(theta), rows);
        ASSERT_TRUE(pulled.ok()) << pulled.status();
      }
      if (w == 0) final_rows = rows[0].values;
    });
  }
  for (std::thread& t : threads) t.join();
  for (const auto& server : cluster.servers) {
    EXPECT_EQ(server->shard().Status().version, static_cast<uint64_t>(steps));
  }
  return final_rows;
}

TEST(SparseCluster, SyncRowsAreByteIdenticalOnOneAndThreeServers) {
  std::vector<uint64_t> ids;
  for (uint64_t i = 0; i < 40; ++i) ids.push_back(i * 0x9e3779b97f4a7c15ull);
  const std::vector<float> one = TrainSync(1, ids, 5);
  const std::vector<float> three = TrainSync(3, ids, 5);
  ASSERT_EQ(one.size(), ids.size() * 4);
  ASSERT_EQ(three.size(), one.size());
  EXPECT_EQ(0, std::memcmp(one.data(), three.data(), one.size() * 4));
  EXPECT_NE(one, InitialRows(ids));
}

// The one test here that installs the process-wide fault injector: the
// servers lose a third of Push replies after applying them; the client's
// retries (same seq) must not apply any twice.
TEST(SparseCluster, PushesWhoseRepliesAreLostAreAppliedExactlyOnce) {
  ASSERT_TRUE(rpc::InstallFaultInjection(
                  "seed=5,side=server,error=UNAVAILABLE:0.33,methods=Push")
                  .ok());
  Cluster cluster = StartCluster(2, 1, server::ConsistencyMode::kAsync);
  auto client = Connect(cluster, 0);
  ASSERT_TRUE(Declare(*client).ok());
  const std::vector<uint64_t> ids = {1, 2, 3, 4, 5, 6};
  constexpr int kPushes = 30;
  for (int step = 0; step < kPushes; ++step) {
    std::vector<worker::SparseBatch> push = {
        {1, ids, std::vector<float>(ids.size(), 1.0f)},
        {0, ids, std::vector<float>(ids.size() * 4, 1.0f)}};
    ASSERT_TRUE(
        client->PushSparse(step, 1, std::vector<float>{0.0f}, push).ok());
  }
  EXPECT_GT(rpc::InstalledFaultInjector()->counts().failed, 0u);
  uint64_t applied = 0;
  for (const auto& server : cluster.servers) {
    applied += server->shard().Status().pushes_applied;
  }
  EXPECT_EQ(applied, 2u * kPushes);
  std::vector<float> theta(1);
  std::vector<worker::SparseBatch> rows = {{0, ids, {}}};
  ASSERT_TRUE(client->PullSparse(0, absl::MakeSpan(theta), rows).ok());
  // sgd: each pushed once, so each value moved by exactly kPushes·α
  // (computed step by step in float, as the server does).
  std::vector<float> expected = InitialRows(ids);
  for (float& v : expected) {
    for (int k = 0; k < kPushes; ++k) v -= kLearningRate * 1.0f;
  }
  EXPECT_EQ(rows[0].values, expected);
}

}  // namespace
}  // namespace ps
