#include "tools/chaos/timeline.h"

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace ps::chaos {

std::optional<uint64_t> Timeline::Applied(size_t i) const {
  std::optional<uint64_t> most;
  for (const ServerSample& s : samples[i].servers) {
    if (s.up) most = std::max(most.value_or(0), s.samples_applied);
  }
  return most;
}

std::optional<uint64_t> Timeline::Progress(size_t i) const {
  std::optional<uint64_t> least;
  for (const ServerSample& s : samples[i].servers) {
    if (!s.up) return std::nullopt;
    least = std::min(least.value_or(s.version), s.version);
  }
  return least;
}

std::optional<double> Timeline::Rate(double from, double to) const {
  // Sums the increases between consecutive answered samples: a shard
  // restored from a checkpoint counts from its restored value on.
  double examples = 0;
  std::optional<size_t> previous;
  double first_t = 0, last_t = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    if (samples[i].t < from || samples[i].t > to) continue;
    if (!Applied(i)) continue;
    if (previous) {
      const uint64_t now = *Applied(i), before = *Applied(*previous);
      if (now > before) examples += static_cast<double>(now - before);
      last_t = samples[i].t;
    } else {
      first_t = samples[i].t;
    }
    previous = i;
  }
  if (!previous || last_t <= first_t) return std::nullopt;
  return examples / (last_t - first_t);
}

std::optional<double> Timeline::AccuracyAt(double t) const {
  std::optional<double> accuracy;
  for (const Evaluation& e : evaluations) {
    if (e.t <= t) accuracy = e.accuracy;
  }
  return accuracy;
}

double Timeline::EpochAt(size_t i) const {
  for (size_t j = i + 1; j-- > 0;) {
    if (std::optional<uint64_t> applied = Applied(j)) {
      return static_cast<double>(*applied) / train_size;
    }
  }
  return 0;
}

absl::Status WriteTimelineCsv(const Timeline& timeline,
                              const std::string& path) {
  std::ofstream out(path);
  const size_t servers =
      timeline.samples.empty() ? 0 : timeline.samples[0].servers.size();
  out << "time_s,epoch,test_accuracy,samples_per_s,live_workers";
  for (size_t s = 0; s < servers; ++s) out << ",version_s" << s;
  out << ",event\n";
  // A FormatSpec, not a char*: clang checks every format at compile time.
  auto optional = [](std::optional<double> v,
                     const absl::FormatSpec<double>& format) {
    return v ? absl::StrFormat(format, *v) : std::string();
  };
  size_t e = 0;
  size_t last_sample = 0;
  auto write_events_until = [&](double t) {
    for (; e < timeline.events.size() && timeline.events[e].t <= t; ++e) {
      const EventRow& event = timeline.events[e];
      out << absl::StrFormat(
          "%.3f,%.4f,%s,,", event.t,
          timeline.samples.empty() ? 0.0 : timeline.EpochAt(last_sample),
          optional(timeline.AccuracyAt(event.t), "%.4f"));
      out << std::string(servers + 1, ',') << '"'
          << absl::StrReplaceAll(event.text, {{"\"", "\"\""}}) << "\"\n";
    }
  };
  for (size_t i = 0; i < timeline.samples.size(); ++i) {
    const Sample& sample = timeline.samples[i];
    write_events_until(sample.t);
    last_sample = i;
    std::optional<double> live;
    for (const ServerSample& s : sample.servers) {
      if (s.up)
        live = std::min(live.value_or(s.live_workers), 1.0 * s.live_workers);
    }
    out << absl::StrFormat(
        "%.3f,%.4f,%s,%s,%s", sample.t, timeline.EpochAt(i),
        optional(timeline.AccuracyAt(sample.t), "%.4f"),
        optional(timeline.Rate(sample.t - kRateWindowS, sample.t), "%.0f"),
        optional(live, "%.0f"));
    for (const ServerSample& s : sample.servers) {
      out << ',' << (s.up ? absl::StrCat(s.version) : "");
    }
    out << ",\n";
  }
  write_events_until(1e18);
  // The runner reads the last evaluation after the workers stop, which can
  // be after every sample: a row of its own, or a short run's only
  // accuracy is in no row (and gnuplot has no point to draw).
  if (!timeline.evaluations.empty()) {
    const Evaluation& last = timeline.evaluations.back();
    double written = -1;
    if (!timeline.samples.empty()) written = timeline.samples.back().t;
    if (!timeline.events.empty()) {
      written = std::max(written, timeline.events.back().t);
    }
    if (last.t > written) {
      out << absl::StrFormat("%.3f,%.4f,%.4f,,", last.t, last.epoch,
                             last.accuracy)
          << std::string(servers, ',') << ",\n";
    }
  }
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace ps::chaos
