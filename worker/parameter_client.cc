#include "worker/parameter_client.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/error_info.h"
#include "common/float_bytes.h"
#include "common/parallel.h"
#include "common/rpc/channel.h"
#include "common/rpc/convert.h"
#include "common/rpc/fault_injection.h"
#include "common/rpc/wire_format.h"
#include "spdlog/spdlog.h"

namespace ps::worker {
namespace {

// The first failure among the shards' calls, with the shard named.
class FirstError {
 public:
  void Record(const std::string& address, const grpc::Status& status) {
    if (status.ok()) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (status_.ok()) {
      status_ = absl::Status(
          rpc::FromGrpcStatus(status).code(),
          absl::StrCat("server ", address, ": ", status.error_message()));
    }
  }
  void Record(const std::string& address, const absl::Status& status) {
    Record(address, rpc::ToGrpcStatus(status));
  }
  absl::Status status() const { return status_; }

 private:
  std::mutex mutex_;
  absl::Status status_;
};

bool NeedsReRegistration(const grpc::Status& status);

// Pull, Push and PushPull go as raw bytes (common/rpc/wire_format.h): the
// gradient is copied once into the request and θ once out of the answer.
const std::string kPullMethod =
    absl::StrCat("/", ps::v1::ParameterServer::service_full_name(), "/Pull");
const std::string kPushMethod =
    absl::StrCat("/", ps::v1::ParameterServer::service_full_name(), "/Push");
const std::string kPushPullMethod = absl::StrCat(
    "/", ps::v1::ParameterServer::service_full_name(), "/PushPull");
const std::string kPushPullStreamMethod = absl::StrCat(
    "/", ps::v1::ParameterServer::service_full_name(), "/PushPullStream");

grpc::Status Unparsable(const google::protobuf::MessageLite& message) {
  return grpc::Status(grpc::StatusCode::INTERNAL,
                      absl::StrCat("the server's answer is not a valid ",
                                   message.GetTypeName(), " message"));
}

}  // namespace

ParameterClient::ParameterClient(ClientOptions options)
    : options_(std::move(options)) {}

ParameterClient::~ParameterClient() { StopHeartbeats(); }

namespace {
// The servers answer an unknown, replaced or expired incarnation with the
// reason REGISTRATION_REQUIRED in the status details (common/error_info.h).
bool NeedsReRegistration(const grpc::Status& status) {
  return common::HasErrorReason(rpc::FromGrpcStatus(status),
                                common::kRegistrationRequired);
}
}  // namespace

ReplicaChoice ParameterClient::FollowPrimary(Shard& shard, uint32_t tried,
                                             const grpc::Status& status) {
  std::vector<std::string> addresses;
  addresses.reserve(shard.replicas.size());
  for (const Replica& r : shard.replicas) addresses.push_back(r.address);
  Shard::Routing& routing = *shard.routing;
  absl::MutexLock lock(&routing.mu);
  const absl::Time now = absl::Now();
  std::optional<uint32_t> unreachable;
  if (routing.unreachable != UINT32_MAX &&
      now - routing.unreachable_at < kFailoverWindow) {
    unreachable = routing.unreachable;
  }
  ReplicaChoice choice = ChooseReplica(addresses, tried, unreachable, status);
  if (choice.next == tried) return choice;
  if (!choice.redirected) {
    routing.unreachable = tried;
    routing.unreachable_at = now;
  }
  // Another thread may have moved on already: only from `tried`.
  uint32_t expected = tried;
  if (shard.current->compare_exchange_strong(expected, choice.next)) {
    spdlog::info("{} {} ({}): calls go to {} now", addresses[tried],
                 choice.redirected ? "is a backup" : "did not answer",
                 status.error_message(), addresses[choice.next]);
    auto [begin, end] = routing.in_flight.equal_range(tried);
    for (auto it = begin; it != end; ++it) it->second->TryCancel();
  }
  return choice;
}

grpc::Status ParameterClient::CallShard(
    Shard& shard, const std::string& what,
    const std::function<grpc::Status(grpc::ClientContext&)>& attempt) {
  auto run = [&](grpc::ClientContext& context) {
    const uint32_t tried = shard.current->load();
    const Shard::Routing::InFlight tracked =
        shard.routing->Track(tried, &context);
    const grpc::Status status = attempt(context);
    shard.routing->Untrack(tracked);
    return FollowPrimary(shard, tried, status);
  };
  return rpc::CallWithRetry(
      options_.retry, what, [&](grpc::ClientContext& context) {
        ReplicaChoice choice = run(context);
        // A backup named the primary: ask it now, not after a backoff
        // (bounded: two backups naming each other wait for the backoff).
        // A backup whose primary did not answer either: ask it again soon,
        // while it takes over.
        const absl::Time give_up = absl::Now() + kFailoverWindow;
        size_t hops = 1;
        while (true) {
          if (choice.redirected && hops < shard.replicas.size()) {
            ++hops;
          } else if (choice.awaiting_failover && absl::Now() < give_up) {
            absl::SleepFor(absl::Milliseconds(20));
          } else {
            return choice.status;
          }
          grpc::ClientContext again;
          again.set_deadline(
              absl::ToChronoTime(absl::Now() + options_.retry.rpc_deadline));
          choice = run(again);
        }
      });
}

grpc::Status ParameterClient::RegisterShard(
    Shard& shard, ps::v1::RegisterResponse* response) {
  ps::v1::RegisterRequest request;
  request.set_worker_id(options_.worker_id);
  request.set_incarnation(options_.incarnation);
  return CallShard(shard, absl::StrCat("Register with ", shard.address()),
                   [&](grpc::ClientContext& context) {
                     return shard.stub()->Register(&context, request, response);
                   });
}

absl::StatusOr<std::vector<ps::v1::StatusResponse>>
ParameterClient::StatusOfEveryShard() {
  std::vector<ps::v1::StatusResponse> answers(shards_.size());
  FirstError error;
  common::ParallelFor(shards_.size(), [&](size_t i) {
    error.Record(shards_[i].address(), StatusOf(shards_[i], &answers[i]));
  });
  if (!error.status().ok()) return error.status();
  return answers;
}

grpc::Status ParameterClient::StatusOf(Shard& shard,
                                       ps::v1::StatusResponse* answer) {
  return CallShard(shard, absl::StrCat("Status of ", shard.address()),
                   [&](grpc::ClientContext& context) {
                     return shard.stub()->Status(
                         &context, ps::v1::StatusRequest(), answer);
                   });
}

void ParameterClient::ChooseIncarnation(
    const std::vector<ps::v1::StatusResponse>& answers) {
  // The clock alone would do if clocks agreed; a node whose clock is behind
  // would then pick an incarnation below its predecessor's and be refused.
  // So: above every incarnation the servers hold for this id.
  uint64_t known = 0;
  for (const ps::v1::StatusResponse& status : answers) {
    for (const ps::v1::WorkerStatus& worker : status.workers()) {
      if (worker.worker_id() == options_.worker_id) {
        known = std::max(known, worker.incarnation());
      }
    }
  }
  const uint64_t clock = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  options_.incarnation = std::max(clock, known + 1);
  if (known >= clock) {
    spdlog::warn(
        "worker {}: the servers hold incarnation {}, ahead of this "
        "node's clock; registering as {}",
        options_.worker_id, known, options_.incarnation);
  }
  incarnation_chosen_ = true;
}

absl::StatusOr<uint64_t> ParameterClient::Register() {
  if (!incarnation_chosen_) {
    absl::StatusOr<std::vector<ps::v1::StatusResponse>> answers =
        StatusOfEveryShard();
    if (!answers.ok()) return answers.status();
    ChooseIncarnation(*answers);
  }
  std::vector<ps::v1::RegisterResponse> responses(shards_.size());
  FirstError error;
  common::ParallelFor(shards_.size(), [&](size_t i) {
    error.Record(shards_[i].address(),
                 RegisterShard(shards_[i], &responses[i]));
  });
  if (!error.status().ok()) return error.status();
  uint64_t resume_step = responses[0].resume_step();
  absl::Duration lease = absl::Milliseconds(responses[0].lease_timeout_ms());
  bool rejoined = false;
  std::vector<std::string> steps;
  for (const auto& r : responses) {
    resume_step = std::min(resume_step, r.resume_step());
    lease = std::min(lease, absl::Milliseconds(r.lease_timeout_ms()));
    rejoined = rejoined || r.rejoined();
    steps.push_back(absl::StrCat(r.resume_step()));
  }
  if (rejoined) {
    // One line for the job, not one per shard: the shards may have seen
    // different last steps (one restored from an older checkpoint).
    spdlog::info(
        "worker {} rejoined the job (incarnation {}), resuming at "
        "step {} (the shards' last steps: {})",
        options_.worker_id, options_.incarnation, resume_step,
        absl::StrJoin(steps, ", "));
  }
  if (!heartbeats_.joinable()) {
    // Three heartbeats per lease: one lost or late beat costs nothing.
    absl::Duration interval = std::max(lease / 3, absl::Milliseconds(10));
    // A replicated shard's stopped primary is noticed by a heartbeat that
    // times out, and the training calls waiting on it are moved on: soon.
    for (const Shard& shard : shards_) {
      if (shard.replicas.size() > 1) {
        interval = std::min(interval, absl::Milliseconds(100));
      }
    }
    heartbeats_ = std::thread(&ParameterClient::HeartbeatLoop, this, interval);
  }
  return resume_step;
}

void ParameterClient::HeartbeatLoop(absl::Duration interval) {
  while (!stop_heartbeats_.WaitForNotificationWithTimeout(interval)) {
    for (Shard& shard : shards_) {
      ps::v1::HeartbeatRequest request;
      request.set_worker_id(options_.worker_id);
      request.set_incarnation(options_.incarnation);
      ps::v1::HeartbeatResponse response;
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + 2 * interval));
      const uint32_t tried = shard.current->load();
      const grpc::Status status =
          FollowPrimary(shard, tried,
                        shard.replicas[tried].stub->Heartbeat(&context, request,
                                                              &response))
              .status;
      if (NeedsReRegistration(status)) {
        spdlog::warn("the lease on {} expired ({}); registering again",
                     shard.address(), status.error_message());
        ps::v1::RegisterResponse registered;
        grpc::ClientContext again;
        again.set_deadline(absl::ToChronoTime(absl::Now() + interval));
        ps::v1::RegisterRequest register_request;
        register_request.set_worker_id(options_.worker_id);
        register_request.set_incarnation(options_.incarnation);
        if (shard.stub()
                ->Register(&again, register_request, &registered)
                .ok()) {
          ++reregistrations_;
        }
      }
      // Other failures (a server restarting) are the data path's to report.
    }
  }
}

