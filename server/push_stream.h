#ifndef PS_SERVER_PUSH_STREAM_H_
#define PS_SERVER_PUSH_STREAM_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "common/key_range.h"

namespace ps::server {

// Assembles one streamed push's dense gradient (ps.v1.PushStream) from its
// chunks, so the shard sees it whole or not at all: nothing reaches the
// shard until Take, which succeeds only once every key has its value.
// Each chunk is checked as it arrives (in order, inside the shard's keys,
// whole floats, finite), so a bad stream is refused at its first bad chunk
// and costs no more than the shard's θ size. Plain C++, one stream at a
// time; not thread-safe (a stream's reads arrive one after another).
class PushStream {
 public:
  // A stream for the gradient of `keys` (the shard's whole range, which the
  // caller checked against the push's). Allocates keys.size() floats.
  explicit PushStream(const common::KeyRange& keys);

  // Stages `values` (float32 bytes) for the keys from keys.begin + offset.
  // INVALID_ARGUMENT, naming the chunk and the problem, when the offset is
  // not where the previous chunk ended (a gap, an overlap, out of order),
  // the bytes are not whole floats, they run past the shard's keys, or a
  // value is NaN or infinite. After an error the stream is spoilt: every
  // later call fails.
  absl::Status Add(uint64_t offset, const absl::Cord& values);

  // The whole gradient, when every key has its value (INVALID_ARGUMENT
  // saying how many arrived otherwise). The bytes move into the Cord: the
  // stream is empty afterwards.
  absl::StatusOr<absl::Cord> Take();

  // Keys staged so far.
  uint64_t received() const { return received_; }

 private:
  common::KeyRange keys_;
  std::vector<float> gradient_;
  uint64_t received_ = 0;
  uint64_t chunks_ = 0;
  absl::Status spoilt_;
};

}  // namespace ps::server

#endif  // PS_SERVER_PUSH_STREAM_H_
