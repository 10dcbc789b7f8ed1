#include "common/theta_file.h"

#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "zlib.h"

namespace ps::common {
namespace {

ThetaFile SmallCheckpoint() {
  ThetaFile file;
  file.tensors = {{"w", {2, 3}, false}, {"b", {3}, true}};
  file.keys = {2, 7};
  file.shard_index = 1;
  file.num_shards = 2;
  file.mode = ConsistencyMode::kSync;
  file.version = 42;
  file.samples_applied = 4200;
  file.values = {0.5f, -1.25f, 3.0f, 1e-30f, -0.0f};
  file.tensors[0].optimizer = "adam(beta1=0.8)";
  file.tensors[1].lr_schedule = "cosine:100";
  file.optimizer = "momentum";
  file.lr_schedule = "step:10:0.5";
  file.state_names = {"velocity"};
  file.state = {{0.1f, 0.2f, 0.3f, 0.4f, 0.5f}};
  file.workers = {{0, 7, 11, 10, 11, 11, WorkerState::kLive, false},
                  {3, 9, 5, 4, 5, 5, WorkerState::kExpired, false},
                  {4, 2, 8, 7, 8, 8, WorkerState::kLeft, true},
                  {5, 3, 1, 0, 1, 1, WorkerState::kLeft, false}};
  file.round = {{3, 64, {1, 2, 3, 4, 5}, {}}};
  return file;
}

void ExpectSame(const ThetaFile& a, const ThetaFile& b) {
  EXPECT_EQ(DescribeDifference(a.tensors, b.tensors), "");
  EXPECT_EQ(a.tensors[1].exempt_from_regularization,
            b.tensors[1].exempt_from_regularization);
  EXPECT_EQ(a.keys, b.keys);
  EXPECT_EQ(a.shard_index, b.shard_index);
  EXPECT_EQ(a.num_shards, b.num_shards);
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.samples_applied, b.samples_applied);
  EXPECT_EQ(a.values, b.values);
  EXPECT_EQ(a.optimizer, b.optimizer);
  EXPECT_EQ(a.lr_schedule, b.lr_schedule);
  EXPECT_EQ(a.state_names, b.state_names);
  EXPECT_EQ(a.state, b.state);
  ASSERT_EQ(a.workers.size(), b.workers.size());
  for (size_t i = 0; i < a.workers.size(); ++i) {
    EXPECT_EQ(a.workers[i].worker_id, b.workers[i].worker_id);
    EXPECT_EQ(a.workers[i].incarnation, b.workers[i].incarnation);
    EXPECT_EQ(a.workers[i].last_seq, b.workers[i].last_seq);
    EXPECT_EQ(a.workers[i].last_step, b.workers[i].last_step);
    EXPECT_EQ(a.workers[i].pushes, b.workers[i].pushes);
    EXPECT_EQ(a.workers[i].clock, b.workers[i].clock);
    EXPECT_EQ(a.workers[i].state, b.workers[i].state);
    EXPECT_EQ(a.workers[i].finished, b.workers[i].finished);
    EXPECT_EQ(a.workers[i].idle, b.workers[i].idle);
    EXPECT_EQ(a.workers[i].late, b.workers[i].late);
  }
  ASSERT_EQ(a.round.size(), b.round.size());
  EXPECT_EQ(a.round[0].worker_id, b.round[0].worker_id);
  EXPECT_EQ(a.round[0].batch_size, b.round[0].batch_size);
  EXPECT_EQ(a.round[0].values, b.round[0].values);
}

TEST(ThetaFile, RoundTripsThetaOptimizerStateWorkersAndTheOpenRound) {
  const ThetaFile original = SmallCheckpoint();
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(EncodeThetaFile(original), "test");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ExpectSame(original, *decoded);
}

// Found by tests/fuzz/parameter_shard_fuzzer: a shard of a model with fewer
// keys than shards holds none, and reading its empty θ passed memcpy a null
// pointer (undefined behaviour: the ASan + UBSan build fails here).
TEST(ThetaFile, AShardWithoutKeysRoundTrips) {
  ThetaFile file = SmallCheckpoint();
  file.tensors = {{"w", {1}, false}};
  file.keys = {1, 1};
  file.shard_index = 1;
  file.num_shards = 3;
  file.values.clear();
  file.state = {{}};
  file.round = {{3, 64, {}, {}}};
  absl::StatusOr<ThetaFile> read =
      DecodeThetaFile(EncodeThetaFile(file), "empty shard");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->values.empty());
  EXPECT_EQ(read->keys, file.keys);
  ASSERT_EQ(read->round.size(), 1u);
  EXPECT_TRUE(read->round[0].values.empty());
}

