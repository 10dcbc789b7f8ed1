// Checkpoints without a network: a shard's state saved and restored, onto
// the same shard or onto a different number of shards, and every way a
// checkpoint directory can be wrong.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/float_bytes.h"
#include "common/key_range.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/checkpointer.h"
#include "server/parameter_shard.h"
#include "server/ps_server.h"

namespace ps::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr uint64_t kIncarnation = 5;
constexpr uint32_t kWorkers = 2;

// 10 weights and 3 biases: 13 keys split unevenly whatever the shard count.
std::vector<common::TensorSpec> Model() {
  return {{"w", {2, 5}, false}, {"b", {3}, true}};
}

std::vector<float> InitialTheta() {
  std::vector<float> theta(13);
  for (size_t i = 0; i < theta.size(); ++i) theta[i] = 0.1f * i - 0.5f;
  return theta;
}

// The update every shard of these tests applies.
common::UpdateOptions Update() {
  common::UpdateOptions update;
  update.learning_rate = 0.5f;
  update.l2 = 0.01f;
  return update;
}

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/checkpoint_test_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// The ids of the sparse table of WithTable models: 1 to 30, each on shard
// ShardOfId(id, S).
constexpr uint64_t kTableIds = 30;

// A shard of a model with `num_shards` shards, declared and trained a bit;
// `with_table` adds a sparse adam table "emb" that every push touches.
class ShardUnderTest {
 public:
  ShardUnderTest(ConsistencyMode mode, uint32_t shard_index,
                 uint32_t num_shards, bool with_table = false)
      : with_table_(with_table) {
    options_.mode = mode;
    options_.num_workers = kWorkers;
    options_.max_workers = kWorkers;
    options_.shard_index = shard_index;
    options_.num_shards = num_shards;
    options_.update = Update();
    shard_ = std::make_unique<ParameterShard>(options_);
    keys_ = common::BalancedPart(13, num_shards, shard_index);
  }

  void Declare() {
    for (uint32_t id = 0; id < kWorkers; ++id) {
      ASSERT_TRUE(shard_->Register(id, kIncarnation).ok());
    }
    const std::vector<float> all = InitialTheta();
    std::string bytes;
    common::FloatsToBytes(
        absl::MakeConstSpan(all).subspan(keys_.begin, keys_.size()), &bytes);
    InitArgs args;
    args.tensors = Model();
    args.shard_index = options_.shard_index;
    args.num_shards = options_.num_shards;
    args.values = bytes;
    if (with_table_) {
      args.tables = {{"emb", 2, "normal(0.1)", "adam", ""}};
      args.model_seed = 7;
    }
    ASSERT_TRUE(shard_->Init(args).ok());
  }

  absl::StatusOr<PushResult> Push(uint32_t worker, uint64_t seq, uint64_t step,
                                  float scale) {
    std::vector<float> gradient(keys_.size());
    for (size_t i = 0; i < gradient.size(); ++i) {
      gradient[i] = scale * (1.0f + keys_.begin + i);
    }
    std::string bytes;
    common::FloatsToBytes(gradient, &bytes);
    PushArgs args;
    args.worker_id = worker;
    args.incarnation = kIncarnation;
    args.seq = seq;
    args.step = step;
    // These tests take one step per round: a sync push names its round by
    // the version it was computed from.
    args.base_version = step;
    args.batch_size = 4;
    args.keys = keys_;
    args.gradient = bytes;
    if (with_table_) {
      // This shard's ids, each with a row of its own.
      std::vector<uint64_t> ids;
      std::vector<float> rows;
      for (uint64_t id = 1; id <= kTableIds; ++id) {
        if (common::ShardOfId(id, options_.num_shards) !=
            options_.shard_index) {
          continue;
        }
        ids.push_back(id);
        rows.push_back(scale * static_cast<float>(id % 7) - 0.1f);
        rows.push_back(0.05f * static_cast<float>(id % 3) + scale);
      }
      std::string keys(ids.size() * sizeof(uint64_t), '\0');
      std::memcpy(keys.data(), ids.data(), keys.size());
      std::string values;
      common::FloatsToBytes(rows, &values);
      args.sparse = {{"emb", keys, values}};
    }
    return shard_->Push(args);
  }

  ParameterShard& shard() { return *shard_; }
  const ShardOptions& options() const { return options_; }

