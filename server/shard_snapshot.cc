#include "server/shard_snapshot.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/float_bytes.h"
#include "server/dense_slice.h"
#include "server/parameter_shard.h"
#include "server/sync_round.h"
#include "spdlog/spdlog.h"

namespace ps::server {

using common::KeyRange;

namespace {

// Tables as the old shard that wrote `file` held them, with room for every
// saved row and every row its open round touches, so that closing the round
// evicts nothing.
absl::StatusOr<std::unique_ptr<SparseTables>> TablesOfFile(
    const common::UpdateOptions& update,
    const common::OptimizerOptions& optimizer,
    const common::LrSchedule& lr_schedule, const common::ThetaFile& file) {
  ShardOptions options;
  options.shard_index = file.shard_index;
  options.num_shards = file.num_shards;
  options.update = update;
  options.optimizer = optimizer;
  options.lr_schedule = lr_schedule;
  options.min_count_to_create = 1;
  // Declare shares the limit in proportion to the rows' bytes: a limit of
  // max(need / share) gives every table at least what it needs.
  std::vector<uint64_t> row_bytes;
  std::vector<uint64_t> need;
  uint64_t all_row_bytes = 0;
  for (size_t t = 0; t < file.tables.size(); ++t) {
    const common::TableSpec& spec = file.tables[t].spec;
    common::OptimizerOptions own = optimizer;
    if (!spec.optimizer.empty()) {
      absl::StatusOr<common::OptimizerOptions> parsed =
          common::ParseOptimizerSpec(spec.optimizer);
      if (!parsed.ok()) return parsed.status();
      own = *parsed;
    }
    uint64_t rows = file.tables[t].ids.size() + 1;
    for (const common::RoundGradient& g : file.round) {
      for (const common::TableRows& part : g.tables) {
        if (part.table == t) rows += part.ids.size();
      }
    }
    row_bytes.push_back(uint64_t{spec.dim} * sizeof(float) *
                        (1 + common::OptimizerStateNames(own.kind).size()));
    // The row, its recency link and its index entry with the index's slack.
    need.push_back(rows * (row_bytes.back() + 64));
    all_row_bytes += row_bytes.back();
  }
  options.table_memory_limit = 0;
  for (size_t t = 0; t < need.size(); ++t) {
    options.table_memory_limit =
        std::max(options.table_memory_limit,
                 (need[t] + 1) * all_row_bytes / row_bytes[t] + 1);
  }
  auto tables = std::make_unique<SparseTables>(options);
  if (absl::Status restored = tables->Restore(file.tables, file.model_seed);
      !restored.ok()) {
    return restored;
  }
  return tables;
}

}  // namespace

absl::Status CloseSavedRound(const common::UpdateOptions& update,
                             const common::OptimizerOptions& optimizer,
                             const common::LrSchedule& lr_schedule,
                             common::ThetaFile& file) {
  const size_t num_keys = file.values.size();
  if (file.keys.size() != num_keys) {
    return absl::DataLossError("the checkpoint's key range and values differ");
  }
  SyncRound round(num_keys);
  for (const common::RoundGradient& g : file.round) {
    if (g.values.size() != num_keys || g.batch_size == 0 ||
        round.Has(g.worker_id)) {
      return absl::DataLossError("the checkpoint's open round is malformed");
    }
    absl::Span<float> slot = round.Slot(g.worker_id);
    std::copy(g.values.begin(), g.values.end(), slot.begin());
    round.Commit(g.worker_id, g.batch_size);
  }
  if (absl::Status sizes = CheckStateSizes(file); !sizes.ok()) return sizes;
  if (round.received() > 0) {
    std::vector<float> mean(num_keys);
    round.Mean(absl::MakeSpan(mean), static_cast<double>(round.samples()));
    // The shard's own update path, on the file's θ, tables and optimizer
    // state; the tables' rows staged by rank (workers in id order), as the
    // shard stages them by worker id.
    std::unique_ptr<SparseTables> tables;
    std::optional<SparseTables::Prepared> rows;
    if (!file.tables.empty()) {
      absl::StatusOr<std::unique_ptr<SparseTables>> made =
          TablesOfFile(update, optimizer, lr_schedule, file);
      if (!made.ok()) return made.status();
      tables = std::move(*made);
      std::vector<const common::RoundGradient*> by_worker;
      for (const common::RoundGradient& g : file.round) {
        by_worker.push_back(&g);
      }
      std::sort(
          by_worker.begin(), by_worker.end(),
          [](const common::RoundGradient* a, const common::RoundGradient* b) {
            return a->worker_id < b->worker_id;
          });
      for (uint32_t rank = 0; rank < by_worker.size(); ++rank) {
        if (absl::Status ok =
                tables->CheckRows(by_worker[rank]->tables, file.tables);
            !ok.ok()) {
          return ok;
        }
        tables->StageRows(rank, by_worker[rank]->batch_size,
                          by_worker[rank]->tables);
      }
      absl::StatusOr<SparseTables::Prepared> prepared =
          tables->Prepare(tables->RoundMean(round.samples()), file.version);
      if (prepared.ok()) rows = std::move(*prepared);
    }
    DenseSlice slice(update, optimizer, lr_schedule);
    slice.Declare(file.tensors, file.keys, std::move(file.values));
    slice.TakeState(file.state_names, std::move(file.state));
    // As MaybeCloseRound: the round changes θ and the tables together, or
    // ends without changing either.
    if ((tables != nullptr && !rows.has_value()) ||
        slice.ApplyIfFinite(mean, file.version)) {
      spdlog::error(
          "round {}'s update would make θ or a table non-finite; dropped "
          "its {} gradients",
          file.version, round.received());
    } else {
      if (tables != nullptr) {
        tables->Commit(*rows);
        file.tables = tables->Save();
      }
      file.samples_applied += round.samples();
    }
    file.values = slice.theta();
    file.state_names = slice.state_names();
    file.state = slice.state();
  }
  ++file.version;
  file.round.clear();
  return absl::OkStatus();
}

absl::Status CheckStateSizes(const common::ThetaFile& file) {
  if (file.state.size() != file.state_names.size()) {
    return absl::DataLossError("the checkpoint's optimizer state is malformed");
  }
  for (size_t i = 0; i < file.state.size(); ++i) {
    if (file.state[i].size() != file.keys.size()) {
      return absl::DataLossError(absl::StrCat(
          "the checkpoint's optimizer state '", file.state_names[i], "' holds ",
          file.state[i].size(), " values for ", file.keys.size(), " keys"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<common::ThetaFile> ParameterShard::Snapshot(
    const std::function<void()>& at_instant) const {
  absl::MutexLock lock(&mutex_);
  if (at_instant) at_instant();
  if (!initialized_ && !members_.AnyoneRegistered()) {
    return absl::FailedPreconditionError(
        "no model is declared on this shard yet; nothing to checkpoint");
  }
  common::ThetaFile file;
  file.shard_index = options_.shard_index;
  file.num_shards = options_.num_shards;
  file.mode = options_.mode;
  for (const common::WorkerRecord& m : members_.members()) {
    if (!m.registered) continue;
    file.workers.push_back(m);
    file.workers.back().late = round_.has_value() && round_->Late(m.worker_id);
  }
  // Before Init a shard's only state is its workers.
  if (!initialized_) return file;
  file.tensors = tensors_;
  file.keys = dense_.keys();
  file.rules = common::RuleSettings{options_.update, options_.sync_quorum,
                                    options_.staleness};
  file.version = version_;
  file.samples_applied = samples_applied_;
  file.values = dense_.theta();
  file.optimizer = common::OptimizerSpecString(options_.optimizer);
  file.lr_schedule = common::LrScheduleString(options_.lr_schedule);
  file.state_names = dense_.state_names();
  file.state = dense_.state();
  file.model_seed = tables_.model_seed();
  file.tables = tables_.Save();
  if (partitions_.declared()) file.partitions = partitions_.Save();
  if (round_.has_value()) {
    for (uint32_t id : round_->Senders()) {
      const absl::Span<const float> g = round_->gradient(id);
      file.round.push_back({id, round_->batch_size(id),
                            std::vector<float>(g.begin(), g.end()),
                            tables_.StagedRows(id)});
    }
  }
  return file;
}

absl::StatusOr<ParameterShard::ExportedRows> ParameterShard::ExportRows(
    const std::string& name, std::optional<uint64_t> after,
    size_t max_rows) const {
  absl::MutexLock lock(&mutex_);
  if (!initialized_) {
    return absl::FailedPreconditionError(
        "no model is declared on this shard yet; nothing to export");
  }
  absl::StatusOr<SparseTables::RowPage> page =
      tables_.ExportRows(name, after, max_rows);
  if (!page.ok()) return page.status();
  return ExportedRows{std::move(*page), version_, tables_.model_seed()};
}

absl::Status ParameterShard::Restore(common::ThetaFile saved) {
  if (saved.tensors.empty() && saved.tables.empty()) {
    return RestoreWorkers(saved.workers);
  }
  std::vector<common::TableSpec> table_specs;
  for (const common::SavedTable& table : saved.tables) {
    table_specs.push_back(table.spec);
  }
  if (absl::Status valid =
          table_specs.empty()
              ? common::ValidateTensorSpecs(saved.tensors)
              : common::ValidateModelSpecs(saved.tensors, table_specs);
      !valid.ok()) {
    return valid;
  }
  const KeyRange keys =
      common::BalancedPart(common::NumKeys(saved.tensors), options_.num_shards,
                           options_.shard_index);
  if (absl::Status size = CheckShardSize(keys); !size.ok()) return size;
  if (saved.keys != keys || saved.values.size() != keys.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the checkpoint holds keys ", saved.keys.ToString(),
                     " but shard ", options_.shard_index, " of ",
                     options_.num_shards, " owns ", keys.ToString()));
  }
  if (auto bad = common::FindNonFinite(saved.values)) {
    return absl::DataLossError(absl::StrCat(
        "the checkpoint's value of key ", keys.begin + *bad, " is not finite"));
  }
  if (absl::Status sizes = CheckStateSizes(saved); !sizes.ok()) return sizes;
  const std::string mode(ConsistencyModeName(options_.mode));
  if (saved.mode != options_.mode) {
    spdlog::warn(
        "shard {}: the checkpoint was written in {} mode; going on "
        "in {} mode",
        options_.shard_index,
        saved.mode.has_value() ? std::string(ConsistencyModeName(*saved.mode))
                               : "no",
        mode);
  }
  const bool same_layout = saved.num_shards == options_.num_shards &&
                           saved.shard_index == options_.shard_index &&
                           saved.mode == options_.mode;
  absl::MutexLock lock(&mutex_);
  // Everything is checked before anything changes, so a rejected checkpoint
  // leaves the shard as fresh as it was.
  for (const common::WorkerRecord& w : saved.workers) {
    if (w.worker_id >= members_.max_workers()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the checkpoint knows worker ", w.worker_id,
                       " but this server accepts worker ids 0 to ",
                       members_.max_workers() - 1, " (--max_workers)"));
    }
  }
  for (const common::RoundGradient& g : saved.round) {
    if (same_layout && (g.values.size() != keys.size() || g.batch_size == 0 ||
                        g.worker_id >= members_.max_workers())) {
      return absl::DataLossError("the checkpoint's open round is malformed");
    }
    if (absl::Status rows = tables_.CheckRows(g.tables, saved.tables);
        same_layout && !rows.ok()) {
      return rows;
    }
  }
  // Shard 0 keeps the partition table; another shard's file has none.
  PartitionTable partitions(options_.num_workers);
  if (saved.partitions.has_value() && options_.shard_index == 0) {
    if (absl::Status restored = partitions.Restore(*saved.partitions);
        !restored.ok()) {
      return restored;
    }
  }
  // The last check that can fail, and the first change: on failure the
  // shard declares no table.
  if (absl::Status tables = tables_.Restore(saved.tables, saved.model_seed);
      !tables.ok()) {
    return tables;
  }
  has_tables_.store(!tables_.empty());
  partitions_ = std::move(partitions);
  const absl::Time now = Now();
  for (const common::WorkerRecord& w : saved.workers) {
    if (absl::Status restored = members_.Restore(w, now); !restored.ok()) {
      return restored;
    }
  }
  DeclareModel(std::move(saved.tensors), keys, std::move(saved.values), now);
  if (std::string differs =
          dense_.TakeState(saved.state_names, std::move(saved.state));
      !differs.empty()) {
    spdlog::warn("shard {}: the optimizer state does not match: {}",
                 options_.shard_index, differs);
  }
  version_ = saved.version;
  samples_applied_ = saved.samples_applied;
  if (options_.mode == ConsistencyMode::kSync) {
    for (const common::RoundGradient& g : saved.round) {
      if (!same_layout) break;
      absl::Span<float> slot = round_->Slot(g.worker_id);
      std::copy(g.values.begin(), g.values.end(), slot.begin());
      round_->Commit(g.worker_id, g.batch_size);
      tables_.StageRows(g.worker_id, g.batch_size, g.tables);
    }
    for (const common::WorkerRecord& w : saved.workers) {
      if (same_layout && w.late) round_->MarkLate(w.worker_id);
    }
    if (!same_layout && !saved.round.empty()) {
      spdlog::warn(
          "shard {}: dropped the {} gradients of the open round: "
          "they were saved by shard {} of {}",
          options_.shard_index, saved.round.size(), saved.shard_index,
          saved.num_shards);
    }
  }
  if (options_.mode != ConsistencyMode::kSync && !saved.round.empty()) {
    spdlog::warn(
        "shard {}: dropped the {} gradients of the open sync round: "
        "this server runs in {} mode",
        options_.shard_index, saved.round.size(), mode);
  }
  return absl::OkStatus();
}

absl::Status ParameterShard::RestoreWorkers(
    const std::vector<common::WorkerRecord>& workers) {
  absl::MutexLock lock(&mutex_);
  if (initialized_) {
    return absl::FailedPreconditionError(
        "a state without a model cannot replace a shard that holds one");
  }
  Membership members(options_.shard_index, options_.num_workers,
                     options_.max_workers, options_.lease_timeout);
  const absl::Time now = Now();
  for (const common::WorkerRecord& w : workers) {
    if (absl::Status restored = members.Restore(w, now); !restored.ok()) {
      return restored;
    }
  }
  members_ = std::move(members);
  return absl::OkStatus();
}

}  // namespace ps::server
