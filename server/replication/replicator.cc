#include "server/replication/replicator.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/error_info.h"
#include "common/rpc/channel.h"
#include "common/rpc/convert.h"
#include "common/theta_file.h"
#include "grpcpp/client_context.h"
#include "server/replication/shard_change_wire.h"
#include "spdlog/spdlog.h"

namespace ps::server {
namespace {

// Changes per Apply: a batch is what piled up while the last one travelled.
constexpr size_t kMaxChangesPerApply = 256;
// Bytes after which a batch ends; one change may go over it alone.
constexpr size_t kMaxApplyBytes = size_t{32} << 20;

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(rpc::ToGrpcStatus(status));
  return reactor;
}

// One call of the Replication service through `stub`, within `deadline`.
template <typename Request, typename Response>
absl::StatusOr<Response> Ask(ps::v1::Replication::Stub* stub,
                             absl::Duration deadline,
                             grpc::Status (ps::v1::Replication::Stub::*method)(
                                 grpc::ClientContext*, const Request&,
                                 Response*),
                             const Request& request) {
  if (stub == nullptr) return absl::UnavailableError("no address");
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  Response response;
  const grpc::Status answered = (stub->*method)(&context, request, &response);
  if (!answered.ok()) return rpc::FromGrpcStatus(answered);
  return response;
}

absl::Status Refused(absl::string_view reason, std::string message,
                     std::map<std::string, std::string> metadata = {}) {
  return common::WithErrorInfo(
      absl::FailedPreconditionError(std::move(message)),
      common::ErrorInfo{std::string(reason), common::kErrorDomain,
                        std::move(metadata)});
}

}  // namespace

Replicator::Replicator(const ReplicaOptions& options, ParameterShard* shard,
                       ReplayClock* clock)
    : options_(options),
      own_(options.replica_index),
      shard_(shard),
      clock_(clock),
      log_(options.peers.size() >= 3 ? options.peers.size() / 2 : 0,
           options.drop_after),
      jitter_(static_cast<uint32_t>(absl::ToUnixNanos(absl::Now())) + own_),
      peers_(options.peers),
      stubs_(options.peers.size()) {
  if (options_.state_dir.empty() || !voting()) return;
  absl::StatusOr<VoteStore> store =
      VoteStore::Open(options_.state_dir, options_.replica_index);
  absl::MutexLock lock(&apply_mu_);
  if (!store.ok()) {
    // ValidateReplicaOptions read it at start-up: this is a race with
    // whoever changed it since. Votes wait for a primary, as without one.
    spdlog::error(
        "replication: {}; this replica votes once it follows a "
        "primary",
        store.status().ToString());
    return;
  }
  vote_ = store->vote();
  vote_store_ = *std::move(store);
  may_vote_ = true;
}

Replicator::~Replicator() { Stop(); }

void Replicator::Start(int bound_port) {
  {
    absl::MutexLock lock(&role_mu_);
    std::string& own = peers_[own_];
    if (absl::EndsWith(own, ":0")) {
      own = absl::StrCat(own.substr(0, own.size() - 1), bound_port);
    }
  }
  if (own_ == 0) {
    // A primary that was replaced while it was down must not lead again:
    // a replica that leads now answers so.
    for (uint32_t replica : KnownPeers()) {
      absl::StatusOr<ps::v1::ReplicaStatusResponse> status =
          AskStatus(replica, options_.failover_timeout);
      if (status.ok() && status->role() == ps::v1::PRIMARY) {
        absl::MutexLock lock(&role_mu_);
        term_ = status->term();
        primary_ = replica;
        spdlog::warn(
            "replication: replica {} leads this shard in term {}; replica 0 "
            "joins it as a backup",
            replica, term_);
        break;
      }
    }
    if (primary()) {
      absl::MutexLock lock(&apply_mu_);
      log_term_ = term();
      shard_->SetJournal(&log_);
      // It leads: a replica that could not vote until it joins would keep
      // the shard from electing anyone once it stepped down.
      may_vote_ = true;
    }
  }
  absl::MutexLock lock(&threads_mu_);
  threads_.emplace_back([this] { FollowLoop(); });
}

void Replicator::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  log_.Close("the server is shutting down");
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&threads_mu_);
    if (joining_ != nullptr) joining_->TryCancel();
    threads.swap(threads_);
  }
  for (std::thread& t : threads) t.join();
  if (primary()) shard_->SetJournal(nullptr);
}

bool Replicator::primary() const {
  absl::MutexLock lock(&role_mu_);
  return primary_ == own_;
}

uint64_t Replicator::term() const {
  absl::MutexLock lock(&role_mu_);
  return term_;
}

uint64_t Replicator::takeovers() const {
  absl::MutexLock lock(&role_mu_);
  return takeovers_;
}

void Replicator::NotePushAcknowledged() {
  if (first_push_logged_.exchange(true)) return;
  spdlog::warn(
      "replication: replica {} first push acknowledged as the primary of "
      "term {}",
      own_, term());
}

std::vector<std::string> Replicator::peers() const {
  absl::MutexLock lock(&role_mu_);
  return peers_;
}

std::string Replicator::PeerAddress(uint32_t replica) const {
  absl::MutexLock lock(&role_mu_);
  return replica < peers_.size() ? peers_[replica] : "";
}

