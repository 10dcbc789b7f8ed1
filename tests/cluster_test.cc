// Real servers and workers talking gRPC over loopback, in one process.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dataset.h"
#include "common/float_bytes.h"
#include "common/gradient_codec.h"
#include "common/lr_schedule.h"
#include "common/optimizer.h"
#include "common/rpc/channel.h"
#include "common/rpc/convert.h"
#include "common/rpc/health.h"
#include "common/rpc/wire_format.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "server/ps_server.h"
#include "tests/loopback_cluster.h"
#include "tests/synthetic_data.h"
#include "tests/wait.h"
#include "worker/model.h"
#include "worker/parameter_client.h"
#include "worker/trainer.h"

namespace ps {
namespace {

using ::testing::HasSubstr;

using test_support::ClientFor;
using test_support::Cluster;
using test_support::StartCluster;

// How Train's workers push, and on what data (null: the synthetic task,
// 12 features and 4 classes, 3 epochs of batch 16).
struct TrainInput {
  common::Compression compression;
  const common::TrainTestData* data = nullptr;
  uint32_t epochs = 3;
  uint32_t batch_size = 16;
  // Partitions leased from shard 0 (0: split by rank); with
  // `partitions_done`, shard 0's count of those done per epoch at the end.
  uint32_t data_partitions = 0;
  std::vector<uint32_t>* partitions_done = nullptr;
};

// Trains `workers` workers on synthetic data against `shards` fresh servers
// and returns the final θ as rank 0 pulled it.
std::vector<float> Train(
    uint32_t shards, uint32_t workers, server::ConsistencyMode mode,
    const std::string& model_name, const common::UpdateOptions& update,
    double* accuracy = nullptr, const common::OptimizerOptions& optimizer = {},
    const common::LrSchedule& lr_schedule = {}, const TrainInput& input = {}) {
  Cluster cluster =
      StartCluster(shards, workers, mode, update, absl::Seconds(5),
                   [&](server::ShardOptions& shard) {
                     shard.optimizer = optimizer;
                     shard.lr_schedule = lr_schedule;
                   });
  const common::TrainTestData synthetic = testing::SyntheticTrainTest(12, 4);
  const common::TrainTestData& data =
      input.data != nullptr ? *input.data : synthetic;
  std::vector<std::vector<float>> thetas(workers);
  std::vector<absl::Status> results(workers);
  std::vector<double> accuracies(workers);
  std::vector<std::thread> threads;
  for (uint32_t rank = 0; rank < workers; ++rank) {
    threads.emplace_back([&, rank] {
      auto model = worker::CreateModel(model_name, data.train.features.cols(),
                                       data.train.num_classes);
      worker::ClientOptions client_options = ClientFor(cluster, rank);
      client_options.compression = input.compression;
      auto client = worker::ParameterClient::Connect(client_options);
      if (!model.ok() || !client.ok()) {
        results[rank] = absl::InternalError("setup failed");
        return;
      }
      worker::TrainerOptions options;
      options.rank = rank;
      options.num_workers = workers;
      options.batch_size = input.batch_size;
      options.epochs = input.epochs;
      options.seed = 42;
      options.data_partitions = input.data_partitions;
      worker::Trainer trainer(options, model->get(), client->get(), &data);
      results[rank] = trainer.Run();
      thetas[rank] = trainer.theta();
      accuracies[rank] = trainer.last_evaluation().accuracy;
    });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& status : results) EXPECT_TRUE(status.ok()) << status;
  if (accuracy != nullptr) *accuracy = accuracies[0];
  if (input.partitions_done != nullptr) {
    *input.partitions_done =
        cluster.servers[0]->shard().Status().partitions_done_per_epoch;
  }
  return thetas[0];
}

common::UpdateOptions Regularized() {
  common::UpdateOptions update;
  update.learning_rate = 0.2f;
  update.l2 = 1e-3f;
  update.l1 = 1e-4f;
  update.clip_min = -3.0f;
  update.clip_max = 3.0f;
  return update;
}

bool SameBytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(Cluster, SyncTrainingIsBitForBitReproducibleAcrossShardCounts) {
  const auto one =
      Train(1, 3, server::ConsistencyMode::kSync, "mlp", Regularized());
  const auto three =
      Train(3, 3, server::ConsistencyMode::kSync, "mlp", Regularized());
  const auto again =
      Train(3, 3, server::ConsistencyMode::kSync, "mlp", Regularized());
  ASSERT_FALSE(one.empty());
  EXPECT_TRUE(SameBytes(one, three));
  EXPECT_TRUE(SameBytes(three, again));
  // And training moved θ away from its seeded start.
  auto model = worker::CreateModel("mlp", 12, 4);
  EXPECT_FALSE(SameBytes(one, (*model)->InitialParams(42)));
}

// Partitions leased from shard 0 go to their slot's owner when nobody fails:
// sync training is still the same bit for bit, on 1 and 3 shards, and
// every partition of every epoch is trained once. 10 partitions over 3
// workers: one of them has one more in each epoch.
TEST(Cluster, SyncTrainingWithDataPartitionsIsBitForBitReproducible) {
  std::vector<uint32_t> done_one, done_three;
  TrainInput partitions;
  partitions.data_partitions = 10;
  partitions.partitions_done = &done_one;
  double accuracy_one = 0, accuracy_three = 0;
  const auto one = Train(1, 3, server::ConsistencyMode::kSync, "mlp",
                         Regularized(), &accuracy_one, {}, {}, partitions);
  partitions.partitions_done = &done_three;
  const auto three = Train(3, 3, server::ConsistencyMode::kSync, "mlp",
                           Regularized(), &accuracy_three, {}, {}, partitions);
  partitions.partitions_done = nullptr;
  const auto again = Train(3, 3, server::ConsistencyMode::kSync, "mlp",
                           Regularized(), nullptr, {}, {}, partitions);
  ASSERT_FALSE(one.empty());
  EXPECT_TRUE(SameBytes(one, three));
  EXPECT_TRUE(SameBytes(three, again));
  EXPECT_EQ(accuracy_one, accuracy_three);
  EXPECT_GT(accuracy_one, 0.9);
  EXPECT_EQ(done_one, std::vector<uint32_t>({10, 10, 10}));
  EXPECT_EQ(done_three, std::vector<uint32_t>({10, 10, 10}));
  // Not the split by rank's θ: the data came in partitions.
  EXPECT_FALSE(SameBytes(
      one, Train(1, 3, server::ConsistencyMode::kSync, "mlp", Regularized())));
}

// The same with Adam and a cosine schedule on the servers: the optimizer's
// step and schedule follow the shard's version, which sync keeps equal on
// every shard.
TEST(Cluster, SyncAdamWithACosineScheduleIsBitForBitReproducibleAcrossShards) {
  const common::OptimizerOptions adam =
      common::ParseOptimizerSpec("adam").value();
  const common::LrSchedule cosine =
      common::ParseLrSchedule("cosine:40").value();
  common::UpdateOptions update = Regularized();
  update.learning_rate = 0.01f;
  double accuracy = 0;
  const auto one = Train(1, 3, server::ConsistencyMode::kSync, "mlp", update,
                         &accuracy, adam, cosine);
  const auto three = Train(3, 3, server::ConsistencyMode::kSync, "mlp", update,
                           nullptr, adam, cosine);
  ASSERT_FALSE(one.empty());
  EXPECT_TRUE(SameBytes(one, three));
  // Not sgd's θ: the optimizer ran.
  EXPECT_FALSE(SameBytes(
      one, Train(1, 3, server::ConsistencyMode::kSync, "mlp", update)));
  EXPECT_GT(accuracy, 0.9);
}

// fp16 rounds each value on its own, so the shards' split changes nothing:
// the same θ, bit for bit, and the same metrics, on 1 and 3 shards.
TEST(Cluster, SyncFp16TrainingIsBitForBitReproducibleAcrossShardCounts) {
  TrainInput fp16;
  fp16.compression = common::ParseCompression("fp16").value();
  double accuracy_one = 0, accuracy_three = 0;
  const auto one = Train(1, 3, server::ConsistencyMode::kSync, "mlp",
                         Regularized(), &accuracy_one, {}, {}, fp16);
  const auto three = Train(3, 3, server::ConsistencyMode::kSync, "mlp",
                           Regularized(), &accuracy_three, {}, {}, fp16);
  ASSERT_FALSE(one.empty());
  EXPECT_TRUE(SameBytes(one, three));
  EXPECT_EQ(accuracy_one, accuracy_three);
  EXPECT_GT(accuracy_one, 0.9);
  // And the gradients did travel rounded: not float32's θ.
  EXPECT_FALSE(SameBytes(
      one, Train(1, 3, server::ConsistencyMode::kSync, "mlp", Regularized())));
}

// Top-k sends 1% of the coordinates a step; error feedback brings the rest
// later, so softmax still learns Fashion-MNIST: sync (deterministic), two
// epochs reach 0.823, as float32 does; dropping the residual instead
// reaches 0.767.
TEST(Cluster, TopKTrainingStillLearnsFashionMnistSoftmax) {
  absl::StatusOr<common::TrainTestData> data =
      common::LoadFashionMnist(common::kDefaultFashionMnistDir);
  ASSERT_TRUE(data.ok()) << data.status();
  TrainInput topk;
  topk.compression = common::ParseCompression("topk:0.01").value();
  topk.data = &*data;
  topk.epochs = 2;
  topk.batch_size = 64;
  common::UpdateOptions update;
  update.learning_rate = 0.1f;
  double accuracy = 0;
  const auto theta = Train(2, 2, server::ConsistencyMode::kSync, "softmax",
                           update, &accuracy, {}, {}, topk);
  EXPECT_GT(accuracy, 0.80);
  // Sync is deterministic: a θ unlike float32's shows top-k was used.
  TrainInput plain = topk;
  plain.compression = {};
  EXPECT_FALSE(
      SameBytes(theta, Train(2, 2, server::ConsistencyMode::kSync, "softmax",
                             update, nullptr, {}, {}, plain)));
}

TEST(Cluster, SyncAndAsyncTrainingLearnTheSyntheticTask) {
  for (auto mode :
       {server::ConsistencyMode::kSync, server::ConsistencyMode::kAsync}) {
    double accuracy = 0;
    Train(2, 2, mode, "softmax", Regularized(), &accuracy);
    EXPECT_GT(accuracy, 0.95) << server::ConsistencyModeName(mode);
  }
}

TEST(Cluster, RankZeroWaitsForAWorkerThatHasNotStartedYet) {
  // Async mode lets rank 0 finish before a slow worker even registers; its
  // final evaluation must still wait for that worker's pushes.
  Cluster cluster = StartCluster(2, 2, server::ConsistencyMode::kAsync);
  auto first = worker::ParameterClient::Connect(ClientFor(cluster, 0));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE((*first)->Register().ok());
  ASSERT_TRUE((*first)->Leave().ok());
  absl::Status early =
      (*first)->WaitForOtherWorkers(2, absl::Milliseconds(300));
  EXPECT_EQ(early.code(), absl::StatusCode::kDeadlineExceeded) << early;
  EXPECT_NE(early.message().find("1 of 2 workers never registered"),
            std::string::npos)
      << early;

  auto second = worker::ParameterClient::Connect(ClientFor(cluster, 1));
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE((*second)->Register().ok());
  absl::Status running =
      (*first)->WaitForOtherWorkers(2, absl::Milliseconds(300));
  EXPECT_NE(running.message().find("1 workers are still live"),
            std::string::npos)
      << running;
  ASSERT_TRUE((*second)->Leave().ok());
  EXPECT_TRUE((*first)->WaitForOtherWorkers(2, absl::Seconds(10)).ok());
}

// A server restarted in another mode on the same checkpoints (as
// --allow_config_change permits) is followed by a running worker from its
// next answer on: before, the worker pushed by the async rules it learned at
// Init and the sync server dropped every push as stale.
TEST(Cluster, AWorkerFollowsAServerRestartedInAnotherMode) {
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "/cluster_mode_switch_", getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.shard.mode = server::ConsistencyMode::kAsync;
  options.checkpoint_dir = dir;
  auto async_server = server::PsServer::Start(options);
  ASSERT_TRUE(async_server.ok()) << async_server.status();
  const int port = (*async_server)->port();
  Cluster cluster;
  cluster.addresses = {absl::StrCat("127.0.0.1:", port)};
  auto client = worker::ParameterClient::Connect(ClientFor(cluster, 0));
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Register().ok());
  std::vector<float> theta = {0, 0, 0, 0};
  ASSERT_TRUE((*client)->Init({{"w", {4}, false}}, theta).ok());
  EXPECT_EQ((*client)->mode(), ps::v1::MODE_ASYNC);
  const std::vector<float> gradient = {1, 1, 1, 1};
  // Steps far from the shard's version, as a worker deep into its run has.
  uint64_t step = 100;
  for (int i = 0; i < 3; ++i, ++step) {
    ASSERT_TRUE(
        (*client)->PushPull(step, 4, gradient, absl::MakeSpan(theta)).ok());
  }
  ASSERT_TRUE((*async_server)->Drain().ok());
  (*async_server)->Shutdown();
  async_server->reset();

