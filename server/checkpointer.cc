#include "server/checkpointer.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/cli.h"
#include "spdlog/spdlog.h"

namespace ps::server {
namespace {

namespace fs = std::filesystem;

using FileName = Checkpointer::FileName;

std::string NameFor(uint64_t seq, uint32_t shard_index, uint32_t num_shards) {
  return absl::StrFormat("ckpt-%08d-shard-%d-of-%d.theta", seq, shard_index,
                         num_shards);
}

std::optional<FileName> ParseName(const fs::path& path) {
  FileName name;
  unsigned long long seq = 0;
  unsigned shard = 0, shards = 0;
  int consumed = 0;
  const std::string base = path.filename().string();
  if (std::sscanf(base.c_str(), "ckpt-%llu-shard-%u-of-%u.theta%n", &seq,
                  &shard, &shards, &consumed) != 3 ||
      consumed != static_cast<int>(base.size()) || shards == 0 ||
      shard >= shards) {
    return std::nullopt;
  }
  name.seq = seq;
  name.shard_index = shard;
  name.num_shards = shards;
  name.path = path.string();
  return name;
}

// Every checkpoint file in `dir`, newest first per shard.
absl::StatusOr<std::vector<FileName>> ListCheckpoints(const std::string& dir) {
  std::error_code error;
  std::vector<FileName> files;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    if (std::optional<FileName> name = ParseName(entry.path())) {
      files.push_back(*name);
    }
  }
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot list ", dir, ": ", error.message()));
  }
  std::sort(files.begin(), files.end(),
            [](const FileName& a, const FileName& b) { return a.seq > b.seq; });
  return files;
}

// The newest file of `shard` (in `files`, one layout) that reads back whole.
absl::StatusOr<common::ThetaFile> NewestGood(const std::vector<FileName>& files,
                                             uint32_t shard) {
  std::vector<std::string> problems;
  for (const FileName& file : files) {
    if (file.shard_index != shard) continue;
    absl::StatusOr<common::ThetaFile> read = common::ReadThetaFile(file.path);
    if (read.ok() && read->shard_index == file.shard_index &&
        read->num_shards == file.num_shards) {
      return read;
    }
    const std::string problem =
        read.ok() ? absl::StrCat(file.path, ": its contents say shard ",
                                 read->shard_index, " of ", read->num_shards)
                  : std::string(read.status().message());
    spdlog::error("checkpoint {} is unusable ({}); trying an older one",
                  file.path, problem);
    problems.push_back(problem);
  }
  return absl::DataLossError(
      problems.empty() ? absl::StrCat("no checkpoint file of shard ", shard)
                       : absl::StrCat("no good checkpoint of shard ", shard,
                                      ": ", absl::StrJoin(problems, "; ")));
}

// Several old shards' records of one worker: the one shape a restored shard
// of their keys holds. A step counts as completed only where every old shard
// has it (the lowest clock), so a worker killed between its pushes to two
// shards redoes that step rather than skipping part of it.
void Merge(const std::vector<common::WorkerRecord>& from,
           std::map<uint32_t, common::WorkerRecord>& into) {
  for (const common::WorkerRecord& w : from) {
    auto [it, inserted] = into.emplace(w.worker_id, w);
    if (inserted) continue;
    common::WorkerRecord& m = it->second;
    m.incarnation = std::max(m.incarnation, w.incarnation);
    m.last_seq = std::max(m.last_seq, w.last_seq);
    m.last_step = std::min(m.last_step, w.last_step);
    m.pushes = std::max(m.pushes, w.pushes);
    m.clock = std::min(m.clock, w.clock);
    // Live if live anywhere: a fresh lease costs at most one timeout.
    if (w.state == common::WorkerState::kLive) m.state = w.state;
    // Idle if idle anywhere: its next push says it trains, whereas a sync
    // round waiting for a worker that waits for a partition would not close.
    m.idle = m.idle || w.idle;
  }
}