void ParameterClient::StopHeartbeats() {
  if (!heartbeats_.joinable()) return;
  stop_heartbeats_.Notify();
  heartbeats_.join();
}

absl::StatusOr<JobSurvey> ParameterClient::Survey() {
  const uint32_t listed = static_cast<uint32_t>(shards_.size());
  absl::StatusOr<std::vector<ps::v1::StatusResponse>> status =
      StatusOfEveryShard();
  if (!status.ok()) return status.status();
  const std::vector<ps::v1::StatusResponse>& answers = *status;
  // The same answers say which incarnation to register with.
  if (!incarnation_chosen_) ChooseIncarnation(answers);
  JobSurvey survey;
  survey.complete = true;
  survey.expected_workers = answers[0].expected_workers();
  survey.version = answers[0].version();
  for (uint32_t i = 0; i < listed; ++i) {
    const ps::v1::StatusResponse& s = answers[i];
    if (s.num_shards() != listed) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--servers lists ", listed, " server", listed == 1 ? "" : "s",
          " but ", shards_[i].address(), " is shard ", s.shard_index(), " of ",
          s.num_shards(), ": give every server of the job, in shard order"));
    }
    if (s.shard_index() != i) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--servers lists ", shards_[i].address(), " at position ", i,
          " but it is shard ", s.shard_index(), " of ", s.num_shards(),
          ": list the servers in shard order"));
    }
    survey.version = std::min(survey.version, s.version());
    uint32_t finished = 0;
    for (const ps::v1::WorkerStatus& w : s.workers()) {
      if (w.finished() && w.worker_id() < s.expected_workers()) ++finished;
    }
    survey.complete =
        survey.complete && s.initialized() && finished == s.expected_workers();
  }
  return survey;
}

absl::Status ParameterClient::Leave(ps::v1::LeaveRequest::Reason reason) {
  StopHeartbeats();
  return SendLeave(reason);
}

absl::Status ParameterClient::Idle() {
  return SendLeave(ps::v1::LeaveRequest::IDLE);
}