std::vector<uint32_t> Replicator::KnownPeers() const {
  absl::MutexLock lock(&role_mu_);
  std::vector<uint32_t> known;
  for (uint32_t r = 0; r < peers_.size(); ++r) {
    if (r != own_ && !absl::EndsWith(peers_[r], ":0")) known.push_back(r);
  }
  return known;
}

absl::Status Replicator::CheckPrimary() const {
  absl::MutexLock lock(&role_mu_);
  if (primary_ == own_) return absl::OkStatus();
  const std::string primary =
      primary_ < peers_.size() ? peers_[primary_] : std::string();
  return Refused(
      kNotPrimary,
      absl::StrCat("this server is replica ", own_,
                   " of its shard, a backup in term ", term_,
                   primary.empty()
                       ? "; it does not know the primary yet: retry"
                       : absl::StrCat("; send workers' calls to the primary, ",
                                      primary)),
      {{"primary", primary}, {"term", absl::StrCat(term_)}});
}

void Replicator::WhenReplicated(ReplicationLog::Done done) {
  if (!primary()) {
    done(absl::UnavailableError(
        "this replica stopped being the primary before the change was "
        "replicated; retry (a retried push is applied once)"));
    return;
  }
  log_.WhenAcknowledged(log_.last_index(), std::move(done));
}

bool Replicator::joined() const {
  absl::MutexLock lock(&apply_mu_);
  return joined_;
}

Replicator::State Replicator::state() const {
  State state;
  state.replica_index = options_.replica_index;
  state.replicas = static_cast<uint32_t>(options_.peers.size());
  state.witness = options_.witness;
  state.primary = primary();
  state.joined = joined();
  state.term = term();
  // Every failover starts the next term, and a replica that follows learns
  // the term, so this is the shard's count, whichever replica answers.
  state.failovers = state.term - 1;
  state.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
  state.backups_dropped = log_.backups_dropped();
  return state;
}

uint64_t Replicator::log_index() const {
  if (primary()) return log_.last_index();
  absl::MutexLock lock(&apply_mu_);
  return applied_;
}

std::shared_ptr<ps::v1::Replication::Stub> Replicator::StubFor(
    uint32_t replica) const {
  absl::MutexLock lock(&role_mu_);
  if (replica >= peers_.size() || peers_[replica].empty()) return nullptr;
  PeerStub& peer = stubs_[replica];
  if (peer.stub == nullptr || peer.address != peers_[replica]) {
    peer.address = peers_[replica];
    peer.stub = ps::v1::Replication::NewStub(rpc::CreateChannel(peer.address));
  }
  return peer.stub;
}

absl::StatusOr<ps::v1::ReplicaStatusResponse> Replicator::AskStatus(
    uint32_t replica, absl::Duration deadline) const {
  return Ask(StubFor(replica).get(), deadline,
             &ps::v1::Replication::Stub::ReplicaStatus,
             ps::v1::ReplicaStatusRequest());
}

grpc::ServerUnaryReactor* Replicator::Join(grpc::CallbackServerContext* context,
                                           const ps::v1::JoinRequest* request,
                                           ps::v1::JoinResponse* response) {
  const uint64_t term = this->term();
  if (primary() && request->term() > term) {
    absl::MutexLock lock(&apply_mu_);
    StepDown(request->term(), kUnknown,
             absl::StrCat("replica ", request->replica_index(),
                          " asked to join in term ", request->term()));
  }
  if (!primary()) return FinishNow(context, CheckPrimary());
  const uint32_t replica = request->replica_index();
  if (replica == own_ || replica >= options_.peers.size()) {
    return FinishNow(
        context, absl::InvalidArgumentError(absl::StrCat(
                     "replica ", replica, " is not a backup of this shard (",
                     options_.peers.size(), " replicas)")));
  }
  {
    absl::MutexLock lock(&role_mu_);
    peers_[replica] = request->address();
  }
  ReplicationLog::Joined joined;
  absl::Time at;
  const bool witness = request->witness();
  // A witness holds no state: it starts at the log's end.
  absl::StatusOr<common::ThetaFile> state =
      absl::FailedPreconditionError("a witness is sent no state");
  if (witness) {
    at = clock_->Now();
    joined = log_.AddBackup(replica, request->address(), /*witness=*/true);
  } else {
    state = shard_->Snapshot([&] {
      at = clock_->Now();
      joined = log_.AddBackup(replica, request->address());
    });
  }
  response->set_term(term);
  response->set_index(joined.index);
  response->set_time_unix_nanos(absl::ToUnixNanos(at));
  // Before Init the state is the workers (a snapshot without a model), and
  // before any worker there is none: the backup starts empty, as the
  // primary did, and replays the Registers and the Init.
  if (state.ok()) response->set_snapshot(common::EncodeThetaFile(*state));
  {
    absl::MutexLock lock(&threads_mu_);
    threads_.emplace_back([this, replica, joined, witness,
                           address = request->address()]() mutable {
      SendLoop(replica, joined.generation, joined.index, std::move(address),
               witness);
    });
  }
  return FinishNow(context, absl::OkStatus());
}

