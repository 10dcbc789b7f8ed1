// A shard replicated on two servers in this process (primary and backup),
// trained by real workers over loopback gRPC.
#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/error_info.h"
#include "common/rpc/channel.h"
#include "common/rpc/convert.h"
#include "common/theta_file.h"
#include "grpcpp/client_context.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "ps/v1/parameter_server.grpc.pb.h"
#include "ps/v1/replication.grpc.pb.h"
#include "server/ps_server.h"
#include "tests/synthetic_data.h"
#include "tests/wait.h"
#include "worker/model.h"
#include "worker/parameter_client.h"
#include "worker/trainer.h"

namespace ps {
namespace {

constexpr uint32_t kWorkers = 2;

std::string Loopback(int port) { return absl::StrCat("127.0.0.1:", port); }

server::ServerOptions ReplicaOptionsFor(server::ConsistencyMode mode,
                                        std::vector<std::string> peers,
                                        uint32_t replica_index) {
  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.shard.num_workers = kWorkers;
  options.shard.max_workers = kWorkers;
  options.shard.mode = mode;
  options.shard.update.learning_rate = 0.2f;
  options.shard.update.l2 = 1e-3f;
  options.replica.peers = std::move(peers);
  options.replica.replica_index = replica_index;
  return options;
}

// Replica 0; its backups learn its address from its port.
std::unique_ptr<server::PsServer> StartPrimary(server::ConsistencyMode mode) {
  auto primary = server::PsServer::Start(
      ReplicaOptionsFor(mode, {"127.0.0.1:0", "127.0.0.1:0"}, 0));
  EXPECT_TRUE(primary.ok()) << primary.status();
  return primary.ok() ? std::move(*primary) : nullptr;
}

std::unique_ptr<server::PsServer> StartBackup(server::ConsistencyMode mode,
                                              const server::PsServer& primary) {
  auto backup = server::PsServer::Start(
      ReplicaOptionsFor(mode, {Loopback(primary.port()), "127.0.0.1:0"}, 1));
  EXPECT_TRUE(backup.ok()) << backup.status();
  return backup.ok() ? std::move(*backup) : nullptr;
}

bool Joined(const server::PsServer& backup) {
  return backup.replicator()->joined();
}

// A primary, and a backup that joined it.
void StartJoinedPair(server::ConsistencyMode mode,
                     std::unique_ptr<server::PsServer>* primary,
                     std::unique_ptr<server::PsServer>* backup) {
  *primary = StartPrimary(mode);
  ASSERT_NE(*primary, nullptr);
  *backup = StartBackup(mode, **primary);
  ASSERT_NE(*backup, nullptr);
  ASSERT_TRUE(test_support::WaitUntil([&] { return Joined(**backup); }));
}

// Trains kWorkers workers against the primary alone (workers know only
// primaries), 3 epochs of the synthetic task; `during` runs on the test's
// thread while they train.
void Train(const std::vector<std::string>& servers,
           const std::function<void()>& during = nullptr, uint32_t epochs = 3) {
  const common::TrainTestData data = testing::SyntheticTrainTest(12, 4);
  std::vector<absl::Status> results(kWorkers);
  std::vector<std::thread> threads;
  for (uint32_t rank = 0; rank < kWorkers; ++rank) {
    threads.emplace_back([&, rank] {
      auto model = worker::CreateModel("softmax", data.train.features.cols(),
                                       data.train.num_classes);
      worker::ClientOptions client_options;
      client_options.servers = servers;
      client_options.worker_id = rank;
      client_options.retry.rpc_deadline = absl::Seconds(20);
      client_options.retry.max_retry_time = absl::Seconds(30);
      auto client = worker::ParameterClient::Connect(client_options);
      if (!model.ok() || !client.ok()) {
        results[rank] = absl::InternalError("setup failed");
        return;
      }
      worker::TrainerOptions options;
      options.rank = rank;
      options.num_workers = kWorkers;
      options.batch_size = 16;
      options.epochs = epochs;
      options.seed = 42;
      worker::Trainer trainer(options, model->get(), client->get(), &data);
      results[rank] = trainer.Run();
    });
  }
  if (during) during();
  for (std::thread& t : threads) t.join();
  for (const absl::Status& status : results) EXPECT_TRUE(status.ok()) << status;
}

void Train(const server::PsServer& primary,
           const std::function<void()>& during = nullptr) {
  Train({Loopback(primary.port())}, during);
}

// The shard's state as a checkpoint holds it: θ, optimizer state,
// version, the workers' sequence table, the open round.
std::string State(server::PsServer& server) {
  absl::StatusOr<common::ThetaFile> file = server.shard().Snapshot();
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? common::EncodeThetaFile(*file) : "";
}

// The backup's state once it applied every change the primary logged.
// `same_counters`: the backup saw every push (it did not join late, when
// it copied the state, which holds no counters).
void ExpectSameState(server::PsServer& primary, server::PsServer& backup,
                     bool same_counters) {
  const std::string primary_state = State(primary);
  const uint64_t logged = primary.replicator()->log_index();
  ASSERT_TRUE(test_support::WaitUntil(
      [&] { return backup.replicator()->log_index() >= logged; }));
  const server::ShardStatus p = primary.shard().Status();
  const server::ShardStatus b = backup.shard().Status();
  EXPECT_GT(p.version, 0u);
  EXPECT_EQ(p.version, b.version);
  EXPECT_EQ(p.samples_applied, b.samples_applied);
  if (same_counters) {
    EXPECT_EQ(p.pushes_applied, b.pushes_applied);
    EXPECT_EQ(p.pushes_duplicate, b.pushes_duplicate);
    EXPECT_EQ(p.pushes_stale, b.pushes_stale);
  }
  ASSERT_EQ(p.workers.size(), b.workers.size());
  for (size_t i = 0; i < p.workers.size(); ++i) {
    EXPECT_EQ(p.workers[i].incarnation, b.workers[i].incarnation);
    EXPECT_EQ(p.workers[i].last_seq, b.workers[i].last_seq);
  }
  // Byte for byte: θ, optimizer state, versions, sequence table, round.
  EXPECT_TRUE(State(backup) == primary_state)
      << "the backup's state differs from the primary's";
}

// A worker's Register sent straight to the server on `port`.
absl::Status RegisterWith(int port) {
  auto stub =
      ps::v1::ParameterServer::NewStub(rpc::CreateChannel(Loopback(port)));
  grpc::ClientContext context;
  ps::v1::RegisterRequest request;
  request.set_worker_id(0);
  request.set_incarnation(1);
  ps::v1::RegisterResponse response;
  return rpc::FromGrpcStatus(stub->Register(&context, request, &response));
}

ps::v1::ReplicaStatusResponse ReplicaStatusOf(const server::PsServer& server) {
  auto stub =
      ps::v1::Replication::NewStub(rpc::CreateChannel(Loopback(server.port())));
  grpc::ClientContext context;
  ps::v1::ReplicaStatusResponse status;
  EXPECT_TRUE(
      stub->ReplicaStatus(&context, ps::v1::ReplicaStatusRequest(), &status)
          .ok());
  return status;
}

class ReplicatedTraining
    : public ::testing::TestWithParam<server::ConsistencyMode> {};

TEST_P(ReplicatedTraining, TheBackupHoldsThePrimarysStateByteForByte) {
  std::unique_ptr<server::PsServer> primary = StartPrimary(GetParam());
  ASSERT_NE(primary, nullptr);
  std::unique_ptr<server::PsServer> backup = StartBackup(GetParam(), *primary);
  ASSERT_NE(backup, nullptr);
  ASSERT_TRUE(test_support::WaitUntil([&] { return Joined(*backup); }));
  Train(*primary);
  ExpectSameState(*primary, *backup, /*same_counters=*/true);
  EXPECT_EQ(primary->replicator()->backups_dropped(), 0u);
}

TEST_P(ReplicatedTraining, ABackupStartedMidTrainingCopiesTheStateAndFollows) {
  std::unique_ptr<server::PsServer> primary = StartPrimary(GetParam());
  ASSERT_NE(primary, nullptr);
  std::unique_ptr<server::PsServer> backup;
  uint64_t version_at_join = 0;
  // 30 epochs, not 3: on a loaded machine the join outlasted the last
  // ~90 versions of a 3-epoch job, and the backup had nothing to follow.
  Train(
      {Loopback(primary->port())},
      [&] {
        ASSERT_TRUE(test_support::WaitUntil(
            [&] { return primary->shard().Status().version >= 20; }));
        backup = StartBackup(GetParam(), *primary);
        ASSERT_NE(backup, nullptr);
        ASSERT_TRUE(test_support::WaitUntil([&] { return Joined(*backup); }));
        version_at_join = backup->shard().Status().version;
      },
      /*epochs=*/30);
  ASSERT_NE(backup, nullptr);
  // It copied a trained state, not a fresh one, and then followed.
  EXPECT_GE(version_at_join, 20u);
  EXPECT_GT(primary->shard().Status().version, version_at_join);
  ExpectSameState(*primary, *backup, /*same_counters=*/false);
}

INSTANTIATE_TEST_SUITE_P(Modes, ReplicatedTraining,
                         ::testing::Values(server::ConsistencyMode::kSync,
                                           server::ConsistencyMode::kAsync),
                         [](const auto& info) {
                           return info.param == server::ConsistencyMode::kSync
                                      ? "Sync"
                                      : "Async";
                         });

// Worker calls on the primary over gRPC, as a worker sends them.
class PrimaryCalls {
 public:
  explicit PrimaryCalls(const server::PsServer& primary)
      : stub_(ps::v1::ParameterServer::NewStub(
            rpc::CreateChannel(Loopback(primary.port())))) {}

