#include "worker/gradient_compressor.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/float_bytes.h"
#include "common/rpc/convert.h"

namespace ps::worker {

using common::CompressionKind;

absl::StatusOr<GradientCompressor> GradientCompressor::Create(
    const std::vector<common::TensorSpec>& tensors,
    const common::Compression& fallback) {
  GradientCompressor compressor;
  compressor.tensors_ = tensors;
  uint64_t begin = 0;
  for (const common::TensorSpec& tensor : tensors) {
    common::Compression compression = fallback;
    if (!tensor.compression.empty()) {
      absl::StatusOr<common::Compression> own =
          common::ParseCompression(tensor.compression);
      if (!own.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", tensor.name, "': ", own.status().message()));
      }
      compression = *own;
    }
    if (compression.kind == CompressionKind::kTopK &&
        tensor.num_elements() > uint64_t{UINT32_MAX}) {
      // The wire's top-k offsets are uint32 (ps.v1.GradientPart).
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", tensor.name, "' has ", tensor.num_elements(),
          " elements; topk can compress tensors of at most 2^32 - 1"));
    }
    compressor.compresses_ |= compression.kind != CompressionKind::kNone;
    compressor.any_topk_ |= compression.kind == CompressionKind::kTopK;
    compressor.compressions_.push_back(compression);
    compressor.ranges_.push_back({begin, begin + tensor.num_elements()});
    begin += tensor.num_elements();
  }
  if (compressor.any_topk_) compressor.residual_.assign(begin, 0.0f);
  return compressor;
}

void GradientCompressor::Select(absl::Span<const float> gradient) {
  if (!any_topk_) return;
  chosen_.clear();
  chosen_values_.clear();
  for (size_t t = 0; t < tensors_.size(); ++t) {
    if (compressions_[t].kind != CompressionKind::kTopK) continue;
    const common::KeyRange& keys = ranges_[t];
    // The residual becomes this step's corrected gradient in place; what is
    // sent is taken out of it below, and the rest stays for the next step.
    const absl::Span<float> corrected =
        absl::MakeSpan(residual_).subspan(keys.begin, keys.size());
    const absl::Span<const float> step =
        gradient.subspan(keys.begin, keys.size());
    for (size_t i = 0; i < corrected.size(); ++i) corrected[i] += step[i];
    for (uint32_t offset : common::SelectTopK(
             corrected,
             common::TopKCount(keys.size(), compressions_[t].ratio))) {
      chosen_.push_back(keys.begin + offset);
      chosen_values_.push_back(corrected[offset]);
      corrected[offset] = 0.0f;  // sent in full
    }
  }
}

void GradientCompressor::Encode(
    const common::KeyRange& keys, absl::Span<const float> gradient,
    google::protobuf::RepeatedPtrField<ps::v1::GradientPart>* parts) const {
  parts->Clear();
  for (const common::TensorSegment& segment :
       common::SegmentsInRange(tensors_, keys)) {
    const common::Compression& compression =
        compressions_[segment.tensor_index];
    const common::KeyRange& part_keys = segment.keys;
    ps::v1::GradientPart* part = parts->Add();
    part->set_encoding(rpc::ToProto(compression.kind));
    part->set_num_keys(part_keys.size());
    if (compression.kind != CompressionKind::kTopK) {
      common::EncodeDense(compression.kind,
                          gradient.subspan(part_keys.begin, part_keys.size()),
                          part->mutable_values());
      continue;
    }
    const size_t first =
        std::lower_bound(chosen_.begin(), chosen_.end(), part_keys.begin) -
        chosen_.begin();
    const size_t last = std::lower_bound(chosen_.begin() + first, chosen_.end(),
                                         part_keys.end) -
                        chosen_.begin();
    std::string* indices = part->mutable_indices();
    indices->resize((last - first) * sizeof(uint32_t));
    for (size_t j = first; j < last; ++j) {
      const uint32_t index =
          static_cast<uint32_t>(chosen_[j] - part_keys.begin);
      std::memcpy(indices->data() + (j - first) * sizeof index, &index,
                  sizeof index);
    }
    common::FloatsToBytes(
        absl::MakeConstSpan(chosen_values_).subspan(first, last - first),
        part->mutable_values());
  }
}

}  // namespace ps::worker
