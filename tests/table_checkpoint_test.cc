// Sparse tables through checkpoints with real ps_server processes: the
// SIGTERM checkpoint of 3 servers restored onto 2 exports the same bytes,
// and training goes on as if never stopped (Adam's and AdaGrad's per-row
// state included); a server killed with SIGKILL comes back from its last
// periodic checkpoint with its rows.
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/theta_file.h"
#include "deploy/local/launcher.h"
#include "gtest/gtest.h"
#include "tests/job.h"
#include "tests/wait.h"
#include "worker/parameter_client.h"

namespace ps {
namespace {

namespace support = test_support;

constexpr uint64_t kSeed = 11;
const std::vector<common::TensorSpec> kTensors = {{"bias", {1}, true}};
// Adam's moments and AdaGrad's accumulator must come back for training to
// go on bit for bit.
const std::vector<common::TableSpec> kTables = {
    {"emb", 4, "normal(0.1)", "adam", ""}, {"lin", 1, "zeros", "adagrad", ""}};
constexpr int kFirstSteps = 6;
constexpr int kLaterSteps = 4;

// `shards` ps_server processes in sync mode for one worker; with a
// checkpoint directory when `checkpoints` is not empty.
std::unique_ptr<launch::LocalCluster> StartServers(
    const std::string& name, uint32_t shards, const std::string& checkpoints,
    std::vector<std::string> extra = {}) {
  launch::LocalClusterOptions options;
  options.bin_dir = support::BinDir();
  options.out_dir = support::FreshDir(name);
  options.num_servers = shards;
  options.num_workers = 1;
  options.server_flags.mode = "sync";
  options.server_flags.lr = "0.05";
  options.server_flags.checkpoint_dir = checkpoints;
  options.server_flags.extra = std::move(extra);
  auto cluster = std::make_unique<launch::LocalCluster>(options);
  const absl::Status started = cluster->StartServers([] { return false; });
  EXPECT_TRUE(started.ok()) << started;
  return cluster;
}

std::unique_ptr<worker::ParameterClient> Connect(
    const launch::LocalCluster& cluster) {
  worker::ClientOptions options;
  options.servers = cluster.addresses();
  options.worker_id = 0;
  options.retry.rpc_deadline = absl::Seconds(20);
  options.retry.max_retry_time = absl::Seconds(30);
  auto client = worker::ParameterClient::Connect(options);
  EXPECT_TRUE(client.ok()) << client.status();
  if (!client.ok()) return nullptr;
  EXPECT_TRUE((*client)->Register().ok());
  absl::StatusOr<worker::ClusterInfo> declared =
      (*client)->InitSparse(kTensors, kTables, kSeed, std::vector<float>{0.0f});
  EXPECT_TRUE(declared.ok()) << declared.status();
  return std::move(*client);
}

// Sync steps [first, first + steps): each touches two thirds of the ids
// (another two thirds each step, so lazy rows are skipped now and then)
// with a gradient that depends on the rows pulled, so that any difference
// between runs compounds.
void Train(const launch::LocalCluster& cluster, int first, int steps) {
  std::unique_ptr<worker::ParameterClient> client = Connect(cluster);
  ASSERT_NE(client, nullptr);
  std::vector<uint64_t> all;
  for (uint64_t i = 0; i < 30; ++i) all.push_back(i * 0x9e3779b97f4a7c15ull);
  std::vector<float> theta(1);
  for (int step = first; step < first + steps; ++step) {
    std::vector<uint64_t> ids;
    for (size_t i = 0; i < all.size(); ++i) {
      if ((i + step) % 3 != 0) ids.push_back(all[i]);
    }
    std::vector<worker::SparseBatch> rows = {{0, ids, {}}, {1, ids, {}}};
    ASSERT_TRUE(client->PullSparse(step, absl::MakeSpan(theta), rows).ok());
    std::vector<worker::SparseBatch> gradient = rows;
    for (worker::SparseBatch& table : gradient) {
      for (size_t k = 0; k < table.values.size(); ++k) {
        float& g = table.values[k];
        g = 0.3f * g + 0.01f * static_cast<float>(k % 7) - 0.005f * step;
      }
    }
    ASSERT_TRUE(
        client->PushSparse(step, 4, std::vector<float>{0.1f}, gradient).ok());
  }
}

// psctl export of every server of `cluster`, as bytes.
std::string Export(const launch::LocalCluster& cluster,
                   const std::string& name) {
  const std::string dir = support::FreshDir(name + "_export");
  const std::string out = dir + "/model.theta";
  support::Outcome exported = support::RunBinary(
      {"psctl", "export",
       absl::StrCat("--servers=", absl::StrJoin(cluster.addresses(), ",")),
       absl::StrCat("--out=", out)},
      dir + "/export.log");
  EXPECT_TRUE(support::ExitedWith(exported, 0)) << exported.output;
  return support::ReadFile(out);
}

// The export holds both tables with rows, θ not at its initial values.
void ExpectTrainedTables(const std::string& exported) {
  absl::StatusOr<common::ThetaFile> model =
      common::DecodeThetaFile(exported, "export");
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ(model->tables.size(), 2u);
  EXPECT_EQ(model->tables[0].ids.size(), 30u);
  EXPECT_EQ(model->tables[1].ids.size(), 30u);
  EXPECT_EQ(model->model_seed, kSeed);
}

void StopCleanly(launch::LocalCluster& cluster) {
  const launch::StopReport report = cluster.Stop(absl::Seconds(20));
  EXPECT_TRUE(report.problems.empty()) << absl::StrJoin(report.problems, "\n");
}

TEST(TableCheckpoint, ThreeServersRestoredOnTwoExportTheSameBytesAndGoOn) {
  const std::string checkpoints = support::FreshDir("tables_reshard_ckpt");
  std::string before_stop;
  {
    auto three = StartServers("tables_reshard_3", 3, checkpoints);
    Train(*three, 0, kFirstSteps);
    before_stop = Export(*three, "tables_reshard_3");
    ExpectTrainedTables(before_stop);
    StopCleanly(*three);  // SIGTERM: each server checkpoints its rows
  }
  // A second job restores from the same files, untouched by the first.
  const std::string copy = support::FreshDir("tables_reshard_ckpt_copy");
  ASSERT_EQ(
      std::system(
          absl::StrCat("cp -a '", checkpoints, "/.' '", copy, "/'").c_str()),
      0);

  auto restored = StartServers("tables_reshard_2a", 2, checkpoints);
  EXPECT_TRUE(Export(*restored, "tables_reshard_2a") == before_stop)
      << "a job restored onto 2 servers exports other bytes than it did on 3";
  auto again = StartServers("tables_reshard_2b", 2, copy);
  Train(*restored, kFirstSteps, kLaterSteps);
  Train(*again, kFirstSteps, kLaterSteps);
  const std::string restored_after = Export(*restored, "tables_reshard_2a");
  EXPECT_TRUE(Export(*again, "tables_reshard_2b") == restored_after)
      << "two jobs restored from the same files, given the same pushes, "
         "differ";
  EXPECT_TRUE(restored_after != before_stop);

  // And as if never stopped: a job that trained all the steps on 3 servers
  // without a restart (sync is bit-for-bit the same whatever the shard
  // count) ends with the same bytes, which it could not were any row's
  // optimizer state lost.
  auto unstopped = StartServers("tables_reshard_ref", 3, "");
  Train(*unstopped, 0, kFirstSteps + kLaterSteps);
  EXPECT_TRUE(Export(*unstopped, "tables_reshard_ref") == restored_after)
      << "the restored job did not go on as if never stopped";
}

// The newest checkpoint of each of `shards` shards in `dir` has `version`.
bool CheckpointedAt(const std::string& dir, uint32_t shards, uint64_t version) {
  for (uint32_t shard = 0; shard < shards; ++shard) {
    std::string newest;
    // Whole files only: a ".theta.tmp" still being written is not one yet
    // (a SIGKILL before its rename leaves it behind, and no restore reads it).
    const std::string suffix =
        absl::StrCat("-shard-", shard, "-of-", shards, ".theta");
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (absl::EndsWith(name, suffix) && name > newest) {
        newest = name;
      }
    }
    if (newest.empty()) return false;
    absl::StatusOr<common::ThetaFile> file =
        common::ReadThetaFile(absl::StrCat(dir, "/", newest));
    if (!file.ok() || file->version != version || file->tables.empty()) {
      return false;
    }
  }
  return true;
}

TEST(TableCheckpoint, ServersKilledWithSigkillComeBackWithTheirRows) {
  const std::string checkpoints = support::FreshDir("tables_sigkill_ckpt");
  const std::vector<std::string> periodic = {"--checkpoint_every=100ms"};
  std::string before_kill;
  {
    auto servers = StartServers("tables_sigkill", 2, checkpoints, periodic);
    Train(*servers, 0, kFirstSteps);
    before_kill = Export(*servers, "tables_sigkill");
    ExpectTrainedTables(before_kill);
    ASSERT_TRUE(test_support::WaitUntil([&] {
      return CheckpointedAt(checkpoints, 2, kFirstSteps);
    })) << "no periodic checkpoint of the last step";
    for (launch::ClusterProcess& server : servers->processes()) {
      server.process.Signal(SIGKILL);
      ASSERT_TRUE(server.process.WaitFor(absl::Seconds(10)).has_value());
    }
  }
  auto restarted =
      StartServers("tables_sigkill_again", 2, checkpoints, periodic);
  EXPECT_TRUE(Export(*restarted, "tables_sigkill_again") == before_kill)
      << "the restarted servers export other bytes than before the kill";
}

}  // namespace
}  // namespace ps
