#include "server/sparse_tables.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/float_bytes.h"
#include "common/key_range.h"
#include "spdlog/spdlog.h"

namespace ps::server {
namespace {

// Sighting counts take at most this much of a table's share of the limit.
constexpr uint64_t kMaxSketchBytes = uint64_t{1} << 20;
// Values in one page of ExportRows.
constexpr size_t kExportPageFloats = size_t{1} << 18;

uint64_t RowBytes(const common::TableSpec& spec,
                  const common::OptimizerOptions& optimizer) {
  return uint64_t{spec.dim} * sizeof(float) *
         (1 + common::OptimizerStateNames(optimizer.kind).size());
}

uint64_t KeyAt(const std::string& keys, size_t i) {
  uint64_t id;
  std::memcpy(&id, keys.data() + i * sizeof(id), sizeof(id));
  return id;
}

}  // namespace

SparseTables::SparseTables(const ShardOptions& options) : options_(options) {}

absl::Status SparseTables::Declare(const std::vector<common::TableSpec>& specs,
                                   uint64_t model_seed) {
  std::vector<common::OptimizerOptions> optimizers;
  std::vector<common::LrSchedule> schedules;
  uint64_t all_row_bytes = 0;
  for (const common::TableSpec& spec : specs) {
    common::OptimizerOptions optimizer = options_.optimizer;
    if (!spec.optimizer.empty()) {
      absl::StatusOr<common::OptimizerOptions> parsed =
          common::ParseOptimizerSpec(spec.optimizer);
      if (!parsed.ok()) return parsed.status();
      optimizer = *parsed;
    }
    common::LrSchedule schedule = options_.lr_schedule;
    if (!spec.lr_schedule.empty()) {
      absl::StatusOr<common::LrSchedule> parsed =
          common::ParseLrSchedule(spec.lr_schedule);
      if (!parsed.ok()) return parsed.status();
      schedule = *parsed;
    }
    optimizers.push_back(optimizer);
    schedules.push_back(schedule);
    all_row_bytes += RowBytes(spec, optimizer);
  }
  std::vector<Table> tables;
  for (size_t i = 0; i < specs.size(); ++i) {
    absl::StatusOr<common::RowInitializer> initializer =
        common::ParseRowInitializer(specs[i].initializer);
    if (!initializer.ok()) return initializer.status();
    EmbeddingTableOptions o;
    o.dim = specs[i].dim;
    o.initializer = *initializer;
    o.model_seed = model_seed;
    o.table_index = i;
    o.optimizer = optimizers[i];
    // Shares in proportion to the rows' bytes: every table holds about as
    // many rows (a model touches a feature's row in each of its tables).
    o.memory_limit = static_cast<uint64_t>(
        static_cast<long double>(options_.table_memory_limit) *
        RowBytes(specs[i], optimizers[i]) / all_row_bytes);
    o.min_count_to_create = options_.min_count_to_create;
    o.count_sketch_bytes = std::min(kMaxSketchBytes, o.memory_limit / 4);
    absl::StatusOr<std::unique_ptr<EmbeddingTable>> table =
        EmbeddingTable::Create(o);
    if (!table.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "table '", specs[i].name,
          "' (its share of --table_memory_limit=", options_.table_memory_limit,
          " is ", o.memory_limit, " bytes): ", table.status().message()));
    }
    common::UpdateOptions update = options_.update;
    tables.push_back({std::move(*table), update, schedules[i]});
  }
  specs_ = specs;
  model_seed_ = model_seed;
  tables_ = std::move(tables);
  staged_.clear();
  return absl::OkStatus();
}

absl::StatusOr<size_t> SparseTables::FindTable(const std::string& name) const {
  for (size_t i = 0; i < specs_.size(); ++i) {
    if (specs_[i].name == name) return i;
  }
  std::vector<std::string> names;
  for (const common::TableSpec& spec : specs_) names.push_back(spec.name);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown table '", name, "'; ",
                   names.empty() ? "this model declares no tables"
                                 : absl::StrCat("this model's tables are ",
                                                absl::StrJoin(names, ", "))));
}

