// Built in -DPS_SANITIZE=thread builds only. TSan must still report a real
// race, and must see every way our code synchronizes through Abseil
// (common/tsan_absl_sync.cc): Debian's Abseil is not instrumented. Without
// that file the counters and the Notification are reported as races; with
// only Lock and Unlock told to TSan, each wait (Await, LockWhen, CondVar)
// is reported as a double lock or an unlock of an unlocked mutex.
//
// Each case runs in a child process (a death test) that exits 0 when what
// its threads saw was right and 1 when not; a TSan report makes it exit
// with TSan's exit code, 66, instead.
#include <atomic>
#include <cstdlib>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace {

constexpr int kThreads = 4;
constexpr int kIncrements = 1000;

// Runs `body` on kThreads threads at once and joins them.
void OnThreads(const std::function<void()>& body) {
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) threads.emplace_back(body);
  for (std::thread& thread : threads) thread.join();
}

// The death test's statement: `body` says whether its threads saw the
// right values.
void RunAndExit(const std::function<bool()>& body) {
  const bool right = body();
  std::exit(right ? 0 : 1);
}

#define EXPECT_TSAN_REPORTS_A_RACE(...)                             \
  EXPECT_EXIT(RunAndExit(__VA_ARGS__), testing::ExitedWithCode(66), \
              "WARNING: ThreadSanitizer: data race")
#define EXPECT_TSAN_SILENT(...) \
  EXPECT_EXIT(RunAndExit(__VA_ARGS__), testing::ExitedWithCode(0), "")

struct GuardedCounter {
  absl::Mutex mutex;
  int count ABSL_GUARDED_BY(mutex) = 0;
};

TEST(TsanSync, AnUnguardedCounterIsReportedAsARace) {
  EXPECT_TSAN_REPORTS_A_RACE([] {
    int count = 0;
    OnThreads([&count] {
      for (int i = 0; i < kIncrements; ++i) ++count;
    });
    return true;
  });
}

TEST(TsanSync, ACounterUnderMutexLockIsNot) {
  EXPECT_TSAN_SILENT([] {
    GuardedCounter counter;
    OnThreads([&counter] {
      for (int i = 0; i < kIncrements; ++i) {
        absl::MutexLock lock(&counter.mutex);
        ++counter.count;
      }
    });
    absl::MutexLock lock(&counter.mutex);
    return counter.count == kThreads * kIncrements;
  });
}

TEST(TsanSync, ACounterUnderTryLockIsNot) {
  EXPECT_TSAN_SILENT([] {
    GuardedCounter counter;
    OnThreads([&counter] {
      for (int done = 0; done < kIncrements;) {
        if (!counter.mutex.TryLock()) continue;
        ++counter.count;
        counter.mutex.Unlock();
        ++done;
      }
    });
    absl::MutexLock lock(&counter.mutex);
    return counter.count == kThreads * kIncrements;
  });
}

TEST(TsanSync, ReadersUnderReaderMutexLockSeeTheWriter) {
  EXPECT_TSAN_SILENT([] {
    GuardedCounter counter;
    std::thread writer([&counter] {
      for (int i = 0; i < kIncrements; ++i) {
        absl::WriterMutexLock lock(&counter.mutex);
        ++counter.count;
      }
    });
    std::atomic<bool> right{true};
    OnThreads([&counter, &right] {
      for (int i = 0; i < kIncrements; ++i) {
        absl::ReaderMutexLock lock(&counter.mutex);
        if (counter.count > kIncrements) right = false;
      }
    });
    writer.join();
    return right.load();
  });
}

// Waits until another thread sets `flag`. The flag is relaxed, so TSan
// sees no synchronisation in it: only the handoff under test orders the
// threads. Aborts (exit code 134, not 0 or 66) after 30 s.
void SpinUntil(const std::atomic<bool>& flag) {
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (!flag.load(std::memory_order_relaxed)) {
    if (absl::Now() > give_up) std::abort();
    std::this_thread::yield();
  }
}

