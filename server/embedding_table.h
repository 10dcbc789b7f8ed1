#ifndef PS_SERVER_EMBEDDING_TABLE_H_
#define PS_SERVER_EMBEDDING_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/optimizer.h"
#include "common/table_spec.h"
#include "common/update_rule.h"
#include "server/row_index.h"

namespace ps::server {

// Declarations parse initializers too: the type lives in common.
using common::ParseRowInitializer;
using common::RowInitializer;

struct EmbeddingTableOptions {
  // Floats per row. Default: 8
  uint32_t dim = 8;
  // Rows' initial values. Default: zeros
  RowInitializer initializer;
  // With table_index and the row id, seed a row's initial value, so that it
  // does not depend on which worker touched the row first, when, or which
  // shard holds it. Default: 0, 0
  uint64_t model_seed = 0;
  uint64_t table_index = 0;
  // The optimizer the rows are updated with; its state is kept per row.
  // Default: sgd
  common::OptimizerOptions optimizer;
  // The most bytes the table holds between calls: rows, their optimizer
  // state, the index, the recency list and the sighting counts (not the
  // table object itself, nor a call's scratch, which is the request's size).
  // Default: 64 MiB
  uint64_t memory_limit = uint64_t{64} << 20;
  // A row is created at the update that brings its id's sightings to this
  // count; updates before that are refused (and the id keeps being served
  // its initial value). Default: 1, every row at its first update
  uint32_t min_count_to_create = 1;
  // The fixed size of the sighting counts when min_count_to_create > 1: a
  // count-min sketch (4 rows of 32-bit counters), part of memory_limit. It
  // may over-count an id that shares counters with others, so a row may be
  // created a little early, never late. Default: 1 MiB
  uint64_t count_sketch_bytes = uint64_t{1} << 20;
};

// A sparse table: rows of `dim` floats keyed by any uint64 feature id, each
// with its optimizer state, created on first update, within a byte limit
// that evicts the least recently updated rows. Updates are lazy: only the
// rows a gradient touches change, so the state of an untouched row does
// not decay (a momentum or Adam row keeps its velocity or moments as they
// were at its last update, and Adam's bias correction uses the table's step
// count, as TensorFlow's LazyAdam does). Lookups create nothing.
//
// Not thread-safe and takes no locks: the shard that owns it holds its own
// lock around every call.
class EmbeddingTable {
 public:
  // INVALID_ARGUMENT when an option is out of range or the memory limit
  // cannot hold a single row.
  static absl::StatusOr<std::unique_ptr<EmbeddingTable>> Create(
      const EmbeddingTableOptions& options);

  EmbeddingTable(const EmbeddingTable&) = delete;
  EmbeddingTable& operator=(const EmbeddingTable&) = delete;

  const EmbeddingTableOptions& options() const { return options_; }
  uint32_t dim() const { return options_.dim; }

  // Writes the rows of `ids` into `out` (ids.size() × dim, in the order of
  // `ids`): a stored row's values, else the id's initial value. Changes
  // nothing, recency included.
  void Lookup(absl::Span<const uint64_t> ids, absl::Span<float> out) const;

  // The initial value of row `id`.
  void InitialRow(uint64_t id, absl::Span<float> out) const;

  // Applies a sparse gradient: `gradient` holds one row per entry of `ids`;
  // rows of a repeated id are summed (in the order given) and applied once.
  // Rows are updated in increasing id order by options().optimizer with
  // `update` (its learning_rate already scheduled) as update number `step`
  // (≥ 1). INVALID_ARGUMENT, with nothing changed, when the sizes disagree,
  // a gradient value is NaN or infinite, or an update would leave a value
  // that is not finite. A batch with more new ids than the table holds
  // keeps the last of them in id order.
  absl::Status ApplyGradient(const common::UpdateOptions& update, uint64_t step,
                             absl::Span<const uint64_t> ids,
                             absl::Span<const float> gradient);

  // ApplyGradient in two halves, so that a caller updating several tables
  // (and θ) at once changes all or nothing: Prepare computes the new rows
  // and checks them, changing nothing; Commit stores them and cannot fail.
  // Nothing else may change the table in between.
  struct PreparedUpdate {
    std::vector<uint64_t> ids;  // each once, increasing
    std::vector<float> next;    // their rows and state, stride floats each
    // Where each id's row is stored, or kNewRow: Commit looks no id up
    // again.
    std::vector<uint32_t> slots;
  };
  static constexpr uint32_t kNewRow = ~uint32_t{0};
  absl::StatusOr<PreparedUpdate> Prepare(
      const common::UpdateOptions& update, uint64_t step,
      absl::Span<const uint64_t> ids, absl::Span<const float> gradient) const;
  void Commit(const PreparedUpdate& prepared);

  // Whether `id` has a stored row.
  bool Contains(uint64_t id) const {
    return index_.Find(id) != RowIndex::kNotFound;
  }
  // A stored row's values and its state vectors (in
  // OptimizerStateNames order), or empty spans when `id` is not stored.
  absl::Span<const float> Row(uint64_t id) const;
  absl::Span<const float> RowState(uint64_t id, size_t which) const;

