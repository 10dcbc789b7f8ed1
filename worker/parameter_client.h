#ifndef PS_WORKER_PARAMETER_CLIENT_H_
#define PS_WORKER_PARAMETER_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/key_range.h"
#include "common/rpc/retry.h"
#include "common/tensor_spec.h"
#include "ps/v1/parameter_server.grpc.pb.h"

namespace ps::worker {

struct ClientOptions {
  // host:port of every shard, in shard order.
  std::vector<std::string> servers;
  uint32_t worker_id = 0;
  // Distinguishes this process from earlier ones with the same worker_id.
  // Default: 0 (Connect picks one from the clock)
  uint64_t incarnation = 0;
  rpc::RetryPolicy retry;
};

// What the servers told a worker when it declared the model.
struct ClusterInfo {
  std::string mode;               // "sync" or "async", the same on all shards
  uint32_t expected_workers = 0;  // the same on all shards
  uint64_t version = 0;           // lowest shard version
};

struct PullInfo {
  uint64_t version = 0;          // lowest shard version
  uint64_t samples_applied = 0;  // as counted by shard 0
};

// Talks to every server shard of one job, in parallel, with deadlines and
// retries. Splits the flat θ and gradient into the shards' key ranges.
class ParameterClient {
 public:
  static absl::StatusOr<std::unique_ptr<ParameterClient>> Connect(
      ClientOptions options);

  // Declares the model on every shard with `initial` θ (first one wins) and
  // checks the shards agree on mode and worker count.
  absl::StatusOr<ClusterInfo> Init(
      const std::vector<common::TensorSpec>& tensors,
      absl::Span<const float> initial);

  // Fills `theta` from every shard once each reached `min_version`.
  absl::StatusOr<PullInfo> Pull(uint64_t min_version, absl::Span<float> theta);

  // Sends each shard its slice of the mean gradient of `batch_size` examples.
  absl::Status Push(uint64_t step, uint64_t base_version, uint32_t batch_size,
                    absl::Span<const float> gradient);

  size_t num_shards() const { return shards_.size(); }
  uint64_t incarnation() const { return options_.incarnation; }

 private:
  struct Shard {
    std::string address;
    std::unique_ptr<ps::v1::ParameterServer::Stub> stub;
    common::KeyRange keys;
    // Reused across steps so large payloads do not fault in fresh pages.
    ps::v1::PushRequest push;
    ps::v1::PullResponse pull;
  };

  explicit ParameterClient(ClientOptions options);

  ClientOptions options_;
  std::vector<Shard> shards_;
  uint64_t next_seq_ = 1;
};

}  // namespace ps::worker

#endif  // PS_WORKER_PARAMETER_CLIENT_H_
