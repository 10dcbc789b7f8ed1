#ifndef PS_TOOLS_CHAOS_ANALYSIS_H_
#define PS_TOOLS_CHAOS_ANALYSIS_H_

// The recovery figures of each fault, computed from a run's timeline. The
// definitions (README, "ps_chaos") are the contract; each function here
// implements one of them.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tools/chaos/scenario.h"
#include "tools/chaos/timeline.h"

namespace ps::chaos {

// A regression a worker logged: shard `server` went back from version
// `from` to `to` (it restarted from a checkpoint).
struct VersionRegression {
  uint32_t server = 0;
  uint64_t from = 0;
  uint64_t to = 0;
};

struct FaultReport {
  int index = 0;
  int line = 0;
  std::string what;     // FaultEvent::Describe()
  std::string trigger;  // "0.9 epoch"
  bool applied = false;
  double start_s = 0;
  double start_epoch = 0;
  std::optional<double> end_s;  // when it was undone
  // Where its effects are measured: until the next fault starts or the run
  // ends.
  double window_end_s = 0;
  // The window ends because the first worker finished training: a gap in
  // progress running into that end is the wind-down's, not a stall.
  bool window_ends_at_finish = false;
  std::optional<double> detect_s;
  std::optional<double> stall_s;
  bool stall_open = false;  // no progress again before the window closed
  std::optional<double> pre_fault_samples_per_s;
  std::optional<double> recover_s;
  // Throughput while the fault was on (until its end, or the window's end
  // for a fault that is never undone).
  std::optional<double> fault_samples_per_s;
  // Throughput from the fault's end (or, for one never undone, the end of
  // its stall) to the window's end: what the job settled at.
  std::optional<double> post_fault_samples_per_s;
  uint64_t updates_lost = 0;
  std::optional<double> accuracy;           // at the window's end
  std::optional<double> baseline_accuracy;  // the baseline at that epoch
  std::optional<double> accuracy_delta;
  std::vector<std::string> notes;  // fallbacks, skips
};

// Seconds of throughput measured before a fault, and the window a recovered
// throughput must be held over (or what is left of the fault's window after
// the stall, when that is shorter).
inline constexpr double kPreFaultWindowS = 5;
inline constexpr double kRecoveryWindowS = 2;
inline constexpr double kRecoveredFraction = 0.9;

// Fills the measured fields of `report` (index, targets, start, end and
// window already set) from `run`; `baseline` may be null.
void MeasureFault(const Timeline& run, const Timeline* baseline,
                  const FaultEvent& fault,
                  const std::vector<VersionRegression>& regressions,
                  FaultReport& report);

// Accuracy of `timeline` at `epoch`, interpolated between evaluations;
// nullopt outside the evaluated range.
std::optional<double> AccuracyAtEpoch(const Timeline& timeline, double epoch);

// How a run ended, judged over its last epochs rather than by its final
// evaluation alone: one evaluation of the final θ moves by ±0.3–0.5 points
// from run to run (with a sync quorum, which gradients make a round depends
// on their arrival), so a bar on it is a coin toss.
struct EndAccuracy {
  double accuracy = 0;  // mean of the evaluations in the span
  int evaluations = 0;  // how many
};

// Epochs before a run's last evaluation whose evaluations make its end.
inline constexpr double kEndSpanEpochs = 0.5;

// The mean accuracy of the evaluations at epochs within `span` of the last
// evaluation's (inclusive); nullopt for a run never evaluated.
std::optional<EndAccuracy> MeasureEndAccuracy(const Timeline& timeline,
                                              double span = kEndSpanEpochs);

// The regressions in a worker's log ("H:P went back from version A to B").
std::vector<VersionRegression> ParseRegressions(
    const std::string& log, const std::vector<std::string>& server_addresses);

}  // namespace ps::chaos

#endif  // PS_TOOLS_CHAOS_ANALYSIS_H_