void Replicator::SendLoop(uint32_t replica, uint64_t generation, uint64_t acked,
                          std::string address, bool witness) {
  std::unique_ptr<ps::v1::Replication::Stub> stub =
      ps::v1::Replication::NewStub(rpc::CreateChannel(address));
  const uint64_t term = this->term();
  // Since when the backup has not acknowledged a batch; InfiniteFuture
  // while it does.
  absl::Time failing_since = absl::InfiniteFuture();
  // The first Apply goes at once, empty if nothing is new: its answer
  // confirms the backup holds the state, and it counts toward the quorum.
  absl::Duration wait = absl::ZeroDuration();
  while (true) {
    std::optional<std::vector<ReplicationLog::EntryPtr>> batch =
        log_.Next(replica, generation, acked, kMaxChangesPerApply, wait);
    wait = options_.heartbeat_every;
    if (!batch.has_value()) return;
    ps::v1::ApplyRequest request;
    request.set_term(term);
    request.set_primary_index(own_);
    size_t bytes = 0;
    for (const ReplicationLog::EntryPtr& entry : *batch) {
      ps::v1::ShardChange* change = request.add_changes();
      ToProto(*entry, change);
      bytes += change->ByteSizeLong();
      // The rest go in the next batch: under the backup's request limit.
      if (bytes >= kMaxApplyBytes) break;
    }
    // A witness is sent no changes (Next), only what is committed: it votes
    // with that.
    if (witness) {
      request.set_committed_index(log_.DeclareCommitted(replica, generation));
    }
    const size_t request_bytes = request.ByteSizeLong();
    // A failed batch is sent again whole: the backup skips what it applied.
    while (true) {
      bytes_sent_.fetch_add(request_bytes, std::memory_order_relaxed);
      grpc::ClientContext context;
      context.set_deadline(
          absl::ToChronoTime(absl::Now() + options_.rpc_deadline));
      ps::v1::ApplyResponse response;
      const grpc::Status sent = stub->Apply(&context, request, &response);
      if (sent.ok()) {
        acked = std::max(acked, response.applied_index());
        log_.Acknowledge(replica, generation, acked,
                         response.committed_index());
        failing_since = absl::InfiniteFuture();
        break;
      }
      // A newer term: this primary was replaced. It must not acknowledge
      // another write, nor drop the backup and go on alone.
      const absl::Status refused = rpc::FromGrpcStatus(sent);
      if (common::HasErrorReason(refused, kStaleTerm)) {
        std::optional<common::ErrorInfo> info = common::GetErrorInfo(refused);
        uint64_t newer = 0;
        if (!absl::SimpleAtoi(info->metadata["term"], &newer)) newer = term + 1;
        {
          absl::MutexLock lock(&apply_mu_);
          StepDown(newer, kUnknown,
                   absl::StrCat("replica ", replica, " is in term ", newer));
        }
        // Dropped in any case: a refusal of the same term (the backup
        // leads that term too) moves no term, and a backup still counted
        // live would hold every write until it answered, forever.
        log_.Drop(replica, generation, refused.ToString());
        return;
      }
      const absl::Time now = absl::Now();
      failing_since = std::min(failing_since, now);
      // A backup that says it cannot follow (it missed changes) will not
      // by being asked again.
      if (sent.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
          now - failing_since >= options_.drop_after) {
        // Before going on without it: a backup that was paused or slow
        // may have taken over meanwhile, and then this primary steps down
        // instead of acknowledging writes alone (they would be lost).
        absl::StatusOr<ps::v1::ReplicaStatusResponse> status =
            AskStatus(replica, options_.rpc_deadline);
        if (status.ok() && status->term() > term) {
          absl::MutexLock lock(&apply_mu_);
          StepDown(status->term(),
                   status->role() == ps::v1::PRIMARY ? replica : kUnknown,
                   absl::StrCat("replica ", replica, " is in term ",
                                status->term()));
          return;
        }
        log_.Drop(replica, generation,
                  absl::StrCat("Apply failed for ",
                               absl::FormatDuration(now - failing_since), ": ",
                               sent.error_message()));
        return;
      }
      if (stop_.WaitForNotificationWithTimeout(
              std::min(options_.rpc_deadline / 10, absl::Milliseconds(20)))) {
        return;
      }
    }
  }
}

void Replicator::FollowLoop() {
  const absl::Duration tick =
      std::min(options_.heartbeat_every, options_.failover_timeout / 4);
  absl::Time last_logged = absl::InfinitePast();
  absl::Time last_fenced = absl::InfinitePast();
  absl::Time last_learned = absl::InfinitePast();
  auto step = [&] {
    if (primary()) {
      log_.ExpireWithoutQuorum();
      if (absl::Now() - last_fenced >= options_.heartbeat_every) {
        FenceIfStale();
        last_fenced = absl::Now();
      }
      return;
    }
    if (!joined()) {
      const absl::Status joined = JoinOnce();
      if (joined.ok()) return;
      if (absl::Now() - last_logged > absl::Seconds(5)) {
        spdlog::warn(
            "replication: replica {} cannot join its primary yet: {}; "
            "retrying",
            own_, joined.ToString());
        last_logged = absl::Now();
      }
      // No primary (an election was lost, or split): a replica that held
      // the shard's state stands (ElectionTimeout).
      bool stand = false;
      {
        absl::MutexLock lock(&apply_mu_);
        stand = voting() && log_term_ > 0 &&
                absl::Now() - last_heard_ >= ElectionTimeout();
      }
      if (stand) Elect();
      return;
    }
    bool silent = false;
    {
      absl::MutexLock lock(&apply_mu_);
      silent = absl::Now() - last_heard_ >= ElectionTimeout();
    }
    if (silent) {
      Elect();
    } else if (KnownPeers().size() + 1 < options_.peers.size() &&
               absl::Now() - last_learned >= options_.heartbeat_every) {
      LearnPeers();
      last_learned = absl::Now();
    }
  };
  // A backup joins at once: the first step runs before the first tick.
  do {
    step();
  } while (!stop_.WaitForNotificationWithTimeout(tick));
}