absl::StatusOr<std::vector<uint64_t>> SparseTables::CheckedKeys(
    const SparseRows& rows, size_t table, std::vector<bool>& seen,
    uint64_t& total_keys) const {
  if (seen[table]) {
    return absl::InvalidArgumentError(
        absl::StrCat("table '", rows.table,
                     "' appears twice in one request; send its keys once "
                     "(repeated keys in one entry are summed)"));
  }
  seen[table] = true;
  if (rows.keys.size() % sizeof(uint64_t) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the keys of table '", rows.table, "' are ", rows.keys.size(),
        " bytes, not a multiple of 8 (keys are little-endian uint64)"));
  }
  const size_t count = rows.keys.size() / sizeof(uint64_t);
  total_keys += count;
  if (total_keys > kMaxSparseKeysPerRequest) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request carries more than ", kMaxSparseKeysPerRequest,
                     " sparse keys; split it"));
  }
  std::vector<uint64_t> ids(count);
  for (size_t i = 0; i < count; ++i) ids[i] = KeyAt(rows.keys, i);
  if (const std::optional<uint64_t> foreign = FirstForeignId(ids)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key ", *foreign, " of table '", rows.table, "' belongs to shard ",
        common::ShardOfId(*foreign, options_.num_shards), " of ",
        options_.num_shards, ", not to this shard ", options_.shard_index,
        " (a row lives on SplitMix64(id) mod S)"));
  }
  return ids;
}

std::optional<uint64_t> SparseTables::FirstForeignId(
    absl::Span<const uint64_t> ids) const {
  for (uint64_t id : ids) {
    if (common::ShardOfId(id, options_.num_shards) != options_.shard_index) {
      return id;
    }
  }
  return std::nullopt;
}

absl::Status SparseTables::CheckPull(
    const std::vector<SparseRows>& keys) const {
  std::vector<bool> seen(tables_.size(), false);
  uint64_t total_keys = 0;
  for (const SparseRows& rows : keys) {
    absl::StatusOr<size_t> table = FindTable(rows.table);
    if (!table.ok()) return table.status();
    if (!rows.values.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the pull of table '", rows.table,
                       "' carries values; a pull sends keys only"));
    }
    absl::StatusOr<std::vector<uint64_t>> ids =
        CheckedKeys(rows, *table, seen, total_keys);
    if (!ids.ok()) return ids.status();
  }
  return absl::OkStatus();
}

std::vector<SparseRows> SparseTables::Read(
    const std::vector<SparseRows>& keys) const {
  std::vector<SparseRows> out;
  out.reserve(keys.size());
  std::vector<uint64_t> ids;
  for (const SparseRows& rows : keys) {
    const EmbeddingTable& table = *tables_[*FindTable(rows.table)].rows;
    ids.resize(rows.keys.size() / sizeof(uint64_t));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = KeyAt(rows.keys, i);
    SparseRows& read = out.emplace_back();
    read.table = rows.table;
    read.keys = rows.keys;
    read.values.resize(ids.size() * table.dim() * sizeof(float));
    // The wire's float32 is the host's layout (common/float_bytes.h).
    table.Lookup(ids,
                 absl::MakeSpan(reinterpret_cast<float*>(read.values.data()),
                                ids.size() * table.dim()));
  }
  return out;
}

absl::StatusOr<SparseGradient> SparseTables::ParsePush(
    const std::vector<SparseRows>& rows) const {
  std::vector<bool> seen(tables_.size(), false);
  uint64_t total_keys = 0;
  SparseGradient gradient;
  for (const SparseRows& entry : rows) {
    absl::StatusOr<size_t> table = FindTable(entry.table);
    if (!table.ok()) return table.status();
    absl::StatusOr<std::vector<uint64_t>> ids =
        CheckedKeys(entry, *table, seen, total_keys);
    if (!ids.ok()) return ids.status();
    const size_t dim = specs_[*table].dim;
    const uint64_t expected = ids->size() * dim * sizeof(float);
    if (entry.values.size() != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "table '", entry.table, "': ", ids->size(), " keys of dim ", dim,
          " need ", expected, " bytes of float32 values (keys × dim × 4), got ",
          entry.values.size()));
    }
    std::vector<float> values(ids->size() * dim);
    // The size is checked above; this copies nothing for an entry of no
    // keys (memcpy with a null pointer is undefined even for no bytes).
    if (absl::Status s = common::BytesToFloats(
            entry.values, absl::MakeSpan(values), "gradient rows");
        !s.ok()) {
      return s;
    }
    for (size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(values[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("table '", entry.table, "': the gradient row of key ",
                         (*ids)[i / dim], " holds ", values[i], " at position ",
                         i % dim, "; gradients must be finite"));
      }
    }
    // Each key once, increasing, its rows summed in the order given. A
    // worker sends its keys so already: then they are taken as they are.
    TableGradient& summed = gradient.emplace_back();
    summed.table = *table;
    if (std::is_sorted(ids->begin(), ids->end(), std::less_equal<uint64_t>())) {
      summed.ids = std::move(*ids);
      summed.rows = std::move(values);
      continue;
    }
    std::vector<size_t> order(ids->size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return (*ids)[a] < (*ids)[b]; });
    for (size_t i : order) {
      const float* row = values.data() + i * dim;
      if (summed.ids.empty() || summed.ids.back() != (*ids)[i]) {
        summed.ids.push_back((*ids)[i]);
        summed.rows.insert(summed.rows.end(), row, row + dim);
      } else {
        float* sum = summed.rows.data() + summed.rows.size() - dim;
        for (size_t j = 0; j < dim; ++j) sum[j] += row[j];
      }
    }
  }
  return gradient;
}

