#include "server/parameter_shard.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/float_bytes.h"
#include "spdlog/spdlog.h"

namespace ps::server {

using common::KeyRange;

absl::StatusOr<ConsistencyMode> ParseConsistencyMode(absl::string_view name) {
  if (name == "sync") return ConsistencyMode::kSync;
  if (name == "async") return ConsistencyMode::kAsync;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown mode '", name, "'; choose sync or async"));
}

absl::string_view ConsistencyModeName(ConsistencyMode mode) {
  return mode == ConsistencyMode::kSync ? "sync" : "async";
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
  return common::ValidateUpdateOptions(o.update);
}

ParameterShard::ParameterShard(ShardOptions options)
    : options_(std::move(options)), workers_(options_.num_workers) {}

absl::StatusOr<InitResult> ParameterShard::Init(const InitArgs& args) {
  if (args.shard_index != options_.shard_index ||
      args.num_shards != options_.num_shards) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the worker addressed shard ", args.shard_index, " of ",
        args.num_shards, " but this server is shard ", options_.shard_index,
        " of ", options_.num_shards,
        ": the worker's --servers order must match the servers' "
        "--shard_index and --num_shards"));
  }
  if (args.worker_id >= options_.num_workers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker_id ", args.worker_id, " is outside [0, ", options_.num_workers,
        "): this server expects --num_workers=", options_.num_workers));
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
          absl::StrCat("this shard already holds a different model: ", diff));
    }
    return InitResult{false, version_, keys_, options_.mode,
                      options_.num_workers};
  }
  std::vector<float> theta(keys.size());
  if (absl::Status s = common::BytesToFloats(
          args.values, absl::MakeSpan(theta),
          absl::StrCat("initial values for keys ", keys.ToString()));
      !s.ok()) {
    return s;
  }
  if (auto bad = common::FindNonFinite(theta)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "initial value of key ", keys.begin + *bad, " is ", theta[*bad],
        "; values must be finite"));
  }
  tensors_ = args.tensors;
  keys_ = keys;
  segments_ = common::SegmentsInRange(tensors_, keys_);
  theta_ = std::move(theta);
  scratch_.assign(keys_.size(), 0.0f);
  if (options_.mode == ConsistencyMode::kSync) {
    round_.emplace(options_.num_workers, keys_.size());
  }
  initialized_ = true;
  spdlog::info("shard {}/{}: model declared by worker {}: {} tensors, {} keys, "
               "this shard holds {}",
               options_.shard_index, options_.num_shards, args.worker_id,
               tensors_.size(), num_keys, keys_.ToString());
  return InitResult{true, version_, keys_, options_.mode,
                    options_.num_workers};
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

