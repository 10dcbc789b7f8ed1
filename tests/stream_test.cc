// Streamed inits, pushes and pulls (ps.v1 InitStream, PushStream,
// PullStream) against real servers in this process: a broken or bad stream
// applies (or declares) nothing, streams give the same θ as single
// messages bit for bit, a repeated streamed push is applied once, and a
// streamed pull is one version's θ however pushes interleave with it.
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "common/rpc/convert.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ps/v1/parameter_server.grpc.pb.h"
#include "tests/loopback_cluster.h"
#include "worker/parameter_client.h"

namespace ps {
namespace {

using test_support::ClientFor;
using test_support::Cluster;
using test_support::StartCluster;
using ::testing::HasSubstr;

// The smallest message a client may choose, so that a 400 KB shard travels
// in 7 chunks.
constexpr uint64_t kSmallMessage = worker::ClientOptions::kMinMessageBytes;
constexpr uint64_t kKeys = 100000;
constexpr uint64_t kChunkFloats = 16000;

std::vector<common::TensorSpec> Model(uint64_t keys) {
  return {{"w", {static_cast<int64_t>(keys)}, false}};
}

std::vector<float> Initial(uint64_t keys) {
  std::vector<float> theta(keys);
  for (uint64_t i = 0; i < keys; ++i) theta[i] = 0.01f * std::cos(0.1f * i);
  return theta;
}

// Depends on θ, so a θ pulled wrong changes every later step.
std::vector<float> GradientAt(const std::vector<float>& theta, uint32_t rank,
                              uint64_t step) {
  std::vector<float> g(theta.size());
  for (size_t i = 0; i < g.size(); ++i) {
    g[i] = 0.5f * theta[i] + 1e-3f * std::sin(0.001f * i + step + 3.0f * rank);
  }
  return g;
}

bool SameBytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Bytes shard 0 received by `method` (its Prometheus counter).
double ReceivedBytes(const server::PsServer& server,
                     const std::string& method) {
  const std::string text = server.metrics().registry().Render();
  const std::string series = absl::StrCat(
      "ps_server_received_bytes_total{shard=\"0\",method=\"", method, "\"} ");
  const size_t at = text.find(series);
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size()));
}

// `values` as the chunks of a client-streamed call (PushChunk, InitChunk),
// kChunkFloats each, appended to `messages`.
template <typename Chunk>
void AppendChunks(const std::vector<float>& values,
                  std::vector<Chunk>* messages) {
  for (uint64_t offset = 0; offset < values.size(); offset += kChunkFloats) {
    const uint64_t n = std::min<uint64_t>(kChunkFloats, values.size() - offset);
    Chunk& chunk = messages->emplace_back();
    chunk.set_offset(offset);
    chunk.set_values(
        std::string(reinterpret_cast<const char*>(values.data() + offset),
                    n * sizeof(float)));
  }
}

// Sends `messages` on the stream `open(context)` starts, then ends it, or
// with `cancel_after` >= 0 cancels the call after that many messages
// instead.
template <typename Chunk, typename Open>
grpc::Status SendStream(const std::vector<Chunk>& messages, int cancel_after,
                        Open open) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  auto writer = open(&context);
  int sent = 0;
  for (const Chunk& message : messages) {
    if (sent == cancel_after) break;
    if (!writer->Write(message)) break;
    ++sent;
  }
  if (cancel_after >= 0) {
    context.TryCancel();
  } else {
    writer->WritesDone();
  }
  return writer->Finish();
}

