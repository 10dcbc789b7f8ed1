#ifndef PS_COMMON_KEY_RANGE_H_
#define PS_COMMON_KEY_RANGE_H_

#include <cstdint>
#include <string>

namespace ps::common {

// A half-open range [begin, end) of keys (positions in the flat parameter
// vector) or of examples.
struct KeyRange {
  uint64_t begin = 0;
  uint64_t end = 0;

  uint64_t size() const { return end - begin; }
  bool empty() const { return begin == end; }
  bool Contains(const KeyRange& other) const {
    return begin <= other.begin && other.end <= end;
  }
  std::string ToString() const;
  friend bool operator==(const KeyRange& a, const KeyRange& b) {
    return a.begin == b.begin && a.end == b.end;
  }
  friend bool operator!=(const KeyRange& a, const KeyRange& b) {
    return !(a == b);
  }
};

// Part `index` of `num_parts` contiguous, balanced parts of [0, total): sizes
// differ by at most one, the larger parts first. Server shards and worker data
// shards both come from here, so every process agrees on them.
KeyRange BalancedPart(uint64_t total, uint32_t num_parts, uint32_t index);

// The server shard that owns the row of a sparse table with feature id `id`:
// SplitMix64(id) mod num_shards. Fixed by the checkpoint format (never
// absl::Hash, which changes between processes); servers and workers both
// call it, so they agree on every row's home.
uint32_t ShardOfId(uint64_t id, uint32_t num_shards);

}  // namespace ps::common

#endif  // PS_COMMON_KEY_RANGE_H_
