// Leases, elastic membership, stragglers, SSP and exactly-once delivery,
// driven through the shard core with an explicit clock.
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common/error_info.h"
#include "common/float_bytes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/parameter_shard.h"

namespace ps::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint64_t kIncarnation = 7;

std::string Bytes(const std::vector<float>& values) {
  std::string out;
  common::FloatsToBytes(values, &out);
  return out;
}

class Shard {
 public:
  explicit Shard(ShardOptions options) : shard_(Defaults(options, &now_)) {
    InitArgs args;
    args.tensors = {{"w", {2}, false}};
    args.num_shards = 1;
    const std::string values = Bytes({0, 0});
    args.values = values;
    EXPECT_TRUE(shard_.Init(args).ok());
  }

  static ShardOptions Defaults(ShardOptions options, const absl::Time* now) {
    options.update.learning_rate = 1.0f;
    options.max_workers = 8;
    if (now != nullptr) options.clock = [now] { return *now; };
    return options;
  }

  // The shard's clock moves on by `elapsed`, and the shard sees it.
  void Advance(absl::Duration elapsed) {
    now_ += elapsed;
    shard_.Tick(now_);
  }

  void Register(uint32_t worker, uint64_t incarnation = kIncarnation) {
    ASSERT_TRUE(shard_.Register(worker, incarnation).ok());
  }

  // Mostly one step per round: a sync push names its round by the version
  // it was computed from.
  absl::StatusOr<PushResult> Push(uint32_t worker, uint64_t seq, uint64_t step,
                                  std::vector<float> gradient,
                                  uint64_t incarnation = kIncarnation) {
    return PushFrom(worker, seq, step, step, std::move(gradient), incarnation);
  }

  // A push of the worker's `step`, computed from θ of version `base`.
  absl::StatusOr<PushResult> PushFrom(uint32_t worker, uint64_t seq,
                                      uint64_t step, uint64_t base,
                                      std::vector<float> gradient,
                                      uint64_t incarnation = kIncarnation) {
    const std::string bytes = Bytes(gradient);
    PushArgs args;
    args.worker_id = worker;
    args.incarnation = incarnation;
    args.seq = seq;
    args.step = step;
    args.base_version = base;
    args.batch_size = 1;
    args.keys = {0, 2};
    args.gradient = bytes;
    return shard_.Push(args);
  }

  std::vector<float> Theta() {
    auto pulled = shard_.Pull({}, absl::InfiniteFuture(),
                              shard_.NewPullTicket(), nullptr);
    std::vector<float> theta(2);
    EXPECT_TRUE(
        common::BytesToFloats((*pulled)->values, absl::MakeSpan(theta), "θ")
            .ok());
    return theta;
  }

  ParameterShard& operator*() { return shard_; }
  ParameterShard* operator->() { return &shard_; }

 private:
  // The shard's clock: a fixed start, moved only by Advance.
  absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);
  ParameterShard shard_;
};

ShardOptions Sync(uint32_t workers) {
  ShardOptions options;
  options.mode = ConsistencyMode::kSync;
  options.num_workers = workers;
  options.lease_timeout = absl::Seconds(2);
  return options;
}

// Leases and heartbeat ages follow the shard's clock, not the machine's.
TEST(Membership, LeasesAndHeartbeatAgesRunOnTheShardsClock) {
  Shard shard(Sync(1));
  shard.Register(0);
  shard.Advance(absl::Milliseconds(1500));
  ShardStatus status = shard->Status();
  ASSERT_EQ(status.workers.size(), 1u);
  EXPECT_EQ(status.SinceHeartbeat(status.workers[0]), absl::Milliseconds(1500));
  EXPECT_EQ(status.live_workers, 1u);
  ASSERT_TRUE(shard->Heartbeat(0, kIncarnation).ok());
  shard.Advance(absl::Milliseconds(1999));  // 2 s lease, renewed at 1.5 s
  EXPECT_EQ(shard->Status().live_workers, 1u);
  shard.Advance(absl::Milliseconds(1));
  status = shard->Status();
  EXPECT_EQ(status.live_workers, 0u);
  EXPECT_EQ(status.SinceHeartbeat(status.workers[0]), absl::Seconds(2));
}

