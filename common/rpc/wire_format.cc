#include "common/rpc/wire_format.h"

#include <climits>
#include <utility>
#include <vector>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/slice.h"

namespace ps::rpc {
namespace {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedOutputStream;

void AppendVarint(uint64_t value, std::string* out) {
  uint8_t bytes[10];
  uint8_t* end = CodedOutputStream::WriteVarint64ToArray(value, bytes);
  out->append(reinterpret_cast<const char*>(bytes), end - bytes);
}

void AppendLengthDelimited(uint32_t field, size_t length, std::string* out) {
  AppendVarint(
      WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED),
      out);
  AppendVarint(length, out);
}

// Reads wire format from a Cord, counting what is left.
class CordReader {
 public:
  explicit CordReader(const absl::Cord& wire)
      : at_(wire.char_begin()), left_(wire.size()) {}

  size_t left() const { return left_; }

  bool ReadVarint(uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (left_ == 0) return false;
      const uint8_t byte = static_cast<uint8_t>(*at_);
      absl::Cord::Advance(&at_, 1);
      --left_;
      *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;  // longer than 10 bytes
  }

  // A field's tag as protobuf reads one: at most 5 bytes, and (stricter
  // than protobuf, which drops the excess bits) within 32 bits, so that both
  // parsers see the same field number.
  bool ReadTag(uint32_t* tag) {
    const size_t before = left_;
    uint64_t value;
    if (!ReadVarint(&value) || before - left_ > 5 || value > UINT32_MAX) {
      return false;
    }
    *tag = static_cast<uint32_t>(value);
    return true;
  }

  // A length-delimited field's length as protobuf reads one: at most 5
  // bytes and at most INT_MAX - 16 (its parser keeps 16 bytes of slop
  // below INT_MAX), so that both parsers refuse the same lengths.
  bool ReadSize(uint64_t* size) {
    const size_t before = left_;
    return ReadVarint(size) && before - left_ <= 5 &&
           *size <= static_cast<uint64_t>(INT_MAX) - 16;
  }

  // The next n bytes, sharing the Cord's memory.
  bool Read(uint64_t n, absl::Cord* out) {
    if (n > left_) return false;
    *out = absl::Cord::AdvanceAndRead(&at_, n);
    left_ -= n;
    return true;
  }

  bool Append(uint64_t n, std::string* out) {
    absl::Cord piece;
    if (!Read(n, &piece)) return false;
    for (absl::string_view chunk : piece.Chunks()) {
      out->append(chunk.data(), chunk.size());
    }
    return true;
  }

