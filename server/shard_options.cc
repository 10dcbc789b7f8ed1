#include "server/shard_options.h"

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace ps::server {

absl::Status ValidateShardOptions(const ShardOptions& o) {
  if (o.num_shards == 0) {
    return absl::InvalidArgumentError("num_shards must be at least 1");
  }
  if (o.shard_index >= o.num_shards) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard_index ", o.shard_index, " is not below num_shards ",
                     o.num_shards));
  }
  if (o.num_workers == 0 || o.num_workers > 65536) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_workers must be between 1 and 65536, got ", o.num_workers));
  }
  if (o.max_workers > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_workers must be at most 65536, got ", o.max_workers));
  }
  if (o.lease_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("lease_timeout must be > 0");
  }
  if (o.round_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("round_timeout must be > 0");
  }
  if (o.sync_quorum > 0 && o.mode != ConsistencyMode::kSync) {
    return absl::InvalidArgumentError("sync_quorum applies to mode sync only");
  }
  if (o.max_keys_per_shard == 0 || o.max_keys_per_shard > common::kMaxKeys) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_keys_per_shard must be between 1 and 2^40, got ",
                     o.max_keys_per_shard));
  }
  if (!o.clock) return absl::InvalidArgumentError("the shard needs a clock");
  if (o.max_parked_pulls == 0 || o.max_parked_pulls_per_worker == 0) {
    return absl::InvalidArgumentError(
        "max_parked_pulls must be at least 1 (pulls that must wait need "
        "room to)");
  }
  if (o.min_count_to_create == 0) {
    return absl::InvalidArgumentError(
        "min_count_to_create must be at least 1 (1 creates a row at its first "
        "update)");
  }
  if (o.staleness > 0 && o.mode != ConsistencyMode::kSsp) {
    return absl::InvalidArgumentError("staleness applies to mode ssp only");
  }
  if (absl::Status s = common::ValidateOptimizerOptions(o.optimizer); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("optimizer: ", s.message()));
  }
  return common::ValidateUpdateOptions(o.update);
}

int MaxRequestBytes(uint64_t max_keys_per_shard) {
  const uint64_t limit =
      std::min<uint64_t>(max_keys_per_shard, uint64_t{1} << 40) *
          sizeof(float) +
      kRequestFieldsBytes;
  return static_cast<int>(
      std::min<uint64_t>(limit, std::numeric_limits<int>::max()));
}

std::string DescribeRuleChange(const common::ThetaFile& saved,
                               const ShardOptions& options) {
  std::vector<std::string> changes;
  auto compare = [&](absl::string_view name, auto was, auto now) {
    // Bitwise for floats: -0 vs 0 would not change a rule, but NaN never
    // appears (validated) and infinities compare equal.
    if (!(was == now)) {
      changes.push_back(absl::StrCat(name, " ", was, " → ", now));
    }
  };
  // Exports carry no mode; a checkpoint always does.
  if (saved.mode.has_value()) {
    compare("mode", ConsistencyModeName(*saved.mode),
            ConsistencyModeName(options.mode));
  }
  if (saved.rules.has_value()) {
    const common::RuleSettings& was = *saved.rules;
    const common::UpdateOptions& now = options.update;
    compare("sync_quorum", was.sync_quorum, options.sync_quorum);
    compare("staleness", was.staleness, options.staleness);
    compare("lr", was.update.learning_rate, now.learning_rate);
    compare("l2", was.update.l2, now.l2);
    compare("l1", was.update.l1, now.l1);
    compare("clip_min", was.update.clip_min, now.clip_min);
    compare("clip_max", was.update.clip_max, now.clip_max);
    compare("nonnegative", was.update.nonnegative, now.nonnegative);
    compare("max_norm", was.update.max_norm, now.max_norm);
    compare("penalty_beta", was.update.penalty_beta, now.penalty_beta);
    // Settings the state depends on: the same text means the same floats
    // (OptimizerSpecString writes each so that it reads back exactly).
    compare("optimizer", saved.optimizer,
            common::OptimizerSpecString(options.optimizer));
    compare("lr_schedule", saved.lr_schedule,
            common::LrScheduleString(options.lr_schedule));
  }
  return absl::StrJoin(changes, ", ");
}

}  // namespace ps::server
