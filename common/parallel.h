#ifndef PS_COMMON_PARALLEL_H_
#define PS_COMMON_PARALLEL_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

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

// ParallelFor with its threads kept between calls: a worker talks to every
// shard on every step, and starting a thread per shard per step cost more
// than the calls themselves. Run(fn) runs fn(0) on the caller and fn(1) …
// fn(n−1) on the team's threads, and returns when all are done. One Run at
// a time.
class ThreadTeam {
 public:
  explicit ThreadTeam(size_t n) {
    for (size_t i = 1; i < n; ++i) {
      threads_.emplace_back([this, i] { Serve(i); });
    }
  }
  ~ThreadTeam() {
    {
      absl::MutexLock lock(&mutex_);
      stopping_ = true;
    }
    for (std::thread& t : threads_) t.join();
  }
  ThreadTeam(const ThreadTeam&) = delete;
  ThreadTeam& operator=(const ThreadTeam&) = delete;

  void Run(const std::function<void(size_t)>& fn) {
    {
      absl::MutexLock lock(&mutex_);
      fn_ = &fn;
      pending_ = threads_.size();
      ++generation_;
    }
    fn(0);
    absl::MutexLock lock(&mutex_);
    mutex_.Await(absl::Condition(
        +[](size_t* pending) { return *pending == 0; }, &pending_));
    fn_ = nullptr;
  }

 private:
  void Serve(size_t index) {
    uint64_t seen = 0;
    while (true) {
      const std::function<void(size_t)>* fn = nullptr;
      {
        absl::MutexLock lock(&mutex_);
        // Await evaluates the condition with mutex_ held; the analysis
        // cannot see that through the lambda, so the assertion says it.
        auto ready = [&] {
          mutex_.AssertHeld();
          return stopping_ || generation_ != seen;
        };
        mutex_.Await(absl::Condition(&ready));
        if (stopping_) return;
        seen = generation_;
        fn = fn_;
      }
      (*fn)(index);
      absl::MutexLock lock(&mutex_);
      --pending_;
    }
  }

  absl::Mutex mutex_;
  const std::function<void(size_t)>* fn_ ABSL_GUARDED_BY(mutex_) = nullptr;
  uint64_t generation_ ABSL_GUARDED_BY(mutex_) = 0;
  size_t pending_ ABSL_GUARDED_BY(mutex_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace ps::common

#endif  // PS_COMMON_PARALLEL_H_