  options.listen = absl::StrCat("127.0.0.1:", port);
  options.shard.mode = server::ConsistencyMode::kSync;
  options.allow_config_change = true;
  auto sync_server = server::PsServer::Start(options);
  ASSERT_TRUE(sync_server.ok()) << sync_server.status();
  const uint64_t restored = (*sync_server)->shard().Status().version;
  for (int i = 0; i < 6; ++i, ++step) {
    ASSERT_TRUE(
        (*client)->PushPull(step, 4, gradient, absl::MakeSpan(theta)).ok());
  }
  EXPECT_EQ((*client)->mode(), ps::v1::MODE_SYNC);
  const server::ShardStatus status = (*sync_server)->shard().Status();
  // At most the push sent before the first answer told the worker.
  EXPECT_LE(status.pushes_stale, 1u);
  EXPECT_GE(status.version, restored + 5);
  std::filesystem::remove_all(dir);
}

TEST(Cluster, AWorkerWhoseLeaseExpiredRegistersAgainAndKeepsPushing) {
  Cluster cluster = StartCluster(1, 1, server::ConsistencyMode::kAsync);
  auto client = worker::ParameterClient::Connect(ClientFor(cluster, 0));
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Register().ok());
  std::vector<float> theta = {0, 0};
  ASSERT_TRUE((*client)->Init({{"w", {2}, false}}, theta).ok());
  // The shard's clock jumps past the lease: the worker is expired at once.
  cluster.servers[0]->shard().Tick(absl::Now() + absl::Minutes(1));
  ASSERT_EQ(cluster.servers[0]->shard().Status().live_workers, 0u);
  const std::vector<float> gradient = {1, 1};
  ASSERT_TRUE((*client)->Push(0, 4, gradient).ok());
  EXPECT_EQ((*client)->push_counts().reregistered, 1u);
  EXPECT_EQ((*client)->push_counts().applied_or_accepted, 1u);
  EXPECT_EQ(cluster.servers[0]->shard().Status().live_workers, 1u);
}

