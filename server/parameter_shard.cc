#include "server/parameter_shard.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/float_bytes.h"
#include "spdlog/spdlog.h"

namespace ps::server {

using common::KeyRange;

namespace {

// Steps and clocks far beyond any run's (2^62 steps), so that step + 1 and
// clock + staleness never wrap.
constexpr uint64_t kMaxStep = uint64_t{1} << 62;
// How far one push may number past the incarnation's last one: seqs may skip
// (a push the server never saw), but a corrupt seq near 2^64 would make every
// later push of the incarnation a duplicate.
constexpr uint64_t kMaxSeqJump = uint64_t{1} << 32;

// θ ← update(θ, gradient) over keys starting at `first_key`, each tensor's
// part with its own regularization.
void ApplyOverSegments(const common::UpdateOptions& update,
                       const std::vector<common::TensorSegment>& segments,
                       uint64_t first_key, absl::Span<const float> gradient,
                       absl::Span<float> theta) {
  for (const common::TensorSegment& segment : segments) {
    const size_t offset = segment.keys.begin - first_key;
    common::ApplyUpdate(update, segment.regularize,
                        gradient.subspan(offset, segment.keys.size()),
                        theta.subspan(offset, segment.keys.size()));
  }
}

// Updates whose every |value| stays below this are finite in float
// arithmetic (FLT_MAX ≈ 3.4e38; each rounding adds a relative 2^-24).
constexpr double kSurelyFiniteBelow = 1e38;

// The largest |value|, or infinity when any value is NaN or infinite (so
// a NaN never passes a bound). Works on the bits with the sign cleared,
// which order like the magnitudes: an integer max, so the loop vectorizes
// (a float max with NaN semantics does not).
double LargestMagnitude(absl::Span<const float> values) {
  int32_t largest = 0;
  for (float v : values) {
    int32_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    largest = std::max(largest, bits & 0x7fffffff);
  }
  if (largest >= 0x7f800000) return std::numeric_limits<double>::infinity();
  float magnitude;
  std::memcpy(&magnitude, &largest, sizeof(magnitude));
  return magnitude;
}

}  // namespace

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
  if (o.staleness > 0 && o.mode != ConsistencyMode::kSsp) {
    return absl::InvalidArgumentError("staleness applies to mode ssp only");
  }
  return common::ValidateUpdateOptions(o.update);
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
  }
  return absl::StrJoin(changes, ", ");
}

ParameterShard::ParameterShard(ShardOptions options)
    : options_(std::move(options)),
      chunk_(kApplyChunkFloats),
      members_(options_.shard_index, options_.num_workers, options_.max_workers,
               options_.lease_timeout) {}

absl::StatusOr<RegisterResult> ParameterShard::Register(uint32_t worker_id,
                                                        uint64_t incarnation) {
  std::vector<Completion> satisfied;
  RegisterResult result;
  {
    absl::MutexLock lock(&mutex_);
    const bool gathered = members_.gathered();
    const absl::Time now = Now();
    absl::StatusOr<Membership::Registration> registered =
        members_.Register(worker_id, incarnation, now);
    if (!registered.ok()) return registered.status();
    // A round's timeout runs from when it could first close.
    if (!gathered && members_.gathered()) round_opened_ = now;
    result = {registered->rejoined, registered->resume_step, version_,
              members_.lease_timeout()};
    spdlog::info(
        "shard {}: worker {} {} (incarnation {}, resuming at step "
        "{}); {} live",
        options_.shard_index, worker_id,
        registered->rejoined ? "rejoined" : "registered", incarnation,
        registered->resume_step, members_.LiveWorkers().size());
    satisfied = TakeSatisfiedPulls();
  }
  for (auto& [done, answer] : satisfied) done(std::move(answer));
  return result;
}

