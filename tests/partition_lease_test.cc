// Shard 0's partition leases and the pushes that complete them, driven
// through the shard core with an explicit clock: exactly once, validated
// before θ changes, and kept in the checkpoint.
#include <optional>
#include <string>
#include <vector>

#include "common/error_info.h"
#include "common/float_bytes.h"
#include "common/theta_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/parameter_shard.h"

namespace ps::server {
namespace {

using common::PartitionPlan;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Outcome = PartitionTable::LeaseOutcome;

constexpr uint64_t kIncarnation = 3;
// 4 partitions of 100 examples, 2 epochs.
const PartitionPlan kPlan{400, 4, 2, 11};

// An async shard `index` of `shards` holding w[2] (its part of it), for
// two workers, on a clock the test moves.
class LeaseShard {
 public:
  // `declare`: Init the model (else the shard waits for a Restore).
  explicit LeaseShard(uint32_t index = 0, uint32_t shards = 1,
                      bool declare = true)
      : shard_(Options(index, shards, &now_)) {
    keys_ = common::BalancedPart(2, shards, index);
    if (!declare) return;
    InitArgs args;
    args.tensors = {{"w", {2}, false}};
    args.shard_index = index;
    args.num_shards = shards;
    common::FloatsToBytes(std::vector<float>(keys_.size(), 0.0f), &init_);
    args.values = init_;
    EXPECT_TRUE(shard_.Init(args).ok());
  }

  static ShardOptions Options(uint32_t index, uint32_t shards,
                              const absl::Time* now) {
    ShardOptions options;
    options.mode = ConsistencyMode::kAsync;
    options.shard_index = index;
    options.num_shards = shards;
    options.num_workers = 2;
    options.max_workers = 4;
    options.lease_timeout = absl::Seconds(2);
    options.update.learning_rate = 1.0f;
    options.clock = [now] { return *now; };
    return options;
  }

  void Advance(absl::Duration elapsed) {
    now_ += elapsed;
    shard_.Tick(now_);
  }

  absl::StatusOr<PartitionLease> Lease(uint32_t worker) {
    return shard_.LeasePartition(worker, kIncarnation, kPlan);
  }

  // A push of gradient 1 on every key; `completes` rides on it.
  absl::StatusOr<PushResult> Push(uint32_t worker, uint64_t seq,
                                  std::optional<PartitionRef> completes) {
    std::string bytes;
    common::FloatsToBytes(std::vector<float>(keys_.size(), 1.0f), &bytes);
    PushArgs args;
    args.worker_id = worker;
    args.incarnation = kIncarnation;
    args.seq = seq;
    args.step = seq;
    args.batch_size = 1;
    args.keys = keys_;
    args.gradient = bytes;
    args.completes = completes;
    return shard_.Push(args);
  }

  ParameterShard* operator->() { return &shard_; }

 private:
  absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);
  common::KeyRange keys_;
  std::string init_;
  ParameterShard shard_;
};

PartitionRef RefOf(const PartitionLease& lease) {
  return {lease.grant.epoch, lease.grant.partition};
}

TEST(PartitionLease, APushCompletesItsPartitionExactlyOnce) {
  LeaseShard shard;
  ASSERT_TRUE(shard->Register(0, kIncarnation).ok());
  absl::StatusOr<PartitionLease> lease = shard.Lease(0);
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_EQ(lease->grant.outcome, Outcome::kGranted);
  EXPECT_EQ(lease->grant.examples,
            common::PartitionExamples(kPlan, lease->grant.partition));
  EXPECT_EQ(lease->partitions_done, 0u);

  ASSERT_TRUE(shard.Push(0, 1, RefOf(*lease)).ok());
  // The same push again (its reply was lost): acknowledged, not recorded
  // twice, not applied twice.
  absl::StatusOr<PushResult> retry = shard.Push(0, 1, RefOf(*lease));
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->outcome, PushOutcome::kDuplicate);
  ShardStatus status = shard->Status();
  EXPECT_EQ(status.partitions_done, 1u);
  EXPECT_THAT(status.partitions_done_per_epoch, ElementsAre(1, 0));
  ASSERT_TRUE(status.partition_plan.has_value());
  EXPECT_EQ(*status.partition_plan, kPlan);
  EXPECT_EQ(status.version, 1u);

  // A new push claiming it again counts as a push; the partition is not
  // counted twice.
  absl::StatusOr<PushResult> again = shard.Push(0, 2, RefOf(*lease));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->completion_skipped);
  EXPECT_EQ(shard->Status().version, 2u);
  EXPECT_EQ(shard->Status().partitions_done, 1u);
  // And the next lease is another partition.
  absl::StatusOr<PartitionLease> next = shard.Lease(0);
  ASSERT_TRUE(next.ok());
  EXPECT_NE(next->grant.partition, lease->grant.partition);
  EXPECT_EQ(next->partitions_done, 1u);
}

