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

struct Replica {
  common::Subprocess process;
  std::string address;
};

// One shard on kReplicas replicas; each later one is told the addresses of
// those started before it (port 0 for the rest, as ps_local does).
std::vector<Replica> StartShard(const std::string& dir) {
  std::vector<Replica> replicas;
  std::vector<std::string> peers(kReplicas, "127.0.0.1:0");
  for (uint32_t r = 0; r < kReplicas; ++r) {
    const std::string name = absl::StrCat("replica-", r);
    launch::ServerFlags flags;
    flags.listen = "127.0.0.1:0";
    flags.port_file = absl::StrCat(dir, "/", name, ".port");
    flags.num_workers = 1;
    flags.mode = "async";
    flags.replicas = kReplicas;
    flags.replica_index = r;
    flags.replica_peers = peers;
    auto server =
        common::Subprocess::Spawn(launch::ServerCommand(BinDir(), flags),
                                  absl::StrCat(dir, "/", name, ".log"));
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return {};
    EXPECT_TRUE(test_support::WaitForPortFile(*server, flags.port_file));
    peers[r] = absl::StrCat("127.0.0.1:", ReadFile(flags.port_file));
    replicas.push_back({std::move(*server), peers[r]});
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

// The voters are told of two candidates for one term: the first that asks
// gets the vote, the second is refused though its log is further, the
// first asking again gets it again, an older term is refused. Replica 1 is
// the voter: its primary (0) and the other backup (2) are stopped, so it
// cannot win an election of its own meanwhile (one vote of three).
TEST(Election, AVoterGivesItsVoteToOneCandidateOfATerm) {
  const std::string dir = FreshDir("election_two_candidates");
  std::vector<Replica> replicas = StartShard(dir);
  ASSERT_EQ(replicas.size(), kReplicas);
  const std::string& voter = replicas[1].address;
  ASSERT_EQ(kill(replicas[0].process.pid(), SIGSTOP), 0);
  ASSERT_EQ(kill(replicas[2].process.pid(), SIGSTOP), 0);
  // Replica 1 stands and loses (term 2 onwards), a JOINING replica.
  ASSERT_TRUE(test_support::WaitUntil([&] {
    std::optional<ps::v1::ReplicaStatusResponse> s = ReplicaStatus(voter);
    return s.has_value() && s->term() >= 2 && s->role() == ps::v1::JOINING;
  })) << "see "
      << dir;
  const ps::v1::ReplicaStatusResponse own = *ReplicaStatus(voter);
  ASSERT_EQ(own.log_term(), 1u);
  constexpr uint64_t kTerm = 1000;  // beyond any election of its own here

  absl::StatusOr<ps::v1::VoteResponse> first =
      AskVote(voter, Ballot(kTerm, 0, 1, own.log_index()));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->granted());
  EXPECT_EQ(first->term(), kTerm);
  absl::StatusOr<ps::v1::VoteResponse> second =
      AskVote(voter, Ballot(kTerm, 2, 1, own.log_index() + 100));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->granted()) << "two votes in one term";
  EXPECT_EQ(second->term(), kTerm);
  absl::StatusOr<ps::v1::VoteResponse> again =
      AskVote(voter, Ballot(kTerm, 0, 1, own.log_index()));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->granted());
  absl::StatusOr<ps::v1::VoteResponse> older =
      AskVote(voter, Ballot(kTerm - 1, 2, 1, own.log_index() + 100));
  ASSERT_TRUE(older.ok()) << older.status();
  EXPECT_FALSE(older->granted());
  EXPECT_EQ(older->term(), kTerm);
  // A candidate behind the voter, in a newer term: refused, term moved.
  absl::StatusOr<ps::v1::VoteResponse> behind =
      AskVote(voter, Ballot(kTerm + 1, 2, 1, own.log_index() - 1));
  ASSERT_TRUE(behind.ok()) << behind.status();
  EXPECT_FALSE(behind->granted());
  EXPECT_EQ(behind->term(), kTerm + 1);
  // Not a candidate of this shard: a clear error.
  absl::StatusOr<ps::v1::VoteResponse> bad =
      AskVote(voter, Ballot(kTerm + 2, 1, 1, own.log_index()));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument)
      << bad.status();
  bad = AskVote(voter, Ballot(kTerm + 2, kReplicas, 1, own.log_index()));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument)
      << bad.status();
  // A log of the term it stands for, or later: a clear error, no vote.
  bad = AskVote(voter, Ballot(kTerm + 2, 0, kTerm + 2, own.log_index()));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument)
      << bad.status();
  bad = AskVote(voter, Ballot(kTerm + 2, 0, kTerm + 3, own.log_index()));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument)
      << bad.status();

  // Everyone continues: the old primary is fenced by the newer term, and
  // the replicas elect one primary, which acknowledges writes again.
  ASSERT_EQ(kill(replicas[0].process.pid(), SIGCONT), 0);
  ASSERT_EQ(kill(replicas[2].process.pid(), SIGCONT), 0);
  std::optional<uint32_t> primary;
  ASSERT_TRUE(test_support::WaitUntil(
      [&] {
        primary = OnePrimary(replicas);
        return primary.has_value();
      },
      absl::Seconds(30)))
      << "no single primary; see " << dir;
  EXPECT_GT(ReplicaStatus(replicas[*primary].address)->term(), kTerm + 1);
  EXPECT_TRUE(Register(replicas[*primary].address, absl::Seconds(10)).ok())
      << "see " << dir;
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
  const std::string& primary = replicas[0].address;
  ASSERT_TRUE(Register(primary, absl::Seconds(10)).ok()) << "see " << dir;
  ASSERT_EQ(kill(replicas[1].process.pid(), SIGSTOP), 0);
  ASSERT_EQ(kill(replicas[2].process.pid(), SIGSTOP), 0);
  const absl::Status cut = Register(primary, absl::Seconds(20));
  EXPECT_EQ(cut.code(), absl::StatusCode::kUnavailable) << cut;
  std::optional<ps::v1::ReplicaStatusResponse> alone = ReplicaStatus(primary);
  ASSERT_TRUE(alone.has_value());
  EXPECT_EQ(alone->role(), ps::v1::PRIMARY);
  EXPECT_EQ(alone->term(), 1u);
  EXPECT_EQ(alone->backups_dropped(), 2u);
  // Later writes are refused at once, not acknowledged alone.
  const absl::Status again = Register(primary, absl::Seconds(20));
  EXPECT_EQ(again.code(), absl::StatusCode::kUnavailable) << again;

  ASSERT_EQ(kill(replicas[1].process.pid(), SIGCONT), 0);
  ASSERT_EQ(kill(replicas[2].process.pid(), SIGCONT), 0);
  EXPECT_TRUE(test_support::WaitUntil(
      [&] { return Register(primary, absl::Seconds(5)).ok(); },
      absl::Seconds(30)))
      << "see " << dir;
  EXPECT_EQ(ReplicaStatus(primary)->term(), 1u);
}

}  // namespace
}  // namespace ps