absl::StatusOr<uint64_t> ParameterShard::Heartbeat(uint32_t worker_id,
                                                   uint64_t incarnation) {
  absl::MutexLock lock(&mutex_);
  if (absl::Status s = members_.Heartbeat(worker_id, incarnation, Now());
      !s.ok()) {
    return s;
  }
  return version_;
}

absl::Status ParameterShard::Leave(uint32_t worker_id, uint64_t incarnation,
                                   LeaveReason reason) {
  std::vector<Completion> satisfied;
  {
    absl::MutexLock lock(&mutex_);
    if (!taking_pushes_.load()) {
      // The final checkpoint is taken: a leave recorded now would be lost
      // and the worker restored as live. It retries against the restart.
      return absl::UnavailableError(
          "the server is shutting down (checkpointing); leave again after it "
          "restarts");
    }
    if (absl::Status s = members_.Leave(worker_id, incarnation, reason);
        !s.ok()) {
      return s;
    }
    spdlog::info(
        "shard {}: worker {} {}; {} live", options_.shard_index, worker_id,
        reason == LeaveReason::kFinished      ? "finished and left"
        : reason == LeaveReason::kStartFailed ? "failed to start and left"
                                              : "left",
        members_.LiveWorkers().size());
    MaybeCloseRound(Now());
    satisfied = TakeSatisfiedPulls();
  }
  for (auto& [done, answer] : satisfied) done(std::move(answer));
  return absl::OkStatus();
}

absl::StatusOr<InitResult> ParameterShard::Init(const InitArgs& args) {
  if (args.shard_index != options_.shard_index ||
      args.num_shards != options_.num_shards) {
    return absl::FailedPreconditionError(
        absl::StrCat("the worker addressed shard ", args.shard_index, " of ",
                     args.num_shards, " but this server is shard ",
                     options_.shard_index, " of ", options_.num_shards,
                     ": the worker's --servers order must match the servers' "
                     "--shard_index and --num_shards"));
  }
  if (const uint32_t ids = std::max(options_.num_workers, options_.max_workers);
      args.worker_id >= ids) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown worker_id ", args.worker_id,
                     ": this server accepts worker ids 0 to ", ids - 1));
  }
  if (absl::Status valid = common::ValidateTensorSpecs(args.tensors);
      !valid.ok()) {
    return valid;
  }
  const uint64_t num_keys = common::NumKeys(args.tensors);
  const KeyRange keys =
      common::BalancedPart(num_keys, options_.num_shards, options_.shard_index);

  absl::MutexLock lock(&mutex_);
  if (initialized_) {
    if (std::string diff = common::DescribeDifference(tensors_, args.tensors);
        !diff.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("this shard already holds a different model (declared "
                       "first or restored from a checkpoint): ",
                       diff));
    }
    return InitResult{false, version_, keys_, options_.mode,
                      options_.num_workers};
  }
  // Sizes first: θ is allocated only for a shard this server may hold and
  // values that fill it exactly, so a request cannot cost more memory than
  // it carries.
  if (absl::Status size = CheckShardSize(keys); !size.ok()) return size;
  if (absl::Status s = common::CheckFloatBytes(
          args.values.size(), keys.size(),
          absl::StrCat("initial values for keys ", keys.ToString()));
      !s.ok()) {
    return s;
  }
  std::vector<float> theta(keys.size());
  if (absl::Status s = common::BytesToFloats(
          args.values, absl::MakeSpan(theta),
          absl::StrCat("initial values for keys ", keys.ToString()));
      !s.ok()) {
    return s;
  }
  if (auto bad = common::FindNonFinite(theta)) {
    return absl::InvalidArgumentError(
        absl::StrCat("initial value of key ", keys.begin + *bad, " is ",
                     theta[*bad], "; values must be finite"));
  }
  DeclareModel(args.tensors, keys, std::move(theta), Now());
  spdlog::info(
      "shard {}/{}: model declared by worker {}: {} tensors, {} keys, "
      "this shard holds {}",
      options_.shard_index, options_.num_shards, args.worker_id,
      tensors_.size(), num_keys, keys_.ToString());
  return InitResult{true, version_, keys_, options_.mode, options_.num_workers};
}

