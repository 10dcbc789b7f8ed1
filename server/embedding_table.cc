#include "server/embedding_table.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "common/splitmix64.h"

namespace ps::server {
namespace {

constexpr double kPi = 3.14159265358979323846;
// Rows of the count-min sketch, each hashed with its own salt.
constexpr size_t kSketchDepth = 4;
constexpr uint64_t kSketchSalts[kSketchDepth] = {
    0x736b657463683031, 0x736b657463683032, 0x736b657463683033,
    0x736b657463683034};
// About this many bytes of rows are allocated at a time.
constexpr size_t kBlockBytes = 256 << 10;
// The first allocation of the slot list, in slots.
constexpr size_t kFirstSlots = 64;

// Ids a loop over many asks the index to fetch ahead of the one it is at.
constexpr size_t kLookAhead = 8;

// Copies a row: a few floats (2 for logreg with adagrad), where a call to
// memmove, which std::copy_n becomes, cost more than the copy itself.
void CopyRow(const float* from, size_t n, float* to) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) std::memcpy(to + i, from + i, 4 * sizeof(float));
  for (; i < n; ++i) to[i] = from[i];
}

}  // namespace

EmbeddingTable::EmbeddingTable(const EmbeddingTableOptions& options,
                               size_t capacity_rows)
    : options_(options),
      state_count_(common::OptimizerStateNames(options.optimizer.kind).size()),
      stride_(size_t{options.dim} * (1 + state_count_)),
      table_key_(common::SplitMix64(common::SplitMix64(options.model_seed) +
                                    options.table_index)),
      capacity_rows_(capacity_rows),
      rows_per_block_(RowsPerBlock(capacity_rows, stride_)),
      index_(&allocated_bytes_, capacity_rows),
      slots_(CountingAllocator<Slot>(&allocated_bytes_)),
      blocks_(CountingAllocator<Floats>(&allocated_bytes_)),
      sketch_(CountingAllocator<uint32_t>(&allocated_bytes_)) {
  // The block list is small (a pointer and two sizes per 256 KiB of rows):
  // reserved whole, it never reallocates.
  blocks_.reserve((capacity_rows + rows_per_block_ - 1) / rows_per_block_);
}

size_t EmbeddingTable::RowsPerBlock(size_t rows, size_t stride) {
  return std::clamp<size_t>(kBlockBytes / (stride * sizeof(float)), 1,
                            std::max<size_t>(rows, 1));
}

uint64_t EmbeddingTable::BytesWhenFull(size_t rows, size_t stride) {
  const size_t blocks =
      (rows + RowsPerBlock(rows, stride) - 1) / RowsPerBlock(rows, stride);
  return RowIndex::BytesFor(rows) + uint64_t{rows} * sizeof(Slot) +
         uint64_t{blocks} * sizeof(Floats) +
         uint64_t{rows} * stride * sizeof(float);
}

