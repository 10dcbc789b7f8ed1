#include "bench/train.h"

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/dataset.h"
#include "common/json.h"
#include "common/rpc/channel.h"
#include "deploy/local/launcher.h"
#include "ps/v1/parameter_server.grpc.pb.h"

namespace ps::bench {
namespace {

constexpr double kMiB = 1 << 20;

// Bytes every primary sent to its backups over the pushes it applied
// (Status's ReplicaState), asked once training is done.
absl::StatusOr<double> ReplicationBytesPerPush(
    const std::vector<std::string>& primaries) {
  uint64_t bytes = 0;
  uint64_t pushes = 0;
  for (const std::string& address : primaries) {
    auto stub = ps::v1::ParameterServer::NewStub(rpc::CreateChannel(address));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    ps::v1::StatusResponse status;
    const grpc::Status rpc =
        stub->Status(&context, ps::v1::StatusRequest(), &status);
    if (!rpc.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "Status of ", address, " after training: ", rpc.error_message()));
    }
    bytes += status.replica().replication_bytes_sent();
    pushes += status.pushes_applied();
  }
  return pushes == 0 ? 0.0 : static_cast<double>(bytes) / pushes;
}

// The middle value (the mean of the two middle ones for an even count).
double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t half = values.size() / 2;
  return values.size() % 2 == 1 ? values[half]
                                : (values[half - 1] + values[half]) / 2;
}

}  // namespace