// A shard before Init: its workers and no model, what a joining backup is
// sent. Values without a model are corrupt.
TEST(ThetaFile, AShardsWorkersWithoutAModelRoundTripAndValuesAloneDoNot) {
  ThetaFile file;
  file.mode = ConsistencyMode::kSync;
  file.workers = SmallCheckpoint().workers;
  absl::StatusOr<ThetaFile> read =
      DecodeThetaFile(EncodeThetaFile(file), "workers");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->tensors.empty());
  ASSERT_EQ(read->workers.size(), file.workers.size());
  EXPECT_EQ(read->workers[1].incarnation, file.workers[1].incarnation);
  file.values = {1.0f};
  EXPECT_EQ(DecodeThetaFile(EncodeThetaFile(file), "values").status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(ThetaFile, RoundTripsTheRuleSettings) {
  ThetaFile original = SmallCheckpoint();
  RuleSettings rules;
  rules.update.learning_rate = 0.25f;
  rules.update.l2 = 1e-3f;
  rules.update.l1 = 2e-4f;
  rules.update.clip_min = -2.0f;
  rules.update.nonnegative = true;
  rules.update.max_norm = 9.0f;
  rules.update.penalty_beta = 0.5f;
  rules.sync_quorum = 3;
  rules.staleness = 2;
  original.rules = rules;
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(EncodeThetaFile(original), "rules");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_TRUE(decoded->rules.has_value());
  const UpdateOptions& u = decoded->rules->update;
  EXPECT_EQ(u.learning_rate, 0.25f);
  EXPECT_EQ(u.l2, 1e-3f);
  EXPECT_EQ(u.l1, 2e-4f);
  EXPECT_EQ(u.clip_min, -2.0f);
  EXPECT_EQ(u.clip_max, std::numeric_limits<float>::infinity());
  EXPECT_TRUE(u.nonnegative);
  EXPECT_EQ(u.max_norm, 9.0f);
  EXPECT_EQ(u.penalty_beta, 0.5f);
  EXPECT_EQ(decoded->rules->sync_quorum, 3u);
  EXPECT_EQ(decoded->rules->staleness, 2u);
  // An export records none.
  decoded = DecodeThetaFile(EncodeThetaFile(SmallCheckpoint()), "none");
  ASSERT_TRUE(decoded.ok());
  EXPECT_FALSE(decoded->rules.has_value());
}

// A format 2 file ("PSTHETA2": the mode as its name, each worker's state as
// one live/finished byte), as the encoder of that format wrote it: an ssp
// checkpoint with rule settings and a live, an expired and a finished
// worker.
const std::string& FormatTwoFile() {
  static const std::string* bytes = new std::string(
      "\x50\x53\x54\x48\x45\x54\x41\x32\x02\x00\x00\x00\x00\x00\x00\x00"
      "\x01\x00\x00\x00\x00\x00\x00\x00\x77\x02\x00\x00\x00\x00\x00\x00"
      "\x00\x02\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00"
      "\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x62\x01\x00\x00\x00\x00"
      "\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x01\x02\x00\x00\x00"
      "\x00\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00"
      "\x02\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x73\x73\x70\x2a"
      "\x00\x00\x00\x00\x00\x00\x00\x68\x10\x00\x00\x00\x00\x00\x00\x03"
      "\x00\x00\x00\x00\x00\x00\x00\x73\x67\x64\x00\x00\x00\x3f\x00\x00"
      "\xa0\xbf\x00\x00\x40\x40\x60\x42\xa2\x0d\x00\x00\x00\x80\x00\x00"
      "\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00"
      "\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x0b\x00\x00\x00\x00\x00"
      "\x00\x00\x0a\x00\x00\x00\x00\x00\x00\x00\x0b\x00\x00\x00\x00\x00"
      "\x00\x00\x0b\x00\x00\x00\x00\x00\x00\x00\x01\x03\x00\x00\x00\x09"
      "\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x04"
      "\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x05"
      "\x00\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x02\x00\x00\x00"
      "\x00\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x00"
      "\x00\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x08\x00\x00\x00"
      "\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00"
      "\x80\x3e\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\xff\x00\x00"
      "\x80\x7f\x00\x00\x00\x80\x7f\x00\x00\x00\x00\x00\x00\x00\x00\x02"
      "\x00\x00\x00\x22\xf1\xab\xcd",
      359);
  return *bytes;
}

std::string WithChecksum(std::string body) {
  const uint32_t crc = static_cast<uint32_t>(
      crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(body.data()),
            static_cast<uInt>(body.size())));
  body.append(reinterpret_cast<const char*>(&crc), sizeof(crc));
  return body;
}

