#ifndef PS_COMMON_PARALLEL_H_
#define PS_COMMON_PARALLEL_H_

#include <cstddef>
#include <functional>
#include <thread>
#include <vector>

namespace ps::common {

// Runs fn(0) … fn(n−1) at once, fn(0) on the calling thread, and returns when
// all are done. For talking to every server shard in parallel: n is small and
// each call waits on the network, not the CPU.
inline void ParallelFor(size_t n, const std::function<void(size_t)>& fn) {
  std::vector<std::thread> threads;
  threads.reserve(n > 0 ? n - 1 : 0);
  for (size_t i = 1; i < n; ++i) threads.emplace_back(fn, i);
  if (n > 0) fn(0);
  for (std::thread& t : threads) t.join();
}

}  // namespace ps::common

#endif  // PS_COMMON_PARALLEL_H_