absl::Status ParameterClient::SendLeave(ps::v1::LeaveRequest::Reason reason) {
  FirstError error;
  common::ParallelFor(shards_.size(), [&](size_t i) {
    Shard& shard = shards_[i];
    ps::v1::LeaveRequest request;
    request.set_worker_id(options_.worker_id);
    request.set_incarnation(options_.incarnation);
    request.set_reason(reason);
    ps::v1::LeaveResponse response;
    auto attempt = [&](grpc::ClientContext& context) {
      return shard.stub()->Leave(&context, request, &response);
    };
    // An idle worker stays in the job: as a push, it registers again with a
    // shard that let its lease expire. A leaving one does not.
    error.Record(shard.address(),
                 reason == ps::v1::LeaveRequest::IDLE
                     ? CallRegistered(shard, "Idle with ", attempt)
                     : CallShard(shard, absl::StrCat("Leave ", shard.address()),
                                 attempt));
  });
  return error.status();
}

absl::StatusOr<ps::v1::LeasePartitionResponse> ParameterClient::LeasePartition(
    const common::PartitionPlan& plan) {
  Shard& shard = shards_[0];
  ps::v1::LeasePartitionRequest request;
  request.set_worker_id(options_.worker_id);
  request.set_incarnation(options_.incarnation);
  rpc::ToProto(plan, request.mutable_plan());
  ps::v1::LeasePartitionResponse response;
  // As a push: the lease may have expired while this worker was paused.
  grpc::Status status = CallRegistered(
      shard, "LeasePartition from ", [&](grpc::ClientContext& context) {
        return shard.stub()->LeasePartition(&context, request, &response);
      });
  if (!status.ok()) return rpc::FromGrpcStatus(status);
  if (response.outcome() == ps::v1::LeasePartitionResponse::GRANTED) {
    const common::KeyRange expected =
        response.partition() < plan.partitions
            ? common::PartitionExamples(plan, response.partition())
            : common::KeyRange{};
    if (expected.empty() || expected.begin != response.example_begin() ||
        expected.end != response.example_end()) {
      return absl::InternalError(
          absl::StrCat(shard.address(), " leased partition ",
                       response.partition(), " as examples [",
                       response.example_begin(), ", ", response.example_end(),
                       ") where the plan has ", expected.ToString()));
    }
  }
  return response;
}

void ParameterClient::CompleteWithNextPush(const ps::v1::PartitionDone& done) {
  completes_ = done;
}

absl::StatusOr<uint64_t> ParameterClient::PartitionsDone() {
  ps::v1::StatusResponse response;
  grpc::Status status = StatusOf(shards_[0], &response);
  if (!status.ok()) return rpc::FromGrpcStatus(status);
  return response.partitions().done();
}

absl::Status ParameterClient::WaitForOtherWorkers(uint32_t num_workers,
                                                  absl::Duration timeout) {
  const absl::Time give_up = absl::Now() + timeout;
  // Asked again soon at first: the others usually finish within
  // milliseconds of this worker, and the job's final time_s (and so its
  // samples_per_s) counts this wait.
  absl::Duration pause = absl::Milliseconds(1);
  while (true) {
    // Each counted on the shard where it is largest.
    uint32_t live = 0;
    uint32_t unregistered = 0;
    absl::StatusOr<std::vector<ps::v1::StatusResponse>> answers =
        StatusOfEveryShard();
    if (!answers.ok()) return answers.status();
    for (const ps::v1::StatusResponse& status : *answers) {
      live = std::max(live, status.live_workers());
      uint32_t registered = 0;
      for (const ps::v1::WorkerStatus& worker : status.workers()) {
        if (worker.worker_id() < num_workers) ++registered;
      }
      unregistered = std::max(unregistered,
                              num_workers - std::min(registered, num_workers));
    }
    if (live == 0 && unregistered == 0) return absl::OkStatus();
    if (absl::Now() > give_up) {
      return absl::DeadlineExceededError(
          absl::StrCat("after ", absl::FormatDuration(timeout), ", ", live,
                       " workers are still live and ", unregistered, " of ",
                       num_workers, " workers never registered"));
    }
    absl::SleepFor(pause);
    pause = std::min(2 * pause, absl::Milliseconds(50));
  }
}

absl::StatusOr<std::unique_ptr<ParameterClient>> ParameterClient::Connect(
    ClientOptions options) {
  if (options.servers.empty()) {
    return absl::InvalidArgumentError("no servers given");
  }
  if (options.max_message_bytes < ClientOptions::kMinMessageBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_message_bytes is ", options.max_message_bytes,
                     "; a message must hold at least ",
                     ClientOptions::kMinMessageBytes, " bytes (64 KiB)"));
  }
  std::unique_ptr<ParameterClient> client(new ParameterClient(options));
  client->incarnation_chosen_ = options.incarnation != 0;
  for (const std::string& entry : options.servers) {
    Shard& shard = client->shards_.emplace_back();
    for (absl::string_view part : absl::StrSplit(entry, '|')) {
      const std::string address(part);
      if (address.empty() || address.find(':') == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "server address '", address, "' (in '", entry,
            "') is not host:port; a replicated shard lists host:port|..."));
      }
      if (grpc::Status resolved =
              rpc::WaitUntilResolvable(options.retry, address);
          !resolved.ok()) {
        return rpc::FromGrpcStatus(resolved);
      }
      Replica& replica = shard.replicas.emplace_back();
      replica.address = address;
      std::shared_ptr<grpc::Channel> channel = rpc::CreateChannel(address);
      replica.stub = ps::v1::ParameterServer::NewStub(channel);
      replica.caller = std::make_unique<rpc::RawUnaryCaller>(channel);
      replica.stream = std::make_unique<rpc::RawStreamCaller>(
          channel, kPushPullStreamMethod);
    }
  }
  client->team_ = std::make_unique<common::ThreadTeam>(client->shards_.size());
  return client;
}

absl::StatusOr<ClusterInfo> ParameterClient::Init(
    const std::vector<common::TensorSpec>& tensors,
    absl::Span<const float> initial) {
  return InitSparse(tensors, {}, 0, initial);
}