PullResult ParameterShard::Read(const KeyRange& keys) const {
  PullResult result;
  result.version = version_;
  result.samples_applied = samples_applied_;
  result.keys = keys;
  common::FloatsToBytes(
      absl::MakeConstSpan(theta_).subspan(keys.begin - keys_.begin,
                                          keys.size()),
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
  if (version_ >= args.min_version) return Read(*keys);
  PullArgs parked = args;
  parked.keys = *keys;
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

void ParameterShard::ExpirePulls(absl::Time now) {
  std::vector<Completion> expired;
  {
    absl::MutexLock lock(&mutex_);
    for (auto it = parked_.begin(); it != parked_.end();) {
      if (it->second.expires <= now) {
        expired.emplace_back(
            std::move(it->second.done),
            absl::DeadlineExceededError(absl::StrCat(
                "version ", it->second.args.min_version,
                " was not reached in time; the shard is at version ",
                version_)));
        parked_.erase(it++);
      } else {
        ++it;
      }
    }
  }
  for (auto& [done, result] : expired) done(std::move(result));
}

absl::Status ParameterShard::ValidatePush(const PushArgs& args) const {
  if (!initialized_) {
    return absl::FailedPreconditionError(
        "no model is declared on this shard yet; call Init first");
  }
  if (args.worker_id >= options_.num_workers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown worker_id ", args.worker_id, ": this server expects workers 0 "
        "to ", options_.num_workers - 1, " (--num_workers=",
        options_.num_workers, ")"));
  }
  if (args.batch_size == 0) {
    return absl::InvalidArgumentError(
        "batch_size is 0; a gradient must come from at least one example");
  }
  if (args.keys != keys_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the push addresses keys ", args.keys.ToString(),
        " but this shard owns ", keys_.ToString(),
        "; a push must cover exactly the shard's range"));
  }
  const WorkerState& worker = workers_[args.worker_id];
  if (worker.seen && args.incarnation < worker.incarnation) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", args.worker_id, " incarnation ", args.incarnation,
        " is older than incarnation ", worker.incarnation,
        " already seen; this process was replaced"));
  }
  if (options_.mode == ConsistencyMode::kSync && args.step > version_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the push is for round ", args.step, " but round ", version_,
        " is open; pull before pushing"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PushResult> ParameterShard::Push(const PushArgs& args) {
  std::vector<Completion> satisfied;
  PushResult result;
  {
    absl::MutexLock lock(&mutex_);
    if (absl::Status valid = ValidatePush(args); !valid.ok()) {
      ++pushes_rejected_;
      return valid;
    }
    WorkerState& worker = workers_[args.worker_id];
    const bool same_process = worker.seen && args.incarnation == worker.incarnation;
    if (same_process && args.seq <= worker.last_seq) {
      ++pushes_duplicate_;
      return PushResult{PushOutcome::kDuplicate, version_};
    }
    const bool sync = options_.mode == ConsistencyMode::kSync;
    if (sync && args.step < version_) {
      ++pushes_stale_;
      spdlog::info("shard {}: dropped stale push from worker {} for closed "
                   "round {} (open round {})",
                   options_.shard_index, args.worker_id, args.step, version_);
      return PushResult{PushOutcome::kStale, version_};
    }
    if (sync && round_->Has(args.worker_id)) {
      ++pushes_duplicate_;
      return PushResult{PushOutcome::kDuplicate, version_};
    }

    // Copy first, validate the copy, and only then let it count: a rejected
    // gradient leaves θ and the round as they were.
    absl::Span<float> gradient =
        sync ? round_->Slot(args.worker_id) : absl::MakeSpan(scratch_);
    absl::Status copied =
        common::BytesToFloats(args.gradient, gradient, "the gradient");
    if (copied.ok()) {
      if (auto bad = common::FindNonFinite(gradient)) {
        copied = absl::InvalidArgumentError(absl::StrCat(
            "gradient value for key ", keys_.begin + *bad, " is ",
            gradient[*bad], "; gradients must be finite"));
      }
    }
    if (!copied.ok()) {
      ++pushes_rejected_;
      return copied;
    }

    worker.seen = true;
    worker.incarnation = args.incarnation;
    worker.last_seq = args.seq;
    worker.last_step = args.step;
    ++worker.pushes;

    if (sync) {
      round_->Commit(args.worker_id, args.batch_size);
      if (!round_->complete()) {
        return PushResult{PushOutcome::kAccepted, version_};
      }
      round_->Mean(absl::MakeSpan(scratch_));
      ApplyGradient(scratch_, round_->samples());
      pushes_applied_ += round_->received();
      round_->Clear();
    } else {
      ApplyGradient(gradient, args.batch_size);
      ++pushes_applied_;
    }
    result = PushResult{PushOutcome::kApplied, version_};
    satisfied = TakeSatisfiedPulls();
  }
  for (auto& [done, answer] : satisfied) done(std::move(answer));
  return result;
}

void ParameterShard::ApplyGradient(absl::Span<const float> gradient,
                                   uint64_t samples) {
  for (const common::TensorSegment& segment : segments_) {
    const size_t offset = segment.keys.begin - keys_.begin;
    common::ApplyUpdate(
        options_.update, segment.regularize,
        gradient.subspan(offset, segment.keys.size()),
        absl::MakeSpan(theta_).subspan(offset, segment.keys.size()));
  }
  ++version_;
  samples_applied_ += samples;
}

std::vector<ParameterShard::Completion> ParameterShard::TakeSatisfiedPulls() {
  std::vector<Completion> satisfied;
  for (auto it = parked_.begin(); it != parked_.end();) {
    if (it->second.args.min_version <= version_) {
      satisfied.emplace_back(std::move(it->second.done),
                             Read(it->second.args.keys));
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
  for (uint32_t id = 0; id < workers_.size(); ++id) {
    const WorkerState& w = workers_[id];
    if (!w.seen) continue;
    status.workers.push_back(
        {id, w.incarnation, w.last_seq, w.last_step, w.pushes});
  }
  return status;
}

}  // namespace ps::server