absl::Status Replicator::JoinOnce() {
  uint32_t primary = kUnknown;
  uint64_t term = 0;
  {
    absl::MutexLock lock(&role_mu_);
    primary = primary_;
    term = term_;
  }
  if (primary == kUnknown || primary == own_) {
    // Whoever leads now says so. The candidate this replica voted for in
    // its term first: it most likely won, and a stopped replica asked
    // before it would cost a whole timeout.
    uint32_t voted_for = kNoVote;
    {
      absl::MutexLock lock(&apply_mu_);
      if (vote_.term == term) voted_for = vote_.voted_for;
    }
    std::vector<uint32_t> peers = KnownPeers();
    std::stable_partition(peers.begin(), peers.end(),
                          [&](uint32_t r) { return r == voted_for; });
    for (uint32_t replica : peers) {
      absl::StatusOr<ps::v1::ReplicaStatusResponse> status =
          AskStatus(replica, options_.failover_timeout);
      if (status.ok() && status->role() == ps::v1::PRIMARY) {
        primary = replica;
        // A primary of an older term (this replica's was moved by a
        // candidate) that does not reach this replica otherwise, as after
        // a restart on a new address: the Join, of this replica's term,
        // makes it step down, and the shard elects a primary of a term
        // this replica can follow.
        if (status->term() < term) break;
        // The Join carries the primary's term: its first Apply, of that
        // term, must not look newer than this replica's term (which would
        // step it down and cancel this Join).
        term = status->term();
        absl::MutexLock lock(&apply_mu_);
        StepDown(term, replica,
                 absl::StrCat("replica ", replica, " leads term ", term));
        break;
      }
      // Still counting its votes: ask it again next step.
      if (status.ok() && replica == voted_for) break;
    }
    if (primary == kUnknown || primary == own_) {
      return absl::UnavailableError("no replica says it is the primary");
    }
  }
  std::shared_ptr<ps::v1::Replication::Stub> stub = StubFor(primary);
  if (stub == nullptr) return absl::UnavailableError("no primary's address");
  grpc::ClientContext context;
  context.set_deadline(
      absl::ToChronoTime(absl::Now() + options_.join_deadline));
  ps::v1::JoinRequest request;
  request.set_term(term);
  request.set_replica_index(own_);
  request.set_address(PeerAddress(own_));
  request.set_witness(options_.witness);
  ps::v1::JoinResponse response;
  {
    absl::MutexLock lock(&threads_mu_);
    if (stop_.HasBeenNotified()) return absl::CancelledError("stopping");
    joining_ = &context;
  }
  const grpc::Status joined = stub->Join(&context, request, &response);
  {
    absl::MutexLock lock(&threads_mu_);
    joining_ = nullptr;
  }
  if (!joined.ok()) {
    // Next time, ask around who leads.
    absl::MutexLock lock(&role_mu_);
    if (primary_ == primary) primary_ = kUnknown;
    return rpc::FromGrpcStatus(joined);
  }
  // Decoded before taking apply_mu_: a large state takes long to parse, and
  // meanwhile this replica answers votes and Applies.
  std::optional<common::ThetaFile> state;
  if (!response.snapshot().empty() && !options_.witness) {
    absl::StatusOr<common::ThetaFile> decoded =
        common::DecodeThetaFile(response.snapshot(), "the primary's state");
    if (!decoded.ok()) return decoded.status();
    state = *std::move(decoded);
  }
  // The restore stays under apply_mu_: the shard's state and the log
  // position this replica votes with (log_term_, applied_) change together,
  // and not at all if a vote moved the term meanwhile.
  absl::MutexLock lock(&apply_mu_);
  if (this->term() > std::max(term, response.term())) {
    return absl::UnavailableError(
        absl::StrCat("a newer term began while joining replica ", primary,
                     " of term ", response.term()));
  }
  if (state.has_value()) {
    // Leases and the open round restart from the primary's time of the
    // state, as after a restore.
    clock_->Set(absl::FromUnixNanos(response.time_unix_nanos()));
    if (absl::Status restored = shard_->Restore(*std::move(state));
        !restored.ok()) {
      return restored;
    }
  }
  {
    absl::MutexLock role_lock(&role_mu_);
    term_ = std::max(term_, response.term());
    primary_ = primary;
  }
  applied_ = response.index();
  log_term_ = response.term();
  // A witness holds nothing committed until this primary says so: every
  // change acknowledged before it joined is on a backup that holds θ.
  committed_ = 0;
  joined_ = true;
  // This replica follows the primary of its term now: it votes for no other
  // candidate of the term, and may give votes from now on.
  if (vote_.term < response.term())
    vote_ = VoterState{response.term(), primary};
  may_vote_ = true;
  last_heard_ = absl::Now();
  heard_from_primary_ = last_heard_;
  spdlog::info(
      "replication: replica {} joined primary {} of term {} at change {} "
      "(state of {} bytes)",
      own_, primary, response.term(), applied_, response.snapshot().size());
  return absl::OkStatus();
}

