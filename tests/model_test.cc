#include "worker/model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/dataset.h"
#include "common/tensor_spec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::worker {
namespace {

using common::RowMatrix;
using common::TensorSpec;
using ::testing::HasSubstr;

constexpr int kHidden = 128;  // the MLP's hidden width, from model.h

std::unique_ptr<Model> MakeModel(const std::string& name, int input_dim,
                                 int num_classes) {
  absl::StatusOr<std::unique_ptr<Model>> model =
      CreateModel(name, input_dim, num_classes);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

// Uniform in [lo, hi) from a fixed-seed engine, so every run sees the same
// data.
class TestRandom {
 public:
  explicit TestRandom(uint64_t seed) : engine_(seed) {}
  float Uniform(float lo, float hi) {
    const double u = static_cast<double>(engine_() >> 11) * 0x1p-53;
    return static_cast<float>(lo + (hi - lo) * u);
  }
  int Below(int n) { return static_cast<int>(engine_() % n); }

 private:
  std::mt19937_64 engine_;
};

RowMatrix RandomMatrix(TestRandom& random, int rows, int cols, float limit) {
  RowMatrix m(rows, cols);
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) m(i, j) = random.Uniform(-limit, limit);
  }
  return m;
}

// Offset of the tensor `name` in θ.
uint64_t OffsetOf(const Model& model, const std::string& name) {
  uint64_t offset = 0;
  for (const TensorSpec& t : model.tensors()) {
    if (t.name == name) return offset;
    offset += t.num_elements();
  }
  ADD_FAILURE() << "no tensor " << name;
  return 0;
}

// Straightforward double-precision forward passes, independent of the
// Eigen code under test.
std::vector<double> ReferenceLogits(const std::string& name,
                                    const std::vector<float>& p, const float* x,
                                    int input_dim, int num_classes) {
  std::vector<double> logits(num_classes);
  if (name == "softmax") {
    const float* w = p.data();
    const float* b = w + input_dim * num_classes;
    for (int c = 0; c < num_classes; ++c) {
      logits[c] = b[c];
      for (int j = 0; j < input_dim; ++j) {
        logits[c] += double{x[j]} * w[j * num_classes + c];
      }
    }
    return logits;
  }
  const float* w1 = p.data();
  const float* b1 = w1 + input_dim * kHidden;
  const float* w2 = b1 + kHidden;
  const float* b2 = w2 + kHidden * num_classes;
  std::vector<double> hidden(kHidden);
  for (int k = 0; k < kHidden; ++k) {
    double z = b1[k];
    for (int j = 0; j < input_dim; ++j) z += double{x[j]} * w1[j * kHidden + k];
    hidden[k] = std::max(z, 0.0);
  }
  for (int c = 0; c < num_classes; ++c) {
    logits[c] = b2[c];
    for (int k = 0; k < kHidden; ++k) {
      logits[c] += hidden[k] * w2[k * num_classes + c];
    }
  }
  return logits;
}

struct ReferenceEvaluation {
  double mean_loss = 0;
  double accuracy = 0;
};

ReferenceEvaluation Reference(const std::string& name,
                              const std::vector<float>& params,
                              const RowMatrix& x,
                              const std::vector<int32_t>& labels,
                              int num_classes) {
  ReferenceEvaluation result;
  for (int i = 0; i < x.rows(); ++i) {
    const std::vector<double> z = ReferenceLogits(
        name, params, x.row(i).data(), static_cast<int>(x.cols()), num_classes);
    const double max = *std::max_element(z.begin(), z.end());
    double sum = 0;
    for (double v : z) sum += std::exp(v - max);
    result.mean_loss += std::log(sum) + max - z[labels[i]];
    const int predicted = static_cast<int>(
        std::max_element(z.begin(), z.end()) - z.begin());  // first maximum
    result.accuracy += predicted == labels[i] ? 1 : 0;
  }
  result.mean_loss /= static_cast<double>(x.rows());
  result.accuracy /= static_cast<double>(x.rows());
  return result;
}

float LossOnly(Model& model, const std::vector<float>& params,
               const RowMatrix& x, const std::vector<int32_t>& labels) {
  std::vector<float> grad(model.num_params());
  return model.LossAndGradient(params, x, labels, absl::MakeSpan(grad));
}

// Compares the analytic gradient with central differences on every
// coordinate. The loss is float, so eps is large (1e-2) to keep rounding
// noise (~1e-7 / 2e-2) well below the tolerance; curvature error is O(eps^2).
constexpr float kFiniteDifferenceEps = 1e-2f;
constexpr double kGradAbsTolerance = 1e-4;
constexpr double kGradRelTolerance = 1e-2;