absl::StatusOr<std::unique_ptr<EmbeddingTable>> EmbeddingTable::Create(
    const EmbeddingTableOptions& options) {
  if (options.dim == 0) {
    return absl::InvalidArgumentError("a table's dim must be > 0");
  }
  if (absl::Status s = common::ValidateOptimizerOptions(options.optimizer);
      !s.ok()) {
    return s;
  }
  if (options.initializer.kind != RowInitializer::Kind::kZeros &&
      (!std::isfinite(options.initializer.scale) ||
       options.initializer.scale <= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("a row initializer's scale must be a finite number > 0, "
                     "got ",
                     options.initializer.scale));
  }
  if (options.min_count_to_create == 0) {
    return absl::InvalidArgumentError("min_count_to_create must be >= 1");
  }
  size_t sketch_width = 0;
  if (options.min_count_to_create > 1) {
    sketch_width =
        options.count_sketch_bytes / (kSketchDepth * sizeof(uint32_t));
    if (sketch_width == 0 ||
        options.count_sketch_bytes >= options.memory_limit) {
      return absl::InvalidArgumentError(absl::StrCat(
          "count_sketch_bytes must be at least ",
          kSketchDepth * sizeof(uint32_t), " and below memory_limit (",
          options.memory_limit, "), got ", options.count_sketch_bytes));
    }
  }
  // The most rows whose index, slots and values fit beside the sketch
  // when the table is full (the index and slots grow to exactly that):
  // start from a bound that ignores the index, shrink until all fit.
  const size_t stride =
      size_t{options.dim} *
      (1 + common::OptimizerStateNames(options.optimizer.kind).size());
  const uint64_t row_bytes = stride * sizeof(float);
  const uint64_t sketch_bytes =
      uint64_t{sketch_width} * kSketchDepth * sizeof(uint32_t);
  size_t rows =
      sketch_bytes < options.memory_limit
          ? (options.memory_limit - sketch_bytes) / (row_bytes + sizeof(Slot))
          : 0;
  rows = std::min<size_t>(rows, kNoSlot - 1);  // slots are 32-bit
  while (rows > 0) {
    const uint64_t total = sketch_bytes + BytesWhenFull(rows, stride);
    if (total <= options.memory_limit) break;
    const uint64_t per_row = BytesWhenFull(rows, stride) / rows + 1;
    const uint64_t excess = total - options.memory_limit;
    rows -= std::min<size_t>(
        rows, std::max<uint64_t>(1, (excess + per_row - 1) / per_row));
  }
  if (rows == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a table memory limit of ", options.memory_limit,
        " bytes holds no row: a row of dim ", options.dim, " with ",
        common::OptimizerName(options.optimizer.kind), "'s state takes ",
        row_bytes, " bytes, plus its index entry and recency link",
        sketch_bytes > 0 ? absl::StrCat(", beside the ", sketch_bytes,
                                        " bytes of sighting counts")
                         : ""));
  }
  std::unique_ptr<EmbeddingTable> table(new EmbeddingTable(options, rows));
  if (sketch_width > 0) {
    table->sketch_width_ = sketch_width;
    table->sketch_.assign(sketch_width * kSketchDepth, 0);
  }
  return table;
}

void EmbeddingTable::InitialRow(uint64_t id, absl::Span<float> out) const {
  common::SplitMix64Stream random(common::SplitMix64(table_key_ ^ id));
  const double scale = options_.initializer.scale;
  switch (options_.initializer.kind) {
    case RowInitializer::Kind::kZeros:
      std::fill(out.begin(), out.end(), 0.0f);
      return;
    case RowInitializer::Kind::kUniform:
      for (float& v : out) {
        v = static_cast<float>(scale * (2 * random.NextUnit() - 1));
      }
      return;
    case RowInitializer::Kind::kNormal:
      // Box–Muller: two uniforms give two independent normals.
      for (size_t i = 0; i < out.size(); i += 2) {
        const double radius =
            scale * std::sqrt(-2 * std::log(1 - random.NextUnit()));
        const double angle = 2 * kPi * random.NextUnit();
        out[i] = static_cast<float>(radius * std::cos(angle));
        if (i + 1 < out.size()) {
          out[i + 1] = static_cast<float>(radius * std::sin(angle));
        }
      }
      return;
  }
}

void EmbeddingTable::Lookup(absl::Span<const uint64_t> ids,
                            absl::Span<float> out) const {
  const size_t dim = options_.dim;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i + kLookAhead < ids.size()) index_.Prefetch(ids[i + kLookAhead]);
    absl::Span<float> row = out.subspan(i * dim, dim);
    const uint32_t slot = index_.Find(ids[i]);
    if (slot == RowIndex::kNotFound) {
      InitialRow(ids[i], row);
    } else {
      CopyRow(SlotValues(slot), dim, row.data());
    }
  }
}

std::vector<uint64_t> EmbeddingTable::IdsByRecency() const {
  std::vector<uint64_t> ids;
  ids.reserve(index_.size());
  for (uint32_t slot = newest_; slot != kNoSlot; slot = slots_[slot].older) {
    ids.push_back(slots_[slot].id);
  }
  return ids;
}

absl::Span<const float> EmbeddingTable::Row(uint64_t id) const {
  return RowState(id, 0);
}

absl::Span<const float> EmbeddingTable::RowState(uint64_t id,
                                                 size_t which) const {
  const uint32_t slot = index_.Find(id);
  if (slot == RowIndex::kNotFound || which > state_count_) return {};
  return absl::MakeConstSpan(SlotValues(slot) + which * options_.dim,
                             options_.dim);
}

