#include "common/update_rule.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/cpu_clones.h"

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
    return absl::InvalidArgumentError(
        absl::StrCat("learning rate must be a positive finite number, got ",
                     o.learning_rate));
  }
  for (auto [name, value] : {std::pair{"l2", o.l2}, std::pair{"l1", o.l1},
                             std::pair{"penalty_beta", o.penalty_beta}}) {
    if (!std::isfinite(value) || value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " must be a finite number >= 0, got ", value));
    }
  }
  if (std::isnan(o.clip_min) || std::isnan(o.clip_max)) {
    return absl::InvalidArgumentError("clip_min and clip_max must not be NaN");
  }
  const float lower = o.box_lower();
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

namespace {

// The elementwise part of the update, one instantiation per combination of
// terms so that the loop has no branches and the compiler vectorises it.
// Every variant computes each element with the same operations in the same
// order as the general formula, so results are bit-for-bit the same whichever
// runs (sync mode's reproducibility depends on it). The box clamp is left out
// only when the box is unbounded, where it is the identity.
struct Terms {
  float lr, l2, l1, lo, hi, beta, ball_gradient_scale;
};

template <bool kPenalize, bool kL1, bool kClamp>
[[gnu::always_inline]] inline void UpdateElements(
    const Terms& c, const float* __restrict gradient, float* __restrict theta,
    size_t n) {
  const float threshold = c.lr * c.l1;
  for (size_t i = 0; i < n; ++i) {
    const float t = theta[i];
    float step = gradient[i] + c.l2 * t;
    if constexpr (kPenalize) {
      // ∇ of ½·dist²(θ, [lo, hi]).
      const float box_gradient =
          std::max(t - c.hi, 0.0f) - std::max(c.lo - t, 0.0f);
      step += c.beta * (box_gradient + c.ball_gradient_scale * t);
    }
    float next = t - c.lr * step;
    if constexpr (kL1) {
      // Soft-threshold: next − thr above thr, next + thr below −thr, +0 in
      // between, written without branches so that it vectorises (the same
      // value as the branching form for every non-NaN `next`).
      next -= std::min(std::max(next, -threshold), threshold);
    }
    // std::clamp(next, lo, hi), written as max then min (the same result,
    // NaN and signed zeros included) because that form vectorises.
    if constexpr (kClamp) next = std::min(std::max(next, c.lo), c.hi);
    theta[i] = next;
  }
}

// The variant of the terms in play, over n elements; built for each
// instruction set (common/cpu_clones.h).
PS_CPU_CLONES void UpdateVariant(const Terms& c, bool penalize, bool l1,
                                 bool clamp, const float* __restrict gradient,
                                 float* __restrict theta, size_t n) {
  if (penalize) {
    l1 ? UpdateElements<true, true, false>(c, gradient, theta, n)
       : UpdateElements<true, false, false>(c, gradient, theta, n);
  } else if (clamp) {
    l1 ? UpdateElements<false, true, true>(c, gradient, theta, n)
       : UpdateElements<false, false, true>(c, gradient, theta, n);
  } else {
    l1 ? UpdateElements<false, true, false>(c, gradient, theta, n)
       : UpdateElements<false, false, false>(c, gradient, theta, n);
  }
}

}  // namespace

void ApplyUpdate(const UpdateOptions& o, bool regularize,
                 absl::Span<const float> gradient, absl::Span<float> theta) {
  assert(gradient.size() == theta.size());
  const size_t n = theta.size();
  Terms c;
  c.lr = o.learning_rate;
  c.l2 = regularize ? o.l2 : 0.0f;
  c.l1 = regularize ? o.l1 : 0.0f;
  c.lo = o.box_lower();
  c.hi = o.clip_max;
  const bool penalize = o.penalty_beta > 0;
  c.beta = o.penalty_beta;

  c.ball_gradient_scale = BallPenaltyScale(o, theta);

  UpdateVariant(c, penalize, /*l1=*/c.l1 > 0,
                /*clamp=*/!penalize && o.has_box(), gradient.data(),
                theta.data(), n);

  ProjectOntoBall(o, theta);
}

float BallPenaltyScale(const UpdateOptions& o, absl::Span<const float> theta) {
  // ∇ of ½·max(0, ‖θ‖ − r)² is (‖θ‖ − r)₊·θ/‖θ‖, a multiple of θ.
  if (o.penalty_beta <= 0 || !o.has_ball()) return 0;
  const double norm = std::sqrt(SquaredNorm(theta));
  return norm > o.max_norm ? static_cast<float>((norm - o.max_norm) / norm)
                           : 0.0f;
}

void ProjectOntoBall(const UpdateOptions& o, absl::Span<float> theta) {
  // Box, then ball: the result lies in both (scaling toward 0 stays inside a
  // box that contains 0; the clamp covers one that does not). When both bind
  // at once this is a feasible point, not always the Euclidean projection.
  if (o.penalty_beta > 0 || !o.has_ball()) return;
  const double norm = std::sqrt(SquaredNorm(theta));
  if (norm > o.max_norm) {
    const float scale = static_cast<float>(o.max_norm / norm);
    const float lo = o.box_lower();
    for (float& v : theta) v = std::clamp(v * scale, lo, o.clip_max);
  }
}

}  // namespace ps::common
