// PushStream and PullStream: Push and Pull for shards too big for one
// message. Both end in the shard's ordinary entry points (Push, Pull), so
// exactly-once, sync rounds and version waits are theirs unchanged.
#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/rpc/convert.h"
#include "common/rpc/wire_format.h"
#include "server/parameter_service.h"
#include "server/parked_pull.h"
#include "server/push_stream.h"
#include "server/wire_messages.h"

namespace ps::server {
namespace {

using ps::v1::PullChunk;
using ps::v1::PushChunk;

// What a PullStream's chunks hold when the client does not say, and the
// bounds of what it may ask: a chunk is a copy, so its size is memory.
constexpr uint64_t kDefaultChunkBytes = 4 << 20;
constexpr uint64_t kMinChunkBytes = 64 << 10;
constexpr uint64_t kMaxChunkBytes = 64 << 20;

// Reads a push's chunks into a PushStream and, once the client ended the
// stream with every key's value, hands the assembled push to `apply` (the
// service's ApplyPush). A bad chunk ends the call at once with its error;
// nothing reaches the shard before the stream is whole.
class PushStreamReactor final
    : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  // Applies the push, filling the answer, and runs `done` once it may be
  // acknowledged.
  using Apply = std::function<void(ReceivedPush, ps::v1::PushResponse*,
                                   std::function<void(absl::Status)> done)>;

  PushStreamReactor(grpc::CallbackServerContext* context, ParameterShard* shard,
                    ServerMetrics* metrics, Apply apply,
                    grpc::ByteBuffer* response)
      : context_(context),
        shard_(shard),
        metrics_(metrics),
        apply_(std::move(apply)),
        response_(response),
        call_(ServerMetrics::StartCall(RpcMethod::kPushStream)) {
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      End();
      return;
    }
    call_.request_bytes += chunk_.Length();
    if (absl::Status taken = TakeChunk(); !taken.ok()) {
      Fail(taken);
      return;
    }
    StartRead(&chunk_);
  }

  void OnDone() override { delete this; }

 private:
  absl::Status TakeChunk() {
    PushChunk fields;
    absl::Cord values;
    const bool parsed = rpc::ParseApart(
        rpc::CordOf(chunk_), {PushChunk::kValuesFieldNumber}, &fields, &values);
    chunk_.Clear();
    if (!parsed) {
      return absl::InvalidArgumentError(
          "a message of the PushStream is not a valid ps.v1.PushChunk");
    }
    if (!stream_.has_value()) {
      const bool has_push = fields.has_push();
      if (absl::Status head =
              TakeHead(std::move(*fields.mutable_push()), has_push);
          !head.ok()) {
        return head;
      }
      // The fields alone, as a client sends them.
      if (values.empty()) return absl::OkStatus();
    } else if (fields.has_push()) {
      return absl::InvalidArgumentError(
          "only the first message of a PushStream carries the push's fields");
    }
    return stream_->Add(fields.offset(), values);
  }

  // The first message: the push's fields, checked before the stream
  // allocates a shard-sized buffer for its gradient.
  absl::Status TakeHead(ps::v1::PushRequest head, bool present) {
    if (!present) {
      return absl::InvalidArgumentError(
          "the first message of a PushStream must carry the push's fields");
    }
    if (!head.gradient().empty() || !head.compressed_gradient().empty()) {
      return absl::InvalidArgumentError(
          "a streamed push carries its gradient in the chunks: the first "
          "message's gradient and compressed_gradient must be empty");
    }
    const common::KeyRange keys = shard_->keys();
    if (keys.empty()) {
      return absl::FailedPreconditionError(
          "no model is declared on this shard yet; call Init first");
    }
    const common::KeyRange asked{head.key_begin(), head.key_end()};
    if (asked != keys) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the push addresses keys ", asked.ToString(), " but this shard owns ",
          keys.ToString(), "; a push must cover exactly the shard's range"));
    }
    head_ = std::move(head);
    stream_.emplace(keys);
    return absl::OkStatus();
  }

  // The client half-closed the stream, or the call broke.
  void End() {
    if (context_->IsCancelled()) {
      // Whatever arrived is dropped with the stream: nothing was applied.
      Fail(absl::CancelledError(
          "the streamed push was cancelled; nothing was applied"));
      return;
    }
    if (!stream_.has_value()) {
      Fail(absl::InvalidArgumentError(
          "the PushStream ended before its first message; nothing was "
          "applied"));
      return;
    }
    absl::StatusOr<absl::Cord> gradient = stream_->Take();
    stream_.reset();
    if (!gradient.ok()) {
      Fail(gradient.status());
      return;
    }
    apply_(ReceivedPush{std::move(head_), *std::move(gradient)}, &answer_,
           [this](absl::Status applied) {
             if (applied.ok()) *response_ = rpc::Serialize(answer_);
             metrics_->EndCall(call_, applied,
                               applied.ok() ? response_->Length() : 0);
             Finish(rpc::ToGrpcStatus(applied));
           });
  }

  // Ends the call unapplied (ApplyPush counts the pushes it sees).
  void Fail(const absl::Status& status) {
    stream_.reset();
    metrics_->CountPush(status, PushOutcome::kApplied);
    metrics_->EndCall(call_, status);
    Finish(rpc::ToGrpcStatus(status));
  }

  grpc::CallbackServerContext* const context_;
  ParameterShard* const shard_;
  ServerMetrics* const metrics_;
  const Apply apply_;
  grpc::ByteBuffer* const response_;
  RpcCall call_;
  grpc::ByteBuffer chunk_;
  ps::v1::PushRequest head_;
  // Filled by apply_, sent once the push may be acknowledged.
  ps::v1::PushResponse answer_;
  std::optional<PushStream> stream_;
};

