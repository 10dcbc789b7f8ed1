#ifndef PS_SERVER_DENSE_SLICE_H_
#define PS_SERVER_DENSE_SLICE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/types/span.h"
#include "common/key_range.h"
#include "common/tensor_spec.h"
#include "common/update_rule.h"

namespace ps::server {

// θ ← update(θ, gradient) over keys starting at `first_key`, each tensor's
// part with its own regularization.
void ApplyOverSegments(const common::UpdateOptions& update,
                       const std::vector<common::TensorSegment>& segments,
                       uint64_t first_key, absl::Span<const float> gradient,
                       absl::Span<float> theta);

// The largest |value|, or infinity when any value is NaN or infinite.
double LargestMagnitude(absl::Span<const float> values);

// One shard's contiguous part of the dense tensors: θ and the regularized
// update over it. No update is applied that would leave θ non-finite (a θ
// that overflowed would be checkpointed and block every restore); the
// checks cost one pass over the gradient in the usual case (see
// SurelyFinite). Not thread-safe: the shard's mutex guards it.
class DenseSlice {
 public:
  explicit DenseSlice(const common::UpdateOptions& update);

  // Holds `theta` for `keys` of the model `tensors`.
  void Declare(const std::vector<common::TensorSpec>& tensors,
               common::KeyRange keys, std::vector<float> theta);

  const common::KeyRange& keys() const { return keys_; }
  const std::vector<float>& theta() const { return theta_; }
  // Replaces `out` with θ[keys] (inside keys()) as float32 bytes.
  void Read(const common::KeyRange& keys, std::string* out) const;

  // INVALID_ARGUMENT naming the first NaN or infinity of a θ-sized
  // gradient, if any.
  absl::Status CheckFinite(absl::Span<const float> gradient) const;

  // What CheckBytes learned, for ApplyBytes to keep its bound on |θ|.
  struct CheckedGradient {
    double largest = 0;  // the gradient's largest magnitude
    bool exactly = false;
  };
  // Checks a θ-sized gradient of float32 bytes (size already checked), a
  // cache-sized chunk at a time: INVALID_ARGUMENT when a value is not
  // finite or applying it would leave a value of θ non-finite.
  absl::StatusOr<CheckedGradient> CheckBytes(const absl::Cord& bytes);
  // Applies a gradient CheckBytes accepted straight from its bytes, with no
  // θ-sized copy unless the rule has a ball (which needs whole segments).
  void ApplyBytes(const absl::Cord& bytes, const CheckedGradient& checked);

  // Where an update would leave θ non-finite: the key's offset in the
  // slice and the value it would get.
  struct NonFiniteResult {
    size_t offset = 0;
    float value = 0;
  };
  // Applies a θ-sized gradient of finite values (a sync round's mean)
  // unless the result would not be finite; then θ is unchanged and the
  // answer says where.
  std::optional<NonFiniteResult> ApplyIfFinite(
      absl::Span<const float> gradient);

 private:
  absl::Status NonFiniteGradientError(size_t offset, float value) const;
  // Index and value of the gradient's first NaN or infinity, if any, read
  // a chunk at a time; else sets *largest to its largest magnitude.
  std::optional<std::pair<size_t, float>> FindNonFiniteGradient(
      const absl::Cord& bytes, double* largest);
  // Whether an update by a gradient no larger than `largest` in magnitude
  // surely leaves θ finite, judged from theta_bound_ alone (no pass over
  // θ); false means "run FindNonFiniteResult".
  bool SurelyFinite(double largest) const;
  // Keeps theta_bound_ an upper bound on max|θ| after an applied update by
  // a gradient of magnitude at most `largest`; `exact` recomputes it.
  void BoundAfterUpdate(double largest, bool exact);
  // Where applying a gradient to the whole slice would leave θ non-finite.
  // `read` fills the gradient's next floats in key order. Runs the update
  // on copies, a cache-sized piece at a time (a whole segment when the
  // rule has a ball), so θ is untouched and the verdict is exactly the
  // apply's.
  std::optional<NonFiniteResult> FindNonFiniteResult(
      const std::function<void(absl::Span<float>)>& read);

  // A piece of an async gradient on its way from the request into θ: small
  // enough to stay in cache.
  static constexpr size_t kApplyChunkFloats = 4096;

  const common::UpdateOptions update_;
  common::KeyRange keys_;
  std::vector<common::TensorSegment> segments_;
  std::vector<float> theta_;
  // An upper bound on max|θ| (exact after a declaration or a full check):
  // lets most updates skip FindNonFiniteResult's second pass over θ.
  double theta_bound_ = 0;
  std::vector<float> chunk_;
  // A segment's gradient when the rule has a ball.
  std::vector<float> segment_;
  // FindNonFiniteResult's copies of a piece of the gradient and of θ.
  std::vector<float> trial_gradient_;
  std::vector<float> trial_theta_;
};

}  // namespace ps::server

#endif  // PS_SERVER_DENSE_SLICE_H_