absl::Status ParameterShard::CheckShardSize(const KeyRange& keys) const {
  if (keys.size() <= options_.max_keys_per_shard) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("shard ", options_.shard_index, " of ", options_.num_shards,
                   " would hold ", keys.size(), " keys ", keys.ToString(),
                   ", more than this server's --max_keys_per_shard=",
                   options_.max_keys_per_shard,
                   " (raise it, or split the model over more shards)"));
}

absl::StatusOr<KeyRange> ParameterShard::ResolvePullKeys(
    const KeyRange& requested) const {
  if (requested.begin == 0 && requested.end == 0) return keys_;
  if (requested.begin > requested.end || !keys_.Contains(requested)) {
    return absl::OutOfRangeError(
        absl::StrCat("keys ", requested.ToString(),
                     " are not inside this shard's range ", keys_.ToString()));
  }
  return requested;
}

PullResult ParameterShard::Read(const PullArgs& args) {
  const KeyRange& keys = args.keys;
  if (options_.mode == ConsistencyMode::kSsp) {
    const uint64_t slowest = members_.MinLiveClock().value_or(args.clock);
    if (args.clock > slowest) {
      max_read_clock_gap_ = std::max(max_read_clock_gap_, args.clock - slowest);
    }
  }
  PullResult result;
  result.version = version_;
  result.samples_applied = samples_applied_;
  result.mode = options_.mode;
  result.keys = keys;
  common::FloatsToBytes(absl::MakeConstSpan(theta_).subspan(
                            keys.begin - keys_.begin, keys.size()),
                        &result.values);
  return result;
}

ParameterShard::PullTicket ParameterShard::NewPullTicket() {
  return next_ticket_.fetch_add(1, std::memory_order_relaxed);
}

std::optional<absl::StatusOr<PullResult>> ParameterShard::Pull(
    const PullArgs& args, absl::Time expires, PullTicket ticket,
    PullDone done) {
  absl::MutexLock lock(&mutex_);
  if (!initialized_) {
    return absl::FailedPreconditionError(
        "no model is declared on this shard yet; call Init first");
  }
  absl::StatusOr<KeyRange> keys = ResolvePullKeys(args.keys);
  if (!keys.ok()) return keys.status();
  if (args.clock >= kMaxStep) {
    return absl::InvalidArgumentError(absl::StrCat(
        "clock ", args.clock, " is not a worker's clock (at most 2^62)"));
  }
  PullArgs parked = args;
  parked.keys = *keys;
  if (Satisfied(parked)) return Read(parked);
  if (!done) return std::nullopt;
  if (!parking_pulls_) {
    return absl::UnavailableError("the server is shutting down; retry");
  }
  parked_.emplace(ticket, ParkedPull{parked, expires, std::move(done)});
  return std::nullopt;
}

bool ParameterShard::CancelPull(PullTicket ticket) {
  PullDone done;
  {
    absl::MutexLock lock(&mutex_);
    auto it = parked_.find(ticket);
    if (it == parked_.end()) return false;
    done = std::move(it->second.done);
    parked_.erase(it);
  }
  done(absl::CancelledError("the pull was cancelled by the client"));
  return true;
}

void ParameterShard::EndParkedPulls() {
  std::vector<PullDone> parked;
  {
    absl::MutexLock lock(&mutex_);
    parking_pulls_ = false;
    for (auto& [ticket, pull] : parked_) parked.push_back(std::move(pull.done));
    parked_.clear();
  }
  for (PullDone& done : parked) {
    done(absl::UnavailableError("the server is shutting down; retry"));
  }
}

