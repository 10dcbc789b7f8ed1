#include "server/consistency_policy.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"

namespace ps::server {

ConsistencyPolicy::ConsistencyPolicy(const ShardOptions& options)
    : mode_(options.mode),
      staleness_(options.staleness),
      sync_quorum_(options.sync_quorum),
      round_timeout_(options.round_timeout) {}

bool ConsistencyPolicy::MayAnswerPull(uint64_t min_version,
                                      uint64_t reader_clock, uint64_t version,
                                      const Membership& members) const {
  // Sync rounds advance one at a time, so waiting for more than the next
  // one means the worker saw rounds this shard no longer has (it was
  // restored from a checkpoint): answer at once, so the worker learns the
  // round it must continue from.
  const bool behind_the_worker =
      mode_ == ConsistencyMode::kSync && min_version > version + 1;
  if (version < min_version && !behind_the_worker) return false;
  if (mode_ != ConsistencyMode::kSsp || reader_clock <= staleness_) {
    return true;
  }
  // SSP: the slowest live worker is at most `staleness` clocks behind.
  if (!members.gathered()) return false;
  const std::optional<uint64_t> slowest = members.MinLiveClock();
  return !slowest.has_value() || *slowest + staleness_ >= reader_clock;
}

absl::Status ConsistencyPolicy::CheckPullReachable(const PullArgs& pull,
                                                   uint64_t version) const {
  if (mode_ == ConsistencyMode::kSync) return absl::OkStatus();
  if (pull.min_version > version) {
    return absl::OutOfRangeError(absl::StrCat(
        "min_version ", pull.min_version, " is ahead of this shard's version ",
        version, ": in ", ConsistencyModeName(mode_),
        " mode a pull never waits for a version",
        mode_ == ConsistencyMode::kSsp ? " (only for the staleness bound)" : "",
        "; ask for at most ", version, ", or 0 for the newest θ"));
  }
  return absl::OkStatus();
}

uint64_t ConsistencyPolicy::WaitClock(const PullArgs& pull,
                                      const Membership& members) const {
  if (mode_ != ConsistencyMode::kSsp || !members.IsLive(pull.worker_id)) {
    return pull.clock;
  }
  const uint64_t own_clock = members.members()[pull.worker_id].clock;
  return std::min(pull.clock, own_clock + staleness_);
}

uint64_t ConsistencyPolicy::ReadClockGap(uint64_t reader_clock,
                                         const Membership& members) const {
  if (mode_ != ConsistencyMode::kSsp) return 0;
  const uint64_t slowest = members.MinLiveClock().value_or(reader_clock);
  return reader_clock > slowest ? reader_clock - slowest : 0;
}

RoundFit ConsistencyPolicy::FitToRound(uint64_t base_version, uint64_t version,
                                       const SyncRound& round,
                                       uint32_t worker) const {
  // Only a shard restored from a checkpoint is behind a worker: the θ the
  // gradient came from is gone, so it cannot count.
  if (base_version > version) return RoundFit::kAheadOfShard;
  if (base_version < version) return RoundFit::kClosedRound;
  if (round.Has(worker)) return RoundFit::kAlreadyInRound;
  return RoundFit::kOpenRound;
}

RoundClose ConsistencyPolicy::WhyRoundCloses(const SyncRound& round,
                                             const Membership& members,
                                             absl::Duration open_for) const {
  // No rule closes a round before the expected workers registered once, so
  // the first rounds never run ahead of workers still starting.
  if (round.received() == 0 || !members.gathered()) return RoundClose::kNotYet;
  if (sync_quorum_ > 0 && round.received() >= sync_quorum_) {
    return RoundClose::kQuorum;
  }
  // The quorum is capped by the workers still training: with fewer left
  // than it (the others finished, or wait idle for a partition), a round
  // closes when each of them pushed, neither early nor by the timeout.
  // A late worker (its push of this step came after its round closed here)
  // is not waited for: with a quorum, shards close their rounds with
  // different gradients, so it may be waiting on another shard for a round
  // that waits on a worker this round holds, and neither would ever close.
  bool all_training_pushed = true;
  for (uint32_t id : members.TrainingWorkers()) {
    all_training_pushed =
        all_training_pushed && (round.Has(id) || round.Late(id));
  }
  if (all_training_pushed) return RoundClose::kAllLive;
  if (open_for >= round_timeout_) return RoundClose::kTimeout;
  return RoundClose::kNotYet;
}

double ConsistencyPolicy::RoundExamples(const SyncRound& round) const {
  const double samples = static_cast<double>(round.samples());
  if (round.received() == 0 || round.received() >= sync_quorum_) {
    return samples;
  }
  return samples * sync_quorum_ / round.received();
}

}  // namespace ps::server