// Checkpoints hold the same record the shard keeps: a restore brings back
// each worker as it was, a worker that stopped early as left, not expired.
TEST(Membership, ARestoredShardHasEveryWorkersRecordAsItWas) {
  Shard shard(Sync(3));
  for (uint32_t w = 0; w < 3; ++w) shard.Register(w);
  for (uint32_t w = 0; w < 3; ++w)
    ASSERT_TRUE(shard.Push(w, 1, 0, {1, 1}).ok());
  ASSERT_TRUE(shard->Leave(1, kIncarnation, LeaveReason::kStopped).ok());
  ASSERT_TRUE(shard->Leave(2, kIncarnation, LeaveReason::kFinished).ok());
  absl::StatusOr<common::ThetaFile> saved = shard->Snapshot();
  ASSERT_TRUE(saved.ok()) << saved.status();
  const ShardStatus before = shard->Status();

  ParameterShard restored(Shard::Defaults(Sync(3), nullptr));
  ASSERT_TRUE(restored.Restore(*saved).ok());
  const ShardStatus after = restored.Status();
  ASSERT_EQ(after.workers.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const common::WorkerRecord& was = before.workers[i];
    const common::WorkerRecord& is = after.workers[i];
    EXPECT_EQ(is.worker_id, was.worker_id);
    EXPECT_EQ(is.incarnation, was.incarnation);
    EXPECT_EQ(is.last_seq, was.last_seq);
    EXPECT_EQ(is.last_step, was.last_step);
    EXPECT_EQ(is.pushes, was.pushes);
    EXPECT_EQ(is.clock, was.clock);
    EXPECT_EQ(is.state, was.state) << "worker " << i;
    EXPECT_EQ(is.finished, was.finished);
  }
  EXPECT_EQ(after.workers[1].state, WorkerState::kLeft);
  EXPECT_FALSE(after.workers[1].finished);
  EXPECT_TRUE(after.workers[2].finished);
}

TEST(Membership, ADeadWorkerStopsCountingOnceItsLeaseExpires) {
  Shard shard(Sync(3));
  for (uint32_t w = 0; w < 3; ++w) shard.Register(w);
  ASSERT_TRUE(shard.Push(0, 1, 0, {2, 0}).ok());
  ASSERT_TRUE(shard.Push(1, 1, 0, {0, 4}).ok());
  shard.Advance(absl::Seconds(1));  // within the lease
  EXPECT_EQ(shard->Status().version, 0u);
  shard.Advance(absl::Seconds(2));  // 3 s: worker 2 is gone
  const ShardStatus status = shard->Status();
  EXPECT_EQ(status.version, 1u);
  EXPECT_EQ(status.live_workers, 0u);  // nobody heartbeat in the fake future
  EXPECT_EQ(status.leases_expired, 3u);
  // The mean divides by the two gradients that arrived.
  EXPECT_THAT(shard.Theta(), ElementsAre(-1, -2));
}

TEST(Membership, AGradientDeliveredBeforeTheLeaseExpiredStillCounts) {
  Shard shard(Sync(2));
  shard.Register(0);
  shard.Register(1);
  ASSERT_TRUE(shard.Push(1, 1, 0, {4, 4}).ok());
  // Both leases lapse (nobody heartbeats in the fake future): no live worker
  // is missing any more, so the round closes with the gradient it holds.
  shard.Advance(absl::Seconds(3));
  EXPECT_EQ(shard->Status().version, 1u);
  EXPECT_THAT(shard.Theta(), ElementsAre(-4, -4));
}