class WireTest : public ::testing::Test {
 protected:
  virtual server::ConsistencyMode Mode() const {
    return server::ConsistencyMode::kAsync;
  }

  void SetUp() override {
    // Nothing heartbeats for these hand-made calls: a lease that outlasts
    // the slowest test (a 16M-float Init under load took 7 s).
    cluster_ = StartCluster(1, 2, Mode(), {}, absl::Minutes(10));
    stub_ = ps::v1::ParameterServer::NewStub(
        rpc::CreateChannel(cluster_.addresses[0]));
  }

  grpc::Status Call(const ps::v1::PushRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    ps::v1::PushResponse response;
    return stub_->Push(&context, request, &response);
  }

  grpc::Status RegisterWorker0() {
    ps::v1::RegisterRequest request;
    request.set_incarnation(1);
    ps::v1::RegisterResponse response;
    grpc::ClientContext context;
    return stub_->Register(&context, request, &response);
  }

  void Init(uint64_t keys) {
    ASSERT_TRUE(RegisterWorker0().ok());
    ps::v1::InitRequest request;
    request.set_num_shards(1);
    rpc::ToProto({{"w", {static_cast<int64_t>(keys)}, false}},
                 request.mutable_tensors());
    std::vector<float> zeros(keys, 0.0f);
    common::FloatsToBytes(zeros, request.mutable_values());
    grpc::ClientContext context;
    ps::v1::InitResponse response;
    ASSERT_TRUE(stub_->Init(&context, request, &response).ok());
  }