TEST(ThetaFile, WritesFormatSix) {
  EXPECT_EQ(EncodeThetaFile(SmallCheckpoint()).substr(0, 8), "PSTHETA6");
}

// A worker waiting idle for a data partition is marked in its flags byte
// (bit 1, beside finished), as is one late for the open round (bit 2): a
// file without either keeps the bytes it always had, so older files read
// as no worker idle or late.
TEST(ThetaFile, AnIdleWorkerRoundTripsInItsFlagsByte) {
  ThetaFile file = SmallCheckpoint();
  const std::string without = EncodeThetaFile(file);
  file.workers[0].idle = true;
  const std::string with = EncodeThetaFile(file);
  ASSERT_EQ(with.size(), without.size());
  size_t differing = 0;
  for (size_t i = 0; i + sizeof(uint32_t) < with.size(); ++i) {
    differing += with[i] != without[i];
  }
  EXPECT_EQ(differing, 1u) << "only worker 0's flags byte";
  absl::StatusOr<ThetaFile> decoded = DecodeThetaFile(with, "idle");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ExpectSame(file, *decoded);
  EXPECT_TRUE(decoded->workers[0].idle);
  decoded = DecodeThetaFile(without, "not idle");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  for (const WorkerRecord& w : decoded->workers) {
    EXPECT_FALSE(w.idle);
    EXPECT_FALSE(w.late);
  }
  // A worker late for the open round: bit 2 of the same byte.
  file.workers[0].late = true;
  const std::string late = EncodeThetaFile(file);
  ASSERT_EQ(late.size(), without.size());
  decoded = DecodeThetaFile(late, "late");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->workers[0].idle);
  EXPECT_TRUE(decoded->workers[0].late);
}

TEST(ThetaFile, AnUnknownWorkerFlagIsDataLoss) {
  ThetaFile file = SmallCheckpoint();
  file.workers[0].idle = true;
  const std::string idle = EncodeThetaFile(file);
  file.workers[0].idle = false;
  std::string bytes = EncodeThetaFile(file);
  size_t at = 0;
  while (idle[at] == bytes[at]) ++at;
  bytes.resize(bytes.size() - sizeof(uint32_t));
  bytes[at] = 8;  // bits 0-2 are finished, idle and late
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(WithChecksum(bytes), "bad flags");
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss);
}

// Format 6's tail without a partition table: its presence byte.
constexpr size_t kNoPartitionsTailBytes = 1;

// Format 5's and 6's tails for a file without tables or partitions: the
// model seed, no tables, no sparse part for each of the open round's
// gradients, and no partition table.
size_t TablelessTailBytes(const ThetaFile& file) {
  return 8 + 8 + 8 * file.round.size() + kNoPartitionsTailBytes;
}