TEST(PartitionLease, BadCompletionsAreRefusedBeforeThetaChanges) {
  LeaseShard shard;
  ASSERT_TRUE(shard->Register(0, kIncarnation).ok());
  ASSERT_TRUE(shard->Register(1, kIncarnation).ok());
  // Before any lease the job has no partitions.
  EXPECT_EQ(shard.Push(0, 1, PartitionRef{0, 0}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<PartitionLease> lease = shard.Lease(0);
  ASSERT_TRUE(lease.ok());
  const absl::Status epoch = shard.Push(0, 2, PartitionRef{2, 0}).status();
  EXPECT_EQ(epoch.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(epoch.message(), HasSubstr("epoch 2"));
  const absl::Status partition = shard.Push(0, 3, PartitionRef{0, 9}).status();
  EXPECT_EQ(partition.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(partition.message(), HasSubstr("partition 9"));
  const ShardStatus status = shard->Status();
  EXPECT_EQ(status.version, 0u);
  EXPECT_EQ(status.pushes_rejected, 3u);
  EXPECT_EQ(status.partitions_done, 0u);
  // A plan that differs from the job's is refused, naming the flags.
  const absl::StatusOr<PartitionLease> other =
      shard->LeasePartition(1, kIncarnation, PartitionPlan{400, 8, 2, 11});
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.status().message(), HasSubstr("--data_partitions"));
}

TEST(PartitionLease, OnlyShardZeroLeasesAndRecordsPartitions) {
  LeaseShard shard(/*index=*/1, /*shards=*/2);
  ASSERT_TRUE(shard->Register(0, kIncarnation).ok());
  const absl::Status lease = shard.Lease(0).status();
  EXPECT_EQ(lease.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(lease.message(), HasSubstr("shard 0 only"));
  const absl::Status push = shard.Push(0, 1, PartitionRef{0, 0}).status();
  EXPECT_EQ(push.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(push.message(), HasSubstr("shard 0 only"));
  EXPECT_EQ(shard->Status().version, 0u);
}

TEST(PartitionLease, AWorkerMustBeLiveToLease) {
  LeaseShard shard;
  const absl::Status status = shard.Lease(0).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(common::HasErrorReason(status, common::kRegistrationRequired));
}

TEST(PartitionLease, AnExpiredWorkersPartitionGoesToALiveOne) {
  LeaseShard shard;
  ASSERT_TRUE(shard->Register(0, kIncarnation).ok());
  ASSERT_TRUE(shard->Register(1, kIncarnation).ok());
  absl::StatusOr<PartitionLease> held = shard.Lease(1);
  ASSERT_TRUE(held.ok());
  // Worker 0 trains its own two partitions of epoch 0, then (async: slots
  // are not reserved) worker 1's untouched one, and goes on to epoch 1's:
  // the one worker 1 holds is its while it lives.
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    absl::StatusOr<PartitionLease> own = shard.Lease(0);
    ASSERT_TRUE(own.ok());
    EXPECT_EQ(own->grant.epoch, 0u);
    EXPECT_NE(own->grant.partition, held->grant.partition);
    ASSERT_TRUE(shard.Push(0, seq, RefOf(*own)).ok());
  }
  absl::StatusOr<PartitionLease> ahead = shard.Lease(0);
  ASSERT_TRUE(ahead.ok());
  EXPECT_EQ(ahead->grant.epoch, 1u);
  ASSERT_TRUE(shard.Push(0, 4, RefOf(*ahead)).ok());

  // Worker 1 stops heartbeating; worker 0 does not.
  shard.Advance(absl::Seconds(1));
  ASSERT_TRUE(shard->Heartbeat(0, kIncarnation).ok());
  shard.Advance(absl::Seconds(1));
  ASSERT_EQ(shard->Status().live_workers, 1u);
  absl::StatusOr<PartitionLease> taken = shard.Lease(0);
  ASSERT_TRUE(taken.ok());
  EXPECT_EQ(taken->grant.epoch, 0u);  // the lowest epoch first
  EXPECT_EQ(taken->grant.partition, held->grant.partition);
  ASSERT_TRUE(shard.Push(0, 5, RefOf(*taken)).ok());
  EXPECT_THAT(shard->Status().partitions_done_per_epoch, ElementsAre(4, 1));
}

// A worker paused past its lease comes back and pushes the last gradient
// of the partition it held, which went to another worker meanwhile: the
// gradient is good and counts, the completion is the holder's to report,
// so the table counts the partition once, done by its holder.
TEST(PartitionLease, ALateCompletionCountsThePushButNotThePartition) {
  LeaseShard shard;
  ASSERT_TRUE(shard->Register(0, kIncarnation).ok());
  ASSERT_TRUE(shard->Register(1, kIncarnation).ok());
  absl::StatusOr<PartitionLease> held = shard.Lease(1);
  ASSERT_TRUE(held.ok());
  // Worker 0 trains the rest of epoch 0: its own two and worker 1's
  // untouched one.
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    absl::StatusOr<PartitionLease> own = shard.Lease(0);
    ASSERT_TRUE(own.ok());
    ASSERT_TRUE(shard.Push(0, seq, RefOf(*own)).ok());
  }
  // Worker 1 is paused past its lease; worker 0 takes its partition.
  shard.Advance(absl::Seconds(1));
  ASSERT_TRUE(shard->Heartbeat(0, kIncarnation).ok());
  shard.Advance(absl::Seconds(1));
  absl::StatusOr<PartitionLease> taken = shard.Lease(0);
  ASSERT_TRUE(taken.ok());
  ASSERT_EQ(taken->grant.partition, held->grant.partition);
  ASSERT_EQ(taken->grant.epoch, held->grant.epoch);

  // Worker 1 resumes (the same process re-registers) and completes it.
  ASSERT_TRUE(shard->Register(1, kIncarnation).ok());
  const uint64_t version = shard->Status().version;
  absl::StatusOr<PushResult> late = shard.Push(1, 1, RefOf(*held));
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(late->outcome, PushOutcome::kApplied);
  EXPECT_TRUE(late->completion_skipped);
  ShardStatus status = shard->Status();
  EXPECT_EQ(status.version, version + 1) << "the gradient counted";
  EXPECT_EQ(status.pushes_rejected, 0u);
  EXPECT_THAT(status.partitions_done_per_epoch, ElementsAre(3, 0));
  // Its retry (the reply was lost) is a duplicate, recording nothing.
  absl::StatusOr<PushResult> retry = shard.Push(1, 1, RefOf(*held));
  ASSERT_TRUE(retry.ok());
  EXPECT_EQ(retry->outcome, PushOutcome::kDuplicate);
  EXPECT_EQ(shard->Status().version, version + 1);

  // The holder completes it: done once, by its holder.
  absl::StatusOr<PushResult> holder = shard.Push(0, 4, RefOf(*taken));
  ASSERT_TRUE(holder.ok());
  EXPECT_FALSE(holder->completion_skipped);
  status = shard->Status();
  EXPECT_THAT(status.partitions_done_per_epoch, ElementsAre(4, 0));
  // Worker 1 goes on to its next lease: one of its own in epoch 1.
  absl::StatusOr<PartitionLease> next = shard.Lease(1);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->grant.outcome, Outcome::kGranted);
  EXPECT_EQ(next->grant.epoch, 1u);
}

TEST(PartitionLease, TheTableSurvivesACheckpoint) {
  LeaseShard shard;
  ASSERT_TRUE(shard->Register(0, kIncarnation).ok());
  ASSERT_TRUE(shard->Register(1, kIncarnation).ok());
  absl::StatusOr<PartitionLease> done = shard.Lease(0);
  ASSERT_TRUE(done.ok());
  ASSERT_TRUE(shard.Push(0, 1, RefOf(*done)).ok());
  absl::StatusOr<PartitionLease> held = shard.Lease(1);
  ASSERT_TRUE(held.ok());

  absl::StatusOr<common::ThetaFile> saved = shard->Snapshot();
  ASSERT_TRUE(saved.ok()) << saved.status();
  ASSERT_TRUE(saved->partitions.has_value());
  // Through the file's bytes, as a restart reads it.
  absl::StatusOr<common::ThetaFile> read =
      common::DecodeThetaFile(common::EncodeThetaFile(*saved), "checkpoint");
  ASSERT_TRUE(read.ok()) << read.status();

  LeaseShard restored(0, 1, /*declare=*/false);
  ASSERT_TRUE(restored->Restore(*read).ok());
  const ShardStatus status = restored->Status();
  EXPECT_EQ(status.partitions_done, 1u);
  EXPECT_THAT(status.partitions_done_per_epoch, ElementsAre(1, 0));
  // The holder gets its partition back; the done one is never leased
  // again, nor can it be completed twice (the worker's seq is restored).
  absl::StatusOr<PartitionLease> again = restored.Lease(1);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->grant.partition, held->grant.partition);
  absl::StatusOr<PushResult> retry = restored.Push(0, 1, RefOf(*done));
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->outcome, PushOutcome::kDuplicate);
  absl::StatusOr<PushResult> twice = restored.Push(0, 2, RefOf(*done));
  ASSERT_TRUE(twice.ok()) << twice.status();
  EXPECT_TRUE(twice->completion_skipped);
  EXPECT_EQ(restored->Status().partitions_done, 1u);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<PartitionLease> next = restored.Lease(0);
    ASSERT_TRUE(next.ok());
    ASSERT_EQ(next->grant.outcome, Outcome::kGranted);
    EXPECT_FALSE(next->grant.epoch == done->grant.epoch &&
                 next->grant.partition == done->grant.partition);
    ASSERT_TRUE(restored.Push(0, 3 + i, RefOf(*next)).ok());
  }
}

}  // namespace
}  // namespace ps::server
