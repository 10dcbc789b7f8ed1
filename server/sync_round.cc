#include "server/sync_round.h"

#include <algorithm>
#include <cassert>

namespace ps::server {

absl::Span<float> SyncRound::Slot(uint32_t worker) {
  if (worker >= slots_.size()) {
    slots_.resize(worker + 1);
    batch_sizes_.resize(worker + 1, 0);
  }
  slots_[worker].resize(num_keys_);
  return absl::MakeSpan(slots_[worker]);
}

void SyncRound::Commit(uint32_t worker, uint32_t batch_size) {
  assert(batch_size > 0 && worker < batch_sizes_.size() &&
         batch_sizes_[worker] == 0);
  batch_sizes_[worker] = batch_size;
  ++received_;
}

void SyncRound::MarkLate(uint32_t worker) {
  if (worker >= late_.size()) late_.resize(worker + 1, false);
  late_[worker] = true;
}

void SyncRound::Mean(absl::Span<float> out, double examples) const {
  assert(out.size() == num_keys_ && received_ > 0 && examples > 0);
  std::fill(out.begin(), out.end(), 0.0f);
  for (size_t k = 0; k < slots_.size(); ++k) {
    if (batch_sizes_[k] == 0) continue;
    const float weight = static_cast<float>(batch_sizes_[k]);
    const float* g = slots_[k].data();
    for (size_t i = 0; i < num_keys_; ++i) out[i] += weight * g[i];
  }
  const float total = static_cast<float>(examples);
  for (float& v : out) v /= total;
}

uint64_t SyncRound::samples() const {
  uint64_t total = 0;
  for (uint32_t b : batch_sizes_) total += b;
  return total;
}

std::vector<uint32_t> SyncRound::Senders() const {
  std::vector<uint32_t> senders;
  for (uint32_t k = 0; k < batch_sizes_.size(); ++k) {
    if (batch_sizes_[k] > 0) senders.push_back(k);
  }
  return senders;
}

void SyncRound::Clear() {
  std::fill(batch_sizes_.begin(), batch_sizes_.end(), 0);
  std::fill(late_.begin(), late_.end(), false);
  received_ = 0;
}

}  // namespace ps::server
