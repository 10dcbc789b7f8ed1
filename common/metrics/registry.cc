#include "common/metrics/registry.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ps::common::metrics {
namespace {

// A metric or label name the exposition accepts; a bad one is a bug in the
// caller, found the first time the daemon starts.
bool ValidName(const std::string& name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = absl::ascii_isalpha(c) || c == '_' ||
                    (allow_colon && c == ':') ||
                    (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return false;
  }
  return true;
}

[[noreturn]] void Misuse(const std::string& what) {
  // stderr, not the log: this is a bug to see at once, wherever logs go.
  std::fprintf(stderr, "metrics registry misused: %s\n", what.c_str());
  std::abort();
}

void CheckLabelNames(const std::string& metric,
                     const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    if (!ValidName(name, /*allow_colon=*/false) || name == "le") {
      Misuse(absl::StrCat("label name '", name, "' of ", metric));
    }
  }
}

// Backslash and newline as \\ and \n, and with `quote` " as \".
std::string Escape(const std::string& text, bool quote) {
  std::string out;
  for (char c : text) {
    if (c == '\\' || (quote && c == '"')) {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// {a="1",b="2"} from the constant labels, the family's and `extra` (le).
std::string LabelSet(const Labels& const_labels,
                     const std::vector<std::string>& names,
                     const std::vector<std::string>& values,
                     const std::pair<std::string, std::string>* extra) {
  std::string out;
  auto add = [&out](const std::string& name, const std::string& value) {
    absl::StrAppend(&out, out.empty() ? "{" : ",", name, "=\"",
                    EscapeLabelValue(value), "\"");
  };
  for (const auto& [name, value] : const_labels) add(name, value);
  for (size_t i = 0; i < names.size(); ++i) add(names[i], values[i]);
  if (extra != nullptr) add(extra->first, extra->second);
  if (!out.empty()) out += "}";
  return out;
}

void AppendSample(std::string* out, const std::string& name,
                  const std::string& labels, double value) {
  absl::StrAppend(out, name, labels, " ", FormatValue(value), "\n");
}

}  // namespace

void CheckLabelCount(size_t names, size_t values) {
  if (names != values) {
    Misuse(absl::StrCat(values, " label values for ", names, " label names"));
  }
}

uint64_t AtomicDouble::ToBits(double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

double AtomicDouble::FromBits(uint64_t bits) {
  double value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

void AtomicDouble::Add(double delta) {
  uint64_t old_bits = bits_.load(std::memory_order_relaxed);
  while (!bits_.compare_exchange_weak(old_bits,
                                      ToBits(FromBits(old_bits) + delta),
                                      std::memory_order_relaxed)) {
  }
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      counts_(new std::atomic<uint64_t>[upper_bounds_.size() + 1]) {
  if (!std::is_sorted(upper_bounds_.begin(), upper_bounds_.end()) ||
      std::adjacent_find(upper_bounds_.begin(), upper_bounds_.end()) !=
          upper_bounds_.end()) {
    Misuse("histogram bounds must be strictly ascending");
  }
  for (double bound : upper_bounds_) {
    if (!std::isfinite(bound)) Misuse("histogram bounds must be finite");
  }
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) counts_[i] = 0;
}

void Histogram::Observe(double value) {
  const size_t bucket =
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) -
      upper_bounds_.begin();
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.Add(value);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot snapshot;
  snapshot.upper_bounds = upper_bounds_;
  uint64_t running = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    snapshot.cumulative_counts.push_back(running);
  }
  snapshot.sum = sum_.Get();
  return snapshot;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

Registry::Registry(Labels const_labels)
    : const_labels_(std::move(const_labels)) {
  for (const auto& [name, value] : const_labels_) {
    CheckLabelNames("the constant labels", {name});
  }
}

Registry::Entry& Registry::NewEntry(const std::string& name,
                                    const std::string& help, MetricType type) {
  if (!ValidName(name, /*allow_colon=*/true)) {
    Misuse(absl::StrCat("metric name '", name, "'"));
  }
  for (const auto& entry : entries_) {
    if (entry->name == name) Misuse(absl::StrCat(name, " added twice"));
  }
  if (type == MetricType::kCounter && !absl::EndsWith(name, "_total")) {
    Misuse(absl::StrCat("counter ", name, " must end in _total"));
  }
  auto entry = std::make_unique<Entry>();
  entry->name = name;
  entry->help = help;
  entry->type = type;
  entries_.push_back(std::move(entry));
  return *entries_.back();
}

Family<Counter>& Registry::AddCounter(const std::string& name,
                                      const std::string& help,
                                      std::vector<std::string> label_names) {
  CheckLabelNames(name, label_names);
  absl::MutexLock lock(&mutex_);
  Entry& entry = NewEntry(name, help, MetricType::kCounter);
  entry.counters.reset(new Family<Counter>(
      std::move(label_names), [] { return std::make_unique<Counter>(); }));
  return *entry.counters;
}

Family<Gauge>& Registry::AddGauge(const std::string& name,
                                  const std::string& help,
                                  std::vector<std::string> label_names) {
  CheckLabelNames(name, label_names);
  absl::MutexLock lock(&mutex_);
  Entry& entry = NewEntry(name, help, MetricType::kGauge);
  entry.gauges.reset(new Family<Gauge>(
      std::move(label_names), [] { return std::make_unique<Gauge>(); }));
  return *entry.gauges;
}

Family<Histogram>& Registry::AddHistogram(
    const std::string& name, const std::string& help,
    std::vector<double> upper_bounds, std::vector<std::string> label_names) {
  CheckLabelNames(name, label_names);
  // Checked now, not at the first observation.
  Histogram check(upper_bounds);
  absl::MutexLock lock(&mutex_);
  Entry& entry = NewEntry(name, help, MetricType::kHistogram);
  entry.histograms.reset(new Family<Histogram>(
      std::move(label_names),
      [upper_bounds] { return std::make_unique<Histogram>(upper_bounds); }));
  return *entry.histograms;
}

void Registry::AddScrapeHook(std::function<void()> hook) {
  absl::MutexLock lock(&mutex_);
  hooks_.push_back(std::move(hook));
}

std::string Registry::Render() const {
  // Hooks set series of this registry, so they run outside its lock.
  std::vector<std::function<void()>> hooks;
  {
    absl::MutexLock lock(&mutex_);
    hooks = hooks_;
  }
  for (const auto& hook : hooks) hook();

  std::string out;
  absl::MutexLock lock(&mutex_);
  for (const auto& entry : entries_) {
    absl::StrAppend(&out, "# HELP ", entry->name, " ", EscapeHelp(entry->help),
                    "\n# TYPE ", entry->name, " ", TypeName(entry->type), "\n");
    if (entry->counters != nullptr || entry->gauges != nullptr) {
      auto render = [&](const auto& family) {
        absl::MutexLock family_lock(&family.mutex_);
        for (const auto& [values, series] : family.series_) {
          AppendSample(
              &out, entry->name,
              LabelSet(const_labels_, family.label_names_, values, nullptr),
              series->Value());
        }
      };
      if (entry->counters != nullptr) render(*entry->counters);
      if (entry->gauges != nullptr) render(*entry->gauges);
      continue;
    }
    const Family<Histogram>& family = *entry->histograms;
    absl::MutexLock family_lock(&family.mutex_);
    for (const auto& [values, series] : family.series_) {
      const Histogram::Snapshot snapshot = series->Read();
      for (size_t i = 0; i < snapshot.cumulative_counts.size(); ++i) {
        const std::pair<std::string, std::string> le = {
            "le", i < snapshot.upper_bounds.size()
                      ? FormatValue(snapshot.upper_bounds[i])
                      : "+Inf"};
        AppendSample(&out, entry->name + "_bucket",
                     LabelSet(const_labels_, family.label_names_, values, &le),
                     snapshot.cumulative_counts[i]);
      }
      const std::string labels =
          LabelSet(const_labels_, family.label_names_, values, nullptr);
      AppendSample(&out, entry->name + "_sum", labels, snapshot.sum);
      AppendSample(&out, entry->name + "_count", labels,
                   snapshot.cumulative_counts.back());
    }
  }
  return out;
}

std::string EscapeHelp(const std::string& text) {
  return Escape(text, /*quote=*/false);
}

std::string EscapeLabelValue(const std::string& value) {
  return Escape(value, /*quote=*/true);
}

std::string StatusCodeLabel(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[32];
  const std::to_chars_result result =
      std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

}  // namespace ps::common::metrics
