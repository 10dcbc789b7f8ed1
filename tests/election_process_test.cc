// Elections decided by votes, on real processes (README, "Elections"): one
// shard on three ps_server replicas (--replicas=3) on 127.0.0.1. The test
// stops replicas (SIGSTOP) to cut a primary or a voter off, and speaks the
// Replication service itself to be a candidate.
#include <signal.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "common/rpc/convert.h"
#include "deploy/local/daemon_flags.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "ps/v1/parameter_server.grpc.pb.h"
#include "ps/v1/replication.grpc.pb.h"
#include "tests/job.h"
#include "tests/replica_status.h"

namespace ps {
namespace {

using test_support::BinDir;
using test_support::FreshDir;
using test_support::ReadFile;
using test_support::ReplicaStatus;

constexpr uint32_t kReplicas = 3;
// Long enough that a stopped replica's peers rarely stand while the test
// speaks to them, on a loaded machine or under ASan; shorter than the 1 s
// after which a primary drops a silent backup, as the server requires.
constexpr char kFailoverTimeout[] = "--failover_timeout=900ms";

struct Replica {
  common::Subprocess process;
  std::string address;
};

// Replica `r` of the shard, told `peers` (port 0 for those it does not
// know); its vote kept in `state_dir` (empty: none). Nullopt on failure.
std::optional<Replica> SpawnReplica(const std::string& dir, uint32_t r,
                                    const std::vector<std::string>& peers,
                                    const std::string& state_dir) {
  const std::string name = absl::StrCat("replica-", r);
  launch::ServerFlags flags;
  flags.listen = "127.0.0.1:0";
  flags.port_file = absl::StrCat(dir, "/", name, ".port");
  std::filesystem::remove(flags.port_file);
  flags.num_workers = 1;
  flags.mode = "async";
  flags.replicas = kReplicas;
  flags.replica_index = r;
  flags.replica_peers = peers;
  flags.replica_peers[r] = "127.0.0.1:0";
  flags.extra.push_back(kFailoverTimeout);
  flags.replica_state_dir = state_dir;
  const std::string log = absl::StrCat(dir, "/", name, ".log");
  auto server =
      common::Subprocess::Spawn(launch::ServerCommand(BinDir(), flags), log);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return std::nullopt;
  if (!test_support::WaitForPortFile(*server, flags.port_file, log)) {
    ADD_FAILURE() << name << " wrote no port file; see " << dir;
    return std::nullopt;
  }
  return Replica{std::move(*server),
                 absl::StrCat("127.0.0.1:", ReadFile(flags.port_file))};
}

std::vector<std::string> Addresses(const std::vector<Replica>& replicas) {
  std::vector<std::string> addresses;
  for (const Replica& replica : replicas) addresses.push_back(replica.address);
  return addresses;
}

// One shard on kReplicas replicas; each later one is told the addresses of
// those started before it (port 0 for the rest, as ps_local does). With
// `state_dirs`, each keeps its vote in a directory of its own under `dir`.
std::vector<Replica> StartShard(const std::string& dir,
                                bool state_dirs = false) {
  std::vector<Replica> replicas;
  std::vector<std::string> peers(kReplicas, "127.0.0.1:0");
  for (uint32_t r = 0; r < kReplicas; ++r) {
    std::string state_dir;
    if (state_dirs) {
      state_dir = absl::StrCat(dir, "/state-", r);
      std::filesystem::create_directories(state_dir);
    }
    std::optional<Replica> replica = SpawnReplica(dir, r, peers, state_dir);
    if (!replica.has_value()) return {};
    peers[r] = replica->address;
    replicas.push_back(*std::move(replica));
  }
  for (uint32_t r = 1; r < kReplicas; ++r) {
    EXPECT_TRUE(test_support::WaitUntil([&] {
      std::optional<ps::v1::ReplicaStatusResponse> s =
          ReplicaStatus(replicas[r].address);
      return s.has_value() && s->role() == ps::v1::BACKUP;
    })) << "replica "
        << r << " never joined; see " << dir;
  }
  return replicas;
}

// A worker's Register, a write the primary acknowledges only once
// replicated; `deadline` bounds the wait. Each call is a new incarnation
// of worker 0 (a restarted worker), so it changes the shard: the same one
// again changes nothing and has nothing new to acknowledge.
absl::Status Register(const std::string& address, absl::Duration deadline) {
  static uint64_t incarnation = 0;
  auto stub = ps::v1::ParameterServer::NewStub(rpc::CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  ps::v1::RegisterRequest request;
  request.set_worker_id(0);
  request.set_incarnation(++incarnation);
  ps::v1::RegisterResponse response;
  return rpc::FromGrpcStatus(stub->Register(&context, request, &response));
}

absl::StatusOr<ps::v1::VoteResponse> AskVote(const std::string& address,
                                             const ps::v1::VoteRequest& ask) {
  auto stub = ps::v1::Replication::NewStub(rpc::CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  ps::v1::VoteResponse response;
  const grpc::Status answered = stub->RequestVote(&context, ask, &response);
  if (!answered.ok()) return rpc::FromGrpcStatus(answered);
  return response;
}

ps::v1::VoteRequest Ballot(uint64_t term, uint32_t candidate, uint64_t log_term,
                           uint64_t index) {
  ps::v1::VoteRequest ask;
  ask.set_term(term);
  ask.set_candidate_index(candidate);
  ask.set_last_log_term(log_term);
  ask.set_last_applied_index(index);
  return ask;
}

// Every replica answers and agrees: one primary of the newest term, the
// others its backups. The primary's index, or nullopt.
std::optional<uint32_t> OnePrimary(const std::vector<Replica>& replicas) {
  std::optional<uint32_t> primary;
  std::vector<ps::v1::ReplicaStatusResponse> status;
  for (uint32_t r = 0; r < replicas.size(); ++r) {
    std::optional<ps::v1::ReplicaStatusResponse> s =
        ReplicaStatus(replicas[r].address);
    if (!s.has_value()) return std::nullopt;
    if (s->role() == ps::v1::PRIMARY) {
      if (primary.has_value()) return std::nullopt;
      primary = r;
    }
    status.push_back(*s);
  }
  if (!primary.has_value()) return std::nullopt;
  for (const ps::v1::ReplicaStatusResponse& s : status) {
    if (s.term() != status[*primary].term()) return std::nullopt;
    if (s.replica_index() != *primary && s.role() != ps::v1::BACKUP) {
      return std::nullopt;
    }
  }
  return primary;
}

// Replica 1 alone of the shard: a write reaches it first (so its log is
// not empty), then its primary (0) and the other backup (2) are stopped.
// It asks for pre-votes and gets none (one of three), so it never stands:
// a backup of a silent primary, still in term 1 (a pre-vote moves no
// term). Its status then, or nullopt (a test failure).
std::optional<ps::v1::ReplicaStatusResponse> CutOffReplicaOne(
    const std::vector<Replica>& replicas, const std::string& dir) {
  EXPECT_TRUE(Register(replicas[0].address, absl::Seconds(20)).ok())
      << "see " << dir;
  EXPECT_TRUE(test_support::WaitUntil([&] {
    std::optional<ps::v1::ReplicaStatusResponse> s =
        ReplicaStatus(replicas[1].address);
    return s.has_value() && s->log_index() > 0;
  })) << "see "
      << dir;
  EXPECT_TRUE(test_support::StopProcess(replicas[0].process.pid()));
  EXPECT_TRUE(test_support::StopProcess(replicas[2].process.pid()));
  EXPECT_TRUE(test_support::WaitUntil([&] {
    return ReadFile(dir + "/replica-1.log").find("lost the pre-vote") !=
           std::string::npos;
  })) << "see "
      << dir;
  std::optional<ps::v1::ReplicaStatusResponse> own =
      ReplicaStatus(replicas[1].address);
  EXPECT_TRUE(own.has_value());
  if (own.has_value()) {
    EXPECT_EQ(own->term(), 1u) << "a lost pre-vote moved its term";
  }
  return own;
}

// Continues the stopped replicas; the index of the one primary they elect
// (a test failure and nullopt if none within 60 s).
std::optional<uint32_t> ContinueAndElect(const std::vector<Replica>& replicas,
                                         const std::string& dir) {
  for (const Replica& replica : replicas) kill(replica.process.pid(), SIGCONT);
  std::optional<uint32_t> primary;
  EXPECT_TRUE(test_support::WaitUntil(
      [&] {
        primary = OnePrimary(replicas);
        return primary.has_value();
      },
      absl::Seconds(60)))
      << "no single primary; see " << dir;
  return primary;
}

// The voter is told of two candidates for one term: the first that asks
// gets the vote, the second is refused though its log is further, the
// first asking again gets it again, an older term is refused. Replica 1 is
// the voter, cut off (CutOffReplicaOne), so it cannot win an election of
// its own meanwhile; kTerm is beyond any of its own.
TEST(Election, AVoterGivesItsVoteToOneCandidateOfATerm) {
  const std::string dir = FreshDir("election_two_candidates");
  std::vector<Replica> replicas = StartShard(dir);
  ASSERT_EQ(replicas.size(), kReplicas);
  const std::string& voter = replicas[1].address;
  const std::optional<ps::v1::ReplicaStatusResponse> own =
      CutOffReplicaOne(replicas, dir);
  ASSERT_TRUE(own.has_value());
  ASSERT_EQ(own->log_term(), 1u);
  ASSERT_GT(own->log_index(), 0u);
  constexpr uint64_t kTerm = 1000;

  absl::StatusOr<ps::v1::VoteResponse> first =
      AskVote(voter, Ballot(kTerm, 0, 1, own->log_index()));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->granted());
  EXPECT_EQ(first->term(), kTerm);
  // The voter may stand itself in the meantime (a term after kTerm, if the
  // machine stalls it for a timeout): never a second vote in kTerm either.
  absl::StatusOr<ps::v1::VoteResponse> second =
      AskVote(voter, Ballot(kTerm, 2, 1, own->log_index() + 100));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->granted()) << "two votes in one term";
  EXPECT_GE(second->term(), kTerm);
  absl::StatusOr<ps::v1::VoteResponse> again =
      AskVote(voter, Ballot(kTerm, 0, 1, own->log_index()));
  ASSERT_TRUE(again.ok()) << again.status();
  if (again->term() == kTerm) {
    EXPECT_TRUE(again->granted());
  }
  absl::StatusOr<ps::v1::VoteResponse> older =
      AskVote(voter, Ballot(kTerm - 1, 2, 1, own->log_index() + 100));
  ASSERT_TRUE(older.ok()) << older.status();
  EXPECT_FALSE(older->granted());
  EXPECT_GE(older->term(), kTerm);
  // A candidate behind the voter, in a newer term: refused, term moved.
  const uint64_t newer = older->term() + 1;
  absl::StatusOr<ps::v1::VoteResponse> behind =
      AskVote(voter, Ballot(newer, 2, 1, own->log_index() - 1));
  ASSERT_TRUE(behind.ok()) << behind.status();
  EXPECT_FALSE(behind->granted());
  EXPECT_GE(behind->term(), newer);
  // Not a candidate of this shard, or a log of the term it stands for or
  // later: a clear error.
  const uint64_t bad_term = behind->term() + 1;
  for (const ps::v1::VoteRequest& ask :
       {Ballot(bad_term, 1, 1, own->log_index()),
        Ballot(bad_term, kReplicas, 1, own->log_index()),
        Ballot(bad_term, 0, bad_term, own->log_index()),
        Ballot(bad_term, 0, bad_term + 1, own->log_index())}) {
    absl::StatusOr<ps::v1::VoteResponse> bad = AskVote(voter, ask);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument)
        << ask.ShortDebugString() << ": " << bad.status();
  }

