#include "server/sparse_tables.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/float_bytes.h"
#include "common/key_range.h"

namespace ps::server {
namespace {

// Sighting counts take at most this much of a table's share of the limit.
constexpr uint64_t kMaxSketchBytes = uint64_t{1} << 20;

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
  for (size_t i = 0; i < count; ++i) {
    ids[i] = KeyAt(rows.keys, i);
    const uint32_t home = common::ShardOfId(ids[i], options_.num_shards);
    if (home != options_.shard_index) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key ", ids[i], " of table '", rows.table, "' belongs to shard ",
          home, " of ", options_.num_shards, ", not to this shard ",
          options_.shard_index, " (a row lives on SplitMix64(id) mod S)"));
    }
  }
  return ids;
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
    // Each key once, increasing, its rows summed in the order given.
    std::vector<size_t> order(ids->size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return (*ids)[a] < (*ids)[b]; });
    TableGradient& summed = gradient.emplace_back();
    summed.table = *table;
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

SparseGradient SparseTables::RoundMean(uint64_t samples) const {
  SparseGradient mean;
  const float total = static_cast<float>(samples);
  for (size_t t = 0; t < tables_.size(); ++t) {
    const size_t dim = specs_[t].dim;
    // (id, rank, row): sorted, each id's rows come in rank order.
    std::vector<std::tuple<uint64_t, uint32_t, const float*>> entries;
    for (uint32_t k = 0; k < staged_.size(); ++k) {
      if (staged_[k].batch_size == 0) continue;
      for (const TableGradient& part : staged_[k].gradient) {
        if (part.table != t) continue;
        for (size_t i = 0; i < part.ids.size(); ++i) {
          entries.emplace_back(part.ids[i], k, part.rows.data() + i * dim);
        }
      }
    }
    if (entries.empty()) continue;
    std::sort(entries.begin(), entries.end());
    TableGradient& part = mean.emplace_back();
    part.table = t;
    for (const auto& [id, rank, row] : entries) {
      if (part.ids.empty() || part.ids.back() != id) {
        part.ids.push_back(id);
        part.rows.resize(part.rows.size() + dim, 0.0f);
      }
      // As SyncRound::Mean: weight·g summed in rank order, then ÷ total.
      const float weight = static_cast<float>(staged_[rank].batch_size);
      float* sum = part.rows.data() + part.rows.size() - dim;
      for (size_t j = 0; j < dim; ++j) sum[j] += weight * row[j];
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

}  // namespace ps::server
