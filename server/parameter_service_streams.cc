// InitStream, PushStream and PullStream: Init, Push and Pull for shards
// too big for one message. Each ends in the shard's ordinary entry point
// (Init, Push, Pull), so validation, exactly-once, sync rounds and version
// waits are theirs unchanged.
#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
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

using ps::v1::InitChunk;
using ps::v1::PullChunk;
using ps::v1::PushChunk;

// What a PullStream's chunks hold when the client does not say, and the
// bounds of what it may ask: a chunk is a copy, so its size is memory.
constexpr uint64_t kDefaultChunkBytes = 4 << 20;
constexpr uint64_t kMinChunkBytes = 64 << 10;
constexpr uint64_t kMaxChunkBytes = 64 << 20;

// The first message's fields of a client-streamed call, and what becomes
// of its values: PushStream's push, InitStream's Init.
template <typename Chunk>
struct StreamedCall {
  RpcMethod method;
  // Names the method and the call (its kind, "push") in errors.
  const char* name;
  const char* call;
  // Checks the first message's fields (its values apart) and says which
  // keys the chunks carry: the stream stages that many floats.
  std::function<absl::StatusOr<common::KeyRange>(Chunk& first)> begin;
  // Whether a message carries the first message's fields.
  std::function<bool(const Chunk&)> has_head;
  // The whole values, once the client ended the stream with every key's:
  // taken as the unary call takes them. Gives `done` the answer's bytes
  // once the call may be acknowledged (a replicated shard: on every live
  // backup), perhaps later and from another thread.
  using Done = std::function<void(absl::StatusOr<grpc::ByteBuffer>)>;
  std::function<void(absl::Cord values, Done done)> end;
  // Counts a call that ended without reaching `end`.
  std::function<void(const absl::Status&)> refused;
};

// Reads a client-streamed call's chunks (PushChunk, InitChunk: the call's
// fields first, then `offset` and `values`) into a PushStream and, once the
// client ended the stream with every key's value, hands the values to the
// call's `end`. A bad chunk ends the call at once with its error; nothing
// reaches the shard before the stream is whole.
template <typename Chunk>
class StreamedCallReactor final
    : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  StreamedCallReactor(grpc::CallbackServerContext* context,
                      ServerMetrics* metrics, GradientBufferPool* buffers,
                      StreamedCall<Chunk> handler, grpc::ByteBuffer* response)
      : context_(context),
        metrics_(metrics),
        buffers_(buffers),
        handler_(std::move(handler)),
        response_(response),
        call_(ServerMetrics::StartCall(handler_.method)) {
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
    Chunk fields;
    absl::Cord values;
    const bool parsed = rpc::ParseApart(
        rpc::CordOf(chunk_), {Chunk::kValuesFieldNumber}, &fields, &values);
    chunk_.Clear();
    if (!parsed) {
      return absl::InvalidArgumentError(
          absl::StrCat("a message of the ", handler_.name, " is not a valid ",
                       fields.GetTypeName()));
    }
    if (!stream_.has_value()) {
      // The first message: its fields, checked before the stream
      // allocates a shard-sized buffer for its values.
      if (!handler_.has_head(fields)) {
        return absl::InvalidArgumentError(
            absl::StrCat("the first message of a ", handler_.name,
                         " must carry the ", handler_.call, "'s fields"));
      }
      absl::StatusOr<common::KeyRange> keys = handler_.begin(fields);
      if (!keys.ok()) return keys.status();
      stream_.emplace(*keys, absl::StrCat("streamed ", handler_.call),
                      *buffers_);
      // The fields alone, as a client sends them.
      if (values.empty()) return absl::OkStatus();
    } else if (handler_.has_head(fields)) {
      return absl::InvalidArgumentError(
          absl::StrCat("only the first message of a ", handler_.name,
                       " carries the ", handler_.call, "'s fields"));
    }
    return stream_->Add(fields.offset(), values);
  }

  // The client half-closed the stream, or the call broke.
  void End() {
    if (context_->IsCancelled()) {
      // Whatever arrived is dropped with the stream: nothing was applied.
      Fail(absl::CancelledError(
          absl::StrCat("the streamed ", handler_.call,
                       " was cancelled; nothing was applied")));
      return;
    }
    if (!stream_.has_value()) {
      Fail(absl::InvalidArgumentError(absl::StrCat(
          "the ", handler_.name,
          " ended before its first message; nothing was applied")));
      return;
    }
    absl::StatusOr<absl::Cord> values = stream_->Take();
    stream_.reset();
    if (!values.ok()) {
      Fail(values.status());
      return;
    }
    handler_.end(*std::move(values),
                 [this](absl::StatusOr<grpc::ByteBuffer> answer) {
                   if (answer.ok()) *response_ = *std::move(answer);
                   metrics_->EndCall(call_, answer.status(),
                                     answer.ok() ? response_->Length() : 0);
                   Finish(rpc::ToGrpcStatus(answer.status()));
                 });
  }

  // Ends the call unapplied.
  void Fail(const absl::Status& status) {
    stream_.reset();
    handler_.refused(status);
    metrics_->EndCall(call_, status);
    Finish(rpc::ToGrpcStatus(status));
  }

  grpc::CallbackServerContext* const context_;
  ServerMetrics* const metrics_;
  GradientBufferPool* const buffers_;
  const StreamedCall<Chunk> handler_;
  grpc::ByteBuffer* const response_;
  RpcCall call_;
  grpc::ByteBuffer chunk_;
  std::optional<PushStream> stream_;
};

