#ifndef PS_COMMON_EVALUATION_H_
#define PS_COMMON_EVALUATION_H_

// Test-set metrics of a binary classifier (click-through-rate models):
// what ps_worker's test_auc and test_logloss report, and what ps_datagen
// computes for the ground truth's own probabilities (the Bayes AUC).
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace ps::common {

// The area under the ROC curve of `scores` against `labels` (each 0 or 1):
// the probability that a random positive scores above a random negative,
// a tie counting one half. Exact, O(n log n): tied scores share their
// average rank (the Mann-Whitney U statistic). Errors on mismatched sizes,
// a label other than 0/1, a NaN score, or a set without both classes (the
// AUC is then undefined).
absl::StatusOr<double> RocAuc(absl::Span<const double> scores,
                              absl::Span<const int32_t> labels);

// Default clip of LogLoss: a confident mistake costs at most -ln(1e-7) ≈ 16
// instead of infinity, so one row cannot swamp the mean.
inline constexpr double kLogLossEpsilon = 1e-7;

// The mean negative log-likelihood of `labels` (0/1) under `probabilities`
// of the positive class, each clipped to [epsilon, 1 − epsilon]. Errors on
// mismatched sizes, an empty set, a label other than 0/1, a probability
// outside [0, 1] or NaN, or an epsilon outside (0, 0.5).
absl::StatusOr<double> LogLoss(absl::Span<const double> probabilities,
                               absl::Span<const int32_t> labels,
                               double epsilon = kLogLossEpsilon);

}  // namespace ps::common

#endif  // PS_COMMON_EVALUATION_H_