TEST(Membership, AnExpiredWorkerIsToldToReRegisterAndCanRejoin) {
  Shard shard(Sync(1));
  shard.Register(0);
  shard.Advance(absl::Seconds(3));
  auto refused = shard.Push(0, 1, 0, {1, 1});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::optional<common::ErrorInfo> info =
      common::GetErrorInfo(refused.status());
  ASSERT_TRUE(info.has_value()) << refused.status();
  EXPECT_EQ(info->reason, common::kRegistrationRequired);
  EXPECT_EQ(info->domain, "ps.v1");
  EXPECT_EQ(info->metadata.at("shard"), "0");
  EXPECT_TRUE(common::HasErrorReason(shard->Heartbeat(0, kIncarnation).status(),
                                     common::kRegistrationRequired));
  auto again = shard->Register(0, kIncarnation);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->rejoined);
  ASSERT_TRUE(shard.Push(0, 1, 0, {1, 1}).ok());
  EXPECT_THAT(shard.Theta(), ElementsAre(-1, -1));
}

TEST(Membership, ARestartedWorkerReplacesItsOldIncarnationAndResumes) {
  Shard shard(Sync(1));
  shard.Register(0, 100);
  ASSERT_TRUE(shard.Push(0, 1, 0, {1, 1}, 100).ok());
  ASSERT_TRUE(shard.Push(0, 2, 1, {1, 1}, 100).ok());
  auto restarted = shard->Register(0, 200);
  ASSERT_TRUE(restarted.ok());
  EXPECT_TRUE(restarted->rejoined);
  EXPECT_EQ(restarted->resume_step, 2u);
  // The old process is refused; the new one numbers its pushes afresh.
  EXPECT_EQ(shard.Push(0, 3, 2, {1, 1}, 100).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(shard->Register(0, 100).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto fresh = shard.Push(0, 1, 2, {1, 1}, 200);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->outcome, PushOutcome::kApplied);
  EXPECT_EQ(shard->Status().workers[0].registrations, 2u);
}

TEST(Membership, AProcessThatDiedBeforeItsFirstPushKeepsTheResumeStep) {
  Shard shard(Sync(1));
  shard.Register(0, 100);
  ASSERT_TRUE(shard.Push(0, 1, 0, {1, 1}, 100).ok());
  ASSERT_TRUE(shard.Push(0, 2, 1, {1, 1}, 100).ok());
  ASSERT_EQ(shard->Register(0, 200)->resume_step, 2u);
  // Incarnation 200 dies before pushing; 300 still resumes at step 2.
  auto third = shard->Register(0, 300);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->resume_step, 2u);
}

TEST(Membership, SyncResumesAtTheWorkersOwnStepNotTheRound) {
  // Worker 3 joins a running job at round 5 and takes its own steps 0 and 1
  // in rounds 5 and 6: a restart resumes its data at step 2, not 7.
  ShardOptions options = Sync(1);
  Shard shard(options);
  shard.Register(0);
  for (uint64_t round = 0; round < 5; ++round) {
    ASSERT_TRUE(shard.Push(0, round + 1, round, {0, 0}).ok());
  }
  shard.Register(3);
  for (uint64_t step = 0; step < 2; ++step) {
    const uint64_t round = 5 + step;
    auto applied = shard.PushFrom(3, step + 1, step, round, {0, 0});
    ASSERT_TRUE(applied.ok()) << applied.status();
    EXPECT_EQ(applied->outcome, PushOutcome::kAccepted);
    ASSERT_TRUE(shard.Push(0, round + 1, round, {0, 0}).ok());
    EXPECT_EQ(shard->Status().version, round + 1);
  }
  auto restarted = shard->Register(3, kIncarnation + 1);
  ASSERT_TRUE(restarted.ok());
  EXPECT_EQ(restarted->resume_step, 2u);
}

TEST(Membership, NoRoundClosesBeforeTheExpectedWorkersRegistered) {
  Shard shard(Sync(2));
  shard.Register(0);
  ASSERT_TRUE(shard.Push(0, 1, 0, {1, 1}).ok());
  EXPECT_EQ(shard->Status().version, 0u);
  shard.Register(1);
  EXPECT_EQ(shard->Status().version, 0u);
  ASSERT_TRUE(shard.Push(1, 1, 0, {3, 3}).ok());
  EXPECT_EQ(shard->Status().version, 1u);
  EXPECT_THAT(shard.Theta(), ElementsAre(-2, -2));
}

