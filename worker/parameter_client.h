#ifndef PS_WORKER_PARAMETER_CLIENT_H_
#define PS_WORKER_PARAMETER_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/gradient_codec.h"
#include "common/key_range.h"
#include "common/parallel.h"
#include "common/rpc/retry.h"
#include "common/rpc/wire_format.h"
#include "common/tensor_spec.h"
#include "ps/v1/parameter_server.grpc.pb.h"
#include "worker/gradient_compressor.h"
#include "worker/parameter_store.h"
#include "worker/replica_choice.h"

namespace ps::worker {

struct ClientOptions {
  // Every shard, in shard order: its host:port, or for a replicated shard
  // its replicas' host:port joined by '|' in the servers' replica order
  // (ps_worker --servers=a0|a1,b0|b1). Calls go to the primary a replica
  // names (NOT_PRIMARY) and move to the next replica when one does not
  // answer.
  std::vector<std::string> servers;
  uint32_t worker_id = 0;
  // Distinguishes this process from earlier ones with the same worker_id;
  // servers refuse an incarnation older than the one they hold. Default: 0
  // (the first Register picks one above every incarnation the servers know
  // for this id, and above the clock: a process rescheduled onto a node
  // whose clock is behind still replaces its predecessor)
  uint64_t incarnation = 0;
  rpc::RetryPolicy retry;
  // How dense gradients are pushed, for every tensor whose TensorSpec does
  // not say (ps_worker --compression). Default: none (float32)
  common::Compression compression;
  // A shard whose dense values are more bytes than this is pushed and
  // pulled as a stream of chunks of at most this size (ps.v1 PushStream,
  // PullStream) instead of in one message, so neither side holds a second
  // θ-sized message; PushPull is then a streamed push and a streamed pull.
  // Compressed pushes stay one message. At least 64 KiB
  // (ps_worker --max_message_bytes). Default: 4 MiB
  uint64_t max_message_bytes = kDefaultMaxMessageBytes;
  static constexpr uint64_t kDefaultMaxMessageBytes = 4 << 20;
  // PushPull goes on one long-lived stream per shard (ps.v1
  // PushPullStream), every shard's request sent before any answer is read:
  // a unary call's per-call cost and the hand-off to a thread per shard
  // are left out. A stream that fails (a deadline included) is closed and
  // that shard's request sent again as a unary PushPull, with its retries
  // and failover; the same seq is applied at most once. Off with fault
  // injection (--inject_faults), whose faults hit calls, not messages; and
  // for shards that stream their values (max_message_bytes)
  // (ps_worker --pushpull_stream). Default: on
  bool pushpull_stream = true;
  static constexpr uint64_t kMinMessageBytes = 64 << 10;
};

// Talks to every server shard of one job, in parallel, with deadlines and
// retries. Splits the flat θ and gradient into the shards' key ranges.
class ParameterClient final : public ParameterStore {
 public:
  // Waits, within the retry policy, until every server's name resolves.
  static absl::StatusOr<std::unique_ptr<ParameterClient>> Connect(
      ClientOptions options);

  // Asks every shard for its Status, before this worker registers: fails
  // with FAILED_PRECONDITION when --servers does not match the servers'
  // layout (a shard missing or extra, or listed out of order), so a worker
  // that cannot train never registers; and says whether the job is
  // complete already.
  absl::StatusOr<JobSurvey> Survey() override;

  // Registers with every shard (same incarnation: renews after an expiry)
  // and starts heartbeating. Returns the step to resume at: what a previous
  // process with this worker id completed (0 for a new worker).
  absl::StatusOr<uint64_t> Register() override;

  // Stops heartbeating and tells every shard this worker is done, and why
  // (a finished worker is recorded as such), so sync rounds stop waiting
  // for it.
  absl::Status Leave(ps::v1::LeaveRequest::Reason reason =
                         ps::v1::LeaveRequest::STOPPED) override;

  // Waits until workers 0 to `num_workers`-1 have all registered and none
  // is live on any shard (each finished or its lease expired), at most
  // `timeout`: a worker that started late has not finished yet.
  absl::Status WaitForOtherWorkers(uint32_t num_workers,
                                   absl::Duration timeout) override;

