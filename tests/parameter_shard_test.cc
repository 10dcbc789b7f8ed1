// The server core without a network: validation, sync rounds, async
// application, exactly-once retries, parked pulls.
#include "server/parameter_shard.h"

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "common/float_bytes.h"
#include "common/theta_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Bytes(const std::vector<float>& values) {
  std::string out;
  common::FloatsToBytes(values, &out);
  return out;
}

// A 4-key model: weights w[3] and bias b[1] (exempt from regularization).
std::vector<common::TensorSpec> Model() {
  return {{"w", {3}, false}, {"b", {1}, true}};
}

ShardOptions Options(ConsistencyMode mode, uint32_t workers) {
  ShardOptions options;
  options.mode = mode;
  options.num_workers = workers;
  options.max_workers = workers;
  options.update.learning_rate = 1.0f;
  return options;
}

constexpr uint64_t kIncarnation = 7;

void RegisterAll(ParameterShard& shard, uint32_t workers) {
  for (uint32_t id = 0; id < workers; ++id) {
    ASSERT_TRUE(shard.Register(id, kIncarnation).ok());
  }
}

void InitShard(ParameterShard& shard, std::vector<float> values) {
  InitArgs args;
  args.tensors = Model();
  args.shard_index = 0;
  args.num_shards = 1;
  const std::string bytes = Bytes(values);
  args.values = bytes;
  ASSERT_TRUE(shard.Init(args).ok());
}

std::vector<float> Theta(ParameterShard& shard) {
  auto pulled =
      shard.Pull({}, absl::InfiniteFuture(), shard.NewPullTicket(), nullptr);
  EXPECT_TRUE(pulled.has_value());
  auto& result = *pulled;
  EXPECT_TRUE(result.ok()) << result.status();
  std::vector<float> theta(result->keys.size());
  EXPECT_TRUE(
      common::BytesToFloats(result->values, absl::MakeSpan(theta), "θ").ok());
  return theta;
}

struct Pusher {
  std::string bytes;
  PushArgs args;
  Pusher(uint32_t worker, uint64_t seq, uint64_t step,
         const std::vector<float>& gradient, uint32_t batch = 1)
      : bytes(Bytes(gradient)) {
    args.worker_id = worker;
    args.incarnation = kIncarnation;
    args.seq = seq;
    args.step = step;
    // These tests take one step per round: a sync push names its round by
    // the version it was computed from.
    args.base_version = step;
    args.batch_size = batch;
    args.keys = {0, gradient.size()};
    args.gradient = bytes;
  }
};

absl::StatusOr<PushResult> Push(ParameterShard& shard, uint32_t worker,
                                uint64_t seq, uint64_t step,
                                const std::vector<float>& gradient,
                                uint32_t batch = 1) {
  Pusher p(worker, seq, step, gradient, batch);
  return shard.Push(p.args);
}

// A pull that must be answered at once: a parked one fails the test.
absl::StatusOr<PullResult> PullAtOnce(ParameterShard& shard,
                                      const PullArgs& args) {
  std::optional<absl::StatusOr<PullResult>> answer =
      shard.Pull(args, absl::InfiniteFuture(), shard.NewPullTicket(),
                 [](absl::StatusOr<PullResult>) { FAIL() << "parked"; });
  if (!answer.has_value()) return absl::InternalError("the pull parked");
  return *answer;
}

TEST(ParameterShard, InitIsIdempotentAndTheFirstValuesWin) {
  ParameterShard shard(Options(ConsistencyMode::kAsync, 1));
  InitShard(shard, {1, 2, 3, 4});
  InitArgs again;
  again.tensors = Model();
  again.num_shards = 1;
  const std::string other = Bytes({9, 9, 9, 9});
  again.values = other;
  absl::StatusOr<InitResult> result = shard.Init(again);
  ASSERT_TRUE(result.ok());
  EXPECT_FALSE(result->created);
  EXPECT_THAT(Theta(shard), ElementsAre(1, 2, 3, 4));
}

TEST(ParameterShard, InitWithADifferentModelIsRefusedWithTheDifference) {
  ParameterShard shard(Options(ConsistencyMode::kAsync, 1));
  InitShard(shard, {1, 2, 3, 4});
  InitArgs other;
  other.tensors = {{"w", {2}, false}, {"b", {1}, true}};
  other.num_shards = 1;
  absl::StatusOr<InitResult> result = shard.Init(other);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(result.status().message(), HasSubstr("w[3]"));
  EXPECT_THAT(result.status().message(), HasSubstr("w[2]"));
}

TEST(ParameterShard, InitRejectsShardMismatchWrongLengthAndNonFinite) {
  ParameterShard shard(Options(ConsistencyMode::kAsync, 1));
  InitArgs args;
  args.tensors = Model();
  args.num_shards = 2;
  EXPECT_EQ(shard.Init(args).status().code(),
            absl::StatusCode::kFailedPrecondition);
  args.num_shards = 1;
  const std::string short_values = Bytes({1, 2});
  args.values = short_values;
  EXPECT_THAT(shard.Init(args).status().message(), HasSubstr("carries 2"));
  const std::string nan_values = Bytes({1, NAN, 3, 4});
  args.values = nan_values;
  EXPECT_EQ(shard.Init(args).status().code(),
            absl::StatusCode::kInvalidArgument);
  args.worker_id = 5;
  EXPECT_THAT(shard.Init(args).status().message(), HasSubstr("worker_id 5"));
  EXPECT_FALSE(shard.Status().initialized);
}