// One worker's sparse rows of the open round, held in parts by old shards,
// cut to the rows of new shard `shard_index` of `num_shards`.
std::vector<common::TableRows> SliceTableRows(
    const std::vector<const common::RoundGradient*>& parts,
    uint32_t shard_index, uint32_t num_shards) {
  std::map<uint32_t, std::vector<std::pair<uint64_t, const float*>>> by_table;
  std::map<uint32_t, size_t> dims;
  for (const common::RoundGradient* part : parts) {
    for (const common::TableRows& rows : part->tables) {
      const size_t dim =
          rows.ids.empty() ? 0 : rows.rows.size() / rows.ids.size();
      for (size_t i = 0; i < rows.ids.size(); ++i) {
        if (common::ShardOfId(rows.ids[i], num_shards) != shard_index) continue;
        by_table[rows.table].emplace_back(rows.ids[i],
                                          rows.rows.data() + i * dim);
        dims[rows.table] = dim;
      }
    }
  }
  std::vector<common::TableRows> sliced;
  for (auto& [table, entries] : by_table) {
    std::sort(entries.begin(), entries.end());
    common::TableRows& out = sliced.emplace_back();
    out.table = table;
    for (const auto& [id, row] : entries) {
      out.ids.push_back(id);
      out.rows.insert(out.rows.end(), row, row + dims[table]);
    }
  }
  return sliced;
}

// Old shards' tables cut to the rows of new shard `shard_index` of
// `num_shards`, in id order, with their optimizer state. Eviction order is
// kept within each old shard's rows; rows of different old shards are
// interleaved by their relative place in their shard's order (the exact
// order across shards was never recorded: each shard evicts on its own).
// The counters start again at 0: they described the old shards.
absl::StatusOr<std::vector<common::SavedTable>> SliceTables(
    const std::vector<common::ThetaFile*>& sources, uint32_t shard_index,
    uint32_t num_shards) {
  const std::vector<common::SavedTable>& model = sources[0]->tables;
  std::vector<common::SavedTable> sliced(model.size());
  for (size_t t = 0; t < model.size(); ++t) {
    struct Entry {
      uint64_t id;
      long double place;  // in its old shard's eviction order, in [0, 1)
      size_t source;
      size_t row;
    };
    std::vector<Entry> entries;
    for (size_t k = 0; k < sources.size(); ++k) {
      const common::SavedTable& theirs = sources[k]->tables[t];
      if (theirs.state_names != model[t].state_names) {
        return absl::DataLossError(absl::StrCat(
            "the old checkpoints disagree on table '", model[t].spec.name,
            "''s optimizer state: [", absl::StrJoin(theirs.state_names, ","),
            "] and [", absl::StrJoin(model[t].state_names, ","), "]"));
      }
      const size_t n = theirs.ids.size();
      for (size_t i = 0; i < n; ++i) {
        if (common::ShardOfId(theirs.ids[i], num_shards) != shard_index) {
          continue;
        }
        const uint64_t rank = theirs.recency.empty() ? i : theirs.recency[i];
        entries.push_back(
            {theirs.ids[i], static_cast<long double>(rank) / n, k, i});
      }
    }
    common::SavedTable& out = sliced[t];
    out.spec = model[t].spec;
    out.state_names = model[t].state_names;
    const size_t stride = out.stride();
    std::sort(
        entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
          return std::tie(a.place, a.source) < std::tie(b.place, b.source);
        });
    for (size_t r = 0; r < entries.size(); ++r) entries[r].place = r;
    std::sort(entries.begin(), entries.end(),
              [](const Entry& a, const Entry& b) { return a.id < b.id; });
    for (const Entry& e : entries) {
      if (!out.ids.empty() && out.ids.back() == e.id) {
        return absl::DataLossError(
            absl::StrCat("two old checkpoints hold row ", e.id, " of table '",
                         out.spec.name, "': they are not one job's state"));
      }
      out.ids.push_back(e.id);
      out.recency.push_back(static_cast<uint64_t>(e.place));
      const float* row =
          sources[e.source]->tables[t].rows.data() + e.row * stride;
      out.rows.insert(out.rows.end(), row, row + stride);
    }
  }
  return sliced;
}

