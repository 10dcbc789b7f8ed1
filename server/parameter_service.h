#ifndef PS_SERVER_PARAMETER_SERVICE_H_
#define PS_SERVER_PARAMETER_SERVICE_H_

#include <string>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "ps/v1/parameter_server.grpc.pb.h"
#include "server/checkpointer.h"
#include "server/parameter_shard.h"
#include "server/replication/replicator.h"
#include "server/server_metrics.h"
#include "server/wire_messages.h"

namespace ps::server {

class PushPullStreamReactor;

// Init, Push, Pull, PushPull and the streamed calls take and answer raw
// bytes (server/wire_messages.h): θ-sized values and gradients are read
// from the request's slices where they arrived, and θ is copied once on its
// way out. The rest are typed. The chain names each method once, not
// through ParameterServer::CallbackService: that one's typed
// PushPullStream has the raw one's signature with another return type.
namespace grpc_base {
using ps::v1::ParameterServer;
using Typed = ParameterServer::WithCallbackMethod_Register<
    ParameterServer::WithCallbackMethod_Heartbeat<
        ParameterServer::WithCallbackMethod_Leave<
            ParameterServer::WithCallbackMethod_Status<
                ParameterServer::WithCallbackMethod_Checkpoint<
                    ParameterServer::WithCallbackMethod_ExportRows<
                        ParameterServer::WithCallbackMethod_LeasePartition<
                            ParameterServer::Service>>>>>>>;
using Raw = ParameterServer::WithRawCallbackMethod_Init<
    ParameterServer::WithRawCallbackMethod_InitStream<
        ParameterServer::WithRawCallbackMethod_Pull<
            ParameterServer::WithRawCallbackMethod_Push<
                ParameterServer::WithRawCallbackMethod_PushPull<
                    ParameterServer::WithRawCallbackMethod_PushPullStream<
                        ParameterServer::WithRawCallbackMethod_PushStream<
                            ParameterServer::WithRawCallbackMethod_PullStream<
                                Typed>>>>>>>>;
}  // namespace grpc_base
using ParameterServiceBase = grpc_base::Raw;

// The gRPC face of a ParameterShard: converts messages and calls the core.
// Pulls that must wait park in a reactor, costing no thread; a background
// ticker ends those that outlive max_pull_wait even when the client set no
// deadline. The same ticker expires leases and round timeouts.
class ParameterService final : public ParameterServiceBase {
 public:
  // `checkpointer` may be null: the server then refuses Checkpoint calls.
  // Every call is counted in `metrics`. `replicator` may be null (the shard
  // is not replicated); on a backup replica workers' calls are refused with
  // the primary's address, and on the primary a write is answered once
  // every live backup applied it.
  ParameterService(ParameterShard* shard, Checkpointer* checkpointer,
                   ServerMetrics* metrics, absl::Duration max_pull_wait,
                   Replicator* replicator = nullptr);
  ~ParameterService() override;

  void SetAdvertisedAddress(std::string address) ABSL_LOCKS_EXCLUDED(mu_);