  void Register(uint32_t worker) {
    ps::v1::RegisterRequest request;
    request.set_worker_id(worker);
    request.set_incarnation(kIncarnation);
    ps::v1::RegisterResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->Register(&context, request, &response).ok());
  }
  // A 4-key model.
  void Init() {
    ps::v1::InitRequest request;
    request.set_worker_id(0);
    request.set_num_shards(1);
    ps::v1::TensorSpec* w = request.add_tensors();
    w->set_name("w");
    w->add_shape(4);
    request.set_values(std::string(4 * sizeof(float), '\0'));
    ps::v1::InitResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->Init(&context, request, &response).ok());
  }
  void GoIdle(uint32_t worker) {
    ps::v1::LeaveRequest request;
    request.set_worker_id(worker);
    request.set_incarnation(kIncarnation);
    request.set_reason(ps::v1::LeaveRequest::IDLE);
    ps::v1::LeaveResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->Leave(&context, request, &response).ok());
  }
  // Worker `worker`'s gradient of ones for round `round`.
  void Push(uint32_t worker, uint64_t seq, uint64_t round) {
    const std::vector<float> ones(4, 1.0f);
    ps::v1::PushRequest request;
    request.set_worker_id(worker);
    request.set_incarnation(kIncarnation);
    request.set_seq(seq);
    request.set_step(round);
    request.set_base_version(round);
    request.set_batch_size(8);
    request.set_key_end(4);
    request.set_gradient(std::string(reinterpret_cast<const char*>(ones.data()),
                                     4 * sizeof(float)));
    ps::v1::PushResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->Push(&context, request, &response).ok());
  }

 private:
  static constexpr uint64_t kIncarnation = 5;
  std::unique_ptr<ps::v1::ParameterServer::Stub> stub_;
};

