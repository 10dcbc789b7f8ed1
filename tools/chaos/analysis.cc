#include "tools/chaos/analysis.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace ps::chaos {
namespace {

bool HitsWorkers(const FaultEvent& fault) {
  for (const ProcessRef& t : fault.targets) {
    if (t.kind == ProcessRef::Kind::kWorker) return true;
  }
  return !fault.partition.empty();
}

// The last sample before time t, if any.
std::optional<size_t> LastBefore(const Timeline& run, double t) {
  std::optional<size_t> last;
  for (size_t i = 0; i < run.samples.size() && run.samples[i].t < t; ++i) {
    last = i;
  }
  return last;
}

// Detection: the first poll after the fault at which the servers show it:
// a worker lease expired (faults on workers, partitions), or a target
// server does not answer. Fewer live workers alone is no detection: a
// worker that finished leaves.
std::optional<double> Detect(const Timeline& run, const FaultEvent& fault,
                             const FaultReport& r) {
  std::vector<uint64_t> expired_before;
  if (std::optional<size_t> before = LastBefore(run, r.start_s)) {
    for (const ServerSample& s : run.samples[*before].servers) {
      expired_before.push_back(s.leases_expired);
    }
  }
  for (const Sample& sample : run.samples) {
    if (sample.t < r.start_s || sample.t > r.window_end_s) continue;
    for (const ProcessRef& t : fault.targets) {
      if (t.kind == ProcessRef::Kind::kServer &&
          t.index < sample.servers.size() && !sample.servers[t.index].up) {
        return sample.t - r.start_s;
      }
    }
    if (!HitsWorkers(fault)) continue;
    for (size_t i = 0; i < sample.servers.size(); ++i) {
      const ServerSample& s = sample.servers[i];
      const uint64_t before = i < expired_before.size() ? expired_before[i] : 0;
      if (s.up && s.leases_expired > before) return sample.t - r.start_s;
    }
  }
  return std::nullopt;
}

}  // namespace

void MeasureFault(const Timeline& run, const Timeline* baseline,
                  const FaultEvent& fault,
                  const std::vector<VersionRegression>& regressions,
                  FaultReport& r) {
  if (!r.applied) return;
  r.detect_s = Detect(run, fault, r);

  // Stall: the longest time without version progress (every server
  // answering, the lowest version higher than the last seen), counted from
  // the fault. A gap still going when the window closes counts up to the
  // next fault's start; at the run's end it is open; at the first worker's
  // finish it is the wind-down's and does not count.
  std::optional<uint64_t> last_value;
  double last_progress = r.start_s;
  double longest = 0;
  double stall_end = r.start_s;
  for (size_t i = 0; i < run.samples.size(); ++i) {
    const double t = run.samples[i].t;
    const std::optional<uint64_t> v = run.Progress(i);
    if (!v) continue;
    const bool progressed = last_value && *v > *last_value;
    last_value = v;
    if (t < r.start_s || !progressed) continue;
    if (t > r.window_end_s) break;
    if (t - last_progress > longest) {
      longest = t - last_progress;
      stall_end = t;
    }
    last_progress = t;
  }
  const double last_t = run.samples.empty() ? r.start_s : run.samples.back().t;
  const double trailing = std::min(r.window_end_s, last_t) - last_progress;
  if (trailing > longest && !r.window_ends_at_finish) {
    longest = trailing;
    r.stall_open = true;
    stall_end = r.window_end_s;
  }
  r.stall_s = longest;

  // Recovery: the first interval of kRecoveryWindowS seconds, starting
  // after the stall, whose throughput is at least kRecoveredFraction of the
  // throughput over the kPreFaultWindowS seconds before the fault. A short
  // run can end (its first worker finish) less than kRecoveryWindowS after
  // the stall: then the interval is what is left of the window, or a job
  // whose throughput plainly came back would never count as recovered.
  // The pre-fault window starts no earlier than training did (the first
  // sample with examples applied): data loading is not throughput.
  double trained_from = r.start_s;
  for (size_t i = 0; i < run.samples.size(); ++i) {
    if (run.Applied(i).value_or(0) > 0) {
      trained_from = run.samples[i].t;
      break;
    }
  }
  r.pre_fault_samples_per_s =
      run.Rate(std::max(r.start_s - kPreFaultWindowS, trained_from), r.start_s);
  if (r.pre_fault_samples_per_s && *r.pre_fault_samples_per_s > 0 &&
      !r.stall_open) {
    const double recovery_from = std::max(stall_end, r.start_s);
    const double interval =
        std::min(kRecoveryWindowS, r.window_end_s - recovery_from);
    bool judged = false;
    for (const Sample& sample : run.samples) {
      if (sample.t < recovery_from) continue;
      // The slack keeps the one interval of a short window despite rounding.
      if (sample.t + interval > r.window_end_s + 1e-9) break;
      const std::optional<double> rate =
          run.Rate(sample.t, sample.t + interval);
      judged = judged || rate.has_value();
      if (rate && *rate >= kRecoveredFraction * *r.pre_fault_samples_per_s) {
        r.recover_s = sample.t - r.start_s;
        break;
      }
    }
    if (judged && interval < kRecoveryWindowS) {
      r.notes.push_back(absl::StrFormat(
          "recovery judged over the %.2f s left in the window after the "
          "stall (less than %.0f s)",
          interval, kRecoveryWindowS));
    }
  }

  const double fault_end =
      std::min(r.end_s.value_or(r.window_end_s), r.window_end_s);
  r.fault_samples_per_s = run.Rate(r.start_s, fault_end);
  if (!r.stall_open) {
    r.post_fault_samples_per_s = run.Rate(
        r.end_s ? std::max(*r.end_s, stall_end) : stall_end, r.window_end_s);
  }

  // Updates lost: versions a server went back by, as the servers' Status
  // showed it, or as exactly as a worker logged it.
  for (size_t server = 0;
       !run.samples.empty() && server < run.samples[0].servers.size();
       ++server) {
    std::optional<uint64_t> previous;
    for (const Sample& sample : run.samples) {
      if (sample.t > r.window_end_s) break;
      const ServerSample& s = sample.servers[server];
      if (!s.up) continue;
      if (sample.t >= r.start_s && previous && s.version < *previous) {
        uint64_t lost = *previous - s.version;
        for (const VersionRegression& logged : regressions) {
          if (logged.server == server && logged.to == s.version &&
              logged.from > s.version) {
            lost = std::max(lost, logged.from - logged.to);
          }
        }
        r.updates_lost += lost;
      }
      previous = s.version;
    }
  }

  // Accuracy at the window's end against the baseline at the same epoch.
  std::optional<double> epoch;
  for (const Evaluation& e : run.evaluations) {
    if (e.t <= r.window_end_s) {
      r.accuracy = e.accuracy;
      epoch = e.epoch;
    }
  }
  if (baseline != nullptr && epoch) {
    r.baseline_accuracy = AccuracyAtEpoch(*baseline, *epoch);
    if (r.accuracy && r.baseline_accuracy) {
      r.accuracy_delta = *r.accuracy - *r.baseline_accuracy;
    }
  }
}

