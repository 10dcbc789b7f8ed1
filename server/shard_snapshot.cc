#include "server/shard_snapshot.h"

#include <algorithm>
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

absl::Status CloseSavedRound(const common::UpdateOptions& update,
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
  if (round.received() > 0) {
    std::vector<float> mean(num_keys);
    round.Mean(absl::MakeSpan(mean));
    ApplyOverSegments(update, common::SegmentsInRange(file.tensors, file.keys),
                      file.keys.begin, mean, absl::MakeSpan(file.values));
    file.samples_applied += round.samples();
  }
  ++file.version;
  file.round.clear();
  return absl::OkStatus();
}

absl::StatusOr<common::ThetaFile> ParameterShard::Snapshot() const {
  absl::MutexLock lock(&mutex_);
  if (!initialized_) {
    return absl::FailedPreconditionError(
        "no model is declared on this shard yet; nothing to checkpoint");
  }
  if (!tables_.empty()) {
    // Refused rather than written without them: a restore would bring the
    // model back with every row gone.
    return absl::UnimplementedError(
        "this shard holds sparse tables, which checkpoints do not hold yet");
  }
  common::ThetaFile file;
  file.tensors = tensors_;
  file.keys = dense_.keys();
  file.shard_index = options_.shard_index;
  file.num_shards = options_.num_shards;
  file.mode = options_.mode;
  file.rules = common::RuleSettings{options_.update, options_.sync_quorum,
                                    options_.staleness};
  file.version = version_;
  file.samples_applied = samples_applied_;
  file.values = dense_.theta();
  for (const common::WorkerRecord& m : members_.members()) {
    if (m.registered) file.workers.push_back(m);
  }
  if (round_.has_value()) {
    for (uint32_t id : round_->Senders()) {
      const absl::Span<const float> g = round_->gradient(id);
      file.round.push_back(
          {id, round_->batch_size(id), std::vector<float>(g.begin(), g.end())});
    }
  }
  return file;
}

absl::Status ParameterShard::Restore(common::ThetaFile saved) {
  if (absl::Status valid = common::ValidateTensorSpecs(saved.tensors);
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
  }
  const absl::Time now = Now();
  for (const common::WorkerRecord& w : saved.workers) {
    if (absl::Status restored = members_.Restore(w, now); !restored.ok()) {
      return restored;
    }
  }
  DeclareModel(std::move(saved.tensors), keys, std::move(saved.values), now);
  version_ = saved.version;
  samples_applied_ = saved.samples_applied;
  if (options_.mode == ConsistencyMode::kSync) {
    for (const common::RoundGradient& g : saved.round) {
      if (!same_layout) break;
      absl::Span<float> slot = round_->Slot(g.worker_id);
      std::copy(g.values.begin(), g.values.end(), slot.begin());
      round_->Commit(g.worker_id, g.batch_size);
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

}  // namespace ps::server
