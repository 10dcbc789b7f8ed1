// The data partitions shard 0 leases: timing-free assignment when nobody
// fails, hand-over when a worker dies, joiners, completions and checkpoints.
#include "server/partition_table.h"

#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::server {
namespace {

using common::PartitionPlan;
using common::PartitionState;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Outcome = PartitionTable::LeaseOutcome;

// Worker id → its live incarnation.
class Cluster {
 public:
  void Live(uint32_t id, uint64_t incarnation) { live_[id] = incarnation; }
  void Dead(uint32_t id) { live_.erase(id); }
  PartitionTable::Grant Lease(PartitionTable& table, uint32_t id) {
    return table.Lease(id, live_.at(id), [this](uint32_t w) {
      auto it = live_.find(w);
      return it == live_.end() ? std::nullopt
                               : std::optional<uint64_t>(it->second);
    });
  }
  // Leases and completes one partition; its (epoch, partition), or nullopt
  // when the lease granted none.
  std::optional<std::pair<uint32_t, uint32_t>> Train(PartitionTable& table,
                                                     uint32_t id) {
    PartitionTable::Grant grant = Lease(table, id);
    if (grant.outcome != Outcome::kGranted) return std::nullopt;
    EXPECT_TRUE(
        table.CheckHeld(grant.epoch, grant.partition, id, live_.at(id)).ok());
    table.Complete(grant.epoch, grant.partition);
    return std::make_pair(grant.epoch, grant.partition);
  }