void Replicator::Elect() {
  uint32_t primary = kUnknown;
  uint64_t term = 0;
  {
    absl::MutexLock lock(&role_mu_);
    primary = primary_;
    term = term_;
  }
  if (primary == own_ || (primary == kUnknown && !voting())) return;
  uint64_t applied = 0;
  {
    absl::MutexLock lock(&apply_mu_);
    applied = applied_;
  }
  // A primary that answers lives: this backup was dropped (it was stopped,
  // or too slow), and copies the state again. A live primary answers
  // soon (SilentPrimaryDeadline).
  absl::StatusOr<ps::v1::ReplicaStatusResponse> answer =
      primary == kUnknown ? absl::UnavailableError("no primary")
                          : AskStatus(primary, SilentPrimaryDeadline());
  if (answer.ok() && answer->role() == ps::v1::PRIMARY &&
      answer->term() >= term) {
    spdlog::warn(
        "replication: replica {} heard nothing from primary {} for {} but it "
        "answers: this backup was dropped; it joins again",
        own_, primary, absl::FormatDuration(options_.failover_timeout));
    absl::MutexLock lock(&apply_mu_);
    joined_ = false;
    // A timeout to join it before this replica may stand: a failed Join
    // must not start an election against a live primary.
    last_heard_ = absl::Now();
    return;
  }
  // The next replica after the dead primary in the fixed order takes over,
  // unless a replica of the same term applied more: a backup that is
  // behind must not lead, or acknowledged writes would be lost. With votes
  // this is a courtesy that saves split elections; the votes decide.
  auto place = [&](uint32_t r) { return Place(r, primary); };
  for (uint32_t replica : KnownPeers()) {
    if (replica == primary) continue;
    absl::StatusOr<ps::v1::ReplicaStatusResponse> status =
        AskStatus(replica, options_.failover_timeout);
    if (!status.ok()) continue;
    // A primary of this term or a newer one leads: this replica joins it
    // (one of its own term it did not know, as after a failed Join)
    // rather than stand against it.
    if (status->role() == ps::v1::PRIMARY && status->term() >= term) {
      absl::MutexLock lock(&apply_mu_);
      StepDown(status->term(), replica,
               absl::StrCat("replica ", replica, " took over"));
      absl::MutexLock role_lock(&role_mu_);
      if (term_ == status->term()) primary_ = replica;
      joined_ = false;
      last_heard_ = absl::Now();
      return;
    }
    // A witness holds no θ and cannot lead; its log is only the committed
    // index, never ahead of a backup that holds every change acknowledged.
    if (status->term() == term && status->role() == ps::v1::BACKUP &&
        !status->witness() &&
        (status->log_index() > applied ||
         (status->log_index() == applied && place(replica) < place(own_)))) {
      spdlog::info(
          "replication: replica {} leaves the takeover to replica {} (at "
          "change {}, this one at {})",
          own_, replica, status->log_index(), applied);
      absl::MutexLock lock(&apply_mu_);
      last_heard_ = absl::Now();
      return;
    }
  }
  if (voting()) {
    StandForElection();
    return;
  }
  // Two replicas: the other one is the dead primary (README, "Elections",
  // for the partition this does not survive).
  absl::MutexLock lock(&apply_mu_);
  // The primary spoke meanwhile.
  if (!joined_ || absl::Now() - last_heard_ < options_.failover_timeout) {
    return;
  }
  TakeOver(this->term() + 1, absl::Now() - last_heard_);
}

void Replicator::StandForElection() {
  if (options_.witness) {
    // It holds no θ: it waits for a backup to stand (and votes), asking
    // around for a primary once per election timeout (Elect).
    absl::MutexLock lock(&apply_mu_);
    last_heard_ = absl::Now();
    return;
  }
  uint32_t old_primary = kUnknown;
  Ballot ballot;
  absl::Duration silent;
  {
    absl::MutexLock lock(&apply_mu_);
    // The primary spoke meanwhile, or this replica voted since.
    if (absl::Now() - last_heard_ < options_.failover_timeout) return;
    // A replica that never held the shard's state cannot lead.
    if (log_term_ == 0) return;
    silent = absl::Now() - last_heard_;
    {
      absl::MutexLock role_lock(&role_mu_);
      old_primary = primary_;
    }
    // After the last term it voted in, which a vote store remembers past
    // a restart (the term itself starts at 1 again).
    ballot = {std::max(term(), vote_.term) + 1, own_, OwnLog()};
  }
  ps::v1::VoteRequest request;
  request.set_term(ballot.term);
  request.set_candidate_index(own_);
  request.set_last_log_term(ballot.log.term);
  request.set_last_applied_index(ballot.log.index);
  // Pre-vote (Raft's §9.6): a candidate that a majority would not elect (it
  // is cut off from a primary they still hear, or its log is behind) moves
  // nobody's term, its own neither, so it cannot depose that primary later.
  request.set_pre_vote(true);
  if (!WinsMajority(request, old_primary, "pre-vote")) return;
  {
    absl::MutexLock lock(&apply_mu_);
    // A primary spoke, or this replica voted, while it asked.
    if (absl::Now() - last_heard_ < options_.failover_timeout) return;
    if (std::max(term(), vote_.term) + 1 != ballot.term) return;
    // Its own vote; the new term fences the old primary (its next Apply
    // here is refused as stale).
    if (!Vote(ballot, "it stands for election").granted) return;
  }
  spdlog::info(
      "replication: replica {} stands for primary of term {} (log at change "
      "{} of term {})",
      own_, ballot.term, ballot.log.index, ballot.log.term);
  request.set_pre_vote(false);
  if (!WinsMajority(request, old_primary, "election")) return;
  absl::MutexLock lock(&apply_mu_);
  // A newer term arrived meanwhile (this replica voted in it, or joined).
  {
    absl::MutexLock role_lock(&role_mu_);
    if (term_ != ballot.term || primary_ != kUnknown) return;
  }
  TakeOver(ballot.term, silent);
}

