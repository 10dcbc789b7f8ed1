// Sparse tables in the shard: declaration, sparse pull and push, sync's
// rank-ordered reduction across shard counts, exactly-once, bad input and
// the memory bound, without a network.
#include "server/sparse_tables.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/float_bytes.h"
#include "common/key_range.h"
#include "common/theta_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/embedding_table.h"
#include "server/parameter_shard.h"

namespace ps::server {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kIncarnation = 3;
constexpr uint64_t kSeed = 42;

std::string KeyBytes(const std::vector<uint64_t>& ids) {
  std::string out(ids.size() * sizeof(uint64_t), '\0');
  if (!ids.empty()) std::memcpy(out.data(), ids.data(), out.size());
  return out;
}

std::string FloatBytes(const std::vector<float>& values) {
  std::string out;
  common::FloatsToBytes(values, &out);
  return out;
}

std::vector<float> Floats(const std::string& bytes) {
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

// A dense bias b[1] beside a table "emb" of dim 2 (and, optionally, more).
std::vector<common::TableSpec> Tables(const std::string& optimizer = "") {
  return {{"emb", 2, "uniform(0.5)", optimizer, ""}};
}

ShardOptions Options(ConsistencyMode mode, uint32_t workers, uint32_t shard = 0,
                     uint32_t shards = 1) {
  ShardOptions options;
  options.mode = mode;
  options.num_workers = workers;
  options.max_workers = workers;
  options.shard_index = shard;
  options.num_shards = shards;
  options.update.learning_rate = 0.5f;
  return options;
}

absl::Status InitShard(ParameterShard& shard,
                       std::vector<common::TableSpec> tables,
                       uint64_t seed = kSeed) {
  const ShardOptions& o = shard.Status().options;
  InitArgs args;
  args.shard_index = o.shard_index;
  args.num_shards = o.num_shards;
  args.tensors = {{"b", {1}, true}};
  // The bias lives on shard 0 of the balanced split only.
  const common::KeyRange keys =
      common::BalancedPart(1, o.num_shards, o.shard_index);
  args.values = FloatBytes(std::vector<float>(keys.size(), 0.0f));
  args.tables = std::move(tables);
  args.model_seed = seed;
  return shard.Init(args).status();
}

void RegisterAll(ParameterShard& shard, uint32_t workers) {
  for (uint32_t id = 0; id < workers; ++id) {
    ASSERT_TRUE(shard.Register(id, kIncarnation).ok());
  }
}

// The first `n` ids (from 1 up) that live on shard `shard` of `shards`.
std::vector<uint64_t> IdsOf(uint32_t shard, uint32_t shards, size_t n) {
  std::vector<uint64_t> ids;
  for (uint64_t id = 1; ids.size() < n; ++id) {
    if (common::ShardOfId(id, shards) == shard) ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::vector<float>> Rows(ParameterShard& shard,
                                        const std::vector<uint64_t>& ids,
                                        const std::string& table = "emb") {
  PullArgs args;
  args.sparse = {{table, KeyBytes(ids), ""}};
  std::optional<absl::StatusOr<PullResult>> answer =
      shard.Pull(args, absl::InfiniteFuture(), shard.NewPullTicket(), nullptr);
  if (!answer.has_value()) return absl::InternalError("the pull would wait");
  if (!answer->ok()) return answer->status();
  if ((*answer)->sparse.size() != 1) return absl::InternalError("no rows");
  EXPECT_EQ((*answer)->sparse[0].keys, KeyBytes(ids));
  return Floats((*answer)->sparse[0].values);
}

struct SparsePush {
  PushArgs args;
  SparsePush(uint32_t worker, uint64_t seq, uint64_t version,
             const std::vector<uint64_t>& ids, const std::vector<float>& rows,
             uint32_t batch = 1, const common::KeyRange& dense = {0, 1}) {
    args.worker_id = worker;
    args.incarnation = kIncarnation;
    args.seq = seq;
    args.step = seq - 1;
    args.base_version = version;
    args.batch_size = batch;
    args.keys = dense;
    args.gradient = FloatBytes(std::vector<float>(dense.size(), 0.0f));
    args.sparse = {{"emb", KeyBytes(ids), FloatBytes(rows)}};
  }
};

std::vector<float> InitialRows(const std::vector<uint64_t>& ids,
                               uint64_t seed = kSeed, uint64_t index = 0) {
  EmbeddingTableOptions o;
  o.dim = 2;
  o.initializer = {RowInitializer::Kind::kUniform, 0.5f};
  o.model_seed = seed;
  o.table_index = index;
  auto table = EmbeddingTable::Create(o);
  EXPECT_TRUE(table.ok());
  std::vector<float> out(ids.size() * 2);
  (*table)->Lookup(ids, absl::MakeSpan(out));
  return out;
}

TEST(SparseTables, DeclarationIsValidatedAndTheFirstOneWins) {
  ParameterShard shard(Options(ConsistencyMode::kAsync, 1));
  // Names are unique among tensors and tables.
  absl::Status clash = InitShard(shard, {{"b", 2, "zeros", "", ""}});
  EXPECT_EQ(clash.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(clash.message(), HasSubstr("'b' is declared twice"));
  EXPECT_THAT(InitShard(shard, {{"emb", 0, "zeros", "", ""}}).message(),
              HasSubstr("dim 0"));
  EXPECT_THAT(InitShard(shard, {{"emb", 2, "gauss(1)", "", ""}}).message(),
              HasSubstr("gauss(1)"));
  EXPECT_THAT(
      InitShard(shard, {{"emb", 2, "zeros", "adam(beta9=1)", ""}}).message(),
      HasSubstr("beta9"));
  EXPECT_THAT(InitShard(shard, {{"emb", 2, "zeros", "", "cosine:x"}}).message(),
              HasSubstr("cosine:x"));
  EXPECT_FALSE(shard.Status().initialized);

  ASSERT_TRUE(InitShard(shard, Tables("adagrad")).ok());
  EXPECT_TRUE(InitShard(shard, Tables("adagrad")).ok());
  absl::Status other = InitShard(shard, Tables("ftrl"));
  EXPECT_EQ(other.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.message(), HasSubstr("ftrl"));
  absl::Status reseeded = InitShard(shard, Tables("adagrad"), kSeed + 1);
  EXPECT_EQ(reseeded.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(reseeded.message(), HasSubstr("seed"));
  ASSERT_EQ(shard.Status().tables.size(), 1u);
  EXPECT_EQ(shard.Status().tables[0].spec.optimizer, "adagrad");
}

TEST(SparseTables, APullCreatesNothingAndReadsTheSeededInitialRows) {
  // Whichever shard holds a row, it reads as the same initial value.
  for (uint32_t shards : {1u, 3u}) {
    for (uint32_t s = 0; s < shards; ++s) {
      ParameterShard shard(Options(ConsistencyMode::kAsync, 1, s, shards));
      ASSERT_TRUE(InitShard(shard, Tables()).ok());
      const std::vector<uint64_t> ids = IdsOf(s, shards, 5);
      absl::StatusOr<std::vector<float>> rows = Rows(shard, ids);
      ASSERT_TRUE(rows.ok()) << rows.status();
      EXPECT_EQ(*rows, InitialRows(ids));
      EXPECT_NE(*rows, InitialRows(ids, kSeed + 1));
      EXPECT_EQ(shard.Status().tables[0].rows, 0u);
    }
  }
}

TEST(SparseTables, AnAsyncPushCreatesRowsAndSumsRepeatedKeys) {
  ParameterShard shard(Options(ConsistencyMode::kAsync, 1));
  ASSERT_TRUE(InitShard(shard, Tables()).ok());
  RegisterAll(shard, 1);
  const std::vector<float> before = InitialRows({7, 9});
  // Key 7 twice: its rows are summed.
  SparsePush push(0, 1, 0, {7, 9, 7}, {1, 2, 10, 20, 3, 4});
  absl::StatusOr<PushResult> result = shard.Push(push.args);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->outcome, PushOutcome::kApplied);
  absl::StatusOr<std::vector<float>> rows = Rows(shard, {7, 9});
  ASSERT_TRUE(rows.ok());
  const float lr = 0.5f;
  EXPECT_EQ(*rows, (std::vector<float>{
                       before[0] - lr * (1 + 3), before[1] - lr * (2 + 4),
                       before[2] - lr * 10, before[3] - lr * 20}));
  EXPECT_EQ(shard.Status().tables[0].rows, 2u);
  EXPECT_EQ(shard.Status().tables[0].counters.created, 2u);
  EXPECT_EQ(shard.Status().version, 1u);
}

TEST(SparseTables, ARetriedPushIsAppliedOnce) {
  ParameterShard shard(Options(ConsistencyMode::kAsync, 1));
  ASSERT_TRUE(InitShard(shard, Tables()).ok());
  RegisterAll(shard, 1);
  SparsePush push(0, 1, 0, {7}, {1, 1});
  ASSERT_TRUE(shard.Push(push.args).ok());
  const std::vector<float> once = *Rows(shard, {7});
  absl::StatusOr<PushResult> again = shard.Push(push.args);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->outcome, PushOutcome::kDuplicate);
  EXPECT_EQ(*Rows(shard, {7}), once);
}

// Pushes the same sync rounds into `shards` shards from three workers (with
// two, float addition from 0 cannot depend on order), each row to its
// shard, and returns the rows of `ids` read back.
std::vector<float> SyncRowsAfterTwoRounds(uint32_t shards,
                                          const std::vector<uint64_t>& ids,
                                          bool reverse_arrival) {
  std::vector<std::unique_ptr<ParameterShard>> servers;
  for (uint32_t s = 0; s < shards; ++s) {
    servers.push_back(std::make_unique<ParameterShard>(
        Options(ConsistencyMode::kSync, 3, s, shards)));
    EXPECT_TRUE(InitShard(*servers[s], Tables("adagrad")).ok());
    RegisterAll(*servers[s], 3);
  }
  for (uint64_t round = 0; round < 2; ++round) {
    for (uint32_t s = 0; s < shards; ++s) {
      std::vector<SparsePush> pushes;
      for (uint32_t worker = 0; worker < 3; ++worker) {
        std::vector<uint64_t> mine;
        std::vector<float> rows;
        // Worker 1 skips every third id: its rows count as zero there.
        for (size_t i = 0; i < ids.size(); ++i) {
          if (common::ShardOfId(ids[i], shards) != s) continue;
          if (worker == 1 && i % 3 == 0) continue;
          mine.push_back(ids[i]);
          rows.push_back(0.1f * (i + 1) + 0.37f * worker + 0.011f * round +
                         1e-7f * worker * worker);
          rows.push_back(-0.3f * (i + 2) / (worker + 1.7f) + 0.13f * round);
        }
        pushes.emplace_back(worker, round + 1, round, mine, rows,
                            /*batch=*/3 + 2 * worker,
                            common::BalancedPart(1, shards, s));
      }
      if (reverse_arrival) std::reverse(pushes.begin(), pushes.end());
      for (SparsePush& p : pushes) {
        absl::StatusOr<PushResult> r = servers[s]->Push(p.args);
        EXPECT_TRUE(r.ok()) << r.status();
      }
      EXPECT_EQ(servers[s]->Status().version, round + 1);
    }
  }
  std::vector<float> out;
  for (uint64_t id : ids) {
    absl::StatusOr<std::vector<float>> row =
        Rows(*servers[common::ShardOfId(id, shards)], {id});
    EXPECT_TRUE(row.ok());
    out.insert(out.end(), row->begin(), row->end());
  }
  return out;
}

TEST(SparseTables, SyncRowsAreBitIdenticalOverOneAndThreeShards) {
  std::vector<uint64_t> ids;
  for (uint64_t i = 0; i < 24; ++i) ids.push_back(1000003 * i + 17);
  const std::vector<float> one = SyncRowsAfterTwoRounds(1, ids, false);
  const std::vector<float> three = SyncRowsAfterTwoRounds(3, ids, false);
  const std::vector<float> reversed = SyncRowsAfterTwoRounds(3, ids, true);
  ASSERT_EQ(one.size(), ids.size() * 2);
  EXPECT_EQ(0, std::memcmp(one.data(), three.data(), one.size() * 4));
  EXPECT_EQ(0, std::memcmp(one.data(), reversed.data(), one.size() * 4));
  EXPECT_NE(one, InitialRows(ids));
}

TEST(SparseTables, ASyncRoundIsTheBatchWeightedMeanWithAbsentRowsAsZero) {
  ShardOptions options = Options(ConsistencyMode::kSync, 2);
  ParameterShard shard(options);
  ASSERT_TRUE(InitShard(shard, Tables()).ok());
  RegisterAll(shard, 2);
  const std::vector<float> init = InitialRows({5, 6});
  SparsePush a(0, 1, 0, {5, 6}, {1, 2, 3, 4}, /*batch=*/1);
  SparsePush b(1, 1, 0, {5}, {10, 20}, /*batch=*/3);
  ASSERT_EQ(shard.Push(a.args)->outcome, PushOutcome::kAccepted);
  EXPECT_EQ(shard.Status().tables[0].rows, 0u) << "held until the round";
  ASSERT_EQ(shard.Push(b.args)->outcome, PushOutcome::kApplied);
  const float lr = 0.5f;
  const std::vector<float> expected = {
      init[0] - lr * ((1.0f * 1 + 3.0f * 10) / 4),
      init[1] - lr * ((1.0f * 2 + 3.0f * 20) / 4),
      init[2] - lr * ((1.0f * 3) / 4), init[3] - lr * ((1.0f * 4) / 4)};
  EXPECT_EQ(*Rows(shard, {5, 6}), expected);
}

TEST(SparseTables, SspAppliesSparsePushesAtOnce) {
  ShardOptions options = Options(ConsistencyMode::kSsp, 2);
  options.staleness = 1;
  ParameterShard shard(options);
  ASSERT_TRUE(InitShard(shard, Tables()).ok());
  RegisterAll(shard, 2);
  SparsePush a(0, 1, 0, {5}, {1, 2});
  ASSERT_EQ(shard.Push(a.args)->outcome, PushOutcome::kApplied);
  EXPECT_EQ(shard.Status().tables[0].rows, 1u);
}

// Every bad request: INVALID_ARGUMENT naming the problem; rows, optimizer
// state (seen through the next update) and θ as they were.
TEST(SparseTables, BadSparseInputChangesNothing) {
  for (ConsistencyMode mode :
       {ConsistencyMode::kAsync, ConsistencyMode::kSync}) {
    SCOPED_TRACE(ConsistencyModeName(mode));
    ParameterShard shard(Options(mode, 1, 0, 2));
    ParameterShard untouched(Options(mode, 1, 0, 2));
    for (ParameterShard* s : {&shard, &untouched}) {
      ASSERT_TRUE(InitShard(*s, Tables("adagrad")).ok());
      RegisterAll(*s, 1);
    }
    const std::vector<uint64_t> ids = IdsOf(0, 2, 3);
    const uint64_t foreign = IdsOf(1, 2, 1)[0];
    SparsePush good(0, 1, 0, ids, {1, 2, 3, 4, 5, 6});
    ASSERT_TRUE(shard.Push(good.args).ok());
    ASSERT_TRUE(untouched.Push(good.args).ok());
    const std::vector<float> rows = *Rows(shard, ids);

    struct Case {
      std::string what;
      std::function<void(PushArgs&)> spoil;
    };
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<Case> cases = {
        {"not a multiple of 8",
         [](PushArgs& a) { a.sparse[0].keys.pop_back(); }},
        {"keys × dim × 4", [](PushArgs& a) { a.sparse[0].values.pop_back(); }},
        {"unknown table 'nope'",
         [](PushArgs& a) { a.sparse[0].table = "nope"; }},
        {"nan",
         [&](PushArgs& a) {
           a.sparse[0].values = FloatBytes({1, 2, nan, 4, 5, 6});
         }},
        {"inf",
         [&](PushArgs& a) {
           a.sparse[0].values = FloatBytes({1, 2, 3, 4, 5, -inf});
         }},
        {"appears twice", [](PushArgs& a) { a.sparse.push_back(a.sparse[0]); }},
        {absl::StrCat("key ", foreign, " of table 'emb' belongs to shard 1"),
         [&](PushArgs& a) {
           a.sparse[0].keys = KeyBytes({ids[0], foreign, ids[2]});
         }},
        // A bad dense half refuses the sparse half with it.
        {"gradient value for key 0",
         [&](PushArgs& a) { a.gradient = absl::Cord(FloatBytes({nan})); }},
    };
    for (const Case& c : cases) {
      SCOPED_TRACE(c.what);
      SparsePush bad(0, 2, 1, ids, {9, 9, 9, 9, 9, 9});
      c.spoil(bad.args);
      absl::StatusOr<PushResult> refused = shard.Push(bad.args);
      ASSERT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(refused.status().message(), HasSubstr(c.what));
      EXPECT_EQ(*Rows(shard, ids), rows);
      EXPECT_EQ(shard.Status().tables[0].rows, 3u);
      EXPECT_EQ(shard.Status().version, 1u);
    }
    // Pulls are checked the same way.
    PullArgs pull;
    pull.sparse = {{"emb", KeyBytes({foreign}), ""}};
    EXPECT_EQ(
        shard
            .Pull(pull, absl::InfiniteFuture(), shard.NewPullTicket(), nullptr)
            ->status()
            .code(),
        absl::StatusCode::kInvalidArgument);
    pull.sparse = {{"emb", "1234567", ""}};
    EXPECT_THAT(
        shard
            .Pull(pull, absl::InfiniteFuture(), shard.NewPullTicket(), nullptr)
            ->status()
            .message(),
        HasSubstr("multiple of 8"));
    // The adagrad accumulators are as they were: the next update lands
    // exactly where it lands on a shard that never saw the bad pushes.
    SparsePush next(0, 2, 1, ids, {0.5f, 0.25f, 1, 2, 3, 4});
    ASSERT_TRUE(shard.Push(next.args).ok());
    ASSERT_TRUE(untouched.Push(next.args).ok());
    EXPECT_EQ(*Rows(shard, ids), *Rows(untouched, ids));
  }
}

// A shard of `workers` registered workers holding an adam table within
// `limit` bytes.
std::unique_ptr<ParameterShard> AdamShard(ShardOptions options,
                                          uint64_t limit) {
  options.table_memory_limit = limit;
  auto shard = std::make_unique<ParameterShard>(options);
  EXPECT_TRUE(InitShard(*shard, Tables("adam")).ok());
  for (uint32_t id = 0; id < options.num_workers; ++id) {
    EXPECT_TRUE(shard->Register(id, kIncarnation).ok());
  }
  return shard;
}

// Found by the shard fuzzer: an entry of no keys made ParsePush memcpy into
// an empty vector's null data (undefined; UBSan stops the asan build).
TEST(SparseTables, APushOfATableWithNoKeysIsAcceptedAndCreatesNoRow) {
  ParameterShard shard(Options(ConsistencyMode::kAsync, 1));
  ASSERT_TRUE(InitShard(shard, Tables("adagrad")).ok());
  RegisterAll(shard, 1);
  SparsePush empty(0, 1, 0, {}, {});
  ASSERT_TRUE(shard.Push(empty.args).ok());
  EXPECT_EQ(shard.Status().version, 1u);
  EXPECT_EQ(shard.Status().tables[0].rows, 0u);
}

// DumpTables is what the shard fuzzer compares around a rejected request:
// it must see every change a request can make, and none a read makes.
TEST(SparseTables, TheDumpSeesRowsRecencyAndStagedRowsButNotReads) {
  const std::vector<uint64_t> ids = IdsOf(0, 1, 2);
  // The same rows pushed in the other order: equal rows, other recency.
  std::vector<std::string> dumps;
  for (bool reversed : {false, true}) {
    ParameterShard shard(Options(ConsistencyMode::kAsync, 1));
    ASSERT_TRUE(InitShard(shard, Tables("adagrad")).ok());
    RegisterAll(shard, 1);
    const std::string empty = shard.DumpTables();
    ASSERT_TRUE(Rows(shard, ids).ok());
    EXPECT_EQ(shard.DumpTables(), empty) << "a read changed the dump";
    for (uint64_t seq = 1; seq <= 2; ++seq) {
      const uint64_t id = ids[(seq == 1) != reversed ? 0 : 1];
      ASSERT_TRUE(
          shard.Push(SparsePush(0, seq, seq - 1, {id}, {1, 2}).args).ok());
    }
    EXPECT_NE(shard.DumpTables(), empty);
    dumps.push_back(shard.DumpTables());
    if (reversed) {
      ParameterShard other(Options(ConsistencyMode::kAsync, 1));
      ASSERT_TRUE(InitShard(other, Tables("adagrad")).ok());
      RegisterAll(other, 1);
      ASSERT_TRUE(other.Push(SparsePush(0, 1, 0, {ids[0]}, {1, 2}).args).ok());
      ASSERT_TRUE(other.Push(SparsePush(0, 2, 1, {ids[1]}, {1, 2}).args).ok());
      EXPECT_EQ(*Rows(other, ids), *Rows(shard, ids));
    }
  }
  EXPECT_NE(dumps[0], dumps[1]) << "the dump misses the rows' recency";

  // Sync: a push held for the round changes no row, but the dump.
  ParameterShard sync(Options(ConsistencyMode::kSync, 2));
  ASSERT_TRUE(InitShard(sync, Tables()).ok());
  RegisterAll(sync, 2);
  const std::string before = sync.DumpTables();
  ASSERT_TRUE(sync.Push(SparsePush(0, 1, 0, ids, {1, 2, 3, 4}).args).ok());
  EXPECT_EQ(sync.Status().tables[0].rows, 0u);
  EXPECT_NE(sync.DumpTables(), before) << "the dump misses staged rows";
}

TEST(SparseTables, MemoryStaysUnderTheLimitWhileTenTimesItsRowsArePushed) {
  const ShardOptions options = Options(ConsistencyMode::kAsync, 1);
  std::unique_ptr<ParameterShard> owned = AdamShard(options, 256 << 10);
  ParameterShard& shard = *owned;
  const uint64_t capacity = shard.Status().tables[0].capacity_rows;
  ASSERT_GT(capacity, 100u);
  const uint64_t pushed = 10 * capacity;
  uint64_t seq = 1;
  for (uint64_t first = 0; first < pushed; first += 500) {
    std::vector<uint64_t> ids;
    for (uint64_t id = first; id < std::min(pushed, first + 500); ++id) {
      ids.push_back(id);
    }
    SparsePush push(0, seq, seq - 1, ids,
                    std::vector<float>(ids.size() * 2, 0.1f));
    ++seq;
    ASSERT_TRUE(shard.Push(push.args).ok());
    const TableStatus table = shard.Status().tables[0];
    ASSERT_LE(table.memory_bytes, uint64_t{256} << 10);
    ASSERT_LE(table.rows, capacity);
  }
  const TableStatus table = shard.Status().tables[0];
  EXPECT_EQ(table.rows, capacity);
  EXPECT_EQ(table.counters.created, pushed);
  EXPECT_EQ(table.counters.evicted, pushed - capacity);
  EXPECT_EQ(table.memory_limit_bytes, uint64_t{256} << 10);
}

TEST(SparseTables, TheMemoryLimitIsSharedInProportionToRowBytes) {
  ShardOptions options = Options(ConsistencyMode::kAsync, 1);
  options.table_memory_limit = 3 << 20;
  ParameterShard shard(options);
  ASSERT_TRUE(InitShard(shard, {{"wide", 4, "zeros", "", ""},
                                {"narrow", 2, "zeros", "", ""}})
                  .ok());
  const std::vector<TableStatus> tables = shard.Status().tables;
  ASSERT_EQ(tables.size(), 2u);
  EXPECT_EQ(tables[0].memory_limit_bytes, 2u << 20);
  EXPECT_EQ(tables[1].memory_limit_bytes, 1u << 20);
}

// The rows `count` ids from `first` on, with values that depend on the id.
SparsePush PushOfIds(uint32_t worker, uint64_t seq, uint64_t version,
                     uint64_t first, uint64_t count) {
  std::vector<uint64_t> ids;
  std::vector<float> rows;
  for (uint64_t id = first; id < first + count; ++id) {
    ids.push_back(id);
    rows.push_back(0.01f * static_cast<float>(id % 13) - 0.05f);
    rows.push_back(0.2f - 0.03f * static_cast<float>(id % 5));
  }
  return SparsePush(worker, seq, version, ids, rows);
}

std::string Checkpoint(const ParameterShard& shard) {
  absl::StatusOr<common::ThetaFile> file = shard.Snapshot();
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? common::EncodeThetaFile(*file) : "";
}

// A sync shard full of adam rows with an open round is checkpointed into a
// fresh shard; both then take the same pushes (that close the round and
// evict rows) and must stay byte for byte alike: rows, Adam's moments, the
// eviction order and the open round all came back.
TEST(SparseTables, ACheckpointBringsBackRowsStateEvictionOrderAndOpenRound) {
  const ShardOptions options = Options(ConsistencyMode::kSync, 2);
  std::unique_ptr<ParameterShard> owned = AdamShard(options, 64 << 10);
  ParameterShard& original = *owned;
  const uint64_t capacity = original.Status().tables[0].capacity_rows;
  ASSERT_GT(capacity, 20u);
  // Round 0 fills the table (rows are created in id order), round 1
  // updates its lowest ids again, so that the eviction order is not the id
  // order; round 2 is open with worker 0's rows.
  ASSERT_TRUE(original.Push(PushOfIds(0, 1, 0, 0, capacity / 2).args).ok());
  ASSERT_TRUE(
      original.Push(PushOfIds(1, 1, 0, capacity / 3, capacity).args).ok());
  ASSERT_TRUE(original.Push(PushOfIds(0, 2, 1, capacity / 3, 5).args).ok());
  ASSERT_TRUE(original.Push(PushOfIds(1, 2, 1, capacity / 3, 5).args).ok());
  ASSERT_EQ(original.Status().version, 2u);
  ASSERT_TRUE(original.Push(PushOfIds(0, 3, 2, 5, 10).args).ok());
  ASSERT_EQ(original.Status().round_gradients, 1u);

  const std::string saved = Checkpoint(original);
  absl::StatusOr<common::ThetaFile> file =
      common::DecodeThetaFile(saved, "checkpoint");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->tables.size(), 1u);
  EXPECT_EQ(file->tables[0].state_names, (std::vector<std::string>{"m", "v"}));
  ShardOptions same = options;
  same.table_memory_limit = 64 << 10;
  ParameterShard restored(same);
  ASSERT_TRUE(restored.Restore(*file).ok());
  EXPECT_TRUE(Checkpoint(restored) == saved)
      << "the restored shard checkpoints other bytes than it was given";

  // Worker 1 closes round 2 with ids the table has no room for, then both
  // push a round of new ones: each evicts the least recently updated rows.
  for (ParameterShard* shard : {&original, &restored}) {
    ASSERT_TRUE(
        shard->Push(PushOfIds(1, 3, 2, 2 * capacity, capacity / 4).args).ok());
    ASSERT_TRUE(shard->Push(PushOfIds(0, 4, 3, 3 * capacity, 7).args).ok());
    ASSERT_TRUE(shard->Push(PushOfIds(1, 4, 3, 0, 3).args).ok());
    ASSERT_EQ(shard->Status().version, 4u);
    ASSERT_GT(shard->Status().tables[0].counters.evicted, 0u);
  }
  EXPECT_TRUE(Checkpoint(restored) == Checkpoint(original))
      << "the restored shard went on otherwise than the original";
}

// Rows of another shard in a checkpoint are refused, and the shard stays
// without a model.
TEST(SparseTables, ARestoreOfAnotherShardsRowsIsRefused) {
  ParameterShard one(Options(ConsistencyMode::kAsync, 1));
  ASSERT_TRUE(InitShard(one, Tables()).ok());
  RegisterAll(one, 1);
  ASSERT_TRUE(one.Push(PushOfIds(0, 1, 0, 0, 20).args).ok());
  absl::StatusOr<common::ThetaFile> file = one.Snapshot();
  ASSERT_TRUE(file.ok()) << file.status();
  file->shard_index = 1;
  file->num_shards = 2;
  file->keys = {1, 1};
  file->values.clear();
  file->state.assign(file->state.size(), {});
  ParameterShard second(Options(ConsistencyMode::kAsync, 1, 1, 2));
  const absl::Status restored = second.Restore(*file);
  EXPECT_EQ(restored.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(restored.message(), HasSubstr("belongs to shard 0 of 2"));
  EXPECT_FALSE(second.Snapshot().ok());
  EXPECT_TRUE(second.Status().tables.empty());
}

// A checkpoint's open round is merged per worker as a push leaves it (each
// id once, increasing, on this shard): anything else is damage, refused
// before the restore changes anything.
TEST(SparseTables, AnOpenRoundOfForeignOrUnsortedRowsIsDataLoss) {
  SparseTables tables(Options(ConsistencyMode::kSync, 2, 1, 2));
  ASSERT_TRUE(tables.Declare(Tables(), kSeed).ok());
  const std::vector<common::SavedTable> saved = tables.Save();
  std::vector<uint64_t> mine;
  uint64_t foreign = 0;
  for (uint64_t id = 1; mine.size() < 2 || foreign == 0; ++id) {
    if (common::ShardOfId(id, 2) == 1) {
      mine.push_back(id);
    } else {
      foreign = id;
    }
  }
  const auto check = [&](std::vector<uint64_t> ids) {
    const std::vector<float> rows(ids.size() * 2, 0.25f);
    return tables.CheckRows({{0, std::move(ids), rows}}, saved);
  };
  EXPECT_TRUE(check({mine[0], mine[1]}).ok());
  const absl::Status foreign_row = check({mine[0], foreign});
  EXPECT_EQ(foreign_row.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(foreign_row.message(),
              HasSubstr(absl::StrCat("holds row ", foreign,
                                     " of table 'emb', "
                                     "which belongs to another shard")));
  EXPECT_EQ(check({mine[1], mine[0]}).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(check({mine[0], mine[0]}).code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace ps::server