std::optional<double> AccuracyAtEpoch(const Timeline& timeline, double epoch) {
  // Evaluations come every 0.1 epoch or so: one within this of the asked
  // epoch stands for it at either end of the run.
  constexpr double kSlack = 0.05;
  const std::vector<Evaluation>& e = timeline.evaluations;
  if (e.empty()) return std::nullopt;
  if (epoch <= e[0].epoch) {
    return e[0].epoch - epoch < kSlack ? std::optional<double>(e[0].accuracy)
                                       : std::nullopt;
  }
  for (size_t i = 1; i < e.size(); ++i) {
    if (e[i].epoch < epoch) continue;
    const double span = e[i].epoch - e[i - 1].epoch;
    const double f = span > 0 ? (epoch - e[i - 1].epoch) / span : 1;
    return e[i - 1].accuracy + f * (e[i].accuracy - e[i - 1].accuracy);
  }
  return epoch - e.back().epoch < kSlack
             ? std::optional<double>(e.back().accuracy)
             : std::nullopt;
}

std::optional<EndAccuracy> MeasureEndAccuracy(const Timeline& timeline,
                                              double span) {
  const std::vector<Evaluation>& e = timeline.evaluations;
  if (e.empty()) return std::nullopt;
  // A hair of slack: epochs are ratios of counts, and an evaluation meant
  // for exactly `span` before the end must not fall out on rounding.
  const double from = e.back().epoch - span - 1e-9;
  EndAccuracy end;
  double sum = 0;
  for (const Evaluation& evaluation : e) {
    if (evaluation.epoch < from) continue;
    sum += evaluation.accuracy;
    ++end.evaluations;
  }
  end.accuracy = sum / end.evaluations;
  return end;
}

std::vector<VersionRegression> ParseRegressions(
    const std::string& log, const std::vector<std::string>& server_addresses) {
  std::vector<VersionRegression> found;
  constexpr absl::string_view kMarker = " went back from version ";
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    const size_t at = line.find(kMarker);
    if (at == absl::string_view::npos) continue;
    // "... W ps_worker 192.0.2.10:50051 went back from version 812 to 700: …"
    const absl::string_view head = line.substr(0, at);
    const absl::string_view address = head.substr(head.rfind(' ') + 1);
    std::vector<absl::string_view> words =
        absl::StrSplit(line.substr(at + kMarker.size()), ' ');
    VersionRegression r;
    if (words.size() < 3 || !absl::SimpleAtoi(words[0], &r.from) ||
        !absl::SimpleAtoi(absl::StripSuffix(words[2], ":"), &r.to)) {
      continue;
    }
    auto it =
        std::find(server_addresses.begin(), server_addresses.end(), address);
    if (it == server_addresses.end()) continue;
    r.server = static_cast<uint32_t>(it - server_addresses.begin());
    found.push_back(r);
  }
  return found;
}

}  // namespace ps::chaos
