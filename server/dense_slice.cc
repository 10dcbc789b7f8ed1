#include "server/dense_slice.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/float_bytes.h"

namespace ps::server {

namespace {

// Updates whose every |value| stays below this are finite in float
// arithmetic (FLT_MAX ≈ 3.4e38; each rounding adds a relative 2^-24).
constexpr double kSurelyFiniteBelow = 1e38;

}  // namespace

void ApplyOverSegments(const common::UpdateOptions& update,
                       const std::vector<common::TensorSegment>& segments,
                       uint64_t first_key, absl::Span<const float> gradient,
                       absl::Span<float> theta) {
  for (const common::TensorSegment& segment : segments) {
    const size_t offset = segment.keys.begin - first_key;
    common::ApplyUpdate(update, segment.regularize,
                        gradient.subspan(offset, segment.keys.size()),
                        theta.subspan(offset, segment.keys.size()));
  }
}

// Works on the bits with the sign cleared, which order like the
// magnitudes: an integer max, so the loop vectorizes (a float max with NaN
// semantics does not), and a NaN never passes a bound.
double LargestMagnitude(absl::Span<const float> values) {
  int32_t largest = 0;
  for (float v : values) {
    int32_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    largest = std::max(largest, bits & 0x7fffffff);
  }
  if (largest >= 0x7f800000) return std::numeric_limits<double>::infinity();
  float magnitude;
  std::memcpy(&magnitude, &largest, sizeof(magnitude));
  return magnitude;
}

DenseSlice::DenseSlice(const common::UpdateOptions& update)
    : update_(update), chunk_(kApplyChunkFloats) {}

void DenseSlice::Declare(const std::vector<common::TensorSpec>& tensors,
                         common::KeyRange keys, std::vector<float> theta) {
  keys_ = keys;
  segments_ = common::SegmentsInRange(tensors, keys_);
  theta_ = std::move(theta);
  theta_bound_ = LargestMagnitude(theta_);
}

void DenseSlice::Read(const common::KeyRange& keys, std::string* out) const {
  common::FloatsToBytes(absl::MakeConstSpan(theta_).subspan(
                            keys.begin - keys_.begin, keys.size()),
                        out);
}

absl::Status DenseSlice::NonFiniteGradientError(size_t offset,
                                                float value) const {
  return absl::InvalidArgumentError(
      absl::StrCat("gradient value for key ", keys_.begin + offset, " is ",
                   value, "; gradients must be finite"));
}

absl::Status DenseSlice::CheckFinite(absl::Span<const float> gradient) const {
  const std::optional<size_t> at = common::FindNonFinite(gradient);
  if (!at.has_value()) return absl::OkStatus();
  return NonFiniteGradientError(*at, gradient[*at]);
}

absl::StatusOr<DenseSlice::CheckedGradient> DenseSlice::CheckBytes(
    const absl::Cord& bytes) {
  CheckedGradient checked;
  if (auto bad = FindNonFiniteGradient(bytes, &checked.largest)) {
    return NonFiniteGradientError(bad->first, bad->second);
  }
  if (SurelyFinite(checked.largest)) return checked;
  // Finite gradients can still carry θ past the float range: when the
  // bound cannot rule it out, run the update on copies.
  checked.exactly = true;
  absl::Cord::CharIterator from = bytes.char_begin();
  if (auto result = FindNonFiniteResult(
          [&](absl::Span<float> out) { common::ReadFloats(from, out); })) {
    return absl::InvalidArgumentError(absl::StrCat(
        "applying this gradient would make the value of key ",
        keys_.begin + result->offset, " ", result->value,
        ", which is not finite; the push is refused and θ unchanged "
        "(is the learning rate too high?)"));
  }
  return checked;
}

void DenseSlice::ApplyBytes(const absl::Cord& bytes,
                            const CheckedGradient& checked) {
  // Segments tile the slice in order, so one pass reads the gradient.
  absl::Cord::CharIterator from = bytes.char_begin();
  for (const common::TensorSegment& segment : segments_) {
    const size_t offset = segment.keys.begin - keys_.begin;
    const size_t size = segment.keys.size();
    absl::Span<float> theta = absl::MakeSpan(theta_).subspan(offset, size);
    if (update_.has_ball()) {
      // The ball's norm is the whole segment's: the rule needs it whole.
      if (segment_.size() < size) segment_.resize(size);
      common::ReadFloats(from, absl::MakeSpan(segment_).first(size));
      common::ApplyUpdate(update_, segment.regularize,
                          absl::MakeConstSpan(segment_).first(size), theta);
      continue;
    }
    // Elementwise otherwise: a cache-sized piece at a time, so no θ-sized
    // copy of the gradient is ever alive.
    for (size_t done = 0; done < size; done += chunk_.size()) {
      const size_t n = std::min(chunk_.size(), size - done);
      common::ReadFloats(from, absl::MakeSpan(chunk_).first(n));
      common::ApplyUpdate(update_, segment.regularize,
                          absl::MakeConstSpan(chunk_).first(n),
                          theta.subspan(done, n));
    }
  }
  BoundAfterUpdate(checked.largest, checked.exactly);
}

std::optional<DenseSlice::NonFiniteResult> DenseSlice::ApplyIfFinite(
    absl::Span<const float> gradient) {
  // A mean of finite gradients can itself overflow (inf fails the bound).
  const double largest = LargestMagnitude(gradient);
  const bool check_exactly = !SurelyFinite(largest);
  if (check_exactly) {
    size_t read = 0;
    if (auto result = FindNonFiniteResult([&](absl::Span<float> out) {
          std::copy_n(gradient.begin() + read, out.size(), out.begin());
          read += out.size();
        })) {
      return result;
    }
  }
  ApplyOverSegments(update_, segments_, keys_.begin, gradient,
                    absl::MakeSpan(theta_));
  BoundAfterUpdate(largest, check_exactly);
  return std::nullopt;
}

std::optional<std::pair<size_t, float>> DenseSlice::FindNonFiniteGradient(
    const absl::Cord& bytes, double* largest) {
  absl::Cord::CharIterator from = bytes.char_begin();
  *largest = 0;
  for (size_t done = 0; done < keys_.size(); done += chunk_.size()) {
    const size_t n = std::min(chunk_.size(), keys_.size() - done);
    absl::Span<float> piece = absl::MakeSpan(chunk_).first(n);
    common::ReadFloats(from, piece);
    // One pass finds both: infinity means a NaN or infinity is in there.
    const double magnitude = LargestMagnitude(piece);
    if (std::isinf(magnitude)) {
      const size_t at = common::FindNonFinite(piece).value_or(0);
      return std::make_pair(done + at, piece[at]);
    }
    *largest = std::max(*largest, magnitude);
  }
  return std::nullopt;
}

bool DenseSlice::SurelyFinite(double largest) const {
  // The penalty's terms are not bounded here: always check those exactly.
  if (update_.penalty_beta > 0) return false;
  // |θ − α(g + λ₂θ)| ≤ max(1, |1 − αλ₂|)·|θ| + α|g| (exempt tensors have
  // λ₂ = 0); the soft-threshold, the box clamp and the ball's scaling
  // only shrink magnitudes.
  const double keep = std::max(
      1.0,
      std::fabs(1.0 - static_cast<double>(update_.learning_rate) * update_.l2));
  return keep * theta_bound_ +
             static_cast<double>(update_.learning_rate) * largest <
         kSurelyFiniteBelow;
}

void DenseSlice::BoundAfterUpdate(double largest, bool exact) {
  // With a penalty every update is checked exactly: no bound is used.
  if (update_.penalty_beta > 0) return;
  if (exact) {
    theta_bound_ = LargestMagnitude(theta_);
    return;
  }
  const double keep = std::max(
      1.0,
      std::fabs(1.0 - static_cast<double>(update_.learning_rate) * update_.l2));
  theta_bound_ = keep * theta_bound_ +
                 static_cast<double>(update_.learning_rate) * largest;
}

std::optional<DenseSlice::NonFiniteResult> DenseSlice::FindNonFiniteResult(
    const std::function<void(absl::Span<float>)>& read) {
  for (const common::TensorSegment& segment : segments_) {
    const size_t offset = segment.keys.begin - keys_.begin;
    const size_t size = segment.keys.size();
    // The ball's norm is the whole segment's; the rest is elementwise.
    const size_t piece =
        update_.has_ball() ? size : std::min(size, kApplyChunkFloats);
    if (trial_theta_.size() < piece) {
      trial_theta_.resize(piece);
      trial_gradient_.resize(piece);
    }
    for (size_t done = 0; done < size; done += piece) {
      const size_t n = std::min(piece, size - done);
      absl::Span<float> gradient = absl::MakeSpan(trial_gradient_).first(n);
      absl::Span<float> theta = absl::MakeSpan(trial_theta_).first(n);
      read(gradient);
      std::copy_n(theta_.begin() + offset + done, n, theta.begin());
      common::ApplyUpdate(update_, segment.regularize, gradient, theta);
      if (auto at = common::FindNonFinite(theta)) {
        return NonFiniteResult{offset + done + *at, theta[*at]};
      }
    }
  }
  return std::nullopt;
}

}  // namespace ps::server
