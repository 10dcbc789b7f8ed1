#ifndef PS_WORKER_GRADIENT_COMPRESSOR_H_
#define PS_WORKER_GRADIENT_COMPRESSOR_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/gradient_codec.h"
#include "common/key_range.h"
#include "common/tensor_spec.h"
#include "ps/v1/parameter_server.pb.h"

namespace ps::worker {

// Encodes a worker's dense gradient for the wire, tensor by tensor, as each
// tensor's TensorSpec::compression says (else the worker's --compression),
// and keeps top-k's error feedback: what a step did not send is added to
// the next step's gradient, so over the steps every coordinate's gradient
// arrives. The residual lives in this process only: a restarted worker
// starts from zero, and what its predecessor had not sent is lost, as the
// gradient of a push that never arrived is.
//
// Top-k picks a tensor's coordinates over the whole tensor (not per
// shard), so what is sent does not depend on the number of shards.
class GradientCompressor {
 public:
  // INVALID_ARGUMENT naming the tensor when its compression does not parse.
  static absl::StatusOr<GradientCompressor> Create(
      const std::vector<common::TensorSpec>& tensors,
      const common::Compression& fallback);

  // False when every tensor travels as plain float32: the caller then
  // sends `gradient` bytes as they are.
  bool compresses() const { return compresses_; }

  // Once per push, before Encode: adds the residual to the top-k tensors'
  // gradient, picks their coordinates, and keeps the rest as the residual.
  void Select(absl::Span<const float> gradient);

  // The parts of `gradient` (the one last given to Select) for `keys`, in
  // key order: one part per tensor overlapping them. Thread-safe beside
  // other Encode calls (each shard's thread encodes its own keys).
  void Encode(
      const common::KeyRange& keys, absl::Span<const float> gradient,
      google::protobuf::RepeatedPtrField<ps::v1::GradientPart>* parts) const;

  // What top-k has not sent yet, per key (zero for the other tensors).
  absl::Span<const float> residual() const { return residual_; }

 private:
  GradientCompressor() = default;

  std::vector<common::TensorSpec> tensors_;
  std::vector<common::Compression> compressions_;  // one per tensor
  std::vector<common::KeyRange> ranges_;           // one per tensor
  bool compresses_ = false;
  bool any_topk_ = false;
  // Top-k tensors only (the others' entries stay 0): what has not been
  // sent yet; and this step's chosen keys, increasing, with their values.
  std::vector<float> residual_;
  std::vector<uint64_t> chosen_;
  std::vector<float> chosen_values_;
};

}  // namespace ps::worker

#endif  // PS_WORKER_GRADIENT_COMPRESSOR_H_
