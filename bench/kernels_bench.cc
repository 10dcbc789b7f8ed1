// Google Benchmark micro-benchmarks of the hot kernels: the regularized
// update per regularizer/constraint (beside an Eigen axpy of the same size,
// the memory-bandwidth limit), each optimizer's update (beside sgd's), a
// sparse table's lookup and gradient apply, (de)serialisation of a push and a
// pull as the processes run it (raw bytes, common/rpc/wire_format.h) beside the
// typed protobuf way, compressed gradients' codecs (fp16, bf16, top-k) on
// both sides, and each model's forward+backward on one batch.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "Eigen/Core"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "common/cli.h"
#include "common/dataset.h"
#include "common/float_bytes.h"
#include "common/gradient_codec.h"
#include "common/libsvm.h"
#include "common/optimizer.h"
#include "common/rpc/wire_format.h"
#include "common/splitmix64.h"
#include "common/update_rule.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/byte_buffer.h"
#include "ps/v1/parameter_server.pb.h"
#include "server/embedding_table.h"
#include "server/wire_messages.h"
#include "worker/gradient_compressor.h"
#include "worker/matrix_product.h"
#include "worker/model.h"
#include "worker/sparse_model.h"

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

// One optimizer's update of n keys with L2 (its state vectors read and
// written too: bytes count θ, the gradient and the state).
void BM_Optimizer(benchmark::State& state, ps::common::OptimizerKind kind) {
  const int64_t n = state.range(0);
  ps::common::OptimizerOptions optimizer;
  optimizer.kind = kind;
  UpdateOptions update;
  update.l2 = 1e-4f;
  std::vector<float> gradient(n, 1e-3f), theta(n, 0.5f);
  std::vector<std::vector<float>> vectors(
      ps::common::OptimizerStateNames(kind).size(), std::vector<float>(n));
  std::vector<absl::Span<float>> spans;
  for (auto& v : vectors) spans.push_back(absl::MakeSpan(v));
  uint64_t step = 0;
  for (auto _ : state) {
    ps::common::ApplyOptimizer(optimizer, update, /*regularize=*/true, ++step,
                               gradient, absl::MakeSpan(theta), spans);
    benchmark::DoNotOptimize(theta.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(
      state.iterations() *
      (UpdateBytes(n) +
       2 * n * int64_t{sizeof(float)} * static_cast<int64_t>(spans.size())));
}

// A sparse table of 100k stored rows of dim 16 and batches of 4096 ids
// drawn from 110k (some not stored), as a CTR mini-batch touches them.
// Items are rows.
constexpr int kTableRows = 100000;
constexpr int kTableBatch = 4096;
constexpr uint32_t kTableDim = 16;

std::unique_ptr<ps::server::EmbeddingTable> FilledTable(
    ps::common::OptimizerKind kind) {
  ps::server::EmbeddingTableOptions options;
  options.dim = kTableDim;
  options.optimizer.kind = kind;
  options.initializer = {ps::server::RowInitializer::Kind::kNormal, 0.01f};
  options.memory_limit = uint64_t{256} << 20;
  auto table = ps::server::EmbeddingTable::Create(options);
  if (!table.ok()) return nullptr;
  std::vector<uint64_t> ids(kTableRows);
  for (int i = 0; i < kTableRows; ++i) ids[i] = ps::common::SplitMix64(i);
  const std::vector<float> zeros(ids.size() * kTableDim, 0.0f);
  if (!(*table)->ApplyGradient(UpdateOptions(), 1, ids, zeros).ok()) {
    return nullptr;
  }
  return std::move(*table);
}

std::vector<std::vector<uint64_t>> TableBatches() {
  ps::common::SplitMix64Stream random(7);
  std::vector<std::vector<uint64_t>> batches(16);
  for (auto& batch : batches) {
    for (int i = 0; i < kTableBatch; ++i) {
      batch.push_back(
          ps::common::SplitMix64(random.Next() % (kTableRows * 11 / 10)));
    }
  }
  return batches;
}

void BM_TableLookup(benchmark::State& state) {
  auto table = FilledTable(ps::common::OptimizerKind::kSgd);
  if (table == nullptr) return state.SkipWithError("cannot fill the table");
  const auto batches = TableBatches();
  std::vector<float> out(kTableBatch * kTableDim);
  size_t next = 0;
  for (auto _ : state) {
    table->Lookup(batches[next++ % batches.size()], absl::MakeSpan(out));
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * kTableBatch);
}

void BM_TableApply(benchmark::State& state, ps::common::OptimizerKind kind) {
  auto table = FilledTable(kind);
  if (table == nullptr) return state.SkipWithError("cannot fill the table");
  const auto batches = TableBatches();
  const std::vector<float> gradient(kTableBatch * kTableDim, 1e-3f);
  UpdateOptions update;
  update.l2 = 1e-4f;
  size_t next = 0;
  for (auto _ : state) {
    if (!table
             ->ApplyGradient(update, 2 + next, batches[next % batches.size()],
                             gradient)
             .ok()) {
      return state.SkipWithError("the gradient was refused");
    }
    ++next;
  }
  state.SetItemsProcessed(state.iterations() * kTableBatch);
}

// What gRPC runs on a message: serialise into a ByteBuffer, parse one.
template <typename Message>
grpc::ByteBuffer Serialize(const Message& message) {
  grpc::ByteBuffer buffer;
  bool own = false;
  grpc::SerializationTraits<Message>::Serialize(message, &buffer, &own);
  return buffer;
}

constexpr uint32_t kGradientPath[] = {
    ps::v1::PushRequest::kGradientFieldNumber};
constexpr uint32_t kValuesPath[] = {ps::v1::PullResponse::kValuesFieldNumber};

ps::v1::PushRequest PushFields(int64_t n) {
  ps::v1::PushRequest request;
  request.set_seq(1);
  request.set_batch_size(64);
  request.set_key_end(n);
  return request;
}

// Worker side of a push: the gradient copied once into a slice of its own,
// beside the other fields (common/rpc/wire_format.h).
void BM_PushEncode(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> gradient(n, 1e-3f);
  const ps::v1::PushRequest fields = PushFields(n);
  auto encode = [&] {
    std::string bytes;
    ps::common::FloatsToBytes(gradient, &bytes);
    grpc::ByteBuffer buffer =
        ps::rpc::SerializeApart(fields, kGradientPath, std::move(bytes));
    benchmark::DoNotOptimize(buffer.Length());
  };
  encode();  // warm: the figure is the steady state, not first faults
  for (auto _ : state) encode();
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

// The typed way, the baseline: into the (reused) message, then gRPC's
// buffer.
void BM_PushEncodeTyped(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> gradient(n, 1e-3f);
  ps::v1::PushRequest request = PushFields(n);
  auto encode = [&] {
    ps::common::FloatsToBytes(gradient, request.mutable_gradient());
    grpc::ByteBuffer buffer = Serialize(request);
    benchmark::DoNotOptimize(buffer.Length());
  };
  encode();
  for (auto _ : state) encode();
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

grpc::ByteBuffer PushWire(int64_t n) {
  ps::v1::PushRequest request = PushFields(n);
  ps::common::FloatsToBytes(std::vector<float>(n, 1e-3f),
                            request.mutable_gradient());
  return Serialize(request);
}

// Server side of a push: the gradient stays in the request's slices and is
// read a cache-sized chunk at a time, as the shard validates and applies it.
void BM_PushDecode(benchmark::State& state) {
  const int64_t n = state.range(0);
  const grpc::ByteBuffer wire = PushWire(n);
  std::vector<float> chunk(4096);
  auto decode = [&] {
    ps::v1::PushRequest fields;
    absl::Cord gradient;
    if (!ps::rpc::ParseApart(ps::rpc::CordOf(wire), kGradientPath, &fields,
                             &gradient)) {
      return false;
    }
    absl::Cord::CharIterator from = gradient.char_begin();
    for (int64_t done = 0; done < n; done += 4096) {
      const int64_t k = std::min<int64_t>(4096, n - done);
      ps::common::ReadFloats(from, absl::MakeSpan(chunk).first(k));
      benchmark::DoNotOptimize(chunk.data());
    }
    return true;
  };
  if (!decode()) state.SkipWithError("cannot parse the push");
  for (auto _ : state) decode();
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

// The typed way: parse into a fresh message, copy the gradient out.
void BM_PushDecodeTyped(benchmark::State& state) {
  const int64_t n = state.range(0);
  const grpc::ByteBuffer wire = PushWire(n);
  std::vector<float> gradient(n);
  auto decode = [&] {
    grpc::ByteBuffer buffer(wire);  // shares the slices
    ps::v1::PushRequest parsed;     // a typed handler gets a fresh one
    return grpc::SerializationTraits<ps::v1::PushRequest>::Deserialize(&buffer,
                                                                       &parsed)
               .ok() &&
           ps::common::BytesToFloats(parsed.gradient(),
                                     absl::MakeSpan(gradient), "gradient")
               .ok();
  };
  if (!decode()) state.SkipWithError("cannot parse the push");
  for (auto _ : state) decode();
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

// The typed way: θ into a fresh response, then gRPC's buffer.
void BM_PullEncodeTyped(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> theta(n, 0.5f);
  auto encode = [&] {
    ps::v1::PullResponse response;
    ps::common::FloatsToBytes(theta, response.mutable_values());
    grpc::ByteBuffer buffer = Serialize(response);
    benchmark::DoNotOptimize(buffer.Length());
  };
  encode();
  for (auto _ : state) encode();
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

grpc::ByteBuffer PullWire(int64_t n) {
  ps::v1::PullResponse response;
  ps::common::FloatsToBytes(std::vector<float>(n, 0.5f),
                            response.mutable_values());
  return Serialize(response);
}

// Worker side of a pull: θ read from the answer's slices into its vector.
void BM_PullDecode(benchmark::State& state) {
  const int64_t n = state.range(0);
  const grpc::ByteBuffer wire = PullWire(n);
  std::vector<float> theta(n);
  ps::v1::PullResponse fields;
  auto decode = [&] {
    absl::Cord values;
    return ps::rpc::ParseApart(ps::rpc::CordOf(wire), kValuesPath, &fields,
                               &values) &&
           ps::common::BytesToFloats(values, absl::MakeSpan(theta), "values")
               .ok();
  };
  if (!decode()) state.SkipWithError("cannot parse the pull");
  for (auto _ : state) decode();
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

// The typed way: parse into the reused response, copy θ out.
void BM_PullDecodeTyped(benchmark::State& state) {
  const int64_t n = state.range(0);
  const grpc::ByteBuffer wire = PullWire(n);
  std::vector<float> theta(n);
  ps::v1::PullResponse parsed;
  auto decode = [&] {
    grpc::ByteBuffer buffer(wire);
    return grpc::SerializationTraits<ps::v1::PullResponse>::Deserialize(&buffer,
                                                                        &parsed)
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
// images (random, as the figure does not depend on the values), on the
// named matrix kernels.
void BM_ModelStep(benchmark::State& state, const std::string& name,
                  const std::string& kernels) {
  const int64_t batch = state.range(0);
  if (absl::Status used = ps::worker::UseMatrixKernels(kernels); !used.ok()) {
    state.SkipWithError(std::string(used.message()).c_str());
    return;
  }
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

// Parsing LIBSVM text shaped like ps_datagen ctr's: a 0/1 label and 26
// hashed uint64 ids a row, no values. Items are rows.
void BM_ParseLibsvm(benchmark::State& state) {
  const int64_t rows = state.range(0);
  ps::common::SplitMix64Stream random(1);
  std::string text;
  for (int64_t r = 0; r < rows; ++r) {
    text += random.NextUnit() < 0.03 ? "1" : "0";
    for (int field = 0; field < 26; ++field) {
      absl::StrAppend(&text, " ", random.Next());
    }
    text += "\n";
  }
  for (auto _ : state) {
    absl::StatusOr<ps::common::SparseDataset> data =
        ps::common::ParseLibsvm(text, "bench");
    if (!data.ok()) {
      state.SkipWithError(std::string(data.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(data->ids.data());
  }
  state.SetItemsProcessed(state.iterations() * rows);
  state.SetBytesProcessed(state.iterations() *
                          static_cast<int64_t>(text.size()));
}

// Rows shaped like ps_datagen ctr's defaults: 26 fields of 10M/26 values,
// one id each, ranks log-uniform (Zipf-like: frequent values repeat across
// a batch, as the generator's Zipf(1.1) makes them).
ps::common::SparseDataset CtrShapedRows(int64_t rows) {
  constexpr uint64_t kFields = 26;
  const double values_per_field = 10e6 / kFields;
  ps::common::SplitMix64Stream random(1);
  ps::common::SparseDataset data;
  for (int64_t r = 0; r < rows; ++r) {
    for (uint64_t field = 0; field < kFields; ++field) {
      const auto rank = static_cast<uint64_t>(
          std::exp(random.NextUnit() * std::log(values_per_field)));
      data.ids.push_back(ps::common::SplitMix64(field << 40 | rank));
    }
    data.offsets.push_back(data.ids.size());
    data.labels.push_back(random.NextUnit() < 0.03 ? 1 : 0);
  }
  return data;
}

// A worker step's compute of a sparse model: forward and backward over a
// batch of ctr-shaped rows whose unique ids' rows are already pulled.
// Items are examples; MakeCsrBatch (the unique-id bookkeeping) is timed
// apart, in CsrBatch.
void BM_SparseModelStep(benchmark::State& state, const std::string& name,
                        uint32_t fm_dim) {
  const int64_t batch_size = state.range(0);
  const ps::common::SparseDataset data = CtrShapedRows(batch_size);
  std::vector<int64_t> rows(batch_size);
  for (int64_t i = 0; i < batch_size; ++i) rows[i] = i;
  absl::StatusOr<ps::worker::CsrBatch> batch =
      ps::worker::MakeCsrBatch(data, rows);
  absl::StatusOr<ps::worker::SparseModel> model =
      ps::worker::SparseModel::Create(name, fm_dim);
  if (!batch.ok() || !model.ok()) {
    state.SkipWithError("cannot make the batch or the model");
    return;
  }
  ps::common::SplitMix64Stream random(2);
  std::vector<float> pulled(batch->ids.size() * model->row_dim());
  for (float& value : pulled) {
    value = static_cast<float>(random.NextUnit() - 0.5) * 0.02f;
  }
  std::vector<float> row_gradients(pulled.size());
  std::vector<float> bias = {-3.5f}, bias_gradient(1);
  for (auto _ : state) {
    benchmark::DoNotOptimize(model->LossAndGradient(
        *batch, bias, pulled, absl::MakeSpan(bias_gradient),
        absl::MakeSpan(row_gradients)));
  }
  state.SetItemsProcessed(state.iterations() * batch_size);
  state.counters["unique_ids"] = static_cast<double>(batch->ids.size());
}

void BM_CsrBatch(benchmark::State& state) {
  const int64_t batch_size = state.range(0);
  const ps::common::SparseDataset data = CtrShapedRows(batch_size);
  std::vector<int64_t> rows(batch_size);
  for (int64_t i = 0; i < batch_size; ++i) rows[i] = i;
  for (auto _ : state) {
    absl::StatusOr<ps::worker::CsrBatch> batch =
        ps::worker::MakeCsrBatch(data, rows);
    benchmark::DoNotOptimize(batch->ids.data());
  }
  state.SetItemsProcessed(state.iterations() * batch_size);
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

// A gradient's values, as a model's are: mostly small, of both signs, a few
// larger. Fixed seed, so every run codes the same values.
std::vector<float> GradientValues(int64_t n) {
  std::vector<float> values(n);
  ps::common::SplitMix64Stream random(7);
  for (float& v : values) {
    const double scale = random.Next() % 16 == 0 ? 1.0 : 1e-3;
    v = static_cast<float>((random.NextUnit() - 0.5) * scale);
  }
  return values;
}

// Compressed gradients: every figure counts the float32 bytes coded
// (4 per value), so it compares with memcpy's and with PushEncode's.
// Worker side: a tensor's gradient to fp16 or bf16 bytes.
void BM_GradientEncode(benchmark::State& state,
                       ps::common::CompressionKind kind) {
  const int64_t n = state.range(0);
  const std::vector<float> gradient = GradientValues(n);
  std::string bytes;
  for (auto _ : state) {
    ps::common::EncodeDense(kind, gradient, &bytes);
    benchmark::DoNotOptimize(bytes.data());
  }
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

// Server side: one part back to float32, checked finite.
void BM_GradientDecode(benchmark::State& state,
                       ps::common::CompressionKind kind) {
  const int64_t n = state.range(0);
  std::string bytes;
  ps::common::EncodeDense(kind, GradientValues(n), &bytes);
  std::vector<float> out(n);
  for (auto _ : state) {
    const absl::Status s =
        ps::common::DecodePart(kind, bytes, "", absl::MakeSpan(out), "part");
    if (!s.ok()) state.SkipWithError("cannot decode");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

// One tensor of n keys.
std::vector<ps::common::TensorSpec> OneTensor(int64_t n) {
  return {ps::common::TensorSpec{"w", {n}}};
}

// The server's whole decode of a push's compressed gradient, as
// ParameterService runs it per push: the parts to the float32 gradient the
// shard reads.
void BM_CompressedPushDecode(benchmark::State& state,
                             ps::common::Compression compression) {
  const int64_t n = state.range(0);
  absl::StatusOr<ps::worker::GradientCompressor> compressor =
      ps::worker::GradientCompressor::Create(OneTensor(n), compression);
  if (!compressor.ok()) {
    state.SkipWithError("cannot create the compressor");
    return;
  }
  const std::vector<float> gradient = GradientValues(n);
  compressor->Select(gradient);
  const ps::common::KeyRange keys{0, static_cast<uint64_t>(n)};
  google::protobuf::RepeatedPtrField<ps::v1::GradientPart> parts;
  compressor->Encode(keys, gradient, &parts);
  ps::server::GradientBufferPool buffers;
  for (auto _ : state) {
    absl::StatusOr<absl::Cord> decoded =
        ps::server::DecodeCompressedGradient(parts, keys, buffers);
    if (!decoded.ok()) state.SkipWithError("cannot decode");
    benchmark::DoNotOptimize(decoded->size());
  }
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

// Worker side of top-k, per step: error feedback added, the k largest
// chosen, the rest kept (GradientCompressor::Select), then encoded.
void BM_TopKStep(benchmark::State& state, double ratio) {
  const int64_t n = state.range(0);
  absl::StatusOr<ps::worker::GradientCompressor> compressor =
      ps::worker::GradientCompressor::Create(
          OneTensor(n), {ps::common::CompressionKind::kTopK, ratio});
  if (!compressor.ok()) {
    state.SkipWithError("cannot create the compressor");
    return;
  }
  const std::vector<float> gradient = GradientValues(n);
  const ps::common::KeyRange keys{0, static_cast<uint64_t>(n)};
  google::protobuf::RepeatedPtrField<ps::v1::GradientPart> parts;
  for (auto _ : state) {
    compressor->Select(gradient);
    compressor->Encode(keys, gradient, &parts);
    benchmark::DoNotOptimize(parts.size());
  }
  state.SetBytesProcessed(state.iterations() * n * int64_t{sizeof(float)});
}

}  // namespace

int main(int argc, char** argv) {
  // As every ps process runs (common/cli.h).
  ps::common::TuneMallocForLargeBuffers();
  // Each size's update figures stand beside its axpy.
  for (int64_t n : kSizes) {
    benchmark::RegisterBenchmark("EigenAxpy", BM_EigenAxpy)->Arg(n);
    const std::pair<const char*, UpdateOptions> rules[] = {
        {"Update/sgd", Sgd()},          {"Update/l2", L2()},
        {"Update/l1+l2", ElasticNet()}, {"Update/l2+box", Box()},
        {"Update/l2+ball", Ball()},     {"Update/penalty", Penalty()}};
    for (const auto& [name, options] : rules) {
      benchmark::RegisterBenchmark(name, BM_Update, options)->Arg(n);
    }
  }
  // Each optimizer beside sgd (which is Update/l2) at the same size.
  const std::pair<const char*, ps::common::OptimizerKind> optimizers[] = {
      {"Optimizer/sgd", ps::common::OptimizerKind::kSgd},
      {"Optimizer/momentum", ps::common::OptimizerKind::kMomentum},
      {"Optimizer/nesterov", ps::common::OptimizerKind::kNesterov},
      {"Optimizer/adagrad", ps::common::OptimizerKind::kAdagrad},
      {"Optimizer/adam", ps::common::OptimizerKind::kAdam},
      {"Optimizer/adamw", ps::common::OptimizerKind::kAdamW},
      {"Optimizer/ftrl", ps::common::OptimizerKind::kFtrl}};
  for (int64_t n : {int64_t{1} << 16, int64_t{1} << 20}) {
    for (const auto& [name, kind] : optimizers) {
      benchmark::RegisterBenchmark(name, BM_Optimizer, kind)->Arg(n);
    }
  }
  benchmark::RegisterBenchmark("TableLookup", BM_TableLookup);
  for (const auto& [name, kind] :
       {std::pair{"TableApply/sgd", ps::common::OptimizerKind::kSgd},
        std::pair{"TableApply/adagrad", ps::common::OptimizerKind::kAdagrad},
        std::pair{"TableApply/adam", ps::common::OptimizerKind::kAdam},
        std::pair{"TableApply/ftrl", ps::common::OptimizerKind::kFtrl}}) {
    benchmark::RegisterBenchmark(name, BM_TableApply, kind);
  }
  // Each of the raw-bytes paths the processes run beside the typed way.
  const std::pair<const char*, void (*)(benchmark::State&)> codecs[] = {
      {"PushEncode", BM_PushEncode}, {"PushEncodeTyped", BM_PushEncodeTyped},
      {"PushDecode", BM_PushDecode}, {"PushDecodeTyped", BM_PushDecodeTyped},
      {"PullEncode", BM_PullEncode}, {"PullEncodeTyped", BM_PullEncodeTyped},
      {"PullDecode", BM_PullDecode}, {"PullDecodeTyped", BM_PullDecodeTyped}};
  for (int64_t n : kSizes) {
    for (const auto& [name, codec] : codecs) {
      benchmark::RegisterBenchmark(name, codec)->Arg(n);
    }
  }
  // The MLP's 101,770 keys (one shard of two holds half), and 1M.
  using ps::common::CompressionKind;
  for (int64_t n : {int64_t{101770}, int64_t{1} << 20}) {
    for (const auto& [name, kind] :
         {std::pair{"fp16", CompressionKind::kFp16},
          std::pair{"bf16", CompressionKind::kBf16}}) {
      benchmark::RegisterBenchmark(
          absl::StrCat("GradientEncode/", name).c_str(), BM_GradientEncode,
          kind)
          ->Arg(n);
      benchmark::RegisterBenchmark(
          absl::StrCat("GradientDecode/", name).c_str(), BM_GradientDecode,
          kind)
          ->Arg(n);
      benchmark::RegisterBenchmark(
          absl::StrCat("CompressedPushDecode/", name).c_str(),
          BM_CompressedPushDecode, ps::common::Compression{kind})
          ->Arg(n);
    }
    benchmark::RegisterBenchmark(
        "CompressedPushDecode/topk:0.01", BM_CompressedPushDecode,
        ps::common::Compression{CompressionKind::kTopK, 0.01})
        ->Arg(n);
    benchmark::RegisterBenchmark("TopKStep/0.01", BM_TopKStep, 0.01)->Arg(n);
  }
  // Each model on every matrix kernels this CPU runs, side by side.
  for (const char* model : {"softmax", "mlp"}) {
    for (absl::string_view kernels : ps::worker::MatrixKernelsThisCpuRuns()) {
      benchmark::RegisterBenchmark(
          absl::StrCat("ModelStep/", model, "/", kernels).c_str(), BM_ModelStep,
          std::string(model), std::string(kernels))
          ->Arg(64)
          ->Arg(128);
    }
  }
  benchmark::RegisterBenchmark("ParseLibsvm", BM_ParseLibsvm)->Arg(100000);
  benchmark::RegisterBenchmark("SparseModelStep/logreg", BM_SparseModelStep,
                               std::string("logreg"), 0)
      ->Arg(512);
  benchmark::RegisterBenchmark("SparseModelStep/fm8", BM_SparseModelStep,
                               std::string("fm"), 8)
      ->Arg(512);
  benchmark::RegisterBenchmark("CsrBatch", BM_CsrBatch)->Arg(512);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