absl::StatusOr<ClusterInfo> ParameterClient::InitSparse(
    const std::vector<common::TensorSpec>& tensors,
    const std::vector<common::TableSpec>& tables, uint64_t model_seed,
    absl::Span<const float> initial) {
  const uint64_t num_keys = common::NumKeys(tensors);
  if (initial.size() != num_keys) {
    return absl::InvalidArgumentError(absl::StrCat(
        "initial θ has ", initial.size(), " values for ", num_keys, " keys"));
  }
  absl::StatusOr<GradientCompressor> compressor =
      GradientCompressor::Create(tensors, options_.compression);
  if (!compressor.ok()) return compressor.status();
  compressor_ = std::move(*compressor);
  const uint32_t num_shards = static_cast<uint32_t>(shards_.size());
  std::vector<ps::v1::InitResponse> responses(num_shards);
  FirstError error;
  common::ParallelFor(num_shards, [&](size_t i) {
    Shard& shard = shards_[i];
    shard.keys = common::BalancedPart(num_keys, num_shards, i);
    ps::v1::InitRequest request;
    request.set_worker_id(options_.worker_id);
    request.set_shard_index(static_cast<uint32_t>(i));
    request.set_num_shards(num_shards);
    rpc::ToProto(tensors, request.mutable_tensors());
    rpc::ToProto(tables, request.mutable_tables());
    request.set_model_seed(model_seed);
    const absl::Span<const float> mine =
        initial.subspan(shard.keys.begin, shard.keys.size());
    if (StreamsPull(shard)) {
      error.Record(shard.address(),
                   StreamInit(shard, request, mine, &responses[i]));
      return;
    }
    common::FloatsToBytes(mine, request.mutable_values());
    error.Record(shard.address(),
                 CallShard(shard, absl::StrCat("Init on ", shard.address()),
                           [&](grpc::ClientContext& context) {
                             return shard.stub()->Init(&context, request,
                                                       &responses[i]);
                           }));
  });
  if (!error.status().ok()) return error.status();

  ClusterInfo info;
  info.mode = responses[0].mode();
  mode_ = info.mode;
  info.expected_workers = responses[0].expected_workers();
  info.version = responses[0].version();
  for (uint32_t i = 0; i < num_shards; ++i) {
    const ps::v1::InitResponse& r = responses[i];
    if (r.key_begin() != shards_[i].keys.begin ||
        r.key_end() != shards_[i].keys.end) {
      return absl::FailedPreconditionError(absl::StrCat(
          "server ", shards_[i].address(), " holds keys [", r.key_begin(), ", ",
          r.key_end(), ") but this worker expected ",
          shards_[i].keys.ToString()));
    }
    if (r.mode() != info.mode ||
        r.expected_workers() != info.expected_workers) {
      return absl::FailedPreconditionError(absl::StrCat(
          "servers disagree: ", shards_[0].address(), " runs mode ",
          rpc::ModeName(info.mode), " with ", info.expected_workers,
          " workers but ", shards_[i].address(), " runs mode ",
          rpc::ModeName(r.mode()), " with ", r.expected_workers(), " workers"));
    }
    info.version = std::min(info.version, r.version());
  }
  init_version_ = info.version;
  tables_ = tables;
  return info;
}

absl::StatusOr<PullInfo> ParameterClient::Pull(uint64_t step,
                                               absl::Span<float> theta) {
  // The steps completed before `step` are the SSP clock.
  return PullRows(step, theta, nullptr);
}

absl::StatusOr<PullInfo> ParameterClient::PullSparse(
    uint64_t step, absl::Span<float> theta, std::vector<SparseBatch>& rows) {
  return PullRows(step, theta, &rows);
}

absl::StatusOr<PullInfo> ParameterClient::PullFinal(absl::Span<float> theta) {
  // No wait of any kind: the other workers may have finished long ago, and
  // in sync mode the next round may never come (a restarted worker that
  // found the job done has pulled nothing, so it would ask for the round
  // after the one it registered at).
  return PullRows(std::nullopt, theta, nullptr);
}

absl::StatusOr<PullInfo> ParameterClient::PullFinalSparse(
    absl::Span<float> theta, std::vector<SparseBatch>& rows) {
  return PullRows(std::nullopt, theta, &rows);
}

absl::StatusOr<std::vector<uint64_t>> ParameterClient::RowsPerShard() {
  absl::StatusOr<std::vector<ps::v1::StatusResponse>> answers =
      StatusOfEveryShard();
  if (!answers.ok()) return answers.status();
  std::vector<uint64_t> rows;
  for (const ps::v1::StatusResponse& answer : *answers) {
    uint64_t held = 0;
    for (const ps::v1::TableStatus& table : answer.tables()) {
      held += table.rows();
    }
    rows.push_back(held);
  }
  return rows;
}

absl::StatusOr<PullInfo> ParameterClient::PullRows(
    std::optional<uint64_t> clock, absl::Span<float> theta,
    std::vector<SparseBatch>* rows) {
  const std::vector<SparseBatch> none;
  absl::StatusOr<Routes> routes = Route(rows ? *rows : none, false);
  if (!routes.ok()) return routes.status();
  SizeRows(rows);
  FirstError error;
  team_->Run([&](size_t i) {
    Shard& shard = shards_[i];
    FillPull(shard, clock, shard.request.mutable_pull());
    FillSparse(i, rows ? *rows : none, *routes, false,
               shard.request.mutable_pull()->mutable_sparse());
    absl::Status taken = PullShard(shard, theta);
    if (taken.ok() && rows != nullptr) {
      taken = TakeSparse(i, *routes, shard.response.pull().sparse(), *rows);
    }
    error.Record(shard.address(), taken);
  });
  if (!error.status().ok()) return error.status();
  return Pulled();
}

absl::Status ParameterClient::Push(uint64_t step, uint32_t batch_size,
                                   absl::Span<const float> gradient) {
  return PushRows(step, batch_size, gradient, nullptr);
}

absl::Status ParameterClient::PushSparse(
    uint64_t step, uint32_t batch_size, absl::Span<const float> gradient,
    const std::vector<SparseBatch>& gradients) {
  return PushRows(step, batch_size, gradient, &gradients);
}

absl::Status ParameterClient::PushRows(
    uint64_t step, uint32_t batch_size, absl::Span<const float> gradient,
    const std::vector<SparseBatch>* gradients) {
  const std::vector<SparseBatch> none;
  absl::StatusOr<Routes> routes = Route(gradients ? *gradients : none, true);
  if (!routes.ok()) return routes.status();
  const uint64_t seq = next_seq_++;
  SelectCompressed(gradient);
  FirstError error;
  team_->Run([&](size_t i) {
    Shard& shard = shards_[i];
    FillPush(shard, seq, step, batch_size, gradient);
    FillSparse(i, gradients ? *gradients : none, *routes, true,
               shard.request.mutable_push()->mutable_sparse());
    error.Record(shard.address(), PushShard(shard, gradient));
  });
  CountPushes();
  if (error.status().ok()) completes_.reset();
  return error.status();
}

