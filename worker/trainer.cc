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

absl::Status ValidateTrainerOptions(const TrainerOptions& o,
                                    int64_t train_size) {
  if (o.num_workers == 0) {
    return absl::InvalidArgumentError("--num_workers must be at least 1");
  }
  if (o.rank >= o.num_workers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--rank=", o.rank, " must be below --num_workers=", o.num_workers));
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
  // process stopped; in sync mode its first pull waits for the open round.
  // What each pull waits for is the store's to decide, from the mode the
  // servers report (ParameterStore::Pull).
  StepState state(*this);
  absl::StatusOr<PullInfo> pulled = task_->Pull(
      *client_, plan_.first_step, ExamplesOf(plan_.first_step, state),
      EvaluationDue(plan_.first_step, state), absl::MakeSpan(theta_));
  if (!pulled.ok()) return FailStart(pulled.status());
  state.pulled = *pulled;
  if (options_.metrics != nullptr) options_.metrics->CountPull();
  // samples_per_s counts from here: a restarted rank 0 must not credit
  // itself with what the job applied before it came.
  samples_at_start_ = pulled->samples_applied;
  started_ = true;
  start_seconds_ = NowSeconds();

  // The evaluator stops on every way out of Run.
  struct StopOnExit {
    Trainer* trainer;
    ~StopOnExit() { trainer->StopEvaluations().IgnoreError(); }
  } stop_on_exit{this};
  if (options_.rank == 0) StartEvaluations();
  state.step_start = NowSeconds();

  for (uint64_t step = plan_.first_step; step < plan_.total_steps; ++step) {
    if (options_.stop_requested && options_.stop_requested()) {
      if (absl::Status left = client_->Leave(); !left.ok()) return left;
      return absl::CancelledError(absl::StrCat(
          "stopped on request before step ", step, " of ", plan_.total_steps,
          "; left the job, and a worker restarted with --rank=", options_.rank,
          " resumes there"));
    }
    if (absl::Status done = TakeStep(step, state); !done.ok()) return done;
  }
  return Finish(state);
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
      rank, workers, client_->mode(), plan_.mine.ToString(),
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
  while (static_cast<double>(plan.first_step) / plan.steps_per_epoch >=
         next_eval) {
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
  const double epochs_done = static_cast<double>(step) / plan_.steps_per_epoch;
  return options_.rank == 0 && epochs_done >= state.next_eval;
}

absl::Status Trainer::TakeStep(uint64_t step, StepState& state) {
  // A step's time leaves out rank 0's own evaluation: it measures waiting
  // on the cluster and computing, which is where a stall would show.
  double step_seconds = NowSeconds() - state.step_start;
  if (absl::Status queued = QueueEvaluationIfDue(step, state); !queued.ok()) {
    return queued;
  }
  const double compute_start = NowSeconds();

  const absl::Span<const int64_t> examples = ExamplesOf(step, state);
  const uint32_t rows = static_cast<uint32_t>(examples.size());
  state.loss_sum += task_->Compute(examples, theta_);
  ++state.loss_count;
  const double push_start = NowSeconds();
  if (step + 1 < plan_.total_steps) {
    // Push this step's gradient and pull the next step's θ in one round
    // trip per shard.
    absl::StatusOr<PullInfo> pulled =
        task_->PushPull(*client_, step, rows, ExamplesOf(step + 1, state),
                        EvaluationDue(step + 1, state), absl::MakeSpan(theta_));
    if (!pulled.ok()) return pulled.status();
    state.pulled = *pulled;
  } else if (absl::Status pushed = task_->Push(*client_, step, rows);
             !pushed.ok()) {
    return pushed;
  }
  const double push_end = NowSeconds();
  if (options_.metrics != nullptr) {
    // The last step pushes without pulling: nothing waited.
    const double waited =
        step + 1 < plan_.total_steps
            ? std::min(state.pulled.waited_seconds, push_end - push_start)
            : 0.0;
    options_.metrics->CountStep(push_start - compute_start,
                                push_end - push_start - waited, waited,
                                step_seconds, rows);
    if (step + 1 < plan_.total_steps) options_.metrics->CountPull();
    options_.metrics->SetPushCounts(client_->push_counts());
  }
  step_seconds += push_end - compute_start;
  state.longest_step = std::max(state.longest_step, step_seconds);
  state.step_start = NowSeconds();
  return absl::OkStatus();
}

absl::Status Trainer::QueueEvaluationIfDue(uint64_t step, StepState& state) {
  if (!EvaluationDue(step, state)) return absl::OkStatus();
  const double epochs_done = static_cast<double>(step) / plan_.steps_per_epoch;
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

absl::Status Trainer::Finish(const StepState& state) {
  // Done: stop counting toward rounds, so the others' last rounds close
  // without this worker; the servers record it as finished.
  if (absl::Status left = client_->Leave(ps::v1::LeaveRequest::FINISHED);
      !left.ok()) {
    return left;
  }
  const PushCounts& counts = client_->push_counts();
  spdlog::info(
      "worker {} finished: {} shard pushes applied or accepted, {} "
      "stale, {} duplicate, {} after re-registering",
      options_.rank, counts.applied_or_accepted, counts.stale, counts.duplicate,
      counts.reregistered);
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
  if (eval_scorer_ == nullptr) eval_scorer_ = task_->NewEvaluator();
  return Evaluate(
      *eval_scorer_,
      Snapshot(plan_.total_steps, last->version, last->samples_applied,
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
  const double epoch =
      static_cast<double>(samples_applied) / task_->train_size();
  const uint64_t applied_here = samples_applied > samples_at_start_
                                    ? samples_applied - samples_at_start_
                                    : 0;
  const double samples_per_s = elapsed > 0 ? applied_here / elapsed : 0;
  using common::RoundTo;
  common::Json fields = {{"time_s", RoundTo(elapsed, 3)},
                         {"epoch", RoundTo(epoch, 4)},
                         {"step", step},
                         {"version", version}};
  fields.update(scores->fields);
  fields.update(common::Json{
      {"train_loss", RoundTo(train_loss, 5)},
      {"samples_per_s", RoundTo(samples_per_s, 1)},
      {"samples", samples_applied},
      {"model", options_.model_name},
      {"mode", client_->mode()},
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