 private:
  const bool with_table_;
  ShardOptions options_;
  std::unique_ptr<ParameterShard> shard_;
  common::KeyRange keys_;
};

// Every stored row of table "emb" (θ and Adam's m and v) by id.
std::map<uint64_t, std::vector<float>> TableRows(ParameterShard& shard) {
  absl::StatusOr<common::ThetaFile> snapshot = shard.Snapshot();
  EXPECT_TRUE(snapshot.ok()) << snapshot.status();
  std::map<uint64_t, std::vector<float>> rows;
  if (!snapshot.ok() || snapshot->tables.size() != 1) return rows;
  const common::SavedTable& table = snapshot->tables[0];
  EXPECT_EQ(table.state_names, (std::vector<std::string>{"m", "v"}));
  for (size_t i = 0; i < table.ids.size(); ++i) {
    rows[table.ids[i]].assign(table.rows.begin() + i * table.stride(),
                              table.rows.begin() + (i + 1) * table.stride());
  }
  return rows;
}

std::vector<float> Values(ParameterShard& shard) {
  absl::StatusOr<common::ThetaFile> snapshot = shard.Snapshot();
  EXPECT_TRUE(snapshot.ok()) << snapshot.status();
  return snapshot.ok() ? snapshot->values : std::vector<float>();
}

std::unique_ptr<Checkpointer> Open(const std::string& dir, uint32_t shard,
                                   uint32_t shards, uint32_t keep = 3) {
  absl::StatusOr<std::unique_ptr<Checkpointer>> opened =
      Checkpointer::Open(dir, keep, shard, shards);
  EXPECT_TRUE(opened.ok()) << opened.status();
  return opened.ok() ? std::move(*opened) : nullptr;
}

// Two sync rounds, then a third left open holding worker 0's gradient.
void TrainTwoRoundsAndAHalf(ShardUnderTest& s) {
  for (uint64_t round = 0; round < 2; ++round) {
    EXPECT_TRUE(s.Push(0, round + 1, round, 1.0f).ok());
    EXPECT_TRUE(s.Push(1, round + 1, round, -0.25f).ok());
  }
  EXPECT_TRUE(s.Push(0, 3, 2, 2.0f).ok());
}

// Trains `shards` sync shards (TrainTwoRoundsAndAHalf) and checkpoints each.
std::vector<float> TrainAndCheckpoint(const std::string& dir, uint32_t shards) {
  std::vector<float> theta;
  for (uint32_t i = 0; i < shards; ++i) {
    ShardUnderTest s(ConsistencyMode::kSync, i, shards);
    s.Declare();
    TrainTwoRoundsAndAHalf(s);
    EXPECT_TRUE(Open(dir, i, shards)->Save(s.shard(), "test").ok());
    const std::vector<float> part = Values(s.shard());
    theta.insert(theta.end(), part.begin(), part.end());
  }
  return theta;
}

std::vector<float> RestoreAll(const std::string& dir, uint32_t shards,
                              std::vector<uint64_t>* versions = nullptr) {
  std::vector<float> theta;
  for (uint32_t i = 0; i < shards; ++i) {
    ShardUnderTest s(ConsistencyMode::kSync, i, shards);
    absl::StatusOr<std::optional<common::ThetaFile>> loaded =
        Open(dir, i, shards)->LoadLatest(Update());
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    if (!loaded.ok() || !loaded->has_value()) return {};
    if (versions) versions->push_back((*loaded)->version);
    EXPECT_TRUE(s.shard().Restore(std::move(**loaded)).ok());
    const std::vector<float> part = Values(s.shard());
    theta.insert(theta.end(), part.begin(), part.end());
  }
  return theta;
}

