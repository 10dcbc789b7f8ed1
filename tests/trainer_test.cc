// The trainer's loop against an in-memory ParameterStore: what it asks the
// store for, in which order, with no server.
#include "worker/trainer.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/data_partition.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/synthetic_data.h"
#include "worker/model.h"
#include "worker/parameter_store.h"

namespace ps::worker {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// Holds θ in memory, applies every gradient at once (plain SGD), and
// writes down each call.
class InMemoryStore final : public ParameterStore {
 public:
  std::vector<std::string> calls;
  JobSurvey survey;
  uint64_t resume_step = 0;
  absl::Status init_status;
  // What mode() says: the trainer reports whatever the store says now.
  ps::v1::ConsistencyMode current_mode = ps::v1::MODE_SYNC;
  ps::v1::ConsistencyMode mode_at_final_pull = ps::v1::MODE_SYNC;
  // Steps whose push comes back stale (its sync round closed without it):
  // dropped, not applied.
  std::set<uint64_t> stale_steps;

  absl::StatusOr<JobSurvey> Survey() override {
    calls.push_back("Survey");
    return survey;
  }
  absl::StatusOr<uint64_t> Register() override {
    calls.push_back("Register");
    return resume_step;
  }
  absl::StatusOr<ClusterInfo> Init(const std::vector<common::TensorSpec>&,
                                   absl::Span<const float> initial) override {
    calls.push_back("Init");
    if (!init_status.ok()) return init_status;
    theta_.assign(initial.begin(), initial.end());
    ClusterInfo info;
    info.mode = ps::v1::MODE_SYNC;
    info.expected_workers = 1;
    return info;
  }
  absl::StatusOr<PullInfo> Pull(uint64_t step,
                                absl::Span<float> theta) override {
    calls.push_back(absl::StrCat("Pull ", step));
    return Answer(theta);
  }
  absl::Status Push(uint64_t step, uint32_t batch_size,
                    absl::Span<const float> gradient) override {
    calls.push_back(absl::StrCat("Push ", step, " of ", batch_size,
                                 Take(step, batch_size, gradient)));
    return absl::OkStatus();
  }
  absl::StatusOr<PullInfo> PushPull(uint64_t step, uint32_t batch_size,
                                    absl::Span<const float> gradient,
                                    absl::Span<float> theta) override {
    calls.push_back(absl::StrCat("PushPull ", step, " of ", batch_size,
                                 Take(step, batch_size, gradient)));
    return Answer(theta);
  }
  absl::StatusOr<PullInfo> PullFinal(absl::Span<float> theta) override {
    calls.push_back("PullFinal");
    current_mode = mode_at_final_pull;
    return Answer(theta);
  }
  absl::Status Leave(ps::v1::LeaveRequest::Reason reason) override {
    calls.push_back(
        absl::StrCat("Leave ", ps::v1::LeaveRequest::Reason_Name(reason)));
    return absl::OkStatus();
  }
  absl::Status WaitForOtherWorkers(uint32_t num_workers,
                                   absl::Duration) override {
    calls.push_back(absl::StrCat("WaitForOtherWorkers ", num_workers));
    return absl::OkStatus();
  }
  // Grants the plan's partitions in order, each completed by the push
  // that reports it, then says the job is done.
  absl::StatusOr<ps::v1::LeasePartitionResponse> LeasePartition(
      const common::PartitionPlan& plan) override {
    ps::v1::LeasePartitionResponse lease;
    lease.set_partitions_done(leased_);
    if (leased_ == uint64_t{plan.partitions} * plan.epochs) {
      lease.set_outcome(ps::v1::LeasePartitionResponse::JOB_DONE);
      return lease;
    }
    const uint32_t partition = leased_ % plan.partitions;
    const common::KeyRange examples =
        common::PartitionExamples(plan, partition);
    lease.set_outcome(ps::v1::LeasePartitionResponse::GRANTED);
    lease.set_epoch(static_cast<uint32_t>(leased_ / plan.partitions));
    lease.set_partition(partition);
    lease.set_example_begin(examples.begin);
    lease.set_example_end(examples.end);
    calls.push_back(absl::StrCat("Lease ", lease.epoch(), "/", partition));
    ++leased_;
    return lease;
  }
  void CompleteWithNextPush(const ps::v1::PartitionDone& done) override {
    calls.push_back(
        absl::StrCat("Complete ", done.epoch(), "/", done.partition()));
  }
  absl::StatusOr<uint64_t> PartitionsDone() override { return leased_; }
  const PushCounts& push_counts() const override { return counts_; }
  ps::v1::ConsistencyMode mode() const override { return current_mode; }
  size_t num_shards() const override { return 1; }
  uint64_t samples_applied() const { return samples_; }

