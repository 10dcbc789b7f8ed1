#include "worker/model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "worker/matrix_product.h"

namespace ps::worker {
namespace {

using common::RowMatrix;
using common::TensorSpec;
using ConstMatrixMap = Eigen::Map<const RowMatrix>;
using MatrixMap = Eigen::Map<RowMatrix>;
using ConstRowVectorMap = Eigen::Map<const Eigen::RowVectorXf>;
using RowVectorMap = Eigen::Map<Eigen::RowVectorXf>;

constexpr int kMlpHiddenUnits = 128;

// Evaluate() works through the data this many rows at a time, which bounds
// the scratch memory independently of the dataset size.
constexpr Eigen::Index kEvalChunkRows = 1000;

// Mis-sized spans are caller bugs that would otherwise read or write out of
// bounds; the signatures return no Status, so stop loudly in every build.
void Require(bool condition, const char* message) {
  if (condition) return;
  std::fprintf(stderr, "ps::worker::Model: %s\n", message);
  std::abort();
}

// Uniform floats in [-limit, limit) computed the same on every platform:
// mt19937_64's output sequence is fixed by the standard, whereas the
// standard distributions are implementation-defined.
class PortableUniform {
 public:
  explicit PortableUniform(uint64_t seed) : engine_(seed) {}

  float Next(float limit) {
    // The top 24 bits, centred: an integer in [-2^23, 2^23) that a float
    // holds exactly, scaled to [-1, 1) by an exact power of two.
    const int32_t centred =
        static_cast<int32_t>(engine_() >> 40) - (int32_t{1} << 23);
    return static_cast<float>(centred) * 0x1p-23f * limit;
  }

  void Fill(float limit, float* out, uint64_t n) {
    for (uint64_t i = 0; i < n; ++i) out[i] = Next(limit);
  }

 private:
  std::mt19937_64 engine_;
};

float GlorotLimit(int64_t fan_in, int64_t fan_out) {
  // std::sqrt is correctly rounded, so this too is the same everywhere.
  return static_cast<float>(
      std::sqrt(6.0 / static_cast<double>(fan_in + fan_out)));
}

// The shared part of both classifiers: softmax cross-entropy on top of the
// logits a subclass computes, batch checks, and chunked evaluation.
class Classifier : public Model {
 public:
  Classifier(int input_dim, int num_classes, std::vector<TensorSpec> tensors)
      : input_dim_(input_dim),
        num_classes_(num_classes),
        tensors_(std::move(tensors)) {}

  const std::vector<TensorSpec>& tensors() const override { return tensors_; }

  float LossAndGradient(absl::Span<const float> params,
                        const Eigen::Ref<const RowMatrix>& x,
                        absl::Span<const int32_t> labels,
                        absl::Span<float> grad) override {
    const uint64_t n = num_params();
    Require(params.size() == n, "params must hold num_params() floats");
    Require(grad.size() == n, "grad must hold num_params() floats");
    Require(x.cols() == input_dim_, "x must have input_dim columns");
    Require(x.rows() == static_cast<Eigen::Index>(labels.size()),
            "x must have one row per label");
    Require(x.rows() > 0, "the batch must not be empty");
    CheckLabels(labels);

    const Eigen::Index rows = x.rows();
    Reserve(rows);
    auto logits = logits_.topRows(rows);
    Forward(params, x, logits);
    const double loss_sum = SoftmaxCrossEntropy(labels, logits, true);
    Backward(params, x, logits, grad);
    return static_cast<float>(loss_sum / static_cast<double>(rows));
  }

