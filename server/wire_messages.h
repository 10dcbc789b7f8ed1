#ifndef PS_SERVER_WIRE_MESSAGES_H_
#define PS_SERVER_WIRE_MESSAGES_H_

#include "absl/status/status.h"
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

}  // namespace ps::server

#endif  // PS_SERVER_WIRE_MESSAGES_H_
