#ifndef PS_SERVER_REPLICATION_REPLICATOR_H_
#define PS_SERVER_REPLICATION_REPLICATOR_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/error_info.h"
#include "grpcpp/client_context.h"
#include "ps/v1/replication.grpc.pb.h"
#include "server/parameter_shard.h"
#include "server/replication/replay_clock.h"
#include "server/replication/replica_options.h"
#include "server/replication/replication_log.h"
#include "server/replication/vote_rule.h"
#include "server/replication/vote_store.h"

namespace ps::server {

// Why a replica refused a call (ErrorInfo reasons, domain ps.v1).
// NOT_PRIMARY, with FAILED_PRECONDITION and metadata {"primary": host:port,
// "term": n}: this replica is a backup; send workers' calls to the primary.
inline constexpr const char* kNotPrimary = common::kNotPrimary;
// STALE_TERM, with FAILED_PRECONDITION and metadata {"term": n}: the sender
// is from an older term than this replica's (a replaced primary).
inline constexpr char kStaleTerm[] = "STALE_TERM";
// REJOIN_REQUIRED, with FAILED_PRECONDITION: the backup missed changes;
// it must join again (and copy the state) to follow the primary.
inline constexpr char kRejoinRequired[] = "REJOIN_REQUIRED";

// One shard replica's part in replication (README, "Replicated shards"):
// the Replication service, and
//  - on the primary, the log of the shard's changes (the shard's journal),
//    one sender per joined backup, and the wait of each write until every
//    live backup applied it;
//  - on a backup, the join (copying the primary's state), the replay of
//    the primary's changes at the primary's times, and the refusal of
//    workers' calls with the primary's address;
//  - on every replica, failover: a backup whose primary is silent for
//    failover_timeout holds an election (Elect) and may take over with the
//    next term (with three or more replicas only by the votes of a
//    majority, RequestVote); a replica that sees a newer term steps down
//    and joins the new primary.
class Replicator final : public ps::v1::Replication::CallbackService {
 public:
  // `shard` and `clock` (the shard's clock) must outlive the replicator.
  Replicator(const ReplicaOptions& options, ParameterShard* shard,
             ReplayClock* clock);
  ~Replicator() override;

  // Replica 0 asks the other replicas whether one of them is primary
  // already (it was replaced while it was down): if none is, it is the
  // primary of term 1 and journals the shard's changes. Every other
  // replica joins the primary in the background. `bound_port` replaces a
  // port 0 in this replica's entry of the peers.
  void Start(int bound_port);
  // Ends the waits, the senders and the joins.
  void Stop();

  bool primary() const;
  uint64_t term() const;
  // OK on the primary; on a backup FAILED_PRECONDITION NOT_PRIMARY naming
  // the primary, for every call from a worker.
  absl::Status CheckPrimary() const;
  // Runs `done` once every live backup applied every change logged so far
  // (on the primary), with UNAVAILABLE when the server stops or steps down
  // first: the worker retries, and the retry is applied once.
  void WhenReplicated(ReplicationLog::Done done);
  // A backup that joined and follows the primary.
  bool joined() const;
  // Primary: the last change logged. Backup: the last change applied.
  uint64_t log_index() const;
  // Primary: times a backup was dropped for not answering.
  uint64_t backups_dropped() const { return log_.backups_dropped(); }
  // Times this replica took over as primary.
  uint64_t takeovers() const;
  // The shard's replicas as this one knows them, in order; one started
  // after it is 127.0.0.1:0 until learned from the primary (LearnPeers).
  std::vector<std::string> peers() const;
  // A push was acknowledged to a worker: after a takeover, the first one
  // is logged ("first push acknowledged"), the end of the failover that
  // tools/failover_time.py measures.
  void NotePushAcknowledged();

