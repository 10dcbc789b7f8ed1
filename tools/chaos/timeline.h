#ifndef PS_TOOLS_CHAOS_TIMELINE_H_
#define PS_TOOLS_CHAOS_TIMELINE_H_

// What one run looked like over time: the servers' Status polled every few
// hundred milliseconds, rank 0's evaluations, and the fault events, all on
// the runner's clock (seconds since the workers were started).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace ps::chaos {

struct ServerSample {
  bool up = false;  // answered Status in time
  uint64_t version = 0;
  uint64_t samples_applied = 0;
  uint32_t live_workers = 0;
  uint64_t leases_expired = 0;
};

struct Sample {
  double t = 0;
  std::vector<ServerSample> servers;  // one per shard, in shard order
};

struct Evaluation {
  double t = 0;  // when the runner read it
  double epoch = 0;
  double accuracy = 0;
  uint64_t samples = 0;
};

struct EventRow {
  double t = 0;
  int fault = -1;     // index into the scenario's faults
  bool start = true;  // false: the fault was undone (cont, heal, …)
  std::string text;   // "kill worker 2", "end: stop worker 1"
};

// timeline.csv's samples_per_s: examples per second over this many seconds
// before the row.
inline constexpr double kRateWindowS = 0.6;

struct Timeline {
  std::vector<Sample> samples;
  std::vector<Evaluation> evaluations;
  std::vector<EventRow> events;
  double train_size = 60000;  // examples per epoch

  // Examples applied at sample i: the largest count among the servers that
  // answered (every push goes to every shard, so they agree but for a
  // shard restored from a checkpoint, which restarts lower).
  std::optional<uint64_t> Applied(size_t i) const;
  // Training progress at sample i: the lowest version among the servers,
  // or nullopt when one did not answer (no progress can be claimed).
  std::optional<uint64_t> Progress(size_t i) const;
  // Examples per second over the samples in [from, to]; nullopt when fewer
  // than two samples with an answer fall in it.
  std::optional<double> Rate(double from, double to) const;
  // Rank 0's accuracy at the last evaluation at or before time t.
  std::optional<double> AccuracyAt(double t) const;
  // Epochs at time t, from the servers' counts.
  double EpochAt(size_t i) const;
};

// timeline.csv: one row per poll and one per fault event.
absl::Status WriteTimelineCsv(const Timeline& timeline,
                              const std::string& path);

}  // namespace ps::chaos

#endif  // PS_TOOLS_CHAOS_TIMELINE_H_
