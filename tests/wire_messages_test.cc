#include "server/wire_messages.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "grpcpp/impl/codegen/proto_utils.h"

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

}  // namespace
}  // namespace ps::server
