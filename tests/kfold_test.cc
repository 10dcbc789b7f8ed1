// k-fold cross-validation on real processes: ps_worker --kfold=K --fold=I
// never trains the held-out fold (shard 0's checkpointed partition table
// shows it) and scores it as val_accuracy and val_loss; ps_local --kfold
// runs every fold and writes DIR/kfold.json from the folds' last metrics;
// bad fold flags stop both at start-up with a message naming them.
#include <signal.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/data_partition.h"
#include "common/json.h"
#include "common/subprocess.h"
#include "common/theta_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"

namespace ps {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

using test_support::ExitedWith;
using test_support::Field;
using test_support::FreshDir;
using test_support::Job;
using test_support::ReadFile;
using test_support::RunBinary;

// The newest checkpoint of shard 0 of 1 in `dir`; empty when none.
std::string NewestShardZero(const std::string& dir) {
  std::string newest;
  uint64_t newest_seq = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    uint64_t seq = 0;
    if (std::sscanf(name.c_str(), "ckpt-%lu-shard-0-of-1.theta", &seq) == 1 &&
        absl::EndsWith(name, ".theta") && seq >= newest_seq) {
      newest_seq = seq;
      newest = entry.path().string();
    }
  }
  return newest;
}

TEST(Kfold, AWorkerScoresTheHeldOutFoldAndNeverTrainsIt) {
  const std::string checkpoints = FreshDir("kfold_checkpoints");
  Job job("kfold_worker",
          {"--mode=sync", absl::StrCat("--checkpoint_dir=", checkpoints)}, 2,
          {"--model=softmax", "--epochs=2", "--eval_every=0.5",
           "--data_partitions=9", "--kfold=3", "--fold=1"});
  ASSERT_TRUE(job.Finishes(0)) << job.Log("worker-0");
  ASSERT_TRUE(job.Finishes(1)) << job.Log("worker-1");
  // Partitions 1, 4 and 7 of 9 hold 6,667 + 6,667 + 6,666 of the 60,000
  // examples.
  EXPECT_THAT(job.Log("worker-0"),
              HasSubstr("fold 1 of 3: 20000 of 60000 training examples held "
                        "out"));

  const std::vector<std::string> lines = job.Metrics();
  ASSERT_GE(lines.size(), 4u);
  for (const std::string& line : lines) {
    const double val_accuracy = Field(line, "val_accuracy");
    const double val_loss = Field(line, "val_loss");
    EXPECT_TRUE(std::isfinite(val_accuracy) && val_accuracy >= 0 &&
                val_accuracy <= 1)
        << line;
    EXPECT_TRUE(std::isfinite(val_loss) && val_loss > 0) << line;
    Field(line, "test_accuracy");  // kept beside the validation fields
  }
  // Trained: validation accuracy well above chance (10 classes), and near
  // the test set's, as both are unseen examples of the same distribution.
  const double val_accuracy = Field(lines.back(), "val_accuracy");
  EXPECT_GT(val_accuracy, 0.7);
  EXPECT_NEAR(val_accuracy, Field(lines.back(), "test_accuracy"), 0.05);
  // Epochs count the 6 trainable partitions of each epoch only.
  EXPECT_EQ(Field(lines.back(), "epoch"), 2.0);

  const ps::v1::StatusResponse status = job.Status();
  EXPECT_EQ(status.partitions().plan().kfold(), 3u);
  EXPECT_EQ(status.partitions().plan().fold(), 1u);
  EXPECT_THAT(status.partitions().done_per_epoch(), ElementsAre(6u, 6u));

  // SIGTERM: the server checkpoints its table on the way out. Held-out
  // partitions were never leased (free); every other one is done.
  job.server().Signal(SIGTERM);
  const std::optional<int> ended = job.server().WaitFor(absl::Seconds(60));
  ASSERT_TRUE(ended.has_value() && common::ExitedCleanly(*ended))
      << job.Log("server");
  const std::string newest = NewestShardZero(checkpoints);
  ASSERT_FALSE(newest.empty()) << "no checkpoint in " << checkpoints;
  absl::StatusOr<common::ThetaFile> file = common::ReadThetaFile(newest);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_TRUE(file->partitions.has_value());
  const common::SavedPartitions& table = *file->partitions;
  EXPECT_EQ(table.plan.kfold, 3u);
  EXPECT_EQ(table.plan.fold, 1u);
  ASSERT_EQ(table.records.size(), 18u);
  for (uint32_t e = 0; e < 2; ++e) {
    std::vector<uint32_t> done;
    for (uint32_t p = 0; p < 9; ++p) {
      const common::PartitionState state = table.records[e * 9 + p].state;
      if (state == common::PartitionState::kDone) done.push_back(p);
      if (p % 3 == 1) {
        EXPECT_EQ(state, common::PartitionState::kFree)
            << "held-out partition " << p << " of epoch " << e;
      }
    }
    EXPECT_THAT(done, ElementsAre(0u, 2u, 3u, 5u, 6u, 8u)) << "epoch " << e;
  }
}