bool Idle(server::PsServer& server, uint32_t worker) {
  const server::ShardStatus status = server.shard().Status();
  return worker < status.workers.size() && status.workers[worker].idle;
}

// Worker 1 waits idle for a data partition; the backup, following the
// primary's log, counts it toward no round either: worker 0's push closes
// round 0 on both, and their states (the idle flag with them) agree.
TEST(Replication, ABackupReplaysAnIdleLeave) {
  std::unique_ptr<server::PsServer> primary =
      StartPrimary(server::ConsistencyMode::kSync);
  ASSERT_NE(primary, nullptr);
  std::unique_ptr<server::PsServer> backup =
      StartBackup(server::ConsistencyMode::kSync, *primary);
  ASSERT_NE(backup, nullptr);
  ASSERT_TRUE(test_support::WaitUntil([&] { return Joined(*backup); }));
  PrimaryCalls calls(*primary);
  calls.Register(0);
  calls.Register(1);
  calls.Init();
  calls.GoIdle(1);
  calls.Push(0, 1, 0);
  EXPECT_EQ(primary->shard().Status().version, 1u);
  EXPECT_TRUE(Idle(*primary, 1));
  ExpectSameState(*primary, *backup, /*same_counters=*/true);
  EXPECT_TRUE(Idle(*backup, 1));
}

