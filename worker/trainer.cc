#include "worker/trainer.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/json.h"
#include "common/key_range.h"
#include "common/rpc/convert.h"
#include "spdlog/spdlog.h"

namespace ps::worker {
namespace {

double NowSeconds() {
  return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
}

// Fisher–Yates with our own index draw: std::shuffle's algorithm is left to
// the library, which would make runs differ between toolchains.
void Shuffle(std::vector<int64_t>& items, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t i = items.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(rng() % i);
    std::swap(items[i - 1], items[j]);
  }
}

// A distinct, reproducible stream per (seed, rank, epoch).
uint64_t MixSeed(uint64_t seed, uint64_t rank, uint64_t epoch) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull ^
               (rank + 1) * 0xBF58476D1CE4E5B9ull ^
               (epoch + 1) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

}  // namespace

common::PartitionPlan PartitionPlanOf(const TrainerOptions& o,
                                      int64_t train_size) {
  common::PartitionPlan plan;
  plan.train_size = static_cast<uint64_t>(train_size);
  plan.partitions = o.data_partitions;
  plan.epochs = o.epochs;
  plan.seed = o.seed;
  plan.kfold = o.kfold;
  plan.fold = o.fold;
  return plan;
}

absl::Status ValidateTrainerOptions(const TrainerOptions& o,
                                    int64_t train_size) {
  if (o.num_workers == 0) {
    return absl::InvalidArgumentError("--num_workers must be at least 1");
  }
  if (o.data_partitions == 0 && o.rank >= o.num_workers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--rank=", o.rank, " must be below --num_workers=", o.num_workers,
        " (or lease data partitions: --data_partitions)"));
  }
  if (o.batch_size == 0) {
    return absl::InvalidArgumentError("--batch_size must be at least 1");
  }
  if (o.epochs == 0) {
    return absl::InvalidArgumentError("--epochs must be at least 1");
  }
  if (!(o.eval_every > 0)) {
    return absl::InvalidArgumentError("--eval_every must be > 0");
  }
  if (o.data_partitions > 0) {
    return common::ValidatePartitionPlan(PartitionPlanOf(o, train_size));
  }
  if (o.kfold > 0) {
    return absl::InvalidArgumentError(
        "--kfold holds out data partitions: it needs --data_partitions");
  }
  const int64_t shard = train_size / o.num_workers;
  if (shard < static_cast<int64_t>(o.batch_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("each worker's shard holds ", shard,
                     " examples, fewer than one batch "
                     "of --batch_size=",
                     o.batch_size));
  }
  return absl::OkStatus();
}

Trainer::Trainer(TrainerOptions options, Model* model, ParameterStore* client,
                 const common::TrainTestData* data)
    : Trainer(std::move(options), NewDenseTask(model, data), client) {}

Trainer::Trainer(TrainerOptions options, std::unique_ptr<TrainingTask> task,
                 ParameterStore* client)
    : options_(std::move(options)), task_(std::move(task)), client_(client) {}

absl::Status Trainer::Run() {
  if (absl::Status valid =
          ValidateTrainerOptions(options_, task_->train_size());
      !valid.ok()) {
    return valid;
  }
  absl::StatusOr<bool> joined = JoinJob();
  if (!joined.ok()) return joined.status();
  if (!*joined) return absl::OkStatus();  // the job was complete already

  // A restarted worker resumes its pass over the data where its previous
  // process stopped (split by rank), or takes back the partition it held;
  // in sync mode its first pull waits for the open round. What each pull
  // waits for is the store's to decide, from the mode the servers report
  // (ParameterStore::Pull).
  StepState state(*this);
  absl::Span<const int64_t> first;
  if (plan_.partitions.has_value()) {
    absl::StatusOr<bool> leased = LeaseNext(state);
    if (!leased.ok()) return FailStart(leased.status());
    if (*leased) first = PartitionBatch(state, 0);
    state.next_eval = options_.eval_every;
    while (EpochsDone(plan_.first_step) >= state.next_eval) {
      state.next_eval += options_.eval_every;
    }
  } else {
    first = ExamplesOf(plan_.first_step, state);
  }
  if (absl::Status pulled = PullFor(plan_.first_step, first, state);
      !pulled.ok()) {
    return FailStart(pulled);
  }
  // samples_per_s counts from here: a restarted rank 0 must not credit
  // itself with what the job applied before it came.
  samples_at_start_ = state.pulled.samples_applied;
  started_ = true;
  start_seconds_ = NowSeconds();

  // The evaluator stops on every way out of Run.
  struct StopOnExit {
    Trainer* trainer;
    ~StopOnExit() { trainer->StopEvaluations().IgnoreError(); }
  } stop_on_exit{this};
  if (options_.rank == 0) StartEvaluations();
  state.step_start = NowSeconds();

  uint64_t step = plan_.first_step;
  if (plan_.partitions.has_value()) {
    if (absl::Status trained = TrainPartitions(step, state); !trained.ok()) {
      return trained;
    }
  } else {
    if (absl::Status trained = TrainShard(state); !trained.ok()) {
      return trained;
    }
    step = plan_.total_steps;
  }
  return Finish(step, state);
}

