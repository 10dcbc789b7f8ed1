#ifndef PS_BENCH_MEASURE_H_
#define PS_BENCH_MEASURE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ps::bench {

// Throughput and latency of one kind of operation, over all callers.
struct OpStats {
  std::string name;         // "push", "pull", "push+pull", "echo"
  std::string raw;          // the raw gRPC call of the same shape, or ""
  uint64_t ops = 0;         // completed, all callers together
  double seconds = 0;       // wall time of the measurement
  double bytes_per_op = 0;  // payload bytes moved (both directions)
  double p50_ms = 0;
  double p99_ms = 0;

  double ops_per_s() const { return seconds > 0 ? ops / seconds : 0; }
  double gb_per_s() const {
    return seconds > 0 ? ops * bytes_per_op / seconds / 1e9 : 0;
  }
};

// Runs `op(caller)` on `callers` threads at once, each repeating it until
// `duration` passed and it ran at least `min_ops` times; adds the ops and
// time to `stats` and each op's latency to `latencies_ms`. The first error
// stops the measurement and is returned.
absl::Status Measure(uint32_t callers, absl::Duration duration,
                     uint32_t min_ops,
                     const std::function<absl::Status(uint32_t)>& op,
                     OpStats* stats, std::vector<double>* latencies_ms);

// Sets stats' p50 and p99 from all the latencies measured for it.
void SetPercentiles(std::vector<double>& latencies_ms, OpStats* stats);

// memcpy bandwidth between two reused buffers of `bytes`, in GB/s (bytes
// copied per second): the ceiling of any copy the transfer makes.
double MemcpyGbPerSecond(uint64_t bytes, absl::Duration duration);

// "1K", "64K", "1M", "16M" (floats, powers of two) and back.
std::string SizeName(uint64_t floats);
absl::StatusOr<uint64_t> ParseSize(const std::string& name);

}  // namespace ps::bench

#endif  // PS_BENCH_MEASURE_H_
