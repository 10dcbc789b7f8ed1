#include "common/theta_file.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/cli.h"
#include "common/float_bytes.h"
#include "zlib.h"

namespace ps::common {
namespace {

// Format 2 appended the rule settings to format 1; format 3 writes the mode
// and the workers' states as enum codes instead of a name and a
// live/finished byte; format 4 appends the optimizers' settings (each
// tensor's optimizer and schedule, the server's schedule); format 5 appends
// the sparse tables and the open round's sparse rows; format 6 appends
// shard 0's data partition table. Older files stay readable. Format 3's
// finished byte is a set of flags since the idle flag joined it (bit 1),
// and then the late flag (bit 2): files without an idle or late worker are
// byte for byte what they were, and older files read as none.
constexpr char kMagicV1[8] = {'P', 'S', 'T', 'H', 'E', 'T', 'A', '1'};
constexpr char kMagicV2[8] = {'P', 'S', 'T', 'H', 'E', 'T', 'A', '2'};
constexpr char kMagicV3[8] = {'P', 'S', 'T', 'H', 'E', 'T', 'A', '3'};
constexpr char kMagicV4[8] = {'P', 'S', 'T', 'H', 'E', 'T', 'A', '4'};
constexpr char kMagicV5[8] = {'P', 'S', 'T', 'H', 'E', 'T', 'A', '5'};
constexpr char kMagic[8] = {'P', 'S', 'T', 'H', 'E', 'T', 'A', '6'};

// Format 3's codes: the position in these tables plus one, fixed here
// whatever the enums' order; 0 is "none" (an export has no mode).
constexpr ConsistencyMode kModeByCode[] = {
    ConsistencyMode::kSync, ConsistencyMode::kAsync, ConsistencyMode::kSsp};
constexpr WorkerState kStateByCode[] = {
    WorkerState::kLive, WorkerState::kExpired, WorkerState::kLeft};

template <typename Enum, size_t N>
uint8_t CodeOf(const Enum (&by_code)[N], Enum value) {
  for (size_t i = 0; i < N; ++i) {
    if (by_code[i] == value) return static_cast<uint8_t>(i + 1);
  }
  return 0;
}

template <typename Enum, size_t N>
bool FromCode(const Enum (&by_code)[N], uint8_t code, Enum* value) {
  if (code == 0 || code > N) return false;
  *value = by_code[code - 1];
  return true;
}

// Bounds that keep a corrupt length from asking for absurd allocations
// before the checksum is even checked.
constexpr uint64_t kMaxCount = 1u << 20;
// No optimizer keeps more state vectors than this (FTRL keeps two).
constexpr uint64_t kMaxStateVectors = 8;

class Writer {
 public:
  template <typename T>
  void Put(T value) {
    out_.append(reinterpret_cast<const char*>(&value), sizeof(value));
  }
  void PutString(absl::string_view s) {
    Put<uint64_t>(s.size());
    out_.append(s.data(), s.size());
  }
  template <typename T>
  void PutArray(const std::vector<T>& values) {
    out_.append(reinterpret_cast<const char*>(values.data()),
                values.size() * sizeof(T));
  }
  void PutFloats(const std::vector<float>& values) { PutArray(values); }
  std::string& bytes() { return out_; }

 private:
  std::string out_;
};

// Reads what Writer wrote; the first short read marks the whole file bad.
class Reader {
 public:
  explicit Reader(absl::string_view bytes) : in_(bytes) {}

