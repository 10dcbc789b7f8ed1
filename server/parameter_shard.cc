#include "server/parameter_shard.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
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

// The worker's bookkeeping once its push counts.
void RecordPush(const PushArgs& args, common::WorkerRecord& worker) {
  worker.last_seq = args.seq;
  worker.last_step = args.step;
  worker.clock = std::max(worker.clock, args.step + 1);
  ++worker.pushes;
}

}  // namespace

ParameterShard::ParameterShard(ShardOptions options)
    : options_(std::move(options)),
      policy_(options_),
      dense_(options_.update, options_.optimizer, options_.lr_schedule),
      tables_(options_),
      members_(options_.shard_index, options_.num_workers, options_.max_workers,
               options_.lease_timeout),
      parked_(options_.max_parked_pulls, options_.max_parked_pulls_per_worker),
      // Reserved for live owners only where the assignment must not depend
      // on timing: sync rounds of every live worker.
      partitions_(
          options_.num_workers,
          /*reserve_for_live_owners=*/options_.mode == ConsistencyMode::kSync &&
              options_.sync_quorum == 0) {}

absl::StatusOr<RegisterResult> ParameterShard::Register(uint32_t worker_id,
                                                        uint64_t incarnation) {
  std::vector<Completion> satisfied;
  RegisterResult result;
  {
    absl::MutexLock lock(&mutex_);
    const bool gathered = members_.gathered();
    const absl::Time now = Now();
    Record(now, RegisterChange{worker_id, incarnation});
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
  const absl::Time now = Now();
  Record(now, HeartbeatChange{worker_id, incarnation});
  if (absl::Status s = members_.Heartbeat(worker_id, incarnation, now);
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
    const absl::Time now = Now();
    Record(now, LeaveChange{worker_id, incarnation, reason});
    if (absl::Status s = members_.Leave(worker_id, incarnation, reason);
        !s.ok()) {
      return s;
    }
    spdlog::info(
        "shard {}: worker {} {}; {} live, {} training", options_.shard_index,
        worker_id,
        reason == LeaveReason::kFinished      ? "finished and left"
        : reason == LeaveReason::kStartFailed ? "failed to start and left"
        : reason == LeaveReason::kIdle
            ? "waits for a data partition (idle: counts toward no round)"
            : "left",
        members_.LiveWorkers().size(), members_.TrainingWorkers().size());
    MaybeCloseRound(now);
    satisfied = TakeSatisfiedPulls();
  }
  for (auto& [done, answer] : satisfied) done(std::move(answer));
  return absl::OkStatus();
}

absl::StatusOr<KeyRange> ParameterShard::InitKeys(const InitArgs& args) const {
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
  if (absl::Status valid =
          common::ValidateModelSpecs(args.tensors, args.tables);
      !valid.ok()) {
    return valid;
  }
  const KeyRange keys = common::BalancedPart(
      common::NumKeys(args.tensors), options_.num_shards, options_.shard_index);
  // Before θ is allocated: a request cannot cost more memory than this
  // server may hold.
  if (absl::Status size = CheckShardSize(keys); !size.ok()) return size;
  return keys;
}

absl::StatusOr<InitResult> ParameterShard::Init(const InitArgs& args) {
  absl::StatusOr<KeyRange> init_keys = InitKeys(args);
  if (!init_keys.ok()) return init_keys.status();
  const KeyRange keys = *init_keys;
  const uint64_t num_keys = common::NumKeys(args.tensors);

  absl::MutexLock lock(&mutex_);
  const absl::Time now = Now();
  Record(now, args);
  if (initialized_) {
    if (std::string diff = common::DescribeDifference(tensors_, args.tensors);
        !diff.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("this shard already holds a different model (declared "
                       "first or restored from a checkpoint): ",
                       diff));
    }
    std::string diff =
        common::DescribeTableDifference(tables_.specs(), args.tables);
    if (diff.empty() && !args.tables.empty() &&
        args.model_seed != tables_.model_seed()) {
      diff = absl::StrCat("the tables are seeded with model seed ",
                          tables_.model_seed(), " but requested with ",
                          args.model_seed);
    }
    if (!diff.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "this shard already holds a different model (declared first): ",
          diff));
    }
    return InitResult{false, version_, dense_.keys(), options_.mode,
                      options_.num_workers};
  }
  // θ is allocated only for values that fill it exactly (InitKeys checked
  // the shard's size), so a request cannot cost more memory than it carries.
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
  if (absl::Status declared = tables_.Declare(args.tables, args.model_seed);
      !declared.ok()) {
    return declared;
  }
  has_tables_.store(!tables_.empty());
  DeclareModel(args.tensors, keys, std::move(theta), now);
  spdlog::info(
      "shard {}/{}: model declared by worker {}: {} tensors, {} keys, "
      "this shard holds {}",
      options_.shard_index, options_.num_shards, args.worker_id,
      tensors_.size(), num_keys, dense_.keys().ToString());
  return InitResult{true, version_, dense_.keys(), options_.mode,
                    options_.num_workers};
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
  if (requested.begin == 0 && requested.end == 0) return dense_.keys();
  if (requested.begin > requested.end || !dense_.keys().Contains(requested)) {
    return absl::OutOfRangeError(absl::StrCat(
        "keys ", requested.ToString(), " are not inside this shard's range ",
        dense_.keys().ToString()));
  }
  return requested;
}