// A value written without a lock before the handoff and read after it: only
// the handoff orders the two, as when a thread hands work to another.
struct Handoff {
  void Give(int value) {
    payload = value;
    {
      absl::MutexLock lock(&mutex);
      ready = true;
    }
    ready_changed.SignalAll();
  }

  absl::Mutex mutex;
  absl::CondVar ready_changed;
  bool ready ABSL_GUARDED_BY(mutex) = false;
  int payload = 0;  // written before `ready`, read after it
};

// `take(handoff, waiting)` returns the payload once it was given, setting
// `waiting` as it starts to wait. Two takers: one already waiting when the
// payload is given (its wait must give the mutex up: a lock TSan does not
// see released is reported as a double lock) and one that takes it after
// (only the mutex orders its read after the write). Both must read 42.
bool HandsOff(const std::function<int(Handoff&, std::atomic<bool>&)>& take) {
  Handoff handoff;
  std::atomic<bool> early_waiting{false}, late_waiting{false}, given{false};
  int early = 0, late = 0;
  std::thread early_taker([&] { early = take(handoff, early_waiting); });
  std::thread late_taker([&] {
    SpinUntil(given);
    late = take(handoff, late_waiting);
  });
  SpinUntil(early_waiting);
  handoff.Give(42);
  given.store(true, std::memory_order_relaxed);
  early_taker.join();
  late_taker.join();
  return early == 42 && late == 42;
}

TEST(TsanSync, AHandoffThroughAwaitIsNot) {
  EXPECT_TSAN_SILENT([] {
    return HandsOff([](Handoff& handoff, std::atomic<bool>& waiting) {
      absl::MutexLock lock(&handoff.mutex);
      waiting.store(true, std::memory_order_relaxed);
      handoff.mutex.Await(absl::Condition(&handoff.ready));
      return handoff.payload;
    });
  });
}

TEST(TsanSync, AHandoffThroughLockWhenIsNot) {
  EXPECT_TSAN_SILENT([] {
    return HandsOff([](Handoff& handoff, std::atomic<bool>& waiting) {
      waiting.store(true, std::memory_order_relaxed);
      handoff.mutex.LockWhenWithTimeout(absl::Condition(&handoff.ready),
                                        absl::Seconds(30));
      const int payload = handoff.payload;
      handoff.mutex.Unlock();
      return payload;
    });
  });
}

TEST(TsanSync, AHandoffThroughCondVarIsNot) {
  EXPECT_TSAN_SILENT([] {
    return HandsOff([](Handoff& handoff, std::atomic<bool>& waiting) {
      absl::MutexLock lock(&handoff.mutex);
      waiting.store(true, std::memory_order_relaxed);
      while (!handoff.ready) handoff.ready_changed.Wait(&handoff.mutex);
      return handoff.payload;
    });
  });
}

TEST(TsanSync, AHandoffThroughNotificationIsNot) {
  EXPECT_TSAN_SILENT([] {
    int payload = 0;
    absl::Notification ready;
    std::atomic<bool> waiting{false}, notified{false};
    // Each reader writes only its own slot.
    int seen[3] = {0, 0, 0};
    std::thread waiter([&] {
      waiting.store(true, std::memory_order_relaxed);
      ready.WaitForNotification();
      seen[0] = payload;
    });
    std::thread late_waiter([&] {
      SpinUntil(notified);
      if (ready.WaitForNotificationWithTimeout(absl::Seconds(30))) {
        seen[1] = payload;
      }
    });
    std::thread late_poller([&] {
      SpinUntil(notified);
      if (ready.HasBeenNotified()) seen[2] = payload;
    });
    SpinUntil(waiting);
    payload = 42;
    ready.Notify();
    notified.store(true, std::memory_order_relaxed);
    waiter.join();
    late_waiter.join();
    late_poller.join();
    return seen[0] == 42 && seen[1] == 42 && seen[2] == 42;
  });
}

}  // namespace
