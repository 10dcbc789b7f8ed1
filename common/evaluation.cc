#include "common/evaluation.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ps::common {
namespace {

// The checks both metrics make of their inputs.
absl::Status CheckLabels(size_t values, absl::Span<const int32_t> labels,
                         const char* what) {
  if (values != labels.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        values, " ", what, " but ", labels.size(), " labels: one each"));
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] != 0 && labels[i] != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("label ", labels[i], " at row ", i, " is not 0 or 1"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<double> RocAuc(absl::Span<const double> scores,
                              absl::Span<const int32_t> labels) {
  absl::Status status = CheckLabels(scores.size(), labels, "scores");
  if (!status.ok()) return status;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (std::isnan(scores[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("score at row ", i, " is NaN"));
    }
  }
  const int64_t positives = std::count(labels.begin(), labels.end(), 1);
  const int64_t negatives = static_cast<int64_t>(labels.size()) - positives;
  if (positives == 0 || negatives == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("AUC is undefined without both classes: ", positives,
                     " positives and ", negatives, " negatives"));
  }

  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Sum of the 1-based ranks of the positives, ties at their average rank.
  // Twice the ranks are integers, and below 2^53 for any n under 6e7, so
  // the sum is exact in a double.
  double positive_rank_sum = 0;
  for (size_t begin = 0; begin < order.size();) {
    size_t end = begin + 1;
    while (end < order.size() && scores[order[end]] == scores[order[begin]]) {
      ++end;
    }
    const double average_rank = 0.5 * static_cast<double>(begin + 1 + end);
    for (size_t k = begin; k < end; ++k) {
      if (labels[order[k]] == 1) positive_rank_sum += average_rank;
    }
    begin = end;
  }
  const double p = static_cast<double>(positives);
  const double n = static_cast<double>(negatives);
  return (positive_rank_sum - p * (p + 1) / 2) / (p * n);
}

absl::StatusOr<double> LogLoss(absl::Span<const double> probabilities,
                               absl::Span<const int32_t> labels,
                               double epsilon) {
  if (!(epsilon > 0 && epsilon < 0.5)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "log loss clip epsilon ", epsilon, " is outside (0, 0.5)"));
  }
  absl::Status status =
      CheckLabels(probabilities.size(), labels, "probabilities");
  if (!status.ok()) return status;
  if (labels.empty()) {
    return absl::InvalidArgumentError("log loss of an empty set");
  }
  double sum = 0;
  for (size_t i = 0; i < probabilities.size(); ++i) {
    const double p = probabilities[i];
    if (!(p >= 0 && p <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("probability ", p, " at row ", i, " is outside [0, 1]"));
    }
    const double clipped = std::clamp(p, epsilon, 1 - epsilon);
    sum -= labels[i] == 1 ? std::log(clipped) : std::log1p(-clipped);
  }
  return sum / static_cast<double>(probabilities.size());
}

}  // namespace ps::common