TEST(Kfold, PsLocalRunsEveryFoldAndSummarisesTheirLastMetrics) {
  const std::string dir = FreshDir("kfold_local");
  const test_support::Outcome run =
      RunBinary({"ps_local", "--kfold=3", "--parallel_jobs=2", "--epochs=1",
                 "--servers=1", "--workers=1", "--eval_every=0.5",
                 absl::StrCat("--out_dir=", dir)},
                dir + "/ps_local.log");
  ASSERT_TRUE(ExitedWith(run, 0)) << run.output;

  const common::Json summary =
      common::ParseJsonObject(ReadFile(dir + "/kfold.json"));
  std::vector<std::string> keys;
  for (const auto& [key, value] : summary.items()) keys.push_back(key);
  EXPECT_THAT(keys, UnorderedElementsAre("folds", "mean_val_accuracy",
                                         "std_val_accuracy"));
  ASSERT_TRUE(summary["folds"].is_array());
  ASSERT_EQ(summary["folds"].size(), 3u);
  std::vector<double> val;
  for (uint32_t i = 0; i < 3; ++i) {
    const common::Json& fold = summary["folds"][i];
    std::vector<std::string> fold_keys;
    for (const auto& [key, value] : fold.items()) fold_keys.push_back(key);
    EXPECT_THAT(fold_keys,
                UnorderedElementsAre("fold", "val_accuracy", "test_accuracy"));
    EXPECT_EQ(fold["fold"].get<uint32_t>(), i);
    // Each fold's figures are its job's final evaluation, in its own
    // directory.
    const std::vector<std::string> lines = absl::StrSplit(
        ReadFile(absl::StrCat(dir, "/fold-", i, "/metrics.jsonl")), '\n',
        absl::SkipEmpty());
    ASSERT_FALSE(lines.empty()) << "fold " << i;
    EXPECT_EQ(Field(lines.back(), "epoch"), 1.0);
    EXPECT_EQ(fold["val_accuracy"].get<double>(),
              Field(lines.back(), "val_accuracy"));
    EXPECT_EQ(fold["test_accuracy"].get<double>(),
              Field(lines.back(), "test_accuracy"));
    EXPECT_GT(fold["val_accuracy"].get<double>(), 0.7);
    val.push_back(fold["val_accuracy"].get<double>());
    EXPECT_THAT(run.output,
                HasSubstr(absl::StrCat("fold ", i, ": validation accuracy")));
  }
  const double mean = (val[0] + val[1] + val[2]) / 3;
  double squares = 0;
  for (double v : val) squares += (v - mean) * (v - mean);
  EXPECT_NEAR(summary["mean_val_accuracy"].get<double>(), mean, 1e-6);
  // The sample standard deviation (n - 1), as the README says.
  EXPECT_NEAR(summary["std_val_accuracy"].get<double>(), std::sqrt(squares / 2),
              1e-6);
  EXPECT_THAT(run.output, HasSubstr("3 folds done"));
}