// A pull that may wait for its version (as PullReactor), then writes its
// answer's fields and θ in chunks, one at a time: the server holds θ's copy
// for this pull and one chunk.
class PullStreamReactor final
    : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  PullStreamReactor(ParameterShard* shard, ServerMetrics* metrics,
                    const RpcCall& call, uint64_t chunk_bytes)
      : shard_(shard),
        metrics_(metrics),
        call_(call),
        chunk_floats_(chunk_bytes / sizeof(float)),
        ticket_(shard->NewPullTicket()) {}

  void Start(const PullArgs& args, absl::Time expires) {
    StartParkedPull(*shard_, *metrics_, args, expires, ticket_,
                    [this](absl::StatusOr<PullResult> result) {
                      Complete(std::move(result));
                    });
  }

  // Ends the call at once: a request that could not be read.
  void Refuse(const absl::Status& status) {
    metrics_->CountPull(status);
    End(status);
  }

  void OnCancel() override { shard_->CancelPull(ticket_); }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      End(absl::CancelledError("the streamed pull was cancelled"));
      return;
    }
    WriteNext();
  }

  void OnDone() override { delete this; }

 private:
  void Complete(absl::StatusOr<PullResult> result) {
    metrics_->ParkedPullEnded();
    metrics_->CountPull(result.status());
    if (!result.ok()) {
      End(result.status());
      return;
    }
    result->waited =
        absl::FromChrono(std::chrono::steady_clock::now() - call_.start);
    values_ = std::move(result->values);
    PullChunk head;
    *head.mutable_pull() = PullHead(*result);
    Send(rpc::Serialize(head));
  }

  void WriteNext() {
    const uint64_t floats = values_.size() / sizeof(float);
    if (next_ >= floats) {
      values_ = std::string();
      End(absl::OkStatus());
      return;
    }
    const uint64_t offset = next_;
    const uint64_t n = std::min<uint64_t>(chunk_floats_, floats - offset);
    // Moved on before the write starts: OnWriteDone may run on another
    // thread before Send returns.
    next_ += n;
    PullChunk fields;
    fields.set_offset(offset);
    Send(rpc::SerializeApart(
        fields, {PullChunk::kValuesFieldNumber},
        values_.substr(offset * sizeof(float), n * sizeof(float))));
  }

  // The last thing a step does: the write's completion may run at once,
  // on another thread, and start the next one.
  void Send(grpc::ByteBuffer message) {
    sent_bytes_ += message.Length();
    message_ = std::move(message);
    StartWrite(&message_);
  }

  void End(const absl::Status& status) {
    metrics_->EndCall(call_, status, sent_bytes_);
    Finish(rpc::ToGrpcStatus(status));
  }

  ParameterShard* const shard_;
  ServerMetrics* const metrics_;
  const RpcCall call_;
  const uint64_t chunk_floats_;
  const ParameterShard::PullTicket ticket_;
  std::string values_;  // θ's bytes, as read at the answer's version
  uint64_t next_ = 0;   // the next chunk's first key, from the answer's first
  grpc::ByteBuffer message_;  // the write in flight
  size_t sent_bytes_ = 0;
};

}  // namespace

grpc::ServerReadReactor<grpc::ByteBuffer>* ParameterService::PushStream(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  return new PushStreamReactor(
      context, shard_, metrics_,
      [this](ReceivedPush push, ps::v1::PushResponse* answer,
             ReplicationLog::Done done) {
        AfterReplication(ApplyPush(std::move(push), answer), std::move(done));
      },
      response);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ParameterService::PullStream(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  const RpcCall call =
      ServerMetrics::StartCall(RpcMethod::kPullStream, request->Length());
  ps::v1::PullStreamRequest fields;
  absl::Status parsed = CheckPullRequestSize(request->Length());
  if (parsed.ok()) parsed = CheckPrimary();
  if (parsed.ok()) parsed = ParseRequest(request, &fields);
  const uint64_t chunk_bytes =
      fields.chunk_bytes() == 0
          ? kDefaultChunkBytes
          : std::clamp(fields.chunk_bytes(), kMinChunkBytes, kMaxChunkBytes);
  auto* reactor = new PullStreamReactor(shard_, metrics_, call, chunk_bytes);
  if (!parsed.ok()) {
    reactor->Refuse(parsed);
  } else {
    reactor->Start(ToPullArgs(fields.pull()), PullExpiry(*context));
  }
  return reactor;
}

}  // namespace ps::server
