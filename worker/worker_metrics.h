#ifndef PS_WORKER_WORKER_METRICS_H_
#define PS_WORKER_WORKER_METRICS_H_

#include <cstdint>

#include "common/metrics/registry.h"
#include "grpcpp/support/status.h"
#include "worker/parameter_store.h"

namespace ps::worker {

// A worker's Prometheus metrics: where a step's time goes, how many
// examples it trained on, its pushes, pulls and retried RPCs. Every series
// carries rank="<rank>". The trainer updates them on its own thread;
// retries are counted from the client's threads. Thread-safe.
class WorkerMetrics {
 public:
  explicit WorkerMetrics(uint32_t rank);

  const common::metrics::Registry& registry() const { return registry_; }

  // One training step: `compute_seconds` making the batch's gradient,
  // `push_pull_seconds` in the Push or PushPull call less `wait_seconds`,
  // the servers holding its pull until the sync round closed or the
  // slowest worker caught up (they say how long: PullResponse.waited_us),
  // `other_seconds` the rest (shuffling, queueing rank 0's evaluation), for
  // `examples` examples.
  void CountStep(double compute_seconds, double push_pull_seconds,
                 double wait_seconds, double other_seconds, uint32_t examples);
  // Pulls of θ from every shard (the first, and each PushPull's).
  void CountPull() { pulls_->Increment(); }
  // The client's push tallies so far (one per shard push).
  void SetPushCounts(const PushCounts& counts);
  // A failed RPC attempt that will be retried.
  void CountRetry(grpc::StatusCode code);

 private:
  common::metrics::Registry registry_;
  common::metrics::Histogram* compute_;
  common::metrics::Histogram* push_pull_;
  common::metrics::Histogram* wait_;
  common::metrics::Histogram* other_;
  common::metrics::Counter* steps_;
  common::metrics::Counter* samples_;
  common::metrics::Counter* pulls_;
  common::metrics::Counter* pushes_applied_;
  common::metrics::Counter* pushes_stale_;
  common::metrics::Counter* pushes_duplicate_;
  common::metrics::Counter* reregistrations_;
  common::metrics::Family<common::metrics::Counter>* retries_;
};

}  // namespace ps::worker

#endif  // PS_WORKER_WORKER_METRICS_H_