// A 30-byte request that declares a huge shape and carries no values must
// be refused before anything the size of the shape is allocated: with the
// cap raised to 2^40 keys, allocating first would ask for 4 TiB and throw.
TEST(ParameterShard, InitChecksTheValuesBeforeAllocatingTheDeclaredShape) {
  ShardOptions options = Options(ConsistencyMode::kSync, 1);
  options.max_keys_per_shard = common::kMaxKeys;
  ParameterShard shard(options);
  InitArgs args;
  args.tensors = {{"w", {int64_t{1} << 40}, false}};
  args.num_shards = 1;
  const absl::StatusOr<InitResult> result = shard.Init(args);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("carries 0"));
  EXPECT_FALSE(shard.Status().initialized);
}

TEST(ParameterShard, InitRefusesAShardLargerThanMaxKeysPerShard) {
  ShardOptions options = Options(ConsistencyMode::kAsync, 1);
  options.max_keys_per_shard = 3;
  ParameterShard shard(options);
  InitArgs args;
  args.tensors = Model();  // 4 keys
  args.num_shards = 1;
  const std::string values = Bytes({1, 2, 3, 4});
  args.values = values;
  const absl::StatusOr<InitResult> result = shard.Init(args);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("4 keys"));
  EXPECT_THAT(result.status().message(), HasSubstr("--max_keys_per_shard=3"));
  EXPECT_FALSE(shard.Status().initialized);
}

TEST(ParameterShard, ShardsSplitTheKeySpaceAndSeeOnlyTheirSlice) {
  ShardOptions options = Options(ConsistencyMode::kAsync, 1);
  options.shard_index = 1;
  options.num_shards = 2;
  ParameterShard shard(options);
  InitArgs args;
  args.tensors = Model();
  args.shard_index = 1;
  args.num_shards = 2;
  const std::string values = Bytes({30, 40});
  args.values = values;
  absl::StatusOr<InitResult> result = shard.Init(args);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->keys, (common::KeyRange{2, 4}));
  EXPECT_THAT(Theta(shard), ElementsAre(30, 40));
}

