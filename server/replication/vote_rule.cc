#include "server/replication/vote_rule.h"

namespace ps::server {

bool AtLeastAsFar(const LogPosition& candidate, const LogPosition& voter) {
  if (candidate.term != voter.term) return candidate.term > voter.term;
  return candidate.index >= voter.index;
}

Verdict CastVote(const Ballot& ballot, const LogPosition& own,
                 VoterState* state) {
  Verdict verdict;
  if (ballot.term < state->term) return verdict;
  if (ballot.term > state->term) {
    state->term = ballot.term;
    state->voted_for = kNoVote;
    verdict.term_moved = true;
  }
  if (state->voted_for != kNoVote && state->voted_for != ballot.candidate) {
    return verdict;
  }
  if (!AtLeastAsFar(ballot.log, own)) return verdict;
  state->voted_for = ballot.candidate;
  verdict.granted = true;
  return verdict;
}

}  // namespace ps::server