void ExpectGradientMatchesFiniteDifferences(
    Model& model, const std::vector<float>& params, const RowMatrix& x,
    const std::vector<int32_t>& labels) {
  std::vector<float> grad(model.num_params());
  model.LossAndGradient(params, x, labels, absl::MakeSpan(grad));

  double max_error = 0;
  double norm_grad = 0;
  double norm_error = 0;
  std::vector<float> shifted = params;
  for (size_t i = 0; i < params.size(); ++i) {
    shifted[i] = params[i] + kFiniteDifferenceEps;
    const double plus = LossOnly(model, shifted, x, labels);
    shifted[i] = params[i] - kFiniteDifferenceEps;
    const double minus = LossOnly(model, shifted, x, labels);
    shifted[i] = params[i];
    // The actual step, as float rounding may change it slightly.
    const double step = double{params[i] + kFiniteDifferenceEps} -
                        double{params[i] - kFiniteDifferenceEps};
    const double numeric = (plus - minus) / step;
    const double error = std::abs(numeric - grad[i]);
    EXPECT_LE(error, kGradAbsTolerance + kGradRelTolerance * std::abs(numeric))
        << "coordinate " << i << ": analytic " << grad[i] << ", numeric "
        << numeric;
    max_error = std::max(max_error, error);
    norm_grad += double{grad[i]} * grad[i];
    norm_error += error * error;
  }
  // Overall the two must agree far more closely than coordinate-wise.
  EXPECT_LE(std::sqrt(norm_error), 1e-3 * std::sqrt(norm_grad));
  EXPECT_GT(norm_grad, 1e-4) << "a vanishing gradient would check nothing";
  ::testing::Test::RecordProperty("max_abs_error", std::to_string(max_error));
}

TEST(SoftmaxModel, GradientMatchesFiniteDifferences) {
  constexpr int kInput = 6, kClasses = 3, kBatch = 5;
  std::unique_ptr<Model> model = MakeModel("softmax", kInput, kClasses);
  ASSERT_NE(model, nullptr);
  TestRandom random(7);
  const RowMatrix x = RandomMatrix(random, kBatch, kInput, 1.0f);
  const std::vector<int32_t> labels = {0, 2, 1, 2, 0};
  std::vector<float> params(model->num_params());
  for (float& p : params) p = random.Uniform(-0.5f, 0.5f);
  ExpectGradientMatchesFiniteDifferences(*model, params, x, labels);
}

TEST(MlpModel, GradientMatchesFiniteDifferences) {
  constexpr int kInput = 6, kClasses = 3, kBatch = 5;
  std::unique_ptr<Model> model = MakeModel("mlp", kInput, kClasses);
  ASSERT_NE(model, nullptr);
  TestRandom random(11);
  // Small inputs and hidden biases of magnitude >= 0.5 keep every hidden
  // pre-activation far from the ReLU kink at 0, where differences lie.
  const RowMatrix x = RandomMatrix(random, kBatch, kInput, 0.3f);
  const std::vector<int32_t> labels = {1, 0, 2, 2, 1};
  std::vector<float> params = model->InitialParams(3);
  const uint64_t b1 = OffsetOf(*model, "mlp/fc1/bias");
  const uint64_t b2 = OffsetOf(*model, "mlp/fc2/bias");
  for (int k = 0; k < kHidden; ++k) {
    const float magnitude = random.Uniform(0.5f, 1.0f);
    params[b1 + k] = random.Below(2) == 0 ? magnitude : -magnitude;
  }
  for (int c = 0; c < kClasses; ++c) params[b2 + c] = random.Uniform(-1, 1);

  // Verify the margin rather than trust it: |pre-activation| must exceed
  // the largest shift one perturbation can cause, with room to spare.
  const Eigen::Map<const RowMatrix> w1(params.data(), kInput, kHidden);
  const Eigen::Map<const Eigen::RowVectorXf> bias1(params.data() + b1, kHidden);
  const RowMatrix pre = (x * w1).rowwise() + bias1;
  EXPECT_GT(pre.cwiseAbs().minCoeff(), 10 * kFiniteDifferenceEps);
  const auto active = (pre.array() > 0).count();
  EXPECT_GT(active, 0);
  EXPECT_LT(active, pre.size()) << "some units must be off to test the mask";

  ExpectGradientMatchesFiniteDifferences(*model, params, x, labels);
}

