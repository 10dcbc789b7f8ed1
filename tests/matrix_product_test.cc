#include "worker/matrix_product.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/dataset.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/model.h"

namespace ps::worker {
namespace {

using common::RowMatrix;
using ::testing::HasSubstr;

// Every test leaves the process on the default choice.
class MatrixKernels : public ::testing::Test {
 protected:
  void TearDown() override { ASSERT_TRUE(UseMatrixKernels("auto").ok()); }
};

RowMatrix RandomMatrix(Eigen::Index rows, Eigen::Index cols,
                       std::mt19937& engine) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  RowMatrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = uniform(engine);
  return m;
}

// a b in double, the products' reference.
Eigen::MatrixXd Reference(const RowMatrix& a, const RowMatrix& b) {
  return a.cast<double>() * b.cast<double>();
}

// Checks `got` against `want` to float accuracy over `depth` terms.
void ExpectNear(const Eigen::Ref<const RowMatrix>& got,
                const Eigen::MatrixXd& want, Eigen::Index depth,
                absl::string_view what) {
  ASSERT_EQ(got.rows(), want.rows()) << what;
  ASSERT_EQ(got.cols(), want.cols()) << what;
  const double tolerance = 1e-6 * static_cast<double>(depth + 1);
  for (Eigen::Index i = 0; i < got.rows(); ++i) {
    for (Eigen::Index j = 0; j < got.cols(); ++j) {
      ASSERT_NEAR(got(i, j), want(i, j), tolerance)
          << what << " at (" << i << ", " << j << ")";
    }
  }
}

// The three products on blocks of larger matrices, so that every operand
// has a stride other than its width, of a model's shapes and odd ones.
void CheckProducts(absl::string_view kernels) {
  std::mt19937 engine(7);
  struct Shape {
    Eigen::Index m, k, n;
  };
  for (const Shape shape : {Shape{64, 784, 10}, Shape{67, 785, 129},
                            Shape{1, 1, 1}, Shape{5, 3, 0}, Shape{3, 17, 2}}) {
    const std::string what =
        absl::StrCat(kernels, " ", shape.m, "x", shape.k, "x", shape.n);
    const RowMatrix a_big = RandomMatrix(shape.m + 2, shape.k + 3, engine);
    const RowMatrix b_big = RandomMatrix(shape.k + 1, shape.n + 5, engine);
    const auto a = a_big.block(1, 2, shape.m, shape.k);
    const auto b = b_big.block(1, 3, shape.k, shape.n);
    const RowMatrix a_copy = a, b_copy = b;

    RowMatrix out_big = RowMatrix::Constant(shape.m + 2, shape.n + 4, 42.0f);
    Product(a, b, out_big.block(1, 2, shape.m, shape.n));
    ExpectNear(out_big.block(1, 2, shape.m, shape.n), Reference(a_copy, b_copy),
               shape.k, what + " a b");

    // aᵀ b with a of k x m: the gradient's shape.
    RowMatrix at_big = RandomMatrix(shape.k + 2, shape.m + 3, engine);
    at_big.block(1, 1, shape.k, shape.m) = a_copy.transpose();
    RowMatrix tp_big = RowMatrix::Constant(shape.m + 3, shape.n + 1, 42.0f);
    TransposedProduct(at_big.block(1, 1, shape.k, shape.m), b,
                      tp_big.block(2, 0, shape.m, shape.n));
    ExpectNear(tp_big.block(2, 0, shape.m, shape.n), Reference(a_copy, b_copy),
               shape.k, what + " at b");

    // a bᵀ with b of n x k.
    RowMatrix bt_big = RandomMatrix(shape.n + 1, shape.k + 2, engine);
    bt_big.block(1, 2, shape.n, shape.k) = b_copy.transpose();
    RowMatrix pt_big = RowMatrix::Constant(shape.m, shape.n + 2, 42.0f);
    ProductTransposed(a, bt_big.block(1, 2, shape.n, shape.k),
                      pt_big.leftCols(shape.n));
    ExpectNear(pt_big.leftCols(shape.n), Reference(a_copy, b_copy), shape.k,
               what + " a bt");

    // Nothing outside the output blocks is written.
    for (const RowMatrix* big : {&out_big, &tp_big, &pt_big}) {
      int64_t untouched = 0;
      for (Eigen::Index i = 0; i < big->size(); ++i) {
        if (big->data()[i] == 42.0f) ++untouched;
      }
      EXPECT_EQ(untouched, big->size() - shape.m * shape.n) << what;
    }
  }
}

TEST_F(MatrixKernels, EveryKernelsThisCpuRunsComputesTheProducts) {
  const std::vector<absl::string_view> runs = MatrixKernelsThisCpuRuns();
  ASSERT_FALSE(runs.empty());
  for (absl::string_view kernels : runs) {
    ASSERT_TRUE(UseMatrixKernels(kernels).ok()) << kernels;
    EXPECT_EQ(MatrixKernelsInUse(), kernels);
    CheckProducts(kernels);
  }
}

TEST_F(MatrixKernels, AutoIsTheBestThisCpuRunsAndTheBaselineRunsEverywhere) {
  const std::vector<absl::string_view> all = AllMatrixKernels();
  const std::vector<absl::string_view> runs = MatrixKernelsThisCpuRuns();
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all.back(), "baseline");
  EXPECT_EQ(runs.back(), "baseline");
  ASSERT_TRUE(UseMatrixKernels("baseline").ok());
  EXPECT_EQ(MatrixKernelsInUse(), "baseline");
  ASSERT_TRUE(UseMatrixKernels("auto").ok());
  EXPECT_EQ(MatrixKernelsInUse(), runs.front());
  // Best first: what this CPU runs keeps the order of the whole list.
  auto next = all.begin();
  for (absl::string_view kernels : runs) {
    next = std::find(next, all.end(), kernels);
    ASSERT_NE(next, all.end()) << kernels << " out of order or unknown";
  }
}