// Shard 0's partition table: one of each state.
ThetaFile CheckpointWithPartitions() {
  ThetaFile file = SmallCheckpoint();
  SavedPartitions saved;
  saved.plan = {60000, 3, 2, 9};
  saved.records = {{PartitionState::kDone, 1, 5},
                   {PartitionState::kLeased, 0, 7},
                   {PartitionState::kFree, 0, 0},
                   {PartitionState::kFree, 0, 0},
                   {PartitionState::kLeased, 2, uint64_t{1} << 40},
                   {PartitionState::kDone, 0, 7}};
  file.partitions = saved;
  return file;
}

TEST(ThetaFile, PartitionTableRoundTrips) {
  const ThetaFile file = CheckpointWithPartitions();
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(EncodeThetaFile(file), "partitions");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ExpectSame(file, *decoded);
  ASSERT_TRUE(decoded->partitions.has_value());
  EXPECT_EQ(decoded->partitions->plan, file.partitions->plan);
  EXPECT_EQ(decoded->partitions->records, file.partitions->records);
  // Without one, none comes back.
  absl::StatusOr<ThetaFile> none =
      DecodeThetaFile(EncodeThetaFile(SmallCheckpoint()), "none");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->partitions.has_value());
}

// A plan with a held-out fold keeps it (presence byte 2); one without
// writes the bytes it always did (presence byte 1).
TEST(ThetaFile, APartitionTableWithAHeldOutFoldRoundTrips) {
  ThetaFile file = CheckpointWithPartitions();
  const std::string without = EncodeThetaFile(file);
  file.partitions->plan.kfold = 3;
  file.partitions->plan.fold = 2;
  const std::string with = EncodeThetaFile(file);
  EXPECT_EQ(with.size(), without.size() + 2 * sizeof(uint32_t));
  absl::StatusOr<ThetaFile> decoded = DecodeThetaFile(with, "folds");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_TRUE(decoded->partitions.has_value());
  EXPECT_EQ(decoded->partitions->plan, file.partitions->plan);
  EXPECT_EQ(decoded->partitions->records, file.partitions->records);
}

TEST(ThetaFile, AMalformedPartitionTableIsDataLoss) {
  std::string bytes = EncodeThetaFile(CheckpointWithPartitions());
  // The last record's state byte: 1 + 4 + 8 bytes from the checksum.
  bytes.resize(bytes.size() - sizeof(uint32_t));
  bytes[bytes.size() - 13] = 3;
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(WithChecksum(bytes), "bad state");
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss);
}

// Checkpoints written before the partition table was saved (format 5:
// format 6 without its tail) still restore, with no table.
TEST(ThetaFile, AFormatFiveFileStillReads) {
  const ThetaFile file = SmallCheckpoint();
  std::string bytes = EncodeThetaFile(file);
  bytes.resize(bytes.size() - sizeof(uint32_t) - kNoPartitionsTailBytes);
  bytes[7] = '5';
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(WithChecksum(bytes), "v5");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ExpectSame(file, *decoded);
  EXPECT_FALSE(decoded->partitions.has_value());
}

// Checkpoints written before tables were saved (format 4: format 5 without
// its tail) still restore.
TEST(ThetaFile, AFormatFourFileStillReads) {
  const ThetaFile file = SmallCheckpoint();
  std::string bytes = EncodeThetaFile(file);
  bytes.resize(bytes.size() - sizeof(uint32_t) - TablelessTailBytes(file));
  bytes[7] = '4';
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(WithChecksum(bytes), "v4");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ExpectSame(file, *decoded);
  EXPECT_TRUE(decoded->tables.empty());
}

