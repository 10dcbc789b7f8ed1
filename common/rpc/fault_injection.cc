#include "common/rpc/fault_injection.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/cli.h"
#include "grpcpp/client_context.h"
#include "grpcpp/server_context.h"
#include "spdlog/spdlog.h"

namespace ps::rpc {
namespace {

constexpr const char* kCodeNames[] = {"OK",
                                      "CANCELLED",
                                      "UNKNOWN",
                                      "INVALID_ARGUMENT",
                                      "DEADLINE_EXCEEDED",
                                      "NOT_FOUND",
                                      "ALREADY_EXISTS",
                                      "PERMISSION_DENIED",
                                      "RESOURCE_EXHAUSTED",
                                      "FAILED_PRECONDITION",
                                      "ABORTED",
                                      "OUT_OF_RANGE",
                                      "UNIMPLEMENTED",
                                      "INTERNAL",
                                      "UNAVAILABLE",
                                      "DATA_LOSS",
                                      "UNAUTHENTICATED"};

std::string CodeName(grpc::StatusCode code) {
  const int i = static_cast<int>(code);
  return i >= 0 && i < static_cast<int>(std::size(kCodeNames))
             ? kCodeNames[i]
             : absl::StrCat(i);
}

absl::StatusOr<grpc::StatusCode> ParseCode(absl::string_view name) {
  const std::string upper = absl::AsciiStrToUpper(name);
  for (size_t i = 1; i < std::size(kCodeNames); ++i) {
    if (upper == kCodeNames[i]) return static_cast<grpc::StatusCode>(i);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", name,
                   "' is not a gRPC status code name other than OK (e.g. "
                   "UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED)"));
}

absl::StatusOr<double> ParseProbability(absl::string_view key,
                                        absl::string_view text) {
  double p = 0;
  bool percent = absl::ConsumeSuffix(&text, "%");
  if (!absl::SimpleAtod(text, &p) || !(p >= 0) || (percent ? p > 100 : p > 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, "='", text,
                     "' is not a probability in [0, 1] "
                     "(or a percentage like 5%)"));
  }
  return percent ? p / 100 : p;
}

absl::StatusOr<absl::Duration> ParseDelay(absl::string_view text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration() ||
      d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("delay '", text, "' is not a duration like 5ms or 0.2s"));
  }
  return d;
}

// FNV-1a: stable across processes, builds and machines (std::hash is not).
uint64_t Fnv1a(absl::string_view text, uint64_t hash) {
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

// splitmix64's finalizer: a well-mixed 64-bit value per input.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

double Uniform(uint64_t bits) {
  return static_cast<double>(bits >> 11) * 0x1.0p-53;  // [0, 1)
}

absl::string_view ShortMethod(absl::string_view full) {
  const size_t slash = full.rfind('/');
  return slash == absl::string_view::npos ? full : full.substr(slash + 1);
}

grpc::Status InjectedStatus(const FaultDecision& decision) {
  if (decision.kind == FaultDecision::Kind::kDrop) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                        "injected fault: call dropped");
  }
  return grpc::Status(
      decision.code, absl::StrCat("injected fault: ", CodeName(decision.code)));
}

}  // namespace

bool FaultSpec::active() const {
  return delay_max > absl::ZeroDuration() || drop_probability > 0 ||
         error_probability > 0;
}