TEST_F(MatrixKernels, NamesAreCheckedAgainstTheListAndThisCpu) {
  const std::vector<absl::string_view> runs = MatrixKernelsThisCpuRuns();
  for (absl::string_view kernels : AllMatrixKernels()) {
    const absl::Status used = UseMatrixKernels(kernels);
    if (std::find(runs.begin(), runs.end(), kernels) != runs.end()) {
      EXPECT_TRUE(used.ok()) << used;
    } else {
      EXPECT_EQ(used.code(), absl::StatusCode::kFailedPrecondition) << used;
      EXPECT_THAT(used.message(), HasSubstr("this CPU cannot run"));
    }
  }
  ASSERT_TRUE(UseMatrixKernels("baseline").ok());
  const absl::Status unknown = UseMatrixKernels("avx9");
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.message(), HasSubstr("\"avx9\""));
  EXPECT_THAT(unknown.message(), HasSubstr("auto, "));
  // A refused name leaves the choice as it was.
  EXPECT_EQ(MatrixKernelsInUse(), "baseline");
}

// The models' loss and gradient on every kernels agree with the baseline's
// to float accuracy: the kernels change speed, not training.
TEST_F(MatrixKernels, ModelsLearnTheSameOnEveryKernels) {
  std::mt19937 engine(3);
  const RowMatrix x = (RandomMatrix(64, 784, engine).array() + 1.0f) / 2.0f;
  std::vector<int32_t> labels(64);
  for (size_t i = 0; i < labels.size(); ++i) {
    labels[i] = static_cast<int32_t>(i % 10);
  }
  for (const char* name : {"softmax", "mlp"}) {
    absl::StatusOr<std::unique_ptr<Model>> model = CreateModel(name, 784, 10);
    ASSERT_TRUE(model.ok()) << model.status();
    const std::vector<float> theta = (*model)->InitialParams(5);
    std::vector<float> want(theta.size());
    ASSERT_TRUE(UseMatrixKernels("baseline").ok());
    const float want_loss =
        (*model)->LossAndGradient(theta, x, labels, absl::MakeSpan(want));
    for (absl::string_view kernels : MatrixKernelsThisCpuRuns()) {
      ASSERT_TRUE(UseMatrixKernels(kernels).ok());
      std::vector<float> got(theta.size());
      const float got_loss =
          (*model)->LossAndGradient(theta, x, labels, absl::MakeSpan(got));
      EXPECT_NEAR(got_loss, want_loss, 1e-5f * want_loss) << name << kernels;
      float largest_difference = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        largest_difference =
            std::max(largest_difference, std::abs(got[i] - want[i]));
      }
      EXPECT_LT(largest_difference, 1e-5f) << name << " on " << kernels;
    }
  }
}

}  // namespace
}  // namespace ps::worker
