#include "server/push_stream.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ps::server {
namespace {

using ::testing::HasSubstr;

absl::Cord Bytes(const std::vector<float>& values, size_t from, size_t n) {
  return absl::Cord(absl::string_view(
      reinterpret_cast<const char*>(values.data() + from), n * sizeof(float)));
}

// The service's pool, as streams take their buffers from it.
GradientBufferPool& Buffers() {
  static auto* pool = new GradientBufferPool();
  return *pool;
}

std::vector<float> Gradient(size_t n) {
  std::vector<float> g(n);
  for (size_t i = 0; i < n; ++i) g[i] = std::sin(0.37f * i) * 1e-3f;
  return g;
}

TEST(PushStream, ChunksInOrderAssembleTheGradientBitForBit) {
  const common::KeyRange keys{100, 110};
  const std::vector<float> g = Gradient(10);
  PushStream stream(keys, "streamed push", Buffers());
  ASSERT_TRUE(stream.Add(0, Bytes(g, 0, 4)).ok());
  ASSERT_TRUE(stream.Add(4, absl::Cord()).ok());  // an empty chunk is harmless
  ASSERT_TRUE(stream.Add(4, Bytes(g, 4, 6)).ok());
  EXPECT_EQ(stream.received(), 10u);
  absl::StatusOr<absl::Cord> whole = stream.Take();
  ASSERT_TRUE(whole.ok()) << whole.status();
  const std::string bytes(*whole);
  ASSERT_EQ(bytes.size(), 40u);
  EXPECT_EQ(std::memcmp(bytes.data(), g.data(), bytes.size()), 0);
}

TEST(PushStream, AGapIsRefusedAndSpoilsTheStream) {
  const std::vector<float> g = Gradient(10);
  PushStream stream({0, 10}, "streamed push", Buffers());
  ASSERT_TRUE(stream.Add(0, Bytes(g, 0, 4)).ok());
  const absl::Status gap = stream.Add(5, Bytes(g, 5, 5));
  EXPECT_EQ(gap.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(gap.message(), HasSubstr("does not start where the previous"));
  // The right chunk afterwards does not mend it: the stream is refused.
  EXPECT_FALSE(stream.Add(4, Bytes(g, 4, 6)).ok());
  EXPECT_FALSE(stream.Take().ok());
}

TEST(PushStream, AnOverlapOrAnOutOfOrderChunkIsRefused) {
  const std::vector<float> g = Gradient(10);
  PushStream overlap({0, 10}, "streamed push", Buffers());
  ASSERT_TRUE(overlap.Add(0, Bytes(g, 0, 6)).ok());
  EXPECT_EQ(overlap.Add(3, Bytes(g, 3, 7)).code(),
            absl::StatusCode::kInvalidArgument);
  PushStream backwards({0, 10}, "streamed push", Buffers());
  EXPECT_EQ(backwards.Add(6, Bytes(g, 6, 4)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PushStream, ValuesPastTheShardOrNotWholeFloatsAreRefused) {
  const std::vector<float> g = Gradient(12);
  PushStream too_long({0, 10}, "streamed push", Buffers());
  ASSERT_TRUE(too_long.Add(0, Bytes(g, 0, 8)).ok());
  const absl::Status past = too_long.Add(8, Bytes(g, 8, 4));
  EXPECT_EQ(past.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(past.message(), HasSubstr("runs past the shard's 10 keys"));
  PushStream ragged({0, 10}, "streamed push", Buffers());
  EXPECT_THAT(ragged.Add(0, absl::Cord("abcdefg")).message(),
              HasSubstr("not a whole number of float32"));
}

// The values are the shard's to judge, once, as in a one-message push
// (ParameterShard::Push names the key): the stream stages them as they are.
TEST(PushStream, NonFiniteValuesAreStagedForTheShardToJudge) {
  std::vector<float> g = Gradient(10);
  g[7] = std::numeric_limits<float>::quiet_NaN();
  PushStream stream({50, 60}, "streamed push", Buffers());
  ASSERT_TRUE(stream.Add(0, Bytes(g, 0, 5)).ok());
  ASSERT_TRUE(stream.Add(5, Bytes(g, 5, 5)).ok());
  absl::StatusOr<absl::Cord> whole = stream.Take();
  ASSERT_TRUE(whole.ok()) << whole.status();
  const std::string bytes(*whole);
  ASSERT_EQ(bytes.size(), 40u);
  EXPECT_EQ(std::memcmp(bytes.data(), g.data(), bytes.size()), 0);
}

TEST(PushStream, TheCallIsNamedInItsErrors) {
  PushStream stream({0, 10}, "streamed Init", Buffers());
  EXPECT_THAT(stream.Add(3, absl::Cord()).message(),
              HasSubstr("chunk 1 of the streamed Init"));
}

TEST(PushStream, AStreamThatEndsShortIsNotTaken) {
  const std::vector<float> g = Gradient(10);
  PushStream stream({0, 10}, "streamed push", Buffers());
  ASSERT_TRUE(stream.Add(0, Bytes(g, 0, 9)).ok());
  const absl::StatusOr<absl::Cord> whole = stream.Take();
  EXPECT_EQ(whole.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(whole.status().message(), HasSubstr("ended after 9 of"));
}

}  // namespace
}  // namespace ps::server
