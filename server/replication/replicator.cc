#include "server/replication/replicator.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/match.h"
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
    : options_(options), shard_(shard), clock_(clock) {}

Replicator::~Replicator() { Stop(); }

void Replicator::Start(int bound_port) {
  own_address_ = options_.peers[options_.replica_index];
  if (absl::EndsWith(own_address_, ":0")) {
    own_address_ = absl::StrCat(own_address_.substr(0, own_address_.size() - 1),
                                bound_port);
  }
  if (primary()) {
    shard_->SetJournal(&log_);
    return;
  }
  absl::MutexLock lock(&threads_mu_);
  threads_.emplace_back([this] { JoinLoop(); });
}

void Replicator::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  log_.Close();
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&threads_mu_);
    if (joining_ != nullptr) joining_->TryCancel();
    threads.swap(threads_);
  }
  for (std::thread& t : threads) t.join();
  if (primary()) shard_->SetJournal(nullptr);
}

absl::Status Replicator::CheckPrimary() const {
  if (primary()) return absl::OkStatus();
  return Refused(
      kNotPrimary,
      absl::StrCat("this server is backup replica ", options_.replica_index,
                   " of its shard; send "
                   "workers' calls to the primary, ",
                   options_.peers[0]),
      {{"primary", options_.peers[0]}, {"term", absl::StrCat(term_)}});
}