bool Replicator::WinsMajority(const ps::v1::VoteRequest& request,
                              uint32_t old_primary, absl::string_view what) {
  // The old primary last: it most likely does not answer.
  std::vector<uint32_t> voters = KnownPeers();
  std::stable_partition(voters.begin(), voters.end(),
                        [&](uint32_t r) { return r != old_primary; });
  size_t votes = 1;  // its own
  for (uint32_t voter : voters) {
    if (votes >= majority()) break;
    absl::StatusOr<ps::v1::VoteResponse> answer =
        Ask(StubFor(voter).get(), options_.failover_timeout,
            &ps::v1::Replication::Stub::RequestVote, request);
    if (!answer.ok()) continue;  // the next election asks again
    // A newer term (for a pre-vote, one as new as the term it would
    // stand for): this replica is behind, and moves to it.
    if (answer->term() > request.term() ||
        (request.pre_vote() && answer->term() >= request.term())) {
      absl::MutexLock lock(&apply_mu_);
      StepDown(answer->term(), kUnknown,
               absl::StrCat("replica ", voter, " is in term ", answer->term()));
      return false;
    }
    if (answer->granted()) ++votes;
  }
  if (votes >= majority()) return true;
  absl::MutexLock lock(&apply_mu_);
  // The next try waits a random part of a timeout more.
  last_heard_ =
      absl::Now() + options_.failover_timeout *
                        std::uniform_real_distribution<double>(0, 1)(jitter_);
  spdlog::warn(
      "replication: replica {} lost the {} for term {}: {} of {} votes, a "
      "majority is {}",
      own_, std::string(what), request.term(), votes, options_.peers.size(),
      majority());
  return false;
}

Verdict Replicator::Decide(const Ballot& ballot, VoterState* state) const {
  *state = vote_;
  const uint64_t term = this->term();
  if (state->term < term) *state = VoterState{term, kNoVote};
  Verdict verdict = CastVote(ballot, OwnLog(), state);
  if (verdict.granted && !may_vote_) {
    // Restarted without a vote store: it may have voted in this term before.
    verdict.granted = false;
    state->voted_for = state->term == vote_.term ? vote_.voted_for : kNoVote;
  }
  return verdict;
}

Verdict Replicator::Vote(const Ballot& ballot, const std::string& why) {
  VoterState state;
  Verdict verdict = Decide(ballot, &state);
  const bool same_term = state.term == vote_.term;
  // Saved unless the store holds this very vote (a retried request): also
  // a vote for the primary this replica joined, which it kept in memory.
  if (verdict.granted && vote_store_.has_value() &&
      (vote_store_->vote().term != state.term ||
       vote_store_->vote().voted_for != state.voted_for)) {
    // Durable before the answer: a restarted replica remembers it.
    if (absl::Status saved = vote_store_->Save(state); !saved.ok()) {
      spdlog::error(
          "replication: replica {} cannot keep its vote, so gives "
          "none: {}",
          own_, saved.ToString());
      verdict.granted = false;
      state.voted_for = same_term ? vote_.voted_for : kNoVote;
    }
  }
  const absl::Time heard = last_heard_;
  if (verdict.term_moved) StepDown(ballot.term, kUnknown, why);
  vote_ = state;
  // A vote given restarts the election timeout: the candidate gets its
  // chance. A vote refused does not, or a candidate that cannot win (its
  // log behind) would keep the others from standing, term after term.
  last_heard_ = verdict.granted ? absl::Now() : heard;
  return verdict;
}

absl::Duration Replicator::SilentPrimaryDeadline() const {
  return std::max(options_.heartbeat_every, options_.failover_timeout / 3);
}

uint32_t Replicator::Place(uint32_t replica, uint32_t primary) const {
  const uint32_t replicas = options_.peers.size();
  return primary == kUnknown ? replica
                             : (replica + replicas - primary - 1) % replicas;
}

absl::Duration Replicator::ElectionTimeout() const {
  uint32_t primary = kUnknown;
  {
    absl::MutexLock lock(&role_mu_);
    primary = primary_;
  }
  return options_.failover_timeout +
         Place(own_, primary) *
             (SilentPrimaryDeadline() + options_.heartbeat_every);
}

LogPosition Replicator::OwnLog() const {
  // A witness holds no changes: it votes with what it was told is
  // committed.
  if (options_.witness) return {log_term_, committed_};
  return {log_term_, primary() ? log_.last_index() : applied_};
}

