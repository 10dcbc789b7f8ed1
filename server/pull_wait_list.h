#ifndef PS_SERVER_PULL_WAIT_LIST_H_
#define PS_SERVER_PULL_WAIT_LIST_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/container/flat_hash_map.h"
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

  struct Parked {
    PullArgs args;
    absl::Time expires;
    Done done;
  };

  // Parks `pull` under `ticket`; false, leaving it to the caller, after
  // Close.
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

 private:
  bool closed_ = false;
  absl::flat_hash_map<Ticket, Parked> parked_;
};

}  // namespace ps::server

#endif  // PS_SERVER_PULL_WAIT_LIST_H_
