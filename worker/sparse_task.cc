// The sparse models' half of a training step: the batch's distinct ids are
// pulled with the dense part of θ, and their row gradients pushed beside
// the bias's, the next batch's rows coming back in the same round trip.
#include <algorithm>
#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/training_task.h"

namespace ps::worker {
namespace {

class SparseEvaluator final : public TestEvaluator {
 public:
  SparseEvaluator(SparseModel model, std::shared_ptr<const CsrBatch> test)
      : model_(std::move(model)), test_(std::move(test)) {}

  absl::StatusOr<TestScores> Evaluate(absl::Span<const float> theta,
                                      absl::Span<const float> rows) override {
    absl::StatusOr<SparseEvaluation> evaluation =
        model_.Evaluate(*test_, theta, rows);
    if (!evaluation.ok()) return evaluation.status();
    TestScores scores;
    scores.fields = {{"test_auc", common::RoundTo(evaluation->auc, 4)},
                     {"test_logloss", common::RoundTo(evaluation->logloss, 5)}};
    scores.summary = absl::StrFormat("test AUC %.4f log-loss %.4f",
                                     evaluation->auc, evaluation->logloss);
    return scores;
  }

 private:
  SparseModel model_;
  std::shared_ptr<const CsrBatch> test_;
};

// log(r / (1 − r)) of the positive rate r, clamped away from 0 and 1.
float BaseRateLogOdds(const common::SparseDataset& data) {
  double positives = 0;
  for (const int32_t label : data.labels) positives += label;
  const double rate =
      std::clamp(positives / std::max<double>(1, data.size()), 1e-6, 1 - 1e-6);
  return static_cast<float>(std::log(rate / (1 - rate)));
}

class SparseTask final : public TrainingTask {
 public:
  SparseTask(SparseModel model, const common::SparseDataset* train,
             std::shared_ptr<const CsrBatch> test)
      : model_(std::move(model)), train_(train), test_(std::move(test)) {
    // One table: the pushes and pulls carry one batch of its rows.
    pushed_.resize(1);
    pulled_.resize(1);
  }

  int64_t train_size() const override { return train_->size(); }
  bool has_tables() const override { return true; }

  absl::StatusOr<ClusterInfo> Declare(ParameterStore& store, uint64_t seed,
                                      std::vector<float>& theta) override {
    // The bias starts at the training set's log-odds, so the first rounds
    // predict the base rate (~3% clicks), not 0.5: from zero, their large
    // gradients (p − y ≈ 0.5 on every row) stay in AdaGrad's and FTRL's
    // accumulators and slow every row they touched for the whole epoch.
    // Every worker reads the whole file, so all declare the same value. The
    // rows are seeded by the servers.
    if (theta.empty()) theta.assign(1, BaseRateLogOdds(*train_));
    return store.InitSparse(model_.dense_tensors(), model_.tables(), seed,
                            theta);
  }

  absl::StatusOr<PullInfo> Pull(ParameterStore& store, uint64_t step,
                                absl::Span<const int64_t> examples,
                                bool for_evaluation,
                                absl::Span<float> theta) override {
    if (absl::Status ready = AskFor(examples, for_evaluation); !ready.ok()) {
      return ready;
    }
    absl::StatusOr<PullInfo> pulled = store.PullSparse(step, theta, pulled_);
    if (pulled.ok()) TakeRows(for_evaluation);
    return pulled;
  }

  double Compute(absl::Span<const int64_t>,
                 absl::Span<const float> theta) override {
    row_gradients_.resize(rows_.size());
    return model_.LossAndGradient(batch_, theta, rows_,
                                  absl::MakeSpan(dense_gradient_),
                                  absl::MakeSpan(row_gradients_));
  }

  absl::StatusOr<PullInfo> PushPull(ParameterStore& store, uint64_t step,
                                    uint32_t batch_size,
                                    absl::Span<const int64_t> next,
                                    bool for_evaluation,
                                    absl::Span<float> theta) override {
    FillPush();
    if (absl::Status ready = AskFor(next, for_evaluation); !ready.ok()) {
      return ready;
    }
    absl::StatusOr<PullInfo> pulled = store.PushPullSparse(
        step, batch_size, dense_gradient_, pushed_, theta, pulled_);
    if (pulled.ok()) TakeRows(for_evaluation);
    return pulled;
  }

