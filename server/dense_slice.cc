#include "server/dense_slice.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/cpu_clones.h"
#include "common/float_bytes.h"

namespace ps::server {

namespace {

// Updates whose every |value| stays below this are finite in float
// arithmetic (FLT_MAX ≈ 3.4e38; each rounding adds a relative 2^-24).
constexpr double kSurelyFiniteBelow = 1e38;

// The sign-cleared bits of n float32s at `data`, which need not be aligned
// (a request's slices are not), at their largest. The bits order like the
// magnitudes: an integer max, so the loop vectorizes (a float max with NaN
// semantics does not), and NaN and infinity come out at or above
// kNonFiniteBits.
constexpr int32_t kNonFiniteBits = 0x7f800000;

PS_CPU_CLONES int32_t LargestMagnitudeBits(const char* data, size_t n) {
  // 16 maxima side by side, folded at the end: with one, each compare
  // waited for the last and the scan ran at 8.6 GB/s; 29 GB/s so, over
  // 1M floats in cache (a push's gradient, just received).
  constexpr size_t kLanes = 16;
  int32_t lanes[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t k = 0; k < kLanes; ++k) {
      int32_t bits;
      std::memcpy(&bits, data + (i + k) * sizeof(float), sizeof(bits));
      lanes[k] = std::max(lanes[k], bits & 0x7fffffff);
    }
  }
  int32_t largest = 0;
  for (; i < n; ++i) {
    int32_t bits;
    std::memcpy(&bits, data + i * sizeof(float), sizeof(bits));
    largest = std::max(largest, bits & 0x7fffffff);
  }
  for (const int32_t lane : lanes) largest = std::max(largest, lane);
  return largest;
}

double MagnitudeOfBits(int32_t bits) {
  if (bits >= kNonFiniteBits) return std::numeric_limits<double>::infinity();
  float magnitude;
  std::memcpy(&magnitude, &bits, sizeof(magnitude));
  return magnitude;
}

// The first NaN or infinity of n float32s at `data` (unaligned), and its
// value; only called on a piece known to hold one.
std::pair<size_t, float> FirstNonFinite(const char* data, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    float value;
    std::memcpy(&value, data + i * sizeof(float), sizeof(value));
    if (!std::isfinite(value)) return {i, value};
  }
  return {n, 0.0f};
}

}  // namespace

double LargestMagnitude(absl::Span<const float> values) {
  return MagnitudeOfBits(LargestMagnitudeBits(
      reinterpret_cast<const char*>(values.data()), values.size()));
}

namespace {

// A tensor's optimizer and schedule: its own, else the defaults. The specs
// were validated with the tensors (ValidateTensorSpecs).
common::OptimizerOptions OptimizerOf(const common::TensorSpec& tensor,
                                     const common::OptimizerOptions& fallback) {
  if (tensor.optimizer.empty()) return fallback;
  return common::ParseOptimizerSpec(tensor.optimizer).value_or(fallback);
}

common::LrSchedule ScheduleOf(const common::TensorSpec& tensor,
                              const common::LrSchedule& fallback) {
  if (tensor.lr_schedule.empty()) return fallback;
  return common::ParseLrSchedule(tensor.lr_schedule).value_or(fallback);
}

// The step size of update number `version`: exactly `rate` when the factor
// is 1 (the constant schedule), so plain SGD is unchanged bit for bit.
float ScheduledRate(float rate, const common::LrSchedule& schedule,
                    uint64_t version) {
  return static_cast<float>(rate * common::LrFactor(schedule, version));
}

}  // namespace

DenseSlice::DenseSlice(const common::UpdateOptions& update,
                       const common::OptimizerOptions& optimizer,
                       const common::LrSchedule& lr_schedule)
    : update_(update),
      default_optimizer_(optimizer),
      default_schedule_(lr_schedule),
      chunk_(kApplyChunkFloats) {}

