#ifndef PS_SERVER_SYNC_ROUND_H_
#define PS_SERVER_SYNC_ROUND_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace ps::server {

// The gradients of one synchronous round, one slot per worker rank. Slots are
// allocated once and reused, since touching fresh pages costs more than the
// copy itself. The mean is reduced in rank order, never arrival order, so a
// round's result is bit-for-bit reproducible.
class SyncRound {
 public:
  explicit SyncRound(size_t num_keys) : num_keys_(num_keys) {}

  bool Has(uint32_t worker) const {
    return worker < batch_sizes_.size() && batch_sizes_[worker] > 0;
  }
  uint32_t received() const { return received_; }

  // A worker whose push came after its round closed (stale) is late for
  // this one: it pushes here again only once every other shard answered its
  // step, which may wait on this round. Cleared when the round closes.
  void MarkLate(uint32_t worker);
  bool Late(uint32_t worker) const {
    return worker < late_.size() && late_[worker];
  }

  // Where the worker's gradient is copied before it is validated; it counts
  // only after Commit. A worker's slot is allocated on its first gradient.
  absl::Span<float> Slot(uint32_t worker);
  void Commit(uint32_t worker, uint32_t batch_size);

  // Σₖ bₖ·gₖ / `examples` over the received gradients, k in rank order:
  // with `examples` = samples(), the mean over what actually arrived
  // (ConsistencyPolicy::RoundExamples says what a round divides by).
  void Mean(absl::Span<float> out, double examples) const;
  uint64_t samples() const;

  void Clear();

  // The ranks that pushed, in rank order, and what they pushed: for
  // checkpoints of an open round.
  std::vector<uint32_t> Senders() const;
  uint32_t batch_size(uint32_t worker) const { return batch_sizes_[worker]; }
  absl::Span<const float> gradient(uint32_t worker) const {
    return slots_[worker];
  }

 private:
  size_t num_keys_;
  std::vector<std::vector<float>> slots_;
  std::vector<uint32_t> batch_sizes_;  // 0: nothing received from this rank
  std::vector<bool> late_;             // by rank
  uint32_t received_ = 0;
};

}  // namespace ps::server

#endif  // PS_SERVER_SYNC_ROUND_H_
