#include "common/update_rule.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::common {
namespace {

using ::testing::HasSubstr;

std::vector<float> Update(const UpdateOptions& options, bool regularize,
                          std::vector<float> theta,
                          const std::vector<float>& gradient) {
  ApplyUpdate(options, regularize, gradient, absl::MakeSpan(theta));
  return theta;
}

TEST(UpdateRule, PlainSgdStepsAgainstTheGradient) {
  UpdateOptions o;
  o.learning_rate = 0.5f;
  EXPECT_THAT(Update(o, true, {1, -2, 0}, {2, -4, 1}),
              ::testing::ElementsAre(0.0f, 0.0f, -0.5f));
}

TEST(UpdateRule, L2DecaysTowardZeroAndSkipsExemptTensors) {
  UpdateOptions o;
  o.learning_rate = 0.1f;
  o.l2 = 0.5f;
  // θ − α(g + λ₂θ) = 2 − 0.1·(1 + 1) = 1.8
  EXPECT_FLOAT_EQ(Update(o, true, {2}, {1})[0], 1.8f);
  EXPECT_FLOAT_EQ(Update(o, false, {2}, {1})[0], 1.9f);
}

// The update as one scalar loop with branches, as it was written before it
// was split into branch-free variants: every variant must give the same
// bits (sync mode's reproducibility rests on it).
float ReferenceElement(const UpdateOptions& o, bool regularize, float t,
                       float g) {
  const float l2 = regularize ? o.l2 : 0.0f;
  const float l1 = regularize ? o.l1 : 0.0f;
  const float lo = o.nonnegative ? std::max(o.clip_min, 0.0f) : o.clip_min;
  const float hi = o.clip_max;
  float next = t - o.learning_rate * (g + l2 * t);
  if (l1 > 0) {
    const float threshold = o.learning_rate * l1;
    next = next > threshold    ? next - threshold
           : next < -threshold ? next + threshold
                               : 0.0f;
  }
  return std::clamp(next, lo, hi);
}

TEST(UpdateRule, EveryElementwiseVariantGivesTheScalarFormulasBits) {
  std::vector<UpdateOptions> rules(4);
  rules[1].l2 = 1e-2f;
  rules[2].l2 = 1e-2f;
  rules[2].l1 = 3e-3f;
  rules[3].l1 = 3e-3f;
  rules[3].clip_min = -0.4f;
  rules[3].clip_max = 0.35f;
  const size_t n = 1037;  // not a multiple of any vector width
  std::vector<float> theta(n), gradient(n);
  for (size_t i = 0; i < n; ++i) {
    theta[i] = 0.0013f * static_cast<float>(i % 701) - 0.45f;
    gradient[i] = 0.0029f * static_cast<float>(i % 331) - 0.48f;
  }
  for (const UpdateOptions& o : rules) {
    for (bool regularize : {true, false}) {
      const std::vector<float> got = Update(o, regularize, theta, gradient);
      for (size_t i = 0; i < n; ++i) {
        const float want =
            ReferenceElement(o, regularize, theta[i], gradient[i]);
        ASSERT_EQ(std::memcmp(&got[i], &want, sizeof(float)), 0)
            << "element " << i << ": " << got[i] << " vs " << want;
      }
    }
  }
}

TEST(UpdateRule, L1IsAnExactSoftThreshold) {
  UpdateOptions o;
  o.learning_rate = 1.0f;
  o.l1 = 0.25f;
  // After the gradient step: 1.0, 0.2, -0.1, -0.5; threshold α·λ₁ = 0.25.
  const std::vector<float> got =
      Update(o, true, {1, 0.2f, -0.1f, -0.5f}, {0, 0, 0, 0});
  EXPECT_FLOAT_EQ(got[0], 0.75f);
  EXPECT_EQ(got[1], 0.0f);  // exactly zero, unlike a subgradient step
  EXPECT_EQ(got[2], 0.0f);
  EXPECT_FLOAT_EQ(got[3], -0.25f);
  EXPECT_FLOAT_EQ(Update(o, false, {0.2f}, {0})[0], 0.2f);  // exempt
}

TEST(UpdateRule, BoxAndNonNegativeProjectionClamp) {
  UpdateOptions o;
  o.learning_rate = 1.0f;
  o.clip_min = -1;
  o.clip_max = 2;
  EXPECT_THAT(Update(o, true, {0, 0, 0}, {-5, 5, -1}),
              ::testing::ElementsAre(2.0f, -1.0f, 1.0f));
  o.nonnegative = true;
  EXPECT_THAT(Update(o, true, {0, 0}, {5, -1}),
              ::testing::ElementsAre(0.0f, 1.0f));
  // Constraints hold for exempt tensors too.
  EXPECT_THAT(Update(o, false, {0}, {5}), ::testing::ElementsAre(0.0f));
}

TEST(UpdateRule, BallProjectionScalesOntoTheSphere) {
  UpdateOptions o;
  o.learning_rate = 1.0f;
  o.max_norm = 1.0f;
  // θ' = (3, 4), ‖θ'‖ = 5 → (0.6, 0.8).
  const std::vector<float> got = Update(o, true, {0, 0}, {-3, -4});
  EXPECT_FLOAT_EQ(got[0], 0.6f);
  EXPECT_FLOAT_EQ(got[1], 0.8f);
  // Inside the ball: untouched.
  EXPECT_THAT(Update(o, true, {0, 0}, {-0.3f, -0.4f}),
              ::testing::ElementsAre(0.3f, 0.4f));
}

TEST(UpdateRule, PenaltyAddsBetaTimesTheConstraintGradient) {
  UpdateOptions o;
  o.learning_rate = 0.1f;
  o.clip_min = 0;
  o.clip_max = 1;
  o.penalty_beta = 2.0f;
  // θ = 3 violates θ ≤ 1 by 2: ∇C = 2, step = 0.1·(0 + 2·2) → 2.6; not
  // clamped, since penalty mode does not project.
  EXPECT_FLOAT_EQ(Update(o, true, {3}, {0})[0], 2.6f);
  // θ = −1 violates θ ≥ 0 by 1: ∇C = −1 → −1 + 0.2 = −0.8.
  EXPECT_FLOAT_EQ(Update(o, true, {-1}, {0})[0], -0.8f);
  // Inside the box the penalty is zero.
  EXPECT_FLOAT_EQ(Update(o, true, {0.5f}, {1})[0], 0.4f);
}

TEST(UpdateRule, BallPenaltyPullsTowardTheSphere) {
  UpdateOptions o;
  o.learning_rate = 0.1f;
  o.max_norm = 1.0f;
  o.penalty_beta = 1.0f;
  // θ = (3, 4): ∇C = (5 − 1)·θ/5 = (2.4, 3.2) → θ − 0.1·∇C = (2.76, 3.68).
  const std::vector<float> got = Update(o, true, {3, 4}, {0, 0});
  EXPECT_FLOAT_EQ(got[0], 2.76f);
  EXPECT_FLOAT_EQ(got[1], 3.68f);
}

TEST(UpdateRule, AllPiecesComposeInTheDocumentedOrder) {
  UpdateOptions o;
  o.learning_rate = 0.5f;
  o.l2 = 0.2f;
  o.l1 = 0.4f;
  o.clip_max = 0.5f;
  // θ' = 2 − 0.5·(1 + 0.2·2) = 1.3; prox: 1.3 − 0.2 = 1.1; clamp: 0.5.
  EXPECT_FLOAT_EQ(Update(o, true, {2}, {1})[0], 0.5f);
  o.clip_max = 10;
  EXPECT_FLOAT_EQ(Update(o, true, {2}, {1})[0], 1.1f);
}

TEST(UpdateRule, ValidationNamesTheBadOption) {
  UpdateOptions o;
  EXPECT_TRUE(ValidateUpdateOptions(o).ok());
  o.learning_rate = 0;
  EXPECT_THAT(ValidateUpdateOptions(o).message(), HasSubstr("learning rate"));
  o = {};
  o.l2 = -1;
  EXPECT_THAT(ValidateUpdateOptions(o).message(), HasSubstr("l2"));
  o = {};
  o.l1 = NAN;
  EXPECT_THAT(ValidateUpdateOptions(o).message(), HasSubstr("l1"));
  o = {};
  o.clip_min = 1;
  o.clip_max = 0;
  EXPECT_THAT(ValidateUpdateOptions(o).message(), HasSubstr("empty"));
  o = {};
  o.nonnegative = true;
  o.clip_max = -1;
  EXPECT_THAT(ValidateUpdateOptions(o).message(), HasSubstr("non-negative"));
  o = {};
  o.max_norm = 0;
  EXPECT_THAT(ValidateUpdateOptions(o).message(), HasSubstr("max_norm"));
}

}  // namespace
}  // namespace ps::common