TEST(SoftmaxModel, LossOfZeroParamsIsLogNumClasses) {
  constexpr int kClasses = 7;
  std::unique_ptr<Model> model = MakeModel("softmax", 5, kClasses);
  ASSERT_NE(model, nullptr);
  TestRandom random(1);
  const RowMatrix x = RandomMatrix(random, 4, 5, 1.0f);
  const std::vector<int32_t> labels = {0, 3, 3, 6};
  const std::vector<float> zeros(model->num_params(), 0.0f);
  std::vector<float> grad(model->num_params());
  const float loss =
      model->LossAndGradient(zeros, x, labels, absl::MakeSpan(grad));
  EXPECT_NEAR(loss, std::log(7.0), 1e-6);
  // Uniform predictions: the bias gradient is 1/C minus each class's share.
  const uint64_t bias = OffsetOf(*model, "softmax/bias");
  EXPECT_NEAR(grad[bias + 0], 1.0 / 7 - 0.25, 1e-6);
  EXPECT_NEAR(grad[bias + 1], 1.0 / 7, 1e-6);
  EXPECT_NEAR(grad[bias + 3], 1.0 / 7 - 0.5, 1e-6);
}

TEST(SoftmaxModel, HugeLogitsGiveFiniteLossAndGradient) {
  std::unique_ptr<Model> model = MakeModel("softmax", 2, 3);
  ASSERT_NE(model, nullptr);
  // Logits around +-1e4 overflow exp() unless the row maximum is removed.
  std::vector<float> params = {1e4f, -1e4f, 0, 0, 1e4f, -1e4f, 0, 0, 0};
  RowMatrix x(2, 2);
  x << 1, 0, 0, 1;
  const std::vector<int32_t> labels = {1, 1};
  std::vector<float> grad(model->num_params());
  const float loss =
      model->LossAndGradient(params, x, labels, absl::MakeSpan(grad));
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_NEAR(loss, 1e4f, 1.0f);  // example 0 is wrong by a margin of 2e4
  for (float g : grad) EXPECT_TRUE(std::isfinite(g));
}

TEST(CreateModel, UnknownNameIsInvalidArgument) {
  absl::StatusOr<std::unique_ptr<Model>> model = CreateModel("x", 4, 2);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model.status().message(),
            "unknown model 'x'; choose softmax or mlp");
}