  ps::v1::PushRequest ValidPush(uint64_t keys) {
    ps::v1::PushRequest request;
    request.set_seq(1);
    request.set_incarnation(1);
    request.set_batch_size(8);
    request.set_key_end(keys);
    std::vector<float> ones(keys, 1.0f);
    common::FloatsToBytes(ones, request.mutable_gradient());
    return request;
  }

  Cluster cluster_;
  std::unique_ptr<ps::v1::ParameterServer::Stub> stub_;
};

TEST_F(WireTest, BadRequestsGetTheRightStatusAndAReadableMessage) {
  Init(16);
  ps::v1::PushRequest request = ValidPush(16);
  request.set_worker_id(9);
  grpc::Status status = Call(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("unknown worker_id 9"));

  request = ValidPush(16);
  request.mutable_gradient()->resize(15 * sizeof(float));
  status = Call(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("carries 15 floats"));

  request = ValidPush(16);
  const float nan = NAN;
  std::memcpy(request.mutable_gradient()->data() + 4, &nan, sizeof(nan));
  status = Call(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("key 1 is nan"));

  request = ValidPush(16);
  request.set_batch_size(0);
  EXPECT_EQ(Call(request).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  grpc::ClientContext context;
  ps::v1::PullRequest pull;
  pull.set_key_begin(10);
  pull.set_key_end(20);
  ps::v1::PullResponse pulled;
  EXPECT_EQ(stub_->Pull(&context, pull, &pulled).error_code(),
            grpc::StatusCode::OUT_OF_RANGE);

  request = ValidPush(16);
  request.set_worker_id(1);  // a valid id that never registered
  status = Call(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  // The contract with every client (C++ and Python): a google.rpc.Status in
  // the details, carrying ErrorInfo{REGISTRATION_REQUIRED, ps.v1, shard}.
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(status.error_details()));
  EXPECT_EQ(details.code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(details.message(), status.error_message());
  ASSERT_EQ(details.details_size(), 1);
  EXPECT_EQ(details.details(0).type_url(),
            "type.googleapis.com/google.rpc.ErrorInfo");
  google::rpc::ErrorInfo info;
  ASSERT_TRUE(info.ParseFromString(details.details(0).value()));
  EXPECT_EQ(info.reason(), "REGISTRATION_REQUIRED");
  EXPECT_EQ(info.domain(), "ps.v1");
  EXPECT_EQ(info.metadata().at("shard"), "0");

  request = ValidPush(16);
  request.set_incarnation(0);  // an older process than the registered one
  status = Call(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  // None of it touched θ.
  EXPECT_EQ(cluster_.servers[0]->shard().Status().version, 0u);
  EXPECT_EQ(cluster_.servers[0]->shard().Status().pushes_rejected, 6u);
}

// A part of a compressed gradient, as ps.v1.GradientPart.
ps::v1::GradientPart Part(ps::v1::GradientEncoding encoding, uint64_t keys,
                          std::string values, std::string indices = "") {
  ps::v1::GradientPart part;
  part.set_encoding(encoding);
  part.set_num_keys(keys);
  part.set_values(std::move(values));
  part.set_indices(std::move(indices));
  return part;
}

std::string Uint32Bytes(const std::vector<uint32_t>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()),
                     values.size() * sizeof(uint32_t));
}

std::string FloatBytes(const std::vector<float>& values) {
  std::string bytes;
  common::FloatsToBytes(values, &bytes);
  return bytes;
}

TEST_F(WireTest, MalformedCompressedGradientsAreRefusedAndThetaStaysAsItWas) {
  Init(16);
  std::string fp16_ones;
  common::EncodeDense(common::CompressionKind::kFp16,
                      std::vector<float>(10, 1.0f), &fp16_ones);
  std::string fp16_with_inf;
  std::vector<float> with_inf(6, 1.0f);
  with_inf[2] = INFINITY;
  common::EncodeDense(common::CompressionKind::kFp16, with_inf, &fp16_with_inf);
  struct Case {
    std::vector<ps::v1::GradientPart> parts;
    std::string error;
  };
  const std::vector<Case> cases = {
      {{Part(ps::v1::ENCODING_FP16, 10, fp16_ones)},
       "parts cover 10 keys but the shard owns 16"},
      {{Part(ps::v1::ENCODING_FP16, 10, fp16_ones),
        Part(ps::v1::ENCODING_TOPK, 7, FloatBytes({1}), Uint32Bytes({0}))},
       "cover more than the shard's 16 keys"},
      {{Part(ps::v1::ENCODING_FP16, 10, fp16_ones),
        Part(ps::v1::ENCODING_TOPK, 6, FloatBytes({1}), Uint32Bytes({6}))},
       "part 1 of the compressed gradient (keys from 10, ENCODING_TOPK): "
       "index 6 is outside its 6 keys"},
      {{Part(ps::v1::ENCODING_FP16, 10, fp16_ones),
        Part(ps::v1::ENCODING_TOPK, 6, FloatBytes({1, 1}),
             Uint32Bytes({3, 1}))},
       "strictly increasing"},
      {{Part(ps::v1::ENCODING_FP16, 10, fp16_ones),
        Part(ps::v1::ENCODING_TOPK, 6, FloatBytes({1, 1}),
             Uint32Bytes({2, 2}))},
       "strictly increasing"},
      {{Part(ps::v1::ENCODING_FP16, 10, fp16_ones),
        Part(ps::v1::ENCODING_TOPK, 6, FloatBytes({NAN}), Uint32Bytes({2}))},
       "the value at index 2 is nan"},
      {{Part(ps::v1::ENCODING_FP16, 10, fp16_ones),
        Part(ps::v1::ENCODING_FP16, 6, fp16_with_inf)},
       "(keys from 10, ENCODING_FP16): the value at offset 2 is inf"},
      {{Part(ps::v1::ENCODING_BF16, 16, fp16_ones)},
       "holds 20 bytes of values but its 16 keys need 32"},
      {{Part(static_cast<ps::v1::GradientEncoding>(9), 16, "")},
       "unknown encoding 9"},
  };
  for (const Case& c : cases) {
    ps::v1::PushRequest request = ValidPush(16);
    request.clear_gradient();
    for (const ps::v1::GradientPart& part : c.parts) {
      *request.add_compressed_gradient() = part;
    }
    const grpc::Status status = Call(request);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.error;
    EXPECT_THAT(status.error_message(), HasSubstr(c.error));
  }
  // Both forms at once are refused too.
  ps::v1::PushRequest both = ValidPush(16);
  *both.add_compressed_gradient() =
      Part(ps::v1::ENCODING_FLOAT32, 16, FloatBytes(std::vector<float>(16)));
  EXPECT_THAT(Call(both).error_message(),
              HasSubstr("both gradient and compressed_gradient"));
  // Each counts as rejected, as a plain push the shard refuses does.
  EXPECT_EQ(cluster_.servers[0]->shard().Status().pushes_rejected,
            cases.size() + 1);

  // θ as Init left it: no version, every value 0.
  auto pull_theta = [&] {
    grpc::ClientContext context;
    ps::v1::PullRequest pull;
    ps::v1::PullResponse pulled;
    EXPECT_TRUE(stub_->Pull(&context, pull, &pulled).ok());
    std::vector<float> theta(16);
    EXPECT_TRUE(
        common::BytesToFloats(pulled.values(), absl::MakeSpan(theta), "θ")
            .ok());
    return theta;
  };
  EXPECT_EQ(cluster_.servers[0]->shard().Status().version, 0u);
  EXPECT_EQ(pull_theta(), std::vector<float>(16, 0.0f));

  // A good one (fp16 then top-k) is decoded and applied: only the keys it
  // carries move, key 13 (top-k offset 3) by exactly as much as key 0.
  ps::v1::PushRequest good = ValidPush(16);
  good.clear_gradient();
  *good.add_compressed_gradient() = Part(ps::v1::ENCODING_FP16, 10, fp16_ones);
  *good.add_compressed_gradient() =
      Part(ps::v1::ENCODING_TOPK, 6, FloatBytes({1}), Uint32Bytes({3}));
  ASSERT_TRUE(Call(good).ok());
  const std::vector<float> theta = pull_theta();
  EXPECT_EQ(cluster_.servers[0]->shard().Status().version, 1u);
  EXPECT_NE(theta[0], 0.0f);
  for (int k = 0; k < 10; ++k) EXPECT_EQ(theta[k], theta[0]) << k;
  for (int k = 10; k < 16; ++k) {
    EXPECT_EQ(theta[k], k == 13 ? theta[0] : 0.0f) << k;
  }
}

TEST_F(WireTest,
       BytesThatAreNotTheMessageGetInvalidArgumentAndLeaveThetaAlone) {
  Init(16);
  rpc::RawUnaryCaller caller(rpc::CreateChannel(cluster_.addresses[0]));
  auto call = [&](const char* method, const std::string& bytes) {
    grpc::Slice slice(bytes.data(), bytes.size());
    grpc::ByteBuffer request(&slice, 1), response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    return caller.Call(&context, method, request, &response);
  };
  // A PushPull whose gradient's length runs past the end of its push.
  grpc::Status status = call("/ps.v1.ParameterServer/PushPull",
                             std::string("\x0a\x05\x4a\xff\xff\x03\x00", 7));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("is not a valid ps.v1.PushPullRequest"));
  // Bytes that are no protobuf at all (a varint that never ends).
  for (const char* method :
       {"/ps.v1.ParameterServer/PushPull", "/ps.v1.ParameterServer/Push",
        "/ps.v1.ParameterServer/Init", "/ps.v1.ParameterServer/Pull"}) {
    status = call(method, std::string(64, '\xff'));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << method;
    EXPECT_THAT(status.error_message(), HasSubstr("is not a valid ps.v1."))
        << method;
  }
  EXPECT_EQ(cluster_.servers[0]->shard().Status().version, 0u);
}

