// Why a worker left, as the shard core records it: a finished worker stays
// finished (through checkpoints too), and one that failed to start is
// forgotten so it cannot stand in for a real worker of the next run.
#include <string>
#include <vector>

#include "common/float_bytes.h"
#include "common/theta_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/parameter_shard.h"

namespace ps::server {
namespace {

constexpr uint64_t kIncarnation = 7;

ShardOptions Sync(uint32_t workers) {
  ShardOptions options;
  options.mode = ConsistencyMode::kSync;
  options.num_workers = workers;
  options.max_workers = 8;
  options.lease_timeout = absl::Seconds(30);
  options.update.learning_rate = 1.0f;
  return options;
}

void Declare(ParameterShard& shard) {
  std::string values;
  common::FloatsToBytes(std::vector<float>{0, 0}, &values);
  InitArgs args;
  args.tensors = {{"w", {2}, false}};
  args.num_shards = 1;
  args.values = values;
  ASSERT_TRUE(shard.Init(args).ok());
}

absl::StatusOr<PushResult> Push(ParameterShard& shard, uint32_t worker,
                                uint64_t seq) {
  std::string bytes;
  common::FloatsToBytes(std::vector<float>{1, 1}, &bytes);
  PushArgs args;
  args.worker_id = worker;
  args.incarnation = kIncarnation;
  args.seq = seq;
  args.step = seq - 1;
  args.batch_size = 1;
  args.keys = {0, 2};
  args.gradient = bytes;
  return shard.Push(args);
}

const common::WorkerRecord* Find(const ShardStatus& status, uint32_t worker) {
  for (const common::WorkerRecord& w : status.workers) {
    if (w.worker_id == worker) return &w;
  }
  return nullptr;
}

TEST(Leave, AFinishedWorkerIsRecordedAndStaysSoThroughACheckpoint) {
  ParameterShard shard(Sync(2));
  Declare(shard);
  ASSERT_TRUE(shard.Register(0, kIncarnation).ok());
  ASSERT_TRUE(shard.Register(1, kIncarnation).ok());
  ASSERT_TRUE(Push(shard, 0, 1).ok());
  ASSERT_TRUE(Push(shard, 1, 1).ok());
  ASSERT_TRUE(shard.Leave(0, kIncarnation, LeaveReason::kFinished).ok());
  ASSERT_TRUE(shard.Leave(1, kIncarnation, LeaveReason::kStopped).ok());
  ShardStatus status = shard.Status();
  ASSERT_NE(Find(status, 0), nullptr);
  EXPECT_TRUE(Find(status, 0)->finished);
  EXPECT_EQ(Find(status, 0)->state, WorkerState::kLeft);
  EXPECT_FALSE(Find(status, 1)->finished);

  // Through the checkpoint file's bytes, into a fresh shard.
  absl::StatusOr<common::ThetaFile> snapshot = shard.Snapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  absl::StatusOr<common::ThetaFile> decoded =
      common::DecodeThetaFile(common::EncodeThetaFile(*snapshot), "checkpoint");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ParameterShard restored(Sync(2));
  ASSERT_TRUE(restored.Restore(std::move(*decoded)).ok());
  status = restored.Status();
  ASSERT_NE(Find(status, 0), nullptr);
  EXPECT_TRUE(Find(status, 0)->finished);
  EXPECT_EQ(Find(status, 0)->state, WorkerState::kLeft);
  EXPECT_FALSE(Find(status, 1)->finished);
  EXPECT_EQ(status.live_workers, 0u);

  // A new process of a finished rank trains again: no longer finished.
  ASSERT_TRUE(restored.Register(0, kIncarnation + 1).ok());
  EXPECT_FALSE(Find(restored.Status(), 0)->finished);
}

TEST(Leave, AWorkerThatFailedToStartIsForgottenAndRoundsWaitForTheRealOnes) {
  ParameterShard shard(Sync(2));
  Declare(shard);
  // A worker started wrongly registers as rank 0, then fails before its
  // first push.
  ASSERT_TRUE(shard.Register(0, kIncarnation).ok());
  ASSERT_TRUE(shard.Leave(0, kIncarnation, LeaveReason::kStartFailed).ok());
  EXPECT_EQ(Find(shard.Status(), 0), nullptr);
  // The next run's rank 1 must not close rounds alone.
  ASSERT_TRUE(shard.Register(1, kIncarnation).ok());
  ASSERT_TRUE(Push(shard, 1, 1).ok());
  EXPECT_EQ(shard.Status().version, 0u);
  ASSERT_TRUE(shard.Register(0, kIncarnation + 1).ok());
  EXPECT_EQ(shard.Status().version, 0u);
}

TEST(Leave, AFailedRestartOfAKnownWorkerIsOnlyAStop) {
  ParameterShard shard(Sync(1));
  Declare(shard);
  ASSERT_TRUE(shard.Register(0, kIncarnation - 1).ok());
  ASSERT_TRUE(shard.Register(0, kIncarnation).ok());
  ASSERT_TRUE(shard.Leave(0, kIncarnation, LeaveReason::kStartFailed).ok());
  const ShardStatus status = shard.Status();
  const common::WorkerRecord* worker = Find(status, 0);
  ASSERT_NE(worker, nullptr);
  EXPECT_EQ(worker->state, WorkerState::kLeft);
  EXPECT_FALSE(worker->finished);
}

}  // namespace
}  // namespace ps::server