// `steps` sync steps of `workers` workers over `shards` fresh servers with
// the clients' max_message_bytes: even steps Push then Pull, odd ones
// PushPull. Returns θ as rank 0 pulled it at the end; `streamed` says
// whether shard 0 received pushes as streams, and `single` as messages.
std::vector<float> TrainSync(uint32_t shards, uint32_t workers,
                             uint64_t max_message_bytes, uint64_t steps,
                             bool* streamed, bool* single) {
  Cluster cluster =
      StartCluster(shards, workers, server::ConsistencyMode::kSync);
  std::vector<std::vector<float>> thetas(workers);
  std::vector<absl::Status> results(workers);
  std::vector<std::thread> threads;
  for (uint32_t rank = 0; rank < workers; ++rank) {
    threads.emplace_back([&, rank] {
      worker::ClientOptions options = ClientFor(cluster, rank);
      options.max_message_bytes = max_message_bytes;
      auto client = worker::ParameterClient::Connect(options);
      absl::Status& result = results[rank];
      if (!client.ok()) {
        result = client.status();
        return;
      }
      worker::ParameterClient& c = **client;
      std::vector<float>& theta = thetas[rank];
      theta = Initial(kKeys);
      result = c.Register().status();
      if (result.ok()) result = c.Init(Model(kKeys), theta).status();
      if (result.ok()) result = c.Pull(0, absl::MakeSpan(theta)).status();
      for (uint64_t step = 0; result.ok() && step < steps; ++step) {
        const std::vector<float> g = GradientAt(theta, rank, step);
        if (step % 2 == 0) {
          result = c.Push(step, 1, g);
          if (result.ok()) {
            result = c.Pull(step + 1, absl::MakeSpan(theta)).status();
          }
        } else {
          result = c.PushPull(step, 1, g, absl::MakeSpan(theta)).status();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& status : results) EXPECT_TRUE(status.ok()) << status;
  const server::PsServer& first = *cluster.servers[0];
  *streamed = ReceivedBytes(first, "InitStream") > 0 &&
              ReceivedBytes(first, "PushStream") > 0 &&
              ReceivedBytes(first, "PullStream") > 0;
  *single = ReceivedBytes(first, "Init") > 0 &&
            ReceivedBytes(first, "Push") > 0 &&
            ReceivedBytes(first, "PushPull") > 0;
  return thetas[0];
}

TEST(Stream, StreamedPushesAndPullsGiveTheSameThetaAsSingleMessages) {
  bool used_streams = false;
  bool used_messages = false;
  const std::vector<float> single =
      TrainSync(2, 2, 512 << 20, 6, &used_streams, &used_messages);
  EXPECT_FALSE(used_streams);
  EXPECT_TRUE(used_messages);
  const std::vector<float> streamed =
      TrainSync(2, 2, kSmallMessage, 6, &used_streams, &used_messages);
  EXPECT_TRUE(used_streams);
  EXPECT_FALSE(used_messages);
  ASSERT_EQ(single.size(), kKeys);
  EXPECT_FALSE(SameBytes(single, Initial(kKeys)));  // training moved θ
  EXPECT_TRUE(SameBytes(single, streamed));
}

// A raw PushStream client, to send what ParameterClient never would.
class RawPushStreams : public ::testing::Test {
 protected:
  void StartServers(server::ConsistencyMode mode, uint32_t workers) {
    cluster_ = StartCluster(1, workers, mode);
    worker::ClientOptions options = ClientFor(cluster_, 0);
    options.max_message_bytes = kSmallMessage;
    auto client = worker::ParameterClient::Connect(options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
    ASSERT_TRUE(client_->Register().ok());
    ASSERT_TRUE(client_->Init(Model(kKeys), Initial(kKeys)).ok());
    stub_ = ps::v1::ParameterServer::NewStub(
        rpc::CreateChannel(cluster_.addresses[0]));
  }

  ps::v1::PushChunk Head(uint64_t seq) const {
    ps::v1::PushChunk head;
    ps::v1::PushRequest* push = head.mutable_push();
    push->set_worker_id(0);
    push->set_incarnation(client_->incarnation());
    push->set_seq(seq);
    push->set_step(seq - 1);
    push->set_base_version(0);
    push->set_batch_size(1);
    push->set_key_begin(0);
    push->set_key_end(kKeys);
    return head;
  }

  // The head, then `g` in chunks of kChunkFloats.
  std::vector<ps::v1::PushChunk> Stream(uint64_t seq,
                                        const std::vector<float>& g) const {
    std::vector<ps::v1::PushChunk> messages = {Head(seq)};
    AppendChunks(g, &messages);
    return messages;
  }

  // Sends `messages`, then ends the stream, or with `cancel_after` >= 0
  // cancels the call after that many messages instead.
  grpc::Status Send(const std::vector<ps::v1::PushChunk>& messages,
                    ps::v1::PushResponse* response = nullptr,
                    int cancel_after = -1) {
    ps::v1::PushResponse ignored;
    return SendStream(
        messages, cancel_after, [&](grpc::ClientContext* context) {
          return stub_->PushStream(context, response ? response : &ignored);
        });
  }

  ps::v1::StatusResponse ServerStatus() {
    ps::v1::StatusResponse status;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    EXPECT_TRUE(stub_->Status(&context, ps::v1::StatusRequest(), &status).ok());
    return status;
  }

  std::vector<float> Theta() {
    std::vector<float> theta(kKeys);
    EXPECT_TRUE(client_->PullFinal(absl::MakeSpan(theta)).ok());
    return theta;
  }

  Cluster cluster_;
  std::unique_ptr<worker::ParameterClient> client_;
  std::unique_ptr<ps::v1::ParameterServer::Stub> stub_;
};

TEST_F(RawPushStreams, ABrokenOrBadStreamAppliesNothing) {
  // Sync, two workers: a push that got in would sit in the open round.
  StartServers(server::ConsistencyMode::kSync, 2);
  const std::vector<float> g = GradientAt(Initial(kKeys), 0, 0);
  std::vector<float> nan = g;
  nan[3 * kChunkFloats + 5] = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    const char* name;
    std::vector<ps::v1::PushChunk> messages;
    int cancel_after;
    grpc::StatusCode code;
    const char* says;
  };
  std::vector<Case> cases;
  cases.push_back(
      {"cancelled midway", Stream(1, g), 4, grpc::StatusCode::CANCELLED, ""});
  cases.push_back({"a NaN", Stream(1, nan), -1,
                   grpc::StatusCode::INVALID_ARGUMENT, "must be finite"});
  {
    std::vector<ps::v1::PushChunk> swapped = Stream(1, g);
    std::swap(swapped[2], swapped[3]);
    cases.push_back({"out of order", swapped, -1,
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "does not start where the previous chunk ended"});
  }
  {
    std::vector<ps::v1::PushChunk> overlapping = Stream(1, g);
    overlapping[3].set_offset(overlapping[3].offset() - 10);
    cases.push_back({"overlapping", overlapping, -1,
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "does not start where the previous chunk ended"});
  }
  {
    std::vector<ps::v1::PushChunk> short_total = Stream(1, g);
    short_total.pop_back();
    cases.push_back({"short", short_total, -1,
                     grpc::StatusCode::INVALID_ARGUMENT, "ended after 96000"});
  }
  {
    std::vector<ps::v1::PushChunk> long_total = Stream(1, g);
    ps::v1::PushChunk& extra = long_total.emplace_back();
    extra.set_offset(kKeys);
    extra.set_values(std::string(8, '\0'));
    cases.push_back({"long", long_total, -1, grpc::StatusCode::INVALID_ARGUMENT,
                     "runs past"});
  }
  {
    std::vector<ps::v1::PushChunk> headless = Stream(1, g);
    headless.erase(headless.begin());
    cases.push_back({"without its fields", headless, -1,
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "must carry the push's fields"});
  }
  {
    std::vector<ps::v1::PushChunk> wrong_keys = Stream(1, g);
    wrong_keys[0].mutable_push()->set_key_end(2 * kKeys);
    cases.push_back({"for other keys", wrong_keys, -1,
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "a push must cover exactly the shard's range"});
  }
  const ps::v1::StatusResponse before = ServerStatus();
  for (const Case& c : cases) {
    const grpc::Status status = Send(c.messages, nullptr, c.cancel_after);
    EXPECT_EQ(status.error_code(), c.code)
        << c.name << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.says)) << c.name;
  }
  const ps::v1::StatusResponse after = ServerStatus();
  EXPECT_EQ(after.version(), before.version());
  EXPECT_EQ(after.round_gradients(), 0u);
  EXPECT_EQ(after.pushes_applied(), 0u);
  ASSERT_EQ(after.workers_size(), 1);
  EXPECT_EQ(after.workers(0).last_seq(), 0u);
  EXPECT_EQ(after.workers(0).pushes(), 0u);
  EXPECT_TRUE(SameBytes(Theta(), Initial(kKeys)));

  // Seq 1 is still new: the whole stream is taken into the round.
  ps::v1::PushResponse response;
  ASSERT_TRUE(Send(Stream(1, g), &response).ok());
  EXPECT_EQ(response.outcome(), ps::v1::PushResponse::ACCEPTED);
  EXPECT_EQ(ServerStatus().round_gradients(), 1u);
}

TEST_F(RawPushStreams, ARepeatedStreamedPushIsAppliedOnce) {
  StartServers(server::ConsistencyMode::kAsync, 1);
  const std::vector<float> g = GradientAt(Initial(kKeys), 0, 0);
  ps::v1::PushResponse first;
  ASSERT_TRUE(Send(Stream(1, g), &first).ok());
  EXPECT_EQ(first.outcome(), ps::v1::PushResponse::APPLIED);
  const std::vector<float> once = Theta();
  EXPECT_FALSE(SameBytes(once, Initial(kKeys)));
  // A retry: the same seq, sent whole again.
  ps::v1::PushResponse again;
  ASSERT_TRUE(Send(Stream(1, g), &again).ok());
  EXPECT_EQ(again.outcome(), ps::v1::PushResponse::DUPLICATE);
  EXPECT_EQ(again.version(), first.version());
  EXPECT_TRUE(SameBytes(Theta(), once));
  const ps::v1::StatusResponse status = ServerStatus();
  EXPECT_EQ(status.pushes_applied(), 1u);
  EXPECT_EQ(status.pushes_duplicate(), 1u);

  // The same push as one message on a twin server gives the same θ.
  Cluster twin = StartCluster(1, 1, server::ConsistencyMode::kAsync);
  worker::ClientOptions options = ClientFor(twin, 0);
  options.max_message_bytes = 512 << 20;
  auto unary = worker::ParameterClient::Connect(options);
  ASSERT_TRUE(unary.ok());
  ASSERT_TRUE((*unary)->Register().ok());
  ASSERT_TRUE((*unary)->Init(Model(kKeys), Initial(kKeys)).ok());
  ASSERT_TRUE((*unary)->Push(0, 1, g).ok());
  std::vector<float> theta(kKeys);
  ASSERT_TRUE((*unary)->PullFinal(absl::MakeSpan(theta)).ok());
  EXPECT_TRUE(SameBytes(theta, once));
}

// A raw InitStream client against a fresh shard: every broken or bad
// stream, and one the unary Init would refuse, declares nothing; the
// shard then takes a good stream's values bit for bit.
TEST(RawInitStreams, ABrokenOrBadInitStreamDeclaresNothing) {
  Cluster cluster = StartCluster(1, 1, server::ConsistencyMode::kAsync);
  auto stub = ps::v1::ParameterServer::NewStub(
      rpc::CreateChannel(cluster.addresses[0]));
  const std::vector<float> initial = Initial(kKeys);
  auto stream = [&](const std::vector<float>& values) {
    std::vector<ps::v1::InitChunk> messages(1);
    ps::v1::InitRequest* init = messages[0].mutable_init();
    init->set_worker_id(0);
    init->set_shard_index(0);
    init->set_num_shards(1);
    rpc::ToProto(Model(kKeys), init->mutable_tensors());
    AppendChunks(values, &messages);
    return messages;
  };
  auto send = [&](const std::vector<ps::v1::InitChunk>& messages,
                  ps::v1::InitResponse* response, int cancel_after) {
    return SendStream(messages, cancel_after,
                      [&](grpc::ClientContext* context) {
                        return stub->InitStream(context, response);
                      });
  };
  std::vector<float> nan = initial;
  nan[2 * kChunkFloats + 7] = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    const char* name;
    std::vector<ps::v1::InitChunk> messages;
    int cancel_after;
    grpc::StatusCode code;
    const char* says;
  };
  std::vector<Case> cases;
  cases.push_back({"cancelled midway", stream(initial), 4,
                   grpc::StatusCode::CANCELLED, ""});
  // The unary Init's own checks, made by the shard once the stream is whole.
  cases.push_back({"a NaN", stream(nan), -1, grpc::StatusCode::INVALID_ARGUMENT,
                   "must be finite"});
  {
    std::vector<ps::v1::InitChunk> swapped = stream(initial);
    std::swap(swapped[2], swapped[3]);
    cases.push_back({"out of order", swapped, -1,
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "does not start where the previous chunk ended"});
  }
  {
    std::vector<ps::v1::InitChunk> short_total = stream(initial);
    short_total.pop_back();
    cases.push_back({"short", short_total, -1,
                     grpc::StatusCode::INVALID_ARGUMENT, "ended after 96000"});
  }
  {
    std::vector<ps::v1::InitChunk> long_total = stream(initial);
    ps::v1::InitChunk& extra = long_total.emplace_back();
    extra.set_offset(kKeys);
    extra.set_values(std::string(8, '\0'));
    cases.push_back({"long", long_total, -1, grpc::StatusCode::INVALID_ARGUMENT,
                     "runs past"});
  }
  {
    std::vector<ps::v1::InitChunk> ragged = stream(initial);
    ragged[1].mutable_values()->push_back('x');
    cases.push_back({"not whole floats", ragged, -1,
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "not a whole number of float32"});
  }
  {
    std::vector<ps::v1::InitChunk> headless = stream(initial);
    headless.erase(headless.begin());
    cases.push_back({"without its fields", headless, -1,
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "must carry the Init's fields"});
  }
  {
    std::vector<ps::v1::InitChunk> values_in_head = stream(initial);
    values_in_head[0].mutable_init()->set_values(std::string(8, '\0'));
    cases.push_back({"values in its fields", values_in_head, -1,
                     grpc::StatusCode::INVALID_ARGUMENT,
                     "values must be empty"});
  }
  {
    std::vector<ps::v1::InitChunk> other_shard = stream(initial);
    other_shard[0].mutable_init()->set_shard_index(1);
    other_shard[0].mutable_init()->set_num_shards(2);
    cases.push_back({"for another shard", other_shard, -1,
                     grpc::StatusCode::FAILED_PRECONDITION, "--shard_index"});
  }
  for (const Case& c : cases) {
    ps::v1::InitResponse ignored;
    const grpc::Status status = send(c.messages, &ignored, c.cancel_after);
    EXPECT_EQ(status.error_code(), c.code)
        << c.name << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.says)) << c.name;
    ps::v1::StatusResponse after;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    ASSERT_TRUE(stub->Status(&context, ps::v1::StatusRequest(), &after).ok());
    EXPECT_FALSE(after.initialized()) << c.name;
  }

  ps::v1::InitResponse response;
  const grpc::Status good = send(stream(initial), &response, -1);
  ASSERT_TRUE(good.ok()) << good.error_message();
  EXPECT_TRUE(response.created());
  EXPECT_EQ(response.key_end(), kKeys);
  auto client = worker::ParameterClient::Connect(ClientFor(cluster, 0));
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Register().ok());
  // Declared by the stream: this Init agrees and creates nothing.
  ASSERT_TRUE((*client)->Init(Model(kKeys), initial).ok());
  std::vector<float> theta(kKeys);
  ASSERT_TRUE((*client)->PullFinal(absl::MakeSpan(theta)).ok());
  EXPECT_TRUE(SameBytes(theta, initial));
}

