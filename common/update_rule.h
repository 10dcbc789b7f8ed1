#ifndef PS_COMMON_UPDATE_RULE_H_
#define PS_COMMON_UPDATE_RULE_H_

#include <algorithm>
#include <limits>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace ps::common {

// The regularized update applied by a server to each tensor segment it owns:
//
//   θ' = θ − α·(g + λ₂·θ + β·∇C(θ))      L2 and penalty constraints
//   θ' = prox_{α·λ₁}(θ')                  L1: exact soft-threshold
//   θ  = Π_K(θ')                          hard constraints: projection onto K
//
// K is the intersection of a box [clip_min, clip_max] (with non-negativity
// raising clip_min to 0) and an L2 ball of radius max_norm. With
// penalty_beta > 0, K is enforced softly through the penalty
// C(θ) = ½·dist²(θ, box) + ½·max(0, ‖θ‖ − max_norm)² instead of projection.
struct UpdateOptions {
  // Step size α. Default: 0.1
  float learning_rate = 0.1f;
  // Weight decay λ₂. Default: 0 (ps_server's flag defaults to 1e-4)
  float l2 = 0.0f;
  // L1 strength λ₁, applied as a proximal step. Default: 0
  float l1 = 0.0f;
  // Box constraint. Default: unbounded
  float clip_min = -std::numeric_limits<float>::infinity();
  float clip_max = std::numeric_limits<float>::infinity();
  // Keeps θ ≥ 0. Default: false
  bool nonnegative = false;
  // Radius of the L2 ball, per tensor segment held by one shard. Default: ∞
  float max_norm = std::numeric_limits<float>::infinity();
  // β: when > 0 the constraints become the penalty β·∇C. Default: 0
  float penalty_beta = 0.0f;

  bool has_box() const {
    return nonnegative || clip_min > -std::numeric_limits<float>::infinity() ||
           clip_max < std::numeric_limits<float>::infinity();
  }
  bool has_ball() const {
    return max_norm < std::numeric_limits<float>::infinity();
  }
  // The box's lower bound, non-negativity included.
  float box_lower() const {
    return nonnegative ? std::max(clip_min, 0.0f) : clip_min;
  }
};

// Rejects non-finite or negative strengths, α ≤ 0, an empty box, a ball
// radius ≤ 0.
absl::Status ValidateUpdateOptions(const UpdateOptions& options);

// Applies the update to one tensor segment. `regularize` is false for
// tensors exempt from L1/L2 (biases); constraints apply either way.
// Elementwise in key order except the ball's norm, so the result does not
// depend on how keys are split across shards unless max_norm is finite.
void ApplyUpdate(const UpdateOptions& options, bool regularize,
                 absl::Span<const float> gradient, absl::Span<float> theta);

// The parts of the update that need the whole segment, for the optimizers
// (common/optimizer.h) that share them: the ball penalty's ∇ is this
// multiple of θ (0 unless penalty_beta > 0 and ‖θ‖ > max_norm), and the
// ball projection scales θ onto the ball, then clamps it into the box
// (nothing unless the ball is a hard constraint and ‖θ‖ > max_norm).
float BallPenaltyScale(const UpdateOptions& options,
                       absl::Span<const float> theta);
void ProjectOntoBall(const UpdateOptions& options, absl::Span<float> theta);

}  // namespace ps::common

#endif  // PS_COMMON_UPDATE_RULE_H_