absl::Status Trainer::TrainShard(StepState& state) {
  for (uint64_t step = plan_.first_step; step < plan_.total_steps; ++step) {
    if (options_.stop_requested && options_.stop_requested()) {
      if (absl::Status left = client_->Leave(); !left.ok()) return left;
      return absl::CancelledError(absl::StrCat(
          "stopped on request before step ", step, " of ", plan_.total_steps,
          "; left the job, and a worker restarted with --rank=", options_.rank,
          " resumes there"));
    }
    auto next_examples = [&] { return ExamplesOf(step + 1, state); };
    std::optional<NextBatch> next;
    if (step + 1 < plan_.total_steps) next.emplace(next_examples);
    if (absl::Status done =
            TakeStep(step, ExamplesOf(step, state), next, state);
        !done.ok()) {
      return done;
    }
  }
  return absl::OkStatus();
}

absl::Status Trainer::TrainPartitions(uint64_t& step, StepState& state) {
  while (state.partition.has_value()) {
    if (options_.stop_requested && options_.stop_requested()) {
      if (absl::Status left = client_->Leave(); !left.ok()) return left;
      return absl::CancelledError(absl::StrCat(
          "stopped on request in partition ", state.partition->partition(),
          " of epoch ", state.partition->epoch(),
          "; left the job, and the partition goes back to the others "
          "(or to a worker restarted with --rank=",
          options_.rank, ")"));
    }
    const uint64_t batch = state.batch;
    const bool last = batch + 1 == state.partition_batches;
    auto next_examples = [&] { return PartitionBatch(state, batch + 1); };
    std::optional<NextBatch> next;
    if (!last) next.emplace(next_examples);
    // The partition's last push reports it done, exactly once with it.
    if (last) client_->CompleteWithNextPush(*state.partition);
    PushCounts before = client_->push_counts();
    if (absl::Status done =
            TakeStep(step, PartitionBatch(state, batch), next, state);
        !done.ok()) {
      return done;
    }
    ++step;
    // A sync round may close before this worker's gradient arrives (a
    // quorum, or its lease expired): dropped by every shard, the batch was
    // trained nowhere, so it is trained again on the θ the push brought
    // back, and a partition's examples count once per epoch. Dropped by
    // some shards only, it counted on the others and goes on (sent again,
    // it would count twice there). A task with tables pulled the next
    // batch's rows, not this one's: its dropped batch stays dropped.
    if (!last) {
      if (!DroppedEverywhere(before) || task_->has_tables()) ++state.batch;
      continue;
    }
    // The last push recorded the partition done even when dropped (the
    // partition is not leased again); its batch goes again as a plain
    // push, after a pull that every shard answers at once (each has closed
    // the round this worker pulled).
    while (DroppedEverywhere(before)) {
      if (absl::Status pulled =
              PullFor(step, PartitionBatch(state, batch), state);
          !pulled.ok()) {
        return pulled;
      }
      before = client_->push_counts();
      if (absl::Status done =
              TakeStep(step, PartitionBatch(state, batch), std::nullopt, state);
          !done.ok()) {
        return done;
      }
      ++step;
    }
    absl::StatusOr<bool> leased = LeaseNext(state);
    if (!leased.ok()) return leased.status();
    if (!*leased) break;
    if (absl::Status pulled = PullFor(step, PartitionBatch(state, 0), state);
        !pulled.ok()) {
      return pulled;
    }
  }
  return absl::OkStatus();
}