 private:
  // Applies the push, or drops it as stale: what the call's line says.
  std::string Take(uint64_t step, uint32_t batch_size,
                   absl::Span<const float> gradient) {
    if (stale_steps.count(step) > 0) {
      ++counts_.stale;
      return " (stale)";
    }
    Apply(batch_size, gradient);
    return "";
  }
  void Apply(uint32_t batch_size, absl::Span<const float> gradient) {
    for (size_t i = 0; i < theta_.size(); ++i) theta_[i] -= 0.1f * gradient[i];
    ++version_;
    samples_ += batch_size;
    ++counts_.applied_or_accepted;
  }
  PullInfo Answer(absl::Span<float> theta) {
    std::copy(theta_.begin(), theta_.end(), theta.begin());
    return PullInfo{version_, samples_};
  }

  std::vector<float> theta_;
  uint64_t leased_ = 0;
  uint64_t version_ = 0;
  uint64_t samples_ = 0;
  PushCounts counts_;
};

class TrainerTest : public ::testing::Test {
 protected:
  // 1200 examples, batches of 400: 3 steps an epoch, 6 in two epochs.
  TrainerOptions Options() {
    TrainerOptions options;
    options.batch_size = 400;
    options.epochs = 2;
    options.model_name = "softmax";
    options.metrics_out = metrics_;
    return options;
  }

  absl::Status Run(const TrainerOptions& options, Trainer** out = nullptr) {
    auto model = CreateModel("softmax", 12, 4);
    EXPECT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    trainer_ =
        std::make_unique<Trainer>(options, model_.get(), &store_, &data_);
    if (out != nullptr) *out = trainer_.get();
    return trainer_->Run();
  }

