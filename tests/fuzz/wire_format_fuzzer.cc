// libFuzzer target: rpc::ParseApart, the raw wire parser of every θ-sized
// message, held to protobuf's own parser. Whatever ParseApart accepts,
// protobuf must accept too and read the same fields; SerializeApart of the
// result must parse back to it. The first byte picks the message.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/types/span.h"
#include "common/rpc/wire_format.h"
#include "grpcpp/grpcpp.h"
#include "ps/v1/parameter_server.pb.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

namespace v1 = ps::v1;

using ps::fuzz::Fail;

// The field at `path` of `message` (protobuf's own parse), as the bytes
// ParseApart kept apart; cleared in `message`.
std::string TakeField(google::protobuf::Message& message,
                      absl::Span<const uint32_t> path) {
  const google::protobuf::Reflection* reflection = message.GetReflection();
  const google::protobuf::FieldDescriptor* field =
      message.GetDescriptor()->FindFieldByNumber(path[0]);
  if (path.size() == 1) {
    std::string bytes = reflection->GetString(message, field);
    reflection->ClearField(&message, field);
    return bytes;
  }
  if (!reflection->HasField(message, field)) return "";
  google::protobuf::Message* inner =
      reflection->MutableMessage(&message, field);
  return TakeField(*inner, path.subspan(1));
}

template <typename Message>
void Check(const absl::Cord& wire, absl::Span<const uint32_t> path) {
  Message apart;
  absl::Cord bytes;
  if (!ps::rpc::ParseApart(wire, path, &apart, &bytes)) return;

  Message whole;
  if (!whole.ParseFromString(std::string(wire))) {
    Fail("ParseApart accepted bytes that protobuf rejects");
  }
  if (TakeField(whole, path) != std::string(bytes)) {
    Fail("ParseApart's bytes field differs from protobuf's");
  }
  if (whole.SerializeAsString() != apart.SerializeAsString()) {
    Fail("ParseApart's other fields differ from protobuf's");
  }

  // Sent as the server or worker sends it, it reads back the same.
  const grpc::ByteBuffer sent =
      ps::rpc::SerializeApart(apart, path, std::string(bytes));
  Message again;
  absl::Cord bytes_again;
  if (!ps::rpc::ParseApart(ps::rpc::CordOf(sent), path, &again, &bytes_again)) {
    Fail("SerializeApart wrote bytes ParseApart rejects");
  }
  if (bytes_again != bytes ||
      again.SerializeAsString() != apart.SerializeAsString()) {
    Fail("SerializeApart then ParseApart changed the message");
  }
}

// A Cord in up to three pieces, as gRPC's slices deliver it.
absl::Cord Pieces(const uint8_t* data, size_t size, uint8_t cuts) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  if (size < 2) return absl::Cord(text);
  const size_t first = cuts % size;
  const size_t second = first + (cuts / 16) % (size - first);
  absl::Cord wire;
  wire.Append(absl::Cord(text.substr(0, first)));
  wire.Append(absl::Cord(text.substr(first, second - first)));
  wire.Append(absl::Cord(text.substr(second)));
  return wire;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // ByteBuffer and Slice need gRPC's core.
  static grpc::internal::GrpcLibraryInitializer initializer;
  static grpc::GrpcLibraryCodegen codegen;
  if (size < 2) return 0;
  const uint8_t which = data[0];
  const absl::Cord wire = Pieces(data + 2, size - 2, data[1]);
  switch (which % 5) {
    case 0:
      Check<v1::PushRequest>(wire, {v1::PushRequest::kGradientFieldNumber});
      break;
    case 1:
      Check<v1::InitRequest>(wire, {v1::InitRequest::kValuesFieldNumber});
      break;
    case 2:
      Check<v1::PushPullRequest>(wire, {v1::PushPullRequest::kPushFieldNumber,
                                        v1::PushRequest::kGradientFieldNumber});
      break;
    case 3:
      Check<v1::PullResponse>(wire, {v1::PullResponse::kValuesFieldNumber});
      break;
    case 4:
      Check<v1::PushPullResponse>(wire, {v1::PushPullResponse::kPullFieldNumber,
                                         v1::PullResponse::kValuesFieldNumber});
      break;
  }
  return 0;
}
