#include "server/embedding_table.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "common/optimizer.h"
#include "common/splitmix64.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

// Every allocation of this test binary, counted: the bytes the table says
// it holds are checked against what it really asked the allocator for.
namespace {
std::atomic<int64_t> live_bytes{0};
constexpr size_t kHeader = alignof(std::max_align_t);

void* CountedAllocateOrNull(size_t size) {
  void* block = std::malloc(size + kHeader);
  if (block == nullptr) return nullptr;
  *static_cast<size_t*>(block) = size;
  live_bytes += static_cast<int64_t>(size);
  return static_cast<char*>(block) + kHeader;
}

void* CountedAllocate(size_t size) {
  void* p = CountedAllocateOrNull(size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void CountedFree(void* p) {
  if (p == nullptr) return;
  void* block = static_cast<char*>(p) - kHeader;
  live_bytes -= static_cast<int64_t>(*static_cast<size_t*>(block));
  std::free(block);
}
}  // namespace

void* operator new(size_t size) { return CountedAllocate(size); }
void* operator new[](size_t size) { return CountedAllocate(size); }
// The nothrow forms too (std::stable_sort's buffer): ASan's own would hand
// out blocks without the header the deletes below read.
void* operator new(size_t size, const std::nothrow_t&) noexcept {
  return CountedAllocateOrNull(size);
}
void* operator new[](size_t size, const std::nothrow_t&) noexcept {
  return CountedAllocateOrNull(size);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  CountedFree(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  CountedFree(p);
}
void operator delete(void* p) noexcept { CountedFree(p); }
void operator delete[](void* p) noexcept { CountedFree(p); }
void operator delete(void* p, size_t) noexcept { CountedFree(p); }
void operator delete[](void* p, size_t) noexcept { CountedFree(p); }

namespace ps::server {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<EmbeddingTable> MakeTable(const EmbeddingTableOptions& o) {
  absl::StatusOr<std::unique_ptr<EmbeddingTable>> table =
      EmbeddingTable::Create(o);
  EXPECT_TRUE(table.ok()) << table.status();
  return table.ok() ? std::move(*table) : nullptr;
}

std::vector<float> Looked(const EmbeddingTable& table,
                          const std::vector<uint64_t>& ids) {
  std::vector<float> out(ids.size() * table.dim());
  table.Lookup(ids, absl::MakeSpan(out));
  return out;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

common::UpdateOptions Rule() {
  common::UpdateOptions u;
  u.learning_rate = 0.1f;
  u.l2 = 0.01f;
  u.l1 = 0.001f;
  return u;
}

EmbeddingTableOptions NormalRows() {
  EmbeddingTableOptions o;
  o.dim = 5;
  o.initializer.kind = RowInitializer::Kind::kNormal;
  o.initializer.scale = 0.1f;
  o.model_seed = 42;
  o.table_index = 3;
  return o;
}

TEST(EmbeddingTable, InitialRowsDependOnlyOnSeedTableAndId) {
  EmbeddingTableOptions o = NormalRows();
  o.optimizer.kind = common::OptimizerKind::kAdagrad;
  std::unique_ptr<EmbeddingTable> first = MakeTable(o);
  std::unique_ptr<EmbeddingTable> second = MakeTable(o);
  const std::vector<uint64_t> ids = {7, uint64_t{1} << 40, 3, 99};
  const std::vector<float> ones(ids.size() * o.dim, 1.0f);
  // Rows created in another order, by other batches, or not at all, start
  // from the same values: one update of each shows it.
  ASSERT_TRUE(first->ApplyGradient(Rule(), 1, ids, ones).ok());
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    ASSERT_TRUE(
        second->ApplyGradient(Rule(), 1, {*it}, std::vector<float>(o.dim, 1.0f))
            .ok());
  }
  EXPECT_TRUE(SameBits(Looked(*first, ids), Looked(*second, ids)));
  // A table that never stored them serves the initial values, the same as
  // the rows started from.
  std::unique_ptr<EmbeddingTable> fresh = MakeTable(o);
  std::vector<float> initial = Looked(*fresh, ids);
  std::vector<float> expected = initial;
  for (size_t r = 0; r < ids.size(); ++r) {
    std::vector<float> accumulator(o.dim);
    common::ApplyOptimizer(o.optimizer, Rule(), true, 1,
                           std::vector<float>(o.dim, 1.0f),
                           absl::MakeSpan(expected).subspan(r * o.dim, o.dim),
                           {absl::MakeSpan(accumulator)});
  }
  EXPECT_TRUE(SameBits(Looked(*first, ids), expected));
  // Other seeds and tables, other values.
  EmbeddingTableOptions other_table = o;
  other_table.table_index = 4;
  EmbeddingTableOptions other_seed = o;
  other_seed.model_seed = 43;
  EXPECT_FALSE(SameBits(Looked(*MakeTable(other_table), ids), initial));
  EXPECT_FALSE(SameBits(Looked(*MakeTable(other_seed), ids), initial));
}

TEST(EmbeddingTable, InitializersHaveTheirDistributions) {
  EmbeddingTableOptions o = NormalRows();
  o.dim = 16;
  std::vector<uint64_t> ids(4000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = common::SplitMix64(i);
  const std::vector<float> normal = Looked(*MakeTable(o), ids);
  double sum = 0, squares = 0;
  for (float v : normal) {
    sum += v;
    squares += static_cast<double>(v) * v;
  }
  const double mean = sum / normal.size();
  EXPECT_NEAR(mean, 0.0, 0.003);
  EXPECT_NEAR(std::sqrt(squares / normal.size() - mean * mean), 0.1, 0.003);

  o.initializer = {RowInitializer::Kind::kUniform, 0.25f};
  const std::vector<float> uniform = Looked(*MakeTable(o), ids);
  EXPECT_LE(*std::max_element(uniform.begin(), uniform.end()), 0.25f);
  EXPECT_GE(*std::min_element(uniform.begin(), uniform.end()), -0.25f);
  EXPECT_GT(*std::max_element(uniform.begin(), uniform.end()), 0.249f);
  o.initializer = {};
  const std::vector<float> zeros = Looked(*MakeTable(o), ids);
  EXPECT_TRUE(
      std::all_of(zeros.begin(), zeros.end(), [](float v) { return v == 0; }));
}

TEST(EmbeddingTable, SparseApplyEqualsDenseApplyOnTheSameRows) {
  for (common::OptimizerKind kind :
       {common::OptimizerKind::kSgd, common::OptimizerKind::kMomentum,
        common::OptimizerKind::kAdam, common::OptimizerKind::kFtrl}) {
    EmbeddingTableOptions o = NormalRows();
    o.optimizer.kind = kind;
    o.optimizer.ftrl_l1 = 0.01f;
    SCOPED_TRACE(common::OptimizerName(kind));
    std::unique_ptr<EmbeddingTable> table = MakeTable(o);
    // Rows 3, 5, 9 as one dense vector in id order, with their state.
    const std::vector<uint64_t> rows = {3, 5, 9};
    std::vector<float> dense = Looked(*table, rows);
    std::vector<std::vector<float>> state(
        common::OptimizerStateNames(kind).size(),
        std::vector<float>(dense.size(), 0.0f));
    std::vector<absl::Span<float>> spans;
    for (auto& s : state) spans.push_back(absl::MakeSpan(s));
    for (int step = 1; step <= 3; ++step) {
      // 9 twice (its rows summed) and ids out of order.
      const std::vector<uint64_t> ids = {9, 5, 9, 3};
      std::vector<float> sparse(ids.size() * o.dim);
      for (size_t i = 0; i < sparse.size(); ++i) {
        sparse[i] = 0.1f * static_cast<float>((i * 7 + step) % 11) - 0.5f;
      }
      std::vector<float> summed(dense.size());
      for (size_t j = 0; j < o.dim; ++j) {
        summed[0 * o.dim + j] = sparse[3 * o.dim + j];  // 3
        summed[1 * o.dim + j] = sparse[1 * o.dim + j];  // 5
        summed[2 * o.dim + j] = sparse[0 * o.dim + j] + sparse[2 * o.dim + j];
      }
      ASSERT_TRUE(table->ApplyGradient(Rule(), step, ids, sparse).ok());
      common::ApplyOptimizer(o.optimizer, Rule(), true, step, summed,
                             absl::MakeSpan(dense), spans);
      ASSERT_TRUE(SameBits(Looked(*table, rows), dense)) << "step " << step;
      for (size_t k = 0; k < state.size(); ++k) {
        for (size_t r = 0; r < rows.size(); ++r) {
          const absl::Span<const float> got = table->RowState(rows[r], k + 1);
          ASSERT_EQ(std::memcmp(got.data(), state[k].data() + r * o.dim,
                                o.dim * sizeof(float)),
                    0)
              << "state " << k << " of row " << rows[r];
        }
      }
    }
  }
}

TEST(EmbeddingTable, MemoryStaysUnderTheLimitWhileTenTimesItsRowsPassThrough) {
  EmbeddingTableOptions o = NormalRows();
  o.dim = 16;
  o.optimizer.kind = common::OptimizerKind::kAdam;
  o.memory_limit = 300 << 10;
  constexpr size_t kBatch = 64;
  std::vector<uint64_t> ids(kBatch);
  const std::vector<float> gradient(kBatch * o.dim, 0.01f);
  // What the process allocates once, at the first use (static state of the
  // libraries), is not the table's.
  MakeTable(o)->ApplyGradient(Rule(), 1, ids, gradient).IgnoreError();
  const int64_t before = live_bytes.load();
  absl::StatusOr<std::unique_ptr<EmbeddingTable>> made =
      EmbeddingTable::Create(o);
  ASSERT_TRUE(made.ok()) << made.status();
  std::unique_ptr<EmbeddingTable> table = std::move(*made);
  const size_t capacity = table->capacity_rows();
  ASSERT_GT(capacity, 100u);
  uint64_t largest = 0;
  for (uint64_t next = 0; next < 10 * capacity; next += kBatch) {
    for (size_t i = 0; i < kBatch; ++i) ids[i] = common::SplitMix64(next + i);
    ASSERT_TRUE(table->ApplyGradient(Rule(), 1, ids, gradient).ok());
    // Between calls, the table holds exactly what it accounts (its own
    // object aside), and never more than the limit.
    const int64_t live = live_bytes.load() - before;
    ASSERT_EQ(live, static_cast<int64_t>(table->memory_bytes() +
                                         sizeof(EmbeddingTable)));
    ASSERT_LE(table->memory_bytes(), o.memory_limit);
    largest = std::max(largest, table->memory_bytes());
  }
  EXPECT_GT(largest, o.memory_limit * 8 / 10);  // the limit is used, too
  EXPECT_EQ(table->size(), capacity);
  const uint64_t touched = (10 * capacity + kBatch - 1) / kBatch * kBatch;
  EXPECT_EQ(table->counters().created, touched);
  EXPECT_EQ(table->counters().evicted, touched - capacity);
  EXPECT_EQ(table->counters().refused, 0u);
  std::cout << "limit " << o.memory_limit << " bytes: " << capacity
            << " rows of dim 16 with adam state, " << touched
            << " distinct ids touched, at most " << largest << " bytes held\n";
}

TEST(EmbeddingTable, HoldsWhatItsRowsNeedNotItsWholeLimitUpFront) {
  // A shard's --table_memory_limit is a ceiling, not a reservation: a table
  // with a 1 GiB limit and a thousand rows holds about a thousand rows'
  // bytes (a block of values, a slot list and an index grown to fit).
  EmbeddingTableOptions o;
  o.dim = 1;
  o.optimizer.kind = common::OptimizerKind::kAdagrad;
  o.memory_limit = uint64_t{1} << 30;
  std::unique_ptr<EmbeddingTable> empty = MakeTable(o);
  ASSERT_GT(empty->capacity_rows(), size_t{10'000'000});
  EXPECT_LT(empty->memory_bytes(), 64u << 10);
  std::vector<uint64_t> ids(1000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = common::SplitMix64(i);
  const std::vector<float> gradient(ids.size(), 0.5f);
  const int64_t before = live_bytes.load();
  std::unique_ptr<EmbeddingTable> table = MakeTable(o);
  ASSERT_TRUE(table->ApplyGradient(Rule(), 1, ids, gradient).ok());
  EXPECT_EQ(table->size(), ids.size());
  EXPECT_LT(table->memory_bytes(), 1u << 20);
  EXPECT_EQ(
      live_bytes.load() - before,
      static_cast<int64_t>(table->memory_bytes() + sizeof(EmbeddingTable)));
}

TEST(EmbeddingTable, EveryLimitHoldsUnderChurn) {
  // However full the index's capacity happens to be at a limit, evictions
  // and creations never make it grow past the limit.
  EmbeddingTableOptions o;
  o.dim = 2;
  std::vector<uint64_t> ids(16);
  const std::vector<float> gradient(ids.size() * o.dim, 1.0f);
  for (uint64_t limit = 2000; limit < 60000; limit += 997) {
    o.memory_limit = limit;
    std::unique_ptr<EmbeddingTable> table = MakeTable(o);
    const uint64_t touches = 3 * table->capacity_rows();
    for (uint64_t next = 0; next < touches; next += ids.size()) {
      for (size_t i = 0; i < ids.size(); ++i) ids[i] = limit * 1000 + next + i;
      ASSERT_TRUE(table->ApplyGradient(Rule(), 1, ids, gradient).ok());
      ASSERT_LE(table->memory_bytes(), limit) << table->size() << " rows";
    }
    EXPECT_EQ(table->size(), table->capacity_rows());
  }
}

TEST(EmbeddingTable, EvictsTheLeastRecentlyUpdatedRow) {
  EmbeddingTableOptions o;
  o.dim = 4;
  o.memory_limit = 4 << 10;
  std::unique_ptr<EmbeddingTable> table = MakeTable(o);
  const size_t capacity = table->capacity_rows();
  ASSERT_GE(capacity, 3u);
  const std::vector<float> row(o.dim, 1.0f);
  for (uint64_t id = 1; id <= capacity; ++id) {
    ASSERT_TRUE(table->ApplyGradient(Rule(), 1, {id}, row).ok());
  }
  // Row 1 is updated again: row 2 is now the least recent.
  ASSERT_TRUE(table->ApplyGradient(Rule(), 2, {1}, row).ok());
  EXPECT_EQ(table->counters().evicted, 0u);
  ASSERT_TRUE(table->ApplyGradient(Rule(), 3, {1000}, row).ok());
  EXPECT_TRUE(table->Contains(1));
  EXPECT_FALSE(table->Contains(2));
  EXPECT_TRUE(table->Contains(3));
  EXPECT_TRUE(table->Contains(1000));
  // Lookups do not count as updates: row 3 goes next even when looked up.
  std::vector<float> out(o.dim);
  table->Lookup({3}, absl::MakeSpan(out));
  ASSERT_TRUE(table->ApplyGradient(Rule(), 4, {1001}, row).ok());
  EXPECT_FALSE(table->Contains(3));
  EXPECT_TRUE(table->Contains(4));
  EXPECT_EQ(table->counters().evicted, 2u);
  EXPECT_EQ(table->counters().created, capacity + 2);
  // An evicted row is served its initial value again.
  table->Lookup({2}, absl::MakeSpan(out));
  EXPECT_THAT(out, ::testing::Each(0.0f));
}

TEST(EmbeddingTable, RowsAreCreatedOnlyOnceSeenMinCountTimes) {
  EmbeddingTableOptions o = NormalRows();
  o.min_count_to_create = 3;
  o.count_sketch_bytes = 4096;
  std::unique_ptr<EmbeddingTable> table = MakeTable(o);
  const std::vector<float> initial = Looked(*table, {7});
  const std::vector<float> row(o.dim, 1.0f);
  for (uint64_t step = 1; step <= 2; ++step) {
    ASSERT_TRUE(table->ApplyGradient(Rule(), step, {7}, row).ok());
    EXPECT_FALSE(table->Contains(7));
    EXPECT_TRUE(SameBits(Looked(*table, {7}), initial));
  }
  // A repeat within one gradient is one sighting.
  ASSERT_TRUE(table
                  ->ApplyGradient(Rule(), 3, {8, 8, 8},
                                  std::vector<float>(3 * o.dim, 1.0f))
                  .ok());
  EXPECT_FALSE(table->Contains(8));
  ASSERT_TRUE(table->ApplyGradient(Rule(), 3, {7}, row).ok());
  EXPECT_TRUE(table->Contains(7));
  EXPECT_FALSE(SameBits(Looked(*table, {7}), initial));
  EXPECT_EQ(table->counters().refused, 3u);
  EXPECT_EQ(table->counters().created, 1u);
  // The counts are a fixed-size sketch, inside the limit.
  EXPECT_GE(table->memory_bytes(), 4096u);
  EXPECT_LE(table->memory_bytes(), o.memory_limit);
}

TEST(EmbeddingTable, BadGradientsChangeNothing) {
  EmbeddingTableOptions o = NormalRows();
  o.optimizer.kind = common::OptimizerKind::kMomentum;
  std::unique_ptr<EmbeddingTable> table = MakeTable(o);
  const std::vector<float> row(o.dim, 1.0f);
  ASSERT_TRUE(table->ApplyGradient(Rule(), 1, {1}, row).ok());
  const std::vector<float> before = Looked(*table, {1, 2});
  std::vector<float> two_rows(2 * o.dim, 1.0f);
  EXPECT_THAT(
      std::string(table->ApplyGradient(Rule(), 2, {1, 2}, row).message()),
      HasSubstr("a sparse gradient of 2 ids of dim 5 needs 10 values, got 5"));
  two_rows[7] = NAN;
  EXPECT_THAT(
      std::string(table->ApplyGradient(Rule(), 2, {1, 2}, two_rows).message()),
      HasSubstr("the gradient of id 2 holds nan at position 2"));
  two_rows[7] = 3e38f;
  two_rows[8] = 3e38f;
  common::UpdateOptions huge = Rule();
  huge.learning_rate = 1e10f;
  const absl::Status overflow = table->ApplyGradient(huge, 2, {1, 2}, two_rows);
  EXPECT_EQ(overflow.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(overflow.message()),
              HasSubstr("id 2 would leave its row or optimizer state not "
                        "finite"));
  EXPECT_TRUE(SameBits(Looked(*table, {1, 2}), before));
  EXPECT_FALSE(table->Contains(2));
  EXPECT_EQ(table->counters().created, 1u);
}

TEST(EmbeddingTable, BadOptionsAreRejected) {
  EmbeddingTableOptions o;
  o.memory_limit = 64;
  EXPECT_THAT(std::string(EmbeddingTable::Create(o).status().message()),
              HasSubstr("a table memory limit of 64 bytes holds no row: a row "
                        "of dim 8 with sgd's state takes 32 bytes"));
  o = EmbeddingTableOptions();
  o.dim = 0;
  EXPECT_THAT(std::string(EmbeddingTable::Create(o).status().message()),
              HasSubstr("dim must be > 0"));
  o = EmbeddingTableOptions();
  o.optimizer.kind = common::OptimizerKind::kAdam;
  o.optimizer.beta2 = 1;
  EXPECT_THAT(std::string(EmbeddingTable::Create(o).status().message()),
              HasSubstr("beta2 must be in [0, 1)"));
  o = EmbeddingTableOptions();
  o.min_count_to_create = 2;
  o.count_sketch_bytes = o.memory_limit;
  EXPECT_THAT(std::string(EmbeddingTable::Create(o).status().message()),
              HasSubstr("count_sketch_bytes must be at least 16 and below "
                        "memory_limit"));
}

TEST(RowInitializer, ParsesItsThreeFormsAndRejectsTheRest) {
  absl::StatusOr<RowInitializer> normal = ParseRowInitializer("normal(0.01)");
  ASSERT_TRUE(normal.ok()) << normal.status();
  EXPECT_EQ(normal->kind, RowInitializer::Kind::kNormal);
  EXPECT_FLOAT_EQ(normal->scale, 0.01f);
  ASSERT_TRUE(ParseRowInitializer("uniform(0.5)").ok());
  EXPECT_EQ(ParseRowInitializer("uniform(0.5)")->kind,
            RowInitializer::Kind::kUniform);
  EXPECT_EQ(ParseRowInitializer("zeros")->kind, RowInitializer::Kind::kZeros);
  for (const char* bad : {"", "zero", "uniform", "uniform()", "uniform(-1)",
                          "normal(0)", "normal(nan)", "normal(0.1"}) {
    const absl::Status status = ParseRowInitializer(bad).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr(absl::StrCat("bad row initializer '", bad,
                                       "': the initializers are zeros")));
  }
}

}  // namespace
}  // namespace ps::server