  // What Status and /metrics show of this replica (ps.v1.ReplicaState).
  struct State {
    uint32_t replica_index = 0;
    uint32_t replicas = 0;
    bool primary = false;
    bool joined = false;   // a backup that follows the primary
    bool witness = false;  // holds no θ, votes, never leads
    uint64_t term = 0;
    // The shard's failovers so far: term − 1 (0: none yet).
    uint64_t failovers = 0;
    // Primary: bytes of Apply requests sent to backups, retries and
    // heartbeats included.
    uint64_t bytes_sent = 0;
    uint64_t backups_dropped = 0;
  };
  State state() const;

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context,
                                 const ps::v1::JoinRequest* request,
                                 ps::v1::JoinResponse* response) override;
  grpc::ServerUnaryReactor* Apply(grpc::CallbackServerContext* context,
                                  const ps::v1::ApplyRequest* request,
                                  ps::v1::ApplyResponse* response) override;
  grpc::ServerUnaryReactor* ReplicaStatus(
      grpc::CallbackServerContext* context,
      const ps::v1::ReplicaStatusRequest* request,
      ps::v1::ReplicaStatusResponse* response) override;
  grpc::ServerUnaryReactor* RequestVote(
      grpc::CallbackServerContext* context, const ps::v1::VoteRequest* request,
      ps::v1::VoteResponse* response) override;

