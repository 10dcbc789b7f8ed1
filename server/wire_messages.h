#ifndef PS_SERVER_WIRE_MESSAGES_H_
#define PS_SERVER_WIRE_MESSAGES_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "google/protobuf/message_lite.h"
#include "grpcpp/support/byte_buffer.h"
#include "ps/v1/parameter_server.pb.h"
#include "server/gradient_buffer_pool.h"
#include "server/parameter_shard.h"

// The server's side of the raw methods (common/rpc/wire_format.h): θ-sized
// fields are read from the request's slices where they arrived, and the
// θ bytes the shard copied out become the answer's last slice as they are.
// Every request's buffer is released as soon as it is parsed, as gRPC's
// typed handlers do, so a large request is not held twice.
namespace ps::server {

grpc::ByteBuffer EncodePullResponse(PullResult pulled);
// A pull's answer without its θ values (pulled.values is left as it was);
// takes the sparse rows.
ps::v1::PullResponse PullHead(PullResult& pulled);
grpc::ByteBuffer EncodePushPullResponse(const ps::v1::PushResponse& pushed,
                                        PullResult pulled);

// Sparse rows between the wire and the shard (ps.v1.SparseRows).
std::vector<SparseRows> SparseRowsFromProto(
    const google::protobuf::RepeatedPtrField<ps::v1::SparseRows>& protos);

// Why a worker leaves, between the wire and the shard: one mapping for the
// service and for replication, so a backup replays the reason it was sent.
// An unknown reason is a stop.
ps::v1::LeaveRequest::Reason LeaveReasonToProto(LeaveReason reason);
LeaveReason LeaveReasonFromProto(ps::v1::LeaveRequest::Reason reason);

// The shard's arguments from a request's fields, with the θ-sized bytes
// (the gradient, the initial values) given apart.
PushArgs PushArgsFromProto(const ps::v1::PushRequest& request,
                           absl::Cord gradient);
InitArgs InitArgsFromProto(const ps::v1::InitRequest& request,
                           absl::Cord values);

// A push's compressed_gradient (ps.v1.GradientPart) decoded to the float32
// bytes of `keys`: the parts must cover exactly keys.size() keys, and each
// must be well formed (common::DecodePart); INVALID_ARGUMENT names the
// first part that is not. Decodes into a buffer of `buffers`, taken only
// once the parts' key counts add up to `keys` (so a lying count costs
// nothing), which the Cord gives back when it goes.
absl::StatusOr<absl::Cord> DecodeCompressedGradient(
    const google::protobuf::RepeatedPtrField<ps::v1::GradientPart>& parts,
    const common::KeyRange& keys, GradientBufferPool& buffers);

// Parses a raw request with no large field (a Pull).
absl::Status ParseRequest(const grpc::ByteBuffer* request,
                          google::protobuf::MessageLite* message);

// A push as it arrived: its fields, and its gradient as a Cord over the
// request's own slices.
struct ReceivedPush {
  ps::v1::PushRequest fields;  // gradient left empty
  absl::Cord gradient;
};

// A raw PushRequest, InitRequest (its values apart) or PushPullRequest
// (its pull parsed into `pull`). Malformed bytes are INVALID_ARGUMENT.
absl::Status ParsePushRequest(const grpc::ByteBuffer* request,
                              ReceivedPush* push);
absl::Status ParseInitRequest(const grpc::ByteBuffer* request,
                              ps::v1::InitRequest* fields, absl::Cord* values);
// The shard's answer to an Init on the wire.
ps::v1::InitResponse InitResponseOf(const InitResult& result);
absl::Status ParsePushPullRequest(const grpc::ByteBuffer* request,
                                  ReceivedPush* push,
                                  ps::v1::PullRequest* pull);

}  // namespace ps::server

#endif  // PS_SERVER_WIRE_MESSAGES_H_
