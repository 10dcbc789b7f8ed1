#ifndef PS_SERVER_REPLICATION_REPLAY_CLOCK_H_
#define PS_SERVER_REPLICATION_REPLAY_CLOCK_H_

#include <atomic>
#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace ps::server {

// A backup's shard clock: the time of the primary's change being replayed,
// so leases and round timeouts decide exactly as they did on the primary.
// Before the first Set (and on a primary) it is the real clock.
class ReplayClock {
 public:
  void Set(absl::Time t) {
    nanos_.store(absl::ToUnixNanos(t), std::memory_order_release);
  }
  // A backup that takes over as primary: its time is its own again.
  void UseRealTime() { nanos_.store(kReal, std::memory_order_release); }
  absl::Time Now() const {
    const int64_t n = nanos_.load(std::memory_order_acquire);
    return n == kReal ? absl::Now() : absl::FromUnixNanos(n);
  }
  // For ShardOptions::clock; the clock must outlive the shard.
  common::Clock AsClock() const {
    return [this] { return Now(); };
  }

 private:
  static constexpr int64_t kReal = INT64_MIN;
  std::atomic<int64_t> nanos_{kReal};
};

}  // namespace ps::server

#endif  // PS_SERVER_REPLICATION_REPLAY_CLOCK_H_