// A pull that may wait for its version (as PullReactor), then writes its
// answer's fields and θ in chunks, one at a time. θ is not copied whole:
// the pull holds the shard's θ of its version (ParameterShard's shared θ,
// which an update copies rather than overwrite while a pull holds it) and
// copies one chunk at a time out of it, so every chunk is of that one
// version and the server holds one chunk more than θ for this pull.
class PullStreamReactor final
    : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // `replicator`: null unless the shard is replicated.
  PullStreamReactor(ParameterShard* shard, ServerMetrics* metrics,
                    Replicator* replicator, const RpcCall& call,
                    uint64_t chunk_bytes)
      : shard_(shard),
        metrics_(metrics),
        replicator_(replicator),
        call_(call),
        chunk_floats_(chunk_bytes / sizeof(float)),
        ticket_(shard->NewPullTicket()) {}

  void Start(PullArgs args, absl::Time expires) {
    args.share_values = true;
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
    AnswerWhenReplicated(replicator_, std::move(result),
                         [this](absl::StatusOr<PullResult> answer) {
                           Answer(std::move(answer));
                         });
  }

  void Answer(absl::StatusOr<PullResult> result) {
    metrics_->ParkedPullEnded();
    metrics_->CountPull(result.status());
    if (!result.ok()) {
      End(result.status());
      return;
    }
    result->waited =
        absl::FromChrono(std::chrono::steady_clock::now() - call_.start);
    PullChunk head;
    *head.mutable_pull() = PullHead(*result);
    pulled_ = *std::move(result);
    Send(rpc::Serialize(head));
  }

  void WriteNext() {
    const uint64_t floats = pulled_.keys.size();
    if (next_ >= floats) {
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
    std::string values;
    shard_->ReadShared(pulled_, offset, n, &values);
    Send(rpc::SerializeApart(fields, {PullChunk::kValuesFieldNumber},
                             std::move(values)));
  }

  // The last thing a step does: the write's completion may run at once,
  // on another thread, and start the next one.
  void Send(grpc::ByteBuffer message) {
    sent_bytes_ += message.Length();
    message_ = std::move(message);
    StartWrite(&message_);
  }

  void End(const absl::Status& status) {
    // θ's version is let go: updates may write over it again.
    pulled_.shared_theta.reset();
    metrics_->EndCall(call_, status, sent_bytes_);
    Finish(rpc::ToGrpcStatus(status));
  }

  ParameterShard* const shard_;
  ServerMetrics* const metrics_;
  Replicator* const replicator_;
  const RpcCall call_;
  const uint64_t chunk_floats_;
  const ParameterShard::PullTicket ticket_;
  PullResult pulled_;  // the answer, its θ shared (PullArgs::share_values)
  uint64_t next_ = 0;  // the next chunk's first key, from the answer's first
  grpc::ByteBuffer message_;  // the write in flight
  size_t sent_bytes_ = 0;
};

}  // namespace