// The open rounds of old shards that are all at one round, cut to `mine`:
// a worker's gradient is kept when every old shard holds its part (with the
// same batch); one held by some only is dropped, and that worker resumes at
// the step it belongs to (see Merge) and pushes it again.
std::vector<common::RoundGradient> SliceRounds(
    const std::vector<const common::ThetaFile*>& sources, common::KeyRange mine,
    uint32_t shard_index, uint32_t num_shards) {
  std::map<uint32_t, std::vector<const common::RoundGradient*>> by_worker;
  for (const common::ThetaFile* source : sources) {
    for (const common::RoundGradient& g : source->round) {
      by_worker[g.worker_id].push_back(&g);
    }
  }
  std::vector<common::RoundGradient> round;
  for (const auto& [worker, parts] : by_worker) {
    bool whole = parts.size() == sources.size();
    for (const common::RoundGradient* part : parts) {
      whole = whole && part->batch_size == parts[0]->batch_size;
    }
    if (!whole) {
      spdlog::warn(
          "shard {}: dropped worker {}'s gradient of the open round: "
          "only {} of the {} old shards holding these keys had it; "
          "the worker pushes it again",
          shard_index, worker, parts.size(), sources.size());
      continue;
    }
    common::RoundGradient& merged = round.emplace_back();
    merged.worker_id = worker;
    merged.batch_size = parts[0]->batch_size;
    merged.values.assign(mine.size(), 0.0f);
    for (size_t i = 0; i < sources.size(); ++i) {
      const common::KeyRange theirs = sources[i]->keys;
      const uint64_t begin = std::max(theirs.begin, mine.begin);
      const uint64_t end = std::min(theirs.end, mine.end);
      if (begin >= end) continue;  // an old shard here for its rows only
      std::copy(parts[i]->values.begin() + (begin - theirs.begin),
                parts[i]->values.begin() + (end - theirs.begin),
                merged.values.begin() + (begin - mine.begin));
    }
    merged.tables = SliceTableRows(parts, shard_index, num_shards);
  }
  return round;
}

// Takes DIR/shard-<i>-of-<S>.lock with a non-blocking exclusive flock and
// writes our pid into it (for the refusal message of the next one); the
// open descriptor is the lock.
absl::StatusOr<int> LockShard(const std::string& dir, uint32_t shard_index,
                              uint32_t num_shards) {
  const std::string path =
      absl::StrFormat("%s/shard-%d-of-%d.lock", dir, shard_index, num_shards);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "cannot open the lock file ", path, ": ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    char holder[32] = {};
    const ssize_t n = ::pread(fd, holder, sizeof(holder) - 1, 0);
    ::close(fd);
    if (error != EWOULDBLOCK) {
      return absl::UnavailableError(
          absl::StrCat("cannot lock ", path, ": ", std::strerror(error)));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint directory ", dir, " is in use by another server of shard ",
        shard_index, " of ", num_shards,
        n > 0 ? absl::StrCat(" (pid ", absl::StripAsciiWhitespace(holder), ")")
              : "",
        ", which holds ", path,
        ": two servers of one shard would overwrite each other's "
        "checkpoints"));
  }
  const std::string pid = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) !=
                                     static_cast<ssize_t>(pid.size())) {
    spdlog::warn("cannot write the pid into {}: {}", path,
                 std::strerror(errno));
  }
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpointer>> Checkpointer::Open(
    std::string dir, uint32_t keep, uint32_t shard_index, uint32_t num_shards) {
  std::error_code error;
  if (!fs::is_directory(dir, error)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint directory ", dir,
        " does not exist (create it first: it is not created for you, so a "
        "typo cannot start a fresh model)"));
  }
  if (keep == 0) {
    return absl::InvalidArgumentError("--checkpoint_keep must be at least 1");
  }
  // Prove now, not at the first checkpoint, that the directory is writable.
  const std::string probe =
      absl::StrCat(dir, "/.write-probe-shard-", shard_index);
  if (absl::Status written = common::WriteFileAtomically(probe, "probe");
      !written.ok()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "checkpoint directory ", dir, " is not writable: ", written.message()));
  }
  std::remove(probe.c_str());
  absl::StatusOr<int> lock_fd = LockShard(dir, shard_index, num_shards);
  if (!lock_fd.ok()) return lock_fd.status();
  absl::StatusOr<std::vector<FileName>> files = ListCheckpoints(dir);
  if (!files.ok()) {
    ::close(*lock_fd);
    return files.status();
  }
  // Past every file of every layout: the layout that saved last then has the
  // highest seqs, which is how LoadLatest tells the newest state.
  uint64_t next_seq = 1;
  for (const FileName& file : *files) {
    next_seq = std::max(next_seq, file.seq + 1);
  }
  return std::unique_ptr<Checkpointer>(new Checkpointer(
      std::move(dir), keep, shard_index, num_shards, next_seq, *lock_fd));
}

