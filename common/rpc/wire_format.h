#ifndef PS_COMMON_RPC_WIRE_FORMAT_H_
#define PS_COMMON_RPC_WIRE_FORMAT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/cord.h"
#include "absl/types/span.h"
#include "google/protobuf/message_lite.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"

// θ-sized bytes fields travel apart from the rest of their message: parsed
// as a Cord that shares gRPC's slices, and sent as a slice of their own.
// Protobuf would copy them into and out of a string (and, parsing 64 MiB,
// reserve 50 MB and grow by doubling). The wire bytes are exactly the
// protobuf encoding, so either side may use the typed stubs.
namespace ps::rpc {

// A whole message as one slice: for small messages, which have no field to
// keep apart.
grpc::ByteBuffer Serialize(const google::protobuf::MessageLite& message);

// A message's bytes as a Cord over the buffer's slices (no copy).
absl::Cord CordOf(const grpc::ByteBuffer& buffer);

// Parses `wire` into `message`, except the bytes field at `path` (field
// numbers from the outer message inward, e.g. {pull, values}), which is
// returned in `bytes` sharing `wire`'s memory. False if `wire` is not a
// valid encoding.
bool ParseApart(const absl::Cord& wire, absl::Span<const uint32_t> path,
                google::protobuf::MessageLite* message, absl::Cord* bytes);

// The inverse: `message`, whose field at `path` is empty, encoded with
// `bytes` as that field. The bytes become the buffer's last slice as they
// are; gRPC frees them once sent.
grpc::ByteBuffer SerializeApart(const google::protobuf::MessageLite& message,
                                absl::Span<const uint32_t> path,
                                std::string bytes);

// Unary calls with raw buffers, completed on the calling thread as the
// generated blocking stubs do. One call at a time.
class RawUnaryCaller {
 public:
  explicit RawUnaryCaller(std::shared_ptr<grpc::Channel> channel);
  ~RawUnaryCaller();
  RawUnaryCaller(const RawUnaryCaller&) = delete;
  RawUnaryCaller& operator=(const RawUnaryCaller&) = delete;

  // `method` is the full name, e.g. "/ps.v1.ParameterServer/PushPull".
  grpc::Status Call(grpc::ClientContext* context, const std::string& method,
                    const grpc::ByteBuffer& request,
                    grpc::ByteBuffer* response);

 private:
  grpc::GenericStub stub_;
  grpc::CompletionQueue queue_;
};

}  // namespace ps::rpc

#endif  // PS_COMMON_RPC_WIRE_FORMAT_H_