TEST(ParameterShard, RejectedPushesNameTheFaultAndLeaveThetaUntouched) {
  ParameterShard shard(Options(ConsistencyMode::kAsync, 2));
  RegisterAll(shard, 2);
  EXPECT_EQ(Push(shard, 0, 1, 0, {1, 1, 1, 1}).status().code(),
            absl::StatusCode::kFailedPrecondition);  // before Init
  InitShard(shard, {1, 2, 3, 4});

  auto unknown = Push(shard, 2, 1, 0, {1, 1, 1, 1});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("unknown worker_id 2"));

  auto wrong_length = Push(shard, 0, 1, 0, {1, 1, 1});
  EXPECT_EQ(wrong_length.status().code(), absl::StatusCode::kInvalidArgument);

  Pusher odd_bytes(0, 1, 0, {1, 1, 1, 1});
  odd_bytes.bytes.pop_back();
  odd_bytes.args.gradient = odd_bytes.bytes;
  EXPECT_THAT(shard.Push(odd_bytes.args).status().message(),
              HasSubstr("not a whole number"));

  auto nan = Push(shard, 0, 1, 0, {1, NAN, 1, 1});
  EXPECT_EQ(nan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(nan.status().message(), HasSubstr("key 1"));
  auto inf = Push(shard, 0, 1, 0, {1, 1, 1, INFINITY});
  EXPECT_THAT(inf.status().message(), HasSubstr("finite"));

  auto zero_batch = Push(shard, 0, 1, 0, {1, 1, 1, 1}, 0);
  EXPECT_THAT(zero_batch.status().message(), HasSubstr("batch_size is 0"));

  Pusher wrong_keys(0, 1, 0, {1, 1, 1, 1});
  wrong_keys.args.keys = {1, 5};
  EXPECT_THAT(shard.Push(wrong_keys.args).status().message(),
              HasSubstr("owns [0, 4)"));

  EXPECT_THAT(Theta(shard), ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(shard.Status().version, 0u);
  EXPECT_EQ(shard.Status().pushes_rejected, 8u);
  // A valid push still works after all that: nothing was left half-done.
  ASSERT_TRUE(Push(shard, 0, 1, 0, {1, 1, 1, 1}).ok());
  EXPECT_THAT(Theta(shard), ElementsAre(0, 1, 2, 3));
}

// Async pushes are checked in place and applied from the request a piece
// at a time: a model longer than a piece, with two tensors, must come out
// exactly as the whole-vector rule gives, and a bad value far in must be
// found before any of θ changes.
TEST(ParameterShard, AsyncLargePushIsAppliedWhollyOrNotAtAll) {
  ShardOptions options = Options(ConsistencyMode::kAsync, 1);
  options.update.learning_rate = 0.5f;
  options.update.l2 = 0.25f;
  ParameterShard shard(options);
  RegisterAll(shard, 1);
  const int64_t weights = 10001, biases = 7;  // over two 4096-float pieces
  InitArgs init;
  init.tensors = {{"w", {weights}, false}, {"b", {biases}, true}};
  init.num_shards = 1;
  std::vector<float> theta(weights + biases), gradient(weights + biases);
  for (size_t i = 0; i < theta.size(); ++i) {
    theta[i] = 0.001f * static_cast<float>(i % 997) - 0.3f;
    gradient[i] = 0.002f * static_cast<float>(i % 389) - 0.2f;
  }
  const std::string initial = Bytes(theta);
  init.values = initial;
  ASSERT_TRUE(shard.Init(init).ok());

  // As a request's slices deliver it: pieces that cut floats in two.
  auto in_pieces = [](const std::string& bytes) {
    absl::Cord cord;
    size_t at = 0;
    for (size_t size : {4003, 5001, 6007, 100'000}) {
      const size_t n = std::min(size, bytes.size() - at);
      cord.Append(absl::MakeCordFromExternal(
          absl::string_view(bytes.data() + at, n), [] {}));
      at += n;
    }
    return cord;
  };
  std::vector<float> bad = gradient;
  bad[9000] = NAN;
  Pusher rejected(0, 1, 0, bad);
  rejected.args.gradient = in_pieces(rejected.bytes);
  EXPECT_THAT(shard.Push(rejected.args).status().message(),
              HasSubstr("key 9000"));
  EXPECT_EQ(Theta(shard), theta);

  Pusher accepted(0, 2, 0, gradient);
  accepted.args.gradient = in_pieces(accepted.bytes);
  ASSERT_GT(std::distance(accepted.args.gradient.chunk_begin(),
                          accepted.args.gradient.chunk_end()),
            3);
  ASSERT_TRUE(shard.Push(accepted.args).ok());
  std::vector<float> expected = theta;
  common::ApplyUpdate(options.update, true,
                      absl::MakeConstSpan(gradient).first(weights),
                      absl::MakeSpan(expected).first(weights));
  common::ApplyUpdate(options.update, false,
                      absl::MakeConstSpan(gradient).subspan(weights),
                      absl::MakeSpan(expected).subspan(weights));
  EXPECT_EQ(Theta(shard), expected);
}

TEST(ParameterShard, AsyncAppliesEachPushAtOnce) {
  ParameterShard shard(Options(ConsistencyMode::kAsync, 2));
  RegisterAll(shard, 2);
  InitShard(shard, {1, 2, 3, 4});
  auto first = Push(shard, 1, 1, 0, {1, 0, 0, 0});
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->outcome, PushOutcome::kApplied);
  EXPECT_EQ(first->version, 1u);
  EXPECT_THAT(Theta(shard), ElementsAre(0, 2, 3, 4));
  ASSERT_TRUE(Push(shard, 0, 1, 0, {0, 1, 0, 0}).ok());
  EXPECT_THAT(Theta(shard), ElementsAre(0, 1, 3, 4));
  EXPECT_EQ(shard.Status().samples_applied, 2u);
}

// Finite gradients can still carry θ past the float range: such an update
// is refused whole, so θ (and every checkpoint of it) stays finite.
TEST(ParameterShard, AsyncRefusesAnUpdateThatWouldMakeThetaInfinite) {
  ParameterShard shard(Options(ConsistencyMode::kAsync, 1));  // α = 1
  RegisterAll(shard, 1);
  InitShard(shard, {0, 0, 0, 0});
  ASSERT_TRUE(Push(shard, 0, 1, 0, {0, -3e38f, 0, 0}).ok());
  const std::vector<float> before = Theta(shard);
  ASSERT_EQ(before[1], 3e38f);
  const absl::StatusOr<PushResult> overflow =
      Push(shard, 0, 2, 1, {1, -3e38f, 0, 0});
  EXPECT_EQ(overflow.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(overflow.status().message(), HasSubstr("key 1"));
  EXPECT_THAT(overflow.status().message(), HasSubstr("not finite"));
  EXPECT_EQ(Theta(shard), before);  // key 0 untouched too: all or nothing
  const ShardStatus status = shard.Status();
  EXPECT_EQ(status.version, 1u);
  EXPECT_EQ(status.pushes_rejected, 1u);
  // The refused seq was not taken: the worker may push again with it.
  EXPECT_EQ(Push(shard, 0, 2, 1, {1, 0, 0, 0})->outcome, PushOutcome::kApplied);
}

TEST(ParameterShard, SyncDropsARoundWhoseUpdateWouldMakeThetaInfinite) {
  ParameterShard shard(Options(ConsistencyMode::kSync, 2));  // α = 1
  RegisterAll(shard, 2);
  InitShard(shard, {0, 0, 0, 0});
  ASSERT_TRUE(Push(shard, 0, 1, 0, {0, -1.5e38f, 0, 0}).ok());
  ASSERT_TRUE(Push(shard, 1, 1, 0, {0, -1.5e38f, 0, 0}).ok());
  const std::vector<float> before = Theta(shard);
  ASSERT_EQ(before[1], 1.5e38f);
  ASSERT_TRUE(Push(shard, 0, 2, 1, {1, -2e38f, 0, 0}).ok());
  const absl::StatusOr<PushResult> closing =
      Push(shard, 1, 2, 1, {1, -2e38f, 0, 0});
  ASSERT_TRUE(closing.ok()) << closing.status();
  // The round is over (no worker waits for it) but changed nothing.
  EXPECT_EQ(closing->version, 2u);
  EXPECT_EQ(Theta(shard), before);
  const ShardStatus status = shard.Status();
  EXPECT_EQ(status.pushes_rejected, 2u);
  EXPECT_EQ(status.pushes_applied, 2u);
  EXPECT_EQ(status.samples_applied, 2u);
}

// Most updates are cleared by a bound on |θ| instead of a second pass over
// θ: creeping up on the float range, the push that would cross it is still
// the one refused.
TEST(ParameterShard, AsyncThetaCreepingTowardTheFloatRangeStaysFinite) {
  ParameterShard shard(Options(ConsistencyMode::kAsync, 1));  // α = 1
  RegisterAll(shard, 1);
  InitShard(shard, {0, 0, 0, 0});
  uint64_t seq = 1;
  for (; seq <= 6; ++seq) {
    ASSERT_TRUE(Push(shard, 0, seq, seq, {0, -5e37f, 0, 0}).ok()) << seq;
  }
  const float before = Theta(shard)[1];
  EXPECT_GT(before, 2.9e38f);
  EXPECT_EQ(Push(shard, 0, seq, seq, {0, -5e37f, 0, 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Theta(shard)[1], before);
}

// Batch-weighted sums of finite gradients can overflow to +inf and -inf,
// and their sum to NaN: no such mean reaches θ.
TEST(ParameterShard, SyncNeverAppliesAMeanThatOverflowedToNan) {
  ParameterShard shard(Options(ConsistencyMode::kSync, 2));
  RegisterAll(shard, 2);
  InitShard(shard, {0, 0, 0, 0});
  ASSERT_TRUE(Push(shard, 0, 1, 0, {3e38f, 0, 0, 0}, 64).ok());
  ASSERT_TRUE(Push(shard, 1, 1, 0, {-3e38f, 0, 0, 0}, 64).ok());
  EXPECT_EQ(shard.Status().version, 1u);
  for (float v : Theta(shard)) EXPECT_TRUE(std::isfinite(v)) << v;
}

TEST(ParameterShard, ARetriedPushIsAcknowledgedButAppliedOnce) {
  ParameterShard shard(Options(ConsistencyMode::kAsync, 1));
  RegisterAll(shard, 1);
  InitShard(shard, {1, 2, 3, 4});
  ASSERT_TRUE(Push(shard, 0, 5, 0, {1, 1, 1, 1}).ok());
  auto retry = Push(shard, 0, 5, 0, {1, 1, 1, 1});
  ASSERT_TRUE(retry.ok());
  EXPECT_EQ(retry->outcome, PushOutcome::kDuplicate);
  auto older = Push(shard, 0, 4, 0, {1, 1, 1, 1});
  EXPECT_EQ(older->outcome, PushOutcome::kDuplicate);
  EXPECT_THAT(Theta(shard), ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(shard.Status().pushes_duplicate, 2u);
}

TEST(ParameterShard, SyncRoundWaitsForEveryWorkerThenAppliesTheWeightedMean) {
  ParameterShard shard(Options(ConsistencyMode::kSync, 2));
  RegisterAll(shard, 2);
  InitShard(shard, {0, 0, 0, 0});
  auto first = Push(shard, 1, 1, 0, {4, 4, 4, 4}, 3);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->outcome, PushOutcome::kAccepted);
  EXPECT_THAT(Theta(shard), ElementsAre(0, 0, 0, 0));
  EXPECT_EQ(shard.Status().round_gradients, 1u);
  auto second = Push(shard, 0, 1, 0, {0, 8, 0, 8}, 1);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->outcome, PushOutcome::kApplied);
  EXPECT_EQ(second->version, 1u);
  // Mean weighted by batch size: (3·4 + 1·g₀) / 4, negated by the α=1 step.
  EXPECT_THAT(Theta(shard), ElementsAre(-3, -5, -3, -5));
  EXPECT_EQ(shard.Status().samples_applied, 4u);
}

// Sync, 3 workers, rounds closing on the first 2 gradients, never by the
// timeout.
ShardOptions QuorumOfTwoInThree() {
  ShardOptions options = Options(ConsistencyMode::kSync, 3);
  options.sync_quorum = 2;
  options.round_timeout = absl::Hours(1);
  return options;
}

// --sync_quorum=2 of 3: one worker finished and left, one waits idle for a
// data partition. The straggler still training closes each round alone,
// at once (not by the timeout), and the step is half its gradient: the
// learning rate is meant for a round of two batches, and the missing one
// counts as zero. When the idle worker trains again, rounds wait for the
// quorum, and a full round takes the whole mean.
TEST(ParameterShard, SyncQuorumIsCappedByTheWorkersStillTraining) {
  const ShardOptions options = QuorumOfTwoInThree();
  ParameterShard shard(options);
  RegisterAll(shard, 3);
  InitShard(shard, {0, 0, 0, 0});
  ASSERT_TRUE(shard.Leave(0, kIncarnation, LeaveReason::kFinished).ok());
  ASSERT_TRUE(shard.Leave(1, kIncarnation, LeaveReason::kIdle).ok());
  ShardStatus status = shard.Status();
  EXPECT_EQ(status.live_workers, 2u) << "an idle worker stays live";
  ASSERT_EQ(status.workers.size(), 3u);
  EXPECT_TRUE(status.workers[1].idle);

  auto alone = Push(shard, 2, 1, 0, {2, -4, 8, 1}, 32);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ(alone->outcome, PushOutcome::kApplied);
  EXPECT_THAT(Theta(shard), ElementsAre(-1, 2, -4, -0.5));
  EXPECT_EQ(shard.Status().samples_applied, 32u)
      << "the examples trained, not the quorum's";
  EXPECT_EQ(shard.Status().rounds_closed_all_live, 1u);

  // Worker 1 got a partition: its push counts, and from then on a round
  // waits for two gradients again.
  auto back = Push(shard, 1, 1, 1, {1, 1, 1, 1}, 16);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->outcome, PushOutcome::kAccepted);
  EXPECT_FALSE(shard.Status().workers[1].idle);
  auto quorum = Push(shard, 2, 2, 1, {4, 4, 4, 4}, 48);
  ASSERT_TRUE(quorum.ok());
  EXPECT_EQ(quorum->outcome, PushOutcome::kApplied);
  // (16·1 + 48·4) / 64 = 3.25 per key.
  EXPECT_THAT(Theta(shard), ElementsAre(-4.25, -1.25, -7.25, -3.75));
  EXPECT_EQ(shard.Status().rounds_closed_by_quorum, 1u);
}

// The cross-shard deadlock the straggler_backup_workers preset's baseline
// hit (1 run in 11, 2026-12-05): --sync_quorum=2 of 3 on two shards, worker
// 0 idle. With a quorum each shard closes its rounds with whichever
// gradients come first, so a worker's step can make its round on one shard
// and miss it on the other. Here worker 1's step waits on shard 0's round 1,
// which waits for worker 2; worker 2's step, whose push to shard 0 came
// after its round closed there, waits on shard 1's round 1, which waits for
// worker 1. A round does not wait for a worker whose push came late: shard
// 0 closes round 1 on worker 1's gradient, and both steps go on.
TEST(ParameterShard, ASyncQuorumRoundDoesNotWaitForAWorkerThatCameLate) {
  const ShardOptions options = QuorumOfTwoInThree();
  ParameterShard s0(options);
  ParameterShard s1(options);
  for (ParameterShard* shard : {&s0, &s1}) {
    RegisterAll(*shard, 3);
    InitShard(*shard, {0, 0, 0, 0});
  }
  // Shard 0's round 0 closes on workers 0 and 1; on shard 1, worker 2 came
  // first.
  ASSERT_TRUE(Push(s0, 0, 1, 0, {1, 1, 1, 1}).ok());
  ASSERT_EQ(Push(s0, 1, 1, 0, {1, 1, 1, 1})->outcome, PushOutcome::kApplied);
  ASSERT_EQ(Push(s1, 2, 1, 0, {1, 1, 1, 1})->outcome, PushOutcome::kAccepted);
  for (ParameterShard* shard : {&s0, &s1}) {
    ASSERT_TRUE(shard->Leave(0, kIncarnation, LeaveReason::kIdle).ok());
  }
  // Worker 1's step: round 1 on shard 0 (waits for worker 2), round 0 on
  // shard 1 (closes it).
  ASSERT_EQ(Push(s0, 1, 2, 1, {2, 2, 2, 2})->outcome, PushOutcome::kAccepted);
  ASSERT_EQ(Push(s1, 1, 2, 0, {1, 1, 1, 1})->outcome, PushOutcome::kApplied);
  ASSERT_EQ(s0.Status().version, 1u);
  // Worker 2's step: its round 0 closed on shard 0; round 1 on shard 1
  // waits for worker 1, whose step waits on shard 0.
  ASSERT_EQ(Push(s1, 2, 2, 1, {4, 4, 4, 4})->outcome, PushOutcome::kAccepted);
  EXPECT_EQ(Push(s0, 2, 2, 0, {1, 1, 1, 1})->outcome, PushOutcome::kStale);
  EXPECT_EQ(s0.Status().version, 2u)
      << "shard 0's round 1 waits for the late worker 2";
  // Worker 1 alone, a half step (the quorum rule): θ = −1 − 2/2.
  EXPECT_THAT(Theta(s0), ElementsAre(-2, -2, -2, -2));
  // Worker 1's next step closes shard 1's round 1, and the mark went with
  // shard 0's round: its round 2 waits for worker 2 again.
  ASSERT_EQ(Push(s1, 1, 3, 1, {2, 2, 2, 2})->outcome, PushOutcome::kApplied);
  EXPECT_EQ(Push(s0, 1, 3, 2, {1, 1, 1, 1})->outcome, PushOutcome::kAccepted);
  EXPECT_EQ(Push(s0, 2, 3, 2, {1, 1, 1, 1})->outcome, PushOutcome::kApplied);
  EXPECT_EQ(s0.Status().version, 3u);
  EXPECT_EQ(s1.Status().version, 2u);
}

// Idle is not a leave: the worker must be live, and stays live.
TEST(ParameterShard, OnlyALiveWorkerGoesIdle) {
  ParameterShard shard(Options(ConsistencyMode::kSync, 2));
  const absl::Status unknown = shard.Leave(0, kIncarnation, LeaveReason::kIdle);
  EXPECT_EQ(unknown.code(), absl::StatusCode::kFailedPrecondition);
  RegisterAll(shard, 2);
  InitShard(shard, {0, 0, 0, 0});
  ASSERT_TRUE(shard.Leave(1, kIncarnation, LeaveReason::kIdle).ok());
  // Its heartbeats go on; a round closes on worker 0 alone.
  ASSERT_TRUE(shard.Heartbeat(1, kIncarnation).ok());
  auto pushed = Push(shard, 0, 1, 0, {1, 1, 1, 1});
  ASSERT_TRUE(pushed.ok());
  EXPECT_EQ(pushed->outcome, PushOutcome::kApplied);
}

// The shard's checkpoint as a file holds it: encoded and read back.
absl::StatusOr<common::ThetaFile> SnapshotThroughBytes(
    const ParameterShard& shard) {
  absl::StatusOr<common::ThetaFile> file = shard.Snapshot();
  if (!file.ok()) return file.status();
  return common::DecodeThetaFile(common::EncodeThetaFile(*file), "snapshot");
}

// A shard restored from a checkpoint taken while a worker waited idle for a
// data partition does not wait for it either: a round closes on the
// training worker alone.
TEST(ParameterShard, AnIdleWorkerStaysIdleThroughACheckpoint) {
  ParameterShard before(Options(ConsistencyMode::kSync, 2));
  RegisterAll(before, 2);
  InitShard(before, {0, 0, 0, 0});
  ASSERT_TRUE(before.Leave(1, kIncarnation, LeaveReason::kIdle).ok());
  absl::StatusOr<common::ThetaFile> read = SnapshotThroughBytes(before);
  ASSERT_TRUE(read.ok()) << read.status();

  ParameterShard restored(Options(ConsistencyMode::kSync, 2));
  ASSERT_TRUE(restored.Restore(*read).ok());
  const ShardStatus status = restored.Status();
  EXPECT_EQ(status.live_workers, 2u);
  ASSERT_EQ(status.workers.size(), 2u);
  EXPECT_FALSE(status.workers[0].idle);
  EXPECT_TRUE(status.workers[1].idle);
  auto alone = Push(restored, 0, 1, 0, {1, 1, 1, 1});
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ(alone->outcome, PushOutcome::kApplied);
  EXPECT_THAT(Theta(restored), ElementsAre(-1, -1, -1, -1));

  // Once it pushes it trains again: the next round waits for both.
  auto back = Push(restored, 1, 1, 1, {1, 1, 1, 1});
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->outcome, PushOutcome::kAccepted);
  EXPECT_FALSE(restored.Status().workers[1].idle);
}

// With a quorum, the cap by training workers holds after a restore: 2 of 3
// with one idle and one finished closes on the straggler alone.
TEST(ParameterShard, ARestoredQuorumIsCappedByTheWorkersStillTraining) {
  const ShardOptions options = QuorumOfTwoInThree();
  ParameterShard before(options);
  RegisterAll(before, 3);
  InitShard(before, {0, 0, 0, 0});
  ASSERT_TRUE(before.Leave(0, kIncarnation, LeaveReason::kFinished).ok());
  ASSERT_TRUE(before.Leave(1, kIncarnation, LeaveReason::kIdle).ok());
  absl::StatusOr<common::ThetaFile> read = SnapshotThroughBytes(before);
  ASSERT_TRUE(read.ok()) << read.status();

  ParameterShard restored(options);
  ASSERT_TRUE(restored.Restore(*read).ok());
  auto alone = Push(restored, 2, 1, 0, {2, -4, 8, 1}, 32);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ(alone->outcome, PushOutcome::kApplied);
  EXPECT_EQ(restored.Status().rounds_closed_all_live, 1u);
}

// A late mark is part of the open round's state: a shard restored from a
// checkpoint taken after worker 2's push came late (a backup that joins
// then) closes the round without waiting for it, as the shard it came from.
TEST(ParameterShard, ALateWorkerStaysLateThroughACheckpoint) {
  const ShardOptions options = QuorumOfTwoInThree();
  ParameterShard before(options);
  RegisterAll(before, 3);
  InitShard(before, {0, 0, 0, 0});
  ASSERT_EQ(Push(before, 0, 1, 0, {1, 1, 1, 1})->outcome,
            PushOutcome::kAccepted);
  ASSERT_EQ(Push(before, 1, 1, 0, {1, 1, 1, 1})->outcome,
            PushOutcome::kApplied);
  ASSERT_TRUE(before.Leave(1, kIncarnation, LeaveReason::kIdle).ok());
  ASSERT_EQ(Push(before, 2, 1, 0, {1, 1, 1, 1})->outcome, PushOutcome::kStale);
  absl::StatusOr<common::ThetaFile> read = SnapshotThroughBytes(before);
  ASSERT_TRUE(read.ok()) << read.status();

  ParameterShard restored(options);
  ASSERT_TRUE(restored.Restore(*read).ok());
  for (ParameterShard* shard : {&before, &restored}) {
    auto pushed = Push(*shard, 0, 2, 1, {2, 2, 2, 2});
    ASSERT_TRUE(pushed.ok()) << pushed.status();
    EXPECT_EQ(pushed->outcome, PushOutcome::kApplied)
        << "round 1 waits for the late worker 2";
  }
  EXPECT_EQ(Theta(restored), Theta(before));
}

TEST(ParameterShard, SyncDropsPushesForClosedRoundsAndRoundsNotReached) {
  ParameterShard shard(Options(ConsistencyMode::kSync, 1));
  RegisterAll(shard, 1);
  InitShard(shard, {0, 0, 0, 0});
  ASSERT_TRUE(Push(shard, 0, 1, 0, {1, 1, 1, 1}).ok());
  auto stale = Push(shard, 0, 2, 0, {1, 1, 1, 1});
  ASSERT_TRUE(stale.ok());
  EXPECT_EQ(stale->outcome, PushOutcome::kStale);
  // A round ahead of the shard: the worker pulled from a θ this shard no
  // longer has (it was restored from a checkpoint).
  auto future = Push(shard, 0, 3, 5, {1, 1, 1, 1});
  ASSERT_TRUE(future.ok());
  EXPECT_EQ(future->outcome, PushOutcome::kStale);
  EXPECT_THAT(Theta(shard), ElementsAre(-1, -1, -1, -1));
  EXPECT_EQ(shard.Status().pushes_stale, 2u);
}

TEST(ParameterShard, SyncAnswersAPullForARoundItHasNotReachedAtOnce) {
  ParameterShard shard(Options(ConsistencyMode::kSync, 1));
  RegisterAll(shard, 1);
  InitShard(shard, {0, 0, 0, 0});
  PullArgs args;
  args.min_version = 7;  // seen before a restore to version 0
  std::optional<absl::StatusOr<PullResult>> answer =
      shard.Pull(args, absl::InfiniteFuture(), shard.NewPullTicket(),
                 [](absl::StatusOr<PullResult>) { FAIL() << "must not park"; });
  ASSERT_TRUE(answer.has_value());
  ASSERT_TRUE(answer->ok()) << answer->status();
  EXPECT_EQ((*answer)->version, 0u);
  // However far ahead: a round it cannot reach soon never parks.
  args.min_version = UINT64_MAX;
  absl::StatusOr<PullResult> far = PullAtOnce(shard, args);
  ASSERT_TRUE(far.ok()) << far.status();
  EXPECT_EQ(far->version, 0u);
}

// Async and SSP pulls never wait for a version: one the shard has not
// reached is refused at once, naming the shard's version, instead of
// parking until the caller's deadline.
TEST(ParameterShard, AsyncAndSspRefuseAPullForAVersionNotReachedAtOnce) {
  for (ConsistencyMode mode :
       {ConsistencyMode::kAsync, ConsistencyMode::kSsp}) {
    SCOPED_TRACE(ConsistencyModeName(mode));
    ParameterShard shard(Options(mode, 1));
    RegisterAll(shard, 1);
    InitShard(shard, {0, 0, 0, 0});
    ASSERT_TRUE(Push(shard, 0, 1, 0, {1, 1, 1, 1}).ok());
    PullArgs args;
    args.min_version = UINT64_MAX;
    args.clock = 1;
    absl::StatusOr<PullResult> answer = PullAtOnce(shard, args);
    EXPECT_EQ(answer.status().code(), absl::StatusCode::kOutOfRange);
    EXPECT_THAT(answer.status().message(),
                HasSubstr("ahead of this shard's version 1"));
    // The version it holds is answered at once.
    args.min_version = 1;
    answer = PullAtOnce(shard, args);
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->version, 1u);
    EXPECT_EQ(shard.Status().version, 1u);
  }
}