 private:
  absl::Cord::CharIterator at_;
  size_t left_;
};

// Copies one field's payload, its tag already read and written to `out`.
bool CopyPayload(CordReader& reader, uint32_t wire_type, std::string* out) {
  switch (wire_type) {
    case WireFormatLite::WIRETYPE_VARINT: {
      uint64_t value;
      if (!reader.ReadVarint(&value)) return false;
      AppendVarint(value, out);
      return true;
    }
    case WireFormatLite::WIRETYPE_FIXED64:
      return reader.Append(8, out);
    case WireFormatLite::WIRETYPE_FIXED32:
      return reader.Append(4, out);
    case WireFormatLite::WIRETYPE_LENGTH_DELIMITED: {
      uint64_t length;
      if (!reader.ReadSize(&length)) return false;
      AppendVarint(length, out);
      return reader.Append(length, out);
    }
    default:  // groups are not in our protocol
      return false;
  }
}

// The message in the reader's next `length` bytes: every field off `path`
// copied to `rest`, the field at the path's end referenced in `bytes`.
// Repeated occurrences stay separate in `rest`, where protobuf merges them
// as it would have; for `bytes` the last one counts, as in protobuf.
bool Split(CordReader& reader, uint64_t length, absl::Span<const uint32_t> path,
           std::string* rest, absl::Cord* bytes) {
  if (length > reader.left()) return false;
  const size_t end = reader.left() - length;
  while (reader.left() > end) {
    uint32_t tag;
    if (!reader.ReadTag(&tag)) return false;
    const uint32_t wire_type = tag & 7;
    if ((tag >> 3) == path[0] &&
        wire_type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      uint64_t size;
      if (!reader.ReadSize(&size)) return false;
      if (path.size() == 1) {
        if (!reader.Read(size, bytes)) return false;
        continue;
      }
      std::string inner;
      if (!Split(reader, size, path.subspan(1), &inner, bytes)) return false;
      AppendLengthDelimited(path[0], inner.size(), rest);
      *rest += inner;
      continue;
    }
    AppendVarint(tag, rest);
    if (!CopyPayload(reader, wire_type, rest)) return false;
  }
  return reader.left() == end;
}

// The bytes that come before `size` bytes of the field at `path` when they
// are appended to `encoded` (a message with that field empty): the path's
// messages move to the end of theirs, each length counting the bytes.
std::string HeaderFor(const absl::Cord& encoded,
                      absl::Span<const uint32_t> path, size_t size) {
  CordReader reader(encoded);
  std::string header;  // every field off the path, as encoded
  absl::Cord inner;    // the path's next message
  // `encoded` is protobuf's own encoding of a message: it always splits.
  Split(reader, reader.left(), path.first(1), &header, &inner);
  if (path.size() == 1) {
    AppendLengthDelimited(path[0], size, &header);
    return header;
  }
  const std::string inner_header = HeaderFor(inner, path.subspan(1), size);
  AppendLengthDelimited(path[0], inner_header.size() + size, &header);
  header += inner_header;
  return header;
}

}  // namespace

grpc::ByteBuffer Serialize(const google::protobuf::MessageLite& message) {
  const std::string encoded = message.SerializeAsString();
  grpc::Slice slice(encoded.data(), encoded.size());
  return grpc::ByteBuffer(&slice, 1);
}

absl::Cord CordOf(const grpc::ByteBuffer& buffer) {
  absl::Cord wire;
  std::vector<grpc::Slice> slices;
  if (!buffer.Valid() || !buffer.Dump(&slices).ok()) return wire;
  for (grpc::Slice& slice : slices) {
    // On the heap: a small slice keeps its bytes inside the object itself.
    auto* held = new grpc::Slice(std::move(slice));
    const absl::string_view data(reinterpret_cast<const char*>(held->begin()),
                                 held->size());
    wire.Append(absl::MakeCordFromExternal(data, [held] { delete held; }));
  }
  return wire;
}

bool ParseApart(const absl::Cord& wire, absl::Span<const uint32_t> path,
                google::protobuf::MessageLite* message, absl::Cord* bytes) {
  CordReader reader(wire);
  std::string rest;
  bytes->Clear();
  return Split(reader, reader.left(), path, &rest, bytes) &&
         message->ParseFromString(rest);
}

grpc::ByteBuffer SerializeApart(const google::protobuf::MessageLite& message,
                                absl::Span<const uint32_t> path,
                                std::string bytes) {
  // As protobuf encodes an empty field: not at all.
  if (bytes.empty()) return Serialize(message);
  const std::string header =
      HeaderFor(absl::Cord(message.SerializeAsString()), path, bytes.size());
  std::vector<grpc::Slice> slices;
  slices.emplace_back(header.data(), header.size());  // small: copied
  auto* owned = new std::string(std::move(bytes));
  slices.emplace_back(
      owned->data(), owned->size(),
      [](void* string) { delete static_cast<std::string*>(string); }, owned);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

RawUnaryCaller::RawUnaryCaller(std::shared_ptr<grpc::Channel> channel)
    : stub_(std::move(channel)) {}

RawUnaryCaller::~RawUnaryCaller() {
  queue_.Shutdown();
  void* tag;
  bool ok;
  while (queue_.Next(&tag, &ok)) {
  }
}

grpc::Status RawUnaryCaller::Call(grpc::ClientContext* context,
                                  const std::string& method,
                                  const grpc::ByteBuffer& request,
                                  grpc::ByteBuffer* response) {
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub_.PrepareUnaryCall(context, method, request, &queue_);
  call->StartCall();
  grpc::Status status;
  call->Finish(response, &status, this);
  void* tag = nullptr;
  bool ok = false;
  // Our only call: its end is the next event (a deadline ends it too).
  if (!queue_.Next(&tag, &ok) || tag != this) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        "the call's completion queue shut down");
  }
  return status;
}