absl::StatusOr<SparseTables::Prepared> SparseTables::Prepare(
    const SparseGradient& gradient, uint64_t version) const {
  Prepared prepared;
  for (const TableGradient& part : gradient) {
    if (part.ids.empty()) continue;
    const Table& table = tables_[part.table];
    common::UpdateOptions update = table.update;
    update.learning_rate = static_cast<float>(
        update.learning_rate * common::LrFactor(table.schedule, version));
    absl::StatusOr<EmbeddingTable::PreparedUpdate> next =
        table.rows->Prepare(update, version + 1, part.ids, part.rows);
    if (!next.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "table '", specs_[part.table].name, "': ", next.status().message()));
    }
    prepared.emplace_back(part.table, std::move(*next));
  }
  return prepared;
}

void SparseTables::Commit(const Prepared& prepared) {
  for (const auto& [table, update] : prepared)
    tables_[table].rows->Commit(update);
}

void SparseTables::Stage(uint32_t worker, uint32_t batch_size,
                         SparseGradient gradient) {
  if (worker >= staged_.size()) staged_.resize(worker + 1);
  staged_[worker] = {batch_size, std::move(gradient)};
}

SparseGradient SparseTables::RoundMean(double examples) const {
  SparseGradient mean;
  const float total = static_cast<float>(examples);
  for (size_t t = 0; t < tables_.size(); ++t) {
    const size_t dim = specs_[t].dim;
    // Each worker's part, by rank: its ids are each once and increasing
    // (ParsePush), so a merge visits the ids in increasing order and each
    // id's rows in rank order, without sorting.
    struct Cursor {
      const TableGradient* part;
      float weight;
      size_t next;
    };
    std::vector<Cursor> cursors;
    size_t rows = 0;
    for (uint32_t k = 0; k < staged_.size(); ++k) {
      if (staged_[k].batch_size == 0) continue;
      for (const TableGradient& part : staged_[k].gradient) {
        if (part.table != t || part.ids.empty()) continue;
        cursors.push_back(
            {&part, static_cast<float>(staged_[k].batch_size), 0});
        rows += part.ids.size();
      }
    }
    if (cursors.empty()) continue;
    TableGradient& part = mean.emplace_back();
    part.table = t;
    part.ids.reserve(rows);
    part.rows.reserve(rows * dim);
    while (true) {
      uint64_t id = 0;
      bool any = false;
      for (const Cursor& c : cursors) {
        if (c.next < c.part->ids.size() && (!any || c.part->ids[c.next] < id)) {
          id = c.part->ids[c.next];
          any = true;
        }
      }
      if (!any) break;
      part.ids.push_back(id);
      part.rows.resize(part.rows.size() + dim, 0.0f);
      float* sum = part.rows.data() + part.rows.size() - dim;
      for (Cursor& c : cursors) {
        if (c.next >= c.part->ids.size() || c.part->ids[c.next] != id) continue;
        // As SyncRound::Mean: weight·g summed in rank order, then ÷ total.
        const float* row = c.part->rows.data() + c.next * dim;
        for (size_t j = 0; j < dim; ++j) sum[j] += c.weight * row[j];
        ++c.next;
      }
    }
    for (float& v : part.rows) v /= total;
  }
  return mean;
}

void SparseTables::ClearRound() {
  for (Staged& s : staged_) {
    s.batch_size = 0;
    s.gradient.clear();
  }
}

