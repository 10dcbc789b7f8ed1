#include "server/wire_messages.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
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

// Reads protobuf wire format across a message's slices.
class SliceReader {
 public:
  explicit SliceReader(std::vector<grpc::Slice> slices)
      : slices_(std::move(slices)) {
    for (const grpc::Slice& slice : slices_) remaining_ += slice.size();
    SkipEmpty();
  }

  size_t remaining() const { return remaining_; }

  bool ReadVarint(uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t byte;
      if (!ReadByte(&byte)) return false;
      *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;  // longer than 10 bytes
  }

  // The next n bytes, appended to `out` (a copy) or to `cord` (a reference
  // to the slices, which the cord keeps alive).
  bool Read(size_t n, std::string* out, absl::Cord* cord) {
    if (n > remaining_) return false;
    while (n > 0) {
      const grpc::Slice& slice = slices_[index_];
      const size_t take = std::min(n, slice.size() - offset_);
      const char* data =
          reinterpret_cast<const char*>(slice.begin()) + offset_;
      if (out != nullptr) out->append(data, take);
      if (cord != nullptr) {
        cord->Append(absl::MakeCordFromExternal(
            absl::string_view(data, take), [held = slice] {}));
      }
      Advance(take);
      n -= take;
    }
    return true;
  }

 private:
  bool ReadByte(uint8_t* byte) {
    if (remaining_ == 0) return false;
    *byte = slices_[index_].begin()[offset_];
    Advance(1);
    return true;
  }

  void Advance(size_t n) {
    offset_ += n;
    remaining_ -= n;
    SkipEmpty();
  }

  void SkipEmpty() {
    while (index_ < slices_.size() && offset_ == slices_[index_].size()) {
      ++index_;
      offset_ = 0;
    }
  }

  std::vector<grpc::Slice> slices_;
  size_t index_ = 0;
  size_t offset_ = 0;
  size_t remaining_ = 0;
};

absl::Status Malformed(absl::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("the request is not a valid ", message, " message"));
}

// Copies one field's payload (its tag already read and appended to `out`).
bool CopyPayload(SliceReader& reader, uint32_t wire_type, std::string* out) {
  switch (wire_type) {
    case WireFormatLite::WIRETYPE_VARINT: {
      uint64_t value;
      if (!reader.ReadVarint(&value)) return false;
      AppendVarint(value, out);
      return true;
    }
    case WireFormatLite::WIRETYPE_FIXED64:
      return reader.Read(8, out, nullptr);
    case WireFormatLite::WIRETYPE_FIXED32:
      return reader.Read(4, out, nullptr);
    case WireFormatLite::WIRETYPE_LENGTH_DELIMITED: {
      uint64_t length;
      if (!reader.ReadVarint(&length)) return false;
      AppendVarint(length, out);
      return reader.Read(length, out, nullptr);
    }
    default:  // groups are not in our protocol
      return false;
  }
}

// The message in the reader's next `length` bytes: every field but the
// bytes field `large` copied to `fields` (to parse as usual), that one
// referenced in `bytes`.
bool SplitOut(SliceReader& reader, size_t length, uint32_t large,
              std::string* fields, absl::Cord* bytes) {
  if (length > reader.remaining()) return false;
  const size_t end = reader.remaining() - length;
  while (reader.remaining() > end) {
    uint64_t tag;
    if (!reader.ReadVarint(&tag)) return false;
    const uint32_t field = static_cast<uint32_t>(tag >> 3);
    const uint32_t wire_type = static_cast<uint32_t>(tag & 7);
    if (field == large &&
        wire_type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      uint64_t size;
      if (!reader.ReadVarint(&size)) return false;
      bytes->Clear();  // as protobuf: the last one counts
      if (!reader.Read(size, nullptr, bytes)) return false;
      continue;
    }
    AppendVarint(tag, fields);
    if (!CopyPayload(reader, wire_type, fields)) return false;
  }
  return reader.remaining() == end;
}

// The request's slices, with the buffer's own reference dropped: gRPC owns
// the buffer and only destroys it after the call, and what is still needed
// is held by the slices we return.
std::vector<grpc::Slice> TakeSlices(const grpc::ByteBuffer* request) {
  auto* buffer = const_cast<grpc::ByteBuffer*>(request);
  std::vector<grpc::Slice> slices;
  if (!buffer->Valid() || !buffer->Dump(&slices).ok()) slices.clear();
  buffer->Clear();
  return slices;
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


absl::Status ParsePushRequest(const grpc::ByteBuffer* request,
                              ReceivedPush* push) {
  SliceReader reader(TakeSlices(request));
  std::string fields;
  if (!SplitOut(reader, reader.remaining(),
                ps::v1::PushRequest::kGradientFieldNumber, &fields,
                &push->gradient) ||
      !push->fields.ParseFromString(fields)) {
    return Malformed(push->fields.GetTypeName());
  }
  return absl::OkStatus();
}

absl::Status ParseInitRequest(const grpc::ByteBuffer* request,
                              ps::v1::InitRequest* fields,
                              absl::Cord* values) {
  SliceReader reader(TakeSlices(request));
  std::string rest;
  if (!SplitOut(reader, reader.remaining(),
                ps::v1::InitRequest::kValuesFieldNumber, &rest, values) ||
      !fields->ParseFromString(rest)) {
    return Malformed(fields->GetTypeName());
  }
  return absl::OkStatus();
}

absl::Status ParsePushPullRequest(const grpc::ByteBuffer* request,
                                  ReceivedPush* push,
                                  ps::v1::PullRequest* pull) {
  SliceReader reader(TakeSlices(request));
  const std::string type = ps::v1::PushPullRequest().GetTypeName();
  std::string push_fields;  // a repeated message field merges: concatenate
  std::string rest;
  while (reader.remaining() > 0) {
    uint64_t tag;
    if (!reader.ReadVarint(&tag)) return Malformed(type);
    const uint32_t wire_type = static_cast<uint32_t>(tag & 7);
    if ((tag >> 3) == ps::v1::PushPullRequest::kPushFieldNumber &&
        wire_type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      uint64_t length;
      if (!reader.ReadVarint(&length) ||
          !SplitOut(reader, length, ps::v1::PushRequest::kGradientFieldNumber,
                    &push_fields, &push->gradient)) {
        return Malformed(type);
      }
      continue;
    }
    AppendVarint(tag, &rest);
    if (!CopyPayload(reader, wire_type, &rest)) return Malformed(type);
  }
  ps::v1::PushPullRequest others;
  if (!others.ParseFromString(rest) ||
      !push->fields.ParseFromString(push_fields)) {
    return Malformed(type);
  }
  *pull = others.pull();
  return absl::OkStatus();
}

}  // namespace ps::server
