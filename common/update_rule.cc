#include "common/update_rule.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace ps::common {
namespace {

double SquaredNorm(absl::Span<const float> v) {
  double sum = 0;
  for (float x : v) sum += static_cast<double>(x) * x;
  return sum;
}

}  // namespace

absl::Status ValidateUpdateOptions(const UpdateOptions& o) {
  if (!std::isfinite(o.learning_rate) || o.learning_rate <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "learning rate must be a positive finite number, got ",
        o.learning_rate));
  }
  for (auto [name, value] : {std::pair{"l2", o.l2}, std::pair{"l1", o.l1},
                             std::pair{"penalty_beta", o.penalty_beta}}) {
    if (!std::isfinite(value) || value < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, " must be a finite number >= 0, got ", value));
    }
  }
  if (std::isnan(o.clip_min) || std::isnan(o.clip_max)) {
    return absl::InvalidArgumentError("clip_min and clip_max must not be NaN");
  }
  const float lower = o.nonnegative ? std::max(o.clip_min, 0.0f) : o.clip_min;
  if (lower > o.clip_max) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the box constraint is empty: lower bound ", lower,
        (o.nonnegative ? " (non-negative)" : ""), " > clip_max ", o.clip_max));
  }
  if (std::isnan(o.max_norm) || o.max_norm <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_norm must be > 0, got ", o.max_norm));
  }
  return absl::OkStatus();
}

void ApplyUpdate(const UpdateOptions& o, bool regularize,
                 absl::Span<const float> gradient, absl::Span<float> theta) {
  assert(gradient.size() == theta.size());
  const size_t n = theta.size();
  const float lr = o.learning_rate;
  const float l2 = regularize ? o.l2 : 0.0f;
  const float l1 = regularize ? o.l1 : 0.0f;
  const float lo = o.nonnegative ? std::max(o.clip_min, 0.0f) : o.clip_min;
  const float hi = o.clip_max;
  const bool penalize = o.penalty_beta > 0;
  const float beta = o.penalty_beta;

  // ∇ of ½·max(0, ‖θ‖ − r)² is (‖θ‖ − r)₊·θ/‖θ‖, a multiple of θ.
  float ball_gradient_scale = 0;
  if (penalize && o.has_ball()) {
    const double norm = std::sqrt(SquaredNorm(theta));
    if (norm > o.max_norm) {
      ball_gradient_scale = static_cast<float>((norm - o.max_norm) / norm);
    }
  }

  for (size_t i = 0; i < n; ++i) {
    const float t = theta[i];
    float step = gradient[i] + l2 * t;
    if (penalize) {
      // ∇ of ½·dist²(θ, [lo, hi]).
      const float box_gradient = std::max(t - hi, 0.0f) - std::max(lo - t, 0.0f);
      step += beta * (box_gradient + ball_gradient_scale * t);
    }
    float next = t - lr * step;
    if (l1 > 0) {
      const float threshold = lr * l1;
      next = next > threshold    ? next - threshold
             : next < -threshold ? next + threshold
                                 : 0.0f;
    }
    if (!penalize) next = std::clamp(next, lo, hi);
    theta[i] = next;
  }

  // Box, then ball: the result lies in both (scaling toward 0 stays inside a
  // box that contains 0; the clamp covers one that does not). When both bind
  // at once this is a feasible point, not always the Euclidean projection.
  if (!penalize && o.has_ball()) {
    const double norm = std::sqrt(SquaredNorm(theta));
    if (norm > o.max_norm) {
      const float scale = static_cast<float>(o.max_norm / norm);
      for (float& t : theta) t = std::clamp(t * scale, lo, hi);
    }
  }
}

}  // namespace ps::common