// A checkpoint of a model with one table per optimizer: every row with
// every state vector its optimizer keeps, the eviction order, the counters
// and the open round's sparse rows.
ThetaFile CheckpointWithTables() {
  ThetaFile file = SmallCheckpoint();
  file.model_seed = 0x5eed;
  const std::vector<std::pair<std::string, std::vector<std::string>>>
      optimizers = {{"sgd", {}},
                    {"momentum", {"velocity"}},
                    {"adagrad", {"accumulator"}},
                    {"adam", {"m", "v"}},
                    {"ftrl", {"z", "n"}}};
  for (size_t t = 0; t < optimizers.size(); ++t) {
    SavedTable& table = file.tables.emplace_back();
    table.spec = {"emb_" + optimizers[t].first, static_cast<uint32_t>(t + 1),
                  "normal(0.01)", optimizers[t].first, "cosine:50"};
    table.state_names = optimizers[t].second;
    table.ids = {3, 17, uint64_t{1} << 63};
    table.recency = {2, 0, 1};
    for (size_t i = 0; i < table.ids.size() * table.stride(); ++i) {
      table.rows.push_back(0.25f * static_cast<float>(i) - 1.0f + t);
    }
    table.created = 5 + t;
    table.evicted = 2;
    table.refused = t;
  }
  file.round[0].tables = {{1, {4, 9}, {0.5f, -0.5f, 1.5f, -1.5f}},
                          {3, {7}, {1, 2, 3, 4}}};
  return file;
}

void ExpectSameTables(const ThetaFile& a, const ThetaFile& b) {
  EXPECT_EQ(a.model_seed, b.model_seed);
  auto table_fields = [](const SavedTable& t) {
    return std::tie(t.spec, t.state_names, t.ids, t.rows, t.recency, t.created,
                    t.evicted, t.refused);
  };
  ASSERT_EQ(a.tables.size(), b.tables.size());
  for (size_t t = 0; t < a.tables.size(); ++t) {
    EXPECT_TRUE(table_fields(a.tables[t]) == table_fields(b.tables[t]))
        << "table " << t;
  }
  auto part_fields = [](const TableRows& p) {
    return std::tie(p.table, p.ids, p.rows);
  };
  ASSERT_EQ(a.round.size(), b.round.size());
  for (size_t g = 0; g < a.round.size(); ++g) {
    ASSERT_EQ(a.round[g].tables.size(), b.round[g].tables.size());
    for (size_t i = 0; i < a.round[g].tables.size(); ++i) {
      EXPECT_TRUE(part_fields(a.round[g].tables[i]) ==
                  part_fields(b.round[g].tables[i]))
          << "round gradient " << g << ", part " << i;
    }
  }
}

TEST(ThetaFile, RoundTripsTablesWithEveryOptimizersStateAndTheOpenRound) {
  const ThetaFile original = CheckpointWithTables();
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(EncodeThetaFile(original), "tables");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ExpectSame(original, *decoded);
  ExpectSameTables(original, *decoded);
}

TEST(ThetaFile, ATableOnlyModelExportRoundTrips) {
  ThetaFile model;
  SavedTable& table = model.tables.emplace_back();
  table.spec = {"emb", 2, "zeros", "", ""};
  table.ids = {1, 2};
  table.rows = {1, 2, 3, 4};
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(EncodeThetaFile(model), "export");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ExpectSameTables(model, *decoded);
  EXPECT_TRUE(decoded->tables[0].recency.empty());
}

TEST(ThetaFile, EveryTruncationOrFlipOfATableFileIsDetected) {
  const std::string bytes = EncodeThetaFile(CheckpointWithTables());
  for (size_t length = 0; length < bytes.size(); ++length) {
    ASSERT_FALSE(
        DecodeThetaFile(absl::string_view(bytes).substr(0, length), "cut").ok())
        << "truncated to " << length << " bytes";
  }
  for (size_t at = 0; at < bytes.size(); ++at) {
    std::string corrupt = bytes;
    corrupt[at] = static_cast<char>(corrupt[at] ^ 0x10);
    EXPECT_FALSE(DecodeThetaFile(corrupt, "flipped").ok()) << "byte " << at;
  }
}

