#ifndef PS_WORKER_TRAINER_H_
#define PS_WORKER_TRAINER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/data_partition.h"
#include "common/dataset.h"
#include "common/key_range.h"
#include "worker/model.h"
#include "worker/parameter_store.h"
#include "worker/training_task.h"
#include "worker/worker_metrics.h"

namespace ps::worker {

struct TrainerOptions {
  // This worker's rank in [0, num_workers); rank 0 evaluates. With
  // data_partitions, any rank the servers accept (a joiner beyond
  // num_workers takes partitions too). Default: 0 of 1
  uint32_t rank = 0;
  uint32_t num_workers = 1;
  // Cuts the training set into this many partitions per epoch, which the
  // worker leases from shard 0 one at a time (server/partition_table.h);
  // 0: each worker trains part `rank` of `num_workers`. Default: 0
  uint32_t data_partitions = 0;
  // k-fold cross-validation over the partitions (needs data_partitions >=
  // kfold): partition p is in fold p mod kfold, and fold `fold`'s
  // partitions are never leased (common::HeldOut). 0: no folds. The held-out
  // examples are the task's to evaluate on (TrainTestData::validation).
  // Default: 0
  uint32_t kfold = 0;
  uint32_t fold = 0;
  // Examples per mini-batch on this worker. Default: 64
  uint32_t batch_size = 64;
  // Passes over the training set. Default: 1
  uint32_t epochs = 1;
  // Seeds θ's initial values and each epoch's shuffle. Default: 1
  uint64_t seed = 1;
  // Rank 0 evaluates every this fraction of an epoch. Default: 0.25
  double eval_every = 0.25;
  // Rank 0 appends one JSON line per evaluation here; empty: none.
  std::string metrics_out;
  // Identifies the job in the metrics lines.
  std::string model_name;
  // Rank 0 waits at most this long for the other workers to finish before
  // its final evaluation; with data_partitions, a worker with no partition
  // free waits, idle, until one comes free, the job is done, or this long
  // passed without a partition completed anywhere. Default: 120 s
  absl::Duration wait_for_others = absl::Seconds(120);
  // θ to declare instead of the seeded initial values (a model exported by
  // psctl, say; the dense part of θ for a sparse model); empty: seeded. The
  // servers keep whatever was declared first.
  std::vector<float> initial_theta;
  // Polled before each step: when it returns true the worker leaves the job
  // (sync rounds stop waiting for it) and Run returns CANCELLED. A new
  // process with the same rank resumes at the next step. Default: never
  std::function<bool()> stop_requested;
  // Counts each step's phases, examples, pulls and pushes for Prometheus;
  // must outlive the trainer. Default: none
  WorkerMetrics* metrics = nullptr;
};

// The job's partition plan as `options` make it for a training set of
// `train_size` examples (meaningful with data_partitions > 0).
common::PartitionPlan PartitionPlanOf(const TrainerOptions& options,
                                      int64_t train_size);

// Validated before any network traffic; mentions the flag names.
absl::Status ValidateTrainerOptions(const TrainerOptions& options,
                                    int64_t train_size);

// The worker's loop: pull θ from every shard, compute the mean gradient of a
// mini-batch of its own data, push it. Its data is either part `rank` of
// `num_workers` of the training set, reshuffled every epoch, every worker
// taking the same number of steps so sync rounds always fill; or, with
// data_partitions, the partitions it leases from shard 0 one after another,
// each reshuffled, its last push reporting it done, until none is left for
// it (then it leaves, and sync rounds stop waiting for it). What a step
// computes and pulls is the task's (worker/training_task.h).
class Trainer {
 public:
  // `client` (a ParameterClient, or an in-memory store in tests) decides
  // what each pull waits for from the mode the servers report.
  Trainer(TrainerOptions options, Model* model, ParameterStore* client,
          const common::TrainTestData* data);
  // Any task: the sparse models' (NewSparseTask), say.
  Trainer(TrainerOptions options, std::unique_ptr<TrainingTask> task,
          ParameterStore* client);

  // Trains to the end; OK also when the job was complete before this
  // worker came (found_job_complete()), having trained nothing. In steps:
  // JoinJob, the first Pull, TakeStep for each step, Finish.
  absl::Status Run();

  // Run found every worker of the job finished on every server, and
  // returned at once without registering.
  bool found_job_complete() const { return found_job_complete_; }
  // Run got as far as its first step: a failure before that is a failure
  // to start (the servers' layout or model disagrees with this worker's).
  bool started() const { return started_; }

  // θ as last pulled (after Run: the final θ); a sparse model's dense part.
  const std::vector<float>& theta() const { return theta_; }
  // The last evaluation rank 0 made of a dense model.
  const Evaluation& last_evaluation() const { return last_evaluation_; }

 private:
  // Where this process's run starts and ends, set by JoinJob.
  struct Plan {
    common::KeyRange mine;  // this worker's examples (split by rank)
    uint64_t steps_per_epoch = 0;
    uint64_t total_steps = 0;
    uint64_t first_step = 0;  // the resume step
    // With data_partitions: the job's partitions, leased one at a time.
    std::optional<common::PartitionPlan> partitions;
  };
  // What the loop carries from one step to the next.
  struct StepState {
    explicit StepState(const Trainer& trainer);
    double MeanLoss() const { return loss_count ? loss_sum / loss_count : 0; }