RawStreamCaller::RawStreamCaller(std::shared_ptr<grpc::Channel> channel,
                                 std::string method)
    : stub_(std::move(channel)), method_(std::move(method)) {}

RawStreamCaller::~RawStreamCaller() {
  if (call_ != nullptr) Close(grpc::Status::OK);
  queue_.Shutdown();
  void* tag;
  bool ok;
  while (queue_.Next(&tag, &ok)) {
  }
}

bool RawStreamCaller::Await(Tag tag, absl::Time deadline) {
  const uint32_t bit = 1u << tag;
  while ((done_ & bit) == 0) {
    void* got = nullptr;
    bool ok = false;
    if (queue_.AsyncNext(&got, &ok, absl::ToChronoTime(deadline)) !=
        grpc::CompletionQueue::GOT_EVENT) {
      return false;
    }
    --pending_;
    const uint32_t got_bit = 1u << reinterpret_cast<intptr_t>(got);
    done_ |= got_bit;
    if (ok) done_ok_ |= got_bit;
  }
  done_ &= ~bit;
  const bool ok = (done_ok_ & bit) != 0;
  done_ok_ &= ~bit;
  return ok;
}

grpc::Status RawStreamCaller::Close(grpc::Status why) {
  context_->TryCancel();
  // Every pending op completes once cancelled.
  while (pending_ > 0) {
    void* tag;
    bool ok;
    if (!queue_.Next(&tag, &ok)) break;
    --pending_;
  }
  grpc::Status status;
  call_->Finish(&status, reinterpret_cast<void*>(kFinish));
  ++pending_;
  done_ = done_ok_ = 0;
  Await(kFinish, absl::InfiniteFuture());
  // The context lives on until the next stream opens: others may still
  // hold it to cancel (a no-op now).
  call_.reset();
  if (!why.ok()) return why;
  // The server ended the stream: its status says why, unless it had none.
  return status.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                    "the server ended the stream")
                     : status;
}

void RawStreamCaller::Send(const grpc::ByteBuffer& request,
                           absl::Time deadline) {
  if (call_ == nullptr) {
    context_ = std::make_unique<grpc::ClientContext>();
    call_ = stub_.PrepareCall(context_.get(), method_, &queue_);
    call_->StartCall(reinterpret_cast<void*>(kStart));
    ++pending_;
    // The start's batch (the headers) must end before the first write.
    if (!Await(kStart, deadline)) {
      start_failed_ = true;
      return;
    }
  }
  call_->Write(request, reinterpret_cast<void*>(kWrite));
  call_->Read(&answer_, reinterpret_cast<void*>(kRead));
  pending_ += 2;
}

grpc::Status RawStreamCaller::Receive(absl::Time deadline,
                                      grpc::ByteBuffer* answer) {
  if (call_ == nullptr) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "Receive without Send");
  }
  const bool started = !start_failed_;
  start_failed_ = false;
  const bool wrote = started && Await(kWrite, deadline);
  const bool read = wrote && Await(kRead, deadline);
  if (!read) {
    const bool late = absl::Now() >= deadline;
    return Close(late ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                     "no answer on the stream in time")
                      : grpc::Status::OK);
  }
  answer->Swap(&answer_);
  return grpc::Status::OK;
}

}  // namespace ps::rpc