std::string SparseTables::Dump() const {
  std::string out;
  const auto append = [&out](const auto& value) {
    out.append(reinterpret_cast<const char*>(&value), sizeof value);
  };
  const auto append_floats = [&out](absl::Span<const float> values) {
    out.append(reinterpret_cast<const char*>(values.data()),
               values.size() * sizeof(float));
  };
  for (const Table& table : tables_) {
    const EmbeddingTable& rows = *table.rows;
    const size_t state_vectors =
        common::OptimizerStateNames(rows.options().optimizer.kind).size();
    append(rows.counters().created);
    append(rows.counters().evicted);
    append(rows.counters().refused);
    append(rows.memory_bytes());
    append(rows.size());
    for (uint64_t id : rows.IdsByRecency()) {
      append(id);
      // RowState(id, 0) is the row's θ, then its state vectors.
      for (size_t which = 0; which <= state_vectors; ++which) {
        append_floats(rows.RowState(id, which));
      }
    }
  }
  // A worker's staged rows, not the bare batch size of one that sent none:
  // that weighs nothing in the round's mean.
  for (uint32_t rank = 0; rank < staged_.size(); ++rank) {
    const Staged& staged = staged_[rank];
    if (staged.gradient.empty()) continue;
    append(rank);
    append(staged.batch_size);
    append(staged.gradient.size());
    for (const TableGradient& part : staged.gradient) {
      append(part.table);
      append(part.ids.size());
      for (uint64_t id : part.ids) append(id);
      append_floats(part.rows);
    }
  }
  return out;
}

std::vector<TableStatus> SparseTables::Status() const {
  std::vector<TableStatus> status;
  for (size_t i = 0; i < tables_.size(); ++i) {
    const EmbeddingTable& table = *tables_[i].rows;
    status.push_back({specs_[i], table.size(), table.capacity_rows(),
                      table.memory_bytes(), table.options().memory_limit,
                      table.counters()});
  }
  return status;
}

std::vector<common::SavedTable> SparseTables::Save() const {
  std::vector<common::SavedTable> saved;
  for (size_t t = 0; t < tables_.size(); ++t) {
    const EmbeddingTable& table = *tables_[t].rows;
    common::SavedTable& out = saved.emplace_back();
    out.spec = specs_[t];
    out.state_names =
        common::OptimizerStateNames(table.options().optimizer.kind);
    // (id, place in the eviction order), written in id order so that the
    // file does not depend on the hash map's layout.
    const std::vector<uint64_t> oldest_first = table.IdsOldestFirst();
    std::vector<std::pair<uint64_t, uint64_t>> by_id;
    by_id.reserve(oldest_first.size());
    for (size_t rank = 0; rank < oldest_first.size(); ++rank) {
      by_id.emplace_back(oldest_first[rank], rank);
    }
    std::sort(by_id.begin(), by_id.end());
    out.ids.reserve(by_id.size());
    out.recency.reserve(by_id.size());
    out.rows.reserve(by_id.size() * table.stride());
    for (const auto& [id, rank] : by_id) {
      out.ids.push_back(id);
      out.recency.push_back(rank);
      const absl::Span<const float> row = table.RowWithState(id);
      out.rows.insert(out.rows.end(), row.begin(), row.end());
    }
    out.created = table.counters().created;
    out.evicted = table.counters().evicted;
    out.refused = table.counters().refused;
  }
  return saved;
}

