// The consistency modes' rules without a shard: when a sync round closes,
// where a sync push belongs, when a pull may be answered.
#include "server/consistency_policy.h"

#include <vector>

#include "gtest/gtest.h"

namespace ps::server {
namespace {

const absl::Time kStart = absl::UnixEpoch() + absl::Hours(1);

// Sync, closing rounds with the first `quorum` gradients (0: every live
// worker's).
ShardOptions SyncOptions(uint32_t quorum = 0) {
  ShardOptions options;
  options.mode = ConsistencyMode::kSync;
  options.sync_quorum = quorum;
  return options;
}

// A membership expecting `expected` workers, of which ids [0, registered)
// registered.
Membership Members(uint32_t expected, uint32_t registered) {
  Membership members(0, expected, 8, absl::Seconds(5));
  for (uint32_t id = 0; id < registered; ++id) {
    EXPECT_TRUE(members.Register(id, 1, kStart).ok());
  }
  return members;
}

void Push(SyncRound& round, uint32_t worker) {
  round.Slot(worker);
  round.Commit(worker, 1);
}

TEST(ConsistencyPolicy, ASyncRoundClosesWhenEveryLiveWorkerPushed) {
  const ConsistencyPolicy policy(SyncOptions());
  const Membership members = Members(2, 2);
  SyncRound round(4);
  EXPECT_EQ(policy.WhyRoundCloses(round, members, absl::ZeroDuration()),
            RoundClose::kNotYet);
  Push(round, 0);
  EXPECT_EQ(policy.WhyRoundCloses(round, members, absl::ZeroDuration()),
            RoundClose::kNotYet);
  Push(round, 1);
  EXPECT_EQ(policy.WhyRoundCloses(round, members, absl::ZeroDuration()),
            RoundClose::kAllLive);
}

TEST(ConsistencyPolicy, NoRoundClosesBeforeTheExpectedWorkersRegistered) {
  ShardOptions options = SyncOptions();
  options.round_timeout = absl::Seconds(1);
  const ConsistencyPolicy policy(options);
  // Worker 0 is every live worker, but worker 1 has not come yet.
  const Membership members = Members(2, 1);
  SyncRound round(4);
  Push(round, 0);
  EXPECT_EQ(policy.WhyRoundCloses(round, members, absl::Hours(1)),
            RoundClose::kNotYet);
}

TEST(ConsistencyPolicy, ASyncRoundClosesOnQuorumWithoutTheSlowestWorker) {
  ShardOptions options = SyncOptions(2);
  const ConsistencyPolicy policy(options);
  const Membership members = Members(3, 3);
  SyncRound round(4);
  Push(round, 2);
  EXPECT_EQ(policy.WhyRoundCloses(round, members, absl::ZeroDuration()),
            RoundClose::kNotYet);
  Push(round, 0);
  EXPECT_EQ(policy.WhyRoundCloses(round, members, absl::ZeroDuration()),
            RoundClose::kQuorum);
}

// The straggler of a --sync_quorum=2 job trains alone once the two fast
// workers finished: its rounds close at once, with its gradient alone (no
// timeout), and the round divides by the examples of two batches, not
// one: the learning rate is meant for the quorum's round, and one batch
// alone would move θ as far with twice the noise.
TEST(ConsistencyPolicy,
     AQuorumLargerThanTheWorkersStillTrainingClosesWithThoseLeft) {
  ShardOptions options = SyncOptions(2);
  options.round_timeout = absl::Seconds(1);
  const ConsistencyPolicy policy(options);
  Membership members = Members(3, 3);
  ASSERT_TRUE(members.Leave(0, 1, LeaveReason::kFinished).ok());
  ASSERT_TRUE(members.Leave(1, 1, LeaveReason::kFinished).ok());
  SyncRound round(2);
  absl::Span<float> slot = round.Slot(2);
  slot[0] = 0.5f;
  slot[1] = -2.0f;
  round.Commit(2, 32);
  EXPECT_EQ(policy.WhyRoundCloses(round, members, absl::ZeroDuration()),
            RoundClose::kAllLive);
  EXPECT_EQ(policy.RoundExamples(round), 64.0);
  std::vector<float> mean(2);
  round.Mean(absl::MakeSpan(mean), policy.RoundExamples(round));
  EXPECT_EQ(mean, (std::vector<float>{0.25f, -1.0f}));
}

// A round short of the quorum steps r/k of its mean, whatever closed it
// (the workers still training, or the timeout); a round with the quorum or
// more, and every round without one, divides by the examples it holds.
TEST(ConsistencyPolicy, OnlyARoundShortOfTheQuorumDividesByMoreThanItHolds) {
  ShardOptions options = SyncOptions(3);
  const ConsistencyPolicy quorum(options);
  const ConsistencyPolicy every_live(SyncOptions());
  SyncRound round(1);
  round.Slot(0);
  round.Commit(0, 10);
  round.Slot(4);
  round.Commit(4, 20);
  EXPECT_EQ(quorum.RoundExamples(round), 45.0) << "30 examples, 2 of 3";
  EXPECT_EQ(every_live.RoundExamples(round), 30.0);
  round.Slot(1);
  round.Commit(1, 30);
  EXPECT_EQ(quorum.RoundExamples(round), 60.0);
  round.Slot(2);
  round.Commit(2, 40);
  EXPECT_EQ(quorum.RoundExamples(round), 100.0) << "more than the quorum";
}

// A worker idle for want of a data partition is live but not training: no
// round waits for it, and a quorum larger than the workers still training
// waits for each of them, not fewer, and not for the timeout.
TEST(ConsistencyPolicy, AQuorumIsCappedByTheWorkersStillTraining) {
  ShardOptions options = SyncOptions(2);
  options.round_timeout = absl::Seconds(1);
  const ConsistencyPolicy policy(options);
  Membership members = Members(3, 3);
  ASSERT_TRUE(members.Leave(0, 1, LeaveReason::kIdle).ok());
  ASSERT_TRUE(members.Leave(1, 1, LeaveReason::kIdle).ok());
  SyncRound round(4);
  Push(round, 2);
  EXPECT_EQ(policy.WhyRoundCloses(round, members, absl::ZeroDuration()),
            RoundClose::kAllLive);
  // Worker 1 trains again: two are training, the quorum holds again.
  members.NoteTraining(1);
  EXPECT_EQ(policy.WhyRoundCloses(round, members, absl::ZeroDuration()),
            RoundClose::kNotYet);
  Push(round, 1);
  EXPECT_EQ(policy.WhyRoundCloses(round, members, absl::ZeroDuration()),
            RoundClose::kQuorum);
}

// A worker late for a round (its push came after its own round closed)
// is not waited for, but only in that round: the mark goes when it closes.
TEST(ConsistencyPolicy, ARoundDoesNotWaitForALateWorker) {
  const ConsistencyPolicy policy(SyncOptions(2));
  Membership members = Members(3, 3);
  ASSERT_TRUE(members.Leave(0, 1, LeaveReason::kIdle).ok());
  SyncRound round(4);
  auto why = [&] {
    return policy.WhyRoundCloses(round, members, absl::ZeroDuration());
  };
  Push(round, 1);
  EXPECT_EQ(why(), RoundClose::kNotYet);
  round.MarkLate(2);
  EXPECT_EQ(why(), RoundClose::kAllLive);
  round.Clear();
  EXPECT_FALSE(round.Late(2));
  Push(round, 1);
  EXPECT_EQ(why(), RoundClose::kNotYet);
  // Without a gradient a round never closes, late workers or not.
  round.Clear();
  round.MarkLate(1);
  round.MarkLate(2);
  EXPECT_EQ(why(), RoundClose::kNotYet);
}

// An idle worker whose lease expired (paused) re-registers, still idle;
// a new process of its id starts training.
TEST(ConsistencyPolicy, IdleOutlastsARenewedLeaseButNotANewProcess) {
  Membership members = Members(2, 2);
  ASSERT_TRUE(members.Leave(1, 1, LeaveReason::kIdle).ok());
  EXPECT_EQ(members.TrainingWorkers(), std::vector<uint32_t>{0});
  members.Expire(kStart + absl::Seconds(6));
  EXPECT_EQ(members.Leave(1, 1, LeaveReason::kIdle).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(members.Register(1, 1, kStart + absl::Seconds(7)).ok());
  EXPECT_TRUE(members.IsLive(1));
  EXPECT_TRUE(members.TrainingWorkers().empty()) << "worker 0 expired too";
  ASSERT_TRUE(members.Register(0, 1, kStart + absl::Seconds(7)).ok());
  EXPECT_EQ(members.TrainingWorkers(), std::vector<uint32_t>{0});
  ASSERT_TRUE(members.Register(1, 2, kStart + absl::Seconds(7)).ok());
  EXPECT_EQ(members.TrainingWorkers(), (std::vector<uint32_t>{0, 1}));
}

TEST(ConsistencyPolicy, AnIdleWorkerHoldsNoSspReaderBack) {
  ShardOptions options;
  options.mode = ConsistencyMode::kSsp;
  options.staleness = 1;
  const ConsistencyPolicy policy(options);
  Membership members = Members(2, 2);
  members.at(0).clock = 5;
  members.at(1).clock = 0;
  EXPECT_FALSE(policy.MayAnswerPull(0, 5, 9, members));
  ASSERT_TRUE(members.Leave(1, 1, LeaveReason::kIdle).ok());
  EXPECT_TRUE(policy.MayAnswerPull(0, 5, 9, members));
  EXPECT_TRUE(members.IsLive(1));
}

TEST(ConsistencyPolicy, ASyncRoundClosesByTimeoutWithWhatArrived) {
  ShardOptions options = SyncOptions();
  options.round_timeout = absl::Seconds(1);
  const ConsistencyPolicy policy(options);
  const Membership members = Members(2, 2);
  SyncRound round(4);
  EXPECT_EQ(policy.WhyRoundCloses(round, members, absl::Seconds(2)),
            RoundClose::kNotYet)
      << "an empty round never closes";
  Push(round, 1);
  EXPECT_EQ(policy.WhyRoundCloses(round, members, absl::Milliseconds(999)),
            RoundClose::kNotYet);
  EXPECT_EQ(policy.WhyRoundCloses(round, members, absl::Seconds(1)),
            RoundClose::kTimeout);
}

TEST(ConsistencyPolicy, ASyncPushBelongsToTheRoundOfItsBaseVersion) {
  const ConsistencyPolicy policy(SyncOptions());
  SyncRound round(4);
  Push(round, 1);
  EXPECT_EQ(policy.FitToRound(5, 5, round, 0), RoundFit::kOpenRound);
  EXPECT_EQ(policy.FitToRound(5, 5, round, 1), RoundFit::kAlreadyInRound);
  EXPECT_EQ(policy.FitToRound(4, 5, round, 0), RoundFit::kClosedRound);
  EXPECT_EQ(policy.FitToRound(6, 5, round, 0), RoundFit::kAheadOfShard);
}

TEST(ConsistencyPolicy, ASyncPullFromBeyondTheNextRoundIsAnsweredAtOnce) {
  const Membership members = Members(1, 1);
  const ConsistencyPolicy sync(SyncOptions());
  EXPECT_TRUE(sync.MayAnswerPull(5, 0, 5, members));
  EXPECT_FALSE(sync.MayAnswerPull(6, 0, 5, members));
  // The worker saw rounds a restored shard no longer has.
  EXPECT_TRUE(sync.MayAnswerPull(7, 0, 5, members));

  ShardOptions options;
  options.mode = ConsistencyMode::kAsync;
  const ConsistencyPolicy async(options);
  EXPECT_FALSE(async.MayAnswerPull(7, 0, 5, members));
}

TEST(ConsistencyPolicy, AnSspPullWaitsWhileTheSlowestWorkerIsTooFarBehind) {
  ShardOptions options;
  options.mode = ConsistencyMode::kSsp;
  options.staleness = 2;
  const ConsistencyPolicy policy(options);
  Membership members = Members(2, 2);
  members.at(0).clock = 5;
  members.at(1).clock = 2;
  EXPECT_FALSE(policy.MayAnswerPull(0, 5, 9, members));
  EXPECT_EQ(policy.ReadClockGap(5, members), 3u);
  members.at(1).clock = 3;
  EXPECT_TRUE(policy.MayAnswerPull(0, 5, 9, members));
  EXPECT_EQ(policy.ReadClockGap(5, members), 2u);
  // Within the bound from the start, whoever else is slow.
  EXPECT_TRUE(policy.MayAnswerPull(0, 2, 9, Members(2, 1)));
  // SSP still waits for the version.
  EXPECT_FALSE(policy.MayAnswerPull(10, 5, 9, members));
}

}  // namespace
}  // namespace ps::server