  Evaluation Evaluate(absl::Span<const float> params,
                      const common::Dataset& data) override {
    Require(params.size() == num_params(),
            "params must hold num_params() floats");
    Require(data.features.cols() == input_dim_,
            "the dataset must have input_dim columns");
    Require(data.features.rows() == data.size(),
            "the dataset must have one row per label");
    Evaluation result;
    const Eigen::Index total = data.features.rows();
    if (total == 0) return result;
    CheckLabels(data.labels);

    double loss_sum = 0;
    int64_t correct = 0;
    for (Eigen::Index start = 0; start < total; start += kEvalChunkRows) {
      const Eigen::Index rows = std::min(kEvalChunkRows, total - start);
      const absl::Span<const int32_t> labels(data.labels.data() + start,
                                             static_cast<size_t>(rows));
      Reserve(rows);
      auto logits = logits_.topRows(rows);
      Forward(params, data.features.middleRows(start, rows), logits);
      // Argmax first: SoftmaxCrossEntropy overwrites the logits.
      for (Eigen::Index i = 0; i < rows; ++i) {
        Eigen::Index best = 0;
        for (Eigen::Index c = 1; c < num_classes_; ++c) {
          if (logits(i, c) > logits(i, best)) best = c;  // ties: lowest index
        }
        if (best == labels[i]) ++correct;
      }
      loss_sum += SoftmaxCrossEntropy(labels, logits, false);
    }
    result.mean_loss = loss_sum / static_cast<double>(total);
    result.accuracy = static_cast<double>(correct) / static_cast<double>(total);
    return result;
  }

 protected:
  // Writes the logits of `x` (rows x num_classes) into `logits`, keeping in
  // scratch whatever Backward needs.
  virtual void Forward(absl::Span<const float> params,
                       const Eigen::Ref<const RowMatrix>& x,
                       Eigen::Ref<RowMatrix> logits) = 0;

  // Writes dLoss/dθ to `grad` given dLoss/dlogits from the last Forward.
  virtual void Backward(absl::Span<const float> params,
                        const Eigen::Ref<const RowMatrix>& x,
                        const Eigen::Ref<const RowMatrix>& logits_grad,
                        absl::Span<float> grad) = 0;

  // Grows the scratch buffers to hold `rows` rows; they never shrink, so
  // alternating batch and evaluation sizes does not reallocate.
  virtual void Reserve(Eigen::Index rows) {
    if (logits_.rows() >= rows) return;
    logits_.resize(rows, num_classes_);
    row_max_.resize(rows);
    row_sum_.resize(rows);
  }

  const int input_dim_;
  const int num_classes_;

 private:
  void CheckLabels(absl::Span<const int32_t> labels) const {
    for (int32_t label : labels) {
      Require(label >= 0 && label < num_classes_,
              "labels must be in [0, num_classes)");
    }
  }

  // Returns the summed (not mean) cross-entropy of the rows. With
  // `to_gradient`, replaces the logits by dMeanLoss/dlogits, that is
  // (softmax - onehot) / rows. Subtracting each row's maximum keeps exp()
  // from overflowing.
  double SoftmaxCrossEntropy(absl::Span<const int32_t> labels,
                             Eigen::Ref<RowMatrix> logits, bool to_gradient) {
    const Eigen::Index rows = logits.rows();
    auto row_max = row_max_.head(rows);
    auto row_sum = row_sum_.head(rows);
    row_max = logits.rowwise().maxCoeff();
    logits.colwise() -= row_max;
    double loss_sum = 0;
    for (Eigen::Index i = 0; i < rows; ++i) {
      loss_sum -= logits(i, labels[i]);  // log-sum-exp added below
    }
    logits = logits.array().exp().matrix();
    row_sum = logits.rowwise().sum();
    for (Eigen::Index i = 0; i < rows; ++i) loss_sum += std::log(row_sum(i));
    if (to_gradient) {
      logits.array().colwise() /= row_sum.array();
      for (Eigen::Index i = 0; i < rows; ++i) logits(i, labels[i]) -= 1.0f;
      logits *= 1.0f / static_cast<float>(rows);
    }
    return loss_sum;
  }

  std::vector<TensorSpec> tensors_;
  RowMatrix logits_;
  Eigen::VectorXf row_max_;
  Eigen::VectorXf row_sum_;
};

// Multinomial logistic regression: logits = x W + b.
class SoftmaxModel final : public Classifier {
 public:
  SoftmaxModel(int input_dim, int num_classes)
      : Classifier(input_dim, num_classes,
                   {{"softmax/weights", {input_dim, num_classes}, false},
                    {"softmax/bias", {num_classes}, true}}) {}