absl::StatusOr<FaultSpec> ParseFaultSpec(absl::string_view text) {
  FaultSpec spec;
  for (absl::string_view item :
       absl::StrSplit(text, absl::ByAnyChar(",\n"), absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    const std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(item, absl::MaxSplits('=', 1));
    const absl::string_view key = absl::StripAsciiWhitespace(kv.first);
    const absl::string_view value = absl::StripAsciiWhitespace(kv.second);
    if (key == "seed") {
      if (!absl::SimpleAtoi(value, &spec.seed)) {
        return absl::InvalidArgumentError(
            absl::StrCat("seed='", value, "' is not a non-negative integer"));
      }
    } else if (key == "delay") {
      const std::pair<absl::string_view, absl::string_view> range =
          absl::StrSplit(value, absl::MaxSplits("..", 1));
      absl::StatusOr<absl::Duration> low = ParseDelay(range.first);
      if (!low.ok()) return low.status();
      absl::StatusOr<absl::Duration> high =
          range.second.empty() ? low : ParseDelay(range.second);
      if (!high.ok()) return high.status();
      if (*high < *low) {
        return absl::InvalidArgumentError(absl::StrCat(
            "delay='", value, "': the upper bound is below the lower"));
      }
      spec.delay_min = *low;
      spec.delay_max = *high;
    } else if (key == "drop") {
      absl::StatusOr<double> p = ParseProbability(key, value);
      if (!p.ok()) return p.status();
      spec.drop_probability = *p;
    } else if (key == "error") {
      // CODE:P, or P alone for UNAVAILABLE.
      const std::pair<absl::string_view, absl::string_view> cp =
          absl::StrSplit(value, absl::MaxSplits(':', 1));
      absl::string_view probability = cp.first;
      if (!cp.second.empty()) {
        absl::StatusOr<grpc::StatusCode> code = ParseCode(cp.first);
        if (!code.ok()) return code.status();
        spec.error_code = *code;
        probability = cp.second;
      }
      absl::StatusOr<double> p = ParseProbability(key, probability);
      if (!p.ok()) return p.status();
      spec.error_probability = *p;
    } else if (key == "methods") {
      spec.methods = absl::StrSplit(value, '|', absl::SkipEmpty());
    } else if (key == "side") {
      if (value != "client" && value != "server" && value != "both") {
        return absl::InvalidArgumentError(
            absl::StrCat("side='", value, "' is not client, server or both"));
      }
      spec.client = value != "server";
      spec.server = value != "client";
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown key '", key, "' in fault spec '", item,
                       "'; known: seed, delay, drop, error, methods, side"));
    }
  }
  if (spec.drop_probability + spec.error_probability > 1) {
    return absl::InvalidArgumentError(
        "drop and error probabilities add up to more than 1");
  }
  return spec;
}

std::string FormatFaultSpec(const FaultSpec& spec) {
  std::vector<std::string> items = {absl::StrCat("seed=", spec.seed)};
  if (spec.delay_max > absl::ZeroDuration()) {
    items.push_back(absl::StrCat("delay=", absl::FormatDuration(spec.delay_min),
                                 "..", absl::FormatDuration(spec.delay_max)));
  }
  if (spec.drop_probability > 0) {
    items.push_back(absl::StrCat("drop=", spec.drop_probability));
  }
  if (spec.error_probability > 0) {
    items.push_back(absl::StrCat("error=", CodeName(spec.error_code), ":",
                                 spec.error_probability));
  }
  if (!spec.methods.empty()) {
    items.push_back(absl::StrCat("methods=", absl::StrJoin(spec.methods, "|")));
  }
  if (!(spec.client && spec.server)) {
    items.push_back(spec.client ? "side=client" : "side=server");
  }
  return absl::StrJoin(items, ",");
}

FaultDecision DecideFault(const FaultSpec& spec, absl::string_view stream,
                          absl::string_view method, uint64_t n) {
  uint64_t key = Fnv1a(stream, 0xcbf29ce484222325ull);
  key = Fnv1a("/", key);
  key = Fnv1a(method, key);
  const uint64_t base = Mix(Mix(spec.seed) ^ key) ^ Mix(n);
  FaultDecision decision;
  const double fate = Uniform(Mix(base + 1));
  if (spec.delay_max > absl::ZeroDuration()) {
    const double where = Uniform(Mix(base + 2));
    // Whole microseconds, so the decision prints and compares exactly.
    decision.delay = absl::Microseconds(static_cast<int64_t>(
        absl::ToDoubleMicroseconds(spec.delay_min) +
        where * absl::ToDoubleMicroseconds(spec.delay_max - spec.delay_min)));
  }
  if (fate < spec.drop_probability) {
    decision.kind = FaultDecision::Kind::kDrop;
  } else if (fate < spec.drop_probability + spec.error_probability) {
    decision.kind = FaultDecision::Kind::kError;
    decision.code = spec.error_code;
  }
  return decision;
}

