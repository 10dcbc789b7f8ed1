#ifndef PS_SERVER_DENSE_SLICE_H_
#define PS_SERVER_DENSE_SLICE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/types/span.h"
#include "common/key_range.h"
#include "common/lr_schedule.h"
#include "common/optimizer.h"
#include "common/tensor_spec.h"
#include "common/update_rule.h"

namespace ps::server {

// The largest |value|, or infinity when any value is NaN or infinite.
double LargestMagnitude(absl::Span<const float> values);

// One shard's contiguous part of the dense tensors: θ, the optimizers'
// state beside it, and the update over it. Each tensor's part (segment)
// runs its own optimizer and learning-rate schedule (its declaration's, else
// the server's) through common::ApplyOptimizer, for update number `version`
// (the shard's version before the update: closed sync rounds, applied
// async/SSP pushes): step size update.learning_rate × LrFactor(schedule,
// version), and step t = version + 1 (Adam's bias correction). Both are
// functions of the shard's version alone, so sync stays reproducible
// whatever the shard count, and a restored shard resumes where it was.
// A scheduled step of 0 leaves θ and the state of a non-sgd segment as they
// are (FTRL divides by it). sgd is exactly common::ApplyUpdate.
//
// No update is applied that would leave θ non-finite (a θ that overflowed
// would be checkpointed and block every restore); the checks cost one pass
// over the gradient in the usual case (see SurelyFinite), and a trial run
// on copies of θ and the state when any segment's optimizer is not sgd.
// Not thread-safe: the shard's mutex guards it.
class DenseSlice {
 public:
  explicit DenseSlice(const common::UpdateOptions& update,
                      const common::OptimizerOptions& optimizer = {},
                      const common::LrSchedule& lr_schedule = {});

  // Holds `theta` for `keys` of the model `tensors` (validated: their
  // optimizers and schedules parse), with every state vector at 0.
  void Declare(const std::vector<common::TensorSpec>& tensors,
               common::KeyRange keys, std::vector<float> theta);

  const common::KeyRange& keys() const { return keys_; }
  const std::vector<float>& theta() const { return *theta_; }

  // The state vectors the segments' optimizers keep, in ThetaFile's layout
  // (common/theta_file.h): one per name, over all keys, 0 where a
  // segment's optimizer has no such state.
  const std::vector<std::string>& state_names() const { return state_names_; }
  const std::vector<std::vector<float>>& state() const { return state_; }
  // Takes the vectors of `state` whose name this slice keeps (each must be
  // keys()-sized: the caller checks); returns the names it keeps that
  // `names` lacks (left at 0) and those of `names` it does not keep
  // (ignored), for a warning; empty when they match.
  std::string TakeState(const std::vector<std::string>& names,
                        std::vector<std::vector<float>> state);
  // Replaces `out` with θ[keys] (inside keys()) as float32 bytes.
  void Read(const common::KeyRange& keys, std::string* out) const;
  // The whole θ as it is now, with no copy: it stays this version while
  // shared (the next update copies θ rather than write over it). Read it
  // only under the lock that guards this slice: updates reuse the buffer
  // once nobody shares it.
  std::shared_ptr<const std::vector<float>> Share() const { return theta_; }

  // INVALID_ARGUMENT naming the first NaN or infinity of a θ-sized
  // gradient, if any.
  absl::Status CheckFinite(absl::Span<const float> gradient) const;

  // What CheckBytes learned, for ApplyBytes to keep its bound on |θ|.
  struct CheckedGradient {
    double largest = 0;  // the gradient's largest magnitude
    bool exactly = false;
  };
  // Checks a θ-sized gradient of float32 bytes (size already checked),
  // reading them where they lie: INVALID_ARGUMENT when a value is not
  // finite or applying it would leave a value of θ non-finite.
  // `version` is the update's number (see the class comment).
  absl::StatusOr<CheckedGradient> CheckBytes(const absl::Cord& bytes,
                                             uint64_t version);
  // Applies a gradient CheckBytes accepted for the same `version` straight
  // from its bytes, with no θ-sized copy unless the rule has a ball (which
  // needs whole segments).
  void ApplyBytes(const absl::Cord& bytes, const CheckedGradient& checked,
                  uint64_t version);

