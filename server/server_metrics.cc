#include "server/server_metrics.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"

namespace ps::server {
namespace {

using common::metrics::Counter;
using common::metrics::Family;

constexpr std::array<const char*, kNumRpcMethods> kMethodNames = {
    "Register",   "Heartbeat",  "Leave",          "Init",       "Pull",
    "Push",       "PushPull",   "Status",         "Checkpoint", "ExportRows",
    "PushStream", "PullStream", "LeasePartition", "InitStream"};

constexpr std::array<const char*, 4> kPushOutcomes = {"applied", "accepted",
                                                      "duplicate", "stale"};

// From 100 µs (a small pull on loopback) to a minute (a pull parked for its
// round, up to --max_pull_wait).
std::vector<double> RpcDurationBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
}

// The labels of RoundClose's closing reasons, by RoundCloseIndex.
constexpr std::array<const char*, 3> kRoundCloseNames = {"all_live", "quorum",
                                                         "timeout"};
size_t RoundCloseIndex(RoundClose why) {
  switch (why) {
    case RoundClose::kQuorum:
      return 1;
    case RoundClose::kTimeout:
      return 2;
    case RoundClose::kAllLive:
    case RoundClose::kNotYet:
      break;
  }
  return 0;
}

size_t CodeIndex(absl::StatusCode code) {
  const int value = static_cast<int>(code);
  return value >= 0 && value < 17 ? static_cast<size_t>(value) : 2;  // UNKNOWN
}

}  // namespace

template <size_t N>
Counter& ServerMetrics::Cached(std::array<std::atomic<Counter*>, N>& cache,
                               size_t index, Family<Counter>& family,
                               const std::string& label) {
  Counter* counter = cache[index].load(std::memory_order_acquire);
  if (counter == nullptr) {
    // Two racing first calls get the same series from the family.
    counter = &family.WithLabels({label});
    cache[index].store(counter, std::memory_order_release);
  }
  return *counter;
}