absl::Status Trainer::PullFor(uint64_t step, absl::Span<const int64_t> examples,
                              StepState& state) {
  absl::StatusOr<PullInfo> pulled =
      task_->Pull(*client_, step, examples, EvaluationDue(step, state),
                  absl::MakeSpan(theta_));
  if (!pulled.ok()) return pulled.status();
  state.pulled = *pulled;
  if (options_.metrics != nullptr) options_.metrics->CountPull();
  return absl::OkStatus();
}

absl::StatusOr<bool> Trainer::LeaseNext(StepState& state) {
  state.partition.reset();
  // While nothing is free (the rest held by, or kept for, live workers),
  // the worker waits in the job, asking again with backoff: a holder that
  // dies gives its partitions back only when its lease expires, perhaps
  // after everyone else is done, and someone must be left to take them.
  // Waiting, it tells the shards it is idle, so no sync round, quorum or
  // SSP bound waits for it; its next push makes it count again. It gives up
  // when nothing was completed anywhere for wait_for_others.
  absl::Time give_up = absl::Now() + options_.wait_for_others;
  uint64_t seen_done = 0;
  bool idle = false;
  // From 1 ms: the last partitions' holders usually finish within
  // milliseconds, and a longer first pause idled the waiter for it at the
  // end of every job (50 ms of a 0.9 s benchmark run).
  absl::Duration backoff = absl::Milliseconds(1);
  absl::StatusOr<ps::v1::LeasePartitionResponse> lease;
  while (true) {
    lease = client_->LeasePartition(*plan_.partitions);
    if (!lease.ok()) return lease.status();
    partitions_done_ = lease->partitions_done();
    if (lease->outcome() == ps::v1::LeasePartitionResponse::GRANTED) break;
    const bool done =
        lease->outcome() == ps::v1::LeasePartitionResponse::JOB_DONE;
    if (partitions_done_ > seen_done) {
      seen_done = partitions_done_;
      give_up = absl::Now() + options_.wait_for_others;
    }
    if (done || absl::Now() > give_up) {
      spdlog::info(
          "worker {}: no partition left for it ({}; {} of {} done): done",
          options_.rank,
          done ? "the job is done"
               : "nothing completed anywhere for --max_retry_time",
          partitions_done_,
          uint64_t{common::TrainablePartitions(*plan_.partitions)} *
              plan_.partitions->epochs);
      return false;
    }
    if (!idle) {
      if (absl::Status told = client_->Idle(); !told.ok()) return told;
      idle = true;
      spdlog::info(
          "worker {}: every partition left is held by, or kept for, a live "
          "worker ({} of {} done); waiting in the job, idle, for one to come "
          "free or for the job to end",
          options_.rank, partitions_done_,
          uint64_t{plan_.partitions->partitions} * plan_.partitions->epochs);
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
  ps::v1::PartitionDone& held = state.partition.emplace();
  held.set_epoch(lease->epoch());
  held.set_partition(lease->partition());
  // Within a partition, a shuffle of its own per epoch: the same batches
  // whichever worker trains it.
  state.order.resize(lease->example_end() - lease->example_begin());
  std::iota(state.order.begin(), state.order.end(),
            static_cast<int64_t>(lease->example_begin()));
  Shuffle(state.order,
          MixSeed(options_.seed, lease->partition(), lease->epoch()));
  state.partition_batches =
      (state.order.size() + options_.batch_size - 1) / options_.batch_size;
  state.batch = 0;
  return true;
}

absl::Span<const int64_t> Trainer::PartitionBatch(const StepState& state,
                                                  uint64_t batch) const {
  // The partition's batches even (sizes differ by one at most), not full
  // ones and a short tail: a tail of 41 of 64 examples would weigh less in
  // its round's mean and end every partition with a step unlike the others.
  const common::KeyRange part = common::BalancedPart(
      state.order.size(), static_cast<uint32_t>(state.partition_batches),
      static_cast<uint32_t>(batch));
  return absl::MakeConstSpan(state.order).subspan(part.begin, part.size());
}

bool Trainer::DroppedEverywhere(const PushCounts& before) const {
  const PushCounts& after = client_->push_counts();
  return after.applied_or_accepted == before.applied_or_accepted &&
         after.stale - before.stale == client_->num_shards();
}

double Trainer::EpochsDone(uint64_t step) const {
  if (plan_.partitions.has_value()) {
    // A held-out fold is never trained: an epoch is the trainable rest.
    return static_cast<double>(partitions_done_) /
           common::TrainablePartitions(*plan_.partitions);
  }
  return static_cast<double>(step) / plan_.steps_per_epoch;
}

absl::Status Trainer::FailStart(const absl::Status& failure) {
  // A start that fails after registering leaves at once, so the servers do
  // not count this worker toward the next run's rounds; unless the servers
  // cannot be reached, when the lease runs out instead.
  if (!absl::IsUnavailable(failure) && !absl::IsDeadlineExceeded(failure)) {
    if (absl::Status left = client_->Leave(ps::v1::LeaveRequest::START_FAILED);
        !left.ok()) {
      spdlog::warn("could not leave after failing to start: {}",
                   left.ToString());
    }
  }
  return failure;
}

absl::StatusOr<bool> Trainer::JoinJob() {
  const int64_t train_size = task_->train_size();
  const uint32_t rank = options_.rank;
  const uint32_t workers = options_.num_workers;
  const uint32_t batch = options_.batch_size;
  // Look before registering: a worker given the servers in the wrong order
  // must not count as a member, and one that comes to a finished job (a
  // second `docker compose up`, a rerun) has nothing to train.
  absl::StatusOr<JobSurvey> survey = client_->Survey();
  if (!survey.ok()) return survey.status();
  if (survey->complete) {
    found_job_complete_ = true;
    spdlog::info(
        "the job is already complete: {} finished all {} epochs on every "
        "server (version {}); nothing to train. To train again, start the "
        "servers afresh (an empty --checkpoint_dir; compose: down -v)",
        survey->expected_workers == 1
            ? std::string("worker 0")
            : absl::StrCat("workers 0 to ", survey->expected_workers - 1),
        survey->expected_workers == 1 ? "its" : "their", survey->version);
    return false;
  }
  // Register first: a sync round cannot close until the expected workers
  // have registered, so no worker runs ahead of one still starting.
  absl::StatusOr<uint64_t> resume_step = client_->Register();
  if (!resume_step.ok()) return resume_step.status();
  theta_ = options_.initial_theta;
  absl::StatusOr<ClusterInfo> cluster =
      task_->Declare(*client_, options_.seed, theta_);
  if (!cluster.ok()) return FailStart(cluster.status());
  if (cluster->expected_workers != workers) {
    spdlog::warn(
        "the servers were started for {} workers, this worker for "
        "--num_workers={}: data shards follow this worker's count",
        cluster->expected_workers, workers);
  }

  if (options_.data_partitions > 0) {
    // Partitions leased one at a time: steps count on from the worker id's
    // clock, and a restarted worker is handed back the partition it held.
    plan_.partitions = PartitionPlanOf(options_, train_size);
    plan_.first_step = *resume_step;
    spdlog::info(
        "worker {} ({} expected): {} mode, {} data partitions per epoch "
        "leased from shard 0{}, even batches of at most {}, {} epochs, {} "
        "server shards, "
        "starting at step {}",
        rank, workers, rpc::ModeName(client_->mode()), options_.data_partitions,
        options_.kfold == 0 ? std::string()
                            : absl::StrCat(" (fold ", options_.fold, " of ",
                                           options_.kfold, " held out)"),
        batch, options_.epochs, client_->num_shards(), plan_.first_step);
    return true;
  }
  // An epoch is one pass over each worker's whole shard, the last batch
  // holding what is left. Every worker takes the same number of steps (shards
  // differ by at most one example), so no sync round waits for a worker that
  // ran out of data; the round's mean weighs each batch by its size.
  plan_.mine = common::BalancedPart(train_size, workers, rank);
  const uint64_t smallest_shard = train_size / workers;
  plan_.steps_per_epoch = (smallest_shard + batch - 1) / batch;
  plan_.total_steps = plan_.steps_per_epoch * options_.epochs;
  plan_.first_step = std::min(plan_.total_steps, *resume_step);
  spdlog::info(
      "worker {}/{}: {} mode, examples {}, {} steps of {} per epoch, "
      "{} epochs, {} server shards, starting at step {}",
      rank, workers, rpc::ModeName(client_->mode()), plan_.mine.ToString(),
      plan_.steps_per_epoch, batch, options_.epochs, client_->num_shards(),
      plan_.first_step);
  return true;
}

Trainer::StepState::StepState(const Trainer& trainer)
    : order(trainer.plan_.mine.size()),
      next_eval(trainer.options_.eval_every),
      step_start(NowSeconds()) {
  const Plan& plan = trainer.plan_;
  std::iota(order.begin(), order.end(), static_cast<int64_t>(plan.mine.begin));
  // Partitions: set once the first lease says how many are done.
  while (!plan.partitions.has_value() &&
         trainer.EpochsDone(plan.first_step) >= next_eval) {
    next_eval += trainer.options_.eval_every;
  }
}

absl::Span<const int64_t> Trainer::ExamplesOf(uint64_t step,
                                              StepState& state) const {
  const uint32_t batch = options_.batch_size;
  const uint64_t epoch = step / plan_.steps_per_epoch;
  const uint64_t in_epoch = step % plan_.steps_per_epoch;
  if (state.shuffled != epoch) {
    std::iota(state.order.begin(), state.order.end(),
              static_cast<int64_t>(plan_.mine.begin));
    Shuffle(state.order, MixSeed(options_.seed, options_.rank, epoch));
    state.shuffled = epoch;
  }
  const uint64_t first = in_epoch * batch;
  return absl::MakeConstSpan(state.order)
      .subspan(first, std::min<uint64_t>(batch, state.order.size() - first));
}

bool Trainer::EvaluationDue(uint64_t step, const StepState& state) const {
  return options_.rank == 0 && EpochsDone(step) >= state.next_eval;
}

absl::Status Trainer::TakeStep(uint64_t step,
                               absl::Span<const int64_t> examples,
                               std::optional<NextBatch> next,
                               StepState& state) {
  // A step's time leaves out rank 0's own evaluation: it measures waiting
  // on the cluster and computing, which is where a stall would show.
  double step_seconds = NowSeconds() - state.step_start;
  if (absl::Status queued = QueueEvaluationIfDue(step, state); !queued.ok()) {
    return queued;
  }
  const double compute_start = NowSeconds();

  const uint32_t rows = static_cast<uint32_t>(examples.size());
  state.loss_sum += task_->Compute(examples, theta_);
  ++state.loss_count;
  const double push_start = NowSeconds();
  if (next.has_value()) {
    // Push this step's gradient and pull the next step's θ in one round
    // trip per shard.
    absl::StatusOr<PullInfo> pulled =
        task_->PushPull(*client_, step, rows, (*next)(),
                        EvaluationDue(step + 1, state), absl::MakeSpan(theta_));
    if (!pulled.ok()) return pulled.status();
    state.pulled = *pulled;
  } else if (absl::Status pushed = task_->Push(*client_, step, rows);
             !pushed.ok()) {
    return pushed;
  }
  const double push_end = NowSeconds();
  if (options_.metrics != nullptr) {
    // A step with no next batch pushes without pulling: nothing waited.
    const double waited =
        next.has_value()
            ? std::min(state.pulled.waited_seconds, push_end - push_start)
            : 0.0;
    options_.metrics->CountStep(push_start - compute_start,
                                push_end - push_start - waited, waited,
                                step_seconds, rows);
    if (next.has_value()) options_.metrics->CountPull();
    options_.metrics->SetPushCounts(client_->push_counts());
  }
  step_seconds += push_end - compute_start;
  state.longest_step = std::max(state.longest_step, step_seconds);
  state.step_start = NowSeconds();
  return absl::OkStatus();
}

absl::Status Trainer::QueueEvaluationIfDue(uint64_t step, StepState& state) {
  if (!EvaluationDue(step, state)) return absl::OkStatus();
  const double epochs_done = EpochsDone(step);
  EvalPoint point =
      Snapshot(step, state.pulled.version, state.pulled.samples_applied,
               state.MeanLoss(), state.longest_step);
  absl::MutexLock lock(&eval_mutex_);
  if (!eval_status_.ok()) return eval_status_;
  eval_queue_.push_back(std::move(point));
  state.loss_sum = 0;
  state.loss_count = 0;
  state.longest_step = 0;
  while (epochs_done >= state.next_eval) {
    state.next_eval += options_.eval_every;
  }
  return absl::OkStatus();
}

absl::Status Trainer::Finish(uint64_t steps, const StepState& state) {
  // Done: stop counting toward rounds, so the others' last rounds close
  // without this worker; the servers record it as finished.
  if (absl::Status left = client_->Leave(ps::v1::LeaveRequest::FINISHED);
      !left.ok()) {
    return left;
  }
  const PushCounts& counts = client_->push_counts();
  spdlog::info(
      "worker {} finished: {} shard pushes applied or accepted, {} "
      "stale, {} duplicate, {} after re-registering, {} completions skipped",
      options_.rank, counts.applied_or_accepted, counts.stale, counts.duplicate,
      counts.reregistered, counts.completions_skipped);
  if (options_.rank != 0) return absl::OkStatus();
  // The evaluations queued during training are written before the last.
  if (absl::Status evaluated = StopEvaluations(); !evaluated.ok()) {
    return evaluated;
  }

  // Rank 0 evaluates the final θ once every other worker has started and
  // finished (or its lease expired), bounded by the retry budget.
  if (absl::Status waited = client_->WaitForOtherWorkers(
          options_.num_workers, options_.wait_for_others);
      !waited.ok()) {
    spdlog::warn("evaluating without waiting longer: {}", waited.ToString());
  }
  absl::StatusOr<PullInfo> last =
      task_->PullFinal(*client_, absl::MakeSpan(theta_));
  if (!last.ok()) return last.status();
  if (plan_.partitions.has_value()) {
    // The others may have finished partitions since this worker's last
    // lease: the final line counts what shard 0 says now.
    absl::StatusOr<uint64_t> done = client_->PartitionsDone();
    if (done.ok()) {
      partitions_done_ = *done;
    } else {
      spdlog::warn("the final epoch counts partitions as of the last lease: {}",
                   done.status().ToString());
    }
  }
  if (eval_scorer_ == nullptr) eval_scorer_ = task_->NewEvaluator();
  return Evaluate(*eval_scorer_,
                  Snapshot(steps, last->version, last->samples_applied,
                           state.MeanLoss(), state.longest_step));
}

void Trainer::StartEvaluations() {
  // Rank 0 evaluates on a thread of its own: an evaluation no longer stalls
  // its steps (nor, in sync mode, everyone's rounds). Each line's time is
  // when its θ was pulled, so time to accuracy keeps its meaning; the
  // evaluations' CPU still counts against the machine.
  eval_scorer_ = task_->NewEvaluator();
  evaluator_ = std::thread(&Trainer::EvaluationLoop, this, eval_scorer_.get());
}

absl::Status Trainer::StopEvaluations() {
  if (!evaluator_.joinable()) return absl::OkStatus();
  {
    absl::MutexLock lock(&eval_mutex_);
    eval_done_ = true;
  }
  evaluator_.join();
  absl::MutexLock lock(&eval_mutex_);
  return eval_status_;
}

Trainer::EvalPoint Trainer::Snapshot(uint64_t step, uint64_t version,
                                     uint64_t samples_applied,
                                     double train_loss, double longest_step) {
  EvalPoint point;
  point.theta = theta_;
  point.rows = task_->TakeEvaluationRows();
  point.elapsed = NowSeconds() - start_seconds_;
  point.step = step;
  point.version = version;
  point.samples_applied = samples_applied;
  // Partitions: the job's epochs exactly, partitions done over partitions.
  point.epoch =
      plan_.partitions.has_value()
          ? EpochsDone(step)
          : static_cast<double>(samples_applied) / task_->train_size();
  point.train_loss = train_loss;
  point.longest_step = longest_step;
  const PushCounts& counts = client_->push_counts();
  if (counts.pushes > 0) {
    point.push_bytes_per_step =
        static_cast<double>(counts.push_request_bytes) / counts.pushes;
  }
  return point;
}

void Trainer::EvaluationLoop(TestEvaluator* evaluator) {
  while (true) {
    EvalPoint point;
    {
      absl::MutexLock lock(&eval_mutex_);
      eval_mutex_.Await(absl::Condition(
          +[](Trainer* t) {
            // Await calls this with eval_mutex_ held.
            t->eval_mutex_.AssertHeld();
            return t->eval_done_ || !t->eval_queue_.empty();
          },
          this));
      if (eval_queue_.empty()) return;  // done, and nothing left
      point = std::move(eval_queue_.front());
      eval_queue_.pop_front();
    }
    absl::Status evaluated = Evaluate(*evaluator, point);
    absl::MutexLock lock(&eval_mutex_);
    if (eval_status_.ok()) eval_status_ = evaluated;
  }
}

absl::Status Trainer::Evaluate(TestEvaluator& evaluator,
                               const EvalPoint& point) {
  absl::StatusOr<TestScores> scores =
      evaluator.Evaluate(point.theta, point.rows);
  if (!scores.ok()) return scores.status();
  const double elapsed = point.elapsed;
  const uint64_t step = point.step;
  const uint64_t version = point.version;
  const uint64_t samples_applied = point.samples_applied;
  const double train_loss = point.train_loss;
  const double longest_step = point.longest_step;
  const double epoch = point.epoch;
  const uint64_t applied_here = samples_applied > samples_at_start_
                                    ? samples_applied - samples_at_start_
                                    : 0;
  const double samples_per_s = elapsed > 0 ? applied_here / elapsed : 0;
  using common::RoundTo;
  // Partitions done over partitions is exact: not rounded.
  const double shown_epoch =
      plan_.partitions.has_value() ? epoch : RoundTo(epoch, 4);
  common::Json fields = {{"time_s", RoundTo(elapsed, 3)},
                         {"epoch", shown_epoch},
                         {"step", step},
                         {"version", version}};
  fields.update(scores->fields);
  fields.update(common::Json{
      {"train_loss", RoundTo(train_loss, 5)},
      {"samples_per_s", RoundTo(samples_per_s, 1)},
      {"samples", samples_applied},
      {"model", options_.model_name},
      {"mode", rpc::ModeName(client_->mode())},
      {"workers", options_.num_workers},
      {"servers", client_->num_shards()},
      {"max_step_s", RoundTo(longest_step, 4)},
      {"push_bytes_per_step", RoundTo(point.push_bytes_per_step, 1)}});
  if (task_->has_tables()) {
    // How the table spreads over the shards, asked now (a little after
    // θ was pulled): the memory each server needs.
    absl::StatusOr<std::vector<uint64_t>> rows = client_->RowsPerShard();
    if (rows.ok()) {
      fields["rows_per_shard"] = *rows;
    } else {
      spdlog::warn("no rows_per_shard in this line: {}",
                   rows.status().ToString());
    }
  }
  const std::string line = fields.dump();
  spdlog::info("epoch {:.2f} step {} {} ({:.0f} samples/s)", epoch, step,
               scores->summary, samples_per_s);
  last_evaluation_ = scores->dense;
  if (options_.metrics_out.empty()) return absl::OkStatus();
  std::ofstream out(options_.metrics_out, std::ios::app);
  out << line << "\n";
  out.flush();
  if (!out) {
    return absl::UnavailableError(
        absl::StrCat("cannot append to --metrics_out=", options_.metrics_out));
  }
  return absl::OkStatus();
}

}  // namespace ps::worker