  std::unique_ptr<Model> Clone() const override {
    return std::make_unique<SoftmaxModel>(input_dim_, num_classes_);
  }

  std::vector<float> InitialParams(uint64_t seed) const override {
    // The loss is convex, so small weights only break exact ties.
    std::vector<float> params(num_params(), 0.0f);
    PortableUniform uniform(seed);
    const float limit = 1.0f / std::sqrt(static_cast<float>(input_dim_));
    uniform.Fill(limit, params.data(), num_params());
    return params;
  }

 protected:
  void Forward(absl::Span<const float> params,
               const Eigen::Ref<const RowMatrix>& x,
               Eigen::Ref<RowMatrix> logits) override {
    Product(x, Weights(params.data()), logits);
    logits.rowwise() += Bias(params.data());
  }

  void Backward(absl::Span<const float> /*params*/,
                const Eigen::Ref<const RowMatrix>& x,
                const Eigen::Ref<const RowMatrix>& logits_grad,
                absl::Span<float> grad) override {
    TransposedProduct(x, logits_grad,
                      MatrixMap(grad.data(), input_dim_, num_classes_));
    RowVectorMap(grad.data() + WeightCount(), num_classes_) =
        logits_grad.colwise().sum();
  }

 private:
  int64_t WeightCount() const { return int64_t{input_dim_} * num_classes_; }
  ConstMatrixMap Weights(const float* params) const {
    return ConstMatrixMap(params, input_dim_, num_classes_);
  }
  ConstRowVectorMap Bias(const float* params) const {
    return ConstRowVectorMap(params + WeightCount(), num_classes_);
  }
};

// One hidden layer: logits = relu(x W1 + b1) W2 + b2.
class MlpModel final : public Classifier {
 public:
  MlpModel(int input_dim, int num_classes)
      : Classifier(input_dim, num_classes,
                   {{"mlp/fc1/weights", {input_dim, kMlpHiddenUnits}, false},
                    {"mlp/fc1/bias", {kMlpHiddenUnits}, true},
                    {"mlp/fc2/weights", {kMlpHiddenUnits, num_classes}, false},
                    {"mlp/fc2/bias", {num_classes}, true}}) {}

  std::unique_ptr<Model> Clone() const override {
    return std::make_unique<MlpModel>(input_dim_, num_classes_);
  }

  std::vector<float> InitialParams(uint64_t seed) const override {
    // Glorot-uniform weights keep activations and gradients at a similar
    // scale in both layers; zero biases.
    std::vector<float> params(num_params(), 0.0f);
    PortableUniform uniform(seed);
    uniform.Fill(GlorotLimit(input_dim_, kMlpHiddenUnits),
                 params.data() + Fc1WeightsOffset(), Fc1WeightCount());
    uniform.Fill(GlorotLimit(kMlpHiddenUnits, num_classes_),
                 params.data() + Fc2WeightsOffset(), Fc2WeightCount());
    return params;
  }

 protected:
  void Reserve(Eigen::Index rows) override {
    Classifier::Reserve(rows);
    if (hidden_.rows() >= rows) return;
    hidden_.resize(rows, kMlpHiddenUnits);
    hidden_grad_.resize(rows, kMlpHiddenUnits);
  }

  void Forward(absl::Span<const float> params,
               const Eigen::Ref<const RowMatrix>& x,
               Eigen::Ref<RowMatrix> logits) override {
    const float* p = params.data();
    auto hidden = hidden_.topRows(x.rows());
    Product(x,
            ConstMatrixMap(p + Fc1WeightsOffset(), input_dim_, kMlpHiddenUnits),
            hidden);
    hidden.rowwise() += ConstRowVectorMap(p + Fc1BiasOffset(), kMlpHiddenUnits);
    hidden = hidden.cwiseMax(0.0f);
    Product(
        hidden,
        ConstMatrixMap(p + Fc2WeightsOffset(), kMlpHiddenUnits, num_classes_),
        logits);
    logits.rowwise() += ConstRowVectorMap(p + Fc2BiasOffset(), num_classes_);
  }