// A backup that joins while worker 1 is idle copies the flag with the
// state: worker 0's pushes close rounds on it as on the primary.
TEST(Replication, ABackupJoiningWhileAWorkerIsIdleCopiesTheFlag) {
  std::unique_ptr<server::PsServer> primary =
      StartPrimary(server::ConsistencyMode::kSync);
  ASSERT_NE(primary, nullptr);
  PrimaryCalls calls(*primary);
  calls.Register(0);
  calls.Register(1);
  calls.Init();
  calls.GoIdle(1);
  calls.Push(0, 1, 0);
  std::unique_ptr<server::PsServer> backup =
      StartBackup(server::ConsistencyMode::kSync, *primary);
  ASSERT_NE(backup, nullptr);
  ASSERT_TRUE(test_support::WaitUntil([&] { return Joined(*backup); }));
  EXPECT_TRUE(Idle(*backup, 1));
  calls.Push(0, 2, 1);
  calls.Push(0, 3, 2);
  EXPECT_EQ(primary->shard().Status().version, 3u);
  ExpectSameState(*primary, *backup, /*same_counters=*/false);
}

// Before Init the workers are the shard's whole state: a backup that joins
// then gets them, or it would drop their pushes and end at version 0.
TEST(Replication, ABackupComingBetweenRegistersAndInitJoinsWithTheWorkers) {
  std::unique_ptr<server::PsServer> primary =
      StartPrimary(server::ConsistencyMode::kSync);
  ASSERT_NE(primary, nullptr);
  PrimaryCalls calls(*primary);
  calls.Register(0);
  calls.Register(1);
  std::unique_ptr<server::PsServer> backup =
      StartBackup(server::ConsistencyMode::kSync, *primary);
  ASSERT_NE(backup, nullptr);
  ASSERT_TRUE(test_support::WaitUntil([&] { return Joined(*backup); }));
  EXPECT_EQ(backup->shard().Status().workers.size(), 2u);
  calls.Init();
  calls.Push(0, 1, 0);
  calls.Push(1, 1, 0);
  calls.Push(0, 2, 1);
  calls.Push(1, 2, 1);
  EXPECT_EQ(primary->shard().Status().version, 2u);
  ExpectSameState(*primary, *backup, /*same_counters=*/false);
}

TEST(Replication, ABackupRefusesWorkersCallsNamingThePrimary) {
  std::unique_ptr<server::PsServer> primary =
      StartPrimary(server::ConsistencyMode::kAsync);
  ASSERT_NE(primary, nullptr);
  std::unique_ptr<server::PsServer> backup =
      StartBackup(server::ConsistencyMode::kAsync, *primary);
  ASSERT_NE(backup, nullptr);
  const absl::Status refused = RegisterWith(backup->port());
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  std::optional<common::ErrorInfo> info = common::GetErrorInfo(refused);
  ASSERT_TRUE(info.has_value()) << refused;
  EXPECT_EQ(info->reason, server::kNotPrimary);
  EXPECT_EQ(info->metadata["primary"], Loopback(primary->port()));
  EXPECT_EQ(info->metadata["term"], "1");
  // Nothing reached the backup's shard.
  EXPECT_TRUE(backup->shard().Status().workers.empty());
}

TEST(Replication, ADeadBackupIsDroppedAndThePrimaryTrainsOn) {
  std::unique_ptr<server::PsServer> primary, backup;
  ASSERT_NO_FATAL_FAILURE(
      StartJoinedPair(server::ConsistencyMode::kAsync, &primary, &backup));
  Train(*primary, [&] {
    ASSERT_TRUE(test_support::WaitUntil(
        [&] { return primary->shard().Status().version >= 20; }));
    backup.reset();  // stops answering, as a killed process does
  });
  EXPECT_EQ(primary->replicator()->backups_dropped(), 1u);
  const ps::v1::ReplicaStatusResponse status = ReplicaStatusOf(*primary);
  EXPECT_EQ(status.role(), ps::v1::PRIMARY);
  EXPECT_EQ(status.backups_dropped(), 1u);
  ASSERT_EQ(status.backups_size(), 1);
  EXPECT_FALSE(status.backups(0).live());
}

