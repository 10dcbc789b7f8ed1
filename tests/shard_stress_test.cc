// ParameterShard under many threads at once: pushes with retried
// duplicates, hostile pushes, pulls (answered and parked), registrations
// and leaves, lease expiry, Status and Snapshot. Built with
// -DPS_SANITIZE=thread it is a race detector's workload; in every build
// the invariants after (and the values every reader saw meanwhile) must
// hold exactly.
#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "common/error_info.h"
#include "common/float_bytes.h"
#include "gtest/gtest.h"
#include "server/parameter_shard.h"
#include "spdlog/spdlog.h"

namespace ps::server {
namespace {

constexpr size_t kKeys = 1000;
constexpr float kInitial = 100;
// Every gradient is all ones and l2 is 0: each update subtracts exactly
// kLearningRate from every key, so θ is uniform at all times (a reader
// that sees two values saw half an update) and tells how many updates
// were applied.
constexpr float kLearningRate = 0.5;
constexpr uint64_t kIncarnation = 3;

std::string Bytes(const std::vector<float>& values) {
  std::string out;
  common::FloatsToBytes(values, &out);
  return out;
}

const std::string& Ones() {
  static const std::string* ones =
      new std::string(Bytes(std::vector<float>(kKeys, 1.0f)));
  return *ones;
}

// A fake clock that threads can move on.
struct TestClock {
  std::atomic<int64_t> nanos{
      absl::ToUnixNanos(absl::UnixEpoch() + absl::Hours(24))};
  absl::Time Now() const { return absl::FromUnixNanos(nanos.load()); }
  void Advance(absl::Duration by) { nanos += absl::ToInt64Nanoseconds(by); }
};

ShardOptions Options(ConsistencyMode mode, uint32_t workers, TestClock& clock) {
  ShardOptions options;
  options.mode = mode;
  options.num_workers = workers;
  options.max_workers = 16;
  options.lease_timeout = absl::Seconds(1);
  options.update.learning_rate = kLearningRate;
  options.update.l2 = 0;
  options.clock = [&clock] { return clock.Now(); };
  return options;
}

InitArgs Model() {
  InitArgs args;
  args.tensors = {{"w", {kKeys - 10}, false}, {"b", {10}, true}};
  args.num_shards = 1;
  args.values = Bytes(std::vector<float>(kKeys, kInitial));
  return args;
}

// θ's one value; fails the test when keys differ.
float UniformValue(const std::string& bytes) {
  std::vector<float> theta(bytes.size() / sizeof(float));
  EXPECT_TRUE(
      common::BytesToFloats(bytes, absl::MakeSpan(theta), "theta").ok());
  for (float value : theta) {
    if (value != theta[0]) {
      ADD_FAILURE() << "a reader saw a half-applied update: " << theta[0]
                    << " and " << value;
      break;
    }
  }
  return theta.empty() ? kInitial : theta[0];
}

PushArgs Push(uint32_t worker, uint64_t seq, uint64_t step,
              uint64_t base_version, uint32_t batch,
              const std::string& gradient) {
  PushArgs args;
  args.worker_id = worker;
  args.incarnation = kIncarnation;
  args.seq = seq;
  args.step = step;
  args.base_version = base_version;
  args.batch_size = batch;
  args.keys = {0, kKeys};
  args.gradient = gradient;
  return args;
}

// Readers that run until `stop`: pulls, Status and Snapshot, each checking
// that θ is uniform and that counters never go back.
std::vector<std::thread> StartReaders(ParameterShard& shard,
                                      const std::atomic<bool>& stop) {
  std::vector<std::thread> readers;
  readers.emplace_back([&] {
    uint64_t last_version = 0;
    while (!stop.load()) {
      PullArgs args;
      auto pulled = shard.Pull(args, absl::InfiniteFuture(),
                               shard.NewPullTicket(), nullptr);
      ASSERT_TRUE(pulled.has_value() && pulled->ok());
      EXPECT_GE((*pulled)->version, last_version);
      last_version = (*pulled)->version;
      EXPECT_EQ(UniformValue((*pulled)->values),
                kInitial - kLearningRate * (*pulled)->version);
    }
  });
  readers.emplace_back([&] {
    uint64_t last_applied = 0;
    while (!stop.load()) {
      const ShardStatus status = shard.Status();
      EXPECT_GE(status.pushes_applied, last_applied);
      last_applied = status.pushes_applied;
      absl::StatusOr<common::ThetaFile> snapshot = shard.Snapshot();
      ASSERT_TRUE(snapshot.ok()) << snapshot.status();
      const std::string bytes(
          reinterpret_cast<const char*>(snapshot->values.data()),
          snapshot->values.size() * sizeof(float));
      EXPECT_EQ(UniformValue(bytes),
                kInitial - kLearningRate * snapshot->version);
    }
  });
  return readers;
}

TEST(ShardStress, AsyncPushersRetriesExpiryChurnAndReadersKeepEveryCount) {
  spdlog::set_level(spdlog::level::warn);
  TestClock clock;
  constexpr uint32_t kPushers = 4;
  constexpr int kPushesEach = 2000;
  ParameterShard shard(Options(ConsistencyMode::kAsync, kPushers, clock));

  // Every pusher declares the model at once: exactly one creates it.
  std::atomic<int> created{0};
  std::atomic<uint64_t> applied{0}, duplicate{0}, samples{0}, reregistered{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> pushers;
  for (uint32_t id = 0; id < kPushers; ++id) {
    pushers.emplace_back([&, id] {
      ASSERT_TRUE(shard.Register(id, kIncarnation).ok());
      absl::StatusOr<InitResult> init = shard.Init(Model());
      ASSERT_TRUE(init.ok()) << init.status();
      if (init->created) ++created;
      for (uint64_t seq = 1; seq <= kPushesEach; ++seq) {
        const uint32_t batch = 1 + seq % 4;
        const PushArgs args = Push(id, seq, seq, 0, batch, Ones());
        absl::StatusOr<PushResult> result = shard.Push(args);
        // The ticker expires leases that fall behind its clock: register
        // again and retry with the same seq, as the clients do.
        while (!result.ok()) {
          ASSERT_TRUE(common::HasErrorReason(result.status(),
                                             common::kRegistrationRequired))
              << result.status();
          ++reregistered;
          ASSERT_TRUE(shard.Register(id, kIncarnation).ok());
          result = shard.Push(args);
        }
        if (result->outcome == PushOutcome::kApplied) {
          ++applied;
          samples += batch;
        } else if (result->outcome == PushOutcome::kDuplicate) {
          ++duplicate;  // a retry whose first attempt was applied
        }
        if (seq % 5 == 0) {  // a retry after a lost answer
          absl::StatusOr<PushResult> again = shard.Push(args);
          if (again.ok()) {
            EXPECT_EQ(again->outcome, PushOutcome::kDuplicate);
            ++duplicate;
          } else {
            EXPECT_TRUE(common::HasErrorReason(again.status(),
                                               common::kRegistrationRequired));
            ++reregistered;
          }
        }
      }
    });
  }
  // Hostile pushes: every one refused, θ untouched by them.
  std::atomic<uint64_t> refused{0};
  std::thread hostile([&] {
    while (!shard.Status().initialized) std::this_thread::yield();
    std::vector<float> nan_at_end(kKeys, 1.0f);
    nan_at_end.back() = std::nanf("");
    const std::string bad = Bytes(nan_at_end);
    const std::string short_gradient = Ones().substr(4);
    for (uint64_t seq = 1; !stop.load(); ++seq) {
      if (!shard.Register(kPushers, kIncarnation).ok()) continue;
      absl::StatusOr<PushResult> result = shard.Push(
          Push(kPushers, seq, seq, 0, 1, seq % 2 ? bad : short_gradient));
      if (result.status().code() == absl::StatusCode::kInvalidArgument) {
        ++refused;
      } else {
        EXPECT_TRUE(common::HasErrorReason(result.status(),
                                           common::kRegistrationRequired))
            << "a bad gradient was not refused: " << result.status();
        ++reregistered;
      }
    }
  });
  // Membership churn and lease expiry on the shard's clock.
  std::thread churn([&] {
    while (!stop.load()) {
      if (shard.Register(kPushers + 1, kIncarnation).ok()) {
        EXPECT_TRUE(shard.Leave(kPushers + 1, kIncarnation).ok());
      }
      clock.Advance(absl::Milliseconds(400));
      shard.Tick(clock.Now());
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  while (!shard.Status().initialized) std::this_thread::yield();
  std::vector<std::thread> readers = StartReaders(shard, stop);

  for (std::thread& pusher : pushers) pusher.join();
  stop = true;
  hostile.join();
  churn.join();
  for (std::thread& reader : readers) reader.join();

  EXPECT_EQ(created.load(), 1);
  const ShardStatus status = shard.Status();
  EXPECT_EQ(status.pushes_applied, applied.load());
  EXPECT_EQ(status.pushes_applied, uint64_t{kPushers} * kPushesEach)
      << "every seq is applied exactly once";
  EXPECT_EQ(status.pushes_duplicate, duplicate.load());
  EXPECT_EQ(status.samples_applied, samples.load());
  // The shard counts a push from an expired lease as rejected too.
  EXPECT_EQ(status.pushes_rejected, refused.load() + reregistered.load());
  EXPECT_EQ(status.version, status.pushes_applied);
  PullArgs all;
  auto theta =
      shard.Pull(all, absl::InfiniteFuture(), shard.NewPullTicket(), nullptr);
  ASSERT_TRUE(theta.has_value() && theta->ok());
  EXPECT_EQ(UniformValue((*theta)->values),
            kInitial - kLearningRate * status.pushes_applied);
  // Not an assertion on timing: says whether expiry was exercised.
  std::printf("pushes refused for an expired lease: %llu, bad ones: %llu\n",
              static_cast<unsigned long long>(reregistered.load()),
              static_cast<unsigned long long>(refused.load()));
}

TEST(ShardStress, SyncRoundsWithParkedPullsAndReadersCloseOnceEach) {
  spdlog::set_level(spdlog::level::warn);
  TestClock clock;
  constexpr uint32_t kWorkers = 4;
  constexpr uint64_t kRounds = 150;
  ParameterShard shard(Options(ConsistencyMode::kSync, kWorkers, clock));
  for (uint32_t id = 0; id < kWorkers; ++id) {
    ASSERT_TRUE(shard.Register(id, kIncarnation).ok());
  }
  ASSERT_TRUE(shard.Init(Model()).ok());
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers = StartReaders(shard, stop);

  std::vector<std::thread> workers;
  for (uint32_t id = 0; id < kWorkers; ++id) {
    workers.emplace_back([&, id] {
      for (uint64_t round = 0; round < kRounds; ++round) {
        absl::StatusOr<PushResult> pushed =
            shard.Push(Push(id, round + 1, round, round, 1 + id, Ones()));
        ASSERT_TRUE(pushed.ok()) << pushed.status();
        ASSERT_NE(pushed->outcome, PushOutcome::kStale);
        // The next round's θ: parked until the last worker pushed.
        PullArgs next;
        next.worker_id = id;
        next.min_version = round + 1;
        absl::Notification answered;
        absl::StatusOr<PullResult> answer;
        std::optional<absl::StatusOr<PullResult>> now =
            shard.Pull(next, absl::InfiniteFuture(), shard.NewPullTicket(),
                       [&](absl::StatusOr<PullResult> result) {
                         answer = std::move(result);
                         answered.Notify();
                       });
        if (now.has_value()) {
          answer = std::move(*now);
        } else {
          answered.WaitForNotification();
        }
        ASSERT_TRUE(answer.ok()) << answer.status();
        // No round can close without this worker's next push.
        ASSERT_EQ(answer->version, round + 1);
        EXPECT_EQ(UniformValue(answer->values),
                  kInitial - kLearningRate * (round + 1));
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  stop = true;
  for (std::thread& reader : readers) reader.join();
  const ShardStatus status = shard.Status();
  EXPECT_EQ(status.version, kRounds);
  EXPECT_EQ(status.rounds_closed_all_live, kRounds);
  EXPECT_EQ(status.samples_applied, kRounds * (1 + 2 + 3 + 4));
}

}  // namespace
}  // namespace ps::server
