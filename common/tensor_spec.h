#ifndef PS_COMMON_TENSOR_SPEC_H_
#define PS_COMMON_TENSOR_SPEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/key_range.h"

namespace ps::common {

// A named dense float32 tensor of the model. The model's tensors,
// concatenated in declaration order, form the key space [0, D).
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  // L1/L2 regularization skips this tensor (biases, usually).
  bool exempt_from_regularization = false;
  // The tensor's own optimizer (common/optimizer.h's ParseOptimizerSpec
  // syntax, "adam(beta1=0.9)") and learning-rate schedule (ParseLrSchedule's,
  // "cosine:1000"). Empty: the server's --optimizer and --lr_schedule.
  // (Initialized, so that {name, shape, exempt} still names every field.)
  std::string optimizer = "";
  std::string lr_schedule = "";
  // How workers push this tensor's gradient (common/gradient_codec.h's
  // ParseCompression syntax, "fp16", "topk:0.01"). Empty: the worker's
  // --compression. A worker-side choice, not part of the model's identity:
  // DescribeDifference ignores it and checkpoints do not keep it.
  std::string compression = "";

  uint64_t num_elements() const;
  // "fc1/bias[128] (no regularization, optimizer sgd)"
  std::string ToString() const;
};

// The most keys a model may have: every element count, product and sum
// below it is checked (ValidateTensorSpecs), so none can overflow.
inline constexpr uint64_t kMaxKeys = uint64_t{1} << 40;

// Total number of keys D; meaningful only for validated specs.
uint64_t NumKeys(const std::vector<TensorSpec>& tensors);

// Non-empty unique names, positive dimensions, at least one tensor, at most
// kMaxKeys keys in all (products checked for overflow), and an optimizer,
// schedule and compression that parse when given (the error names the
// tensor).
absl::Status ValidateTensorSpecs(const std::vector<TensorSpec>& tensors);

// Empty when `a` and `b` declare the same model; otherwise one sentence that
// names the first difference, for error messages.
std::string DescribeDifference(const std::vector<TensorSpec>& a,
                               const std::vector<TensorSpec>& b);

// The part of one tensor that falls inside a key range.
struct TensorSegment {
  size_t tensor_index = 0;
  KeyRange keys;  // absolute keys
  bool regularize = true;
};

// The tensors overlapping `range`, clipped to it, in key order.
std::vector<TensorSegment> SegmentsInRange(
    const std::vector<TensorSpec>& tensors, KeyRange range);

}  // namespace ps::common

#endif  // PS_COMMON_TENSOR_SPEC_H_