void Replicator::WhenReplicated(ReplicationLog::Done done) {
  if (!primary()) {
    done(absl::OkStatus());
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
  state.primary = primary();
  state.joined = joined();
  state.term = term_;
  state.failovers = failovers_.load(std::memory_order_relaxed);
  state.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
  state.backups_dropped = log_.backups_dropped();
  return state;
}

uint64_t Replicator::log_index() const {
  if (primary()) return log_.last_index();
  absl::MutexLock lock(&apply_mu_);
  return applied_;
}

grpc::ServerUnaryReactor* Replicator::Join(grpc::CallbackServerContext* context,
                                           const ps::v1::JoinRequest* request,
                                           ps::v1::JoinResponse* response) {
  if (!primary()) {
    return FinishNow(context, CheckPrimary());
  }
  if (request->term() > term_) {
    return FinishNow(
        context, Refused(kStaleTerm,
                         absl::StrCat("this primary is in term ", term_,
                                      ", the backup in term ", request->term()),
                         {{"term", absl::StrCat(term_)}}));
  }
  const uint32_t replica = request->replica_index();
  if (replica == options_.replica_index || replica >= options_.peers.size()) {
    return FinishNow(
        context, absl::InvalidArgumentError(absl::StrCat(
                     "replica ", replica, " is not a backup of this shard (",
                     options_.peers.size(), " replicas)")));
  }
  ReplicationLog::Joined joined;
  absl::Time at;
  absl::StatusOr<common::ThetaFile> state = shard_->Snapshot([&] {
    at = clock_->Now();
    joined = log_.AddBackup(replica, request->address());
  });
  response->set_term(term_);
  response->set_index(joined.index);
  response->set_time_unix_nanos(absl::ToUnixNanos(at));
  // Before Init there is no state to copy: the backup starts empty, as the
  // primary did, and replays the Init.
  if (state.ok()) response->set_snapshot(common::EncodeThetaFile(*state));
  {
    absl::MutexLock lock(&threads_mu_);
    threads_.emplace_back([this, replica, joined,
                           address = request->address()]() mutable {
      SendLoop(replica, joined.generation, joined.index, std::move(address));
    });
  }
  return FinishNow(context, absl::OkStatus());
}

void Replicator::SendLoop(uint32_t replica, uint64_t generation, uint64_t acked,
                          std::string address) {
  std::unique_ptr<ps::v1::Replication::Stub> stub =
      ps::v1::Replication::NewStub(rpc::CreateChannel(address));
  // Since when the backup has not acknowledged a batch; InfiniteFuture
  // while it does.
  absl::Time failing_since = absl::InfiniteFuture();
  while (true) {
    std::optional<std::vector<ReplicationLog::EntryPtr>> batch =
        log_.Next(replica, generation, acked, kMaxChangesPerApply,
                  options_.heartbeat_every);
    if (!batch.has_value()) return;
    ps::v1::ApplyRequest request;
    request.set_term(term_);
    request.set_primary_index(options_.replica_index);
    size_t bytes = 0;
    for (const ReplicationLog::EntryPtr& entry : *batch) {
      ps::v1::ShardChange* change = request.add_changes();
      ToProto(*entry, change);
      bytes += change->ByteSizeLong();
      // The rest go in the next batch: under the backup's request limit.
      if (bytes >= kMaxApplyBytes) break;
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
        log_.Acknowledge(replica, generation, acked);
        failing_since = absl::InfiniteFuture();
        break;
      }
      const absl::Time now = absl::Now();
      failing_since = std::min(failing_since, now);
      // A backup that says it cannot follow (it missed changes, or it is
      // in a newer term) will not by being asked again.
      if (sent.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
          now - failing_since >= options_.drop_after) {
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

void Replicator::JoinLoop() {
  absl::Time last_logged = absl::InfinitePast();
  while (!stop_.HasBeenNotified()) {
    const absl::Status joined = JoinOnce();
    if (joined.ok()) return;
    if (absl::Now() - last_logged > absl::Seconds(5)) {
      spdlog::warn(
          "replication: replica {} cannot join the primary {} yet: "
          "{}; retrying",
          options_.replica_index, options_.peers[0], joined.ToString());
      last_logged = absl::Now();
    }
    stop_.WaitForNotificationWithTimeout(absl::Milliseconds(100));
  }
}

absl::Status Replicator::JoinOnce() {
  std::unique_ptr<ps::v1::Replication::Stub> stub =
      ps::v1::Replication::NewStub(rpc::CreateChannel(options_.peers[0]));
  grpc::ClientContext context;
  context.set_deadline(
      absl::ToChronoTime(absl::Now() + options_.join_deadline));
  ps::v1::JoinRequest request;
  request.set_term(term_);
  request.set_replica_index(options_.replica_index);
  request.set_address(own_address_);
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
  if (!joined.ok()) return rpc::FromGrpcStatus(joined);
  absl::MutexLock lock(&apply_mu_);
  if (!response.snapshot().empty()) {
    absl::StatusOr<common::ThetaFile> state =
        common::DecodeThetaFile(response.snapshot(), "the primary's state");
    if (!state.ok()) return state.status();
    // Leases and the open round restart from the primary's time of the
    // state, as after a restore.
    clock_->Set(absl::FromUnixNanos(response.time_unix_nanos()));
    if (absl::Status restored = shard_->Restore(*std::move(state));
        !restored.ok()) {
      return restored;
    }
  }
  applied_ = response.index();
  joined_ = true;
  spdlog::info(
      "replication: replica {} joined primary {} at change {} (state of {} "
      "bytes)",
      options_.replica_index, options_.peers[0], applied_,
      response.snapshot().size());
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* Replicator::Apply(
    grpc::CallbackServerContext* context, const ps::v1::ApplyRequest* request,
    ps::v1::ApplyResponse* response) {
  absl::MutexLock lock(&apply_mu_);
  const absl::Status applied = ApplyChanges(*request);
  response->set_term(term_);
  response->set_applied_index(applied_);
  return FinishNow(context, applied);
}

absl::Status Replicator::ApplyChanges(const ps::v1::ApplyRequest& request) {
  if (primary()) {
    return Refused(kStaleTerm,
                   absl::StrCat("replica ", options_.replica_index,
                                " is the primary of term ", term_,
                                "; it applies no other replica's changes"),
                   {{"term", absl::StrCat(term_)}});
  }
  if (request.term() < term_) {
    return Refused(kStaleTerm,
                   absl::StrCat("changes from term ", request.term(),
                                " but this replica is in term ", term_),
                   {{"term", absl::StrCat(term_)}});
  }
  if (!joined_) {
    return absl::UnavailableError(
        "this backup is still copying the primary's state; retry");
  }
  for (const ps::v1::ShardChange& proto : request.changes()) {
    if (proto.index() <= applied_) continue;  // a retried batch
    if (proto.index() != applied_ + 1) {
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
  response->set_replica_index(options_.replica_index);
  response->set_term(term_);
  response->set_version(shard_->Status().version);
  response->set_log_index(log_index());
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

}  // namespace ps::server