void DenseSlice::Declare(const std::vector<common::TensorSpec>& tensors,
                         common::KeyRange keys, std::vector<float> theta) {
  keys_ = keys;
  theta_ = std::make_shared<std::vector<float>>(std::move(theta));
  theta_bound_ = LargestMagnitude(*theta_);
  // The state names of the whole model, not only of this slice's tensors,
  // in the optimizers' order: every shard's checkpoint then has the same
  // vectors, which a reshard needs to cut them by key.
  std::vector<common::OptimizerOptions> optimizers;
  for (const common::TensorSpec& tensor : tensors) {
    optimizers.push_back(OptimizerOf(tensor, default_optimizer_));
  }
  state_names_.clear();
  for (int kind = 0; kind <= static_cast<int>(common::OptimizerKind::kFtrl);
       ++kind) {
    const bool used = std::any_of(
        optimizers.begin(), optimizers.end(),
        [kind](const auto& o) { return static_cast<int>(o.kind) == kind; });
    if (!used) continue;
    for (const std::string& name : common::OptimizerStateNames(
             static_cast<common::OptimizerKind>(kind))) {
      if (std::find(state_names_.begin(), state_names_.end(), name) ==
          state_names_.end()) {
        state_names_.push_back(name);
      }
    }
  }
  // Vector by vector: assign's θ-sized fill value would be allocated (and,
  // with the server's untrimmed heap, kept in RSS) even for sgd's none.
  state_.assign(state_names_.size(), {});
  for (std::vector<float>& vector : state_) vector.assign(keys_.size(), 0.0f);
  trial_state_.assign(state_names_.size(), {});
  segments_.clear();
  all_sgd_ = true;
  for (const common::TensorSegment& segment :
       common::SegmentsInRange(tensors, keys_)) {
    SegmentRule& rule = segments_.emplace_back();
    rule.segment = segment;
    rule.optimizer = optimizers[segment.tensor_index];
    rule.schedule =
        ScheduleOf(tensors[segment.tensor_index], default_schedule_);
    for (const std::string& name :
         common::OptimizerStateNames(rule.optimizer.kind)) {
      rule.state.push_back(
          std::find(state_names_.begin(), state_names_.end(), name) -
          state_names_.begin());
    }
    all_sgd_ = all_sgd_ && rule.optimizer.kind == common::OptimizerKind::kSgd;
  }
}

std::string DenseSlice::TakeState(const std::vector<std::string>& names,
                                  std::vector<std::vector<float>> state) {
  std::vector<std::string> missing;
  std::vector<std::string> ignored;
  for (size_t i = 0; i < state_names_.size(); ++i) {
    const auto at = std::find(names.begin(), names.end(), state_names_[i]);
    if (at == names.end()) {
      missing.push_back(state_names_[i]);
    } else {
      state_[i] = std::move(state[at - names.begin()]);
    }
  }
  for (const std::string& name : names) {
    if (std::find(state_names_.begin(), state_names_.end(), name) ==
        state_names_.end()) {
      ignored.push_back(name);
    }
  }
  if (missing.empty() && ignored.empty()) return "";
  return absl::StrCat(
      missing.empty() ? ""
                      : absl::StrCat("state ", absl::StrJoin(missing, ", "),
                                     " starts at 0 (the file has none)"),
      !missing.empty() && !ignored.empty() ? "; " : "",
      ignored.empty()
          ? ""
          : absl::StrCat("the file's state ", absl::StrJoin(ignored, ", "),
                         " is dropped (no optimizer here keeps it)"));
}

void DenseSlice::ApplyRule(const SegmentRule& rule, uint64_t version,
                           size_t done, absl::Span<const float> gradient,
                           absl::Span<float> theta,
                           std::vector<std::vector<float>>* trial_state) {
  common::UpdateOptions update = update_;
  update.learning_rate =
      ScheduledRate(update_.learning_rate, rule.schedule, version);
  if (rule.optimizer.kind == common::OptimizerKind::kSgd) {
    common::ApplyUpdate(update, rule.segment.regularize, gradient, theta);
    return;
  }
  if (update.learning_rate == 0) return;
  const size_t offset = rule.segment.keys.begin - keys_.begin + done;
  std::array<absl::Span<float>, 2> state;
  for (size_t i = 0; i < rule.state.size(); ++i) {
    state[i] =
        trial_state != nullptr
            ? absl::MakeSpan((*trial_state)[rule.state[i]]).first(theta.size())
            : absl::MakeSpan(state_[rule.state[i]])
                  .subspan(offset, theta.size());
  }
  common::ApplyOptimizer(rule.optimizer, update, rule.segment.regularize,
                         version + 1, gradient, theta,
                         absl::MakeConstSpan(state).first(rule.state.size()));
}