ServerMetrics::ServerMetrics(const ParameterShard* shard,
                             const Checkpointer* checkpointer,
                             uint32_t shard_index, const Replicator* replicator)
    : shard_(shard),
      checkpointer_(checkpointer),
      replicator_(replicator),
      registry_(common::metrics::Labels{{"shard", absl::StrCat(shard_index)}}) {
  auto& duration = registry_.AddHistogram(
      "ps_server_rpc_duration_seconds",
      "Time from a call's arrival to its answer, by method; a parked pull "
      "counts its wait.",
      RpcDurationBuckets(), {"method"});
  auto& received = registry_.AddCounter(
      "ps_server_received_bytes_total",
      "Request bytes of Init, Push, Pull, PushPull and the streamed calls, "
      "by method.",
      {"method"});
  auto& sent = registry_.AddCounter(
      "ps_server_sent_bytes_total",
      "Response bytes of Init, Push, Pull, PushPull and the streamed calls, "
      "by method.",
      {"method"});
  for (size_t m = 0; m < kNumRpcMethods; ++m) {
    rpc_duration_[m] = &duration.WithLabels({kMethodNames[m]});
  }
  // The typed methods' few bytes are not worth a series each.
  for (RpcMethod method : {RpcMethod::kInit, RpcMethod::kPull, RpcMethod::kPush,
                           RpcMethod::kPushPull, RpcMethod::kPushStream,
                           RpcMethod::kPullStream, RpcMethod::kInitStream}) {
    const size_t m = static_cast<size_t>(method);
    received_bytes_[m] = &received.WithLabels({kMethodNames[m]});
    sent_bytes_[m] = &sent.WithLabels({kMethodNames[m]});
  }
  pushes_ = &registry_.AddCounter(
      "ps_server_pushes_total",
      "Pushes (Push and PushPull) by outcome: applied, accepted (into the "
      "open sync round), duplicate, stale, or the error code.",
      {"outcome"});
  // Created now so a query finds them before the first push.
  for (size_t o = 0; o < kPushOutcomes.size(); ++o) {
    Cached(push_series_, o, *pushes_, kPushOutcomes[o]);
  }
  pulls_ = &registry_.AddCounter(
      "ps_server_pulls_total",
      "Pulls (Pull and PushPull) answered, by outcome: ok or the error code.",
      {"outcome"});
  Cached(pull_series_, 0, *pulls_, "ok");
  parked_pulls_ = &registry_
                       .AddGauge("ps_server_parked_pulls",
                                 "Pulls waiting for their version now.")
                       .WithLabels({});
  pushpull_streams_ =
      &registry_
           .AddGauge("ps_server_pushpull_streams",
                     "PushPullStream calls open now: workers sending their "
                     "PushPulls on a long-lived stream.")
           .WithLabels({});

  version_ = &registry_
                  .AddGauge("ps_server_version",
                            "θ's version: closed rounds (sync) or applied "
                            "pushes (async, ssp).")
                  .WithLabels({});
  initialized_ = &registry_
                      .AddGauge("ps_server_initialized",
                                "1 once a worker declared the model.")
                      .WithLabels({});
  keys_ = &registry_.AddGauge("ps_server_keys", "Keys of θ this shard holds.")
               .WithLabels({});
  samples_applied_ =
      &registry_
           .AddCounter("ps_server_samples_applied_total",
                       "Examples whose gradients were applied to θ.")
           .WithLabels({});
  live_workers_ = &registry_
                       .AddGauge("ps_server_live_workers",
                                 "Workers whose lease is current.")
                       .WithLabels({});
  registered_workers_ =
      &registry_
           .AddGauge("ps_server_registered_workers",
                     "Workers this shard has seen, live or not.")
           .WithLabels({});
  expected_workers_ =
      &registry_
           .AddGauge("ps_server_expected_workers",
                     "Workers the first sync round waits for (--num_workers).")
           .WithLabels({});
  leases_expired_ = &registry_
                         .AddCounter("ps_server_leases_expired_total",
                                     "Worker leases that ran out.")
                         .WithLabels({});
  rounds_closed_ = &registry_.AddCounter(
      "ps_server_sync_rounds_total",
      "Sync rounds closed, by what closed them: all_live, quorum or timeout.",
      {"closed_by"});
  auto& round_duration = registry_.AddHistogram(
      "ps_server_sync_round_duration_seconds",
      "Sync: how long each round was open (from when it could first close) "
      "before it closed, by what closed it.",
      RpcDurationBuckets(), {"closed_by"});
  for (RoundClose why :
       {RoundClose::kAllLive, RoundClose::kQuorum, RoundClose::kTimeout}) {
    round_duration_[RoundCloseIndex(why)] =
        &round_duration.WithLabels({kRoundCloseNames[RoundCloseIndex(why)]});
  }
  push_staleness_ =
      &registry_
           .AddHistogram(
               "ps_server_push_staleness_versions",
               "Async and SSP: versions applied between the θ a push's "
               "gradient was computed from and the push's own application.",
               {0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1024})
           .WithLabels({});
  round_gradients_ = &registry_
                          .AddGauge("ps_server_round_gradients",
                                    "Sync: gradients in the open round.")
                          .WithLabels({});
  table_rows_ = &registry_.AddGauge("ps_server_table_rows",
                                    "Rows a sparse table holds.", {"table"});
  table_memory_bytes_ = &registry_.AddGauge(
      "ps_server_table_memory_bytes",
      "Bytes a sparse table holds: rows, optimizer state, index, recency "
      "and sighting counts.",
      {"table"});
  table_memory_limit_bytes_ = &registry_.AddGauge(
      "ps_server_table_memory_limit_bytes",
      "A sparse table's share of --table_memory_limit.", {"table"});
  table_rows_created_ =
      &registry_.AddCounter("ps_server_table_rows_created_total",
                            "Rows a sparse table created.", {"table"});
  table_rows_evicted_ = &registry_.AddCounter(
      "ps_server_table_rows_evicted_total",
      "Least recently updated rows evicted to stay under the memory limit.",
      {"table"});
  table_rows_refused_ = &registry_.AddCounter(
      "ps_server_table_rows_refused_total",
      "Row updates refused for ids seen fewer than --min_count_to_create "
      "times.",
      {"table"});
  worker_staleness_ = &registry_.AddGauge(
      "ps_server_worker_staleness_clocks",
      "Clocks a registered worker is behind the fastest live one.", {"worker"});
  max_read_clock_gap_ =
      &registry_
           .AddGauge("ps_server_max_read_clock_gap_clocks",
                     "SSP: the largest reader-to-slowest clock gap a pull "
                     "was answered with.")
           .WithLabels({});
  auto& pulls_refused = registry_.AddCounter(
      "ps_server_pulls_refused_total",
      "Pulls refused with RESOURCE_EXHAUSTED because the parked pulls' "
      "bound was reached: the server's (--max_parked_pulls) or one worker "
      "id's.",
      {"bound"});
  pulls_refused_over_total_ = &pulls_refused.WithLabels({"total"});
  pulls_refused_over_worker_ = &pulls_refused.WithLabels({"per_worker"});
  checkpoint_age_ = &registry_.AddGauge(
      "ps_server_checkpoint_age_seconds",
      "Since the last checkpoint finished; absent before one.");
  checkpoint_duration_ = &registry_.AddGauge(
      "ps_server_checkpoint_duration_seconds",
      "How long the last checkpoint took to write and sync.");
  checkpoint_bytes_ = &registry_.AddGauge("ps_server_checkpoint_bytes",
                                          "Size of the last checkpoint file.");
  checkpoint_version_ = &registry_.AddGauge(
      "ps_server_checkpoint_version", "θ's version in the last checkpoint.");
  if (replicator_ != nullptr) {
    replica_role_ = &registry_.AddGauge(
        "ps_replica_role",
        "1 for this replica's role in its shard (primary, backup, or joining: "
        "copying the primary's state), 0 for the others.",
        {"role"});
    replica_term_ = &registry_
                         .AddGauge("ps_replica_term",
                                   "The replication term this replica is in.")
                         .WithLabels({});
    replica_failovers_ =
        &registry_
             .AddCounter("ps_replica_failovers_total",
                         "Times a new primary took over this shard while this "
                         "replica ran.")
             .WithLabels({});
    replica_sent_bytes_ =
        &registry_
             .AddCounter("ps_replica_sent_bytes_total",
                         "Primary: bytes of changes sent to backups "
                         "(retries and heartbeats included).")
             .WithLabels({});
  }
  registry_.AddScrapeHook([this] { Scrape(); });
}

