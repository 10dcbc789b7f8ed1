// Google Benchmark micro-benchmarks of the hot kernels: the regularized
// update per regularizer/constraint (beside an Eigen axpy of the same size,
// the memory-bandwidth limit), (de)serialisation of a push and a pull as
// gRPC runs it, and each model's forward+backward on one batch.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "Eigen/Core"
#include "benchmark/benchmark.h"
#include "common/cli.h"
#include "common/dataset.h"
#include "common/float_bytes.h"
#include "common/update_rule.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "ps/v1/parameter_server.pb.h"
#include "server/wire_messages.h"
#include "worker/model.h"

namespace {

using ps::common::UpdateOptions;

// Bytes an elementwise update of n floats must move at least: read θ and
// the gradient, write θ. Axpy (y = a·x + y) moves the same.
int64_t UpdateBytes(int64_t n) { return 3 * n * int64_t{sizeof(float)}; }

void BM_EigenAxpy(benchmark::State& state) {
  const int64_t n = state.range(0);
  Eigen::VectorXf x = Eigen::VectorXf::Constant(n, 1e-3f);
  Eigen::VectorXf y = Eigen::VectorXf::Constant(n, 0.5f);
  for (auto _ : state) {
    y.noalias() += -0.1f * x;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * UpdateBytes(n));
}

void BM_Update(benchmark::State& state, UpdateOptions options) {
  const int64_t n = state.range(0);
  std::vector<float> gradient(n, 1e-3f), theta(n, 0.5f);
  for (auto _ : state) {
    ps::common::ApplyUpdate(options, /*regularize=*/true, gradient,
                            absl::MakeSpan(theta));
    benchmark::DoNotOptimize(theta.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * UpdateBytes(n));
}

// What gRPC runs on a message: serialise into a ByteBuffer, parse one.
template <typename Message>
grpc::ByteBuffer Serialize(const Message& message) {
  grpc::ByteBuffer buffer;
  bool own = false;
  grpc::SerializationTraits<Message>::Serialize(message, &buffer, &own);
  return buffer;
}

// Worker side of a push: the gradient into the (reused) request, then the
// wire bytes.
void BM_PushEncode(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> gradient(n, 1e-3f);
  ps::v1::PushRequest request;
  auto encode = [&] {
    ps::common::FloatsToBytes(gradient, request.mutable_gradient());
    grpc::ByteBuffer buffer = Serialize(request);
    benchmark::DoNotOptimize(buffer.Length());
  };
  encode();  // warm: the figure is the steady state, not first faults
  for (auto _ : state) encode();
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

// Server side of a push: parse the wire bytes, copy the gradient out (as
// the shard does before validating it).
void BM_PushDecode(benchmark::State& state) {
  const int64_t n = state.range(0);
  ps::v1::PushRequest request;
  ps::common::FloatsToBytes(std::vector<float>(n, 1e-3f),
                            request.mutable_gradient());
  const grpc::ByteBuffer wire = Serialize(request);
  std::vector<float> gradient(n);
  auto decode = [&] {
    grpc::ByteBuffer buffer(wire);  // shares the slices
    ps::v1::PushRequest parsed;     // the server gets a fresh one per call
    return grpc::SerializationTraits<ps::v1::PushRequest>::Deserialize(
               &buffer, &parsed)
               .ok() &&
           ps::common::BytesToFloats(parsed.gradient(),
                                     absl::MakeSpan(gradient), "gradient")
               .ok();
  };
  if (!decode()) state.SkipWithError("cannot parse the push");
  for (auto _ : state) decode();
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

// Server side of a pull as it was typed: θ into the response, then the
// wire bytes. The baseline for PullEncode.
void BM_PullEncodeTyped(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> theta(n, 0.5f);
  auto encode = [&] {
    ps::v1::PullResponse response;  // the server gets a fresh one per call
    ps::common::FloatsToBytes(theta, response.mutable_values());
    grpc::ByteBuffer buffer = Serialize(response);
    benchmark::DoNotOptimize(buffer.Length());
  };
  encode();
  for (auto _ : state) encode();
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

// Server side of a pull: θ copied out (as the shard's Read does), then
// written for the wire with the copy as its last slice.
void BM_PullEncode(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> theta(n, 0.5f);
  auto encode = [&] {
    ps::server::PullResult pulled;
    pulled.keys = {0, static_cast<uint64_t>(n)};
    ps::common::FloatsToBytes(theta, &pulled.values);
    grpc::ByteBuffer buffer = ps::server::EncodePullResponse(std::move(pulled));
    benchmark::DoNotOptimize(buffer.Length());
  };
  encode();
  for (auto _ : state) encode();
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

// Worker side of a pull: parse into the reused response, copy θ out.
void BM_PullDecode(benchmark::State& state) {
  const int64_t n = state.range(0);
  ps::v1::PullResponse response;
  ps::common::FloatsToBytes(std::vector<float>(n, 0.5f),
                            response.mutable_values());
  const grpc::ByteBuffer wire = Serialize(response);
  std::vector<float> theta(n);
  ps::v1::PullResponse parsed;
  auto decode = [&] {
    grpc::ByteBuffer buffer(wire);
    return grpc::SerializationTraits<ps::v1::PullResponse>::Deserialize(
               &buffer, &parsed)
               .ok() &&
           ps::common::BytesToFloats(parsed.values(), absl::MakeSpan(theta),
                                     "values")
               .ok();
  };
  if (!decode()) state.SkipWithError("cannot parse the pull");
  for (auto _ : state) decode();
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

// One worker step's compute: loss and mean gradient of a batch of 784-pixel
// images (random, as the figure does not depend on the values).
void BM_ModelStep(benchmark::State& state, const std::string& name) {
  const int64_t batch = state.range(0);
  auto model = ps::worker::CreateModel(name, 784, 10);
  if (!model.ok()) {
    state.SkipWithError(std::string(model.status().message()).c_str());
    return;
  }
  const std::vector<float> theta = (*model)->InitialParams(1);
  std::vector<float> gradient(theta.size());
  ps::common::RowMatrix x =
      (ps::common::RowMatrix::Random(batch, 784).array() + 1.0f) / 2.0f;
  std::vector<int32_t> labels(batch);
  for (int64_t i = 0; i < batch; ++i) labels[i] = static_cast<int32_t>(i % 10);
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        (*model)->LossAndGradient(theta, x, labels, absl::MakeSpan(gradient)));
  }
  state.SetItemsProcessed(state.iterations() * batch);  // samples
}

constexpr int64_t kSizes[] = {1 << 10, 1 << 16, 1 << 20, 1 << 24};

UpdateOptions Sgd() { return UpdateOptions(); }
UpdateOptions L2() {
  UpdateOptions o;
  o.l2 = 1e-4f;
  return o;
}
UpdateOptions ElasticNet() {
  UpdateOptions o = L2();
  o.l1 = 1e-5f;
  return o;
}
UpdateOptions Box() {
  UpdateOptions o = L2();
  o.clip_min = -1;
  o.clip_max = 1;
  return o;
}
UpdateOptions Ball() {
  UpdateOptions o = L2();
  o.max_norm = 1e6f;
  return o;
}
UpdateOptions Penalty() {
  UpdateOptions o = Box();
  o.max_norm = 1e6f;
  o.penalty_beta = 1;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  // As every ps process runs (common/cli.h).
  ps::common::TuneMallocForLargeBuffers();
  // Each size's update figures stand beside its axpy.
  for (int64_t n : kSizes) {
    benchmark::RegisterBenchmark("EigenAxpy", BM_EigenAxpy)->Arg(n);
    const std::pair<const char*, UpdateOptions> rules[] = {
        {"Update/sgd", Sgd()},         {"Update/l2", L2()},
        {"Update/l1+l2", ElasticNet()}, {"Update/l2+box", Box()},
        {"Update/l2+ball", Ball()},    {"Update/penalty", Penalty()}};
    for (const auto& [name, options] : rules) {
      benchmark::RegisterBenchmark(name, BM_Update, options)->Arg(n);
    }
  }
  for (int64_t n : kSizes) {
    benchmark::RegisterBenchmark("PushEncode", BM_PushEncode)->Arg(n);
    benchmark::RegisterBenchmark("PushDecode", BM_PushDecode)->Arg(n);
    benchmark::RegisterBenchmark("PullEncode", BM_PullEncode)->Arg(n);
    benchmark::RegisterBenchmark("PullEncodeTyped", BM_PullEncodeTyped)
        ->Arg(n);
    benchmark::RegisterBenchmark("PullDecode", BM_PullDecode)->Arg(n);
  }
  for (const char* model : {"softmax", "mlp"}) {
    benchmark::RegisterBenchmark((std::string("ModelStep/") + model).c_str(),
                                 BM_ModelStep, std::string(model))
        ->Arg(64)
        ->Arg(128);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