TEST(Checkpoint, SameShardRestoresEverythingIncludingTheOpenRound) {
  const std::string dir = FreshDir("same");
  ShardUnderTest before(ConsistencyMode::kSync, 0, 1);
  before.Declare();
  ASSERT_TRUE(before.Push(0, 1, 0, 1.0f).ok());
  ASSERT_TRUE(before.Push(1, 1, 0, 1.0f).ok());
  ASSERT_TRUE(before.Push(0, 2, 1, 3.0f).ok());  // round 1 stays open
  absl::StatusOr<SavedCheckpoint> saved =
      Open(dir, 0, 1)->Save(before.shard(), "test");
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->version, 1u);

  ShardUnderTest after(ConsistencyMode::kSync, 0, 1);
  auto loaded = Open(dir, 0, 1)->LoadLatest(Update());
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  ASSERT_TRUE(after.shard().Restore(std::move(**loaded)).ok());
  EXPECT_EQ(Values(after.shard()), Values(before.shard()));
  const ShardStatus status = after.shard().Status();
  EXPECT_EQ(status.version, 1u);
  EXPECT_EQ(status.round_gradients, 1u);
  EXPECT_EQ(status.live_workers, kWorkers);

  // Exactly-once survives: worker 0's retried push is a duplicate, and
  // worker 1's gradient closes the restored round just as it would have.
  auto retried = after.Push(0, 2, 1, 3.0f);
  ASSERT_TRUE(retried.ok());
  EXPECT_EQ(retried->outcome, PushOutcome::kDuplicate);
  ASSERT_TRUE(before.Push(1, 2, 1, -1.0f).ok());
  auto closed = after.Push(1, 2, 1, -1.0f);
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_EQ(closed->outcome, PushOutcome::kApplied);
  EXPECT_EQ(Values(after.shard()), Values(before.shard()));
}

TEST(Checkpoint, TwoShardsRestoreOntoThreeAndThreeOntoOneByteForByte) {
  const std::string two = FreshDir("two");
  const std::vector<float> saved = TrainAndCheckpoint(two, 2);
  ASSERT_EQ(saved.size(), 13u);
  std::vector<uint64_t> versions;
  EXPECT_EQ(RestoreAll(two, 3, &versions), saved);
  EXPECT_THAT(versions, ::testing::Each(2u));

  const std::string three = FreshDir("three");
  const std::vector<float> saved3 = TrainAndCheckpoint(three, 3);
  EXPECT_EQ(RestoreAll(three, 1), saved3);
  // Same model, same pushes: the layout never changed the arithmetic.
  EXPECT_EQ(saved3, saved);
}

// Restores shard `index` of `shards` from `dir`; the loading must succeed.
std::unique_ptr<ShardUnderTest> Restored(const std::string& dir,
                                         ConsistencyMode mode, uint32_t index,
                                         uint32_t shards) {
  auto s = std::make_unique<ShardUnderTest>(mode, index, shards);
  auto loaded = Open(dir, index, shards)->LoadLatest(Update());
  EXPECT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  if (loaded.ok() && loaded->has_value()) {
    EXPECT_TRUE(s->shard().Restore(std::move(**loaded)).ok());
  }
  return s;
}

TEST(Checkpoint, AReshardKeepsTheOpenRoundCutByKey) {
  const std::string dir = FreshDir("reshard_round");
  TrainAndCheckpoint(dir, 2);
  // Without a restart: worker 1's gradient closes round 2.
  ShardUnderTest reference(ConsistencyMode::kSync, 0, 1);
  reference.Declare();
  TrainTwoRoundsAndAHalf(reference);
  ASSERT_TRUE(reference.Push(1, 3, 2, 0.5f).ok());

  // Onto 3 shards: each holds worker 0's part of round 2, a retry of it is
  // a duplicate, and worker 1's gradient closes the round as it would have.
  std::vector<float> theta;
  for (uint32_t i = 0; i < 3; ++i) {
    std::unique_ptr<ShardUnderTest> s =
        Restored(dir, ConsistencyMode::kSync, i, 3);
    EXPECT_EQ(s->shard().Status().round_gradients, 1u) << "shard " << i;
    auto retried = s->Push(0, 3, 2, 2.0f);
    ASSERT_TRUE(retried.ok());
    EXPECT_EQ(retried->outcome, PushOutcome::kDuplicate);
    auto closed = s->Push(1, 3, 2, 0.5f);
    ASSERT_TRUE(closed.ok()) << closed.status();
    EXPECT_EQ(closed->outcome, PushOutcome::kApplied) << "shard " << i;
    const std::vector<float> part = Values(s->shard());
    theta.insert(theta.end(), part.begin(), part.end());
  }
  EXPECT_EQ(theta, Values(reference.shard()));
}