  // From shard 0, registering there again (once) when it no longer holds
  // this worker's lease; checks a granted range is the plan's.
  absl::StatusOr<ps::v1::LeasePartitionResponse> LeasePartition(
      const common::PartitionPlan& plan) override;
  void CompleteWithNextPush(const ps::v1::PartitionDone& done) override;
  absl::Status Idle() override;
  absl::StatusOr<uint64_t> PartitionsDone() override;

  // Declares the model on every shard with `initial` θ (first one wins) and
  // checks the shards agree on mode and worker count.
  absl::StatusOr<ClusterInfo> Init(
      const std::vector<common::TensorSpec>& tensors,
      absl::Span<const float> initial) override;
  // Init with sparse tables too (the model may have tables only), whose
  // rows start seeded by `model_seed`.
  absl::StatusOr<ClusterInfo> InitSparse(
      const std::vector<common::TensorSpec>& tensors,
      const std::vector<common::TableSpec>& tables, uint64_t model_seed,
      absl::Span<const float> initial) override;

  // The sparse calls: each batch's ids are grouped by their shard
  // (common::ShardOfId), every shard gets its part of θ and its ids in one
  // call, all shards in parallel, and the rows come back in the caller's
  // order of ids. INVALID_ARGUMENT, before anything is sent, for a table
  // not declared at Init or gradient values that are not ids × dim.
  absl::StatusOr<PullInfo> PullSparse(uint64_t step, absl::Span<float> theta,
                                      std::vector<SparseBatch>& rows) override;
  absl::Status PushSparse(uint64_t step, uint32_t batch_size,
                          absl::Span<const float> gradient,
                          const std::vector<SparseBatch>& gradients) override;
  absl::StatusOr<PullInfo> PushPullSparse(
      uint64_t step, uint32_t batch_size, absl::Span<const float> gradient,
      const std::vector<SparseBatch>& gradients, absl::Span<float> theta,
      std::vector<SparseBatch>& rows) override;

  // See ParameterStore::Pull. Sync rounds are each shard's own: a shard
  // that fell out of step (restored from an older checkpoint) is asked for
  // the round after the last one it answered with. SSP sends `step` as the
  // clock; servers in other modes ignore it, so a server restarted in
  // another mode is followed at once. Logs when a shard's version went
  // back.
  absl::StatusOr<PullInfo> Pull(uint64_t step,
                                absl::Span<float> theta) override;

  // Sends each shard its slice of the mean gradient of `batch_size` examples,
  // computed at this worker's `step` from the θ last pulled from that shard
  // (whose version, in sync mode, is the round the gradient belongs to). A
  // shard that let the lease expire (the worker was paused, say) is
  // re-registered and the push retried: the server then drops it as stale if
  // its round closed meanwhile.
  absl::Status Push(uint64_t step, uint32_t batch_size,
                    absl::Span<const float> gradient) override;

  // Push, then Pull(step + 1, theta), in one call per shard: a training
  // step's traffic in one round trip. Each shard's push names the round of
  // the θ last pulled from it, as Push does.
  absl::StatusOr<PullInfo> PushPull(uint64_t step, uint32_t batch_size,
                                    absl::Span<const float> gradient,
                                    absl::Span<float> theta) override;

  absl::StatusOr<PullInfo> PullFinal(absl::Span<float> theta) override;
  absl::StatusOr<PullInfo> PullFinalSparse(
      absl::Span<float> theta, std::vector<SparseBatch>& rows) override;
  // Safe beside the training calls (another thread's): it uses the stubs
  // alone.
  absl::StatusOr<std::vector<uint64_t>> RowsPerShard() override;

  const PushCounts& push_counts() const override { return push_counts_; }

  // The servers' consistency mode ("sync", "async", "ssp") as the latest
  // answer said it: Init's at first, then every Pull, Push and PushPull
  // answer's (a server restarted in another mode is followed).
  ps::v1::ConsistencyMode mode() const override { return mode_.load(); }

  size_t num_shards() const override { return shards_.size(); }
  uint64_t incarnation() const { return options_.incarnation; }