  grpc::ServerUnaryReactor* Register(
      grpc::CallbackServerContext* context,
      const ps::v1::RegisterRequest* request,
      ps::v1::RegisterResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(
      grpc::CallbackServerContext* context,
      const ps::v1::HeartbeatRequest* request,
      ps::v1::HeartbeatResponse* response) override;
  grpc::ServerUnaryReactor* Leave(grpc::CallbackServerContext* context,
                                  const ps::v1::LeaveRequest* request,
                                  ps::v1::LeaveResponse* response) override;
  grpc::ServerUnaryReactor* Init(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Pull(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Push(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* PushPull(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* PushPullStream(
      grpc::CallbackServerContext* context) override;
  // Ends the PushPull streams, and any opened later: each at once if it
  // waits for a request, else once its answer is written. An open stream
  // would otherwise hold the server's shutdown for its whole grace.
  void EndStreams();
  // The streamed forms of Init, Push and Pull for shards too big for one
  // message (server/parameter_service_streams.cc): an Init's values and a
  // push's gradient are staged whole (server/push_stream.h) and then taken
  // as Init and Push take them; a pull is sent from θ as it was read.
  grpc::ServerReadReactor<grpc::ByteBuffer>* InitStream(
      grpc::CallbackServerContext* context,
      grpc::ByteBuffer* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* PushStream(
      grpc::CallbackServerContext* context,
      grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* PullStream(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* context,
                                   const ps::v1::StatusRequest* request,
                                   ps::v1::StatusResponse* response) override;
  // Writes on the calling gRPC thread: a checkpoint is rare and bounded by
  // the shard's size.
  grpc::ServerUnaryReactor* Checkpoint(
      grpc::CallbackServerContext* context,
      const ps::v1::CheckpointRequest* request,
      ps::v1::CheckpointResponse* response) override;
  grpc::ServerUnaryReactor* ExportRows(
      grpc::CallbackServerContext* context,
      const ps::v1::ExportRowsRequest* request,
      ps::v1::ExportRowsResponse* response) override;
  grpc::ServerUnaryReactor* LeasePartition(
      grpc::CallbackServerContext* context,
      const ps::v1::LeasePartitionRequest* request,
      ps::v1::LeasePartitionResponse* response) override;

 private:
  // The shared halves of Pull, Push and PushPull.
  // `pushed` is the outcome of a PushPull's push, null for a Pull.
  grpc::ServerUnaryReactor* StartPull(grpc::CallbackServerContext* context,
                                      const RpcCall& call,
                                      const ps::v1::PullRequest& request,
                                      const ps::v1::PushResponse* pushed,
                                      grpc::ByteBuffer* response);
  absl::Status ApplyPush(ReceivedPush push, ps::v1::PushResponse* response);
  // A Pull request's fields as the shard takes them.
  static PullArgs ToPullArgs(const ps::v1::PullRequest& request);
  // INVALID_ARGUMENT when a pull request of `bytes` is more than a pull
  // needs (checked before it is parsed).
  absl::Status CheckPullRequestSize(size_t bytes) const;
  // When a pull parked for `context` ends: the client's deadline, or
  // max_pull_wait for a client that set none.
  absl::Time PullExpiry(const grpc::CallbackServerContext& context) const;
  // OK unless this replica is a backup (Replicator::CheckPrimary).
  absl::Status CheckPrimary() const;
  // Replicator::NotePushAcknowledged, when replicated.
  void NotePushAcknowledged();
  // Runs `done` with `applied` at once when it failed or the shard is not
  // replicated; else once every live backup applied the write too
  // (Replicator::WhenReplicated): a write is acknowledged only then, and
  // no thread waits meanwhile.
  void AfterReplication(absl::Status applied, ReplicationLog::Done done);
  // Finish for a write: answers once AfterReplication says.
  grpc::ServerUnaryReactor* FinishWrite(
      grpc::CallbackServerContext* context, const RpcCall& call,
      const absl::Status& status,
      const google::protobuf::MessageLite* answer = nullptr,
      grpc::ByteBuffer* response = nullptr);
  // Replaces args->gradient with the request's compressed_gradient decoded
  // to float32 (when it has one), or says what is wrong with it.
  absl::Status DecodeCompressed(const ps::v1::PushRequest& request,
                                PushArgs* args);
  // Answers `call` now with `status` (and `answer` for a raw method).
  grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context,
                                   const RpcCall& call,
                                   const absl::Status& status);
  grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context,
                                   const RpcCall& call,
                                   const absl::Status& status,
                                   const google::protobuf::MessageLite& answer,
                                   grpc::ByteBuffer* response);

  ParameterShard* shard_;
  Checkpointer* checkpointer_;
  Replicator* const replicator_;
  ServerMetrics* metrics_;
  absl::Duration max_pull_wait_;
  // θ-sized buffers, reused: compressed pushes decode into them, streamed
  // Inits and pushes are staged in them.
  GradientBufferPool shard_buffers_;
  absl::Notification stop_;
  std::thread expiry_ticker_;
  absl::Mutex mu_;
  std::string advertised_address_ ABSL_GUARDED_BY(mu_);
  // A PushPullStream's reactor (parameter_service.cc) answers each message
  // with ExchangePushPull and leaves with ForgetStream.
  friend class PushPullStreamReactor;
  // One PushPull of a stream: `answer` runs once, now or later and on any
  // thread, with the encoded answer or the status PushPull would end with.
  // A pull that waits parks under `ticket`.
  void ExchangePushPull(
      const grpc::ByteBuffer& request, absl::Time expires,
      ParameterShard::PullTicket ticket,
      std::function<void(absl::StatusOr<grpc::ByteBuffer>)> answer);
  void ForgetStream(PushPullStreamReactor* stream);
  absl::Mutex streams_mu_;
  absl::flat_hash_set<PushPullStreamReactor*> streams_
      ABSL_GUARDED_BY(streams_mu_);
  bool streams_ended_ ABSL_GUARDED_BY(streams_mu_) = false;
};

}  // namespace ps::server

#endif  // PS_SERVER_PARAMETER_SERVICE_H_
