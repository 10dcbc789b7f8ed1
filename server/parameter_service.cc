#include "server/parameter_service.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/float_bytes.h"
#include "common/rpc/convert.h"
#include "common/rpc/fault_injection.h"
#include "common/rpc/wire_format.h"
#include "server/parked_pull.h"
#include "server/wire_messages.h"

namespace ps::server {
namespace {

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(rpc::ToGrpcStatus(status));
  return reactor;
}

// The answer to a Pull, or to a PushPull with its push's outcome.
grpc::ByteBuffer EncodeAnswer(const ps::v1::PushResponse* pushed,
                              PullResult pulled) {
  return pushed == nullptr ? EncodePullResponse(std::move(pulled))
                           : EncodePushPullResponse(*pushed, std::move(pulled));
}

// A pull's end, counted in `metrics` as `call`'s: `result` encoded as
// EncodeAnswer does, or its error. A `parked` pull says how long it waited
// since the call started; one answered at once waited nothing.
absl::StatusOr<grpc::ByteBuffer> AnswerPull(ServerMetrics& metrics,
                                            const RpcCall& call,
                                            const ps::v1::PushResponse* pushed,
                                            absl::StatusOr<PullResult> result,
                                            bool parked) {
  if (parked) {
    metrics.ParkedPullEnded();
    if (result.ok()) {
      result->waited =
          absl::FromChrono(std::chrono::steady_clock::now() - call.start);
    }
  }
  metrics.CountPull(result.status());
  if (!result.ok()) {
    metrics.EndCall(call, result.status(), 0);
    return result.status();
  }
  grpc::ByteBuffer answer = EncodeAnswer(pushed, *std::move(result));
  metrics.EndCall(call, absl::OkStatus(), answer.Length());
  return answer;
}

// A pull that may wait for its version. Its ticket exists before the pull
// can park, and once parked the reactor is only touched by whichever of
// "woken by a push", "expired" or "cancelled" the shard runs, exactly once.
// Finish may delete the reactor (OnDone), so nothing touches it afterwards.
class PullReactor final : public grpc::ServerUnaryReactor {
 public:
  // `replicator`: null unless the shard is replicated.
  PullReactor(ParameterShard* shard, ServerMetrics* metrics,
              Replicator* replicator, const RpcCall& call,
              const ps::v1::PushResponse* pushed, grpc::ByteBuffer* response)
      : shard_(shard),
        metrics_(metrics),
        replicator_(replicator),
        call_(call),
        response_(response),
        ticket_(shard->NewPullTicket()) {
    if (pushed != nullptr) pushed_ = *pushed;
  }

  void Start(const PullArgs& args, absl::Time expires) {
    StartParkedPull(*shard_, *metrics_, args, expires, ticket_,
                    [this](absl::StatusOr<PullResult> result) {
                      Complete(std::move(result));
                    });
  }

  // Ends the call with `status`, the pull never started (counted as a
  // pull parked and ended at once).
  void Refuse(const absl::Status& status) {
    metrics_->PullParked();
    Complete(status);
  }

  void OnCancel() override { shard_->CancelPull(ticket_); }

  void OnDone() override { delete this; }

 private:
  void Complete(absl::StatusOr<PullResult> result) {
    AnswerWhenReplicated(replicator_, std::move(result),
                         [this](absl::StatusOr<PullResult> answer) {
                           Answer(std::move(answer));
                         });
  }

  void Answer(absl::StatusOr<PullResult> result) {
    absl::StatusOr<grpc::ByteBuffer> answer =
        AnswerPull(*metrics_, call_, pushed_ ? &*pushed_ : nullptr,
                   std::move(result), /*parked=*/true);
    if (answer.ok()) *response_ = *std::move(answer);
    Finish(rpc::ToGrpcStatus(answer.status()));
  }