TEST(Membership, AWorkerThatLeftStopsCountingAtOnce) {
  Shard shard(Sync(2));
  shard.Register(0);
  shard.Register(1);
  ASSERT_TRUE(shard.Push(0, 1, 0, {1, 1}).ok());
  ASSERT_TRUE(shard->Leave(1, kIncarnation).ok());
  EXPECT_EQ(shard->Status().version, 1u);
  EXPECT_EQ(shard->Status().rounds_closed_all_live, 1u);
}

TEST(Membership, ANewRankJoinsARunningJobAndRoundsWaitForIt) {
  Shard shard(Sync(2));
  shard.Register(0);
  shard.Register(1);
  ASSERT_TRUE(shard.Push(0, 1, 0, {1, 1}).ok());
  ASSERT_TRUE(shard.Push(1, 1, 0, {1, 1}).ok());
  EXPECT_EQ(shard->Status().version, 1u);
  shard.Register(5);  // beyond --num_workers, within --max_workers
  ASSERT_TRUE(shard.Push(0, 2, 1, {3, 3}).ok());
  ASSERT_TRUE(shard.Push(1, 2, 1, {3, 3}).ok());
  EXPECT_EQ(shard->Status().version, 1u) << "the round waits for rank 5";
  ASSERT_TRUE(shard.Push(5, 1, 1, {6, 6}).ok());
  EXPECT_EQ(shard->Status().version, 2u);
  // −1 − (3 + 3 + 6) / 3
  EXPECT_THAT(shard.Theta(), ElementsAre(-5, -5));
  EXPECT_EQ(shard->Register(8, kIncarnation).status().code(),
            absl::StatusCode::kInvalidArgument);  // --max_workers=8
}

TEST(Stragglers, AQuorumClosesTheRoundAndLateGradientsAreStale) {
  ShardOptions options = Sync(3);
  options.sync_quorum = 2;
  Shard shard(options);
  for (uint32_t w = 0; w < 3; ++w) shard.Register(w);
  ASSERT_TRUE(shard.Push(2, 1, 0, {2, 2}).ok());
  auto second = shard.Push(0, 1, 0, {4, 4});
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->outcome, PushOutcome::kApplied);
  auto late = shard.Push(1, 1, 0, {100, 100});
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late->outcome, PushOutcome::kStale);
  EXPECT_THAT(shard.Theta(), ElementsAre(-3, -3));
  const ShardStatus status = shard->Status();
  EXPECT_EQ(status.pushes_stale, 1u);
  EXPECT_EQ(status.rounds_closed_by_quorum, 1u);
}

TEST(Stragglers, ARoundTimeoutWaitsForTheExpectedWorkersToRegister) {
  ShardOptions options = Sync(3);
  options.round_timeout = absl::Milliseconds(500);
  options.lease_timeout = absl::Seconds(60);
  Shard shard(options);
  shard.Register(0);
  shard.Register(1);
  ASSERT_TRUE(shard.Push(0, 1, 0, {1, 1}).ok());
  shard.Advance(absl::Seconds(1));
  EXPECT_EQ(shard->Status().version, 0u) << "worker 2 is still starting";
  // The timeout runs from when the last expected worker registered.
  shard.Register(2);
  shard.Advance(absl::Milliseconds(100));
  EXPECT_EQ(shard->Status().version, 0u);
  shard.Advance(absl::Milliseconds(400));
  EXPECT_EQ(shard->Status().version, 1u);
  EXPECT_EQ(shard->Status().rounds_closed_by_timeout, 1u);
}

TEST(Stragglers, ARoundTimeoutClosesWithWhatArrived) {
  ShardOptions options = Sync(3);
  options.round_timeout = absl::Milliseconds(500);
  options.lease_timeout = absl::Seconds(60);
  Shard shard(options);
  for (uint32_t w = 0; w < 3; ++w) shard.Register(w);
  shard.Advance(absl::Seconds(1));  // nothing arrived: stays open
  EXPECT_EQ(shard->Status().version, 0u);
  ASSERT_TRUE(shard.Push(1, 1, 0, {1, 1}).ok());
  shard.Advance(absl::Milliseconds(1));
  EXPECT_EQ(shard->Status().version, 1u);
  EXPECT_EQ(shard->Status().rounds_closed_by_timeout, 1u);
  EXPECT_THAT(shard.Theta(), ElementsAre(-1, -1));
}