// A live worker at clock 1 pulling at clock 5 with staleness 1 cannot wait
// for its own clock to reach 4 (it pushes nothing while it waits): the
// pull waits as one at clock 2 would, for the slowest worker only.
TEST(ParameterShard, SspPullPastItsOwnClockWaitsAtTheBoundOfThatClock) {
  ShardOptions options = Options(ConsistencyMode::kSsp, 2);
  options.staleness = 1;
  ParameterShard shard(options);
  RegisterAll(shard, 2);
  InitShard(shard, {0, 0, 0, 0});
  ASSERT_TRUE(Push(shard, 0, 1, 0, {1, 1, 1, 1}).ok());
  PullArgs args;
  args.worker_id = 0;
  args.clock = 5;
  std::optional<absl::StatusOr<PullResult>> parked;
  EXPECT_FALSE(shard
                   .Pull(args, absl::InfiniteFuture(), shard.NewPullTicket(),
                         [&](absl::StatusOr<PullResult> r) { parked = r; })
                   .has_value());
  EXPECT_FALSE(parked.has_value());
  ASSERT_TRUE(Push(shard, 1, 1, 0, {1, 1, 1, 1}).ok());
  ASSERT_TRUE(parked.has_value());
  ASSERT_TRUE(parked->ok()) << parked->status();
  EXPECT_EQ((*parked)->version, 2u);
}