TEST(Checkpoint, SyncShardsStoppedOneRoundApartRestoreEveryKeyAtOneRound) {
  const std::string dir = FreshDir("one_round_apart");
  // Shard 0 closed round 0; shard 1 holds only worker 0's gradient of it
  // (answered ACCEPTED) when both stop.
  ShardUnderTest ahead(ConsistencyMode::kSync, 0, 2);
  ShardUnderTest behind(ConsistencyMode::kSync, 1, 2);
  ahead.Declare();
  behind.Declare();
  ASSERT_TRUE(ahead.Push(0, 1, 0, 1.0f).ok());
  ASSERT_TRUE(ahead.Push(1, 1, 0, -0.25f).ok());
  auto accepted = behind.Push(0, 1, 0, 1.0f);
  ASSERT_TRUE(accepted.ok());
  ASSERT_EQ(accepted->outcome, PushOutcome::kAccepted);
  ASSERT_TRUE(Open(dir, 0, 2)->Save(ahead.shard(), "test").ok());
  ASSERT_TRUE(Open(dir, 1, 2)->Save(behind.shard(), "test").ok());

  // Shard 1's keys as the round would have closed there with what it held
  // (worker 1 leaving instead of pushing).
  ShardUnderTest reference(ConsistencyMode::kSync, 1, 2);
  reference.Declare();
  ASSERT_TRUE(reference.Push(0, 1, 0, 1.0f).ok());
  ASSERT_TRUE(reference.shard().Leave(1, kIncarnation).ok());
  ASSERT_EQ(reference.shard().Status().version, 1u);
  std::vector<float> expected = Values(ahead.shard());
  const std::vector<float> rest = Values(reference.shard());
  expected.insert(expected.end(), rest.begin(), rest.end());

  std::unique_ptr<ShardUnderTest> one =
      Restored(dir, ConsistencyMode::kSync, 0, 1);
  const ShardStatus status = one->shard().Status();
  EXPECT_EQ(status.version, 1u);
  EXPECT_EQ(status.round_gradients, 0u);
  EXPECT_EQ(Values(one->shard()), expected);
}

// Rows live on ShardOfId(id, S), not in key ranges: 2 shards restored onto
// 3 give each new shard exactly its rows, with their Adam state and the
// open round's rows, so that closing the round gives what one shard that
// never stopped holds.
TEST(Checkpoint, TableRowsReshardByIdWithTheirStateAndOpenRound) {
  const std::string dir = FreshDir("reshard_table");
  for (uint32_t i = 0; i < 2; ++i) {
    ShardUnderTest s(ConsistencyMode::kSync, i, 2, /*with_table=*/true);
    s.Declare();
    TrainTwoRoundsAndAHalf(s);
    ASSERT_TRUE(Open(dir, i, 2)->Save(s.shard(), "test").ok());
  }
  ShardUnderTest reference(ConsistencyMode::kSync, 0, 1, true);
  reference.Declare();
  TrainTwoRoundsAndAHalf(reference);
  ASSERT_TRUE(reference.Push(1, 3, 2, 0.5f).ok());
  const std::map<uint64_t, std::vector<float>> expected =
      TableRows(reference.shard());
  ASSERT_EQ(expected.size(), kTableIds);

  std::map<uint64_t, std::vector<float>> restored;
  for (uint32_t i = 0; i < 3; ++i) {
    ShardUnderTest s(ConsistencyMode::kSync, i, 3, true);
    auto loaded = Open(dir, i, 3)->LoadLatest(Update());
    ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
    ASSERT_TRUE(s.shard().Restore(std::move(**loaded)).ok());
    ASSERT_EQ(s.shard().Status().round_gradients, 1u) << "shard " << i;
    ASSERT_TRUE(s.Push(1, 3, 2, 0.5f).ok());
    for (auto& [id, row] : TableRows(s.shard())) {
      EXPECT_EQ(common::ShardOfId(id, 3), i) << "row " << id;
      restored[id] = row;
    }
  }
  EXPECT_EQ(restored, expected);
}