absl::Span<const float> EmbeddingTable::RowWithState(uint64_t id) const {
  const uint32_t slot = index_.Find(id);
  if (slot == RowIndex::kNotFound) return {};
  return absl::MakeConstSpan(SlotValues(slot), stride_);
}

std::vector<uint64_t> EmbeddingTable::IdsOldestFirst() const {
  std::vector<uint64_t> ids;
  ids.reserve(index_.size());
  for (uint32_t slot = oldest_; slot != kNoSlot; slot = slots_[slot].newer) {
    ids.push_back(slots_[slot].id);
  }
  return ids;
}

void EmbeddingTable::RestoreRow(uint64_t id, absl::Span<const float> row) {
  uint32_t slot = index_.Find(id);
  if (slot == RowIndex::kNotFound) {
    slot = TakeSlot(id);
  } else {
    Unlink(slot);
    PushNewest(slot);
  }
  std::copy_n(row.begin(), std::min(row.size(), stride_), SlotValues(slot));
}

float* EmbeddingTable::SlotValues(uint32_t slot) {
  return blocks_[slot / rows_per_block_].data() +
         (slot % rows_per_block_) * stride_;
}

const float* EmbeddingTable::SlotValues(uint32_t slot) const {
  return blocks_[slot / rows_per_block_].data() +
         (slot % rows_per_block_) * stride_;
}

void EmbeddingTable::Unlink(uint32_t slot) {
  Slot& s = slots_[slot];
  (s.newer == kNoSlot ? newest_ : slots_[s.newer].older) = s.older;
  (s.older == kNoSlot ? oldest_ : slots_[s.older].newer) = s.newer;
  s.newer = s.older = kNoSlot;
}

void EmbeddingTable::PushNewest(uint32_t slot) {
  slots_[slot].older = newest_;
  (newest_ == kNoSlot ? oldest_ : slots_[newest_].newer) = slot;
  newest_ = slot;
}

uint32_t EmbeddingTable::TakeSlot(uint64_t id) {
  uint32_t slot;
  if (slots_.size() < capacity_rows_) {
    slot = static_cast<uint32_t>(slots_.size());
    if (slots_.size() == slots_.capacity()) {
      // Doubling up to exactly the capacity: a full table's slots take
      // what Create counted, never a doubling's slack.
      slots_.reserve(
          std::min<size_t>(std::max<size_t>(2 * slots_.capacity(), kFirstSlots),
                           capacity_rows_));
    }
    if (slot % rows_per_block_ == 0) {
      const size_t rows = std::min(rows_per_block_, capacity_rows_ - slot);
      blocks_.emplace_back(rows * stride_, 0.0f,
                           CountingAllocator<float>(&allocated_bytes_));
    }
    slots_.push_back(Slot{id});
  } else {
    slot = oldest_;
    Unlink(slot);
    index_.Erase(slots_[slot].id);
    slots_[slot].id = id;
    ++counters_.evicted;
  }
  index_.Insert(id, slot);
  PushNewest(slot);
  ++counters_.created;
  return slot;
}

bool EmbeddingTable::SightedEnough(uint64_t id) {
  if (options_.min_count_to_create <= 1) return true;
  uint32_t least = ~uint32_t{0};
  for (size_t d = 0; d < kSketchDepth; ++d) {
    uint32_t& count =
        sketch_[d * sketch_width_ +
                common::SplitMix64(id ^ kSketchSalts[d]) % sketch_width_];
    if (count != ~uint32_t{0}) ++count;
    least = std::min(least, count);
  }
  return least >= options_.min_count_to_create;
}

absl::Status EmbeddingTable::ApplyGradient(const common::UpdateOptions& update,
                                           uint64_t step,
                                           absl::Span<const uint64_t> ids,
                                           absl::Span<const float> gradient) {
  absl::StatusOr<PreparedUpdate> prepared =
      Prepare(update, step, ids, gradient);
  if (!prepared.ok()) return prepared.status();
  Commit(*prepared);
  return absl::OkStatus();
}