  // Everyone continues: the old primary is fenced by the newer term, and
  // the replicas elect one primary, which acknowledges writes again.
  const std::optional<uint32_t> primary = ContinueAndElect(replicas, dir);
  ASSERT_TRUE(primary.has_value());
  const std::optional<ps::v1::ReplicaStatusResponse> elected =
      ReplicaStatus(replicas[*primary].address);
  ASSERT_TRUE(elected.has_value());
  EXPECT_GT(elected->term(), behind->term());
  EXPECT_TRUE(test_support::WaitUntil(
      [&] {
        return Register(replicas[*primary].address, absl::Seconds(5)).ok();
      },
      absl::Seconds(60)))
      << "see " << dir;
}

// A voter restarted (kill -9) with its --replica_state_dir remembers the
// vote it gave: another candidate of that term is refused, the same one
// granted again.
TEST(Election, ARestartedVoterRemembersItsVoteInItsStateDir) {
  const std::string dir = FreshDir("election_vote_kept");
  std::vector<Replica> replicas = StartShard(dir, /*state_dirs=*/true);
  ASSERT_EQ(replicas.size(), kReplicas);
  const std::optional<ps::v1::ReplicaStatusResponse> own =
      CutOffReplicaOne(replicas, dir);
  ASSERT_TRUE(own.has_value());
  const uint64_t term = own->term() + 1000;
  absl::StatusOr<ps::v1::VoteResponse> first =
      AskVote(replicas[1].address, Ballot(term, 0, 1, own->log_index()));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->granted());