Checkpointer::Checkpointer(std::string dir, uint32_t keep, uint32_t shard_index,
                           uint32_t num_shards, uint64_t next_seq, int lock_fd)
    : dir_(std::move(dir)),
      keep_(keep),
      shard_index_(shard_index),
      num_shards_(num_shards),
      next_seq_(next_seq),
      lock_fd_(lock_fd) {}

// The lock file stays: removing it could race with a next holder that
// opened it already, and an unlocked file costs nothing.
Checkpointer::~Checkpointer() { ::close(lock_fd_); }

absl::StatusOr<std::optional<common::ThetaFile>> Checkpointer::LoadLatest(
    const common::UpdateOptions& update,
    const common::OptimizerOptions& optimizer,
    const common::LrSchedule& lr_schedule) const {
  absl::StatusOr<std::vector<FileName>> all = ListCheckpoints(dir_);
  if (!all.ok()) return all.status();
  if (all->empty()) return std::nullopt;

  // Layouts, the one saved last first: seqs grow across layouts (Open), so
  // a layout's newest seq says when it last saved.
  std::vector<uint32_t> newest_first;
  std::map<uint32_t, std::vector<FileName>> layouts;
  for (const FileName& file : *all) {  // newest first
    if (layouts.find(file.num_shards) == layouts.end()) {
      newest_first.push_back(file.num_shards);
    }
    layouts[file.num_shards].push_back(file);
  }
  for (uint32_t layout : newest_first) {
    absl::StatusOr<std::optional<common::ThetaFile>> restored =
        layout == num_shards_
            ? OwnLayout(layouts[layout])
            : Reshard(layouts[layout], layout, update, optimizer, lr_schedule);
    if (!restored.ok() || restored->has_value()) return restored;
    spdlog::warn(
        "shard {}/{}: the {}-shard checkpoints, newer, hold none of "
        "this shard's keys; looking at older ones",
        shard_index_, num_shards_, layout);
  }
  return absl::DataLossError(
      absl::StrCat(dir_, " holds checkpoints, but none with keys of shard ",
                   shard_index_, " of ", num_shards_));
}

absl::StatusOr<std::optional<common::ThetaFile>> Checkpointer::OwnLayout(
    const std::vector<FileName>& files) const {
  const bool any = std::any_of(
      files.begin(), files.end(),
      [&](const FileName& f) { return f.shard_index == shard_index_; });
  if (!any) return std::nullopt;
  absl::StatusOr<common::ThetaFile> own = NewestGood(files, shard_index_);
  if (!own.ok()) return own.status();
  return std::optional<common::ThetaFile>(std::move(*own));
}