// A shard restored from a checkpoint older than the workers' steps by more
// than the staleness bound: their pulls are answered (not OUT_OF_RANGE),
// their next pushes count once each and carry their clocks forward, and a
// retried push the checkpoint holds stays a duplicate.
TEST(ParameterShard, SspWorkersTrainOnThroughARestoreFromAnOlderCheckpoint) {
  ShardOptions options = Options(ConsistencyMode::kSsp, 2);
  options.staleness = 1;
  options.update.learning_rate = 0.5f;
  ParameterShard before(options);
  RegisterAll(before, 2);
  InitShard(before, {0, 0, 0, 0});
  uint64_t step = 0;
  for (; step < 2; ++step) {
    for (uint32_t worker : {0u, 1u}) {
      ASSERT_TRUE(Push(before, worker, step + 1, step, {1, 1, 1, 1}).ok());
    }
  }
  absl::StatusOr<common::ThetaFile> checkpoint = before.Snapshot();
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  for (; step < 6; ++step) {
    for (uint32_t worker : {0u, 1u}) {
      ASSERT_TRUE(Push(before, worker, step + 1, step, {1, 1, 1, 1}).ok());
    }
  }

  ParameterShard restored(options);
  ASSERT_TRUE(restored.Restore(*checkpoint).ok());
  ASSERT_EQ(restored.Status().version, 4u);
  for (uint32_t worker : {0u, 1u}) {
    PullArgs args;
    args.worker_id = worker;
    args.clock = step;  // 6 steps done; the shard counts 2
    absl::StatusOr<PullResult> pulled = PullAtOnce(restored, args);
    ASSERT_TRUE(pulled.ok()) << pulled.status();
    EXPECT_EQ(pulled->version, 4u);
  }
  // A retry of a push the checkpoint holds, then the next step's push.
  absl::StatusOr<PushResult> retried = Push(restored, 0, 2, 1, {1, 1, 1, 1});
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(retried->outcome, PushOutcome::kDuplicate);
  for (uint32_t worker : {0u, 1u}) {
    absl::StatusOr<PushResult> next =
        Push(restored, worker, step + 1, step, {1, 1, 1, 1});
    ASSERT_TRUE(next.ok()) << next.status();
    EXPECT_EQ(next->outcome, PushOutcome::kApplied);
  }
  const ShardStatus status = restored.Status();
  EXPECT_EQ(status.version, 6u);
  EXPECT_EQ(status.samples_applied, 6u);
  ASSERT_EQ(status.workers.size(), 2u);
  for (const common::WorkerRecord& worker : status.workers) {
    EXPECT_EQ(worker.clock, step + 1);
  }
  EXPECT_THAT(Theta(restored), ElementsAre(-3, -3, -3, -3));
}