 private:
  std::map<uint32_t, uint64_t> live_;
};

// Workers 0 to n-1 live, incarnation 1.
Cluster LiveWorkers(uint32_t n) {
  Cluster cluster;
  for (uint32_t w = 0; w < n; ++w) cluster.Live(w, 1);
  return cluster;
}

PartitionPlan Plan(uint32_t partitions, uint32_t epochs) {
  return PartitionPlan{1000, partitions, epochs, 42};
}

using Sequence = std::vector<std::pair<uint32_t, uint32_t>>;

// Every worker trains until no lease is granted, taking turns as `turns`
// says (worker ids, repeated); returns what each trained, in order.
std::map<uint32_t, Sequence> RunFaultFree(uint32_t workers,
                                          const std::vector<uint32_t>& turns) {
  PartitionTable table(workers);
  EXPECT_TRUE(table.Declare(Plan(10, 2)).ok());
  Cluster cluster = LiveWorkers(workers);
  std::map<uint32_t, Sequence> trained;
  std::set<uint32_t> finished;
  while (finished.size() < workers) {
    for (uint32_t w : turns) {
      if (finished.count(w)) continue;
      if (auto done = cluster.Train(table, w)) {
        trained[w].push_back(*done);
      } else {
        finished.insert(w);
      }
    }
  }
  EXPECT_EQ(table.done(), 20u);
  EXPECT_THAT(table.DonePerEpoch(), ElementsAre(10, 10));
  return trained;
}

TEST(PartitionTable, FaultFreeAssignmentDoesNotDependOnTiming) {
  const auto round_robin = RunFaultFree(3, {0, 1, 2});
  const auto uneven = RunFaultFree(3, {2, 2, 2, 1, 0, 2, 1, 1, 0, 0, 0});
  EXPECT_EQ(round_robin, uneven);
  // Slot k of epoch e to worker (10e + k) mod 3: 4, 3, 3 of epoch 0 and
  // 3, 4, 3 of epoch 1 (the extra slot moves on, not always worker 0's).
  EXPECT_EQ(round_robin.at(0).size(), 7u);
  EXPECT_EQ(round_robin.at(1).size(), 7u);
  EXPECT_EQ(round_robin.at(2).size(), 6u);
}

TEST(PartitionTable, EveryPartitionOfEveryEpochIsLeasedOnce) {
  const auto trained = RunFaultFree(3, {0, 1, 2});
  std::set<std::pair<uint32_t, uint32_t>> seen;
  for (const auto& [worker, sequence] : trained) {
    for (const auto& done : sequence) {
      EXPECT_TRUE(seen.insert(done).second)
          << "epoch " << done.first << " partition " << done.second;
    }
  }
  EXPECT_EQ(seen.size(), 20u);
}

TEST(PartitionTable, EpochsHaveDifferentSeededOrders) {
  const auto trained = RunFaultFree(1, {0});
  const Sequence& all = trained.at(0);
  ASSERT_EQ(all.size(), 20u);
  std::vector<uint32_t> first, second;
  for (const auto& [epoch, partition] : all) {
    (epoch == 0 ? first : second).push_back(partition);
  }
  EXPECT_NE(first, second);
  EXPECT_EQ(std::set<uint32_t>(first.begin(), first.end()).size(), 10u);
}

TEST(PartitionTable, RetriedLeaseGetsThePartitionItHolds) {
  PartitionTable table(2);
  ASSERT_TRUE(table.Declare(Plan(8, 1)).ok());
  Cluster cluster = LiveWorkers(2);
  const PartitionTable::Grant first = cluster.Lease(table, 0);
  const PartitionTable::Grant again = cluster.Lease(table, 0);
  ASSERT_EQ(first.outcome, Outcome::kGranted);
  EXPECT_EQ(again.epoch, first.epoch);
  EXPECT_EQ(again.partition, first.partition);
  EXPECT_EQ(again.examples, first.examples);
}

TEST(PartitionTable, DeadWorkersPartitionsGoToALiveOneAfterItsOwn) {
  PartitionTable table(2);
  ASSERT_TRUE(table.Declare(Plan(6, 1)).ok());
  Cluster cluster = LiveWorkers(2);
  const PartitionTable::Grant held = cluster.Lease(table, 1);
  ASSERT_EQ(held.outcome, Outcome::kGranted);
  // While worker 1 lives, worker 0 trains its own three and then finds
  // nothing it may take.
  Sequence zero;
  while (auto done = cluster.Train(table, 0)) zero.push_back(*done);
  EXPECT_EQ(zero.size(), 3u);
  EXPECT_EQ(cluster.Lease(table, 0).outcome, Outcome::kNoneFree);
  // Worker 1 dies holding a partition: worker 0 takes it and the rest.
  cluster.Dead(1);
  std::set<uint32_t> taken;
  while (auto done = cluster.Train(table, 0)) taken.insert(done->second);
  EXPECT_EQ(taken.size(), 3u);
  EXPECT_TRUE(taken.count(held.partition));
  EXPECT_EQ(cluster.Lease(table, 0).outcome, Outcome::kJobDone);
  EXPECT_EQ(table.record(0, held.partition).worker_id, 0u);
}

TEST(PartitionTable, RestartedWorkerGetsItsUnfinishedPartitionBack) {
  PartitionTable table(2);
  ASSERT_TRUE(table.Declare(Plan(6, 1)).ok());
  Cluster cluster = LiveWorkers(2);
  const PartitionTable::Grant held = cluster.Lease(table, 1);
  cluster.Live(1, 2);  // a new process replaced it
  const PartitionTable::Grant again = cluster.Lease(table, 1);
  ASSERT_EQ(again.outcome, Outcome::kGranted);
  EXPECT_EQ(again.partition, held.partition);
  EXPECT_EQ(table.record(0, held.partition).incarnation, 2u);
  // The old incarnation can no longer report it.
  EXPECT_EQ(table.CheckHeld(0, held.partition, 1, 1).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(PartitionTable, WorkerWithoutOwnSlotsLeftGoesOnToTheNextEpoch) {
  PartitionTable table(2);
  ASSERT_TRUE(table.Declare(Plan(4, 2)).ok());
  Cluster cluster = LiveWorkers(2);
  ASSERT_TRUE(cluster.Train(table, 0).has_value());
  ASSERT_TRUE(cluster.Train(table, 0).has_value());
  const auto third = cluster.Train(table, 0);
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->first, 1u);  // epoch 0's free slots are worker 1's
}

// Without reserved slots (async, SSP, sync with a quorum), a worker out of
// its own slots takes a live straggler's free ones from the back, never
// the one it holds, before going on to the next epoch.
TEST(PartitionTable, UnreservedSlotsOfALiveStragglerGoToTheFastWorkers) {
  PartitionTable table(2, /*reserve_for_live_owners=*/false);
  ASSERT_TRUE(table.Declare(Plan(6, 2)).ok());
  Cluster cluster = LiveWorkers(2);
  const PartitionTable::Grant slow = cluster.Lease(table, 1);
  ASSERT_EQ(slow.outcome, Outcome::kGranted);
  std::set<uint32_t> epoch0;
  for (int i = 0; i < 3; ++i) {
    const auto own = cluster.Train(table, 0);
    ASSERT_TRUE(own.has_value());
    EXPECT_EQ(own->first, 0u);
    epoch0.insert(own->second);
  }
  // Worker 0's own slots of epoch 0 are done: it takes worker 1's two
  // untouched ones, not the one worker 1 holds.
  for (int i = 0; i < 2; ++i) {
    const auto taken = cluster.Train(table, 0);
    ASSERT_TRUE(taken.has_value());
    EXPECT_EQ(taken->first, 0u);
    EXPECT_NE(taken->second, slow.partition);
    EXPECT_TRUE(epoch0.insert(taken->second).second);
  }
  const auto next = cluster.Train(table, 0);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->first, 1u);
  EXPECT_THAT(table.DonePerEpoch(), ElementsAre(5, 1));

  // Reserved (the default), the same worker goes on to epoch 1 instead.
  PartitionTable reserved(2);
  ASSERT_TRUE(reserved.Declare(Plan(6, 2)).ok());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(cluster.Train(reserved, 0).has_value());
  const auto ahead = cluster.Train(reserved, 0);
  ASSERT_TRUE(ahead.has_value());
  EXPECT_EQ(ahead->first, 1u);
}

TEST(PartitionTable, JoinerBeyondTheExpectedWorkersTakesFromTheBack) {
  PartitionTable table(2);
  ASSERT_TRUE(table.Declare(Plan(6, 1)).ok());
  Cluster cluster = LiveWorkers(2);
  cluster.Live(2, 1);
  ASSERT_TRUE(cluster.Train(table, 0).has_value());
  const auto joined = cluster.Train(table, 2);
  ASSERT_TRUE(joined.has_value());
  // The owners' leases then never meet it: each partition once.
  std::set<uint32_t> seen = {joined->second};
  uint32_t count = 2;
  while (auto done = cluster.Train(table, 0)) {
    EXPECT_TRUE(seen.insert(done->second).second);
    ++count;
  }
  while (auto done = cluster.Train(table, 1)) {
    EXPECT_TRUE(seen.insert(done->second).second);
    ++count;
  }
  EXPECT_EQ(count, 6u);
  EXPECT_EQ(cluster.Lease(table, 2).outcome, Outcome::kJobDone);
}

// A completion outside the plan is a malformed push; one of a partition
// the worker no longer holds is not held, and says where it went.
TEST(PartitionTable,
     CompletionsOfUnknownPartitionsAreInvalidAndForeignNotHeld) {
  PartitionTable table(2);
  EXPECT_EQ(table.ValidateCompletion(0, 0).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(table.Declare(Plan(4, 2)).ok());
  Cluster cluster = LiveWorkers(2);
  const PartitionTable::Grant grant = cluster.Lease(table, 0);
  const absl::Status epoch = table.ValidateCompletion(2, 0);
  EXPECT_EQ(epoch.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(epoch.message(), HasSubstr("epoch 2"));
  const absl::Status partition = table.ValidateCompletion(0, 4);
  EXPECT_EQ(partition.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(partition.message(), HasSubstr("partition 4"));
  EXPECT_TRUE(table.ValidateCompletion(1, 3).ok());
  const absl::Status foreign =
      table.CheckHeld(grant.epoch, grant.partition, 1, 1);
  EXPECT_EQ(foreign.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(foreign.message(), HasSubstr("but to worker 0"));
  const uint32_t other = (grant.partition + 1) % 4;
  EXPECT_THAT(table.CheckHeld(0, other, 0, 1).message(),
              HasSubstr("nobody holds it"));
  ASSERT_TRUE(table.CheckHeld(grant.epoch, grant.partition, 0, 1).ok());
  table.Complete(grant.epoch, grant.partition);
  const absl::Status twice =
      table.CheckHeld(grant.epoch, grant.partition, 0, 1);
  EXPECT_EQ(twice.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(twice.message(), HasSubstr("done already"));
  EXPECT_THAT(table.DonePerEpoch(), ElementsAre(1, 0));
}

TEST(PartitionTable, FirstPlanWinsAndBadPlansAreRefused) {
  PartitionTable table(2);
  EXPECT_EQ(table.Declare(PartitionPlan{10, 0, 1, 1}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.Declare(PartitionPlan{10, 11, 1, 1}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.Declare(PartitionPlan{10, 2, 0, 1}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(table.declared());
  ASSERT_TRUE(table.Declare(PartitionPlan{10, 2, 3, 1}).ok());
  EXPECT_TRUE(table.Declare(PartitionPlan{10, 2, 3, 1}).ok());
  const absl::Status other = table.Declare(PartitionPlan{10, 5, 3, 1});
  EXPECT_EQ(other.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.message(), HasSubstr("--data_partitions"));
  EXPECT_EQ(table.plan().partitions, 2u);
}

TEST(PartitionTable, PartitionsCutTheTrainingSetIntoContiguousRanges) {
  const PartitionPlan plan{1003, 10, 1, 1};
  uint64_t next = 0;
  for (uint32_t p = 0; p < plan.partitions; ++p) {
    const common::KeyRange range = common::PartitionExamples(plan, p);
    EXPECT_EQ(range.begin, next);
    EXPECT_GE(range.size(), 100u);
    EXPECT_LE(range.size(), 101u);
    next = range.end;
  }
  EXPECT_EQ(next, 1003u);
}

TEST(PartitionTable, RestoredTableGoesOnAsTheSavedOne) {
  PartitionTable table(2);
  ASSERT_TRUE(table.Declare(Plan(6, 2)).ok());
  Cluster cluster = LiveWorkers(2);
  ASSERT_TRUE(cluster.Train(table, 0).has_value());
  ASSERT_TRUE(cluster.Train(table, 1).has_value());
  const PartitionTable::Grant held = cluster.Lease(table, 1);

  PartitionTable restored(2);
  ASSERT_TRUE(restored.Restore(table.Save()).ok());
  EXPECT_EQ(restored.plan(), table.plan());
  EXPECT_EQ(restored.done(), 2u);
  EXPECT_THAT(restored.DonePerEpoch(), ElementsAre(2, 0));
  // The holder's lease survives; done partitions stay done.
  const PartitionTable::Grant again = cluster.Lease(restored, 1);
  EXPECT_EQ(again.partition, held.partition);
  EXPECT_EQ(again.epoch, held.epoch);
  // Both tables hand out the same partitions from here.
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(cluster.Train(table, i % 2), cluster.Train(restored, i % 2));
  }
  EXPECT_EQ(restored.done(), table.done());

  common::SavedPartitions bad = table.Save();
  bad.records.pop_back();
  PartitionTable refused(2);
  EXPECT_EQ(refused.Restore(bad).code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(refused.declared());
}

}  // namespace
}  // namespace ps::server