// With a valid checksum, so that only the layout checks can catch them.
TEST(ThetaFile, MalformedTablesAreDataLossNamingTheProblem) {
  struct Case {
    std::string what;
    std::function<void(ThetaFile&)> spoil;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"ids out of order",
       [](ThetaFile& f) { std::swap(f.tables[1].ids[0], f.tables[1].ids[1]); },
       "out of order"},
      {"eviction order repeats a rank",
       [](ThetaFile& f) {
         f.tables[2].recency = {0, 0, 1};
       },
       "eviction order"},
      {"a NaN in a row's state",
       [](ThetaFile& f) {
         f.tables[3].rows.back() = std::numeric_limits<float>::quiet_NaN();
       },
       "not finite"},
      {"a round's part of an unknown table",
       [](ThetaFile& f) { f.round[0].tables[1].table = 99; }, "layout"},
      {"two tables of one name",
       [](ThetaFile& f) { f.tables[1].spec.name = f.tables[0].spec.name; },
       "emb_sgd"},
  };
  for (const Case& c : cases) {
    ThetaFile file = CheckpointWithTables();
    c.spoil(file);
    absl::StatusOr<ThetaFile> decoded =
        DecodeThetaFile(EncodeThetaFile(file), "spoilt");
    ASSERT_FALSE(decoded.ok()) << c.what;
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss) << c.what;
    EXPECT_NE(decoded.status().message().find(c.expected), std::string::npos)
        << c.what << ": " << decoded.status();
  }
}

// A row count that would need far more memory than the file holds is
// refused before anything is allocated.
TEST(ThetaFile, AHugeRowCountIsRefusedWithoutAllocatingIt) {
  ThetaFile file;
  SavedTable& table = file.tables.emplace_back();
  table.spec = {"emb", 4, "zeros", "", ""};
  table.ids = {1};
  table.rows = {1, 2, 3, 4};
  std::string bytes = EncodeThetaFile(file);
  bytes.resize(bytes.size() - sizeof(uint32_t));
  // The row count sits before the recency flag, the id, the row and
  // format 6's tail.
  const size_t count_at =
      bytes.size() - kNoPartitionsTailBytes - 4 * 4 - 8 - 1 - 8;
  uint64_t count = 0;
  std::memcpy(&count, bytes.data() + count_at, sizeof(count));
  ASSERT_EQ(count, 1u);
  count = uint64_t{1} << 60;
  std::memcpy(bytes.data() + count_at, &count, sizeof(count));
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(WithChecksum(bytes), "huge");
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss);
}

// Checkpoints written before tensors named their optimizers (format 3:
// format 4 without its tail) still restore, each tensor on the server's.
TEST(ThetaFile, AFormatThreeFileStillReads) {
  ThetaFile file = SmallCheckpoint();
  file.tensors[0].optimizer.clear();
  file.tensors[1].lr_schedule.clear();
  file.lr_schedule = "constant";
  std::string bytes = EncodeThetaFile(file);
  bytes.resize(bytes.size() - sizeof(uint32_t));
  // The tail: two empty strings per tensor, then "constant", each with its
  // 8-byte length, then format 5's.
  bytes.resize(bytes.size() - 2 * 2 * 8 - (8 + 8) - TablelessTailBytes(file));
  bytes[7] = '3';
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(WithChecksum(bytes), "v3");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ExpectSame(file, *decoded);
  EXPECT_EQ(decoded->tensors[0].optimizer, "");
  EXPECT_EQ(decoded->lr_schedule, "constant");
}