absl::StatusOr<std::unique_ptr<FaultInjector>> FaultInjector::Create(
    const std::string& source) {
  std::unique_ptr<FaultInjector> injector(new FaultInjector);
  absl::MutexLock lock(&injector->mutex_);
  if (absl::StartsWith(source, "@")) {
    injector->path_ = source.substr(1);
    if (injector->path_.empty()) {
      return absl::InvalidArgumentError("'@' must be followed by a file path");
    }
    injector->ReloadIfChanged();
    return injector;
  }
  absl::StatusOr<FaultSpec> spec = ParseFaultSpec(source);
  if (!spec.ok()) return spec.status();
  injector->spec_ = *spec;
  injector->active_ = spec->active();
  return injector;
}

void FaultInjector::ReloadIfChanged() {
  const absl::Time now = absl::Now();
  if (path_.empty() || now < next_check_) return;
  // A tenth of a second between looks: a fault window is seconds long.
  next_check_ = now + absl::Milliseconds(100);
  // A missing file reads as an empty spec.
  std::string text = common::ReadWholeFile(path_).value_or("");
  if (text == file_contents_) return;
  file_contents_ = std::move(text);
  absl::StatusOr<FaultSpec> spec = ParseFaultSpec(file_contents_);
  if (!spec.ok()) {
    spdlog::error("fault injection: ignoring {}: {}", path_,
                  std::string(spec.status().message()));
    return;
  }
  spec_ = *spec;
  active_ = spec->active();
  calls_.clear();  // a new spec starts its streams afresh
  spdlog::info("fault injection from {}: {}", path_,
               active_ ? FormatFaultSpec(spec_) : "none");
}

FaultDecision FaultInjector::Next(Side side, absl::string_view stream,
                                  absl::string_view method) {
  absl::MutexLock lock(&mutex_);
  ReloadIfChanged();
  if (!active_ || !(side == Side::kClient ? spec_.client : spec_.server)) {
    return {};
  }
  const absl::string_view name = ShortMethod(method);
  if (!spec_.methods.empty() &&
      std::find(spec_.methods.begin(), spec_.methods.end(), name) ==
          spec_.methods.end()) {
    return {};
  }
  const uint64_t n = calls_[absl::StrCat(stream, "/", name)]++;
  const FaultDecision decision = DecideFault(spec_, stream, name, n);
  ++counts_.calls;
  if (decision.delay > absl::ZeroDuration()) ++counts_.delayed;
  if (decision.kind == FaultDecision::Kind::kDrop) ++counts_.dropped;
  if (decision.kind == FaultDecision::Kind::kError) ++counts_.failed;
  if (decision.kind != FaultDecision::Kind::kNone) {
    spdlog::debug(
        "fault injection: {} call {} of {} on {}",
        decision.kind == FaultDecision::Kind::kDrop ? "dropping" : "failing", n,
        std::string(name), std::string(stream));
  }
  // One line every ten seconds at most, so a log shows what was injected
  // without a line per call.
  if (const absl::Time now = absl::Now(); now >= next_report_) {
    next_report_ = now + absl::Seconds(10);
    spdlog::info(
        "fault injection so far: {} calls, {} delayed, {} dropped, "
        "{} failed",
        counts_.calls, counts_.delayed, counts_.dropped, counts_.failed);
  }
  return decision;
}

FaultCounts FaultInjector::counts() const {
  absl::MutexLock lock(&mutex_);
  return counts_;
}

std::string FaultInjector::Describe() const {
  absl::MutexLock lock(&mutex_);
  return active_ ? FormatFaultSpec(spec_) : "";
}

