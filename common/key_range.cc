#include "common/key_range.h"

#include <cassert>

#include "absl/strings/str_cat.h"
#include "common/splitmix64.h"

namespace ps::common {

std::string KeyRange::ToString() const {
  return absl::StrCat("[", begin, ", ", end, ")");
}

KeyRange BalancedPart(uint64_t total, uint32_t num_parts, uint32_t index) {
  assert(num_parts > 0 && index < num_parts);
  const uint64_t base = total / num_parts;
  const uint64_t extra = total % num_parts;
  const uint64_t begin = index * base + (index < extra ? index : extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

uint32_t ShardOfId(uint64_t id, uint32_t num_shards) {
  assert(num_shards > 0);
  return static_cast<uint32_t>(SplitMix64(id) % num_shards);
}

}  // namespace ps::common