grpc::Status ParameterClient::PushShard(Shard& shard,
                                        absl::Span<const float> gradient) {
  if (StreamsPush(shard)) return StreamPush(shard, gradient);
  const grpc::ByteBuffer request = rpc::SerializeApart(
      shard.request.push(), {ps::v1::PushRequest::kGradientFieldNumber},
      GradientBytes(shard, gradient));
  shard.push_request_bytes = request.Length();
  grpc::ByteBuffer answer;
  grpc::Status status =
      CallPushing(shard, "Push to ", [&](grpc::ClientContext& context) {
        return shard.caller()->Call(&context, kPushMethod, request, &answer);
      });
  if (status.ok() && !shard.response.mutable_push()->ParseFromString(
                         std::string(rpc::CordOf(answer)))) {
    status = Unparsable(shard.response.push());
  }
  if (status.ok()) LearnMode(shard, shard.response.push().mode());
  return status;
}

namespace {

// Writes a client-streamed call's messages: `head` (the call's fields),
// then `values` in chunks of at most `per_chunk` floats, each with its
// offset; then ends the call. `*sent` counts the bytes written.
template <typename Chunk>
grpc::Status WriteChunked(grpc::ClientWriter<Chunk>& writer, const Chunk& head,
                          absl::Span<const float> values, uint64_t per_chunk,
                          size_t* sent) {
  *sent = head.ByteSizeLong();
  bool open = writer.Write(head);
  Chunk chunk;
  for (uint64_t offset = 0; open && offset < values.size();
       offset += per_chunk) {
    const uint64_t n = std::min<uint64_t>(per_chunk, values.size() - offset);
    chunk.set_offset(offset);
    chunk.mutable_values()->assign(
        reinterpret_cast<const char*>(values.data() + offset),
        n * sizeof(float));
    *sent += chunk.ByteSizeLong();
    open = writer.Write(chunk);
  }
  // A write that failed means the server ended the call (a bad chunk, a
  // refused call) or the connection broke: Finish says which.
  if (open) writer.WritesDone();
  return writer.Finish();
}

}  // namespace

grpc::Status ParameterClient::StreamPush(Shard& shard,
                                         absl::Span<const float> gradient) {
  const absl::Span<const float> mine =
      gradient.subspan(shard.keys.begin, shard.keys.size());
  ps::v1::PushChunk head;
  *head.mutable_push() = shard.request.push();
  // Every attempt sends the whole stream with the same seq: the server
  // applies a push only once it is whole, and a seq only once.
  grpc::Status status = CallPushing(
      shard, "Streamed push to ", [&](grpc::ClientContext& context) {
        std::unique_ptr<grpc::ClientWriter<ps::v1::PushChunk>> writer =
            shard.stub()->PushStream(&context, shard.response.mutable_push());
        return WriteChunked(*writer, head, mine, ChunkFloats(),
                            &shard.push_request_bytes);
      });
  if (status.ok()) LearnMode(shard, shard.response.push().mode());
  return status;
}

grpc::Status ParameterClient::StreamInit(Shard& shard,
                                         const ps::v1::InitRequest& request,
                                         absl::Span<const float> initial,
                                         ps::v1::InitResponse* response) {
  ps::v1::InitChunk head;
  *head.mutable_init() = request;
  // Init is idempotent (the first declaration wins), so a retry resends
  // the whole stream; the server declares nothing from a broken one.
  return CallShard(
      shard, absl::StrCat("Streamed Init on ", shard.address()),
      [&](grpc::ClientContext& context) {
        std::unique_ptr<grpc::ClientWriter<ps::v1::InitChunk>> writer =
            shard.stub()->InitStream(&context, response);
        size_t sent = 0;
        return WriteChunked(*writer, head, initial, ChunkFloats(), &sent);
      });
}

absl::Status ParameterClient::PullShard(Shard& shard, absl::Span<float> theta) {
  if (StreamsPull(shard)) return StreamPull(shard, theta);
  const grpc::ByteBuffer request = rpc::Serialize(shard.request.pull());
  grpc::ByteBuffer answer;
  grpc::Status status = CallShard(
      shard, absl::StrCat("Pull from ", shard.address()),
      [&](grpc::ClientContext& context) {
        return shard.caller()->Call(&context, kPullMethod, request, &answer);
      });
  absl::Cord values;
  if (status.ok() &&
      !rpc::ParseApart(rpc::CordOf(answer),
                       {ps::v1::PullResponse::kValuesFieldNumber},
                       shard.response.mutable_pull(), &values)) {
    status = Unparsable(shard.response.pull());
  }
  return status.ok() ? TakePulled(shard, values, theta)
                     : rpc::FromGrpcStatus(status);
}

absl::Status ParameterClient::StreamPull(Shard& shard,
                                         absl::Span<float> theta) {
  ps::v1::PullStreamRequest request;
  *request.mutable_pull() = shard.request.pull();
  request.set_chunk_bytes(ChunkFloats() * sizeof(float));
  const absl::Span<float> mine =
      theta.subspan(shard.keys.begin, shard.keys.size());
  ps::v1::PullResponse* head = shard.response.mutable_pull();
  // An answer that breaks the protocol: not retried (INTERNAL).
  grpc::Status malformed;
  grpc::Status status = CallShard(
      shard, absl::StrCat("Streamed pull from ", shard.address()),
      [&](grpc::ClientContext& context) {
        std::unique_ptr<grpc::ClientReader<ps::v1::PullChunk>> reader =
            shard.stub()->PullStream(&context, request);
        ps::v1::PullChunk chunk;
        bool have_head = false;
        uint64_t received = 0;
        while (malformed.ok() && reader->Read(&chunk)) {
          if (!have_head) {
            if (!chunk.has_pull()) {
              malformed = Unparsable(chunk);
              break;
            }
            *head = std::move(*chunk.mutable_pull());
            have_head = true;
            continue;
          }
          const std::string& values = chunk.values();
          if (chunk.has_pull() || chunk.offset() != received ||
              values.size() % sizeof(float) != 0 ||
              values.size() / sizeof(float) > mine.size() - received) {
            malformed = grpc::Status(
                grpc::StatusCode::INTERNAL,
                absl::StrCat("the streamed pull's chunk at offset ",
                             chunk.offset(), " (", values.size(),
                             " bytes) does not follow key ", received,
                             " of the shard's ", mine.size()));
            break;
          }
          std::memcpy(mine.data() + received, values.data(), values.size());
          received += values.size() / sizeof(float);
        }
        if (!malformed.ok()) {
          context.TryCancel();
          reader->Finish();
          return malformed;
        }
        grpc::Status finished = reader->Finish();
        if (finished.ok() && (!have_head || received != mine.size())) {
          malformed = grpc::Status(
              grpc::StatusCode::INTERNAL,
              absl::StrCat("the streamed pull ended after ", received,
                           " of the shard's ", mine.size(), " values"));
          return malformed;
        }
        return finished;
      });
  if (!status.ok()) return rpc::FromGrpcStatus(status);
  NotePulled(shard);
  return absl::OkStatus();
}