  // A stored row's θ followed by its state vectors (stride() floats), or
  // an empty span when `id` is not stored.
  absl::Span<const float> RowWithState(uint64_t id) const;
  size_t stride() const { return stride_; }
  // The stored ids from the least to the most recently updated: the order
  // eviction takes them in.
  std::vector<uint64_t> IdsOldestFirst() const;
  // Stores `row` (stride() floats: θ, then the state vectors) as `id`'s, as
  // the most recently updated, evicting the least recently updated row when
  // the table is full: rows restored oldest first give back the eviction
  // order they were saved in. Sightings are not counted.
  void RestoreRow(uint64_t id, absl::Span<const float> row);

  size_t size() const { return index_.size(); }
  // The stored ids, the most recently updated first (eviction takes them
  // from the back).
  std::vector<uint64_t> IdsByRecency() const;
  // The most rows the memory limit allows.
  size_t capacity_rows() const { return capacity_rows_; }
  // Bytes allocated by the table now, exactly as requested from the
  // allocator; never more than options().memory_limit between calls. The
  // index and slot list grow with the rows (a call that grows one briefly
  // holds its old array beside the new), up to what capacity_rows() needs.
  uint64_t memory_bytes() const { return allocated_bytes_; }

  struct Counters {
    uint64_t created = 0;  // rows created
    uint64_t evicted = 0;  // rows removed to make room for new ones
    uint64_t refused = 0;  // row updates dropped below min_count_to_create
  };
  const Counters& counters() const { return counters_; }
  // Counters as a checkpoint saved them (RestoreRow counts nothing real).
  void RestoreCounters(const Counters& counters) { counters_ = counters; }

  // Allocates from std::allocator and adds what it takes to a counter: what
  // memory_bytes() reports is what the containers asked for.
  template <typename T>
  class CountingAllocator {
   public:
    using value_type = T;
    explicit CountingAllocator(uint64_t* bytes) : bytes_(bytes) {}
    template <typename U>
    CountingAllocator(const CountingAllocator<U>& other)  // NOLINT: rebinds
        : bytes_(other.bytes()) {}
    T* allocate(size_t n) {
      *bytes_ += n * sizeof(T);
      return std::allocator<T>().allocate(n);
    }
    void deallocate(T* p, size_t n) {
      *bytes_ -= n * sizeof(T);
      std::allocator<T>().deallocate(p, n);
    }
    uint64_t* bytes() const { return bytes_; }
    friend bool operator==(const CountingAllocator& a,
                           const CountingAllocator& b) {
      return a.bytes_ == b.bytes_;
    }
    friend bool operator!=(const CountingAllocator& a,
                           const CountingAllocator& b) {
      return !(a == b);
    }

   private:
    uint64_t* bytes_;
  };

 private:
  static constexpr uint32_t kNoSlot = ~uint32_t{0};
  // Where a stored row lives, and its place in the recency list.
  struct Slot {
    uint64_t id = 0;
    uint32_t newer = kNoSlot;  // toward the most recently updated row
    uint32_t older = kNoSlot;  // toward the least recently updated row
  };
  using Floats = std::vector<float, CountingAllocator<float>>;

  EmbeddingTable(const EmbeddingTableOptions& options, size_t capacity_rows);
  // The bytes a table of `rows` rows holds when full, beside its sketch.
  static uint64_t BytesWhenFull(size_t rows, size_t stride);
  // Rows a block of values holds.
  static size_t RowsPerBlock(size_t rows, size_t stride);
  // Sums a gradient's rows per id, each id once in increasing order, into
  // unique and sums.
  void SumById(absl::Span<const uint64_t> ids, absl::Span<const float> gradient,
               std::vector<uint64_t>& unique, std::vector<float>& sums) const;

  // A row's θ followed by its state vectors.
  float* SlotValues(uint32_t slot);
  const float* SlotValues(uint32_t slot) const;
  // Moves a stored row to the most recent end of the recency list.
  void Unlink(uint32_t slot);
  void PushNewest(uint32_t slot);
  // A slot for a new row of `id`: a fresh one while the limit allows, else
  // the least recently updated row's.
  uint32_t TakeSlot(uint64_t id);
  // Counts a sighting of `id` and says whether its row may now be created.
  bool SightedEnough(uint64_t id);

  const EmbeddingTableOptions options_;
  const size_t state_count_;  // optimizer state vectors per row
  const size_t stride_;       // floats per row: θ and state
  const uint64_t table_key_;  // seeds initial values with the row id
  // Counts every allocation below: declared before them, destroyed after.
  uint64_t allocated_bytes_ = 0;
  const size_t capacity_rows_;
  const size_t rows_per_block_;
  // id → slot; it and slots_ grow with the rows (never past what
  // capacity_rows_ needs), so that an idle table does not hold its limit.
  RowIndex index_;
  std::vector<Slot, CountingAllocator<Slot>> slots_;
  // Rows' values, a block of rows_per_block_ rows at a time, allocated as
  // rows are created so that an idle table does not hold its limit.
  std::vector<Floats, CountingAllocator<Floats>> blocks_;
  uint32_t newest_ = kNoSlot;
  uint32_t oldest_ = kNoSlot;
  std::vector<uint32_t, CountingAllocator<uint32_t>> sketch_;
  size_t sketch_width_ = 0;
  Counters counters_;
};

}  // namespace ps::server

#endif  // PS_SERVER_EMBEDDING_TABLE_H_