// Pulls park only in sync mode (for the next round) and SSP (for the
// slowest worker).
class SyncWireTest : public WireTest {
 protected:
  server::ConsistencyMode Mode() const override {
    return server::ConsistencyMode::kSync;
  }
};

TEST_F(WireTest, AnAsyncPullForAVersionNotReachedIsRefusedAtOnce) {
  Init(4);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  ps::v1::PullRequest pull;
  pull.set_min_version(UINT64_MAX);
  ps::v1::PullResponse pulled;
  const absl::Time start = absl::Now();
  const grpc::Status status = stub_->Pull(&context, pull, &pulled);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_THAT(status.error_message(),
              HasSubstr("ahead of this shard's version 0"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10)) << "the pull waited";
  EXPECT_EQ(cluster_.servers[0]->shard().Status().version, 0u);
}

TEST_F(WireTest, APullRequestLargerThanItsFieldsIsRefusedUnread) {
  Init(4);
  ps::v1::PullRequest pull;
  pull.set_min_version(0);
  std::string wire = pull.SerializeAsString();
  // An unknown bytes field (number 15) of 8 KiB: valid protobuf.
  wire += std::string("\x7a\x80\x40", 3) + std::string(8192, 'x');
  ASSERT_TRUE(pull.ParseFromString(wire));
  rpc::RawUnaryCaller caller(rpc::CreateChannel(cluster_.addresses[0]));
  grpc::ByteBuffer response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::Slice slice(wire);
  const grpc::Status status =
      caller.Call(&context, "/ps.v1.ParameterServer/Pull",
                  grpc::ByteBuffer(&slice, 1), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("at most 4096 bytes are read"));
}

