#ifndef PS_SERVER_SPARSE_TABLES_H_
#define PS_SERVER_SPARSE_TABLES_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/lr_schedule.h"
#include "common/optimizer.h"
#include "common/table_spec.h"
#include "common/theta_file.h"
#include "server/embedding_table.h"
#include "server/shard_options.h"
#include "server/shard_requests.h"

namespace ps::server {

// One table's part of a checked push: each key once, increasing, with the
// rows a push repeated it in summed (in the order given).
struct TableGradient {
  size_t table = 0;  // index in the declaration
  std::vector<uint64_t> ids;
  std::vector<float> rows;  // ids.size() × dim
};
using SparseGradient = std::vector<TableGradient>;

// A table as Status reports it.
struct TableStatus {
  common::TableSpec spec;
  uint64_t rows = 0;
  uint64_t capacity_rows = 0;
  uint64_t memory_bytes = 0;
  uint64_t memory_limit_bytes = 0;
  EmbeddingTable::Counters counters;
};

// A shard's sparse tables: the rows of its keys (ShardOfId), the checks of
// sparse requests, and sync's per-worker row gradients with their
// rank-ordered reduction. Updates are two-phase (Prepare, Commit) so that a
// push's tables and the shard's dense θ change together or not at all. Not
// thread-safe: the shard's lock guards it.
class SparseTables {
 public:
  explicit SparseTables(const ShardOptions& options);

  // Creates the declared tables, empty. INVALID_ARGUMENT when a spec does
  // not parse or the memory limit holds no row of some table; nothing is
  // declared then.
  absl::Status Declare(const std::vector<common::TableSpec>& specs,
                       uint64_t model_seed);
  const std::vector<common::TableSpec>& specs() const { return specs_; }
  uint64_t model_seed() const { return model_seed_; }
  bool empty() const { return tables_.empty(); }

  // INVALID_ARGUMENT naming the problem when a pull's keys are malformed,
  // name no declared table (or one twice), or belong to another shard.
  absl::Status CheckPull(const std::vector<SparseRows>& keys) const;
  // The rows of checked keys, per table in the order asked. Creates nothing.
  std::vector<SparseRows> Read(const std::vector<SparseRows>& keys) const;

  // Decodes a push's rows, checking what CheckPull checks and that the
  // values are keys × dim finite float32.
  absl::StatusOr<SparseGradient> ParsePush(
      const std::vector<SparseRows>& rows) const;

  // The tables' new rows after `gradient` as update number version + 1
  // (the learning rate scheduled for `version`), checked finite; nothing
  // changes until Commit.
  using Prepared =
      std::vector<std::pair<size_t, EmbeddingTable::PreparedUpdate>>;
  absl::StatusOr<Prepared> Prepare(const SparseGradient& gradient,
                                   uint64_t version) const;
  void Commit(const Prepared& prepared);

  // Sync: holds `worker`'s gradient of `batch_size` examples for the open
  // round, until ClearRound.
  void Stage(uint32_t worker, uint32_t batch_size, SparseGradient gradient);
  // The open round's rows: Σₖ bₖ·gₖ / `examples` per row, k in rank order
  // (never arrival order, so that the result is bit-for-bit the same
  // whichever shard holds the row), a worker that did not send the row
  // counting as zero (`examples`: ConsistencyPolicy::RoundExamples).
  SparseGradient RoundMean(double examples) const;
  void ClearRound();

  std::vector<TableStatus> Status() const;

  // The tables as a checkpoint holds them: rows in id order with their
  // optimizer state, eviction order and counters.
  std::vector<common::SavedTable> Save() const;
  // Declares `saved`'s tables (as Declare) and fills them with its rows,
  // oldest first, so that eviction goes on in the order it would have. A
  // state vector a table's optimizer keeps is taken by name, 0 where the
  // checkpoint has none (the optimizer changed, --allow_config_change); one
  // it does not keep is dropped. FAILED_PRECONDITION when a row belongs to
  // another shard, DATA_LOSS when sizes disagree; nothing changes then.
  absl::Status Restore(const std::vector<common::SavedTable>& saved,
                       uint64_t model_seed);
  // Up to `max_rows` (0: a page's worth, which also caps it) of table
  // `name`'s stored rows with ids above `after` (all when nullopt), in id
  // order: θ only. `done` when none come after.
  // INVALID_ARGUMENT for a table that is not declared.
  struct RowPage {
    std::vector<uint64_t> ids;
    std::vector<float> rows;
    bool done = true;
  };
  absl::StatusOr<RowPage> ExportRows(const std::string& name,
                                     std::optional<uint64_t> after,
                                     size_t max_rows) const;

  // Sync: `worker`'s staged rows as a checkpoint holds them, and back.
  std::vector<common::TableRows> StagedRows(uint32_t worker) const;
  // OK when `rows` fit `tables`, hold each id once in increasing order and
  // belong to this shard (a checkpoint's open round, checked before Restore
  // changes anything).
  absl::Status CheckRows(const std::vector<common::TableRows>& rows,
                         const std::vector<common::SavedTable>& tables) const;
  void StageRows(uint32_t worker, uint32_t batch_size,
                 const std::vector<common::TableRows>& rows);

  // Everything a request may change, as bytes: each table's stored rows
  // with their optimizer state (in recency order), its counters and bytes
  // held, and the open round's staged rows. Equal dumps, equal tables: what
  // tests compare around a request that must change nothing.
  std::string Dump() const;

 private:
  struct Table {
    std::unique_ptr<EmbeddingTable> rows;
    common::UpdateOptions update;  // the table's base learning rate
    common::LrSchedule schedule;
  };
  struct Staged {
    uint32_t batch_size = 0;  // 0: nothing from this worker
    SparseGradient gradient;
  };
  // The declared table `name` is, or INVALID_ARGUMENT.
  absl::StatusOr<size_t> FindTable(const std::string& name) const;
  // The first of `ids` that lives on another shard than this one, if any:
  // each caller words its own error.
  std::optional<uint64_t> FirstForeignId(absl::Span<const uint64_t> ids) const;
  // Decodes and checks one entry's keys; `seen` catches a table named twice.
  absl::StatusOr<std::vector<uint64_t>> CheckedKeys(const SparseRows& rows,
                                                    size_t table,
                                                    std::vector<bool>& seen,
                                                    uint64_t& total_keys) const;

  const ShardOptions options_;
  std::vector<common::TableSpec> specs_;
  uint64_t model_seed_ = 0;
  std::vector<Table> tables_;
  std::vector<Staged> staged_;  // by worker rank
};

}  // namespace ps::server

#endif  // PS_SERVER_SPARSE_TABLES_H_
