#include "bench/measure.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace ps::bench {
namespace {

double Percentile(std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t at = std::min(
      sorted.size() - 1, static_cast<size_t>(q * (sorted.size() - 1) + 0.5));
  return sorted[at];
}

}  // namespace

absl::Status Measure(uint32_t callers, absl::Duration duration,
                     uint32_t min_ops,
                     const std::function<absl::Status(uint32_t)>& op,
                     OpStats* stats, std::vector<double>* latencies_ms) {
  std::mutex mutex;
  absl::Status first_error;
  uint64_t ops = 0;
  const absl::Time start = absl::Now();
  const absl::Time end = start + duration;
  std::vector<std::thread> threads;
  for (uint32_t c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      std::vector<double> mine;
      for (uint32_t n = 0; n < min_ops || absl::Now() < end; ++n) {
        const absl::Time t0 = absl::Now();
        absl::Status status = op(c);
        if (!status.ok()) {
          std::lock_guard<std::mutex> lock(mutex);
          if (first_error.ok()) first_error = status;
          break;
        }
        mine.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
      }
      std::lock_guard<std::mutex> lock(mutex);
      ops += mine.size();
      latencies_ms->insert(latencies_ms->end(), mine.begin(), mine.end());
    });
  }
  for (std::thread& t : threads) t.join();
  stats->seconds += absl::ToDoubleSeconds(absl::Now() - start);
  stats->ops += ops;
  return first_error;
}

void SetPercentiles(std::vector<double>& latencies_ms, OpStats* stats) {
  std::sort(latencies_ms.begin(), latencies_ms.end());
  stats->p50_ms = Percentile(latencies_ms, 0.50);
  stats->p99_ms = Percentile(latencies_ms, 0.99);
}

double MemcpyGbPerSecond(uint64_t bytes, absl::Duration duration) {
  // Touched once before timing: the figure is the copy, not page faults.
  std::vector<char> from(bytes, 1), to(bytes, 0);
  uint64_t copies = 0;
  const absl::Time start = absl::Now();
  absl::Duration elapsed;
  do {
    std::memcpy(to.data(), from.data(), bytes);
    from[copies % bytes] = static_cast<char>(copies);  // not hoisted
    ++copies;
    elapsed = absl::Now() - start;
  } while (elapsed < duration || copies < 3);
  return copies * static_cast<double>(bytes) / absl::ToDoubleSeconds(elapsed) /
         1e9;
}

std::string SizeName(uint64_t floats) {
  if (floats >= (1u << 20) && floats % (1u << 20) == 0) {
    return absl::StrCat(floats >> 20, "M");
  }
  if (floats >= (1u << 10) && floats % (1u << 10) == 0) {
    return absl::StrCat(floats >> 10, "K");
  }
  return absl::StrCat(floats);
}

absl::StatusOr<uint64_t> ParseSize(const std::string& name) {
  uint64_t scale = 1;
  std::string digits = name;
  if (!digits.empty() && (digits.back() == 'K' || digits.back() == 'k')) {
    scale = 1 << 10;
    digits.pop_back();
  } else if (!digits.empty() &&
             (digits.back() == 'M' || digits.back() == 'm')) {
    scale = 1 << 20;
    digits.pop_back();
  }
  uint64_t n = 0;
  if (!absl::SimpleAtoi(digits, &n) || n == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "size '", name, "' is not a positive count of floats like 1K or 16M"));
  }
  return n * scale;
}

}  // namespace ps::bench