// Replica `index` of three, told the addresses of those already started.
// A backup holds an election after `failover_timeout` of silence.
std::unique_ptr<server::PsServer> StartReplica(
    uint32_t index, const std::vector<const server::PsServer*>& started,
    absl::Duration failover_timeout = absl::Milliseconds(300)) {
  std::vector<std::string> peers(3, "127.0.0.1:0");
  for (size_t i = 0; i < started.size(); ++i) {
    if (started[i] != nullptr) peers[i] = Loopback(started[i]->port());
  }
  server::ServerOptions options =
      ReplicaOptionsFor(server::ConsistencyMode::kAsync, peers, index);
  options.replica.failover_timeout = failover_timeout;
  // A primary drops a silent backup after longer than that.
  options.replica.drop_after =
      std::max(options.replica.drop_after, 2 * failover_timeout);
  auto replica = server::PsServer::Start(options);
  EXPECT_TRUE(replica.ok()) << replica.status();
  return replica.ok() ? std::move(*replica) : nullptr;
}

TEST(Failover, TheBackupTakesOverAndWorkersToldBothReplicasFollowIt) {
  std::unique_ptr<server::PsServer> primary, backup;
  ASSERT_NO_FATAL_FAILURE(
      StartJoinedPair(server::ConsistencyMode::kAsync, &primary, &backup));
  const std::string both =
      absl::StrCat(Loopback(primary->port()), "|", Loopback(backup->port()));
  uint64_t version_at_failure = 0;
  Train({both}, [&] {
    ASSERT_TRUE(test_support::WaitUntil(
        [&] { return primary->shard().Status().version >= 20; }));
    version_at_failure = primary->shard().Status().version;
    primary.reset();  // stops answering, as a killed process does
  });
  ASSERT_TRUE(backup->replicator()->primary());
  EXPECT_EQ(backup->replicator()->term(), 2u);
  EXPECT_EQ(backup->replicator()->takeovers(), 1u);
  const server::ShardStatus status = backup->shard().Status();
  EXPECT_GT(status.version, version_at_failure);
  // Every worker's every push, once: 3 epochs of the synthetic task.
  const common::TrainTestData data = testing::SyntheticTrainTest(12, 4);
  EXPECT_EQ(status.samples_applied,
            uint64_t{3} * static_cast<uint64_t>(data.train.features.rows()));
}

TEST(Failover, TheNextReplicaInOrderTakesOverAndTheOtherBackupFollowsIt) {
  std::unique_ptr<server::PsServer> first = StartReplica(0, {});
  ASSERT_NE(first, nullptr);
  std::unique_ptr<server::PsServer> second = StartReplica(1, {first.get()});
  ASSERT_NE(second, nullptr);
  std::unique_ptr<server::PsServer> third =
      StartReplica(2, {first.get(), second.get()});
  ASSERT_NE(third, nullptr);
  ASSERT_TRUE(test_support::WaitUntil(
      [&] { return Joined(*second) && Joined(*third); }));
  // Replica 1 was started before replica 2 (port 0 in its flags): without
  // replica 2's address, learnt from the primary, it could never win, and
  // its candidacies would hold replica 2's back.
  ASSERT_TRUE(test_support::WaitUntil([&] {
    return second->replicator()->peers()[2] == Loopback(third->port());
  }));
  Train({Loopback(first->port())});
  first.reset();
  // Replica 1, the next after the dead primary, stands first and most
  // likely leads term 2; on a loaded machine the two may split the votes,
  // and either wins a later term. The other copies its state and follows.
  server::PsServer* leader = nullptr;
  server::PsServer* follower = nullptr;
  ASSERT_TRUE(test_support::WaitUntil([&] {
    for (server::PsServer* r : {second.get(), third.get()}) {
      server::PsServer* other = r == second.get() ? third.get() : second.get();
      if (r->replicator()->primary() && Joined(*other) &&
          other->replicator()->term() == r->replicator()->term()) {
        leader = r;
        follower = other;
        return true;
      }
    }
    return false;
  }));
  const uint64_t term = leader->replicator()->term();
  EXPECT_GE(term, 2u);
  EXPECT_FALSE(follower->replicator()->primary());
  EXPECT_GE(leader->replicator()->takeovers(), 1u);
  // Status's count is the shard's, the same on the replica that took over
  // and on the one that follows it.
  EXPECT_EQ(leader->replicator()->state().failovers, term - 1);
  EXPECT_EQ(follower->replicator()->state().failovers, term - 1);
  ExpectSameState(*leader, *follower, /*same_counters=*/false);
}

