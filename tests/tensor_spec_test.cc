#include "common/tensor_spec.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::common {
namespace {

using ::testing::HasSubstr;

std::vector<TensorSpec> Softmax() {
  return {{"w", {784, 10}, false}, {"b", {10}, true}};
}

TEST(TensorSpec, NumKeysIsTheSumOfElementCounts) {
  EXPECT_EQ(NumKeys(Softmax()), 7850u);
}

TEST(TensorSpec, ValidationRejectsEmptyDuplicateAndNonPositive) {
  EXPECT_TRUE(ValidateTensorSpecs(Softmax()).ok());
  EXPECT_FALSE(ValidateTensorSpecs({}).ok());
  EXPECT_THAT(ValidateTensorSpecs({{"", {1}, false}}).message(),
              HasSubstr("empty name"));
  EXPECT_THAT(
      ValidateTensorSpecs({{"a", {1}, false}, {"a", {2}, false}}).message(),
      HasSubstr("declared twice"));
  EXPECT_THAT(ValidateTensorSpecs({{"a", {3, 0}, false}}).message(),
              HasSubstr("dimension 0"));
  EXPECT_THAT(ValidateTensorSpecs({{"a", {}, false}}).message(),
              HasSubstr("no dimensions"));
}

// 16777232 · 1099510579201 = 2^64 + 16: a product that wraps to 16 must not
// pass for a 16-key tensor.
TEST(TensorSpec, ValidationRejectsAShapeWhoseProductOverflows) {
  const absl::Status wrapped =
      ValidateTensorSpecs({{"w", {16777232, 1099510579201}, false}});
  EXPECT_EQ(wrapped.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrapped.message(), HasSubstr("more than 2^40"));
  EXPECT_THAT(wrapped.message(), HasSubstr("'w'"));
  // Three dimensions that each pass alone, whose product is 2^60.
  EXPECT_FALSE(ValidateTensorSpecs(
                   {{"w",
                     {int64_t{1} << 20, int64_t{1} << 20, int64_t{1} << 20},
                     false}})
                   .ok());
  // Tensors that each pass, whose sum passes 2^40.
  EXPECT_FALSE(
      ValidateTensorSpecs({{"a", {int64_t{1} << 40}, false}, {"b", {1}, false}})
          .ok());
  EXPECT_TRUE(
      ValidateTensorSpecs({{"a", {int64_t{1} << 20, int64_t{1} << 20}, false}})
          .ok());
}

TEST(TensorSpec, DescribeDifferenceNamesTheTensor) {
  EXPECT_EQ(DescribeDifference(Softmax(), Softmax()), "");
  std::vector<TensorSpec> other = Softmax();
  other[0].shape = {784, 11};
  EXPECT_THAT(DescribeDifference(Softmax(), other), HasSubstr("w[784,10]"));
  EXPECT_THAT(DescribeDifference(Softmax(), other), HasSubstr("w[784,11]"));
  other = Softmax();
  other.pop_back();
  EXPECT_THAT(DescribeDifference(Softmax(), other), HasSubstr("2 tensors"));
  other = Softmax();
  other[1].exempt_from_regularization = false;
  EXPECT_THAT(DescribeDifference(Softmax(), other), HasSubstr("tensor #1"));
}

TEST(TensorSpec, SegmentsAreClippedToTheRangeAndCarryTheExemption) {
  const auto segments = SegmentsInRange(Softmax(), {7000, 7845});
  ASSERT_EQ(segments.size(), 2u);
  EXPECT_EQ(segments[0].tensor_index, 0u);
  EXPECT_EQ(segments[0].keys, (KeyRange{7000, 7840}));
  EXPECT_TRUE(segments[0].regularize);
  EXPECT_EQ(segments[1].tensor_index, 1u);
  EXPECT_EQ(segments[1].keys, (KeyRange{7840, 7845}));
  EXPECT_FALSE(segments[1].regularize);
  EXPECT_TRUE(SegmentsInRange(Softmax(), {5, 5}).empty());
}

TEST(TensorSpec, ATensorsOptimizerAndScheduleMustParseAndAreCompared) {
  TensorSpec w{"w", {3}, false};
  w.optimizer = "adam(beta1=0.8)";
  w.lr_schedule = "linear_warmup:10+cosine:100";
  EXPECT_TRUE(ValidateTensorSpecs({w}).ok());
  EXPECT_EQ(w.ToString(),
            "w[3] (optimizer adam(beta1=0.8), lr_schedule "
            "linear_warmup:10+cosine:100)");

  TensorSpec bad = w;
  bad.optimizer = "adam(beta3=1)";
  absl::Status status = ValidateTensorSpecs({bad});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("tensor 'w': optimizer 'adam(beta3=1)'"),
            std::string::npos)
      << status;
  bad = w;
  bad.lr_schedule = "exponential";
  status = ValidateTensorSpecs({bad});
  EXPECT_NE(status.message().find("tensor 'w': bad learning-rate schedule"),
            std::string::npos)
      << status;

  TensorSpec other = w;
  other.optimizer = "";
  EXPECT_NE(DescribeDifference({w}, {other}).find("optimizer adam"),
            std::string::npos);
  other = w;
  other.lr_schedule = "constant";
  EXPECT_NE(DescribeDifference({w}, {other}), "");
}

}  // namespace
}  // namespace ps::common
