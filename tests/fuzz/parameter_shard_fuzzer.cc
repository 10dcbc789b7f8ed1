// libFuzzer target: every request a worker can send, through ParameterShard,
// in a fuzzed order on one shard of a fuzzed mode, with fuzzed sparse tables
// in Init and sparse rows in Push, Pull and PushPull. After every request: a
// rejected one left θ, its version, the samples applied and every table
// (rows, optimizer state, recency, counters, staged round rows) as they
// were; θ and every row read are finite; the version never goes back.
// Partition leases and the pushes that complete them are in the mix.
// Every parked pull ends exactly once; a snapshot written to a checkpoint
// and restored reads back the same.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/time/time.h"
#include "common/float_bytes.h"
#include "common/key_range.h"
#include "common/table_spec.h"
#include "common/tensor_spec.h"
#include "common/theta_file.h"
#include "server/parameter_shard.h"
#include "tests/fuzz/fuzz_check.h"

namespace ps::server {
namespace {

using ps::fuzz::Fail;

// What no rejected request may change.
struct Observed {
  bool initialized = false;
  uint64_t version = 0;
  uint64_t samples_applied = 0;
  std::string theta;   // float32 bytes: compared bit for bit
  std::string tables;  // ParameterShard::DumpTables

  bool operator==(const Observed& o) const {
    return initialized == o.initialized && version == o.version &&
           samples_applied == o.samples_applied && theta == o.theta &&
           tables == o.tables;
  }
};

Observed Observe(const ParameterShard& shard) {
  Observed seen;
  seen.tables = shard.DumpTables();
  absl::StatusOr<common::ThetaFile> snapshot = shard.Snapshot();
  if (!snapshot.ok()) return seen;
  seen.initialized = true;
  seen.version = snapshot->version;
  seen.samples_applied = snapshot->samples_applied;
  for (float v : snapshot->values) {
    if (!std::isfinite(v)) Fail("θ holds a value that is not finite");
  }
  common::FloatsToBytes(snapshot->values, &seen.theta);
  return seen;
}

float ConsumeFloat(FuzzedDataProvider& in) {
  if (in.ConsumeIntegralInRange<int>(0, 15) == 0) {
    // Any bit pattern: NaN, infinities, denormals.
    const uint32_t bits = in.ConsumeIntegral<uint32_t>();
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
  }
  return in.ConsumeFloatingPointInRange<float>(-4.0f, 4.0f);
}

// `count` floats as the wire carries them, or (sometimes) bytes of any
// length.
std::string ConsumeFloatBytes(FuzzedDataProvider& in, uint64_t count) {
  if (in.ConsumeIntegralInRange<int>(0, 7) == 0) {
    return in.ConsumeRandomLengthString(64);
  }
  std::vector<float> values(count);
  for (float& v : values) v = ConsumeFloat(in);
  std::string bytes;
  common::FloatsToBytes(values, &bytes);
  return bytes;
}

// A few small tensors, sometimes ill-formed (no name, a duplicate, a zero or
// negative or huge dimension).
std::vector<common::TensorSpec> ConsumeTensors(FuzzedDataProvider& in) {
  static const char* const kNames[] = {"w", "b", "w", ""};
  std::vector<common::TensorSpec> tensors(in.ConsumeIntegralInRange(0, 3));
  for (common::TensorSpec& t : tensors) {
    t.name = kNames[in.ConsumeIntegralInRange(0, 3)];
    t.shape.resize(in.ConsumeIntegralInRange(0, 3));
    for (int64_t& d : t.shape) {
      d = in.ConsumeBool() ? in.ConsumeIntegralInRange<int64_t>(1, 6)
                           : in.ConsumeIntegral<int64_t>();
    }
    t.exempt_from_regularization = in.ConsumeBool();
  }
  return tensors;
}

// A few tables, mostly well-formed (the i-th named kNames[i], a small dim,
// settings that parse), sometimes not: a name empty or taken, a zero or
// huge dim, an initializer, optimizer or schedule that does not parse or is
// out of range, or any text.
std::vector<common::TableSpec> ConsumeTables(FuzzedDataProvider& in) {
  static const char* const kNames[] = {"emb", "bias", "emb", ""};
  static const char* const kInitializers[] = {
      "zeros", "uniform(0.5)", "normal(0.1)", "", "uniform(-1)", "normal(x)"};
  static const char* const kOptimizers[] = {"",
                                            "sgd",
                                            "momentum(momentum=0.5)",
                                            "nesterov",
                                            "adagrad",
                                            "adam",
                                            "adamw",
                                            "ftrl(ftrl_l1=0.1,ftrl_l2=0.5)",
                                            "adam(beta1=2)",
                                            "lion"};
  static const char* const kSchedules[] = {
      "",         "step:2:0.5", "cosine:4", "linear_warmup:2+constant",
      "cosine:0", "step:0:2"};
  // Mostly one of the first `valid` choices; sometimes any, or any text.
  const auto pick = [&in](const auto& choices, size_t valid) -> std::string {
    switch (in.ConsumeIntegralInRange(0, 15)) {
      case 0:
        return in.ConsumeRandomLengthString(16);
      case 1:
        return choices[in.ConsumeIntegralInRange<size_t>(
            0, std::size(choices) - 1)];
      default:
        return choices[in.ConsumeIntegralInRange<size_t>(0, valid - 1)];
    }
  };
  std::vector<common::TableSpec> tables(in.ConsumeIntegralInRange(0, 2));
  for (size_t i = 0; i < tables.size(); ++i) {
    common::TableSpec& t = tables[i];
    t.name = in.ConsumeIntegralInRange(0, 7) != 0 ? kNames[i] : pick(kNames, 4);
    t.dim = in.ConsumeIntegralInRange(0, 7) != 0
                ? in.ConsumeIntegralInRange<uint32_t>(1, 4)
                : in.ConsumeIntegral<uint32_t>();
    t.initializer = pick(kInitializers, 4);
    t.optimizer = pick(kOptimizers, 8);
    t.lr_schedule = pick(kSchedules, 4);
  }
  return tables;
}

absl::Cord Pieces(const std::string& bytes, FuzzedDataProvider& in) {
  absl::Cord cord;
  const size_t cut = in.ConsumeIntegralInRange<size_t>(0, bytes.size());
  cord.Append(bytes.substr(0, cut));
  cord.Append(bytes.substr(cut));
  return cord;
}

class Harness {
 public:
  Harness(FuzzedDataProvider& in, ShardOptions options)
      : in_(in), options_(options) {
    options_.clock = [this] { return now_; };
    shard_.emplace(options_);
    // Ids this shard holds, spread over the 64 bits, for keys that pass
    // the shard check.
    for (uint64_t k = 1; own_ids_.size() < 6; ++k) {
      const uint64_t id = k * 0x9e3779b97f4a7c15;
      if (common::ShardOfId(id, options_.num_shards) == options_.shard_index) {
        own_ids_.push_back(id);
      }
    }
  }