// The election's rule (README, "Replicated shards"): a backup that is
// behind cannot win against one that is ahead, even the next in the fixed
// order. Replica 0 dies after sending a change to replica 2 that replica 1
// never got (as when a primary dies between its sends): replica 2 takes
// over, replica 1 joins it, and every acknowledged push is on both.
TEST(Failover, ABackupThatIsBehindLosesTheElectionToOneAhead) {
  // Elections wait seconds of silence: the change below reaches replica 2
  // long before either backup holds one. Replica 1 holds its first: it must
  // find replica 2 ahead and leave the takeover to it, though it comes
  // first in the order.
  constexpr absl::Duration kFailoverTimeout = absl::Seconds(2);
  constexpr absl::Duration kLaterFailoverTimeout = absl::Seconds(4);
  std::unique_ptr<server::PsServer> first =
      StartReplica(0, {}, kFailoverTimeout);
  ASSERT_NE(first, nullptr);
  std::unique_ptr<server::PsServer> second =
      StartReplica(1, {first.get()}, kFailoverTimeout);
  ASSERT_NE(second, nullptr);
  std::unique_ptr<server::PsServer> third =
      StartReplica(2, {first.get(), second.get()}, kLaterFailoverTimeout);
  ASSERT_NE(third, nullptr);
  ASSERT_TRUE(test_support::WaitUntil(
      [&] { return Joined(*second) && Joined(*third); }));
  // Replica 1 was started before replica 2 (port 0 in its flags): it
  // learns replica 2's address from the primary, so it can ask it.
  ASSERT_TRUE(test_support::WaitUntil([&] {
    return second->replicator()->peers()[2] == Loopback(third->port());
  }));
  Train({Loopback(first->port())});
  // What the workers saw acknowledged.
  const server::ShardStatus acknowledged = first->shard().Status();
  first.reset();  // stops answering, as a killed process does

  // The dead primary's last changes (its ticker's), as they reached
  // replica 2 alone: replica 2 ends one change ahead of replica 1.
  const uint64_t behind = second->replicator()->log_index();
  ps::v1::ApplyRequest last;
  last.set_term(1);
  last.set_primary_index(0);
  for (uint64_t index = third->replicator()->log_index() + 1;
       index <= behind + 1; ++index) {
    ps::v1::ShardChange* change = last.add_changes();
    change->set_index(index);
    change->set_time_unix_nanos(absl::ToUnixNanos(absl::Now()));
    change->mutable_tick();
  }
  uint64_t ahead = 0;
  {
    auto stub = ps::v1::Replication::NewStub(
        rpc::CreateChannel(Loopback(third->port())));
    grpc::ClientContext context;
    ps::v1::ApplyResponse applied;
    const grpc::Status sent = stub->Apply(&context, last, &applied);
    ASSERT_TRUE(sent.ok()) << sent.error_message();
    ahead = applied.applied_index();
  }
  ASSERT_GT(ahead, behind);
  ASSERT_EQ(second->replicator()->log_index(), behind)
      << "replica 1 moved: an election ran early";

  // Replica 2 leads term 2 from the changes replica 1 lacked; replica 1,
  // next after the dead primary in the order, never took over, and copied
  // replica 2's state.
  // Replica 1 may stand (and lose) first: the term may be later than 2.
  ASSERT_TRUE(
      test_support::WaitUntil([&] { return third->replicator()->primary(); }));
  EXPECT_GE(third->replicator()->term(), 2u);
  EXPECT_EQ(third->replicator()->takeovers(), 1u);
  ASSERT_TRUE(test_support::WaitUntil([&] {
    return Joined(*second) &&
           second->replicator()->term() == third->replicator()->term();
  }));
  EXPECT_FALSE(second->replicator()->primary());
  EXPECT_EQ(second->replicator()->takeovers(), 0u);
  EXPECT_GE(second->replicator()->log_index(), ahead);

  // Nothing acknowledged was lost: every push of every worker, once, with
  // the workers' sequence table, on the new primary and on its backup.
  const server::ShardStatus now = third->shard().Status();
  EXPECT_EQ(now.version, acknowledged.version);
  EXPECT_EQ(now.samples_applied, acknowledged.samples_applied);
  const common::TrainTestData data = testing::SyntheticTrainTest(12, 4);
  EXPECT_EQ(now.samples_applied,
            uint64_t{3} * static_cast<uint64_t>(data.train.features.rows()));
  ASSERT_EQ(now.workers.size(), acknowledged.workers.size());
  for (size_t i = 0; i < now.workers.size(); ++i) {
    EXPECT_EQ(now.workers[i].incarnation, acknowledged.workers[i].incarnation);
    EXPECT_EQ(now.workers[i].last_seq, acknowledged.workers[i].last_seq);
  }
  ExpectSameState(*third, *second, /*same_counters=*/false);
}

