// The election's rules without processes (README, "Elections"): the vote
// (server/replication/vote_rule.h) and the primary's quorum for
// acknowledging a write (ReplicationLog with required backups).
#include <algorithm>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "server/replication/replica_options.h"
#include "server/replication/replication_log.h"
#include "server/replication/vote_rule.h"
#include "server/replication/vote_store.h"
#include "tests/job.h"
#include "tests/wait.h"

namespace ps::server {
namespace {

TEST(Vote, OneVotePerTermAndTheSameCandidateAgain) {
  VoterState voter{3, kNoVote};
  const LogPosition own{3, 10};
  EXPECT_TRUE(CastVote({4, 1, {3, 10}}, own, &voter).granted);
  EXPECT_EQ(voter.term, 4u);
  EXPECT_EQ(voter.voted_for, 1u);
  // Another candidate of the same term: refused, however far its log.
  EXPECT_FALSE(CastVote({4, 2, {3, 99}}, own, &voter).granted);
  // The same candidate asking again (a retried request): granted.
  EXPECT_TRUE(CastVote({4, 1, {3, 10}}, own, &voter).granted);
  EXPECT_EQ(voter.voted_for, 1u);
  // The next term is a new vote.
  const Verdict next = CastVote({5, 2, {3, 10}}, own, &voter);
  EXPECT_TRUE(next.granted);
  EXPECT_TRUE(next.term_moved);
  EXPECT_EQ(voter.voted_for, 2u);
}

TEST(Vote, AnOlderTermIsRefusedAndMovesNothing) {
  VoterState voter{7, 2};
  const Verdict verdict = CastVote({6, 1, {6, 100}}, {6, 5}, &voter);
  EXPECT_FALSE(verdict.granted);
  EXPECT_FALSE(verdict.term_moved);
  EXPECT_EQ(voter.term, 7u);
  EXPECT_EQ(voter.voted_for, 2u);
}

TEST(Vote, ACandidateBehindTheVoterIsRefusedButMovesItsTerm) {
  VoterState voter{2, kNoVote};
  // Fewer changes of the same term.
  Verdict verdict = CastVote({3, 1, {2, 9}}, {2, 10}, &voter);
  EXPECT_FALSE(verdict.granted);
  EXPECT_TRUE(verdict.term_moved);
  EXPECT_EQ(voter.term, 3u);
  EXPECT_EQ(voter.voted_for, kNoVote);
  // More changes, but of an older primary's history (a replaced primary's
  // writes nobody acknowledged): the term decides first.
  verdict = CastVote({4, 1, {1, 50}}, {2, 10}, &voter);
  EXPECT_FALSE(verdict.granted);
  // A later term's log wins with fewer changes; as far is enough.
  EXPECT_TRUE(AtLeastAsFar({3, 4}, {2, 10}));
  EXPECT_TRUE(AtLeastAsFar({2, 10}, {2, 10}));
  EXPECT_FALSE(AtLeastAsFar({2, 9}, {2, 10}));
}

// Two candidates of one term, three and five replicas, every order in
// which the voters hear them (each candidate votes for itself first): at
// most one gets a majority. The rule alone decides it; no timing.
TEST(Election, TwoCandidatesInOneTermNeverBothWin) {
  for (uint32_t replicas : {3u, 5u}) {
    const size_t majority = replicas / 2 + 1;
    // Voter v hears candidate 0 first when bit v of `order` is clear.
    for (uint32_t order = 0; order < (1u << replicas); ++order) {
      std::vector<VoterState> voters(replicas, VoterState{1, kNoVote});
      std::vector<size_t> votes(2, 0);
      const Ballot ballots[2] = {{2, 0, {1, 10}}, {2, 1, {1, 10}}};
      for (uint32_t v = 0; v < replicas; ++v) {
        const LogPosition own{1, 10};
        int first = (order >> v) & 1;
        // A candidate votes for itself before anyone else.
        if (v == 0) first = 0;
        if (v == 1) first = 1;
        for (int c : {first, 1 - first}) {
          if (CastVote(ballots[c], own, &voters[v]).granted) ++votes[c];
        }
      }
      EXPECT_FALSE(votes[0] >= majority && votes[1] >= majority)
          << replicas << " replicas, order " << order;
      EXPECT_EQ(votes[0] + votes[1], replicas) << "every voter votes once";
    }
  }
}

// A primary of three replicas (one backup needed) acknowledges only while
// a backup is live: it refuses at once (no join grace here), and its
// waiting writes fail when the last backup is dropped.
TEST(VoteStore, AVoteSavedIsReadBackByTheNextOpen) {
  const std::string dir = test_support::FreshDir("vote_store");
  absl::StatusOr<VoteStore> store = VoteStore::Open(dir, 2);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(store->vote().term, 0u);
  EXPECT_EQ(store->vote().voted_for, kNoVote);
  ASSERT_TRUE(store->Save({7, 1}).ok());
  absl::StatusOr<VoteStore> again = VoteStore::Open(dir, 2);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->vote().term, 7u);
  EXPECT_EQ(again->vote().voted_for, 1u);
  // Another replica's vote is its own file.
  absl::StatusOr<VoteStore> other = VoteStore::Open(dir, 1);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->vote().term, 0u);
}

