// k-fold cross-validation over data partitions: the folds cut the
// partitions into K disjoint sets, and shard 0's table leases every
// trainable partition once per epoch and never one of the held-out fold.
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "common/data_partition.h"
#include "common/dataset.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/partition_table.h"

namespace ps::server {
namespace {

using common::HeldOut;
using common::HeldOutExamples;
using common::PartitionPlan;
using common::PartitionState;
using common::TrainablePartitions;
using ::testing::HasSubstr;
using Outcome = PartitionTable::LeaseOutcome;

PartitionPlan FoldPlan(uint32_t partitions, uint32_t kfold, uint32_t fold,
                       uint32_t epochs = 2) {
  PartitionPlan plan;
  plan.train_size = 1000;
  plan.partitions = partitions;
  plan.epochs = epochs;
  plan.seed = 42;
  plan.kfold = kfold;
  plan.fold = fold;
  return plan;
}

TEST(KfoldSplit, FoldsCutThePartitionsIntoKDisjointSets) {
  for (uint32_t kfold : {2u, 3u, 5u, 10u}) {
    for (uint32_t partitions : {kfold, kfold + 1, 64u}) {
      if (partitions < kfold) continue;
      // Each partition is held out by exactly one fold, and each fold's
      // examples are its partitions' (so the folds' examples partition the
      // training set).
      std::vector<int> held_by(partitions, 0);
      uint64_t examples = 0;
      for (uint32_t fold = 0; fold < kfold; ++fold) {
        const PartitionPlan plan = FoldPlan(partitions, kfold, fold);
        ASSERT_TRUE(common::ValidatePartitionPlan(plan).ok());
        uint32_t held = 0;
        for (uint32_t p = 0; p < partitions; ++p) {
          if (HeldOut(plan, p)) {
            ++held_by[p];
            ++held;
          }
        }
        EXPECT_GE(held, 1u) << "fold " << fold << " of " << kfold;
        EXPECT_EQ(TrainablePartitions(plan), partitions - held);
        for (const common::KeyRange& range : HeldOutExamples(plan)) {
          examples += range.size();
        }
      }
      for (uint32_t p = 0; p < partitions; ++p) {
        EXPECT_EQ(held_by[p], 1) << "partition " << p << " of " << partitions
                                 << ", " << kfold << " folds";
      }
      EXPECT_EQ(examples, 1000u);
    }
  }
}

TEST(KfoldSplit, WithoutFoldsEveryPartitionIsTrainable) {
  const PartitionPlan plan = FoldPlan(10, 0, 0);
  for (uint32_t p = 0; p < 10; ++p) EXPECT_FALSE(HeldOut(plan, p));
  EXPECT_EQ(TrainablePartitions(plan), 10u);
  EXPECT_TRUE(HeldOutExamples(plan).empty());
}

TEST(KfoldSplit, BadFoldPlansAreRefusedNamingTheFlags) {
  const auto refused = [](const PartitionPlan& plan, const char* why) {
    const absl::Status status = common::ValidatePartitionPlan(plan);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << why;
    return std::string(status.message());
  };
  EXPECT_THAT(refused(FoldPlan(10, 1, 0), "one fold"),
              HasSubstr("--kfold=1 must be at least 2"));
  EXPECT_THAT(refused(FoldPlan(10, 3, 3), "fold = K"),
              HasSubstr("--fold=3 is not a fold of --kfold=3"));
  EXPECT_THAT(refused(FoldPlan(4, 5, 0), "fewer partitions than folds"),
              HasSubstr("--data_partitions=4"));
  EXPECT_THAT(refused(FoldPlan(10, 0, 2), "a fold without folds"),
              HasSubstr("--fold=2 needs --kfold"));
}

// The held-out examples copied out of the training set, in order.
TEST(KfoldSplit, SelectExamplesCopiesTheHeldOutRows) {
  common::Dataset train;
  train.num_classes = 10;
  train.features.resize(10, 2);
  for (int i = 0; i < 10; ++i) {
    train.features(i, 0) = static_cast<float>(i);
    train.features(i, 1) = static_cast<float>(-i);
    train.labels.push_back(i % 10);
  }
  const common::Dataset held = common::SelectExamples(train, {{2, 4}, {7, 8}});
  ASSERT_EQ(held.size(), 3);
  EXPECT_EQ(held.num_classes, 10);
  EXPECT_EQ(held.labels, (std::vector<int32_t>{2, 3, 7}));
  EXPECT_EQ(held.features(2, 0), 7.0f);
  EXPECT_EQ(held.features(2, 1), -7.0f);
}

// Workers 0..n-1 live, incarnation 1, leasing in turn until none is
// granted; the (epoch, partition)s trained.
std::vector<std::pair<uint32_t, uint32_t>> TrainToTheEnd(PartitionTable& table,
                                                         uint32_t workers) {
  std::vector<std::pair<uint32_t, uint32_t>> trained;
  const auto live = [workers](uint32_t w) {
    return w < workers ? std::optional<uint64_t>(1) : std::nullopt;
  };
  std::set<uint32_t> finished;
  while (finished.size() < workers) {
    for (uint32_t w = 0; w < workers; ++w) {
      if (finished.count(w)) continue;
      const PartitionTable::Grant grant = table.Lease(w, 1, live);
      if (grant.outcome != Outcome::kGranted) {
        finished.insert(w);
        continue;
      }
      EXPECT_TRUE(table.ValidateCompletion(grant.epoch, grant.partition).ok());
      EXPECT_TRUE(table.CheckHeld(grant.epoch, grant.partition, w, 1).ok());
      table.Complete(grant.epoch, grant.partition);
      trained.emplace_back(grant.epoch, grant.partition);
    }
  }
  return trained;
}

TEST(KfoldSplit, EveryTrainablePartitionIsLeasedOnceAndNoHeldOutOne) {
  for (uint32_t fold = 0; fold < 3; ++fold) {
    PartitionTable table(2);
    const PartitionPlan plan = FoldPlan(10, 3, fold, 2);
    ASSERT_TRUE(table.Declare(plan).ok());
    const auto trained = TrainToTheEnd(table, 2);
    std::map<uint32_t, std::multiset<uint32_t>> per_epoch;
    for (const auto& [epoch, partition] : trained) {
      EXPECT_FALSE(HeldOut(plan, partition))
          << "held-out partition " << partition << " leased in epoch " << epoch
          << ", fold " << fold;
      per_epoch[epoch].insert(partition);
    }
    std::multiset<uint32_t> trainable;
    for (uint32_t p = 0; p < 10; ++p) {
      if (!HeldOut(plan, p)) trainable.insert(p);
    }
    ASSERT_EQ(per_epoch.size(), 2u);
    EXPECT_EQ(per_epoch[0], trainable);
    EXPECT_EQ(per_epoch[1], trainable);
    EXPECT_EQ(table.trainable(), trainable.size());
    EXPECT_EQ(table.DonePerEpoch(),
              (std::vector<uint32_t>(2, table.trainable())));
    // The job is done with the held-out fold untouched.
    const auto nobody = [](uint32_t) { return std::optional<uint64_t>(1); };
    EXPECT_EQ(table.Lease(0, 1, nobody).outcome, Outcome::kJobDone);
    for (uint32_t e = 0; e < 2; ++e) {
      for (uint32_t p = fold; p < 10; p += 3) {
        EXPECT_EQ(table.record(e, p).state, PartitionState::kFree);
      }
    }
  }
}

TEST(KfoldSplit, AHeldOutPartitionCannotBeReportedDone) {
  PartitionTable table(1);
  ASSERT_TRUE(table.Declare(FoldPlan(6, 3, 1)).ok());
  const absl::Status status = table.ValidateCompletion(0, 4);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("held out"));
}

TEST(KfoldSplit, WorkersThatDisagreeOnTheFoldAreRefused) {
  PartitionTable table(2);
  ASSERT_TRUE(table.Declare(FoldPlan(10, 5, 2)).ok());
  EXPECT_TRUE(table.Declare(FoldPlan(10, 5, 2)).ok());
  for (const PartitionPlan& other :
       {FoldPlan(10, 5, 3), FoldPlan(10, 2, 0), FoldPlan(10, 0, 0)}) {
    const absl::Status status = table.Declare(other);
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(status.message(), HasSubstr("fold 2 of 5 held out"));
    EXPECT_THAT(status.message(), HasSubstr("--kfold, --fold"));
  }
}

TEST(KfoldSplit, ATableRestoresItsFoldAndRefusesAHeldOutPartitionDone) {
  PartitionTable table(1);
  const PartitionPlan plan = FoldPlan(6, 3, 0);
  ASSERT_TRUE(table.Declare(plan).ok());
  TrainToTheEnd(table, 1);
  common::SavedPartitions saved = table.Save();

  PartitionTable restored(1);
  ASSERT_TRUE(restored.Restore(saved).ok());
  EXPECT_EQ(restored.plan(), plan);
  EXPECT_EQ(restored.trainable(), 4u);
  EXPECT_EQ(restored.DonePerEpoch(), (std::vector<uint32_t>{4, 4}));

  saved.records[3] = {PartitionState::kDone, 0, 1};  // partition 3: fold 0
  PartitionTable bad(1);
  const absl::Status status = bad.Restore(saved);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("held out"));
  EXPECT_FALSE(bad.declared());
}

}  // namespace
}  // namespace ps::server