TEST(Fencing, AReplicaFromAnOlderTermIsRefusedAndAReturningPrimaryRejoins) {
  std::unique_ptr<server::PsServer> primary, backup;
  ASSERT_NO_FATAL_FAILURE(
      StartJoinedPair(server::ConsistencyMode::kAsync, &primary, &backup));
  Train(*primary);
  primary.reset();
  ASSERT_TRUE(
      test_support::WaitUntil([&] { return backup->replicator()->primary(); }));

  // The old primary's changes (term 1) are refused, naming the new term.
  auto stub = ps::v1::Replication::NewStub(
      rpc::CreateChannel(Loopback(backup->port())));
  grpc::ClientContext context;
  ps::v1::ApplyRequest stale;
  stale.set_term(1);
  stale.set_primary_index(0);
  ps::v1::ApplyResponse response;
  const absl::Status refused =
      rpc::FromGrpcStatus(stub->Apply(&context, stale, &response));
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  std::optional<common::ErrorInfo> info = common::GetErrorInfo(refused);
  ASSERT_TRUE(info.has_value()) << refused;
  EXPECT_EQ(info->reason, server::kStaleTerm);
  EXPECT_EQ(info->metadata["term"], "2");

  // Replica 0 restarted does not lead again: it finds the primary of term
  // 2 and copies its state.
  std::vector<std::string> peers = {"127.0.0.1:0", Loopback(backup->port())};
  auto returned = server::PsServer::Start(
      ReplicaOptionsFor(server::ConsistencyMode::kAsync, peers, 0));
  ASSERT_TRUE(returned.ok()) << returned.status();
  EXPECT_FALSE((*returned)->replicator()->primary());
  ASSERT_TRUE(test_support::WaitUntil([&] { return Joined(**returned); }));
  EXPECT_EQ(ReplicaStatusOf(**returned).role(), ps::v1::BACKUP);
  EXPECT_EQ((*returned)->replicator()->term(), 2u);
  ExpectSameState(*backup, **returned, /*same_counters=*/false);
}

// Replica 1's Join of `primary`, sent from term `term` for `address`, as a
// backup's JoinOnce sends it.
absl::Status JoinAs(const server::PsServer& primary, uint64_t term,
                    const std::string& address) {
  auto stub = ps::v1::Replication::NewStub(
      rpc::CreateChannel(Loopback(primary.port())));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  ps::v1::JoinRequest join;
  join.set_term(term);
  join.set_replica_index(1);
  join.set_address(address);
  ps::v1::JoinResponse joined;
  return rpc::FromGrpcStatus(stub->Join(&context, join, &joined));
}

