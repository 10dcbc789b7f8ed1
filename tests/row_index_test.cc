#include "server/row_index.h"

#include <cstdint>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gtest/gtest.h"

namespace ps::server {
namespace {

TEST(RowIndex, AgreesWithAHashMapThroughInsertsAndErases) {
  // Erases shift entries back into the hole; a wrong shift loses an entry
  // or finds one that is gone. Few distinct ids, so that probe runs collide
  // and wrap around the end of the array.
  constexpr size_t kMaxEntries = 200;
  uint64_t bytes = 0;
  RowIndex index(&bytes, kMaxEntries);
  absl::flat_hash_map<uint64_t, uint32_t> reference;
  std::mt19937_64 random(7);
  for (int op = 0; op < 200000; ++op) {
    const uint64_t id = random() % 400;
    if (reference.contains(id)) {
      ASSERT_EQ(index.Find(id), reference[id]) << "op " << op;
      index.Erase(id);
      reference.erase(id);
    } else if (reference.size() < kMaxEntries) {
      const uint32_t slot = static_cast<uint32_t>(op);
      index.Insert(id, slot);
      reference[id] = slot;
    }
    ASSERT_EQ(index.Find(id),
              reference.contains(id) ? reference[id] : RowIndex::kNotFound)
        << "op " << op;
    ASSERT_EQ(index.size(), reference.size());
    ASSERT_LE(bytes, RowIndex::BytesFor(kMaxEntries));
  }
  for (uint64_t id = 0; id < 400; ++id) {
    ASSERT_EQ(index.Find(id),
              reference.contains(id) ? reference[id] : RowIndex::kNotFound)
        << "id " << id;
  }
}

TEST(RowIndex, GrowsWithItsEntriesAndGivesBackWhatItTook) {
  uint64_t bytes = 0;
  {
    RowIndex index(&bytes, 1'000'000);
    EXPECT_EQ(bytes, 0u);
    for (uint64_t id = 0; id < 1000; ++id) {
      index.Insert(id * 0x100000001, static_cast<uint32_t>(id));
    }
    EXPECT_GT(bytes, RowIndex::BytesFor(999) / 2);
    EXPECT_LE(bytes, 2 * RowIndex::BytesFor(1000));
    for (uint64_t id = 0; id < 1000; ++id) {
      ASSERT_EQ(index.Find(id * 0x100000001), id);
    }
  }
  EXPECT_EQ(bytes, 0u);
}

}  // namespace
}  // namespace ps::server