  ~Harness() {
    shard_->EndParkedPulls();
    for (const auto& [ticket, ended] : ended_) {
      if (ended != 1) {
        Fail("parked pull " + std::to_string(ticket) + " ended " +
             std::to_string(ended) + " times");
      }
    }
  }

  void Step() {
    const Observed before = Observe(*shard_);
    absl::Status status = Request();
    const Observed after = Observe(*shard_);
    if (!status.ok() && !(before == after)) {
      Fail("a rejected request changed the shard: " + status.ToString());
    }
    if (after.version < before.version) Fail("the version went back");
  }

 private:
  uint32_t WorkerId() {
    return in_.ConsumeIntegralInRange<uint32_t>(0, options_.max_workers + 1);
  }
  uint64_t Incarnation() { return in_.ConsumeIntegralInRange<uint64_t>(1, 3); }

  absl::Status Request() {
    switch (in_.ConsumeIntegralInRange(0, 12)) {
      case 0:
        return shard_->Register(WorkerId(), Incarnation()).status();
      case 1:
        return shard_->Heartbeat(WorkerId(), Incarnation()).status();
      case 2:
        return shard_->Leave(
            WorkerId(), Incarnation(),
            static_cast<LeaveReason>(in_.ConsumeIntegralInRange(0, 3)));
      case 3:
        return Init();
      case 4:
      case 5:
        return Push();
      case 6:
        return Pull();
      case 7:
        now_ += absl::Milliseconds(in_.ConsumeIntegralInRange(0, 20000));
        shard_->Tick(now_);
        return absl::OkStatus();
      case 8:
        if (!parked_.empty()) {
          shard_->CancelPull(parked_[in_.ConsumeIntegralInRange<size_t>(
              0, parked_.size() - 1)]);
        }
        return absl::OkStatus();
      case 9:
        return SnapshotAndRestore();
      case 10:
        return PushPull();
      case 11:
        return LeasePartition();
      default:
        if (in_.ConsumeIntegralInRange(0, 7) == 0) shard_->StopTakingPushes();
        return absl::OkStatus();
    }
  }

