#ifndef PS_WORKER_TRAINING_TASK_H_
#define PS_WORKER_TRAINING_TASK_H_

// What the trainer's loop (worker/trainer.h) does with a batch, for the
// dense models (θ pulled whole, one gradient vector) and the sparse ones
// (the dense part of θ plus the rows of the batch's feature ids). The loop
// itself (membership, steps, data shards, evaluations, metrics) is one,
// whatever the model.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dataset.h"
#include "common/json.h"
#include "common/libsvm.h"
#include "worker/model.h"
#include "worker/parameter_store.h"
#include "worker/sparse_model.h"

namespace ps::worker {

// One evaluation on the test set.
struct TestScores {
  // The metrics line's test fields: test_accuracy and test_loss (dense),
  // test_auc and test_logloss (sparse).
  common::Json fields;
  // The same for the log line.
  std::string summary;
  // Dense models: what Trainer::last_evaluation() reports.
  Evaluation dense;
};

// Scores θ on the test set; scratch of its own, so it runs on the
// evaluation thread while the task trains.
class TestEvaluator {
 public:
  virtual ~TestEvaluator() = default;
  // `theta` is the dense part of θ; `rows`, what the task pulled for
  // evaluation besides (TrainingTask::TakeEvaluationRows).
  virtual absl::StatusOr<TestScores> Evaluate(absl::Span<const float> theta,
                                              absl::Span<const float> rows) = 0;
};

class TrainingTask {
 public:
  virtual ~TrainingTask() = default;

  virtual int64_t train_size() const = 0;
  // Declares the model to the servers with `theta`, the dense part of θ:
  // the values given, or when empty seeded ones, which this fills in.
  virtual absl::StatusOr<ClusterInfo> Declare(ParameterStore& store,
                                              uint64_t seed,
                                              std::vector<float>& theta) = 0;
  // Pulls θ to compute step `step` over the training examples `examples`
  // from; with `for_evaluation`, also what Evaluate needs besides θ.
  virtual absl::StatusOr<PullInfo> Pull(ParameterStore& store, uint64_t step,
                                        absl::Span<const int64_t> examples,
                                        bool for_evaluation,
                                        absl::Span<float> theta) = 0;
  // The mean loss over the examples of the last pull at `theta`; keeps
  // their mean gradient for the push.
  virtual double Compute(absl::Span<const int64_t> examples,
                         absl::Span<const float> theta) = 0;
  // Pushes that gradient as step `step`'s, of `batch_size` examples, then
  // pulls as Pull(step + 1, next, for_evaluation), in one round trip.
  virtual absl::StatusOr<PullInfo> PushPull(ParameterStore& store,
                                            uint64_t step, uint32_t batch_size,
                                            absl::Span<const int64_t> next,
                                            bool for_evaluation,
                                            absl::Span<float> theta) = 0;
  // The last step's push: nothing to pull after it.
  virtual absl::Status Push(ParameterStore& store, uint64_t step,
                            uint32_t batch_size) = 0;
  // After the last push: θ and what Evaluate needs (ParameterStore's
  // PullFinal).
  virtual absl::StatusOr<PullInfo> PullFinal(ParameterStore& store,
                                             absl::Span<float> theta) = 0;
  // Hands over what the last pull for evaluation brought besides θ.
  virtual std::vector<float> TakeEvaluationRows() = 0;
  virtual std::unique_ptr<TestEvaluator> NewEvaluator() const = 0;
  // Sparse models: the metrics lines report the rows each shard holds.
  virtual bool has_tables() const { return false; }
};

// Softmax or MLP over dense features; `model` and `data` outlive the task.
std::unique_ptr<TrainingTask> NewDenseTask(Model* model,
                                           const common::TrainTestData* data);

// logreg or fm over LIBSVM rows; `train` and `test` outlive the task.
// Evaluations pull the rows of every test id with the step's own pull, so
// they score θ as of that step. INVALID_ARGUMENT when the test set lacks a
// class (its AUC is undefined).
absl::StatusOr<std::unique_ptr<TrainingTask>> NewSparseTask(
    const SparseModel& model, const common::SparseDataset* train,
    const common::SparseDataset* test);

}  // namespace ps::worker

#endif  // PS_WORKER_TRAINING_TASK_H_
