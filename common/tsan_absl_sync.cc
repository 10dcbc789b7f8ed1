// Compiled into ThreadSanitizer builds only (-DPS_SANITIZE=thread). At the
// end: the suppressions for races TSan cannot judge inside Debian's gRPC.
//
// Debian's Abseil is not built with TSan, so TSan never sees an absl::Mutex
// being taken or released and reports every field it guards as a data race.
// This file defines absl's out-of-line Mutex, CondVar and Notification member
// functions again: a definition in the executable wins over the one in
// libabsl_synchronization.so (for calls from gRPC's libraries too), tells
// TSan what happened with the annotations Abseil itself makes when it is
// built with TSan (absl/synchronization/mutex.cc), and forwards to the real
// function, found with dlsym(RTLD_NEXT). No call site changes.
//
// TSan ignores memory accesses between a pre_ and post_ annotation; that
// covers the Conditions that Abseil evaluates inside Lock, Unlock and Await
// (on the waiter's thread or the unlocker's), so their reads go unchecked.
// Await is annotated as a writer's wait: our code awaits only under
// MutexLock.

#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/base/config.h"
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#ifndef ABSL_HAVE_THREAD_SANITIZER
#error "tsan_absl_sync.cc belongs in -DPS_SANITIZE=thread builds only"
#endif
#if !ABSL_OPTION_USE_INLINE_NAMESPACE
#error "the mangled names below assume Abseil's inline namespace"
#endif

#define PS_TSAN_STRINGIFY_(x) #x
#define PS_TSAN_STRINGIFY(x) PS_TSAN_STRINGIFY_(x)

// One dlsym per function, on its first call.
#define PS_REAL_ABSL(type, qualifier, name_and_args) \
  static const auto real = RealAbsl<type>(qualifier, name_and_args)

namespace {

// The real definition of absl::<qualifier><name_and_args> (a mangled tail
// such as "5Mutex4LockEv"; qualifier "N" or "NK" for const members),
// whatever Abseil's inline namespace (debian3 today) is called.
template <typename Function>
Function RealAbsl(const char* qualifier, const char* name_and_args) {
  const std::string inline_namespace =
      PS_TSAN_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string symbol = std::string("_Z") + qualifier + "4absl" +
                             std::to_string(inline_namespace.size()) +
                             inline_namespace + name_and_args;
  void* real = dlsym(RTLD_NEXT, symbol.c_str());
  if (real == nullptr) {
    std::fprintf(stderr, "tsan_absl_sync: %s is not in any loaded library\n",
                 symbol.c_str());
    std::abort();
  }
  return reinterpret_cast<Function>(real);
}

constexpr unsigned kReader = __tsan_mutex_read_lock;
constexpr unsigned kTry = __tsan_mutex_try_lock;
constexpr unsigned kTryFailed = __tsan_mutex_try_lock_failed;

// Abseil's functions call one another through the PLT, so into this file
// again (LockWhenWithTimeout calls LockWhenWithDeadline, Notify calls Lock):
// only the outermost call on a thread tells TSan, which would otherwise
// count one lock twice.
thread_local int calls_in_progress = 0;
class Outermost {
 public:
  Outermost() : outermost_(calls_in_progress++ == 0) {}
  ~Outermost() { --calls_in_progress; }
  Outermost(const Outermost&) = delete;
  Outermost& operator=(const Outermost&) = delete;
  explicit operator bool() const { return outermost_; }

 private:
  const bool outermost_;
};

// Lives across one real call (`return real(...);`) and tells TSan what the
// call did to `mu`: took it, gave it up, or gave it up to wait and took it
// again (CondVar::Wait, Mutex::Await).
class Annotation {
 public:
  enum Kind { kLock, kUnlock, kWait };
  Annotation(Kind kind, absl::Mutex* mu, unsigned flags = 0)
      : kind_(kind), mu_(mu), flags_(flags) {
    if (!outermost_) return;
    if (kind_ == kWait) {
      __tsan_mutex_pre_unlock(mu_, flags_);
      __tsan_mutex_post_unlock(mu_, flags_);
    }
    if (kind_ == kUnlock) {
      __tsan_mutex_pre_unlock(mu_, flags_);
    } else {
      __tsan_mutex_pre_lock(mu_, flags_);
    }
  }
  ~Annotation() {
    if (!outermost_) return;
    if (kind_ == kUnlock) {
      __tsan_mutex_post_unlock(mu_, flags_);
    } else {
      __tsan_mutex_post_lock(mu_, flags_, 0);
    }
  }
  Annotation(const Annotation&) = delete;
  Annotation& operator=(const Annotation&) = delete;