  ParameterShard* const shard_;
  ServerMetrics* const metrics_;
  Replicator* const replicator_;
  const RpcCall call_;
  std::optional<ps::v1::PushResponse> pushed_;
  grpc::ByteBuffer* const response_;
  const ParameterShard::PullTicket ticket_;
};

void ToProto(const Replicator::State& state, ps::v1::ReplicaState* proto) {
  proto->set_replica_index(state.replica_index);
  proto->set_replicas(state.replicas);
  proto->set_role(state.primary  ? ps::v1::ReplicaState::PRIMARY
                  : state.joined ? ps::v1::ReplicaState::BACKUP
                                 : ps::v1::ReplicaState::JOINING);
  proto->set_term(state.term);
  proto->set_failovers(state.failovers);
  proto->set_replication_bytes_sent(state.bytes_sent);
  proto->set_backups_dropped(state.backups_dropped);
  proto->set_witness(state.witness);
}

ps::v1::PushResponse::Outcome ToProto(PushOutcome outcome) {
  switch (outcome) {
    case PushOutcome::kApplied:
      return ps::v1::PushResponse::APPLIED;
    case PushOutcome::kAccepted:
      return ps::v1::PushResponse::ACCEPTED;
    case PushOutcome::kDuplicate:
      return ps::v1::PushResponse::DUPLICATE;
    case PushOutcome::kStale:
      return ps::v1::PushResponse::STALE;
  }
  return ps::v1::PushResponse::OUTCOME_UNSPECIFIED;
}

}  // namespace

ParameterService::ParameterService(ParameterShard* shard,
                                   Checkpointer* checkpointer,
                                   ServerMetrics* metrics,
                                   absl::Duration max_pull_wait,
                                   Replicator* replicator)
    : shard_(shard),
      checkpointer_(checkpointer),
      replicator_(replicator),
      metrics_(metrics),
      max_pull_wait_(max_pull_wait) {
  expiry_ticker_ = std::thread([this] {
    while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
      // A backup's time passes only with its primary's (replayed) ticks.
      if (replicator_ == nullptr || replicator_->primary()) {
        shard_->Tick(shard_->Now());
      }
    }
  });
}

ParameterService::~ParameterService() {
  stop_.Notify();
  expiry_ticker_.join();
}

void ParameterService::NotePushAcknowledged() {
  if (replicator_ != nullptr) replicator_->NotePushAcknowledged();
}

absl::Status ParameterService::CheckPrimary() const {
  return replicator_ == nullptr ? absl::OkStatus()
                                : replicator_->CheckPrimary();
}

void ParameterService::AfterReplication(absl::Status applied,
                                        ReplicationLog::Done done) {
  if (!applied.ok() || replicator_ == nullptr) {
    done(std::move(applied));
    return;
  }
  replicator_->WhenReplicated(std::move(done));
}

grpc::ServerUnaryReactor* ParameterService::FinishWrite(
    grpc::CallbackServerContext* context, const RpcCall& call,
    const absl::Status& status, const google::protobuf::MessageLite* answer,
    grpc::ByteBuffer* response) {
  if (status.ok() && answer != nullptr) *response = rpc::Serialize(*answer);
  // The default reactor may finish from any thread, later.
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  AfterReplication(
      status, [this, reactor, call, response](absl::Status replicated) {
        if (replicated.ok() && call.method == RpcMethod::kPush) {
          NotePushAcknowledged();
        }
        metrics_->EndCall(
            call, replicated,
            replicated.ok() && response != nullptr ? response->Length() : 0);
        reactor->Finish(rpc::ToGrpcStatus(replicated));
      });
  return reactor;
}

