#include "common/evaluation.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::common {
namespace {

using ::testing::HasSubstr;

// The definition itself, pair by pair: P(positive scores above negative),
// ties counting one half. O(n²), for checking the ranked version.
double PairwiseAuc(const std::vector<double>& scores,
                   const std::vector<int32_t>& labels) {
  double wins = 0;
  double pairs = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (labels[i] != 1) continue;
    for (size_t j = 0; j < scores.size(); ++j) {
      if (labels[j] != 0) continue;
      pairs += 1;
      if (scores[i] > scores[j]) wins += 1;
      if (scores[i] == scores[j]) wins += 0.5;
    }
  }
  return wins / pairs;
}

TEST(RocAuc, CountsTheOrderedPairsOfAHandWorkedExample) {
  // Positives 0.35 and 0.8 against negatives 0.1 and 0.4: 0.35 beats 0.1
  // only, 0.8 beats both: 3 of 4 pairs.
  EXPECT_DOUBLE_EQ(*RocAuc({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}), 0.75);
}

TEST(RocAuc, CountsATieBetweenAPositiveAndANegativeAsOneHalf) {
  EXPECT_DOUBLE_EQ(*RocAuc({0.2, 0.2}, {0, 1}), 0.5);
  // Positive 0.5 ties both negatives (2 × ½), positive 0.9 beats both (2).
  EXPECT_DOUBLE_EQ(*RocAuc({0.5, 0.5, 0.5, 0.9}, {1, 0, 0, 1}), 0.75);
  EXPECT_DOUBLE_EQ(*RocAuc({3, 3, 3, 3, 3}, {1, 0, 1, 0, 0}), 0.5);
}

TEST(RocAuc, IsOneForAPerfectRankingAndZeroForItsReverse) {
  EXPECT_DOUBLE_EQ(*RocAuc({0.1, 0.2, 0.7, 0.9}, {0, 0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(*RocAuc({0.1, 0.2, 0.7, 0.9}, {1, 1, 0, 0}), 0.0);
}

TEST(RocAuc, EqualsThePairwiseDefinitionOnRandomScoresWithManyTies) {
  std::mt19937_64 random(7);
  std::uniform_int_distribution<int> coarse_score(0, 20);  // many ties
  std::bernoulli_distribution positive(0.3);
  std::vector<double> scores;
  std::vector<int32_t> labels;
  for (int i = 0; i < 2000; ++i) {
    scores.push_back(coarse_score(random) / 20.0);
    labels.push_back(positive(random) ? 1 : 0);
  }
  EXPECT_NEAR(*RocAuc(scores, labels), PairwiseAuc(scores, labels), 1e-12);
}

TEST(RocAuc, RefusesInputsWhereItIsUndefinedOrWrong) {
  EXPECT_THAT(RocAuc({0.1, 0.2}, {1, 1}).status().message(),
              HasSubstr("without both classes"));
  EXPECT_THAT(RocAuc({0.1, 0.2}, {1}).status().message(),
              HasSubstr("2 scores but 1 labels"));
  EXPECT_THAT(RocAuc({0.1, 0.2}, {0, 2}).status().message(),
              HasSubstr("label 2 at row 1 is not 0 or 1"));
  EXPECT_THAT(RocAuc({0.1, std::nan("")}, {0, 1}).status().message(),
              HasSubstr("score at row 1 is NaN"));
  EXPECT_EQ(RocAuc({}, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LogLoss, IsTheMeanNegativeLogLikelihoodOfAHandWorkedExample) {
  // -(ln 0.9 + ln 0.8) / 2.
  EXPECT_NEAR(*LogLoss({0.9, 0.2}, {1, 0}), 0.164252033486018, 1e-12);
}

TEST(LogLoss, ClipsCertainMistakesToAFiniteCost) {
  // -ln(1e-7) for each certain mistake.
  EXPECT_NEAR(*LogLoss({0.0, 1.0}, {1, 0}), 16.11809565095832, 1e-9);
  EXPECT_NEAR(*LogLoss({0.0}, {1}, 0.01), -std::log(0.01), 1e-12);
  // A certain hit costs -ln(1 - 1e-7), not zero.
  EXPECT_NEAR(*LogLoss({1.0}, {1}), 1e-7, 1e-12);
}

TEST(LogLoss, RefusesInputsWhereItIsUndefinedOrWrong) {
  EXPECT_THAT(LogLoss({}, {}).status().message(), HasSubstr("empty"));
  EXPECT_THAT(LogLoss({1.5}, {1}).status().message(),
              HasSubstr("probability 1.5 at row 0 is outside [0, 1]"));
  EXPECT_THAT(LogLoss({std::nan("")}, {1}).status().message(),
              HasSubstr("outside [0, 1]"));
  EXPECT_THAT(LogLoss({0.5}, {-1}).status().message(),
              HasSubstr("label -1 at row 0 is not 0 or 1"));
  EXPECT_THAT(LogLoss({0.5, 0.5}, {1}).status().message(),
              HasSubstr("2 probabilities but 1 labels"));
  EXPECT_THAT(LogLoss({0.5}, {1}, 0).status().message(),
              HasSubstr("outside (0, 0.5)"));
}

}  // namespace
}  // namespace ps::common