TEST(ParameterShard, ParkedPullsAreBoundedPerWorkerAndInTotal) {
  ShardOptions options = Options(ConsistencyMode::kSync, 3);
  options.max_parked_pulls = 3;
  options.max_parked_pulls_per_worker = 2;
  ParameterShard shard(options);
  RegisterAll(shard, 3);
  InitShard(shard, {0, 0, 0, 0});
  int answered = 0;
  auto park = [&](uint32_t worker) {
    PullArgs args;
    args.worker_id = worker;
    args.min_version = 1;
    return shard.Pull(args, absl::InfiniteFuture(), shard.NewPullTicket(),
                      [&](absl::StatusOr<PullResult> r) {
                        EXPECT_TRUE(r.ok()) << r.status();
                        EXPECT_EQ(r->version, 1u);
                        ++answered;
                      });
  };
  ASSERT_FALSE(park(0).has_value());
  ASSERT_FALSE(park(0).has_value());
  std::optional<absl::StatusOr<PullResult>> third = park(0);
  ASSERT_TRUE(third.has_value()) << "a third pull of worker 0 parked";
  EXPECT_EQ(third->status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third->status().message(), HasSubstr("worker 0 already has 2"));
  ASSERT_FALSE(park(1).has_value());
  std::optional<absl::StatusOr<PullResult>> over = park(2);
  ASSERT_TRUE(over.has_value()) << "a fourth pull parked";
  EXPECT_EQ(over->status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over->status().message(), HasSubstr("--max_parked_pulls=3"));
  ShardStatus status = shard.Status();
  EXPECT_EQ(status.pulls_refused_over_worker, 1u);
  EXPECT_EQ(status.pulls_refused_over_total, 1u);
  EXPECT_EQ(status.version, 0u);
  // The parked ones are unaffected: the round closes and answers them all.
  for (uint32_t id = 0; id < 3; ++id) {
    ASSERT_TRUE(Push(shard, id, 1, 0, {1, 1, 1, 1}).ok());
  }
  EXPECT_EQ(answered, 3);
  EXPECT_THAT(Theta(shard), ElementsAre(-1, -1, -1, -1));
  // Their room is free again.
  EXPECT_FALSE(shard
                   .Pull(
                       [] {
                         PullArgs next;
                         next.min_version = 2;
                         return next;
                       }(),
                       absl::InfiniteFuture(), shard.NewPullTicket(),
                       [](absl::StatusOr<PullResult>) {})
                   .has_value());
}