grpc::ServerReadReactor<grpc::ByteBuffer>* ParameterService::PushStream(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  // The call's state, shared by its handler's steps.
  auto head = std::make_shared<ps::v1::PushRequest>();
  StreamedCall<PushChunk> handler{
      RpcMethod::kPushStream,
      "PushStream",
      "push",
      [this, head](PushChunk& first) -> absl::StatusOr<common::KeyRange> {
        if (absl::Status primary = CheckPrimary(); !primary.ok()) {
          return primary;
        }
        *head = std::move(*first.mutable_push());
        if (!head->gradient().empty() || !head->compressed_gradient().empty()) {
          return absl::InvalidArgumentError(
              "a streamed push carries its gradient in the chunks: the first "
              "message's gradient and compressed_gradient must be empty");
        }
        const common::KeyRange keys = shard_->keys();
        if (keys.empty()) {
          return absl::FailedPreconditionError(
              "no model is declared on this shard yet; call Init first");
        }
        const common::KeyRange asked{head->key_begin(), head->key_end()};
        if (asked != keys) {
          return absl::InvalidArgumentError(
              absl::StrCat("the push addresses keys ", asked.ToString(),
                           " but this shard owns ", keys.ToString(),
                           "; a push must cover exactly the shard's range"));
        }
        return keys;
      },
      [](const PushChunk& chunk) { return chunk.has_push(); },
      [this, head](absl::Cord gradient, StreamedCall<PushChunk>::Done done) {
        auto answer = std::make_shared<ps::v1::PushResponse>();
        // ApplyPush counts the pushes it sees.
        absl::Status applied = ApplyPush(
            ReceivedPush{std::move(*head), std::move(gradient)}, answer.get());
        AfterReplication(std::move(applied),
                         [this, answer, done](absl::Status replicated) {
                           if (!replicated.ok()) return done(replicated);
                           NotePushAcknowledged();
                           done(rpc::Serialize(*answer));
                         });
      },
      [this](const absl::Status& status) {
        metrics_->CountPush(status, PushOutcome::kApplied);
      }};
  return new StreamedCallReactor<PushChunk>(context, metrics_, &shard_buffers_,
                                            std::move(handler), response);
}

// A streamed Init rather than a server that generates θ from a seed: the
// initial values are the worker's (its model's initialisers, or a
// checkpoint it resumes from), so the server takes them as they are and
// every run stays byte-identical to the unary Init's. Staged whole as a
// push is, it costs θ's size once more, and only until θ is declared.
grpc::ServerReadReactor<grpc::ByteBuffer>* ParameterService::InitStream(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  auto args = std::make_shared<InitArgs>();
  StreamedCall<InitChunk> handler{
      RpcMethod::kInitStream,
      "InitStream",
      "Init",
      [this, args](InitChunk& first) -> absl::StatusOr<common::KeyRange> {
        if (absl::Status primary = CheckPrimary(); !primary.ok()) {
          return primary;
        }
        if (!first.init().values().empty()) {
          return absl::InvalidArgumentError(
              "a streamed Init carries its values in the chunks: the first "
              "message's values must be empty");
        }
        *args = InitArgsFromProto(first.init(), absl::Cord());
        return shard_->InitKeys(*args);
      },
      [](const InitChunk& chunk) { return chunk.has_init(); },
      [this, args](absl::Cord values, StreamedCall<InitChunk>::Done done) {
        args->values = std::move(values);
        absl::StatusOr<InitResult> result = shard_->Init(*args);
        // θ holds its own copy now: the staged values go at once.
        args->values.Clear();
        if (!result.ok()) return done(result.status());
        auto answer = std::make_shared<grpc::ByteBuffer>(
            rpc::Serialize(InitResponseOf(*result)));
        AfterReplication(absl::OkStatus(),
                         [answer, done](absl::Status replicated) {
                           if (!replicated.ok()) return done(replicated);
                           done(std::move(*answer));
                         });
      },
      [](const absl::Status&) {}};
  return new StreamedCallReactor<InitChunk>(context, metrics_, &shard_buffers_,
                                            std::move(handler), response);
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
  auto* reactor =
      new PullStreamReactor(shard_, metrics_, replicator_, call, chunk_bytes);
  if (!parsed.ok()) {
    reactor->Refuse(parsed);
  } else {
    reactor->Start(ToPullArgs(fields.pull()), PullExpiry(*context));
  }
  return reactor;
}

}  // namespace ps::server