bool ParameterClient::StreamsPush(const Shard& shard) const {
  return !compressed() && StreamsPull(shard);
}

bool ParameterClient::StreamsPull(const Shard& shard) const {
  return shard.keys.size() * sizeof(float) > options_.max_message_bytes;
}

uint64_t ParameterClient::ChunkFloats() const {
  // Room for the chunk's offset and the values' tag and length.
  constexpr uint64_t kChunkFields = 32;
  return std::max<uint64_t>(
      1, (options_.max_message_bytes - kChunkFields) / sizeof(float));
}

absl::StatusOr<PullInfo> ParameterClient::PushPull(
    uint64_t step, uint32_t batch_size, absl::Span<const float> gradient,
    absl::Span<float> theta) {
  return PushPullRows(step, batch_size, gradient, nullptr, theta, nullptr);
}

absl::StatusOr<PullInfo> ParameterClient::PushPullSparse(
    uint64_t step, uint32_t batch_size, absl::Span<const float> gradient,
    const std::vector<SparseBatch>& gradients, absl::Span<float> theta,
    std::vector<SparseBatch>& rows) {
  return PushPullRows(step, batch_size, gradient, &gradients, theta, &rows);
}

absl::StatusOr<PullInfo> ParameterClient::PushPullRows(
    uint64_t step, uint32_t batch_size, absl::Span<const float> gradient,
    const std::vector<SparseBatch>* gradients, absl::Span<float> theta,
    std::vector<SparseBatch>* rows) {
  const std::vector<SparseBatch> none;
  absl::StatusOr<Routes> push_routes =
      Route(gradients ? *gradients : none, true);
  if (!push_routes.ok()) return push_routes.status();
  absl::StatusOr<Routes> pull_routes = Route(rows ? *rows : none, false);
  if (!pull_routes.ok()) return pull_routes.status();
  SizeRows(rows);
  const uint64_t seq = next_seq_++;
  SelectCompressed(gradient);
  auto fill = [&](size_t i) {
    Shard& shard = shards_[i];
    FillPush(shard, seq, step, batch_size, gradient);
    FillSparse(i, gradients ? *gradients : none, *push_routes, true,
               shard.request.mutable_push()->mutable_sparse());
    FillPull(shard, step + 1, shard.request.mutable_pull());
    FillSparse(i, rows ? *rows : none, *pull_routes, false,
               shard.request.mutable_pull()->mutable_sparse());
  };
  auto take = [&](size_t i, const grpc::Status& status,
                  const grpc::ByteBuffer& answer) {
    return TakePushPullAnswer(i, status, answer, theta, *pull_routes, rows);
  };
  FirstError error;
  if (UsesPushPullStreams()) {
    std::vector<grpc::ByteBuffer> requests(shards_.size());
    for (size_t i = 0; i < shards_.size(); ++i) {
      fill(i);
      requests[i] = PushPullBytes(shards_[i], gradient);
    }
    PushPullOnStreams(requests, [&](size_t i, const grpc::Status& status,
                                    const grpc::ByteBuffer& answer) {
      error.Record(shards_[i].address(), take(i, status, answer));
    });
  } else {
    team_->Run([&](size_t i) {
      Shard& shard = shards_[i];
      fill(i);
      if (StreamsPull(shard)) {
        // Too big for one message each way: the push, then (once it is
        // taken) the pull, each streamed. Two round trips instead of one,
        // which at this size cost little beside the transfer.
        absl::Status taken = rpc::FromGrpcStatus(PushShard(shard, gradient));
        if (taken.ok()) taken = PullShard(shard, theta);
        if (taken.ok() && rows != nullptr) {
          taken = TakeSparse(i, *pull_routes, shard.response.pull().sparse(),
                             *rows);
        }
        error.Record(shard.address(), taken);
        return;
      }
      const grpc::ByteBuffer request = PushPullBytes(shard, gradient);
      grpc::ByteBuffer answer;
      const grpc::Status status = CallPushPull(shard, request, &answer);
      error.Record(shard.address(), take(i, status, answer));
    });
  }
  CountPushes();
  if (!error.status().ok()) return error.status();
  completes_.reset();
  return Pulled();
}

bool ParameterClient::UsesPushPullStreams() const {
  return options_.pushpull_stream && rpc::InstalledFaultInjector() == nullptr &&
         std::none_of(shards_.begin(), shards_.end(),
                      [&](const Shard& shard) { return StreamsPull(shard); });
}

grpc::ByteBuffer ParameterClient::PushPullBytes(
    Shard& shard, absl::Span<const float> gradient) {
  grpc::ByteBuffer request =
      rpc::SerializeApart(shard.request,
                          {ps::v1::PushPullRequest::kPushFieldNumber,
                           ps::v1::PushRequest::kGradientFieldNumber},
                          GradientBytes(shard, gradient));
  shard.push_request_bytes = request.Length();
  return request;
}

grpc::Status ParameterClient::CallPushPull(Shard& shard,
                                           const grpc::ByteBuffer& request,
                                           grpc::ByteBuffer* answer) {
  return CallPushing(
      shard, "PushPull with ", [&](grpc::ClientContext& context) {
        return shard.caller()->Call(&context, kPushPullMethod, request, answer);
      });
}

