#ifndef PS_SERVER_SHARD_OPTIONS_H_
#define PS_SERVER_SHARD_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/consistency_mode.h"
#include "common/lr_schedule.h"
#include "common/optimizer.h"
#include "common/theta_file.h"
#include "common/update_rule.h"

namespace ps::server {

// The mode's enum lives in common: checkpoints and the wire share it.
using common::ConsistencyMode;
using common::ConsistencyModeName;
using common::ParseConsistencyMode;

struct ShardOptions {
  // Which contiguous part of the key space this server owns. Default: 0 of 1
  uint32_t shard_index = 0;
  uint32_t num_shards = 1;
  // Workers that must register before the first sync round may close.
  // Default: 1
  uint32_t num_workers = 1;
  // Worker ids accepted: [0, max(num_workers, max_workers)), so workers can
  // join a running job. Default: 256
  uint32_t max_workers = 256;
  // Default: kSync
  ConsistencyMode mode = ConsistencyMode::kSync;
  // A worker that has not heartbeaten for this long stops counting toward
  // rounds and SSP bounds. Default: 5 s
  absl::Duration lease_timeout = absl::Seconds(5);
  // Sync: close a round with the first k gradients (backup workers);
  // 0 waits for every live worker. Default: 0
  uint32_t sync_quorum = 0;
  // Sync: close a round this long after it opened (or after `num_workers`
  // registered, if later) with what arrived, if anything did. Default: never
  absl::Duration round_timeout = absl::InfiniteDuration();
  // SSP: the staleness bound s. Default: 0
  uint32_t staleness = 0;
  // The regularized update. Default: plain SGD, α = 0.1
  common::UpdateOptions update;
  // The optimizer and learning-rate schedule of every dense tensor and
  // table that does not declare its own (TensorSpec::optimizer,
  // ::lr_schedule; TableSpec's likewise); the
  // scheduled step is update.learning_rate × LrFactor(schedule, version).
  // Default: sgd, constant (exactly the regularized update above)
  common::OptimizerOptions optimizer;
  common::LrSchedule lr_schedule;
  // The most keys this shard holds, whatever a request or checkpoint
  // declares: θ alone is 4 bytes a key, sync keeps a θ-sized slot per
  // worker on top. Default: 2^26 (256 MiB of θ)
  uint64_t max_keys_per_shard = uint64_t{1} << 26;
  // Pulls that may wait at once (each holds a reactor and its call's
  // buffers); more get RESOURCE_EXHAUSTED. A worker waits for one pull per
  // shard, so 1024 covers --max_workers' default four times. Default: 1024
  uint32_t max_parked_pulls = 1024;
  // Of those, the most one worker id may hold: one, plus retries whose
  // predecessor's cancellation has not arrived yet. Default: 4
  uint32_t max_parked_pulls_per_worker = 4;
  // The most bytes the shard's sparse tables hold together; each table
  // gets a share in proportion to its row's bytes (θ and optimizer state),
  // so all tables hold about as many rows. Past it, the least recently
  // updated rows are evicted. Default: 256 MiB
  uint64_t table_memory_limit = uint64_t{256} << 20;
  // A table row is created at the update that brings its id's sightings to
  // this count; before that the id reads as its initial value. Default: 1
  uint32_t min_count_to_create = 1;
  // Where the shard reads the time (leases, round timeouts, heartbeat
  // ages). Default: the real clock
  common::Clock clock = common::RealClock();
};

absl::Status ValidateShardOptions(const ShardOptions& options);

// Room for a request's fields beside its θ-sized bytes: an Init's tensor
// declarations, a push's numbers.
inline constexpr uint64_t kRequestFieldsBytes = 1 << 20;
// The largest request a server with `max_keys_per_shard` accepts (an Init or
// a push carrying that many float32 values, and its fields), capped at
// gRPC's 2 GiB − 1: gRPC refuses a larger one from its length prefix,
// before reading it.
int MaxRequestBytes(uint64_t max_keys_per_shard);
// The most sparse keys one request may carry over all its tables.
inline constexpr uint64_t kMaxSparseKeysPerRequest = uint64_t{1} << 22;
// A Pull request is a few numbers; longer ones are refused unparsed.
inline constexpr uint64_t kMaxPullRequestBytes = 4096;
// ... and, for a model with sparse tables, its keys (8 bytes each, with
// room for the tables' names).
inline constexpr uint64_t kMaxSparsePullRequestBytes =
    kMaxPullRequestBytes + kMaxSparseKeysPerRequest * sizeof(uint64_t) +
    (64 << 10);

// Empty when `saved` was written under the rules `options` set (mode,
// staleness, quorum, update rule, optimizer, lr_schedule); otherwise one line
// listing each change, "mode async → sync, lr 0.1 → 1", for a refusal at
// start-up.
std::string DescribeRuleChange(const common::ThetaFile& saved,
                               const ShardOptions& options);

}  // namespace ps::server

#endif  // PS_SERVER_SHARD_OPTIONS_H_