void Replicator::TakeOver(uint64_t term, absl::Duration silent) {
  // The journal is in place before the first worker call is let through.
  log_.Reopen(applied_);
  clock_->UseRealTime();
  shard_->SetJournal(&log_);
  {
    absl::MutexLock lock(&role_mu_);
    term_ = term;
    primary_ = own_;
    ++takeovers_;
  }
  log_term_ = term;
  vote_ = VoterState{term, own_};
  first_push_logged_.store(false);
  joined_ = false;
  spdlog::warn(
      "replication: replica {} takes over as the primary of term {} at "
      "change {}: no primary was heard for {}",
      own_, term, applied_, absl::FormatDuration(silent));
}

void Replicator::StepDown(uint64_t term, uint32_t primary,
                          const std::string& why) {
  bool was_primary = false;
  {
    absl::MutexLock lock(&role_mu_);
    if (term <= term_) return;
    term_ = term;
    was_primary = primary_ == own_;
    primary_ = primary;
  }
  joined_ = false;
  // The new primary gets an election timeout to be found and joined.
  last_heard_ = absl::Now();
  // A join in flight is to a replica of an older term (it may be stopped:
  // the join would wait its whole deadline).
  {
    absl::MutexLock lock(&threads_mu_);
    if (joining_ != nullptr) joining_->TryCancel();
  }
  if (!was_primary) return;
  // Its shard holds every change it logged (some maybe unacknowledged): its
  // log, for the votes, until it joins the new primary.
  applied_ = log_.last_index();
  spdlog::warn(
      "replication: replica {} steps down as primary ({}): it joins the "
      "primary of term {} as a backup",
      own_, why, term);
  shard_->SetJournal(nullptr);
  // Writes waiting for backups were not acknowledged: they fail, and the
  // workers retry them at the new primary, which applies each once.
  log_.Close(absl::StrCat("replica ", own_, " stepped down as primary"));
  shard_->AnswerParkedPulls(CheckPrimary());
}

void Replicator::LearnPeers() {
  uint32_t primary = kUnknown;
  {
    absl::MutexLock lock(&role_mu_);
    primary = primary_;
  }
  if (primary == kUnknown || primary == own_) return;
  absl::StatusOr<ps::v1::ReplicaStatusResponse> status =
      AskStatus(primary, options_.failover_timeout);
  if (!status.ok()) return;  // the next step asks again
  absl::MutexLock lock(&role_mu_);
  for (const ps::v1::BackupStatus& backup : status->backups()) {
    const uint32_t replica = backup.replica_index();
    if (replica >= peers_.size() || replica == own_ ||
        backup.address().empty() || !absl::EndsWith(peers_[replica], ":0")) {
      continue;
    }
    peers_[replica] = backup.address();
    spdlog::info("replication: replica {} learned replica {}'s address, {}",
                 own_, replica, backup.address());
  }
}

void Replicator::FenceIfStale() {
  std::vector<uint32_t> followers;
  for (const ReplicationLog::BackupProgress& b : log_.Backups()) {
    if (b.live) followers.push_back(b.replica);
  }
  const uint64_t term = this->term();
  for (uint32_t replica : KnownPeers()) {
    if (std::find(followers.begin(), followers.end(), replica) !=
        followers.end()) {
      continue;  // its answers to Apply would fence this primary
    }
    absl::StatusOr<ps::v1::ReplicaStatusResponse> status =
        AskStatus(replica, options_.failover_timeout);
    if (status.ok() && status->term() > term) {
      absl::MutexLock lock(&apply_mu_);
      StepDown(
          status->term(),
          status->role() == ps::v1::PRIMARY ? replica : kUnknown,
          absl::StrCat("replica ", replica, " is in term ", status->term()));
      return;
    }
  }
}

grpc::ServerUnaryReactor* Replicator::Apply(
    grpc::CallbackServerContext* context, const ps::v1::ApplyRequest* request,
    ps::v1::ApplyResponse* response) {
  absl::MutexLock lock(&apply_mu_);
  const absl::Status applied = ApplyChanges(*request);
  response->set_term(term());
  response->set_applied_index(applied_);
  response->set_committed_index(committed_);
  return FinishNow(context, applied);
}