TEST(VoteStore, AMissingDirectoryOrABadFileStopsTheServerAtStartUp) {
  const std::string dir = test_support::FreshDir("vote_store_bad");
  ReplicaOptions options;
  options.peers = {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"};
  options.replica_index = 1;
  options.state_dir = dir + "/missing";
  absl::Status status = ValidateReplicaOptions(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("--replica_state_dir"), std::string::npos)
      << status;
  options.state_dir = dir;
  EXPECT_TRUE(ValidateReplicaOptions(options).ok());
  std::ofstream(dir + "/replica-1.vote") << "7 x\n";
  status = ValidateReplicaOptions(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_NE(status.message().find("replica-1.vote"), std::string::npos)
      << status;
}

TEST(ReplicationQuorum, APrimaryWithoutAMajorityAcknowledgesNothing) {
  ReplicationLog log(/*required_backups=*/1);
  std::vector<absl::Status> answers;
  auto done = [&](absl::Status status) { answers.push_back(status); };
  log.Record(absl::Now(), ShardChange());
  log.WhenAcknowledged(log.last_index(), done);
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].code(), absl::StatusCode::kUnavailable) << answers[0];

  const ReplicationLog::Joined first = log.AddBackup(1, "127.0.0.1:1");
  const ReplicationLog::Joined second = log.AddBackup(2, "127.0.0.1:2");
  // Their first answers: they hold the state they were sent.
  log.Acknowledge(1, first.generation, first.index);
  log.Acknowledge(2, second.generation, second.index);
  log.Record(absl::Now(), ShardChange());
  log.WhenAcknowledged(log.last_index(), done);
  EXPECT_EQ(answers.size(), 1u) << "waits for its backups";
  log.Acknowledge(1, first.generation, log.last_index());
  EXPECT_EQ(answers.size(), 1u) << "waits for every live backup";
  // One of two dropped: a majority (primary + one) is still live.
  log.Drop(2, second.generation, "silent");
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_TRUE(answers[1].ok()) << answers[1];

  log.Record(absl::Now(), ShardChange());
  log.WhenAcknowledged(log.last_index(), done);
  EXPECT_EQ(answers.size(), 2u);
  // The last one dropped: the waiting write fails, unacknowledged.
  log.Drop(1, first.generation, "silent");
  ASSERT_EQ(answers.size(), 3u);
  EXPECT_EQ(answers[2].code(), absl::StatusCode::kUnavailable) << answers[2];
  log.Record(absl::Now(), ShardChange());
  log.WhenAcknowledged(log.last_index(), done);
  ASSERT_EQ(answers.size(), 4u);
  EXPECT_EQ(answers[3].code(), absl::StatusCode::kUnavailable);
}

// A new primary (or one whose backup joins again) lets a write wait the
// join grace for a backup, and acknowledges it once the backup answered,
// not when it was merely sent the state.
TEST(ReplicationQuorum, AWriteWaitsTheJoinGraceForABackupThatAnswers) {
  ReplicationLog log(/*required_backups=*/1, absl::Hours(1));
  std::vector<absl::Status> answers;
  auto done = [&](absl::Status status) { answers.push_back(status); };
  log.Record(absl::Now(), ShardChange());
  log.WhenAcknowledged(log.last_index(), done);
  log.ExpireWithoutQuorum();
  EXPECT_TRUE(answers.empty()) << "waits within the grace";
  const ReplicationLog::Joined joined = log.AddBackup(1, "127.0.0.1:1");
  log.WhenAcknowledged(log.last_index(), done);
  EXPECT_TRUE(answers.empty()) << "the backup has not answered yet";
  log.Acknowledge(1, joined.generation, joined.index);
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_TRUE(answers[0].ok()) << answers[0];
  EXPECT_TRUE(answers[1].ok()) << answers[1];
}