void ServerMetrics::EndCall(const RpcCall& call, const absl::Status& status,
                            size_t response_bytes) {
  const size_t m = static_cast<size_t>(call.method);
  rpc_duration_[m]->Observe(std::chrono::duration<double>(
                                std::chrono::steady_clock::now() - call.start)
                                .count());
  if (received_bytes_[m] != nullptr) {
    received_bytes_[m]->Increment(call.request_bytes);
  }
  if (sent_bytes_[m] != nullptr && status.ok()) {
    sent_bytes_[m]->Increment(response_bytes);
  }
}

void ServerMetrics::CountPush(const absl::Status& status, PushOutcome outcome) {
  if (status.ok()) {
    const size_t o = static_cast<size_t>(outcome);
    Cached(push_series_, o, *pushes_, kPushOutcomes[o]).Increment();
    return;
  }
  const size_t c = CodeIndex(status.code());
  Cached(push_series_, kPushOutcomes.size() + c, *pushes_,
         common::metrics::StatusCodeLabel(status.code()))
      .Increment();
}

void ServerMetrics::CountPull(const absl::Status& status) {
  const size_t c = CodeIndex(status.code());
  Cached(pull_series_, c, *pulls_,
         status.ok() ? "ok" : common::metrics::StatusCodeLabel(status.code()))
      .Increment();
}

void ServerMetrics::RoundClosed(RoundClose why, absl::Duration open_for) {
  if (why == RoundClose::kNotYet) return;
  round_duration_[RoundCloseIndex(why)]->Observe(
      absl::ToDoubleSeconds(open_for));
}

void ServerMetrics::PushApplied(uint64_t staleness) {
  push_staleness_->Observe(static_cast<double>(staleness));
}

void ServerMetrics::Scrape() {
  if (replicator_ != nullptr) {
    const Replicator::State r = replicator_->state();
    const absl::string_view role = r.primary  ? "primary"
                                   : r.joined ? "backup"
                                              : "joining";
    for (const absl::string_view name : {"primary", "backup", "joining"}) {
      replica_role_->WithLabels({std::string(name)}).Set(name == role ? 1 : 0);
    }
    replica_term_->Set(r.term);
    replica_failovers_->SetTotal(r.failovers);
    replica_sent_bytes_->SetTotal(r.bytes_sent);
  }
  const ShardStatus s = shard_->Status();
  version_->Set(s.version);
  initialized_->Set(s.initialized ? 1 : 0);
  keys_->Set(s.keys.end - s.keys.begin);
  samples_applied_->SetTotal(s.samples_applied);
  live_workers_->Set(s.live_workers);
  registered_workers_->Set(s.workers.size());
  expected_workers_->Set(s.options.num_workers);
  leases_expired_->SetTotal(s.leases_expired);
  rounds_closed_->WithLabels({kRoundCloseNames[0]})
      .SetTotal(s.rounds_closed_all_live);
  rounds_closed_->WithLabels({kRoundCloseNames[1]})
      .SetTotal(s.rounds_closed_by_quorum);
  rounds_closed_->WithLabels({kRoundCloseNames[2]})
      .SetTotal(s.rounds_closed_by_timeout);
  round_gradients_->Set(s.round_gradients);
  for (const TableStatus& t : s.tables) {
    const std::vector<std::string> table = {t.spec.name};
    table_rows_->WithLabels(table).Set(t.rows);
    table_memory_bytes_->WithLabels(table).Set(t.memory_bytes);
    table_memory_limit_bytes_->WithLabels(table).Set(t.memory_limit_bytes);
    table_rows_created_->WithLabels(table).SetTotal(t.counters.created);
    table_rows_evicted_->WithLabels(table).SetTotal(t.counters.evicted);
    table_rows_refused_->WithLabels(table).SetTotal(t.counters.refused);
  }
  for (const common::WorkerRecord& w : s.workers) {
    worker_staleness_->WithLabels({absl::StrCat(w.worker_id)})
        .Set(s.Staleness(w));
  }
  max_read_clock_gap_->Set(s.max_read_clock_gap);
  pulls_refused_over_total_->SetTotal(s.pulls_refused_over_total);
  pulls_refused_over_worker_->SetTotal(s.pulls_refused_over_worker);
  if (checkpointer_ == nullptr) return;
  if (std::optional<Checkpointer::LastSave> last = checkpointer_->last_save()) {
    checkpoint_age_->WithLabels({}).Set(
        absl::ToDoubleSeconds(absl::Now() - last->finished));
    checkpoint_duration_->WithLabels({}).Set(
        absl::ToDoubleSeconds(last->saved.took));
    checkpoint_bytes_->WithLabels({}).Set(last->saved.bytes);
    checkpoint_version_->WithLabels({}).Set(last->saved.version);
  }
}

}  // namespace ps::server