  replicas[1].process.Signal(SIGKILL);
  ASSERT_TRUE(replicas[1].process.WaitFor(absl::Seconds(10)).has_value());
  std::optional<Replica> restarted =
      SpawnReplica(dir, 1, Addresses(replicas), absl::StrCat(dir, "/state-1"));
  ASSERT_TRUE(restarted.has_value());
  replicas[1] = *std::move(restarted);
  absl::StatusOr<ps::v1::VoteResponse> other =
      AskVote(replicas[1].address, Ballot(term, 2, 1, own->log_index() + 100));
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_FALSE(other->granted()) << "a second vote in a term after a restart";
  absl::StatusOr<ps::v1::VoteResponse> same =
      AskVote(replicas[1].address, Ballot(term, 0, 1, own->log_index()));
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_TRUE(same->granted());

  ASSERT_TRUE(ContinueAndElect(replicas, dir).has_value());
}

// Without a state dir, a restarted voter does not know whom it voted for:
// it moves to a candidate's newer term but gives no vote until it
// follows a primary again; then it votes.
TEST(Election, ARestartedVoterWithoutStateDirVotesOnlyOnceItFollowsAPrimary) {
  const std::string dir = FreshDir("election_vote_forgotten");
  std::vector<Replica> replicas = StartShard(dir);
  ASSERT_EQ(replicas.size(), kReplicas);
  const std::optional<ps::v1::ReplicaStatusResponse> own =
      CutOffReplicaOne(replicas, dir);
  ASSERT_TRUE(own.has_value());
  replicas[1].process.Signal(SIGKILL);
  ASSERT_TRUE(replicas[1].process.WaitFor(absl::Seconds(10)).has_value());
  std::optional<Replica> restarted =
      SpawnReplica(dir, 1, Addresses(replicas), "");
  ASSERT_TRUE(restarted.has_value());
  replicas[1] = *std::move(restarted);

  const uint64_t term = own->term() + 1000;
  absl::StatusOr<ps::v1::VoteResponse> refused =
      AskVote(replicas[1].address, Ballot(term, 2, 1, own->log_index() + 100));
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_FALSE(refused->granted()) << "a vote it may have given already";
  EXPECT_EQ(refused->term(), term);

  const std::optional<uint32_t> primary = ContinueAndElect(replicas, dir);
  ASSERT_TRUE(primary.has_value());
  const std::optional<ps::v1::ReplicaStatusResponse> joined =
      ReplicaStatus(replicas[1].address);
  ASSERT_TRUE(joined.has_value());
  ASSERT_EQ(joined->role(), *primary == 1 ? ps::v1::PRIMARY : ps::v1::BACKUP);
  if (*primary == 1) return;  // it led: nobody else to vote for here
  // A candidate ahead of it in a later term. While replica 1 hears its
  // primary it would refuse: asked for a pre-vote, which changes nothing,
  // it says no and stays in its term (a candidate cut off from a live
  // primary must not depose it). Asked until a heartbeat has just landed,
  // so a loaded machine that delays one does not decide the test.
  const uint32_t candidate = 3 - *primary - 1;  // neither 1 nor the primary
  ps::v1::VoteRequest ask = Ballot(joined->term() + 1000, candidate,
                                   joined->term(), joined->log_index() + 100);
  ask.set_pre_vote(true);
  absl::StatusOr<ps::v1::VoteResponse> led;
  EXPECT_TRUE(test_support::WaitUntil([&] {
    led = AskVote(replicas[1].address, ask);
    return led.ok() && !led->granted();
  })) << "its primary lives; see "
      << dir;
  ASSERT_TRUE(led.ok()) << led.status();
  EXPECT_EQ(led->term(), joined->term());
  // Its primary silent for half a failover timeout: granted, the pre-vote
  // and then the vote. The candidate's replica is stopped too, so that
  // neither backup is elected meanwhile (a primary votes for nobody).
  ASSERT_TRUE(test_support::StopProcess(replicas[*primary].process.pid()));
  ASSERT_TRUE(test_support::StopProcess(replicas[candidate].process.pid()));
  for (const bool pre_vote : {true, false}) {
    ask.set_pre_vote(pre_vote);
    absl::StatusOr<ps::v1::VoteResponse> granted;
    EXPECT_TRUE(test_support::WaitUntil([&] {
      granted = AskVote(replicas[1].address, ask);
      return granted.ok() && granted->granted();
    })) << (pre_vote ? "pre-vote " : "vote ")
        << (granted.ok() ? "refused" : granted.status().ToString()) << "; see "
        << dir;
  }
}