  std::vector<std::string> MetricsLines() {
    std::ifstream in(metrics_);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  void TearDown() override { std::remove(metrics_.c_str()); }

  const std::string metrics_ =
      absl::StrCat(::testing::TempDir(), "/trainer_test_", getpid(), ".jsonl");
  const common::TrainTestData data_ = testing::SyntheticTrainTest(12, 4);
  InMemoryStore store_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Trainer> trainer_;
};

TEST_F(TrainerTest, AsksTheStoreForEachStepsThetaAndLeavesFinished) {
  ASSERT_TRUE(Run(Options()).ok());
  EXPECT_THAT(
      store_.calls,
      ElementsAre("Survey", "Register", "Init", "Pull 0", "PushPull 0 of 400",
                  "PushPull 1 of 400", "PushPull 2 of 400", "PushPull 3 of 400",
                  "PushPull 4 of 400", "Push 5 of 400", "Leave FINISHED",
                  "WaitForOtherWorkers 1", "PullFinal"));
  EXPECT_GT(trainer_->last_evaluation().accuracy, 0.5);
}

TEST_F(TrainerTest, AResumedWorkerAsksForItsResumeStepFirst) {
  store_.resume_step = 4;
  ASSERT_TRUE(Run(Options()).ok());
  EXPECT_THAT(store_.calls, ElementsAre("Survey", "Register", "Init", "Pull 4",
                                        "PushPull 4 of 400", "Push 5 of 400",
                                        "Leave FINISHED",
                                        "WaitForOtherWorkers 1", "PullFinal"));
}

TEST_F(TrainerTest, ACompleteJobIsNotJoined) {
  store_.survey.complete = true;
  store_.survey.expected_workers = 1;
  ASSERT_TRUE(Run(Options()).ok());
  EXPECT_TRUE(trainer_->found_job_complete());
  EXPECT_THAT(store_.calls, ElementsAre("Survey"));
}

TEST_F(TrainerTest, AFailedInitLeavesAsAFailedStartAndPullsNothing) {
  store_.init_status = absl::FailedPreconditionError("tensors differ");
  const absl::Status status = Run(Options());
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(trainer_->started());
  EXPECT_THAT(store_.calls,
              ElementsAre("Survey", "Register", "Init", "Leave START_FAILED"));
}

TEST_F(TrainerTest, AStopRequestLeavesStoppedBeforeTheNextStep) {
  TrainerOptions options = Options();
  int polls = 0;
  options.stop_requested = [&] { return ++polls > 2; };
  const absl::Status status = Run(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(status.message(), HasSubstr("before step 2 of 6"));
  EXPECT_THAT(store_.calls, ElementsAre("Survey", "Register", "Init", "Pull 0",
                                        "PushPull 0 of 400",
                                        "PushPull 1 of 400", "Leave STOPPED"));
}

// A leased partition's batches are even, not full ones and a short tail:
// 600 examples in batches of at most 400 are two of 300 (not 400 and 200),
// and the second push reports the partition done.
TEST_F(TrainerTest, APartitionsBatchesAreEven) {
  TrainerOptions options = Options();
  options.data_partitions = 2;
  options.epochs = 1;
  ASSERT_TRUE(Run(options).ok());
  EXPECT_THAT(store_.calls,
              ElementsAre("Survey", "Register", "Init", "Lease 0/0", "Pull 0",
                          "PushPull 0 of 300", "Complete 0/0", "Push 1 of 300",
                          "Lease 0/1", "Pull 2", "PushPull 2 of 300",
                          "Complete 0/1", "Push 3 of 300", "Leave FINISHED",
                          "WaitForOtherWorkers 1", "PullFinal"));
}

// A push that every shard drops as stale (its sync round closed without
// it: a quorum, or a lease that expired) trained its batch nowhere. The
// batch is trained again on the θ that push brought back; the partition's
// last one too, after a pull (its push pulled nothing), its completion
// already recorded. Every example of the epoch is applied once.
TEST_F(TrainerTest, ABatchDroppedAsStaleByEveryShardIsTrainedAgain) {
  TrainerOptions options = Options();
  options.data_partitions = 2;
  options.epochs = 1;
  store_.stale_steps = {0, 2};
  ASSERT_TRUE(Run(options).ok());
  EXPECT_THAT(
      store_.calls,
      ElementsAre("Survey", "Register", "Init", "Lease 0/0", "Pull 0",
                  "PushPull 0 of 300 (stale)", "PushPull 1 of 300",
                  "Complete 0/0", "Push 2 of 300 (stale)", "Pull 3",
                  "Push 3 of 300", "Lease 0/1", "Pull 4", "PushPull 4 of 300",
                  "Complete 0/1", "Push 5 of 300", "Leave FINISHED",
                  "WaitForOtherWorkers 1", "PullFinal"));
  EXPECT_EQ(store_.samples_applied(), 1200u);
}

// 1200 examples in 7 partitions (172 or 171 each) in batches of at most 64:
// three batches each, of 57 or 58 examples, every example trained once.
TEST_F(TrainerTest, EveryPartitionsBatchesDifferByOneAtMost) {
  TrainerOptions options = Options();
  options.data_partitions = 7;
  options.epochs = 1;
  options.batch_size = 64;
  ASSERT_TRUE(Run(options).ok());
  uint64_t pushes = 0;
  uint64_t examples = 0;
  for (const std::string& call : store_.calls) {
    uint32_t step = 0;
    uint32_t batch = 0;
    if (std::sscanf(call.c_str(), "PushPull %u of %u", &step, &batch) == 2 ||
        std::sscanf(call.c_str(), "Push %u of %u", &step, &batch) == 2) {
      ++pushes;
      examples += batch;
      EXPECT_TRUE(batch == 57 || batch == 58) << call;
    }
  }
  EXPECT_EQ(pushes, 21u);
  EXPECT_EQ(examples, 1200u);
}

// The mode in the metrics is the store's as it says it now: a server
// restarted in another mode is reported as such.
TEST_F(TrainerTest, ReportsTheModeTheStoreReports) {
  store_.mode_at_final_pull = ps::v1::MODE_ASYNC;
  ASSERT_TRUE(Run(Options()).ok());
  const std::vector<std::string> lines = MetricsLines();
  ASSERT_FALSE(lines.empty());
  EXPECT_THAT(lines.back(), HasSubstr("\"mode\":\"async\""));
  EXPECT_THAT(lines.front(), HasSubstr("\"mode\":\"sync\""));
}

}  // namespace
}  // namespace ps::worker
