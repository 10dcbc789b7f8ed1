#ifndef PS_SERVER_CONSISTENCY_POLICY_H_
#define PS_SERVER_CONSISTENCY_POLICY_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/membership.h"
#include "server/shard_options.h"
#include "server/shard_requests.h"
#include "server/sync_round.h"

namespace ps::server {

// Why the open sync round closes now, if it does.
enum class RoundClose {
  kNotYet,
  kAllLive,  // every training worker (live, not idle) pushed or is late
  kQuorum,   // --sync_quorum gradients arrived
  kTimeout,  // --round_timeout ran out with at least one gradient
};

// Where a sync push for round `base_version` belongs.
enum class RoundFit {
  kOpenRound,       // counts toward the open round
  kAlreadyInRound,  // the worker's gradient for this round is in: duplicate
  kClosedRound,     // the round closed before it came: stale
  kAheadOfShard,    // the shard was restored behind the worker: stale
};

// The rules of the shard's consistency mode (DESIGN.md §6), in one place:
// may a pull be answered, where does a push go, when does a sync round
// close. Decisions only: the shard holds the state and acts on them.
//
//   sync   pushes gather in a round that closes on all live workers, a
//          quorum, or a timeout; pulls wait for the next round.
//   ssp    pushes apply at once; a pull at clock c also waits until every
//          live worker has clock ≥ c − staleness.
//   async  pushes apply at once; pulls never wait.
class ConsistencyPolicy {
 public:
  explicit ConsistencyPolicy(const ShardOptions& options);

  ConsistencyMode mode() const { return mode_; }
  // Sync gathers pushes into rounds; async and SSP apply each at once.
  bool GathersRounds() const { return mode_ == ConsistencyMode::kSync; }

  // Whether a pull for `min_version` by a worker at `reader_clock` may be
  // answered at `version`.
  bool MayAnswerPull(uint64_t min_version, uint64_t reader_clock,
                     uint64_t version, const Membership& members) const;
  // OUT_OF_RANGE when waiting could never answer `pull` at `version`, so
  // it is refused at once instead of parking until its deadline: async and
  // SSP never wait for a version (a min_version above the shard's is
  // refused). Sync waits at most one round; a pull further ahead is
  // answered at once (MayAnswerPull).
  absl::Status CheckPullReachable(const PullArgs& pull, uint64_t version) const;
  // SSP: the clock `pull` waits at. A live worker's pull more than the
  // staleness bound past its own clock on this shard would wait for the
  // worker itself: the shard was restored from a checkpoint older than the
  // worker's steps (or never saw them). It waits as a pull at the bound of
  // the shard's clock for it, as a sync pull past the shard's round is
  // answered with the shard's round; the worker's next push sets its clock
  // (pushes count as ever: exactly once, by seq).
  uint64_t WaitClock(const PullArgs& pull, const Membership& members) const;
  // SSP: how many clocks a reader at `reader_clock` is ahead of the slowest
  // live worker as it reads; 0 in the other modes.
  uint64_t ReadClockGap(uint64_t reader_clock, const Membership& members) const;

  // Sync: where a push from `worker` for round `base_version` belongs
  // while round `version` is open.
  RoundFit FitToRound(uint64_t base_version, uint64_t version,
                      const SyncRound& round, uint32_t worker) const;
  // Sync: whether the open round, holding at least one gradient and open
  // for `open_for`, closes now, and why.
  RoundClose WhyRoundCloses(const SyncRound& round, const Membership& members,
                            absl::Duration open_for) const;
  // Sync: the examples the closing round's gradient sum is divided by.
  // Σₖ bₖ, the mean over what arrived, unless the round holds r gradients
  // of a --sync_quorum k > r (fewer workers still training than k, or the
  // timeout): then Σₖ bₖ·k/r, the k − r missing gradients counted as zeros.
  // The learning rate is set for a round of k batches; one batch alone
  // moves θ as far with k times the noise, and at the end of a job, where
  // one worker finishes the last partition alone, that noise is what the
  // final θ keeps. So a short round steps r/k as far (the linear scaling
  // rule: the step in proportion to the examples behind it).
  double RoundExamples(const SyncRound& round) const;

 private:
  ConsistencyMode mode_;
  uint32_t staleness_;
  uint32_t sync_quorum_;
  absl::Duration round_timeout_;
};

}  // namespace ps::server

#endif  // PS_SERVER_CONSISTENCY_POLICY_H_
