#include "worker/parameter_client.h"

#include <algorithm>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/float_bytes.h"
#include "common/parallel.h"
#include "common/rpc/channel.h"
#include "common/rpc/convert.h"

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

}  // namespace

ParameterClient::ParameterClient(ClientOptions options)
    : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<ParameterClient>> ParameterClient::Connect(
    ClientOptions options) {
  if (options.servers.empty()) {
    return absl::InvalidArgumentError("no servers given");
  }
  if (options.incarnation == 0) {
    options.incarnation = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  }
  std::unique_ptr<ParameterClient> client(new ParameterClient(options));
  for (const std::string& address : options.servers) {
    if (address.empty() || address.find(':') == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "server address '", address, "' is not host:port"));
    }
    Shard& shard = client->shards_.emplace_back();
    shard.address = address;
    shard.stub = ps::v1::ParameterServer::NewStub(rpc::CreateChannel(address));
  }
  return client;
}

absl::StatusOr<ClusterInfo> ParameterClient::Init(
    const std::vector<common::TensorSpec>& tensors,
    absl::Span<const float> initial) {
  const uint64_t num_keys = common::NumKeys(tensors);
  if (initial.size() != num_keys) {
    return absl::InvalidArgumentError(absl::StrCat(
        "initial θ has ", initial.size(), " values for ", num_keys, " keys"));
  }
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
    common::FloatsToBytes(initial.subspan(shard.keys.begin, shard.keys.size()),
                          request.mutable_values());
    error.Record(shard.address,
                 rpc::CallWithRetry(options_.retry,
                                    absl::StrCat("Init on ", shard.address),
                                    [&](grpc::ClientContext& context) {
                                      return shard.stub->Init(
                                          &context, request, &responses[i]);
                                    }));
  });
  if (!error.status().ok()) return error.status();

  ClusterInfo info;
  info.mode = responses[0].mode();
  info.expected_workers = responses[0].expected_workers();
  info.version = responses[0].version();
  for (uint32_t i = 0; i < num_shards; ++i) {
    const ps::v1::InitResponse& r = responses[i];
    if (r.key_begin() != shards_[i].keys.begin ||
        r.key_end() != shards_[i].keys.end) {
      return absl::FailedPreconditionError(absl::StrCat(
          "server ", shards_[i].address, " holds keys [", r.key_begin(), ", ",
          r.key_end(), ") but this worker expected ",
          shards_[i].keys.ToString()));
    }
    if (r.mode() != info.mode || r.expected_workers() != info.expected_workers) {
      return absl::FailedPreconditionError(absl::StrCat(
          "servers disagree: ", shards_[0].address, " runs mode ", info.mode,
          " with ", info.expected_workers, " workers but ",
          shards_[i].address, " runs mode ", r.mode(), " with ",
          r.expected_workers(), " workers"));
    }
    info.version = std::min(info.version, r.version());
  }
  return info;
}

absl::StatusOr<PullInfo> ParameterClient::Pull(uint64_t min_version,
                                               absl::Span<float> theta) {
  FirstError error;
  common::ParallelFor(shards_.size(), [&](size_t i) {
    Shard& shard = shards_[i];
    ps::v1::PullRequest request;
    request.set_worker_id(options_.worker_id);
    request.set_min_version(min_version);
    grpc::Status status = rpc::CallWithRetry(
        options_.retry, absl::StrCat("Pull from ", shard.address),
        [&](grpc::ClientContext& context) {
          return shard.stub->Pull(&context, request, &shard.pull);
        });
    if (!status.ok()) {
      error.Record(shard.address, status);
      return;
    }
    error.Record(shard.address,
                 common::BytesToFloats(
                     shard.pull.values(),
                     theta.subspan(shard.keys.begin, shard.keys.size()),
                     "the pulled values"));
  });
  if (!error.status().ok()) return error.status();
  PullInfo info;
  info.version = shards_[0].pull.version();
  info.samples_applied = shards_[0].pull.samples_applied();
  for (const Shard& shard : shards_) {
    info.version = std::min(info.version, shard.pull.version());
  }
  return info;
}

absl::Status ParameterClient::Push(uint64_t step, uint64_t base_version,
                                   uint32_t batch_size,
                                   absl::Span<const float> gradient) {
  const uint64_t seq = next_seq_++;
  FirstError error;
  common::ParallelFor(shards_.size(), [&](size_t i) {
    Shard& shard = shards_[i];
    ps::v1::PushRequest& request = shard.push;
    request.set_worker_id(options_.worker_id);
    request.set_incarnation(options_.incarnation);
    request.set_seq(seq);
    request.set_step(step);
    request.set_base_version(base_version);
    request.set_batch_size(batch_size);
    request.set_key_begin(shard.keys.begin);
    request.set_key_end(shard.keys.end);
    common::FloatsToBytes(gradient.subspan(shard.keys.begin, shard.keys.size()),
                          request.mutable_gradient());
    ps::v1::PushResponse response;
    // A retry carries the same seq, so the server applies it at most once.
    error.Record(shard.address,
                 rpc::CallWithRetry(options_.retry,
                                    absl::StrCat("Push to ", shard.address),
                                    [&](grpc::ClientContext& context) {
                                      return shard.stub->Push(
                                          &context, request, &response);
                                    }));
  });
  return error.status();
}

}  // namespace ps::worker