  absl::Status Init() {
    InitArgs args;
    args.worker_id = WorkerId();
    args.shard_index = in_.ConsumeBool() ? options_.shard_index
                                         : in_.ConsumeIntegral<uint32_t>();
    args.num_shards = in_.ConsumeBool() ? options_.num_shards
                                        : in_.ConsumeIntegral<uint32_t>();
    args.tensors = ConsumeTensors(in_);
    uint64_t count = 0;
    if (common::ValidateTensorSpecs(args.tensors).ok()) {
      count = common::BalancedPart(common::NumKeys(args.tensors),
                                   options_.num_shards, options_.shard_index)
                  .size();
    }
    // Bounded, so a huge declared model costs no memory here.
    args.values =
        Pieces(ConsumeFloatBytes(in_, std::min<uint64_t>(count, 256)), in_);
    args.tables = ConsumeTables(in_);
    args.model_seed = in_.ConsumeIntegral<uint64_t>();
    absl::StatusOr<InitResult> result = shard_->Init(args);
    if (result.ok()) tables_ = shard_->Status().tables;
    return result.status();
  }

  // Rows of a few tables, mostly declared ones with keys of this shard
  // (repeats too), sometimes any name, any id, bytes of any length.
  std::vector<SparseRows> Sparse(bool with_values) {
    std::vector<SparseRows> sparse(in_.ConsumeIntegralInRange(0, 2));
    for (SparseRows& rows : sparse) {
      uint64_t dim = 1;
      if (!tables_.empty() && in_.ConsumeIntegralInRange(0, 7) != 0) {
        const common::TableSpec& table =
            tables_[in_.ConsumeIntegralInRange<size_t>(0, tables_.size() - 1)]
                .spec;
        rows.table = table.name;
        dim = table.dim;
      } else {
        rows.table = in_.ConsumeRandomLengthString(8);
      }
      uint64_t count = 0;
      if (in_.ConsumeIntegralInRange(0, 7) == 0) {
        rows.keys = in_.ConsumeRandomLengthString(24);
      } else {
        count = in_.ConsumeIntegralInRange(0, 6);
        for (uint64_t k = 0; k < count; ++k) {
          const uint64_t id = in_.ConsumeIntegralInRange(0, 7) == 0
                                  ? in_.ConsumeIntegral<uint64_t>()
                                  : own_ids_[in_.ConsumeIntegralInRange<size_t>(
                                        0, own_ids_.size() - 1)];
          rows.keys.append(reinterpret_cast<const char*>(&id), sizeof id);
        }
      }
      if (with_values) {
        rows.values =
            ConsumeFloatBytes(in_, std::min<uint64_t>(count * dim, 256));
      } else if (in_.ConsumeIntegralInRange(0, 15) == 0) {
        rows.values = in_.ConsumeRandomLengthString(16);
      }
    }
    return sparse;
  }

  common::KeyRange Keys() {
    const common::KeyRange own = shard_->Status().keys;
    if (in_.ConsumeIntegralInRange(0, 3) != 0) return own;
    common::KeyRange keys;
    keys.begin = in_.ConsumeIntegralInRange<uint64_t>(0, own.end + 2);
    keys.end = in_.ConsumeIntegralInRange<uint64_t>(0, own.end + 2);
    return keys;
  }