// As SyncShardsStoppedOneRoundApartRestoreEveryKeyAtOneRound, for rows: the
// shard one round behind has its rows' round closed with what it held.
TEST(Checkpoint, TableRowsOfAShardOneRoundBehindHaveTheirRoundClosed) {
  const std::string dir = FreshDir("one_round_apart_table");
  ShardUnderTest ahead(ConsistencyMode::kSync, 0, 2, true);
  ShardUnderTest behind(ConsistencyMode::kSync, 1, 2, true);
  ahead.Declare();
  behind.Declare();
  ASSERT_TRUE(ahead.Push(0, 1, 0, 1.0f).ok());
  ASSERT_TRUE(ahead.Push(1, 1, 0, -0.25f).ok());
  ASSERT_TRUE(behind.Push(0, 1, 0, 1.0f).ok());
  ASSERT_TRUE(Open(dir, 0, 2)->Save(ahead.shard(), "test").ok());
  ASSERT_TRUE(Open(dir, 1, 2)->Save(behind.shard(), "test").ok());

  ShardUnderTest reference(ConsistencyMode::kSync, 1, 2, true);
  reference.Declare();
  ASSERT_TRUE(reference.Push(0, 1, 0, 1.0f).ok());
  ASSERT_TRUE(reference.shard().Leave(1, kIncarnation).ok());
  std::map<uint64_t, std::vector<float>> expected = TableRows(ahead.shard());
  expected.merge(TableRows(reference.shard()));
  ASSERT_EQ(expected.size(), kTableIds);

  std::unique_ptr<ShardUnderTest> one =
      Restored(dir, ConsistencyMode::kSync, 0, 1);
  EXPECT_EQ(one->shard().Status().version, 1u);
  EXPECT_EQ(TableRows(one->shard()), expected);
}

TEST(Checkpoint, SyncCheckpointsMoreThanOneRoundApartAreRefused) {
  const std::string dir = FreshDir("rounds_apart");
  ShardUnderTest ahead(ConsistencyMode::kSync, 0, 2);
  ShardUnderTest behind(ConsistencyMode::kSync, 1, 2);
  ahead.Declare();
  behind.Declare();
  for (uint64_t round = 0; round < 2; ++round) {
    ASSERT_TRUE(ahead.Push(0, round + 1, round, 1.0f).ok());
    ASSERT_TRUE(ahead.Push(1, round + 1, round, 1.0f).ok());
  }
  ASSERT_TRUE(Open(dir, 0, 2)->Save(ahead.shard(), "test").ok());
  ASSERT_TRUE(Open(dir, 1, 2)->Save(behind.shard(), "test").ok());
  auto loaded = Open(dir, 0, 1)->LoadLatest(Update());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(), HasSubstr("rounds 0"));
}

TEST(Checkpoint, AGradientOnlyPartOfTheOldShardsHadIsPushedAgain) {
  const std::string dir = FreshDir("partial_round");
  // Worker 0 was stopped between its pushes of round 0: shard 0 has its
  // gradient, shard 1 never got it.
  ShardUnderTest got(ConsistencyMode::kSync, 0, 2);
  ShardUnderTest missed(ConsistencyMode::kSync, 1, 2);
  got.Declare();
  missed.Declare();
  ASSERT_TRUE(got.Push(0, 1, 0, 1.0f).ok());
  ASSERT_TRUE(Open(dir, 0, 2)->Save(got.shard(), "test").ok());
  ASSERT_TRUE(Open(dir, 1, 2)->Save(missed.shard(), "test").ok());

  std::unique_ptr<ShardUnderTest> one =
      Restored(dir, ConsistencyMode::kSync, 0, 1);
  EXPECT_EQ(one->shard().Status().round_gradients, 0u);
  // Its new process resumes at that step, not past it.
  auto restarted = one->shard().Register(0, kIncarnation + 1);
  ASSERT_TRUE(restarted.ok());
  EXPECT_EQ(restarted->resume_step, 0u);
}

TEST(Checkpoint, GoingBackToAnEarlierLayoutRestoresTheNewestState) {
  const std::string dir = FreshDir("back_to_one");
  ShardUnderTest first(ConsistencyMode::kAsync, 0, 1);
  first.Declare();
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    ASSERT_TRUE(first.Push(0, seq, seq - 1, 1.0f).ok());
  }
  ASSERT_TRUE(Open(dir, 0, 1)->Save(first.shard(), "test").ok());

  // Two shards take over from it, train on and save.
  std::vector<float> newest;
  for (uint32_t i = 0; i < 2; ++i) {
    std::unique_ptr<ShardUnderTest> s =
        Restored(dir, ConsistencyMode::kAsync, i, 2);
    for (uint64_t seq = 4; seq <= 13; ++seq) {
      ASSERT_TRUE(s->Push(0, seq, seq - 1, 0.5f).ok());
    }
    ASSERT_TRUE(Open(dir, i, 2)->Save(s->shard(), "test").ok());
    const std::vector<float> part = Values(s->shard());
    newest.insert(newest.end(), part.begin(), part.end());
  }

  // Back on one shard: the two shards' state, not the older file of its own
  // layout.
  std::unique_ptr<ShardUnderTest> back =
      Restored(dir, ConsistencyMode::kAsync, 0, 1);
  EXPECT_EQ(back->shard().Status().version, 13u);
  EXPECT_EQ(Values(back->shard()), newest);
}