  template <typename T>
  bool Get(T* value) {
    if (!Take(sizeof(T))) return false;
    std::memcpy(value, in_.data() + pos_ - sizeof(T), sizeof(T));
    return true;
  }
  bool GetCount(uint64_t* count) { return Get(count) && *count <= kMaxCount; }
  bool GetString(std::string* s) {
    uint64_t size = 0;
    if (!Get(&size) || size > in_.size() - pos_) return false;
    s->assign(in_.data() + pos_, size);
    pos_ += size;
    return true;
  }
  // Bounded by the bytes left, so a corrupt count cannot ask for more
  // memory than the file's size.
  template <typename T>
  bool GetArray(uint64_t count, std::vector<T>* values) {
    if (count > (in_.size() - pos_) / sizeof(T)) return false;
    values->resize(count);
    // An empty vector's data() may be null, which memcpy must never get
    // (a shard can hold no keys: a model smaller than the shard count).
    if (count > 0) {
      std::memcpy(values->data(), in_.data() + pos_, count * sizeof(T));
    }
    pos_ += count * sizeof(T);
    return true;
  }
  bool GetFloats(uint64_t count, std::vector<float>* values) {
    return GetArray(count, values);
  }
  // `count` rows of `stride` floats, without overflowing count × stride.
  bool GetRows(uint64_t count, uint64_t stride, std::vector<float>* values) {
    if (stride == 0 || count > (in_.size() - pos_) / sizeof(float) / stride) {
      return false;
    }
    return GetArray(count * stride, values);
  }
  bool AtEnd() const { return pos_ == in_.size(); }

 private:
  bool Take(size_t n) {
    if (n > in_.size() - pos_) return false;
    pos_ += n;
    return true;
  }

  absl::string_view in_;
  size_t pos_ = 0;
};

uint32_t Crc32(absl::string_view bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths: feed large files in pieces.
  constexpr size_t kPiece = 1u << 30;
  for (size_t at = 0; at < bytes.size(); at += kPiece) {
    const size_t n = std::min(kPiece, bytes.size() - at);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + at),
                static_cast<uInt>(n));
  }
  return static_cast<uint32_t>(crc);
}

// Format 3: a code (ModeCode). Before: the name, empty in an export.
bool DecodeMode(Reader& in, int format, std::optional<ConsistencyMode>* mode) {
  if (format >= 3) {
    uint8_t code = 0;
    if (!in.Get(&code)) return false;
    if (code == 0) {
      *mode = std::nullopt;
      return true;
    }
    ConsistencyMode known;
    if (!FromCode(kModeByCode, code, &known)) return false;
    *mode = known;
    return true;
  }
  std::string name;
  if (!in.GetString(&name)) return false;
  if (name.empty()) {
    *mode = std::nullopt;
    return true;
  }
  absl::StatusOr<ConsistencyMode> parsed = ParseConsistencyMode(name);
  if (!parsed.ok()) return false;
  *mode = *parsed;
  return true;
}

// Format 3's flags byte after a worker's state code.
constexpr uint8_t kFinishedFlag = 1;
constexpr uint8_t kIdleFlag = 2;
constexpr uint8_t kLateFlag = 4;

// Format 3: the state's code, then the flags (finished, idle, late). Before:
// one byte, 0 expired or left, 1 live, 2 finished (files before that flag hold
// only 0 and 1).
bool DecodeWorkerState(Reader& in, int format, WorkerRecord* w) {
  uint8_t code = 0;
  if (format >= 3) {
    uint8_t flags = 0;
    if (!in.Get(&code) || !FromCode(kStateByCode, code, &w->state) ||
        !in.Get(&flags) ||
        (flags & ~(kFinishedFlag | kIdleFlag | kLateFlag)) != 0) {
      return false;
    }
    w->finished = (flags & kFinishedFlag) != 0;
    w->idle = (flags & kIdleFlag) != 0;
    w->late = (flags & kLateFlag) != 0;
    return true;
  }
  if (!in.Get(&code) || code > 2) return false;
  w->state = code == 1   ? WorkerState::kLive
             : code == 2 ? WorkerState::kLeft
                         : WorkerState::kExpired;
  w->finished = code == 2;
  return true;
}