ShardOptions Ssp(uint32_t workers, uint32_t staleness) {
  ShardOptions options;
  options.mode = ConsistencyMode::kSsp;
  options.num_workers = workers;
  options.staleness = staleness;
  options.lease_timeout = absl::Seconds(2);
  return options;
}

TEST(Ssp, TheFastestWorkerNeverReadsMoreThanStalenessClocksAhead) {
  constexpr uint32_t kStaleness = 2;
  Shard shard(Ssp(2, kStaleness));
  shard.Register(0);
  shard.Register(1);
  // Worker 0 races ahead while worker 1 stays at clock 0.
  uint64_t clock = 0;
  for (; clock < 10; ++clock) {
    PullArgs args;
    args.clock = clock;
    std::optional<absl::Status> late;
    auto answered =
        shard->Pull(args, absl::InfiniteFuture(), shard->NewPullTicket(),
                    [&](absl::StatusOr<PullResult> r) { late = r.status(); });
    if (!answered.has_value()) {
      // Parked: that must be exactly when the lead would exceed s.
      EXPECT_EQ(clock, kStaleness + 1);
      // Worker 1 takes a step: the lead shrinks to s and the pull wakes.
      ASSERT_TRUE(shard.Push(1, 1, 0, {0, 0}).ok());
      ASSERT_TRUE(late.has_value());
      EXPECT_TRUE(late->ok());
      break;
    }
    ASSERT_TRUE(shard.Push(0, clock + 1, clock, {0, 0}).ok());
  }
  EXPECT_EQ(clock, kStaleness + 1);
  EXPECT_LE(shard->Status().max_read_clock_gap, kStaleness);
}

TEST(Ssp, ARestartedWorkerHoldsNobodyBack) {
  constexpr uint32_t kStaleness = 2;
  Shard shard(Ssp(2, kStaleness));
  shard.Register(0);
  shard.Register(1);
  for (uint64_t step = 0; step < 5; ++step) {
    ASSERT_TRUE(shard.Push(0, step + 1, step, {0, 0}).ok());
    ASSERT_TRUE(shard.Push(1, step + 1, step, {0, 0}).ok());
  }
  // Worker 1 restarts: it resumes at its clock and its first pull, before
  // any push of the new process, is answered at once, as are worker 0's
  // pulls up to the bound.
  auto restarted = shard->Register(1, kIncarnation + 1);
  ASSERT_TRUE(restarted.ok());
  ASSERT_EQ(restarted->resume_step, 5u);
  const std::vector<std::pair<uint32_t, uint64_t>> pulls = {
      {1, 5}, {0, 5 + kStaleness}};
  for (const auto& [worker, clock] : pulls) {
    PullArgs args;
    args.worker_id = worker;
    args.clock = clock;
    auto answered = shard->Pull(args, absl::InfiniteFuture(),
                                shard->NewPullTicket(), nullptr);
    ASSERT_TRUE(answered.has_value()) << "worker " << worker << " would wait";
    EXPECT_TRUE(answered->ok());
  }
}

TEST(Ssp, ADeadWorkerDoesNotHoldTheOthersBack) {
  Shard shard(Ssp(2, 0));
  shard.Register(0);
  shard.Register(1);
  ASSERT_TRUE(shard.Push(0, 1, 0, {0, 0}).ok());
  PullArgs args;
  args.clock = 1;
  std::optional<absl::Status> answer;
  ASSERT_FALSE(
      shard
          ->Pull(args, absl::InfiniteFuture(), shard->NewPullTicket(),
                 [&](absl::StatusOr<PullResult> r) { answer = r.status(); })
          .has_value());
  // Both leases lapse in the fake future; with no live worker left, nothing
  // bounds the reader any more.
  shard.Advance(absl::Seconds(3));
  ASSERT_TRUE(answer.has_value());
  EXPECT_TRUE(answer->ok());
}