TEST(CreateModel, NonPositiveSizesAreInvalidArgument) {
  for (const char* name : {"softmax", "mlp"}) {
    EXPECT_EQ(CreateModel(name, 0, 10).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(CreateModel(name, 784, 0).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(CreateModel(name, -1, 10).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(SoftmaxModel, TensorsAreWeightsThenExemptBias) {
  std::unique_ptr<Model> model = MakeModel("softmax", 784, 10);
  ASSERT_NE(model, nullptr);
  const std::vector<TensorSpec>& t = model->tensors();
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].name, "softmax/weights");
  EXPECT_EQ(t[0].shape, (std::vector<int64_t>{784, 10}));
  EXPECT_FALSE(t[0].exempt_from_regularization);
  EXPECT_EQ(t[1].name, "softmax/bias");
  EXPECT_EQ(t[1].shape, (std::vector<int64_t>{10}));
  EXPECT_TRUE(t[1].exempt_from_regularization);
  EXPECT_EQ(model->num_params(), 784u * 10 + 10);
  EXPECT_TRUE(common::ValidateTensorSpecs(t).ok());
}

TEST(MlpModel, TensorsAreTwoLayersWithExemptBiases) {
  std::unique_ptr<Model> model = MakeModel("mlp", 784, 10);
  ASSERT_NE(model, nullptr);
  const std::vector<TensorSpec>& t = model->tensors();
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t[0].name, "mlp/fc1/weights");
  EXPECT_EQ(t[0].shape, (std::vector<int64_t>{784, 128}));
  EXPECT_FALSE(t[0].exempt_from_regularization);
  EXPECT_EQ(t[1].name, "mlp/fc1/bias");
  EXPECT_EQ(t[1].shape, (std::vector<int64_t>{128}));
  EXPECT_TRUE(t[1].exempt_from_regularization);
  EXPECT_EQ(t[2].name, "mlp/fc2/weights");
  EXPECT_EQ(t[2].shape, (std::vector<int64_t>{128, 10}));
  EXPECT_FALSE(t[2].exempt_from_regularization);
  EXPECT_EQ(t[3].name, "mlp/fc2/bias");
  EXPECT_EQ(t[3].shape, (std::vector<int64_t>{10}));
  EXPECT_TRUE(t[3].exempt_from_regularization);
  EXPECT_EQ(model->num_params(), 784u * 128 + 128 + 128 * 10 + 10);
  EXPECT_TRUE(common::ValidateTensorSpecs(t).ok());
}

TEST(MlpModel, InitialWeightsAreGlorotUniformAndBiasesZero) {
  std::unique_ptr<Model> model = MakeModel("mlp", 784, 10);
  ASSERT_NE(model, nullptr);
  const std::vector<float> p = model->InitialParams(5);
  const double limit1 = std::sqrt(6.0 / (784 + 128));
  const double limit2 = std::sqrt(6.0 / (128 + 10));
  uint64_t offset = 0;
  for (const TensorSpec& t : model->tensors()) {
    const auto begin = p.begin() + offset;
    const auto end = begin + t.num_elements();
    offset += t.num_elements();
    if (t.exempt_from_regularization) {
      EXPECT_TRUE(std::all_of(begin, end, [](float v) { return v == 0; }))
          << t.name;
      continue;
    }
    const double limit = t.name == "mlp/fc1/weights" ? limit1 : limit2;
    const float lo = *std::min_element(begin, end);
    const float hi = *std::max_element(begin, end);
    EXPECT_GE(lo, -limit) << t.name;
    EXPECT_LE(hi, limit) << t.name;
    // Spread over the whole range, not stuck near zero.
    EXPECT_LT(lo, -0.9 * limit) << t.name;
    EXPECT_GT(hi, 0.9 * limit) << t.name;
  }
}

// Properties every model must have, run over each of them.
class EveryModel : public ::testing::TestWithParam<const char*> {
 protected:
  static constexpr int kInput = 6;
  static constexpr int kClasses = 4;

  void SetUp() override {
    model_ = MakeModel(GetParam(), kInput, kClasses);
    ASSERT_NE(model_, nullptr);
  }

  std::unique_ptr<Model> model_;
};

TEST_P(EveryModel, InitialParamsAreIdenticalForTheSameSeed) {
  const std::vector<float> a = model_->InitialParams(42);
  const std::vector<float> b =
      MakeModel(GetParam(), kInput, kClasses)->InitialParams(42);
  ASSERT_EQ(a.size(), model_->num_params());
  ASSERT_EQ(b.size(), a.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

TEST_P(EveryModel, InitialParamsDifferForDifferentSeeds) {
  const std::vector<float> a = model_->InitialParams(1);
  const std::vector<float> b = model_->InitialParams(2);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_NE(a, b);
  // Weights, at least, must be random: identical ones never break symmetry.
  const std::vector<float>::const_iterator weights_end =
      a.begin() + model_->tensors()[0].num_elements();
  EXPECT_GT(
      std::count_if(a.begin(), weights_end, [](float v) { return v != 0; }), 0);
}

TEST_P(EveryModel, LossAndGradientAreBitwiseDeterministic) {
  TestRandom random(99);
  const RowMatrix x = RandomMatrix(random, 33, kInput, 1.0f);
  std::vector<int32_t> labels(33);
  for (int32_t& y : labels) y = random.Below(kClasses);
  const std::vector<float> params = model_->InitialParams(8);

  std::vector<float> first(model_->num_params());
  const float loss1 =
      model_->LossAndGradient(params, x, labels, absl::MakeSpan(first));
  // Disturb the scratch buffers with another batch size and an evaluation.
  const RowMatrix other = RandomMatrix(random, 1200, kInput, 1.0f);
  std::vector<float> scratch(model_->num_params());
  model_->LossAndGradient(params, other,
                          std::vector<int32_t>(1200, kClasses - 1),
                          absl::MakeSpan(scratch));
  common::Dataset data;
  data.features = other;
  data.labels.assign(1200, 0);
  data.num_classes = kClasses;
  model_->Evaluate(params, data);

  std::vector<float> second(model_->num_params());
  const float loss2 =
      model_->LossAndGradient(params, x, labels, absl::MakeSpan(second));
  std::unique_ptr<Model> fresh = MakeModel(GetParam(), kInput, kClasses);
  std::vector<float> third(model_->num_params());
  const float loss3 =
      fresh->LossAndGradient(params, x, labels, absl::MakeSpan(third));

  EXPECT_EQ(std::memcmp(&loss1, &loss2, sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(&loss1, &loss3, sizeof(float)), 0);
  EXPECT_EQ(
      std::memcmp(first.data(), second.data(), first.size() * sizeof(float)),
      0);
  EXPECT_EQ(
      std::memcmp(first.data(), third.data(), first.size() * sizeof(float)), 0);
}

TEST_P(EveryModel, LossAndGradientOverwritesEveryGradientEntry) {
  TestRandom random(5);
  const RowMatrix x = RandomMatrix(random, 3, kInput, 1.0f);
  const std::vector<int32_t> labels = {0, 1, 3};
  std::vector<float> grad(model_->num_params(),
                          std::numeric_limits<float>::quiet_NaN());
  model_->LossAndGradient(model_->InitialParams(1), x, labels,
                          absl::MakeSpan(grad));
  for (size_t i = 0; i < grad.size(); ++i) {
    ASSERT_TRUE(std::isfinite(grad[i])) << "entry " << i;
  }
}

TEST_P(EveryModel, LossAndEvaluateMatchAReferenceAcrossChunks) {
  // 2345 rows: more than two evaluation chunks and a partial last one.
  TestRandom random(17);
  const RowMatrix x = RandomMatrix(random, 2345, kInput, 1.0f);
  std::vector<int32_t> labels(2345);
  for (int32_t& y : labels) y = random.Below(kClasses);
  std::vector<float> params = model_->InitialParams(4);
  for (float& p : params) p += random.Uniform(-0.3f, 0.3f);

  const ReferenceEvaluation expected =
      Reference(GetParam(), params, x, labels, kClasses);
  EXPECT_NEAR(LossOnly(*model_, params, x, labels), expected.mean_loss,
              1e-5 * expected.mean_loss);

  common::Dataset data;
  data.features = x;
  data.labels = labels;
  data.num_classes = kClasses;
  const Evaluation got = model_->Evaluate(params, data);
  EXPECT_NEAR(got.mean_loss, expected.mean_loss, 1e-5 * expected.mean_loss);
  EXPECT_DOUBLE_EQ(got.accuracy, expected.accuracy);
  EXPECT_GT(got.accuracy, 0.0);  // a degenerate argmax would be suspicious
}

TEST_P(EveryModel, EvaluateBreaksTiesTowardTheLowestClass) {
  // With all-zero parameters every logit ties, so class 0 is predicted.
  common::Dataset data;
  TestRandom random(2);
  data.features = RandomMatrix(random, 10, kInput, 1.0f);
  data.labels = {0, 1, 2, 3, 0, 0, 1, 2, 3, 3};
  data.num_classes = kClasses;
  const Evaluation got =
      model_->Evaluate(std::vector<float>(model_->num_params(), 0.0f), data);
  EXPECT_DOUBLE_EQ(got.accuracy, 0.3);
  EXPECT_NEAR(got.mean_loss, std::log(4.0), 1e-6);
}

TEST_P(EveryModel, GradientDescentLearnsSeparableData) {
  // Class c sits around 2 * e_c; uniform noise of +-0.6 keeps classes apart.
  constexpr int kExamples = 300;
  TestRandom random(2024);
  common::Dataset data;
  data.num_classes = kClasses;
  data.features = RandomMatrix(random, kExamples, kInput, 0.6f);
  for (int i = 0; i < kExamples; ++i) {
    const int32_t label = i % kClasses;
    data.labels.push_back(label);
    data.features(i, label) += 2.0f;
  }

  std::vector<float> params = model_->InitialParams(6);
  const double initial_loss = model_->Evaluate(params, data).mean_loss;
  std::vector<float> grad(model_->num_params());
  for (int step = 0; step < 300; ++step) {
    model_->LossAndGradient(params, data.features, data.labels,
                            absl::MakeSpan(grad));
    for (size_t i = 0; i < params.size(); ++i) params[i] -= 0.5f * grad[i];
  }
  const Evaluation trained = model_->Evaluate(params, data);
  EXPECT_GT(trained.accuracy, 0.95);
  EXPECT_LT(trained.mean_loss, 0.5 * initial_loss);
}

TEST_P(EveryModel, WrongGradientSizeAborts) {
  const RowMatrix x = RowMatrix::Zero(2, kInput);
  const std::vector<int32_t> labels = {0, 1};
  const std::vector<float> params(model_->num_params());
  std::vector<float> grad(model_->num_params() - 1);
  EXPECT_DEATH(model_->LossAndGradient(params, x, labels, absl::MakeSpan(grad)),
               "grad must hold num_params");
}

TEST_P(EveryModel, LabelOutOfRangeAborts) {
  const RowMatrix x = RowMatrix::Zero(2, kInput);
  const std::vector<int32_t> labels = {0, kClasses};
  const std::vector<float> params(model_->num_params());
  std::vector<float> grad(model_->num_params());
  EXPECT_DEATH(model_->LossAndGradient(params, x, labels, absl::MakeSpan(grad)),
               "labels must be in");
}

INSTANTIATE_TEST_SUITE_P(Models, EveryModel,
                         ::testing::Values("softmax", "mlp"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param);
                         });

}  // namespace
}  // namespace ps::worker
