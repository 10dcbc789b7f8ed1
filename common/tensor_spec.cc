#include "common/tensor_spec.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/gradient_codec.h"
#include "common/lr_schedule.h"
#include "common/optimizer.h"

namespace ps::common {

uint64_t TensorSpec::num_elements() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

std::string TensorSpec::ToString() const {
  std::vector<std::string> notes;
  if (exempt_from_regularization) notes.push_back("no regularization");
  if (!optimizer.empty())
    notes.push_back(absl::StrCat("optimizer ", optimizer));
  if (!lr_schedule.empty()) {
    notes.push_back(absl::StrCat("lr_schedule ", lr_schedule));
  }
  if (!compression.empty()) {
    notes.push_back(absl::StrCat("compression ", compression));
  }
  return absl::StrCat(
      name, "[", absl::StrJoin(shape, ","), "]",
      notes.empty() ? "" : absl::StrCat(" (", absl::StrJoin(notes, ", "), ")"));
}

uint64_t NumKeys(const std::vector<TensorSpec>& tensors) {
  uint64_t total = 0;
  for (const TensorSpec& t : tensors) total += t.num_elements();
  return total;
}

absl::Status ValidateTensorSpecs(const std::vector<TensorSpec>& tensors) {
  if (tensors.empty()) {
    return absl::InvalidArgumentError("the model declares no tensors");
  }
  absl::flat_hash_set<std::string> names;
  uint64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpec& t = tensors[i];
    if (t.name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor #", i, " has an empty name"));
    }
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor name '", t.name, "' is declared twice"));
    }
    if (t.shape.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "' has no dimensions"));
    }
    // Each partial product is checked before the next multiplication, so
    // no shape can wrap around 2^64 into a small count.
    uint64_t elements = 1;
    for (int64_t d : t.shape) {
      if (d <= 0 || static_cast<uint64_t>(d) > kMaxKeys) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", t.name, "' has dimension ", d,
                         "; dimensions must be positive and at most 2^40"));
      }
      if (elements > kMaxKeys / static_cast<uint64_t>(d)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", t.name, "' of shape [", absl::StrJoin(t.shape, ","),
            "] has more than 2^40 elements"));
      }
      elements *= static_cast<uint64_t>(d);
    }
    if (total > kMaxKeys - elements) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the model has more than 2^40 keys (at tensor '", t.name, "')"));
    }
    total += elements;
    if (!t.optimizer.empty()) {
      if (absl::Status s = ParseOptimizerSpec(t.optimizer).status(); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", t.name, "': ", s.message()));
      }
    }
    if (!t.lr_schedule.empty()) {
      if (absl::Status s = ParseLrSchedule(t.lr_schedule).status(); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", t.name, "': ", s.message()));
      }
    }
    if (absl::Status s = ParseCompression(t.compression).status(); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "': ", s.message()));
    }
  }
  return absl::OkStatus();
}

std::string DescribeDifference(const std::vector<TensorSpec>& a,
                               const std::vector<TensorSpec>& b) {
  const size_t common = std::min(a.size(), b.size());
  for (size_t i = 0; i < common; ++i) {
    if (a[i].name != b[i].name || a[i].shape != b[i].shape ||
        a[i].exempt_from_regularization != b[i].exempt_from_regularization ||
        a[i].optimizer != b[i].optimizer ||
        a[i].lr_schedule != b[i].lr_schedule) {
      return absl::StrCat("tensor #", i, " is declared as ", a[i].ToString(),
                          " but requested as ", b[i].ToString());
    }
  }
  if (a.size() != b.size()) {
    return absl::StrCat("the model is declared with ", a.size(),
                        " tensors but requested with ", b.size());
  }
  return "";
}

std::vector<TensorSegment> SegmentsInRange(
    const std::vector<TensorSpec>& tensors, KeyRange range) {
  std::vector<TensorSegment> segments;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size() && offset < range.end; ++i) {
    const uint64_t begin = offset;
    const uint64_t end = offset + tensors[i].num_elements();
    offset = end;
    const uint64_t lo = std::max(begin, range.begin);
    const uint64_t hi = std::min(end, range.end);
    if (lo < hi) {
      segments.push_back({i, {lo, hi}, !tensors[i].exempt_from_regularization});
    }
  }
  return segments;
}

}  // namespace ps::common
