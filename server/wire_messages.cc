#include "server/wire_messages.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/slice.h"

namespace ps::server {
namespace {

using google::protobuf::io::CodedOutputStream;
using google::protobuf::internal::WireFormatLite;

void AppendVarint(uint64_t value, std::string* out) {
  uint8_t bytes[10];
  uint8_t* end = CodedOutputStream::WriteVarint64ToArray(value, bytes);
  out->append(reinterpret_cast<const char*>(bytes), end - bytes);
}

void AppendLengthDelimitedTag(int field, size_t length, std::string* out) {
  AppendVarint(WireFormatLite::MakeTag(
                   field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED),
               out);
  AppendVarint(length, out);
}

// PullResponse without its values, then the values field's tag and length:
// the values themselves follow as a slice of their own.
std::string PullHead(const PullResult& pulled) {
  ps::v1::PullResponse head;
  head.set_version(pulled.version);
  head.set_key_begin(pulled.keys.begin);
  head.set_key_end(pulled.keys.end);
  head.set_samples_applied(pulled.samples_applied);
  std::string out = head.SerializeAsString();
  if (!pulled.values.empty()) {
    AppendLengthDelimitedTag(ps::v1::PullResponse::kValuesFieldNumber,
                             pulled.values.size(), &out);
  }
  return out;
}

// The values' own string becomes the slice; gRPC frees it once sent.
grpc::Slice TakeAsSlice(std::string values) {
  auto* owned = new std::string(std::move(values));
  return grpc::Slice(
      owned->data(), owned->size(),
      [](void* string) { delete static_cast<std::string*>(string); }, owned);
}

grpc::ByteBuffer Join(std::string head, std::string values) {
  std::vector<grpc::Slice> slices;
  slices.emplace_back(head.data(), head.size());  // small: copied
  if (!values.empty()) slices.push_back(TakeAsSlice(std::move(values)));
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace

grpc::ByteBuffer EncodePullResponse(PullResult pulled) {
  std::string head = PullHead(pulled);
  return Join(std::move(head), std::move(pulled.values));
}

grpc::ByteBuffer EncodePushPullResponse(const ps::v1::PushResponse& pushed,
                                        PullResult pulled) {
  std::string head;
  const std::string push = pushed.SerializeAsString();
  AppendLengthDelimitedTag(ps::v1::PushPullResponse::kPushFieldNumber,
                           push.size(), &head);
  head += push;
  const std::string pull_head = PullHead(pulled);
  AppendLengthDelimitedTag(ps::v1::PushPullResponse::kPullFieldNumber,
                           pull_head.size() + pulled.values.size(), &head);
  head += pull_head;
  return Join(std::move(head), std::move(pulled.values));
}

absl::Status ParseRequest(const grpc::ByteBuffer* request,
                          google::protobuf::MessageLite* message) {
  // gRPC owns the buffer and only destroys it after the call; clearing it
  // now frees the request's bytes as soon as they are parsed.
  auto* buffer = const_cast<grpc::ByteBuffer*>(request);
  bool parsed = false;
  {
    grpc::ProtoBufferReader reader(buffer);
    parsed = message->ParseFromZeroCopyStream(&reader);
  }
  buffer->Clear();
  if (!parsed) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request is not a valid ", message->GetTypeName(), " message"));
  }
  return absl::OkStatus();
}

}  // namespace ps::server