absl::Status SparseTables::Restore(const std::vector<common::SavedTable>& saved,
                                   uint64_t model_seed) {
  std::vector<common::TableSpec> specs;
  for (const common::SavedTable& table : saved) {
    if (table.rows.size() != table.ids.size() * table.stride() ||
        (!table.recency.empty() && table.recency.size() != table.ids.size())) {
      return absl::DataLossError(absl::StrCat(
          "the checkpoint's table '", table.spec.name, "' is malformed"));
    }
    if (const std::optional<uint64_t> foreign = FirstForeignId(table.ids)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the checkpoint's table '", table.spec.name, "' holds row ", *foreign,
          ", which belongs to shard ",
          common::ShardOfId(*foreign, options_.num_shards), " of ",
          options_.num_shards, ", not to this shard ", options_.shard_index));
    }
    specs.push_back(table.spec);
  }
  if (absl::Status declared = Declare(specs, model_seed); !declared.ok()) {
    return declared;
  }
  for (size_t t = 0; t < saved.size(); ++t) {
    const common::SavedTable& from = saved[t];
    EmbeddingTable& table = *tables_[t].rows;
    const size_t dim = from.spec.dim;
    // Where each state vector of the table's optimizer is in the file.
    const std::vector<std::string>& names =
        common::OptimizerStateNames(table.options().optimizer.kind);
    std::vector<std::optional<size_t>> source(names.size());
    for (size_t k = 0; k < names.size(); ++k) {
      auto at =
          std::find(from.state_names.begin(), from.state_names.end(), names[k]);
      if (at != from.state_names.end()) {
        source[k] = static_cast<size_t>(at - from.state_names.begin());
      }
    }
    std::vector<size_t> oldest_first(from.ids.size());
    std::iota(oldest_first.begin(), oldest_first.end(), 0);
    if (!from.recency.empty()) {
      std::sort(oldest_first.begin(), oldest_first.end(),
                [&](size_t a, size_t b) {
                  return from.recency[a] < from.recency[b];
                });
    }
    if (from.ids.size() > table.capacity_rows()) {
      spdlog::warn(
          "shard {}: table '{}' holds {} rows in the checkpoint but {} fit "
          "its share of --table_memory_limit: kept the most recently "
          "updated",
          options_.shard_index, from.spec.name, from.ids.size(),
          table.capacity_rows());
    }
    std::vector<float> row(table.stride());
    for (size_t i : oldest_first) {
      const float* saved_row = from.rows.data() + i * from.stride();
      std::fill(row.begin(), row.end(), 0.0f);
      std::copy_n(saved_row, dim, row.begin());
      for (size_t k = 0; k < names.size(); ++k) {
        if (!source[k].has_value()) continue;
        std::copy_n(saved_row + (1 + *source[k]) * dim, dim,
                    row.begin() + (1 + k) * dim);
      }
      table.RestoreRow(from.ids[i], row);
    }
    table.RestoreCounters({from.created, from.evicted, from.refused});
  }
  return absl::OkStatus();
}

absl::StatusOr<SparseTables::RowPage> SparseTables::ExportRows(
    const std::string& name, std::optional<uint64_t> after,
    size_t max_rows) const {
  absl::StatusOr<size_t> t = FindTable(name);
  if (!t.ok()) return t.status();
  const EmbeddingTable& table = *tables_[*t].rows;
  // A page's keys and values stay under gRPC's default 4 MiB message
  // whatever the dim: at most 1 MiB of values.
  const size_t page_rows = std::max<size_t>(1, kExportPageFloats / table.dim());
  max_rows = max_rows == 0 ? page_rows : std::min(max_rows, page_rows);
  std::vector<uint64_t> ids;
  for (uint64_t id : table.IdsOldestFirst()) {
    if (!after.has_value() || id > *after) ids.push_back(id);
  }
  RowPage page;
  page.done = ids.size() <= max_rows;
  if (!page.done) {
    std::nth_element(ids.begin(), ids.begin() + max_rows, ids.end());
    ids.resize(max_rows);
  }
  std::sort(ids.begin(), ids.end());
  page.rows.resize(ids.size() * table.dim());
  table.Lookup(ids, absl::MakeSpan(page.rows));
  page.ids = std::move(ids);
  return page;
}

std::vector<common::TableRows> SparseTables::StagedRows(uint32_t worker) const {
  std::vector<common::TableRows> rows;
  if (worker >= staged_.size() || staged_[worker].batch_size == 0) {
    return rows;
  }
  for (const TableGradient& part : staged_[worker].gradient) {
    rows.push_back({static_cast<uint32_t>(part.table), part.ids, part.rows});
  }
  return rows;
}

absl::Status SparseTables::CheckRows(
    const std::vector<common::TableRows>& rows,
    const std::vector<common::SavedTable>& tables) const {
  for (const common::TableRows& part : rows) {
    // RoundMean merges each worker's rows as ParsePush leaves them: each id
    // once, increasing.
    if (part.table >= tables.size() ||
        part.rows.size() != part.ids.size() * tables[part.table].spec.dim ||
        !std::is_sorted(part.ids.begin(), part.ids.end(),
                        std::less_equal<uint64_t>())) {
      return absl::DataLossError(
          "the checkpoint's open round holds malformed sparse rows");
    }
    if (const std::optional<uint64_t> foreign = FirstForeignId(part.ids)) {
      return absl::DataLossError(absl::StrCat(
          "the checkpoint's open round holds row ", *foreign, " of table '",
          tables[part.table].spec.name, "', which belongs to another shard"));
    }
  }
  return absl::OkStatus();
}

void SparseTables::StageRows(uint32_t worker, uint32_t batch_size,
                             const std::vector<common::TableRows>& rows) {
  SparseGradient gradient;
  for (const common::TableRows& part : rows) {
    gradient.push_back({part.table, part.ids, part.rows});
  }
  Stage(worker, batch_size, std::move(gradient));
}

}  // namespace ps::server