absl::StatusOr<TrainBenchResult> RunTrainBench(
    const TrainBenchOptions& options) {
  const absl::Time start = absl::Now();
  const std::string metrics_path =
      absl::StrCat(options.out_dir, "/metrics.jsonl");
  std::remove(metrics_path.c_str());
  launch::LocalClusterOptions cluster_options;
  cluster_options.bin_dir = options.bin_dir;
  cluster_options.out_dir = options.out_dir;
  cluster_options.num_servers = options.servers;
  cluster_options.num_workers = options.workers;
  cluster_options.replicas = options.replicas;
  cluster_options.replica_witness =
      options.replicas > 1 && options.replica_witness;
  cluster_options.server_flags.mode = options.mode;
  cluster_options.server_flags.log_level = "warn";
  cluster_options.server_flags.security = options.security;
  cluster_options.server_flags.extra = options.server_flags;
  launch::WorkerFlags& worker = cluster_options.worker_flags;
  worker.model = options.model;
  worker.epochs = options.epochs;
  worker.batch_size = options.batch_size;
  worker.seed = options.seed;
  worker.eval_every = options.eval_every;
  worker.compression = options.compression;
  worker.data_dir = options.data_dir.empty() ? common::kDefaultFashionMnistDir
                                             : options.data_dir;
  if (options.model == "logreg" || options.model == "fm") {
    worker.data_format = "libsvm";
    worker.train = options.train;
    worker.test = options.test;
  }
  worker.extra = options.worker_flags;
  worker.metrics_out = metrics_path;
  worker.log_level = "warn";
  worker.security = options.security;
  launch::LocalCluster cluster(cluster_options);
  if (absl::Status s = cluster.StartServers([] { return false; }); !s.ok()) {
    return s;
  }
  if (absl::Status s = cluster.StartWorkers(); !s.ok()) return s;
  while (true) {
    absl::StatusOr<uint32_t> done = cluster.PollWorkers();
    if (!done.ok()) return done.status();
    if (*done == options.workers) break;
    if (absl::Now() > start + options.timeout) {
      return absl::DeadlineExceededError(
          absl::StrCat("training did not finish within ",
                       absl::FormatDuration(options.timeout)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  TrainBenchResult result;
  result.options = options;
  result.wall_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (options.replicas > 1) {
    absl::StatusOr<double> per_push =
        ReplicationBytesPerPush(cluster.addresses());
    if (!per_push.ok()) return per_push.status();
    result.replication_bytes_per_push = *per_push;
  }
  cluster.Stop(absl::Seconds(10));
  for (launch::ClusterProcess& p : cluster.processes()) {
    result.peaks.push_back({p.name, p.process.peak_rss_bytes().value_or(0)});
  }

  std::ifstream in(metrics_path);
  std::string last;
  for (std::string line; std::getline(in, line);) {
    const common::Json metrics = common::ParseJsonObject(line);
    const double accuracy =
        common::NumberField(metrics, "test_accuracy").value_or(0);
    if (result.seconds_to_target < 0 && accuracy >= options.target_accuracy) {
      result.seconds_to_target =
          common::NumberField(metrics, "time_s").value_or(0);
      result.epoch_at_target =
          common::NumberField(metrics, "epoch").value_or(0);
    }
    last = line;
  }
  if (last.empty()) {
    return absl::DataLossError(absl::StrCat(
        "training finished but ", metrics_path, " holds no evaluation"));
  }
  const common::Json final_metrics = common::ParseJsonObject(last);
  result.samples_per_s =
      common::NumberField(final_metrics, "samples_per_s").value_or(0);
  result.train_seconds =
      common::NumberField(final_metrics, "time_s").value_or(0);
  result.final_accuracy =
      common::NumberField(final_metrics, "test_accuracy").value_or(0);
  result.final_auc = common::NumberField(final_metrics, "test_auc").value_or(0);
  result.push_bytes_per_step =
      common::NumberField(final_metrics, "push_bytes_per_step").value_or(0);
  return result;
}

void PrintTrainHeader(std::FILE* out) {
  std::fprintf(out,
               "%-8s %-6s %-10s %3s %3s %2s %5s %6s %11s %10s %7s %11s %8s "
               "%11s %8s %7s  %s\n",
               "model", "mode", "compress", "W", "S", "R", "batch", "epochs",
               "push B/step", "samples/s", "vs R=1", "repl B/push", "train s",
               "to target s", "epoch", "final",
               "peak RSS MiB (servers | workers)");
}

void PrintTrainResult(const TrainBenchResult& r, std::FILE* out) {
  std::vector<std::string> servers, workers;
  for (const ProcessPeak& p : r.peaks) {
    (p.name.rfind("worker", 0) == 0 ? workers : servers)
        .push_back(absl::StrFormat("%.0f", p.peak_rss_bytes / kMiB));
  }
  const TrainBenchOptions& o = r.options;
  // The sparse models score AUC (no target); the dense ones accuracy %.
  const bool sparse = o.model == "logreg" || o.model == "fm";
  const std::string final_score =
      sparse ? absl::StrFormat("AUC %.4f", r.final_auc)
             : absl::StrFormat("%.2f", 100 * r.final_accuracy);
  const std::string target =
      sparse ? std::string("-")
      : r.seconds_to_target < 0
          ? absl::StrFormat("not %.0f%%", 100 * o.target_accuracy)
          : absl::StrFormat("%.2f", r.seconds_to_target);
  std::fprintf(
      out,
      "%-8s %-6s %-10s %3u %3u %2u %5u %6u %11.0f %10.0f %7s %11.0f %8.2f "
      "%11s %8.2f %7s  %s | %s\n",
      o.model.c_str(), o.mode.c_str(), o.compression.c_str(), o.workers,
      o.servers, o.replicas, o.batch_size, o.epochs, r.push_bytes_per_step,
      r.samples_per_s,
      r.vs_unreplicated > 0 ? absl::StrFormat("%.2f", r.vs_unreplicated).c_str()
                            : "-",
      r.replication_bytes_per_push, r.train_seconds, target.c_str(),
      r.epoch_at_target, final_score.c_str(),
      absl::StrJoin(servers, " ").c_str(), absl::StrJoin(workers, " ").c_str());
  std::fflush(out);
}

std::string TrainJsonLine(const TrainBenchResult& r) {
  using common::RoundTo;
  common::Json peaks = common::Json::object();
  for (const ProcessPeak& p : r.peaks) {
    peaks[p.name] = RoundTo(p.peak_rss_bytes / kMiB, 1);
  }
  const TrainBenchOptions& o = r.options;
  const common::Json line = {
      {"bench", "train"},
      {"model", o.model},
      {"mode", o.mode},
      {"workers", o.workers},
      {"servers", o.servers},
      {"replicas", o.replicas},
      {"replica_witness", o.replicas > 1 && o.replica_witness},
      {"batch_size", o.batch_size},
      {"epochs", o.epochs},
      {"compression", o.compression},
      {"push_bytes_per_step", RoundTo(r.push_bytes_per_step, 1)},
      {"samples_per_s", RoundTo(r.samples_per_s, 1)},
      {"samples_per_s_vs_unreplicated", RoundTo(r.vs_unreplicated, 3)},
      {"replication_bytes_per_push", RoundTo(r.replication_bytes_per_push, 1)},
      {"train_s", RoundTo(r.train_seconds, 3)},
      {"wall_s", RoundTo(r.wall_seconds, 3)},
      {"target_accuracy", RoundTo(o.target_accuracy, 4)},
      {"seconds_to_target", RoundTo(r.seconds_to_target, 3)},
      {"epoch_at_target", RoundTo(r.epoch_at_target, 3)},
      {"final_accuracy", RoundTo(r.final_accuracy, 4)},
      {"final_auc", RoundTo(r.final_auc, 4)},
      {"peak_rss_mib", std::move(peaks)}};
  return line.dump() + "\n";
}

ReplicaComparison CompareReplicas(
    const std::vector<TrainBenchResult>& unreplicated,
    const std::vector<TrainBenchResult>& replicated) {
  ReplicaComparison c;
  c.options = replicated.back().options;
  std::vector<double> bytes;
  for (const TrainBenchResult& r : unreplicated) {
    c.unreplicated.push_back(r.samples_per_s);
  }
  for (const TrainBenchResult& r : replicated) {
    c.replicated.push_back(r.samples_per_s);
    bytes.push_back(r.replication_bytes_per_push);
  }
  c.median_unreplicated = Median(c.unreplicated);
  c.median_replicated = Median(c.replicated);
  c.ratio = c.median_unreplicated > 0
                ? c.median_replicated / c.median_unreplicated
                : 0;
  c.replication_bytes_per_push = Median(bytes);
  return c;
}

void PrintReplicaComparison(const ReplicaComparison& c, std::FILE* out) {
  auto join = [](const std::vector<double>& values) {
    return absl::StrJoin(values, " ", [](std::string* s, double v) {
      absl::StrAppendFormat(s, "%.0f", v);
    });
  };
  const TrainBenchOptions& o = c.options;
  std::fprintf(out,
               "%s %s, %u servers x %u workers, R=1 and R=%u in turns, %zu "
               "rounds:\n  samples/s R=1: %s (median %.0f)\n  samples/s "
               "R=%u: %s (median %.0f)\n  median R=%u / median R=1: %.2f; "
               "replication bytes per push %.0f\n",
               o.model.c_str(), o.mode.c_str(), o.servers, o.workers,
               o.replicas, c.replicated.size(), join(c.unreplicated).c_str(),
               c.median_unreplicated, o.replicas, join(c.replicated).c_str(),
               c.median_replicated, o.replicas, c.ratio,
               c.replication_bytes_per_push);
  std::fflush(out);
}

std::string ReplicaComparisonJsonLine(const ReplicaComparison& c) {
  using common::RoundTo;
  const TrainBenchOptions& o = c.options;
  auto rounded = [](const std::vector<double>& values) {
    common::Json list = common::Json::array();
    for (double v : values) list.push_back(RoundTo(v, 1));
    return list;
  };
  const common::Json line = {
      {"bench", "train_replicas"},
      {"model", o.model},
      {"mode", o.mode},
      {"workers", o.workers},
      {"servers", o.servers},
      {"replicas", o.replicas},
      {"replica_witness", o.replicas > 1 && o.replica_witness},
      {"epochs", o.epochs},
      {"compression", o.compression},
      {"rounds", c.replicated.size()},
      {"samples_per_s_unreplicated", rounded(c.unreplicated)},
      {"samples_per_s_replicated", rounded(c.replicated)},
      {"median_samples_per_s_unreplicated", RoundTo(c.median_unreplicated, 1)},
      {"median_samples_per_s_replicated", RoundTo(c.median_replicated, 1)},
      {"median_ratio", RoundTo(c.ratio, 3)},
      {"replication_bytes_per_push", RoundTo(c.replication_bytes_per_push, 1)}};
  return line.dump() + "\n";
}

}  // namespace ps::bench