absl::Status Replicator::ApplyChanges(const ps::v1::ApplyRequest& request) {
  uint64_t term = 0;
  uint32_t primary = kUnknown;
  {
    absl::MutexLock lock(&role_mu_);
    term = term_;
    primary = primary_;
  }
  if (request.term() < term || (request.term() == term && primary == own_)) {
    return Refused(kStaleTerm,
                   absl::StrCat("changes from term ", request.term(),
                                " but replica ", own_, " is in term ", term,
                                primary == own_ ? ", its primary" : ""),
                   {{"term", absl::StrCat(term)}});
  }
  // A primary this replica has not joined: its state may differ. (One of
  // its own term while it is not joined is the one it is joining: the
  // first Apply may overtake the Join's answer. It waits, below.)
  if (request.term() > term ||
      (joined_ && request.primary_index() != primary)) {
    StepDown(request.term(), request.primary_index(),
             absl::StrCat("changes from replica ", request.primary_index(),
                          " in term ", request.term()));
    joined_ = false;
    return Refused(
        kRejoinRequired,
        absl::StrCat("replica ", own_, " has not joined the primary of term ",
                     request.term(), "; it joins again"));
  }
  if (!joined_) {
    return absl::UnavailableError(
        "this backup is still copying the primary's state; retry");
  }
  last_heard_ = absl::Now();
  heard_from_primary_ = last_heard_;
  if (options_.witness) {
    // Its log is what the primary says is committed; it is sent no changes.
    committed_ = std::max(committed_, request.committed_index());
    applied_ = std::max(applied_, committed_);
    return absl::OkStatus();
  }
  for (const ps::v1::ShardChange& proto : request.changes()) {
    if (proto.index() <= applied_) continue;  // a retried batch
    if (proto.index() != applied_ + 1) {
      joined_ = false;
      return Refused(kRejoinRequired,
                     absl::StrCat("change ", proto.index(),
                                  " arrived but this backup applied up to ",
                                  applied_, "; it must join again"));
    }
    absl::StatusOr<ShardChange> change = ShardChangeFromProto(proto);
    if (!change.ok()) return change.status();
    clock_->Set(absl::FromUnixNanos(proto.time_unix_nanos()));
    Replay(*shard_, *change);
    applied_ = proto.index();
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* Replicator::ReplicaStatus(
    grpc::CallbackServerContext* context, const ps::v1::ReplicaStatusRequest*,
    ps::v1::ReplicaStatusResponse* response) {
  response->set_replica_index(own_);
  response->set_witness(options_.witness);
  response->set_term(term());
  response->set_version(shard_->Status().version);
  response->set_log_index(log_index());
  {
    absl::MutexLock lock(&apply_mu_);
    response->set_log_term(log_term_);
  }
  if (primary()) {
    response->set_role(ps::v1::PRIMARY);
    for (const ReplicationLog::BackupProgress& b : log_.Backups()) {
      ps::v1::BackupStatus* backup = response->add_backups();
      backup->set_replica_index(b.replica);
      backup->set_address(b.address);
      backup->set_live(b.live);
      backup->set_acked_index(b.acked);
    }
    response->set_backups_dropped(log_.backups_dropped());
  } else {
    absl::MutexLock lock(&apply_mu_);
    response->set_role(joined_ ? ps::v1::BACKUP : ps::v1::JOINING);
  }
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* Replicator::RequestVote(
    grpc::CallbackServerContext* context, const ps::v1::VoteRequest* request,
    ps::v1::VoteResponse* response) {
  const uint32_t candidate = request->candidate_index();
  if (request->term() == 0 || candidate == own_ ||
      candidate >= options_.peers.size()) {
    return FinishNow(
        context,
        absl::InvalidArgumentError(absl::StrCat(
            "a vote for replica ", candidate, " in term ", request->term(),
            ": the candidate must be another replica of this shard (0 to ",
            options_.peers.size() - 1, ", this is ", own_,
            ") and the term at least 1")));
  }
  // A candidate stands for a term after the one its log comes from; a log
  // of that term or later would win every vote it asks for.
  if (request->last_log_term() >= request->term()) {
    return FinishNow(
        context,
        absl::InvalidArgumentError(absl::StrCat(
            "replica ", candidate, " stands for term ", request->term(),
            " with a log of term ", request->last_log_term(),
            ": a candidate's log must be of an older term")));
  }
  absl::MutexLock lock(&apply_mu_);
  const Ballot ballot{
      request->term(),
      candidate,
      {request->last_log_term(), request->last_applied_index()}};
  // A primary, or a backup that heard from its primary within half a
  // failover timeout, neither votes nor moves its term: a candidate cut off
  // from a live primary (a partition) would otherwise depose it, term after
  // term, without being able to win (Raft's disruptive servers, §9.6 of
  // Ongaro's thesis). A candidate whose primary truly died is not refused:
  // a backup hears from a live primary every heartbeat, and the candidate
  // stood after a whole timeout of its silence.
  const bool leader_alive =
      primary() || (joined_ && absl::Now() - heard_from_primary_ <
                                   options_.failover_timeout / 2);
  if (request->pre_vote() || (leader_alive && request->term() > term())) {
    // What it would answer, changing nothing.
    VoterState would_be;
    const bool granted = !leader_alive && request->term() > term() &&
                         Decide(ballot, &would_be).granted;
    response->set_term(term());
    response->set_granted(granted);
    spdlog::info(
        "replication: replica {} {} its {}vote in term {} to replica {}{}",
        own_, granted ? "would give" : "refuses",
        request->pre_vote() ? "pre-" : "", request->term(), candidate,
        leader_alive ? absl::StrCat(": its primary lives (heard ",
                                    absl::FormatDuration(absl::Now() -
                                                         heard_from_primary_),
                                    " ago)")
                     : "");
    return FinishNow(context, absl::OkStatus());
  }
  const Verdict verdict =
      Vote(ballot, absl::StrCat("replica ", candidate, " stands for term ",
                                request->term()));
  response->set_term(term());
  response->set_granted(verdict.granted);
  spdlog::info(
      "replication: replica {} {} its vote in term {} to replica {} (log at "
      "change {} of term {}; its own at {} of term {})",
      own_, verdict.granted ? "gives" : "refuses", request->term(), candidate,
      request->last_applied_index(), request->last_log_term(), OwnLog().index,
      OwnLog().term);
  return FinishNow(context, absl::OkStatus());
}

}  // namespace ps::server
