#ifndef PS_SERVER_REPLICATION_VOTE_STORE_H_
#define PS_SERVER_REPLICATION_VOTE_STORE_H_

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/replication/vote_rule.h"

namespace ps::server {

// A replica's vote kept across restarts (README, "Elections"): a replica
// that forgot the vote it gave in a term could give a second one, and two
// candidates could both win the term. One small text file per replica,
// "term voted_for", replaced atomically and durably (fsync) before the
// vote is answered.
class VoteStore {
 public:
  // The store of replica `replica_index` in `dir`, an existing directory,
  // and the vote it holds ({0, kNoVote} before the first). INVALID_ARGUMENT
  // naming --replica_state_dir when `dir` is not a directory, DATA_LOSS
  // when the file does not hold a vote.
  static absl::StatusOr<VoteStore> Open(const std::string& dir,
                                        uint32_t replica_index);

  const VoterState& vote() const { return vote_; }
  // Records `vote` durably; an error means the vote must not be given.
  absl::Status Save(const VoterState& vote);
  const std::string& path() const { return path_; }

 private:
  VoteStore(std::string path, VoterState vote)
      : path_(std::move(path)), vote_(vote) {}

  std::string path_;
  VoterState vote_;
};

}  // namespace ps::server

#endif  // PS_SERVER_REPLICATION_VOTE_STORE_H_