// A second worker of a running job with another fold is refused by shard
// 0 (the plan was declared with fold 1) and stops at start-up with exit 2
// and a message naming the flags; the first trains on to the end (5,000
// steps, each RPC delayed 1 ms: it still trains when the second starts,
// on a fast machine too).
TEST(Kfold, AWorkerWithAnotherFoldStopsAndTheFirstTrainsOn) {
  const std::vector<std::string> fold_one = {
      "--model=softmax",
      "--epochs=2",
      "--eval_every=0.5",
      "--batch_size=16",
      "--data_partitions=9",
      "--kfold=3",
      "--fold=1",
      "--inject_faults=seed=1,delay=1ms..1ms"};
  Job job("kfold_mismatch", {"--mode=sync", "--max_workers=2"}, 1, fold_one);
  ASSERT_TRUE(test_support::WaitUntil([&] {
    return job.Status().partitions().plan().partitions() == 9;
  })) << job.Log("worker-0");
  std::vector<std::string> fold_two = fold_one;
  fold_two[6] = "--fold=2";
  job.StartWorker(1, fold_two);
  const std::optional<int> second = job.worker(1).WaitFor(absl::Seconds(60));
  ASSERT_TRUE(second.has_value()) << job.Log("worker-1");
  EXPECT_TRUE(WIFEXITED(*second) && WEXITSTATUS(*second) == 2)
      << job.Log("worker-1");
  EXPECT_THAT(job.Log("worker-1"),
              AllOf(HasSubstr("cannot start"), HasSubstr("fold 1 of 3"),
                    HasSubstr("--kfold"), HasSubstr("--fold")));

  ASSERT_TRUE(job.Finishes(0)) << job.Log("worker-0");
  const std::vector<std::string> lines = job.Metrics();
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(Field(lines.back(), "epoch"), 2.0);
  EXPECT_GT(Field(lines.back(), "val_accuracy"), 0.7);
  const ps::v1::StatusResponse status = job.Status();
  EXPECT_EQ(status.partitions().plan().fold(), 1u);
  EXPECT_THAT(status.partitions().done_per_epoch(), ElementsAre(6u, 6u));
}

// A bad fold flag stops ps_worker before it reaches a server (none listens
// at the address given), and ps_local before it starts one, with exit 2
// and a message naming the flag.
TEST(Kfold, BadFoldFlagsStopTheWorkerAndPsLocalWithAClearMessage) {
  const std::string dir = FreshDir("kfold_flags");
  struct Case {
    std::vector<std::string> flags;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--kfold=3", "--fold=3"}, "--fold=3 is not a fold of --kfold=3"},
      {{"--kfold=1", "--fold=0"}, "--kfold=1 must be at least 2"},
      {{"--fold=1"}, "--fold=1 needs --kfold=K"},
      {{"--kfold=3"}, "--kfold=3 needs --fold=I"},
      {{"--kfold=4", "--fold=0", "--data_partitions=3"},
       "--kfold=4 needs at least as many partitions: --data_partitions=3"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {"ps_worker", "--servers=127.0.0.1:1"};
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    const test_support::Outcome run = RunBinary(argv, dir + "/worker.log");
    EXPECT_TRUE(ExitedWith(run, 2)) << run.output;
    EXPECT_THAT(run.output, HasSubstr(c.message));
  }
  const std::vector<Case> local_cases = {
      {{"--kfold=1"}, "--kfold=1 is no cross-validation"},
      {{"--parallel_jobs=2"}, "give --kfold"},
      {{"--kfold=5", "--data_partitions=4"},
       "--kfold=5 needs --data_partitions >= 5"},
  };
  for (const Case& c : local_cases) {
    std::vector<std::string> argv = {"ps_local",
                                     absl::StrCat("--out_dir=", dir, "/local")};
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    const test_support::Outcome run = RunBinary(argv, dir + "/local.log");
    EXPECT_TRUE(ExitedWith(run, 2)) << run.output;
    EXPECT_THAT(run.output, HasSubstr(c.message));
  }
}

}  // namespace
}  // namespace ps
