#ifndef PS_SERVER_REPLICATION_VOTE_RULE_H_
#define PS_SERVER_REPLICATION_VOTE_RULE_H_

#include <cstdint>
#include <limits>

namespace ps::server {

// The election's vote (README, "Elections"), without gRPC or locks: Raft's
// rule. Two candidates cannot both win a term: each needs a majority of the
// replicas, two majorities share a replica, and a replica votes once per
// term. A winner holds every acknowledged write: a write is acknowledged
// only once a majority applied it, one of them votes, and it votes only for
// a log at least as far as its own.

inline constexpr uint32_t kNoVote = std::numeric_limits<uint32_t>::max();

// A replica's log: the term of the primary whose changes it holds, and the
// last change's index. Logs of one term are prefixes of one another, and a
// later term's primary holds every change acknowledged before it, so the
// pair compares "at least as far" term first.
struct LogPosition {
  uint64_t term = 0;
  uint64_t index = 0;
};
bool AtLeastAsFar(const LogPosition& candidate, const LogPosition& voter);

struct Ballot {
  uint64_t term = 0;
  uint32_t candidate = 0;
  LogPosition log;
};

// What a replica keeps to vote: its term and whom it voted for in it.
struct VoterState {
  uint64_t term = 0;
  uint32_t voted_for = kNoVote;
};

struct Verdict {
  bool granted = false;
  // The ballot's term was newer: the voter moved to it (and, a primary,
  // steps down).
  bool term_moved = false;
};

// Decides `ballot` for a voter whose log is `own`, updating `state`: a newer
// term moves it (forgetting its vote); it grants at most one candidate per
// term (the same one again, as for a retried request), and only if the
// candidate's log is at least as far as `own`. A ballot of an older term is
// refused.
Verdict CastVote(const Ballot& ballot, const LogPosition& own,
                 VoterState* state);

}  // namespace ps::server

#endif  // PS_SERVER_REPLICATION_VOTE_RULE_H_