// Runs three sync rounds of three workers with the given delivery plan and
// returns θ's bytes.
std::string ThreeRounds(bool faulty) {
  Shard shard(Sync(3));
  for (uint32_t w = 0; w < 3; ++w) shard.Register(w);
  auto gradient = [](uint32_t worker, uint64_t round) {
    return std::vector<float>{0.1f * (worker + 1) + 0.37f * round,
                              -0.3f * worker + 0.011f * round};
  };
  for (uint64_t round = 0; round < 3; ++round) {
    std::vector<uint32_t> order = {0, 1, 2};
    if (faulty) order = {2, 0, 1};  // reordered
    for (uint32_t w : order) {
      const uint64_t seq = round + 1;
      EXPECT_TRUE(shard.Push(w, seq, round, gradient(w, round)).ok());
      if (faulty) {
        // Delivered twice, and an older retry arrives late.
        auto again = shard.Push(w, seq, round, gradient(w, round));
        EXPECT_TRUE(again.ok());
        EXPECT_NE(again->outcome, PushOutcome::kApplied);
        if (round > 0) {
          auto old = shard.Push(w, seq - 1, round - 1, gradient(w, round - 1));
          EXPECT_TRUE(old.ok());
          EXPECT_EQ(old->outcome, PushOutcome::kDuplicate);
        }
      }
    }
  }
  std::vector<float> theta = shard.Theta();
  return std::string(reinterpret_cast<const char*>(theta.data()),
                     theta.size() * sizeof(float));
}

TEST(ExactlyOnce, DuplicatedAndReorderedDeliveriesGiveTheSameTheta) {
  EXPECT_EQ(ThreeRounds(false), ThreeRounds(true));
}

TEST(ExactlyOnce, SeqZeroAndNumbersThatCouldBlockAnIncarnationAreRefused) {
  Shard shard(Ssp(1, 1));
  shard.Register(0);
  auto zero = shard.Push(0, 0, 0, {5, 5});
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(zero.status().message(), HasSubstr("from 1"));
  // A seq near 2^64 would make every later push a duplicate; a step near it
  // would wrap the clock (step + 1).
  auto far = shard.Push(0, UINT64_MAX, 0, {5, 5});
  EXPECT_EQ(far.status().code(), absl::StatusCode::kInvalidArgument);
  auto wrapping = shard.Push(0, 1, UINT64_MAX, {5, 5});
  EXPECT_EQ(wrapping.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(shard.Theta(), ElementsAre(0, 0));
  PullArgs pull;
  pull.clock = UINT64_MAX;
  auto huge_clock = shard->Pull(pull, absl::InfiniteFuture(),
                                shard->NewPullTicket(), nullptr);
  ASSERT_TRUE(huge_clock.has_value());
  EXPECT_EQ(huge_clock->status().code(), absl::StatusCode::kInvalidArgument);
  // The incarnation goes on numbering from 1.
  auto first = shard.Push(0, 1, 0, {1, 1});
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->outcome, PushOutcome::kApplied);
  EXPECT_EQ(shard->Status().workers[0].clock, 1u);
}

TEST(Visibility, StatusReportsWorkersWithStateClockAndStaleness) {
  Shard shard(Ssp(2, 5));
  shard.Register(0);
  shard.Register(1);
  ASSERT_TRUE(shard.Push(0, 1, 0, {0, 0}).ok());
  ASSERT_TRUE(shard.Push(0, 2, 1, {0, 0}).ok());
  ASSERT_TRUE(shard->Leave(1, kIncarnation).ok());
  const ShardStatus status = shard->Status();
  ASSERT_EQ(status.workers.size(), 2u);
  EXPECT_EQ(status.workers[0].clock, 2u);
  EXPECT_EQ(status.workers[0].state, WorkerState::kLive);
  EXPECT_EQ(status.workers[1].state, WorkerState::kLeft);
  EXPECT_EQ(status.live_workers, 1u);
  EXPECT_LT(status.SinceHeartbeat(status.workers[0]), absl::Seconds(5));
}

}  // namespace
}  // namespace ps::server
