#ifndef PS_COMMON_RPC_WIRE_FORMAT_H_
#define PS_COMMON_RPC_WIRE_FORMAT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/cord.h"
#include "absl/time/time.h"
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

// Request and answer pairs, one pair at a time, on one long-lived
// bidirectional stream: a unary call's per-call cost (a new HTTP/2 stream,
// its headers and trailers, the call's set-up) is paid once per stream.
// Send then Receive; any failure, a deadline included, ends the stream
// (Receive says why) and the next Send opens a new one. One caller at a
// time.
class RawStreamCaller {
 public:
  RawStreamCaller(std::shared_ptr<grpc::Channel> channel, std::string method);
  ~RawStreamCaller();
  RawStreamCaller(const RawStreamCaller&) = delete;
  RawStreamCaller& operator=(const RawStreamCaller&) = delete;

  // Sends `request` and asks for its answer; opening the stream first
  // waits for it until `deadline`.
  void Send(const grpc::ByteBuffer& request, absl::Time deadline);
  // The answer to the last Send, waited for until `deadline`.
  grpc::Status Receive(absl::Time deadline, grpc::ByteBuffer* answer);
  // The stream's context, from Send until the next Send: TryCancel from
  // any thread ends a Receive early.
  grpc::ClientContext* context() const { return context_.get(); }

 private:
  enum Tag : intptr_t { kStart = 1, kWrite, kRead, kFinish };
  // Waits for `tag` (others that arrive first are noted); false when it
  // completed not ok, or at `deadline`.
  bool Await(Tag tag, absl::Time deadline);
  // Ends the stream: cancels what is pending and collects the status.
  grpc::Status Close(grpc::Status why);

  grpc::GenericStub stub_;
  const std::string method_;
  grpc::CompletionQueue queue_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  grpc::ByteBuffer answer_;
  // Tags started and not yet completed, and those completed (with ok) that
  // Await has not asked for yet.
  int pending_ = 0;
  bool start_failed_ = false;  // the last Send could not open the stream
  uint32_t done_ = 0;
  uint32_t done_ok_ = 0;
};

}  // namespace ps::rpc

#endif  // PS_COMMON_RPC_WIRE_FORMAT_H_