grpc::ServerUnaryReactor* ParameterService::Finish(
    grpc::CallbackServerContext* context, const RpcCall& call,
    const absl::Status& status) {
  metrics_->EndCall(call, status);
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* ParameterService::Finish(
    grpc::CallbackServerContext* context, const RpcCall& call,
    const absl::Status& status, const google::protobuf::MessageLite& answer,
    grpc::ByteBuffer* response) {
  if (status.ok()) *response = rpc::Serialize(answer);
  metrics_->EndCall(call, status, status.ok() ? response->Length() : 0);
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* ParameterService::Register(
    grpc::CallbackServerContext* context,
    const ps::v1::RegisterRequest* request,
    ps::v1::RegisterResponse* response) {
  const RpcCall call = ServerMetrics::StartCall(RpcMethod::kRegister);
  if (absl::Status primary = CheckPrimary(); !primary.ok()) {
    return Finish(context, call, primary);
  }
  absl::StatusOr<RegisterResult> result =
      shard_->Register(request->worker_id(), request->incarnation());
  if (result.ok()) {
    response->set_lease_timeout_ms(
        absl::ToInt64Milliseconds(result->lease_timeout));
    response->set_version(result->version);
    response->set_rejoined(result->rejoined);
    response->set_resume_step(result->resume_step);
  }
  return FinishWrite(context, call, result.status());
}

grpc::ServerUnaryReactor* ParameterService::Heartbeat(
    grpc::CallbackServerContext* context,
    const ps::v1::HeartbeatRequest* request,
    ps::v1::HeartbeatResponse* response) {
  const RpcCall call = ServerMetrics::StartCall(RpcMethod::kHeartbeat);
  if (absl::Status primary = CheckPrimary(); !primary.ok()) {
    return Finish(context, call, primary);
  }
  absl::StatusOr<uint64_t> version =
      shard_->Heartbeat(request->worker_id(), request->incarnation());
  if (version.ok()) response->set_version(*version);
  return FinishWrite(context, call, version.status());
}

grpc::ServerUnaryReactor* ParameterService::Leave(
    grpc::CallbackServerContext* context, const ps::v1::LeaveRequest* request,
    ps::v1::LeaveResponse*) {
  const RpcCall call = ServerMetrics::StartCall(RpcMethod::kLeave);
  if (absl::Status primary = CheckPrimary(); !primary.ok()) {
    return Finish(context, call, primary);
  }
  return FinishWrite(context, call,
                     shard_->Leave(request->worker_id(), request->incarnation(),
                                   LeaveReasonFromProto(request->reason())));
}

grpc::ServerUnaryReactor* ParameterService::Init(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  const RpcCall call =
      ServerMetrics::StartCall(RpcMethod::kInit, request->Length());
  if (absl::Status primary = CheckPrimary(); !primary.ok()) {
    return Finish(context, call, primary);
  }
  ps::v1::InitRequest fields;
  absl::Cord values;
  if (absl::Status parsed = ParseInitRequest(request, &fields, &values);
      !parsed.ok()) {
    return Finish(context, call, parsed);
  }
  absl::StatusOr<InitResult> result =
      shard_->Init(InitArgsFromProto(fields, std::move(values)));
  ps::v1::InitResponse answer;
  if (result.ok()) answer = InitResponseOf(*result);
  return FinishWrite(context, call, result.status(), &answer, response);
}

grpc::ServerUnaryReactor* ParameterService::Pull(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  const RpcCall call =
      ServerMetrics::StartCall(RpcMethod::kPull, request->Length());
  ps::v1::PullRequest pull;
  if (absl::Status primary = CheckPrimary(); !primary.ok()) {
    metrics_->CountPull(primary);
    return Finish(context, call, primary);
  }
  if (absl::Status too_large = CheckPullRequestSize(request->Length());
      !too_large.ok()) {
    metrics_->CountPull(too_large);
    return Finish(context, call, too_large);
  }
  if (absl::Status parsed = ParseRequest(request, &pull); !parsed.ok()) {
    metrics_->CountPull(parsed);
    return Finish(context, call, parsed);
  }
  return StartPull(context, call, pull, /*pushed=*/nullptr, response);
}

absl::Status ParameterService::CheckPullRequestSize(size_t bytes) const {
  const uint64_t limit = shard_->max_pull_request_bytes();
  if (bytes <= limit) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("the Pull request is ", bytes,
                   " bytes; a PullRequest holds a few numbers",
                   limit > kMaxPullRequestBytes ? " and its sparse keys" : "",
                   " and at most ", limit, " bytes are read"));
}

PullArgs ParameterService::ToPullArgs(const ps::v1::PullRequest& request) {
  PullArgs args;
  args.worker_id = request.worker_id();
  args.min_version = request.min_version();
  args.keys = {request.key_begin(), request.key_end()};
  args.clock = request.clock();
  args.sparse = SparseRowsFromProto(request.sparse());
  return args;
}

absl::Time ParameterService::PullExpiry(
    const grpc::CallbackServerContext& context) const {
  // The client's deadline ends the call through OnCancel; this bound covers
  // clients that set none.
  return std::min(absl::Now() + max_pull_wait_,
                  absl::FromChrono(context.deadline()));
}

grpc::ServerUnaryReactor* ParameterService::StartPull(
    grpc::CallbackServerContext* context, const RpcCall& call,
    const ps::v1::PullRequest& request, const ps::v1::PushResponse* pushed,
    grpc::ByteBuffer* response) {
  const PullArgs args = ToPullArgs(request);
  const absl::Time expires = PullExpiry(*context);
  // Answered at once (async, or a version already reached): the default
  // reactor, which gRPC finishes inline. A reactor of our own costs a heap
  // object and a hop to another thread for OnDone on every call. A
  // replicated shard's answers wait for replication (PullReactor).
  std::optional<absl::StatusOr<PullResult>> ready;
  if (replicator_ == nullptr) {
    ready = shard_->Pull(args, expires, /*ticket=*/0, /*done=*/nullptr);
  }
  if (ready.has_value()) {
    absl::StatusOr<grpc::ByteBuffer> answer =
        AnswerPull(*metrics_, call, pushed, *std::move(ready),
                   /*parked=*/false);
    if (answer.ok()) *response = *std::move(answer);
    return FinishNow(context, answer.status());
  }
  auto* reactor =
      new PullReactor(shard_, metrics_, replicator_, call, pushed, response);
  reactor->Start(args, expires);
  return reactor;
}

grpc::ServerUnaryReactor* ParameterService::Push(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  const RpcCall call =
      ServerMetrics::StartCall(RpcMethod::kPush, request->Length());
  ReceivedPush push;
  if (absl::Status parsed = ParsePushRequest(request, &push); !parsed.ok()) {
    metrics_->CountPush(parsed, PushOutcome::kApplied);
    return Finish(context, call, parsed);
  }
  ps::v1::PushResponse pushed;
  absl::Status applied = ApplyPush(std::move(push), &pushed);
  return FinishWrite(context, call, applied, &pushed, response);
}

absl::Status ParameterService::ApplyPush(ReceivedPush push,
                                         ps::v1::PushResponse* response) {
  if (absl::Status primary = CheckPrimary(); !primary.ok()) {
    metrics_->CountPush(primary, PushOutcome::kApplied);
    return primary;
  }
  const ps::v1::PushRequest& request = push.fields;
  PushArgs args = PushArgsFromProto(request, std::move(push.gradient));
  const absl::Status decoded = DecodeCompressed(request, &args);
  if (!decoded.ok()) shard_->CountRejectedPush();
  const absl::StatusOr<PushResult> result =
      decoded.ok() ? shard_->Push(args) : absl::StatusOr<PushResult>(decoded);
  metrics_->CountPush(result.status(),
                      result.ok() ? result->outcome : PushOutcome::kApplied);
  if (result.ok()) {
    response->set_outcome(ToProto(result->outcome));
    response->set_version(result->version);
    response->set_mode(rpc::ToProto(shard_->mode()));
    response->set_completion_skipped(result->completion_skipped);
  }
  return result.status();
}

absl::Status ParameterService::DecodeCompressed(
    const ps::v1::PushRequest& request, PushArgs* args) {
  if (request.compressed_gradient().empty()) return absl::OkStatus();
  if (!args->gradient.empty()) {
    return absl::InvalidArgumentError(
        "the push carries both gradient and compressed_gradient; send one");
  }
  // A push for other keys (or before Init) goes on undecoded: the shard
  // refuses it with the error that names its real problem.
  const common::KeyRange keys = shard_->keys();
  if (keys.empty() || args->keys != keys) return absl::OkStatus();
  absl::StatusOr<absl::Cord> decoded = DecodeCompressedGradient(
      request.compressed_gradient(), keys, shard_buffers_);
  if (!decoded.ok()) return decoded.status();
  args->gradient = *std::move(decoded);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ParameterService::PushPull(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  const RpcCall call =
      ServerMetrics::StartCall(RpcMethod::kPushPull, request->Length());
  ReceivedPush push;
  ps::v1::PullRequest pull;
  if (absl::Status parsed = ParsePushPullRequest(request, &push, &pull);
      !parsed.ok()) {
    metrics_->CountPush(parsed, PushOutcome::kApplied);
    return Finish(context, call, parsed);
  }
  ps::v1::PushResponse pushed;
  // ApplyPush takes the gradient: its slices are freed before θ is copied
  // out for the answer.
  if (absl::Status applied = ApplyPush(std::move(push), &pushed);
      !applied.ok()) {
    return Finish(context, call, applied);
  }
  if (replicator_ == nullptr) {
    return StartPull(context, call, pull, &pushed, response);
  }
  // The pull is read once the push is on every live backup: its answer
  // acknowledges the push.
  auto* reactor =
      new PullReactor(shard_, metrics_, replicator_, call, &pushed, response);
  replicator_->WhenReplicated([reactor, args = ToPullArgs(pull),
                               expires = PullExpiry(*context),
                               this](absl::Status replicated) {
    if (replicated.ok()) {
      NotePushAcknowledged();
      reactor->Start(args, expires);
    } else {
      reactor->Refuse(replicated);
    }
  });
  return reactor;
}

void ParameterService::ExchangePushPull(
    const grpc::ByteBuffer& request, absl::Time expires,
    ParameterShard::PullTicket ticket,
    std::function<void(absl::StatusOr<grpc::ByteBuffer>)> answer) {
  const RpcCall call =
      ServerMetrics::StartCall(RpcMethod::kPushPull, request.Length());
  ReceivedPush push;
  ps::v1::PullRequest pull;
  if (absl::Status parsed = ParsePushPullRequest(&request, &push, &pull);
      !parsed.ok()) {
    metrics_->CountPush(parsed, PushOutcome::kApplied);
    metrics_->EndCall(call, parsed, 0);
    answer(parsed);
    return;
  }
  ps::v1::PushResponse pushed;
  if (absl::Status applied = ApplyPush(std::move(push), &pushed);
      !applied.ok()) {
    metrics_->EndCall(call, applied, 0);
    answer(applied);
    return;
  }
  // As PullReactor: a parked pull is answered once replicated.
  auto parked = [this, call, pushed,
                 answer](absl::StatusOr<PullResult> result) {
    AnswerWhenReplicated(
        replicator_, std::move(result),
        [this, call, pushed, answer](absl::StatusOr<PullResult> ready) {
          answer(AnswerPull(*metrics_, call, &pushed, std::move(ready),
                            /*parked=*/true));
        });
  };
  const PullArgs args = ToPullArgs(pull);
  if (replicator_ == nullptr) {
    std::optional<absl::StatusOr<PullResult>> ready =
        shard_->Pull(args, expires, /*ticket=*/0, /*done=*/nullptr);
    if (ready.has_value()) {
      answer(AnswerPull(*metrics_, call, &pushed, *std::move(ready),
                        /*parked=*/false));
      return;
    }
    StartParkedPull(*shard_, *metrics_, args, expires, ticket, parked);
    return;
  }
  replicator_->WhenReplicated(
      [this, args, expires, ticket, parked](absl::Status replicated) {
        if (replicated.ok()) {
          NotePushAcknowledged();
          StartParkedPull(*shard_, *metrics_, args, expires, ticket, parked);
        } else {
          metrics_->PullParked();
          parked(replicated);
        }
      });
}

// PushPulls read one at a time from one stream, each answered before the
// next is read; the first refusal ends the stream with its status. Read,
// exchange and write take turns, so one of them at a time runs; End comes
// from the server's shutdown, at any time.
class PushPullStreamReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  PushPullStreamReactor(ParameterService* service,
                        const grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    service_->metrics_->StreamOpened();
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      if (!ok) {
        FinishOnce(grpc::Status::OK);  // the client closed its side
        return;
      }
      reading_ = false;
    }
    const ParameterShard::PullTicket ticket = service_->shard_->NewPullTicket();
    ticket_.store(ticket);
    service_->ExchangePushPull(
        in_, service_->PullExpiry(*context_), ticket,
        [this](absl::StatusOr<grpc::ByteBuffer> answer) {
          absl::MutexLock lock(&mu_);
          if (!answer.ok()) {
            FinishOnce(rpc::ToGrpcStatus(answer.status()));
            return;
          }
          out_ = *std::move(answer);
          StartWrite(&out_);
        });
    // A cancel that read the ticket before this one may have missed the
    // pull just parked. (gRPC runs OnDone only after this returns.)
    if (cancelled_.load()) service_->shard_->CancelPull(ticket);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    if (!ok) {
      FinishOnce(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "the stream broke while answering"));
    } else if (ending_) {
      FinishOnce(ShuttingDown());
    } else {
      reading_ = true;
      StartRead(&in_);
    }
  }

  // A pull parked for this stream ends now, and with it the stream.
  void OnCancel() override {
    cancelled_.store(true);
    service_->shard_->CancelPull(ticket_.load());
  }

  void OnDone() override {
    service_->metrics_->StreamClosed();
    service_->ForgetStream(this);
    delete this;
  }

  // The server stops: a stream waiting for its next request ends now, one
  // busy with a request once that is answered.
  void End() {
    absl::MutexLock lock(&mu_);
    ending_ = true;
    if (reading_) FinishOnce(ShuttingDown());
  }

 private:
  static grpc::Status ShuttingDown() {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is shutting down");
  }

  void FinishOnce(const grpc::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  ParameterService* const service_;
  const grpc::CallbackServerContext* const context_;  // until OnDone
  std::atomic<ParameterShard::PullTicket> ticket_{0};
  std::atomic<bool> cancelled_{false};
  grpc::ByteBuffer in_;
  grpc::ByteBuffer out_;
  absl::Mutex mu_;
  bool reading_ ABSL_GUARDED_BY(mu_) = true;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

namespace {

// A PushPullStream ended at once with `status`, nothing read.
class RefusedStream final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit RefusedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

void ParameterService::ForgetStream(PushPullStreamReactor* stream) {
  absl::MutexLock lock(&streams_mu_);
  streams_.erase(stream);
}

void ParameterService::EndStreams() {
  absl::MutexLock lock(&streams_mu_);
  streams_ended_ = true;
  for (PushPullStreamReactor* stream : streams_) stream->End();
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
ParameterService::PushPullStream(grpc::CallbackServerContext* context) {
  if (rpc::InstalledFaultInjector() != nullptr) {
    // Its faults hit calls, and a stream is one call: the worker sends its
    // PushPulls as unary calls instead, each one a call faults can hit.
    return new RefusedStream(grpc::Status(
        grpc::StatusCode::UNIMPLEMENTED,
        "this server injects faults (--inject_faults), which hit calls: "
        "send PushPulls as unary calls"));
  }
  auto* stream = new PushPullStreamReactor(this, context);
  absl::MutexLock lock(&streams_mu_);
  streams_.insert(stream);
  if (streams_ended_) stream->End();
  return stream;
}

void ParameterService::SetAdvertisedAddress(std::string address) {
  absl::MutexLock lock(&mu_);
  advertised_address_ = std::move(address);
}

grpc::ServerUnaryReactor* ParameterService::Status(
    grpc::CallbackServerContext* context, const ps::v1::StatusRequest*,
    ps::v1::StatusResponse* response) {
  const RpcCall call = ServerMetrics::StartCall(RpcMethod::kStatus);
  const ShardStatus s = shard_->Status();
  response->set_shard_index(s.options.shard_index);
  response->set_num_shards(s.options.num_shards);
  response->set_key_begin(s.keys.begin);
  response->set_key_end(s.keys.end);
  response->set_mode(rpc::ToProto(s.options.mode));
  response->set_version(s.version);
  response->set_expected_workers(s.options.num_workers);
  response->set_initialized(s.initialized);
  rpc::ToProto(s.tensors, response->mutable_tensors());
  for (const TableStatus& table : s.tables) {
    ps::v1::TableStatus* t = response->add_tables();
    rpc::ToProto(table.spec, t->mutable_spec());
    t->set_rows(table.rows);
    t->set_capacity_rows(table.capacity_rows);
    t->set_memory_bytes(table.memory_bytes);
    t->set_memory_limit_bytes(table.memory_limit_bytes);
    t->set_rows_created(table.counters.created);
    t->set_rows_evicted(table.counters.evicted);
    t->set_rows_refused(table.counters.refused);
  }
  response->set_samples_applied(s.samples_applied);
  response->set_pushes_applied(s.pushes_applied);
  response->set_pushes_duplicate(s.pushes_duplicate);
  response->set_pushes_stale(s.pushes_stale);
  response->set_pushes_rejected(s.pushes_rejected);
  response->set_round_gradients(s.round_gradients);
  for (const common::WorkerRecord& w : s.workers) {
    rpc::ToProto(w, s.Staleness(w), s.SinceHeartbeat(w),
                 response->add_workers());
  }
  response->set_live_workers(s.live_workers);
  response->set_rounds_closed_all_live(s.rounds_closed_all_live);
  response->set_rounds_closed_by_quorum(s.rounds_closed_by_quorum);
  response->set_rounds_closed_by_timeout(s.rounds_closed_by_timeout);
  response->set_leases_expired(s.leases_expired);
  response->set_sync_quorum(s.options.sync_quorum);
  response->set_staleness(s.options.staleness);
  response->set_max_read_clock_gap(s.max_read_clock_gap);
  if (s.partition_plan.has_value()) {
    ps::v1::PartitionStatus* partitions = response->mutable_partitions();
    rpc::ToProto(*s.partition_plan, partitions->mutable_plan());
    for (uint32_t done : s.partitions_done_per_epoch) {
      partitions->add_done_per_epoch(done);
    }
    partitions->set_done(s.partitions_done);
  }
  if (replicator_ != nullptr) {
    ToProto(replicator_->state(), response->mutable_replica());
  }
  {
    absl::MutexLock lock(&mu_);
    response->set_advertise(advertised_address_);
  }
  return Finish(context, call, absl::OkStatus());
}

grpc::ServerUnaryReactor* ParameterService::Checkpoint(
    grpc::CallbackServerContext* context, const ps::v1::CheckpointRequest*,
    ps::v1::CheckpointResponse* response) {
  const RpcCall call = ServerMetrics::StartCall(RpcMethod::kCheckpoint);
  if (checkpointer_ == nullptr) {
    return Finish(context, call,
                  absl::FailedPreconditionError(
                      "this server runs without --checkpoint_dir"));
  }
  absl::StatusOr<SavedCheckpoint> saved =
      checkpointer_->Save(*shard_, "requested");
  if (!saved.ok()) return Finish(context, call, saved.status());
  response->set_path(saved->path);
  response->set_version(saved->version);
  response->set_bytes(saved->bytes);
  response->set_seconds(absl::ToDoubleSeconds(saved->took));
  return Finish(context, call, absl::OkStatus());
}

grpc::ServerUnaryReactor* ParameterService::ExportRows(
    grpc::CallbackServerContext* context,
    const ps::v1::ExportRowsRequest* request,
    ps::v1::ExportRowsResponse* response) {
  const RpcCall call =
      ServerMetrics::StartCall(RpcMethod::kExportRows, request->ByteSizeLong());
  absl::StatusOr<ParameterShard::ExportedRows> exported = shard_->ExportRows(
      request->table(),
      request->from_start() ? std::nullopt
                            : std::optional<uint64_t>(request->after_id()),
      request->max_rows());
  if (!exported.ok()) return Finish(context, call, exported.status());
  ps::v1::SparseRows* rows = response->mutable_rows();
  rows->set_table(request->table());
  const SparseTables::RowPage& page = exported->page;
  rows->set_keys(std::string(reinterpret_cast<const char*>(page.ids.data()),
                             page.ids.size() * sizeof(uint64_t)));
  common::FloatsToBytes(page.rows, rows->mutable_values());
  response->set_done(page.done);
  response->set_version(exported->version);
  response->set_model_seed(exported->model_seed);
  return Finish(context, call, absl::OkStatus());
}

grpc::ServerUnaryReactor* ParameterService::LeasePartition(
    grpc::CallbackServerContext* context,
    const ps::v1::LeasePartitionRequest* request,
    ps::v1::LeasePartitionResponse* response) {
  const RpcCall call = ServerMetrics::StartCall(RpcMethod::kLeasePartition,
                                                request->ByteSizeLong());
  if (absl::Status primary = CheckPrimary(); !primary.ok()) {
    return Finish(context, call, primary);
  }
  absl::StatusOr<PartitionLease> lease =
      shard_->LeasePartition(request->worker_id(), request->incarnation(),
                             rpc::FromProto(request->plan()));
  if (!lease.ok()) return Finish(context, call, lease.status());
  const PartitionTable::Grant& grant = lease->grant;
  switch (grant.outcome) {
    case PartitionTable::LeaseOutcome::kGranted:
      response->set_outcome(ps::v1::LeasePartitionResponse::GRANTED);
      response->set_epoch(grant.epoch);
      response->set_partition(grant.partition);
      response->set_example_begin(grant.examples.begin);
      response->set_example_end(grant.examples.end);
      break;
    case PartitionTable::LeaseOutcome::kNoneFree:
      response->set_outcome(ps::v1::LeasePartitionResponse::NONE_FREE);
      break;
    case PartitionTable::LeaseOutcome::kJobDone:
      response->set_outcome(ps::v1::LeasePartitionResponse::JOB_DONE);
      break;
  }
  response->set_partitions_done(lease->partitions_done);
  return FinishWrite(context, call, absl::OkStatus());
}

}  // namespace ps::server