// A streamed pull is answered at one version and sends that version's θ
// chunk after chunk, even while pushes change θ between its chunks (the
// shard copies θ for the pushes instead of writing over the pull's).
TEST(RawPullStreams, APullStreamedWhilePushesArriveReturnsOneVersionsTheta) {
  // 16 MiB of θ in 64 KiB chunks: more than the connection's flow-control
  // window, so most chunks are read from θ after the pushes below.
  constexpr uint64_t kBigKeys = 4 << 20;
  Cluster cluster = StartCluster(1, 1, server::ConsistencyMode::kAsync);
  worker::ClientOptions options = ClientFor(cluster, 0);
  options.max_message_bytes = 512 << 20;
  auto client = worker::ParameterClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  worker::ParameterClient& c = **client;
  ASSERT_TRUE(c.Register().ok());
  ASSERT_TRUE(c.Init(Model(kBigKeys), Initial(kBigKeys)).ok());
  std::vector<float> before(kBigKeys);
  absl::StatusOr<worker::PullInfo> pulled = c.Pull(0, absl::MakeSpan(before));
  ASSERT_TRUE(pulled.ok()) << pulled.status();

  auto stub = ps::v1::ParameterServer::NewStub(
      rpc::CreateChannel(cluster.addresses[0]));
  ps::v1::PullStreamRequest request;
  request.mutable_pull()->set_worker_id(0);
  request.set_chunk_bytes(64 << 10);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto reader = stub->PullStream(&context, request);
  ps::v1::PullChunk head;
  ASSERT_TRUE(reader->Read(&head));
  ASSERT_TRUE(head.has_pull());
  const uint64_t version = head.pull().version();
  EXPECT_EQ(version, pulled->version);

  // Three pushes, each applied before the next, while the pull is open.
  const std::vector<float> g = GradientAt(before, 0, 0);
  for (uint64_t step = 0; step < 3; ++step) {
    ASSERT_TRUE(c.Push(step, 1, g).ok());
  }
  std::vector<float> after(kBigKeys);
  absl::StatusOr<worker::PullInfo> later = c.Pull(0, absl::MakeSpan(after));
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(later->version, version + 3);
  EXPECT_FALSE(SameBytes(after, before));

  std::vector<float> streamed(kBigKeys);
  uint64_t received = 0;
  ps::v1::PullChunk chunk;
  while (reader->Read(&chunk)) {
    ASSERT_EQ(chunk.offset(), received);
    const std::string& values = chunk.values();
    ASSERT_LE(received + values.size() / sizeof(float), kBigKeys);
    std::memcpy(streamed.data() + received, values.data(), values.size());
    received += values.size() / sizeof(float);
  }
  const grpc::Status finished = reader->Finish();
  ASSERT_TRUE(finished.ok()) << finished.error_message();
  ASSERT_EQ(received, kBigKeys);
  EXPECT_TRUE(SameBytes(streamed, before));
}

}  // namespace
}  // namespace ps