namespace {

class ClientFaultInterceptor : public grpc::experimental::Interceptor {
 public:
  ClientFaultInterceptor(grpc::experimental::ClientRpcInfo* info,
                         FaultInjector* injector, const std::string* stream)
      : info_(info), injector_(injector), stream_(stream) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    using Hook = grpc::experimental::InterceptionHookPoints;
    bool hijack = false;
    if (methods->QueryInterceptionHookPoint(Hook::PRE_SEND_INITIAL_METADATA)) {
      decision_ = injector_->Next(FaultInjector::Side::kClient, *stream_,
                                  info_->method());
      if (decision_.delay > absl::ZeroDuration()) {
        absl::SleepFor(decision_.delay);
      }
      if (decision_.kind == FaultDecision::Kind::kDrop) {
        // The request is lost: nothing answers before the deadline.
        const absl::Time deadline =
            absl::FromChrono(info_->client_context()->deadline());
        absl::SleepFor(std::min(deadline - absl::Now(), absl::Minutes(5)));
      }
      // A failed call never reaches the network: we answer it here.
      hijack = decision_.kind != FaultDecision::Kind::kNone;
    }
    if (methods->QueryInterceptionHookPoint(Hook::PRE_RECV_MESSAGE)) {
      methods->FailHijackedRecvMessage();
    }
    if (methods->QueryInterceptionHookPoint(Hook::PRE_RECV_STATUS)) {
      *methods->GetRecvStatus() = InjectedStatus(decision_);
    }
    if (hijack) {
      methods->Hijack();
    } else {
      methods->Proceed();
    }
  }

 private:
  grpc::experimental::ClientRpcInfo* info_;
  FaultInjector* injector_;
  const std::string* stream_;
  FaultDecision decision_;
};

class ClientFaultFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  ClientFaultFactory(FaultInjector* injector, std::string stream)
      : injector_(injector), stream_(std::move(stream)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new ClientFaultInterceptor(info, injector_, &stream_);
  }

 private:
  FaultInjector* injector_;
  std::string stream_;
};

class ServerFaultInterceptor : public grpc::experimental::Interceptor {
 public:
  ServerFaultInterceptor(grpc::experimental::ServerRpcInfo* info,
                         FaultInjector* injector)
      : info_(info), injector_(injector) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    using Hook = grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(Hook::POST_RECV_MESSAGE)) {
      // The request arrives late; the handler then runs as usual.
      decision_ = injector_->Next(FaultInjector::Side::kServer, "server",
                                  info_->method());
      if (decision_.delay > absl::ZeroDuration()) {
        absl::SleepFor(decision_.delay);
      }
    }
    if (methods->QueryInterceptionHookPoint(Hook::PRE_SEND_STATUS) &&
        decision_.kind != FaultDecision::Kind::kNone) {
      // The work is done; the reply the caller gets says it failed.
      methods->ModifySendStatus(InjectedStatus(decision_));
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  FaultInjector* injector_;
  FaultDecision decision_;
};

class ServerFaultFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit ServerFaultFactory(FaultInjector* injector) : injector_(injector) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new ServerFaultInterceptor(info, injector_);
  }

 private:
  FaultInjector* injector_;
};

absl::Mutex installed_mutex(absl::kConstInit);
FaultInjector* installed ABSL_GUARDED_BY(installed_mutex) = nullptr;

}  // namespace

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
MakeClientFaultInterceptorFactory(FaultInjector* injector, std::string stream) {
  return std::make_unique<ClientFaultFactory>(injector, std::move(stream));
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeServerFaultInterceptorFactory(FaultInjector* injector) {
  return std::make_unique<ServerFaultFactory>(injector);
}

absl::Status InstallFaultInjection(const std::string& source) {
  if (source.empty()) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<FaultInjector>> injector =
      FaultInjector::Create(source);
  if (!injector.ok()) return injector.status();
  absl::MutexLock lock(&installed_mutex);
  if (installed != nullptr) {
    return absl::FailedPreconditionError(
        "fault injection is already installed");
  }
  // Lives as long as the process: channels and servers may outlive main().
  installed = injector->release();
  spdlog::warn(
      "fault injection is on ({}): {}", source,
      installed->Describe().empty() ? "nothing yet" : installed->Describe());
  return absl::OkStatus();
}

FaultInjector* InstalledFaultInjector() {
  absl::MutexLock lock(&installed_mutex);
  return installed;
}

}  // namespace ps::rpc