void ParameterShard::Tick(absl::Time now) {
  std::vector<Completion> done_now;
  {
    absl::MutexLock lock(&mutex_);
    for (auto it = parked_.begin(); it != parked_.end();) {
      if (it->second.expires <= now) {
        done_now.emplace_back(
            std::move(it->second.done),
            absl::DeadlineExceededError(absl::StrCat(
                "version ", it->second.args.min_version,
                options_.mode == ConsistencyMode::kSsp
                    ? absl::StrCat(" and the staleness bound for clock ",
                                   it->second.args.clock)
                    : "",
                " not reached in time; the shard is at version ", version_)));
        parked_.erase(it++);
      } else {
        ++it;
      }
    }
    for (uint32_t id : members_.Expire(now)) {
      spdlog::warn(
          "shard {}: lease of worker {} (incarnation {}) expired "
          "after {} without a heartbeat; {} live",
          options_.shard_index, id, members_.at(id).incarnation,
          absl::FormatDuration(options_.lease_timeout),
          members_.LiveWorkers().size());
    }
    MaybeCloseRound(now);
    for (Completion& c : TakeSatisfiedPulls()) done_now.push_back(std::move(c));
  }
  for (auto& [done, result] : done_now) done(std::move(result));
}

absl::Status ParameterShard::ValidatePush(const PushArgs& args) const {
  if (!initialized_) {
    return absl::FailedPreconditionError(
        "no model is declared on this shard yet; call Init first");
  }
  if (args.worker_id >= members_.max_workers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown worker_id ", args.worker_id,
                     ": this server accepts worker "
                     "ids 0 to ",
                     members_.max_workers() - 1));
  }
  if (args.batch_size == 0) {
    return absl::InvalidArgumentError(
        "batch_size is 0; a gradient must come from at least one example");
  }
  if (args.keys != keys_) {
    return absl::InvalidArgumentError(
        absl::StrCat("the push addresses keys ", args.keys.ToString(),
                     " but this shard owns ", keys_.ToString(),
                     "; a push must cover exactly the shard's range"));
  }
  if (args.seq == 0) {
    return absl::InvalidArgumentError(
        "seq is 0: an incarnation numbers its pushes from 1 (a retry repeats "
        "its push's seq)");
  }
  if (args.step >= kMaxStep) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step ", args.step, " is not a worker's step (at most 2^62)"));
  }
  if (absl::Status live = members_.CheckLive(args.worker_id, args.incarnation);
      !live.ok()) {
    return live;
  }
  const uint64_t last_seq = members_.members()[args.worker_id].last_seq;
  if (args.seq > last_seq && args.seq - last_seq > kMaxSeqJump) {
    return absl::InvalidArgumentError(
        absl::StrCat("seq ", args.seq,
                     " jumps more than 2^32 past this incarnation's last "
                     "push (",
                     last_seq, "): pushes are numbered 1, 2, 3, …"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PushResult> ParameterShard::Push(const PushArgs& args) {
  std::vector<Completion> satisfied;
  PushResult result;
  {
    absl::MutexLock lock(&mutex_);
    if (!taking_pushes_.load()) {
      return absl::UnavailableError(
          "the server is shutting down (checkpointing); retry the push");
    }
    if (absl::Status valid = ValidatePush(args); !valid.ok()) {
      ++pushes_rejected_;
      return valid;
    }
    common::WorkerRecord& worker = members_.at(args.worker_id);
    if (args.seq <= worker.last_seq) {
      ++pushes_duplicate_;
      return PushResult{PushOutcome::kDuplicate, version_};
    }
    const bool sync = options_.mode == ConsistencyMode::kSync;
    // Sync: the gradient belongs to the round of the θ it came from.
    const uint64_t round = args.base_version;
    if (sync && round > version_) {
      // Only a shard restored from a checkpoint is behind a worker: the θ
      // the gradient came from is gone, so it cannot count.
      ++pushes_stale_;
      worker.last_seq = args.seq;
      spdlog::warn(
          "shard {}: dropped a push from worker {} for round {}, "
          "which this shard has not reached (restored to round {})",
          options_.shard_index, args.worker_id, round, version_);
      return PushResult{PushOutcome::kStale, version_};
    }
    if (sync && round < version_) {
      ++pushes_stale_;
      worker.last_seq = args.seq;
      spdlog::info(
          "shard {}: dropped a stale push from worker {} for closed "
          "round {} (round {} is open)",
          options_.shard_index, args.worker_id, round, version_);
      return PushResult{PushOutcome::kStale, version_};
    }
    if (sync && round_->Has(args.worker_id)) {
      ++pushes_duplicate_;
      return PushResult{PushOutcome::kDuplicate, version_};
    }

    // Validate everything before the gradient counts: a rejected gradient
    // leaves θ and the round as they were. Sync copies it into the round's
    // slot first (the round keeps it); async and SSP check the request's
    // slices a cache-sized chunk at a time and apply straight from them,
    // with no θ-sized copy.
    absl::Status valid = common::CheckFloatBytes(args.gradient.size(),
                                                 keys_.size(), "the gradient");
    double largest = 0;  // async: the gradient's largest magnitude
    bool checked_exactly = false;
    if (valid.ok()) {
      std::optional<std::pair<size_t, float>> bad;
      if (sync) {
        absl::Span<float> slot = round_->Slot(args.worker_id);
        absl::Cord::CharIterator from = args.gradient.char_begin();
        common::ReadFloats(from, slot);
        if (auto at = common::FindNonFinite(slot)) bad = {{*at, slot[*at]}};
      } else {
        bad = FindNonFiniteGradient(args.gradient, &largest);
      }
      if (bad) {
        valid = absl::InvalidArgumentError(
            absl::StrCat("gradient value for key ", keys_.begin + bad->first,
                         " is ", bad->second, "; gradients must be finite"));
      } else if (!sync && !SurelyFinite(largest)) {
        // Finite gradients can still carry θ past the float range: when
        // the bound cannot rule it out, run the update on copies. A sync
        // round is checked as a whole when it closes (MaybeCloseRound).
        checked_exactly = true;
        absl::Cord::CharIterator from = args.gradient.char_begin();
        if (auto result = FindNonFiniteResult([&](absl::Span<float> out) {
              common::ReadFloats(from, out);
            })) {
          valid = absl::InvalidArgumentError(absl::StrCat(
              "applying this gradient would make the value of key ",
              keys_.begin + result->first, " ", result->second,
              ", which is not finite; the push is refused and θ unchanged "
              "(is the learning rate too high?)"));
        }
      }
    }
    if (!valid.ok()) {
      ++pushes_rejected_;
      return valid;
    }

    worker.last_seq = args.seq;
    worker.last_step = args.step;
    worker.clock = std::max(worker.clock, args.step + 1);
    ++worker.pushes;

    if (sync) {
      round_->Commit(args.worker_id, args.batch_size);
      result.outcome = MaybeCloseRound(Now()) ? PushOutcome::kApplied
                                              : PushOutcome::kAccepted;
    } else {
      ApplyGradientBytes(args.gradient, args.batch_size);
      BoundAfterUpdate(largest, checked_exactly);
      ++pushes_applied_;
      result.outcome = PushOutcome::kApplied;
    }
    result.version = version_;
    satisfied = TakeSatisfiedPulls();
  }
  for (auto& [done, answer] : satisfied) done(std::move(answer));
  return result;
}

bool ParameterShard::MaybeCloseRound(absl::Time now) {
  if (!round_.has_value() || round_->received() == 0) return false;
  // Draining: the final checkpoint holds this version; a round closed now
  // would be served to workers and then rewound by the restart.
  if (!taking_pushes_.load()) return false;
  // No rule closes a round before the expected workers registered once, so
  // the first rounds never run ahead of workers still starting.
  if (!members_.gathered()) return false;
  const uint32_t received = round_->received();
  uint64_t* reason = nullptr;
  if (options_.sync_quorum > 0 && received >= options_.sync_quorum) {
    reason = &rounds_closed_by_quorum_;
  } else {
    bool all_live_pushed = true;
    for (uint32_t id : members_.LiveWorkers()) {
      all_live_pushed = all_live_pushed && round_->Has(id);
    }
    if (all_live_pushed) reason = &rounds_closed_all_live_;
  }
  if (reason == nullptr && now - round_opened_ >= options_.round_timeout) {
    reason = &rounds_closed_by_timeout_;
    spdlog::warn(
        "shard {}: round {} closed by --round_timeout={} with {} "
        "gradients of {} live workers",
        options_.shard_index, version_,
        absl::FormatDuration(options_.round_timeout), received,
        members_.LiveWorkers().size());
  }
  if (reason == nullptr) return false;
  ++*reason;
  round_->Mean(absl::MakeSpan(scratch_));
  // A mean of finite gradients can itself overflow (inf fails the bound).
  const double largest = LargestMagnitude(scratch_);
  const bool check_exactly = !SurelyFinite(largest);
  size_t read = 0;
  std::optional<std::pair<size_t, float>> result;
  if (check_exactly) {
    // The lambda runs here, under mutex_; it reads the mean through a span
    // so the lock analysis need not follow it into the lambda.
    const absl::Span<const float> mean = scratch_;
    result = FindNonFiniteResult([&](absl::Span<float> out) {
      std::copy_n(mean.begin() + read, out.size(), out.begin());
      read += out.size();
    });
  }
  if (result) {
    // The round ends (no worker waits for it forever) but changes nothing:
    // a θ that overflowed would be checkpointed and block every restore.
    spdlog::error(
        "shard {}: round {}'s update would make the value of key "
        "{} {}, which is not finite; dropped its {} gradients, θ "
        "unchanged (is the learning rate too high?)",
        options_.shard_index, version_, keys_.begin + result->first,
        result->second, received);
    pushes_rejected_ += received;
    ++version_;
  } else {
    ApplyGradient(scratch_, round_->samples());
    BoundAfterUpdate(largest, check_exactly);
    pushes_applied_ += received;
  }
  round_->Clear();
  round_opened_ = now;
  return true;
}

bool ParameterShard::Satisfied(const PullArgs& args) const {
  // Sync rounds advance one at a time, so waiting for more than the next
  // one means the worker saw rounds this shard no longer has (it was
  // restored from a checkpoint): answer at once, so the worker learns the
  // round it must continue from.
  const bool behind_the_worker = options_.mode == ConsistencyMode::kSync &&
                                 args.min_version > version_ + 1;
  if (version_ < args.min_version && !behind_the_worker) return false;
  if (options_.mode != ConsistencyMode::kSsp ||
      args.clock <= options_.staleness) {
    return true;
  }
  if (!members_.gathered()) return false;
  const std::optional<uint64_t> slowest = members_.MinLiveClock();
  return !slowest.has_value() || *slowest + options_.staleness >= args.clock;
}

void ParameterShard::ApplyGradient(absl::Span<const float> gradient,
                                   uint64_t samples) {
  ApplyOverSegments(options_.update, segments_, keys_.begin, gradient,
                    absl::MakeSpan(theta_));
  ++version_;
  samples_applied_ += samples;
}

void ParameterShard::ApplyGradientBytes(const absl::Cord& bytes,
                                        uint64_t samples) {
  // Segments tile the shard in order, so one pass reads the gradient.
  absl::Cord::CharIterator from = bytes.char_begin();
  for (const common::TensorSegment& segment : segments_) {
    const size_t offset = segment.keys.begin - keys_.begin;
    const size_t size = segment.keys.size();
    absl::Span<float> theta = absl::MakeSpan(theta_).subspan(offset, size);
    if (options_.update.has_ball()) {
      // The ball's norm is the whole segment's: the rule needs it whole.
      if (scratch_.size() < size) scratch_.resize(size);
      common::ReadFloats(from, absl::MakeSpan(scratch_).first(size));
      common::ApplyUpdate(options_.update, segment.regularize,
                          absl::MakeConstSpan(scratch_).first(size), theta);
      continue;
    }
    // Elementwise otherwise: a cache-sized piece at a time, so no θ-sized
    // copy of the gradient is ever alive.
    for (size_t done = 0; done < size; done += chunk_.size()) {
      const size_t n = std::min(chunk_.size(), size - done);
      common::ReadFloats(from, absl::MakeSpan(chunk_).first(n));
      common::ApplyUpdate(options_.update, segment.regularize,
                          absl::MakeConstSpan(chunk_).first(n),
                          theta.subspan(done, n));
    }
  }
  ++version_;
  samples_applied_ += samples;
}

std::optional<std::pair<size_t, float>> ParameterShard::FindNonFiniteGradient(
    const absl::Cord& bytes, double* largest) {
  absl::Cord::CharIterator from = bytes.char_begin();
  *largest = 0;
  for (size_t done = 0; done < keys_.size(); done += chunk_.size()) {
    const size_t n = std::min(chunk_.size(), keys_.size() - done);
    absl::Span<float> piece = absl::MakeSpan(chunk_).first(n);
    common::ReadFloats(from, piece);
    // One pass finds both: infinity means a NaN or infinity is in there.
    const double magnitude = LargestMagnitude(piece);
    if (std::isinf(magnitude)) {
      const size_t at = common::FindNonFinite(piece).value_or(0);
      return std::make_pair(done + at, piece[at]);
    }
    *largest = std::max(*largest, magnitude);
  }
  return std::nullopt;
}

bool ParameterShard::SurelyFinite(double largest) const {
  const common::UpdateOptions& u = options_.update;
  // The penalty's terms are not bounded here: always check those exactly.
  if (u.penalty_beta > 0) return false;
  // |θ − α(g + λ₂θ)| ≤ max(1, |1 − αλ₂|)·|θ| + α|g| (exempt tensors have
  // λ₂ = 0); the soft-threshold, the box clamp and the ball's scaling
  // only shrink magnitudes.
  const double keep = std::max(
      1.0, std::fabs(1.0 - static_cast<double>(u.learning_rate) * u.l2));
  return keep * theta_bound_ + static_cast<double>(u.learning_rate) * largest <
         kSurelyFiniteBelow;
}

void ParameterShard::BoundAfterUpdate(double largest, bool exact) {
  // With a penalty every update is checked exactly: no bound is used.
  if (options_.update.penalty_beta > 0) return;
  if (exact) {
    theta_bound_ = LargestMagnitude(theta_);
    return;
  }
  const common::UpdateOptions& u = options_.update;
  const double keep = std::max(
      1.0, std::fabs(1.0 - static_cast<double>(u.learning_rate) * u.l2));
  theta_bound_ =
      keep * theta_bound_ + static_cast<double>(u.learning_rate) * largest;
}

std::optional<std::pair<size_t, float>> ParameterShard::FindNonFiniteResult(
    const std::function<void(absl::Span<float>)>& read) {
  for (const common::TensorSegment& segment : segments_) {
    const size_t offset = segment.keys.begin - keys_.begin;
    const size_t size = segment.keys.size();
    // The ball's norm is the whole segment's; the rest is elementwise.
    const size_t piece =
        options_.update.has_ball() ? size : std::min(size, kApplyChunkFloats);
    if (trial_theta_.size() < piece) {
      trial_theta_.resize(piece);
      trial_gradient_.resize(piece);
    }
    for (size_t done = 0; done < size; done += piece) {
      const size_t n = std::min(piece, size - done);
      absl::Span<float> gradient = absl::MakeSpan(trial_gradient_).first(n);
      absl::Span<float> theta = absl::MakeSpan(trial_theta_).first(n);
      read(gradient);
      std::copy_n(theta_.begin() + offset + done, n, theta.begin());
      common::ApplyUpdate(options_.update, segment.regularize, gradient, theta);
      if (auto at = common::FindNonFinite(theta)) {
        return std::make_pair(offset + done + *at, theta[*at]);
      }
    }
  }
  return std::nullopt;
}

std::vector<ParameterShard::Completion> ParameterShard::TakeSatisfiedPulls() {
  std::vector<Completion> satisfied;
  for (auto it = parked_.begin(); it != parked_.end();) {
    if (Satisfied(it->second.args)) {
      satisfied.emplace_back(std::move(it->second.done), Read(it->second.args));
      parked_.erase(it++);
    } else {
      ++it;
    }
  }
  return satisfied;
}

ShardStatus ParameterShard::Status() const {
  absl::MutexLock lock(&mutex_);
  ShardStatus status;
  status.options = options_;
  status.initialized = initialized_;
  status.keys = keys_;
  status.tensors = tensors_;
  status.version = version_;
  status.samples_applied = samples_applied_;
  status.pushes_applied = pushes_applied_;
  status.pushes_duplicate = pushes_duplicate_;
  status.pushes_stale = pushes_stale_;
  status.pushes_rejected = pushes_rejected_;
  status.round_gradients = round_ ? round_->received() : 0;
  status.taken_at = Now();
  status.fastest_live_clock = members_.MaxLiveClock().value_or(0);
  for (const common::WorkerRecord& m : members_.members()) {
    if (m.registered) status.workers.push_back(m);
  }
  status.live_workers = static_cast<uint32_t>(members_.LiveWorkers().size());
  status.rounds_closed_all_live = rounds_closed_all_live_;
  status.rounds_closed_by_quorum = rounds_closed_by_quorum_;
  status.rounds_closed_by_timeout = rounds_closed_by_timeout_;
  status.leases_expired = members_.leases_expired();
  status.max_read_clock_gap = max_read_clock_gap_;
  return status;
}

}  // namespace ps::server

namespace ps::server {

absl::StatusOr<common::ThetaFile> ParameterShard::Snapshot() const {
  absl::MutexLock lock(&mutex_);
  if (!initialized_) {
    return absl::FailedPreconditionError(
        "no model is declared on this shard yet; nothing to checkpoint");
  }
  common::ThetaFile file;
  file.tensors = tensors_;
  file.keys = keys_;
  file.shard_index = options_.shard_index;
  file.num_shards = options_.num_shards;
  file.mode = options_.mode;
  file.rules = common::RuleSettings{options_.update, options_.sync_quorum,
                                    options_.staleness};
  file.version = version_;
  file.samples_applied = samples_applied_;
  file.values = theta_;
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

void ParameterShard::DeclareModel(std::vector<common::TensorSpec> tensors,
                                  KeyRange keys, std::vector<float> theta,
                                  absl::Time now) {
  tensors_ = std::move(tensors);
  keys_ = keys;
  segments_ = common::SegmentsInRange(tensors_, keys_);
  theta_ = std::move(theta);
  theta_bound_ = LargestMagnitude(theta_);
  // Sync's round mean needs a θ-sized buffer; async and SSP apply from the
  // request (ApplyGradientBytes).
  scratch_.assign(options_.mode == ConsistencyMode::kSync ? keys_.size() : 0,
                  0.0f);
  if (options_.mode == ConsistencyMode::kSync) {
    round_.emplace(keys_.size());
    round_opened_ = now;
  }
  initialized_ = true;
}

void ParameterShard::StopTakingPushes() { taking_pushes_.store(false); }

}  // namespace ps::server