  absl::Status Push() {
    PushArgs args;
    args.worker_id = WorkerId();
    args.incarnation = Incarnation();
    uint64_t& seq = next_seq_[args.worker_id];
    // Mostly the next push, sometimes a retry or a jump anywhere.
    switch (in_.ConsumeIntegralInRange(0, 5)) {
      case 0:
        args.seq = seq;
        break;
      case 1:
        args.seq = in_.ConsumeIntegral<uint64_t>();
        break;
      default:
        args.seq = ++seq;
    }
    const ShardStatus status = shard_->Status();
    args.step =
        in_.ConsumeBool() ? status.version : in_.ConsumeIntegral<uint64_t>();
    args.base_version =
        in_.ConsumeBool()
            ? status.version
            : status.version - in_.ConsumeIntegralInRange<uint64_t>(0, 2);
    args.batch_size = in_.ConsumeIntegralInRange<uint32_t>(0, 64);
    args.keys = Keys();
    args.gradient = Pieces(
        ConsumeFloatBytes(in_, std::min<uint64_t>(args.keys.size(), 256)), in_);
    args.sparse = Sparse(/*with_values=*/true);
    if (in_.ConsumeIntegralInRange(0, 3) == 0) {
      args.completes = PartitionRef{in_.ConsumeIntegralInRange<uint32_t>(0, 2),
                                    in_.ConsumeIntegralInRange<uint32_t>(0, 5)};
    }
    return shard_->Push(args).status();
  }

  // Mostly the job's small plan, sometimes any.
  absl::Status LeasePartition() {
    common::PartitionPlan plan{40, 4, 2, 7};
    if (in_.ConsumeIntegralInRange(0, 7) == 0) {
      plan = {in_.ConsumeIntegral<uint64_t>(), in_.ConsumeIntegral<uint32_t>(),
              in_.ConsumeIntegral<uint32_t>(), in_.ConsumeIntegral<uint64_t>()};
    }
    return shard_->LeasePartition(WorkerId(), Incarnation(), plan).status();
  }

  // As the service runs a PushPull: the pull only after an accepted push.
  // The request is rejected when its push is; the pull's answer is checked.
  absl::Status PushPull() {
    if (absl::Status pushed = Push(); !pushed.ok()) return pushed;
    Pull().IgnoreError();
    return absl::OkStatus();
  }

  absl::Status Pull() {
    PullArgs args;
    args.worker_id = WorkerId();
    args.min_version = in_.ConsumeBool() ? shard_->Status().version +
                                               in_.ConsumeIntegralInRange(0, 2)
                                         : in_.ConsumeIntegral<uint64_t>();
    args.clock = in_.ConsumeBool() ? in_.ConsumeIntegralInRange<uint64_t>(0, 8)
                                   : in_.ConsumeIntegral<uint64_t>();
    if (in_.ConsumeBool()) args.keys = Keys();
    args.sparse = Sparse(/*with_values=*/false);
    const ParameterShard::PullTicket ticket = shard_->NewPullTicket();
    ParameterShard::PullDone done;
    if (in_.ConsumeBool()) {
      done = [this, ticket, args](absl::StatusOr<PullResult> result) {
        ++ended_[ticket];
        if (result.ok()) CheckAnswer(args, *result);
      };
    }
    const absl::Time expires =
        now_ + absl::Milliseconds(in_.ConsumeIntegralInRange(0, 20000));
    std::optional<absl::StatusOr<PullResult>> answer =
        shard_->Pull(args, expires, ticket, done);
    if (!answer.has_value()) {
      if (done) {
        ended_.try_emplace(ticket, 0);
        parked_.push_back(ticket);
      }
      return absl::OkStatus();
    }
    if (answer->ok()) CheckAnswer(args, **answer);
    return answer->status();
  }

  void CheckAnswer(const PullArgs& args, const PullResult& result) {
    if (result.values.size() != result.keys.size() * sizeof(float)) {
      Fail("a pull's values do not match its keys");
    }
    if (result.sparse.size() != args.sparse.size()) {
      Fail("a pull answered other tables than it asked for");
    }
    for (size_t i = 0; i < result.sparse.size(); ++i) {
      const SparseRows& rows = result.sparse[i];
      if (rows.table != args.sparse[i].table ||
          rows.keys != args.sparse[i].keys) {
        Fail("a pull answered other rows than it asked for");
      }
      std::vector<float> values(rows.values.size() / sizeof(float));
      if (!common::BytesToFloats(rows.values, absl::MakeSpan(values), "rows")
               .ok()) {
        Fail("a pull's rows are not whole float32s");
      }
      if (common::FindNonFinite(values).has_value()) {
        Fail("a table row is not finite");
      }
    }
    if (!(args.keys.begin == 0 && args.keys.end == 0) &&
        !(result.keys == args.keys)) {
      Fail("a pull answered other keys than it asked for");
    }
    // Only a sync shard behind the worker (restored to an older round)
    // answers below min_version, so the worker learns where to go on.
    const bool behind_the_worker = options_.mode == ConsistencyMode::kSync &&
                                   args.min_version > result.version + 1;
    if (result.version < args.min_version && !behind_the_worker) {
      Fail("a pull was answered before its min_version");
    }
  }