void ParameterClient::PushPullOnStreams(
    const std::vector<grpc::ByteBuffer>& requests,
    const std::function<void(size_t, const grpc::Status&,
                             const grpc::ByteBuffer&)>& answered) {
  const size_t n = shards_.size();
  const absl::Time deadline = absl::Now() + options_.retry.rpc_deadline;
  std::vector<uint32_t> tried(n);
  std::vector<bool> sent(n, false);
  std::vector<Shard::Routing::InFlight> tracked(n);
  for (size_t i = 0; i < n; ++i) {
    Shard& shard = shards_[i];
    tried[i] = shard.current->load();
    Replica& replica = shard.replicas[tried[i]];
    if (replica.refuses_streams) continue;
    replica.stream->Send(requests[i], deadline);
    sent[i] = true;
    // Cancelled, as the unary calls are, when calls move off this replica.
    tracked[i] = shard.routing->Track(tried[i], replica.stream->context());
  }
  std::vector<grpc::ByteBuffer> answers(n);
  std::vector<grpc::Status> statuses(n);
  bool all_answered = true;
  for (size_t i = 0; i < n; ++i) {
    if (!sent[i]) {
      all_answered = false;
      continue;
    }
    Shard& shard = shards_[i];
    Replica& replica = shard.replicas[tried[i]];
    statuses[i] = replica.stream->Receive(deadline, &answers[i]);
    shard.routing->Untrack(tracked[i]);
    if (statuses[i].error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      // An older server, or one injecting faults: unary calls from now on.
      replica.refuses_streams = true;
      sent[i] = false;
      spdlog::info("{} takes no PushPull streams ({}): unary calls from now on",
                   replica.address, statuses[i].error_message());
    }
    all_answered = all_answered && statuses[i].ok();
  }
  auto finish = [&](size_t i) {
    Shard& shard = shards_[i];
    grpc::Status status = statuses[i];
    if (sent[i] && status.ok()) {
      shard.push_attempts = 1;
      shard.push_answered = true;
    } else {
      if (sent[i]) FollowPrimary(shard, tried[i], status);
      // The unary call, with its retries and failover, sends the same
      // request again (the same seq: applied at most once).
      status = CallPushPull(shard, requests[i], &answers[i]);
      // The stream's try was an attempt too: a DUPLICATE now may be it.
      if (sent[i]) ++shard.push_attempts;
    }
    answered(i, status, answers[i]);
  };
  // Shards left to unary calls make them in parallel, each on its thread.
  if (all_answered) {
    for (size_t i = 0; i < n; ++i) finish(i);
  } else {
    team_->Run(finish);
  }
}

absl::Status ParameterClient::TakePushPullAnswer(
    size_t i, grpc::Status status, const grpc::ByteBuffer& answer,
    absl::Span<float> theta, const Routes& pull_routes,
    std::vector<SparseBatch>* rows) {
  Shard& shard = shards_[i];
  absl::Cord values;
  if (status.ok() &&
      !rpc::ParseApart(rpc::CordOf(answer),
                       {ps::v1::PushPullResponse::kPullFieldNumber,
                        ps::v1::PullResponse::kValuesFieldNumber},
                       &shard.response, &values)) {
    status = Unparsable(shard.response);
  }
  absl::Status taken = status.ok() ? TakePulled(shard, values, theta)
                                   : rpc::FromGrpcStatus(status);
  if (taken.ok() && rows != nullptr) {
    taken = TakeSparse(i, pull_routes, shard.response.pull().sparse(), *rows);
  }
  return taken;
}

void ParameterClient::FillPull(const Shard& shard,
                               std::optional<uint64_t> clock,
                               ps::v1::PullRequest* request) const {
  request->set_worker_id(options_.worker_id);
  if (!clock.has_value()) {
    request->set_min_version(0);
    request->set_clock(0);
    return;
  }
  // Sync: each shard's next round, so shards that fell out of step (one
  // restored from an older checkpoint) each keep their own rounds; a
  // worker that fell behind gets the newest θ at once and catches up.
  // SSP waits on the clock instead, async on nothing.
  uint64_t min_version = 0;
  if (sync_rounds()) {
    min_version = shard.pulled ? shard.pulled_version + 1 : init_version_;
  }
  request->set_min_version(min_version);
  request->set_clock(*clock);
}

absl::Status ParameterClient::TakePulled(Shard& shard, const absl::Cord& values,
                                         absl::Span<float> theta) {
  if (absl::Status copied = common::BytesToFloats(
          values, theta.subspan(shard.keys.begin, shard.keys.size()),
          "the pulled values");
      !copied.ok()) {
    return copied;
  }
  NotePulled(shard);
  return absl::OkStatus();
}

void ParameterClient::NotePulled(Shard& shard) {
  const ps::v1::PullResponse& pulled = shard.response.pull();
  LearnMode(shard, pulled.mode());
  if (shard.pulled && pulled.version() < shard.pulled_version) {
    spdlog::warn(
        "{} went back from version {} to {}: {} updates lost "
        "(the server restarted from a checkpoint)",
        shard.address(), shard.pulled_version, pulled.version(),
        shard.pulled_version - pulled.version());
  }
  shard.pulled = true;
  shard.pulled_version = pulled.version();
  shard.pulled_samples = pulled.samples_applied();
  shard.pulled_waited_us = pulled.waited_us();
}

PullInfo ParameterClient::Pulled() const {
  PullInfo info;
  info.version = shards_[0].pulled_version;
  info.samples_applied = shards_[0].pulled_samples;
  uint64_t waited_us = 0;
  for (const Shard& shard : shards_) {
    info.version = std::min(info.version, shard.pulled_version);
    waited_us = std::max(waited_us, shard.pulled_waited_us);
  }
  info.waited_seconds = static_cast<double>(waited_us) / 1e6;
  return info;
}

const ps::v1::PushRequest& ParameterClient::FillPush(
    Shard& shard, uint64_t seq, uint64_t step, uint32_t batch_size,
    absl::Span<const float> gradient) {
  ps::v1::PushRequest& request = *shard.request.mutable_push();
  request.set_worker_id(options_.worker_id);
  request.set_incarnation(options_.incarnation);
  request.set_seq(seq);
  request.set_step(step);
  // Sync: the round the gradient belongs to.
  request.set_base_version(shard.pulled_version);
  request.set_batch_size(batch_size);
  request.set_key_begin(shard.keys.begin);
  request.set_key_end(shard.keys.end);
  // Shard 0 keeps the partition table: the completion goes there alone.
  if (completes_.has_value() && &shard == &shards_[0]) {
    *request.mutable_completes() = *completes_;
  } else {
    request.clear_completes();
  }
  if (compressed()) {
    compressor_->Encode(shard.keys, gradient,
                        request.mutable_compressed_gradient());
  } else {
    request.clear_compressed_gradient();
  }
  return request;
}

void ParameterClient::SelectCompressed(absl::Span<const float> gradient) {
  if (compressed()) compressor_->Select(gradient);
}

std::string ParameterClient::GradientBytes(
    const Shard& shard, absl::Span<const float> gradient) const {
  if (compressed()) return {};
  std::string bytes;
  common::FloatsToBytes(gradient.subspan(shard.keys.begin, shard.keys.size()),
                        &bytes);
  return bytes;
}

grpc::Status ParameterClient::CallPushing(
    Shard& shard, const char* what,
    const std::function<grpc::Status(grpc::ClientContext&)>& attempt) {
  // A retry carries the same seq, so the server applies it at most once;
  // counting the attempts tells CountPushes what a DUPLICATE means.
  shard.push_attempts = 0;
  shard.push_answered = false;
  auto counted = [&](grpc::ClientContext& context) {
    ++shard.push_attempts;
    return attempt(context);
  };
  grpc::Status status =
      CallRegistered(shard, what, counted, &shard.reregistered);
  shard.push_answered = status.ok();
  return status;
}