PullResult ParameterShard::Read(const PullArgs& args) {
  counters_.CountRead(policy_.ReadClockGap(args.clock, members_));
  PullResult result;
  result.version = version_;
  result.samples_applied = samples_applied_;
  result.mode = options_.mode;
  result.keys = args.keys;
  if (args.share_values) {
    result.shared_theta = dense_.Share();
    result.shared_begin = args.keys.begin - dense_.keys().begin;
  } else {
    dense_.Read(args.keys, &result.values);
  }
  result.sparse = tables_.Read(args.sparse);
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
  if (absl::Status rows = tables_.CheckPull(args.sparse); !rows.ok()) {
    return rows;
  }
  if (args.clock >= kMaxStep) {
    return absl::InvalidArgumentError(absl::StrCat(
        "clock ", args.clock, " is not a worker's clock (at most 2^62)"));
  }
  if (absl::Status reachable = policy_.CheckPullReachable(args, version_);
      !reachable.ok()) {
    return reachable;
  }
  PullArgs parked = args;
  parked.keys = *keys;
  parked.clock = policy_.WaitClock(args, members_);
  if (policy_.MayAnswerPull(parked.min_version, parked.clock, version_,
                            members_)) {
    return Read(parked);
  }
  if (!done) return std::nullopt;
  if (absl::Status room = parked_.CheckRoom(args.worker_id); !room.ok()) {
    counters_.CountParkRefused(parked_.size() >= parked_.max_parked());
    return room;
  }
  if (!parked_.Park(ticket, {parked, expires, std::move(done)})) {
    return absl::UnavailableError("the server is shutting down; retry");
  }
  return std::nullopt;
}

void ParameterShard::ReadShared(const PullResult& pulled, uint64_t offset,
                                uint64_t n, std::string* out) const {
  absl::MutexLock lock(&mutex_);
  common::FloatsToBytes(absl::MakeConstSpan(*pulled.shared_theta)
                            .subspan(pulled.shared_begin + offset, n),
                        out);
}

bool ParameterShard::CancelPull(PullTicket ticket) {
  PullDone done;
  {
    absl::MutexLock lock(&mutex_);
    done = parked_.Take(ticket);
    if (!done) return false;
  }
  done(absl::CancelledError("the pull was cancelled by the client"));
  return true;
}