double DenseSlice::LargestRate(uint64_t version) const {
  double largest = 0;
  for (const SegmentRule& rule : segments_) {
    largest = std::max<double>(
        largest, ScheduledRate(update_.learning_rate, rule.schedule, version));
  }
  return largest;
}

void DenseSlice::Read(const common::KeyRange& keys, std::string* out) const {
  common::FloatsToBytes(absl::MakeConstSpan(*theta_).subspan(
                            keys.begin - keys_.begin, keys.size()),
                        out);
}

std::vector<float>& DenseSlice::MutableTheta() {
  // Owners are added only under the lock held here (Share), so a count of
  // 1 stays 1; a reader letting go meanwhile only costs a needless copy.
  // Readers read under the same lock, so reusing the buffer is race-free.
  if (theta_.use_count() > 1) {
    theta_ = std::make_shared<std::vector<float>>(*theta_);
  }
  return *theta_;
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
    const absl::Cord& bytes, uint64_t version) {
  CheckedGradient checked;
  if (auto bad = FindNonFiniteGradient(bytes, &checked.largest)) {
    return NonFiniteGradientError(bad->first, bad->second);
  }
  if (SurelyFinite(checked.largest, version)) return checked;
  // Finite gradients can still carry θ past the float range: when the
  // bound cannot rule it out, run the update on copies.
  checked.exactly = true;
  absl::Cord::CharIterator from = bytes.char_begin();
  if (auto result = FindNonFiniteResult(
          [&](absl::Span<float> out) { common::ReadFloats(from, out); },
          version)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "applying this gradient would make the value of key ",
        keys_.begin + result->offset, " ", result->value,
        ", which is not finite; the push is refused and θ unchanged "
        "(is the learning rate too high?)"));
  }
  return checked;
}

void DenseSlice::ApplyBytes(const absl::Cord& bytes,
                            const CheckedGradient& checked, uint64_t version) {
  // Segments tile the slice in order, so one pass reads the gradient.
  absl::Cord::CharIterator from = bytes.char_begin();
  for (const SegmentRule& rule : segments_) {
    const size_t offset = rule.segment.keys.begin - keys_.begin;
    const size_t size = rule.segment.keys.size();
    absl::Span<float> theta =
        absl::MakeSpan(MutableTheta()).subspan(offset, size);
    if (update_.has_ball()) {
      // The ball's norm is the whole segment's: the rule needs it whole.
      if (segment_.size() < size) segment_.resize(size);
      common::ReadFloats(from, absl::MakeSpan(segment_).first(size));
      ApplyRule(rule, version, 0, absl::MakeConstSpan(segment_).first(size),
                theta, nullptr);
      continue;
    }
    // Elementwise otherwise: a cache-sized piece at a time, so no θ-sized
    // copy of the gradient is ever alive.
    for (size_t done = 0; done < size; done += chunk_.size()) {
      const size_t n = std::min(chunk_.size(), size - done);
      common::ReadFloats(from, absl::MakeSpan(chunk_).first(n));
      ApplyRule(rule, version, done, absl::MakeConstSpan(chunk_).first(n),
                theta.subspan(done, n), nullptr);
    }
  }
  BoundAfterUpdate(checked.largest, checked.exactly, version);
}

std::optional<DenseSlice::NonFiniteResult> DenseSlice::ApplyIfFinite(
    absl::Span<const float> gradient, uint64_t version) {
  // A mean of finite gradients can itself overflow (inf fails the bound).
  const double largest = LargestMagnitude(gradient);
  const bool check_exactly = !SurelyFinite(largest, version);
  if (check_exactly) {
    size_t read = 0;
    if (auto result = FindNonFiniteResult(
            [&](absl::Span<float> out) {
              std::copy_n(gradient.begin() + read, out.size(), out.begin());
              read += out.size();
            },
            version)) {
      return result;
    }
  }
  for (const SegmentRule& rule : segments_) {
    const size_t offset = rule.segment.keys.begin - keys_.begin;
    const size_t size = rule.segment.keys.size();
    ApplyRule(rule, version, 0, gradient.subspan(offset, size),
              absl::MakeSpan(MutableTheta()).subspan(offset, size), nullptr);
  }
  BoundAfterUpdate(largest, check_exactly, version);
  return std::nullopt;
}