void EmbeddingTable::SumById(absl::Span<const uint64_t> ids,
                             absl::Span<const float> gradient,
                             std::vector<uint64_t>& unique,
                             std::vector<float>& sums) const {
  const size_t dim = options_.dim;
  std::vector<size_t> order(ids.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return ids[a] < ids[b]; });
  for (size_t i : order) {
    const absl::Span<const float> row = gradient.subspan(i * dim, dim);
    if (unique.empty() || unique.back() != ids[i]) {
      unique.push_back(ids[i]);
      sums.insert(sums.end(), row.begin(), row.end());
    } else {
      float* sum = sums.data() + sums.size() - dim;
      for (size_t j = 0; j < dim; ++j) sum[j] += row[j];
    }
  }
}

absl::StatusOr<EmbeddingTable::PreparedUpdate> EmbeddingTable::Prepare(
    const common::UpdateOptions& update, uint64_t step,
    absl::Span<const uint64_t> ids, absl::Span<const float> gradient) const {
  const size_t dim = options_.dim;
  if (gradient.size() != ids.size() * dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a sparse gradient of ", ids.size(), " ids of dim ", dim, " needs ",
        ids.size() * dim, " values, got ", gradient.size()));
  }
  for (size_t i = 0; i < gradient.size(); ++i) {
    if (!std::isfinite(gradient[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("the gradient of id ", ids[i / dim], " holds ",
                       gradient[i], " at position ", i % dim));
    }
  }
  // Each id once, in increasing order, with its rows summed in the order
  // given (SparseTables hands them so already: then there is nothing to
  // sum); then every new row computed on a copy, so that nothing changes
  // unless all of them are finite.
  PreparedUpdate prepared;
  absl::Span<const uint64_t> unique = ids;
  absl::Span<const float> sums = gradient;
  std::vector<float> summed;
  if (!std::is_sorted(ids.begin(), ids.end(), std::less_equal<uint64_t>())) {
    SumById(ids, gradient, prepared.ids, summed);
    unique = prepared.ids;
    sums = summed;
  } else {
    prepared.ids.assign(ids.begin(), ids.end());
  }
  prepared.next.resize(unique.size() * stride_);
  prepared.slots.resize(unique.size());
  absl::InlinedVector<absl::Span<float>, 4> state(state_count_);
  for (size_t u = 0; u < unique.size(); ++u) {
    if (u + kLookAhead < unique.size()) {
      index_.Prefetch(unique[u + kLookAhead]);
    }
    float* values = prepared.next.data() + u * stride_;
    const uint32_t slot = index_.Find(unique[u]);
    prepared.slots[u] = slot == RowIndex::kNotFound ? kNewRow : slot;
    if (slot == RowIndex::kNotFound) {
      std::fill_n(values, stride_, 0.0f);
      InitialRow(unique[u], absl::MakeSpan(values, dim));
    } else {
      CopyRow(SlotValues(slot), stride_, values);
    }
    for (size_t k = 0; k < state_count_; ++k) {
      state[k] = absl::MakeSpan(values + (k + 1) * dim, dim);
    }
    common::ApplyOptimizer(options_.optimizer, update, /*regularize=*/true,
                           step, sums.subspan(u * dim, dim),
                           absl::MakeSpan(values, dim), state);
    for (size_t j = 0; j < stride_; ++j) {
      if (!std::isfinite(values[j])) {
        return absl::InvalidArgumentError(
            absl::StrCat("the gradient of id ", unique[u],
                         " would leave its row or optimizer state not finite"));
      }
    }
  }
  return prepared;
}

void EmbeddingTable::Commit(const PreparedUpdate& prepared) {
  const std::vector<uint64_t>& unique = prepared.ids;
  const std::vector<float>& next = prepared.next;
  // Stored rows first, so that the rows created after them evict rows this
  // gradient did not touch.
  bool any_created = false;
  for (size_t u = 0; u < unique.size(); ++u) {
    const uint32_t slot = prepared.slots[u];
    if (slot == kNewRow) {
      any_created = true;
      continue;
    }
    CopyRow(next.data() + u * stride_, stride_, SlotValues(slot));
    Unlink(slot);
    PushNewest(slot);
  }
  if (!any_created) return;
  for (size_t u = 0; u < unique.size(); ++u) {
    if (prepared.slots[u] != kNewRow) continue;
    if (!SightedEnough(unique[u])) {
      ++counters_.refused;
      continue;
    }
    CopyRow(next.data() + u * stride_, stride_,
            SlotValues(TakeSlot(unique[u])));
  }
}

}  // namespace ps::server
