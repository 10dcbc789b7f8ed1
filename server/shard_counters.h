#ifndef PS_SERVER_SHARD_COUNTERS_H_
#define PS_SERVER_SHARD_COUNTERS_H_

#include <algorithm>
#include <cstdint>

#include "server/consistency_policy.h"

namespace ps::server {

// What a shard counts since it started, for Status (psctl, metrics): how
// pushes ended and why rounds closed. The shard's mutex guards it.
struct ShardCounters {
  uint64_t pushes_applied = 0;
  uint64_t pushes_duplicate = 0;
  uint64_t pushes_stale = 0;
  uint64_t pushes_rejected = 0;
  uint64_t rounds_closed_all_live = 0;
  uint64_t rounds_closed_by_quorum = 0;
  uint64_t rounds_closed_by_timeout = 0;
  // SSP: the largest (reader's clock − slowest live clock) a pull was
  // answered with.
  uint64_t max_read_clock_gap = 0;
  // Pulls refused (RESOURCE_EXHAUSTED) because --max_parked_pulls, or the
  // per-worker bound, was reached.
  uint64_t pulls_refused_over_total = 0;
  uint64_t pulls_refused_over_worker = 0;

  void CountRoundClosed(RoundClose why) {
    switch (why) {
      case RoundClose::kAllLive:
        ++rounds_closed_all_live;
        break;
      case RoundClose::kQuorum:
        ++rounds_closed_by_quorum;
        break;
      case RoundClose::kTimeout:
        ++rounds_closed_by_timeout;
        break;
      case RoundClose::kNotYet:
        break;
    }
  }
  void CountParkRefused(bool over_total) {
    ++(over_total ? pulls_refused_over_total : pulls_refused_over_worker);
  }
  void CountRead(uint64_t clock_gap) {
    max_read_clock_gap = std::max(max_read_clock_gap, clock_gap);
  }
};

}  // namespace ps::server

#endif  // PS_SERVER_SHARD_COUNTERS_H_
