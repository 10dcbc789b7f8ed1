#include "server/push_stream.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/float_bytes.h"

namespace ps::server {

PushStream::PushStream(const common::KeyRange& keys, std::string call,
                       GradientBufferPool& buffers)
    : keys_(keys),
      call_(std::move(call)),
      buffers_(&buffers),
      values_(buffers.Take(keys.size())) {}

PushStream::~PushStream() {
  // The Cord's end gives the buffer back at once.
  if (values_ != nullptr) buffers_->Wrap(std::move(values_));
}

absl::Status PushStream::Add(uint64_t offset, const absl::Cord& values) {
  if (!spoilt_.ok()) return spoilt_;
  ++chunks_;
  const std::string what =
      absl::StrCat("chunk ", chunks_, " of the ", call_, " (offset ", offset,
                   ", ", values.size(), " bytes)");
  absl::Status bad;
  if (offset != received_) {
    bad = absl::InvalidArgumentError(absl::StrCat(
        what, " does not start where the previous chunk ended (offset ",
        received_,
        "): chunks must follow one another in key order without "
        "gap or overlap; nothing was applied"));
  } else if (values.size() % sizeof(float) != 0) {
    bad = absl::InvalidArgumentError(
        absl::StrCat(what, " is not a whole number of float32 values"));
  } else if (values.size() / sizeof(float) > keys_.size() - received_) {
    bad = absl::InvalidArgumentError(
        absl::StrCat(what, " runs past the shard's ", keys_.size(), " keys ",
                     keys_.ToString(), "; nothing was applied"));
  }
  if (!bad.ok()) {
    spoilt_ = bad;
    return bad;
  }
  const absl::Span<float> staged = absl::MakeSpan(*values_).subspan(
      received_, values.size() / sizeof(float));
  absl::Cord::CharIterator from = values.char_begin();
  common::ReadFloats(from, staged);
  received_ += staged.size();
  return absl::OkStatus();
}

absl::StatusOr<absl::Cord> PushStream::Take() {
  if (!spoilt_.ok()) return spoilt_;
  if (received_ != keys_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ", call_, " ended after ", received_, " of the shard's ",
        keys_.size(), " keys ", keys_.ToString(), "; nothing was applied"));
  }
  // The Cord keeps the buffer: no copy of the assembled values.
  return buffers_->Wrap(std::move(values_));
}

}  // namespace ps::server