bool DecodeBody(Reader& in, int format, ThetaFile& file) {
  uint64_t count = 0;
  if (!in.GetCount(&count)) return false;
  file.tensors.resize(count);
  for (TensorSpec& tensor : file.tensors) {
    uint64_t rank = 0;
    uint8_t exempt = 0;
    if (!in.GetString(&tensor.name) || !in.GetCount(&rank)) return false;
    tensor.shape.resize(rank);
    for (int64_t& dim : tensor.shape) {
      if (!in.Get(&dim)) return false;
    }
    if (!in.Get(&exempt)) return false;
    tensor.exempt_from_regularization = exempt != 0;
  }
  if (!in.Get(&file.keys.begin) || !in.Get(&file.keys.end) ||
      file.keys.end < file.keys.begin || !in.Get(&file.shard_index) ||
      !in.Get(&file.num_shards) || !DecodeMode(in, format, &file.mode) ||
      !in.Get(&file.version) || !in.Get(&file.samples_applied) ||
      !in.GetString(&file.optimizer)) {
    return false;
  }
  const uint64_t keys = file.keys.size();
  if (!in.GetFloats(keys, &file.values) || !in.GetCount(&count)) return false;
  file.state_names.resize(count);
  file.state.resize(count);
  for (size_t i = 0; i < count; ++i) {
    if (!in.GetString(&file.state_names[i]) ||
        !in.GetFloats(keys, &file.state[i])) {
      return false;
    }
  }
  if (!in.GetCount(&count)) return false;
  file.workers.resize(count);
  for (WorkerRecord& w : file.workers) {
    if (!in.Get(&w.worker_id) || !in.Get(&w.incarnation) ||
        !in.Get(&w.last_seq) || !in.Get(&w.last_step) || !in.Get(&w.pushes) ||
        !in.Get(&w.clock)) {
      return false;
    }
    if (!DecodeWorkerState(in, format, &w)) return false;
  }
  if (!in.GetCount(&count)) return false;
  file.round.resize(count);
  for (RoundGradient& g : file.round) {
    if (!in.Get(&g.worker_id) || !in.Get(&g.batch_size) ||
        !in.GetFloats(keys, &g.values)) {
      return false;
    }
  }
  return true;
}

// Format 2's and 3's tail: a presence byte, then the settings.
bool DecodeRules(Reader& in, ThetaFile& file) {
  uint8_t present = 0;
  if (!in.Get(&present) || present > 1) return false;
  if (present == 0) return true;
  RuleSettings rules;
  UpdateOptions& u = rules.update;
  uint8_t nonnegative = 0;
  if (!in.Get(&u.learning_rate) || !in.Get(&u.l2) || !in.Get(&u.l1) ||
      !in.Get(&u.clip_min) || !in.Get(&u.clip_max) || !in.Get(&nonnegative) ||
      !in.Get(&u.max_norm) || !in.Get(&u.penalty_beta) ||
      !in.Get(&rules.sync_quorum) || !in.Get(&rules.staleness)) {
    return false;
  }
  u.nonnegative = nonnegative != 0;
  file.rules = rules;
  return true;
}

// Format 4's tail: each tensor's optimizer and schedule, then the
// server's schedule.
bool DecodeOptimizers(Reader& in, ThetaFile& file) {
  for (TensorSpec& tensor : file.tensors) {
    if (!in.GetString(&tensor.optimizer) ||
        !in.GetString(&tensor.lr_schedule)) {
      return false;
    }
  }
  return in.GetString(&file.lr_schedule);
}

// Format 5's tail: the model seed, each table's declaration, counters and
// rows, then each open-round gradient's sparse rows.
bool DecodeTables(Reader& in, ThetaFile& file) {
  uint64_t count = 0;
  if (!in.Get(&file.model_seed) || !in.GetCount(&count)) return false;
  file.tables.resize(count);
  for (SavedTable& table : file.tables) {
    TableSpec& spec = table.spec;
    uint64_t states = 0;
    uint64_t rows = 0;
    uint8_t has_recency = 0;
    if (!in.GetString(&spec.name) || !in.Get(&spec.dim) || spec.dim == 0 ||
        spec.dim > kMaxTableDim || !in.GetString(&spec.initializer) ||
        !in.GetString(&spec.optimizer) || !in.GetString(&spec.lr_schedule) ||
        !in.Get(&states) || states > kMaxStateVectors) {
      return false;
    }
    table.state_names.resize(states);
    for (std::string& name : table.state_names) {
      if (!in.GetString(&name)) return false;
    }
    if (!in.Get(&table.created) || !in.Get(&table.evicted) ||
        !in.Get(&table.refused) || !in.Get(&rows) || !in.Get(&has_recency) ||
        has_recency > 1 || !in.GetArray(rows, &table.ids) ||
        (has_recency == 1 && !in.GetArray(rows, &table.recency)) ||
        !in.GetRows(rows, table.stride(), &table.rows)) {
      return false;
    }
  }
  for (RoundGradient& g : file.round) {
    if (!in.GetCount(&count)) return false;
    g.tables.resize(count);
    for (TableRows& part : g.tables) {
      uint64_t rows = 0;
      if (!in.Get(&part.table) || part.table >= file.tables.size() ||
          !in.Get(&rows) || !in.GetArray(rows, &part.ids) ||
          !in.GetRows(rows, file.tables[part.table].spec.dim, &part.rows)) {
        return false;
      }
    }
  }
  return true;
}

