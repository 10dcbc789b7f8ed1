#ifndef PS_COMMON_RPC_FAULT_INJECTION_H_
#define PS_COMMON_RPC_FAULT_INJECTION_H_

// Faults injected inside our gRPC layer, for fault-tolerance experiments
// (ps_chaos) and tests: a delay before a call, a lost call, or a call failed
// with a chosen status code. Every decision is a pure function of the seed,
// the stream (a channel's target, or "server") and the call's position in
// that stream, so the same seed injects the same faults into the same calls.
//
// Off, and free, unless a daemon is started with --inject_faults: no
// interceptor is installed at all then.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/client_interceptor.h"
#include "grpcpp/support/server_interceptor.h"
#include "grpcpp/support/status.h"

namespace ps::rpc {

// What to inject. Text form (ParseFaultSpec / FormatFaultSpec), comma
// separated, every key optional:
//   seed=7,delay=5ms..50ms,drop=0.01,error=UNAVAILABLE:0.05,
//   methods=Push|Pull,side=client
struct FaultSpec {
  // Seeds every decision. Default: 1
  uint64_t seed = 1;
  // Each intercepted call waits a uniform time in [delay_min, delay_max]
  // first. Default: 0
  absl::Duration delay_min = absl::ZeroDuration();
  absl::Duration delay_max = absl::ZeroDuration();
  // Probability that a call is lost. Client side: it never reaches the
  // server and the caller waits out its deadline (DEADLINE_EXCEEDED).
  // Server side: the server did the work but the reply is lost; the caller
  // gets DEADLINE_EXCEEDED at once (holding a server thread until the
  // deadline would stall unrelated calls). Default: 0
  double drop_probability = 0;
  // Probability that a call fails with `error_code`. Client side: before it
  // is sent. Server side: after the work was done (the reply is replaced),
  // which is what exercises exactly-once retries. Default: 0
  double error_probability = 0;
  // Default: UNAVAILABLE
  grpc::StatusCode error_code = grpc::StatusCode::UNAVAILABLE;
  // Short method names ("Push", "Heartbeat"); empty: every method.
  std::vector<std::string> methods;
  // Which side injects: calls this process makes, calls it serves, or both.
  // Default: both
  bool client = true;
  bool server = true;

  // Whether any fault would ever be injected.
  bool active() const;
};

absl::StatusOr<FaultSpec> ParseFaultSpec(absl::string_view text);
std::string FormatFaultSpec(const FaultSpec& spec);

// The fate of one call.
struct FaultDecision {
  enum class Kind { kNone, kDrop, kError };
  Kind kind = Kind::kNone;
  absl::Duration delay = absl::ZeroDuration();
  grpc::StatusCode code = grpc::StatusCode::OK;

  bool operator==(const FaultDecision& other) const {
    return kind == other.kind && delay == other.delay && code == other.code;
  }
};

// The decision for the `n`-th call (0-based) of `method` on `stream` under
// `spec`: no state, no clock, the same on every machine.
FaultDecision DecideFault(const FaultSpec& spec, absl::string_view stream,
                          absl::string_view method, uint64_t n);

struct FaultCounts {
  uint64_t calls = 0;  // calls the spec applied to
  uint64_t delayed = 0;
  uint64_t dropped = 0;
  uint64_t failed = 0;
};

// The spec in force in one process plus the per-stream call counters. The
// spec comes from a string, or from a file ("@PATH") that is re-read when
// it changes, so a runner can turn faults on and off while the process
// runs (an empty or missing file means no faults).
class FaultInjector {
 public:
  enum class Side { kClient, kServer };

  static absl::StatusOr<std::unique_ptr<FaultInjector>> Create(
      const std::string& source);

  // Decides the next call of `method` on `stream`, counting it.
  FaultDecision Next(Side side, absl::string_view stream,
                     absl::string_view method);

  FaultCounts counts() const;
  // What is injected now, in the text form ("" when nothing).
  std::string Describe() const;

 private:
  FaultInjector() = default;
  void ReloadIfChanged() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  mutable absl::Mutex mutex_;
  std::string path_;  // empty: the spec is fixed
  FaultSpec spec_ ABSL_GUARDED_BY(mutex_);
  bool active_ ABSL_GUARDED_BY(mutex_) = false;
  std::string file_contents_ ABSL_GUARDED_BY(mutex_);
  absl::Time next_check_ ABSL_GUARDED_BY(mutex_) = absl::InfinitePast();
  absl::Time next_report_ ABSL_GUARDED_BY(mutex_) = absl::InfinitePast();
  absl::flat_hash_map<std::string, uint64_t> calls_ ABSL_GUARDED_BY(mutex_);
  FaultCounts counts_ ABSL_GUARDED_BY(mutex_);
};

// Interceptor factories over `injector` (which must outlive them). A
// client factory's calls form the stream `stream` (the channel's target).
std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
MakeClientFaultInterceptorFactory(FaultInjector* injector, std::string stream);
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeServerFaultInterceptorFactory(FaultInjector* injector);

// The process's injector, used by CreateChannel and ConfigureServerBuilder
// (channel.h). Set once by main() from --inject_faults before any channel or
// server exists, like the gRPC log routing: a process-wide switch because
// the chaos runner must reach every channel a daemon makes without each
// library growing an option for it. `source` as FaultInjector::Create;
// empty installs nothing.
absl::Status InstallFaultInjection(const std::string& source);
FaultInjector* InstalledFaultInjector();

}  // namespace ps::rpc

#endif  // PS_COMMON_RPC_FAULT_INJECTION_H_