absl::StatusOr<std::optional<common::ThetaFile>> Checkpointer::Reshard(
    const std::vector<FileName>& files, uint32_t layout,
    const common::UpdateOptions& update,
    const common::OptimizerOptions& optimizer,
    const common::LrSchedule& lr_schedule) const {
  // Learn the model from any good file, then read the parts of every old
  // shard that overlap this shard's keys. Each file is read (and checked)
  // once.
  std::map<uint32_t, common::ThetaFile> read;
  const common::ThetaFile* model = nullptr;
  for (uint32_t i = 0; i < layout && model == nullptr; ++i) {
    if (absl::StatusOr<common::ThetaFile> f = NewestGood(files, i); f.ok()) {
      model = &(read[i] = std::move(*f));
    }
  }
  if (model == nullptr) {
    return absl::DataLossError(absl::StrCat("no good checkpoint of the ",
                                            layout, "-shard layout in ", dir_));
  }
  const uint64_t num_keys = common::NumKeys(model->tensors);
  const common::KeyRange mine =
      common::BalancedPart(num_keys, num_shards_, shard_index_);
  std::vector<uint32_t> overlapping;
  std::vector<uint32_t> missing;
  // A table's rows are spread over every shard by ShardOfId: with tables,
  // every old shard holds some of this shard's state.
  const bool has_tables = !model->tables.empty();
  for (uint32_t i = 0; i < layout; ++i) {
    const common::KeyRange theirs = common::BalancedPart(num_keys, layout, i);
    if (!has_tables &&
        std::max(theirs.begin, mine.begin) >= std::min(theirs.end, mine.end)) {
      continue;
    }
    overlapping.push_back(i);
    if (!std::any_of(files.begin(), files.end(),
                     [i](const FileName& f) { return f.shard_index == i; })) {
      missing.push_back(i);
    }
  }
  if (missing.size() == overlapping.size()) return std::nullopt;
  if (!missing.empty()) {
    // Part of these keys is newer here than anywhere else: restoring them
    // from an older layout would silently bring back stale state.
    return absl::DataLossError(absl::StrCat(
        "the newest checkpoints (", layout, " shards) hold part of shard ",
        shard_index_, "'s keys ", mine.ToString(), " but no file of old shard ",
        absl::StrJoin(missing, ", "),
        ": restoring the rest from older files "
        "would mix states; restart with ",
        layout, " shards"));
  }

  std::vector<common::ThetaFile*> sources;
  for (uint32_t i : overlapping) {
    if (read.find(i) == read.end()) {
      absl::StatusOr<common::ThetaFile> f = NewestGood(files, i);
      if (!f.ok()) return f.status();
      read[i] = std::move(*f);
    }
    common::ThetaFile& source = read[i];
    if (std::string diff =
            common::DescribeDifference(model->tensors, source.tensors);
        !diff.empty() ||
        source.keys != common::BalancedPart(num_keys, layout, i)) {
      return absl::DataLossError(absl::StrCat(
          "the checkpoints of the ", layout, "-shard layout disagree: shard ",
          i, diff.empty() ? " holds other keys" : absl::StrCat(": ", diff)));
    }
    std::vector<common::TableSpec> model_tables;
    std::vector<common::TableSpec> source_tables;
    for (const common::SavedTable& t : model->tables) {
      model_tables.push_back(t.spec);
    }
    for (const common::SavedTable& t : source.tables) {
      source_tables.push_back(t.spec);
    }
    if (std::string diff =
            common::DescribeTableDifference(model_tables, source_tables);
        !diff.empty() || source.model_seed != model->model_seed) {
      return absl::DataLossError(absl::StrCat(
          "the checkpoints of the ", layout, "-shard layout disagree: shard ",
          i,
          diff.empty() ? " seeds its tables with another model seed"
                       : absl::StrCat(": ", diff)));
    }
    if (source.state_names != model->state_names) {
      return absl::DataLossError(absl::StrCat(
          "the checkpoints of the ", layout, "-shard layout disagree: shard ",
          i, " holds optimizer state [", absl::StrJoin(source.state_names, ","),
          "] where another holds [", absl::StrJoin(model->state_names, ","),
          "]"));
    }
    if (absl::Status sizes = CheckStateSizes(source); !sizes.ok()) {
      return sizes;
    }
    sources.push_back(&source);
  }

  // Sync shards stop at most one round apart (a worker pushes round r + 1
  // only after every shard closed round r). The shards one behind have their
  // open round closed as they would have closed it, so that every key is
  // restored at the same round and no accepted gradient is lost.
  const bool sync = model->mode == common::ConsistencyMode::kSync;
  uint64_t newest = 0;
  for (const common::ThetaFile* source : sources) {
    newest = std::max(newest, source->version);
  }
  for (size_t k = 0; k < sources.size() && sync; ++k) {
    common::ThetaFile& source = *sources[k];
    if (source.version + 1 < newest) {
      return absl::DataLossError(absl::StrCat(
          "the ", layout, "-shard sync checkpoints are at rounds ",
          source.version, " (shard ", overlapping[k], ") and ", newest,
          ": sync shards are never more than one round apart, so these files "
          "are not one job's state"));
    }
    if (source.version + 1 == newest) {
      spdlog::warn(
          "shard {}/{}: old shard {} of {} stopped one round behind "
          "(round {}): closing that round on its keys with the {} "
          "gradients it held{}",
          shard_index_, num_shards_, overlapping[k], layout, source.version,
          source.round.size(),
          source.round.empty() ? ", so those keys skip the round" : "");
      if (absl::Status closed =
              CloseSavedRound(update, optimizer, lr_schedule, source);
          !closed.ok()) {
        return closed;
      }
    }
  }

  common::ThetaFile merged;
  merged.tensors = model->tensors;
  merged.keys = mine;
  merged.shard_index = shard_index_;
  merged.num_shards = num_shards_;
  merged.mode = model->mode;
  merged.version = newest;
  merged.rules = model->rules;
  merged.optimizer = model->optimizer;
  merged.lr_schedule = model->lr_schedule;
  merged.model_seed = model->model_seed;
  absl::StatusOr<std::vector<common::SavedTable>> tables =
      SliceTables(sources, shard_index_, num_shards_);
  if (!tables.ok()) return tables.status();
  merged.tables = std::move(*tables);
  merged.values.assign(mine.size(), 0.0f);
  merged.state_names = model->state_names;
  merged.state.assign(model->state_names.size(),
                      std::vector<float>(mine.size(), 0.0f));
  std::map<uint32_t, common::WorkerRecord> workers;
  for (size_t k = 0; k < sources.size(); ++k) {
    const common::ThetaFile& source = *sources[k];
    const common::KeyRange theirs = source.keys;
    const uint64_t begin = std::max(theirs.begin, mine.begin);
    const uint64_t end = std::max(begin, std::min(theirs.end, mine.end));
    // An old shard of no key here may still hold rows of this shard.
    for (size_t s = 0; s <= merged.state.size() && begin < end; ++s) {
      const std::vector<float>& from =
          s == 0 ? source.values : source.state[s - 1];
      std::vector<float>& to = s == 0 ? merged.values : merged.state[s - 1];
      std::copy(from.begin() + (begin - theirs.begin),
                from.begin() + (end - theirs.begin),
                to.begin() + (begin - mine.begin));
    }
    merged.samples_applied =
        std::max(merged.samples_applied, source.samples_applied);
    Merge(source.workers, workers);
    // The partition table lives on shard 0 in every layout.
    if (shard_index_ == 0 && overlapping[k] == 0) {
      merged.partitions = source.partitions;
    }
    spdlog::info("shard {}/{}: restoring {} from shard {} of {} (version {})",
                 shard_index_, num_shards_,
                 begin < end
                     ? absl::StrFormat("keys [%d, %d)%s", begin, end,
                                       has_tables ? " and table rows" : "")
                     : std::string("table rows"),
                 overlapping[k], layout, source.version);
  }
  for (auto& [id, record] : workers) merged.workers.push_back(record);
  if (sync) {
    merged.round = SliceRounds(
        std::vector<const common::ThetaFile*>(sources.begin(), sources.end()),
        mine, shard_index_, num_shards_);
  }
  return std::optional<common::ThetaFile>(std::move(merged));
}