// Format 6's tail: a presence byte, then the partition plan and each
// (epoch, partition)'s state, holder and incarnation. Presence 2 is a plan
// with folds (--kfold): its kfold and fold follow the seed. Files without
// folds stay byte for byte what they were.
bool DecodePartitions(Reader& in, ThetaFile& file) {
  uint8_t present = 0;
  if (!in.Get(&present) || present > 2) return false;
  if (present == 0) return true;
  SavedPartitions saved;
  PartitionPlan& plan = saved.plan;
  if (!in.Get(&plan.train_size) || !in.Get(&plan.partitions) ||
      !in.Get(&plan.epochs) || !in.Get(&plan.seed) ||
      (present == 2 &&
       (!in.Get(&plan.kfold) || !in.Get(&plan.fold) || plan.kfold == 0)) ||
      uint64_t{plan.partitions} * plan.epochs > kMaxPartitionSlots) {
    return false;
  }
  saved.records.resize(size_t{plan.partitions} * plan.epochs);
  for (PartitionRecord& r : saved.records) {
    uint8_t state = 0;
    if (!in.Get(&state) || state > 2 || !in.Get(&r.worker_id) ||
        !in.Get(&r.incarnation)) {
      return false;
    }
    r.state = static_cast<PartitionState>(state);
  }
  file.partitions = std::move(saved);
  return true;
}

bool Increasing(const std::vector<uint64_t>& ids) {
  return std::adjacent_find(ids.begin(), ids.end(), [](uint64_t a, uint64_t b) {
           return a >= b;
         }) == ids.end();
}

// The tables' parts that the layout cannot check: ids in order, the
// recency a permutation, every value finite. Empty when all is well.
std::string CheckTables(const ThetaFile& file) {
  for (const SavedTable& table : file.tables) {
    const std::string& name = table.spec.name;
    if (!Increasing(table.ids)) {
      return absl::StrCat("table '", name, "' lists its ids out of order");
    }
    std::vector<bool> seen(table.recency.size(), false);
    for (uint64_t rank : table.recency) {
      if (rank >= seen.size() || seen[rank]) {
        return absl::StrCat("table '", name,
                            "' has a malformed eviction order");
      }
      seen[rank] = true;
    }
    if (auto at = FindNonFinite(table.rows)) {
      return absl::StrCat("table '", name, "' row of id ",
                          table.ids[*at / table.stride()], " is not finite");
    }
  }
  for (const RoundGradient& g : file.round) {
    for (size_t i = 0; i < g.tables.size(); ++i) {
      const TableRows& part = g.tables[i];
      if ((i > 0 && part.table <= g.tables[i - 1].table) ||
          !Increasing(part.ids) || FindNonFinite(part.rows).has_value()) {
        return absl::StrCat("the open round's sparse rows of worker ",
                            g.worker_id, " are malformed or not finite");
      }
    }
  }
  return "";
}

}  // namespace

