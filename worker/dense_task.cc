// The dense models' half of a training step: θ pulled whole, the batch's
// features copied into a matrix, one gradient vector pushed.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "spdlog/spdlog.h"
#include "worker/matrix_product.h"
#include "worker/training_task.h"

namespace ps::worker {
namespace {

// Scores the test set, and the held-out validation set when there is one
// (k-fold: val_accuracy and val_loss beside the test fields).
class DenseEvaluator final : public TestEvaluator {
 public:
  DenseEvaluator(std::unique_ptr<Model> model, const common::Dataset* test,
                 const common::Dataset* validation)
      : model_(std::move(model)), test_(test), validation_(validation) {}

  absl::StatusOr<TestScores> Evaluate(absl::Span<const float> theta,
                                      absl::Span<const float>) override {
    TestScores scores;
    scores.dense = model_->Evaluate(theta, *test_);
    scores.fields = {
        {"test_accuracy", common::RoundTo(scores.dense.accuracy, 4)},
        {"test_loss", common::RoundTo(scores.dense.mean_loss, 5)}};
    scores.summary =
        absl::StrFormat("test accuracy %.4f loss %.4f", scores.dense.accuracy,
                        scores.dense.mean_loss);
    if (validation_->size() > 0) {
      const Evaluation val = model_->Evaluate(theta, *validation_);
      scores.fields.update(
          common::Json{{"val_accuracy", common::RoundTo(val.accuracy, 4)},
                       {"val_loss", common::RoundTo(val.mean_loss, 5)}});
      absl::StrAppendFormat(&scores.summary,
                            ", validation accuracy %.4f loss %.4f",
                            val.accuracy, val.mean_loss);
    }
    return scores;
  }

 private:
  std::unique_ptr<Model> model_;
  const common::Dataset* test_;
  const common::Dataset* validation_;
};

class DenseTask final : public TrainingTask {
 public:
  DenseTask(Model* model, const common::TrainTestData* data)
      : model_(model), data_(data), gradient_(model->num_params()) {}

  int64_t train_size() const override { return data_->train.size(); }

  absl::StatusOr<ClusterInfo> Declare(ParameterStore& store, uint64_t seed,
                                      std::vector<float>& theta) override {
    if (theta.empty()) theta = model_->InitialParams(seed);
    absl::StatusOr<ClusterInfo> cluster = store.Init(model_->tensors(), theta);
    if (cluster.ok()) {
      spdlog::info("matrix products: {} kernels (this CPU runs {})",
                   std::string(MatrixKernelsInUse()),
                   absl::StrJoin(MatrixKernelsThisCpuRuns(), ", "));
    }
    return cluster;
  }

  absl::StatusOr<PullInfo> Pull(ParameterStore& store, uint64_t step,
                                absl::Span<const int64_t>, bool,
                                absl::Span<float> theta) override {
    return store.Pull(step, theta);
  }

  double Compute(absl::Span<const int64_t> examples,
                 absl::Span<const float> theta) override {
    const common::Dataset& train = data_->train;
    const int64_t rows = static_cast<int64_t>(examples.size());
    if (x_.rows() < rows) {
      x_.resize(rows, train.features.cols());
      labels_.resize(rows);
    }
    for (int64_t b = 0; b < rows; ++b) {
      x_.row(b) = train.features.row(examples[b]);
      labels_[b] = train.labels[examples[b]];
    }
    return model_->LossAndGradient(theta, x_.topRows(rows),
                                   absl::MakeConstSpan(labels_).first(rows),
                                   absl::MakeSpan(gradient_));
  }

  absl::StatusOr<PullInfo> PushPull(ParameterStore& store, uint64_t step,
                                    uint32_t batch_size,
                                    absl::Span<const int64_t>, bool,
                                    absl::Span<float> theta) override {
    return store.PushPull(step, batch_size, gradient_, theta);
  }

  absl::Status Push(ParameterStore& store, uint64_t step,
                    uint32_t batch_size) override {
    return store.Push(step, batch_size, gradient_);
  }

  absl::StatusOr<PullInfo> PullFinal(ParameterStore& store,
                                     absl::Span<float> theta) override {
    return store.PullFinal(theta);
  }

  std::vector<float> TakeEvaluationRows() override { return {}; }

  std::unique_ptr<TestEvaluator> NewEvaluator() const override {
    return std::make_unique<DenseEvaluator>(model_->Clone(), &data_->test,
                                            &data_->validation);
  }

 private:
  Model* model_;
  const common::TrainTestData* data_;
  std::vector<float> gradient_;
  common::RowMatrix x_;
  std::vector<int32_t> labels_;
};

}  // namespace

std::unique_ptr<TrainingTask> NewDenseTask(Model* model,
                                           const common::TrainTestData* data) {
  return std::make_unique<DenseTask>(model, data);
}

}  // namespace ps::worker
