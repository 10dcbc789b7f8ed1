#include "common/key_range.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace ps::common {
namespace {

TEST(BalancedPart, PartsAreContiguousCoverEverythingAndDifferByAtMostOne) {
  for (uint64_t total : {0ull, 1ull, 7ull, 10ull, 7850ull, 101770ull}) {
    for (uint32_t parts = 1; parts <= 7; ++parts) {
      uint64_t expected_begin = 0;
      uint64_t smallest = UINT64_MAX, largest = 0;
      for (uint32_t i = 0; i < parts; ++i) {
        const KeyRange range = BalancedPart(total, parts, i);
        EXPECT_EQ(range.begin, expected_begin) << total << "/" << parts;
        expected_begin = range.end;
        smallest = std::min(smallest, range.size());
        largest = std::max(largest, range.size());
      }
      EXPECT_EQ(expected_begin, total);
      EXPECT_LE(largest - smallest, 1u);
    }
  }
}

TEST(BalancedPart, LargerPartsComeFirst) {
  EXPECT_EQ(BalancedPart(10, 3, 0), (KeyRange{0, 4}));
  EXPECT_EQ(BalancedPart(10, 3, 1), (KeyRange{4, 7}));
  EXPECT_EQ(BalancedPart(10, 3, 2), (KeyRange{7, 10}));
}

TEST(KeyRange, ContainsAndToString) {
  const KeyRange range{10, 20};
  EXPECT_TRUE(range.Contains({10, 20}));
  EXPECT_TRUE(range.Contains({12, 15}));
  EXPECT_FALSE(range.Contains({9, 15}));
  EXPECT_FALSE(range.Contains({15, 21}));
  EXPECT_EQ(range.ToString(), "[10, 20)");
}

TEST(ShardOfId, IsSplitMix64ModuloTheShardCount) {
  // Fixed by the file format: SplitMix64(0) == 0xe220a8397b1dcdaf.
  EXPECT_EQ(ShardOfId(0, 3), 0xe220a8397b1dcdafu % 3);
  EXPECT_EQ(ShardOfId(0, 7), 0xe220a8397b1dcdafu % 7);
  EXPECT_EQ(ShardOfId(12345, 1), 0u);
}

TEST(ShardOfId, SpreadsConsecutiveIdsEvenly) {
  // Dense-looking ids (0, 1, 2, …) must not all land on one shard.
  constexpr uint32_t kShards = 5;
  constexpr uint64_t kIds = 100000;
  uint64_t count[kShards] = {};
  for (uint64_t id = 0; id < kIds; ++id) ++count[ShardOfId(id, kShards)];
  for (uint64_t c : count) EXPECT_NEAR(c, kIds / kShards, kIds / kShards / 20);
}

}  // namespace
}  // namespace ps::common