std::string EncodeThetaFile(const ThetaFile& file) {
  Writer out;
  out.bytes().append(kMagic, sizeof(kMagic));
  out.Put<uint64_t>(file.tensors.size());
  for (const TensorSpec& tensor : file.tensors) {
    out.PutString(tensor.name);
    out.Put<uint64_t>(tensor.shape.size());
    for (int64_t dim : tensor.shape) out.Put(dim);
    out.Put<uint8_t>(tensor.exempt_from_regularization ? 1 : 0);
  }
  out.Put(file.keys.begin);
  out.Put(file.keys.end);
  out.Put(file.shard_index);
  out.Put(file.num_shards);
  out.Put<uint8_t>(file.mode.has_value() ? CodeOf(kModeByCode, *file.mode) : 0);
  out.Put(file.version);
  out.Put(file.samples_applied);
  out.PutString(file.optimizer);
  out.PutFloats(file.values);
  out.Put<uint64_t>(file.state.size());
  for (size_t i = 0; i < file.state.size(); ++i) {
    out.PutString(file.state_names[i]);
    out.PutFloats(file.state[i]);
  }
  out.Put<uint64_t>(file.workers.size());
  for (const WorkerRecord& w : file.workers) {
    out.Put(w.worker_id);
    out.Put(w.incarnation);
    out.Put(w.last_seq);
    out.Put(w.last_step);
    out.Put(w.pushes);
    out.Put(w.clock);
    out.Put<uint8_t>(CodeOf(kStateByCode, w.state));
    out.Put<uint8_t>((w.finished ? kFinishedFlag : 0) |
                     (w.idle ? kIdleFlag : 0) | (w.late ? kLateFlag : 0));
  }
  out.Put<uint64_t>(file.round.size());
  for (const RoundGradient& g : file.round) {
    out.Put(g.worker_id);
    out.Put(g.batch_size);
    out.PutFloats(g.values);
  }
  out.Put<uint8_t>(file.rules.has_value() ? 1 : 0);
  if (file.rules.has_value()) {
    const UpdateOptions& u = file.rules->update;
    out.Put(u.learning_rate);
    out.Put(u.l2);
    out.Put(u.l1);
    out.Put(u.clip_min);
    out.Put(u.clip_max);
    out.Put<uint8_t>(u.nonnegative ? 1 : 0);
    out.Put(u.max_norm);
    out.Put(u.penalty_beta);
    out.Put(file.rules->sync_quorum);
    out.Put(file.rules->staleness);
  }
  for (const TensorSpec& tensor : file.tensors) {
    out.PutString(tensor.optimizer);
    out.PutString(tensor.lr_schedule);
  }
  out.PutString(file.lr_schedule);
  out.Put(file.model_seed);
  out.Put<uint64_t>(file.tables.size());
  for (const SavedTable& table : file.tables) {
    out.PutString(table.spec.name);
    out.Put(table.spec.dim);
    out.PutString(table.spec.initializer);
    out.PutString(table.spec.optimizer);
    out.PutString(table.spec.lr_schedule);
    out.Put<uint64_t>(table.state_names.size());
    for (const std::string& name : table.state_names) out.PutString(name);
    out.Put(table.created);
    out.Put(table.evicted);
    out.Put(table.refused);
    out.Put<uint64_t>(table.ids.size());
    out.Put<uint8_t>(table.recency.empty() ? 0 : 1);
    out.PutArray(table.ids);
    out.PutArray(table.recency);
    out.PutFloats(table.rows);
  }
  for (const RoundGradient& g : file.round) {
    out.Put<uint64_t>(g.tables.size());
    for (const TableRows& part : g.tables) {
      out.Put(part.table);
      out.Put<uint64_t>(part.ids.size());
      out.PutArray(part.ids);
      out.PutFloats(part.rows);
    }
  }
  const bool folds =
      file.partitions.has_value() && file.partitions->plan.kfold > 0;
  out.Put<uint8_t>(!file.partitions.has_value() ? 0 : folds ? 2 : 1);
  if (file.partitions.has_value()) {
    const PartitionPlan& plan = file.partitions->plan;
    out.Put(plan.train_size);
    out.Put(plan.partitions);
    out.Put(plan.epochs);
    out.Put(plan.seed);
    if (folds) {
      out.Put(plan.kfold);
      out.Put(plan.fold);
    }
    for (const PartitionRecord& r : file.partitions->records) {
      out.Put<uint8_t>(static_cast<uint8_t>(r.state));
      out.Put(r.worker_id);
      out.Put(r.incarnation);
    }
  }
  out.Put(Crc32(out.bytes()));
  return std::move(out.bytes());
}