TEST(ParameterShard, SyncIgnoresASecondGradientFromTheSameWorkerInARound) {
  ParameterShard shard(Options(ConsistencyMode::kSync, 2));
  RegisterAll(shard, 2);
  InitShard(shard, {0, 0, 0, 0});
  ASSERT_TRUE(Push(shard, 0, 1, 0, {1, 1, 1, 1}).ok());
  auto again = Push(shard, 0, 2, 0, {100, 100, 100, 100});
  EXPECT_EQ(again->outcome, PushOutcome::kDuplicate);
  ASSERT_TRUE(Push(shard, 1, 1, 0, {1, 1, 1, 1}).ok());
  EXPECT_THAT(Theta(shard), ElementsAre(-1, -1, -1, -1));
}

TEST(ParameterShard, BiasIsExemptFromWeightDecay) {
  ShardOptions options = Options(ConsistencyMode::kAsync, 1);
  options.update.learning_rate = 0.5f;
  options.update.l2 = 1.0f;
  ParameterShard shard(options);
  RegisterAll(shard, 1);
  InitShard(shard, {2, 2, 2, 2});
  ASSERT_TRUE(Push(shard, 0, 1, 0, {0, 0, 0, 0}).ok());
  // Weights: 2 − 0.5·(0 + 1·2) = 1; the bias keeps its value.
  EXPECT_THAT(Theta(shard), ElementsAre(1, 1, 1, 2));
}