// A primary whose backups are both stopped is cut off from a majority:
// once it dropped them (after 1 s) it acknowledges nothing (UNAVAILABLE:
// the worker retries), and stays primary of its term (nobody else could be
// elected: the two others are stopped). Continued, the backups find it
// alive, join again, and writes are acknowledged again.
TEST(Election, APrimaryCutFromItsMajorityStopsAcknowledging) {
  const std::string dir = FreshDir("election_cut_primary");
  std::vector<Replica> replicas = StartShard(dir);
  ASSERT_EQ(replicas.size(), kReplicas);
  std::optional<uint32_t> leader;
  ASSERT_TRUE(test_support::WaitUntil([&] {
    leader = OnePrimary(replicas);
    return leader.has_value();
  })) << "see "
      << dir;
  const std::string& primary = replicas[*leader].address;
  ASSERT_TRUE(test_support::WaitUntil([&] {
    return Register(primary, absl::Seconds(5)).ok();
  })) << "see "
      << dir;
  const std::optional<ps::v1::ReplicaStatusResponse> before =
      ReplicaStatus(primary);
  ASSERT_TRUE(before.has_value());
  ASSERT_EQ(before->role(), ps::v1::PRIMARY);
  for (uint32_t r = 0; r < kReplicas; ++r) {
    if (r != *leader) {
      ASSERT_TRUE(test_support::StopProcess(replicas[r].process.pid()));
    }
  }
  const absl::Status cut = Register(primary, absl::Seconds(20));
  EXPECT_EQ(cut.code(), absl::StatusCode::kUnavailable) << cut;
  std::optional<ps::v1::ReplicaStatusResponse> alone = ReplicaStatus(primary);
  ASSERT_TRUE(alone.has_value());
  EXPECT_EQ(alone->role(), ps::v1::PRIMARY);
  EXPECT_EQ(alone->term(), before->term());
  EXPECT_EQ(alone->backups_dropped(), before->backups_dropped() + 2);
  // Later writes are refused at once, not acknowledged alone.
  const absl::Status again = Register(primary, absl::Seconds(20));
  EXPECT_EQ(again.code(), absl::StatusCode::kUnavailable) << again;

  for (uint32_t r = 0; r < kReplicas; ++r) {
    if (r != *leader) {
      ASSERT_EQ(kill(replicas[r].process.pid(), SIGCONT), 0);
    }
  }
  EXPECT_TRUE(test_support::WaitUntil(
      [&] { return Register(primary, absl::Seconds(5)).ok(); },
      absl::Seconds(60)))
      << "see " << dir;
  const std::optional<ps::v1::ReplicaStatusResponse> after =
      ReplicaStatus(primary);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->term(), before->term());
}

}  // namespace
}  // namespace ps
