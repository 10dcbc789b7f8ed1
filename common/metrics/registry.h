#ifndef PS_COMMON_METRICS_REGISTRY_H_
#define PS_COMMON_METRICS_REGISTRY_H_

// Counters, gauges and fixed-bucket histograms with labels, rendered in the
// Prometheus text exposition format 0.0.4. Updating a series is a few
// relaxed atomic operations (no lock): callers look a series up once, keep
// the reference, and bump it on the hot path. Looking series up and
// rendering take the registry's lock. No HTTP here: a daemon serves
// Render() at its edge (common/metrics/http_endpoint.h).

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace ps::common::metrics {

// Label names and values, in the order the family declared the names.
using Labels = std::vector<std::pair<std::string, std::string>>;

// A double updated atomically without a lock (std::atomic<double> has no
// fetch_add before C++20).
class AtomicDouble {
 public:
  void Add(double delta);
  void Set(double value) {
    bits_.store(ToBits(value), std::memory_order_relaxed);
  }
  double Get() const { return FromBits(bits_.load(std::memory_order_relaxed)); }

 private:
  static uint64_t ToBits(double value);
  static double FromBits(uint64_t bits);
  std::atomic<uint64_t> bits_{0};
};

// Only goes up, except through SetTotal.
class Counter {
 public:
  void Increment(double delta = 1) { value_.Add(delta); }
  // For a count kept elsewhere (a snapshot read at scrape time): the total
  // itself, which the owner never lets go down.
  void SetTotal(double total) { value_.Set(total); }
  double Value() const { return value_.Get(); }

 private:
  AtomicDouble value_;
};

class Gauge {
 public:
  void Set(double value) { value_.Set(value); }
  void Add(double delta) { value_.Add(delta); }
  double Value() const { return value_.Get(); }

 private:
  AtomicDouble value_;
};

// Observations counted in fixed buckets; a bucket holds the values up to
// and including its upper bound (Prometheus's `le`).
class Histogram {
 public:
  // `upper_bounds` sorted ascending, finite; +Inf is implicit.
  explicit Histogram(std::vector<double> upper_bounds);

  void Observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative_counts;  // per bound, then +Inf
    double sum = 0;
  };
  // _count is the +Inf bucket, so the two always agree.
  Snapshot Read() const;

 private:
  const std::vector<double> upper_bounds_;
  // Per bucket, not cumulative, so an observation touches one; the last is
  // +Inf.
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  AtomicDouble sum_;
};

// `count` bounds from `start`, each `factor` times the one before.
std::vector<double> ExponentialBuckets(double start, double factor, int count);

enum class MetricType { kCounter, kGauge, kHistogram };

// One metric name with a label schema; its series by label values.
template <typename Series>
class Family {
 public:
  // The series for these label values (as many as the family's label
  // names), created at the first call; the reference stays valid for the
  // registry's life.
  Series& WithLabels(const std::vector<std::string>& values)
      ABSL_LOCKS_EXCLUDED(mutex_);

 private:
  friend class Registry;
  Family(std::vector<std::string> label_names,
         std::function<std::unique_ptr<Series>()> make)
      : label_names_(std::move(label_names)), make_(std::move(make)) {}

  const std::vector<std::string> label_names_;
  const std::function<std::unique_ptr<Series>()> make_;
  mutable absl::Mutex mutex_;
  std::map<std::vector<std::string>, std::unique_ptr<Series>> series_
      ABSL_GUARDED_BY(mutex_);
};

// Owns every metric of a process and renders them. Thread-safe.
class Registry {
 public:
  // `const_labels` go on every series (e.g. shard="0").
  explicit Registry(Labels const_labels = {});

  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Names must be new and valid Prometheus names; a counter's ends in
  // _total (the exposition names it so).
  Family<Counter>& AddCounter(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names = {});
  Family<Histogram>& AddHistogram(const std::string& name,
                                  const std::string& help,
                                  std::vector<double> upper_bounds,
                                  std::vector<std::string> label_names = {});

  // Runs before every Render: sets the series whose values live elsewhere
  // (a snapshot of the shard) from one reading.
  void AddScrapeHook(std::function<void()> hook);

  // The text format 0.0.4, families in the order they were added.
  std::string Render() const;

 private:
  struct Entry {
    std::string name;
    std::string help;
    MetricType type;
    std::unique_ptr<Family<Counter>> counters;
    std::unique_ptr<Family<Gauge>> gauges;
    std::unique_ptr<Family<Histogram>> histograms;
  };
  Entry& NewEntry(const std::string& name, const std::string& help,
                  MetricType type) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const Labels const_labels_;
  mutable absl::Mutex mutex_;
  std::vector<std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::function<void()>> hooks_ ABSL_GUARDED_BY(mutex_);
};

// The exposition's escaping: HELP text escapes \ and newline; label values
// also escape ".
std::string EscapeHelp(const std::string& text);
std::string EscapeLabelValue(const std::string& value);
// A sample value: shortest round-trip decimal, +Inf, -Inf or NaN.
std::string FormatValue(double value);

// An error code as a label value: "invalid_argument" (gRPC's codes are
// absl's, number for number).
std::string StatusCodeLabel(absl::StatusCode code);

// Aborts when a family is given the wrong number of label values (a bug).
void CheckLabelCount(size_t names, size_t values);

template <typename Series>
Series& Family<Series>::WithLabels(const std::vector<std::string>& values) {
  CheckLabelCount(label_names_.size(), values.size());
  absl::MutexLock lock(&mutex_);
  std::unique_ptr<Series>& series = series_[values];
  if (series == nullptr) series = make_();
  return *series;
}

}  // namespace ps::common::metrics

#endif  // PS_COMMON_METRICS_REGISTRY_H_
