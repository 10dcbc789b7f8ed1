#ifndef PS_SERVER_WIRE_MESSAGES_H_
#define PS_SERVER_WIRE_MESSAGES_H_

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "google/protobuf/message_lite.h"
#include "grpcpp/support/byte_buffer.h"
#include "ps/v1/parameter_server.pb.h"
#include "server/parameter_shard.h"

// Pull and PushPull answers are written for the wire by hand: the θ bytes
// the shard copied out become the message's last slice as they are, where
// the typed path copies them into the message and again into gRPC's buffer
// (at 16M floats, 64 MiB more copied and alive per call). The bytes are
// exactly the protobuf encoding of the typed messages, so clients do not
// know the difference.
namespace ps::server {

grpc::ByteBuffer EncodePullResponse(PullResult pulled);
grpc::ByteBuffer EncodePushPullResponse(const ps::v1::PushResponse& pushed,
                                        PullResult pulled);

// Parses a raw request and releases its bytes at once, as gRPC's typed
// handlers do, so a large request is not held twice while the call runs.
absl::Status ParseRequest(const grpc::ByteBuffer* request,
                          google::protobuf::MessageLite* message);

// A push as it arrived: its fields, and its gradient as a Cord over the
// request's own slices. Parsing `gradient` as a protobuf string would copy
// it into a string grown by doubling (100 MB and several copies for a 64
// MiB gradient, measured with massif); this copies nothing.
struct ReceivedPush {
  ps::v1::PushRequest fields;  // gradient left empty
  absl::Cord gradient;
};

// Splits a raw PushRequest, or the push of a raw PushPullRequest (its pull
// parsed into `pull`), and releases the request buffer's own hold on the
// bytes. Malformed bytes are INVALID_ARGUMENT.
absl::Status ParsePushRequest(const grpc::ByteBuffer* request,
                              ReceivedPush* push);
// The same for an InitRequest's initial values.
absl::Status ParseInitRequest(const grpc::ByteBuffer* request,
                              ps::v1::InitRequest* fields, absl::Cord* values);
absl::Status ParsePushPullRequest(const grpc::ByteBuffer* request,
                                  ReceivedPush* push,
                                  ps::v1::PullRequest* pull);

}  // namespace ps::server

#endif  // PS_SERVER_WIRE_MESSAGES_H_