std::optional<std::pair<size_t, float>> DenseSlice::FindNonFiniteGradient(
    const absl::Cord& bytes, double* largest) {
  // Read where the bytes lie, in the request's slices: a copy first cost
  // as much as the check (perf, 1M floats). A float split between two
  // slices is put together in `split`.
  int32_t largest_bits = 0;
  size_t done = 0;  // floats checked
  char split[sizeof(float)];
  size_t split_bytes = 0;
  // Checks n whole floats at `data`: false when one is not finite.
  auto check = [&](const char* data, size_t n) {
    const int32_t bits = LargestMagnitudeBits(data, n);
    if (bits >= kNonFiniteBits) return false;
    largest_bits = std::max(largest_bits, bits);
    done += n;
    return true;
  };
  for (absl::string_view piece : bytes.Chunks()) {
    const char* bad = nullptr;
    size_t bad_floats = 0;
    if (split_bytes > 0) {
      const size_t take = std::min(piece.size(), sizeof(float) - split_bytes);
      std::memcpy(split + split_bytes, piece.data(), take);
      split_bytes += take;
      piece.remove_prefix(take);
      if (split_bytes < sizeof(float)) continue;
      split_bytes = 0;
      if (!check(split, 1)) {
        bad = split;
        bad_floats = 1;
      }
    }
    const size_t whole = piece.size() / sizeof(float);
    if (bad == nullptr && !check(piece.data(), whole)) {
      bad = piece.data();
      bad_floats = whole;
    }
    if (bad != nullptr) {
      const auto [at, value] = FirstNonFinite(bad, bad_floats);
      return std::make_pair(done + at, value);
    }
    split_bytes = piece.size() - whole * sizeof(float);
    std::memcpy(split, piece.data() + whole * sizeof(float), split_bytes);
  }
  *largest = MagnitudeOfBits(largest_bits);
  return std::nullopt;
}

bool DenseSlice::SurelyFinite(double largest, uint64_t version) const {
  // The penalty's terms are not bounded here, nor the other optimizers'
  // steps: always check those exactly.
  if (update_.penalty_beta > 0 || !all_sgd_) return false;
  // |θ − α(g + λ₂θ)| ≤ max(1, |1 − αλ₂|)·|θ| + α|g| (exempt tensors have
  // λ₂ = 0), for every segment's scheduled α; the soft-threshold, the box
  // clamp and the ball's scaling only shrink magnitudes.
  const double rate = LargestRate(version);
  const double keep = std::max(1.0, std::fabs(1.0 - rate * update_.l2));
  return keep * theta_bound_ + rate * largest < kSurelyFiniteBelow;
}

void DenseSlice::BoundAfterUpdate(double largest, bool exact,
                                  uint64_t version) {
  // With a penalty every update is checked exactly: no bound is used.
  if (update_.penalty_beta > 0) return;
  if (exact) {
    theta_bound_ = LargestMagnitude(*theta_);
    return;
  }
  const double rate = LargestRate(version);
  const double keep = std::max(1.0, std::fabs(1.0 - rate * update_.l2));
  theta_bound_ = keep * theta_bound_ + rate * largest;
}

std::optional<DenseSlice::NonFiniteResult> DenseSlice::FindNonFiniteResult(
    const std::function<void(absl::Span<float>)>& read, uint64_t version) {
  for (const SegmentRule& rule : segments_) {
    const size_t offset = rule.segment.keys.begin - keys_.begin;
    const size_t size = rule.segment.keys.size();
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
      std::copy_n(theta_->begin() + offset + done, n, theta.begin());
      // The optimizer's state changes with θ: the trial runs on copies.
      for (size_t index : rule.state) {
        std::vector<float>& copy = trial_state_[index];
        if (copy.size() < n) copy.resize(piece);
        std::copy_n(state_[index].begin() + offset + done, n, copy.begin());
      }
      ApplyRule(rule, version, done, gradient, theta, &trial_state_);
      if (auto at = common::FindNonFinite(theta)) {
        return NonFiniteResult{offset + done + *at, theta[*at]};
      }
    }
  }
  return std::nullopt;
}

}  // namespace ps::server