grpc::Status ParameterClient::CallRegistered(
    Shard& shard, const char* what,
    const std::function<grpc::Status(grpc::ClientContext&)>& attempt,
    bool* reregistered) {
  auto call = [&] {
    return CallShard(shard, absl::StrCat(what, shard.address()), attempt);
  };
  grpc::Status status = call();
  if (NeedsReRegistration(status)) {
    spdlog::warn("{}{} was refused ({}); registering again", what,
                 shard.address(), status.error_message());
    ps::v1::RegisterResponse registered;
    status = RegisterShard(shard, &registered);
    if (status.ok()) {
      if (reregistered != nullptr) *reregistered = true;
      status = call();
    }
  }
  return status;
}

absl::StatusOr<ParameterClient::Routes> ParameterClient::Route(
    const std::vector<SparseBatch>& batches, bool with_values) const {
  const uint32_t num_shards = static_cast<uint32_t>(shards_.size());
  Routes routes(num_shards, std::vector<std::vector<size_t>>(batches.size()));
  for (size_t b = 0; b < batches.size(); ++b) {
    const SparseBatch& batch = batches[b];
    if (batch.table >= tables_.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("table #", batch.table, " was not declared at Init (",
                       tables_.size(), " tables were)"));
    }
    const uint64_t dim = tables_[batch.table].dim;
    if (with_values && batch.values.size() != batch.ids.size() * dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          "table '", tables_[batch.table].name, "': ", batch.ids.size(),
          " ids of dim ", dim, " need ", batch.ids.size() * dim,
          " gradient values, got ", batch.values.size()));
    }
    for (size_t k = 0; k < batch.ids.size(); ++k) {
      routes[common::ShardOfId(batch.ids[k], num_shards)][b].push_back(k);
    }
  }
  return routes;
}

void ParameterClient::SizeRows(std::vector<SparseBatch>* rows) const {
  if (rows == nullptr) return;
  for (SparseBatch& batch : *rows) {
    batch.values.resize(batch.ids.size() * tables_[batch.table].dim);
  }
}

void ParameterClient::FillSparse(
    size_t i, const std::vector<SparseBatch>& batches, const Routes& routes,
    bool with_values,
    google::protobuf::RepeatedPtrField<ps::v1::SparseRows>* out) const {
  out->Clear();
  for (size_t b = 0; b < batches.size(); ++b) {
    const std::vector<size_t>& mine = routes[i][b];
    if (mine.empty()) continue;
    const SparseBatch& batch = batches[b];
    const size_t dim = tables_[batch.table].dim;
    ps::v1::SparseRows* rows = out->Add();
    rows->set_table(tables_[batch.table].name);
    std::string* keys = rows->mutable_keys();
    keys->resize(mine.size() * sizeof(uint64_t));
    for (size_t k = 0; k < mine.size(); ++k) {
      std::memcpy(keys->data() + k * sizeof(uint64_t), &batch.ids[mine[k]],
                  sizeof(uint64_t));
    }
    if (!with_values) continue;
    std::string* values = rows->mutable_values();
    values->resize(mine.size() * dim * sizeof(float));
    for (size_t k = 0; k < mine.size(); ++k) {
      std::memcpy(values->data() + k * dim * sizeof(float),
                  batch.values.data() + mine[k] * dim, dim * sizeof(float));
    }
  }
}

absl::Status ParameterClient::TakeSparse(
    size_t i, const Routes& routes,
    const google::protobuf::RepeatedPtrField<ps::v1::SparseRows>& pulled,
    std::vector<SparseBatch>& batches) const {
  int next = 0;
  for (size_t b = 0; b < batches.size(); ++b) {
    SparseBatch& batch = batches[b];
    const size_t dim = tables_[batch.table].dim;
    const std::vector<size_t>& mine = routes[i][b];
    if (mine.empty()) continue;
    if (next >= pulled.size() ||
        pulled[next].table() != tables_[batch.table].name ||
        pulled[next].values().size() != mine.size() * dim * sizeof(float)) {
      return absl::InternalError(
          absl::StrCat("the server's answer lacks the rows of table '",
                       tables_[batch.table].name, "' it was asked for"));
    }
    const std::string& values = pulled[next++].values();
    for (size_t k = 0; k < mine.size(); ++k) {
      std::memcpy(batch.values.data() + mine[k] * dim,
                  values.data() + k * dim * sizeof(float), dim * sizeof(float));
    }
  }
  return absl::OkStatus();
}

void ParameterClient::LearnMode(const Shard& shard,
                                ps::v1::ConsistencyMode mode) {
  // An older server does not say: keep what Init reported.
  if (mode == ps::v1::MODE_UNSPECIFIED) return;
  const ps::v1::ConsistencyMode was = mode_.exchange(mode);
  if (was != mode) {
    spdlog::warn(
        "{} now runs in {} mode (it was {}): pushing and pulling "
        "by its rules from now on",
        shard.address(), rpc::ModeName(mode), rpc::ModeName(was));
  }
}

void ParameterClient::CountPushes() {
  ++push_counts_.pushes;
  for (size_t i = 0; i < shards_.size(); ++i) {
    push_counts_.push_request_bytes += shards_[i].push_request_bytes;
    if (shards_[i].reregistered) ++push_counts_.reregistered;
    shards_[i].reregistered = false;
    // A push that failed has no outcome (the response is the last one's).
    if (!shards_[i].push_answered) continue;
    const ps::v1::PushResponse& answer = shards_[i].response.push();
    if (answer.completion_skipped()) {
      ++push_counts_.completions_skipped;
      spdlog::warn(
          "{}: the push counted, but the partition it completes is no longer "
          "this worker's (its lease expired and another worker took it, or "
          "it is done): not recorded as done by this worker; leasing the "
          "next",
          shards_[i].address());
    }
    switch (answer.outcome()) {
      case ps::v1::PushResponse::STALE:
        ++push_counts_.stale;
        break;
      case ps::v1::PushResponse::DUPLICATE:
        // This seq was new to this call: a DUPLICATE after more than one
        // attempt means an earlier attempt got there and its reply was lost.
        if (shards_[i].push_attempts > 1) {
          ++push_counts_.applied_or_accepted;
        } else {
          ++push_counts_.duplicate;
        }
        break;
      default:
        ++push_counts_.applied_or_accepted;
    }
  }
}

}  // namespace ps::worker