  void Backward(absl::Span<const float> params,
                const Eigen::Ref<const RowMatrix>& x,
                const Eigen::Ref<const RowMatrix>& logits_grad,
                absl::Span<float> grad) override {
    const Eigen::Index rows = x.rows();
    float* g = grad.data();
    auto hidden = hidden_.topRows(rows);
    auto hidden_grad = hidden_grad_.topRows(rows);

    TransposedProduct(
        hidden, logits_grad,
        MatrixMap(g + Fc2WeightsOffset(), kMlpHiddenUnits, num_classes_));
    RowVectorMap(g + Fc2BiasOffset(), num_classes_) =
        logits_grad.colwise().sum();

    ProductTransposed(logits_grad,
                      ConstMatrixMap(params.data() + Fc2WeightsOffset(),
                                     kMlpHiddenUnits, num_classes_),
                      hidden_grad);
    // ReLU passes gradient only where its output is positive.
    hidden_grad =
        (hidden.array() > 0.0f).select(hidden_grad.array(), 0.0f).matrix();

    TransposedProduct(
        x, hidden_grad,
        MatrixMap(g + Fc1WeightsOffset(), input_dim_, kMlpHiddenUnits));
    RowVectorMap(g + Fc1BiasOffset(), kMlpHiddenUnits) =
        hidden_grad.colwise().sum();
  }

 private:
  int64_t Fc1WeightCount() const {
    return int64_t{input_dim_} * kMlpHiddenUnits;
  }
  int64_t Fc2WeightCount() const {
    return int64_t{kMlpHiddenUnits} * num_classes_;
  }
  int64_t Fc1WeightsOffset() const { return 0; }
  int64_t Fc1BiasOffset() const { return Fc1WeightCount(); }
  int64_t Fc2WeightsOffset() const { return Fc1BiasOffset() + kMlpHiddenUnits; }
  int64_t Fc2BiasOffset() const {
    return Fc2WeightsOffset() + Fc2WeightCount();
  }

  RowMatrix hidden_;       // relu(x W1 + b1) of the last Forward
  RowMatrix hidden_grad_;  // dLoss/d(x W1 + b1)
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> CreateModel(std::string_view name,
                                                   int input_dim,
                                                   int num_classes) {
  if (input_dim <= 0 || num_classes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input_dim and num_classes must be positive, got input_dim ", input_dim,
        " and num_classes ", num_classes));
  }
  std::unique_ptr<Model> model;
  if (name == "softmax") {
    model = std::make_unique<SoftmaxModel>(input_dim, num_classes);
  } else if (name == "mlp") {
    model = std::make_unique<MlpModel>(input_dim, num_classes);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown model '", absl::string_view(name.data(), name.size()),
        "'; choose softmax or mlp"));
  }
  absl::Status status = common::ValidateTensorSpecs(model->tensors());
  if (!status.ok()) return status;
  return model;
}

absl::StatusOr<std::string> ModelNamed(
    const std::vector<common::TensorSpec>& tensors, int input_dim,
    int num_classes) {
  for (const char* name : {"softmax", "mlp"}) {
    absl::StatusOr<std::unique_ptr<Model>> model =
        CreateModel(name, input_dim, num_classes);
    if (!model.ok()) return model.status();
    if (common::DescribeDifference((*model)->tensors(), tensors).empty()) {
      return std::string(name);
    }
  }
  std::vector<std::string> names;
  for (const common::TensorSpec& tensor : tensors) {
    names.push_back(tensor.ToString());
  }
  return absl::NotFoundError(
      absl::StrCat("its tensors (", absl::StrJoin(names, ", "),
                   ") are those of neither softmax nor mlp"));
}

}  // namespace ps::worker