 private:
  const Kind kind_;
  absl::Mutex* const mu_;
  const unsigned flags_;
  const Outermost outermost_;
};

// A try-lock's outcome is known only after the call.
bool TryLocking(absl::Mutex* mu, unsigned flags, bool (*real)(absl::Mutex*)) {
  const Outermost outermost;
  if (outermost) __tsan_mutex_pre_lock(mu, flags | kTry);
  const bool locked = real(mu);
  if (outermost) {
    __tsan_mutex_post_lock(mu, flags | (locked ? kTry : kTry | kTryFailed), 0);
  }
  return locked;
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

// The constructor (inline in mutex.h) already tells TSan of a new mutex.
ABSL_NO_THREAD_SAFETY_ANALYSIS Mutex::~Mutex() {
  PS_REAL_ABSL(void (*)(Mutex*), "N", "5MutexD2Ev");
  if (const Outermost outermost; outermost) __tsan_mutex_destroy(this, 0);
  real(this);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS void Mutex::Lock() {
  PS_REAL_ABSL(void (*)(Mutex*), "N", "5Mutex4LockEv");
  const Annotation locking(Annotation::kLock, this);
  real(this);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS bool Mutex::TryLock() {
  PS_REAL_ABSL(bool (*)(Mutex*), "N", "5Mutex7TryLockEv");
  return TryLocking(this, 0, real);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS void Mutex::Unlock() {
  PS_REAL_ABSL(void (*)(Mutex*), "N", "5Mutex6UnlockEv");
  const Annotation unlocking(Annotation::kUnlock, this);
  real(this);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS void Mutex::ReaderLock() {
  PS_REAL_ABSL(void (*)(Mutex*), "N", "5Mutex10ReaderLockEv");
  const Annotation locking(Annotation::kLock, this, kReader);
  real(this);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS bool Mutex::ReaderTryLock() {
  PS_REAL_ABSL(bool (*)(Mutex*), "N", "5Mutex13ReaderTryLockEv");
  return TryLocking(this, kReader, real);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS void Mutex::ReaderUnlock() {
  PS_REAL_ABSL(void (*)(Mutex*), "N", "5Mutex12ReaderUnlockEv");
  const Annotation unlocking(Annotation::kUnlock, this, kReader);
  real(this);
}

// LockWhen and its variants hold the mutex on return, timed out or not.
ABSL_NO_THREAD_SAFETY_ANALYSIS void Mutex::LockWhen(const Condition& cond) {
  PS_REAL_ABSL(void (*)(Mutex*, const Condition&), "N",
               "5Mutex8LockWhenERKNS0_9ConditionE");
  const Annotation locking(Annotation::kLock, this);
  real(this, cond);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS bool Mutex::LockWhenWithTimeout(
    const Condition& cond, Duration timeout) {
  PS_REAL_ABSL(bool (*)(Mutex*, const Condition&, Duration), "N",
               "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const Annotation locking(Annotation::kLock, this);
  return real(this, cond, timeout);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS bool Mutex::LockWhenWithDeadline(
    const Condition& cond, Time deadline) {
  PS_REAL_ABSL(bool (*)(Mutex*, const Condition&, Time), "N",
               "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const Annotation locking(Annotation::kLock, this);
  return real(this, cond, deadline);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS void Mutex::ReaderLockWhen(
    const Condition& cond) {
  PS_REAL_ABSL(void (*)(Mutex*, const Condition&), "N",
               "5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  const Annotation locking(Annotation::kLock, this, kReader);
  real(this, cond);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS bool Mutex::ReaderLockWhenWithTimeout(
    const Condition& cond, Duration timeout) {
  PS_REAL_ABSL(
      bool (*)(Mutex*, const Condition&, Duration), "N",
      "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const Annotation locking(Annotation::kLock, this, kReader);
  return real(this, cond, timeout);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS bool Mutex::ReaderLockWhenWithDeadline(
    const Condition& cond, Time deadline) {
  PS_REAL_ABSL(
      bool (*)(Mutex*, const Condition&, Time), "N",
      "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const Annotation locking(Annotation::kLock, this, kReader);
  return real(this, cond, deadline);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS void Mutex::Await(const Condition& cond) {
  PS_REAL_ABSL(void (*)(Mutex*, const Condition&), "N",
               "5Mutex5AwaitERKNS0_9ConditionE");
  const Annotation waiting(Annotation::kWait, this);
  real(this, cond);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS bool Mutex::AwaitWithTimeout(
    const Condition& cond, Duration timeout) {
  PS_REAL_ABSL(bool (*)(Mutex*, const Condition&, Duration), "N",
               "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const Annotation waiting(Annotation::kWait, this);
  return real(this, cond, timeout);
}

ABSL_NO_THREAD_SAFETY_ANALYSIS bool Mutex::AwaitWithDeadline(
    const Condition& cond, Time deadline) {
  PS_REAL_ABSL(bool (*)(Mutex*, const Condition&, Time), "N",
               "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const Annotation waiting(Annotation::kWait, this);
  return real(this, cond, deadline);
}

void CondVar::Wait(Mutex* mu) {
  PS_REAL_ABSL(void (*)(CondVar*, Mutex*), "N", "7CondVar4WaitEPNS0_5MutexE");
  const Annotation waiting(Annotation::kWait, mu);
  real(this, mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  PS_REAL_ABSL(bool (*)(CondVar*, Mutex*, Duration), "N",
               "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  const Annotation waiting(Annotation::kWait, mu);
  return real(this, mu, timeout);
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  PS_REAL_ABSL(bool (*)(CondVar*, Mutex*, Time), "N",
               "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  const Annotation waiting(Annotation::kWait, mu);
  return real(this, mu, deadline);
}

// A Notification's flag is an atomic that the library sets and that
// HasBeenNotified() (inline, so instrumented) reads: Notify releases at the
// flag's address and every wait that saw the notice acquires there.
void Notification::Notify() {
  PS_REAL_ABSL(void (*)(Notification*), "N", "12Notification6NotifyEv");
  __tsan_release(&notified_yet_);
  real(this);
}

void Notification::WaitForNotification() const {
  PS_REAL_ABSL(void (*)(const Notification*), "NK",
               "12Notification19WaitForNotificationEv");
  real(this);
  __tsan_acquire(const_cast<std::atomic<bool>*>(&notified_yet_));
}

bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  PS_REAL_ABSL(bool (*)(const Notification*, Duration), "NK",
               "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool notified = real(this, timeout);
  if (notified) __tsan_acquire(const_cast<std::atomic<bool>*>(&notified_yet_));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  PS_REAL_ABSL(bool (*)(const Notification*, Time), "NK",
               "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  const bool notified = real(this, deadline);
  if (notified) __tsan_acquire(const_cast<std::atomic<bool>*>(&notified_yet_));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl

// Read by TSan at start-up, in every TSan-built program (tests and the
// daemons they start). gRPC's event-engine thread pool: a server's
// destructor waits for the pool's threads, and the last thread to drop the
// pool's shared State destroys its absl::Mutex. The two are ordered by the
// shared_ptr's atomic count inside Debian's libgrpc, which is not built
// with TSan, so TSan sees the destroy race the waiter's last unlock
// (annotated above). Matched on the pool's own frames and allocation, so
// races in our code stay reported.
extern "C" const char* __tsan_default_suppressions() {
  return "race:grpc_event_engine::experimental::ThreadPool\n";
}
