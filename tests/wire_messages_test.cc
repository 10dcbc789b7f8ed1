#include "server/wire_messages.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/float_bytes.h"
#include "common/gradient_codec.h"
#include "common/rpc/convert.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "gtest/gtest.h"

namespace ps::server {
namespace {

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return bytes;
}

PullResult SomePull(size_t floats) {
  PullResult pulled;
  pulled.version = 300;  // varints of more than one byte
  pulled.samples_applied = 1 << 20;
  pulled.keys = {1000, 1000 + floats};
  for (size_t i = 0; i < floats * sizeof(float); ++i) {
    pulled.values.push_back(static_cast<char>(i * 7));
  }
  return pulled;
}

ps::v1::PullResponse Typed(const PullResult& pulled) {
  ps::v1::PullResponse typed;
  typed.set_version(pulled.version);
  typed.set_samples_applied(pulled.samples_applied);
  typed.set_key_begin(pulled.keys.begin);
  typed.set_key_end(pulled.keys.end);
  typed.set_values(pulled.values);
  typed.set_mode(rpc::ToProto(pulled.mode));
  return typed;
}

TEST(WireMessages, APullAnswerIsTheTypedMessagesEncoding) {
  for (size_t floats : {0, 1, 40, 100'000}) {
    const PullResult pulled = SomePull(floats);
    const std::string raw = Flatten(EncodePullResponse(pulled));
    ps::v1::PullResponse parsed;
    ASSERT_TRUE(parsed.ParseFromString(raw)) << floats;
    // Equal once parsed; the bytes differ only in field order.
    EXPECT_EQ(parsed.SerializeAsString(), Typed(pulled).SerializeAsString())
        << floats;
    EXPECT_EQ(raw.size(), Typed(pulled).ByteSizeLong()) << floats;
  }
}

TEST(WireMessages, APushPullAnswerIsTheTypedMessagesEncoding) {
  ps::v1::PushResponse pushed;
  pushed.set_outcome(ps::v1::PushResponse::STALE);
  pushed.set_version(123456);
  for (size_t floats : {0, 3, 100'000}) {
    const PullResult pulled = SomePull(floats);
    ps::v1::PushPullResponse typed;
    *typed.mutable_push() = pushed;
    *typed.mutable_pull() = Typed(pulled);
    ps::v1::PushPullResponse parsed;
    ASSERT_TRUE(parsed.ParseFromString(
        Flatten(EncodePushPullResponse(pushed, pulled))));
    EXPECT_EQ(parsed.SerializeAsString(), typed.SerializeAsString()) << floats;
  }
}

TEST(WireMessages, ARequestParsesAndItsBytesAreReleased) {
  ps::v1::PullRequest sent;
  sent.set_worker_id(3);
  sent.set_min_version(77);
  grpc::ByteBuffer buffer;
  bool own = false;
  ASSERT_TRUE(grpc::SerializationTraits<ps::v1::PullRequest>::Serialize(
                  sent, &buffer, &own)
                  .ok());
  ps::v1::PullRequest received;
  ASSERT_TRUE(ParseRequest(&buffer, &received).ok());
  EXPECT_EQ(received.SerializeAsString(), sent.SerializeAsString());
  EXPECT_EQ(buffer.Length(), 0u);
}

TEST(WireMessages, GarbageIsAnInvalidArgumentThatNamesTheMessage) {
  const std::string garbage = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";
  grpc::Slice slice(garbage.data(), garbage.size());
  grpc::ByteBuffer buffer(&slice, 1);
  ps::v1::PushPullRequest request;
  absl::Status status = ParseRequest(&buffer, &request);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("ps.v1.PushPullRequest"), std::string::npos)
      << status;
}

// The message's bytes cut into slices at awkward places: inside varints,
// tags and floats, one byte at a time at the start.
grpc::ByteBuffer CutIntoSlices(const std::string& bytes) {
  std::vector<grpc::Slice> slices;
  size_t at = 0;
  for (size_t size = 1; at < bytes.size(); size = size * 3 + 1) {
    const size_t n = std::min(size, bytes.size() - at);
    slices.emplace_back(bytes.data() + at, n);
    at += n;
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

std::vector<float> FloatsOf(const absl::Cord& bytes) {
  std::vector<float> floats(bytes.size() / sizeof(float));
  absl::Cord::CharIterator from = bytes.char_begin();
  common::ReadFloats(from, absl::MakeSpan(floats));
  return floats;
}

ps::v1::PushRequest SomePush(size_t floats) {
  ps::v1::PushRequest push;
  push.set_worker_id(3);
  push.set_incarnation(1ull << 40);
  push.set_seq(12345);
  push.set_step(678);
  push.set_base_version(9);
  push.set_batch_size(64);
  push.set_key_begin(100);
  push.set_key_end(100 + floats);
  std::vector<float> gradient(floats);
  for (size_t i = 0; i < floats; ++i) gradient[i] = 0.25f * i - 7;
  common::FloatsToBytes(gradient, push.mutable_gradient());
  return push;
}

TEST(WireMessages, APushPullIsSplitIntoItsFieldsAndTheGradientInPlace) {
  ps::v1::PushPullRequest sent;
  *sent.mutable_push() = SomePush(10'000);
  sent.mutable_pull()->set_min_version(41);
  sent.mutable_pull()->set_clock(7);
  sent.mutable_pull()->set_key_end(10'100);
  grpc::ByteBuffer buffer = CutIntoSlices(sent.SerializeAsString());

  ReceivedPush push;
  ps::v1::PullRequest pull;
  ASSERT_TRUE(ParsePushPullRequest(&buffer, &push, &pull).ok());
  EXPECT_EQ(buffer.Length(), 0u);  // the buffer let go; the cord holds on
  EXPECT_EQ(pull.SerializeAsString(), sent.pull().SerializeAsString());
  ps::v1::PushRequest fields = sent.push();
  fields.clear_gradient();
  EXPECT_EQ(push.fields.SerializeAsString(), fields.SerializeAsString());
  EXPECT_EQ(std::string(push.gradient), sent.push().gradient());
  std::vector<float> expected(10'000);
  ASSERT_TRUE(common::BytesToFloats(sent.push().gradient(),
                                    absl::MakeSpan(expected), "expected")
                  .ok());
  EXPECT_EQ(FloatsOf(push.gradient), expected);
}

TEST(WireMessages, APushAndAnInitAreSplitTheSameWay) {
  const ps::v1::PushRequest sent = SomePush(777);
  grpc::ByteBuffer buffer = CutIntoSlices(sent.SerializeAsString());
  ReceivedPush push;
  ASSERT_TRUE(ParsePushRequest(&buffer, &push).ok());
  EXPECT_EQ(std::string(push.gradient), sent.gradient());
  EXPECT_EQ(push.fields.seq(), 12345u);
  EXPECT_EQ(push.fields.incarnation(), 1ull << 40);

  ps::v1::InitRequest init;
  init.set_num_shards(2);
  init.set_shard_index(1);
  init.add_tensors()->set_name("w");
  init.mutable_tensors(0)->add_shape(777);
  init.set_values(sent.gradient());
  grpc::ByteBuffer init_buffer = CutIntoSlices(init.SerializeAsString());
  ps::v1::InitRequest fields;
  absl::Cord values;
  ASSERT_TRUE(ParseInitRequest(&init_buffer, &fields, &values).ok());
  EXPECT_EQ(std::string(values), init.values());
  init.clear_values();
  EXPECT_EQ(fields.SerializeAsString(), init.SerializeAsString());
}

TEST(WireMessages, ATruncatedOrOverlongPushIsAnInvalidArgument) {
  ps::v1::PushPullRequest sent;
  *sent.mutable_push() = SomePush(100);
  const std::string whole = sent.SerializeAsString();
  for (size_t cut :
       {size_t{1}, size_t{5}, whole.size() / 2, whole.size() - 1}) {
    grpc::ByteBuffer buffer = CutIntoSlices(whole.substr(0, cut));
    ReceivedPush push;
    ps::v1::PullRequest pull;
    absl::Status status = ParsePushPullRequest(&buffer, &push, &pull);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << cut;
    EXPECT_NE(status.message().find("ps.v1.PushPullRequest"), std::string::npos)
        << status;
  }
  // A gradient whose length runs past the end of the message.
  std::string overlong = "\x4a\xff\xff\x03" + std::string(8, '\0');
  grpc::ByteBuffer buffer = CutIntoSlices(overlong);
  ReceivedPush push;
  EXPECT_EQ(ParsePushRequest(&buffer, &push).code(),
            absl::StatusCode::kInvalidArgument);
}

// Found by tests/fuzz/wire_format_fuzzer: a tag protobuf reads otherwise
// than we did. Protobuf reads at most 5 bytes of a tag and drops the bits
// past 32; we took the whole varint, so a gradient behind such a tag went
// into the fields (where the server never looks) instead of being refused.
TEST(WireMessages, ATagProtobufReadsOtherwiseIsAnInvalidArgument) {
  // Field 9 (gradient), length-delimited, plus 2^32: 5 bytes.
  const std::string hidden_gradient =
      std::string("\xca\x80\x80\x80\x10\x08", 6) + std::string(8, '\x01');
  grpc::ByteBuffer push_buffer = CutIntoSlices(hidden_gradient);
  ReceivedPush push;
  EXPECT_EQ(ParsePushRequest(&push_buffer, &push).code(),
            absl::StatusCode::kInvalidArgument);
  // A 6-byte tag (zero-padded), which protobuf refuses.
  const std::string six_byte_tag(
      "\x08\x00\x10\x00\x18\x01\xf0\x7e\x7e\xa8\xed\xb6\xbf\xff\x00\x00", 16);
  grpc::ByteBuffer init_buffer = CutIntoSlices(six_byte_tag);
  ps::v1::InitRequest fields;
  absl::Cord values;
  EXPECT_EQ(ParseInitRequest(&init_buffer, &fields, &values).code(),
            absl::StatusCode::kInvalidArgument);
}

// An fp16 part of 10 ones, then a top-k part of 6 keys with 2 at offset 3.
google::protobuf::RepeatedPtrField<ps::v1::GradientPart> TwoParts() {
  google::protobuf::RepeatedPtrField<ps::v1::GradientPart> parts;
  ps::v1::GradientPart* dense = parts.Add();
  dense->set_encoding(ps::v1::ENCODING_FP16);
  dense->set_num_keys(10);
  common::EncodeDense(common::CompressionKind::kFp16,
                      std::vector<float>(10, 1.0f), dense->mutable_values());
  ps::v1::GradientPart* topk = parts.Add();
  topk->set_encoding(ps::v1::ENCODING_TOPK);
  topk->set_num_keys(6);
  const uint32_t index = 3;
  topk->set_indices(std::string(reinterpret_cast<const char*>(&index), 4));
  common::FloatsToBytes(std::vector<float>{2.0f}, topk->mutable_values());
  return parts;
}

TEST(WireMessages, ACompressedGradientIsDecodedIntoAReusedBufferWhole) {
  std::vector<float> expected(16, 0.0f);
  std::fill(expected.begin(), expected.begin() + 10, 1.0f);
  expected[13] = 2.0f;
  GradientBufferPool buffers;
  {
    absl::StatusOr<absl::Cord> first =
        DecodeCompressedGradient(TwoParts(), {0, 16}, buffers);
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(FloatsOf(*first), expected);
    EXPECT_EQ(buffers.idle(), 0u);
  }
  EXPECT_EQ(buffers.idle(), 1u);  // back when the Cord went
  // Left full of NaN by its last user: the next decode overwrites it all,
  // the zeros top-k does not send included.
  {
    std::unique_ptr<std::vector<float>> dirty = buffers.Take(16);
    std::fill(dirty->begin(), dirty->end(), std::nanf(""));
    buffers.Wrap(std::move(dirty));
  }
  ASSERT_EQ(buffers.idle(), 1u);
  absl::StatusOr<absl::Cord> second =
      DecodeCompressedGradient(TwoParts(), {0, 16}, buffers);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(FloatsOf(*second), expected);
  EXPECT_EQ(buffers.idle(), 0u);
}

TEST(WireMessages, ADecodedGradientMayOutliveItsPool) {
  absl::Cord kept;
  {
    GradientBufferPool buffers;
    absl::StatusOr<absl::Cord> decoded =
        DecodeCompressedGradient(TwoParts(), {0, 16}, buffers);
    ASSERT_TRUE(decoded.ok());
    kept = *std::move(decoded);
  }
  EXPECT_EQ(FloatsOf(kept)[13], 2.0f);  // and ASan sees no use after free
}

TEST(WireMessages, APoolKeepsNoMoreIdleBuffersThanItsBound) {
  GradientBufferPool buffers(/*max_kept=*/2);
  {
    std::vector<absl::Cord> in_use;
    for (int i = 0; i < 5; ++i) in_use.push_back(buffers.Wrap(buffers.Take(8)));
  }
  EXPECT_EQ(buffers.idle(), 2u);
}

}  // namespace
}  // namespace ps::server