  absl::Status Push(ParameterStore& store, uint64_t step,
                    uint32_t batch_size) override {
    FillPush();
    return store.PushSparse(step, batch_size, dense_gradient_, pushed_);
  }

  absl::StatusOr<PullInfo> PullFinal(ParameterStore& store,
                                     absl::Span<float> theta) override {
    pulled_[0].ids = test_->ids;
    absl::StatusOr<PullInfo> pulled = store.PullFinalSparse(theta, pulled_);
    if (pulled.ok()) evaluation_rows_ = std::move(pulled_[0].values);
    return pulled;
  }

  std::vector<float> TakeEvaluationRows() override {
    return std::move(evaluation_rows_);
  }

  std::unique_ptr<TestEvaluator> NewEvaluator() const override {
    return std::make_unique<SparseEvaluator>(model_, test_);
  }

 private:
  // The batch of `examples` becomes the one to compute next; the pull asks
  // for its ids and, for an evaluation, every test id too (one list: a
  // request names a table once).
  absl::Status AskFor(absl::Span<const int64_t> examples, bool for_evaluation) {
    absl::StatusOr<CsrBatch> batch = MakeCsrBatch(*train_, examples);
    if (!batch.ok()) return batch.status();
    batch_ = std::move(*batch);
    std::vector<uint64_t>& ids = pulled_[0].ids;
    if (!for_evaluation) {
      ids = batch_.ids;
      return absl::OkStatus();
    }
    ids.clear();
    std::set_union(batch_.ids.begin(), batch_.ids.end(), test_->ids.begin(),
                   test_->ids.end(), std::back_inserter(ids));
    return absl::OkStatus();
  }

  // Splits the pulled rows into the batch's and, for an evaluation, the
  // test set's (both id lists ascending, as is the union pulled).
  void TakeRows(bool for_evaluation) {
    std::vector<float>& pulled = pulled_[0].values;
    if (!for_evaluation) {
      rows_.swap(pulled);
      return;
    }
    const uint32_t dim = model_.row_dim();
    const std::vector<uint64_t>& ids = pulled_[0].ids;
    rows_.resize(batch_.ids.size() * dim);
    evaluation_rows_.resize(test_->ids.size() * dim);
    size_t in_batch = 0;
    size_t in_test = 0;
    for (size_t k = 0; k < ids.size(); ++k) {
      const float* row = pulled.data() + k * dim;
      if (in_batch < batch_.ids.size() && batch_.ids[in_batch] == ids[k]) {
        std::copy(row, row + dim, rows_.data() + in_batch++ * dim);
      }
      if (in_test < test_->ids.size() && test_->ids[in_test] == ids[k]) {
        std::copy(row, row + dim, evaluation_rows_.data() + in_test++ * dim);
      }
    }
  }

  // The last computed gradient rows, under the ids they belong to.
  void FillPush() {
    pushed_[0].ids = batch_.ids;
    pushed_[0].values.swap(row_gradients_);
  }

  SparseModel model_;
  const common::SparseDataset* train_;
  std::shared_ptr<const CsrBatch> test_;
  CsrBatch batch_;  // the batch the rows in rows_ are for
  std::vector<float> rows_;
  std::vector<float> dense_gradient_ = {0.0f};
  std::vector<float> row_gradients_;
  std::vector<float> evaluation_rows_;
  // The store's requests, reused from step to step.
  std::vector<SparseBatch> pushed_;
  std::vector<SparseBatch> pulled_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TrainingTask>> NewSparseTask(
    const SparseModel& model, const common::SparseDataset* train,
    const common::SparseDataset* test) {
  std::vector<int64_t> everything(test->size());
  for (int64_t i = 0; i < test->size(); ++i) everything[i] = i;
  absl::StatusOr<CsrBatch> test_batch = MakeCsrBatch(*test, everything);
  if (!test_batch.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the test set: ", test_batch.status().message()));
  }
  const bool both_classes =
      std::count(test->labels.begin(), test->labels.end(), 1) > 0 &&
      std::count(test->labels.begin(), test->labels.end(), 0) > 0;
  if (!both_classes) {
    return absl::InvalidArgumentError(
        "the test set needs both labels, 0 and 1, for its AUC to be defined");
  }
  return std::make_unique<SparseTask>(
      model, train, std::make_shared<const CsrBatch>(std::move(*test_batch)));
}

}  // namespace ps::worker