void ParameterShard::EndParkedPulls() {
  std::vector<PullDone> parked;
  {
    absl::MutexLock lock(&mutex_);
    parked = parked_.Close();
  }
  for (PullDone& done : parked) {
    done(absl::UnavailableError("the server is shutting down; retry"));
  }
}

void ParameterShard::AnswerParkedPulls(const absl::Status& why) {
  std::vector<PullWaitList::Parked> parked;
  {
    absl::MutexLock lock(&mutex_);
    parked = parked_.TakeExpired(absl::InfiniteFuture());
  }
  for (PullWaitList::Parked& pull : parked) pull.done(why);
}

void ParameterShard::Tick(absl::Time now) {
  std::vector<Completion> done_now;
  {
    absl::MutexLock lock(&mutex_);
    Record(now, TickChange{});
    for (PullWaitList::Parked& pull : parked_.TakeExpired(now)) {
      done_now.emplace_back(
          std::move(pull.done),
          absl::DeadlineExceededError(absl::StrCat(
              "version ", pull.args.min_version,
              options_.mode == ConsistencyMode::kSsp
                  ? absl::StrCat(" and the staleness bound for clock ",
                                 pull.args.clock)
                  : "",
              " not reached in time; the shard is at version ", version_)));
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
  if (args.keys != dense_.keys()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the push addresses keys ", args.keys.ToString(),
                     " but this shard owns ", dense_.keys().ToString(),
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
  if (args.completes.has_value() && options_.shard_index != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the push reports partition ", args.completes->partition, " of epoch ",
        args.completes->epoch, " done to shard ", options_.shard_index,
        ": partitions are leased from and reported to "
        "shard 0 only"));
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
  absl::StatusOr<PushResult> result;
  {
    absl::MutexLock lock(&mutex_);
    if (!taking_pushes_.load()) {
      return absl::UnavailableError(
          "the server is shutting down (checkpointing); retry the push");
    }
    const absl::Time now = Now();
    Record(now, args);
    if (absl::Status valid = ValidatePush(args); !valid.ok()) {
      ++counters_.pushes_rejected;
      return valid;
    }
    absl::StatusOr<SparseGradient> sparse = tables_.ParsePush(args.sparse);
    if (!sparse.ok()) {
      ++counters_.pushes_rejected;
      return sparse.status();
    }
    common::WorkerRecord& worker = members_.at(args.worker_id);
    if (args.seq <= worker.last_seq) {
      // A retry: its completion, if any, was recorded with it.
      ++counters_.pushes_duplicate;
      return PushResult{PushOutcome::kDuplicate, version_};
    }
    absl::Status held = absl::OkStatus();
    if (args.completes.has_value()) {
      if (absl::Status valid = partitions_.ValidateCompletion(
              args.completes->epoch, args.completes->partition);
          !valid.ok()) {
        ++counters_.pushes_rejected;
        return valid;
      }
      held = partitions_.CheckHeld(args.completes->epoch,
                                   args.completes->partition, args.worker_id,
                                   args.incarnation);
    }
    result = policy_.GathersRounds()
                 ? PushToRound(args, std::move(*sparse), worker, now)
                 : PushAtOnce(args, *sparse, worker);
    if (!result.ok()) {
      // Validated before the gradient counted: θ and the round are as they
      // were.
      ++counters_.pushes_rejected;
      return result;
    }
    // It pushes, so it trains: its rounds wait for it again.
    members_.NoteTraining(args.worker_id);
    // Acknowledged (even as stale, whose gradient came too late for its
    // round): the partition is done and never leased again this epoch.
    // A partition this worker no longer holds (its lease expired while it
    // was paused, and another took the partition) is its holder's to
    // report: the gradient counted, the completion is not recorded, so the
    // table counts the partition once, and the worker leases its next.
    if (args.completes.has_value() && held.ok()) {
      partitions_.Complete(args.completes->epoch, args.completes->partition);
      spdlog::info("shard 0: worker {} completed partition {} of epoch {}",
                   args.worker_id, args.completes->partition,
                   args.completes->epoch);
    } else if (args.completes.has_value()) {
      result->completion_skipped = true;
      spdlog::warn(
          "shard 0: push {} of worker {} counted, but its completion is not "
          "recorded: {}",
          args.seq, args.worker_id, std::string(held.message()));
    }
    // A stale push may close the round too: its worker was the last one
    // the round waited for (SyncRound::MarkLate).
    if (result->outcome != PushOutcome::kDuplicate) {
      satisfied = TakeSatisfiedPulls();
    }
  }
  for (auto& [done, answer] : satisfied) done(std::move(answer));
  return result;
}

absl::StatusOr<PushResult> ParameterShard::PushToRound(
    const PushArgs& args, SparseGradient sparse, common::WorkerRecord& worker,
    absl::Time now) {
  // The gradient belongs to the round of the θ it came from.
  const uint64_t round = args.base_version;
  switch (policy_.FitToRound(round, version_, *round_, args.worker_id)) {
    case RoundFit::kAheadOfShard:
      ++counters_.pushes_stale;
      worker.last_seq = args.seq;
      spdlog::warn(
          "shard {}: dropped a push from worker {} for round {}, "
          "which this shard has not reached (restored to round {})",
          options_.shard_index, args.worker_id, round, version_);
      return PushResult{PushOutcome::kStale, version_};
    case RoundFit::kClosedRound:
      ++counters_.pushes_stale;
      worker.last_seq = args.seq;
      spdlog::info(
          "shard {}: dropped a stale push from worker {} for closed "
          "round {} (round {} is open)",
          options_.shard_index, args.worker_id, round, version_);
      // The open round need not wait for it (SyncRound::MarkLate), and may
      // close now on the gradients it holds.
      round_->MarkLate(args.worker_id);
      MaybeCloseRound(now);
      return PushResult{PushOutcome::kStale, version_};
    case RoundFit::kAlreadyInRound:
      ++counters_.pushes_duplicate;
      return PushResult{PushOutcome::kDuplicate, version_};
    case RoundFit::kOpenRound:
      break;
  }
  // Copied into the round's slot, then checked: it counts only after
  // Commit, and the round checks its mean as a whole when it closes.
  if (absl::Status s = common::CheckFloatBytes(
          args.gradient.size(), dense_.keys().size(), "the gradient");
      !s.ok()) {
    return s;
  }
  absl::Span<float> slot = round_->Slot(args.worker_id);
  absl::Cord::CharIterator from = args.gradient.char_begin();
  common::ReadFloats(from, slot);
  if (absl::Status finite = dense_.CheckFinite(slot); !finite.ok()) {
    return finite;
  }
  RecordPush(args, worker);
  tables_.Stage(args.worker_id, args.batch_size, std::move(sparse));
  round_->Commit(args.worker_id, args.batch_size);
  const PushOutcome outcome =
      MaybeCloseRound(now) ? PushOutcome::kApplied : PushOutcome::kAccepted;
  return PushResult{outcome, version_};
}

absl::StatusOr<PushResult> ParameterShard::PushAtOnce(
    const PushArgs& args, const SparseGradient& sparse,
    common::WorkerRecord& worker) {
  // Checked straight from the request's slices, a cache-sized chunk at a
  // time, and applied from them: no θ-sized copy.
  if (absl::Status s = common::CheckFloatBytes(
          args.gradient.size(), dense_.keys().size(), "the gradient");
      !s.ok()) {
    return s;
  }
  absl::StatusOr<DenseSlice::CheckedGradient> checked =
      dense_.CheckBytes(args.gradient, version_);
  if (!checked.ok()) return checked.status();
  // The tables' rows as update number version + 1, as θ's.
  absl::StatusOr<SparseTables::Prepared> rows =
      tables_.Prepare(sparse, version_);
  if (!rows.ok()) return rows.status();
  RecordPush(args, worker);
  dense_.ApplyBytes(args.gradient, *checked, version_);
  tables_.Commit(*rows);
  if (observer_ != nullptr) {
    observer_->PushApplied(
        version_ > args.base_version ? version_ - args.base_version : 0);
  }
  ++version_;
  samples_applied_ += args.batch_size;
  ++counters_.pushes_applied;
  return PushResult{PushOutcome::kApplied, version_};
}

bool ParameterShard::MaybeCloseRound(absl::Time now) {
  if (!round_.has_value()) return false;
  // Draining: the final checkpoint holds this version; a round closed now
  // would be served to workers and then rewound by the restart.
  if (!taking_pushes_.load()) return false;
  const RoundClose why =
      policy_.WhyRoundCloses(*round_, members_, now - round_opened_);
  if (why == RoundClose::kNotYet) return false;
  const uint32_t received = round_->received();
  if (why == RoundClose::kTimeout) {
    spdlog::warn(
        "shard {}: round {} closed by --round_timeout={} with {} "
        "gradients of {} live workers",
        options_.shard_index, version_,
        absl::FormatDuration(options_.round_timeout), received,
        members_.LiveWorkers().size());
  }
  counters_.CountRoundClosed(why);
  if (observer_ != nullptr) observer_->RoundClosed(why, now - round_opened_);
  const double examples = policy_.RoundExamples(*round_);
  round_->Mean(absl::MakeSpan(round_mean_), examples);
  // The tables' rows first, unchanged until θ's update is known finite:
  // the round changes both or neither.
  absl::StatusOr<SparseTables::Prepared> rows =
      tables_.Prepare(tables_.RoundMean(examples), version_);
  if (!rows.ok()) {
    spdlog::error(
        "shard {}: round {}'s update of a sparse table is refused ({}); "
        "dropped its {} gradients, θ and the tables unchanged",
        options_.shard_index, version_, std::string(rows.status().message()),
        received);
    counters_.pushes_rejected += received;
  } else if (auto bad = dense_.ApplyIfFinite(round_mean_, version_)) {
    // The round ends (no worker waits for it forever) but changes nothing:
    // a θ that overflowed would be checkpointed and block every restore.
    spdlog::error(
        "shard {}: round {}'s update would make the value of key "
        "{} {}, which is not finite; dropped its {} gradients, θ "
        "unchanged (is the learning rate too high?)",
        options_.shard_index, version_, dense_.keys().begin + bad->offset,
        bad->value, received);
    counters_.pushes_rejected += received;
  } else {
    tables_.Commit(*rows);
    samples_applied_ += round_->samples();
    counters_.pushes_applied += received;
  }
  ++version_;
  round_->Clear();
  tables_.ClearRound();
  round_opened_ = now;
  return true;
}

std::vector<ParameterShard::Completion> ParameterShard::TakeSatisfiedPulls() {
  std::vector<Completion> satisfied;
  for (PullWaitList::Parked& pull :
       parked_.TakeAnswerable(policy_, version_, members_)) {
    satisfied.emplace_back(std::move(pull.done), Read(pull.args));
  }
  return satisfied;
}

std::string ParameterShard::DumpTables() const {
  absl::MutexLock lock(&mutex_);
  return tables_.Dump();
}

void ParameterShard::CountRejectedPush() {
  absl::MutexLock lock(&mutex_);
  Record(Now(), RejectedPushChange{});
  ++counters_.pushes_rejected;
}

common::KeyRange ParameterShard::keys() const {
  absl::ReaderMutexLock lock(&mutex_);
  return initialized_ ? dense_.keys() : common::KeyRange{};
}

absl::StatusOr<PartitionLease> ParameterShard::LeasePartition(
    uint32_t worker_id, uint64_t incarnation,
    const common::PartitionPlan& plan) {
  if (options_.shard_index != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("this server is shard ", options_.shard_index,
                     ": data partitions are leased from shard 0 only"));
  }
  absl::MutexLock lock(&mutex_);
  Record(Now(), LeasePartitionChange{worker_id, incarnation, plan});
  if (absl::Status live = members_.CheckLive(worker_id, incarnation);
      !live.ok()) {
    return live;
  }
  if (absl::Status declared = partitions_.Declare(plan); !declared.ok()) {
    return declared;
  }
  // Each worker id's live incarnation, as the table asks about them.
  std::vector<std::optional<uint64_t>> live(members_.max_workers());
  for (uint32_t id : members_.LiveWorkers()) {
    live[id] = members_.members()[id].incarnation;
  }
  const PartitionTable::Grant grant =
      partitions_.Lease(worker_id, incarnation, [&live](uint32_t id) {
        return id < live.size() ? live[id] : std::nullopt;
      });
  if (grant.outcome == PartitionTable::LeaseOutcome::kGranted) {
    spdlog::info("shard 0: worker {} leased partition {} of epoch {} ({})",
                 worker_id, grant.partition, grant.epoch,
                 grant.examples.ToString());
  }
  return PartitionLease{grant, partitions_.done()};
}

ShardStatus ParameterShard::Status() const {
  absl::MutexLock lock(&mutex_);
  ShardStatus status;
  status.options = options_;
  status.initialized = initialized_;
  status.keys = dense_.keys();
  status.tensors = tensors_;
  status.tables = tables_.Status();
  status.version = version_;
  status.samples_applied = samples_applied_;
  status.pushes_applied = counters_.pushes_applied;
  status.pushes_duplicate = counters_.pushes_duplicate;
  status.pushes_stale = counters_.pushes_stale;
  status.pushes_rejected = counters_.pushes_rejected;
  status.round_gradients = round_ ? round_->received() : 0;
  status.taken_at = Now();
  status.fastest_live_clock = members_.MaxLiveClock().value_or(0);
  for (const common::WorkerRecord& m : members_.members()) {
    if (m.registered) status.workers.push_back(m);
  }
  status.live_workers = static_cast<uint32_t>(members_.LiveWorkers().size());
  status.rounds_closed_all_live = counters_.rounds_closed_all_live;
  status.rounds_closed_by_quorum = counters_.rounds_closed_by_quorum;
  status.rounds_closed_by_timeout = counters_.rounds_closed_by_timeout;
  status.leases_expired = members_.leases_expired();
  status.max_read_clock_gap = counters_.max_read_clock_gap;
  status.pulls_refused_over_total = counters_.pulls_refused_over_total;
  status.pulls_refused_over_worker = counters_.pulls_refused_over_worker;
  if (partitions_.declared()) {
    status.partition_plan = partitions_.plan();
    status.partitions_done_per_epoch = partitions_.DonePerEpoch();
    status.partitions_done = partitions_.done();
  }
  return status;
}

void ParameterShard::DeclareModel(std::vector<common::TensorSpec> tensors,
                                  KeyRange keys, std::vector<float> theta,
                                  absl::Time now) {
  tensors_ = std::move(tensors);
  dense_.Declare(tensors_, keys, std::move(theta));
  // Sync's round mean needs a θ-sized buffer; async and SSP apply from the
  // request (DenseSlice::ApplyBytes).
  if (policy_.GathersRounds()) {
    round_mean_.assign(keys.size(), 0.0f);
    round_.emplace(keys.size());
    round_opened_ = now;
  }
  initialized_ = true;
}

void ParameterShard::SetJournal(ShardJournal* journal) {
  absl::MutexLock lock(&mutex_);
  journal_ = journal;
}

void ParameterShard::Record(absl::Time now, ShardChange change) {
  if (journal_ != nullptr) journal_->Record(now, std::move(change));
}

void ParameterShard::SetObserver(ShardObserver* observer) {
  absl::MutexLock lock(&mutex_);
  observer_ = observer;
}

void ParameterShard::StopTakingPushes() { taking_pushes_.store(false); }

}  // namespace ps::server