 private:
  struct Replica {
    std::string address;
    std::unique_ptr<ps::v1::ParameterServer::Stub> stub;
    // Pull, Push and PushPull, with raw bytes on the same channel.
    std::unique_ptr<rpc::RawUnaryCaller> caller;
    // PushPull on one long-lived stream (ClientOptions::pushpull_stream),
    // unless the server refused streams (UNIMPLEMENTED: it predates them,
    // or injects faults); the training thread's alone.
    std::unique_ptr<rpc::RawStreamCaller> stream;
    bool refuses_streams = false;
  };
  struct Shard {
    // One, or the shard's replicas; calls go to `current`, the primary as
    // far as this worker knows (ChooseReplica moves it).
    std::vector<Replica> replicas;
    std::unique_ptr<std::atomic<uint32_t>> current =
        std::make_unique<std::atomic<uint32_t>>(0);
    // Who failed, and which calls wait on which replica.
    struct Routing {
      absl::Mutex mu;
      // The replica last found unreachable, and when: for kFailoverWindow
      // a backup naming it the primary is not followed back to it.
      uint32_t unreachable ABSL_GUARDED_BY(mu) = UINT32_MAX;
      absl::Time unreachable_at ABSL_GUARDED_BY(mu);
      // Calls in flight by replica: those on a replica calls moved away
      // from are cancelled (a stopped server never answers them).
      std::multimap<uint32_t, grpc::ClientContext*> in_flight
          ABSL_GUARDED_BY(mu);
      using InFlight = std::multimap<uint32_t, grpc::ClientContext*>::iterator;
      // A call on `replica`, in flight until Untrack.
      InFlight Track(uint32_t replica, grpc::ClientContext* context) {
        absl::MutexLock lock(&mu);
        return in_flight.emplace(replica, context);
      }
      void Untrack(InFlight call) {
        absl::MutexLock lock(&mu);
        in_flight.erase(call);
      }
    };
    std::unique_ptr<Routing> routing = std::make_unique<Routing>();
    const Replica& replica() const { return replicas[current->load()]; }
    ps::v1::ParameterServer::Stub* stub() const { return replica().stub.get(); }
    rpc::RawUnaryCaller* caller() const { return replica().caller.get(); }
    const std::string& address() const { return replica().address; }
    common::KeyRange keys;
    // The last call's fields (θ-sized bytes travel apart); Push and Pull
    // use their halves.
    ps::v1::PushPullRequest request;
    ps::v1::PushPullResponse response;
    // From the last answered pull; a sync push names this round.
    uint64_t pulled_version = 0;
    uint64_t pulled_samples = 0;
    uint64_t pulled_waited_us = 0;  // the last pull's wait on the server
    bool pulled = false;            // a pull was answered
    // The last push had to register again (one flag per shard: the shards'
    // calls run on different threads).
    bool reregistered = false;
    // The last push's attempts (same seq each time), and whether it was
    // answered at all.
    uint32_t push_attempts = 0;
    bool push_answered = false;
    size_t push_request_bytes = 0;  // the last push's request
  };

