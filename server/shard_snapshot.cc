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
    round.Mean(absl::MakeSpan(mean));
    // The shard's own update path, on the file's θ and optimizer state.
    DenseSlice slice(update, optimizer, lr_schedule);
    slice.Declare(file.tensors, file.keys, std::move(file.values));
    slice.TakeState(file.state_names, std::move(file.state));
    if (slice.ApplyIfFinite(mean, file.version)) {
      // As MaybeCloseRound: the round ends without changing θ.
      spdlog::error(
          "round {}'s update would make θ non-finite; dropped its {} "
          "gradients",
          file.version, round.received());
    } else {
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
  file.optimizer = common::OptimizerSpecString(options_.optimizer);
  file.lr_schedule = common::LrScheduleString(options_.lr_schedule);
  file.state_names = dense_.state_names();
  file.state = dense_.state();
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
  }
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