absl::StatusOr<SavedCheckpoint> Checkpointer::Save(const ParameterShard& shard,
                                                   absl::string_view why) {
  absl::MutexLock lock(&mutex_);
  const absl::Time start = absl::Now();
  absl::StatusOr<common::ThetaFile> snapshot = shard.Snapshot();
  if (!snapshot.ok()) return snapshot.status();
  // Workers without a model: a restart gets them back by registering.
  if (snapshot->tensors.empty()) {
    return absl::FailedPreconditionError(
        "no model is declared on this shard yet; nothing to checkpoint");
  }
  const std::string bytes = common::EncodeThetaFile(*snapshot);
  const std::string path =
      absl::StrCat(dir_, "/", NameFor(next_seq_, shard_index_, num_shards_));
  if (absl::Status written = common::WriteFileAtomically(path, bytes);
      !written.ok()) {
    return written;
  }
  ++next_seq_;
  SavedCheckpoint saved{path, snapshot->version, bytes.size(),
                        absl::Now() - start};
  spdlog::info("{} checkpoint {} (version {}, {} bytes, {})", std::string(why),
               saved.path, saved.version, saved.bytes,
               absl::FormatDuration(saved.took));
  {
    absl::MutexLock last_lock(&last_mutex_);
    last_save_ = LastSave{saved, absl::Now()};
  }

  // Keep the newest `keep_` of this shard's files.
  absl::StatusOr<std::vector<FileName>> files = ListCheckpoints(dir_);
  if (files.ok()) {
    uint32_t kept = 0;
    for (const FileName& file : *files) {
      if (file.shard_index != shard_index_ || file.num_shards != num_shards_) {
        continue;
      }
      if (++kept > keep_ && std::remove(file.path.c_str()) != 0) {
        spdlog::warn("cannot remove old checkpoint {}: {}", file.path,
                     std::strerror(errno));
      }
    }
  }
  return saved;
}

std::optional<Checkpointer::LastSave> Checkpointer::last_save() const {
  absl::MutexLock lock(&last_mutex_);
  return last_save_;
}

}  // namespace ps::server