  explicit ParameterClient(ClientOptions options);
  // Where each batch's ids go: [shard][batch] → positions in batch.ids.
  using Routes = std::vector<std::vector<std::vector<size_t>>>;
  // Groups the batches' ids by shard; checks tables (and, with
  // `with_values`, the values' sizes) first.
  absl::StatusOr<Routes> Route(const std::vector<SparseBatch>& batches,
                               bool with_values) const;
  // Sizes each batch's values for its rows, before the shards' threads
  // fill their parts.
  void SizeRows(std::vector<SparseBatch>* rows) const;
  // Shard `i`'s part of the batches, keys and (with_values) rows.
  void FillSparse(
      size_t i, const std::vector<SparseBatch>& batches, const Routes& routes,
      bool with_values,
      google::protobuf::RepeatedPtrField<ps::v1::SparseRows>* out) const;
  // Copies shard `i`'s pulled rows into the batches, after checking the
  // answer holds exactly the rows asked for.
  absl::Status TakeSparse(
      size_t i, const Routes& routes,
      const google::protobuf::RepeatedPtrField<ps::v1::SparseRows>& pulled,
      std::vector<SparseBatch>& batches) const;
  // The dense calls and their sparse forms in one: null batches send none.
  // A pull without a clock asks for the newest θ and waits for nothing.
  absl::StatusOr<PullInfo> PullRows(std::optional<uint64_t> clock,
                                    absl::Span<float> theta,
                                    std::vector<SparseBatch>* rows);
  absl::Status PushRows(uint64_t step, uint32_t batch_size,
                        absl::Span<const float> gradient,
                        const std::vector<SparseBatch>* gradients);
  // Whether this step's PushPulls go on the shards' streams.
  bool UsesPushPullStreams() const;
  // Shard's PushPull request as sent, its gradient's bytes apart (its
  // fields filled); notes its size.
  grpc::ByteBuffer PushPullBytes(Shard& shard,
                                 absl::Span<const float> gradient);
  // A unary PushPull with retries and failover.
  grpc::Status CallPushPull(Shard& shard, const grpc::ByteBuffer& request,
                            grpc::ByteBuffer* answer);
  // Every shard's request on its replica's stream, sent before any answer
  // is read; a shard whose stream failed, or whose replica takes none, as
  // a unary PushPull (those in parallel). `answered(i, status, answer)`
  // runs once per shard, on this thread or shard i's.
  void PushPullOnStreams(
      const std::vector<grpc::ByteBuffer>& requests,
      const std::function<void(size_t, const grpc::Status&,
                               const grpc::ByteBuffer&)>& answered);
  // Shard i's PushPull answer (or `status`): θ and the rows taken from it.
  absl::Status TakePushPullAnswer(size_t i, grpc::Status status,
                                  const grpc::ByteBuffer& answer,
                                  absl::Span<float> theta,
                                  const Routes& pull_routes,
                                  std::vector<SparseBatch>* rows);
  absl::StatusOr<PullInfo> PushPullRows(
      uint64_t step, uint32_t batch_size, absl::Span<const float> gradient,
      const std::vector<SparseBatch>* gradients, absl::Span<float> theta,
      std::vector<SparseBatch>* rows);
  // Every shard's Status, asked in parallel with retries.
  absl::StatusOr<std::vector<ps::v1::StatusResponse>> StatusOfEveryShard();
  // One shard's Status, with retries.
  grpc::Status StatusOf(Shard& shard, ps::v1::StatusResponse* answer);
  // Picks this process's incarnation (see ClientOptions::incarnation) from
  // the shards' Status answers, once, before the first registration.
  void ChooseIncarnation(const std::vector<ps::v1::StatusResponse>& answers);
  grpc::Status RegisterShard(Shard& shard, ps::v1::RegisterResponse* response);
  // Runs `attempt` on `shard`'s current replica with the retry policy,
  // following the shard's primary between attempts (ChooseReplica): a
  // redirect is tried at once.
  grpc::Status CallShard(
      Shard& shard, const std::string& what,
      const std::function<grpc::Status(grpc::ClientContext&)>& attempt);
  // How long a worker waits on a backup that names as the primary a
  // replica that did not answer: the shard's failover (the servers'
  // --failover_timeout and an election) happens within it.
  static constexpr absl::Duration kFailoverWindow = absl::Seconds(2);
  // Moves `shard` to the replica ChooseReplica picks after `status` from
  // replica `tried`, cancelling the calls still waiting on `tried`.
  static ReplicaChoice FollowPrimary(Shard& shard, uint32_t tried,
                                     const grpc::Status& status);
  void HeartbeatLoop(absl::Duration interval);
  // The one place that applies the mode's rule for what a pull waits for;
  // without a clock, nothing (the newest θ).
  void FillPull(const Shard& shard, std::optional<uint64_t> clock,
                ps::v1::PullRequest* request) const;
  // The push's fields; its gradient travels apart (GradientBytes), or,
  // compressed, in its compressed_gradient (filled here).
  const ps::v1::PushRequest& FillPush(Shard& shard, uint64_t seq, uint64_t step,
                                      uint32_t batch_size,
                                      absl::Span<const float> gradient);
  // The shard's float32 gradient bytes; empty when it travels compressed.
  std::string GradientBytes(const Shard& shard,
                            absl::Span<const float> gradient) const;
  // Once per push, before the shards' threads encode: top-k's choice.
  void SelectCompressed(absl::Span<const float> gradient);
  // Checks the shard's pulled values and copies them into its part of θ.
  absl::Status TakePulled(Shard& shard, const absl::Cord& values,
                          absl::Span<float> theta);
  // Takes shard.response.pull()'s version, mode and wait, once its values
  // are in θ.
  void NotePulled(Shard& shard);
  // Whether the shard's gradient or θ is too big for one message
  // (ClientOptions::max_message_bytes): it then travels in chunks.
  bool StreamsPush(const Shard& shard) const;
  bool StreamsPull(const Shard& shard) const;
  // Float32 values per chunk: a chunk's message stays within
  // max_message_bytes.
  uint64_t ChunkFloats() const;
  // The shard's push (shard.request.push(), filled) in one message or
  // streamed; its answer in shard.response.push().
  grpc::Status PushShard(Shard& shard, absl::Span<const float> gradient);
  grpc::Status StreamPush(Shard& shard, absl::Span<const float> gradient);
  // Init of a shard too big for one message: `request`'s fields (values
  // empty), then the shard's `initial` values in chunks (ps.v1 InitStream).
  grpc::Status StreamInit(Shard& shard, const ps::v1::InitRequest& request,
                          absl::Span<const float> initial,
                          ps::v1::InitResponse* response);
  // The shard's pull (shard.request.pull(), filled) in one message or
  // streamed; the answer's fields in shard.response.pull(), its values in
  // the shard's part of θ.
  absl::Status PullShard(Shard& shard, absl::Span<float> theta);
  absl::Status StreamPull(Shard& shard, absl::Span<float> theta);
  PullInfo Pulled() const;
  // Runs a call that pushes, with retries; re-registers once when the
  // server no longer knows this incarnation (the lease expired) and tries
  // again.
  grpc::Status CallPushing(
      Shard& shard, const char* what,
      const std::function<grpc::Status(grpc::ClientContext&)>& attempt);
  // Runs a call with retries; re-registers once when the server no longer
  // knows this incarnation and runs it again (then sets *reregistered).
  // `what` names the call in logs ("Push to ").
  grpc::Status CallRegistered(
      Shard& shard, const char* what,
      const std::function<grpc::Status(grpc::ClientContext&)>& attempt,
      bool* reregistered = nullptr);
  void CountPushes();
  void StopHeartbeats();
  // Leave with `reason` on every shard (Leave and Idle).
  absl::Status SendLeave(ps::v1::LeaveRequest::Reason reason);

