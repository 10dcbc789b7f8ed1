#include "bench/transfer.h"

#include <algorithm>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/echo_server.h"
#include "common/cli.h"
#include "common/float_bytes.h"
#include "common/json.h"
#include "common/parallel.h"
#include "common/rpc/channel.h"
#include "common/rpc/convert.h"
#include "common/stop_signal.h"
#include "common/subprocess.h"
#include "deploy/local/launcher.h"
#include "deploy/local/launcher_security_flags.h"
#include "ps/bench/v1/echo.grpc.pb.h"
#include "spdlog/spdlog.h"
#include "worker/parameter_client.h"

namespace ps::bench {
namespace {

using worker::ParameterClient;

constexpr double kMiB = 1 << 20;

// One echo client per worker thread, with its buffers reused like the
// parameter client's: the same copies in and out of the caller's floats.
class EchoClient {
 public:
  using EchoMessage = ps::bench::v1::EchoMessage;

  EchoClient(const std::string& address, uint64_t floats)
      : stub_(ps::bench::v1::Echo::NewStub(rpc::CreateChannel(address))),
        values_(floats, 0.5f),
        back_(floats) {
    source_.set_bytes(floats * sizeof(float));
  }
  ~EchoClient() { CloseStream().IgnoreError(); }

  absl::Status Echo() {
    common::FloatsToBytes(values_, request_.mutable_payload());
    grpc::ClientContext context;
    SetDeadline(context);
    return TakeAnswer(stub_->Echo(&context, request_, &response_));
  }

  absl::Status Sink() {
    common::FloatsToBytes(values_, request_.mutable_payload());
    grpc::ClientContext context;
    SetDeadline(context);
    ps::bench::v1::SinkReply reply;
    return rpc::FromGrpcStatus(stub_->Sink(&context, request_, &reply));
  }

  absl::Status Source() {
    grpc::ClientContext context;
    SetDeadline(context);
    return TakeAnswer(stub_->Source(&context, source_, &response_));
  }

  // An echo on the stream this client keeps open; a broken stream says
  // why, and the next call opens a new one.
  absl::Status StreamEcho() {
    if (stream_ == nullptr) {
      stream_context_ = std::make_unique<grpc::ClientContext>();
      // The stream's deadline covers every echo it carries.
      stream_context_->set_deadline(
          absl::ToChronoTime(absl::Now() + absl::Hours(1)));
      stream_ = stub_->EchoStream(stream_context_.get());
    }
    common::FloatsToBytes(values_, request_.mutable_payload());
    if (!stream_->Write(request_) || !stream_->Read(&response_)) {
      absl::Status closed = CloseStream();
      return closed.ok() ? absl::UnavailableError("the echo stream ended")
                         : closed;
    }
    return TakeAnswer(grpc::Status::OK);
  }

 private:
  static void SetDeadline(grpc::ClientContext& context) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  }

  // The call's error, or its answer's floats copied out.
  absl::Status TakeAnswer(const grpc::Status& status) {
    if (!status.ok()) return rpc::FromGrpcStatus(status);
    return common::BytesToFloats(response_.payload(), absl::MakeSpan(back_),
                                 "the echo");
  }

  absl::Status CloseStream() {
    if (stream_ == nullptr) return absl::OkStatus();
    stream_->WritesDone();
    const grpc::Status status = stream_->Finish();
    stream_.reset();
    stream_context_.reset();
    return rpc::FromGrpcStatus(status);
  }