TEST(Checkpoint, ANewLayoutWithoutAFileOfThisShardRestoresFromTheOlderOne) {
  const std::string dir = FreshDir("unsaved_shard");
  const std::vector<float> one = TrainAndCheckpoint(dir, 1);
  // Two shards took over; shard 0 saved, shard 1 died before its first save.
  std::unique_ptr<ShardUnderTest> saved =
      Restored(dir, ConsistencyMode::kSync, 0, 2);
  ASSERT_TRUE(Open(dir, 0, 2)->Save(saved->shard(), "test").ok());
  // Shard 1's keys are newest in the one-shard file.
  std::unique_ptr<ShardUnderTest> unsaved =
      Restored(dir, ConsistencyMode::kSync, 1, 2);
  const std::vector<float> part = Values(unsaved->shard());
  EXPECT_EQ(part, std::vector<float>(one.end() - part.size(), one.end()));
  // Back on one shard, half its keys would come from the newer files and
  // half from older ones: refused, saying so.
  auto mixed = Open(dir, 0, 1)->LoadLatest(Update());
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(mixed.status().message(), HasSubstr("no file of old shard 1"));
}

TEST(Checkpoint, ACorruptNewestFileFallsBackToThePreviousOne) {
  const std::string dir = FreshDir("corrupt");
  ShardUnderTest s(ConsistencyMode::kAsync, 0, 1);
  s.Declare();
  std::unique_ptr<Checkpointer> checkpointer = Open(dir, 0, 1);
  ASSERT_TRUE(s.Push(0, 1, 0, 1.0f).ok());
  ASSERT_TRUE(checkpointer->Save(s.shard(), "test").ok());
  const std::vector<float> good = Values(s.shard());
  ASSERT_TRUE(s.Push(0, 2, 1, 1.0f).ok());
  absl::StatusOr<SavedCheckpoint> newest =
      checkpointer->Save(s.shard(), "test");
  ASSERT_TRUE(newest.ok());
  fs::resize_file(newest->path, fs::file_size(newest->path) - 3);
  checkpointer.reset();  // the server is gone; a new one starts

  auto loaded = Open(dir, 0, 1)->LoadLatest(Update());
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  EXPECT_EQ((*loaded)->version, 1u);
  EXPECT_EQ((*loaded)->values, good);

  // With every file bad there is nothing to restore: an error, never a
  // silent fresh start.
  for (const auto& entry : fs::directory_iterator(dir)) {
    fs::resize_file(entry.path(), 10);
  }
  auto none = Open(dir, 0, 1)->LoadLatest(Update());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(none.status().message(), HasSubstr("no good checkpoint"));
}

// A newest file that decodes but holds a non-finite θ (written by a server
// before updates were checked) is passed over like a corrupt one.
TEST(Checkpoint, ANewestFileWithANonFiniteValueFallsBackToThePreviousOne) {
  const std::string dir = FreshDir("non_finite");
  ShardUnderTest s(ConsistencyMode::kAsync, 0, 1);
  s.Declare();
  std::unique_ptr<Checkpointer> checkpointer = Open(dir, 0, 1);
  ASSERT_TRUE(s.Push(0, 1, 0, 1.0f).ok());
  ASSERT_TRUE(checkpointer->Save(s.shard(), "test").ok());
  const std::vector<float> good = Values(s.shard());
  ASSERT_TRUE(s.Push(0, 2, 1, 1.0f).ok());
  absl::StatusOr<SavedCheckpoint> newest =
      checkpointer->Save(s.shard(), "test");
  ASSERT_TRUE(newest.ok());
  absl::StatusOr<common::ThetaFile> file = common::ReadThetaFile(newest->path);
  ASSERT_TRUE(file.ok());
  file->values[0] = std::numeric_limits<float>::infinity();
  ASSERT_TRUE(common::WriteThetaFile(newest->path, *file).ok());
  checkpointer.reset();

  auto loaded = Open(dir, 0, 1)->LoadLatest(Update());
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  EXPECT_EQ((*loaded)->version, 1u);
  EXPECT_EQ((*loaded)->values, good);
}