  // A checkpoint of the shard, restored into a fresh one, is the same shard.
  absl::Status SnapshotAndRestore() {
    absl::StatusOr<common::ThetaFile> saved = shard_->Snapshot();
    if (!saved.ok()) return saved.status();
    const std::string bytes = common::EncodeThetaFile(*saved);
    absl::StatusOr<common::ThetaFile> read =
        common::DecodeThetaFile(bytes, "fuzz checkpoint");
    if (!read.ok())
      Fail("a snapshot does not read back: " + read.status().ToString());
    ParameterShard restored(options_);
    if (absl::Status s = restored.Restore(*std::move(read)); !s.ok()) {
      Fail("a snapshot does not restore: " + s.ToString());
    }
    if (!(Observe(restored) == Observe(*shard_))) {
      Fail("a restored snapshot holds another θ or version");
    }
    return absl::OkStatus();
  }

  FuzzedDataProvider& in_;
  ShardOptions options_;
  absl::Time now_ = absl::UnixEpoch() + absl::Hours(1);
  std::optional<ParameterShard> shard_;
  std::vector<TableStatus> tables_;  // as declared
  std::vector<uint64_t> own_ids_;
  std::map<uint32_t, uint64_t> next_seq_;
  std::map<ParameterShard::PullTicket, int> ended_;
  std::vector<ParameterShard::PullTicket> parked_;
};

std::optional<ShardOptions> ConsumeOptions(FuzzedDataProvider& in) {
  ShardOptions o;
  o.mode = static_cast<ConsistencyMode>(in.ConsumeIntegralInRange(0, 2));
  o.num_shards = in.ConsumeIntegralInRange<uint32_t>(1, 3);
  o.shard_index = in.ConsumeIntegralInRange<uint32_t>(0, o.num_shards - 1);
  o.num_workers = in.ConsumeIntegralInRange<uint32_t>(1, 4);
  o.max_workers = in.ConsumeIntegralInRange<uint32_t>(0, 6);
  o.lease_timeout = absl::Seconds(in.ConsumeIntegralInRange(1, 10));
  if (in.ConsumeBool()) {
    o.round_timeout = absl::Seconds(in.ConsumeIntegralInRange(1, 10));
  }
  if (o.mode == ConsistencyMode::kSync) {
    o.sync_quorum = in.ConsumeIntegralInRange<uint32_t>(0, o.num_workers);
  }
  if (o.mode == ConsistencyMode::kSsp) {
    o.staleness = in.ConsumeIntegralInRange<uint32_t>(0, 3);
  }
  o.update.learning_rate = in.ConsumeBool() ? 0.5f : ConsumeFloat(in);
  if (in.ConsumeBool()) o.update.l2 = in.ConsumeFloatingPointInRange(0.f, 1.f);
  if (in.ConsumeBool()) o.update.l1 = in.ConsumeFloatingPointInRange(0.f, 1.f);
  if (in.ConsumeBool()) o.update.nonnegative = true;
  if (in.ConsumeBool())
    o.update.max_norm = in.ConsumeFloatingPointInRange(0.f, 8.f);
  o.max_keys_per_shard = 64;
  // Either small enough that a few rows fill it (new rows evict old ones)
  // or room for --min_count_to_create's 1 MiB sketch. Not the 256 MiB
  // default: a table reserves its index for the limit's rows at Init, a
  // cost paid once in a server and in every run of the fuzzer.
  o.table_memory_limit = in.ConsumeBool()
                             ? in.ConsumeIntegralInRange<uint64_t>(0, 1 << 13)
                             : uint64_t{4} << 20;
  o.min_count_to_create = in.ConsumeIntegralInRange<uint32_t>(0, 3);
  if (!ValidateShardOptions(o).ok()) return std::nullopt;
  return o;
}

}  // namespace
}  // namespace ps::server

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ps::fuzz::QuietLogs();
  FuzzedDataProvider in(data, size);
  std::optional<ps::server::ShardOptions> options =
      ps::server::ConsumeOptions(in);
  if (!options.has_value()) return 0;
  ps::server::Harness harness(in, *options);
  for (int i = 0; i < 64 && in.remaining_bytes() > 0; ++i) harness.Step();
  return 0;
}
