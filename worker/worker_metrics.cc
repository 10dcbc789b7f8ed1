#include "worker/worker_metrics.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace ps::worker {
namespace {

// 100 µs (a small model's step) to a minute (a sync step waiting out a
// lease timeout).
std::vector<double> StepBuckets() {
  return common::metrics::ExponentialBuckets(0.0001, 2.5, 14);
}

}  // namespace

WorkerMetrics::WorkerMetrics(uint32_t rank)
    : registry_(common::metrics::Labels{{"rank", absl::StrCat(rank)}}) {
  auto& phase = registry_.AddHistogram(
      "ps_worker_step_phase_seconds",
      "A training step's time by phase: compute (the batch's gradient), "
      "push_pull (the Push or PushPull call, less its wait), wait (the "
      "servers holding the pull for the sync round or the slowest worker) "
      "and other.",
      StepBuckets(), {"phase"});
  compute_ = &phase.WithLabels({"compute"});
  push_pull_ = &phase.WithLabels({"push_pull"});
  wait_ = &phase.WithLabels({"wait"});
  other_ = &phase.WithLabels({"other"});
  steps_ = &registry_.AddCounter("ps_worker_steps_total", "Steps taken.")
                .WithLabels({});
  samples_ = &registry_
                  .AddCounter("ps_worker_samples_total",
                              "Examples this worker computed gradients of.")
                  .WithLabels({});
  pulls_ =
      &registry_
           .AddCounter("ps_worker_pulls_total", "Pulls of θ from every shard.")
           .WithLabels({});
  auto& pushes = registry_.AddCounter(
      "ps_worker_pushes_total",
      "Shard pushes by outcome: applied (or accepted into the sync round), "
      "stale (the round had closed) or duplicate.",
      {"outcome"});
  pushes_applied_ = &pushes.WithLabels({"applied"});
  pushes_stale_ = &pushes.WithLabels({"stale"});
  pushes_duplicate_ = &pushes.WithLabels({"duplicate"});
  reregistrations_ =
      &registry_
           .AddCounter("ps_worker_reregistrations_total",
                       "Pushes that found the lease expired and registered "
                       "again.")
           .WithLabels({});
  retries_ = &registry_.AddCounter(
      "ps_worker_rpc_retries_total",
      "Failed RPC attempts that were retried, by gRPC code.", {"code"});
}

void WorkerMetrics::CountStep(double compute_seconds, double push_pull_seconds,
                              double wait_seconds, double other_seconds,
                              uint32_t examples) {
  compute_->Observe(compute_seconds);
  push_pull_->Observe(push_pull_seconds);
  wait_->Observe(wait_seconds);
  other_->Observe(other_seconds);
  steps_->Increment();
  samples_->Increment(examples);
}

void WorkerMetrics::SetPushCounts(const PushCounts& counts) {
  pushes_applied_->SetTotal(counts.applied_or_accepted);
  pushes_stale_->SetTotal(counts.stale);
  pushes_duplicate_->SetTotal(counts.duplicate);
  reregistrations_->SetTotal(counts.reregistered);
}

void WorkerMetrics::CountRetry(grpc::StatusCode code) {
  // Rare: the family's lookup is cheap enough here.
  retries_
      ->WithLabels({common::metrics::StatusCodeLabel(
          static_cast<absl::StatusCode>(code))})
      .Increment();
}

}  // namespace ps::worker