 public:
  ~ParameterClient();

 private:
  ClientOptions options_;
  bool incarnation_chosen_ = false;  // given, or picked by ChooseIncarnation
  std::vector<common::TableSpec> tables_;  // as declared at Init
  // From Init's tensors and options_.compression; holds top-k's residual.
  std::optional<GradientCompressor> compressor_;
  bool compressed() const {
    return compressor_.has_value() && compressor_->compresses();
  }
  std::vector<Shard> shards_;
  // Runs the per-shard halves of Pull, Push and PushPull in parallel.
  std::unique_ptr<common::ThreadTeam> team_;
  // Follows every answer's mode (LearnMode); read and written by the
  // shards' threads at once.
  std::atomic<ps::v1::ConsistencyMode> mode_{ps::v1::MODE_UNSPECIFIED};
  bool sync_rounds() const { return mode_.load() == ps::v1::MODE_SYNC; }
  // Takes the mode a server answered with; logs when it changed.
  void LearnMode(const Shard& shard, ps::v1::ConsistencyMode mode);
  // Sync: the round a first pull waits for (the lowest shard version Init
  // reported: the round open then).
  uint64_t init_version_ = 0;
  uint64_t next_seq_ = 1;
  // What the next push reports done to shard 0 (CompleteWithNextPush).
  std::optional<ps::v1::PartitionDone> completes_;
  PushCounts push_counts_;
  std::atomic<uint64_t> reregistrations_{0};
  absl::Notification stop_heartbeats_;
  std::thread heartbeats_;
};

}  // namespace ps::worker

#endif  // PS_WORKER_PARAMETER_CLIENT_H_