TEST(Fencing, APrimaryThatSeesANewerTermStepsDownAndRefusesWorkers) {
  std::unique_ptr<server::PsServer> primary =
      StartPrimary(server::ConsistencyMode::kAsync);
  ASSERT_NE(primary, nullptr);
  // A replica that joins from term 5: a newer primary exists somewhere.
  const absl::Status refused = JoinAs(*primary, 5, "127.0.0.1:1");
  EXPECT_TRUE(common::HasErrorReason(refused, server::kNotPrimary)) << refused;
  EXPECT_FALSE(primary->replicator()->primary());
  EXPECT_EQ(primary->replicator()->term(), 5u);
  // Workers are refused from now on.
  EXPECT_TRUE(common::HasErrorReason(RegisterWith(primary->port()),
                                     server::kNotPrimary));
}

// A backup that refuses every Apply as stale in the sender's own term, as
// a replica that leads that term too would.
class SameTermRefuser final : public ps::v1::Replication::Service {
  grpc::Status Apply(grpc::ServerContext*, const ps::v1::ApplyRequest* request,
                     ps::v1::ApplyResponse*) override {
    return rpc::ToGrpcStatus(common::WithErrorInfo(
        absl::FailedPreconditionError("a primary of the same term"),
        common::ErrorInfo{server::kStaleTerm,
                          common::kErrorDomain,
                          {{"term", absl::StrCat(request->term())}}}));
  }
};

// A refusal as stale that moves no term must not leave the backup counted
// live: the primary drops it, and writes no longer wait for it.
TEST(Fencing, ABackupRefusingAppliesAsStaleInTheSameTermIsDropped) {
  std::unique_ptr<server::PsServer> primary =
      StartPrimary(server::ConsistencyMode::kAsync);
  ASSERT_NE(primary, nullptr);
  SameTermRefuser refuser;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&refuser);
  std::unique_ptr<grpc::Server> backup = builder.BuildAndStart();
  ASSERT_NE(backup, nullptr);
  ASSERT_TRUE(JoinAs(*primary, 1, Loopback(port)).ok());
  // (Asserted: a write would wait for a backup still counted live.)
  ASSERT_TRUE(test_support::WaitUntil(
      [&] { return primary->replicator()->backups_dropped() == 1; }));
  EXPECT_TRUE(primary->replicator()->primary());
  EXPECT_TRUE(RegisterWith(primary->port()).ok());
  backup->Shutdown();
}

TEST(Failover, ASecondFailoverOntoTheRejoinedReplicaLosesNothing) {
  std::unique_ptr<server::PsServer> primary, backup;
  ASSERT_NO_FATAL_FAILURE(
      StartJoinedPair(server::ConsistencyMode::kAsync, &primary, &backup));
  const int first_port = primary->port();
  const std::string both =
      absl::StrCat(Loopback(first_port), "|", Loopback(backup->port()));
  std::unique_ptr<server::PsServer> returned;
  constexpr uint32_t kEpochs = 40;
  Train(
      {both},
      [&] {
        ASSERT_TRUE(test_support::WaitUntil(
            [&] { return primary->shard().Status().version >= 20; }));
        primary.reset();
        ASSERT_TRUE(test_support::WaitUntil(
            [&] { return backup->replicator()->primary(); }));
        // Replica 0 comes back on its address while training goes on, and
        // copies the state of the primary of term 2.
        server::ServerOptions options =
            ReplicaOptionsFor(server::ConsistencyMode::kAsync,
                              {"127.0.0.1:0", Loopback(backup->port())}, 0);
        options.listen = Loopback(first_port);
        auto started = server::PsServer::Start(options);
        ASSERT_TRUE(started.ok()) << started.status();
        returned = std::move(*started);
        ASSERT_TRUE(test_support::WaitUntil([&] { return Joined(*returned); }));
        const uint64_t version = backup->shard().Status().version;
        ASSERT_TRUE(test_support::WaitUntil(
            [&] { return returned->shard().Status().version > version + 20; }));
        // The second failure: the primary of term 2 goes.
        backup.reset();
      },
      kEpochs);
  ASSERT_NE(returned, nullptr);
  ASSERT_TRUE(returned->replicator()->primary());
  EXPECT_EQ(returned->replicator()->term(), 3u);
  // Every push of every worker, once, through both failovers.
  const common::TrainTestData data = testing::SyntheticTrainTest(12, 4);
  EXPECT_EQ(
      returned->shard().Status().samples_applied,
      uint64_t{kEpochs} * static_cast<uint64_t>(data.train.features.rows()));
}

}  // namespace
}  // namespace ps