TEST(Checkpoint, KeepsTheNewestFilesOfItsOwnShardOnly) {
  const std::string dir = FreshDir("keep");
  ShardUnderTest s(ConsistencyMode::kAsync, 0, 1);
  s.Declare();
  std::ofstream(dir + "/ckpt-00000001-shard-1-of-2.theta") << "another job";
  std::unique_ptr<Checkpointer> checkpointer = Open(dir, 0, 1, /*keep=*/2);
  std::vector<std::string> paths;
  for (uint64_t seq = 1; seq <= 4; ++seq) {
    ASSERT_TRUE(s.Push(0, seq, seq, 1.0f).ok());
    absl::StatusOr<SavedCheckpoint> saved =
        checkpointer->Save(s.shard(), "test");
    ASSERT_TRUE(saved.ok());
    paths.push_back(saved->path);
  }
  EXPECT_FALSE(fs::exists(paths[0]));
  EXPECT_FALSE(fs::exists(paths[1]));
  EXPECT_TRUE(fs::exists(paths[2]));
  EXPECT_TRUE(fs::exists(paths[3]));
  EXPECT_TRUE(fs::exists(dir + "/ckpt-00000001-shard-1-of-2.theta"));
  checkpointer.reset();  // its lock, before the next server opens
  // Numbering starts past every file in the directory, whatever its layout
  // (seq 1 is the other layout's), and goes on across restarts.
  EXPECT_THAT(paths[0], HasSubstr("ckpt-00000002-shard-0-of-1"));
  ASSERT_TRUE(s.Push(0, 5, 5, 1.0f).ok());
  absl::StatusOr<SavedCheckpoint> next =
      Open(dir, 0, 1)->Save(s.shard(), "test");
  ASSERT_TRUE(next.ok());
  EXPECT_THAT(next->path, HasSubstr("ckpt-00000006-shard-0-of-1"));
}

TEST(Checkpoint, ASecondServerOfTheSameShardAndDirectoryIsRefused) {
  const std::string dir = FreshDir("locked");
  std::unique_ptr<Checkpointer> first = Open(dir, 0, 2);
  ASSERT_NE(first, nullptr);
  auto second = Checkpointer::Open(dir, 3, 0, 2);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr("in use by another server"));
  EXPECT_THAT(second.status().message(),
              HasSubstr(absl::StrCat("pid ", getpid())));
  // Another shard of the job shares the directory.
  EXPECT_NE(Open(dir, 1, 2), nullptr);
  // The lock goes with its holder (as it does when a server dies: the
  // kernel closes its descriptors).
  first.reset();
  EXPECT_NE(Open(dir, 0, 2), nullptr);
}

// A restart with another mode or update rule on the same checkpoints is
// refused unless asked for: an async job restarted in sync mode used to
// drop every push of its running workers as stale.
TEST(Checkpoint, ARestartUnderOtherRulesIsRefusedUnlessAllowed) {
  const std::string dir = FreshDir("rules");
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.checkpoint_dir = dir;
  options.shard.mode = ConsistencyMode::kAsync;
  options.shard.num_workers = kWorkers;
  options.shard.max_workers = kWorkers;
  {
    ShardUnderTest s(ConsistencyMode::kAsync, 0, 1);
    s.Declare();
    ASSERT_TRUE(s.Push(0, 1, 0, 1.0f).ok());
    // The shard's rules are ShardUnderTest's: lr 0.5, l2 0.01.
    options.shard.update = s.options().update;
    ASSERT_TRUE(Open(dir, 0, 1)->Save(s.shard(), "test").ok());
  }
  {
    auto same = PsServer::Start(options);
    ASSERT_TRUE(same.ok()) << same.status();
  }
  ServerOptions sync = options;
  sync.shard.mode = ConsistencyMode::kSync;
  auto refused = PsServer::Start(sync);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("mode async → sync"));
  EXPECT_THAT(refused.status().message(), HasSubstr("--allow_config_change"));
  // --allow_fresh_start is no way around it: it is not a broken checkpoint.
  sync.allow_fresh_start = true;
  EXPECT_FALSE(PsServer::Start(sync).ok());

  ServerOptions faster = options;
  faster.shard.update.learning_rate = 1.0f;
  auto lr = PsServer::Start(faster);
  ASSERT_FALSE(lr.ok());
  EXPECT_THAT(lr.status().message(), HasSubstr("lr 0.5 → 1"));

  sync.allow_config_change = true;
  auto allowed = PsServer::Start(sync);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  EXPECT_EQ((*allowed)->restored_version(), 1u);
}