TEST(ReplicationQuorum, AWriteWithoutABackupFailsOnceTheGracePassed) {
  ReplicationLog log(/*required_backups=*/1, absl::Milliseconds(1));
  std::optional<absl::Status> answer;
  log.Record(absl::Now(), ShardChange());
  log.WhenAcknowledged(log.last_index(),
                       [&](absl::Status status) { answer = status; });
  // The primary's tick expires it once the grace passed.
  ASSERT_TRUE(test_support::WaitUntil([&] {
    log.ExpireWithoutQuorum();
    return answer.has_value();
  }));
  EXPECT_EQ(answer->code(), absl::StatusCode::kUnavailable) << *answer;
}

TEST(ReplicationQuorum, TwoReplicasStillAcknowledgeAlone) {
  ReplicationLog log;  // R = 2: no backup required (README, "Elections")
  std::optional<absl::Status> answer;
  log.Record(absl::Now(), ShardChange());
  log.WhenAcknowledged(log.last_index(),
                       [&](absl::Status status) { answer = status; });
  ASSERT_TRUE(answer.has_value());
  EXPECT_TRUE(answer->ok()) << *answer;
}

// A witness (README, "A witness for two replicas") is sent no changes,
// only which are committed: on the backup that holds θ. While that backup
// is live a write waits for it alone; once it is dropped, for the witness
// to hold the write committed, so the dropped backup, which lacks it,
// cannot win the witness's vote.
TEST(ReplicationQuorum, AWitnessHoldsCommittedWhatTheBackupAcknowledged) {
  ReplicationLog log(/*required_backups=*/1);
  const ReplicationLog::Joined backup = log.AddBackup(1, "127.0.0.1:1");
  const ReplicationLog::Joined witness =
      log.AddBackup(2, "127.0.0.1:2", /*witness=*/true);
  log.Acknowledge(1, backup.generation, backup.index);
  log.Acknowledge(2, witness.generation, witness.index);
  std::vector<absl::Status> answers;
  auto done = [&](absl::Status status) { answers.push_back(status); };
  for (int i = 0; i < 3; ++i) log.Record(absl::Now(), ShardChange());
  log.WhenAcknowledged(log.last_index(), done);
  auto sent = [&](uint32_t replica, uint64_t generation, uint64_t after) {
    std::optional<std::vector<ReplicationLog::EntryPtr>> next =
        log.Next(replica, generation, after, 256, absl::ZeroDuration());
    std::vector<uint64_t> indexes;
    EXPECT_TRUE(next.has_value());
    if (!next.has_value()) return indexes;
    for (const ReplicationLog::EntryPtr& e : *next) {
      indexes.push_back(e->index);
    }
    return indexes;
  };
  EXPECT_EQ(sent(1, backup.generation, 0), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(sent(2, witness.generation, 0), std::vector<uint64_t>{});
  EXPECT_EQ(log.DeclareCommitted(2, witness.generation), 0u);
  log.Acknowledge(1, backup.generation, 3);
  ASSERT_EQ(answers.size(), 1u) << "the backup alone holds it: enough";
  EXPECT_TRUE(answers[0].ok()) << answers[0];
  // The witness learns it with its next heartbeat.
  EXPECT_EQ(log.DeclareCommitted(2, witness.generation), 3u);
  log.Acknowledge(2, witness.generation, 0, /*committed=*/3);

  log.Record(absl::Now(), ShardChange());
  log.WhenAcknowledged(log.last_index(), done);
  // The backup dropped before it acknowledged change 4: the write waits
  // for the witness to hold it committed.
  log.Drop(1, backup.generation, "partitioned");
  EXPECT_EQ(answers.size(), 1u) << "the witness does not hold change 4";
  EXPECT_EQ(log.DeclareCommitted(2, witness.generation), 4u);
  log.Acknowledge(2, witness.generation, 0, /*committed=*/4);
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_TRUE(answers[1].ok()) << answers[1];
}

TEST(ReplicaOptions, AWitnessNeedsThreeReplicasAndIsNotReplicaZero) {
  ReplicaOptions options;
  options.peers = {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"};
  options.witness = true;
  options.replica_index = 2;
  EXPECT_TRUE(ValidateReplicaOptions(options).ok());
  options.replica_index = 0;
  absl::Status status = ValidateReplicaOptions(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("--replica_witness"), std::string::npos);
  options.replica_index = 1;
  options.peers.pop_back();
  status = ValidateReplicaOptions(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

}  // namespace
}  // namespace ps::server
