#ifndef PS_SERVER_PUSH_STREAM_H_
#define PS_SERVER_PUSH_STREAM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "common/key_range.h"
#include "server/gradient_buffer_pool.h"

namespace ps::server {

// Assembles the dense values of one streamed call from its chunks: a
// push's gradient (ps.v1.PushStream) or an Init's initial θ (InitStream),
// so the shard sees them whole or not at all: nothing reaches the shard
// until Take, which succeeds only once every key has its value. Each chunk
// is checked as it arrives (in order, inside the shard's keys, whole
// floats), so a bad stream is refused at its first bad chunk and costs no
// more than the shard's θ size, in a buffer from the service's pool: the
// same buffer serves push after push (and the Init before them), so the
// server's heap does not fragment under θ-sized buffers coming and going.
// The values themselves are the shard's to
// judge (finite, ...), once, as for a call in one message. Plain C++, one
// stream at a time; not thread-safe (a stream's reads arrive one after
// another).
class PushStream {
 public:
  // A stream for the values of `keys` (the shard's whole range, which the
  // caller checked against the call's): takes a buffer of keys.size()
  // floats from `buffers`, which must outlive the stream. `call` names the
  // call in errors ("streamed push", "streamed Init").
  PushStream(const common::KeyRange& keys, std::string call,
             GradientBufferPool& buffers);
  // A stream not taken gives its buffer back.
  ~PushStream();
  PushStream(const PushStream&) = delete;
  PushStream& operator=(const PushStream&) = delete;

  // Stages `values` (float32 bytes) for the keys from keys.begin + offset.
  // INVALID_ARGUMENT, naming the chunk and the problem, when the offset is
  // not where the previous chunk ended (a gap, an overlap, out of order),
  // the bytes are not whole floats, or they run past the shard's keys.
  // After an error the stream is spoilt: every later call fails.
  absl::Status Add(uint64_t offset, const absl::Cord& values);

  // The whole values, when every key has its value (INVALID_ARGUMENT
  // saying how many arrived otherwise). The bytes move into the Cord: the
  // stream is empty afterwards; the buffer goes back to the pool with the
  // Cord's last copy.
  absl::StatusOr<absl::Cord> Take();

  // Keys staged so far.
  uint64_t received() const { return received_; }

 private:
  common::KeyRange keys_;
  std::string call_;
  GradientBufferPool* buffers_;
  std::unique_ptr<std::vector<float>> values_;
  uint64_t received_ = 0;
  uint64_t chunks_ = 0;
  absl::Status spoilt_;
};

}  // namespace ps::server

#endif  // PS_SERVER_PUSH_STREAM_H_