TEST(ParameterShard, AParkedPullIsAnsweredWhenTheRoundCloses) {
  ParameterShard shard(Options(ConsistencyMode::kSync, 1));
  RegisterAll(shard, 1);
  InitShard(shard, {0, 0, 0, 0});
  std::optional<absl::StatusOr<PullResult>> answer;
  PullArgs args;
  args.min_version = 1;
  auto started = shard.Pull(args, absl::InfiniteFuture(), shard.NewPullTicket(),
                            [&](absl::StatusOr<PullResult> r) { answer = r; });
  ASSERT_FALSE(started.has_value());
  EXPECT_FALSE(answer.has_value());
  ASSERT_TRUE(Push(shard, 0, 1, 0, {1, 1, 1, 1}).ok());
  ASSERT_TRUE(answer.has_value());
  ASSERT_TRUE(answer->ok());
  EXPECT_EQ((*answer)->version, 1u);
  std::vector<float> theta(4);
  ASSERT_TRUE(
      common::BytesToFloats((*answer)->values, absl::MakeSpan(theta), "θ")
          .ok());
  EXPECT_THAT(theta, ElementsAre(-1, -1, -1, -1));
}

TEST(ParameterShard, AParkedPullExpiresOrIsCancelled) {
  ParameterShard shard(Options(ConsistencyMode::kSync, 1));
  InitShard(shard, {0, 0, 0, 0});
  PullArgs args;
  args.min_version = 1;
  const absl::Time expires = absl::Now() + absl::Seconds(5);
  std::optional<absl::Status> first, second;
  shard.Pull(args, expires, shard.NewPullTicket(),
             [&](absl::StatusOr<PullResult> r) { first = r.status(); });
  const ParameterShard::PullTicket ticket = shard.NewPullTicket();
  ASSERT_FALSE(
      shard
          .Pull(args, absl::InfiniteFuture(), ticket,
                [&](absl::StatusOr<PullResult> r) { second = r.status(); })
          .has_value());
  shard.Tick(expires - absl::Seconds(1));
  EXPECT_FALSE(first.has_value());
  shard.Tick(expires);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(second.has_value());
  EXPECT_TRUE(shard.CancelPull(ticket));
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(shard.CancelPull(ticket));
}

TEST(ParameterShard, PullOfASubRangeAndOutsideTheShard) {
  ParameterShard shard(Options(ConsistencyMode::kAsync, 1));
  InitShard(shard, {1, 2, 3, 4});
  PullArgs args;
  args.keys = {1, 3};
  auto part =
      *shard.Pull(args, absl::InfiniteFuture(), shard.NewPullTicket(), nullptr);
  ASSERT_TRUE(part.ok());
  std::vector<float> values(2);
  ASSERT_TRUE(
      common::BytesToFloats(part->values, absl::MakeSpan(values), "v").ok());
  EXPECT_THAT(values, ElementsAre(2, 3));
  args.keys = {3, 9};
  auto outside =
      *shard.Pull(args, absl::InfiniteFuture(), shard.NewPullTicket(), nullptr);
  EXPECT_EQ(outside.status().code(), absl::StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace ps::server