  // Where an update would leave θ non-finite: the key's offset in the
  // slice and the value it would get.
  struct NonFiniteResult {
    size_t offset = 0;
    float value = 0;
  };
  // Applies a θ-sized gradient of finite values (a sync round's mean)
  // unless the result would not be finite; then θ is unchanged and the
  // answer says where.
  std::optional<NonFiniteResult> ApplyIfFinite(absl::Span<const float> gradient,
                                               uint64_t version);

 private:
  // A segment's optimizer, schedule, and where its state vectors are.
  struct SegmentRule {
    common::TensorSegment segment;
    common::OptimizerOptions optimizer;
    common::LrSchedule schedule;
    // Indices into state_, in OptimizerStateNames(optimizer.kind) order.
    std::vector<size_t> state;
  };
  // Update number `version` of `rule`'s keys [done, done + n) of its
  // segment: `state` holds the state vectors to use, over exactly those
  // keys, when `trial` (copies), else null for the slice's own.
  void ApplyRule(const SegmentRule& rule, uint64_t version, size_t done,
                 absl::Span<const float> gradient, absl::Span<float> theta,
                 std::vector<std::vector<float>>* trial_state);
  // The largest scheduled step size any segment takes at `version`.
  double LargestRate(uint64_t version) const;
  // θ to update in place: first a copy of it when a reader shares it (a
  // streamed pull still sending it), which keeps the old version.
  std::vector<float>& MutableTheta();
  absl::Status NonFiniteGradientError(size_t offset, float value) const;
  // Index and value of the gradient's first NaN or infinity, if any, read
  // in place from the Cord's chunks; else sets *largest to its largest
  // magnitude.
  std::optional<std::pair<size_t, float>> FindNonFiniteGradient(
      const absl::Cord& bytes, double* largest);
  // Whether an update by a gradient no larger than `largest` in magnitude
  // surely leaves θ finite, judged from theta_bound_ alone (no pass over
  // θ); false means "run FindNonFiniteResult".
  bool SurelyFinite(double largest, uint64_t version) const;
  // Keeps theta_bound_ an upper bound on max|θ| after an applied update by
  // a gradient of magnitude at most `largest`; `exact` recomputes it.
  void BoundAfterUpdate(double largest, bool exact, uint64_t version);
  // Where applying a gradient to the whole slice would leave θ non-finite.
  // `read` fills the gradient's next floats in key order. Runs the update
  // on copies, a cache-sized piece at a time (a whole segment when the
  // rule has a ball), so θ is untouched and the verdict is exactly the
  // apply's.
  std::optional<NonFiniteResult> FindNonFiniteResult(
      const std::function<void(absl::Span<float>)>& read, uint64_t version);

  // A piece of an async gradient on its way from the request into θ: small
  // enough to stay in cache.
  static constexpr size_t kApplyChunkFloats = 4096;

  const common::UpdateOptions update_;
  const common::OptimizerOptions default_optimizer_;
  const common::LrSchedule default_schedule_;
  common::KeyRange keys_;
  std::vector<SegmentRule> segments_;
  // Every segment runs sgd: updates may skip the trial run (SurelyFinite).
  bool all_sgd_ = true;
  // θ, shared with the readers Share hands it to: copy-on-write, so a
  // streamed pull sends one version's values without a copy of its own.
  std::shared_ptr<std::vector<float>> theta_ =
      std::make_shared<std::vector<float>>();
  std::vector<std::string> state_names_;
  std::vector<std::vector<float>> state_;
  // An upper bound on max|θ| (exact after a declaration or a full check):
  // lets most updates skip FindNonFiniteResult's second pass over θ.
  double theta_bound_ = 0;
  std::vector<float> chunk_;
  // A segment's gradient when the rule has a ball.
  std::vector<float> segment_;
  // FindNonFiniteResult's copies of a piece of the gradient and of θ.
  std::vector<float> trial_gradient_;
  std::vector<float> trial_theta_;
  std::vector<std::vector<float>> trial_state_;
};

}  // namespace ps::server

#endif  // PS_SERVER_DENSE_SLICE_H_