    PullInfo pulled;             // the θ the next step computes from
    std::vector<int64_t> order;  // the shuffle of `mine` of epoch `shuffled`
    uint64_t shuffled = UINT64_MAX;
    // With data_partitions: the partition held (its shuffle is `order`),
    // and its next batch.
    std::optional<ps::v1::PartitionDone> partition;
    uint64_t partition_batches = 0;
    uint64_t batch = 0;
    double next_eval;  // in epochs
    double loss_sum = 0;
    uint64_t loss_count = 0;
    double longest_step = 0;
    double step_start = 0;
  };

  // Surveys, registers and declares the model; sets plan_. False: the job
  // was complete already and this worker did not join.
  absl::StatusOr<bool> JoinJob();
  // Leaves as a failed start (unless the servers are unreachable) and
  // returns `failure`.
  absl::Status FailStart(const absl::Status& failure);
  // Step `step`'s examples: a batch of this epoch's shuffle (shuffled
  // when the step is the first of its epoch this process takes).
  absl::Span<const int64_t> ExamplesOf(uint64_t step, StepState& state) const;
  // The steps of a split by rank, from the first pull on.
  absl::Status TrainShard(StepState& state);
  // The partitions leased one after another; `step` counts on from the
  // first pull's.
  absl::Status TrainPartitions(uint64_t& step, StepState& state);
  // Leases the next partition into `state` (shuffled with the seed); false
  // when none is left for this worker.
  absl::StatusOr<bool> LeaseNext(StepState& state);
  // Pulls θ for step `step` (and `examples`' rows, for a task with
  // tables) into theta_ and state.pulled, outside the steps' own
  // push-then-pull: the first step, a partition's first, a batch sent again.
  absl::Status PullFor(uint64_t step, absl::Span<const int64_t> examples,
                       StepState& state);
  // The held partition's batch `batch`.
  absl::Span<const int64_t> PartitionBatch(const StepState& state,
                                           uint64_t batch) const;
  // Whether the step pushed since `before` was dropped as stale by every
  // shard: its batch counted nowhere.
  bool DroppedEverywhere(const PushCounts& before) const;
  // Epochs of the job done when step `step` starts: by this worker's steps
  // (split by rank), or by shard 0's partitions done (data_partitions).
  double EpochsDone(uint64_t step) const;
  // Rank 0 evaluates at the start of step `step`: its pull brings what the
  // evaluation needs.
  bool EvaluationDue(uint64_t step, const StepState& state) const;
  // The batch after a step's: asked for once the step's gradient is
  // computed (it may reuse the storage of the step's examples).
  using NextBatch = absl::FunctionRef<absl::Span<const int64_t>()>;
  // Computes the gradient of `examples` from theta_ as step `step`'s and
  // pushes it, pulling θ for `next` in the same round trip when there is
  // one; rank 0 queues an evaluation first when one is due.
  absl::Status TakeStep(uint64_t step, absl::Span<const int64_t> examples,
                        std::optional<NextBatch> next, StepState& state);
  absl::Status QueueEvaluationIfDue(uint64_t step, StepState& state);
  // Leaves as finished after `steps` steps; rank 0 then evaluates the
  // final θ.
  absl::Status Finish(uint64_t steps, const StepState& state);
  void StartEvaluations();
  // Waits for the queued evaluations; their first failure.
  absl::Status StopEvaluations();

  // What one evaluation reports: θ as of `elapsed` seconds into training.
  struct EvalPoint {
    std::vector<float> theta;
    std::vector<float> rows;  // TrainingTask::TakeEvaluationRows
    double elapsed = 0;
    uint64_t step = 0;
    uint64_t version = 0;
    uint64_t samples_applied = 0;
    double epoch = 0;  // EpochsDone's, or samples_applied over the set
    double train_loss = 0;
    double longest_step = 0;
    // Mean bytes a push (or push-pull) request took to all shards so far.
    double push_bytes_per_step = 0;
  };
  EvalPoint Snapshot(uint64_t step, uint64_t version, uint64_t samples_applied,
                     double train_loss, double longest_step);
  // Evaluates `point` with `evaluator` and appends its metrics line.
  absl::Status Evaluate(TestEvaluator& evaluator, const EvalPoint& point);
  // Rank 0's evaluations during training run here, on a copy of θ and an
  // evaluator of their own, off the training path; in order, one at a time.
  void EvaluationLoop(TestEvaluator* evaluator);

  absl::Mutex eval_mutex_;
  std::deque<EvalPoint> eval_queue_ ABSL_GUARDED_BY(eval_mutex_);
  bool eval_done_ ABSL_GUARDED_BY(eval_mutex_) = false;
  absl::Status eval_status_ ABSL_GUARDED_BY(eval_mutex_);

  TrainerOptions options_;
  std::unique_ptr<TrainingTask> task_;
  ParameterStore* client_;
  std::vector<float> theta_;
  Plan plan_;
  // Rank 0's evaluator, with scratch of its own, and its thread.
  std::unique_ptr<TestEvaluator> eval_scorer_;
  std::thread evaluator_;
  Evaluation last_evaluation_;
  bool found_job_complete_ = false;
  bool started_ = false;
  double start_seconds_ = 0;
  // Examples the servers had applied when this process started training.
  uint64_t samples_at_start_ = 0;
  // With data_partitions: partitions done (all epochs) at the last lease.
  uint64_t partitions_done_ = 0;
};

}  // namespace ps::worker

#endif  // PS_WORKER_TRAINER_H_