absl::StatusOr<ThetaFile> DecodeThetaFile(absl::string_view bytes,
                                          absl::string_view source) {
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(source, ": ", why));
  };
  if (bytes.size() < sizeof(kMagic) + sizeof(uint32_t)) {
    return bad("not a θ file (bad magic) or truncated");
  }
  int format = 0;
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) == 0) {
    format = 6;
  } else if (std::memcmp(bytes.data(), kMagicV5, sizeof(kMagicV5)) == 0) {
    format = 5;
  } else if (std::memcmp(bytes.data(), kMagicV4, sizeof(kMagicV4)) == 0) {
    format = 4;
  } else if (std::memcmp(bytes.data(), kMagicV3, sizeof(kMagicV3)) == 0) {
    format = 3;
  } else if (std::memcmp(bytes.data(), kMagicV2, sizeof(kMagicV2)) == 0) {
    format = 2;
  } else if (std::memcmp(bytes.data(), kMagicV1, sizeof(kMagicV1)) == 0) {
    format = 1;
  } else {
    return bad("not a θ file (bad magic) or truncated");
  }
  const absl::string_view body =
      bytes.substr(0, bytes.size() - sizeof(uint32_t));
  uint32_t stored_crc = 0;
  std::memcpy(&stored_crc, bytes.data() + body.size(), sizeof(stored_crc));
  if (Crc32(body) != stored_crc) {
    return bad(absl::StrCat("checksum mismatch: the file (", bytes.size(),
                            " bytes) is truncated or corrupt"));
  }
  ThetaFile file;
  Reader in(body.substr(sizeof(kMagic)));
  if (!DecodeBody(in, format, file) ||
      (format >= 2 && !DecodeRules(in, file)) ||
      (format >= 4 && !DecodeOptimizers(in, file)) ||
      (format >= 5 && !DecodeTables(in, file)) ||
      (format >= 6 && !DecodePartitions(in, file)) || !in.AtEnd()) {
    return bad(
        "the checksum matches but the layout does not: written by an "
        "incompatible version?");
  }
  // No model at all: a shard's workers before Init (ParameterShard::
  // Snapshot), and nothing else.
  if (file.tensors.empty() && file.tables.empty()) {
    if (file.keys.size() != 0 || !file.values.empty() || !file.state.empty() ||
        !file.round.empty()) {
      return bad("values without a model");
    }
    return file;
  }
  std::vector<TableSpec> table_specs;
  for (const SavedTable& table : file.tables) {
    table_specs.push_back(table.spec);
  }
  if (absl::Status valid = table_specs.empty()
                               ? ValidateTensorSpecs(file.tensors)
                               : ValidateModelSpecs(file.tensors, table_specs);
      !valid.ok()) {
    return bad(valid.message());
  }
  if (std::string wrong = CheckTables(file); !wrong.empty()) {
    return bad(wrong);
  }
  if (file.keys.end > NumKeys(file.tensors)) {
    return bad(absl::StrCat("keys ", file.keys.ToString(),
                            " lie outside the model's ", NumKeys(file.tensors),
                            " keys"));
  }
  // θ never holds a NaN or infinity (servers refuse updates that would make
  // one), so a file that does is as unusable as a corrupt one: readers fall
  // back to an older file instead of restoring it.
  if (auto at = FindNonFinite(file.values)) {
    return bad(absl::StrCat("the value of key ", file.keys.begin + *at,
                            " is not finite (", file.values[*at], ")"));
  }
  for (size_t i = 0; i < file.state.size(); ++i) {
    if (auto at = FindNonFinite(file.state[i])) {
      return bad(absl::StrCat("optimizer state '", file.state_names[i],
                              "' of key ", file.keys.begin + *at,
                              " is not finite"));
    }
  }
  for (const RoundGradient& g : file.round) {
    if (auto at = FindNonFinite(g.values)) {
      return bad(absl::StrCat("the open round's gradient of worker ",
                              g.worker_id, " for key ", file.keys.begin + *at,
                              " is not finite"));
    }
  }
  return file;
}

absl::Status WriteThetaFile(const std::string& path, const ThetaFile& file) {
  return WriteFileAtomically(path, EncodeThetaFile(file));
}

absl::StatusOr<ThetaFile> ReadThetaFile(const std::string& path) {
  const std::optional<std::string> contents = ReadWholeFile(path);
  if (!contents) {
    return absl::NotFoundError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  return DecodeThetaFile(*contents, path);
}

}  // namespace ps::common
