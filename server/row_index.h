#ifndef PS_SERVER_ROW_INDEX_H_
#define PS_SERVER_ROW_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "common/splitmix64.h"

namespace ps::server {

// An embedding table's id → slot map: open addressing with linear probing
// over (id, slot) pairs, an erase shifting the entries after it back (no
// tombstones, so a table that evicts forever never rehashes in place).
// Written for the table's hot path rather than taken from absl: one probe
// usually touches one cache line, and the table's bytes are known ahead
// (BytesFor), so the table can grow it with its rows instead of reserving
// its memory limit's worth up front.
//
// The capacity (entries) is any size, not a power of two: it grows by
// doubling up to a ceiling, which it then holds exactly. An index is at
// most 3/4 full, where a probe takes about 2.5 entries on average.
class RowIndex {
 public:
  static constexpr uint32_t kNotFound = ~uint32_t{0};

  // Adds the bytes the index allocates to *allocated_bytes (and takes back
  // those it frees). `max_entries` bounds its capacity: at most
  // CapacityFor(max_entries) entries, so BytesFor(max_entries) bytes.
  RowIndex(uint64_t* allocated_bytes, size_t max_entries);
  ~RowIndex();
  RowIndex(const RowIndex&) = delete;
  RowIndex& operator=(const RowIndex&) = delete;

  // The most bytes an index of at most `entries` entries holds.
  static uint64_t BytesFor(size_t entries);

  size_t size() const { return size_; }
  // `id`'s slot, or kNotFound.
  uint32_t Find(uint64_t id) const {
    if (size_ == 0) return kNotFound;
    for (size_t i = Home(id);; i = Next(i)) {
      const Entry& entry = entries_[i];
      if (entry.slot == kNotFound) return kNotFound;
      if (entry.id == id) return entry.slot;
    }
  }
  // Starts fetching the entry a Find(id) reads first into the cache: a
  // caller looking up many ids asks a few ids ahead, so that the misses on
  // a large index overlap.
  void Prefetch(uint64_t id) const {
    if (capacity_ > 0) __builtin_prefetch(&entries_[Home(id)]);
  }
  // Adds `id` (not present), growing the index if it would be over 3/4
  // full; at most max_entries are ever present.
  void Insert(uint64_t id, uint32_t slot);
  // Removes `id` (present).
  void Erase(uint64_t id);

 private:
  struct Entry {
    uint64_t id;
    uint32_t slot;  // kNotFound: empty
  };
  static size_t CapacityFor(size_t entries) {
    return entries + entries / 3 + 1;
  }
  // A mix of the id independent of SplitMix64(id) mod S, the shard of the
  // id: every id on one shard shares that residue.
  size_t Home(uint64_t id) const {
    const uint64_t hash = common::SplitMix64(id ^ 0x726f77696e646578);
    return static_cast<size_t>(
        (static_cast<unsigned __int128>(hash) * capacity_) >> 64);
  }
  size_t Next(size_t i) const { return i + 1 == capacity_ ? 0 : i + 1; }
  void Rebuild(size_t capacity);

  uint64_t* const allocated_bytes_;
  const size_t max_capacity_;
  std::unique_ptr<Entry[]> entries_;
  size_t capacity_ = 0;
  size_t size_ = 0;
};

}  // namespace ps::server

#endif  // PS_SERVER_ROW_INDEX_H_
