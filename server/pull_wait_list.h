#ifndef PS_SERVER_PULL_WAIT_LIST_H_
#define PS_SERVER_PULL_WAIT_LIST_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/consistency_policy.h"
#include "server/membership.h"
#include "server/shard_requests.h"

namespace ps::server {

// Pulls parked until the shard can answer them, each under its caller's
// ticket and with a deadline. It never runs a callback: every Take hands
// the parked pulls back, so the shard runs them after releasing its lock.
// Not thread-safe: the shard's mutex guards it.
class PullWaitList {
 public:
  using Done = std::function<void(absl::StatusOr<PullResult>)>;
  using Ticket = uint64_t;

  // At most `max_parked` pulls wait at once, at most `max_per_worker` of
  // them under one worker id: each costs a reactor and a call's buffers, so
  // a client opening pulls in a loop must not hold the server's memory.
  explicit PullWaitList(uint32_t max_parked = UINT32_MAX,
                        uint32_t max_per_worker = UINT32_MAX)
      : max_parked_(max_parked), max_per_worker_(max_per_worker) {}

  struct Parked {
    PullArgs args;
    absl::Time expires;
    Done done;
  };

  // OK when one more pull of `worker_id` may park; RESOURCE_EXHAUSTED,
  // naming the bound, when it would pass one.
  absl::Status CheckRoom(uint32_t worker_id) const;
  // Parks `pull` under `ticket`; false, leaving it to the caller, after
  // Close. CheckRoom first: Park does not refuse a pull over the bounds.
  bool Park(Ticket ticket, Parked pull);
  // The parked pull's callback, removed; empty when none is parked under
  // `ticket` (it ended already).
  Done Take(Ticket ticket);
  // The pulls whose deadline passed by `now`, removed.
  std::vector<Parked> TakeExpired(absl::Time now);
  // The pulls `policy` lets the shard answer at `version`, removed.
  std::vector<Parked> TakeAnswerable(const ConsistencyPolicy& policy,
                                     uint64_t version,
                                     const Membership& members);
  // Parks nothing from now on; returns every parked callback, removed.
  std::vector<Done> Close();

  size_t size() const { return parked_.size(); }
  uint32_t max_parked() const { return max_parked_; }
  uint32_t max_per_worker() const { return max_per_worker_; }

 private:
  using Iterator = absl::flat_hash_map<Ticket, Parked>::iterator;
  // Removes the pull at `it`, keeping its worker's count; returns it.
  Parked Remove(Iterator it);

  const uint32_t max_parked_;
  const uint32_t max_per_worker_;
  bool closed_ = false;
  absl::flat_hash_map<Ticket, Parked> parked_;
  // Parked pulls by worker id; ids without one are absent.
  absl::flat_hash_map<uint32_t, uint32_t> per_worker_;
};

}  // namespace ps::server

#endif  // PS_SERVER_PULL_WAIT_LIST_H_
