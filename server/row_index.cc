#include "server/row_index.h"

#include <algorithm>
#include <cassert>
#include <utility>

namespace ps::server {
namespace {

// The first capacity an index takes, in entries.
constexpr size_t kFirstCapacity = 64;

}  // namespace

RowIndex::RowIndex(uint64_t* allocated_bytes, size_t max_entries)
    : allocated_bytes_(allocated_bytes),
      max_capacity_(CapacityFor(max_entries)) {}

RowIndex::~RowIndex() { *allocated_bytes_ -= capacity_ * sizeof(Entry); }

uint64_t RowIndex::BytesFor(size_t entries) {
  return uint64_t{CapacityFor(entries)} * sizeof(Entry);
}

void RowIndex::Insert(uint64_t id, uint32_t slot) {
  assert(slot != kNotFound);
  if (4 * (size_ + 1) > 3 * capacity_) {
    Rebuild(std::min(std::max(2 * capacity_, kFirstCapacity), max_capacity_));
  }
  size_t i = Home(id);
  while (entries_[i].slot != kNotFound) i = Next(i);
  entries_[i] = {id, slot};
  ++size_;
}

void RowIndex::Erase(uint64_t id) {
  size_t hole = Home(id);
  while (entries_[hole].id != id || entries_[hole].slot == kNotFound) {
    assert(entries_[hole].slot != kNotFound);  // `id` is present
    hole = Next(hole);
  }
  // Entries after the hole whose probe passed through it move back into
  // it, so that every entry stays reachable from its home without
  // tombstones (Knuth's algorithm R).
  for (size_t j = Next(hole); entries_[j].slot != kNotFound; j = Next(j)) {
    const size_t home = Home(entries_[j].id);
    const bool reachable_past_hole =
        hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (reachable_past_hole) continue;
    entries_[hole] = entries_[j];
    hole = j;
  }
  entries_[hole].slot = kNotFound;
  --size_;
}

void RowIndex::Rebuild(size_t capacity) {
  std::unique_ptr<Entry[]> old = std::move(entries_);
  const size_t old_capacity = capacity_;
  entries_.reset(new Entry[capacity]);
  *allocated_bytes_ += capacity * sizeof(Entry);
  capacity_ = capacity;
  std::fill_n(entries_.get(), capacity, Entry{0, kNotFound});
  for (size_t k = 0; k < old_capacity; ++k) {
    if (old[k].slot == kNotFound) continue;
    size_t i = Home(old[k].id);
    while (entries_[i].slot != kNotFound) i = Next(i);
    entries_[i] = old[k];
  }
  old.reset();
  *allocated_bytes_ -= old_capacity * sizeof(Entry);
}

}  // namespace ps::server