// Checkpoints written before the mode and the workers' states became enum
// codes still restore, with the same meaning.
TEST(ThetaFile, AFormatTwoFileStillReads) {
  absl::StatusOr<ThetaFile> decoded = DecodeThetaFile(FormatTwoFile(), "v2");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->mode, ConsistencyMode::kSsp);
  EXPECT_EQ(decoded->version, 42u);
  EXPECT_EQ(decoded->values,
            (std::vector<float>{0.5f, -1.25f, 3.0f, 1e-30f, -0.0f}));
  ASSERT_EQ(decoded->workers.size(), 3u);
  EXPECT_EQ(decoded->workers[0].state, WorkerState::kLive);
  EXPECT_FALSE(decoded->workers[0].finished);
  EXPECT_EQ(decoded->workers[0].last_seq, 11u);
  EXPECT_EQ(decoded->workers[1].state, WorkerState::kExpired);
  EXPECT_FALSE(decoded->workers[1].finished);
  EXPECT_EQ(decoded->workers[2].state, WorkerState::kLeft);
  EXPECT_TRUE(decoded->workers[2].finished);
  ASSERT_TRUE(decoded->rules.has_value());
  EXPECT_EQ(decoded->rules->update.learning_rate, 0.25f);
  EXPECT_EQ(decoded->rules->staleness, 2u);
  // Read back and written again, it is format 4 with the same content.
  absl::StatusOr<ThetaFile> again =
      DecodeThetaFile(EncodeThetaFile(*decoded), "v3");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->mode, ConsistencyMode::kSsp);
  EXPECT_EQ(again->workers[2].state, WorkerState::kLeft);
}

// Files written before the rule settings were recorded (format 1: magic
// PSTHETA1, no settings) still restore.
TEST(ThetaFile, AFormatOneFileStillReads) {
  std::string bytes = FormatTwoFile();
  // Format 1 is format 2 without its settings: a presence byte and 37
  // bytes (7 floats, a flag, 2 uint32) before the checksum.
  bytes.resize(bytes.size() - sizeof(uint32_t));
  bytes.resize(bytes.size() - 1 - 37);
  bytes[7] = '1';
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(WithChecksum(bytes), "v1");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->mode, ConsistencyMode::kSsp);
  EXPECT_EQ(decoded->workers.size(), 3u);
  EXPECT_FALSE(decoded->rules.has_value());
}

TEST(ThetaFile, AFormatTwoFileWithAnUnknownModeIsRefused) {
  std::string bytes = FormatTwoFile();
  bytes.resize(bytes.size() - sizeof(uint32_t));
  const size_t at = bytes.find("ssp");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 3, "sxp");
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(WithChecksum(bytes), "v2");
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss);
}

TEST(ThetaFile, RoundTripsThroughDisk) {
  const std::string path = ::testing::TempDir() + "/theta_file_test.theta";
  const ThetaFile original = SmallCheckpoint();
  ASSERT_TRUE(WriteThetaFile(path, original).ok());
  absl::StatusOr<ThetaFile> read = ReadThetaFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ExpectSame(original, *read);
  EXPECT_EQ(ReadThetaFile(path + ".missing").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ThetaFile, EveryTruncationIsDetected) {
  const std::string bytes = EncodeThetaFile(SmallCheckpoint());
  for (size_t length = 0; length < bytes.size(); ++length) {
    absl::StatusOr<ThetaFile> decoded =
        DecodeThetaFile(absl::string_view(bytes).substr(0, length), "cut");
    ASSERT_FALSE(decoded.ok()) << "truncated to " << length << " bytes";
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(decoded.status().message().find("cut:"), std::string::npos);
  }
  EXPECT_FALSE(DecodeThetaFile(bytes + "x", "padded").ok());
}

TEST(ThetaFile, EveryFlippedByteIsDetected) {
  const std::string bytes = EncodeThetaFile(SmallCheckpoint());
  for (size_t at = 0; at < bytes.size(); ++at) {
    std::string corrupt = bytes;
    corrupt[at] = static_cast<char>(corrupt[at] ^ 0x10);
    EXPECT_FALSE(DecodeThetaFile(corrupt, "flipped").ok()) << "byte " << at;
  }
}

TEST(ThetaFile, AWholeModelExportHasNoServerState) {
  ThetaFile model;
  model.tensors = {{"w", {4}, false}};
  model.keys = {0, 4};
  model.values = {1, 2, 3, 4};
  absl::StatusOr<ThetaFile> decoded =
      DecodeThetaFile(EncodeThetaFile(model), "export");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->values, model.values);
  EXPECT_TRUE(decoded->workers.empty());
  EXPECT_TRUE(decoded->round.empty());
}

}  // namespace
}  // namespace ps::common