TEST_F(SyncWireTest, AWaitingPullEndsAtItsDeadline) {
  Init(4);
  grpc::ClientContext context;
  context.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Milliseconds(300)));
  ps::v1::PullRequest pull;
  pull.set_min_version(1);
  ps::v1::PullResponse pulled;
  EXPECT_EQ(stub_->Pull(&context, pull, &pulled).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(SyncWireTest, AParkedPullSaysHowLongItWaited) {
  Init(4);
  ps::v1::RegisterRequest worker1;
  worker1.set_worker_id(1);
  worker1.set_incarnation(1);
  ps::v1::RegisterResponse registered;
  grpc::ClientContext register_context;
  ASSERT_TRUE(stub_->Register(&register_context, worker1, &registered).ok());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  ps::v1::PullRequest pull;
  pull.set_min_version(1);
  ps::v1::PullResponse pulled;
  grpc::Status pull_status;
  const absl::Time start = absl::Now();
  std::thread puller(
      [&] { pull_status = stub_->Pull(&context, pull, &pulled); });
  // Round 0 closes only after the pull parked.
  EXPECT_TRUE(test_support::WaitUntil(
      [&] {
        return cluster_.servers[0]->metrics().registry().Render().find(
                   "\nps_server_parked_pulls{shard=\"0\"} 1\n") !=
               std::string::npos;
      },
      absl::Seconds(20)));
  for (uint32_t worker = 0; worker < 2; ++worker) {
    ps::v1::PushRequest push = ValidPush(4);
    push.set_worker_id(worker);
    ASSERT_TRUE(Call(push).ok());
  }
  puller.join();
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(pull_status.ok()) << pull_status.error_message();
  EXPECT_EQ(pulled.version(), 1u);
  EXPECT_GT(pulled.waited_us(), 0u);
  EXPECT_LE(absl::Microseconds(pulled.waited_us()), took);
}

TEST_F(SyncWireTest, ARawCallEndsAtItsDeadlineToo) {
  Init(4);
  rpc::RawUnaryCaller caller(rpc::CreateChannel(cluster_.addresses[0]));
  ps::v1::PullRequest pull;
  pull.set_min_version(1);  // no push comes: the pull parks
  grpc::ByteBuffer response;
  grpc::ClientContext context;
  context.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Milliseconds(300)));
  EXPECT_EQ(caller
                .Call(&context, "/ps.v1.ParameterServer/Pull",
                      rpc::Serialize(pull), &response)
                .error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(WireTest, ServesTheStandardHealthService) {
  EXPECT_TRUE(rpc::CheckServing(cluster_.addresses[0], absl::Seconds(10)).ok());
  // Nothing listens on a port we just closed: a clear error, not a hang.
  const std::string closed = "127.0.0.1:1";
  absl::Status down = rpc::CheckServing(closed, absl::Seconds(2));
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(down.message().find(closed), std::string::npos) << down;
}

TEST_F(WireTest, ASixteenMillionFloatModelTravelsInOneMessage) {
  constexpr uint64_t kKeys = 16 << 20;
  Init(kKeys);
  ASSERT_TRUE(Call(ValidPush(kKeys)).ok());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  ps::v1::PullRequest pull;
  pull.set_min_version(1);
  ps::v1::PullResponse pulled;
  ASSERT_TRUE(stub_->Pull(&context, pull, &pulled).ok());
  ASSERT_EQ(pulled.values().size(), kKeys * sizeof(float));
  float last;
  std::memcpy(&last, pulled.values().data() + (kKeys - 1) * sizeof(float),
              sizeof(last));
  EXPECT_FLOAT_EQ(last, -0.1f);  // 0 − α·1 with the default α = 0.1
}

// The previous process of rank 0 ran on a node whose clock was an hour
// ahead: a new process on a node with a right clock must still register and
// replace it (the servers refuse older incarnations).
TEST(Cluster, ARestartedWorkerRegistersWhateverItsNodesClockSays) {
  Cluster cluster = StartCluster(2, 1, server::ConsistencyMode::kAsync);
  worker::ClientOptions ahead = ClientFor(cluster, 0);
  ahead.incarnation =
      static_cast<uint64_t>(absl::ToUnixNanos(absl::Now() + absl::Hours(1)));
  auto previous = worker::ParameterClient::Connect(ahead);
  ASSERT_TRUE(previous.ok()) << previous.status();
  ASSERT_TRUE((*previous)->Register().ok());

  auto restarted = worker::ParameterClient::Connect(ClientFor(cluster, 0));
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  const absl::StatusOr<uint64_t> registered = (*restarted)->Register();
  ASSERT_TRUE(registered.ok()) << registered.status();
  EXPECT_GT((*restarted)->incarnation(), ahead.incarnation);
  for (auto& server : cluster.servers) {
    const server::ShardStatus status = server->shard().Status();
    ASSERT_EQ(status.workers.size(), 1u);
    EXPECT_EQ(status.workers[0].incarnation, (*restarted)->incarnation());
  }
  // The old process is the one refused now.
  const absl::StatusOr<uint64_t> old = (*previous)->Register();
  EXPECT_FALSE(old.ok()) << *old;
}

}  // namespace
}  // namespace ps
