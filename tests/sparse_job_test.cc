// The sparse models as a user runs them: ps_datagen writes a CTR set, and
// ps_local starts real ps_server and ps_worker processes that train logreg
// and fm on it through the servers.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/job.h"

namespace ps {
namespace {

using test_support::ExitedWith;
using test_support::Field;
using test_support::FreshDir;
using test_support::Outcome;
using test_support::ReadFile;
using test_support::RunBinary;
using ::testing::HasSubstr;

// 26 fields of 100 values each, ~3% positives: the set
// tests/sparse_model_test.cc trains on in-process.
struct CtrSet {
  std::string dir;
};

CtrSet MakeCtrSet(const std::string& name, int rows) {
  CtrSet set;
  set.dir = FreshDir(name);
  const Outcome generated =
      RunBinary({"ps_datagen", "ctr", absl::StrCat("--rows=", rows),
                 "--ids=2600", "--seed=3", "--out=" + set.dir + "/data"},
                set.dir + "/datagen.out", absl::Seconds(60));
  EXPECT_TRUE(ExitedWith(generated, 0)) << generated.output;
  return set;
}

// Runs a one-epoch ps_local job; its metrics lines (empty on failure).
// Each worker trains part --rank of the set (--data_partitions=0): these
// tests compare runs evaluation for evaluation, and with leased partitions
// rank 0 evaluates when shard 0's partitions done (as of its last lease)
// pass the mark, which timing decides (the final θ would still agree).
std::vector<std::string> Train(const CtrSet& set, const std::string& model,
                               const std::string& mode, int servers,
                               const std::string& name,
                               const std::string& server_flags = "",
                               bool files_in_worker_flags = false) {
  const std::string out = absl::StrCat(set.dir, "/", name);
  const std::string files =
      absl::StrCat("--train=", set.dir, "/data/train.libsvm --test=", set.dir,
                   "/data/test.libsvm");
  std::vector<std::string> argv = {
      "ps_local",         absl::StrCat("--servers=", servers),
      "--workers=2",      "--mode=" + mode,
      "--model=" + model, "--epochs=1",
      "--batch_size=32",  "--eval_every=0.5",
      "--quiet",          "--server_flags=" + server_flags,
      "--out_dir=" + out, "--data_partitions=0"};
  if (files_in_worker_flags) {
    // As issue 15 wrote it: the files as the workers' own flags.
    argv.push_back("--worker_flags=--data_format=libsvm " + files);
  } else {
    for (absl::string_view flag : absl::StrSplit(files, ' ')) {
      argv.emplace_back(flag);
    }
  }
  const Outcome outcome = RunBinary(argv, out + ".out", absl::Seconds(120));
  EXPECT_TRUE(ExitedWith(outcome, 0)) << outcome.output;
  EXPECT_THAT(outcome.output, HasSubstr("test AUC"));
  return absl::StrSplit(ReadFile(out + "/metrics.jsonl"), '\n',
                        absl::SkipEmpty());
}

// What must not depend on the number of shards in sync mode.
std::vector<double> Learnt(const std::vector<std::string>& lines) {
  std::vector<double> values;
  for (const std::string& line : lines) {
    for (const char* key : {"step", "version", "samples", "test_auc",
                            "test_logloss", "train_loss"}) {
      values.push_back(Field(line, key));
    }
  }
  return values;
}

TEST(SparseJob, LogregInSyncLearnsTheCtrSetAndIsIdenticalOnOneAndThreeShards) {
  const CtrSet set = MakeCtrSet("sparse_sync", 100000);
  const std::vector<std::string> two = Train(set, "logreg", "sync", 2, "two");
  ASSERT_EQ(two.size(), 2u);  // at half an epoch, and the final one
  const std::string& last = two.back();
  EXPECT_EQ(Field(last, "samples"), 100000);
  // Chance is 0.5, the ground truth scores 0.794 (its linear part 0.790);
  // 0.780 seen here with the table's default optimizer (2026-12-05).
  EXPECT_GT(Field(last, "test_auc"), 0.74) << last;
  EXPECT_LT(Field(last, "test_logloss"), 0.135) << last;  // the base rate's
  // Each shard holds its share of the table's rows, no more than there are
  // ids.
  const common::Json metrics = common::ParseJsonObject(last);
  ASSERT_TRUE(metrics.contains("rows_per_shard")) << last;
  ASSERT_EQ(metrics["rows_per_shard"].size(), 2u);
  const double rows = metrics["rows_per_shard"][0].get<double>() +
                      metrics["rows_per_shard"][1].get<double>();
  EXPECT_GT(rows, 1000);
  EXPECT_LE(rows, 2600);
  EXPECT_GT(metrics["rows_per_shard"][0].get<double>(), rows / 4);

  // Sync rounds reduce in rank order: the same job on 1 and 3 shards
  // learns the same θ, evaluation for evaluation.
  const std::vector<double> one =
      Learnt(Train(set, "logreg", "sync", 1, "one"));
  const std::vector<double> three =
      Learnt(Train(set, "logreg", "sync", 3, "three"));
  EXPECT_EQ(one, three);
  EXPECT_EQ(one, Learnt(two));

  // Exactly once: the servers apply 5% of the pushes and then answer
  // UNAVAILABLE, the workers send those again, and θ is the same.
  const std::vector<std::string> faulty =
      Train(set, "logreg", "sync", 2, "faulty",
            "--log_level=debug --inject_faults=seed=7,error=UNAVAILABLE:0.05,"
            "methods=PushPull|Push,side=server");
  EXPECT_EQ(Learnt(faulty), Learnt(two));
  // And some pushes were failed after their work (the servers log each at
  // debug level), so the workers sent them again.
  EXPECT_THAT(ReadFile(set.dir + "/faulty/server-0.log") +
                  ReadFile(set.dir + "/faulty/server-1.log"),
              HasSubstr("fault injection: failing call"));
}

TEST(SparseJob, FmLearnsInAsyncAndLogregInSsp) {
  const CtrSet set = MakeCtrSet("sparse_modes", 50000);
  for (const auto& [model, mode] :
       {std::pair{"fm", "async"}, std::pair{"logreg", "ssp"}}) {
    const std::vector<std::string> lines =
        Train(set, model, mode, 2, mode, "", /*files_in_worker_flags=*/true);
    ASSERT_FALSE(lines.empty()) << model << " " << mode;
    // Clearly above chance (0.5): 0.72 seen, on a test set of 150
    // positives.
    EXPECT_GT(Field(lines.back(), "test_auc"), 0.65) << lines.back();
    EXPECT_THAT(lines.back(), HasSubstr(absl::StrCat("\"mode\":\"", mode)));
  }
}

TEST(SparseJob, PsLocalWithoutDataForASparseModelStopsWithOneClearLine) {
  const std::string dir = FreshDir("sparse_no_data");
  const Outcome outcome =
      RunBinary({"ps_local", "--model=fm", "--out_dir=" + dir + "/job"},
                dir + "/out", absl::Seconds(60));
  EXPECT_TRUE(ExitedWith(outcome, 2)) << outcome.output;
  EXPECT_THAT(outcome.output,
              HasSubstr("--model=fm needs --train=FILE and --test=FILE"));
  EXPECT_EQ(std::count(outcome.output.begin(), outcome.output.end(), '\n'), 1)
      << outcome.output;
}

}  // namespace
}  // namespace ps