  std::unique_ptr<ps::bench::v1::Echo::Stub> stub_;
  std::vector<float> values_;
  std::vector<float> back_;
  EchoMessage request_;
  EchoMessage response_;
  ps::bench::v1::SourceRequest source_;
  std::unique_ptr<grpc::ClientContext> stream_context_;
  std::unique_ptr<grpc::ClientReaderWriter<EchoMessage, EchoMessage>> stream_;
};

// A worker as the trainer drives it, minus the model: θ and a gradient of
// the model's size.
struct BenchWorker {
  std::unique_ptr<ParameterClient> client;
  std::vector<float> theta;
  std::vector<float> gradient;
  uint64_t step = 0;
};

absl::StatusOr<std::vector<BenchWorker>> ConnectWorkers(
    const std::vector<std::string>& servers, uint32_t count, uint64_t floats,
    uint64_t max_message_bytes) {
  std::vector<BenchWorker> workers(count);
  std::vector<absl::Status> status(count);
  // Init from all at once, as a job's workers do; the first one wins.
  common::ParallelFor(count, [&](size_t w) {
    worker::ClientOptions options;
    options.servers = servers;
    options.worker_id = static_cast<uint32_t>(w);
    options.retry.rpc_deadline = absl::Seconds(60);
    options.max_message_bytes = max_message_bytes;
    absl::StatusOr<std::unique_ptr<ParameterClient>> client =
        ParameterClient::Connect(options);
    if (!client.ok()) {
      status[w] = client.status();
      return;
    }
    BenchWorker& bw = workers[w];
    bw.client = std::move(*client);
    bw.theta.assign(floats, 0.0f);
    // Small and finite: θ drifts by lr·1e-3 per push, far from overflow.
    bw.gradient.assign(floats, 1e-3f);
    if (absl::StatusOr<uint64_t> r = bw.client->Register(); !r.ok()) {
      status[w] = r.status();
      return;
    }
    const std::vector<common::TensorSpec> model = {
        {"bench/values", {static_cast<int64_t>(floats)}, false}};
    status[w] = bw.client->Init(model, bw.theta).status();
  });
  for (const absl::Status& s : status) {
    if (!s.ok()) return s;
  }
  return workers;
}

absl::Status Push(BenchWorker& w) {
  return w.client->Push(w.step++, 1, w.gradient);
}

absl::Status Pull(BenchWorker& w) {
  return w.client->Pull(w.step, absl::MakeSpan(w.theta)).status();
}

// The worker's step: one PushPull call per shard.
absl::Status PushPull(BenchWorker& w) {
  return w.client->PushPull(w.step++, 1, w.gradient, absl::MakeSpan(w.theta))
      .status();
}

// Beside the echo: the other raw gRPC calls, then ours.
constexpr const char* kOps[] = {"sink", "source",    "echostream", "push",
                                "pull", "push+pull", "pushpull"};

absl::Status MeasureSize(const TransferOptions& options,
                         const std::string& echo_address, uint64_t floats,
                         TransferResult* result) {
  result->workers = options.workers;
  result->servers = options.servers;
  result->floats = floats;
  result->max_message_bytes = options.max_message_bytes;
  const double bytes = floats * sizeof(float);

  launch::LocalClusterOptions cluster_options;
  cluster_options.bin_dir = options.bin_dir;
  cluster_options.out_dir = options.out_dir;
  cluster_options.num_servers = options.servers;
  cluster_options.num_workers = options.workers;
  cluster_options.server_flags.mode = "async";
  cluster_options.server_flags.log_level = "warn";
  cluster_options.server_flags.security = options.security;
  launch::LocalCluster cluster(cluster_options);
  if (absl::Status s = cluster.StartServers([] { return false; }); !s.ok()) {
    return s;
  }
  absl::StatusOr<std::vector<BenchWorker>> workers = ConnectWorkers(
      cluster.addresses(), options.workers, floats, options.max_message_bytes);
  if (!workers.ok()) return workers.status();

  std::vector<std::unique_ptr<EchoClient>> echoes;
  for (uint32_t w = 0; w < options.workers; ++w) {
    echoes.push_back(std::make_unique<EchoClient>(echo_address, floats));
  }
  struct Kind {
    const char* name;
    double bytes_per_op;
    // The raw gRPC call that moves the same bytes the same way; none for
    // the raw calls themselves.
    const char* raw;
    std::function<absl::Status(uint32_t)> op;
  };
  std::vector<BenchWorker>& ws = *workers;
  std::vector<Kind> kinds = {
      {"echo", 2 * bytes, "", [&](uint32_t w) { return echoes[w]->Echo(); }},
      {"sink", bytes, "", [&](uint32_t w) { return echoes[w]->Sink(); }},
      {"source", bytes, "", [&](uint32_t w) { return echoes[w]->Source(); }},
      {"echostream", 2 * bytes, "",
       [&](uint32_t w) { return echoes[w]->StreamEcho(); }},
      {"push", bytes, "sink", [&](uint32_t w) { return Push(ws[w]); }},
      {"pull", bytes, "source", [&](uint32_t w) { return Pull(ws[w]); }},
      {"push+pull", 2 * bytes, "echo",
       [&](uint32_t w) {
         absl::Status s = Push(ws[w]);
         return s.ok() ? Pull(ws[w]) : s;
       }},
      // On the worker's stream (ClientOptions::pushpull_stream).
      {"pushpull", 2 * bytes, "echostream",
       [&](uint32_t w) { return PushPull(ws[w]); }},
  };
  if (!options.ops.empty()) {
    // The echo, and each chosen op after its raw twin.
    std::vector<Kind> chosen = {kinds[0]};
    auto choose = [&](const std::string& name) {
      auto it = std::find_if(kinds.begin(), kinds.end(),
                             [&](const Kind& k) { return name == k.name; });
      if (it == kinds.end()) return false;
      if (std::none_of(chosen.begin(), chosen.end(),
                       [&](const Kind& k) { return name == k.name; })) {
        chosen.push_back(*it);
      }
      return true;
    };
    for (const std::string& name : options.ops) {
      auto it = std::find_if(kinds.begin() + 1, kinds.end(),
                             [&](const Kind& k) { return name == k.name; });
      if (it == kinds.end()) return ValidateTransferOps(options.ops);
      if (*it->raw != '\0') choose(it->raw);
      choose(name);
    }
    kinds = std::move(chosen);
  }
  // One untimed round first: connections and buffers are warm for every
  // kind alike.
  for (const Kind& kind : kinds) {
    for (uint32_t w = 0; w < options.workers; ++w) {
      if (absl::Status s = kind.op(w); !s.ok()) return s;
    }
  }
  // The kinds take turns in short rounds, so a change in the machine's load
  // (other jobs share its cores) hits every kind alike and the ratios hold.
  result->ops.resize(kinds.size());
  std::vector<std::vector<double>> latencies(kinds.size());
  for (uint32_t round = 0; round < options.rounds; ++round) {
    for (size_t k = 0; k < kinds.size(); ++k) {
      OpStats& stats = result->ops[k];
      stats.name = kinds[k].name;
      stats.raw = kinds[k].raw;
      stats.bytes_per_op = kinds[k].bytes_per_op;
      if (absl::Status s =
              Measure(options.workers, options.duration / options.rounds,
                      (options.min_ops + options.rounds - 1) / options.rounds,
                      kinds[k].op, &stats, &latencies[k]);
          !s.ok()) {
        return absl::Status(s.code(),
                            absl::StrCat(kinds[k].name, ": ", s.message()));
      }
    }
  }
  for (size_t k = 0; k < kinds.size(); ++k) {
    SetPercentiles(latencies[k], &result->ops[k]);
  }
  result->memcpy_gb_per_s =
      MemcpyGbPerSecond(static_cast<uint64_t>(bytes),
                        std::min(options.duration, absl::Milliseconds(300)));

  workers->clear();  // closes connections before the servers stop
  for (const std::string& problem : cluster.Stop(absl::Seconds(10)).problems) {
    spdlog::warn("{} while stopping", problem);
  }
  for (launch::ClusterProcess& p : cluster.processes()) {
    result->server_peak_rss_bytes.push_back(
        p.process.peak_rss_bytes().value_or(0));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTransferOps(const std::vector<std::string>& ops) {
  for (const std::string& op : ops) {
    if (std::find(std::begin(kOps), std::end(kOps), op) == std::end(kOps)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown op '", op, "'; the ops are ", absl::StrJoin(kOps, ", ")));
    }
  }
  return absl::OkStatus();
}

absl::Status RunTransfer(
    const TransferOptions& options,
    const std::function<void(const TransferResult&)>& report) {
  std::string bin_dir = options.bin_dir;
  if (bin_dir.empty()) bin_dir = common::ExecutableDir();
  const std::string port_file = absl::StrCat(options.out_dir, "/echo.port");
  const std::string log = absl::StrCat(options.out_dir, "/echo.log");
  std::remove(port_file.c_str());
  // The echo speaks TLS and checks the token when the servers do, so the
  // limit costs what the servers' channels cost.
  std::vector<std::string> echo_argv = {
      absl::StrCat(bin_dir, "/ps_bench"), "echo_server",
      absl::StrCat("--port_file=", port_file)};
  for (std::string& arg : launch::JobSecurityArgs(options.security)) {
    echo_argv.push_back(std::move(arg));
  }
  absl::StatusOr<common::Subprocess> echo =
      common::Subprocess::Spawn(echo_argv, log);
  if (!echo.ok()) return echo.status();
  absl::StatusOr<int> port = launch::WaitForPortFile(
      port_file, "the echo server", log, *echo, absl::Now() + absl::Seconds(30),
      [] { return false; });
  if (!port.ok()) return port.status();
  const std::string echo_address = absl::StrCat("127.0.0.1:", *port);

  TransferOptions with_bin = options;
  with_bin.bin_dir = bin_dir;
  for (uint64_t floats : options.sizes) {
    TransferResult result;
    if (absl::Status s = MeasureSize(with_bin, echo_address, floats, &result);
        !s.ok()) {
      return absl::Status(
          s.code(), absl::StrCat(SizeName(floats), " floats: ", s.message()));
    }
    report(result);
  }
  echo->Stop(absl::Seconds(5));
  return absl::OkStatus();
}

namespace {

// An op's GB/s over its raw twin's in the same run (0: none measured).
double RatioToRaw(const TransferResult& r, const OpStats& op) {
  for (const OpStats& raw : r.ops) {
    if (!op.raw.empty() && raw.name == op.raw && raw.gb_per_s() > 0) {
      return op.gb_per_s() / raw.gb_per_s();
    }
  }
  return 0;
}

}  // namespace

void PrintTransferHeader(const TransferOptions& options, std::FILE* out) {
  std::fprintf(out,
               "ps_bench transfer: %u worker(s) x %u server(s) on loopback, "
               "%s per figure; GB/s counts payload bytes in both directions; "
               "shards above %.2f MiB streamed\n",
               options.workers, options.servers,
               absl::FormatDuration(options.duration).c_str(),
               options.max_message_bytes / kMiB);
  std::fprintf(out, "%-6s %-10s %9s %8s %14s %10s %9s %9s\n", "floats", "op",
               "GB/s", "x echo", "x raw", "ops/s", "p50 ms", "p99 ms");
}

void PrintTransferResult(const TransferResult& r, std::FILE* out) {
  const double echo = r.ops.empty() ? 0 : r.ops[0].gb_per_s();
  for (const OpStats& op : r.ops) {
    const double raw = RatioToRaw(r, op);
    const std::string vs_raw =
        raw > 0 ? absl::StrFormat("%.2f %s", raw, op.raw) : "-";
    std::fprintf(out, "%-6s %-10s %9.3f %8.2f %14s %10.0f %9.3f %9.3f\n",
                 SizeName(r.floats).c_str(), op.name.c_str(), op.gb_per_s(),
                 echo > 0 ? op.gb_per_s() / echo : 0, vs_raw.c_str(),
                 op.ops_per_s(), op.p50_ms, op.p99_ms);
  }
  std::vector<std::string> rss;
  for (int64_t b : r.server_peak_rss_bytes) {
    rss.push_back(absl::StrFormat("%.0f", b / kMiB));
  }
  std::fprintf(out,
               "%-6s %-10s %9.3f   (limit: one copy of the bytes)\n"
               "%-6s server peak RSS MiB: %s (θ is %.1f MiB)\n",
               SizeName(r.floats).c_str(), "memcpy", r.memcpy_gb_per_s,
               SizeName(r.floats).c_str(), absl::StrJoin(rss, " / ").c_str(),
               r.floats * sizeof(float) / kMiB);
  std::fflush(out);
}

std::string TransferJsonLines(const TransferResult& r) {
  using common::RoundTo;
  const double echo = r.ops.empty() ? 0 : r.ops[0].gb_per_s();
  common::Json rss = common::Json::array();
  for (int64_t b : r.server_peak_rss_bytes) rss.push_back(RoundTo(b / kMiB, 1));
  std::string out;
  for (const OpStats& op : r.ops) {
    common::Json line = {
        {"bench", "transfer"},
        {"workers", r.workers},
        {"servers", r.servers},
        {"floats", r.floats},
        {"max_message_bytes", r.max_message_bytes},
        {"op", op.name},
        {"gb_per_s", RoundTo(op.gb_per_s(), 4)},
        {"ratio_to_echo", RoundTo(echo > 0 ? op.gb_per_s() / echo : 0, 3)},
        {"ops_per_s", RoundTo(op.ops_per_s(), 1)},
        {"p50_ms", RoundTo(op.p50_ms, 4)},
        {"p99_ms", RoundTo(op.p99_ms, 4)},
        {"ops", op.ops},
        {"memcpy_gb_per_s", RoundTo(r.memcpy_gb_per_s, 3)},
        {"server_peak_rss_mib", rss}};
    if (const double raw = RatioToRaw(r, op); raw > 0) {
      line["raw"] = op.raw;
      line["ratio_to_raw"] = RoundTo(raw, 3);
    }
    absl::StrAppend(&out, line.dump(), "\n");
  }
  return out;
}

int RunEchoServer(const std::string& port_file,
                  const rpc::ServerSecurity& security) {
  common::CatchStopSignals();
  absl::StatusOr<EchoServer> echo = StartEchoServer("127.0.0.1:0", security);
  common::DieIfError(echo.status(), "echo server");
  common::DieIfError(
      common::WriteFileAtomically(port_file, absl::StrCat(echo->port)),
      "--port_file");
  common::WaitForStopSignal();
  echo->server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  return 0;
}

}  // namespace ps::bench