 private:
  // Primary: sends `replica`'s changes after `acked` (a `witness`: none,
  // only which are committed) until it is dropped,
  // joins again, or the replicator stops or steps down.
  void SendLoop(uint32_t replica, uint64_t generation, uint64_t acked,
                std::string address, bool witness);
  // Every replica, until Stop: a backup joins its primary and watches it
  // (Elect when it is silent); a primary looks for a newer term among the
  // replicas that do not follow it (FenceIfStale).
  void FollowLoop();
  absl::Status JoinOnce();
  // The backup's primary is silent: takes over, waits for a better
  // candidate, or joins the primary it finds (README, the election rule).
  // Also run by a replica of three or more that was in the primary's
  // history but finds no primary (an election was lost, or nobody won).
  void Elect();
  // Three or more replicas: stands for the next term and takes over only
  // with the votes of a majority, itself included, after a pre-vote that a
  // majority would elect it.
  void StandForElection();
  // Asks the voters (`old_primary` last) until a majority, itself
  // included, granted `request`. False when it did not (the next try waits
  // a random part of a timeout more) or a voter is in a newer term (this
  // replica moves to it). `what` names the round in the log.
  bool WinsMajority(const ps::v1::VoteRequest& request, uint32_t old_primary,
                    absl::string_view what);
  // Primary: steps down if a replica it does not reach otherwise is in a
  // newer term.
  void FenceIfStale();
  // Backup: learns the addresses of replicas started after it (a port 0
  // in its flags) from the primary's list of backups. An election asks
  // only the replicas whose addresses it knows, and a backup that cannot
  // ask one that is ahead of it would take over behind it.
  void LearnPeers();
  // This backup becomes the primary of `term`, from the last change it
  // applied, after `silent` without a primary.
  void TakeOver(uint64_t term, absl::Duration silent)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Elections decided by votes: three replicas or more. With two a
  // majority is both, and one cannot replace a dead other (README).
  bool voting() const { return options_.peers.size() >= 3; }
  size_t majority() const { return options_.peers.size() / 2 + 1; }
  // The vote rule's answer to `ballot` (CastVote, and no vote before this
  // process followed a primary without a vote store), and the voter state
  // it would leave in `state`; changes nothing.
  Verdict Decide(const Ballot& ballot, VoterState* state) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Decides `ballot` (Decide) and records it; a newer term moves this
  // replica to it (StepDown).
  Verdict Vote(const Ballot& ballot, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  LogPosition OwnLog() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // `replica`'s place in the order of succession after `primary`: 0 for
  // the next one (kUnknown: its index).
  uint32_t Place(uint32_t replica, uint32_t primary) const;
  // The silence after which this replica stands: failover_timeout, and
  // per place after the primary the time the one before it takes to ask
  // the silent primary and count votes (SilentPrimaryDeadline and a
  // heartbeat): the replicas stand in turn, rarely split the votes, and a
  // later one is not busy asking the stopped primary when the next one's
  // vote and new term reach it (that delayed its join, so the first
  // acknowledged write, by a tick).
  absl::Duration ElectionTimeout() const;
  // This replica saw `term`, newer than its own: it stops being primary
  // (its waiting writes fail, unacknowledged) and joins `primary` (or the
  // primary it finds, for kUnknown).
  static constexpr uint32_t kUnknown = UINT32_MAX;
  void StepDown(uint64_t term, uint32_t primary, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // The replica's ReplicaStatus, or an error within `deadline`. The
  // deadlines of the election's calls are a failover_timeout (a heartbeat
  // is too short on a loaded machine), but for the silent primary's.
  absl::StatusOr<ps::v1::ReplicaStatusResponse> AskStatus(
      uint32_t replica, absl::Duration deadline) const;
  // How long an election waits for the silent primary's answer: every
  // failover from a hung primary waits this long, and an answer missed
  // costs only an unneeded election: a third of failover_timeout, at
  // least a heartbeat (100 ms by default).
  absl::Duration SilentPrimaryDeadline() const;
  // The replica's stub, made once per address (null while it is unknown):
  // stubs are thread-safe, and a channel per call is set up anew each time.
  std::shared_ptr<ps::v1::Replication::Stub> StubFor(uint32_t replica) const;
  std::string PeerAddress(uint32_t replica) const;
  // Every replica but this one whose address is known.
  std::vector<uint32_t> KnownPeers() const;
  absl::Status ApplyChanges(const ps::v1::ApplyRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);

  const ReplicaOptions options_;
  const uint32_t own_;
  ParameterShard* const shard_;
  ReplayClock* const clock_;
  ReplicationLog log_;
  absl::Notification stop_;
  std::atomic<uint64_t> bytes_sent_{0};

  absl::Mutex threads_mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(threads_mu_);
  // The Join in flight, which Stop cancels (it may wait for a large state).
  grpc::ClientContext* joining_ ABSL_GUARDED_BY(threads_mu_) = nullptr;

  // The backup's side: the replay of changes, one Apply at a time, and
  // the join. Taken before role_mu_ and threads_mu_.
  mutable absl::Mutex apply_mu_;
  bool joined_ ABSL_GUARDED_BY(apply_mu_) = false;
  uint64_t applied_ ABSL_GUARDED_BY(apply_mu_) = 0;
  // When the primary was last heard from (an Apply of its term, the join),
  // or this replica voted or stood: the start of its election timeout.
  absl::Time last_heard_ ABSL_GUARDED_BY(apply_mu_);
  // When this backup last heard from its primary (an Apply, the join): a
  // vote asked within half a failover timeout of it is refused
  // (RequestVote).
  absl::Time heard_from_primary_ ABSL_GUARDED_BY(apply_mu_);
  // A witness: the last change its primary said is committed (on every
  // live backup that holds θ, or on none: README, "A witness for two
  // replicas"). Its log position in votes.
  uint64_t committed_ ABSL_GUARDED_BY(apply_mu_) = 0;
  // The term of the primary whose changes the shard holds (LogPosition).
  uint64_t log_term_ ABSL_GUARDED_BY(apply_mu_) = 0;
  // The vote this replica cast, and in which term.
  VoterState vote_ ABSL_GUARDED_BY(apply_mu_);
  // Where the vote is kept across restarts (options_.state_dir), if given.
  std::optional<VoteStore> vote_store_ ABSL_GUARDED_BY(apply_mu_);
  // Whether this replica may give votes: with a vote store always; without
  // one only once this process followed a primary (it may have voted in an
  // earlier life, and forgotten whom for: it moves terms but gives none).
  bool may_vote_ ABSL_GUARDED_BY(apply_mu_) = false;
  // A lost election's random extra wait (Raft's randomised timeout), so
  // that two replicas that split the votes do not stand together again.
  std::minstd_rand jitter_ ABSL_GUARDED_BY(apply_mu_);

  // Who leads, in which term; the replicas' addresses (a port 0 in the
  // flags is learned from the replica's Join).
  mutable absl::Mutex role_mu_;
  uint64_t term_ ABSL_GUARDED_BY(role_mu_) = 1;
  uint32_t primary_ ABSL_GUARDED_BY(role_mu_) = 0;
  std::vector<std::string> peers_ ABSL_GUARDED_BY(role_mu_);
  uint64_t takeovers_ ABSL_GUARDED_BY(role_mu_) = 0;
  struct PeerStub {
    std::string address;
    std::shared_ptr<ps::v1::Replication::Stub> stub;
  };
  mutable std::vector<PeerStub> stubs_ ABSL_GUARDED_BY(role_mu_);
  // False from a takeover to the first push acknowledged after it.
  std::atomic<bool> first_push_logged_{true};
};

}  // namespace ps::server

#endif  // PS_SERVER_REPLICATION_REPLICATOR_H_