TEST(Checkpoint, AnEmptyDirectoryIsAFreshStart) {
  auto loaded = Open(FreshDir("empty"), 0, 1)->LoadLatest(Update());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->has_value());
}

TEST(Checkpoint, AMissingOrUnwritableDirectoryIsRefused) {
  auto missing = Checkpointer::Open(FreshDir("x") + "/typo", 3, 0, 1);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("does not exist"));
  // /proc refuses new files even to root, which CI runs as.
  auto unwritable = Checkpointer::Open("/proc", 3, 0, 1);
  ASSERT_FALSE(unwritable.ok());
  EXPECT_THAT(unwritable.status().message(), HasSubstr("not writable"));
}

TEST(Checkpoint, ACheckpointOfAnotherModelIsRefusedWithTheDifference) {
  const std::string dir = FreshDir("other_model");
  ShardUnderTest s(ConsistencyMode::kAsync, 0, 1);
  s.Declare();
  ASSERT_TRUE(Open(dir, 0, 1)->Save(s.shard(), "test").ok());
  ShardUnderTest restored(ConsistencyMode::kAsync, 0, 1);
  auto loaded = Open(dir, 0, 1)->LoadLatest(Update());
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  ASSERT_TRUE(restored.shard().Restore(std::move(**loaded)).ok());
  InitArgs args;
  args.tensors = {{"w", {2, 6}, false}, {"b", {3}, true}};
  args.num_shards = 1;
  std::string bytes(15 * sizeof(float), '\0');
  args.values = bytes;
  absl::StatusOr<InitResult> declared = restored.shard().Init(args);
  ASSERT_FALSE(declared.ok());
  EXPECT_EQ(declared.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(declared.status().message(), HasSubstr("checkpoint"));
  EXPECT_THAT(declared.status().message(), HasSubstr("w"));
}

TEST(Checkpoint, ARejectedCheckpointLeavesTheShardFresh) {
  const std::string dir = FreshDir("rejected");
  ShardUnderTest s(ConsistencyMode::kSync, 0, 1);
  s.Declare();
  ASSERT_TRUE(Open(dir, 0, 1)->Save(s.shard(), "test").ok());
  auto loaded = Open(dir, 0, 1)->LoadLatest(Update());
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  (*loaded)->workers.push_back(
      {kWorkers + 5, 1, 1, 1, 1, 1, common::WorkerState::kLive});

  ShardUnderTest fresh(ConsistencyMode::kSync, 0, 1);
  absl::Status restored = fresh.shard().Restore(std::move(**loaded));
  EXPECT_EQ(restored.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(restored.message(), HasSubstr("--max_workers"));
  const ShardStatus status = fresh.shard().Status();
  EXPECT_FALSE(status.initialized);
  EXPECT_TRUE(status.workers.empty());
}

TEST(Checkpoint, AShardStopsTakingPushesWhenDraining) {
  ShardUnderTest s(ConsistencyMode::kAsync, 0, 1);
  s.Declare();
  s.shard().StopTakingPushes();
  auto refused = s.Push(0, 1, 0, 1.0f);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s.shard().Status().version, 0u);
}

TEST(Checkpoint, ADrainingShardKeepsTheVersionItsFinalCheckpointHolds) {
  ShardUnderTest s(ConsistencyMode::kSync, 0, 1);
  s.Declare();
  ASSERT_TRUE(s.Push(0, 1, 0, 1.0f).ok());  // worker 1 still owes round 0
  s.shard().StopTakingPushes();
  // Neither worker 1 leaving nor its lease running out closes the round: the
  // leave is refused (to be retried against the restarted server).
  EXPECT_EQ(s.shard().Leave(1, kIncarnation).code(),
            absl::StatusCode::kUnavailable);
  s.shard().Tick(absl::Now() + absl::Hours(1));
  const ShardStatus status = s.shard().Status();
  EXPECT_EQ(status.version, 0u);
  EXPECT_EQ(status.round_gradients, 1u);
}

}  // namespace
}  // namespace ps::server
